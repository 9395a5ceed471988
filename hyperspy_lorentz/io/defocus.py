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
    the name is ambiguous and None is returned.

    Parameters
    ----------
    name : str or os.PathLike
        A file name, a path or a title.

    Returns
    -------
    float or None
        The defocus in nm (positive for overfocus), or None.

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

    candidates = []  # (priority, value in nm)
    for m in _DEFOCUS_RE.finditer(base):
        value = float(m.group("num"))
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
        nm = to_nm(-value if negative else value, unit)
        # A name holds a short decimal: round pint's 1999.9999999999998 to 2000.0;
        # + 0.0 turns -0.0 into 0.0.
        candidates.append((priority, float(f"{nm:.12g}") + 0.0))
    for _ in _INFOCUS_RE.finditer(base):
        candidates.append((2, 0.0))

    if not candidates:
        return None
    best = max(p for p, _ in candidates)
    values = [v for p, v in candidates if p == best]
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


def _to_float(value):
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _length_to_nm(value, unit):
    v = _to_float(value)
    if v is None or not isinstance(unit, str) or not unit.strip():
        return None
    try:
        return float(to_nm(v, unit.strip())) + 0.0
    except ValueError:
        return None


def _walk_tags(d, skip=("stack_elements",)):
    """Yield (key, value, parent dict) for every entry of a nested dict."""
    stack = [d]
    while stack:
        cur = stack.pop(0)
        for key, value in cur.items():
            if key in skip:
                continue
            yield key, value, cur
            if isinstance(value, dict):
                stack.append(value)


def defocus_from_original_metadata(original_metadata_dict):
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

    Returns
    -------
    float or None
        The defocus in nm (positive for overfocus), or None if no known tag with
        a known unit holds a number.

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
        v = _length_to_nm(optics["Defocus"], "m")
        if v is not None:
            return v

    # "Defocus (um)", "Defocus(nm)", "Defocus [µm]", TIA's "Defocus_um".
    for key, value, _ in _walk_tags(om):
        if not isinstance(key, str):
            continue
        m = _TAG_RE.match(key)
        if m is None:
            continue
        unit = m.group("u1") or m.group("u2") or m.group("u3")
        v = _length_to_nm(value, unit)
        if v is not None:
            return v

    # DigitalMicrograph "Items" lists: {"Label": "Defocus", "Value": ..., "Units": ...}
    for _, value, _ in _walk_tags(om):
        if not isinstance(value, dict):
            continue
        label = value.get("Label")
        if isinstance(label, str) and label.strip().lower() == "defocus":
            unit = value.get("Units", value.get("Unit"))
            v = _length_to_nm(value.get("Value"), unit)
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


def _velox_group_defocus(group):
    """Defocus (nm) of every frame of one ``Data/Image/<id>`` group, or None."""
    if "Data" not in group or "Metadata" not in group:
        return None
    data = group["Data"]
    n_frames = int(data.shape[2]) if data.ndim == 3 else 1
    meta = group["Metadata"]
    if meta.ndim == 1:
        n_cols = 1
    elif meta.ndim == 2:
        n_cols = int(meta.shape[1])
    else:
        return None
    if n_cols == 0:
        return None

    columns = None
    if "FrameLookupTable" in group:
        lut = np.asarray(group["FrameLookupTable"][()]).ravel()
        head = lut[:n_frames]
        if lut.size >= n_frames > 0 and np.all((head >= 0) & (head < n_cols)):
            columns = [int(c) for c in head]
    if columns is None:
        if n_cols >= n_frames:
            columns = list(range(n_frames))
        elif n_cols == 1:
            # One metadata record for the whole stack: it applies to every frame.
            columns = [0] * n_frames
        else:
            return None

    cache = {}
    values = []
    for c in columns:
        if c not in cache:
            try:
                col = meta[()] if meta.ndim == 1 else meta[:, c]
                record = _decode_json_column(col)
            except (ValueError, UnicodeDecodeError, TypeError):
                return None
            optics = record.get("Optics") if isinstance(record, dict) else None
            cache[c] = (
                _length_to_nm(optics.get("Defocus"), "m") if isinstance(optics, dict) else None
            )
        if cache[c] is None:
            return None
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
            group = images[key]
            if not hasattr(group, "keys"):
                continue
            values = _velox_group_defocus(group)
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
        cannot be read, is not a Velox EMD, holds no image with a defocus in each
        frame's metadata, or holds several images (e.g. several detectors) whose
        defocus values differ.

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
        values = [defocus_from_original_metadata(e.get("original_metadata")) for e in elements]
        if all(v is not None for v in values):
            return np.asarray(values, dtype=float), "file"
    elif n == 1 and not velox_stack_mismatch:
        v = defocus_from_original_metadata(signal.original_metadata)
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
