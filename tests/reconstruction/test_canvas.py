"""The canvas geometry and the free border (reconstruction/canvas.py).

Oracles: the lateral displacement of a spatial frequency by defocus,
``lambda q |df|`` (the gradient of the aberration phase), and the envelope's own
closed form at the cut-off.
"""

import math

import numpy as np
import pytest

from hyperspy_lorentz.physics import optics
from hyperspy_lorentz.reconstruction.canvas import (
    DRIFT_MARGIN,
    ENVELOPE_CUTOFF,
    MIN_BORDER,
    Canvas,
    free_border,
    fresnel_spread,
)

LAM = optics.wavelength(200.0)


def test_spread_is_the_nyquist_displacement_without_an_envelope():
    # no spatial or temporal incoherence: every frequency up to Nyquist counts
    sy, sx = fresnel_spread((2.0, 4.0), 200.0, [-1e4, 5e4], cs=0.0, theta_c=0.0,
                            defocus_spread=0.0)
    assert sy == pytest.approx(LAM * 0.25 * 5e4, rel=1e-3)  # q_nyq = 1 / (2 * 2 nm)
    assert sx == pytest.approx(LAM * 0.125 * 5e4, rel=1e-3)


def test_spread_is_capped_by_the_spatial_coherence_envelope():
    # E = exp(-(pi theta_c q df)^2) falls to the cut-off at a displacement
    # lambda q df = lambda sqrt(ln(1/cutoff)) / (pi theta_c), whatever the defocus
    theta = 0.01e-3  # rad
    expected = LAM * math.sqrt(math.log(1 / ENVELOPE_CUTOFF)) / (math.pi * theta)
    for df in (1e6, 3e6):
        s, _ = fresnel_spread(1.0, 200.0, df, cs=0.0, theta_c=0.01, defocus_spread=0.0)
        assert s == pytest.approx(expected, rel=0.01)


def test_free_border_adds_drift_and_respects_its_bounds():
    base = free_border((256, 256), 2.5, 200.0, [-1e5, 0, 1e5])
    spread = fresnel_spread(2.5, 200.0, [-1e5, 0, 1e5])
    assert base == (math.ceil(spread[0] / 2.5), math.ceil(spread[1] / 2.5))
    drifted = free_border((256, 256), 2.5, 200.0, [-1e5, 0, 1e5], drift=3.0,
                          drift_margin=DRIFT_MARGIN)
    assert drifted[0] == base[0] + 3 + DRIFT_MARGIN
    # in focus: the smallest border; huge defocus: half the image at most
    assert free_border((64, 64), 2.5, 200.0, [0.0]) == (MIN_BORDER, MIN_BORDER)
    assert free_border((64, 80), 2.5, 200.0, [1e8], theta_c=0.0) == (40, 40)


def test_canvas_geometry_embed_and_crop():
    c = Canvas.around((30, 50), (7, 9))
    hc, wc = c.shape
    assert hc >= 44 and wc >= 68 and c.border == (7, 9)
    assert c.window == (30, 50) and 0 < c.coverage < 1
    field = np.arange(30 * 50, dtype=float).reshape(30, 50)
    big = c.embed(field, "edge")
    assert big.shape == c.shape
    np.testing.assert_array_equal(c.crop(big), field)
    np.testing.assert_array_equal(big[0, 9:59], field[0])  # edge mode repeats the edge
    p = Canvas.periodic((30, 50))
    assert p.is_periodic and p.shape == (30, 50) and p.coverage == 1.0
    assert p.embed(field) is field
    with pytest.raises(ValueError, match="window"):
        c.embed(np.zeros((3, 3)))
