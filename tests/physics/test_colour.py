"""Tests of the direction/magnitude colour mapping and the colour wheel."""

import numpy as np
import pytest
from matplotlib.colors import ListedColormap, hsv_to_rgb, rgb_to_hsv

from hyperspy_lorentz.physics.colour import colour_wheel, get_cyclic_cmap, induction_to_rgb

# An exactly linear-hue cyclic map: an oracle independent of colorcet's tables.
N = 4096
LINEAR_HUE = ListedColormap(hsv_to_rgb(np.stack([np.arange(N) / N, np.ones(N), np.ones(N)], axis=1)))


def hue(rgb):
    return rgb_to_hsv(np.clip(rgb, 0, 1))[..., 0]


def hue_distance(a, b):
    d = np.mod(a - b, 1.0)
    return np.minimum(d, 1.0 - d)


def test_hue_follows_angle_from_x_towards_y():
    theta = np.linspace(0, 2 * np.pi, 37)[:-1]
    rgb = induction_to_rgb(np.cos(theta), np.sin(theta), cmap=LINEAR_HUE)
    assert rgb.shape == (36, 3)
    np.testing.assert_allclose(hue(rgb), theta / (2 * np.pi), atol=2.0 / N)


@pytest.mark.parametrize("cmap", [None, "CET_C6", "cet_CET_C2", "twilight", LINEAR_HUE])
def test_opposite_directions_half_a_cycle_apart(cmap):
    theta = np.linspace(0, 2 * np.pi, 25)[:-1]
    rgb = induction_to_rgb(np.cos(theta), np.sin(theta), cmap=cmap)
    rgb_opposite = induction_to_rgb(-np.cos(theta), -np.sin(theta), cmap=cmap)
    colormap = get_cyclic_cmap(cmap)
    # each colour is the colour map at theta / 2 pi, its opposite at +1/2
    np.testing.assert_allclose(rgb, colormap(theta / (2 * np.pi))[:, :3], atol=0.02)
    np.testing.assert_allclose(rgb_opposite, colormap(np.mod(theta / (2 * np.pi) + 0.5, 1))[:, :3], atol=0.02)
    if cmap is LINEAR_HUE:
        np.testing.assert_allclose(hue_distance(hue(rgb), hue(rgb_opposite)), 0.5, atol=2.0 / N)
    else:
        # distinct colours for opposite directions
        assert np.linalg.norm(rgb - rgb_opposite, axis=-1).min() > 0.1


def test_magnitude_sets_brightness():
    bx = np.array([0.0, 0.25, 0.5, 1.0, 2.0])
    rgb = induction_to_rgb(bx, np.zeros_like(bx), max_magnitude=1.0, cmap=LINEAR_HUE)
    value = rgb.max(axis=-1)  # HSV value of a fully saturated colour map
    np.testing.assert_allclose(value, [0.0, 0.25, 0.5, 1.0, 1.0], atol=1e-9)
    np.testing.assert_array_equal(rgb[0], 0.0)  # zero magnitude is black
    # default: the largest magnitude is full brightness
    rgb = induction_to_rgb(bx, np.zeros_like(bx), cmap=LINEAR_HUE)
    np.testing.assert_allclose(rgb.max(axis=-1), bx / 2.0, atol=1e-9)
    # the hue does not depend on the magnitude
    h = hue(rgb[1:])
    np.testing.assert_allclose(h, h[0], atol=1e-6)


def test_default_map_shape_range_and_black():
    rng = np.random.default_rng(1)
    bx, by = rng.normal(size=(2, 16, 20))
    bx[3, 4] = by[3, 4] = 0.0
    by[5, 6] = np.nan
    rgb = induction_to_rgb(bx, by)
    assert rgb.shape == (16, 20, 3)
    assert rgb.dtype == float
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    np.testing.assert_array_equal(rgb[3, 4], 0.0)
    np.testing.assert_array_equal(rgb[5, 6], 0.0)  # NaN is black
    np.testing.assert_array_equal(induction_to_rgb(np.zeros((4, 4)), np.zeros((4, 4))), 0.0)


def test_colour_wheel_matches_mapping():
    size = 65
    wheel = colour_wheel(size, cmap="CET_C6")
    assert wheel.shape == (size, size, 4)
    assert wheel.min() >= 0 and wheel.max() <= 1
    # transparent outside, opaque inside
    assert wheel[0, 0, 3] == 0.0 and wheel[-1, -1, 3] == 0.0
    assert wheel[size // 2, size // 2, 3] == 1.0
    # centre black, rim bright; direction from the centre as in images (y down)
    np.testing.assert_allclose(wheel[size // 2, size // 2, :3], 0.0, atol=1e-12)
    c = size // 2
    for (row, col), (bx, by) in [((c, size - 2), (1, 0)), ((size - 2, c), (0, 1)), ((c, 1), (-1, 0)),
                                 ((1, c), (0, -1))]:
        expected = induction_to_rgb(np.array(bx, float), np.array(by, float), max_magnitude=1.0, cmap="CET_C6")
        np.testing.assert_allclose(wheel[row, col, :3], expected, atol=0.08)
    # default size
    assert colour_wheel().shape == (128, 128, 4)


def test_cmap_resolution_and_errors():
    assert get_cyclic_cmap("cet_CET_C6") is get_cyclic_cmap("CET_C6")
    assert get_cyclic_cmap(LINEAR_HUE) is LINEAR_HUE
    with pytest.raises(ValueError, match="cmap"):
        get_cyclic_cmap("no_such_map")
    with pytest.raises(ValueError, match="cmap"):
        get_cyclic_cmap(42)
    with pytest.raises(ValueError, match="by"):
        induction_to_rgb(np.ones((2, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="max_magnitude"):
        induction_to_rgb(np.ones(2), np.ones(2), max_magnitude=0.0)
    with pytest.raises(ValueError, match="max_magnitude"):
        induction_to_rgb(np.ones(2), np.ones(2), max_magnitude=-1.0)
    with pytest.raises(ValueError, match="size"):
        colour_wheel(2)
