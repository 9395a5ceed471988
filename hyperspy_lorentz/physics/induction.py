"""In-plane magnetic induction from an electron phase map (pure NumPy kernels).

With the electron charge ``-e`` and ``phi_m = -(e / hbar) integral A_z dz`` (see
:ref:`conventions`), the projected in-plane induction is

    (B_x t, B_y t) = (hbar / e) (-d phi / dy, +d phi / dx),

``hbar / e = 658.2119569 T nm^2``, in T nm when the pixel size is in nm. Image axes:
``y`` is the row index (down), ``x`` the column index (right); vectors are
returned as ``(x, y)`` components.
"""

from __future__ import annotations

import numpy as np

from hyperspy_lorentz.physics.magnetisation import HBAR_OVER_E, _pixel_pair

__all__ = ["induction_from_phase", "magnitude", "angle"]


def induction_from_phase(phase, pixel_size, thickness=None):
    """Projected in-plane induction from the gradient of a phase map.

    Parameters
    ----------
    phase : array_like
        Phase, rad, shape ``(..., H, W)`` (the last two axes are ``y``, ``x``;
        leading axes are treated independently). Unwrap it first.
    pixel_size : float or (float, float)
        Pixel size, nm: one number or a ``(dy, dx)`` pair.
    thickness : float or array_like or None
        Specimen thickness, nm, ``> 0``: a number or a map broadcastable to
        ``phase``. ``None`` returns the integrated induction ``B t`` in T nm; a
        thickness returns the mean induction ``B = (B t) / t`` in T.

    Returns
    -------
    bx, by : numpy.ndarray
        ``x`` (right) and ``y`` (down) components, shape of ``phase``: T nm when
        ``thickness`` is ``None``, else T.

    Raises
    ------
    ValueError
        If ``phase`` has fewer than 2 dimensions or fewer than 2 pixels along an
        image axis, if ``pixel_size`` is not positive, or ``thickness`` not
        positive.

    Notes
    -----
    ``(B_x t, B_y t) = (hbar / e) (-d phi / dy, +d phi / dx)`` with second-order
    central differences inside the image and first-order one-sided differences on
    its border (:func:`numpy.gradient`). A linear phase ramp gives its exact
    gradient everywhere.
    """
    phase = np.asarray(phase, dtype=float)
    if phase.ndim < 2:
        raise ValueError(f"phase must be at least 2-D (..., H, W), not {phase.ndim}-D.")
    if phase.shape[-1] < 2 or phase.shape[-2] < 2:
        raise ValueError(f"phase needs at least 2 pixels along y and x, not shape {phase.shape}.")
    dy, dx = _pixel_pair(pixel_size)
    dphi_dy = np.gradient(phase, dy, axis=-2)
    dphi_dx = np.gradient(phase, dx, axis=-1)
    bx = -HBAR_OVER_E * dphi_dy
    by = HBAR_OVER_E * dphi_dx
    if thickness is not None:
        if isinstance(thickness, (bool, np.bool_)):
            raise ValueError(f"thickness must be positive (nm) or None, not {thickness!r}.")
        try:
            t = np.asarray(thickness, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"thickness must be positive (nm) or None, not {thickness!r}.") from None
        if not np.all(np.isfinite(t)) or np.any(t <= 0):
            raise ValueError("thickness must be positive and finite (nm) everywhere, or None.")
        try:
            np.broadcast_shapes(t.shape, phase.shape)
        except ValueError:
            raise ValueError(
                f"thickness of shape {t.shape} does not broadcast with phase of shape {phase.shape}."
            ) from None
        bx = bx / t
        by = by / t
    return bx, by


def magnitude(bx, by):
    """Magnitude ``sqrt(bx^2 + by^2)`` of an in-plane vector field.

    Parameters
    ----------
    bx, by : array_like
        ``x`` and ``y`` components, any unit (T nm or T), same shape.

    Returns
    -------
    numpy.ndarray
        Magnitude, the unit of the components.
    """
    bx, by = _pair(bx, by)
    return np.hypot(bx, by)


def angle(bx, by):
    """Direction of an in-plane vector field, rad.

    Parameters
    ----------
    bx, by : array_like
        ``x`` (right) and ``y`` (down) components, any unit, same shape.

    Returns
    -------
    numpy.ndarray
        ``arctan2(by, bx)`` in ``(-pi, pi]``: measured from ``+x`` towards ``+y``,
        i.e. clockwise on screen for an image displayed with ``y`` down.
    """
    bx, by = _pair(bx, by)
    return np.arctan2(by, bx)


def _pair(bx, by):
    bx = np.asarray(bx, dtype=float)
    by = np.asarray(by, dtype=float)
    if bx.shape != by.shape:
        raise ValueError(f"by must have the shape of bx {bx.shape}, not {by.shape}.")
    return bx, by
