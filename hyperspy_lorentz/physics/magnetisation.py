"""Electron phase of magnetic and non-magnetic specimens (pure NumPy kernels).

All lengths are in nm, the saturation magnetisation ``Ms`` in A/m, the mean inner
potential in V, the beam energy in keV and phases in rad (see :ref:`conventions`).

Magnetic phase
--------------
The electron (charge ``-e``) acquires the Aharonov-Bohm phase
``phi_m = -(e / hbar) integral A_z dz``, so that

    (B_x t, B_y t) = (hbar / e) (-d phi / dy, +d phi / dx).

For a magnetisation ``M(r)`` the Fourier transform of the induction is
``B(k) = mu0 [M(k) - k_hat (k_hat . M(k))]``. Projecting along the beam is
evaluating at ``k_z = 0``, so the projected in-plane induction is ``mu0`` times the
two-dimensional *transverse* (divergence-free) part of the projected in-plane
magnetisation ``P(r) = integral M_perp dz``. This is exact for any 3-D
magnetisation: the projected induction includes the stray and return fields
above and below the specimen, and ``M_z`` (along the beam) does not contribute.
Inverting the gradient relation gives the Mansuripur / Beleggia formula, with
``q = 1/d`` (no factor 2 pi) and the NumPy FFT sign,

    phi(q) = -i (mu0 / (2 Phi0)) (q_x P_y(q) - q_y P_x(q)) / q^2,

``Phi0 = h / 2e = 2067.83 T nm^2``. Equivalently, with ``k = 2 pi q``,
``phi(k) = (i pi B0 t / Phi0) (m_x k_y - m_y k_x) / k^2 D(k)`` for a film of
uniform thickness ``t``, shape function ``D`` and ``B0 = mu0 Ms``.

Two consequences are worth knowing when checking results:

* across a long strip magnetised along its length (no magnetic charges) the
  phase changes by ``pi B0 t w / Phi0`` and the projected induction is
  ``mu0 Ms t``, decreasing along ``+y`` for ``+x`` magnetisation;
* inside a uniformly magnetised *disc* the projected induction is uniform but
  only ``mu0 Ms t / 2``: the return flux of the edge charges, integrated along the
  whole beam path, cancels half of it (the 2-D demagnetising factor of a circle
  is 1/2). A rectangle ``L`` long along ``M`` and ``W`` wide has
  ``mu0 Ms t [1 - (2 / pi) arctan(W / L)]`` at its centre.
"""

from __future__ import annotations

import numpy as np
import scipy.constants as sc
import scipy.fft

__all__ = [
    "FLUX_QUANTUM",
    "HBAR_OVER_E",
    "MU0",
    "magnetic_phase",
    "electrostatic_phase",
    "amplitude_from_thickness",
]

#: Magnetic flux quantum ``h / 2e`` in T nm^2.
FLUX_QUANTUM = sc.h / (2 * sc.e) * 1e18
#: ``hbar / e`` in T nm^2.
HBAR_OVER_E = sc.hbar / sc.e * 1e18
#: Vacuum permeability in T m / A; ``MU0 * Ms`` (Ms in A/m) is an induction in T.
MU0 = sc.mu_0


# --------------------------------------------------------------------- helpers
def _pixel_pair(pixel_size, name="pixel_size"):
    """Return the pixel size as a ``(dy, dx)`` pair of positive floats (nm)."""
    try:
        arr = None if isinstance(pixel_size, (str, bool)) else np.asarray(pixel_size, dtype=float)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim > 1 or arr.size not in (1, 2):
        raise ValueError(f"{name} must be a positive number or a (dy, dx) pair in nm, not {pixel_size!r}.")
    pair = np.broadcast_to(arr.ravel(), (2,)) if arr.size == 1 else arr.ravel()
    if not np.all(np.isfinite(pair)) or np.any(pair <= 0):
        raise ValueError(f"{name} must be positive and finite (nm), not {pixel_size!r}.")
    return float(pair[0]), float(pair[1])


def _non_negative_array(value, name, unit):
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or an array of numbers ({unit}), not {value!r}.") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite ({unit}).")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative ({unit}); its minimum is {arr.min()}.")
    return arr


def _padding_pair(padding):
    try:
        arr = None if isinstance(padding, (str, bool)) else np.asarray(padding, dtype=float)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim > 1 or arr.size not in (1, 2):
        raise ValueError(f"padding must be a number >= 1 or a (py, px) pair, not {padding!r}.")
    pair = np.broadcast_to(arr.ravel(), (2,)) if arr.size == 1 else arr.ravel()
    if not np.all(np.isfinite(pair)) or np.any(pair < 1):
        raise ValueError(f"padding must be >= 1 (1 means no padding, periodic boundaries), not {padding!r}.")
    return float(pair[0]), float(pair[1])


# -------------------------------------------------------------------- kernels
def magnetic_phase(
    mx,
    my,
    ms,
    thickness,
    pixel_size,
    tilt_x=0.0,
    tilt_y=0.0,
    padding=2,
    *,
    mz=None,
):
    """Magnetic phase of a magnetised specimen (Mansuripur / Beleggia Fourier method).

    Parameters
    ----------
    mx, my : array_like
        Components along image ``x`` (columns, right) and ``y`` (rows, down) of the
        unit magnetisation vector, dimensionless, ``|m| <= 1`` and zero outside the
        specimen. Shape ``(H, W)`` for a film uniform through its thickness, or
        ``(Z, H, W)``: ``Z`` slices of thickness ``thickness / Z`` each, summed along
        the beam.
    ms : float or array_like
        Saturation magnetisation, A/m, ``>= 0``; a scalar or an array broadcastable
        to the shape of ``mx`` (e.g. a map of the magnetised region).
    thickness : float or array_like
        Specimen thickness, nm, ``>= 0``: a scalar or an ``(H, W)`` map.
    pixel_size : float or (float, float)
        Pixel size, nm: one number or a ``(dy, dx)`` pair.
    tilt_x, tilt_y : float
        Specimen tilt, degrees, about the image ``x`` and ``y`` axes (right-hand
        rule; ``|tilt| < 90``). The specimen-frame vector ``m`` is rotated into the
        microscope frame as ``m' = R_y(tilt_y) R_x(tilt_x) m`` (so a positive
        ``tilt_x`` turns an out-of-plane ``+z`` moment towards ``-y``) and the path
        length through the film becomes ``t / (cos(tilt_x) cos(tilt_y))``.
        *Thin-film approximation*: the arrays are taken to be the magnetisation as
        seen along the tilted beam (on the image grid); the foreshortening of the
        in-plane geometry and the lateral shift ``t tan(tilt)`` between the top
        and bottom surfaces are neglected, which holds when ``t tan(tilt)`` is small
        compared with the features of interest. Apart from that the projection is
        exact.
    padding : float or (float, float)
        Zero-padding factor along ``(y, x)`` (default 2: the FFT grid is twice the
        image along each axis, rounded up to a fast FFT length). Padding removes the
        wrap-around of stray fields between periodic copies; ``1`` means no padding,
        i.e. periodic boundaries, appropriate for a texture that repeats
        periodically across the field of view (a continuous film).
    mz : array_like, optional
        Component along the beam (``+z``, into the screen), same shape as ``mx``.
        Only contributes when the specimen is tilted. ``None``: 0, an in-plane
        magnetisation.

    Returns
    -------
    numpy.ndarray
        Magnetic phase, rad, shape ``(H, W)``, float64. The phase is defined up to
        a constant: its mean over the padded grid is zero (the ``q = 0`` term is
        set to zero).

    Raises
    ------
    ValueError
        On mismatched shapes, ``|m| > 1``, negative ``ms`` or ``thickness``, a
        non-positive ``pixel_size``, a tilt of 90 degrees or more, ``padding < 1``.

    Notes
    -----
    With ``P = sum_slices Ms m'_perp (t / Z) / (cos tilt_x cos tilt_y)`` in A/m nm,

        phi(q) = -i (mu0 / (2 Phi0)) (q_x P_y(q) - q_y P_x(q)) / q^2,

    which gives ``(B_x t, B_y t) = (hbar / e)(-d phi / dy, d phi / dx)`` equal to
    ``mu0`` times the divergence-free part of ``P`` (see the module docstring).
    A film magnetised along ``+x`` has a phase decreasing along ``+y``.
    """
    mx = np.asarray(mx, dtype=float)
    my = np.asarray(my, dtype=float)
    if mx.ndim not in (2, 3):
        raise ValueError(f"mx must be 2-D (H, W) or 3-D (Z, H, W), not {mx.ndim}-D with shape {mx.shape}.")
    if my.shape != mx.shape:
        raise ValueError(f"my must have the shape of mx {mx.shape}, not {my.shape}.")
    if mz is None:
        mz = np.zeros_like(mx)
    else:
        mz = np.asarray(mz, dtype=float)
        if mz.shape != mx.shape:
            raise ValueError(f"mz must have the shape of mx {mx.shape}, not {mz.shape}.")
    for name, comp in (("mx", mx), ("my", my), ("mz", mz)):
        if not np.all(np.isfinite(comp)):
            raise ValueError(f"{name} must be finite.")
    norm2 = mx * mx + my * my + mz * mz
    if np.any(norm2 > (1 + 1e-3) ** 2):
        raise ValueError(
            "mx, my (and mz) must be components of a unit vector (|m| <= 1), but the largest |m| is "
            f"{np.sqrt(norm2.max()):.4g}; pass the magnitude as ms (A/m)."
        )
    ms = _non_negative_array(ms, "ms", "A/m")
    try:
        ms = np.broadcast_to(ms, mx.shape)
    except ValueError:
        raise ValueError(f"ms must be a scalar or broadcastable to the shape of mx {mx.shape}, not {ms.shape}.") from None
    thickness = _non_negative_array(thickness, "thickness", "nm")
    image_shape = mx.shape[-2:]
    try:
        thickness = np.broadcast_to(thickness, image_shape)
    except ValueError:
        raise ValueError(
            f"thickness must be a scalar or an (H, W) map of shape {image_shape}, not {thickness.shape}."
        ) from None
    dy, dx = _pixel_pair(pixel_size)
    pad_y, pad_x = _padding_pair(padding)
    ax = np.deg2rad(_tilt(tilt_x, "tilt_x"))
    ay = np.deg2rad(_tilt(tilt_y, "tilt_y"))

    # Rotate into the microscope frame: m' = R_y(ay) R_x(ax) m.
    cx, sx = np.cos(ax), np.sin(ax)
    cy, sy = np.cos(ay), np.sin(ay)
    my_r = cx * my - sx * mz
    mz_r = sx * my + cx * mz
    mx_r = cy * mx + sy * mz_r
    path = 1.0 / (cx * cy)

    nslice = mx.shape[0] if mx.ndim == 3 else 1
    weight = thickness * (path / nslice)  # nm per slice, (H, W)
    px = ms * mx_r
    py = ms * my_r
    if mx.ndim == 3:
        px = px.sum(axis=0)
        py = py.sum(axis=0)
    px = px * weight  # A/m nm
    py = py * weight

    h, w = image_shape
    hp = scipy.fft.next_fast_len(int(np.ceil(h * pad_y - 1e-9)), real=True)
    wp = scipy.fft.next_fast_len(int(np.ceil(w * pad_x - 1e-9)), real=True)
    buf_x = np.zeros((hp, wp))
    buf_y = np.zeros((hp, wp))
    buf_x[:h, :w] = px
    buf_y[:h, :w] = py

    fx = scipy.fft.rfft2(buf_x)
    fy = scipy.fft.rfft2(buf_y)
    qy = scipy.fft.fftfreq(hp, d=dy)[:, None]
    qx = scipy.fft.rfftfreq(wp, d=dx)[None, :]
    q2 = qx * qx + qy * qy
    q2[0, 0] = 1.0  # numerator vanishes at q = 0: the phase has zero mean
    kernel_scale = MU0 / (2.0 * FLUX_QUANTUM)
    spectrum = (-1j * kernel_scale) * (qx * fy - qy * fx) / q2
    spectrum[0, 0] = 0.0
    # The Nyquist row / column of an even-length grid has no conjugate partner:
    # an odd (first-order) kernel is undefined there, so drop it.
    if hp % 2 == 0:
        spectrum[hp // 2, :] = 0.0
    if wp % 2 == 0:
        spectrum[:, -1] = 0.0
    phase = scipy.fft.irfft2(spectrum, s=(hp, wp))
    return np.ascontiguousarray(phase[:h, :w])


def _tilt(value, name):
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an angle in degrees, not {value!r}.")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an angle in degrees, not {value!r}.") from None
    if not np.isfinite(v) or abs(v) >= 90:
        raise ValueError(f"{name} must be a finite angle with |{name}| < 90 degrees, not {value!r}.")
    return v


def electrostatic_phase(thickness, mean_inner_potential, beam_energy):
    """Electrostatic phase ``phi_e = sigma V0 t`` of a specimen of known thickness.

    Parameters
    ----------
    thickness : float or array_like
        Specimen thickness, nm, ``>= 0`` (a map or a number).
    mean_inner_potential : float or array_like
        Mean inner potential ``V0``, V, ``>= 0`` (a number, or a map broadcastable
        to ``thickness`` for several materials).
    beam_energy : float
        Accelerating voltage, kV (beam energy in keV), ``> 0``.

    Returns
    -------
    numpy.ndarray or float
        Phase, rad; positive (a positive potential advances the phase, see
        :ref:`conventions`). A float for scalar inputs.

    Notes
    -----
    The relativistic interaction constant ``sigma`` (rad/(V nm)),
    ``(2 pi / (lambda V)) (m0 c^2 + e V) / (2 m0 c^2 + e V)``, 0.0072884 at 200 kV,
    comes from :func:`hyperspy_lorentz.physics.optics.interaction_constant`, which
    also validates ``beam_energy``.
    """
    t = _non_negative_array(thickness, "thickness", "nm")
    v0 = _non_negative_array(mean_inner_potential, "mean_inner_potential", "V")
    # sigma from the optics module (imported here: it imports torch)
    from hyperspy_lorentz.physics.optics import interaction_constant

    sigma = interaction_constant(beam_energy)
    try:
        out = sigma * np.multiply(v0, t)
    except ValueError:
        raise ValueError(
            f"mean_inner_potential of shape {v0.shape} does not broadcast with thickness of shape {t.shape}."
        ) from None
    return float(out) if out.ndim == 0 else out


def amplitude_from_thickness(thickness, absorption_length):
    """Exit-wave amplitude ``exp(-t / (2 lambda_abs))`` from the thickness.

    The transmitted *intensity* falls as ``exp(-t / lambda_abs)`` (``lambda_abs``
    is the inelastic / aperture-scattering mean free path), so the amplitude, its
    square root, falls as ``exp(-t / (2 lambda_abs))``.

    Parameters
    ----------
    thickness : float or array_like
        Specimen thickness, nm, ``>= 0``.
    absorption_length : float
        Absorption (mean free path) length ``lambda_abs``, nm, ``> 0``; ``inf`` gives
        a pure phase object (amplitude 1).

    Returns
    -------
    numpy.ndarray or float
        Amplitude in ``(0, 1]``, dimensionless; a float for a scalar thickness.
    """
    t = _non_negative_array(thickness, "thickness", "nm")
    if isinstance(absorption_length, (bool, np.bool_)):
        raise ValueError(f"absorption_length must be a positive number (nm), not {absorption_length!r}.")
    try:
        lam = float(absorption_length)
    except (TypeError, ValueError):
        raise ValueError(f"absorption_length must be a positive number (nm), not {absorption_length!r}.") from None
    if np.isnan(lam) or lam <= 0:
        raise ValueError(f"absorption_length must be a positive number (nm), not {absorption_length!r}.")
    out = np.exp(-t / (2.0 * lam))
    return float(out) if out.ndim == 0 else out
