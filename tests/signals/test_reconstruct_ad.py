"""reconstruct_phase(method="ad") and reconstruct_exit_wave: the signal plumbing.

The solver's accuracy is tested in tests/reconstruction/test_ad.py; here small,
short fits check what the signal methods return and record.
"""

import hyperspy.api as hs
import numpy as np
import pytest

import hyperspy_lorentz as hl
from hyperspy_lorentz.reconstruction.metrics import phase_accuracy
from hyperspy_lorentz.signals.electron_phase import ElectronPhase

N = 64
ITER = 40


def _phase():
    y, x = np.mgrid[:N, :N] - N / 2
    return np.exp(-(x**2 + y**2) / (2 * 6.0**2)) - 0.6 * np.exp(-((x - 14) ** 2 + (y + 10) ** 2) / (2 * 4.0**2))


@pytest.fixture(scope="module")
def series():
    return hl.simulate_focal_series(_phase(), defocus=[-20000, 0, 20000], scale=2.0, noise=0.01, seed=1)


@pytest.fixture(scope="module")
def phase(series):
    return series.reconstruct_phase(method="ad", max_iterations=ITER, seed=0, show_progressbar=False)


def test_phase_signal_record(phase, series):
    assert isinstance(phase, ElectronPhase)
    assert phase.axes_manager.signal_axes[0].scale == 2.0
    assert phase.axes_manager.signal_axes[0].units == "nm"
    rec = phase.metadata.Signal.Reconstruction
    assert rec.method == "ad"
    for key in ("iterations", "converged", "time_s", "loss_history", "defocus", "shifts", "beam_energy",
                "cs", "theta_c", "defocus_spread", "likelihood", "max_iterations"):
        assert rec.has_item(key), key
    assert 0 < rec.iterations <= ITER
    assert len(rec.loss_history) >= rec.iterations
    np.testing.assert_allclose(rec.defocus, [-20000, 0, 20000])
    assert np.asarray(rec.shifts).shape == (3, 2)
    assert phase_accuracy(phase.data, _phase()) > 0.9


def test_saved_record_round_trips(phase, tmp_path):
    phase.save(tmp_path / "p.hspy")
    back = hs.load(tmp_path / "p.hspy")
    assert isinstance(back, ElectronPhase)
    assert back.metadata.Signal.Reconstruction.method == "ad"
    np.testing.assert_allclose(back.data, phase.data)


def test_deterministic_and_lazy_equals_eager(series, phase):
    again = series.reconstruct_phase(method="ad", max_iterations=ITER, seed=0, show_progressbar=False)
    np.testing.assert_array_equal(again.data, phase.data)
    lazy = series.as_lazy().reconstruct_phase(method="ad", max_iterations=ITER, seed=0)
    assert lazy._lazy
    lazy.compute()
    np.testing.assert_allclose(lazy.data, phase.data, atol=1e-6)
    assert lazy.metadata.Signal.Reconstruction.iterations == phase.metadata.Signal.Reconstruction.iterations


def test_exit_wave_is_complex_and_calibrated(series):
    wave = series.reconstruct_exit_wave(max_iterations=10, seed=0, show_progressbar=False)
    assert wave.data.dtype.kind == "c"
    assert wave.axes_manager.signal_axes[0].units == "nm"
    assert "amplitude" in wave.metadata.Signal.Reconstruction.refined
    assert np.all(np.abs(wave.data) > 0)


def test_series_of_series(series):
    stack = hs.stack([series, series], new_axis_name="field")
    stack.set_signal_type("lorentz_focal_series")
    out = stack.reconstruct_phase(method="ad", max_iterations=5, seed=0, show_progressbar=False)
    assert out.axes_manager.navigation_shape == (2,)
    rec = out.metadata.Signal.Reconstruction
    assert np.asarray(rec.defocus).shape == (2, 3)
    assert np.asarray(rec.iterations).shape == (2,)
    np.testing.assert_allclose(out.inav[0].data, out.inav[1].data, atol=1e-6)


def test_single_defocus_value_points_to_single_image_methods(series):
    s = series.inav[0:1]
    s2 = hs.stack([s.inav[0], s.inav[0]])
    s2.set_signal_type("lorentz_focal_series")
    s2.set_defocus([-20000, -19999.9999999])
    with pytest.raises(ValueError, match="sitie"):
        s2.reconstruct_phase(method="ad")


def test_non_finite_pixels_refused_and_data_kept(series):
    s = series.deepcopy()
    s.data[1, 3, 3] = np.inf
    before = s.data.copy()
    with pytest.raises(ValueError, match="non-finite"):
        s.reconstruct_phase(method="ad")
    np.testing.assert_array_equal(s.data, before)


def test_refined_defocus_records_bootstrap_errors_per_series(series):
    """Refined optical parameters carry their bootstrap standard errors and the
    uncorrected (joint MAP) values, per series of a series of series."""
    stack = hs.stack([series, series], new_axis_name="field")
    stack.set_signal_type("lorentz_focal_series")
    out = stack.reconstruct_phase(method="ad", refine=("amplitude", "defocus"), max_iterations=30,
                                  seed=0, show_progressbar=False)
    rec = out.metadata.Signal.Reconstruction
    from hyperspy_lorentz.reconstruction.ad import BOOTSTRAP_REPLICATES

    assert np.asarray(rec.bias_correction_replicates).tolist() == [BOOTSTRAP_REPLICATES] * 2
    se = np.asarray(rec.defocus_standard_error)
    assert se.shape == (2, 3) and np.all(np.isfinite(se)) and np.all(se > 0)
    unc = np.asarray(rec.defocus_uncorrected)
    assert unc.shape == (2, 3)
    assert not np.allclose(unc, rec.defocus, rtol=0, atol=1e-6)  # the correction was applied
    # both positions hold the same data: same fit, same seed, same correction
    np.testing.assert_allclose(rec.defocus[0], rec.defocus[1], rtol=1e-6)
    np.testing.assert_allclose(rec.defocus, [[-20000, 0, 20000]] * 2, atol=0.05 * 20000)


def test_bootstrap_info_reports_astigmatism_as_magnitude_and_angle():
    """The solver corrects the astigmatism vector (A cos 2a, A sin 2a); the metadata
    holds magnitude (nm) and angle (degrees), like ``astigmatism``."""
    from types import SimpleNamespace

    from hyperspy_lorentz.signals._ad import _bootstrap_info

    fake = SimpleNamespace(
        parameters={"bias_correction": {"replicates": 2, "uncorrected": {
            "astigmatism": [0.0, 10.0], "defocus": [-1000.0, 1000.0]}}},
        standard_errors={"astigmatism": 0.5, "defocus": np.array([3.0, 4.0])})
    info = _bootstrap_info(fake)
    assert info["bias_correction_replicates"] == 2
    assert info["astigmatism_uncorrected"] == pytest.approx(10.0)
    assert info["astigmatism_angle_uncorrected"] == pytest.approx(45.0)  # 2a = 90 degrees
    np.testing.assert_array_equal(info["defocus_uncorrected"], [-1000.0, 1000.0])
    np.testing.assert_array_equal(info["defocus_standard_error"], [3.0, 4.0])
    assert _bootstrap_info(SimpleNamespace(parameters={"bias_correction": None})) == {}
