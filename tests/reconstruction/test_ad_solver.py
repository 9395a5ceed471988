"""reconstruct_ad: accuracy against known truth, noise models, control flow, bad input."""

import warnings

import numpy as np
import pytest

from hyperspy_lorentz.physics.forward import simulate_images
from hyperspy_lorentz.reconstruction.ad import estimate_memory, reconstruct_ad
from hyperspy_lorentz.reconstruction.metrics import phase_accuracy

N = 64
PIXEL = 2.0
DEFOCUS = np.array([-30000.0, 0.0, 30000.0])
#: The series below are simulated periodically (simulate_images' default): fitted
#: with the matching periodic model. The default free border is tested on windows
#: and on islands in vacuum in test_ad_canvas.py.
KW = dict(pixel_size=PIXEL, beam_energy=200, padding="periodic")


def _truth():
    y, x = np.mgrid[:N, :N] - N / 2
    return 3 * np.exp(-(x**2 + y**2) / (2 * 7.0**2)) - 2 * np.exp(-((x - 14) ** 2 + (y + 10) ** 2) / (2 * 4.0**2))


@pytest.fixture(scope="module")
def clean():
    return simulate_images(_truth(), None, DEFOCUS, PIXEL)


def _fit(images, defocus=DEFOCUS, **kwargs):
    kwargs.setdefault("seed", 0)
    kwargs.setdefault("max_iterations", 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reconstruct_ad(images, defocus, **KW, **kwargs)


def test_gaussian_noise_accuracy(clean):
    noisy = np.random.default_rng(0).normal(clean, 0.02 * clean)
    r = _fit(noisy, refine=(), refine_amplitude=False)
    assert r.converged
    assert phase_accuracy(r.phase, _truth()) >= 0.99
    # The phase is absolute up to a constant: its scale must be right, not only its shape.
    np.testing.assert_allclose(np.ptp(r.phase), np.ptp(_truth()), rtol=0.05)
    np.testing.assert_allclose(r.defocus, DEFOCUS)  # not refined: unchanged
    assert r.refined == ()


def test_poisson_likelihood_low_dose(clean):
    counts = np.random.default_rng(1).poisson(clean * 200).astype(float)
    r = _fit(counts, likelihood="poisson")
    assert phase_accuracy(r.phase, _truth()) >= 0.97


def test_deterministic_for_a_seed(clean):
    noisy = np.random.default_rng(2).normal(clean, 0.02 * clean)
    a = _fit(noisy, max_iterations=20)
    b = _fit(noisy, max_iterations=20)
    np.testing.assert_array_equal(a.phase, b.phase)
    assert a.loss_history == b.loss_history


def test_loss_decreases_and_best_iterate_is_kept(clean):
    noisy = np.random.default_rng(3).normal(clean, 0.02 * clean)
    r = _fit(noisy, max_iterations=30, init="flat")
    assert min(r.loss_history) < r.loss_history[0]
    assert r.iterations <= 30


def test_keyboard_interrupt_returns_best_so_far(clean):
    def progress(iteration, loss):
        if iteration >= 5:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="[Ii]nterrupt"):
        r = reconstruct_ad(clean, DEFOCUS, **KW, progress=progress, max_iterations=100, seed=0)
    assert r.interrupted
    assert r.iterations <= 6
    assert np.all(np.isfinite(r.phase))


@pytest.mark.parametrize(
    "images, defocus, match",
    [
        (np.ones((3, N, N)), [100.0, 100.0, 100.0], "sitie|single"),
        (np.ones((2, N, N)), [-100.0, 0.0, 100.0], "defocus"),
        (np.zeros((3, N, N)), DEFOCUS, "zero"),
        (np.full((3, N, N), np.nan), DEFOCUS, "finite"),
    ],
)
def test_bad_input(images, defocus, match):
    with pytest.raises(ValueError, match=match):
        reconstruct_ad(images, np.asarray(defocus), **KW)


def test_unknown_refine_name(clean):
    with pytest.raises(ValueError, match="refine"):
        reconstruct_ad(clean, DEFOCUS, **KW, refine=("drift",), refine_amplitude=False)


def test_memory_estimate_scales_with_problem_size():
    small = estimate_memory((256, 256), 3)
    big = estimate_memory((1024, 1024), 3)
    assert big / small == pytest.approx(16, rel=0.2)
    assert estimate_memory((256, 256), 6) > small
    # At least the complex64 image waves of the forward pass (N x H x W x 8 bytes).
    assert small >= 3 * 256 * 256 * 8


def test_problem_too_large_for_memory_is_refused(clean, monkeypatch):
    import hyperspy_lorentz.reconstruction.ad.memory as ad_memory

    # A machine with 1 MiB free: the estimate must refuse before allocating (patched
    # where _check_memory looks it up).
    monkeypatch.setattr(ad_memory, "_available_memory", lambda device: (2**20, "available RAM"))
    with pytest.raises(ValueError, match=r"Not enough memory.*crop.*rebin"):
        reconstruct_ad(clean, DEFOCUS, **KW, max_iterations=1)
