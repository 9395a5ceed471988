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
    # periodic boundaries: an integer drift is exactly np.roll
    phi = _bump(height=0.5)
    ref = hl.simulate_focal_series(phi, defocus=[-500, 500], scale=2.0, padding=None)
    moved = hl.simulate_focal_series(phi, defocus=[-500, 500], scale=2.0, shifts=[[0, 0], [3, -2]], padding=None)
    np.testing.assert_allclose(moved.data[1], np.roll(ref.data[1], (3, -2), axis=(0, 1)), atol=1e-4)
    np.testing.assert_allclose(moved.data[0], ref.data[0], atol=1e-6)


def test_any_array_view():
    phi = _bump(height=0.5)
    a = hl.simulate_focal_series(np.flip(phi, 0), np.flip(np.ones_like(phi), 1), defocus=[-500, 500], scale=2.0)
    b = hl.simulate_focal_series(phi[::-1].copy(), defocus=[-500, 500], scale=2.0)
    np.testing.assert_array_equal(a.data, b.data)


def test_phase_from_a_signal_carries_its_calibration():
    import hyperspy.api as hs

    p = hs.signals.Signal2D(_bump())
    for ax in p.axes_manager.signal_axes:
        ax.scale, ax.units = 0.5, "um"
    s = hl.simulate_focal_series(p, defocus=[-1000, 1000])
    assert s.get_microscope_parameters()["pixel_size_nm"] == 500.0


def _step(n=96, m=64, height=2.0, width=3.0):
    """A phase step across x, constant on the left and on the right, shape (n, m)."""
    x = np.arange(m) - m / 2
    return np.broadcast_to(height / 2 * (1 + np.tanh(x / width)), (n, m)).copy()


def test_default_is_an_isolated_specimen():
    """Default boundaries: the phase goes on as at the edges (vacuum around the
    specimen): the images equal the window of a simulation over a larger field
    in which the phase does go on constant; periodic boundaries do not."""
    phi = _step()
    big = np.pad(phi, 64, mode="edge")
    defocus = [-200e3, 0, 200e3]
    truth = hl.simulate_focal_series(big, defocus=defocus, scale=2.0, padding="periodic",
                                     window=(64, 64, *phi.shape))
    s = hl.simulate_focal_series(phi, defocus=defocus, scale=2.0)
    assert s.metadata.Simulation.padding == "edge"
    np.testing.assert_allclose(s.data, truth.data, atol=2e-3)
    periodic = hl.simulate_focal_series(phi, defocus=defocus, scale=2.0, padding="periodic")
    assert periodic.metadata.Simulation.padding == "periodic"
    # the jump between the left and right edges wraps around: fringes along the frame
    assert np.abs(periodic.data - truth.data)[:, :, :4].max() > 0.2


def test_periodic_and_none_are_the_same():
    a = hl.simulate_focal_series(_bump(), defocus=[-500e3, 500e3], scale=2.0, padding=None)
    b = hl.simulate_focal_series(_bump(), defocus=[-500e3, 500e3], scale=2.0, padding="periodic")
    np.testing.assert_array_equal(a.data, b.data)
    assert a.metadata.Simulation.padding == "periodic"


def test_padding_is_wide_enough_by_default():
    # the default padding covers the Fresnel spread: a wider one changes nothing
    phi = _step(height=3.0)
    a = hl.simulate_focal_series(phi, defocus=[-1e6, 1e6], scale=2.0)
    b = hl.simulate_focal_series(phi, defocus=[-1e6, 1e6], scale=2.0, pad_width=400)
    np.testing.assert_allclose(a.data, b.data, atol=2e-3)
    r = hl.simulate_focal_series(phi, defocus=[-1e6, 1e6], scale=2.0, padding="reflect")
    assert r.metadata.Simulation.padding == "reflect"


def test_window_crops_after_propagation_and_drift():
    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter

    big = gaussian_filter(rng.normal(size=(96, 112)), 4) * 20
    shifts = [[0, 0], [2.5, -1.0]]
    full = hl.simulate_focal_series(big, defocus=[-100e3, 100e3], scale=2.0, shifts=shifts, padding="periodic")
    win = hl.simulate_focal_series(big, defocus=[-100e3, 100e3], scale=2.0, shifts=shifts, padding="periodic",
                                   window=(10, 20, 64, 72))
    np.testing.assert_array_equal(win.data, full.data[:, 10:74, 20:92])
    sim = win.metadata.Simulation
    np.testing.assert_array_equal(sim.phase, big[10:74, 20:92])
    assert sim.amplitude.shape == (64, 72)
    assert sim.field_of_view == [10, 20, 64, 72]
    np.testing.assert_allclose(sim.shifts, shifts)
    # noise is drawn for the window only
    n = hl.simulate_focal_series(big, defocus=[-100e3, 100e3], scale=2.0, dose=100, seed=1, window=(10, 20, 64, 72))
    assert n.data.shape == (2, 64, 72) and np.all(n.data == np.round(n.data))


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
        ({"scale": 1, "padding": "wrap"}, "padding"),
        ({"scale": 1, "padding": "periodic", "pad_width": 8}, "pad_width"),
        ({"scale": 1, "window": (0, 0, 65, 64)}, "window"),
        ({"scale": 1, "window": (-1, 0, 8, 8)}, "window"),
        ({"scale": 1, "window": (0, 0, 8)}, "window"),
        ({"scale": 1, "shifts": [[0, np.nan], [0, 0]]}, "shifts"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hl.simulate_focal_series(_bump(), defocus=[-100, 100], **kwargs)
