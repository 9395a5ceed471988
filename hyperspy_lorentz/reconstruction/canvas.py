"""The canvas: a field of view with a free border, for every AD solver.

A micrograph is a window onto a specimen that goes on beyond its edges. The
electrons seen near the edge of the field of view were deflected by specimen
*outside* it, and some of those deflected by specimen inside it land outside.
A reconstruction that propagates only the measured window with periodic
boundaries (or mirrored ones) models neither: wrap-around fringes of the wrong
side of the image enter the model, and the fit distorts the phase to explain
them (a skyrmion-lattice window: accuracy 0.42 with periodic boundaries, 0.998
with a free border).

So the AD solvers let the exit wave live on a *canvas* larger than the images
by a free border on every side. The canvas is propagated with periodic
boundaries (FFTs), the model images are cropped back to the measured window,
and only the measured pixels enter the likelihood; the border's phase and
amplitude are unknowns under the same prior as the window's. Drift shifts the
canvas, so content moving into the window comes from the border, never from
the opposite edge.

How wide the border must be is a question of physics: the image at defocus
``df`` of a spatial frequency ``q`` is displaced laterally by the gradient of
the aberration phase, ``d(q) = lambda q |df + Cs lambda^2 q^2|`` (nm). The
largest ``q`` that still matters is where the partial-coherence envelope falls
to :data:`ENVELOPE_CUTOFF` (for a beam divergence ``theta_c`` this is
``d ~ 2.15 lambda / (pi theta_c)``, independent of the defocus: 170 nm at
200 kV and 0.01 mrad), and at most the Nyquist frequency. A phase gradient
``g`` (rad/nm) deflects by ``lambda |df| g / (2 pi)``, the spread at
``q = g / 2 pi``, so it is covered by the same bound. Drift that is refined
adds :data:`DRIFT_MARGIN` pixels. The border is capped at half the larger
image side (beyond that the FFT cost grows faster than the information).

Pure NumPy/PyTorch; nothing here knows about HyperSpy.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from hyperspy_lorentz.physics import optics
from hyperspy_lorentz.physics.forward import _next_fast_len

__all__ = ["Canvas", "fresnel_spread", "free_border", "ENVELOPE_CUTOFF", "DRIFT_MARGIN",
           "MIN_BORDER"]

#: The free border extends to where the coherence envelope falls below this.
ENVELOPE_CUTOFF = 1e-2
#: Pixels added to the border when the image drift is refined (beyond the drift
#: already known): a fitted drift moves the window on the canvas by this much
#: before content from the opposite side could wrap in.
DRIFT_MARGIN = 8
#: Smallest border, pixels (a few pixels for the finite-difference prior).
MIN_BORDER = 4


def fresnel_spread(pixel_size, beam_energy, defocus, cs=1.0, theta_c=0.01,
                   defocus_spread=500.0):
    """Lateral spread of the image of a point, nm, along each image axis.

    ``max_q lambda q |df + Cs lambda^2 q^2|`` over the spatial frequencies
    ``q`` up to where the coherence envelope falls to :data:`ENVELOPE_CUTOFF`,
    at most the Nyquist frequency of that axis, and over all ``defocus``
    values.

    Parameters
    ----------
    pixel_size : float or (float, float)
        Pixel size, nm.
    beam_energy : float
        Accelerating voltage, keV.
    defocus : float or sequence of float
        Defocus value(s), nm.
    cs : float
        Spherical aberration, mm.
    theta_c : float
        Beam divergence, mrad.
    defocus_spread : float
        Focal spread, nm.

    Returns
    -------
    (float, float)
        Spread along ``y`` and ``x``, nm.
    """
    pix = optics._check_pixel_size(pixel_size)
    lam = optics.wavelength(beam_energy)
    cs_nm = float(cs) * 1e6
    out = []
    for p in pix:
        q = torch.linspace(0.0, 0.5 / p, 2049, dtype=torch.float64)
        worst = 0.0
        for df in np.atleast_1d(np.asarray(defocus, dtype=float)):
            env = optics.coherence_envelope(q, torch.zeros_like(q), lam, float(df), cs,
                                            theta_c, defocus_spread)
            keep = env >= ENVELOPE_CUTOFF
            d = lam * q * torch.abs(float(df) + cs_nm * lam**2 * q**2)
            worst = max(worst, float(d[keep].max()) if bool(keep.any()) else 0.0)
        out.append(worst)
    return tuple(out)


def free_border(shape, pixel_size, beam_energy, defocus, cs=1.0, theta_c=0.01,
                defocus_spread=500.0, drift=0.0, drift_margin=0):
    """Free border of the canvas, pixels, for images of ``shape``.

    The :func:`fresnel_spread` in pixels (rounded up), plus the largest known
    ``drift`` and a ``drift_margin`` for drift still to be fitted; at least
    :data:`MIN_BORDER`, at most half the larger image side.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(H, W)``.
    pixel_size : float or (float, float)
        Pixel size, nm.
    beam_energy : float
        keV.
    defocus : float or sequence of float
        nm.
    cs, theta_c, defocus_spread : float
        mm, mrad, nm.
    drift : float
        Largest known image shift, pixels.
    drift_margin : float
        Pixels added for drift that is still to be fitted (the AD solvers use
        :data:`DRIFT_MARGIN` when the shifts are refined).

    Returns
    -------
    (int, int)
        ``(py, px)``: pixels added above and below, left and right.
    """
    h, w = (int(s) for s in shape)
    pix = optics._check_pixel_size(pixel_size)
    spread = fresnel_spread(pix, beam_energy, defocus, cs, theta_c, defocus_spread)
    extra = abs(float(drift)) + abs(float(drift_margin))
    cap = max(max(h, w) // 2, MIN_BORDER)
    return tuple(int(min(max(math.ceil(s / p + extra), MIN_BORDER), cap))
                 for s, p in zip(spread, pix))


@dataclasses.dataclass(frozen=True)
class Canvas:
    """Geometry of a window ``(H, W)`` inside a canvas ``(Hc, Wc)``.

    ``pad = (top, bottom, left, right)`` pixels; the canvas size is rounded up
    to an FFT-friendly (7-smooth) length, the extra rows and columns going to
    the bottom and right. ``Canvas.periodic(shape)`` is the canvas without a
    border (periodic boundaries on the window itself).
    """

    window: tuple
    pad: tuple

    @classmethod
    def around(cls, shape, border):
        """Canvas with at least ``border = (py, px)`` pixels on every side."""
        h, w = (int(s) for s in shape)
        py, px = (int(b) for b in border)
        hc, wc = _next_fast_len(h + 2 * py), _next_fast_len(w + 2 * px)
        return cls((h, w), (py, hc - h - py, px, wc - w - px))

    @classmethod
    def periodic(cls, shape):
        h, w = (int(s) for s in shape)
        return cls((h, w), (0, 0, 0, 0))

    @property
    def shape(self):
        """Canvas shape ``(Hc, Wc)``."""
        t, b, l, r = self.pad
        return (self.window[0] + t + b, self.window[1] + l + r)

    @property
    def border(self):
        """``(top, left)``: offset of the window on the canvas."""
        return (self.pad[0], self.pad[2])

    @property
    def is_periodic(self):
        return not any(self.pad)

    @property
    def coverage(self):
        """Fraction of the canvas that is measured."""
        hc, wc = self.shape
        return self.window[0] * self.window[1] / (hc * wc)

    def embed(self, field, mode="edge"):
        """A window-sized NumPy field extended to the canvas (``np.pad`` mode)."""
        field = np.asarray(field)
        if field.shape != tuple(self.window):
            raise ValueError(f"field has shape {field.shape}, the window is {self.window}")
        if self.is_periodic:
            return field
        t, b, l, r = self.pad
        return np.pad(field, ((t, b), (l, r)), mode=mode)

    def crop(self, field):
        """The window of a canvas-sized field (array or tensor; a view)."""
        t, _, l, _ = self.pad
        h, w = self.window
        return field[..., t:t + h, l:l + w]
