"""Tests of hyperspy_lorentz.io.calibration: beam energy and pixel size."""

from __future__ import annotations

import copy

import hyperspy.api as hs
import numpy as np
import pytest

from hyperspy_lorentz.io.calibration import beam_energy_from_metadata, pixel_size_nm


def _image(shape=(8, 8), scale=1.0, units=None, nav=0):
    s = hs.signals.Signal2D(np.zeros((nav,) + shape if nav else shape, dtype="float32"))
    for ax in s.axes_manager.signal_axes:
        ax.scale = scale
        if units is not None:
            ax.units = units
    return s


def _snapshot(s):
    return (
        copy.deepcopy(s.metadata.as_dictionary()),
        copy.deepcopy(s.original_metadata.as_dictionary()),
        copy.deepcopy(s.tmp_parameters.as_dictionary()),
        [ax.get_axis_dictionary() for ax in s.axes_manager._axes],
    )


def _assert_unchanged(s, before):
    after = _snapshot(s)
    assert after[0] == before[0]
    assert after[1] == before[1]
    assert after[2] == before[2]
    for a, b in zip(after[3], before[3]):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], np.ndarray):
                np.testing.assert_array_equal(a[k], b[k])
            else:
                assert a[k] == b[k]


# ---------------------------------------------------------------------------
# Real vendor files (RosettaSciIO test files)
# ---------------------------------------------------------------------------

# file -> (beam energy keV, pixel size nm | None | "non-square" | "not 2-D")
VENDOR = {
    "emd_fei_example_tem_stack.emd": (300.0, 8.1728831922978511e-12 * 1e9),
    "tiff_test_dm_image_um_unit.dm3": (200.0, 0.16867469251155853 * 1e3),
    "digitalmicrograph_2D_test_STEM_image.dm3": (200.0, 0.24853801727294922),
    "digitalmicrograph_2D_test-1.dm4": (None, None),
    "digitalmicrograph_3D_test-1.dm3": (None, None),
    "digitalmicrograph_3D_test-1.dm4": (None, None),
    "emd_example_image.emd": (None, None),
    # NCEM EMD: three signal axes, no units
    "emd_example_signal.emd": (None, "not 2-D"),
    # DM-written TIFF stack: the y calibration is 10x the x one in the file
    "tiff_test_loading_image_saved_with_DM_stack.tif": (None, "non-square"),
}


def test_vendor_table_covers_every_file(vendor_dir):
    present = {
        p.name for p in vendor_dir.iterdir() if p.is_file() and p.suffix.lower() not in (".md", ".txt")
    }
    assert present == set(VENDOR), "update VENDOR when files are added to the vendor folder"


@pytest.mark.parametrize("name", sorted(VENDOR))
def test_vendor_file(vendor_dir, name):
    energy, pixel = VENDOR[name]
    s = hs.load(vendor_dir / name)
    before = _snapshot(s)

    e, src = beam_energy_from_metadata(s)
    if energy is None:
        assert (e, src) == (None, None)
    else:
        assert src == "file"
        assert e == pytest.approx(energy)

    if pixel == "non-square":
        with pytest.raises(ValueError, match=r"not square.*signal_axes\[1\]\.scale"):
            pixel_size_nm(s)
    elif pixel == "not 2-D":
        with pytest.raises(ValueError, match="exactly two signal axes"):
            pixel_size_nm(s)
    elif pixel is None:
        assert pixel_size_nm(s) == (None, None)
    else:
        px, src = pixel_size_nm(s)
        assert src == "file"
        assert px == pytest.approx(pixel, rel=1e-6)
    _assert_unchanged(s, before)


def test_vendor_velox_lazy(vendor_dir):
    s = hs.load(vendor_dir / "emd_fei_example_tem_stack.emd", lazy=True)
    assert pixel_size_nm(s)[0] == pytest.approx(0.0081728831922978511, rel=1e-6)
    assert beam_energy_from_metadata(s) == (300.0, "file")


# ---------------------------------------------------------------------------
# Files written here
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["hspy", "zspy"])
def test_hyperspy_formats_roundtrip(tmp_path, ext):
    s = _image(scale=0.4, units="nm", nav=3)
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 200.0)
    path = tmp_path / f"series.{ext}"
    s.save(path)
    r = hs.load(path)
    assert beam_energy_from_metadata(r) == (200.0, "file")
    assert pixel_size_nm(r) == (pytest.approx(0.4), "file")


def test_ncem_emd_roundtrip(tmp_path):
    s = _image(scale=2.0, units="µm")
    path = tmp_path / "image.emd"
    s.save(path)
    r = hs.load(path)
    assert pixel_size_nm(r) == (pytest.approx(2000.0), "file")
    # the NCEM EMD writer does not store the beam energy
    assert beam_energy_from_metadata(r) == (None, None)


@pytest.mark.parametrize(
    "scale, units, expected",
    [(0.5, "nm", 0.5), (250.0, "pm", 0.25), (0.25, "µm", 250.0), (2.0, "Å", 0.2)],
)
def test_tiff_roundtrip(tmp_path, scale, units, expected):
    s = _image(scale=scale, units=units)
    path = tmp_path / "image.tif"
    s.save(path)
    r = hs.load(path)
    px, src = pixel_size_nm(r)
    assert src == "file"
    assert px == pytest.approx(expected, rel=1e-6)


def test_velox_layout_file(tmp_path, velox_writer):
    path = velox_writer(tmp_path / "stack.emd", [-1e-6, 0.0, 1e-6], pixel_m=1.5e-9, kv=200.0)
    s = hs.load(path)
    assert beam_energy_from_metadata(s) == (200.0, "file")
    assert pixel_size_nm(s)[0] == pytest.approx(1.5, rel=1e-9)


# ---------------------------------------------------------------------------
# In-memory signals
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scale, units, expected",
    [
        (0.5, "nm", 0.5),
        (500.0, "pm", 0.5),
        (0.002, "um", 2.0),
        (0.002, "µm", 2.0),
        (0.002, "μm", 2.0),
        (5.0, "Å", 0.5),
        (5.0, "angstrom", 0.5),
        (1e-9, "m", 1.0),
        (1e-6, "mm", 1.0),
    ],
)
def test_pixel_units(scale, units, expected):
    s = _image(scale=scale, units=units)
    before = _snapshot(s)
    px, src = pixel_size_nm(s)
    assert src == "file"
    assert px == pytest.approx(expected, rel=1e-12)
    assert isinstance(px, float)
    _assert_unchanged(s, before)


@pytest.mark.parametrize("units", [None, "<undefined>", "", "[]", "px"])
def test_uncalibrated_is_none(units):
    s = _image(scale=1.0, units=units)
    assert pixel_size_nm(s) == (None, None)


def test_scale_without_unit_raises():
    s = _image(scale=0.5)
    with pytest.raises(ValueError, match=r"no length unit.*signal_axes\[0\]\.units = 'nm'"):
        pixel_size_nm(s)


def test_one_axis_without_unit_raises():
    s = _image(scale=1.0)
    s.axes_manager.signal_axes[0].units = "nm"
    with pytest.raises(ValueError, match=r"signal_axes\[1\]\.units"):
        pixel_size_nm(s)


def test_non_length_unit_raises():
    s = _image(scale=0.5, units="s")
    with pytest.raises(ValueError, match="not a length"):
        pixel_size_nm(s)


def test_non_square_raises():
    s = _image(scale=0.5, units="nm")
    s.axes_manager.signal_axes[1].scale = 0.6
    with pytest.raises(ValueError, match=r"not square.*signal_axes\[1\]\.scale"):
        pixel_size_nm(s)


def test_square_in_different_units():
    s = _image(scale=0.5, units="nm")
    s.axes_manager.signal_axes[1].scale = 500.0
    s.axes_manager.signal_axes[1].units = "pm"
    assert pixel_size_nm(s) == (pytest.approx(0.5), "file")


def test_non_uniform_axis_raises():
    s = _image(scale=0.5, units="nm")
    before = _snapshot(s)
    s2 = s.deepcopy()
    s2.axes_manager.signal_axes[0].convert_to_non_uniform_axis()
    with pytest.raises(ValueError, match=r"non-uniform.*signal_axes\[0\]\.convert_to_uniform_axis\(\)"):
        pixel_size_nm(s2)
    _assert_unchanged(s, before)


def test_wrong_signal_dimension_raises():
    s = hs.signals.Signal1D(np.zeros((4, 8)))
    with pytest.raises(ValueError, match="exactly two signal axes"):
        pixel_size_nm(s)


def test_stack_uses_signal_axes():
    s = _image(scale=0.3, units="nm", nav=5)
    s.axes_manager.navigation_axes[0].scale = 200.0
    s.axes_manager.navigation_axes[0].units = "um"
    assert pixel_size_nm(s) == (pytest.approx(0.3), "file")


def test_zero_scale_raises():
    s = _image(scale=0.0, units="nm")
    with pytest.raises(ValueError, match="positive pixel size"):
        pixel_size_nm(s)


@pytest.mark.parametrize(
    "value, expected",
    [(300, (300.0, "file")), (80.0, (80.0, "file")), ("200", (200.0, "file")), (np.float32(120), (120.0, "file")),
     ("n/a", (None, None)), ("", (None, None)), ([], (None, None))],
)
def test_beam_energy_values(value, expected):
    s = _image()
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", value)
    before = _snapshot(s)
    assert beam_energy_from_metadata(s) == expected
    _assert_unchanged(s, before)


@pytest.mark.parametrize(
    "value, problem",
    [(0.0, "not a positive beam energy"), (-5.0, "not a positive beam energy"),
     (float("nan"), "not a positive beam energy"), (float("inf"), "not a positive beam energy"),
     ("abc", "not a number of keV"), ("1_0", "not a number of keV"), (True, "not a number of keV"),
     ([200.0, 300.0], "not a number of keV"), (200000.0, "was it stored in V")],
)
def test_beam_energy_recorded_but_impossible_raises(value, problem):
    s = _image()
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", value)
    before = _snapshot(s)
    with pytest.raises(ValueError, match=r"metadata\.Acquisition_instrument\.TEM\.beam_energy is .*" + problem
                       + r".*set_microscope_parameters\(beam_energy="):
        beam_energy_from_metadata(s)
    _assert_unchanged(s, before)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -0.5])
def test_impossible_scale_raises(scale):
    s = _image(scale=scale, units="nm")
    with pytest.raises(ValueError, match=r"Signal axis 0 .*not a positive pixel size.*signal_axes\[0\]\.scale"):
        pixel_size_nm(s)
    s = _image(scale=scale)  # and without units: the scale is the first problem
    with pytest.raises(ValueError, match=r"Signal axis 0 .*not a positive pixel size"):
        pixel_size_nm(s)


@pytest.mark.parametrize("units", ["nm)", "1/0", "**", "m^", "(", "nm nm", "e-"])
def test_unreadable_units_raise_value_error(units):
    s = _image(scale=0.5, units=units)
    with pytest.raises(ValueError, match=r"Signal axis 0 .*which is not a length.*units = 'nm'"):
        pixel_size_nm(s)


def test_beam_energy_absent():
    s = _image()
    assert beam_energy_from_metadata(s) == (None, None)
    s.metadata.set_item("Acquisition_instrument.TEM.magnification", 1000)
    assert beam_energy_from_metadata(s) == (None, None)
    assert not s.metadata.has_item("Acquisition_instrument.TEM.beam_energy")
