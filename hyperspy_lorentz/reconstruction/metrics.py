"""Phase-retrieval accuracy metrics (pure NumPy)."""

from __future__ import annotations

import numpy as np

__all__ = ["phase_accuracy"]


def phase_accuracy(retrieved, truth, mask=None, border=0):
    r"""Normalised cross-correlation of two phase maps.

    The accuracy measure of the AD-LTEM paper (Zhou, Cherukara & Phatak,
    npj Comput. Mater. 7, 141 (2021)):

    .. math::

        \mathrm{acc} = \frac{\sum a\,b}{\sqrt{\sum a^2 \sum b^2}},

    with :math:`a, b` the retrieved and true phases after subtracting their
    means over the evaluated pixels. It is 1 for a perfect retrieval, -1 for a
    sign-flipped one, and invariant to a constant offset and a positive scale
    of either phase.

    Parameters
    ----------
    retrieved : array_like, shape (H, W)
        Retrieved phase, rad.
    truth : array_like, shape (H, W)
        Reference phase, rad.
    mask : array_like of bool, shape (H, W), optional
        Pixels to evaluate (True = used); default all.
    border : int
        Number of pixels cropped from every edge before evaluating (applied
        together with ``mask``).

    Returns
    -------
    float
        Accuracy in [-1, 1]; ``nan`` if either phase is constant over the
        evaluated pixels.
    """
    a = np.asarray(retrieved, dtype=float)
    b = np.asarray(truth, dtype=float)
    if a.shape != b.shape:
        raise ValueError(
            f"retrieved has shape {a.shape} but truth has {b.shape}; compare "
            f"phases on the same grid"
        )
    sel = np.ones(a.shape, dtype=bool)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != a.shape:
            raise ValueError(
                f"mask has shape {m.shape} but the phases are {a.shape}; pass a "
                f"boolean mask of the same shape"
            )
        sel &= m
    border = int(border)
    if border < 0 or (a.ndim and 2 * border >= min(a.shape)):
        raise ValueError(
            f"border must be >= 0 and leave pixels to compare, got {border} for "
            f"shape {a.shape}"
        )
    if border:
        crop = np.zeros(a.shape, dtype=bool)
        crop[(slice(border, -border),) * a.ndim] = True
        sel &= crop
    if not np.any(sel):
        raise ValueError("no pixels left to compare; relax mask or border")
    a = a[sel] - a[sel].mean()
    b = b[sel] - b[sel].mean()
    den = np.sqrt(np.sum(a * a) * np.sum(b * b))
    if den == 0:
        return float("nan")
    return float(np.sum(a * b) / den)
