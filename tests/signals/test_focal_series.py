"""LorentzFocalSeries: registration, defocus axis, microscope parameters, bad input."""

import importlib.metadata
from pathlib import Path

import hyperspy.api as hs
import numpy as np
import pytest

from hyperspy_lorentz.signals.focal_series import (
    DEFAULT_MICROSCOPE_PARAMETERS,
    LazyLorentzFocalSeries,
    LorentzFocalSeries,
)


def _series(n=3, shape=(16, 16), nav_extra=None, seed=0):
    rng = np.random.default_rng(seed)
    full = (nav_extra or ()) + (n,) + shape
    s = hs.signals.Signal2D(rng.uniform(0.5, 1.5, size=full))
    s.set_signal_type("lorentz_focal_series")
    return s


def _snapshot(s):
    return (
        s.data.copy(),
        s.metadata.as_dictionary(),
        [a.get_axis_dictionary() for a in s.axes_manager._axes],
    )


def _assert_unchanged(s, snap):
    data, md, axes = snap
    np.testing.assert_array_equal(s.data, data)
    assert s.metadata.as_dictionary() == md
    now = [a.get_axis_dictionary() for a in s.axes_manager._axes]
    assert len(now) == len(axes)
    for a, b in zip(now, axes):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_equal(a[k], b[k])


class TestRegistration:
    def test_entry_point_and_yaml_ship_with_the_package(self):
        eps = importlib.metadata.entry_points(group="hyperspy.extensions")
        assert "hyperspy_lorentz" in {e.name for e in eps}
        import hyperspy_lorentz

        yaml_path = Path(hyperspy_lorentz.__file__).parent / "hyperspy_extension.yaml"
        assert yaml_path.exists()

    @pytest.mark.parametrize(
        "signal_type, cls_name",
        [
            ("lorentz_focal_series", "LorentzFocalSeries"),
            ("electron_phase", "ElectronPhase"),
            ("magnetic_induction", "MagneticInduction"),
        ],
    )
    def test_set_signal_type_and_lazy_twin(self, signal_type, cls_name):
        s = hs.signals.Signal2D(np.zeros((2, 8, 8)))
        s.set_signal_type(signal_type)
        assert type(s).__name__ == cls_name
        assert type(s.as_lazy()).__name__ == "Lazy" + cls_name
        assert s.as_lazy()._lazy

    def test_hs_load_with_signal_type(self, tmp_path):
        f = tmp_path / "plain.hspy"
        hs.signals.Signal2D(np.ones((2, 8, 8))).save(f)
        s = hs.load(f, signal_type="lorentz_focal_series")
        assert isinstance(s, LorentzFocalSeries)
        assert isinstance(hs.load(f, signal_type="lorentz_focal_series", lazy=True), LazyLorentzFocalSeries)

    @pytest.mark.parametrize("ext", ["hspy", "zspy"])
    def test_save_load_round_trip_keeps_class_axes_metadata(self, tmp_path, ext):
        s = _series(n=3, nav_extra=(2,))
        s.set_defocus([-1.6, -0.1, 1.6], units="mm", axis=0)
        s.axes_manager.navigation_axes[1].name = "field"
        s.set_microscope_parameters(beam_energy=300, pixel_size=2.5, cs=0.5, theta_c=0.02)
        f = tmp_path / f"series.{ext}"
        s.save(f)
        t = hs.load(f)
        assert isinstance(t, LorentzFocalSeries)
        np.testing.assert_allclose(t.axes_manager["defocus"].axis, [-1.6e6, -1e5, 1.6e6])
        assert t.axes_manager["defocus"].units == "nm"
        assert t.axes_manager["field"].size == 2
        p, q = t.get_microscope_parameters(), s.get_microscope_parameters()
        for key in ("beam_energy_kV", "pixel_size_nm", "cs_mm", "theta_c_mrad", "defocus_spread_nm"):
            assert p[key] == pytest.approx(q[key])
        assert p["sources"] == q["sources"]
        np.testing.assert_array_equal(t.data, s.data)


class TestDefocus:
    @pytest.mark.parametrize(
        "values, units, nm",
        [
            ([-800, 0, 800], "nm", [-800, 0, 800]),
            ([-1.2, 0, 1.2], "um", [-1200, 0, 1200]),
            ([-1.2, 0, 1.2], "µm", [-1200, 0, 1200]),
            ([-0.5, 0, 1.5], "mm", [-5e5, 0, 1.5e6]),
        ],
    )
    def test_units(self, values, units, nm):
        s = _series()
        s.set_defocus(values, units=units)
        ax = s.axes_manager["defocus"]
        assert ax.navigate and ax.units == "nm"
        np.testing.assert_allclose(ax.axis, nm)

    def test_non_uniform_quadratic_series_uses_data_axis(self):
        s = _series(n=5)
        values = np.array([-4, -1, 0, 1, 4]) * 100.0
        s.set_defocus(values)
        ax = s.axes_manager["defocus"]
        assert not ax.is_uniform
        np.testing.assert_allclose(ax.axis, values)
        assert s.get_microscope_parameters()["sources"]["defocus_nm"] == "user"

    def test_other_navigation_axes_are_kept(self):
        s = _series(n=3, nav_extra=(4,))
        s.axes_manager.navigation_axes[1].name = "time"
        s.axes_manager.navigation_axes[1].scale = 2.0
        s.set_defocus([-1, 0, 1], units="um", axis=0)
        assert s.axes_manager["time"].size == 4
        assert s.axes_manager["time"].scale == 2.0
        assert s.axes_manager.navigation_shape == (3, 4)

    def test_decreasing_values_are_allowed(self):
        s = _series()
        s.set_defocus([1000, 0, -1000])
        np.testing.assert_allclose(s.get_microscope_parameters()["defocus_nm"], [1000, 0, -1000])

    @pytest.mark.parametrize(
        "values, kwargs, match",
        [
            ([-1, 1], {}, "2 defocus value"),
            ([-1, 0, 1, 2], {}, "4 defocus value"),
            ([-1, np.nan, 1], {}, "finite"),
            ([0, 5, 1], {}, "Reorder"),
            ([-1, 0, 1], {"units": "kg"}, "Cannot convert"),
        ],
    )
    def test_bad_values_raise_and_change_nothing(self, values, kwargs, match):
        s = _series()
        snap = _snapshot(s)
        with pytest.raises(ValueError, match=match):
            s.set_defocus(values, **kwargs)
        _assert_unchanged(s, snap)

    def test_ambiguous_axis(self):
        s = _series(nav_extra=(2,))
        snap = _snapshot(s)
        with pytest.raises(ValueError, match="axis="):
            s.set_defocus([-1, 0, 1])
        _assert_unchanged(s, snap)

    def test_single_image(self):
        s = hs.signals.Signal2D(np.ones((8, 8)))
        s.set_signal_type("lorentz_focal_series")
        with pytest.raises(ValueError, match="single image"):
            s.set_defocus([100])

    def test_missing_defocus_named_in_error(self):
        s = _series()
        s.set_microscope_parameters(beam_energy=200, pixel_size=5)
        with pytest.raises(ValueError, match=r"set_defocus"):
            s._require_parameters()

    def test_reading_from_file_with_nothing_there_raises(self):
        s = _series()
        with pytest.raises(ValueError, match="No defocus values"):
            s.set_defocus()


class TestMicroscopeParameters:
    def test_defaults_are_reported_as_defaults(self):
        p = _series().get_microscope_parameters()
        assert p["cs_mm"] == DEFAULT_MICROSCOPE_PARAMETERS["cs"] == 1.0
        assert p["theta_c_mrad"] == 0.01
        assert p["defocus_spread_nm"] == 500.0
        assert p["sources"]["cs_mm"] == "default"
        assert p["beam_energy_kV"] is None and p["sources"]["beam_energy_kV"] is None
        assert p["pixel_size_nm"] is None

    def test_user_values_and_sources(self):
        s = _series()
        s.set_microscope_parameters(beam_energy=300, cs=2.0, theta_c=0.005, defocus_spread=100, pixel_size=1.5)
        p = s.get_microscope_parameters()
        assert p["beam_energy_kV"] == 300
        assert s.metadata.Acquisition_instrument.TEM.beam_energy == 300
        assert s.metadata.Acquisition_instrument.TEM.Lorentz.cs == 2.0
        assert p["pixel_size_nm"] == 1.5
        assert s.axes_manager.signal_axes[0].units == "nm"
        for key in ("beam_energy_kV", "cs_mm", "theta_c_mrad", "defocus_spread_nm", "pixel_size_nm"):
            assert p["sources"][key] == "user"

    def test_beam_energy_from_file_metadata(self):
        s = _series()
        s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 200.0)
        p = s.get_microscope_parameters()
        assert p["beam_energy_kV"] == 200.0 and p["sources"]["beam_energy_kV"] == "file"

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"beam_energy": -200}, "beam_energy"),
            ({"beam_energy": 1e9}, "beam_energy"),
            ({"theta_c": -1}, "theta_c"),
            ({"defocus_spread": float("nan")}, "defocus_spread"),
            ({"pixel_size": 0}, "pixel_size"),
        ],
    )
    def test_bad_values_change_nothing(self, kwargs, match):
        s = _series()
        snap = _snapshot(s)
        with pytest.raises(ValueError, match=match):
            s.set_microscope_parameters(cs=3.0, **kwargs)  # cs valid but must not be written
        _assert_unchanged(s, snap)

    def test_pixel_size_from_axes_in_other_units(self):
        s = _series()
        for ax in s.axes_manager.signal_axes:
            ax.scale = 0.25
            ax.units = "µm"
        assert s.get_microscope_parameters()["pixel_size_nm"] == pytest.approx(250.0)


class TestImageChecks:
    def test_non_finite_pixels(self):
        s = _series()
        s.data[1, 2, 3] = np.nan
        with pytest.raises(ValueError, match="non-finite"):
            s._check_images()

    def test_all_zero(self):
        s = _series()
        s.data[:] = 0
        with pytest.raises(ValueError, match="zero"):
            s._check_images()

    def test_non_uniform_signal_axis(self):
        s = _series()
        s.axes_manager.signal_axes[0].convert_to_non_uniform_axis()
        with pytest.raises(ValueError, match="non-uniform"):
            s._check_images()
