"""Read and write OOMMF / MuMax3 vector-field files (OVF 1.0 and 2.0).

Supported: rectangular meshes, one segment, data as ``Text``, ``Binary 4``
(float32, preceded by the check value ``1234567.0``) or ``Binary 8`` (float64,
check value ``123456789012345.0``). OVF 1.0 binary data are big-endian (MSB
first), OVF 2.0 binary data little-endian (LSB first). Node values are stored
with ``x`` varying fastest, then ``y``, then ``z``, the vector components of a
node together.

Axes
----
OVF uses a right-handed frame with ``y`` *up* (the first row of a layer is at
``ymin``, the bottom of the picture) and ``z`` out of the film towards a viewer
looking down on it. Images here have ``y`` *down* and the beam along ``+z``,
into the screen (see :ref:`conventions`). By default (``image_axes=False``) the
arrays are returned exactly as stored: ``m[k, j, i]`` is node ``(x_i, y_j, z_k)``
and the components are the file's. With ``image_axes=True``, :func:`read_ovf`
applies the rotation by 180 degrees about ``x`` that maps the OVF frame onto the
image frame for a beam travelling down through the film (along ``-z_OVF``): the
``y`` and ``z`` array axes are reversed and the ``y`` and ``z`` components negated
(:func:`ovf_to_image_axes`). The picture then looks as in MuMax3's or OOMMF's
viewer, and the arrays can be given to
:func:`~hyperspy_lorentz.physics.magnetisation.magnetic_phase`. :func:`write_ovf`
with ``image_axes=True`` applies the inverse (the same) rotation before writing.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from hyperspy_lorentz.units import to_nm

__all__ = ["read_ovf", "write_ovf", "ovf_to_image_axes"]

_CHECK = {4: 1234567.0, 8: 123456789012345.0}
_BEGIN_DATA = re.compile(rb"#[ \t]*Begin:[ \t]*Data[ \t]+(Text|Binary[ \t]*\d+|\S+)[^\n]*\n", re.IGNORECASE)
_END_DATA = re.compile(rb"#\s*End:\s*Data", re.IGNORECASE)


def ovf_to_image_axes(m):
    """Map a field between the OVF frame (``y`` up) and the image frame (``y`` down).

    A rotation by 180 degrees about ``x``: the ``z`` and ``y`` array axes are
    reversed and the ``y`` and ``z`` components negated. It is its own inverse.

    Parameters
    ----------
    m : array_like
        Field of shape ``(Z, Y, X, 3)``, components ``(x, y, z)``, any unit.

    Returns
    -------
    numpy.ndarray
        The field in the other frame, same shape.
    """
    m = np.asarray(m)
    if m.ndim != 4 or m.shape[-1] != 3:
        raise ValueError(f"m must have shape (Z, Y, X, 3), not {m.shape}.")
    out = m[::-1, ::-1].copy()
    out[..., 1] *= -1
    out[..., 2] *= -1
    return out


# -------------------------------------------------------------------- reading
#: The fix offered for a damaged file.
_REWRITE = "Write the file again (MuMax3 save(), OOMMF) or correct that line by hand."
# Characters of numbers in a text data block (anything else -- nan, inf, 0x10, 1_0 -- is refused).
_NOT_NUMERIC = re.compile(r"[^0-9eE+\-.\s]")
_END_AFTER_BINARY = re.compile(rb"[ \t\r\n]*#\s*End:\s*Data", re.IGNORECASE)
_INT = re.compile(r"\+?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class _Header(dict):
    """Header fields (lower-case keys) -> (value, line number)."""


def read_ovf(path, image_axes=False):
    """Read an OVF 1.0 or 2.0 file (rectangular mesh, first segment).

    Parameters
    ----------
    path : str or os.PathLike
        File name.
    image_axes : bool
        ``False`` (default): the arrays as stored, OVF frame (``y`` up).
        ``True``: rotated into the image frame (``y`` down, ``z`` along the beam),
        see the module docstring.

    Returns
    -------
    m : numpy.ndarray
        Field of shape ``(Z, Y, X, N)`` (``N = valuedim``, 3 for a vector field),
        float64, in the file's value units (OVF 1.0 values multiplied by
        ``valuemultiplier``).
    metadata : dict
        ``title`` (str), ``valueunits`` (list of N str), ``valuelabels`` (list of N
        str or None), ``valuedim`` (int), ``cell_size`` (``(dx, dy, dz)`` in nm),
        ``min`` and ``max`` (``(x, y, z)`` corners of the mesh, nm), ``base``
        (``(x, y, z)`` of the first node centre, nm, or None), ``nodes``
        (``(nx, ny, nz)``), ``meshunit`` (as written in the file), ``desc`` (list
        of the ``Desc`` lines), ``version`` (1 or 2), ``format`` (``"text"``,
        ``"binary4"`` or ``"binary8"``), ``image_axes`` (bool) and ``header`` (all
        header fields, lower-case keys, as strings).

    Raises
    ------
    ValueError
        For every file that cannot be trusted, with the file name, the line (or
        the field, or the position of a binary value) and the problem: not an
        OVF 1.0/2.0 rectangular-mesh file; a header field that is missing, not a
        number, not finite, or impossible (node counts and ``valuedim`` that are
        not whole numbers ``>= 1``, step sizes ``<= 0``, ``max <= min``, step
        sizes that disagree with the bounds, a mesh unit that is not a length,
        the same field twice with different values); a wrong binary check value;
        a data block with fewer or more values than the header announces
        (``xnodes * ynodes * znodes * valuedim``), with a value that is not a
        number or not finite, or without its ``# End: Data`` line (a truncated
        file).
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        raw = fh.read()

    def fail(problem, line=None):
        where = f"{path}" if line is None else f"{path}, line {line}"
        return ValueError(f"{where}: {problem}")

    if not raw.strip():
        raise fail("the file is empty, not an OVF file. Check the file name.")
    first = raw.split(b"\n", 1)[0].decode("latin-1").strip().lower()
    if "ovf 2.0" in first:
        version = 2
    elif "rectangular mesh v1.0" in first or "ovf 1.0" in first:
        version = 1
    elif "irregular mesh" in first:
        raise fail("irregular-mesh OVF files are not supported, only rectangular meshes. "
                   "Save the field on a rectangular mesh.", 1)
    else:
        raise fail(f"not an OVF 1.0 / 2.0 file: the first line is {first[:80]!r}, not "
                   "'# OOMMF OVF 2.0' or '# OOMMF: rectangular mesh v1.0'. Check the file name.", 1)

    begin = _BEGIN_DATA.search(raw)
    if begin is None:
        raise fail("no '# Begin: Data Text', '# Begin: Data Binary 4' or '# Begin: Data Binary 8' line: "
                   f"the file is truncated or damaged. {_REWRITE}")
    begin_line = raw.count(b"\n", 0, begin.start()) + 1
    header = _parse_header(raw[: begin.start()].decode("latin-1"), fail)

    def text(key, default=None):
        return header[key][0] if key in header else default

    meshtype = text("meshtype", "rectangular").strip().lower()
    if meshtype != "rectangular":
        raise fail(f"meshtype {meshtype!r} is not supported, only 'rectangular'. "
                   "Save the field on a rectangular mesh.", header["meshtype"][1])

    def whole(key, default=None):
        if key not in header:
            if default is None:
                raise fail(f"the header has no {key!r} line; it is needed to shape the data. {_REWRITE}")
            return default
        value, line = header[key]
        # (more than 18 digits: beyond any mesh, and beyond what int() parses quickly)
        if not _INT.fullmatch(value) or len(value) > 18 or int(value) < 1:
            raise fail(f"{key} is {value!r}, not a whole number >= 1. {_REWRITE}", line)
        return int(value)

    nodes = tuple(whole(f"{ax}nodes") for ax in "xyz")
    valuedim = whole("valuedim", 3) if version == 2 else 3
    count = nodes[0] * nodes[1] * nodes[2] * valuedim

    def number(key, allow_zero=True):
        value, line = header[key]
        try:
            x = float(value)
        except ValueError:
            x = None
        if x is None or (_FLOAT.fullmatch(value) is None and math.isfinite(x)):  # float() takes '1_0'
            raise fail(f"{key} is {value!r}, not a number. {_REWRITE}", line) from None
        if not math.isfinite(x) or (not allow_zero and x == 0):
            raise fail(f"{key} is {value!r}, not a finite{'' if allow_zero else ' non-zero'} number. "
                       f"{_REWRITE}", line)
        return x

    meshunit = text("meshunit", "m").strip()
    try:
        scale = to_nm(1.0, meshunit) if re.fullmatch(r"[A-Za-zµμÅå]+", meshunit) else math.nan
    except Exception:  # noqa: BLE001 - pint's errors on free text: any failure means "not a length"
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise fail(f"meshunit {meshunit!r} is not a length unit (such as 'm' or 'nm'). {_REWRITE}",
                   header["meshunit"][1] if "meshunit" in header else None)

    def vec(suffix, positive=False):
        keys = [f"{ax}{suffix}" for ax in "xyz"]
        present = [k in header for k in keys]
        if not any(present):
            return None
        if not all(present):
            missing = [k for k, p in zip(keys, present) if not p]
            raise fail(f"the header has {', '.join(k for k in keys if k in header)} but no "
                       f"{', '.join(missing)}. {_REWRITE}")
        out = []
        for k in keys:
            x = number(k) * scale
            if not math.isfinite(x):
                raise fail(f"{k} is {header[k][0]!r} {meshunit}, beyond any mesh. {_REWRITE}", header[k][1])
            if positive and x <= 0:
                raise fail(f"{k} is {header[k][0]!r}, not a positive length: a cell size must be > 0. "
                           f"{_REWRITE}", header[k][1])
            # 12 significant digits: drop the binary noise of the m -> nm conversion
            out.append(float(f"{x:.12g}"))
        return tuple(out)

    cell = vec("stepsize", positive=True)
    mins = vec("min")
    maxs = vec("max")
    base = vec("base")
    if mins is not None and maxs is not None:
        for ax, lo, hi, n in zip("xyz", mins, maxs, nodes):
            if not hi > lo:
                raise fail(f"{ax}max {header[ax + 'max'][0]} is not above {ax}min {header[ax + 'min'][0]} "
                           f"(line {header[ax + 'min'][1]}): the mesh has no extent along {ax}. {_REWRITE}",
                           header[ax + "max"][1])
    if cell is None:
        if mins is None or maxs is None:
            raise fail(f"the header gives neither step sizes (xstepsize...) nor mesh bounds (xmin, xmax...). "
                       f"{_REWRITE}")
        cell = tuple(float(f"{(hi - lo) / n:.12g}") for lo, hi, n in zip(mins, maxs, nodes))
    elif mins is not None and maxs is not None:
        for ax, lo, hi, n, c in zip("xyz", mins, maxs, nodes, cell):
            if not math.isclose((hi - lo) / n, c, rel_tol=1e-3):
                raise fail(f"{ax}stepsize {header[ax + 'stepsize'][0]} disagrees with the bounds: "
                           f"({ax}max - {ax}min) / {ax}nodes = {(hi - lo) / n / scale:.6g} {meshunit} "
                           f"({ax}min line {header[ax + 'min'][1]}, {ax}max line {header[ax + 'max'][1]}, "
                           f"{ax}nodes line {header[ax + 'nodes'][1]}). One of them is damaged. {_REWRITE}",
                           header[ax + "stepsize"][1])
    if mins is None:
        mins = (0.0, 0.0, 0.0)
    if maxs is None:
        maxs = tuple(lo + c * n for lo, c, n in zip(mins, cell, nodes))

    multiplier = number("valuemultiplier", allow_zero=False) if version == 1 and "valuemultiplier" in header \
        else 1.0

    kind = re.sub(r"\s", "", begin.group(1).decode("latin-1").lower())
    start = begin.end()
    if kind == "text":
        m = _read_text(raw, start, begin_line + 1, count, valuedim, nodes, fail)
        fmt = "text"
    elif kind in ("binary4", "binary8"):
        width = int(kind[-1])
        fmt = f"binary{width}"
        m = _read_binary(raw, start, begin_line, width, version, count, valuedim, nodes, fail)
    else:
        raise fail(f"data format {begin.group(1).decode('latin-1')!r} is not supported, only 'Text', "
                   "'Binary 4' and 'Binary 8'. Save the field in one of those.", begin_line)
    m = m.reshape(nodes[2], nodes[1], nodes[0], valuedim)

    if version == 1:
        if multiplier != 1.0:
            m = m * multiplier
            if not np.all(np.isfinite(m)):
                raise fail(f"valuemultiplier {text('valuemultiplier')} makes values overflow to infinity. "
                           f"{_REWRITE}", header["valuemultiplier"][1])
        valueunits = [text("valueunit", "1")] * valuedim
        valuelabels = None
    else:
        valueunits = text("valueunits", " ".join(["1"] * valuedim)).split()
        if len(valueunits) == 1 and valuedim > 1:
            valueunits = valueunits * valuedim
        labels = text("valuelabels")
        valuelabels = labels.split() if labels else None

    if image_axes:
        if valuedim != 3:
            raise ValueError(f"image_axes=True needs a vector field (valuedim 3), not valuedim {valuedim}.")
        m = ovf_to_image_axes(m)
    metadata = {
        "title": text("title", ""),
        "valueunits": valueunits,
        "valuelabels": valuelabels,
        "valuedim": valuedim,
        "cell_size": cell,
        "min": mins,
        "max": maxs,
        "base": base,
        "nodes": nodes,
        "meshunit": meshunit,
        "desc": header.desc,
        "version": version,
        "format": fmt,
        "image_axes": bool(image_axes),
        "header": {k: v for k, (v, _) in header.items()},
    }
    return m, metadata


def _count_problem(n_values, count, valuedim, nodes):
    more = "more" if n_values > count else "fewer"
    return (f"the data block holds {n_values} values, {more} than the {count} the header announces "
            f"(xnodes * ynodes * znodes * valuedim = {' * '.join(map(str, nodes))} * {valuedim}): "
            "a line or a header value is missing, duplicated or damaged.")


def _read_text(raw, start, first_line, count, valuedim, nodes, fail):
    end = _END_DATA.search(raw, start)
    block = raw[start : end.start() if end else len(raw)].decode("latin-1")
    rows = []  # (line number, text without comment)
    blank = []  # empty lines (no value, no comment): a value line may have been emptied
    for k, line in enumerate(block.split("\n")):
        body = line.split("#", 1)[0].strip()
        if body:
            rows.append((first_line + k, body))
        elif not line.strip():
            blank.append(first_line + k)
    joined = " ".join(body for _, body in rows)
    data = None
    if _NOT_NUMERIC.search(joined) is None:
        try:
            data = np.array(joined.split(), dtype=float)
        except ValueError:
            data = None
    if data is None:  # find the culprit
        for line, body in rows:
            for token in body.split():
                try:
                    ok = _NOT_NUMERIC.search(token) is None and math.isfinite(float(token))
                except ValueError:
                    ok = False
                if not ok:
                    raise fail(f"{token[:40]!r} in the data block is not a number. {_REWRITE}", line)
        raise fail(f"the data block could not be read. {_REWRITE}")  # pragma: no cover - defensive
    if not np.all(np.isfinite(data)):
        index = int(np.flatnonzero(~np.isfinite(data))[0])
        seen = 0
        for line, body in rows:
            seen += len(body.split())
            if seen > index:
                break
        raise fail(f"a value of the data block overflows to infinity. {_REWRITE}", line)
    if data.size != count:
        problem = _count_problem(data.size, count, valuedim, nodes)
        odd = next(((line, n) for line, n in ((line, len(body.split())) for line, body in rows)
                    if n != valuedim), None)
        if odd is not None:
            problem += f" Line {odd[0]} holds {odd[1]} values where a node has {valuedim}."
        inner = [line for line in blank if rows and line < rows[-1][0]]
        if inner and data.size < count:
            problem += f" Line {inner[0]} is empty."
        if end is None:
            problem += " The file also lacks its '# End: Data Text' line: it is truncated."
        raise fail(f"{problem} {_REWRITE}")
    if end is None:
        raise fail("the file ends without its '# End: Data Text' line: it is truncated. " + _REWRITE)
    return data


def _read_binary(raw, start, begin_line, width, version, count, valuedim, nodes, fail):
    order = ">" if version == 1 else "<"
    dtype = np.dtype(f"{order}f{width}")
    if len(raw) < start + width:
        raise fail(f"the file ends right after '# Begin: Data Binary {width}': it is truncated. {_REWRITE}",
                   begin_line)
    check = np.frombuffer(raw, dtype=dtype, count=1, offset=start)[0]
    if check != _CHECK[width]:
        swapped = dtype.newbyteorder()
        if np.frombuffer(raw, dtype=swapped, count=1, offset=start)[0] == _CHECK[width]:
            dtype = swapped  # tolerate writers that used the other byte order
        else:
            raise fail(f"wrong binary check value {float(check)!r} after '# Begin: Data Binary {width}', "
                       f"expected {_CHECK[width]}: the data are damaged or not {width}-byte floats. {_REWRITE}",
                       begin_line)
    available = (len(raw) - start) // width - 1
    if available < count:
        raise fail(f"the file holds at most {available} binary values after the check value, fewer than the "
                   f"{count} the header announces (xnodes * ynodes * znodes * valuedim = "
                   f"{' * '.join(map(str, nodes))} * {valuedim}): it is truncated or a header value is "
                   f"damaged. {_REWRITE}")
    stop = start + width * (count + 1)
    if _END_AFTER_BINARY.match(raw, stop) is None:
        if _END_DATA.search(raw, stop) is not None:
            raise fail(f"the binary data block is longer than the {count} values the header announces "
                       f"(xnodes * ynodes * znodes * valuedim = {' * '.join(map(str, nodes))} * {valuedim}): "
                       f"a header value is damaged. {_REWRITE}")
        raise fail(f"no '# End: Data Binary {width}' line after the {count} values: the file is truncated "
                   f"or damaged. {_REWRITE}")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=start + width).astype(float)
    bad = ~np.isfinite(data)
    if np.any(bad):
        index = int(np.flatnonzero(bad)[0])
        raise fail(f"binary value {index} (byte {start + width * (index + 1)}) is {data[index]}, not a finite "
                   f"number: the data are damaged. {_REWRITE}")
    return data


def _parse_header(text, fail):
    header = _Header()
    header.desc = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line.startswith("#") or line.startswith("##"):
            continue
        body = line.lstrip("#").split("##", 1)[0].strip()
        if ":" not in body:
            continue
        key, value = body.split(":", 1)
        key = key.strip().lower()
        value = value.strip()
        if key in ("begin", "end", "segment count"):
            continue
        if key == "desc":
            header.desc.append(value)
            header["desc"] = ("\n".join(header.desc), number)
            continue
        if key in header and header[key][0] != value:
            raise fail(f"{key} is given twice, as {header[key][0]!r} (line {header[key][1]}) and as "
                       f"{value!r}: the header is damaged. {_REWRITE}", number)
        header.setdefault(key, (value, number))
    return header


# -------------------------------------------------------------------- writing
def write_ovf(
    path,
    m,
    cell_size,
    fmt="text",
    version=2,
    title="m",
    valueunits="1",
    valuelabels=None,
    desc=None,
    origin=(0.0, 0.0, 0.0),
    image_axes=False,
):
    """Write a field to an OVF 1.0 or 2.0 file (rectangular mesh, one segment).

    Parameters
    ----------
    path : str or os.PathLike
        File name (overwritten).
    m : array_like
        Field of shape ``(Z, Y, X, N)`` or ``(Y, X, N)`` (one layer), in
        ``valueunits``; ``N = 3`` for OVF 1.0. Stored with ``x`` fastest.
    cell_size : float or (float, float, float)
        Cell size ``(dx, dy, dz)``, nm, ``> 0`` (one number for cubic cells).
        Written in metres (``meshunit: m``), as MuMax3 and OOMMF do.
    fmt : {"text", "binary4", "binary8"}
        Data format: text (17 significant digits, exact for float64), float32 or
        float64 binary.
    version : {1, 2}
        OVF version (1.0 binary is big-endian, 2.0 little-endian).
    title : str
        ``Title`` header field.
    valueunits : str or sequence of str
        Unit of the values: one for all components or one per component (OVF 1.0
        has a single ``valueunit``). Default ``"1"``: dimensionless (unit vectors).
    valuelabels : sequence of str, optional
        Component labels (OVF 2.0). Default ``m_x m_y m_z`` for 3 components.
    desc : str, optional
        ``Desc`` header lines (newlines allowed).
    origin : (float, float, float)
        Corner ``(xmin, ymin, zmin)`` of the mesh, nm.
    image_axes : bool
        ``True``: ``m`` is in the image frame (``y`` down, ``z`` along the beam)
        and is rotated into the OVF frame before writing (see the module
        docstring). Default ``False``: written as given.

    Raises
    ------
    ValueError
        On a bad ``m`` shape, non-positive ``cell_size``, unknown ``fmt`` or
        ``version``, or mismatched ``valueunits`` / ``valuelabels``.
    """
    if fmt not in ("text", "binary4", "binary8"):
        raise ValueError(f"fmt must be 'text', 'binary4' or 'binary8', not {fmt!r}.")
    if version not in (1, 2) or isinstance(version, bool):
        raise ValueError(f"version must be 1 or 2, not {version!r}.")
    m = np.asarray(m, dtype=float)
    if m.ndim == 3:
        m = m[None]
    if m.ndim != 4 or min(m.shape) < 1:
        raise ValueError(f"m must have shape (Z, Y, X, N) or (Y, X, N), not {np.shape(m)}.")
    if not np.all(np.isfinite(m)):
        raise ValueError("m must be finite.")
    nz, ny, nx, valuedim = m.shape
    if version == 1 and valuedim != 3:
        raise ValueError(f"OVF 1.0 (version=1) stores 3-component vectors; m has {valuedim} components.")
    if image_axes:
        if valuedim != 3:
            raise ValueError(f"image_axes=True needs a vector field (3 components), not {valuedim}.")
        m = ovf_to_image_axes(m)
    cell = np.asarray(cell_size, dtype=float).ravel()
    if cell.size == 1:
        cell = np.repeat(cell, 3)
    if cell.size != 3 or not np.all(np.isfinite(cell)) or np.any(cell <= 0):
        raise ValueError(f"cell_size must be a positive number or (dx, dy, dz) in nm, not {cell_size!r}.")
    orig = np.asarray(origin, dtype=float).ravel()
    if orig.size != 3 or not np.all(np.isfinite(orig)):
        raise ValueError(f"origin must be an (x, y, z) triple in nm, not {origin!r}.")
    units = [valueunits] * valuedim if isinstance(valueunits, str) else [str(u) for u in valueunits]
    if len(units) != valuedim or any(not u or any(c.isspace() for c in u) for u in units):
        raise ValueError(f"valueunits must be one unit or {valuedim} units without spaces, not {valueunits!r}.")
    if version == 1 and len(set(units)) != 1:
        raise ValueError(f"OVF 1.0 has a single valueunit; got {units}.")
    if valuelabels is None:
        labels = ["m_x", "m_y", "m_z"] if valuedim == 3 else [f"m_{i}" for i in range(valuedim)]
    else:
        labels = [str(v) for v in valuelabels]
        if len(labels) != valuedim or any(not v or any(c.isspace() for c in v) for v in labels):
            raise ValueError(f"valuelabels must be {valuedim} labels without spaces, not {valuelabels!r}.")

    cell_m = cell * 1e-9
    orig_m = orig * 1e-9
    nodes = (nx, ny, nz)
    mins = orig_m
    maxs = orig_m + cell_m * np.array(nodes)
    base = orig_m + cell_m / 2
    g = _g

    lines = []
    if version == 2:
        lines += ["# OOMMF OVF 2.0", "#", "# Segment count: 1", "#", "# Begin: Segment", "# Begin: Header", "#"]
    else:
        lines += ["# OOMMF: rectangular mesh v1.0", "#", "# Segment count: 1", "#", "# Begin: Segment",
                  "# Begin: Header", "#"]
    lines.append(f"# Title: {_one_line(title)}")
    for d in (desc.splitlines() if desc else []):
        lines.append(f"# Desc: {_one_line(d)}")
    lines.append("# meshtype: rectangular")
    lines.append("# meshunit: m")
    for ax, v in zip("xyz", mins):
        lines.append(f"# {ax}min: {g(v)}")
    for ax, v in zip("xyz", maxs):
        lines.append(f"# {ax}max: {g(v)}")
    if version == 2:
        lines.append(f"# valuedim: {valuedim}")
        lines.append(f"# valuelabels: {' '.join(labels)}")
        lines.append(f"# valueunits: {' '.join(units)}")
    for ax, v in zip("xyz", base):
        lines.append(f"# {ax}base: {g(v)}")
    for ax, v in zip("xyz", nodes):
        lines.append(f"# {ax}nodes: {v}")
    for ax, v in zip("xyz", cell_m):
        lines.append(f"# {ax}stepsize: {g(v)}")
    if version == 1:
        mags = np.sqrt(np.sum(m * m, axis=-1))
        nonzero = mags[mags > 0]
        lines.append(f"# valueunit: {units[0]}")
        lines.append("# valuemultiplier: 1")
        lines.append(f"# ValueRangeMinMag: {g(float(nonzero.min()) if nonzero.size else 1e-8)}")
        lines.append(f"# ValueRangeMaxMag: {g(float(mags.max()) if mags.max() > 0 else 1.0)}")
    lines += ["#", "# End: Header", "#"]

    flat = m.reshape(-1, valuedim)
    if fmt == "text":
        label = "Text"
        body = "\n".join(" ".join(g(v) for v in row) for row in flat).encode("ascii") + b"\n"
    else:
        width = 4 if fmt == "binary4" else 8
        label = f"Binary {width}"
        dtype = np.dtype(f"{'>' if version == 1 else '<'}f{width}")
        body = np.concatenate([[_CHECK[width]], flat.ravel()]).astype(dtype).tobytes()
        if fmt == "binary4" and np.any(np.abs(flat) > np.finfo(np.float32).max):
            raise ValueError("m has values too large for binary4 (float32); use fmt='binary8'.")
    head = ("\n".join(lines) + f"\n# Begin: Data {label}\n").encode("latin-1")
    tail = (("" if fmt == "text" else "\n") + f"# End: Data {label}\n# End: Segment\n").encode("latin-1")
    with open(os.fspath(path), "wb") as fh:
        fh.write(head)
        fh.write(body)
        fh.write(tail)


def _g(value):
    return repr(float(value)) if np.isfinite(value) else "0"


def _one_line(text):
    return str(text).replace("\r", " ").replace("\n", " ")
