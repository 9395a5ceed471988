"""reconstruct_phase(flipped=...): magnetic and electrostatic phase of a simulated specimen."""

import numpy as np
import pytest

import hyperspy_lorentz as hl
from hyperspy_lorentz.physics import magnetisation, textures
from hyperspy_lorentz.reconstruction.metrics import phase_accuracy

N = 128
PIXEL = 2.0
DEFOCUS = [-400.0, 0.0, 400.0]


@pytest.fixture(scope="module")
def specimen():
    vortex = textures.vortex((N, N), radius=40 * PIXEL, pixel_size=PIXEL)
    phi_m = magnetisation.magnetic_phase(vortex.mx, vortex.my, ms=3e5, thickness=20, pixel_size=PIXEL)
    y, x = np.mgrid[:N, :N] - N / 2
    # A thickness bump off-centre, so the registration sees the mirror.
    t = 30 * np.exp(-((x - 15) ** 2 + (y + 25) ** 2) / (2 * 10.0**2))
    phi_e = magnetisation.electrostatic_phase(t, mean_inner_potential=10.0, beam_energy=200)
    # Absorption gives the in-focus image the contrast the registration works on.
    amp = magnetisation.amplitude_from_thickness(t, absorption_length=150.0)
    return phi_m - phi_m.mean(), phi_e - phi_e.mean(), amp


def _series(phase, amplitude=None):
    return hl.simulate_focal_series(phase, amplitude, defocus=DEFOCUS, scale=PIXEL, cs=0, theta_c=0,
                                    defocus_spread=0)


def test_flip_unflip_separates_magnetic_and_electrostatic(specimen):
    phi_m, phi_e, amp = specimen
    unflipped = _series(phi_m + phi_e, amp)
    # Turned over about x: magnetic phase reversed, image mirrored (rows), then drift.
    flipped_phase = np.roll(np.flipud(-phi_m + phi_e), (2, -3), axis=(0, 1))
    flipped = _series(flipped_phase, np.roll(np.flipud(amp), (2, -3), axis=(0, 1)))
    snapshot = flipped.data.copy()
    magnetic, electrostatic = unflipped.reconstruct_phase(method="tie", flipped=flipped, flip_axis="x",
                                                           show_progressbar=False)
    np.testing.assert_array_equal(flipped.data, snapshot)  # the user's data is untouched
    assert phase_accuracy(magnetic.data, phi_m) >= 0.98
    assert phase_accuracy(electrostatic.data, phi_e) >= 0.98
    rec = magnetic.metadata.Signal.Reconstruction
    assert rec.flip.flip_axis == "x"
    np.testing.assert_allclose(rec.flip.drift, [2, -3], atol=0.3)  # as recorded in the flipped frame
    assert "Magnetic" in magnetic.metadata.General.title


def test_mismatched_flipped_series(specimen):
    phi_m, phi_e, amp = specimen
    unflipped = _series(phi_m + phi_e, amp)
    other = hl.simulate_focal_series(phi_m, defocus=[-800, 0, 800], scale=PIXEL)
    with pytest.raises(ValueError, match="defocus"):
        unflipped.reconstruct_phase(method="tie", flipped=other)
    small = hl.simulate_focal_series(phi_m[:64, :64], defocus=DEFOCUS, scale=PIXEL)
    with pytest.raises(ValueError, match="shape|size"):
        unflipped.reconstruct_phase(method="tie", flipped=small)


def test_flipped_must_be_a_focal_series(specimen):
    unflipped = _series(specimen[0])
    with pytest.raises(ValueError, match="LorentzFocalSeries"):
        unflipped.reconstruct_phase(method="tie", flipped=np.zeros((3, N, N)))
