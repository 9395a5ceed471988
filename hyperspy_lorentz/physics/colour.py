"""Colour images of in-plane vector fields (induction, magnetisation).

The direction of the vector sets the hue, taken from a perceptually uniform
*cyclic* colour map (colorcet's ``CET_C6`` by default, matplotlib's ``twilight``
if colorcet is missing), and the magnitude sets the brightness (value): the RGB of
the colour map is multiplied by ``min(|B| / max_magnitude, 1)``, so zero is black.

The direction angle is ``theta = arctan2(B_y, B_x)``, measured from ``+x`` (right)
towards ``+y`` (down the image), i.e. clockwise on screen for an image shown with
``y`` down (matplotlib's ``imshow`` default); the colour map's position is
``theta / (2 pi)`` modulo 1, so ``+x`` maps to the start of the colour map and
opposite directions are half a cycle apart. :func:`colour_wheel` draws the legend
with exactly the same mapping, in the same image orientation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_CMAP", "get_cyclic_cmap", "direction_to_rgb", "induction_to_rgb", "colour_wheel"]

#: Default cyclic colour map (colorcet name).
DEFAULT_CMAP = "CET_C6"


def get_cyclic_cmap(cmap=None):
    """Return a matplotlib colormap for directions.

    Parameters
    ----------
    cmap : str or matplotlib.colors.Colormap or None
        A colormap, or the name of one: a colorcet name (``"CET_C6"``,
        ``"cet_CET_C6"``, ``"colorwheel"`` ...) or a matplotlib name
        (``"twilight"``, ``"hsv"``). ``None``: ``CET_C6`` from colorcet, or
        matplotlib's ``twilight`` if colorcet is not installed. Use a cyclic map,
        whose two ends have the same colour.

    Returns
    -------
    matplotlib.colors.Colormap

    Raises
    ------
    ValueError
        If ``cmap`` names no known colour map.
    """
    from matplotlib import colormaps
    from matplotlib.colors import Colormap

    if isinstance(cmap, Colormap):
        return cmap
    if cmap is None:
        try:
            import colorcet

            return colorcet.cm[DEFAULT_CMAP]
        except (ImportError, KeyError):  # pragma: no cover - colorcet is a dependency
            return colormaps["twilight"]
    if not isinstance(cmap, str):
        raise ValueError(f"cmap must be a colour map name or a matplotlib Colormap, not {cmap!r}.")
    try:
        import colorcet
    except ImportError:  # pragma: no cover
        colorcet = None
    if colorcet is not None:
        name = cmap[4:] if cmap.startswith("cet_") else cmap
        if name in colorcet.cm:
            return colorcet.cm[name]
    if cmap in colormaps:
        return colormaps[cmap]
    raise ValueError(
        f"cmap {cmap!r} is neither a colorcet nor a matplotlib colour map; "
        "try 'CET_C6', 'CET_C2' or 'twilight'."
    )


def direction_to_rgb(angle, value=1.0, cmap=None):
    """RGB of directions (hue) and brightnesses.

    Parameters
    ----------
    angle : array_like
        Direction, rad, from ``+x`` towards ``+y`` (image right towards down).
    value : float or array_like
        Brightness in ``[0, 1]`` (clipped), broadcastable to ``angle``.
    cmap : str or matplotlib.colors.Colormap or None
        Cyclic colour map, see :func:`get_cyclic_cmap`.

    Returns
    -------
    numpy.ndarray
        Float RGB in ``[0, 1]``, shape ``angle.shape + (3,)``.
    """
    colormap = get_cyclic_cmap(cmap)
    angle = np.asarray(angle, dtype=float)
    position = np.mod(angle / (2 * np.pi), 1.0)
    position = np.where(np.isfinite(position), position, 0.0)
    # Evaluate a finely resampled copy so the hue is (nearly) continuous in the
    # angle rather than quantised to the 256 entries of the usual tables.
    if getattr(colormap, "N", 0) < 4096 and hasattr(colormap, "resampled"):
        colormap = colormap.resampled(4096)
    rgb = np.asarray(colormap(position))[..., :3]
    value = np.clip(np.nan_to_num(np.asarray(value, dtype=float), nan=0.0), 0.0, 1.0)
    rgb = rgb * np.broadcast_to(value, angle.shape)[..., None]
    return np.clip(rgb, 0.0, 1.0)


def induction_to_rgb(bx, by, max_magnitude=None, cmap=None):
    """Colour image of an in-plane vector field: direction as hue, magnitude as brightness.

    Parameters
    ----------
    bx, by : array_like
        ``x`` (right) and ``y`` (down) components, shape ``(H, W)`` (or any shape),
        any unit (T nm, T, or a unit vector).
    max_magnitude : float or None
        Magnitude shown at full brightness, in the unit of ``bx``; larger magnitudes
        saturate. ``None``: the largest finite magnitude in the data. Must be
        ``> 0`` when given.
    cmap : str or matplotlib.colors.Colormap or None
        Cyclic colour map, see :func:`get_cyclic_cmap` (default ``CET_C6``).

    Returns
    -------
    numpy.ndarray
        Float RGB in ``[0, 1]``, shape ``bx.shape + (3,)``. Zero magnitude (and
        NaN) is black.

    Raises
    ------
    ValueError
        If ``bx`` and ``by`` differ in shape or ``max_magnitude`` is not positive.
    """
    bx = np.asarray(bx, dtype=float)
    by = np.asarray(by, dtype=float)
    if bx.shape != by.shape:
        raise ValueError(f"by must have the shape of bx {bx.shape}, not {by.shape}.")
    mag = np.hypot(bx, by)
    if max_magnitude is None:
        finite = mag[np.isfinite(mag)]
        max_magnitude = float(finite.max()) if finite.size else 0.0
        if max_magnitude == 0.0:
            return np.zeros(bx.shape + (3,))
    else:
        if isinstance(max_magnitude, (bool, np.bool_)):
            raise ValueError(f"max_magnitude must be a positive number or None, not {max_magnitude!r}.")
        try:
            max_magnitude = float(max_magnitude)
        except (TypeError, ValueError):
            raise ValueError(f"max_magnitude must be a positive number or None, not {max_magnitude!r}.") from None
        if not np.isfinite(max_magnitude) or max_magnitude <= 0:
            raise ValueError(f"max_magnitude must be a positive number or None, not {max_magnitude!r}.")
    value = mag / max_magnitude
    return direction_to_rgb(np.arctan2(by, bx), value, cmap=cmap)


def colour_wheel(size=128, cmap=None):
    """Legend disc of :func:`induction_to_rgb`.

    Pixel ``(row, column)`` shows the colour of the vector from the disc centre to
    that pixel, with ``x`` to the right and ``y`` down, as in the images: the rim
    is at full brightness and the centre is black. Show it with
    ``imshow(wheel)`` (``origin="upper"``).

    Parameters
    ----------
    size : int
        Width and height of the image, pixels, ``>= 3``.
    cmap : str or matplotlib.colors.Colormap or None
        Cyclic colour map, see :func:`get_cyclic_cmap`.

    Returns
    -------
    numpy.ndarray
        Float RGBA in ``[0, 1]``, shape ``(size, size, 4)``; alpha is 1 inside the
        disc, 0 outside, with a one-pixel anti-aliased rim.
    """
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) or size < 3:
        raise ValueError(f"size must be an integer >= 3 (pixels), not {size!r}.")
    size = int(size)
    centre = (size - 1) / 2.0
    radius = size / 2.0
    coord = (np.arange(size) - centre) / (radius - 0.5)
    y, x = np.meshgrid(coord, coord, indexing="ij")
    r = np.hypot(x, y)
    rgb = induction_to_rgb(x, y, max_magnitude=1.0, cmap=cmap)
    alpha = np.clip((1.0 - r) * (radius - 0.5) + 0.5, 0.0, 1.0)
    return np.concatenate([rgb, alpha[..., None]], axis=-1)
