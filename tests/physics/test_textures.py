"""Tests of the built-in magnetisation textures."""

import numpy as np
import pytest
from scipy import ndimage

from hyperspy_lorentz.physics import textures as tx


def norm(t):
    return np.sqrt(t.mx**2 + t.my**2 + t.mz**2)


ALL = [
    lambda: tx.uniform_island((40, 50)),
    lambda: tx.uniform_island((40, 50), geometry="rectangle", direction=45),
    lambda: tx.vortex((40, 50)),
    lambda: tx.skyrmion((48, 48), 10, 3, helicity=37),
    lambda: tx.bloch_skyrmion((48, 48), 10, 3),
    lambda: tx.neel_skyrmion((48, 48), 10, 3, chirality=-1),
    lambda: tx.skyrmion_lattice((64, 80), 20),
    lambda: tx.stripe_domains((64, 80), 24, direction=30),
]


@pytest.mark.parametrize("make", ALL)
def test_unit_vectors_on_support(make):
    t = make()
    assert isinstance(t, tx.Texture)
    mx, my, mz, mask = t  # unpacks as a 4-tuple
    assert mask.dtype == bool and mask.shape == mx.shape == my.shape == mz.shape
    assert mx.dtype == np.float64
    assert mask.any()
    np.testing.assert_allclose(norm(t)[mask], 1.0, atol=1e-12)
    np.testing.assert_array_equal(norm(t)[~mask], 0.0)


def test_uniform_island_direction_and_geometry():
    t = tx.uniform_island((64, 64), direction=30.0, radius=20.0)
    m = t.mask
    np.testing.assert_allclose(t.mx[m], np.cos(np.pi / 6))
    np.testing.assert_allclose(t.my[m], np.sin(np.pi / 6))  # +y is down the image
    np.testing.assert_array_equal(t.mz, 0.0)
    assert m.sum() == pytest.approx(np.pi * 20**2, rel=0.03)
    # lengths in nm: radius 20 nm at 2 nm per pixel is 10 pixels
    t2 = tx.uniform_island((64, 64), radius=20.0, pixel_size=2.0)
    assert t2.mask.sum() == pytest.approx(np.pi * 10**2, rel=0.05)
    # rectangle (height, width) in nm, centred
    r = tx.uniform_island((40, 60), geometry="rectangle", size=(10, 30), direction=90)
    rows, cols = np.nonzero(r.mask)
    assert rows.max() - rows.min() + 1 == 10 and cols.max() - cols.min() + 1 == 30
    np.testing.assert_allclose(r.my[r.mask], 1.0)
    # centre (y, x) in nm
    c = tx.uniform_island((40, 60), radius=5, center=(10.0, 40.0))
    cy, cx = ndimage.center_of_mass(c.mask)
    assert (cy, cx) == pytest.approx((10.0, 40.0), abs=0.01)


@pytest.mark.parametrize("chirality", [1, -1])
@pytest.mark.parametrize("polarity", [1, -1])
def test_vortex(chirality, polarity):
    t = tx.vortex((65, 65), radius=28, chirality=chirality, polarity=polarity, core_radius=3)
    y, x = np.mgrid[:65, :65] - 32.0
    r = np.hypot(x, y)
    # in-plane moment tangential: m . r_hat = 0
    np.testing.assert_allclose((t.mx * x + t.my * y)[r > 0], 0.0, atol=1e-12)
    # right of the centre the moment points along chirality * (+y)
    assert np.sign(t.my[32, 50]) == chirality
    assert t.mz[32, 32] == pytest.approx(polarity)
    assert np.abs(t.mz[r > 15]).max() < 1e-6
    assert t.mask.sum() == pytest.approx(np.pi * 28**2, rel=0.03)


def test_skyrmion_profile():
    r = np.array([0.0, 5.0, 10.0, 40.0, 1e4])
    theta = tx.skyrmion_profile(r, 10.0, 2.0)
    assert theta[0] == pytest.approx(np.pi)
    assert theta[2] == pytest.approx(np.pi / 2)
    assert theta[3] < 1e-5 and theta[4] < 1e-300
    assert np.all(np.diff(theta) <= 0)
    # large R / w: no overflow
    with np.errstate(all="raise"):
        big = tx.skyrmion_profile(np.array([0.0, 999.0, 1001.0]), 1000.0, 0.5)
    assert big[0] == pytest.approx(np.pi)
    assert big[1:] == pytest.approx([2 * np.arctan(np.exp(2.0)), 2 * np.arctan(np.exp(-2.0))])


@pytest.mark.parametrize("polarity", [1, -1])
def test_skyrmions_bloch_and_neel(polarity):
    shape, radius = (64, 64), 12.0
    y, x = np.mgrid[:64, :64] - 31.5
    r = np.hypot(x, y)
    b = tx.bloch_skyrmion(shape, radius, 3.0, chirality=1, polarity=polarity)
    n = tx.neel_skyrmion(shape, radius, 3.0, chirality=1, polarity=polarity)
    for t in (b, n):
        assert t.mz[31:33, 31:33].mean() == pytest.approx(polarity, abs=0.01)
        assert t.mz[0, 0] == pytest.approx(-polarity, abs=1e-4)
        ring = np.abs(r - radius) < 0.5
        assert np.abs(t.mz[ring]).max() < 0.2  # m_z changes sign at the radius
    # Bloch: tangential, as a chirality +1 vortex; Neel (+1): radial outwards
    np.testing.assert_allclose((b.mx * x + b.my * y), 0.0, atol=1e-9)
    assert b.my[32, 31 + 12] > 0.9
    np.testing.assert_allclose((n.mx * y - n.my * x), 0.0, atol=1e-9)
    assert n.mx[32, 31 + 12] > 0.9
    # general helicity: angle between in-plane moment and outward radius
    h = tx.skyrmion(shape, radius, 3.0, helicity=-60.0)
    phi_m = np.arctan2(h.my, h.mx)[ring := np.abs(r - radius) < 2]
    phi_r = np.arctan2(y, x)[ring]
    np.testing.assert_allclose(np.angle(np.exp(1j * (phi_m - phi_r))), np.deg2rad(-60.0), atol=1e-9)


def test_skyrmion_lattice_is_hexagonal_with_period():
    period = 16.0
    t = tx.skyrmion_lattice((96, 96), period, polarity=-1)
    cores, n = ndimage.label(t.mz < -0.5)
    centres = np.array(ndimage.center_of_mass(np.ones_like(t.mz), cores, range(1, n + 1)))
    whole = centres[np.all((centres > 5) & (centres < 90), axis=1)]  # cores not cut by the border
    inner = centres[np.all((centres > 20) & (centres < 76), axis=1)]
    assert len(inner) > 10
    d = np.hypot(*(inner[:, None, :] - whole[None, :, :]).transpose(2, 0, 1))
    d[d == 0] = np.inf
    nearest = np.sort(d, axis=1)[:, :6]  # six neighbours at the period
    np.testing.assert_allclose(nearest, period, atol=0.5)
    # one lattice site at the centre of the image, background -polarity
    assert t.mz[47:49, 47:49].mean() < -0.9
    assert t.mz.max() > 0.99
    # continuous: neighbouring pixels differ no more than inside an isolated skyrmion
    def step(tex):
        return max(np.abs(np.diff(c, axis=a)).max() for c in (tex.mx, tex.my, tex.mz) for a in (0, 1))

    single = tx.skyrmion((96, 96), period / 4, period / 10)
    assert step(t) < 1.1 * step(single)


def test_skyrmion_lattice_rotation():
    t = tx.skyrmion_lattice((81, 81), 20.0, rotation=90.0, radius=4, wall_width=1.5)
    # with the first lattice vector along +y, the site 20 nm below the centre is a core
    assert t.mz[60, 40] < -0.9 and t.mz[40, 60] > 0.5


@pytest.mark.parametrize("wall_type", ["bloch", "neel"])
def test_stripe_domains(wall_type):
    period = 20.0
    t = tx.stripe_domains((8, 80), period, wall_type=wall_type, wall_width=2.0)
    row = t.mz[0]
    assert row[0] == pytest.approx(1.0, abs=1e-6)  # up domain at u = 0
    np.testing.assert_allclose(row[:60], row[20:80], atol=1e-9)  # periodic
    assert row[10] == pytest.approx(-1.0, abs=1e-3)  # down domain half a period on
    assert np.all(t.mz == t.mz[0])  # vertical stripes for direction 0
    # two walls per period, in-plane moment alternating between walls
    crossings = np.nonzero(np.diff(np.sign(row)))[0]
    assert len(crossings) == 8
    walls = t.my[0] if wall_type == "bloch" else t.mx[0]
    np.testing.assert_allclose(np.abs(walls[[5, 15]]), 1.0, atol=1e-9)
    assert walls[5] * walls[15] < 0
    other = t.mx if wall_type == "bloch" else t.my
    np.testing.assert_allclose(other, 0.0, atol=1e-12)


def test_stripe_direction():
    t = tx.stripe_domains((40, 40), 20.0, direction=90.0)
    np.testing.assert_allclose(t.mz, np.repeat(t.mz[:, :1], 40, axis=1), atol=1e-9)  # horizontal stripes
    np.testing.assert_allclose(t.mz[:20, 0], t.mz[20:, 0], atol=1e-9)


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: tx.uniform_island((0, 10)), "shape"),
        (lambda: tx.uniform_island((10,)), "shape"),
        (lambda: tx.uniform_island((10, 10), radius=-1), "radius"),
        (lambda: tx.uniform_island((10, 10), geometry="hexagon"), "geometry"),
        (lambda: tx.uniform_island((10, 10), geometry="rectangle", size=(5,)), "size"),
        (lambda: tx.uniform_island((10, 10), pixel_size=0), "pixel_size"),
        (lambda: tx.uniform_island((10, 10), direction="up"), "direction"),
        (lambda: tx.vortex((10, 10), chirality=2), "chirality"),
        (lambda: tx.vortex((10, 10), polarity=0), "polarity"),
        (lambda: tx.skyrmion((10, 10), 0.0, 1.0), "radius"),
        (lambda: tx.skyrmion((10, 10), 3.0, -1.0), "wall_width"),
        (lambda: tx.skyrmion_lattice((10, 10), -5.0), "period"),
        (lambda: tx.stripe_domains((10, 10), 5.0, wall_type="twisted"), "wall_type"),
        (lambda: tx.vortex((10, 10), center=(1.0,)), "center"),
    ],
)
def test_bad_input(call, word):
    with pytest.raises(ValueError, match=word):
        call()
