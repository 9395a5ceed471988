"""Tests of the magnetic / electrostatic phase kernels against analytic results."""

import numpy as np
import pytest
import scipy.constants as sc

from hyperspy_lorentz.physics import textures
from hyperspy_lorentz.physics.induction import induction_from_phase
from hyperspy_lorentz.physics.magnetisation import (
    amplitude_from_thickness,
    electrostatic_phase,
    magnetic_phase,
)

# Independent constants (SI -> nm), not taken from the module under test.
PHI0 = sc.h / (2 * sc.e) * 1e18  # T nm^2
E_OVER_HBAR = sc.e / sc.hbar * 1e-18  # 1 / (T nm^2)
MS = 8.0e5  # A/m (permalloy)
T = 20.0  # nm
B0T = sc.mu_0 * MS * T  # T nm


def two_strips(h=128, w=64, width=32, first=16, second=80, axis="x"):
    """+M strip rows [first, first+width), -M strip rows [second, second+width), along x."""
    m = np.zeros((h, w))
    m[first:first + width] = 1.0
    m[second:second + width] = -1.0
    if axis == "x":
        return m, np.zeros_like(m)
    # the same geometry turned by 90 degrees: strips along y, magnetised along +-y
    return np.zeros_like(m.T), m.T.copy()


@pytest.mark.parametrize("pixel_size", [1.0, 2.0, (1.5, 0.5)])
def test_strip_phase_step_matches_aharonov_bohm(pixel_size):
    # Infinitely long strip (periodic along x) magnetised along +x, width w:
    # the phase drops by pi B t w / Phi0 along +y, and is flat outside.
    mx, my = two_strips()
    dy = pixel_size if np.isscalar(pixel_size) else pixel_size[0]
    phase = magnetic_phase(mx, my, MS, T, pixel_size, padding=1)
    width_nm = 32 * dy
    expected = np.pi * sc.mu_0 * MS * T * width_nm / PHI0
    assert np.ptp(phase, axis=1).max() < 1e-9 * expected  # independent of x
    profile = phase[:, 0]
    # flat regions: before the + strip, between the strips
    before, between, after = profile[4:12], profile[52:76], profile[116:124]
    for region in (before, between, after):
        assert np.ptp(region) < 2e-3 * expected
    step_plus = between.mean() - before.mean()
    assert step_plus == pytest.approx(-expected, rel=2e-3)  # decreases along +y
    assert after.mean() - between.mean() == pytest.approx(expected, rel=2e-3)
    # a linear ramp inside the strip with slope -(e/hbar) B t
    slope = np.polyfit(np.arange(20, 44) * dy, profile[20:44], 1)[0]
    assert slope == pytest.approx(-E_OVER_HBAR * B0T, rel=2e-3)


def test_strip_along_y_magnetised_along_y():
    # Turned by 90 degrees: M along +y, phase increases along +x ((B_y t) = (hbar/e) dphi/dx)
    mx, my = two_strips(axis="y")
    phase = magnetic_phase(mx, my, MS, T, 1.0, padding=1)
    profile = phase[0]
    step = profile[52:76].mean() - profile[4:12].mean()
    assert step == pytest.approx(np.pi * B0T * 32 / PHI0, rel=2e-3)


@pytest.mark.parametrize("axis", ["x", "y"])
def test_induction_of_film_equals_mu0_ms_t(axis):
    # Wide domains of a continuous film (no magnetic charges): B t = mu0 Ms t along M.
    mx, my = two_strips(h=128, w=32, width=48, first=8, second=72, axis=axis)
    phase = magnetic_phase(mx, my, MS, T, 2.0, padding=1)
    bx, by = induction_from_phase(phase, 2.0)
    inner = np.zeros(mx.shape, bool)
    if axis == "x":
        inner[12:52] = True
    else:
        inner[:, 12:52] = True
    along, across = (bx, by) if axis == "x" else (by, bx)
    np.testing.assert_allclose(along[inner], B0T, rtol=0.02)
    assert np.abs(across[inner]).max() < 0.02 * B0T
    # mean induction in T when the thickness is given
    bx_t, by_t = induction_from_phase(phase, 2.0, thickness=T)
    np.testing.assert_allclose(np.hypot(bx_t, by_t)[inner], sc.mu_0 * MS, rtol=0.02)


def test_disc_projected_induction_is_half_mu0_ms_t():
    # Uniformly magnetised disc: the 2-D demagnetising factor of a circle is 1/2, so the
    # projected induction inside is uniform, along M, and equal to mu0 Ms t / 2.
    direction = 30.0
    tex = textures.uniform_island((128, 128), direction=direction, radius=30)
    phase = magnetic_phase(tex.mx, tex.my, MS * tex.mask, T, 1.0, padding=4)
    bx, by = induction_from_phase(phase, 1.0)
    yy, xx = np.mgrid[:128, :128] - 63.5
    inner = np.hypot(xx, yy) < 22
    ang = np.deg2rad(direction)
    np.testing.assert_allclose(bx[inner], 0.5 * B0T * np.cos(ang), rtol=0.02, atol=0.01 * B0T)
    np.testing.assert_allclose(by[inner], 0.5 * B0T * np.sin(ang), rtol=0.02, atol=0.01 * B0T)


def test_rectangle_centre_induction_matches_2d_demag():
    # Rectangle L (along M) x W: B t at the centre = mu0 Ms t [1 - (2/pi) arctan(W/L)].
    tex = textures.uniform_island((96, 192), geometry="rectangle", size=(20, 120))
    phase = magnetic_phase(tex.mx, tex.my, MS * tex.mask, T, 1.0, padding=3)
    bx, by = induction_from_phase(phase, 1.0)
    expected = B0T * (1 - 2 / np.pi * np.arctan(20 / 120))
    assert bx[47:49, 95:97].mean() == pytest.approx(expected, rel=0.02)
    assert abs(by[47:49, 95:97]).max() < 0.01 * B0T


@pytest.mark.parametrize("chirality", [1, -1])
def test_vortex_phase_is_a_cone(chirality):
    radius = 40.0
    tex = textures.vortex((128, 128), radius=radius, chirality=chirality, core_radius=0)
    phase = magnetic_phase(tex.mx, tex.my, MS, T, 1.0)
    yy, xx = np.mgrid[:128, :128] - 63.5
    r = np.hypot(xx, yy)
    # radially symmetric: compare with its 90-degree rotation and mirror images
    np.testing.assert_allclose(phase, np.rot90(phase), atol=1e-3 * np.ptp(phase))
    np.testing.assert_allclose(phase, phase[::-1], atol=1e-3 * np.ptp(phase))
    # linear in r inside, slope chirality (e/hbar) mu0 Ms t; flat outside
    inside = (r > 4) & (r < radius - 3)
    slope, _ = np.polyfit(r[inside], phase[inside], 1)
    assert slope == pytest.approx(chirality * E_OVER_HBAR * B0T, rel=0.01)
    outside = r > radius + 3
    assert np.ptp(phase[outside]) < 0.01 * np.ptp(phase)
    # chirality +1 (right-handed about the beam): minimum at the centre
    centre = phase[62:66, 62:66].mean()
    assert (centre < phase[outside].mean()) == (chirality == 1)
    # height of the cone: (e/hbar) mu0 Ms t (R - r), r the mean radius of the centre pixels
    height = E_OVER_HBAR * B0T * (radius - r[62:66, 62:66].mean())
    assert abs(phase[outside].mean() - centre) == pytest.approx(height, rel=0.02)


def test_neel_skyrmion_has_no_phase_bloch_has():
    neel = textures.neel_skyrmion((96, 96), radius=15, wall_width=4)
    bloch = textures.bloch_skyrmion((96, 96), radius=15, wall_width=4)
    p_bloch = magnetic_phase(bloch.mx, bloch.my, MS, T, 1.0)
    p_neel = magnetic_phase(neel.mx, neel.my, MS, T, 1.0)
    assert np.ptp(p_bloch) > 0.1
    assert np.ptp(p_neel) < 1e-4 * np.ptp(p_bloch)
    # tilted, the Neel skyrmion becomes visible (periodic film: padding 1)
    p_tilt = magnetic_phase(neel.mx, neel.my, MS, T, 1.0, tilt_x=20, padding=1, mz=neel.mz)
    assert np.ptp(p_tilt) > 0.05 * np.ptp(p_bloch)


def test_tilt_projects_mz_and_path_length():
    mx, my = two_strips()
    mz = mx.copy()  # out-of-plane strips +z / -z
    zero = np.zeros_like(mx)
    alpha = 30.0
    # about x: +z tilts towards -y, path t / cos -> an in-plane -y moment of tan(alpha)
    tilted = magnetic_phase(zero, zero, MS, T, 1.0, tilt_x=alpha, padding=1, mz=mz)
    flat = magnetic_phase(zero, -np.tan(np.deg2rad(alpha)) * mz, MS, T, 1.0, padding=1)
    np.testing.assert_allclose(tilted, flat, atol=1e-10)
    # about y: +z tilts towards +x
    tilted = magnetic_phase(zero, zero, MS, T, 1.0, tilt_y=alpha, padding=1, mz=mz)
    flat = magnetic_phase(np.tan(np.deg2rad(alpha)) * mz, zero, MS, T, 1.0, padding=1)
    np.testing.assert_allclose(tilted, flat, atol=1e-10)
    # about x, an mx film keeps mx but is crossed over t / cos(alpha)
    tilted = magnetic_phase(mx, zero, MS, T, 1.0, tilt_x=alpha, padding=1)
    flat = magnetic_phase(mx, zero, MS, T / np.cos(np.deg2rad(alpha)), 1.0, padding=1)
    np.testing.assert_allclose(tilted, flat, atol=1e-10)
    # about x, an my film: cos(alpha) * (t / cos(alpha)) -> unchanged
    tilted = magnetic_phase(zero, mx, MS, T, 1.0, tilt_x=alpha, padding=1)
    np.testing.assert_allclose(tilted, magnetic_phase(zero, mx, MS, T, 1.0, padding=1), atol=1e-10)
    # mz without tilt has no effect
    np.testing.assert_allclose(magnetic_phase(zero, zero, MS, T, 1.0, mz=mz), 0.0, atol=1e-12)


def test_slices_sum_through_thickness():
    tex = textures.vortex((48, 48), radius=18)
    two_d = magnetic_phase(tex.mx, tex.my, MS, T, 1.0)
    stack = magnetic_phase(np.stack([tex.mx] * 4), np.stack([tex.my] * 4), MS, T, 1.0)
    np.testing.assert_allclose(stack, two_d, atol=1e-12)
    # half the slices empty -> half the phase
    zero = np.zeros_like(tex.mx)
    half = magnetic_phase(np.stack([tex.mx, zero]), np.stack([tex.my, zero]), MS, T, 1.0)
    np.testing.assert_allclose(half, 0.5 * two_d, atol=1e-12)


def test_linear_in_ms_and_thickness_maps():
    tex = textures.vortex((48, 48), radius=18)
    p1 = magnetic_phase(tex.mx, tex.my, MS, T, 1.0)
    np.testing.assert_allclose(magnetic_phase(tex.mx, tex.my, 2 * MS, T, 1.0), 2 * p1, atol=1e-12)
    np.testing.assert_allclose(
        magnetic_phase(tex.mx, tex.my, np.full((48, 48), MS), np.full((48, 48), 3 * T), 1.0), 3 * p1, atol=1e-12
    )


def test_uniform_periodic_film_has_zero_phase():
    # only the q = 0 component: no divergence-free part, no phase, and no NaN
    ones = np.ones((32, 32))
    phase = magnetic_phase(ones, 0 * ones, MS, T, 1.0, padding=1)
    assert np.all(np.isfinite(phase))
    np.testing.assert_allclose(phase, 0.0, atol=1e-12)


def test_padding_changes_and_converges():
    tex = textures.uniform_island((64, 64), radius=24)
    p1 = magnetic_phase(tex.mx, tex.my, MS * tex.mask, T, 1.0, padding=1)
    p4 = magnetic_phase(tex.mx, tex.my, MS * tex.mask, T, 1.0, padding=4)
    p8 = magnetic_phase(tex.mx, tex.my, MS * tex.mask, T, 1.0, padding=8)
    assert p4.shape == (64, 64)
    rel = lambda a, b: np.ptp(a - b - np.mean(a - b)) / np.ptp(b)  # noqa: E731
    assert rel(p4, p8) < 0.5 * rel(p1, p8)
    assert rel(p4, p8) < 0.05
    # a (py, px) pair is accepted
    assert magnetic_phase(tex.mx, tex.my, MS, T, 1.0, padding=(2, 1.5)).shape == (64, 64)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(ms=-1.0), "ms"),
        (dict(thickness=-5.0), "thickness"),
        (dict(pixel_size=0.0), "pixel_size"),
        (dict(pixel_size=-1.0), "pixel_size"),
        (dict(pixel_size=(1.0, 2.0, 3.0)), "pixel_size"),
        (dict(my=np.zeros((8, 9))), "my"),
        (dict(mz=np.zeros((9, 8))), "mz"),
        (dict(mx=np.full((8, 8), 2.0)), "|m|"),
        (dict(mx=np.zeros(8), my=np.zeros(8)), "mx"),
        (dict(tilt_x=90.0), "tilt_x"),
        (dict(tilt_y="a lot"), "tilt_y"),
        (dict(padding=0.5), "padding"),
        (dict(ms=np.ones((3, 3))), "ms"),
        (dict(thickness=np.ones((3, 3))), "thickness"),
        (dict(mx=np.full((8, 8), np.nan)), "mx"),
    ],
)
def test_magnetic_phase_bad_input(kwargs, word):
    args = dict(mx=np.zeros((8, 8)), my=np.zeros((8, 8)), ms=MS, thickness=T, pixel_size=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=word.replace("|", r"\|")):
        magnetic_phase(**args)


def test_electrostatic_phase():
    # sigma(200 kV) = 0.0072884 rad / (V nm) (Kirkland, table of interaction parameters)
    assert electrostatic_phase(10.0, 20.0, 200.0) == pytest.approx(0.0072884 * 200.0, rel=2e-5)
    assert electrostatic_phase(10.0, 20.0, 300.0) == pytest.approx(0.0065262 * 200.0, rel=2e-5)
    t = np.array([[0.0, 10.0], [20.0, 30.0]])
    np.testing.assert_allclose(electrostatic_phase(t, 17.0, 200.0), 0.0072884 * 17.0 * t, rtol=2e-5)
    v0 = np.array([[10.0, 20.0], [20.0, 10.0]])
    np.testing.assert_allclose(electrostatic_phase(t, v0, 200.0), 0.0072884 * v0 * t, rtol=2e-5)
    with pytest.raises(ValueError, match="thickness"):
        electrostatic_phase(-1.0, 20.0, 200.0)
    with pytest.raises(ValueError, match="mean_inner_potential"):
        electrostatic_phase(1.0, -20.0, 200.0)
    with pytest.raises(ValueError, match="beam_energy"):
        electrostatic_phase(1.0, 20.0, 0.0)
    with pytest.raises(ValueError, match="mean_inner_potential"):
        electrostatic_phase(np.ones((2, 2)), np.ones(3), 200.0)


def test_amplitude_from_thickness():
    t = np.array([0.0, 50.0, 100.0])
    amp = amplitude_from_thickness(t, 100.0)
    np.testing.assert_allclose(amp, np.exp(-t / 200.0))
    np.testing.assert_allclose(amp**2, np.exp(-t / 100.0))  # intensity falls as exp(-t / lambda)
    assert amplitude_from_thickness(30.0, np.inf) == 1.0
    assert isinstance(amplitude_from_thickness(30.0, 100.0), float)
    with pytest.raises(ValueError, match="absorption_length"):
        amplitude_from_thickness(t, 0.0)
    with pytest.raises(ValueError, match="absorption_length"):
        amplitude_from_thickness(t, -5.0)
    with pytest.raises(ValueError, match="thickness"):
        amplitude_from_thickness(-t, 100.0)
