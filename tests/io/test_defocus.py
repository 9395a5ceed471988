"""Tests of hyperspy_lorentz.io.defocus: file names, vendor tags, Velox frames."""

from __future__ import annotations

import copy
import re
import shutil

import h5py
import hyperspy.api as hs
import numpy as np
import pytest

from hyperspy_lorentz.io.defocus import (
    defocus_from_filename,
    defocus_from_original_metadata,
    read_defocus,
    velox_frame_defocus,
)

VELOX_VENDOR_DEFOCUS_NM = 3.0231699205257632e-08 * 1e9


def _snapshot(s):
    return (
        copy.deepcopy(s.metadata.as_dictionary()),
        copy.deepcopy(s.original_metadata.as_dictionary()),
        copy.deepcopy(s.tmp_parameters.as_dictionary()),
        [(ax.name, ax.scale, ax.offset, ax.units, ax.size) for ax in s.axes_manager._axes],
    )


def _read_unchanged(s):
    before = _snapshot(s)
    out = read_defocus(s)
    assert _snapshot(s) == before
    return out


def _save_tiff(path, value=0.0, scale=2.0):
    s = hs.signals.Signal2D(np.full((8, 8), value, dtype="float32"))
    for ax in s.axes_manager.signal_axes:
        ax.scale = scale
        ax.units = "nm"
    s.save(path)
    return path


# ---------------------------------------------------------------------------
# File names
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("img_+1.2um.tif", 1200.0),
        ("img_-1.2um.tif", -1200.0),
        ("img_+0um.tif", 0.0),
        ("img_-0um.tif", 0.0),
        ("0um.dm3", 0.0),
        ("-800nm.dm4", -800.0),
        ("+500 nm.tif", 500.0),
        ("series -1.6 mm.dm3", -1.6e6),
        ("df_-0.5mm.tif", -5e5),
        ("DF_-0.5MM.TIF", -5e5),
        ("defocus=1.5mm.dm3", 1.5e6),
        ("defocus1.5mm.dm3", 1.5e6),
        ("defocus_-200nm_003.dm3", -200.0),
        ("dz:+2um.tif", 2000.0),
        ("series_p1.2um.tif", 1200.0),
        ("series_m0.5um.tif", -500.0),
        ("img_m.5um.tif", -500.0),
        ("img_1.2µm.tif", 1200.0),  # micro sign U+00B5
        ("img_1.2μm.tif", 1200.0),  # Greek mu U+03BC
        ("img_-3microns.tif", -3000.0),
        ("img_−1.2um.tif", -1200.0),  # minus sign U+2212
        ("img-1.2um.tif", -1200.0),  # a hyphen directly before the number is a minus
        ("infocus.dm3", 0.0),
        ("Lorentz_InFocus_003.dm3", 0.0),
        ("in-focus.tif", 0.0),
        ("in_focus.tif", 0.0),
        ("underfocus_1.2um.tif", -1200.0),
        ("under_focus_-1.2um.tif", -1200.0),
        ("overfocus_800nm.tif", 800.0),
        ("/data/2um_series/img_+1.2um.dm3", 1200.0),  # folder names are ignored
        ("C:\\data\\5nm\\img_-1um.dm3", -1000.0),
        ("img_003_+1.2um.dm3", 1200.0),
        ("film_10nm_+1.2um.tif", 1200.0),  # signed value beats unsigned
        ("sample_0.5nm_px_-1um.tif", -1000.0),  # pixel size is not a defocus
        ("sample_20nm_thick_+1um.tif", 1000.0),
        ("df_1um_img_+3um.tif", 1000.0),  # keyword beats sign
        ("img_+1.2um_+1.2um.tif", 1200.0),  # repeated, consistent
    ],
)
def test_defocus_from_filename(name, expected):
    value = defocus_from_filename(name)
    assert value == pytest.approx(expected, rel=1e-11, abs=1e-12)
    assert isinstance(value, float)
    assert not (value == 0 and np.signbit(value))


@pytest.mark.parametrize(
    "name",
    [
        "img_003.dm3",
        "img_003.tif",
        "series_12.tif",
        "digitalmicrograph_2D_test-1.dm4",
        "stack_-1.dm3",
        "img_1.2.dm3",
        "img_2m.tif",  # bare metres not accepted (minutes?)
        "img_500pm.tif",  # pm not accepted
        "img_1.2umx.tif",  # unit must end the token
        "img_5nm2.tif",
        "Co2nm_film.tif",  # number inside a word
        "v1.2um.tif",
        "img_0.5nm_px.tif",
        "img_0.5nm_pixel.tif",
        "film_20nm_thick.tif",
        "img_+1um_-1um.tif",  # ambiguous
        "film_10nm_0um.tif",  # ambiguous
        "underfocus_+1um.tif",  # contradiction
        "overfocus_-1um.tif",
        "defocused.dm3",
        "focus.dm3",
        "",
        "   ",
        None,
        12,
    ],
)
def test_defocus_from_filename_none(name):
    assert defocus_from_filename(name) is None


def test_defocus_from_filename_pathlike(tmp_path):
    assert defocus_from_filename(tmp_path / "img_+2um.tif") == 2000.0


# ---------------------------------------------------------------------------
# Original metadata
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "om, expected",
    [
        ({"Optics": {"Defocus": "3.0231699205257632e-08"}}, 30.231699205257632),
        ({"Optics": {"Defocus": -1.2e-6}}, -1200.0),
        ({"Optics": {"Defocus": ""}}, None),
        (
            {"ImageList": {"TagGroup0": {"ImageTags": {"Microscope Info": {"Defocus (um)": -0.8}}}}},
            -800.0,
        ),
        (
            {"ImageList": {"TagGroup0": {"ImageTags": {"Microscope Info": {"Defocus (µm)": 1.5}}}}},
            1500.0,
        ),
        (
            {"ImageList": {"TagGroup1": {"ImageTags": {"Microscope Info": {"Defocus(nm)": 250.0}}}}},
            250.0,
        ),
        ({"Microscope Info": {"Defocus [nm]": "12.5"}}, 12.5),
        ({"ObjectInfo": {"ExperimentalDescription": {"Defocus_um": -2.0}}}, -2000.0),
        (
            {"Microscope Info": {"Items": {"TagGroup3": {
                "Label": "Defocus", "Value": -600.0, "Units": "nm"}}}},
            -600.0,
        ),
        # unit unknown: ignored
        ({"ImageList": {"TagGroup0": {"ImageTags": {"Microscope Info": {"Defocus": 3.0}}}}}, None),
        ({"Microscope Info": {"Items": {"TagGroup3": {"Label": "Defocus", "Value": 3.0, "Units": []}}}}, None),
        # not a length / not a number
        ({"Microscope Info": {"Defocus (s)": 3.0}}, None),
        ({"Microscope Info": {"Defocus (um)": []}}, None),
        ({"Microscope Info": {"Defocus (um)": "n/a"}}, None),
        # STEM probe defocus of simulations, other focus values
        ({"simulation_parameters": {"probeDefocus": 10.0}}, None),
        ({"Optics": {"Focus": "0", "StemFocus": "1e-9"}}, None),
        # HyperSpy's stack_elements are not searched here
        ({"stack_elements": {"element0": {"original_metadata": {"Optics": {"Defocus": "1e-6"}}}}}, None),
        ({}, None),
        (None, None),
    ],
)
def test_defocus_from_original_metadata(om, expected):
    om_copy = copy.deepcopy(om)
    value = defocus_from_original_metadata(om)
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(expected, rel=1e-11)
    assert om == om_copy


def test_defocus_from_original_metadata_tree_browser():
    s = hs.signals.Signal2D(np.zeros((4, 4)))
    s.original_metadata.add_dictionary(
        {"ImageList": {"TagGroup0": {"ImageTags": {"Microscope Info": {"Defocus (um)": 0.25}}}}}
    )
    before = copy.deepcopy(s.original_metadata.as_dictionary())
    assert defocus_from_original_metadata(s.original_metadata) == pytest.approx(250.0)
    assert s.original_metadata.as_dictionary() == before


# ---------------------------------------------------------------------------
# Velox EMD, every frame
# ---------------------------------------------------------------------------


def test_velox_frame_defocus_differs_per_frame(tmp_path, velox_writer):
    df_m = [-1.2e-6, -0.4e-6, 0.0, 0.4e-6, 1.2e-6]
    path = velox_writer(tmp_path / "series.emd", df_m)
    values = velox_frame_defocus(path)
    np.testing.assert_allclose(values, np.array(df_m) * 1e9, rtol=1e-11, atol=1e-9)
    assert velox_frame_defocus(str(path), n_frames=5) is not None
    assert velox_frame_defocus(path, n_frames=4) is None


def test_velox_frame_defocus_lookup_table(tmp_path, velox_writer):
    path = velox_writer(tmp_path / "series.emd", [-1e-6, 0.0, 1e-6])
    with h5py.File(path, "r+") as f:
        g = f["Data/Image"][next(iter(f["Data/Image"]))]
        g["FrameLookupTable"][...] = np.array([2, 1, 0], dtype=np.uint32)
    np.testing.assert_allclose(velox_frame_defocus(path), [1000.0, 0.0, -1000.0], atol=1e-9)


def test_velox_frame_defocus_single_record(tmp_path, velox_writer):
    path = velox_writer(tmp_path / "series.emd", [5e-7, 9e-7])
    with h5py.File(path, "r+") as f:
        g = f["Data/Image"][next(iter(f["Data/Image"]))]
        meta = g["Metadata"][:, :1]
        del g["Metadata"], g["FrameLookupTable"]
        g.create_dataset("Metadata", data=meta)
    # one record for the whole stack applies to every frame
    np.testing.assert_allclose(velox_frame_defocus(path), [500.0, 500.0])


def test_velox_frame_defocus_not_velox(tmp_path):
    s = hs.signals.Signal2D(np.zeros((2, 4, 4), dtype="float32"))
    s.save(tmp_path / "ncem.emd")
    s.save(tmp_path / "a.hspy")
    (tmp_path / "junk.emd").write_bytes(b"not hdf5")
    assert velox_frame_defocus(tmp_path / "ncem.emd") is None
    assert velox_frame_defocus(tmp_path / "a.hspy") is None
    assert velox_frame_defocus(tmp_path / "junk.emd") is None
    assert velox_frame_defocus(tmp_path / "missing.emd") is None
    assert velox_frame_defocus(None) is None


def test_velox_frame_defocus_missing_tag(tmp_path, velox_writer):
    path = velox_writer(tmp_path / "series.emd", [1e-6, 2e-6])
    with h5py.File(path, "r+") as f:
        g = f["Data/Image"][next(iter(f["Data/Image"]))]
        col = g["Metadata"][:, 1]
        raw = col.tobytes().split(b"\x00", 1)[0].replace(b'"Defocus"', b'"Defocux"')
        col[:] = 0
        col[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        g["Metadata"][:, 1] = col
    assert velox_frame_defocus(path) is None


def test_vendor_velox_frames(vendor_dir):
    path = vendor_dir / "emd_fei_example_tem_stack.emd"
    values = velox_frame_defocus(path)
    np.testing.assert_allclose(values, [VELOX_VENDOR_DEFOCUS_NM] * 2, rtol=1e-11)


# ---------------------------------------------------------------------------
# read_defocus
# ---------------------------------------------------------------------------

VENDOR_DEFOCUS = {
    "emd_fei_example_tem_stack.emd": [VELOX_VENDOR_DEFOCUS_NM] * 2,
    "tiff_test_dm_image_um_unit.dm3": None,
    "digitalmicrograph_2D_test_STEM_image.dm3": None,
    "digitalmicrograph_2D_test-1.dm4": None,
    "digitalmicrograph_3D_test-1.dm3": None,
    "digitalmicrograph_3D_test-1.dm4": None,
    "emd_example_image.emd": None,
    "emd_example_signal.emd": None,
    "tiff_test_loading_image_saved_with_DM_stack.tif": None,
}


@pytest.mark.parametrize("name", sorted(VENDOR_DEFOCUS))
def test_read_defocus_vendor(vendor_dir, name):
    s = hs.load(vendor_dir / name)
    values, source = _read_unchanged(s)
    expected = VENDOR_DEFOCUS[name]
    if expected is None:
        assert (values, source) == (None, None)
        assert defocus_from_original_metadata(s.original_metadata) is None
    else:
        assert source == "file"
        np.testing.assert_allclose(values, expected, rtol=1e-11)


def test_read_defocus_vendor_velox_lazy_and_frame0(vendor_dir):
    s = hs.load(vendor_dir / "emd_fei_example_tem_stack.emd", lazy=True)
    values, source = _read_unchanged(s)
    assert source == "file"
    np.testing.assert_allclose(values, [VELOX_VENDOR_DEFOCUS_NM] * 2, rtol=1e-11)
    # RosettaSciIO's original_metadata holds frame 0's record
    assert defocus_from_original_metadata(s.original_metadata) == pytest.approx(
        VELOX_VENDOR_DEFOCUS_NM
    )


def test_read_defocus_velox_file(tmp_path, velox_writer):
    df_m = [-1.5e-6, 0.0, 1.5e-6]
    path = velox_writer(tmp_path / "series.emd", df_m)
    s = hs.load(path)
    values, source = _read_unchanged(s)
    assert source == "file"
    np.testing.assert_allclose(values, [-1500.0, 0.0, 1500.0], atol=1e-9)
    # only frame 0 is in original_metadata
    assert defocus_from_original_metadata(s.original_metadata) == pytest.approx(-1500.0)


def test_read_defocus_velox_file_moved(tmp_path, velox_writer):
    path = velox_writer(tmp_path / "series.emd", [-1.5e-6, 0.0, 1.5e-6])
    s = hs.load(path)
    path.unlink()
    # frame 0's record alone cannot give three values
    assert _read_unchanged(s) == (None, None)


def test_read_defocus_velox_saved_as_hspy(tmp_path, velox_writer):
    path = velox_writer(tmp_path / "series.emd", [-1.5e-6, 0.0, 1.5e-6])
    hs.load(path).save(tmp_path / "series.hspy")
    r = hs.load(tmp_path / "series.hspy")
    # the original Velox file is found next to the hspy file
    values, source = _read_unchanged(r)
    assert source == "file"
    np.testing.assert_allclose(values, [-1500.0, 0.0, 1500.0], atol=1e-9)
    # elsewhere, it is not
    other = tmp_path / "other"
    other.mkdir()
    shutil.move(tmp_path / "series.hspy", other / "series.hspy")
    assert read_defocus(hs.load(other / "series.hspy")) == (None, None)


def test_read_defocus_velox_frame_cut_from_stack(tmp_path, velox_writer):
    path = velox_writer(tmp_path / "series.emd", [-1.5e-6, 0.0, 1.5e-6])
    s = hs.load(path)
    s.crop(0, 1, 2)  # in place: tmp_parameters still name the file
    assert s.axes_manager.navigation_size == 1
    # original_metadata is frame 0's: it must not be reported for frame 1
    assert read_defocus(s) == (None, None)
    s = hs.load(path)
    s.crop(0, 0, 2)
    assert read_defocus(s) == (None, None)


def test_read_defocus_velox_single_frame_files_stacked(tmp_path, velox_writer):
    df_m = [-2e-6, 0.0, 2e-6]
    paths = [velox_writer(tmp_path / f"frame_{i}.emd", d) for i, d in enumerate(df_m)]
    single = hs.load(paths[0])
    assert single.axes_manager.navigation_dimension == 0
    assert read_defocus(single)[1] == "file"
    np.testing.assert_allclose(read_defocus(single)[0], [-2000.0])

    s = hs.load(paths, stack=True)
    values, source = _read_unchanged(s)
    assert source == "file"
    np.testing.assert_allclose(values, [-2000.0, 0.0, 2000.0], atol=1e-9)


def test_read_defocus_tiff_names_stacked(tmp_path):
    names = ["img_-1.2um.tif", "img_+0um.tif", "img_+1.2um.tif"]
    paths = [_save_tiff(tmp_path / n, i) for i, n in enumerate(names)]
    s = hs.load(paths, stack=True)
    assert s.axes_manager.navigation_shape == (3,)
    values, source = _read_unchanged(s)
    assert source == "file name"
    np.testing.assert_allclose(values, [-1200.0, 0.0, 1200.0])
    # stack order is the order of the files
    s2 = hs.load(paths[::-1], stack=True)
    np.testing.assert_allclose(read_defocus(s2)[0], [1200.0, 0.0, -1200.0])


def test_read_defocus_tiff_names_varied_spellings(tmp_path):
    names = ["LTEM_df_m800nm.tif", "LTEM_infocus.tif", "LTEM_df_p0.8um.tif"]
    paths = [_save_tiff(tmp_path / n) for n in names]
    values, source = read_defocus(hs.load(paths, stack=True))
    assert source == "file name"
    np.testing.assert_allclose(values, [-800.0, 0.0, 800.0])


def test_read_defocus_names_one_missing(tmp_path):
    names = ["img_-1.2um.tif", "img_003.tif", "img_+1.2um.tif"]
    paths = [_save_tiff(tmp_path / n) for n in names]
    assert _read_unchanged(hs.load(paths, stack=True)) == (None, None)


def test_read_defocus_single_image_name(tmp_path):
    path = _save_tiff(tmp_path / "film_+600nm.tif")
    s = hs.load(path)
    values, source = _read_unchanged(s)
    assert source == "file name"
    np.testing.assert_allclose(values, [600.0])


def test_read_defocus_single_image_title():
    s = hs.signals.Signal2D(np.zeros((4, 4)))
    s.metadata.General.title = "Lorentz -2um"
    assert read_defocus(s) == (pytest.approx(np.array([-2000.0])), "file name")


def test_read_defocus_hs_stack_with_tags(tmp_path):
    signals = []
    for df in (-0.5, 0.5):
        s = hs.signals.Signal2D(np.zeros((4, 4)))
        s.original_metadata.add_dictionary(
            {"ImageList": {"TagGroup0": {"ImageTags": {"Microscope Info": {"Defocus (um)": df}}}}}
        )
        s.metadata.General.title = "img_+9um"  # metadata wins over names
        signals.append(s)
    st = hs.stack(signals)
    values, source = _read_unchanged(st)
    assert source == "file"
    np.testing.assert_allclose(values, [-500.0, 500.0])


def test_read_defocus_stack_sliced_count_mismatch(tmp_path):
    names = ["img_-1.2um.tif", "img_+0um.tif", "img_+1.2um.tif"]
    paths = [_save_tiff(tmp_path / n) for n in names]
    s = hs.load(paths, stack=True)
    # the stack_elements still describe 3 files
    assert read_defocus(s.inav[:2]) == (None, None)


def test_read_defocus_two_navigation_axes():
    s = hs.signals.Signal2D(np.zeros((2, 3, 4, 4)))
    s.metadata.General.title = "img_+1um"
    assert read_defocus(s) == (None, None)


def test_read_defocus_plain_stack_without_info():
    s = hs.signals.Signal2D(np.zeros((3, 4, 4)))
    s.metadata.General.title = "img_+1um"  # one name for three images
    assert _read_unchanged(s) == (None, None)


def test_read_defocus_hspy_zspy_keep_original_metadata(tmp_path):
    s = hs.signals.Signal2D(np.zeros((4, 4), dtype="float32"))
    s.original_metadata.add_dictionary({"Optics": {"Defocus": "-4e-07"}})
    for ext in ("hspy", "zspy"):
        path = tmp_path / f"image.{ext}"
        s.save(path)
        values, source = read_defocus(hs.load(path))
        assert source == "file"
        np.testing.assert_allclose(values, [-400.0])


# ---------------------------------------------------------------------------
# Recorded but untrustworthy: refused with the file, the tag and the fix
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, pattern",
    [
        ("img_+" + "9" * 400 + "um.tif", "too long a number to be finite"),
        ("df_-5000mm.tif", "-5e\\+09 nm, beyond any microscope"),
    ],
)
def test_defocus_from_filename_impossible(name, pattern):
    shown = re.escape(name if len(name) <= 80 else name[:77] + "...")
    with pytest.raises(ValueError, match=rf"^File name '{shown}': the defocus .*{pattern}.*Rename the file, or set "
                                         r"the defocus explicitly: s.set_defocus"):
        defocus_from_filename(name)


def test_defocus_from_filename_tiny_value_is_not_refused():
    # (pint's own conversion turns such a value into nan)
    assert defocus_from_filename("img_+0." + "0" * 320 + "1nm.tif") == pytest.approx(0.0, abs=1e-300)


@pytest.mark.parametrize(
    "om, pattern",
    [
        ({"Optics": {"Defocus": "nan"}}, r"'Optics.Defocus' \(m\) is 'nan', not a finite number"),
        ({"Optics": {"Defocus": "3e-08m"}}, r"'Optics.Defocus' \(m\) is '3e-08m', not a number"),
        ({"Optics": {"Defocus": "2.0"}}, r"'Optics.Defocus' \(m\) is '2.0' m = 2e\+09 nm, beyond any microscope"),
        ({"Microscope Info": {"Defocus (um)": float("inf")}}, r"'Microscope Info.Defocus \(um\)' is inf"),
        ({"Microscope Info": {"Defocus (um)": True}},
         r"'Microscope Info.Defocus \(um\)' is True \(bool\), not a number"),
        ({"Microscope Info": {"Defocus (um)": [1.0, 2.0]}},
         r"'Microscope Info.Defocus \(um\)' holds 2 values, not one"),
        ({"Microscope Info": {"Items": {"TagGroup3": {"Label": "Defocus", "Value": "1_0", "Units": "nm"}}}},
         r"'Microscope Info.Items.TagGroup3.Value' \(nm\) is '1_0', not a number"),
    ],
)
def test_defocus_from_original_metadata_untrustworthy(om, pattern):
    with pytest.raises(ValueError, match=r"^'img.dm4': original_metadata tag " + pattern + r".*s.set_defocus\("):
        defocus_from_original_metadata(om, source="'img.dm4'")


def test_velox_frame_defocus_damaged_record(tmp_path, velox_writer):
    path = velox_writer(tmp_path / "series.emd", [1e-6, 2e-6, 3e-6])
    with h5py.File(path, "r+") as f:
        g = f["Data/Image"][next(iter(f["Data/Image"]))]
        col = g["Metadata"][:, 1]
        col[40:60] = 0x7B  # '{' over part of the JSON
        g["Metadata"][:, 1] = col
    with pytest.raises(ValueError, match=rf"^{path}: Data/Image/\w+/Metadata record 1 \(frame 1\) is not valid JSON"):
        velox_frame_defocus(path)
    # read_defocus does not fall back silently to a worse source
    s = hs.load(path)
    with pytest.raises(ValueError, match="not valid JSON.*set_defocus"):
        read_defocus(s)


def test_velox_frame_defocus_lookup_table_out_of_range(tmp_path, velox_writer):
    path = velox_writer(tmp_path / "series.emd", [-1e-6, 0.0, 1e-6])
    with h5py.File(path, "r+") as f:
        g = f["Data/Image"][next(iter(f["Data/Image"]))]
        g["FrameLookupTable"][...] = np.array([0, 7, 2], dtype=np.uint32)
    with pytest.raises(ValueError, match=r"FrameLookupTable maps frame 1 to metadata record 7, but Metadata holds 3"):
        velox_frame_defocus(path)


def test_velox_frame_defocus_nan_defocus(tmp_path, velox_writer):
    path = velox_writer(tmp_path / "series.emd", [1e-6, float("nan")])
    with pytest.raises(ValueError, match=r"record 1 \(frame 1\): Optics.Defocus \(m\) is 'nan', not a finite number"):
        velox_frame_defocus(path)


def test_read_defocus_names_the_stacked_file():
    signals = []
    for i, df in enumerate((-0.5, "abc")):
        s = hs.signals.Signal2D(np.zeros((4, 4)))
        s.metadata.General.original_filename = f"img_{i}.dm4"
        s.original_metadata.add_dictionary({"Microscope Info": {"Defocus (um)": df}})
        signals.append(s)
    with pytest.raises(ValueError, match=r"^'img_1.dm4' \(stack element 1\): original_metadata tag "
                                         r"'Microscope Info.Defocus \(um\)' is 'abc', not a number"):
        read_defocus(hs.stack(signals))
