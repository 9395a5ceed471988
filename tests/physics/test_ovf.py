"""Tests of the OVF 1.0 / 2.0 reader and writer."""

import re
import struct

import numpy as np
import pytest

from hyperspy_lorentz.physics.ovf import ovf_to_image_axes, read_ovf, write_ovf

# Hand-written OVF 2.0 text file (as MuMax3 writes them): 3 x 2 x 1 nodes of 5 nm x 4 nm x 3 nm.
OVF2_TEXT = """# OOMMF OVF 2.0
#
# Segment count: 1
#
# Begin: Segment
# Begin: Header
#
# Title: m
# meshtype: rectangular
# meshunit: m
# xmin: 0
# ymin: 0
# zmin: 0
# xmax: 1.5e-08
# ymax: 8e-09
# zmax: 3e-09
# valuedim: 3
# valuelabels: m_x m_y m_z
# valueunits: 1 1 1
#
# Desc: Total simulation time:  0  s
# xbase: 2.5e-09
# ybase: 2e-09
# zbase: 1.5e-09
# xnodes: 3
# ynodes: 2
# znodes: 1
# xstepsize: 5e-09
# ystepsize: 4e-09
# zstepsize: 3e-09
#
# End: Header
#
# Begin: Data Text
1 0 0
0 1 0
0 0 1
-1 0 0
0.6 0.8 0   ## a comment
0 -0.6 -0.8
# End: Data Text
# End: Segment
"""

# Hand-written OVF 1.0 text header with a value multiplier and mesh in nm.
OVF1_HEADER = """# OOMMF: rectangular mesh v1.0
# Segment count: 1
# Begin: Segment
# Begin: Header
# Title: Oxs_Demag::Field
# Desc: hand made
# meshtype: rectangular
# meshunit: nm
# xbase: 1
# ybase: 1
# zbase: 1
# xstepsize: 2
# ystepsize: 2
# zstepsize: 2
# xnodes: 2
# ynodes: 1
# znodes: 2
# xmin: 0
# ymin: 0
# zmin: 0
# xmax: 4
# ymax: 2
# zmax: 4
# valueunit: A/m
# valuemultiplier: 1000
# ValueRangeMinMag: 1e-8
# ValueRangeMaxMag: 1
# End: Header
"""


def test_parse_handwritten_ovf2_text(tmp_path):
    path = tmp_path / "m.ovf"
    path.write_text(OVF2_TEXT)
    m, md = read_ovf(path)
    assert m.shape == (1, 2, 3, 3)
    # x varies fastest, then y: node (x=1, y=1) is the 5th line
    np.testing.assert_array_equal(m[0, 0, 0], [1, 0, 0])
    np.testing.assert_array_equal(m[0, 0, 2], [0, 0, 1])
    np.testing.assert_array_equal(m[0, 1, 0], [-1, 0, 0])
    np.testing.assert_allclose(m[0, 1, 1], [0.6, 0.8, 0])
    np.testing.assert_allclose(m[0, 1, 2], [0, -0.6, -0.8])
    assert md["cell_size"] == pytest.approx((5.0, 4.0, 3.0))
    assert md["cell_size"] == (5.0, 4.0, 3.0)  # no binary noise from m -> nm
    assert md["max"] == (15.0, 8.0, 3.0)
    assert md["base"] == (2.5, 2.0, 1.5)
    assert md["nodes"] == (3, 2, 1)
    assert md["title"] == "m"
    assert md["valueunits"] == ["1", "1", "1"]
    assert md["valuelabels"] == ["m_x", "m_y", "m_z"]
    assert md["version"] == 2 and md["format"] == "text"
    assert md["desc"] == ["Total simulation time:  0  s"]


def test_parse_handwritten_ovf1_big_endian_binary(tmp_path):
    # built with struct, independently of the writer: big-endian ('>') float32
    values = np.arange(12, dtype=float) * 0.5
    body = struct.pack(">f", 1234567.0) + struct.pack(">12f", *values)
    path = tmp_path / "h.omf"
    path.write_bytes(OVF1_HEADER.encode() + b"# Begin: Data Binary 4\n" + body
                     + b"\n# End: Data Binary 4\n# End: Segment\n")
    m, md = read_ovf(path)
    assert m.shape == (2, 1, 2, 3)
    np.testing.assert_allclose(m.ravel(), values * 1000)  # valuemultiplier applied
    assert md["valueunits"] == ["A/m"] * 3
    assert md["cell_size"] == (2.0, 2.0, 2.0)  # meshunit nm
    assert md["version"] == 1 and md["format"] == "binary4"
    assert md["title"] == "Oxs_Demag::Field"


def test_parse_handwritten_ovf2_binary8(tmp_path):
    values = np.linspace(-1, 1, 18)
    header = OVF2_TEXT.split("# Begin: Data Text")[0]
    body = struct.pack("<d", 123456789012345.0) + struct.pack("<18d", *values)
    path = tmp_path / "b.ovf"
    path.write_bytes(header.encode() + b"# Begin: Data Binary 8\n" + body + b"\n# End: Data Binary 8\n")
    m, md = read_ovf(path)
    np.testing.assert_array_equal(m.reshape(-1), values)
    assert md["format"] == "binary8"


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("fmt", ["text", "binary4", "binary8"])
def test_round_trip(tmp_path, version, fmt):
    rng = np.random.default_rng(0)
    m = rng.normal(size=(3, 5, 7, 3))
    path = tmp_path / f"rt_{version}_{fmt}.ovf"
    write_ovf(path, m, (2.0, 3.0, 1.5), fmt=fmt, version=version, title="my field", valueunits="A/m",
              desc="line one\nline two")
    back, md = read_ovf(path)
    assert back.shape == m.shape and back.dtype == np.float64
    if fmt == "binary4":
        np.testing.assert_allclose(back, m.astype(np.float32), rtol=0, atol=0)
    else:
        np.testing.assert_array_equal(back, m)
    assert md["cell_size"] == (2.0, 3.0, 1.5)
    assert md["nodes"] == (7, 5, 3)
    assert md["version"] == version and md["format"] == fmt
    assert md["title"] == "my field"
    assert md["valueunits"] == ["A/m"] * 3
    assert md["desc"] == ["line one", "line two"]
    # the binary byte order is the one the standard prescribes
    raw = path.read_bytes()
    if fmt != "text":
        width = int(fmt[-1])
        start = raw.index(b"# Begin: Data Binary %d\n" % width) + len(b"# Begin: Data Binary %d\n" % width)
        order = ">" if version == 1 else "<"
        check = struct.unpack(order + ("f" if width == 4 else "d"), raw[start:start + width])[0]
        assert check == (1234567.0 if width == 4 else 123456789012345.0)
    assert raw.startswith(b"# OOMMF OVF 2.0" if version == 2 else b"# OOMMF: rectangular mesh v1.0")


def test_round_trip_2d_and_scalar_field(tmp_path):
    m = np.random.default_rng(1).normal(size=(4, 6, 3))  # one layer (Y, X, 3)
    write_ovf(tmp_path / "a.ovf", m, 5.0)
    back, md = read_ovf(tmp_path / "a.ovf")
    np.testing.assert_array_equal(back[0], m)
    assert md["cell_size"] == (5.0, 5.0, 5.0)
    s = np.random.default_rng(2).normal(size=(2, 4, 6, 1))  # OVF 2.0 scalar field
    write_ovf(tmp_path / "s.ovf", s, 1.0, fmt="binary8", valueunits="J/m3", valuelabels=["energy"])
    back, md = read_ovf(tmp_path / "s.ovf")
    np.testing.assert_array_equal(back, s)
    assert md["valuedim"] == 1 and md["valuelabels"] == ["energy"] and md["valueunits"] == ["J/m3"]


def test_image_axes(tmp_path):
    # OVF y points up, image y down: rotation by 180 degrees about x
    m = np.zeros((2, 3, 4, 3))
    m[0, 0, 1] = [0.1, 0.2, 0.3]  # bottom layer, bottom row (y = ymin) in the OVF frame
    img = ovf_to_image_axes(m)
    np.testing.assert_allclose(img[1, 2, 1], [0.1, -0.2, -0.3])  # last row = bottom of the image
    np.testing.assert_array_equal(ovf_to_image_axes(img), m)  # an involution
    path = tmp_path / "i.ovf"
    write_ovf(path, img, 1.0, image_axes=True)
    raw, _ = read_ovf(path)
    np.testing.assert_array_equal(raw, m)
    back, md = read_ovf(path, image_axes=True)
    np.testing.assert_array_equal(back, img)
    assert md["image_axes"] is True
    # a counter-clockwise vortex of the OVF viewer (y up) stays counter-clockwise on
    # screen (y down): right of the centre the moment points up the screen (-y image)
    y, x = np.mgrid[:5, :5] - 2.0  # OVF frame: row index grows upwards
    ovf = np.stack([-y, x, np.zeros_like(x)], axis=-1)[None]
    im = ovf_to_image_axes(ovf)[0]
    assert im[2, 4, 1] < 0 and im[0, 2, 0] < 0  # right: up; top row of the image: leftwards
    with pytest.raises(ValueError, match="shape"):
        ovf_to_image_axes(np.zeros((3, 4, 3)))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(fmt="binary2"), "fmt"),
        (dict(version=3), "version"),
        (dict(cell_size=0.0), "cell_size"),
        (dict(cell_size=(1.0, -1.0, 1.0)), "cell_size"),
        (dict(cell_size=(1.0, 2.0)), "cell_size"),
        (dict(m=np.zeros((4, 3))), "m must"),
        (dict(m=np.zeros((1, 2, 2, 2)), version=1), "OVF 1.0"),
        (dict(valueunits=["A/m", "T"]), "valueunits"),
        (dict(valuelabels=["a", "b c", "d"]), "valuelabels"),
    ],
)
def test_write_bad_input(tmp_path, kwargs, word):
    args = dict(m=np.zeros((1, 2, 2, 3)), cell_size=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        write_ovf(tmp_path / "bad.ovf", **args)


def test_read_bad_files(tmp_path):
    p = tmp_path / "x.ovf"
    p.write_text("hello\n")
    with pytest.raises(ValueError, match="not an OVF"):
        read_ovf(p)
    write_ovf(p, np.ones((1, 2, 2, 3)), 1.0, fmt="binary4")
    raw = bytearray(p.read_bytes())
    start = raw.index(b"Binary 4\n") + len(b"Binary 4\n")
    raw[start:start + 4] = struct.pack("<f", 1.0)
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="check value"):
        read_ovf(p)
    p.write_text(OVF2_TEXT.replace("0 -0.6 -0.8\n", ""))
    with pytest.raises(ValueError, match="values"):
        read_ovf(p)
    p.write_text(OVF2_TEXT.replace("meshunit: m", "meshunit: parsec_per_kelvin"))
    with pytest.raises(ValueError, match="meshunit"):
        read_ovf(p)


def test_read_refuses_what_it_cannot_trust(tmp_path):
    """Contradictions and damage the old reader let through: named with the file, line and field."""
    p = tmp_path / "d.ovf"

    def refused(text_or_bytes, pattern):
        if isinstance(text_or_bytes, str):
            p.write_text(text_or_bytes)
        else:
            p.write_bytes(text_or_bytes)
        with pytest.raises(ValueError, match=re.escape(str(p)) + r"(, line \d+)?: .*" + pattern):
            read_ovf(p)

    refused(OVF2_TEXT.replace("# xnodes: 3", "# xnodes: -3"), "xnodes is '-3', not a whole number >= 1")
    refused(OVF2_TEXT.replace("# xnodes: 3", "# xnodes: 3.0"), "xnodes is '3.0', not a whole number")
    refused(OVF2_TEXT.replace("# zstepsize: 3e-09", "# zstepsize: nan"), "zstepsize is 'nan', not a finite")
    refused(OVF2_TEXT.replace("# zstepsize: 3e-09", "# zstepsize: -3e-09"), "zstepsize .* not a positive length")
    refused(OVF2_TEXT.replace("# zstepsize: 3e-09", "# zstepsize: 4e-09"), "zstepsize 4e-09 disagrees with the bounds")
    refused(OVF2_TEXT.replace("# xmax: 1.5e-08", "# xmax: 0"), "xmax 0 is not above xmin")
    refused(OVF2_TEXT.replace("# ynodes: 2\n", "# ynodes: 2\n# ynodes: 3\n"), "ynodes is given twice")
    refused(OVF2_TEXT.replace("0 0 1\n", "0 0 1\n0 0 1\n"), "holds 21 values, more than the 18")
    refused(OVF2_TEXT.replace("0 0 1\n", "0 0 1e999\n"), "overflows to infinity")
    refused(OVF2_TEXT.replace("0 0 1\n", "0 0 nan\n"), "'nan' in the data block is not a number")
    refused(OVF2_TEXT.replace("# End: Data Text\n# End: Segment\n", ""), "without its '# End: Data Text' line")
    refused(OVF2_TEXT.replace("Data Text", "Data Binary 2"), "data format 'Binary 2' is not supported")
    refused(OVF2_TEXT.replace("# OOMMF OVF 2.0", "# OOMMF: irregular mesh v1.0"), "irregular-mesh")
    refused("", "the file is empty")
    # binary: a header that announces fewer nodes than the data hold, a NaN, a file cut short
    write_ovf(p, np.ones((1, 2, 2, 3)), 1.0, fmt="binary8")
    raw = p.read_bytes()
    refused(raw.replace(b"# xnodes: 2", b"# xnodes: 1").replace(b"# xmax: 2e-09", b"# xmax: 1e-09"),
            "the binary data block is longer than the 6 values")
    start = raw.index(b"Binary 8\n") + len(b"Binary 8\n")
    refused(raw[:start + 16] + struct.pack("<d", np.nan) + raw[start + 24:], r"binary value 1 \(byte")
    refused(raw[:start + 40], "holds at most 4 binary values")
    refused(raw[:-30], "no '# End: Data Binary 8' line")
