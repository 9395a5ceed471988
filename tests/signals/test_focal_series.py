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

# Most series here are uniform noise on purpose (their values do not matter to
# what is tested); the no-contrast warning they give is tested in TestContrastCheck.
NO_CONTRAST = "No defocused image of this focal series shows contrast above its noise"
pytestmark = pytest.mark.filterwarnings(f"ignore:{NO_CONTRAST}:UserWarning")


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

    def test_single_image_gets_a_defocus_axis_of_one(self):
        s = hs.signals.Signal2D(np.ones((8, 8)))
        s.set_signal_type("lorentz_focal_series")
        s.set_defocus([-1.5], units="um")
        assert s.data.shape == (1, 8, 8)
        ax = s.axes_manager["defocus"]
        assert ax.navigate and ax.units == "nm" and ax.size == 1
        np.testing.assert_allclose(ax.axis, [-1500.0])

    def test_single_image_takes_one_value(self):
        s = hs.signals.Signal2D(np.ones((8, 8)))
        s.set_signal_type("lorentz_focal_series")
        snap = _snapshot(s)
        with pytest.raises(ValueError, match=r"single image takes one value.*hs\.stack"):
            s.set_defocus([-100, 100])
        _assert_unchanged(s, snap)

    @pytest.mark.parametrize(
        "values, units, nm",
        [
            (["-1.6 mm", "0 mm", "1.6 mm"], "nm", [-1.6e6, 0, 1.6e6]),
            (["-800", 0, "0.8 um"], "nm", [-800, 0, 800]),
            (["-1.2", "0", "1.2"], "um", [-1200, 0, 1200]),
        ],
    )
    def test_quantity_strings(self, values, units, nm):
        s = _series()
        s.set_defocus(values, units=units)
        np.testing.assert_allclose(s.axes_manager["defocus"].axis, nm)

    @pytest.mark.parametrize("values", [["a", "b", "c"], "a", [-1, "x", 1], ["-1 kg", "0 nm", "1 nm"], [-1, None, 1]])
    def test_strings_that_are_not_lengths_raise_a_clear_error(self, values):
        s = _series()
        snap = _snapshot(s)
        with pytest.raises(ValueError, match=r"defocus\[\d\].*(nm|number)"):
            s.set_defocus(values)
        _assert_unchanged(s, snap)

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


# ----------------------------------------------------------------------------
# Messages that name the way out, and inputs checked alike by every method
# ----------------------------------------------------------------------------
DEFOCUS_NM = (-2e4, 0.0, 2e4)  # Fresnel length 7 nm: 1.4 pixels of 5 nm at 200 kV


def _calibrated(n=3, shape=(16, 16), defocus=DEFOCUS_NM):
    s = _series(n=n, shape=shape)
    s.set_microscope_parameters(beam_energy=200, pixel_size=5)
    if defocus is not None:
        s.set_defocus(list(defocus))
    return s


def _image(shape=(16, 16)):
    s = hs.signals.Signal2D(np.random.default_rng(1).uniform(0.5, 1.5, size=shape))
    s.set_signal_type("lorentz_focal_series")
    s.set_microscope_parameters(beam_energy=200, pixel_size=5)
    return s


class TestWayOut:
    def test_single_image_without_defocus_names_both_ways_and_both_work(self):
        s = _image()
        with pytest.raises(ValueError, match=r"single image.*s\.set_defocus\(\[value\]") as info:
            s.reconstruct_phase(method="sitie")
        assert "reconstruct_phase(method='sitie', defocus=value)" in str(info.value)
        a = s.reconstruct_phase(method="sitie", defocus=2e4, show_progressbar=False)
        s.set_defocus([2e4])
        b = s.reconstruct_phase(method="sitie", show_progressbar=False)
        np.testing.assert_allclose(a.data, b.data)

    def test_frames_at_one_defocus_name_the_way_out_and_it_works(self):
        s = _calibrated(defocus=None)
        snap = _snapshot(s)
        with pytest.raises(ValueError) as info:
            s.set_defocus([2e4] * 3)
        _assert_unchanged(s, snap)
        message = str(info.value)
        for step in ("t = s.inav[i]", "t = s.mean(axis=0)", "t.set_defocus([20000])",
                     "t.reconstruct_phase(method='sitie')", "method='ad'"):
            assert step in message
        t = s.mean(axis=0)
        t.set_defocus([20000])
        assert isinstance(t.reconstruct_phase(method="sitie", show_progressbar=False), hs.signals.Signal2D)
        t = s.inav[1]
        t.set_defocus([20000])
        phase = t.reconstruct_phase(method="ad", max_iterations=3, show_progressbar=False)
        assert phase.data.shape == (16, 16)

    def test_defocus_keyword_on_a_stack_names_inav(self):
        s = _calibrated(defocus=None)
        with pytest.raises(ValueError, match=r"s\.inav\[i\]\.reconstruct_phase\(method='sitie', defocus="):
            s.reconstruct_phase(method="sitie", defocus=2e4)
        phase = s.inav[0].reconstruct_phase(method="sitie", defocus=2e4, show_progressbar=False)
        assert phase.data.shape == (16, 16)

    def test_defocus_keyword_takes_a_quantity_string(self):
        s = _image()
        a = s.reconstruct_phase(method="sitie", defocus="20 um", show_progressbar=False)
        b = s.reconstruct_phase(method="sitie", defocus=2e4, show_progressbar=False)
        np.testing.assert_allclose(a.data, b.data)
        with pytest.raises(ValueError, match="defocus"):
            s.reconstruct_phase(method="sitie", defocus="twenty")


class TestKeywords:
    @pytest.mark.parametrize("method, listed", [("tie", "qc"), ("sitie", "symmetric"), ("ad", "max_iterations")])
    def test_unknown_keyword_lists_the_accepted_ones(self, method, listed):
        s = _calibrated()
        if method == "sitie":
            s = s.inav[0:1]
        with pytest.raises(ValueError, match=rf"Unknown keyword 'foo'.*accepts: .*\b{listed}\b"):
            s.reconstruct_phase(method=method, foo=1)

    def test_single_image_ad_lists_its_own_keywords(self):
        s = _calibrated().inav[0:1]
        with pytest.raises(ValueError, match=r"single-image AD.*'refine' is a keyword of multi-image AD.*prior"):
            s.reconstruct_phase(method="ad", refine=("defocus",))

    def test_keyword_of_another_method_is_named(self):
        with pytest.raises(ValueError, match=r"'refine' is a keyword of multi-image AD"):
            _calibrated().reconstruct_phase(method="tie", refine=("defocus",))

    @pytest.mark.parametrize("name, value", [("pixel_size", 3.0), ("cs", 1.0), ("beam_energy", 300)])
    def test_signal_parameters_say_where_to_set_them(self, name, value):
        with pytest.raises(ValueError, match=rf"set_microscope_parameters\({name}="):
            _calibrated().reconstruct_phase(method="tie", **{name: value})

    def test_exit_wave_checks_its_keywords(self):
        with pytest.raises(ValueError, match=r"Unknown keyword 'foo' for reconstruct_exit_wave"):
            _calibrated().reconstruct_exit_wave(foo=1)

    def test_qc_as_a_quantity_string(self):
        s = _calibrated()
        a = s.reconstruct_phase(method="tie", qc="0.05 1/nm", show_progressbar=False)
        b = s.reconstruct_phase(method="tie", qc=0.05, show_progressbar=False)
        np.testing.assert_allclose(a.data, b.data)
        for qc in ("a lot", -1):
            with pytest.raises(ValueError, match="qc"):
                s.reconstruct_phase(method="tie", qc=qc)


class TestImageSize:
    @pytest.mark.parametrize("shape", [(3, 3), (64, 5), (2, 2), (7, 64)])
    @pytest.mark.parametrize("method", ["tie", "sitie", "ad"])
    def test_every_method_refuses_the_same_small_images(self, shape, method):
        s = _calibrated(shape=shape)
        if method == "sitie":
            s = s.inav[0:1]
        with pytest.raises(ValueError, match=rf"{shape[0]} x {shape[1]} pixels; every method needs at least 8 x 8"):
            s.reconstruct_phase(method=method, show_progressbar=False)

    def test_smallest_accepted_image(self):
        s = _calibrated(shape=(8, 8))
        assert s.reconstruct_phase(method="tie", show_progressbar=False).data.shape == (8, 8)


class TestBlankData:
    def test_no_images(self):
        s = hs.signals.Signal2D(np.zeros((0, 16, 16)))
        s.set_signal_type("lorentz_focal_series")
        with pytest.raises(ValueError, match=r"holds no data \(navigation shape \(0,\)"):
            s._check_images()

    def test_one_blank_image_is_named_with_the_way_out(self):
        s = _calibrated(n=4, defocus=(-2e4, -1e4, 1e4, 2e4))
        s.data[2] = 0
        with pytest.raises(ValueError) as info:
            s.reconstruct_phase(method="tie")
        message = str(info.value)
        assert "1 image(s)" in message and "index 2" in message
        assert "hs.stack([s.inav[i] for i in [0, 1, 3]])" in message
        t = hs.stack([s.inav[i] for i in [0, 1, 3]])
        t.set_defocus([-2e4, -1e4, 2e4])
        assert t.reconstruct_phase(method="tie", show_progressbar=False).data.shape == (16, 16)

    def test_all_blank(self):
        s = _calibrated()
        s.data[:] = 0
        with pytest.raises(ValueError, match="Every image of the focal series is zero"):
            s.reconstruct_phase(method="tie")


class TestInputStrings:
    def test_microscope_parameters_as_quantity_strings(self):
        s = _series()
        s.set_microscope_parameters(beam_energy="300 kV", pixel_size="2.5 Å", cs="1.2 mm", theta_c="10 urad",
                                    defocus_spread="0.5 um", astigmatism_angle="30 deg")
        p = s.get_microscope_parameters()
        assert p["beam_energy_kV"] == pytest.approx(300)
        assert p["pixel_size_nm"] == pytest.approx(0.25)
        assert p["cs_mm"] == pytest.approx(1.2)
        assert p["theta_c_mrad"] == pytest.approx(0.01)
        assert p["defocus_spread_nm"] == pytest.approx(500)
        assert p["astigmatism_angle_deg"] == pytest.approx(30)

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"cs": "abc"}, r"cs must be a number in mm"),
            ({"beam_energy": "200 nm"}, r"beam_energy = '200 nm' is not convertible to keV"),
            ({"pixel_size": [1.0]}, r"pixel_size must be a number in nm"),
            ({"theta_c": True}, r"theta_c must be a number in mrad"),
        ],
    )
    def test_bad_strings_and_types_raise_value_errors(self, kwargs, match):
        s = _series()
        snap = _snapshot(s)
        with pytest.raises(ValueError, match=match):
            s.set_microscope_parameters(**kwargs)
        _assert_unchanged(s, snap)


class TestNonSquarePixels:
    def test_reported_not_raised(self):
        s = _calibrated()
        s.axes_manager.signal_axes[0].scale = 3.0
        p = s.get_microscope_parameters()
        assert p["pixel_size_nm"] is None and p["sources"]["pixel_size_nm"] is None
        assert "not square" in p["problems"]["pixel_size_nm"]
        assert p["beam_energy_kV"] == 200  # the rest is still reported
        with pytest.raises(ValueError, match="not square"):
            s.reconstruct_phase(method="tie")

    def test_no_problems_when_calibrated(self):
        assert _calibrated().get_microscope_parameters()["problems"] == {}


class TestDefocusPlausibility:
    @pytest.mark.parametrize(
        "df, match",
        [
            (5.0, r"implausibly small for 5 nm pixels.*units='um'"),
            (5e9, r"implausibly large.*field of view.*m for mm"),
        ],
    )
    @pytest.mark.parametrize("method", ["tie", "sitie"])
    def test_implausible_defocus_warns_with_the_likely_unit(self, df, match, method):
        s = _calibrated(defocus=(-df, 0.0, df))
        if method == "sitie":
            s = s.inav[2:3]
        with pytest.warns(UserWarning, match=match):
            s.reconstruct_phase(method=method, show_progressbar=False)

    def test_sitie_defocus_keyword_is_checked_too(self):
        with pytest.warns(UserWarning, match="implausibly small"):
            _image().reconstruct_phase(method="sitie", defocus=5, show_progressbar=False)

    def test_plausible_defocus_does_not_warn(self):
        import warnings

        s = _textured()
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            s.reconstruct_phase(method="tie", show_progressbar=False)


def _textured(shape=(16, 16), defocus=DEFOCUS_NM, dose=1000.0, seed=0):
    """A calibrated series of a 1 rad, 8-pixel-period phase texture, with Poisson noise."""
    from hyperspy_lorentz.physics.forward import simulate_images

    y, x = np.indices(shape, dtype=float)
    phase = np.sin(2 * np.pi * x / 8) * np.sin(2 * np.pi * y / 8)
    images = simulate_images(phase, None, list(defocus), 5.0, 200.0, padding=None, dtype=np.float64)
    images = np.random.default_rng(seed).poisson(dose * images).astype(float)
    s = hs.signals.Signal2D(images)
    s.set_signal_type("lorentz_focal_series")
    s.set_microscope_parameters(beam_energy=200, pixel_size=5)
    s.set_defocus(list(defocus))
    return s


# ----------------------------------------------------------------------------
# Defocus given in another sign convention (PyLorentz, Kirkland)
# ----------------------------------------------------------------------------
CONVENTION = "Acquisition_instrument.TEM.Lorentz.defocus_convention"
AS_GIVEN = "Acquisition_instrument.TEM.Lorentz.defocus_as_given_nm"


class TestDefocusConvention:
    @pytest.mark.parametrize("convention", ["pylorentz", "PyLorentz", "kirkland", " Py-Lorentz "])
    def test_other_conventions_are_negated_and_recorded(self, convention):
        s = _series()
        s.set_defocus([-200, 0, 200], units="um", convention=convention)
        np.testing.assert_array_equal(s.axes_manager["defocus"].axis, [2e5, 0, -2e5])
        assert not np.signbit(s.axes_manager["defocus"].axis[1])  # 0, not -0
        key = convention.strip().lower().replace("-", "")
        assert s.metadata.get_item(CONVENTION) == key
        np.testing.assert_array_equal(s.metadata.get_item(AS_GIVEN), [-2e5, 0, 2e5])
        p = s.get_microscope_parameters()
        np.testing.assert_array_equal(p["defocus_nm"], [2e5, 0, -2e5])
        assert p["sources"]["defocus_nm"] == "user"

    def test_ours_is_the_default_and_clears_an_earlier_record(self):
        s = _series()
        s.set_defocus([-200, 0, 200], units="um")
        assert not s.metadata.has_item(CONVENTION)
        np.testing.assert_array_equal(s.axes_manager["defocus"].axis, [-2e5, 0, 2e5])
        s.set_defocus([-200, 0, 200], units="um", convention="pylorentz")
        s.set_defocus([-200, 0, 200], units="um", convention="ours")
        np.testing.assert_array_equal(s.axes_manager["defocus"].axis, [-2e5, 0, 2e5])
        assert not s.metadata.has_item(CONVENTION) and not s.metadata.has_item(AS_GIVEN)

    def test_a_single_image_and_quantity_strings(self):
        s = _image()
        s.set_defocus(["-0.2 mm"], convention="pylorentz")
        np.testing.assert_array_equal(s.axes_manager["defocus"].axis, [2e5])

    @pytest.mark.parametrize("convention", ["theirs", "", None, 1, "under"])
    def test_unknown_convention_raises_and_changes_nothing(self, convention):
        s = _series()
        s.set_defocus([-1, 0, 1], units="um")
        snap = _snapshot(s)
        with pytest.raises(ValueError, match=r"Unknown defocus convention.*'ours'.*'pylorentz'.*'kirkland'"):
            s.set_defocus([-2, 0, 2], units="um", convention=convention)
        _assert_unchanged(s, snap)

    @pytest.mark.parametrize("ext", ["hspy", "zspy"])
    def test_record_survives_save_and_load(self, tmp_path, ext):
        s = _series()
        s.set_defocus([-200, 0, 200], units="um", convention="pylorentz")
        f = tmp_path / f"series.{ext}"
        s.save(f)
        back = hs.load(f)
        assert back.metadata.get_item(CONVENTION) == "pylorentz"
        np.testing.assert_array_equal(back.metadata.get_item(AS_GIVEN), [-2e5, 0, 2e5])
        np.testing.assert_array_equal(back.axes_manager["defocus"].axis, [2e5, 0, -2e5])

    def test_a_pylorentz_series_keeps_its_phase_sign(self):
        """Images made by PyLorentz's transfer function at (-d, 0, +d) -- labelled under, in,
        over there -- are ours at (+d, 0, -d) (tests/physics/test_sign_convention.py). With
        convention='pylorentz' the TIE gives the true phase; read as ours, its negative."""
        from hyperspy_lorentz.physics.forward import simulate_images
        from hyperspy_lorentz.reconstruction.metrics import phase_accuracy

        shape, pixel, d = (64, 64), 5.0, 2e4
        y, x = np.indices(shape, dtype=float)
        phase = 0.8 * np.sin(2 * np.pi * x / 32) * np.sin(2 * np.pi * y / 16)
        pylorentz_values = np.array([-d, 0.0, d])
        images = simulate_images(phase, None, -pylorentz_values, pixel, 200.0, padding=None,
                                 dtype=np.float64)
        s = hs.signals.Signal2D(images)
        s.set_signal_type("lorentz_focal_series")
        s.set_microscope_parameters(beam_energy=200, pixel_size=pixel)

        s.set_defocus(pylorentz_values, convention="pylorentz")
        right = s.reconstruct_phase(method="tie", show_progressbar=False)
        assert phase_accuracy(right.data, phase, border=4) > 0.95
        s.set_defocus(pylorentz_values)  # the mistake: PyLorentz's numbers read as ours
        wrong = s.reconstruct_phase(method="tie", show_progressbar=False)
        assert phase_accuracy(wrong.data, phase, border=4) < -0.95


# ----------------------------------------------------------------------------
# No contrast above noise: a warning before every reconstruction
# ----------------------------------------------------------------------------
def _noise_series(shape=(128, 128), defocus=(-500.0, 0.0, 500.0), pixel=2.0, dose=200.0, seed=0):
    """The README's old example: pure Poisson noise at +-500 nm, 2 nm pixels."""
    rng = np.random.default_rng(seed)
    s = hs.signals.Signal2D(rng.poisson(dose, size=(len(defocus),) + shape).astype(float))
    s.set_signal_type("lorentz_focal_series")
    s.set_microscope_parameters(beam_energy=200, pixel_size=pixel)
    s.set_defocus(list(defocus))
    return s


@pytest.fixture(scope="module")
def lattice():
    from hyperspy_lorentz import data

    return data.skyrmion_lattice(shape=(128, 128))


README_CAUSE = (rf"{NO_CONTRAST}.*as Poisson noise at (1[89]\d|2[01]\d) electrons per pixel.*"
                r"at \|defocus\| = 500 nm the Fresnel length sqrt\(lambda \|df\|\) is 1\.1 nm, "
                r"less than one 2 nm pixel.*wrong unit \(um\?.*0\.05-2 mm")


def _run(s, how):
    """Start each reconstruction path (the check comes before any fitting)."""
    kw = dict(show_progressbar=False)
    if how == "tie":
        return s.reconstruct_phase(method="tie", **kw)
    if how == "sitie":
        return s.inav[2:3].reconstruct_phase(method="sitie", **kw)
    if how == "sitie_keyword":
        return s.inav[2].reconstruct_phase(method="sitie", defocus=500.0, **kw)
    if how == "ad":
        return s.reconstruct_phase(method="ad", max_iterations=1, **kw)
    if how == "ad_single":
        return s.inav[2:3].reconstruct_phase(method="ad", max_iterations=1, **kw)
    if how == "exit_wave":
        return s.reconstruct_exit_wave(max_iterations=1, **kw)
    if how == "flip":
        flipped = _noise_series(s.data.shape[-2:], seed=1)
        return s.reconstruct_phase(method="tie", flipped=flipped, **kw)
    raise AssertionError(how)


METHODS = ["tie", "sitie", "sitie_keyword", "ad", "ad_single", "exit_wave", "flip"]


class TestContrastCheck:
    @pytest.mark.parametrize("how", METHODS)
    def test_noise_only_series_warns_with_the_cause_before_every_method(self, how):
        import warnings

        s = _noise_series()
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # stop at the warning: no fit is run
            with pytest.raises(UserWarning, match=README_CAUSE):
                _run(s, how)

    def test_the_warning_points_at_the_callers_line(self):
        s = _noise_series()
        with pytest.warns(UserWarning, match=NO_CONTRAST) as record:
            s.reconstruct_phase(method="tie", show_progressbar=False)
        assert any(Path(w.filename).resolve() == Path(__file__).resolve() for w in record)

    def test_plausible_defocus_but_too_few_electrons_names_the_noise(self):
        s = _noise_series(defocus=(-2e5, 0.0, 2e5), dose=3.0)
        with pytest.warns(UserWarning, match=rf"{NO_CONTRAST}.*Likely cause: the noise.*rebin"):
            s.reconstruct_phase(method="tie", show_progressbar=False)

    @pytest.mark.parametrize("how", ["tie", "sitie"])
    def test_series_with_contrast_does_not_warn_and_records_it(self, lattice, how):
        import warnings

        s = lattice.inav[4:5] if how == "sitie" else lattice
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            phase = s.reconstruct_phase(method=how, show_progressbar=False)
        rec = phase.metadata.Signal.Reconstruction.defocus_contrast
        assert rec.has_contrast is True
        assert min(abs(v) for v in rec.significance if v) > 5 * rec.threshold
        assert len(rec.defocus_nm) == (1 if how == "sitie" else 5)

    def test_series_with_contrast_passes_the_check_of_the_ad_paths(self, lattice):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            lattice._series_inputs()
            lattice.inav[4:5]._series_inputs(single_image=True)

    def test_record_is_saved_with_the_result(self, lattice, tmp_path):
        phase = lattice.reconstruct_phase(method="tie", show_progressbar=False)
        phase.save(tmp_path / "phase.hspy")
        rec = hs.load(tmp_path / "phase.hspy").metadata.Signal.Reconstruction.defocus_contrast
        assert rec.has_contrast
        np.testing.assert_allclose(rec.significance,
                                   phase.metadata.Signal.Reconstruction.defocus_contrast.significance)

    def test_noise_only_result_records_no_contrast(self):
        s = _noise_series(shape=(64, 64))
        with pytest.warns(UserWarning, match=NO_CONTRAST):
            phase = s.reconstruct_phase(method="tie", show_progressbar=False)
        assert phase.metadata.Signal.Reconstruction.defocus_contrast.has_contrast is False

    def test_several_series_name_those_without_contrast(self, lattice):
        sub = lattice.inav[::2]  # -300, 0, +300 um
        flat = _noise_series(defocus=tuple(sub.axes_manager["defocus"].axis), pixel=2.5, dose=100.0)
        both = hs.stack([sub, flat], new_axis_name="field")
        both.set_signal_type("lorentz_focal_series")
        with pytest.warns(UserWarning, match=r"1 of the 2 focal series of this signal hold no contrast "
                                             r"above noise; the first, at navigation index 1"):
            phase = both.reconstruct_phase(method="tie", show_progressbar=False)
        rec = phase.metadata.Signal.Reconstruction.defocus_contrast
        assert rec.series == 2 and rec.series_without_contrast == 1
        assert rec.largest_significance[0] > 5 * rec.threshold > rec.largest_significance[1]

    def test_lazy_series_are_not_read_for_the_check(self):
        import warnings

        s = _noise_series(shape=(64, 64)).as_lazy()
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            phase = s.reconstruct_phase(method="tie", lazy_output=False, show_progressbar=False)
        assert not phase.metadata.Signal.Reconstruction.has_item("defocus_contrast")


# ----------------------------------------------------------------------------
# Data that cannot be a focal series fail at set_signal_type
# ----------------------------------------------------------------------------
_REFUSING = [
    ("LorentzFocalSeriesComplex", "complex", 2, False),
    ("LazyLorentzFocalSeriesComplex", "complex", 2, True),
    ("LorentzFocalSeries1D", "real", 1, False),
    ("LazyLorentzFocalSeries1D", "real", 1, True),
    ("LorentzFocalSeriesComplex1D", "complex", 1, False),
    ("LazyLorentzFocalSeriesComplex1D", "complex", 1, True),
]


@pytest.fixture
def refusing_classes(monkeypatch):
    """The registrations of hyperspy_extension.yaml for the refusing classes."""
    from hyperspy.extensions import ALL_EXTENSIONS

    for name, dtype, dim, lazy in _REFUSING:
        monkeypatch.setitem(ALL_EXTENSIONS["signals"], name, {
            "signal_type": "lorentz_focal_series",
            "signal_type_aliases": ["focal_series", "LTEM"],
            "signal_dimension": dim,
            "dtype": dtype,
            "lazy": lazy,
            "module": "hyperspy_lorentz.signals.focal_series",
        })


class TestNotAFocalSeries:
    @pytest.mark.parametrize(
        "make, match",
        [
            (lambda: hs.signals.ComplexSignal2D(np.ones((3, 16, 16), complex)), r"complex.*s\.amplitude \*\* 2"),
            (lambda: hs.signals.Signal1D(np.ones((3, 16))), r"stack of 2-D images.*1 signal dimension.*as_signal2D"),
            (lambda: hs.signals.ComplexSignal1D(np.ones((3, 16), complex)), r"complex.*s\.amplitude \*\* 2"),
        ],
    )
    @pytest.mark.parametrize("lazy", [False, True])
    def test_set_signal_type_fails_early_and_keeps_the_class(self, refusing_classes, make, match, lazy):
        s = make()
        if lazy:
            s = s.as_lazy()
        cls = type(s)
        with pytest.raises(ValueError, match=match):
            s.set_signal_type("lorentz_focal_series")
        assert type(s) is cls
        assert s.metadata.Signal.signal_type == ""

    def test_hs_load_fails_early(self, refusing_classes, tmp_path):
        hs.signals.ComplexSignal2D(np.ones((3, 16, 16), complex)).save(tmp_path / "c.hspy")
        with pytest.raises(ValueError, match="complex"):
            hs.load(tmp_path / "c.hspy", signal_type="lorentz_focal_series")

    def test_a_file_saved_with_the_signal_type_loads_as_the_message_says(self, tmp_path):
        """A complex signal saved with signal_type 'lorentz_focal_series' (an FFT of a
        focal series saved by an older version) is refused on load, and the way out
        that the message names works."""
        import h5py

        hs.signals.ComplexSignal2D(np.ones((3, 16, 16), complex)).save(tmp_path / "c.hspy")
        with h5py.File(tmp_path / "c.hspy", "r+") as f:  # as the old version wrote it
            group = next(iter(f["Experiments"].values()))
            group["metadata"]["Signal"].attrs["signal_type"] = "lorentz_focal_series"
        with pytest.raises(ValueError, match=r"hs\.load\(filename, signal_type=''\)"):
            hs.load(tmp_path / "c.hspy")
        s = hs.load(tmp_path / "c.hspy", signal_type="")
        assert isinstance(s, hs.signals.ComplexSignal2D) and s.data.shape == (3, 16, 16)

    def test_the_advice_works(self, refusing_classes):
        c = hs.signals.ComplexSignal2D(np.ones((3, 16, 16), complex))
        i = c.amplitude ** 2
        i.set_signal_type("lorentz_focal_series")
        assert isinstance(i, LorentzFocalSeries)
        s = hs.signals.Signal1D(np.ones((3, 16, 16)))
        t = s.as_signal2D((0, 1))
        t.set_signal_type("lorentz_focal_series")
        assert isinstance(t, LorentzFocalSeries)

    @pytest.mark.parametrize("name, dtype, dim, lazy", _REFUSING)
    def test_registered_by_the_extension_yaml(self, name, dtype, dim, lazy):
        """Without the fixture: hyperspy_extension.yaml itself registers each class."""
        from hyperspy.extensions import ALL_EXTENSIONS

        entry = ALL_EXTENSIONS["signals"][name]
        assert entry["signal_type"] == "lorentz_focal_series"
        assert set(entry["signal_type_aliases"]) == {"focal_series", "LTEM"}
        assert (entry["dtype"], entry["signal_dimension"], entry["lazy"]) == (dtype, dim, lazy)
        assert entry["module"] == "hyperspy_lorentz.signals.focal_series"
        if dtype == "complex":
            s, match = hs.signals.ComplexSignal2D(np.ones((3, 16, 16), complex)), "complex"
        else:
            s, match = hs.signals.Signal1D(np.ones((3, 16))), "stack of 2-D images"
        if lazy:
            s = s.as_lazy()
        cls = type(s)
        for alias in ("lorentz_focal_series", "focal_series", "LTEM"):
            with pytest.raises(ValueError, match=match):
                s.set_signal_type(alias)
            assert type(s) is cls and s.metadata.Signal.signal_type == ""

    @pytest.mark.parametrize("lazy", [False, True])
    @pytest.mark.parametrize(
        "derive, expected",
        [
            (lambda s: s.fft(), "ComplexSignal2D"),
            (lambda s: s.isig[:, 5], "Signal1D"),
            (lambda s: s.sum(-1), "Signal1D"),
            (lambda s: s.T, "Signal1D"),
            (lambda s: s.change_dtype(complex) or s, "ComplexSignal2D"),
        ],
    )
    def test_derived_results_are_generic_not_refused(self, derive, expected, lazy):
        """fft, line profiles and sums of a focal series become untyped generic signals."""
        s = LorentzFocalSeries(np.random.default_rng(0).random((3, 16, 16)))
        if lazy:
            s = s.as_lazy()
            expected = "Lazy" + expected
        r = derive(s)
        assert type(r).__name__ == expected
        assert r.metadata.Signal.signal_type == ""
