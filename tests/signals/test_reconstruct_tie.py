"""LorentzFocalSeries.reconstruct_phase with the TIE and SITIE: signal plumbing."""

import hyperspy.api as hs
import numpy as np
import pytest

import hyperspy_lorentz as hl
from hyperspy_lorentz.reconstruction.metrics import phase_accuracy
from hyperspy_lorentz.signals.electron_phase import ElectronPhase

N = 96


def _phase(height=1.0):
    y, x = np.mgrid[:N, :N] - N / 2
    return height * (np.exp(-(x**2 + y**2) / (2 * 8.0**2)) - 0.5 * np.exp(-((x - 20) ** 2 + (y + 15) ** 2) / (2 * 5.0**2)))


@pytest.fixture(scope="module")
def series():
    return hl.simulate_focal_series(_phase(), defocus=[-300, 0, 300], scale=2.0, cs=0, theta_c=0, defocus_spread=0)


def test_tie_returns_calibrated_phase_with_record(series):
    phase = series.reconstruct_phase(method="tie", show_progressbar=False)
    assert isinstance(phase, ElectronPhase)
    assert phase.axes_manager.navigation_dimension == 0
    assert phase.axes_manager.signal_axes[0].scale == 2.0
    assert phase.axes_manager.signal_axes[0].units == "nm"
    rec = phase.metadata.Signal.Reconstruction
    assert rec.method == "tie"
    np.testing.assert_allclose(rec.defocus, [-300, 0, 300])
    assert rec.beam_energy == 200
    assert phase_accuracy(phase.data, _phase()) > 0.99


def test_other_navigation_axes_give_one_phase_each(series):
    stack = hs.stack([series, series * 1.0], new_axis_name="time")
    stack.set_signal_type("lorentz_focal_series")
    assert stack.axes_manager.navigation_shape == (3, 2)
    phase = stack.reconstruct_phase(method="tie", show_progressbar=False)
    assert phase.axes_manager.navigation_shape == (2,)
    assert phase.axes_manager.navigation_axes[0].name == "time"
    single = series.reconstruct_phase(method="tie", show_progressbar=False)
    np.testing.assert_allclose(phase.inav[1].data, single.data, atol=1e-10)


def test_defocus_axis_need_not_be_first():
    s = hl.simulate_focal_series(_phase(), defocus=[-300, 300], scale=2.0)
    stack = hs.stack([s, s], new_axis_name="field")
    stack.set_signal_type("lorentz_focal_series")
    swapped = stack.transpose(signal_axes=[2, 3], navigation_axes=[1, 0])  # field fastest
    swapped.set_signal_type("lorentz_focal_series")
    assert swapped.axes_manager.navigation_axes[0].name == "field"
    a = swapped.reconstruct_phase(method="tie", show_progressbar=False)
    b = stack.reconstruct_phase(method="tie", show_progressbar=False)
    np.testing.assert_allclose(a.data, b.data, atol=1e-10)


def test_lazy_equals_eager(series):
    eager = series.reconstruct_phase(method="tie", show_progressbar=False)
    lazy = series.as_lazy().reconstruct_phase(method="tie")
    assert lazy._lazy
    lazy.compute()
    np.testing.assert_allclose(lazy.data, eager.data, atol=1e-10)
    assert lazy.metadata.Signal.Reconstruction.method == "tie"


def test_sitie_on_one_image(series):
    one = series.inav[2:3]
    phase = one.reconstruct_phase(method="sitie", show_progressbar=False)
    assert isinstance(phase, ElectronPhase)
    assert phase.metadata.Signal.Reconstruction.method == "sitie"
    assert phase_accuracy(phase.data, _phase()) > 0.95


def test_sitie_needs_one_image(series):
    with pytest.raises(ValueError, match="one defocused image"):
        series.reconstruct_phase(method="sitie")


def test_one_sided_series_is_refused():
    s = hl.simulate_focal_series(_phase(), defocus=[100, 300], scale=2.0)
    with pytest.raises(ValueError, match="both sides of focus"):
        s.reconstruct_phase(method="tie")


@pytest.mark.parametrize("qc", [0, -1.0])
def test_bad_qc(series, qc):
    with pytest.raises(ValueError, match="qc"):
        series.reconstruct_phase(method="tie", qc=qc)


def test_missing_beam_energy_names_the_setter(series):
    s = series.deepcopy()
    del s.metadata.Acquisition_instrument.TEM.beam_energy
    with pytest.raises(ValueError, match=r"set_microscope_parameters\(beam_energy"):
        s.reconstruct_phase(method="tie")


def test_single_defocus_value_points_to_single_image_methods(series):
    s = hl.simulate_focal_series(_phase(), defocus=[300], scale=2.0)
    s2 = hs.stack([s.inav[0], s.inav[0]])
    s2.set_signal_type("lorentz_focal_series")
    s2.set_defocus([300, 300.0000001])
    with pytest.raises(ValueError, match="sitie"):
        s2.reconstruct_phase(method="tie")


def test_unknown_method(series):
    with pytest.raises(ValueError, match="Unknown method"):
        series.reconstruct_phase(method="gs")


def test_failed_call_leaves_signal_untouched(series):
    s = series.deepcopy()
    s.data[0, 0, 0] = np.nan
    before = s.data.copy()
    md = s.metadata.as_dictionary()
    with pytest.raises(ValueError, match="non-finite"):
        s.reconstruct_phase(method="tie")
    np.testing.assert_array_equal(s.data, before)
    assert s.metadata.as_dictionary().keys() == md.keys()


def test_plain_save_of_lazy_result_to_zspy_keeps_the_per_series_record(series, tmp_path):
    lazy = series.as_lazy().reconstruct_phase(method="tie")
    lazy.save(tmp_path / "phase.zspy")
    back = hs.load(tmp_path / "phase.zspy")
    eager = series.reconstruct_phase(method="tie", show_progressbar=False)
    np.testing.assert_allclose(back.data, eager.data, atol=1e-10)
    # qc is chosen inside each task: it can only be in the file if the record was kept.
    assert back.metadata.Signal.Reconstruction.qc == pytest.approx(eager.metadata.Signal.Reconstruction.qc)
