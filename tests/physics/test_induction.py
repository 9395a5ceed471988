"""Tests of the induction-from-phase kernel (gradient and sign convention)."""

import numpy as np
import pytest
import scipy.constants as sc

from hyperspy_lorentz.physics import textures
from hyperspy_lorentz.physics.induction import angle, induction_from_phase, magnitude
from hyperspy_lorentz.physics.magnetisation import magnetic_phase

HBAR_OVER_E = sc.hbar / sc.e * 1e18  # T nm^2, independent of the module


def ramp(a, b, shape=(24, 32), pixel=(1.0, 1.0)):
    """phi = a x + b y (rad), x, y in nm."""
    y = np.arange(shape[0])[:, None] * pixel[0]
    x = np.arange(shape[1])[None, :] * pixel[1]
    return a * x + b * y + 0.3


@pytest.mark.parametrize("pixel", [(1.0, 1.0), (2.5, 2.5), (0.5, 3.0)])
def test_linear_ramp_gives_exact_gradient_everywhere(pixel):
    a, b = 0.02, -0.05  # rad / nm
    phase = ramp(a, b, pixel=pixel)
    size = pixel[0] if pixel[0] == pixel[1] else pixel
    bx, by = induction_from_phase(phase, size)
    np.testing.assert_allclose(bx, -HBAR_OVER_E * b, rtol=1e-12)
    np.testing.assert_allclose(by, HBAR_OVER_E * a, rtol=1e-12)


def test_convention_film_along_x_has_phase_decreasing_along_y():
    # phase decreasing down the image -> induction along +x
    phase = ramp(0.0, -0.01)
    bx, by = induction_from_phase(phase, 1.0)
    assert np.all(bx > 0)
    np.testing.assert_allclose(by, 0.0, atol=1e-12)
    # phase increasing to the right -> induction along +y (down)
    bx, by = induction_from_phase(ramp(0.01, 0.0), 1.0)
    assert np.all(by > 0)
    np.testing.assert_allclose(bx, 0.0, atol=1e-12)


def test_quadratic_phase_exact_inside():
    # central differences are exact for a quadratic inside the image
    y, x = np.mgrid[:20, :30] * 2.0
    phase = 1e-3 * x**2 - 2e-3 * x * y
    bx, by = induction_from_phase(phase, 2.0)
    np.testing.assert_allclose(bx[1:-1, 1:-1], -HBAR_OVER_E * (-2e-3 * x)[1:-1, 1:-1], rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(by[1:-1, 1:-1], HBAR_OVER_E * (2e-3 * x - 2e-3 * y)[1:-1, 1:-1], rtol=1e-10,
                               atol=1e-9)


def test_thickness_gives_tesla_and_maps_broadcast():
    phase = ramp(0.02, -0.05)
    bx_t, by_t = induction_from_phase(phase, 1.0)
    bx, by = induction_from_phase(phase, 1.0, thickness=40.0)
    np.testing.assert_allclose(bx, bx_t / 40.0)
    np.testing.assert_allclose(by, by_t / 40.0)
    tmap = np.linspace(10, 50, phase.size).reshape(phase.shape)
    bx, _ = induction_from_phase(phase, 1.0, thickness=tmap)
    np.testing.assert_allclose(bx, bx_t / tmap)


def test_leading_axes_are_independent():
    stack = np.stack([ramp(0.01, 0.0), ramp(0.0, 0.02)])
    bx, by = induction_from_phase(stack, 1.0)
    assert bx.shape == stack.shape
    for i in range(2):
        ebx, eby = induction_from_phase(stack[i], 1.0)
        np.testing.assert_allclose(bx[i], ebx)
        np.testing.assert_allclose(by[i], eby)


def test_vortex_induction_follows_magnetisation():
    tex = textures.vortex((96, 96), radius=36, chirality=-1, core_radius=0)
    phase = magnetic_phase(tex.mx, tex.my, 8e5, 20.0, 1.0)
    bx, by = induction_from_phase(phase, 1.0)
    r = np.hypot(*(np.mgrid[:96, :96] - 47.5))
    ring = (r > 6) & (r < 30)
    diff = np.angle(np.exp(1j * (angle(bx, by) - np.arctan2(tex.my, tex.mx))))
    assert np.abs(diff[ring]).max() < 0.02
    np.testing.assert_allclose(magnitude(bx, by)[ring], sc.mu_0 * 8e5 * 20.0, rtol=0.02)


def test_helpers():
    assert magnitude(3.0, 4.0) == 5.0
    assert angle(0.0, 1.0) == pytest.approx(np.pi / 2)  # +y (down)
    assert angle(-1.0, 0.0) == pytest.approx(np.pi)
    with pytest.raises(ValueError, match="by"):
        magnitude(np.ones(3), np.ones(4))


@pytest.mark.parametrize(
    "phase, kwargs, word",
    [
        (np.zeros(10), {}, "phase"),
        (np.zeros((1, 10)), {}, "phase"),
        (np.zeros((8, 8)), dict(pixel_size=0.0), "pixel_size"),
        (np.zeros((8, 8)), dict(pixel_size=-2.0), "pixel_size"),
        (np.zeros((8, 8)), dict(pixel_size="1 nm"), "pixel_size"),
        (np.zeros((8, 8)), dict(thickness=0.0), "thickness"),
        (np.zeros((8, 8)), dict(thickness=-10.0), "thickness"),
        (np.zeros((8, 8)), dict(thickness=np.ones((3, 3))), "thickness"),
    ],
)
def test_bad_input(phase, kwargs, word):
    args = dict(pixel_size=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        induction_from_phase(phase, **args)
