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

import os
import re

import numpy as np

from hyperspy_lorentz.units import to_nm

__all__ = ["read_ovf", "write_ovf", "ovf_to_image_axes"]

_CHECK = {4: 1234567.0, 8: 123456789012345.0}
_BEGIN_DATA = re.compile(rb"#\s*Begin:\s*Data\s+(Text|Binary\s*([48]))[^\n]*\n", re.IGNORECASE)
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
        If the file is not an OVF 1.0/2.0 rectangular-mesh file, its check value
        is wrong, it holds fewer values than its header announces or its mesh unit
        is not a length.
    """
    with open(os.fspath(path), "rb") as fh:
        raw = fh.read()
    first = raw.split(b"\n", 1)[0].decode("latin-1").strip().lower()
    if "ovf 2.0" in first:
        version = 2
    elif "rectangular mesh v1.0" in first or "ovf 1.0" in first:
        version = 1
    elif "irregular mesh" in first:
        raise ValueError(f"{path}: irregular-mesh OVF files are not supported (path).")
    else:
        raise ValueError(f"{path}: not an OVF 1.0 / 2.0 file (path); first line {first!r}.")

    begin = _BEGIN_DATA.search(raw)
    if begin is None:
        raise ValueError(f"{path}: no '# Begin: Data' line (path).")
    header = _parse_header(raw[: begin.start()].decode("latin-1"))

    meshtype = header.get("meshtype", "rectangular").strip().lower()
    if meshtype != "rectangular":
        raise ValueError(f"{path}: meshtype {meshtype!r} is not supported, only 'rectangular' (path).")
    try:
        nodes = tuple(int(header[f"{ax}nodes"]) for ax in "xyz")
    except KeyError as exc:
        raise ValueError(f"{path}: header lacks {exc.args[0]!r} (path).") from None
    if version == 2:
        valuedim = int(header.get("valuedim", 3))
    else:
        valuedim = 3
    count = nodes[0] * nodes[1] * nodes[2] * valuedim

    kind = begin.group(1).decode("latin-1").lower()
    start = begin.end()
    if kind == "text":
        end = _END_DATA.search(raw, start)
        block = raw[start : end.start() if end else len(raw)].decode("latin-1")
        lines = []
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                lines.append(line)
        data = np.array(" ".join(lines).split(), dtype=float)
        fmt = "text"
    else:
        width = int(begin.group(2))
        fmt = f"binary{width}"
        order = ">" if version == 1 else "<"
        dtype = np.dtype(f"{order}f{width}")
        check = np.frombuffer(raw, dtype=dtype, count=1, offset=start)[0] if len(raw) >= start + width else None
        if check != _CHECK[width]:
            swapped = dtype.newbyteorder()
            check2 = np.frombuffer(raw, dtype=swapped, count=1, offset=start)[0] if check is not None else None
            if check2 == _CHECK[width]:  # tolerate writers that used the other byte order
                dtype = swapped
            else:
                raise ValueError(
                    f"{path}: wrong binary check value {check!r}, expected {_CHECK[width]} (path)."
                )
        if len(raw) < start + width * (count + 1):
            raise ValueError(f"{path}: the file holds fewer than the {count} values its header announces (path).")
        data = np.frombuffer(raw, dtype=dtype, count=count, offset=start + width).astype(float)
    if data.size < count:
        raise ValueError(f"{path}: the file holds {data.size} values, its header announces {count} (path).")
    m = data[:count].reshape(nodes[2], nodes[1], nodes[0], valuedim)

    if version == 1:
        multiplier = float(header.get("valuemultiplier", 1.0))
        if multiplier != 1.0:
            m = m * multiplier
        unit = header.get("valueunit", "1")
        valueunits = [unit] * valuedim
        valuelabels = None
    else:
        valueunits = header.get("valueunits", " ".join(["1"] * valuedim)).split()
        if len(valueunits) == 1 and valuedim > 1:
            valueunits = valueunits * valuedim
        labels = header.get("valuelabels")
        valuelabels = labels.split() if labels else None

    meshunit = header.get("meshunit", "m").strip()
    try:
        scale = to_nm(1.0, meshunit)
    except ValueError:
        raise ValueError(f"{path}: meshunit {meshunit!r} is not a length unit (path).") from None

    def _vec(prefix, suffix, default=None):
        try:
            # 12 significant digits: drop the binary noise of the m -> nm conversion
            return tuple(float(f"{float(header[f'{prefix}{ax}{suffix}']) * scale:.12g}") for ax in "xyz")
        except KeyError:
            return default

    cell = _vec("", "stepsize")
    mins = _vec("", "min")
    maxs = _vec("", "max")
    if cell is None:
        if mins is None or maxs is None:
            raise ValueError(f"{path}: header gives neither step sizes nor mesh bounds (path).")
        cell = tuple(float(f"{(hi - lo) / n:.12g}") for lo, hi, n in zip(mins, maxs, nodes))
    if mins is None:
        mins = (0.0, 0.0, 0.0)
    if maxs is None:
        maxs = tuple(lo + c * n for lo, c, n in zip(mins, cell, nodes))

    if image_axes:
        if valuedim != 3:
            raise ValueError(f"image_axes=True needs a vector field (valuedim 3), not valuedim {valuedim}.")
        m = ovf_to_image_axes(m)
    metadata = {
        "title": header.get("title", ""),
        "valueunits": valueunits,
        "valuelabels": valuelabels,
        "valuedim": valuedim,
        "cell_size": cell,
        "min": mins,
        "max": maxs,
        "base": _vec("", "base"),
        "nodes": nodes,
        "meshunit": meshunit,
        "desc": header.get("_desc", []),
        "version": version,
        "format": fmt,
        "image_axes": bool(image_axes),
        "header": {k: v for k, v in header.items() if not k.startswith("_")},
    }
    return m, metadata


def _parse_header(text):
    header = {"_desc": []}
    for line in text.splitlines():
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
            header["_desc"].append(value)
            header["desc"] = "\n".join(header["_desc"])
            continue
        header[key] = value
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
