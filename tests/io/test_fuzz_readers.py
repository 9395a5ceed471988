"""Property-based (hypothesis) tests of the defocus and calibration readers.

Each reader has one contract, checked on generated and damaged input:

* ``defocus_from_filename``: a finite defocus (|df| <= 1 m), None (no defocus
  written, or an ambiguous name), or a ValueError naming the file name;
* ``defocus_from_original_metadata`` (DM, TIA and Velox tags): a finite defocus,
  None (no known tag records one), or a ValueError naming the file and the tag;
* ``velox_frame_defocus``: one finite defocus per frame, None, or a ValueError
  naming the file, the group and the record;
* ``beam_energy_from_metadata`` and ``pixel_size_nm``: a positive, finite value,
  ``(None, None)`` (not recorded, uncalibrated), or a ValueError naming the field
  or the axis and the fix.

Never another exception, never a hang (hypothesis deadline). The examples are
derandomised; set ``HYPERSPY_LORENTZ_FUZZ_EXAMPLES`` (e.g. 2000) for a longer,
random search.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from datetime import timedelta

import h5py
import hyperspy.api as hs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperspy_lorentz.io.calibration import beam_energy_from_metadata, pixel_size_nm
from hyperspy_lorentz.io.defocus import (
    MAX_DEFOCUS_NM,
    defocus_from_filename,
    defocus_from_original_metadata,
    read_defocus,
    velox_frame_defocus,
)

_N = os.environ.get("HYPERSPY_LORENTZ_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_N) if _N else 40,
    derandomize=_N is None,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FEW = settings(FUZZ, max_examples=int(_N) if _N else 15)

UNIT_NM = {"nm": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "mm": 1e6}

# Values a vendor tag may hold: numbers of every kind, numeric and other text, containers.
tag_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10**30, 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "n/a", " 1.5 ", "1_0", "nan", "-inf", "1e400", "3.0231699205257632e-08", "0x10", "1,5",
                     "--1", "Infinity", "  "]),
    st.text(max_size=12),
    st.binary(max_size=8),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=3),
)


def _finite_defocus(v):
    return isinstance(v, float) and math.isfinite(v) and abs(v) <= MAX_DEFOCUS_NM


# --------------------------------------------------------------------------- file names


@FUZZ
@given(name=st.one_of(st.text(max_size=60),
                      st.text(alphabet="0123456789.+-_ pmunµμdfzDFcsoerov=:", max_size=60),
                      st.from_regex(r"[a-z_]{0,8}[-+pm]?\d{0,400}\.?\d{0,5} ?(nm|um|mm|µm|microns?)[_.a-z]{0,6}",
                                    fullmatch=True)))
def test_filename_any_text(name):
    """Any text: a finite defocus, None, or a ValueError naming the file name."""
    try:
        v = defocus_from_filename(name)
    except ValueError as exc:
        assert str(exc).startswith("File name '") and "set_defocus" in str(exc), exc
        return
    assert v is None or _finite_defocus(v), v


@FUZZ
@given(prefix=st.sampled_from(["img", "series", "LTEM_scan", "Co_film"]),
       sign=st.sampled_from(["+", "-", "p", "m", "\u2212"]),
       whole=st.integers(0, 99999), frac=st.one_of(st.none(), st.integers(0, 999)),
       unit=st.sampled_from(sorted(UNIT_NM)), ext=st.sampled_from([".tif", ".dm3", ".dm4", ""]))
def test_filename_written_defocus_is_read(prefix, sign, whole, frac, unit, ext):
    """A signed defocus written into a name is read back exactly, or refused when beyond 1 m."""
    number = f"{whole}" if frac is None else f"{whole}.{frac:03d}"
    name = f"{prefix}_{sign}{number}{unit}{ext}"
    expected = float(number) * UNIT_NM[unit] * (-1 if sign in "-m\u2212" else 1)
    if abs(expected) > MAX_DEFOCUS_NM:
        with pytest.raises(ValueError, match="File name .* beyond any microscope"):
            defocus_from_filename(name)
    else:
        assert defocus_from_filename(name) == pytest.approx(expected, rel=1e-11, abs=1e-12)


@FEW
@given(digits=st.integers(309, 2000), unit=st.sampled_from(sorted(UNIT_NM)))
def test_filename_overflowing_number_refused(digits, unit):
    name = f"img_-{'9' * digits}{unit}.tif"
    with pytest.raises(ValueError, match=r"File name 'img_-9+.*too long a number to be finite.*set_defocus"):
        defocus_from_filename(name)


# --------------------------------------------------------------------------- vendor tags

TAGS = {
    "velox": (("Optics", "Defocus"), "m", 1e9),
    "dm": (("ImageList", "TagGroup0", "ImageTags", "Microscope Info", "Defocus (um)"), "um", 1e3),
    "dm_brackets": (("Microscope Info", "Defocus [nm]"), "nm", 1.0),
    "tia": (("ObjectInfo", "ExperimentalDescription", "Defocus_um"), "um", 1e3),
}


def _nest(path, value, extra):
    d = {path[-1]: value}
    for key in reversed(path[:-1]):
        d = {key: d}
    d.update({k: v for k, v in extra.items() if k not in d})
    return d


def _expected_nm(value, factor):
    """What a tag value must give: a number of nm, None (not recorded), or "error"."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return "error" if value.strip() else None
    if isinstance(value, list):
        if not value:
            return None
        if len(value) > 1:
            return "error"
        value = value[0]
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "n/a")):
        return None
    if isinstance(value, bool):
        return "error"
    if isinstance(value, str):
        import re

        if not re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", value):
            return None if value.strip().lower() in ("na", "none", "null", "unknown", "-", "--", "?") else "error"
        value = float(value)
    nm = float(value) * factor
    return nm if math.isfinite(nm) and abs(nm) <= MAX_DEFOCUS_NM else "error"


@FUZZ
@given(kind=st.sampled_from(sorted(TAGS)), value=tag_values,
       extra=st.dictionaries(st.sampled_from(["Acquisition", "Stage", "Defocus", "Focus", "Items"]),
                             st.one_of(tag_values, st.dictionaries(st.text(max_size=5), tag_values, max_size=2)),
                             max_size=3))
def test_original_metadata_tags(kind, value, extra):
    """A known tag: read as written, None when not recorded, else a ValueError naming the file and the tag."""
    path, unit, factor = TAGS[kind]
    om = _nest(path, value, extra)
    expected = _expected_nm(value, factor)
    try:
        v = defocus_from_original_metadata(om, source="'scan_003.dm4'")
    except ValueError as exc:
        msg = str(exc)
        assert expected == "error", (value, msg)
        assert msg.startswith("'scan_003.dm4': original_metadata tag ") and path[-1] in msg and "set_defocus" in msg
        return
    assert expected != "error", f"{value!r} was accepted as {v!r}"
    if expected is None:
        assert v is None or _finite_defocus(v)  # another, valid tag among the extras may hold one
    else:
        assert v == pytest.approx(expected, rel=1e-9, abs=1e-300)


@FUZZ
@given(label=st.sampled_from(["Defocus", "defocus ", "Focus"]), value=tag_values,
       units=st.one_of(st.sampled_from(["nm", "um", "µm", "s", "", "DAC", "nm)", "1/0"]), st.text(max_size=6),
                       st.none(), st.integers()))
def test_dm_items_lists(label, value, units):
    """DigitalMicrograph Items lists: a length unit makes Value a defocus; any other unit is not ours."""
    om = {"Microscope Info": {"Items": {"TagGroup3": {"Label": label, "Value": value, "Units": units}}}}
    try:
        v = defocus_from_original_metadata(om, source="'a.dm3'")
    except ValueError as exc:
        assert label.strip().lower() == "defocus" and "'Microscope Info.Items.TagGroup3.Value'" in str(exc), exc
        return
    assert v is None or _finite_defocus(v)
    if label == "Focus":
        assert v is None


# --------------------------------------------------------------------------- Velox per-frame records


def _set_column(group, c, raw):
    col = np.zeros(group["Metadata"].shape[0], dtype=np.uint8)
    raw = raw[: col.size]
    col[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    group["Metadata"][:, c] = col


def _record(group, c):
    return json.loads(group["Metadata"][:, c].tobytes().split(b"\x00", 1)[0])


@FUZZ
@given(frame=st.integers(0, 2), data=st.data(),
       mutation=st.sampled_from(["defocus", "json", "cut", "lut", "not a dict", "no optics"]))
def test_velox_records(tmp_path, velox_writer, frame, data, mutation):
    """A damaged frame record or frame table: refused naming file, group and record; absent: None."""
    path = velox_writer(tmp_path / "stack.emd", [-1e-6, 0.0, 1e-6], record_len=3000)
    expected = np.array([-1000.0, 0.0, 1000.0])
    with h5py.File(path, "r+") as f:
        g = f["Data/Image"][next(iter(f["Data/Image"]))]
        if mutation == "defocus":
            value = data.draw(tag_values, label="Defocus")
            rec = _record(g, frame)
            try:
                rec["Optics"]["Defocus"] = value if not isinstance(value, bytes) else value.decode("latin-1")
                _set_column(g, frame, json.dumps(rec).encode())
            except ValueError:  # NaN / inf are not JSON: write them as Velox would, as strings
                rec["Optics"]["Defocus"] = repr(value)
                _set_column(g, frame, json.dumps(rec).encode())
            value = rec["Optics"]["Defocus"]
            outcome = _expected_nm(value, 1e9)
            if outcome is None:
                outcome = "none"
            elif outcome != "error":
                expected[frame] = outcome
                outcome = "ok"
        elif mutation == "json":
            junk = data.draw(st.binary(min_size=1, max_size=40), label="junk")
            _set_column(g, frame, junk)
            try:
                rec = json.loads(junk.split(b"\x00", 1)[0].decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                rec = "invalid"
            outcome = "error" if rec == "invalid" or not isinstance(rec, dict) else "none"
        elif mutation == "cut":
            raw = json.dumps(_record(g, frame)).encode()
            cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
            _set_column(g, frame, raw[:cut])
            outcome = "error"
        elif mutation == "lut":
            lut = data.draw(st.lists(st.integers(-5, 8), min_size=3, max_size=3), label="lut")
            g["FrameLookupTable"][...] = np.array(lut, dtype=np.int64).astype(np.uint32)
            mapped = np.array(lut, dtype=np.int64).astype(np.uint32)
            if np.all(mapped < 3):
                expected = np.array([-1000.0, 0.0, 1000.0])[mapped]
                outcome = "ok"
            else:
                outcome = "error"
        elif mutation == "not a dict":
            _set_column(g, frame, b"[1, 2, 3]")
            outcome = "error"
        else:
            rec = _record(g, frame)
            del rec["Optics"]
            _set_column(g, frame, json.dumps(rec).encode())
            outcome = "none"
    try:
        values = velox_frame_defocus(path)
    except ValueError as exc:
        msg = str(exc)
        assert outcome == "error", msg
        assert msg.startswith(f"{path}: Data/Image/") and "set_defocus" in msg, msg
        return
    assert outcome != "error", f"{mutation}: accepted as {values}"
    if outcome == "none":
        assert values is None
    else:
        np.testing.assert_allclose(values, expected, rtol=1e-9, atol=1e-9)


@FEW
@given(n_records=st.integers(0, 5), lut=st.booleans())
def test_velox_record_count(tmp_path, velox_writer, n_records, lut):
    """Fewer records than frames without a table to match them: refused (one record serves all frames)."""
    path = velox_writer(tmp_path / "stack.emd", [-1e-6, -5e-7, 0.0, 5e-7], record_len=3000)
    with h5py.File(path, "r+") as f:
        g = f["Data/Image"][next(iter(f["Data/Image"]))]
        meta = g["Metadata"][:, :n_records] if n_records <= 4 else np.concatenate(
            [g["Metadata"][()], g["Metadata"][:, :1]], axis=1)
        del g["Metadata"]
        g.create_dataset("Metadata", data=meta)
        if not lut:
            del g["FrameLookupTable"]
    try:
        values = velox_frame_defocus(path)
    except ValueError as exc:
        assert n_records in (0, 2, 3) or (lut and n_records < 4), (n_records, lut, exc)
        assert str(exc).startswith(f"{path}: Data/Image/"), exc
        return
    if n_records >= 4:
        np.testing.assert_allclose(values, [-1000.0, -500.0, 0.0, 500.0], atol=1e-9)
    else:
        assert n_records == 1 and not lut
        np.testing.assert_allclose(values, [-1000.0] * 4, atol=1e-9)


# --------------------------------------------------------------------------- read_defocus on stacks


@FEW
@given(value=tag_values)
def test_read_defocus_names_the_stacked_file(value):
    """A stacked file with a damaged tag: read_defocus names that file."""
    signals = []
    for i, tag in enumerate([-0.5, value]):
        s = hs.signals.Signal2D(np.zeros((4, 4)))
        s.metadata.General.original_filename = f"frame_{i}.dm4"
        s.original_metadata.add_dictionary({"Microscope Info": {"Defocus (um)": tag}})
        signals.append(s)
    expected = _expected_nm(value, 1e3)
    stack = hs.stack(signals)
    try:
        values, source = read_defocus(stack)
    except ValueError as exc:
        assert expected == "error", exc
        assert "'frame_1.dm4' (stack element 1): original_metadata tag 'Microscope Info.Defocus (um)'" in str(exc)
        return
    assert expected != "error"
    if expected is None:
        assert (values, source) == (None, None)
    else:
        np.testing.assert_allclose(values, [-500.0, expected], rtol=1e-9)


# --------------------------------------------------------------------------- calibration


@FUZZ
@given(value=st.one_of(tag_values, st.floats(0, 20000)))
def test_beam_energy(value):
    """A recorded beam energy: positive and finite keV, or a ValueError naming the field and the fix."""
    s = hs.signals.Signal2D(np.zeros((4, 4)))
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", value)
    try:
        energy, source = beam_energy_from_metadata(s)
    except ValueError as exc:
        assert str(exc).startswith("metadata.Acquisition_instrument.TEM.beam_energy is "), exc
        assert "set_microscope_parameters(beam_energy=" in str(exc)
        return
    if energy is None:
        assert source is None
    else:
        assert source == "file" and math.isfinite(energy) and 0 < energy <= 10000


@FUZZ
@given(scales=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(1.0), st.just(0.25)),
                       min_size=2, max_size=2),
       units=st.lists(st.one_of(st.sampled_from(["nm", "pm", "µm", "Å", "m", "", "px", "<undefined>", "s", "nm)",
                                                 "1/0", "(", "**", "kg*m"]), st.text(max_size=6)),
                      min_size=2, max_size=2))
def test_pixel_size(scales, units):
    """Any axis scale and unit: a positive, finite pixel size, None (uncalibrated), or a ValueError naming the axis."""
    s = hs.signals.Signal2D(np.zeros((4, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # HyperSpy's own axis arithmetic on nan / inf scales
        for ax, sc, u in zip(s.axes_manager.signal_axes, scales, units):
            ax.scale = sc
            ax.units = u
    try:
        size, source = pixel_size_nm(s)
    except ValueError as exc:
        msg = str(exc)
        assert msg.startswith(("Signal axis ", "The pixels are not square")), msg
        assert "s.axes_manager.signal_axes[" in msg, msg  # the fix
        return
    if size is None:
        assert source is None
    else:
        assert source == "file" and math.isfinite(size) and size > 0
