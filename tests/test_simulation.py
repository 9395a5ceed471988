"""simulate_focal_series: calibration, ground truth, noise models, bad input."""

import numpy as np
import pytest

import hyperspy_lorentz as hl
from hyperspy_lorentz.signals.focal_series import LorentzFocalSeries


def _bump(n=64, height=1.0, width=6.0):
    y, x = np.mgrid[:n, :n] - n / 2
    return height * np.exp(-(x**2 + y**2) / (2 * width**2))


def test_calibrated_series_with_truth():
    phi = _bump()
    s = hl.simulate_focal_series(phi, defocus=[-500, 0, 500], scale=2.5, beam_energy=300, cs=0.5)
    assert isinstance(s, LorentzFocalSeries)
    p = s.get_microscope_parameters()
    np.testing.assert_allclose(p["defocus_nm"], [-500, 0, 500])
    assert p["pixel_size_nm"] == 2.5
    assert p["beam_energy_kV"] == 300
    assert p["cs_mm"] == 0.5
    np.testing.assert_array_equal(s.metadata.Simulation.phase, phi)
    assert s.axes_manager.signal_axes[0].units == "nm"


def test_in_focus_image_of_pure_phase_object_is_flat_and_mean_conserved():
    # Oracle: an aberration-free in-focus image of a pure phase object is |A|^2 = 1,
    # and propagation conserves the mean intensity.
    s = hl.simulate_focal_series(_bump(), defocus=[-800, 0, 800], scale=2.0, cs=0, theta_c=0, defocus_spread=0)
    np.testing.assert_allclose(s.inav[1].data, 1.0, atol=1e-5)
    np.testing.assert_allclose(s.data.mean(axis=(1, 2)), 1.0, rtol=1e-5)
    assert s.inav[2].data.std() > 1e-4  # defocused images have contrast


def test_phase_maximum_is_bright_in_overfocus():
    # Sign convention (docs/conventions.rst): a phase maximum focuses the beam, so
    # its centre is bright when the image plane lies downstream (overfocus, df > 0).
    s = hl.simulate_focal_series(_bump(height=0.3), defocus=[-400, 400], scale=2.0, cs=0, theta_c=0, defocus_spread=0)
    under, over = s.data
    assert over[32, 32] > 1.0 > under[32, 32]


def test_poisson_dose_statistics_and_seed():
    phi = np.zeros((64, 64))
    a = hl.simulate_focal_series(phi, defocus=[-100, 100], scale=1.0, dose=50, seed=3)
    b = hl.simulate_focal_series(phi, defocus=[-100, 100], scale=1.0, dose=50, seed=3)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.data.mean() == pytest.approx(50, rel=0.02)
    assert a.data.var() == pytest.approx(50, rel=0.1)  # Poisson: variance = mean
    assert np.all(a.data == np.round(a.data))
    assert a.metadata.Signal.Noise_properties.Variance_linear_model.gain_factor == 1.0


def test_relative_gaussian_noise_of_the_paper():
    s = hl.simulate_focal_series(np.zeros((64, 64)), defocus=[-100, 100], scale=1.0, noise=0.1, seed=0)
    assert s.data.std() == pytest.approx(0.1, rel=0.05)


def test_drift_moves_the_image():
    phi = _bump(height=0.5)
    ref = hl.simulate_focal_series(phi, defocus=[-500, 500], scale=2.0)
    moved = hl.simulate_focal_series(phi, defocus=[-500, 500], scale=2.0, shifts=[[0, 0], [3, -2]])
    np.testing.assert_allclose(moved.data[1], np.roll(ref.data[1], (3, -2), axis=(0, 1)), atol=1e-4)
    np.testing.assert_allclose(moved.data[0], ref.data[0], atol=1e-6)


def test_phase_from_a_signal_carries_its_calibration():
    import hyperspy.api as hs

    p = hs.signals.Signal2D(_bump())
    for ax in p.axes_manager.signal_axes:
        ax.scale, ax.units = 0.5, "um"
    s = hl.simulate_focal_series(p, defocus=[-1000, 1000])
    assert s.get_microscope_parameters()["pixel_size_nm"] == 500.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scale": 0}, "scale"),
        ({"scale": None}, "pixel size"),
        ({"scale": 1, "dose": -1}, "dose"),
        ({"scale": 1, "noise": -0.1}, "noise"),
        ({"scale": 1, "shifts": [[0, 0]]}, "shifts"),
        ({"scale": 1, "beam_energy": -5}, "beam_energy"),
        ({"scale": 1, "amplitude": -np.ones((64, 64))}, "amplitude"),
        ({"scale": 1, "amplitude": np.ones((32, 32))}, "shape"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hl.simulate_focal_series(_bump(), defocus=[-100, 100], **kwargs)
