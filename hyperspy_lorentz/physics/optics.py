"""Electron optics for Lorentz TEM: wavelength, aberrations, coherence, aperture.

Pure array kernels (PyTorch, differentiable, batched over defocus); nothing here
knows about HyperSpy. Units and signs follow :ref:`conventions`:

* lengths (pixel size, defocus, astigmatism, defocus spread) in nm;
* ``Cs`` in mm, ``theta_c`` and aperture angles in mrad, beam energy in keV;
* spatial frequencies ``q`` in 1/nm without a factor ``2 pi``
  (``fftfreq(n, d=pixel_size)``, unshifted, NumPy/PyTorch FFT sign);
* **defocus is positive for overfocus**; the aberration function is
  ``chi(q) = pi lambda df q^2 + (pi/2) Cs lambda^3 q^4`` and the image wave is
  ``F^-1[F[psi] T]`` with ``T = exp(-i chi) E A``.

Scalar helpers (:func:`wavelength`, :func:`interaction_constant`) return Python
floats; the field functions accept Python numbers or tensors for every physical
parameter, broadcast a defocus tensor of shape ``(N,)`` to ``(N, H, W)``, and are
differentiable with respect to every tensor argument.
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = [
    "wavelength",
    "interaction_constant",
    "spatial_frequencies",
    "aberration_function",
    "coherence_envelope",
    "objective_aperture",
    "transfer_function",
]

# CODATA 2018 exact / recommended values (SI).
_H = 6.62607015e-34  # Planck constant, J s
_E = 1.602176634e-19  # elementary charge, C
_M0 = 9.1093837015e-31  # electron rest mass, kg
_C = 299792458.0  # speed of light, m/s

#: Highest accepted beam energy, keV (10 MeV): anything above is a unit mistake.
MAX_BEAM_ENERGY_KEV = 10_000.0

_CS_MM_TO_NM = 1e6
_MRAD = 1e-3


# --------------------------------------------------------------------------- checks
def _check_beam_energy(beam_energy):
    try:
        e = float(beam_energy)
    except (TypeError, ValueError):
        raise ValueError(
            f"beam_energy must be a number in keV, got {beam_energy!r}"
        ) from None
    if not math.isfinite(e) or e <= 0:
        raise ValueError(f"beam_energy must be a positive number in keV, got {beam_energy!r}")
    if e > MAX_BEAM_ENERGY_KEV:
        raise ValueError(
            f"beam_energy must be in keV (at most {MAX_BEAM_ENERGY_KEV:g}); got "
            f"{beam_energy!r} -- was it given in V or eV?"
        )
    return e


def _check_pixel_size(pixel_size):
    """Return ``(py, px)`` in nm from a scalar or a ``(py, px)`` pair."""
    if isinstance(pixel_size, torch.Tensor):
        pixel_size = pixel_size.detach().cpu().tolist()
    if isinstance(pixel_size, numbers.Number) or (
        hasattr(pixel_size, "ndim") and getattr(pixel_size, "ndim") == 0
    ):
        vals = (pixel_size, pixel_size)
    else:
        try:
            vals = tuple(pixel_size)
        except TypeError:
            raise ValueError(
                f"pixel_size must be a positive number (nm) or a (py, px) pair, "
                f"got {pixel_size!r}"
            ) from None
        if len(vals) != 2:
            raise ValueError(
                f"pixel_size must be a number or a (py, px) pair, got {pixel_size!r}"
            )
    out = []
    for v in vals:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"pixel_size must be numeric (nm), got {pixel_size!r}") from None
        if not math.isfinite(f) or f <= 0:
            raise ValueError(f"pixel_size must be positive and finite (nm), got {pixel_size!r}")
        out.append(f)
    return tuple(out)


def _check_shape(shape):
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair of positive integers, got {shape!r}") from None
    if h < 1 or w < 1 or (h, w) != tuple(shape):
        raise ValueError(f"shape must be a pair of positive integers, got {shape!r}")
    return h, w


def _check_nonneg(value, name, unit):
    """Reject negative or non-finite numbers / tensors (values only, no grad)."""
    if isinstance(value, torch.Tensor):
        v = value.detach()
        if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
            raise ValueError(f"{name} must be finite and >= 0 ({unit})")
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number ({unit}), got {value!r}") from None
    if not math.isfinite(f) or f < 0:
        raise ValueError(f"{name} must be finite and >= 0 ({unit}), got {value!r}")
    return f


def _check_finite(value, name, unit):
    if isinstance(value, torch.Tensor):
        if not bool(torch.isfinite(value.detach()).all()):
            raise ValueError(f"{name} must be finite ({unit})")
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number ({unit}), got {value!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite ({unit}), got {value!r}")
    return f


def _check_wavelength(wl):
    if isinstance(wl, torch.Tensor):
        if not bool(torch.isfinite(wl.detach()).all()) or bool((wl.detach() <= 0).any()):
            raise ValueError("wavelength must be positive and finite (nm)")
        return wl
    try:
        f = float(wl)
    except (TypeError, ValueError):
        raise ValueError(f"wavelength must be a number in nm, got {wl!r}") from None
    if not math.isfinite(f) or f <= 0:
        raise ValueError(f"wavelength must be positive and finite (nm), got {wl!r}")
    if f > 0.1:
        raise ValueError(
            f"wavelength must be in nm (0.0025079 nm at 200 kV), got {wl!r}; use "
            "wavelength(beam_energy_keV)"
        )
    return f


def _per_image(value, ref):
    """Broadcast a per-image parameter against q grids ``ref`` (..., H, W).

    Python numbers and 0-d tensors stay scalars; a 1-D tensor of length N
    becomes ``(N, 1, 1)`` so that the result is ``(N, H, W)``.
    """
    if isinstance(value, torch.Tensor):
        value = value.to(device=ref.device, dtype=ref.dtype)
        if value.ndim == 1:
            return value.reshape(-1, 1, 1)
        if value.ndim > 1:
            raise ValueError(
                "per-image parameters must be scalars or 1-D tensors of length N, "
                f"got shape {tuple(value.shape)}"
            )
    return value


# --------------------------------------------------------------------------- scalars
def wavelength(beam_energy):
    """Relativistic electron wavelength.

    Parameters
    ----------
    beam_energy : float
        Accelerating voltage, keV (e.g. ``200``). Must be in ``(0, 10000]``.

    Returns
    -------
    float
        Wavelength in nm: ``h / sqrt(2 m0 e V (1 + e V / (2 m0 c^2)))``;
        0.0025079 nm at 200 kV, 0.0019687 nm at 300 kV.

    Raises
    ------
    ValueError
        If ``beam_energy`` is not positive, not finite or above 10 MeV.
    """
    v = _check_beam_energy(beam_energy) * 1e3
    p = math.sqrt(2.0 * _M0 * _E * v * (1.0 + _E * v / (2.0 * _M0 * _C**2)))
    return _H / p * 1e9


def interaction_constant(beam_energy):
    """Relativistic interaction constant ``sigma = 2 pi m e lambda / h^2``.

    Parameters
    ----------
    beam_energy : float
        Accelerating voltage, keV.

    Returns
    -------
    float
        ``sigma`` in rad/(V nm), with ``m = gamma m0`` the relativistic mass;
        0.0072884 rad/(V nm) at 200 kV. The electrostatic phase of a specimen of
        mean inner potential ``V0`` (V) and thickness ``t`` (nm) is
        ``+sigma V0 t``.

    Raises
    ------
    ValueError
        If ``beam_energy`` is not positive, not finite or above 10 MeV.
    """
    v = _check_beam_energy(beam_energy) * 1e3
    lam_m = wavelength(beam_energy) * 1e-9
    gamma = 1.0 + _E * v / (_M0 * _C**2)
    sigma_si = 2.0 * math.pi * gamma * _M0 * _E * lam_m / _H**2  # rad / (V m)
    return sigma_si * 1e-9


# --------------------------------------------------------------------------- grids
def spatial_frequencies(shape, pixel_size, device=None, dtype=torch.float32):
    """Unshifted spatial-frequency grids of an image.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(H, W)`` (rows ``y``, columns ``x``).
    pixel_size : float or tuple of float
        Pixel size in nm, one number or ``(py, px)``.
    device : torch.device or str, optional
        Device of the grids.
    dtype : torch.dtype
        Real floating dtype of the grids (default ``torch.float32``).

    Returns
    -------
    qy, qx : torch.Tensor
        Two ``(H, W)`` grids in 1/nm (no ``2 pi``), ``qy[i, j] = fftfreq(H, py)[i]``
        and ``qx[i, j] = fftfreq(W, px)[j]``, zero frequency at ``[0, 0]``.
    """
    h, w = _check_shape(shape)
    py, px = _check_pixel_size(pixel_size)
    fy = torch.fft.fftfreq(h, d=py, dtype=torch.float64, device=device)
    fx = torch.fft.fftfreq(w, d=px, dtype=torch.float64, device=device)
    qy, qx = torch.meshgrid(fy, fx, indexing="ij")
    return qy.to(dtype).contiguous(), qx.to(dtype).contiguous()


# --------------------------------------------------------------------------- fields
def aberration_function(qy, qx, wavelength, defocus, cs=0.0, astigmatism=0.0,
                        astigmatism_angle=0.0):
    """Aberration phase ``chi(q)`` (defocus, spherical aberration, 2-fold astigmatism).

    ``chi = pi lambda df q^2 + (pi/2) Cs lambda^3 q^4
    + pi lambda A q^2 cos(2 (theta_q - alpha))``, with ``theta_q = atan2(qy, qx)``.
    This is Kirkland's ``chi`` with the sign of the defocus reversed
    (positive ``df`` is overfocus, see :ref:`conventions`).

    Parameters
    ----------
    qy, qx : torch.Tensor
        Spatial-frequency grids, 1/nm (e.g. from :func:`spatial_frequencies`).
    wavelength : float
        Electron wavelength, nm.
    defocus : float or torch.Tensor
        Defocus, nm, positive = overfocus. A scalar gives the shape of the grids;
        a tensor of shape ``(N,)`` gives ``(N, H, W)``.
    cs : float or torch.Tensor
        Spherical aberration, mm.
    astigmatism : float or torch.Tensor
        Two-fold astigmatism magnitude ``A``, nm: the focus is ``df + A`` along the
        direction ``alpha`` and ``df - A`` perpendicular to it. Scalar or ``(N,)``.
    astigmatism_angle : float or torch.Tensor
        Astigmatism direction ``alpha``, rad, measured from ``+x`` toward ``+y``
        (columns toward rows). Scalar or ``(N,)``.

    Returns
    -------
    torch.Tensor
        ``chi`` in rad.
    """
    lam = _check_wavelength(wavelength)
    q2 = qx * qx + qy * qy
    df = _per_image(defocus, q2)
    cs_nm = _per_image(cs, q2) * _CS_MM_TO_NM
    chi = math.pi * lam * df * q2 + (0.5 * math.pi) * cs_nm * lam**3 * q2 * q2
    a = _per_image(astigmatism, q2)
    if isinstance(a, torch.Tensor) or a != 0:
        ang = _per_image(astigmatism_angle, q2)
        if isinstance(ang, torch.Tensor):
            c2, s2 = torch.cos(2 * ang), torch.sin(2 * ang)
        else:
            c2, s2 = math.cos(2 * ang), math.sin(2 * ang)
        # q^2 cos(2(theta_q - alpha)) = (qx^2 - qy^2) cos 2alpha + 2 qx qy sin 2alpha
        chi = chi + math.pi * lam * a * ((qx * qx - qy * qy) * c2 + 2 * qx * qy * s2)
    return chi


def coherence_envelope(qy, qx, wavelength, defocus, cs, theta_c, defocus_spread):
    """Partial-coherence envelope in the quasi-coherent approximation.

    ``E = exp(-[(pi lambda D)^2 q^4 / 2 + (pi theta / lambda)^2
    (Cs lambda^3 q^3 + df lambda q)^2] / u)``, ``u = 1 + 2 (pi theta D)^2 q^2``,
    with ``theta`` in rad inside the formula. ``0 < E <= 1`` and ``E(0) = 1``;
    with ``D = 0`` it is the pure spatial envelope, with ``theta = 0`` the pure
    temporal one. Astigmatism is neglected in the envelope.

    Parameters
    ----------
    qy, qx : torch.Tensor
        Spatial-frequency grids, 1/nm.
    wavelength : float
        Electron wavelength, nm.
    defocus : float or torch.Tensor
        Defocus, nm (positive = overfocus); scalar or ``(N,)``.
    cs : float or torch.Tensor
        Spherical aberration, mm.
    theta_c : float or torch.Tensor
        Illumination semi-angle (beam divergence), **mrad**; scalar or ``(N,)``.
    defocus_spread : float or torch.Tensor
        Focal spread ``D``, nm (1/e half-width of the Gaussian focal spread).

    Returns
    -------
    torch.Tensor
        Real envelope, dimensionless.
    """
    lam = _check_wavelength(wavelength)
    _check_nonneg(theta_c, "theta_c", "mrad")
    _check_nonneg(defocus_spread, "defocus_spread", "nm")
    q2 = qx * qx + qy * qy
    df = _per_image(defocus, q2)
    cs_nm = _per_image(cs, q2) * _CS_MM_TO_NM
    a = math.pi * _per_image(theta_c, q2) * _MRAD  # pi theta (rad)
    d = _per_image(defocus_spread, q2)
    # (pi theta / lambda)^2 (Cs lambda^3 q^3 + df lambda q)^2 = (pi theta)^2 q^2 (Cs lambda^2 q^2 + df)^2
    s = cs_nm * lam**2 * q2 + df
    spatial = a * a * q2 * s * s
    temporal = 0.5 * (math.pi * lam) ** 2 * (d * d) * q2 * q2
    u = 1.0 + 2.0 * (a * d) ** 2 * q2
    env = torch.exp(-(temporal + spatial) / u)
    return env


def objective_aperture(qy, qx, wavelength, semi_angle, edge_width=None):
    """Soft-edged circular objective aperture.

    The scattering angle is ``alpha = lambda |q|``. The aperture is 1 for
    ``alpha <= a - w/2``, 0 for ``alpha >= a + w/2`` and a raised cosine in
    between (``a`` = semi-angle, ``w`` = edge width); ``w = 0`` is a hard edge.

    Parameters
    ----------
    qy, qx : torch.Tensor
        Spatial-frequency grids, 1/nm.
    wavelength : float
        Electron wavelength, nm.
    semi_angle : float
        Aperture semi-angle, mrad (> 0).
    edge_width : float, optional
        Full width of the soft edge, mrad (>= 0). Default ``0.05 * semi_angle``.

    Returns
    -------
    torch.Tensor
        Real aperture function with the shape and dtype of the grids.
    """
    lam = _check_wavelength(wavelength)
    a = _check_nonneg(semi_angle, "semi_angle", "mrad")
    if isinstance(a, torch.Tensor):
        a = float(a)
    if a <= 0:
        raise ValueError(f"semi_angle must be positive (mrad), got {semi_angle!r}")
    w = 0.05 * a if edge_width is None else _check_nonneg(edge_width, "edge_width", "mrad")
    if isinstance(w, torch.Tensor):
        w = float(w)
    if w >= 2 * a:
        raise ValueError(f"edge_width ({w} mrad) must be smaller than 2 * semi_angle ({a} mrad)")
    alpha = torch.sqrt(qx * qx + qy * qy) * (lam / _MRAD)  # mrad
    if w == 0:
        return (alpha <= a).to(qx.dtype)
    x = ((alpha - (a - 0.5 * w)) / w).clamp(0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * x))


def transfer_function(qy, qx, wavelength, defocus, cs=0.0, theta_c=0.0,
                      defocus_spread=0.0, astigmatism=0.0, astigmatism_angle=0.0,
                      aperture=None, aperture_edge=None):
    """Complex objective-lens transfer function ``T = exp(-i chi) E A``.

    Parameters
    ----------
    qy, qx : torch.Tensor
        Spatial-frequency grids ``(H, W)``, 1/nm.
    wavelength : float
        Electron wavelength, nm.
    defocus : float or torch.Tensor
        Defocus, nm (positive = overfocus); scalar or ``(N,)``.
    cs : float
        Spherical aberration, mm.
    theta_c : float or torch.Tensor
        Illumination semi-angle, mrad (scalar or ``(N,)``).
    defocus_spread : float
        Focal spread, nm.
    astigmatism, astigmatism_angle : float or torch.Tensor
        Two-fold astigmatism magnitude (nm) and angle (rad, from ``+x`` toward
        ``+y``), scalars or ``(N,)``; see :func:`aberration_function`.
    aperture : float, optional
        Objective-aperture semi-angle, mrad; ``None`` for no aperture.
    aperture_edge : float, optional
        Soft-edge width of the aperture, mrad (see :func:`objective_aperture`).

    Returns
    -------
    torch.Tensor
        Complex tensor of shape ``(N, H, W)`` (``N = 1`` for a scalar defocus),
        ``complex64`` for ``float32`` grids, ``complex128`` for ``float64``.
    """
    if isinstance(defocus, torch.Tensor):
        defocus = defocus.reshape(-1) if defocus.ndim == 0 else defocus
    else:
        defocus = torch.as_tensor(defocus, dtype=qx.dtype, device=qx.device).reshape(-1)
    _check_finite(defocus, "defocus", "nm")
    chi = aberration_function(qy, qx, wavelength, defocus, cs, astigmatism, astigmatism_angle)
    env = coherence_envelope(qy, qx, wavelength, defocus, cs, theta_c, defocus_spread)
    if aperture is not None:
        env = env * objective_aperture(qy, qx, wavelength, aperture, aperture_edge)
    shape = torch.broadcast_shapes(chi.shape, env.shape)
    return torch.polar(env.expand(shape), -chi.expand(shape))
