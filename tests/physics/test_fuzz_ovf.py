"""Property-based (hypothesis) tests of the OVF reader on damaged files.

Every example starts from a valid file written by the project's own
:func:`~hyperspy_lorentz.physics.ovf.write_ovf` (OVF 1.0 and 2.0; text, binary 4
and binary 8) and damages it: header values replaced (negative, zero, NaN, inf,
huge, not numbers), data values replaced, lines dropped or duplicated, the file
cut short, bytes overwritten. The reader must then either refuse the file with a
``ValueError`` that names the file (and the line or the field), or return
exactly the original field and mesh: never wrong numbers, never another
exception, never a hang (hypothesis deadline).

The examples are derandomised, so the suite is repeatable. For a longer,
random search set ``HYPERSPY_LORENTZ_FUZZ_EXAMPLES`` (e.g. 2000).
"""

from __future__ import annotations

import math
import os
import re
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperspy_lorentz.physics.ovf import read_ovf, write_ovf

_N = os.environ.get("HYPERSPY_LORENTZ_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_N) if _N else 50,
    derandomize=_N is None,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

KINDS = [(2, "text"), (2, "binary4"), (2, "binary8"), (1, "text"), (1, "binary4"), (1, "binary8")]
CELL = (2.0, 3.0, 1.5)
# A number as the reader accepts it in a text data block.
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """{(version, fmt): (bytes, m, metadata)} of valid files, and a folder for the mutants."""
    folder = tmp_path_factory.mktemp("ovf")
    rng = np.random.default_rng(0)
    out = {}
    for version, fmt in KINDS:
        m = rng.normal(size=(2, 3, 4, 3))
        if fmt == "binary4":
            m = m.astype(np.float32).astype(float)
        path = folder / f"orig_{version}_{fmt}.ovf"
        write_ovf(path, m, CELL, fmt=fmt, version=version, valueunits="A/m", desc="fuzz")
        back, md = read_ovf(path)
        np.testing.assert_array_equal(back, m)  # the starting point is valid
        out[(version, fmt)] = (path.read_bytes(), m, md)
    # a scalar OVF 2.0 field: valuedim 1
    s = rng.normal(size=(1, 3, 5, 1))
    path = folder / "orig_scalar.ovf"
    write_ovf(path, s, CELL, fmt="text", valueunits="J/m3", valuelabels=["e"])
    out[(2, "scalar")] = (path.read_bytes(), s, read_ovf(path)[1])
    return folder, out


def _read_mutant(folder, raw):
    """Write ``raw`` to a file and read it: (m, md) or the ValueError; anything else fails the test."""
    path = folder / "mutant_file.ovf"
    path.write_bytes(raw)
    try:
        m, md = read_ovf(path)
    except ValueError as exc:
        msg = str(exc)
        assert msg.startswith(f"{path}:") or msg.startswith(f"{path}, line "), msg
        return None, None, msg
    return m, md, None


def _same(m, md, m0, md0):
    np.testing.assert_array_equal(m, m0)
    assert md["cell_size"] == md0["cell_size"]
    assert md["nodes"] == md0["nodes"]
    assert md["min"] == md0["min"]
    assert md["max"] == md0["max"]


def _lines(raw):
    """Header lines of a file (bytes split at newlines), and the index of '# Begin: Data'."""
    lines = raw.split(b"\n")
    begin = next(i for i, line in enumerate(lines) if line.startswith(b"# Begin: Data"))
    return lines, begin


kind = st.sampled_from(KINDS + [(2, "scalar")])
not_numbers = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e999", "", "abc", "1.2.3",
                               "--1", "0x10", "1_0", "1,5", "1e", ".", "\x00", "3 4"])


def _replace_field(raw, key, value):
    """The file with header field ``key`` set to ``value``, the field's line number and its true value."""
    lines, _ = _lines(raw)
    i = next(i for i, line in enumerate(lines) if line.startswith(f"# {key}:".encode()))
    true = lines[i].split(b":", 1)[1].strip().decode()
    lines[i] = f"# {key}: {value}".encode("latin-1", "replace")
    return b"\n".join(lines), i + 1, true


def _at_line(msg, line):
    return re.search(rf"\bline {line}\b", msg, re.IGNORECASE) is not None


@FUZZ
@given(kind=kind, key=st.sampled_from(["xnodes", "ynodes", "znodes", "valuedim"]),
       value=st.one_of(st.integers(-3, 6).map(str), st.integers(7, 10**40).map(str), not_numbers,
                       st.floats(allow_nan=True, allow_infinity=True).map(repr)))
def test_node_counts_and_valuedim(originals, kind, key, value):
    """Node counts (and valuedim) other than the true whole numbers are refused."""
    folder, files = originals
    raw, m0, md0 = files[kind]
    if key == "valuedim" and kind[0] == 1:  # OVF 1.0 has no valuedim
        key = "xnodes"
    damaged, line, true = _replace_field(raw, key, value)
    m, md, msg = _read_mutant(folder, damaged)
    if value.strip().lstrip("+") == true:
        _same(m, md, m0, md0)
        return
    assert msg is not None, f"{key}: {value!r} was accepted"
    if re.fullmatch(r"\+?\d{1,18}", value.strip()) and int(value) >= 1:  # a plausible count, but wrong:
        # it disagrees with the bounds and step sizes, or with the number of values
        assert f"{key} line {line}" in msg or ("xnodes * ynodes * znodes * valuedim" in msg and "values" in msg), msg
    else:
        assert _at_line(msg, line) and f"{key} is" in msg, msg  # the line, the field, the problem


@FUZZ
@given(kind=kind, key=st.sampled_from(["xstepsize", "ystepsize", "zstepsize", "xmin", "ymax", "zmin", "zmax",
                                       "xbase", "meshunit", "valuemultiplier"]),
       value=st.one_of(not_numbers, st.floats(max_value=0.0).map(repr),
                       st.sampled_from(["1e300", "-1e300", "1e-300", "5e-09", "2e-09"]),
                       st.floats(min_value=1e-12, max_value=1e-6).map(repr),
                       st.sampled_from(["s", "kg", "parsec(", "1/0", "**", "nm", "um", "m", "A/m", "nan"])))
def test_geometry_values(originals, kind, key, value):
    """Step sizes, bounds, base, mesh unit and value multiplier: impossible or contradictory values are refused."""
    folder, files = originals
    raw, m0, md0 = files[kind]
    if key == "valuemultiplier" and kind[0] != 1:  # OVF 2.0 has none
        key = "xstepsize"
    if key == "meshunit" and any(c.isdigit() for c in value):
        value = "furlong" + value
    damaged, line, true = _replace_field(raw, key, value)
    m, md, msg = _read_mutant(folder, damaged)
    number = float(value) if NUMBER.fullmatch(value.strip()) else math.nan
    if key == "meshunit":
        if value in ("m", "nm", "um"):  # lengths: the mesh is read in that unit
            assert msg is None, msg
            factor = {"m": 1.0, "nm": 1e-9, "um": 1e-6}[value]
            assert md["cell_size"] == pytest.approx(tuple(c * factor for c in md0["cell_size"]), rel=1e-9)
            np.testing.assert_array_equal(m, m0)
        else:
            assert msg is not None and _at_line(msg, line) and "meshunit" in msg, msg
        return
    if key == "xbase" and math.isfinite(number * 1e9):  # not part of the geometry: any finite value is kept
        assert msg is None, msg
        assert md["base"][0] == pytest.approx(number * 1e9, rel=1e-9, abs=1e-300)
        np.testing.assert_array_equal(m, m0)
        return
    if key == "valuemultiplier" and math.isfinite(number) and number != 0:
        with np.errstate(over="ignore"):
            expected = m0 * number
        if np.all(np.isfinite(expected)):
            assert msg is None, msg
            np.testing.assert_allclose(m, expected, rtol=1e-15)
        else:  # values that overflow are refused
            assert msg is not None and _at_line(msg, line) and "overflow" in msg, msg
        return
    if math.isclose(number, float(true), rel_tol=1e-12):
        _same(m, md, m0, md0)
        return
    if key[1:] in ("min", "max") and msg is None:  # a bound moved by much less than a cell: still consistent
        np.testing.assert_array_equal(m, m0)
        ax = "xyz".index(key[0])
        assert md[key[1:]][ax] == pytest.approx(number * 1e9, rel=1e-9, abs=1e-300)
        extent = (md["max"][ax] - md["min"][ax]) / md["nodes"][ax]
        assert extent == pytest.approx(md0["cell_size"][ax], rel=1e-3)
        return
    assert msg is not None, f"{key}: {value!r} was accepted"
    assert key in msg and _at_line(msg, line), msg


@FUZZ
@given(kind=st.sampled_from([(2, "text"), (1, "text"), (2, "scalar")]), data=st.data())
def test_text_data_values(originals, kind, data):
    """A text data value replaced: a number is read as written, anything else is refused at its line."""
    folder, files = originals
    raw, m0, md0 = files[kind]
    lines, begin = _lines(raw)
    row = data.draw(st.integers(begin + 1, begin + m0.size // m0.shape[-1]), label="line")
    tokens = lines[row].split()
    col = data.draw(st.integers(0, len(tokens) - 1), label="column")
    token = data.draw(st.one_of(
        not_numbers,
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.text(st.characters(codec="latin-1", exclude_characters="#", exclude_categories=("Zs", "Cc")),
                min_size=1, max_size=6),
    ), label="token")
    tokens[col] = token.encode("latin-1")
    lines[row] = b" ".join(tokens)
    m, md, msg = _read_mutant(folder, b"\n".join(lines))
    index = (row - begin - 1) * m0.shape[-1] + col
    if NUMBER.fullmatch(token) and math.isfinite(float(token)):
        assert msg is None, msg
        expected = m0.copy().reshape(-1)
        expected[index] = float(token)
        np.testing.assert_array_equal(m.reshape(-1), expected)
    else:
        assert msg is not None, f"{token!r} was read as a number"
        assert _at_line(msg, row + 1), msg


@FUZZ
@given(kind=kind, data=st.data())
def test_lines_dropped_or_duplicated(originals, kind, data):
    """Drop or duplicate any line (header or data): refused, or exactly the original field."""
    folder, files = originals
    raw, m0, md0 = files[kind]
    lines, begin = _lines(raw)
    last = len(lines) - 1 if kind[1] in ("text", "scalar") else begin  # binary: the header lines
    i = data.draw(st.integers(0, last), label="line")
    n = data.draw(st.integers(0, 3), label="copies")  # 0: dropped
    mutated = lines[:i] + [lines[i]] * n + lines[i + 1:]
    m, md, msg = _read_mutant(folder, b"\n".join(mutated))
    if msg is None:
        _same(m, md, m0, md0)
    elif begin < i < len(lines) - 4 and n != 1:  # a data line: the count is wrong
        assert "values" in msg, msg


@FUZZ
@given(kind=kind, data=st.data())
def test_truncated(originals, kind, data):
    """A file cut short anywhere: refused, or (cut within the closing lines) exactly the original field."""
    folder, files = originals
    raw, m0, md0 = files[kind]
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    m, md, msg = _read_mutant(folder, raw[:cut])
    end = raw.rindex(b"# End: Data") + len(b"# End: Data")
    if cut >= end:
        _same(m, md, m0, md0)
    else:
        assert msg is not None, f"cut at byte {cut} of {len(raw)} was accepted"


@FUZZ
@given(kind=st.sampled_from([k for k in KINDS if k[1] != "text"]), data=st.data())
def test_binary_bytes_overwritten(originals, kind, data):
    """Bytes of a binary file overwritten anywhere: refused, or read as finite numbers of the right shape."""
    folder, files = originals
    raw, m0, md0 = files[kind]
    raw = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4), label="n")):
        i = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw[i] = data.draw(st.integers(0, 255), label="byte")
    m, md, msg = _read_mutant(folder, bytes(raw))
    if msg is None:
        assert m.shape == m0.shape and np.all(np.isfinite(m))


@FUZZ
@given(kind=st.sampled_from([k for k in KINDS if k[1] != "text"]), data=st.data())
def test_binary_non_finite_values(originals, kind, data):
    """A NaN or an infinity in binary data is refused, naming its position."""
    folder, files = originals
    raw, m0, md0 = files[kind]
    width = int(kind[1][-1])
    marker = f"# Begin: Data Binary {width}\n".encode()
    start = raw.index(marker) + len(marker)
    index = data.draw(st.integers(0, m0.size - 1), label="index")
    value = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]), label="value")
    dtype = np.dtype(f"{'>' if kind[0] == 1 else '<'}f{width}")
    at = start + width * (index + 1)
    raw = raw[:at] + np.array([value], dtype=dtype).tobytes() + raw[at + width:]
    m, md, msg = _read_mutant(folder, raw)
    assert msg is not None and f"binary value {index} " in msg, msg


@FUZZ
@given(raw=st.one_of(st.binary(max_size=300),
                     st.binary(max_size=300).map(lambda b: b"# OOMMF OVF 2.0\n" + b),
                     st.binary(max_size=300).map(lambda b: b"# OOMMF OVF 2.0\n# xnodes: 1\n# Begin: Data Text\n"
                                                 + b)))
def test_random_bytes(originals, raw):
    """Arbitrary bytes: a ValueError naming the file, never another exception or a hang."""
    folder, _ = originals
    m, md, msg = _read_mutant(folder, raw)
    assert msg is not None or np.all(np.isfinite(m))


def test_reported_problems_named(originals, tmp_path):
    """The two files the issue found accepted silently, and a duplicated data line."""
    _, files = originals
    raw, _, _ = files[(2, "text")]
    cases = [
        (re.sub(rb"# xnodes: \d+", b"# xnodes: -4", raw), r"line \d+: xnodes is '-4', not a whole number >= 1"),
        (re.sub(rb"# ystepsize: \S+", b"# ystepsize: NaN", raw), r"line \d+: ystepsize is 'NaN', not a finite"),
        (raw.replace(b"# Begin: Data Text\n", b"# Begin: Data Text\n1 2 3\n"), r"holds 75 values, more than the 72"),
        (raw.replace(b"# End: Data Text", b"# End: Dat"), r"truncated"),
    ]
    for damaged, pattern in cases:
        path = tmp_path / "damaged.ovf"
        path.write_bytes(damaged)
        assert damaged != raw
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + pattern):
            read_ovf(path)
