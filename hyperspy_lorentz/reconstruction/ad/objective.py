"""The objective of an AD fit: data terms, prior, and its whitened variables.

``_Problem`` is the negative log-posterior of one stage per measured pixel:
the data term (Gaussian amplitudes, ``_GaussianData``, or Poisson counts,
``_PoissonData``, fused value-and-gradient kernels) on the measured window
of the canvas (``coverage``: the measured fraction of it), plus the (joint)
total-variation prior; its variables are one flat vector, whitened by Fourier
preconditioners (phase, log-amplitude) and finite-difference curvatures (the
optical parameters).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hyperspy_lorentz.physics import optics
from hyperspy_lorentz.reconstruction._torch_common import _tv
from hyperspy_lorentz.reconstruction.canvas import DRIFT_MARGIN, Canvas, free_border

#: Smoothing of the total variation, rad per pixel: gradients well below it are
#: penalised quadratically (smooth magnetic phase ramps), larger ones linearly
#: (edges are kept).
TV_EPSILON = 0.05
#: Weight ``kappa`` of the log-amplitude gradients in the joint TV (rad per unit
#: of ln A): a 5 % amplitude step counts like a 0.5 rad phase step.
JOINT_TV_COUPLING = 5.0
#: Floor of the Fourier preconditioner, relative to the largest curvature.
PRECONDITIONER_FLOOR = 1e-2
#: Weight of the TV curvature (flat regions) in the Fourier preconditioner.
PRECONDITIONER_TV = 1.0
#: Offset inside the square root of the Gaussian data term (normalised units).
_SQRT_EPS = 1e-6


class _GaussianData(torch.autograd.Function):
    """Gaussian amplitude misfit of mean-normalised images, fused (value and gradient).

    ``sum_n w_n sum_x (sqrt(s_n I_n / <I_n> + e) - d_n)^2`` with ``w`` (N, 1, 1)
    already divided by ``2 M``.
    """

    @staticmethod
    def forward(ctx, img, scale, data, w, eps):
        p = img[0].numel()
        m = img.mean(dim=(1, 2), keepdim=True)
        f = 1.0 / m if scale is None else scale.reshape(-1, 1, 1) / m
        norm = img * f
        a = torch.add(norm, eps).sqrt_()
        r = a - data
        value = (w * (r * r).sum(dim=(1, 2), keepdim=True)).sum()
        g = r.mul_(w).div_(a)  # dL/dnorm = w r / a
        ctx.save_for_backward(g, norm, m, f, scale)
        ctx.p = p
        return value

    @staticmethod
    def backward(ctx, grad):
        g, norm, m, f, scale = ctx.saved_tensors
        sgn = (g * norm).sum(dim=(1, 2), keepdim=True)  # sum dL/dnorm * norm
        gi = g * f
        gi.sub_(sgn / (m * ctx.p))
        gi.mul_(grad)
        gs = None
        if scale is not None and ctx.needs_input_grad[1]:
            gs = (sgn.reshape(-1) / scale) * grad
        return gi, gs, None, None, None


class _PoissonData(torch.autograd.Function):
    """Poisson deviance / 2 of mean-normalised images, fused:
    ``sum (lam - k - k ln(lam / k)) / M`` (the NLL ``sum (lam - k ln lam) / M``
    less its value at ``lam = k``).

    ``lam = dose_n s_n I_n / <I_n>``; ``dose`` (N, 1, 1). Each pixel's term is
    formed before the sum, from the ratio ``lam / k``: the NLL and its saturated
    part apart are ``k ln k`` large (1e6 per pixel at 1e5 counts), and their
    difference in float32 was rounded to a tenth of a unit of chi^2 per pixel,
    which stalled fits at high dose.
    """

    @staticmethod
    def forward(ctx, img, scale, counts, dose, inv_m):
        p = img[0].numel()
        m = img.mean(dim=(1, 2), keepdim=True)
        f = 1.0 / m if scale is None else scale.reshape(-1, 1, 1) / m
        norm = img * f
        lam = norm * dose
        lam.add_(1e-12)
        # k ln(lam / k) (0 where k = 0), then lam - k - that
        term = torch.div(lam, torch.clamp(counts, min=1.0)).log_().mul_(counts)
        value = term.neg_().add_(lam).sub_(counts).sum() * inv_m
        del term
        # dL/dnorm = dose (1 - k / lam) / M
        g = torch.div(counts, lam).neg_().add_(1.0).mul_(dose * inv_m)
        ctx.save_for_backward(g, norm, m, f, scale)
        ctx.p = p
        return value

    backward = _GaussianData.backward


class _Problem:
    """The objective of one stage on a flat vector of whitened variables.

    ``start`` holds the physical starting values (the zero of the whitened
    variables): ``phase`` (tensor), ``amplitude`` (tensor or None), ``defocus``
    (N,), ``shifts`` (N, 2), ``theta_c`` (mrad), ``astig`` (``A cos 2a``,
    ``A sin 2a``, nm), ``scale`` (N,).

    ``shift_reference`` (N booleans) marks the images whose drift the data fix
    (those with contrast): only their shifts are fitted, and they are fitted
    relative to their mean (the shift gauge: the mean over them stays at its
    start, which is 0 unless a coarse pass set it in the same gauge). The
    shifts of the other images stay at their start.
    """

    def __init__(self, *, data, weights, likelihood, dose, model, start, refine, beta, eps,
                 kappa, periodic, shift_reference, device, dtype, coverage=1.0):
        self.model = model
        self.device, self.dtype = device, dtype
        self.likelihood = likelihood
        # the data (N, H, W) are the measured window; the fields (h, w) the canvas
        self.n = data.shape[0]
        self.h, self.w = start["phase"].shape
        self.coverage = float(coverage)
        self.m = float(data.numel())
        self.data = data  # Gaussian: measured amplitudes; Poisson: counts
        self.wt = weights.reshape(-1, 1, 1)  # Gaussian: 1 / sigma^2
        self.sqrt_wt = torch.sqrt(self.wt)
        self.wt_half = self.wt / (2.0 * float(data.numel()))
        self.dose = None if dose is None else dose.reshape(-1, 1, 1)
        self.refine = tuple(refine)
        self.beta, self.eps, self.kappa = float(beta), float(eps), float(kappa)
        self.periodic = periodic
        self.shift_reference = np.asarray(shift_reference, bool)
        self._raw_shifts = False  # True while calibrating: per-image shifts, no gauge
        t = dict(dtype=dtype, device=device)
        self.phase0 = start["phase"]
        amp = start["amplitude"]
        if "amplitude" in self.refine and amp is None:
            amp = torch.ones((self.h, self.w), **t)
        self.amp0 = amp
        self.logamp0 = (torch.log(torch.clamp(amp, min=1e-6))
                        if "amplitude" in self.refine else None)
        self.df0 = torch.as_tensor(np.asarray(start["defocus"], dtype=float), **t)
        sh = start.get("shifts")
        if sh is None and "shifts" in self.refine:
            sh = np.zeros((self.n, 2))
        self.shifts0 = (None if sh is None or (not np.any(sh) and "shifts" not in self.refine)
                        else torch.as_tensor(np.asarray(sh, dtype=float), **t))
        self.theta0 = float(start["theta_c"])
        ac = np.asarray(start["astig"], dtype=float)
        if "astigmatism" in self.refine and not np.any(ac):
            ac = np.array([1e-3, 0.0])  # away from the singular point A = 0
        self.ac0 = torch.as_tensor(ac, **t)
        self.astig_fixed = None
        if "astigmatism" not in self.refine and np.any(ac):
            self.astig_fixed = (float(np.hypot(ac[0], ac[1])),
                                float(0.5 * math.atan2(ac[1], ac[0])))
        self.scale0 = torch.as_tensor(np.asarray(start["scale"], dtype=float), **t)
        self.scale_fixed = bool(np.any(np.asarray(start["scale"]) != 1.0))
        # layout of the flat vector
        n, h, w = self.n, self.h, self.w
        sizes = [("phase", h * w)]
        for name, size in (("amplitude", h * w), ("defocus", n), ("shifts", 2 * n),
                           ("theta_c", 1), ("astigmatism", 2), ("scale", n)):
            if name in self.refine:
                sizes.append((name, size))
        self.slices = {}
        o = 0
        for name, size in sizes:
            self.slices[name] = slice(o, o + size)
            o += size
        self.size = o
        self.inv_sqrt_h = {name: torch.ones(sl.stop - sl.start, **t)
                           for name, sl in self.slices.items()
                           if name not in ("phase", "amplitude")}
        self.shift_mask = self.shift_gauge = None
        if "shifts" in self.refine:
            self.shift_gauge = torch.as_tensor(self.shift_reference.astype(float), **t)
            self.shift_mask = self.shift_gauge.repeat_interleave(2)
        self.precond = None
        self.precond_amp = None

    # ------------------------------------------------------------ parameters
    def _field(self, x, name, p):
        v = x[self.slices[name]].reshape(self.h, self.w)
        return torch.fft.irfft2(torch.fft.rfft2(v) * p, s=(self.h, self.w))

    def physical(self, x):
        """Physical parameters (tensors) from the flat vector ``x``."""
        out = {"phase": self.phase0 + self._field(x, "phase", self.precond)}
        if "amplitude" in self.slices:
            out["amplitude"] = torch.exp(self.logamp0 + self._field(x, "amplitude",
                                                                    self.precond_amp))
        else:
            out["amplitude"] = self.amp0
        if "defocus" in self.slices:
            out["defocus"] = self.df0 + x[self.slices["defocus"]] * self.inv_sqrt_h["defocus"]
        else:
            out["defocus"] = self.df0
        if "shifts" in self.slices:
            z = (x[self.slices["shifts"]] * self.inv_sqrt_h["shifts"]
                 * self.shift_mask).reshape(self.n, 2)
            if not self._raw_shifts:  # relative to the mean over the reference images
                g = self.shift_gauge[:, None]
                z = z - g * ((g * z).sum(dim=0) / self.shift_gauge.sum())
            out["shifts"] = self.shifts0 + z
        else:
            out["shifts"] = self.shifts0
        if "theta_c" in self.slices:
            z = x[self.slices["theta_c"]] * self.inv_sqrt_h["theta_c"]
            out["theta_c"] = self.theta0 * torch.exp(z[0])
        else:
            out["theta_c"] = None
        if "astigmatism" in self.slices:
            out["astig"] = self.ac0 + x[self.slices["astigmatism"]] * self.inv_sqrt_h[
                "astigmatism"]
        else:
            out["astig"] = None
        if "scale" in self.slices:
            out["scale"] = self.scale0 * torch.exp(x[self.slices["scale"]]
                                                   * self.inv_sqrt_h["scale"])
        else:
            out["scale"] = self.scale0 if self.scale_fixed else None
        return out

    def raw_images(self, phys, model=None):
        """Model images (N, H, W) before the mean normalisation."""
        model = self.model if model is None else model
        # theta_c of the state even when it is not fitted here: the model's own
        # is the nominal value, and a refined one must not fall back to it
        kw = {"theta_c": self.theta0 if phys["theta_c"] is None else phys["theta_c"]}
        if phys["astig"] is not None:
            ac = phys["astig"]
            kw["astigmatism"] = torch.sqrt(ac[0] * ac[0] + ac[1] * ac[1] + 1e-30)
            kw["astigmatism_angle"] = 0.5 * torch.atan2(ac[1], ac[0])
        elif self.astig_fixed is not None:
            kw["astigmatism"], kw["astigmatism_angle"] = self.astig_fixed
        if phys["shifts"] is not None:
            kw["shifts"] = phys["shifts"]
        return model(phys["phase"], phys["amplitude"], phys["defocus"], **kw)

    def images(self, phys, model=None):
        """Mean-normalised model images (N, H, W), times the scales."""
        img = self.raw_images(phys, model)
        img = img / img.mean(dim=(1, 2), keepdim=True)
        if phys["scale"] is not None:
            img = img * phys["scale"].reshape(-1, 1, 1)
        return img

    def white_amplitudes(self, img):
        """Model amplitudes whose squared differences are chi^2 (whitened)."""
        if self.likelihood == "gaussian":
            return torch.sqrt(img + _SQRT_EPS) * self.sqrt_wt
        return 2.0 * torch.sqrt(img * self.dose + 1e-12)

    # ------------------------------------------------------------ objective
    def data_term(self, img, scale=None):
        """Negative log-likelihood / M of raw model images (normalised here)."""
        if self.likelihood == "gaussian":
            return _GaussianData.apply(img, scale, self.data, self.wt_half, _SQRT_EPS)
        return _PoissonData.apply(img, scale, self.data, self.dose, 1.0 / self.m)

    def prior(self, phys):
        if self.beta <= 0:
            return 0.0
        if "amplitude" in self.slices and self.kappa > 0:
            tv = _tv(phys["phase"], self.eps, self.periodic, torch.log(phys["amplitude"]),
                     self.kappa)
        else:
            tv = _tv(phys["phase"], self.eps, self.periodic)
        return (self.beta / self.m) * tv

    def loss(self, x):
        phys = self.physical(x)
        return self.data_term(self.raw_images(phys), phys["scale"]) + self.prior(phys)

    # ------------------------------------------------------------ set-up
    def build_preconditioners(self, wl, cs, spread, pixel_size):
        """Diagonal Gauss-Newton Fourier preconditioners of phase and log-amplitude."""
        h, w = self.h, self.w
        dev = self.device
        fy = torch.fft.fftfreq(h, d=pixel_size[0], dtype=torch.float64, device=dev)
        fx = torch.fft.rfftfreq(w, d=pixel_size[1], dtype=torch.float64, device=dev)
        qy, qx = torch.meshgrid(fy, fx, indexing="ij")
        ac = self.ac0.to(torch.float64).cpu().numpy()
        T = optics.transfer_function(
            qy, qx, wl, self.df0.to(torch.float64), cs=cs, theta_c=self.theta0,
            defocus_spread=spread, astigmatism=float(np.hypot(ac[0], ac[1])),
            astigmatism_angle=float(0.5 * math.atan2(ac[1], ac[0])))
        if self.likelihood == "gaussian":
            wn = self.wt.reshape(-1).to(torch.float64)
        else:
            wn = 4.0 * self.dose.reshape(-1).to(torch.float64)
        wn = wn.reshape(-1, 1, 1)
        # per Fourier coefficient of the canvas: only the measured fraction of it
        # contributes data curvature
        hp = (wn * T.imag**2).sum(0) * (self.coverage / self.m)
        ha = (wn * T.real**2).sum(0) * (self.coverage / self.m)
        # TV curvature in flat regions: beta |D(q)|^2 / eps
        cy = torch.fft.fftfreq(h, dtype=torch.float64, device=dev)[:, None]
        cx = torch.fft.rfftfreq(w, dtype=torch.float64, device=dev)[None, :]
        d2 = 4.0 * torch.sin(math.pi * cy) ** 2 + 4.0 * torch.sin(math.pi * cx) ** 2
        # for the effective degrees of freedom (see expected_chi2): data
        # curvatures, TV curvature per unit weight, and the multiplicity of each
        # rfft column in the full spectrum
        mult = torch.full((w // 2 + 1,), 2.0, dtype=torch.float64, device=dev)
        mult[0] = 1.0
        if w % 2 == 0:
            mult[-1] = 1.0
        self.curvatures = dict(phase=hp, amplitude=ha if "amplitude" in self.slices else None,
                               amplitude_data=ha,
                               tv=d2 / (self.eps * self.m), multiplicity=mult[None, :])
        tv = PRECONDITIONER_TV * self.beta / self.eps * d2 / self.m
        hp = hp + tv
        ha = ha + tv * self.kappa**2

        def prec(hq):
            p = 1.0 / torch.sqrt(hq + PRECONDITIONER_FLOOR * float(hq.max()))
            p[0, 0] = 0.0  # the mean phase (log-amplitude) is not measured
            cdt = torch.complex64 if self.dtype == torch.float32 else torch.complex128
            return p.to(cdt)

        self.precond = prec(hp)
        self.precond_amp = prec(ha)

    def expected_chi2(self, beta, mixing=0.0):
        """Reduced chi^2 expected of a fit at TV weight ``beta`` that fits no noise
        beyond its effective degrees of freedom.

        The linearised (weak-phase, quadratic-TV) model is diagonal in Fourier
        space: coefficient ``q`` of the phase is determined by the data to the
        fraction ``s_q = H_q / (H_q + beta |D_q|^2 / (eps M))``, ``H_q`` the data
        curvature of :meth:`build_preconditioners` (the log-amplitude likewise,
        with ``kappa^2``). For such a linear smoother the residual sum of squares
        of pure noise is ``M - sum(2 s_q - s_q^2)`` noise variances (Hastie,
        Tibshirani & Friedman, *Elements of Statistical Learning*, sec. 7.6), so
        ``1 - sum(2 s - s^2) / M``.

        ``mixing`` is the fraction of the exit wave scattered by a strong phase,
        ``1 - |<A exp(i phi)>|^2 / <A^2>`` (about the phase variance of a weak
        phase): the linearisation about a strong phase mixes the phase and
        amplitude transfers, so each field is measured by
        ``(1 - mixing) sin^2 chi + mixing / 2`` (``cos^2 chi`` for the
        amplitude) rather than by ``sin^2 chi`` alone.
        """
        c = self.curvatures
        both = c["phase"] + c["amplitude_data"]
        dof = 0.0
        for field, k2 in (("phase", 1.0), ("amplitude", self.kappa**2)):
            if c[field] is None:
                continue
            h = (1.0 - mixing) * c[field] + 0.5 * mixing * both
            s = h / (h + beta * k2 * c["tv"] + 1e-300)
            s[0, 0] = 0.0  # the mean is not measured
            dof += float((c["multiplicity"] * (2.0 * s - s * s)).sum())
        return 1.0 - dof / self.m

    @torch.no_grad()
    def calibrate(self, x0):
        """Whiten the scalar blocks with finite-difference Gauss-Newton curvatures."""
        self._raw_shifts = True
        try:
            self._calibrate(x0)
        finally:
            self._raw_shifts = False

    def _calibrate(self, x0):
        base = self.white_amplitudes(self.images(self.physical(x0)))
        dfmax = float(self.df0.abs().max())
        for name in self.inv_sqrt_h:
            sl = self.slices[name]
            k = sl.stop - sl.start
            curv = torch.zeros(k, dtype=torch.float64, device=self.device)
            if name == "defocus":
                step, groups = 1e-3 * dfmax + 1.0, [list(range(k))]
            elif name == "shifts":
                step, groups = 0.05, [list(range(0, k, 2)), list(range(1, k, 2))]
            elif name == "scale":
                step, groups = 1e-3, [list(range(k))]
            elif name == "theta_c":
                step, groups = 0.05, [[0]]
            else:  # astigmatism vector, nm
                step, groups = 1e-3 * dfmax + 1.0, [[0], [1]]
            for g in groups:
                x = x0.clone()
                idx = torch.tensor(g, device=self.device)
                x[sl.start + idx] += step
                d = self.white_amplitudes(self.images(self.physical(x))) - base
                d2 = (d.to(torch.float64) ** 2).sum(dim=(1, 2)) / self.m / step**2
                if name in ("defocus", "scale"):
                    curv[:] = d2  # image i depends on parameter i only
                elif name == "shifts":
                    curv[idx] = d2
                else:
                    curv[g[0]] = d2.sum()
            if name == "shifts":
                curv = curv.reshape(-1, 2)
                curv[torch.as_tensor(~self.shift_reference, device=self.device)] = 1.0
                curv = curv.reshape(-1)
            floor = 1e-12 * max(float(curv.max()), 1e-30)
            self.inv_sqrt_h[name] = (1.0 / torch.sqrt(torch.clamp(curv, min=floor))).to(
                self.dtype)

    @torch.no_grad()
    def chi2_change(self, x, other):
        """chi^2 between the images of this problem and of the problem ``other``
        (another state or model, the same layout) at ``x``."""
        a = self.white_amplitudes(self.images(self.physical(x)))
        b = self.white_amplitudes(other.images(other.physical(x)))
        return float(((a - b).to(torch.float64) ** 2).sum())

    @torch.no_grad()
    def state(self, x):
        """Physical parameters at ``x`` as a ``start`` dict (detached)."""
        phys = self.physical(x)
        ac = self.ac0 if phys["astig"] is None else phys["astig"]
        return {
            "phase": phys["phase"].detach().clone(),
            "amplitude": None if phys["amplitude"] is None else phys["amplitude"].detach().clone(),
            "defocus": phys["defocus"].detach().to(torch.float64).cpu().numpy().copy(),
            "shifts": (None if phys["shifts"] is None
                       else phys["shifts"].detach().to(torch.float64).cpu().numpy().copy()),
            "theta_c": (self.theta0 if phys["theta_c"] is None else float(phys["theta_c"])),
            "astig": ac.detach().to(torch.float64).cpu().numpy().copy(),
            "scale": (self.scale0 if phys["scale"] is None
                      else phys["scale"]).detach().to(torch.float64).cpu().numpy().copy(),
        }


def _canvas(o, shape, df, drift_margin=None):
    """The canvas of the exit wave and its border (``None`` unless free)."""
    h, w = shape
    refine = o.refine
    if o.padding == "free":
        border = free_border((h, w), o.pixel, o.energy, df, o.cs, o.theta_c, o.defocus_spread,
                             drift_margin=(0 if "shifts" not in refine else DRIFT_MARGIN
                                           if drift_margin is None else drift_margin))
        canvas = Canvas.around((h, w), border)
    else:
        border, canvas = None, Canvas.periodic((h, w))
    return border, canvas
