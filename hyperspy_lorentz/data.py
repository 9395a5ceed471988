"""Example data: simulated, calibrated focal series of known specimens.

As the ``data`` modules of other HyperSpy extensions (holospy, exspy,
kikuchipy), every function returns a ready signal -- here a
:class:`~hyperspy_lorentz.signals.focal_series.LorentzFocalSeries` -- made on
demand (nothing is downloaded): a magnetisation texture, its magnetic and
electrostatic phase and amplitude, and the images
:func:`~hyperspy_lorentz.simulate_focal_series` makes of them, with
Poisson noise from a fixed ``seed``. The ground truth is in
``metadata.Simulation``:

* ``phase`` (rad), ``amplitude``, ``defocus`` (nm), ``shifts`` (px), ``dose``
  (e-/pixel), as for every simulated series;
* ``magnetic_phase`` and ``electrostatic_phase`` (rad), ``thickness`` (nm map);
* ``Specimen``: the kind, the field and every material and geometry parameter
  (A/m, nm, V, degrees).

The field of view is one of

``"window"``
    a micrograph-like window onto a specimen that goes on beyond the frame: the
    specimen is simulated over a field larger by a margin on every side (at
    least half the frame, and at least the lateral Fresnel spread of the series,
    :func:`~hyperspy_lorentz.reconstruction.canvas.fresnel_spread`), propagated
    there, and the images and the truth are cropped to the frame. Electrons
    deflected by specimen outside the frame enter it, as in a real micrograph.
``"isolated"``
    the specimen lies inside the frame with vacuum around it; it is simulated
    with the same margin of vacuum, so its stray field and Fresnel fringes are
    complete.
``"periodic"``
    one period of an infinitely repeated specimen (the texture is made
    commensurate with the frame, the magnetic phase and the propagation are
    periodic): the idealised case that periodic (FFT) reconstructions assume.

Lengths are in nm, magnetisation in A/m, potentials in V, defocus in nm
(positive for overfocus), doses in electrons per pixel. The specimens'
random choices (island moments, vortex chiralities) come from a fixed
generator, so the specimen is the same whatever the noise ``seed``.

Examples
--------
>>> from hyperspy_lorentz import data
>>> s = data.skyrmion_lattice(shape=(128, 128))
>>> s.axes_manager["defocus"].axis
array([-300000., -150000.,       0.,  150000.,  300000.])
>>> s.metadata.Simulation.phase.shape
(128, 128)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "skyrmion_lattice",
    "island_array",
    "domain_walls",
    "stripe_domains",
    "vortex_discs",
    "flip_pair",
    "FIELDS",
]

#: The fields of view every function accepts (module docstring).
FIELDS = ("window", "isolated", "periodic")

# Seed of the specimens' own random choices (island moments, vortex senses).
_SPECIMEN_SEED = 20240613
# Fraction of the frame an isolated specimen may occupy (vacuum around it).
_ISOLATED_FILL = 0.75
# Smallest width of the smoothed edges of patterned specimens, nm (1-sigma of a Gaussian).
_EDGE_WIDTH = 2.0
# Largest phase change per pixel across an edge, rad: the exit wave stays sampled.
_MAX_EDGE_GRADIENT = 1.0


class _Specimen(NamedTuple):
    """A specimen on a simulation grid (all maps of the grid's shape)."""

    mx: np.ndarray  # unit-vector components weighted by the local coverage, |m| <= 1
    my: np.ndarray
    mz: np.ndarray
    ms: float  # A/m
    thickness: float  # nm, of the magnetic film
    coverage: np.ndarray  # 0..1: fraction of the film thickness present
    film: bool  # continuous film on a periodic cell (magnetic phase periodic)


# ----------------------------------------------------------------- helpers
def _check(shape, pixel_size, field, dose):
    try:
        h, w = (int(n) for n in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair (H, W) of pixels, not {shape!r}.") from None
    if h < 16 or w < 16:
        raise ValueError(f"shape must be at least 16 x 16 pixels, not {shape!r}.")
    pixel = float(pixel_size)
    if not math.isfinite(pixel) or pixel <= 0:
        raise ValueError(f"pixel_size must be a positive number of nm, not {pixel_size!r}.")
    if field not in FIELDS:
        raise ValueError(f"field must be one of {FIELDS}, not {field!r}.")
    if dose is not None and (not math.isfinite(float(dose)) or float(dose) <= 0):
        raise ValueError(f"dose must be a positive number of electrons per pixel or None, not {dose!r}.")
    return (h, w), pixel


def _margin(shape, pixel, defocus, microscope, drift=0.0):
    """Pixels of specimen (or vacuum) simulated beyond the frame on each side."""
    from hyperspy_lorentz.reconstruction.canvas import fresnel_spread

    spread = fresnel_spread(pixel, microscope["beam_energy"], defocus, microscope["cs"],
                            microscope["theta_c"], microscope["defocus_spread"])
    return tuple(max(n // 2, int(math.ceil(s / pixel + abs(drift))) + 8) for s, n in zip(spread, shape))


def _fit(n, period):
    """Smallest size ``>= n`` pixels holding a whole number of ``period`` (pixels)
    to within 0.2 % (or the best within three periods)."""
    best, best_strain = n, np.inf
    for size in range(n, n + int(math.ceil(3 * period)) + 1):
        k = max(1, round(size / period))
        strain = abs(size / k - period) / period
        if strain <= 0.002:
            return size
        if strain < best_strain:
            best, best_strain = size, strain
    return best


def _grid(shape, pixel, field, defocus, microscope, drift=0.0, periods=None):
    """Grid shape and the frame ``(top, left, h, w)`` on it.

    ``periods``: ``(py, px)`` nm of a texture to be periodic on a window's
    grid, which is then enlarged a little more to fit it without strain.
    """
    h, w = shape
    if field == "periodic":
        return (h, w), (0, 0, h, w)
    my_, mx_ = _margin(shape, pixel, defocus, microscope, drift)
    hb, wb = h + 2 * my_, w + 2 * mx_
    if periods is not None:
        hb, wb = (_fit(n, p / pixel) if p else n for n, p in zip((hb, wb), periods))
    return (hb, wb), ((hb - h) // 2, (wb - w) // 2, h, w)


def _coords(grid, pixel):
    """Pixel-centre coordinates ``(y, x)`` in nm, origin at pixel (0, 0)."""
    y = np.arange(grid[0], dtype=float)[:, None] * pixel
    x = np.arange(grid[1], dtype=float)[None, :] * pixel
    return np.broadcast_arrays(y, x)


def _frame_centre(frame, pixel):
    top, left, h, w = frame
    return (top + (h - 1) / 2) * pixel, (left + (w - 1) / 2) * pixel


def _edge_width(pixel, thickness, mean_inner_potential, beam_energy):
    """Edge width, nm: at least :data:`_EDGE_WIDTH`, and wide enough that the
    electrostatic phase step ``sigma V0 t`` changes by at most
    :data:`_MAX_EDGE_GRADIENT` rad per pixel (a sharper edge is not sampled)."""
    if not mean_inner_potential:
        return _EDGE_WIDTH
    from hyperspy_lorentz.physics.magnetisation import electrostatic_phase

    step = electrostatic_phase(thickness, mean_inner_potential, beam_energy)
    return max(_EDGE_WIDTH, step / (math.sqrt(2 * math.pi) * _MAX_EDGE_GRADIENT) * pixel)


def _smooth(mask, pixel, edge):
    """A 0..1 coverage map: ``mask`` with edges smoothed over ``edge`` nm (Gaussian sigma)."""
    from scipy.ndimage import gaussian_filter

    return np.clip(gaussian_filter(mask.astype(float), edge / pixel, mode="wrap"), 0.0, 1.0)


def _commensurate(length, target, at_least=False):
    """Period closest to ``target`` (``>= target`` with ``at_least``) that fits a
    whole number of times in ``length``."""
    n = max(1, int(length // target) if at_least else int(round(length / target)))
    return length / n, n


def _microscope(beam_energy, cs, theta_c, defocus_spread):
    return {"beam_energy": float(beam_energy), "cs": float(cs), "theta_c": float(theta_c),
            "defocus_spread": float(defocus_spread)}


def _series(spec, *, kind, field, grid, frame, pixel, defocus, dose, seed, microscope,
            mean_inner_potential, absorption_length, parameters, shifts=None, flip_axis=None):
    """Phases, amplitude and focal series of a specimen; the truth in the metadata."""
    from hyperspy_lorentz.physics.magnetisation import (
        amplitude_from_thickness,
        electrostatic_phase,
        magnetic_phase,
    )
    from hyperspy_lorentz.simulation import simulate_focal_series

    phi_m = magnetic_phase(spec.mx, spec.my, ms=spec.ms, thickness=spec.thickness, pixel_size=pixel,
                           padding=1 if spec.film else 2, mz=spec.mz)
    thickness = spec.thickness * spec.coverage
    phi_e = (np.zeros(grid) if not mean_inner_potential
             else electrostatic_phase(thickness, mean_inner_potential, microscope["beam_energy"]))
    amp = None if absorption_length is None else amplitude_from_thickness(thickness, absorption_length)
    if flip_axis is not None:  # specimen turned over: mirrored, magnetic phase reversed
        axis = {"x": 0, "y": 1}[flip_axis]
        phi_m, phi_e, thickness = (np.flip(a, axis).copy() for a in (-phi_m, phi_e, thickness))
        amp = None if amp is None else np.flip(amp, axis).copy()
    phase = phi_m + phi_e
    periodic = spec.film or field == "periodic"
    s = simulate_focal_series(
        phase, amp, defocus=defocus, scale=pixel, dose=dose, seed=seed, shifts=shifts,
        padding="periodic" if periodic else "edge", window=frame, **microscope,
    )
    top, left, h, w = frame
    crop = (slice(top, top + h), slice(left, left + w))
    s.metadata.set_item("Simulation.magnetic_phase", phi_m[crop].copy())
    s.metadata.set_item("Simulation.electrostatic_phase", phi_e[crop].copy())
    s.metadata.set_item("Simulation.thickness", thickness[crop].copy())
    s.metadata.set_item("Simulation.units",
                        s.metadata.Simulation.units + ", magnetic/electrostatic phase rad, thickness nm")
    specimen = {"kind": kind, "field": field, "pixel_size_nm": pixel,
                "simulated_shape": list(grid), **parameters}
    if mean_inner_potential:
        specimen["mean_inner_potential_V"] = float(mean_inner_potential)
    if absorption_length is not None:
        specimen["absorption_length_nm"] = float(absorption_length)
    if flip_axis is not None:
        specimen["flipped"] = True
        specimen["flip_axis"] = flip_axis
    s.metadata.set_item("Simulation.Specimen", specimen)
    dose_txt = "noise-free" if dose is None else f"{dose:g} e-/px"
    s.metadata.General.title = f"{kind.replace('_', ' ').capitalize()} ({field}, {dose_txt})"
    return s


def _drift(defocus, drift, seed):
    """Shifts ``(N, 2)``, px, uniform in ``[-drift, drift]`` for the defocused images
    (the in-focus ones stay); ``None`` for no drift."""
    drift = float(drift)
    if not math.isfinite(drift) or drift < 0:
        raise ValueError(f"drift must be a number of pixels >= 0, got {drift!r}")
    if drift == 0:
        return None
    shifts = np.random.default_rng([int(seed), 7]).uniform(-drift, drift, (len(defocus), 2))
    shifts[np.asarray(defocus) == 0] = 0.0
    return shifts


def _place_isolated(frame, pixel, extent):
    """True if a box ``(y0, x0, y1, x1)`` in nm lies in the central part of the frame."""
    top, left, h, w = frame
    cy, cx = _frame_centre(frame, pixel)
    hy, hx = _ISOLATED_FILL * h * pixel / 2, _ISOLATED_FILL * w * pixel / 2
    y0, x0, y1, x1 = extent
    return y0 >= cy - hy and y1 <= cy + hy and x0 >= cx - hx and x1 <= cx + hx


# --------------------------------------------------------------- textures
def _lattice_texture(grid, pixel, period, radius, wall_width, helicity, polarity, rotation, centre):
    """Hexagonal skyrmion lattice, exactly periodic on the grid (slightly strained to fit).

    The lattice vectors are ``a1 = (ax, 0)``, ``a2 = (ax / 2, by)`` rotated by
    ``rotation`` only when that is 0 (a rotated lattice cannot be commensurate);
    ``ax`` and ``by`` are the nearest values to ``period`` and ``period sqrt(3)/2``
    that fit the grid (an even number of rows).
    """
    from scipy.spatial import cKDTree

    from hyperspy_lorentz.physics.textures import _polar_texture, skyrmion_profile

    H, W = grid[0] * pixel, grid[1] * pixel
    ax, nx = _commensurate(W, period)
    nrow = max(2, 2 * int(round(H / (period * math.sqrt(3) / 2) / 2)))
    by = H / nrow
    j, i = np.meshgrid(np.arange(nrow), np.arange(nx), indexing="ij")
    sx = (i * ax + (j % 2) * ax / 2 + centre[1]) % W
    sy = (j * by + centre[0]) % H
    sites = np.column_stack([sx.ravel(), sy.ravel()])
    tree = cKDTree(sites, boxsize=(W, H))
    y, x = _coords(grid, pixel)
    pts = np.column_stack([x.ravel() % W, y.ravel() % H])
    dist, idx = tree.query(pts, k=2)
    rel = pts - sites[idx[:, 0]]
    rel -= np.array([W, H]) * np.round(rel / np.array([W, H]))
    theta = skyrmion_profile(dist[:, 0], radius, wall_width) - skyrmion_profile(dist[:, 1], radius, wall_width)
    phi = np.arctan2(rel[:, 1], rel[:, 0]) + np.deg2rad(helicity)
    t = _polar_texture(theta.reshape(grid), phi.reshape(grid), polarity, np.ones(grid, bool))
    return t, ax, by


def _wall_theta(u, period, wall_width):
    """Polar angle turning by pi at walls ``u = period/4 + k period/2`` (periodic in ``u``)."""
    s = np.mod(u, period)
    theta = np.zeros_like(s)
    for uk in (np.arange(-3, 5) + 0.5) * period / 2:
        theta += 2.0 * np.arctan(np.exp(np.clip((s - uk) / wall_width, -700, 700)))
    return theta - 3 * np.pi


def _disc_or_box_mask(grid, pixel, frame, shape="disc"):
    """Mask of a patch of film filling :data:`_ISOLATED_FILL` of the frame."""
    y, x = _coords(grid, pixel)
    cy, cx = _frame_centre(frame, pixel)
    top, left, h, w = frame
    ry, rx = _ISOLATED_FILL * h * pixel / 2, _ISOLATED_FILL * w * pixel / 2
    if shape == "disc":
        return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
    return (np.abs(y - cy) <= ry) & (np.abs(x - cx) <= rx)


def _film(texture_mx, texture_my, texture_mz, grid, pixel, frame, field, ms, thickness, patch, edge):
    """A continuous film (window / periodic) or an isolated patch of it."""
    if field == "isolated":
        cov = _smooth(_disc_or_box_mask(grid, pixel, frame, patch), pixel, edge)
        return _Specimen(texture_mx * cov, texture_my * cov, texture_mz * cov, ms, thickness, cov, False)
    return _Specimen(texture_mx, texture_my, texture_mz, ms, thickness, np.ones(grid), True)


# ------------------------------------------------------------- public data
def skyrmion_lattice(shape=(256, 256), pixel_size=2.5, *, field="window", dose=100.0, seed=0,
                     defocus=(-300e3, -150e3, 0.0, 150e3, 300e3), period=70.0, ms=3.84e5,
                     thickness=80.0, helicity=90.0, mean_inner_potential=20.0,
                     beam_energy=200.0, cs=1.0, theta_c=0.01, defocus_spread=500.0, drift=0.0):
    """Bloch skyrmion lattice in a continuous film (FeGe-like), at low dose.

    A hexagonal lattice of Bloch skyrmions (360-degree domain-wall profile,
    radius ``period / 4``, wall width ``period / 10``, cores along ``-z``) in a
    film of uniform thickness: a weak, smooth phase object whose contrast needs
    a defocus of hundreds of µm.

    Parameters
    ----------
    shape : (int, int)
        Image size ``(H, W)``, pixels.
    pixel_size : float
        Pixel size, nm.
    field : {"window", "isolated", "periodic"}
        Field of view (module docstring): a window onto an infinite film
        (default), a disc-shaped patch of film in vacuum (75 % of the frame, with
        the electrostatic phase of its edge), or one period of a lattice made
        commensurate with the frame.
    dose : float or None
        Electrons per pixel (Poisson noise, images in counts); ``None``:
        noise-free.
    seed : int
        Seed of the noise.
    defocus : sequence of float
        Defocus of each image, nm, positive for overfocus.
    period : float
        Distance between nearest skyrmions, nm (adjusted by a few % to fit the
        periodic cell of the simulation).
    ms : float
        Saturation magnetisation, A/m.
    thickness : float
        Film thickness, nm.
    helicity : float
        Helicity, degrees (90: Bloch, chirality +1; 0: Néel, no magnetic phase at
        zero tilt).
    mean_inner_potential : float
        Mean inner potential, V (its phase is uniform in a continuous film; it
        matters only at the edge of an isolated patch).
    beam_energy, cs, theta_c, defocus_spread : float
        keV, mm, mrad, nm (as :func:`~hyperspy_lorentz.simulate_focal_series`).
    drift : float
        Specimen drift, pixels: every defocused image is shifted by ``(dy, dx)``
        drawn uniformly from ``[-drift, drift]`` (from ``seed``; the in-focus
        image stays); the truth is ``metadata.Simulation.shifts``. Default 0.

    Returns
    -------
    LorentzFocalSeries
        Calibrated focal series with the truth in ``metadata.Simulation``.

    Examples
    --------
    >>> from hyperspy_lorentz import data
    >>> s = data.skyrmion_lattice(shape=(128, 128), dose=None)
    >>> round(float(s.metadata.Simulation.Specimen.period_nm), 1)   # a window: unstrained
    70.0
    """
    shape, pixel = _check(shape, pixel_size, field, dose)
    defocus = np.asarray(defocus, dtype=float)
    mic = _microscope(beam_energy, cs, theta_c, defocus_spread)
    grid, frame = _grid(shape, pixel, field, defocus, mic, periods=(period * math.sqrt(3), period))
    cy, cx = _frame_centre(frame, pixel)
    t, ax, by = _lattice_texture(grid, pixel, float(period), period / 4, period / 10, helicity, -1, 0.0,
                                 (cy, cx))
    edge = _edge_width(pixel, thickness, mean_inner_potential, beam_energy)
    spec = _film(t.mx, t.my, t.mz, grid, pixel, frame, field, ms, thickness, "disc", edge)
    params = {"period_nm": ax, "row_spacing_nm": by, "radius_nm": period / 4, "wall_width_nm": period / 10,
              "helicity_deg": float(helicity), "polarity": -1, "ms_A_per_m": float(ms),
              "thickness_nm": float(thickness)}
    return _series(spec, kind="skyrmion_lattice", field=field, grid=grid, frame=frame, pixel=pixel,
                   defocus=defocus, dose=dose, seed=seed, microscope=mic,
                   mean_inner_potential=mean_inner_potential if field == "isolated" else 0.0,
                   absorption_length=None, parameters={**params, "edge_width_nm": edge},
                   shifts=_drift(defocus, drift, seed))


def _local(grid, pixel, yc, xc, hy, hx, periodic):
    """Rows, columns and offsets ``(dy, dx)`` (nm) of the pixels around a point.

    The box of half-sizes ``(hy, hx)`` nm about ``(yc, xc)``; wrapped around the
    grid when ``periodic``, else clipped to it.
    """
    r0, r1 = int(math.floor((yc - hy) / pixel)) - 1, int(math.ceil((yc + hy) / pixel)) + 2
    c0, c1 = int(math.floor((xc - hx) / pixel)) - 1, int(math.ceil((xc + hx) / pixel)) + 2
    rows, cols = np.arange(r0, r1), np.arange(c0, c1)
    dy = rows[:, None] * pixel - yc
    dx = cols[None, :] * pixel - xc
    if periodic:
        rows, cols = rows % grid[0], cols % grid[1]
    else:
        keep_r = (rows >= 0) & (rows < grid[0])
        keep_c = (cols >= 0) & (cols < grid[1])
        rows, cols, dy, dx = rows[keep_r], cols[keep_c], dy[keep_r], dx[:, keep_c]
    dy, dx = np.broadcast_arrays(dy, dx)
    return np.ix_(rows, cols), dy, dx


def _inside_grid(grid, pixel, box):
    """True if a box ``(y0, x0, y1, x1)`` in nm lies within the grid."""
    y0, x0, y1, x1 = box
    return y0 >= 0 and x0 >= 0 and y1 <= (grid[0] - 1) * pixel and x1 <= (grid[1] - 1) * pixel


def _islands(grid, pixel, frame, field, lattice, length, width, thickness, ms, edge):
    """Square-ice array of rectangular islands along the edges of a square lattice."""
    H, W = grid[0] * pixel, grid[1] * pixel
    cy, cx = _frame_centre(frame, pixel)
    periodic = field == "periodic"
    if periodic:
        ay, ny = _commensurate(H, lattice, at_least=True)
        ax, nx = _commensurate(W, lattice, at_least=True)
        iy, ix = np.arange(ny), np.arange(nx)
        oy, ox = cy - ay * (ny // 2), cx - ax * (nx // 2)
    elif field == "isolated":  # as many plaquettes as fit, centred in the frame
        ay = ax = lattice
        ny, nx = (max(1, int((_ISOLATED_FILL * n * pixel - width) // lattice)) for n in frame[2:])
        iy, ix = np.arange(ny + 1), np.arange(nx + 1)
        oy, ox = cy - ny * ay / 2, cx - nx * ax / 2
    else:
        ay = ax = lattice
        ny, nx = int(H // ay) + 2, int(W // ax) + 2
        iy, ix = np.arange(-(ny // 2) - 1, ny // 2 + 2), np.arange(-(nx // 2) - 1, nx // 2 + 2)
        oy, ox = cy + ay / 2, cx + ax / 2  # the frame centre lies in a plaquette
    rng = np.random.default_rng(_SPECIMEN_SEED)
    mx, my, mask = np.zeros(grid), np.zeros(grid), np.zeros(grid)
    count = 0
    for j in iy:
        for i in ix:
            for horizontal in (True, False):
                sign = 1.0 if rng.random() < 0.5 else -1.0  # drawn for every site: a fixed pattern
                yc = oy + j * ay + (0 if horizontal else ay / 2)
                xc = ox + i * ax + (ax / 2 if horizontal else 0)
                hy, hx = (width / 2, length / 2) if horizontal else (length / 2, width / 2)
                box = (yc - hy, xc - hx, yc + hy, xc + hx)
                if field == "isolated" and not _place_isolated(frame, pixel, box):
                    continue
                if not periodic and not _inside_grid(grid, pixel, box):
                    continue
                idx, dy, dx = _local(grid, pixel, yc, xc, hy, hx, periodic)
                inside = (np.abs(dy) <= hy) & (np.abs(dx) <= hx)
                if not inside.any():
                    continue
                count += 1
                mask[idx] = np.maximum(mask[idx], inside)
                comp = mx if horizontal else my
                comp[idx] = np.where(inside, sign, comp[idx])
    from scipy.ndimage import gaussian_filter

    # smoothed edges: the moment of each island follows its (smoothed) thickness
    sig = edge / pixel
    cov = _smooth(mask, pixel, edge)
    mx = gaussian_filter(mx, sig, mode="wrap")
    my = gaussian_filter(my, sig, mode="wrap")
    norm = np.maximum(np.hypot(mx, my), 1.0)
    if count == 0:
        raise ValueError(
            f"No island of {length:g} x {width:g} nm fits in the {field} field of "
            f"{frame[2] * pixel:g} x {frame[3] * pixel:g} nm: give a larger shape or smaller islands."
        )
    return _Specimen(mx / norm, my / norm, np.zeros(grid), ms, thickness, cov, False), count, (ay, ax)


def island_array(shape=(256, 256), pixel_size=2.5, *, field="isolated", dose=1000.0, seed=0,
                 defocus=(-500e3, -250e3, 0.0, 250e3, 500e3), lattice=160.0, length=120.0, width=40.0,
                 thickness=15.0, ms=8.0e5, mean_inner_potential=25.0, absorption_length=None,
                 beam_energy=200.0, cs=1.0, theta_c=0.01, defocus_spread=500.0):
    """Spin-ice-like square array of elongated permalloy islands in vacuum.

    Rectangular islands (``length`` x ``width``) on the edges of a square
    lattice, each uniformly magnetised along its long axis in a random sense
    (fixed: the specimen does not change with ``seed``), with the electrostatic
    phase of the mean inner potential and edges smoothed over 2 nm. Strong,
    sharp phase steps at the island edges (about 2.7 rad) and a weaker magnetic
    phase: the case where the electrostatic and magnetic parts must be told
    apart.

    Parameters
    ----------
    shape : (int, int)
        Image size ``(H, W)``, pixels.
    pixel_size : float
        Pixel size, nm.
    field : {"isolated", "window", "periodic"}
        ``"isolated"`` (default): the islands whole within the central 75 % of
        the frame, vacuum around; ``"window"``: the array goes on beyond the
        frame; ``"periodic"``: a lattice constant fitted to the frame.
    dose : float or None
        Electrons per pixel; ``None``: noise-free.
    seed : int
        Seed of the noise.
    defocus : sequence of float
        nm, positive for overfocus.
    lattice : float
        Lattice constant of the square array, nm.
    length, width : float
        Island size, nm.
    thickness : float
        Island thickness, nm.
    ms : float
        Saturation magnetisation, A/m (permalloy 8e5).
    mean_inner_potential : float
        V (permalloy about 25).
    absorption_length : float or None
        Absorption length, nm, for an amplitude ``exp(-t / 2 lambda)``; ``None``
        (default): a pure phase object.
    beam_energy, cs, theta_c, defocus_spread : float
        keV, mm, mrad, nm.

    Returns
    -------
    LorentzFocalSeries
    """
    shape, pixel = _check(shape, pixel_size, field, dose)
    defocus = np.asarray(defocus, dtype=float)
    mic = _microscope(beam_energy, cs, theta_c, defocus_spread)
    grid, frame = _grid(shape, pixel, field, defocus, mic)
    edge = _edge_width(pixel, thickness, mean_inner_potential, beam_energy)
    spec, count, (ay, ax) = _islands(grid, pixel, frame, field, float(lattice), float(length), float(width),
                                     float(thickness), float(ms), edge)
    params = {"lattice_nm": [ay, ax], "island_length_nm": float(length), "island_width_nm": float(width),
              "islands_simulated": count, "ms_A_per_m": float(ms), "thickness_nm": float(thickness)}
    return _series(spec, kind="island_array", field=field, grid=grid, frame=frame, pixel=pixel,
                   defocus=defocus, dose=dose, seed=seed, microscope=mic,
                   mean_inner_potential=mean_inner_potential, absorption_length=absorption_length,
                   parameters={**params, "edge_width_nm": edge})


def domain_walls(shape=(256, 256), pixel_size=2.5, *, field="window", dose=1000.0, seed=0,
                 defocus=(-300e3, -150e3, 0.0, 150e3, 300e3), domain_width=250.0, wall_width=15.0,
                 meander=40.0, ms=8.0e5, thickness=20.0, mean_inner_potential=25.0,
                 beam_energy=200.0, cs=1.0, theta_c=0.01, defocus_spread=500.0):
    """In-plane domains separated by meandering 180-degree walls (soft film).

    Domains magnetised along ``+y`` and ``-y`` (``domain_width`` wide)
    alternate along ``x``; the moment turns in-plane through ``+x`` or ``-x``
    across each wall (Néel-like walls, ``wall_width``), and the walls meander
    along ``y`` with amplitude ``meander``. The phase is a zig-zag of ramps of
    several rad per domain, the walls image as bright and dark lines: the walls
    cross the frame, so its edges carry strong phase gradients.

    Parameters
    ----------
    shape : (int, int)
        Image size ``(H, W)``, pixels.
    pixel_size : float
        Pixel size, nm.
    field : {"window", "isolated", "periodic"}
        ``"window"`` (default): the domains go on beyond the frame;
        ``"isolated"``: a rectangular element (75 % of the frame) holding the
        same domains (its edges carry magnetic charges and the electrostatic
        phase); ``"periodic"``: domain width fitted to the frame.
    dose : float or None
        Electrons per pixel; ``None``: noise-free.
    seed : int
        Seed of the noise.
    defocus : sequence of float
        nm, positive for overfocus.
    domain_width : float
        Width of one domain, nm (adjusted to fit the periodic simulation cell).
    wall_width : float
        Wall width parameter, nm.
    meander : float
        Amplitude of the walls' sinusoidal meander, nm.
    ms : float
        A/m.
    thickness : float
        Film thickness, nm.
    mean_inner_potential : float
        V (matters only for ``"isolated"``).
    beam_energy, cs, theta_c, defocus_spread : float
        keV, mm, mrad, nm.

    Returns
    -------
    LorentzFocalSeries
    """
    shape, pixel = _check(shape, pixel_size, field, dose)
    defocus = np.asarray(defocus, dtype=float)
    mic = _microscope(beam_energy, cs, theta_c, defocus_spread)
    grid, frame = _grid(shape, pixel, field, defocus, mic, periods=(None, 2 * float(domain_width)))
    H, W = grid[0] * pixel, grid[1] * pixel
    period, _ = _commensurate(W, 2 * float(domain_width))
    wavelength_y, _ = _commensurate(H, 0.8 * H if field == "periodic" else 600.0)
    y, x = _coords(grid, pixel)
    cy, cx = _frame_centre(frame, pixel)
    u = x - cx + period / 4 + 0.37 * period - meander * np.sin(2 * np.pi * (y - cy) / wavelength_y)
    theta = _wall_theta(u, period, wall_width)
    edge = _edge_width(pixel, thickness, mean_inner_potential, beam_energy)
    spec = _film(np.sin(theta), np.cos(theta), np.zeros(grid), grid, pixel, frame, field, ms, thickness, "box",
                 edge)
    params = {"domain_width_nm": period / 2, "wall_width_nm": float(wall_width), "meander_nm": float(meander),
              "meander_wavelength_nm": wavelength_y, "ms_A_per_m": float(ms), "thickness_nm": float(thickness)}
    return _series(spec, kind="domain_walls", field=field, grid=grid, frame=frame, pixel=pixel,
                   defocus=defocus, dose=dose, seed=seed, microscope=mic,
                   mean_inner_potential=mean_inner_potential if field == "isolated" else 0.0,
                   absorption_length=None, parameters={**params, "edge_width_nm": edge})


def stripe_domains(shape=(256, 256), pixel_size=2.5, *, field="window", dose=1000.0, seed=0,
                   defocus=(-300e3, -150e3, 0.0, 150e3, 300e3), period=160.0, direction=20.0,
                   wall_width=12.0, ms=6.0e5, thickness=60.0, mean_inner_potential=20.0,
                   beam_energy=200.0, cs=1.0, theta_c=0.01, defocus_spread=500.0):
    """Up/down stripe domains with Bloch walls (perpendicular anisotropy film).

    Only the in-plane moment of the Bloch walls gives a magnetic phase: a
    triangle-like profile across the stripes, the walls imaged as alternating
    bright and dark lines.

    Parameters
    ----------
    shape : (int, int)
        Image size ``(H, W)``, pixels.
    pixel_size : float
        Pixel size, nm.
    field : {"window", "isolated", "periodic"}
        ``"window"`` (default), ``"isolated"`` (a disc-shaped patch, 75 % of the
        frame, in vacuum) or ``"periodic"``. Period and direction are adjusted
        (a few %, a few degrees) so that the stripes are periodic on the
        simulation cell.
    dose : float or None
        Electrons per pixel; ``None``: noise-free.
    seed : int
        Seed of the noise.
    defocus : sequence of float
        nm, positive for overfocus.
    period : float
        Stripe period (one up and one down domain), nm.
    direction : float
        Direction of the modulation, degrees from ``+x`` towards ``+y``.
    wall_width : float
        Wall width, nm.
    ms : float
        A/m.
    thickness : float
        nm.
    mean_inner_potential : float
        V (matters only for ``"isolated"``).
    beam_energy, cs, theta_c, defocus_spread : float
        keV, mm, mrad, nm.

    Returns
    -------
    LorentzFocalSeries
    """
    from hyperspy_lorentz.physics import textures

    shape, pixel = _check(shape, pixel_size, field, dose)
    defocus = np.asarray(defocus, dtype=float)
    mic = _microscope(beam_energy, cs, theta_c, defocus_spread)
    grid, frame = _grid(shape, pixel, field, defocus, mic)
    H, W = grid[0] * pixel, grid[1] * pixel
    # wave vector (cycles / nm) with a whole number of periods along each side of the cell
    psi = math.radians(float(direction))
    kx = round(W * math.cos(psi) / period) / W
    ky = round(H * math.sin(psi) / period) / H
    if kx == 0 and ky == 0:
        kx = 1 / W
    period_c = 1 / math.hypot(kx, ky)
    direction_c = math.degrees(math.atan2(ky, kx))
    cy, cx = _frame_centre(frame, pixel)
    t = textures.stripe_domains(grid, period_c, wall_width=wall_width, direction=direction_c,
                                offset=cx * math.cos(math.radians(direction_c))
                                + cy * math.sin(math.radians(direction_c)) + 0.1 * period_c,
                                pixel_size=pixel)
    edge = _edge_width(pixel, thickness, mean_inner_potential, beam_energy)
    spec = _film(t.mx, t.my, t.mz, grid, pixel, frame, field, ms, thickness, "disc", edge)
    params = {"period_nm": period_c, "direction_deg": direction_c, "wall_width_nm": float(wall_width),
              "ms_A_per_m": float(ms), "thickness_nm": float(thickness)}
    return _series(spec, kind="stripe_domains", field=field, grid=grid, frame=frame, pixel=pixel,
                   defocus=defocus, dose=dose, seed=seed, microscope=mic,
                   mean_inner_potential=mean_inner_potential if field == "isolated" else 0.0,
                   absorption_length=None, parameters={**params, "edge_width_nm": edge})


def _discs(grid, pixel, frame, field, radius, spacing, thickness, ms, core_radius, edge):
    """Square array of vortex discs (random chirality and polarity, fixed)."""
    H, W = grid[0] * pixel, grid[1] * pixel
    cy, cx = _frame_centre(frame, pixel)
    periodic = field == "periodic"
    if periodic:
        ay, ny = _commensurate(H, spacing, at_least=True)
        ax, nx = _commensurate(W, spacing, at_least=True)
        sites = [(j, i) for j in range(ny) for i in range(nx)]
        oy, ox = cy - (ny // 2 - 0.5) * ay, cx - (nx // 2 - 0.5) * ax
    elif field == "isolated":  # as many discs as fit, centred in the frame
        ay = ax = spacing
        ny, nx = (max(1, int((_ISOLATED_FILL * n * pixel - 2 * radius) // spacing) + 1) for n in frame[2:])
        sites = [(j, i) for j in range(ny) for i in range(nx)]
        oy, ox = cy - (ny - 1) * ay / 2, cx - (nx - 1) * ax / 2
    else:
        ay = ax = spacing
        ny, nx = int(H // ay) // 2 + 2, int(W // ax) // 2 + 2
        sites = [(j, i) for j in range(-ny, ny) for i in range(-nx, nx)]
        oy, ox = cy + 0.5 * ay, cx + 0.5 * ax
    rng = np.random.default_rng(_SPECIMEN_SEED + 1)
    mx, my, mz = (np.zeros(grid) for _ in range(3))
    mask = np.zeros(grid)
    kept = []
    reach = radius + 3 * edge  # the moment extends under the smoothed edge
    for j, i in sites:
        chirality = 1 if rng.random() < 0.5 else -1  # drawn for every site: a fixed pattern
        polarity = 1 if rng.random() < 0.5 else -1
        yc, xc = oy + j * ay, ox + i * ax
        box = (yc - radius, xc - radius, yc + radius, xc + radius)
        if field == "isolated" and not _place_isolated(frame, pixel, box):
            continue
        if not periodic and not _inside_grid(grid, pixel, box):
            continue
        idx, dy, dx = _local(grid, pixel, yc, xc, reach, reach, periodic)
        r = np.hypot(dx, dy)
        near = r <= reach
        phi = np.arctan2(dy, dx)
        # the vortex of physics.textures.vortex: chirality +1 is clockwise on screen
        mzc = polarity * np.exp(-((r / core_radius) ** 2))
        inplane = np.sqrt(np.clip(1.0 - mzc * mzc, 0.0, 1.0))
        mx[idx] = np.where(near, -chirality * inplane * np.sin(phi), mx[idx])
        my[idx] = np.where(near, chirality * inplane * np.cos(phi), my[idx])
        mz[idx] = np.where(near, mzc, mz[idx])
        mask[idx] = np.maximum(mask[idx], r <= radius)
        kept.append({"centre_nm": [float(yc), float(xc)], "chirality": chirality, "polarity": polarity})
    if not kept:
        raise ValueError(
            f"No disc of radius {radius:g} nm fits in the {field} field of "
            f"{frame[2] * pixel:g} x {frame[3] * pixel:g} nm: give a larger shape or a smaller radius."
        )
    cov = _smooth(mask, pixel, edge)
    return _Specimen(mx * cov, my * cov, mz * cov, ms, thickness, cov, False), kept, (ay, ax)


def vortex_discs(shape=(256, 256), pixel_size=2.5, *, field="isolated", dose=1000.0, seed=0,
                 defocus=(-300e3, -150e3, 0.0, 150e3, 300e3), radius=100.0, spacing=240.0,
                 thickness=22.0, ms=8.0e5, core_radius=10.0, mean_inner_potential=25.0,
                 absorption_length=100.0, beam_energy=200.0, cs=1.0, theta_c=0.01, defocus_spread=500.0):
    """Permalloy discs in vortex states, with electrostatic phase and absorption.

    A square array of discs, each in a vortex of random (fixed) chirality and
    polarity: a magnetic phase cone of about ``pi B0 t R / Phi0`` (about 3.3 rad
    for the defaults), an electrostatic phase ``sigma V0 t`` of about 4 rad and
    an amplitude ``exp(-t / 2 lambda)`` of about 0.9 inside the discs.

    Parameters
    ----------
    shape : (int, int)
        Image size ``(H, W)``, pixels.
    pixel_size : float
        Pixel size, nm.
    field : {"isolated", "window", "periodic"}
        ``"isolated"`` (default): the whole discs within the central 75 % of the
        frame; ``"window"``: the array goes on beyond the frame;
        ``"periodic"``: spacing fitted to the frame.
    dose : float or None
        Electrons per pixel; ``None``: noise-free.
    seed : int
        Seed of the noise.
    defocus : sequence of float
        nm, positive for overfocus.
    radius : float
        Disc radius, nm.
    spacing : float
        Centre-to-centre distance, nm.
    thickness : float
        nm.
    ms : float
        A/m.
    core_radius : float
        Vortex core size, nm.
    mean_inner_potential : float
        V.
    absorption_length : float or None
        nm; ``None``: no absorption.
    beam_energy, cs, theta_c, defocus_spread : float
        keV, mm, mrad, nm.

    Returns
    -------
    LorentzFocalSeries
    """
    shape, pixel = _check(shape, pixel_size, field, dose)
    defocus = np.asarray(defocus, dtype=float)
    mic = _microscope(beam_energy, cs, theta_c, defocus_spread)
    grid, frame = _grid(shape, pixel, field, defocus, mic)
    edge = _edge_width(pixel, thickness, mean_inner_potential, beam_energy)
    spec, kept, (ay, ax) = _discs(grid, pixel, frame, field, float(radius), float(spacing), float(thickness),
                                  float(ms), float(core_radius), edge)
    params = {"radius_nm": float(radius), "spacing_nm": [ay, ax],
              "core_radius_nm": float(core_radius), "discs_simulated": len(kept), "ms_A_per_m": float(ms),
              "thickness_nm": float(thickness)}
    return _series(spec, kind="vortex_discs", field=field, grid=grid, frame=frame, pixel=pixel,
                   defocus=defocus, dose=dose, seed=seed, microscope=mic,
                   mean_inner_potential=mean_inner_potential, absorption_length=absorption_length,
                   parameters={**params, "edge_width_nm": edge})


def flip_pair(shape=(256, 256), pixel_size=2.5, *, field="isolated", dose=1000.0, seed=0,
              defocus=(-100e3, -50e3, 0.0, 50e3, 100e3), drift=(3.4, -2.2), flip_axis="x",
              radius=100.0, spacing=240.0, thickness=22.0, ms=8.0e5, mean_inner_potential=25.0,
              absorption_length=100.0, beam_energy=200.0, cs=1.0, theta_c=0.01, defocus_spread=500.0):
    """Flip/unflip pair: vortex discs, then the same specimen turned over.

    The second series is recorded with the specimen turned upside down about
    the in-plane ``flip_axis``, as :mod:`hyperspy_lorentz.reconstruction.flip`
    models it: its exit wave is the mirror image of ``phi_e - phi_m`` (the
    magnetic phase changes sign, the electrostatic one does not), and its
    images are displaced by ``drift`` relative to that mirror image (what
    :func:`~hyperspy_lorentz.reconstruction.flip.register_flipped` returns as
    ``info["drift"]``).

    Parameters
    ----------
    shape, pixel_size, field, radius, spacing, thickness, ms, mean_inner_potential, absorption_length
        As :func:`vortex_discs`.
    defocus : sequence of float
        Defocus of each image of both series, nm, positive for overfocus (default
        +-100 µm: the Fresnel fringes of the disc edges stay moderate).
    dose : float or None
        Electrons per pixel of each series; ``None``: noise-free.
    seed : int
        Seed of the noise of the unflipped series (``seed + 1`` for the flipped one).
    drift : (float, float)
        ``(dy, dx)`` displacement of the flipped recording, pixels; ``(0, 0)``
        for none.
    flip_axis : {"x", "y"}
        ``"x"``: turned over about the image ``x`` axis (rows reversed);
        ``"y"``: about ``y`` (columns reversed).
    beam_energy, cs, theta_c, defocus_spread : float
        keV, mm, mrad, nm.

    Returns
    -------
    (LorentzFocalSeries, LorentzFocalSeries)
        Unflipped and flipped series. Each holds the truth *in its own recorded
        frame* in ``metadata.Simulation`` (the flipped one: ``magnetic_phase`` is
        the mirror image of ``-phi_m``), with ``Specimen.flip_axis`` and
        ``Specimen.drift_px`` on the flipped one.
    """
    if flip_axis not in ("x", "y"):
        raise ValueError(f"flip_axis must be 'x' or 'y', not {flip_axis!r}.")
    try:
        dy, dx = (float(d) for d in drift)
    except (TypeError, ValueError):
        raise ValueError(f"drift must be a (dy, dx) pair of pixels, not {drift!r}.") from None
    shape, pixel = _check(shape, pixel_size, field, dose)
    defocus = np.asarray(defocus, dtype=float)
    mic = _microscope(beam_energy, cs, theta_c, defocus_spread)
    grid, frame = _grid(shape, pixel, field, defocus, mic, drift=max(abs(dy), abs(dx)))
    edge = _edge_width(pixel, thickness, mean_inner_potential, beam_energy)
    spec, kept, (ay, ax) = _discs(grid, pixel, frame, field, float(radius), float(spacing), float(thickness),
                                  float(ms), 10.0, edge)
    params = {"radius_nm": float(radius), "spacing_nm": [ay, ax],
              "discs_simulated": len(kept), "ms_A_per_m": float(ms), "thickness_nm": float(thickness)}
    common = dict(kind="vortex_discs", field=field, grid=grid, frame=frame, pixel=pixel, defocus=defocus,
                  dose=dose, microscope=mic, mean_inner_potential=mean_inner_potential,
                  absorption_length=absorption_length)
    params["edge_width_nm"] = edge
    unflipped = _series(spec, seed=seed, parameters=params, **common)
    shifts = np.tile([dy, dx], (defocus.size, 1))
    flipped = _series(spec, seed=None if seed is None else seed + 1,
                      parameters={**params, "drift_px": [dy, dx]}, shifts=shifts, flip_axis=flip_axis,
                      **common)
    unflipped.metadata.General.title = "Flip/unflip pair: unflipped " + unflipped.metadata.General.title
    flipped.metadata.General.title = "Flip/unflip pair: flipped " + flipped.metadata.General.title
    return unflipped, flipped
