"""Read the defocus of each image of a through-focus series.

Defocus is returned in nm, **positive for overfocus** (see :ref:`conventions`),
which is also the sign shown on Thermo Fisher / FEI and JEOL consoles and
written by Velox.

Entry point: :func:`read_defocus`, which the focal-series signal class calls. It
tries, in order,

1. the per-frame metadata of a Velox EMD file still on disk
   (:func:`velox_frame_defocus`);
2. the original metadata of each file of a stack made with
   ``hs.load(files, stack=True)`` or ``hs.stack`` (or, for a single image, of
   the signal itself) (:func:`defocus_from_original_metadata`);
3. the file names (:func:`defocus_from_filename`).

Sources 1 and 2 are reported as ``"file"``, source 3 as ``"file name"``. A value
is only returned when there is exactly one per image along the stack axis;
otherwise ``(None, None)`` is returned and the caller asks the user for the
defocus values.

What is missing and what is wrong
---------------------------------
A defocus that is simply not recorded (no known tag, an empty value, a name
without a length) gives None, and the next source is tried. A defocus that *is*
recorded but cannot be trusted raises a ``ValueError`` naming the file, the tag
(or the name, the frame) and the problem, rather than being skipped silently:
a known tag that holds text that is not a number, NaN or infinity, several
values, or a length beyond any microscope (more than 1 m); a Velox record that
is not valid JSON; a Velox frame table that points at records that do not
exist, or fewer records than frames. The fix is always the same: give the
defocus explicitly, ``s.set_defocus([...], units="nm")``.

None of these functions modifies the signal it reads.

Vendor tags
-----------
``defocus_from_original_metadata`` knows these tags:

- Velox EMD (Thermo Fisher): ``Optics.Defocus``, in m, stored as a string
  (e.g. ``'3.0231699205257632e-08'``); RosettaSciIO keeps frame 0 only, see
  :func:`velox_frame_defocus` for all frames.
- DigitalMicrograph (``ImageList.*.ImageTags.Microscope Info``) or any other
  group: a tag named ``Defocus`` followed by its unit, as DM names unit-bearing
  tags (``Cs(mm)``, ``Probe Size (nm)``): ``Defocus (um)``, ``Defocus(nm)``,
  ``Defocus [µm]``; the unit is the one in the name.
- TIA / FEI ``.emi``/``.ser``:
  ``ObjectInfo.ExperimentalDescription.Defocus_um`` (RosettaSciIO names each
  entry ``<Label>_<Unit>``); the unit is the one in the name.
- DigitalMicrograph "Items" lists (``Microscope Info.Items.TagGroupN``): a
  group with ``Label`` = ``'Defocus'``, a numeric ``Value`` and a ``Units``
  entry.

A tag named just ``Defocus`` outside Velox's ``Optics`` group is **ignored**: its
unit is not known (DigitalMicrograph does not define a standard defocus tag; the
Gatan files of the RosettaSciIO test suite have ``Microscope Info.Voltage``,
``Cs(mm)``... but no defocus). The ``probeDefocus`` of Prismatic simulations
(NCEM EMD) is a STEM probe defocus, not an image defocus, and is ignored too.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np

from hyperspy_lorentz.units import to_nm

__all__ = [
    "defocus_from_filename",
    "defocus_from_original_metadata",
    "velox_frame_defocus",
    "read_defocus",
]

# --------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------

_UNITS = {
    "nm": "nm",
    "um": "um",
    "µm": "um",  # micro sign U+00B5
    "μm": "um",  # Greek mu U+03BC
    "micron": "um",
    "microns": "um",
    "mm": "mm",
}
_UNIT_RE = r"(?P<unit>nm|um|µm|μm|microns?|mm)"
_NUMBER_RE = r"(?P<num>\d+(?:\.\d*)?|\.\d+)"
_MINUS = "-\u2212"  # hyphen-minus, minus sign
# After the unit: no letter or digit (so ``1.2umx`` or ``5nm2`` do not count), and
# not a pixel size or a thickness (``0.5nm_px``, ``20nm_thick``).
_AFTER_UNIT = r"(?![A-Za-z0-9])(?![ _\-]*(?:px|pix|pixel|pixels|thick|thickness)(?![A-Za-z]))"

_DEFOCUS_RE = re.compile(
    r"""
    (?:
        # 1. keyword, optional separators, optional sign:  df_-0.5mm  defocus=1.5mm
        (?<![A-Za-z])
        (?P<key>defocus|df|dz|(?P<dir>under|over)[-_ ]?focus(?:ed)?)
        [ =:_]*
        (?P<ksign>[+\-\u2212]|[pm](?=\.?\d))?
      |
        # 2. an explicit sign character:  +1.2um  img_-800nm  img-1.2um
        (?<![0-9.])(?P<sign>[+\-\u2212])
      |
        # 3. p / m for plus / minus, starting a token:  _p1.2um  _m0.5um
        (?<![A-Za-z0-9.])(?P<lsign>[pm])(?=\.?\d)
      |
        # 4. an unsigned number starting a token:  _0um  1.5mm
        (?<![A-Za-z0-9.+\-\u2212])
    )
    """
    + _NUMBER_RE
    + r"[ ]*"
    + _UNIT_RE
    + _AFTER_UNIT,
    re.VERBOSE | re.IGNORECASE,
)

_INFOCUS_RE = re.compile(r"(?<![A-Za-z])in[-_ ]?focus(?:ed)?(?![A-Za-z])", re.IGNORECASE)

#: Largest ``|defocus|`` any reader accepts, nm: 1 m, longer than a microscope column.
MAX_DEFOCUS_NM = 1e9
_FIX = "Set the defocus explicitly: s.set_defocus([...], units='nm')."
# A decimal number as vendors write it; float() also takes '1_0', 'nan', 'infinity'.
_FLOAT_RE = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _beyond(nm):
    return not math.isfinite(nm) or abs(nm) > MAX_DEFOCUS_NM


def _times_unit(value, unit):
    """``value`` in ``unit``, in nm, to 12 significant digits (inf if it overflows).

    The unit's factor is taken from pint and applied here, so that any finite
    number converts (huge ones overflow to inf, tiny ones stay tiny).
    """
    with np.errstate(over="ignore"):
        nm = float(value) * to_nm(1.0, unit)
    return float(f"{nm:.12g}") + 0.0 if math.isfinite(nm) else nm


def defocus_from_filename(name):
    """Parse a defocus value from a file name or a title.

    Only the last path component is read (folder names are ignored). A defocus
    is a number **with a length unit**; a bare number (``img_003.dm3``,
    ``series_12.tif``) is never read as a defocus.

    Accepted, case-insensitive:

    * a number, optionally with a decimal point: ``1``, ``1.2``, ``.5``, ``0``;
    * followed, optionally after spaces, by a unit: ``nm``, ``um``, ``µm``
      (micro sign or Greek mu), ``micron``/``microns``, ``mm``; bare metres
      (``m``), ``pm`` and ``Å`` are *not* accepted (``2m`` is more often minutes);
    * the unit must not be followed by a letter or a digit, nor by ``px``,
      ``pixel`` or ``thick`` (``0.5nm_px`` is a pixel size, ``20nm_thick`` a
      thickness);
    * a sign directly before the number: ``+``, ``-`` or the minus sign ``−``.
      A hyphen directly before the number is always a minus sign, even after a
      letter: ``img-1.2um`` is -1.2 µm (write ``img_+1.2um`` for plus);
    * or, at the start of a token (after ``_``, ``=``, a space, ``(``...), the
      letters ``p`` (plus) and ``m`` (minus): ``series_p1.2um``, ``img_m0.5um``;
    * optionally preceded by a keyword and separators (``=``, ``:``, ``_``,
      spaces): ``defocus``, ``df``, ``dz``, ``underfocus``/``overfocus``
      (also ``under_focus``, ``overfocused``...). ``underfocus`` makes the value
      negative and ``overfocus`` positive; an explicit sign that contradicts
      them gives None;
    * ``infocus``, ``in-focus``, ``in_focus``, ``in focus`` (as a word) mean 0.

    When several values are found, keyword values (including ``infocus``) win
    over signed values, which win over unsigned values; if the winners disagree,
    the name is ambiguous and None is returned. A winning value that is not a
    possible defocus (it overflows, or exceeds 1 m) raises a ValueError.

    Parameters
    ----------
    name : str or os.PathLike
        A file name, a path or a title.

    Returns
    -------
    float or None
        The defocus in nm (positive for overfocus), or None.

    Raises
    ------
    ValueError
        If the name writes a defocus that no microscope has (``|defocus| > 1 m``
        or a number too long to be finite), naming the name and the value.

    Examples
    --------
    >>> defocus_from_filename("img_+1.2um.dm3")
    1200.0
    >>> defocus_from_filename("series_m0.5um.tif")
    -500.0
    >>> defocus_from_filename("df_-0.5mm.tif")
    -500000.0
    >>> defocus_from_filename("img_003.dm3") is None
    True
    """
    if name is None:
        return None
    name = os.fspath(name) if isinstance(name, os.PathLike) else name
    if not isinstance(name, str):
        return None
    base = re.split(r"[\\/]", name.strip())[-1]
    if not base:
        return None

    candidates = []  # (priority, value in nm, text)
    for m in _DEFOCUS_RE.finditer(base):
        value = float(m.group("num"))  # inf for a number of 309 or more digits
        unit = _UNITS[m.group("unit").lower().replace("μ", "µ").replace("Μ", "µ")]
        sign_char = m.group("ksign") or m.group("sign") or m.group("lsign")
        negative = sign_char is not None and sign_char.lower() in (_MINUS + "m")
        positive = sign_char is not None and not negative
        if m.group("key"):
            priority = 2
            direction = (m.group("dir") or "").lower()
            if direction == "under":
                if positive:
                    return None
                negative = True
            elif direction == "over":
                if negative:
                    return None
        elif sign_char is not None:
            priority = 1
        else:
            priority = 0
        # A name holds a short decimal: _times_unit rounds 1999.9999999999998 to
        # 2000.0 and turns -0.0 into 0.0.
        nm = _times_unit(-value if negative else value, unit)
        candidates.append((priority, nm, m.group(0)))
    for m in _INFOCUS_RE.finditer(base):
        candidates.append((2, 0.0, m.group(0)))

    if not candidates:
        return None
    best = max(c[0] for c in candidates)
    winners = [c for c in candidates if c[0] == best]
    for _, v, text in winners:
        if _beyond(v):
            shown = text if len(text) <= 40 else text[:18] + "..." + text[-18:]
            raise ValueError(
                f"File name {base if len(base) <= 80 else base[:77] + '...'!r}: the defocus {shown!r} is "
                f"{'too long a number to be finite' if not math.isfinite(v) else f'{v:.4g} nm'}, beyond any "
                f"microscope (|defocus| <= 1 m). Rename the file, or {_FIX[0].lower()}{_FIX[1:]}"
            )
    values = [v for _, v, _ in winners]
    if all(math.isclose(v, values[0], rel_tol=1e-9, abs_tol=1e-9) for v in values):
        return float(values[0])
    return None


# --------------------------------------------------------------------------
# Original metadata
# --------------------------------------------------------------------------

# "Defocus (um)", "Defocus(nm)", "Defocus [µm]", "Defocus_um": the unit is group u1/u2/u3.
_TAG_RE = re.compile(
    r"""^\s*defocus\s*
        (?: \(\s*(?P<u1>[^()]+?)\s*\)
          | \[\s*(?P<u2>[^\[\]]+?)\s*\]
          | _\s*(?P<u3>[A-Za-zµμÅ]+) )
        \s*$""",
    re.IGNORECASE | re.VERBOSE,
)


def _as_dict(d):
    if d is None:
        return {}
    if hasattr(d, "as_dictionary"):  # hyperspy DictionaryTreeBrowser
        return d.as_dictionary()
    return d if isinstance(d, dict) else {}


#: Values that say "not recorded" rather than give a wrong number.
_NOT_RECORDED = {"", "n/a", "na", "none", "null", "unknown", "-", "--", "?"}


def _length_unit(unit):
    """The unit if it is a length unit, else None."""
    if not isinstance(unit, str) or not unit.strip() or len(unit) > 40:
        return None
    try:
        factor = to_nm(1.0, unit.strip())
    except Exception:  # noqa: BLE001 - pint's parser raises many kinds of errors on free text
        return None
    return unit.strip() if math.isfinite(factor) and factor > 0 else None


def _recorded_nm(value, unit, where):
    """A recorded defocus in nm; None if the value says "not recorded".

    ``where`` names the file and the tag in the ValueError raised for a value
    that is recorded but cannot be a defocus.
    """
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        value = np.asarray(value, dtype=object)
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return None
        if value.size > 1:
            raise ValueError(f"{where} holds {value.size} values, not one defocus. {_FIX}")
        value = value.reshape(-1)[0]
        if isinstance(value, (bytes, np.bytes_)):
            value = value.decode("utf-8", "replace")
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _NOT_RECORDED:
            return None
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is None or (math.isfinite(number) and not _FLOAT_RE.fullmatch(text)):
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise ValueError(f"{where} is {shown!r}, not a number. {_FIX}")
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where} is {value!r} ({type(value).__name__}), not a number. {_FIX}")
    else:
        number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{where} is {value!r}, not a finite number. {_FIX}")
    nm = _times_unit(number, unit)
    if _beyond(nm):
        raise ValueError(f"{where} is {value!r} {unit} = {nm:.4g} nm, beyond any microscope "
                         f"(|defocus| <= 1 m). {_FIX}")
    return nm


def _walk_tags(d, skip=("stack_elements",)):
    """Yield (path, value, parent dict) for every entry of a nested dict, breadth first."""
    stack = [((), d)]
    while stack:
        prefix, cur = stack.pop(0)
        for key, value in cur.items():
            if key in skip:
                continue
            path = prefix + (str(key),)
            yield path, value, cur
            if isinstance(value, dict):
                stack.append((path, value))


def _where(source, path):
    tag = ".".join(path)
    return f"{source + ': ' if source else ''}original_metadata tag {tag!r}"


def defocus_from_original_metadata(original_metadata_dict, *, source=None):
    """Find a defocus value in a signal's original (vendor) metadata.

    See the table of tags in the module documentation. Velox's
    ``Optics.Defocus`` is tried first, then unit-bearing ``Defocus`` tags
    anywhere in the tree (breadth first, so the shallowest wins), then
    DigitalMicrograph ``Items`` entries. The ``stack_elements`` group that
    HyperSpy adds to stacked signals is skipped: use :func:`read_defocus` for
    stacks.

    Parameters
    ----------
    original_metadata_dict : dict or hyperspy.misc.utils.DictionaryTreeBrowser
        ``s.original_metadata`` or ``s.original_metadata.as_dictionary()``. It is
        not modified.
    source : str, optional
        The file the metadata came from, named in error messages.

    Returns
    -------
    float or None
        The defocus in nm (positive for overfocus), or None if no known tag with
        a length unit records one (absent, or empty: ``""``, ``"n/a"``, ``[]``).

    Raises
    ------
    ValueError
        If a known tag with a length unit holds something that cannot be a
        defocus: text that is not a number, NaN or infinity, several values, or
        more than 1 m. The message names ``source``, the tag and the value.

    Examples
    --------
    >>> round(defocus_from_original_metadata({"Optics": {"Defocus": "-1.2e-06"}}), 9)
    -1200.0
    >>> defocus_from_original_metadata(
    ...     {"ImageList": {"TagGroup0": {"ImageTags": {"Microscope Info": {"Defocus (um)": 0.8}}}}})
    800.0
    """
    om = _as_dict(original_metadata_dict)
    if not om:
        return None

    # Velox: Optics.Defocus, metres, stored as a string.
    optics = om.get("Optics")
    if isinstance(optics, dict) and "Defocus" in optics:
        v = _recorded_nm(optics["Defocus"], "m", _where(source, ("Optics", "Defocus")) + " (m)")
        if v is not None:
            return v

    # "Defocus (um)", "Defocus(nm)", "Defocus [µm]", TIA's "Defocus_um".
    for path, value, _ in _walk_tags(om):
        m = _TAG_RE.match(path[-1])
        if m is None:
            continue
        unit = _length_unit(m.group("u1") or m.group("u2") or m.group("u3"))
        if unit is None:  # "Defocus (s)", "Defocus (DAC)": not a length, not ours
            continue
        v = _recorded_nm(value, unit, _where(source, path))
        if v is not None:
            return v

    # DigitalMicrograph "Items" lists: {"Label": "Defocus", "Value": ..., "Units": ...}
    for path, value, _ in _walk_tags(om):
        if not isinstance(value, dict):
            continue
        label = value.get("Label")
        if isinstance(label, str) and label.strip().lower() == "defocus":
            unit = _length_unit(value.get("Units", value.get("Unit")))
            if unit is None:
                continue
            v = _recorded_nm(value.get("Value"), unit, _where(source, path + ("Value",)) + f" ({unit})")
            if v is not None:
                return v
    return None


# --------------------------------------------------------------------------
# Velox EMD, every frame
# --------------------------------------------------------------------------


def _decode_json_column(column):
    raw = np.asarray(column, dtype=np.uint8).tobytes()
    raw = raw.split(b"\x00", 1)[0]
    return json.loads(raw.decode("utf-8"))


def _is_velox(f):
    if "Version" not in f:
        return False
    try:
        version = f["Version"][0]
        if isinstance(version, np.ndarray):
            version = version.tobytes()
        if isinstance(version, str):
            version = version.encode()
        v = json.loads(bytes(version).split(b"\x00", 1)[0].decode("utf-8"))
    except Exception:  # noqa: BLE001 - anything unreadable is "not Velox"
        return False
    return isinstance(v, dict) and v.get("format") in ("Velox", "DevelopersKit")


def _velox_group_defocus(group, where):
    """Defocus (nm) of every frame of one ``Data/Image/<id>`` group, or None.

    None when the group is not an image with metadata or a frame's record has
    no ``Optics.Defocus``; ValueError (naming ``where``, the file and group)
    when the records cannot be trusted.
    """
    if "Data" not in group or "Metadata" not in group:
        return None
    data = group["Data"]
    if data.ndim not in (2, 3):
        raise ValueError(f"{where}/Data has shape {data.shape}, not (y, x) or (y, x, frames): the file is "
                         f"damaged. {_FIX}")
    n_frames = int(data.shape[2]) if data.ndim == 3 else 1
    meta = group["Metadata"]
    if meta.ndim not in (1, 2) or meta.size == 0:
        raise ValueError(f"{where}/Metadata has shape {meta.shape}, not (bytes, records): the file is damaged. "
                         f"{_FIX}")
    n_cols = 1 if meta.ndim == 1 else int(meta.shape[1])
    if n_frames == 0:
        return None

    if "FrameLookupTable" in group:
        lut = np.asarray(group["FrameLookupTable"][()]).ravel()
        if lut.size < n_frames:
            raise ValueError(f"{where}/FrameLookupTable has {lut.size} entries for {n_frames} frames: the file "
                             f"is damaged. {_FIX}")
        head = lut[:n_frames]
        bad = ~((head >= 0) & (head < n_cols))
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{where}/FrameLookupTable maps frame {i} to metadata record {head[i]}, but "
                             f"Metadata holds {n_cols} record(s): the file is damaged. {_FIX}")
        columns = [int(c) for c in head]
    elif n_cols >= n_frames:
        columns = list(range(n_frames))
    elif n_cols == 1:
        # One metadata record for the whole stack: it applies to every frame.
        columns = [0] * n_frames
    else:
        raise ValueError(f"{where}/Metadata holds {n_cols} records for {n_frames} frames and there is no "
                         f"FrameLookupTable to match them: the file is damaged. {_FIX}")

    cache = {}
    values = []
    for frame, c in enumerate(columns):
        if c not in cache:
            record_where = f"{where}/Metadata record {c} (frame {frame})"
            col = meta[()] if meta.ndim == 1 else meta[:, c]
            try:
                record = _decode_json_column(col)
            except (ValueError, UnicodeDecodeError, TypeError) as exc:
                raise ValueError(f"{record_where} is not valid JSON ({exc}): the file is damaged. "
                                 f"{_FIX}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{record_where} is a JSON {type(record).__name__}, not a record: the file "
                                 f"is damaged. {_FIX}")
            optics = record.get("Optics")
            cache[c] = (
                _recorded_nm(optics.get("Defocus"), "m", f"{record_where}: Optics.Defocus (m)")
                if isinstance(optics, dict) else None
            )
        if cache[c] is None:
            return None  # not recorded for this frame
        values.append(cache[c])
    return np.asarray(values, dtype=float)


def _velox_defocus_by_group(path):
    """{image group id: defocus array (nm)} for a Velox EMD file, or None."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError, TypeError):
        return None
    with f:
        if not _is_velox(f):
            return None
        images = f.get("Data/Image")
        if images is None:
            return None
        out = {}
        for key in images:
            where = f"{path}: Data/Image/{key}"
            try:
                group = images[key]
                if not hasattr(group, "keys"):
                    continue
                values = _velox_group_defocus(group, where)
            except (OSError, KeyError, RuntimeError) as exc:  # h5py on a damaged file
                raise ValueError(f"{where} cannot be read ({exc}): the file is damaged. {_FIX}") from None
            if values is not None:
                out[key] = values
        return out


def _pick_agreeing(arrays):
    arrays = list(arrays)
    if not arrays:
        return None
    first = arrays[0]
    for a in arrays[1:]:
        if a.shape != first.shape or not np.allclose(a, first, rtol=1e-9, atol=1e-6):
            return None
    return first.copy()


def velox_frame_defocus(path, *, n_frames=None):
    """Defocus of every frame of a Velox EMD image stack.

    Velox writes one JSON metadata record per frame: in
    ``Data/Image/<id>/Metadata``, a ``uint8`` array of shape ``(N, n_records)``
    whose column ``i`` holds a NUL-padded JSON string, and
    ``Data/Image/<id>/FrameLookupTable`` that maps each frame to its record
    (used when consistent with the data, otherwise frame ``i`` reads column
    ``i``; a single record applies to all frames). The image data
    ``Data/Image/<id>/Data`` has shape ``(y, x, frames)``. RosettaSciIO keeps only
    the first record in ``original_metadata``; this reads them all with h5py
    and takes ``Optics.Defocus`` (metres, stored as a string) from each.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.emd`` file.
    n_frames : int, optional
        Only consider image groups with this many frames.

    Returns
    -------
    numpy.ndarray or None
        One defocus per frame, in nm (positive for overfocus). None if the file
        cannot be opened as HDF5, is not a Velox EMD, holds no image with a
        defocus in each frame's metadata, or holds several images (e.g. several
        detectors) whose defocus values differ.

    Raises
    ------
    ValueError
        If a Velox file's image records cannot be trusted: a record that is not
        valid JSON, an ``Optics.Defocus`` that is not a finite length up to 1 m,
        a ``FrameLookupTable`` that points at records that do not exist, fewer
        records than frames, or datasets HDF5 cannot read. The message names
        the file, the group, the record and the frame.

    Examples
    --------
    >>> velox_frame_defocus("emd_fei_example_tem_stack.emd")  # doctest: +SKIP
    array([30.2316992, 30.2316992])
    """
    try:
        path = os.fspath(path)
    except TypeError:
        return None
    if not os.path.isfile(path):
        return None
    groups = _velox_defocus_by_group(path)
    if not groups:
        return None
    arrays = list(groups.values())
    if n_frames is not None:
        arrays = [a for a in arrays if a.size == n_frames]
    return _pick_agreeing(arrays)


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def _n_images(signal):
    """Number of images along the stack axis, or None if not a 0/1-D stack."""
    am = signal.axes_manager
    if am.navigation_dimension == 0:
        return 1
    if am.navigation_dimension == 1:
        return int(am.navigation_shape[0])
    return None


def _get(dtb, key):
    try:
        if dtb is not None and dtb.has_item(key):
            return dtb.get_item(key)
    except (AttributeError, TypeError, KeyError):
        pass
    return None


def _velox_paths(signal):
    """Candidate paths of the file the signal was loaded from."""
    tp = getattr(signal, "tmp_parameters", None)
    paths = []
    for folder_key, name_key, ext_key in (
        ("original_folder", "original_filename", "original_extension"),
        ("folder", "filename", "extension"),
    ):
        folder, name, ext = _get(tp, folder_key), _get(tp, name_key), _get(tp, ext_key)
        if folder and name:
            paths.append(Path(str(folder)) / f"{name}{ext or ''}")
    # metadata.General.original_filename is a bare file name: only look for it
    # next to the loaded file, never in the current directory.
    orig = _get(signal.metadata, "General.original_filename")
    folder = _get(tp, "original_folder") or _get(tp, "folder")
    if orig and folder:
        paths.append(Path(str(folder)) / Path(str(orig)).name)
    out = []
    for p in paths:
        if p.suffix.lower() == ".emd" and p not in out:
            out.append(p)
    return out


def _stack_elements(signal):
    """List of the per-file dicts HyperSpy stores when stacking, in stack order."""
    se = _get(signal.original_metadata, "stack_elements")
    if se is None:
        return None
    se = _as_dict(se)
    items = []
    for key, value in se.items():
        m = re.fullmatch(r"element(\d+)", str(key))
        if m and isinstance(value, dict):
            items.append((int(m.group(1)), value))
    if not items:
        return None
    items.sort(key=lambda kv: kv[0])
    return [v for _, v in items]


def _names(md):
    """Names that may carry a defocus: the original file name, then the title."""
    out = []
    general = md.get("General", {}) if isinstance(md, dict) else {}
    for key in ("original_filename", "title"):
        v = general.get(key)
        if isinstance(v, str) and v.strip():
            out.append(v)
    return out


def _source_name(md, index):
    """How to name a signal's file in messages: its file name, else its title, else its place in the stack."""
    general = md.get("General", {}) if isinstance(md, dict) else {}
    for key in ("original_filename", "title"):
        v = general.get(key)
        if isinstance(v, str) and v.strip():
            return f"{v.strip()!r}" + ("" if index is None else f" (stack element {index})")
    return None if index is None else f"stack element {index}"


def _defocus_from_names(names):
    for n in names:
        v = defocus_from_filename(n)
        if v is not None:
            return v
    return None


def read_defocus(signal):
    """Read the defocus of every image of a focal series from its file(s).

    Tried in order (see the module documentation):

    1. a Velox EMD file on disk: the file the signal was loaded from, as
       HyperSpy records it in ``signal.tmp_parameters`` (``original_folder``,
       ``original_filename``, ``original_extension``; then ``folder``,
       ``filename``, ``extension``) or ``metadata.General.original_filename`` in
       that folder -- per-frame values, :func:`velox_frame_defocus`;
    2. the original metadata of each stacked file
       (``signal.original_metadata.stack_elements.element<i>.original_metadata``,
       written by ``hs.load(files, stack=True)`` and ``hs.stack``), or for a
       single image the signal's own original metadata --
       :func:`defocus_from_original_metadata`;
    3. the file names: ``stack_elements.element<i>.metadata.General.
       original_filename`` (else its ``title``), or for a single image
       ``metadata.General.original_filename`` (else ``title``) --
       :func:`defocus_from_filename`.

    A source is used only if it gives a value for *every* image along the stack
    axis (the single navigation axis; a signal without navigation axes is one
    image).

    Parameters
    ----------
    signal : hyperspy.signal.BaseSignal
        The focal series (navigation axis = defocus), or one image. It is not
        modified.

    Returns
    -------
    defocus : numpy.ndarray or None
        The defocus of each image in nm (positive for overfocus), shape
        ``(n_images,)``, in stack order.
    source : {"file", "file name", None}
        Where the values came from.

    Raises
    ------
    ValueError
        If a source records a defocus that cannot be trusted (see the module
        documentation): the message names the file, the tag or name and the
        problem, and the fix (``s.set_defocus``).

    Notes
    -----
    The values are those of the files *as loaded*: a stack that was reordered
    or re-sliced after loading (keeping the same number of images) is not
    detected. A signal with more than one navigation axis gives ``(None, None)``.

    HyperSpy drops ``tmp_parameters`` when a signal is sliced or copied
    (``s.inav[...]``, ``s.deepcopy()``, arithmetic), so source 1 is only
    available for the signal as loaded (or cropped in place with ``s.crop``).
    In particular one frame taken from a Velox stack with ``s.inav[i]`` still
    carries RosettaSciIO's ``original_metadata``, which is that of frame 0:
    call :func:`read_defocus` on the loaded stack, then index the result.
    """
    n = _n_images(signal)
    if n is None or n < 1:
        return None, None

    # 1. Velox file on disk, every frame.
    velox_stack_mismatch = False
    for path in _velox_paths(signal):
        values = velox_frame_defocus(path, n_frames=n)
        if values is not None and values.size == n:
            return values, "file"
        if n == 1 and os.path.isfile(path):
            groups = _velox_defocus_by_group(path)
            # The signal is one frame cut from a Velox stack: its original
            # metadata is that of frame 0, which may not be this frame.
            velox_stack_mismatch = bool(groups) and all(a.size > 1 for a in groups.values())

    elements = _stack_elements(signal)
    if elements is not None and len(elements) != n:
        elements = None

    # 2. Original metadata.
    if elements is not None:
        values = [
            defocus_from_original_metadata(e.get("original_metadata"), source=_source_name(e.get("metadata"), i))
            for i, e in enumerate(elements)
        ]
        if all(v is not None for v in values):
            return np.asarray(values, dtype=float), "file"
    elif n == 1 and not velox_stack_mismatch:
        v = defocus_from_original_metadata(signal.original_metadata,
                                           source=_source_name(signal.metadata.as_dictionary(), None))
        if v is not None:
            return np.asarray([v], dtype=float), "file"

    # 3. File names.
    if elements is not None:
        values = [_defocus_from_names(_names(e.get("metadata", {}))) for e in elements]
        if all(v is not None for v in values):
            return np.asarray(values, dtype=float), "file name"
    elif n == 1:
        names = []
        for key in ("General.original_filename", "General.title"):
            v = _get(signal.metadata, key)
            if isinstance(v, str) and v.strip():
                names.append(v)
        v = _defocus_from_names(names)
        if v is not None:
            return np.asarray([v], dtype=float), "file name"
    return None, None
