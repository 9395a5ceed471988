"""Built-in magnetisation textures for demonstrations and tests.

Every function returns a :class:`Texture` ``(mx, my, mz, mask)``: float64 unit-vector
components of shape ``shape = (H, W)`` (``|m| = 1`` where ``mask`` is true, 0
elsewhere) and the boolean support ``mask`` (all true for a continuous film).

Conventions
-----------
* Lengths (radii, widths, periods, centres) are in **nm**; ``pixel_size`` (nm,
  default 1) converts them to pixels, so with the default every length is in
  pixels.
* Image frame (see :ref:`conventions`): ``x`` to the right (columns), ``y`` down
  (rows), ``z`` along the beam, into the screen. ``mx, my, mz`` are components
  along these axes. Positions are ``(y, x)`` pairs, in nm from the centre of pixel
  ``(0, 0)``; the default centre is the middle of the array.
* Angles (``direction``, ``helicity``, ``rotation``) are in **degrees**, measured
  from ``+x`` towards ``+y`` (clockwise on screen with ``y`` down), the convention
  of :func:`hyperspy_lorentz.physics.colour.induction_to_rgb`.
* Chirality ``+1`` is a positive (right-handed) rotation about the beam, ``+z``:
  at a point to the right of the centre the moment points along ``+y`` (down),
  i.e. the circulation appears *clockwise on screen*. Polarity ``+1`` is a core
  along ``+z`` (the beam direction).

Use the components with :func:`hyperspy_lorentz.physics.magnetisation.magnetic_phase`,
e.g. ``magnetic_phase(t.mx, t.my, ms * t.mask, thickness, pixel_size, mz=t.mz)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hyperspy_lorentz.physics.magnetisation import _pixel_pair

__all__ = [
    "Texture",
    "uniform_island",
    "vortex",
    "skyrmion",
    "bloch_skyrmion",
    "neel_skyrmion",
    "skyrmion_lattice",
    "stripe_domains",
    "skyrmion_profile",
]


class Texture(NamedTuple):
    """A magnetisation texture: unit-vector components and support.

    Attributes
    ----------
    mx, my, mz : numpy.ndarray
        Components along image ``x`` (right), ``y`` (down) and ``z`` (beam),
        dimensionless, float64, shape ``(H, W)``; 0 outside ``mask``.
    mask : numpy.ndarray
        Boolean support of the magnetic material, shape ``(H, W)``.
    """

    mx: np.ndarray
    my: np.ndarray
    mz: np.ndarray
    mask: np.ndarray


# --------------------------------------------------------------------- helpers
def _shape(shape):
    try:
        shp = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair (H, W) of positive integers, not {shape!r}.") from None
    if len(shp) != 2 or min(shp) < 1 or any(int(n) != n for n in shape):
        raise ValueError(f"shape must be a pair (H, W) of positive integers, not {shape!r}.")
    return shp


def _length(value, name, allow_zero=False):
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a length in nm, not {value!r}.")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a length in nm, not {value!r}.") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a finite {kind} length in nm, not {value!r}.")
    return v


def _angle(value, name):
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an angle in degrees, not {value!r}.")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an angle in degrees, not {value!r}.") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be a finite angle in degrees, not {value!r}.")
    return np.deg2rad(v)


def _sign(value, name):
    if value not in (1, -1) or isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be +1 or -1, not {value!r}.")
    return int(value)


def _grid(shape, pixel_size, center):
    """Coordinates ``(y, x)`` in nm relative to ``center`` (a (y, x) pair in nm)."""
    h, w = _shape(shape)
    dy, dx = _pixel_pair(pixel_size)
    if center is None:
        cy, cx = (h - 1) / 2 * dy, (w - 1) / 2 * dx
    else:
        try:
            cy, cx = (float(c) for c in center)
        except (TypeError, ValueError):
            raise ValueError(f"center must be a (y, x) pair in nm, not {center!r}.") from None
        if not (np.isfinite(cy) and np.isfinite(cx)):
            raise ValueError(f"center must be finite, not {center!r}.")
    y = np.arange(h)[:, None] * dy - cy
    x = np.arange(w)[None, :] * dx - cx
    y, x = np.broadcast_arrays(y, x)
    return y.astype(float), x.astype(float), (h, w), (dy, dx)


def skyrmion_profile(r, radius, wall_width):
    """Polar angle ``Theta(r)`` of the 360-degree domain-wall skyrmion ansatz.

    ``Theta(r) = 2 arctan(sinh(R / w) / sinh(r / w))`` (Romming et al., PRL 114,
    177203 (2015)): ``pi`` at the centre, ``pi / 2`` at ``r = R`` and 0 far away.

    Parameters
    ----------
    r : array_like
        Distance from the centre, nm, ``>= 0``.
    radius : float
        Skyrmion radius ``R`` (where ``m_z = 0``), nm, ``> 0``.
    wall_width : float
        Wall width ``w``, nm, ``> 0``.

    Returns
    -------
    numpy.ndarray
        ``Theta`` in rad, in ``[0, pi]``.
    """
    r = np.asarray(r, dtype=float)
    radius = _length(radius, "radius")
    wall_width = _length(wall_width, "wall_width")
    # sinh(R/w) / sinh(r/w) = exp((R - r)/w) (1 - exp(-2R/w)) / (1 - exp(-2r/w)), overflow-free
    num = -np.expm1(-2.0 * radius / wall_width)
    with np.errstate(divide="ignore", invalid="ignore"):
        den = -np.expm1(-2.0 * r / wall_width)
        ratio = np.exp(np.clip((radius - r) / wall_width, -700.0, 700.0)) * num / den
    ratio = np.where(r <= 0, np.inf, ratio)
    return 2.0 * np.arctan(ratio)


def _polar_texture(theta, phi_inplane, polarity, mask):
    """Unit vector with ``m_z = -polarity cos(theta)`` and in-plane azimuth ``phi_inplane``."""
    s = np.sin(theta)
    mx = s * np.cos(phi_inplane)
    my = s * np.sin(phi_inplane)
    mz = -polarity * np.cos(theta)
    return _finish(mx, my, mz, mask)


def _finish(mx, my, mz, mask):
    mask = np.asarray(mask, dtype=bool)
    norm = np.sqrt(mx * mx + my * my + mz * mz)
    norm = np.where(norm > 0, norm, 1.0)
    out = [np.where(mask, c / norm, 0.0).astype(float) for c in (mx, my, mz)]
    return Texture(out[0], out[1], out[2], mask)


# ------------------------------------------------------------------ textures
def uniform_island(shape, direction=0.0, geometry="disc", radius=None, size=None, center=None, pixel_size=1.0):
    """Uniformly in-plane magnetised island (disc or rectangle).

    Parameters
    ----------
    shape : (int, int)
        Array shape ``(H, W)``, pixels.
    direction : float
        Direction of the magnetisation, degrees from ``+x`` towards ``+y`` (down).
    geometry : {"disc", "rectangle"}
        Island shape.
    radius : float, optional
        Disc radius, nm. Default: 0.3 of the smaller image side.
    size : (float, float), optional
        Rectangle ``(height, width)``, nm. Default: 0.6 of the image size.
    center : (float, float), optional
        Island centre ``(y, x)``, nm from pixel ``(0, 0)``. Default: image centre.
    pixel_size : float or (float, float)
        Pixel size, nm (or a ``(dy, dx)`` pair). Default 1: lengths in pixels.

    Returns
    -------
    Texture
        ``(mx, my, mz, mask)`` with ``mz = 0``.

    Notes
    -----
    The projected induction of such an island is *not* ``mu0 Ms t`` everywhere:
    inside a disc it is ``mu0 Ms t / 2`` (see
    :mod:`hyperspy_lorentz.physics.magnetisation`).
    """
    y, x, (h, w), (dy, dx) = _grid(shape, pixel_size, center)
    theta = _angle(direction, "direction")
    if geometry == "disc":
        radius = 0.3 * min(h * dy, w * dx) if radius is None else _length(radius, "radius")
        mask = x * x + y * y <= radius * radius
    elif geometry == "rectangle":
        if size is None:
            size = (0.6 * h * dy, 0.6 * w * dx)
        try:
            sy, sx = size
        except (TypeError, ValueError):
            raise ValueError(f"size must be a (height, width) pair in nm, not {size!r}.") from None
        sy, sx = _length(sy, "size[0]"), _length(sx, "size[1]")
        mask = (np.abs(y) <= sy / 2) & (np.abs(x) <= sx / 2)
    else:
        raise ValueError(f"geometry must be 'disc' or 'rectangle', not {geometry!r}.")
    ones = np.ones((h, w))
    return _finish(np.cos(theta) * ones, np.sin(theta) * ones, 0 * ones, mask)


def vortex(shape, radius=None, chirality=1, polarity=1, core_radius=None, center=None, pixel_size=1.0):
    """Magnetic vortex in a disc.

    Parameters
    ----------
    shape : (int, int)
        Array shape ``(H, W)``, pixels.
    radius : float, optional
        Disc radius, nm. Default: 0.4 of the smaller image side.
    chirality : {1, -1}
        Circulation: ``+1`` is right-handed about ``+z`` (the beam), i.e.
        ``m = (-sin(phi), cos(phi))`` at azimuth ``phi`` (from ``+x`` towards
        ``+y``): clockwise on screen with ``y`` down.
    polarity : {1, -1}
        Core direction along ``z`` (``+1``: along the beam).
    core_radius : float, optional
        Core size ``r_c``, nm: ``m_z = polarity exp(-(r / r_c)^2)``, the in-plane
        part has magnitude ``sqrt(1 - m_z^2)``. Default: ``radius / 10``. 0 gives a
        purely in-plane vortex (with an undefined centre pixel set to ``m_z``).
    center : (float, float), optional
        Centre ``(y, x)``, nm from pixel ``(0, 0)``. Default: image centre.
    pixel_size : float or (float, float)
        Pixel size, nm. Default 1: lengths in pixels.

    Returns
    -------
    Texture
        ``(mx, my, mz, mask)``; the in-plane part is divergence-free, so the
        projected induction is ``mu0 Ms t`` along ``m`` and the magnetic phase is
        a cone: ``phi(r) = chirality (e / hbar) mu0 Ms t (r - R)`` inside (a
        minimum at the centre for chirality ``+1``), constant outside.
    """
    y, x, (h, w), (dy, dx) = _grid(shape, pixel_size, center)
    chirality = _sign(chirality, "chirality")
    polarity = _sign(polarity, "polarity")
    radius = 0.4 * min(h * dy, w * dx) if radius is None else _length(radius, "radius")
    core = radius / 10 if core_radius is None else _length(core_radius, "core_radius", allow_zero=True)
    r = np.hypot(x, y)
    phi = np.arctan2(y, x)
    if core > 0:
        mz = polarity * np.exp(-((r / core) ** 2))
    else:
        mz = np.where(r == 0, float(polarity), 0.0)
    inplane = np.sqrt(np.clip(1.0 - mz * mz, 0.0, 1.0))
    mx = -chirality * inplane * np.sin(phi)
    my = chirality * inplane * np.cos(phi)
    return _finish(mx, my, mz, r <= radius)


def skyrmion(shape, radius, wall_width, helicity=90.0, polarity=-1, center=None, pixel_size=1.0):
    """Isolated skyrmion in a continuous film (360-degree domain-wall profile).

    Parameters
    ----------
    shape : (int, int)
        Array shape ``(H, W)``, pixels.
    radius : float
        Radius where ``m_z`` changes sign, nm.
    wall_width : float
        Wall width, nm (see :func:`skyrmion_profile`).
    helicity : float
        Angle, degrees, between the in-plane moment and the outward radial
        direction (measured from ``+x`` towards ``+y``): 0 Neel (outward), 180 Neel
        (inward), +90 / -90 Bloch (chirality +1 / -1, as :func:`vortex`).
    polarity : {1, -1}
        ``m_z`` of the core; the background is ``-polarity``.
    center : (float, float), optional
        Centre ``(y, x)``, nm from pixel ``(0, 0)``. Default: image centre.
    pixel_size : float or (float, float)
        Pixel size, nm. Default 1: lengths in pixels.

    Returns
    -------
    Texture
        ``(mx, my, mz, mask)``, ``mask`` all true. At zero tilt a Neel skyrmion has
        no magnetic phase (its in-plane moment is curl-free); a Bloch skyrmion has
        a ring-shaped phase.
    """
    y, x, (h, w), _ = _grid(shape, pixel_size, center)
    gamma = _angle(helicity, "helicity")
    polarity = _sign(polarity, "polarity")
    theta = skyrmion_profile(np.hypot(x, y), radius, wall_width)
    phi = np.arctan2(y, x)
    return _polar_texture(theta, phi + gamma, polarity, np.ones((h, w), bool))


def bloch_skyrmion(shape, radius, wall_width, chirality=1, polarity=-1, center=None, pixel_size=1.0):
    """Bloch skyrmion: :func:`skyrmion` with helicity ``90 * chirality`` degrees.

    Parameters
    ----------
    shape, radius, wall_width, polarity, center, pixel_size
        As :func:`skyrmion` (lengths in nm).
    chirality : {1, -1}
        Circulation of the in-plane moment, as :func:`vortex`.

    Returns
    -------
    Texture
    """
    chirality = _sign(chirality, "chirality")
    return skyrmion(shape, radius, wall_width, 90.0 * chirality, polarity, center, pixel_size)


def neel_skyrmion(shape, radius, wall_width, chirality=1, polarity=-1, center=None, pixel_size=1.0):
    """Neel skyrmion: :func:`skyrmion` with helicity 0 (``chirality=+1``, outward) or 180.

    Parameters
    ----------
    shape, radius, wall_width, polarity, center, pixel_size
        As :func:`skyrmion` (lengths in nm).
    chirality : {1, -1}
        ``+1``: in-plane moment in the wall points outward, ``-1``: inward.

    Returns
    -------
    Texture
    """
    chirality = _sign(chirality, "chirality")
    return skyrmion(shape, radius, wall_width, 0.0 if chirality == 1 else 180.0, polarity, center, pixel_size)


def skyrmion_lattice(
    shape,
    period,
    radius=None,
    wall_width=None,
    helicity=90.0,
    polarity=-1,
    rotation=0.0,
    center=None,
    pixel_size=1.0,
):
    """Hexagonal (triangular) skyrmion lattice in a continuous film.

    Each point takes the skyrmion of its nearest lattice site with the polar angle
    ``Theta(d1) - Theta(d2)`` (``d1``, ``d2``: distances to the nearest and second
    nearest sites, ``Theta`` from :func:`skyrmion_profile`), which is continuous
    and equals the background on the boundaries between neighbouring skyrmions.

    Parameters
    ----------
    shape : (int, int)
        Array shape ``(H, W)``, pixels.
    period : float
        Distance between nearest skyrmions, nm.
    radius : float, optional
        Skyrmion radius, nm. Default ``period / 4``.
    wall_width : float, optional
        Wall width, nm. Default ``period / 10``.
    helicity : float
        Degrees, as :func:`skyrmion` (default 90: Bloch).
    polarity : {1, -1}
        Core ``m_z``; the background is ``-polarity``.
    rotation : float
        Angle, degrees, of the first lattice vector from ``+x`` towards ``+y``.
    center : (float, float), optional
        Position ``(y, x)`` of one lattice site, nm. Default: image centre.
    pixel_size : float or (float, float)
        Pixel size, nm. Default 1: lengths in pixels.

    Returns
    -------
    Texture
        ``(mx, my, mz, mask)``, ``mask`` all true.
    """
    from scipy.spatial import cKDTree

    y, x, (h, w), (dy, dx) = _grid(shape, pixel_size, center)
    period = _length(period, "period")
    radius = period / 4 if radius is None else _length(radius, "radius")
    wall_width = period / 10 if wall_width is None else _length(wall_width, "wall_width")
    gamma = _angle(helicity, "helicity")
    polarity = _sign(polarity, "polarity")
    rot = _angle(rotation, "rotation")
    a1 = period * np.array([np.cos(rot), np.sin(rot)])  # (x, y)
    a2 = period * np.array([np.cos(rot + np.pi / 3), np.sin(rot + np.pi / 3)])
    extent = np.hypot(h * dy, w * dx) + 2 * period
    n = int(np.ceil(extent / (period * np.sqrt(3) / 2))) + 1
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    sites = i.ravel()[:, None] * a1 + j.ravel()[:, None] * a2
    near = np.hypot(*sites.T) <= extent
    tree = cKDTree(sites[near])
    points = np.column_stack([x.ravel(), y.ravel()])
    dist, idx = tree.query(points, k=2)
    nearest = sites[near][idx[:, 0]]
    rel = points - nearest
    theta = skyrmion_profile(dist[:, 0], radius, wall_width) - skyrmion_profile(dist[:, 1], radius, wall_width)
    phi = np.arctan2(rel[:, 1], rel[:, 0])
    theta = theta.reshape(h, w)
    phi = phi.reshape(h, w)
    return _polar_texture(theta, phi + gamma, polarity, np.ones((h, w), bool))


def stripe_domains(
    shape,
    period,
    wall_width=None,
    direction=0.0,
    wall_type="bloch",
    chirality=1,
    offset=0.0,
    pixel_size=1.0,
):
    """Up/down stripe domains with Bloch (or Neel) walls in a continuous film.

    Along the modulation coordinate ``u = x cos(direction) + y sin(direction)`` the
    polar angle turns by ``pi`` at walls ``u = offset + period / 4 + k period / 2``
    (``tanh``-like profiles ``2 arctan(exp((u - u_k) / w))``), in the same sense at
    every wall, so the in-plane moment alternates from wall to wall.

    Parameters
    ----------
    shape : (int, int)
        Array shape ``(H, W)``, pixels.
    period : float
        Stripe period (one up and one down domain), nm.
    wall_width : float, optional
        Wall width ``w``, nm. Default ``period / 10``.
    direction : float
        Direction of the modulation (normal to the walls), degrees from ``+x``
        towards ``+y``. 0: vertical stripes.
    wall_type : {"bloch", "neel"}
        Bloch: the in-plane moment lies along the walls,
        ``chirality * sin(Theta) (-sin(direction), cos(direction))``. Neel: across
        them, ``chirality * sin(Theta) (cos(direction), sin(direction))``.
    chirality : {1, -1}
        Sense of rotation.
    offset : float
        Shift of the pattern along ``u``, nm; ``u = 0`` is pixel ``(0, 0)``, where
        ``m_z = +1`` (the middle of an up domain) for ``offset = 0``.
    pixel_size : float or (float, float)
        Pixel size, nm. Default 1: lengths in pixels.

    Returns
    -------
    Texture
        ``(mx, my, mz, mask)``, ``mask`` all true.
    """
    y, x, (h, w), _ = _grid(shape, pixel_size, (0.0, 0.0))
    period = _length(period, "period")
    wall_width = period / 10 if wall_width is None else _length(wall_width, "wall_width")
    psi = _angle(direction, "direction")
    chirality = _sign(chirality, "chirality")
    try:
        offset = float(offset)
    except (TypeError, ValueError):
        raise ValueError(f"offset must be a length in nm, not {offset!r}.") from None
    if wall_type not in ("bloch", "neel"):
        raise ValueError(f"wall_type must be 'bloch' or 'neel', not {wall_type!r}.")
    u = x * np.cos(psi) + y * np.sin(psi) - offset
    s = np.mod(u, period)
    # walls at -5/4 ... +9/4 periods / 2 around the cell: the neighbours make it periodic
    theta = np.zeros_like(s)
    walls = (np.arange(-3, 5) + 0.5) * period / 2
    for uk in walls:
        theta += 2.0 * np.arctan(np.exp(np.clip((s - uk) / wall_width, -700, 700)))
    theta -= 3 * np.pi  # the three walls left of the cell have turned fully
    if wall_type == "bloch":
        ex, ey = -np.sin(psi), np.cos(psi)
    else:
        ex, ey = np.cos(psi), np.sin(psi)
    inplane = chirality * np.sin(theta)
    return _finish(inplane * ex, inplane * ey, np.cos(theta), np.ones((h, w), bool))
