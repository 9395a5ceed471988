"""phase_accuracy: normalised cross-correlation of mean-subtracted phases."""

import numpy as np
import pytest

from hyperspy_lorentz.reconstruction.metrics import phase_accuracy


@pytest.fixture
def phase(rng):
    y, x = np.mgrid[:32, :40]
    return np.sin(x / 5.0) * np.cos(y / 7.0) + 0.1 * rng.standard_normal((32, 40))


def test_perfect_and_sign_flip(phase):
    assert phase_accuracy(phase, phase) == pytest.approx(1.0)
    assert phase_accuracy(-phase, phase) == pytest.approx(-1.0)


def test_invariant_to_offset_and_scale(phase):
    assert phase_accuracy(3.7 * phase - 12.0, phase) == pytest.approx(1.0)
    assert phase_accuracy(phase, 0.2 * phase + 5.0) == pytest.approx(1.0)


def test_matches_formula_and_symmetric(phase, rng):
    other = phase + rng.standard_normal(phase.shape)
    a, b = other - other.mean(), phase - phase.mean()
    expected = np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b))
    assert phase_accuracy(other, phase) == pytest.approx(expected)
    assert phase_accuracy(phase, other) == pytest.approx(expected)
    assert -1.0 <= expected <= 1.0


def test_orthogonal_is_zero():
    x = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    a = np.broadcast_to(np.sin(x), (8, 64))
    b = np.broadcast_to(np.cos(x), (8, 64))
    assert phase_accuracy(a, b) == pytest.approx(0.0, abs=1e-12)


def test_mask_and_border(phase):
    bad = phase.copy()
    bad[:3, :] = 100.0  # garbage at the top edge
    bad[:, -3:] = -50.0
    assert phase_accuracy(bad, phase) < 0.5
    assert phase_accuracy(bad, phase, border=3) == pytest.approx(1.0)
    mask = np.ones(phase.shape, bool)
    mask[:3, :] = False
    mask[:, -3:] = False
    assert phase_accuracy(bad, phase, mask=mask) == pytest.approx(1.0)


def test_degenerate_and_bad_input(phase):
    assert np.isnan(phase_accuracy(np.zeros_like(phase), phase))
    with pytest.raises(ValueError, match="same grid"):
        phase_accuracy(phase, phase[:-1])
    with pytest.raises(ValueError, match="mask has shape"):
        phase_accuracy(phase, phase, mask=np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="border"):
        phase_accuracy(phase, phase, border=16)
    with pytest.raises(ValueError, match="no pixels"):
        phase_accuracy(phase, phase, mask=np.zeros(phase.shape, bool))
