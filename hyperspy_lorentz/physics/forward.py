"""Differentiable forward model of a Lorentz TEM through-focus series.

For an exit wave ``psi = A exp(i phi)`` the image recorded at defocus ``df_k`` is::

    I_k = s_k |F^-1[ F[psi] T_k R_k ]|^2 ,

with ``T_k = exp(-i chi_k) E_k P`` the objective transfer function of
:mod:`hyperspy_lorentz.physics.optics` (defocus, spherical aberration, optional
two-fold astigmatism, quasi-coherent envelope ``E``, optional aperture ``P``),
``R_k = exp(-2 pi i (fy dy_k + fx dx_k))`` a Fourier shift ramp (``fy, fx`` in
cycles per pixel, shifts ``(dy_k, dx_k)`` in **pixels**: a positive ``dy`` moves
the image content toward ``+y``, i.e. down the rows, a positive ``dx`` toward
``+x``, along the columns; an integer shift is exactly ``np.roll``) and ``s_k``
a per-image intensity scale. Units and signs follow :ref:`conventions`
(nm, keV, mm, mrad; positive defocus = overfocus).

:class:`ForwardModel` precomputes everything that does not change between
iterations of a fit (frequency grids, the ``Cs`` phase, the temporal envelope,
the aperture). The transfer function is

* cached (keyed on the parameter values) when no optical parameter requires a
  gradient -- the fast path for fitting the phase
  and amplitude (and the intensity scales);
* cached without the shifts, times separable 1-D shift ramps, when the shifts
  are the only learnt optical parameters;
* rebuilt on every call when defocus, ``theta_c`` or astigmatism are learnt.

The forward and backward passes are a custom :class:`torch.autograd.Function`
that performs exactly ``N + 1`` complex FFTs in each direction and saves only
the ``N`` image waves inside the field of view (plus ``F[psi]`` when optical
parameters are learnt):
gradients with respect to defocus, ``theta_c``, astigmatism, shifts and scale
are reduced analytically from the product of saved spectra, so no
``(N, H, W)`` autograd graph of the transfer function is kept. The
``1 / (H W)`` of the inverse FFT is folded into the cached transfer function,
and temporaries live in work buffers owned by the model, reused between calls
(a model instance is therefore not thread-safe). The backward pass works with
the complex conjugates of the adjoint spectra (``conj(F[g]) = F^-1[conj(g)]``
unscaled), so the conjugate transfer functions are never formed or stored. The backward pass is
once-differentiable (no double backward).

This module knows nothing about HyperSpy.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import optics
from .optics import (
    _check_beam_energy,
    _check_finite,
    _check_nonneg,
    _check_pixel_size,
    _check_shape,
)

__all__ = ["ForwardModel", "simulate_images", "NonFiniteError"]


class NonFiniteError(ValueError):
    """A phase, amplitude or optical parameter given to the model is NaN or inf.

    A subclass of ValueError, so that callers who check their input catch it
    as before; an optimiser catches it to reject a trial step that overflowed
    (its loss counts as infinite) instead of ending the fit.
    """

_PADDING_MODES = {"reflect": "reflect", "edge": "replicate"}
_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _next_fast_len(n):
    """Smallest 2,3,5,7-smooth integer >= n (fast for MKL / pocketfft)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


class ForwardModel:
    """Differentiable LTEM image formation for a focal series, on a fixed grid.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(H, W)`` of the phase, amplitude and images (pixels).
    pixel_size : float or tuple of float
        Pixel size, nm (one number or ``(py, px)``).
    beam_energy : float
        Accelerating voltage, keV.
    cs : float
        Spherical aberration, mm (default 1.0).
    theta_c : float
        Default illumination semi-angle (beam divergence), mrad (default 0.01);
        can be overridden (and learnt) per call.
    defocus_spread : float
        Focal spread ``D``, nm (1/e half-width; default 500).
    aperture : float, optional
        Objective-aperture semi-angle, mrad; ``None`` (default) for none.
    aperture_edge : float, optional
        Width of the aperture's raised-cosine edge, mrad (default 5 % of
        ``aperture``); see :func:`~hyperspy_lorentz.physics.optics.objective_aperture`.
    padding : {None, "reflect", "edge", "free"}
        Pad the phase and amplitude before propagation ("reflect": mirror
        without repeating the edge pixel; "edge": repeat the edge pixel) and
        crop the images back to ``shape``, which suppresses the wrap-around of
        the periodic FFT at the image borders. ``"free"``: the phase and
        amplitude are given on the padded grid (``padded_shape``, a canvas
        whose border holds specimen outside the field of view, see
        :mod:`hyperspy_lorentz.reconstruction.canvas`) and the images are the
        ``shape`` window at offset ``(pad_width)``.
    pad_width : int or tuple of int, optional
        Padding on each side, pixels, one number or ``(py, px)``; default a
        quarter of the image size. The padded size is rounded up to an
        FFT-friendly (7-smooth) length, the extra rows/columns going to the
        bottom/right. "reflect" requires the padding to be smaller than the
        image.
    device : torch.device or str
        Device of all tensors (default ``"cpu"``).
    dtype : torch.dtype
        ``torch.float32`` (default; waves are ``complex64``) or ``torch.float64``
        (``complex128``).

    Notes
    -----
    Call the model as ``model(phase, amplitude, defocus, ...)``; see
    :meth:`__call__`. The model never changes global torch settings (threads,
    default dtype). It keeps one transfer function of shape ``(N, Hp, Wp)`` and
    its conjugate in a cache keyed on the parameter values (used whenever no
    optical parameter but the shifts requires a gradient), plus a few
    ``(Hp, Wp)`` work buffers; :meth:`clear_cache` frees them. At
    5 x 2048 x 2048 float32 this is about 0.6 GiB, and one forward + backward
    pass adds about 0.3 GiB. Not thread-safe: use one model per thread.
    """

    def __init__(self, shape, pixel_size, beam_energy, cs=1.0, theta_c=0.01,
                 defocus_spread=500.0, aperture=None, aperture_edge=None,
                 padding=None, pad_width=None, device="cpu", dtype=torch.float32):
        self.shape = _check_shape(shape)
        self.pixel_size = _check_pixel_size(pixel_size)
        self.beam_energy = _check_beam_energy(beam_energy)
        self.wavelength = optics.wavelength(self.beam_energy)
        self.cs = float(_check_finite(cs, "cs", "mm"))
        self.theta_c = float(_check_nonneg(theta_c, "theta_c", "mrad"))
        self.defocus_spread = float(_check_nonneg(defocus_spread, "defocus_spread", "nm"))
        if aperture is not None:
            aperture = float(_check_nonneg(aperture, "aperture", "mrad"))
            if aperture <= 0:
                raise ValueError(f"aperture must be a positive semi-angle (mrad), got {aperture!r}")
        self.aperture = aperture
        self.aperture_edge = aperture_edge
        if dtype not in _COMPLEX:
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        self.dtype = dtype
        self.complex_dtype = _COMPLEX[dtype]
        self.device = torch.device(device)

        h, w = self.shape
        if padding is not None and padding not in _PADDING_MODES and padding != "free":
            raise ValueError(f"padding must be None, 'reflect', 'edge' or 'free', got "
                             f"{padding!r}")
        self.padding = padding
        if padding is None:
            if pad_width not in (None, 0, (0, 0)):
                raise ValueError("pad_width given without padding; set padding='reflect' or 'edge'")
            self._pad = (0, 0, 0, 0)  # top, bottom, left, right
            self.padded_shape = (h, w)
        else:
            if pad_width is None:
                py, px = (h + 3) // 4, (w + 3) // 4
            elif isinstance(pad_width, numbers.Integral):
                py = px = int(pad_width)
            else:
                try:
                    py, px = (int(v) for v in pad_width)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"pad_width must be a non-negative int or (py, px), got {pad_width!r}"
                    ) from None
            if py < 0 or px < 0:
                raise ValueError(f"pad_width must be non-negative, got {pad_width!r}")
            hp, wp = _next_fast_len(h + 2 * py), _next_fast_len(w + 2 * px)
            self._pad = (py, hp - h - py, px, wp - w - px)
            if padding == "reflect" and (max(self._pad[:2]) >= h or max(self._pad[2:]) >= w):
                raise ValueError(
                    f"pad_width {pad_width!r} too large for 'reflect' padding of a "
                    f"{h}x{w} image (each side must be smaller than the image)"
                )
            self.padded_shape = (hp, wp)
        self._build_grids()
        self._cache_key = None
        self._cache_T = None
        self._ws = {}
        self._zero = torch.zeros((), dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ set-up
    def _build_grids(self):
        hp, wp = self.padded_shape
        py, px = self.pixel_size
        lam = self.wavelength
        f64 = dict(dtype=torch.float64, device=self.device)
        fy = torch.fft.fftfreq(hp, **f64)  # cycles / pixel
        fx = torch.fft.fftfreq(wp, **f64)
        qy, qx = fy / py, fx / px  # 1/nm
        q2 = qy[:, None] ** 2 + qx[None, :] ** 2
        cs_nm = self.cs * 1e6
        D = self.defocus_spread
        cast = dict(dtype=self.dtype)
        self._fy, self._fx = fy.to(**cast), fx.to(**cast)
        self._qy, self._qx = qy.to(**cast), qx.to(**cast)
        self._qxc = qx.to(self.complex_dtype)
        self._q2 = q2.to(**cast)
        self._chi_cs = (0.5 * math.pi * cs_nm * lam**3 * q2 * q2).to(**cast) if cs_nm else None
        self._g = (cs_nm * lam**2 * q2).to(**cast) if cs_nm else None
        self._xt = (0.5 * (math.pi * lam * D) ** 2 * q2 * q2).to(**cast) if D else None
        if self.aperture is not None:
            qyy, qxx = torch.meshgrid(qy, qx, indexing="ij")
            ap = optics.objective_aperture(qyy, qxx, lam, self.aperture, self.aperture_edge)
            self._ap = ap.to(**cast)
        else:
            self._ap = None
        self._dq = None  # qx^2 - qy^2, built on first use of astigmatism
        self._xq = None  # 2 qx qy

    def _astig_fields(self):
        if self._dq is None:
            qy, qx = self._qy, self._qx
            self._dq = qx[None, :] ** 2 - qy[:, None] ** 2
            self._xq = 2.0 * qy[:, None] * qx[None, :]
        return self._dq, self._xq

    def clear_cache(self):
        """Free the cached transfer functions and work buffers."""
        self._cache_key = None
        self._cache_T = None
        self._ws = {}

    def _work(self, name, shape, dtype, zero_border=False):
        """Persistent work buffer (reused between calls to avoid page faults).

        Only used for temporaries that never outlive one forward or one backward
        pass. With ``zero_border`` the buffer is zeroed once; callers write only
        the crop window, so everything outside it stays zero.
        """
        buf = self._ws.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = (torch.zeros if zero_border else torch.empty)(
                shape, dtype=dtype, device=self.device)
            self._ws[name] = buf
        return buf

    def __repr__(self):
        return (
            f"ForwardModel(shape={self.shape}, pixel_size={self.pixel_size}, "
            f"beam_energy={self.beam_energy:g}, cs={self.cs:g}, theta_c={self.theta_c:g}, "
            f"defocus_spread={self.defocus_spread:g}, aperture={self.aperture}, "
            f"padding={self.padding!r}, padded_shape={self.padded_shape}, dtype={self.dtype})"
        )

    # ------------------------------------------------------------------ parameters
    def _vector(self, value, name, n, unit, nonneg=False):
        """Per-image parameter -> (tensor (n,) or None, list of n floats)."""
        if value is None:
            return None, None
        if not isinstance(value, torch.Tensor):
            arr = np.asarray(value, dtype=float)
            if arr.ndim > 1 or (arr.ndim == 1 and arr.size not in (1, n)):
                raise ValueError(f"{name} must be a scalar or have length {n} (one per image), "
                                 f"got shape {arr.shape}")
            value = torch.as_tensor(arr, dtype=self.dtype, device=self.device)
        else:
            value = value.to(device=self.device, dtype=self.dtype)
        if value.ndim == 0 or (value.ndim == 1 and value.shape[0] == 1 and n != 1):
            value = value.reshape(()).expand(n)
        if value.ndim != 1 or value.shape[0] != n:
            raise ValueError(f"{name} must be a scalar or have shape ({n},) (one per image), "
                             f"got shape {tuple(value.shape)}")
        vals = value.detach().cpu().tolist()
        if not all(math.isfinite(v) for v in vals):
            raise NonFiniteError(f"{name} must be finite ({unit})")
        if nonneg and any(v < 0 for v in vals):
            raise ValueError(f"{name} must be >= 0 ({unit}), got {vals}")
        return value, vals

    def _parameters(self, defocus, theta_c, astigmatism, astigmatism_angle, shifts, scale):
        if defocus is None:
            raise ValueError("defocus is required (nm, positive = overfocus)")
        if isinstance(defocus, torch.Tensor):
            df = defocus.to(device=self.device, dtype=self.dtype)
        else:
            arr = np.asarray(defocus, dtype=float)
            df = torch.as_tensor(arr, dtype=self.dtype, device=self.device)
        if df.ndim == 0:
            df = df.reshape(1)
        if df.ndim != 1 or df.shape[0] < 1:
            raise ValueError(f"defocus must be a scalar or a 1-D sequence (nm), got shape "
                             f"{tuple(df.shape)}")
        n = df.shape[0]
        df, df_vals = self._vector(df, "defocus", n, "nm")
        theta, theta_vals = self._vector(self.theta_c if theta_c is None else theta_c,
                                         "theta_c", n, "mrad", nonneg=True)
        if theta_c is None:
            theta = None  # constant: not an autograd input
        astig, astig_vals = self._vector(astigmatism, "astigmatism", n, "nm")
        angle, angle_vals = self._vector(astigmatism_angle, "astigmatism_angle", n, "rad")
        if astig is None and angle is not None:
            astig_vals = [0.0] * n
        if angle is None and astig is not None:
            angle_vals = [0.0] * n
        if shifts is not None:
            if not isinstance(shifts, torch.Tensor):
                shifts = torch.as_tensor(np.asarray(shifts, dtype=float))
            shifts = shifts.to(device=self.device, dtype=self.dtype)
            if shifts.shape == (2,):
                shifts = shifts.expand(n, 2)
            if shifts.shape != (n, 2):
                raise ValueError(f"shifts must have shape ({n}, 2) -- (dy, dx) in pixels per "
                                 f"image -- or (2,), got {tuple(shifts.shape)}")
            shift_vals = [tuple(r) for r in shifts.detach().cpu().tolist()]
            if not all(math.isfinite(v) for r in shift_vals for v in r):
                raise NonFiniteError("shifts must be finite (pixels)")
        else:
            shift_vals = None
        sc, sc_vals = self._vector(scale, "scale", n, "dimensionless")
        if sc is None:
            sc_vals = [1.0] * n
        vals = {
            "df": df_vals, "theta": theta_vals, "astig": astig_vals, "angle": angle_vals,
            "shifts": shift_vals, "scale": sc_vals,
        }
        return n, (df, theta, astig, angle, shifts, sc), vals

    def _check_wave(self, phase, amplitude):
        if not isinstance(phase, torch.Tensor):
            phase = torch.as_tensor(np.asarray(phase, dtype=float))
        phase = phase.to(device=self.device, dtype=self.dtype)
        expected = self.padded_shape if self.padding == "free" else self.shape
        if tuple(phase.shape) != expected:
            what = "the canvas shape" if self.padding == "free" else "the model shape"
            raise ValueError(f"phase must have shape {expected} ({what}), got "
                             f"{tuple(phase.shape)}")
        lo, hi = torch.aminmax(phase.detach())  # one pass; NaN and +-inf propagate
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise NonFiniteError("phase must be finite (rad)")
        if amplitude is not None:
            if not isinstance(amplitude, torch.Tensor):
                amplitude = torch.as_tensor(np.asarray(amplitude, dtype=float))
            amplitude = amplitude.to(device=self.device, dtype=self.dtype)
            if tuple(amplitude.shape) != tuple(phase.shape):
                raise ValueError(f"amplitude shape {tuple(amplitude.shape)} does not match phase "
                                 f"shape {tuple(phase.shape)}")
            lo, hi = torch.aminmax(amplitude.detach())
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise NonFiniteError("amplitude must be finite")
            if lo < 0:
                raise ValueError("amplitude must be non-negative")
        return phase, amplitude

    def _pad_field(self, x, value_mode):
        if self.padding in (None, "free"):
            return x
        t, b, l, r = self._pad
        return F.pad(x[None, None], (l, r, t, b), mode=value_mode)[0, 0]

    # ------------------------------------------------------------------ transfer
    def _magnitude(self, df, theta, out, tmp):
        """|T| = E * aperture for one image into ``out``; None when identically 1."""
        a = math.pi * theta * 1e-3
        D = self.defocus_spread
        if a == 0 and self._xt is None and self._ap is None:
            return None
        if a > 0:
            if self._g is not None:
                torch.add(self._g, df, out=out)
                out.square_()
            else:
                out.fill_(df * df)
            out.mul_(self._q2).mul_(a * a)
            if self._xt is not None:
                out.add_(self._xt)
            if D > 0:
                torch.mul(self._q2, 2.0 * (a * D) ** 2, out=tmp).add_(1.0)
                out.div_(tmp)
            out.neg_().exp_()
        elif self._xt is not None:
            torch.neg(self._xt, out=out).exp_()
        else:
            out.fill_(1.0)
        if self._ap is not None:
            out.mul_(self._ap)
        return out

    def _build_transfer(self, vals):
        """Transfer functions / (Hp Wp), shape (N, Hp, Wp), shift ramps included.

        No autograd. The factor ``1 / (Hp Wp)`` of the inverse FFT is folded in,
        so that the image wave is the *unscaled* inverse DFT of ``F[psi] T``.
        """
        hp, wp = self.padded_shape
        inv = 1.0 / (hp * wp)
        lam = self.wavelength
        n = len(vals["df"])
        T = torch.empty((n, hp, wp), dtype=self.complex_dtype, device=self.device)
        ang = self._work("tb_ang", (hp, wp), self.dtype)
        mag = self._work("tb_mag", (hp, wp), self.dtype)
        tmp = self._work("tb_tmp", (hp, wp), self.dtype)
        cb = self._work("tb_cos", (hp, wp), self.dtype)
        for k in range(n):
            torch.mul(self._q2, -math.pi * lam * vals["df"][k], out=ang)
            if self._chi_cs is not None:
                ang.sub_(self._chi_cs)
            if vals["astig"] is not None and vals["astig"][k] != 0:
                dq, xq = self._astig_fields()
                amp, al = vals["astig"][k], vals["angle"][k]
                ang.add_(dq, alpha=-math.pi * lam * amp * math.cos(2 * al))
                ang.add_(xq, alpha=-math.pi * lam * amp * math.sin(2 * al))
            if vals["shifts"] is not None:
                dy, dx = vals["shifts"][k]
                if dy:
                    ang.sub_((2 * math.pi * dy) * self._fy[:, None])
                if dx:
                    ang.sub_((2 * math.pi * dx) * self._fx[None, :])
            torch.cos(ang, out=cb)
            sb = torch.sin(ang, out=ang)
            m = self._magnitude(vals["df"][k], vals["theta"][k], mag, tmp)
            # the 1/(Hp Wp) of the inverse FFT is folded into T (unscaled IDFT later)
            if m is not None:
                m.mul_(inv)
                cb.mul_(m)
                sb.mul_(m)
            else:
                cb.mul_(inv)
                sb.mul_(inv)
            torch.complex(cb, sb, out=T[k])
        return T

    def _ramps(self, shifts):
        """Separable shift ramps exp(-2 pi i f d): ((N, Hp), (N, Wp)) complex."""
        d = torch.tensor(shifts, dtype=torch.float64, device=self.device)  # (N, 2) pixels
        fy = torch.fft.fftfreq(self.padded_shape[0], dtype=torch.float64, device=self.device)
        fx = torch.fft.fftfreq(self.padded_shape[1], dtype=torch.float64, device=self.device)
        ry = torch.exp(-2j * math.pi * d[:, :1] * fy[None, :])
        rx = torch.exp(-2j * math.pi * d[:, 1:] * fx[None, :])
        return ry.to(self.complex_dtype), rx.to(self.complex_dtype)

    def _transfer(self, vals, learnable):
        """T: cached, or rebuilt when parameters are learnt."""
        if learnable:
            return self._build_transfer(vals)
        key = (tuple(vals["df"]), tuple(vals["theta"]),
               None if vals["astig"] is None else tuple(vals["astig"]),
               None if vals["angle"] is None else tuple(vals["angle"]),
               None if vals["shifts"] is None else tuple(vals["shifts"]))
        if key != self._cache_key:
            self._cache_T = None  # free before allocating the new one
            self._cache_T = self._build_transfer(vals)
            self._cache_key = key
        return self._cache_T

    def transfer(self, defocus, *, theta_c=None, astigmatism=None, astigmatism_angle=None,
                 shifts=None):
        """Transfer functions used by the model, shift ramps included.

        Parameters
        ----------
        defocus, theta_c, astigmatism, astigmatism_angle, shifts
            As in :meth:`__call__`.

        Returns
        -------
        torch.Tensor
            Complex ``(N, Hp, Wp)`` tensor on the padded grid (a new tensor, no
            gradient).
        """
        _, _, vals = self._parameters(defocus, theta_c, astigmatism, astigmatism_angle,
                                      shifts, None)
        hp, wp = self.padded_shape
        return self._transfer(vals, learnable=False) * (hp * wp)

    # ------------------------------------------------------------------ call
    def __call__(self, phase, amplitude=None, defocus=None, *, theta_c=None, astigmatism=None,
                 astigmatism_angle=None, shifts=None, scale=None):
        """Simulate the focal series.

        Parameters
        ----------
        phase : torch.Tensor or array_like
            Exit-wave phase ``phi``, rad, shape ``(H, W)`` (``padded_shape``
            with ``padding="free"``).
        amplitude : torch.Tensor or array_like, optional
            Exit-wave amplitude ``A`` (>= 0), shape of ``phase``; ``None`` means 1.
        defocus : float, sequence or torch.Tensor
            Defocus values, nm, positive = overfocus: scalar or ``(N,)``. Required.
        theta_c : float or torch.Tensor, optional
            Illumination semi-angle, mrad, scalar or ``(N,)``; default the model's.
        astigmatism : float or torch.Tensor, optional
            Two-fold astigmatism magnitude, nm, scalar or ``(N,)`` (focus
            ``df + A`` along ``astigmatism_angle``, ``df - A`` perpendicular).
        astigmatism_angle : float or torch.Tensor, optional
            Astigmatism direction, rad, from ``+x`` toward ``+y``; scalar or ``(N,)``.
        shifts : array_like or torch.Tensor, optional
            Image shifts ``(dy, dx)`` in pixels, shape ``(N, 2)`` or ``(2,)``;
            positive values move the image content toward ``+y`` / ``+x``.
        scale : float or torch.Tensor, optional
            Intensity scale per image, scalar or ``(N,)``; default 1.

        Returns
        -------
        torch.Tensor
            Real images ``(N, H, W)`` in units of the incident intensity.

        Notes
        -----
        Every tensor argument may require a gradient; a scalar tensor is shared
        by all images. Tensors are cast to the model dtype and device.
        """
        phase, amplitude = self._check_wave(phase, amplitude)
        n, tensors, vals = self._parameters(defocus, theta_c, astigmatism, astigmatism_angle,
                                            shifts, scale)
        df, theta, astig, angle, sh, sc = tensors
        phase_p = self._pad_field(phase, _PADDING_MODES.get(self.padding))
        amp_p = None if amplitude is None else self._pad_field(
            amplitude, _PADDING_MODES.get(self.padding))
        optical = (df, theta, astig, angle, sh)
        grad = torch.is_grad_enabled()
        learnable = grad and any(t is not None and t.requires_grad for t in optical[:4])
        ramps = None
        if not learnable and grad and sh is not None and sh.requires_grad:
            # only the shifts are learnt: cached T without shifts, separable ramps
            T = self._transfer(dict(vals, shifts=None), False)
            ramps = self._ramps(vals["shifts"])
        else:
            T = self._transfer(vals, learnable)
        inputs = (phase_p, amp_p, sc) + optical
        if grad and any(t is not None and t.requires_grad for t in inputs):
            keep_spectrum = learnable or ramps is not None
            return _Images.apply(phase_p, amp_p, sc, df, theta, astig, angle, sh, T, ramps,
                                 self, vals, keep_spectrum)
        with torch.no_grad():
            images, _, _ = _forward(self, phase_p, amp_p, T, None, vals, save=False)
        return images


# ---------------------------------------------------------------------- kernels
def _forward(model, phase, amplitude, T, ramps, vals, save):
    """Images (N, H, W); also the image waves in the crop window and F[psi] if ``save``.

    The waves are the ``ifft2`` outputs themselves without a border, else a copy
    of their crop window (all the backward pass reads). ``ramps`` (or None)
    are separable shift ramps ``(ry (N, Hp), rx (N, Wp))`` applied after ``T``.
    """
    hp, wp = model.padded_shape
    h, w = model.shape
    t, _, l, _ = model._pad
    cropped = (hp, wp) != (h, w)
    n = T.shape[0]
    cd, rd, dev = model.complex_dtype, model.dtype, model.device

    c = torch.cos(phase, out=model._work("c", (hp, wp), rd))
    s = torch.sin(phase, out=model._work("s", (hp, wp), rd))
    if amplitude is not None:
        c.mul_(amplitude)
        s.mul_(amplitude)
    psi = torch.complex(c, s, out=model._work("psi", (hp, wp), cd))
    psi_hat = torch.fft.fft2(psi)
    del c, s, psi

    images = torch.empty((n, h, w), dtype=rd, device=dev)
    u = model._work("u", (hp, wp), cd)
    zero = model._zero
    waves = []
    for k in range(n):
        torch.mul(psi_hat, T[k], out=u)
        if ramps is not None:
            u.mul_(ramps[0][k, :, None]).mul_(ramps[1][k, None, :])
        wk = torch.fft.ifft2(u, norm="forward")  # unscaled: T carries the 1/(Hp Wp)
        wc = wk[t:t + h, l:l + w] if cropped else wk
        ik = images[k]
        s_k = vals["scale"][k]
        if s_k == 1.0:
            torch.mul(wc.real, wc.real, out=ik)
            ik.addcmul_(wc.imag, wc.imag)
        else:
            torch.addcmul(zero, wc.real, wc.real, value=s_k, out=ik)
            ik.addcmul_(wc.imag, wc.imag, value=s_k)
        if save:
            waves.append(wc.clone() if cropped else wk)
        del wk, wc
    return images, waves, psi_hat


class _Images(torch.autograd.Function):
    """Custom autograd for the focal-series forward model (see module docstring)."""

    @staticmethod
    def forward(ctx, phase, amplitude, scale, defocus, theta, astig, angle, shifts, T,
                ramps, model, vals, keep_spectrum):
        images, waves, psi_hat = _forward(model, phase, amplitude, T, ramps, vals, save=True)
        ctx.save_for_backward(phase, amplitude, psi_hat if keep_spectrum else None, *waves)
        ctx.T, ctx.model, ctx.vals, ctx.ramps = T, model, vals, ramps
        return images

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        phase, amplitude, psi_hat, *waves = ctx.saved_tensors
        T, model, vals, ramps = ctx.T, ctx.model, ctx.vals, ctx.ramps
        nig = ctx.needs_input_grad
        need_phase, need_amp, need_scale = nig[0], nig[1], nig[2]
        need_df, need_theta, need_astig, need_angle, need_shift = nig[3:8]
        need_wave = need_phase or need_amp
        need_opt = need_df or need_theta or need_astig or need_angle or need_shift
        if need_opt and psi_hat is None:  # pragma: no cover - guarded in __call__
            raise RuntimeError("optical-parameter gradients need the saved spectrum")

        hp, wp = model.padded_shape
        h, w = model.shape
        t, _, l, _ = model._pad
        n = len(waves)
        cd, rd, dev = model.complex_dtype, model.dtype, model.device
        G = grad_out

        # conj(G_k W_k) on the padded grid, zero outside the crop window (kept zero).
        # Everything below is the complex conjugate of the textbook adjoint:
        # conj(DFT[x]) = IDFT[conj(x)] (unscaled), so conj(T_k) is never needed.
        gw = model._work("gw", (hp, wp), cd, zero_border=True)
        acc = None
        if need_wave:
            acc = model._work("psi", (hp, wp), cd)
            acc.zero_()

        g = {name: torch.zeros(n, dtype=rd, device=dev) if flag else None
             for name, flag in (("scale", need_scale), ("df", need_df), ("theta", need_theta),
                                ("astig", need_astig), ("angle", need_angle))}
        g_shift = torch.zeros((n, 2), dtype=rd, device=dev) if need_shift else None
        env_cache = {}
        gg = torch.view_as_real(model._work("gg", (h, w), cd))  # (G, -G) interleaved
        gwin = gw[t:t + h, l:l + w]
        gwr = torch.view_as_real(gwin)
        for k in range(n):
            wk = waves[k]  # the crop window
            two_s = 2.0 * vals["scale"][k]
            # G_k conj(W_k) via a real product with (G, -G) (faster than promoting G)
            torch.complex(G[k], -G[k], out=torch.view_as_complex(gg))
            torch.mul(torch.view_as_real(wk), gg, out=gwr)
            if need_scale:
                # sum G |W|^2 = Re sum W (G conj(W))
                g["scale"][k] = (wk * gwin).sum().real
            if not (need_wave or need_opt):
                continue
            # W_k = IDFT[psi_hat T_k] (unscaled inverse, T_k holds the 1/(Hp Wp)), so
            # dL/dU_k = DFT[dL/dW_k] with dL/dW_k = 2 s_k G_k W_k; its conjugate:
            fk = torch.fft.ifft2(gw, norm="forward")  # conj(DFT[G_k W_k])
            if ramps is not None:  # the shift ramp, part of T_k
                fk.mul_(ramps[0][k, :, None]).mul_(ramps[1][k, None, :])
            if need_wave:
                acc.addcmul_(T[k], fk, value=two_s)  # conj(sum_k conj(T_k) DFT[dL/dW_k])
            if need_opt:
                q = torch.mul(T[k], fk, out=fk)
                q.mul_(psi_hat)  # U_k conj(dL/dU_k) / (2 s_k)
                _optical_grads(model, q, two_s, k, vals, g, g_shift, env_cache,
                               need_df, need_theta, need_astig, need_angle, need_shift)
            del fk
        del waves

        grad_phase = grad_amp = None
        if need_wave:
            # dL/dpsi (torch convention dL/dRe + i dL/dIm) = IDFT[conj(acc)] unscaled
            # = conj(DFT[acc]): real part gp.real, imaginary part -gp.imag
            gp = torch.fft.fft2(acc)
            gr, gi = gp.real, gp.imag
            c = torch.cos(phase, out=model._work("c", (hp, wp), rd))
            s = torch.sin(phase, out=model._work("s", (hp, wp), rd))
            if need_amp:
                grad_amp = torch.mul(gr, c)  # Re(g exp(-i phi))
                grad_amp.addcmul_(gi, s, value=-1.0)
            if need_phase:
                grad_phase = torch.mul(gi, c)  # A Im(g exp(-i phi))
                grad_phase.addcmul_(gr, s).neg_()
                if amplitude is not None:
                    grad_phase.mul_(amplitude)
        return (grad_phase, grad_amp, g["scale"], g["df"], g["theta"], g["astig"], g["angle"],
                g_shift, None, None, None, None, None)


def _proj_re(q_re, field):
    """sum q_re * field for two contiguous real arrays."""
    return torch.dot(q_re.reshape(-1), field.reshape(-1))


def _optical_grads(model, Q, fac, k, vals, g, g_shift, env_cache, need_df, need_theta,
                   need_astig, need_angle, need_shift):
    """Accumulate dL/dp of the optical parameters of image k.

    With ``T = |T| exp(-i chi)``, ``dL/dp = sum Re(P) dln|T|/dp + sum Im(P) dchi/dp``
    where ``P = conj(dL/dT) T = fac * Q`` (``Q = U_k conj(dL/dU_k) / fac``).
    """
    lam = model.wavelength
    qy, qx = model._qy, model._qx
    need_chi = need_df or need_astig or need_angle or need_shift
    if need_chi:
        rs = Q.sum(dim=1)  # (Hp,) complex: sum over columns
        cs = Q.sum(dim=0)  # (Wp,)
        im_rs, im_cs = fac * rs.imag, fac * cs.imag  # Im(P) row / column sums
        if need_df or need_astig or need_angle:
            sy = (im_rs * qy * qy).sum()
            sx = (im_cs * qx * qx).sum()
        if need_df:
            g["df"][k] += math.pi * lam * (sy + sx)  # dchi/ddf = pi lambda q^2
        if need_astig or need_angle:
            im_dq = sx - sy  # sum Im(P) (qx^2 - qy^2)
            im_xq = 2.0 * fac * (qy * torch.mv(Q, model._qxc).imag).sum()  # sum Im(P) 2 qx qy
            amp, al = vals["astig"][k], vals["angle"][k]
            c2, s2 = math.cos(2 * al), math.sin(2 * al)
            if need_astig:
                g["astig"][k] += math.pi * lam * (c2 * im_dq + s2 * im_xq)
            if need_angle:
                g["angle"][k] += math.pi * lam * amp * (-2.0 * s2 * im_dq + 2.0 * c2 * im_xq)
        if need_shift:  # dchi/ddy = 2 pi fy (cycles per pixel)
            g_shift[k, 0] += 2.0 * math.pi * (im_rs * model._fy).sum()
            g_shift[k, 1] += 2.0 * math.pi * (im_cs * model._fx).sum()

    theta = vals["theta"][k]
    a = math.pi * theta * 1e-3
    if a == 0 or not (need_df or need_theta):
        return  # envelope derivatives w.r.t. df and theta vanish at theta = 0
    D = model.defocus_spread
    q2 = model._q2
    shape, rd = q2.shape, q2.dtype
    if env_cache.get("theta") != theta:  # fields shared by images with the same theta
        if D > 0:
            u = torch.mul(q2, 2.0 * (a * D) ** 2, out=model._work("env_u", shape, rd)).add_(1.0)
            wq = torch.div(q2, u, out=model._work("env_w", shape, rd))
        else:
            u, wq = None, q2
        env_cache.update(theta=theta, u=u, wq=wq)
    u, wq = env_cache["u"], env_cache["wq"]
    q_re = model._work("env_q", shape, rd).copy_(Q.real)  # contiguous Re(Q)
    df = vals["df"][k]
    # s = Cs lambda^2 q^2 + df;  ln E = -(Xt + a^2 q2 s^2) / u
    s = model._work("env_s", shape, rd)
    if model._g is not None:
        torch.add(model._g, df, out=s)
    else:
        s.fill_(df)
    f = model._work("env_f", shape, rd)
    if need_df:
        # d ln E / d df = -2 a^2 (q2 / u) s
        torch.mul(wq, s, out=f)
        g["df"][k] += -2.0 * a * a * fac * _proj_re(q_re, f)
    if need_theta:
        # d ln E / da = -2 a w s^2 + 4 a D^2 (w / u) (Xt + a^2 q2 s^2),  w = q2 / u
        s2 = s.square_()
        torch.mul(wq, s2, out=f).mul_(-2.0 * a)
        if D > 0:
            num = torch.mul(q2, s2, out=model._work("env_n", shape, rd))
            num.mul_(a * a)
            if model._xt is not None:
                num.add_(model._xt)
            num.mul_(wq).div_(u)
            f.add_(num, alpha=4.0 * a * D * D)
        g["theta"][k] += math.pi * 1e-3 * fac * _proj_re(q_re, f)


# ---------------------------------------------------------------------- numpy API
def simulate_images(phase, amplitude, defocus, pixel_size, beam_energy=200.0, cs=1.0,
                    theta_c=0.01, defocus_spread=500.0, *, astigmatism=None,
                    astigmatism_angle=None, shifts=None, scale=None, aperture=None,
                    aperture_edge=None, padding=None, pad_width=None, dtype=None):
    """Simulate an LTEM focal series from NumPy arrays.

    Parameters
    ----------
    phase : array_like
        Exit-wave phase, rad, shape ``(H, W)``.
    amplitude : array_like or None
        Exit-wave amplitude (>= 0), shape ``(H, W)``; ``None`` means 1.
    defocus : float or sequence of float
        Defocus values, nm, positive = overfocus.
    pixel_size : float or tuple of float
        Pixel size, nm.
    beam_energy : float
        Accelerating voltage, keV (default 200).
    cs : float
        Spherical aberration, mm (default 1.0).
    theta_c : float
        Illumination semi-angle, mrad (default 0.01).
    defocus_spread : float
        Focal spread, nm (default 500).
    astigmatism, astigmatism_angle : float or sequence, optional
        Two-fold astigmatism magnitude (nm) and direction (rad from ``+x`` toward
        ``+y``), per image or shared.
    shifts : array_like, optional
        Image shifts ``(dy, dx)``, pixels, shape ``(N, 2)`` or ``(2,)``.
    scale : float or sequence, optional
        Intensity scale per image.
    aperture, aperture_edge : float, optional
        Objective-aperture semi-angle and edge width, mrad.
    padding : {None, "reflect", "edge"}, optional
        Padding against FFT wrap-around, see :class:`ForwardModel`.
    pad_width : int or tuple of int, optional
        Padding per side, pixels.
    dtype : numpy dtype, optional
        ``float32`` or ``float64``; default ``float32`` for a float32 phase,
        ``float64`` otherwise.

    Returns
    -------
    numpy.ndarray
        Images, shape ``(N, H, W)``.
    """
    phase = np.asarray(phase)
    if phase.ndim != 2:
        raise ValueError(f"phase must be a 2-D array (rad), got shape {phase.shape}")
    if dtype is None:
        dtype = np.float32 if phase.dtype == np.float32 else np.float64
    tdtype = {np.dtype(np.float32): torch.float32,
              np.dtype(np.float64): torch.float64}.get(np.dtype(dtype))
    if tdtype is None:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    model = ForwardModel(phase.shape, pixel_size, beam_energy, cs=cs, theta_c=theta_c,
                         defocus_spread=defocus_spread, aperture=aperture,
                         aperture_edge=aperture_edge, padding=padding, pad_width=pad_width,
                         dtype=tdtype)
    with torch.no_grad():
        out = model(torch.as_tensor(phase.astype(dtype, copy=False)),
                    None if amplitude is None else torch.as_tensor(
                        np.asarray(amplitude).astype(dtype, copy=False)),
                    defocus, astigmatism=astigmatism, astigmatism_angle=astigmatism_angle,
                    shifts=shifts, scale=scale)
    return out.numpy()
