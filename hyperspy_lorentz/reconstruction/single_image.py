"""Single-image automatic-differentiation (AD) phase retrieval.

For in-situ and low-dose Lorentz TEM, where a focal series cannot be recorded,
the magnetic phase of a specimen of *uniform amplitude* is retrieved from one
defocused image by fitting the differentiable microscope
(:class:`~hyperspy_lorentz.physics.forward.ForwardModel`) to it, with a
total-variation (TV) prior, starting from the single-image TIE (SITIE, Chess et
al., Ultramicroscopy 177, 78 (2017)). This is the single-image counterpart of
:func:`hyperspy_lorentz.reconstruction.ad.reconstruct_ad` (Zhou, Cherukara &
Phatak, npj Comput. Mater. 7, 141 (2021)); the same group's follow-up, SIPRAD
(McCray et al., 2024), solves the same problem with a deep-image-prior network
instead of the TV prior.

Pure array kernel: NumPy arrays in, an
:class:`~hyperspy_lorentz.reconstruction.ad.ADResult` out; nothing here knows
about HyperSpy. Units and signs follow :ref:`conventions` (lengths nm, ``Cs``
mm, ``theta_c`` mrad, beam energy keV, defocus positive for overfocus).

Model
-----
The exit wave is ``exp(i phi)`` (uniform amplitude). The phase lives on a
*canvas* larger than the image by a free border of ``pad`` pixels on every side
(the electrons seen at the edge of the field of view were deflected by specimen
outside it): the canvas is propagated with periodic boundaries and the model
image is the central ``H x W`` window, divided by its mean. ``pad`` is the
Fresnel spread ``lambda |df| q_max`` (``q_max`` where the coherence envelope
falls to :data:`~hyperspy_lorentz.reconstruction.canvas.ENVELOPE_CUTOFF`, at most
the Nyquist frequency), in pixels, capped at half the image size.
Mean-normalising the model profiles out the unknown intensity scale (for
Poisson data this is exactly its maximum-likelihood value).

Objective
---------
As in :mod:`~hyperspy_lorentz.reconstruction.ad`, every term is a negative
log-probability divided by the number ``M = H W`` of pixels:

* ``likelihood="poisson"`` (default): ``sum (lam - k - k log(lam / k))`` with
  ``lam = dose I / <I>`` and ``k`` the counts: the half Poisson deviance per
  pixel, about 0.5 at the solution, summed pixel by pixel (the negative
  log-likelihood less its value at ``lam = k``; the two summed apart lost the
  difference to float32 rounding at high counts);
* ``likelihood="gaussian"``: ``sum (sqrt(I/<I>) - sqrt(y/<y>))^2 / (2 sigma^2)``
  on amplitudes, ``sigma`` estimated from the image
  (:func:`~hyperspy_lorentz.reconstruction.tie.estimate_noise`) and floored at
  1 % as in the focal-series fits
  (:data:`~hyperspy_lorentz.reconstruction.ad.data.NOISE_FLOOR`, the model's own
  error). With the earlier floor of 0.1 %, noise-free images were weighted so
  heavily that the fit did not converge in 1000 iterations: over the 12
  noise-free rows of ``benchmarks/bench_specimens.py`` at 256 px the accuracy
  rose from -0.23-0.996 to 0.73-0.998 (islands -0.10 -> 0.93, the paper's
  object 0.28 / 0.30 -> 0.87 / 0.77, the lattice window 0.79 -> 0.99), except
  on the domain walls (0.93 / 0.89 -> 0.89 / 0.81: a heavier prior flattens
  their ramps);

plus two priors on the canvas phase:

* the smoothed isotropic total variation
  ``beta sum (sqrt(|grad phi|^2 + eps^2) - eps)`` (gradients in rad per pixel).
  Because the data term is in units of the noise, ``beta`` is a MAP rate
  (1/rad) that does not depend on the dose. ``regularization="auto"`` estimates
  the scale of the phase gradient from the data, ``g`` = the mean of
  ``|grad phi|`` of the SITIE solution, and uses a Laplace prior of that scale:
  ``beta = TV_RATE / g`` and ``eps = TV_EPSILON_FRACTION * g``, so the
  regularisation follows the strength of the phase (a 10 nm film needs five
  times the weight of a 50 nm one);
* a weak ridge ``sum (phi - <phi>)^2 / (2 PHASE_VARIANCE)``: a Gaussian prior
  of variance :data:`PHASE_VARIANCE` (4 rad^2) per pixel, the same at every dose,
  which sets the components the image does not determine (below) to zero
  instead of leaving them to drift; components with a data curvature
  ``w sin^2(chi) E^2`` (``w = 4 dose`` for Poisson, ``1 / sigma^2`` for
  Gaussian) well above ``1 / PHASE_VARIANCE`` are not affected.

The TV constants were calibrated on simulated skyrmion lattices (10 to 50 nm
films, 50 and 500 electrons per pixel, 128 and 256 pixels;
``benchmarks/bench_single_image.py --scan``): larger weights raise the
normalised cross-correlation with the truth a little further but shrink the
phase (the retrieved magnetic induction) at low dose.

Weight rules and when they fail
-------------------------------
* TV weight ``TV_RATE / g`` (``g`` the *mean* phase gradient of SITIE): the
  median failed on islands in vacuum, where vacuum dominates it (``beta``
  about 100, a phase flattened to its steps). The mean still underweights
  specimens with a few strong edges in a large flat field.
* Ridge: the earlier ridge ``1e-3 w sum phi^2`` scaled with the dose, i.e. a
  prior variance ``1 / (8e-3 dose)`` (0.125 rad^2 at 1000 e-/px): it shrank the
  strong, extended phase of islands with their electrostatic phase (variance
  about 1 rad^2; accuracy 0.745 instead of 0.967 at 1000 e-/px, 128 px, 500
  iterations) and of
  domain walls (3.7 rad^2; 0.59 instead of 0.81). A prior on the phase does not
  depend on the dose. No ridge at all costs the skyrmion-lattice window 0.015
  (saddle-shaped components set by the phase outside the field, which the TV
  of a lattice hardly penalises). Rules tried and rejected (128 px, benchmark
  specimens): a discrepancy rule (the data term is at or below its expected
  value 0.5 whatever the ridge: the components the ridge sets are, by
  construction, those the data do not measure, so the data cannot choose it);
  an evidence (MacKay) update of a white prior's variance and a variance taken
  from the SITIE or a ridge-free fit (both far below the true variance, as
  SITIE and the TV shrink the long wavelengths: the ridge then grows at every
  update), and a stronger ridge on the unmeasured border of the canvas only
  (no gain on the lattice). The ridge is the noise-limited cut-off of the
  image: a mode of spatial frequency ``q`` is set by the data where
  ``4 dose sin^2(pi lambda df q^2) E^2 PHASE_VARIANCE > 1`` and by the prior
  below that ``q_min``, which therefore follows from the dose, the defocus
  and the assumed phase scale (at 1000 e-/px and 0.25 mm, wavelengths above
  about 600 nm; the old ridge cut at about 350 nm whatever the phase).
  ``PHASE_VARIANCE`` is a constant, not estimated from the data, and it is a
  compromise: weak phases prefer a stronger ridge (skyrmion-lattice window
  0.985 at 0.5 rad^2, 0.980 at 4, 0.988 with the old ridge) and specimens
  whose phase varies by much more than 2 rad rms over the field a weaker one
  (domain walls 0.81 at 4, 0.86 at 64): their longest wavelengths are
  shrunk, as the old ridge did for islands.
* Learning rate: on strong phase steps Adam at the default rate oscillates
  about the minimum (loss 1.6 instead of 0.85 on the islands); the fit
  restarts from the best iterate with a smaller rate when the loss stalls
  (:data:`LR_DECAYS`, :data:`LR_DECAY_FACTOR`), and may take up to
  :data:`DEFAULT_MAX_ITERATIONS` (1000) iterations: the islands at
  1000 e-/px need 750-850 (0.967 at 500, 0.985 at convergence).
* Islands *windows* (the array crossing the frame, 1000 e-/px) stayed at about
  0.63 with Adam: the strong edges cut by the frame stalled it. L-BFGS, the
  default since, reaches 0.985 (see "Optimisation").

Specimens of :mod:`hyperspy_lorentz.data`, 128 x 128 pixels, the image of
most contrast, accuracy against the total phase (noise seeds 0 / 1; before:
dose-scaled ridge, 500 iterations, no restarts; "now": the Gaussian prior and
Adam with restarts; the last column, seed 0 of ``benchmarks/bench_specimens.py``,
with L-BFGS):

==============================  ===============  ===============  ======
specimen, dose (e-/px)          before           now (Adam)       L-BFGS
==============================  ===============  ===============  ======
islands isolated, 1000          0.745 / 0.748    0.985 / 0.987    0.982
islands isolated, 100           0.958 / 0.957    0.973 / 0.972    0.973
islands window, 1000            0.503 / 0.502    0.636 / 0.629    0.985
islands window, 100             0.952 / 0.956    0.984 / 0.985    0.984
skyrmion lattice window, 1000   0.988 / 0.988    0.980 / 0.980    0.980
skyrmion lattice window, 100    0.982 / 0.983    0.979 / 0.980    0.979
domain walls window, 1000       0.595 / 0.593    0.807 / 0.803    0.807
vortex discs isolated, 1000     0.495 / 0.497    0.921 / 0.924    0.948
==============================  ===============  ===============  ======

(The vortex discs absorb: their amplitude is not uniform, against the model.)

What one image does not determine
---------------------------------
One image measures, to first order, the Laplacian of the phase. Phase
components with a small Laplacian inside the field of view -- ramps (a uniform
in-plane induction), saddles (harmonic functions, fixed by the phase outside
the field of view) and bowls (whose uniform contrast trades against the
unknown intensity scale) -- are fixed by the priors, not by the data. The phase
is therefore a *local* magnetic phase, like that of SITIE, and features much
larger than the Fresnel length ``sqrt(lambda |df|)`` are attenuated.

Optimisation
------------
L-BFGS by default (``optimizer="lbfgs"``: the optimiser of the focal-series
fits, in :mod:`~hyperspy_lorentz.reconstruction.ad.optimiser`), or
Adam (``optimizer="adam"``, with a :data:`WARMUP_ITERATIONS` linear warm-up
and restarts at a smaller rate when the loss stalls), on whitened variables:
``phi = phi_0 + F^-1[p(q) F[u]]`` with ``u = 0`` at the start and the diagonal
Fourier preconditioner ``p = H(q)^(-1/2)``, ``H`` the Gauss-Newton curvature of
the weak-phase data term (``w sin^2(chi) E^2`` per coefficient, times the
fraction of the canvas that is measured) plus those of the quadratic part of
the TV and of the ridge, so that the low spatial frequencies, transferred only
as ``q^2``, converge as fast as the others. One iteration is one forward and
one backward pass of the model. The best iterate is returned; the fit stops
when the best loss improved by less than ``tolerance`` (relative) over
:data:`CONVERGENCE_WINDOW` iterations, at ``max_iterations``, on
``KeyboardInterrupt`` (best iterate, ``interrupted=True``, a warning) or when
the loss becomes NaN (best finite iterate, a RuntimeWarning).

L-BFGS against Adam on every row of ``benchmarks/bench_specimens.py`` (one
seed per row; 48 rows at 128 x 128 and 48 at 256 x 256; measured with the
earlier 0.1 % noise floor): better by more than
0.005 in 13 and 15 rows, worse in 6 and 5, the same in the rest, in about the
same wall time (58 s against 57 s for the 48 rows at 128 px; the set-up
dominates a small fit). Better where Adam stalled at its 1000 iterations:
islands crossing the frame at 1000 e-/px 0.985 against 0.649 (0.915 against
0.626 at 256 px), noise-free lattice and stripe windows 0.921 and 0.964 against
0.739 and 0.822. Worse on the absorbing vortex discs (by 0.02-0.10) and on the
noise-free domain walls (0.927 against 0.960 periodic), where L-BFGS reaches a
lower loss than Adam but a phase further from the truth: the model (uniform
amplitude) or the prior, not the optimiser, is then what fails. Noise-free
islands stayed poor with both (0.34-0.55 at 128 px) until the noise floor was
raised to 1 % (0.986 / 0.860 isolated / window; see "Objective").

Benchmark
---------
``benchmarks/bench_single_image.py``: skyrmion lattice (period 90 nm,
``Ms = 4e5 A/m``, ``t = 50 nm``), 256 x 256 pixels of 4 nm, 0.5 mm overfocus,
200 kV; mean over three noise/lattice seeds of the normalised cross-correlation
with the truth (8-pixel border excluded):

=================  =======  ================  ===============
dose (e-/px)       SITIE    SITIE (periodic)  single-image AD
=================  =======  ================  ===============
50                 0.70     0.981             0.986
500                0.70     0.984             0.990
=================  =======  ================  ===============

(seeds 1-3, remeasured with the dose-independent ridge and the learning-rate
restarts; the minimum over seeds of SITIE is 0.15), about 1.8 s per
256 x 256 image on one CPU thread (0.99 at both doses at
1 mm overfocus, where SITIE also underestimates the phase by 20-45 %). SITIE's
mirror (Neumann) boundaries leave large saddle-shaped errors when electrons
cross the edges of the field of view; the AD fit models those electrons (free
border) instead.

A deep image prior (a small U-Net from fixed noise generating the phase
correction, fitted to the same objective; 128 x 128 pixels, two seeds, 1000
iterations): alone (TV weight 0), accuracy 0.75 / 0.977 at 50 / 500 e-/px at
its lowest loss (0.964 / 0.993 with early stopping chosen using the truth),
against 0.983 / 0.990 for TV; with the TV as well, 0.984 / 0.993, for 120-175 s
instead of 1-1.6 s per image. Not worth an option.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch

from hyperspy_lorentz.physics import optics
from hyperspy_lorentz.physics.forward import ForwardModel, NonFiniteError, _next_fast_len
from hyperspy_lorentz.reconstruction._torch_common import (
    _as_float,
    _regularization,
    _resolve_device,
    _torch_dtype,
    _tv,
)
from hyperspy_lorentz.reconstruction.ad import ADResult
# the floor of the estimated relative amplitude noise of the Gaussian likelihood:
# the focal-series fits' (1 %), which stands for the model's own error
from hyperspy_lorentz.reconstruction.ad.data import NOISE_FLOOR
from hyperspy_lorentz.reconstruction.ad.objective import _PoissonData
from hyperspy_lorentz.reconstruction.canvas import free_border
from hyperspy_lorentz.reconstruction.tie import estimate_noise, sitie_phase

__all__ = [
    "reconstruct_single_image",
    "canvas_padding",
    "TV_RATE",
    "TV_EPSILON_FRACTION",
    "PHASE_VARIANCE",
]

#: ``regularization="auto"``: the TV weight is ``beta = TV_RATE / g``, with ``g``
#: the mean phase gradient of the SITIE solution (rad per pixel): a Laplace
#: prior on the gradient whose scale is estimated from the data (calibrated on
#: simulated skyrmion lattices, ``benchmarks/bench_single_image.py --scan``).
TV_RATE = 0.4
#: Smoothing of the TV, as a fraction of ``g``: gradients much smaller than
#: ``TV_EPSILON_FRACTION * g`` are penalised quadratically, larger ones linearly.
TV_EPSILON_FRACTION = 1.2
#: Floor of ``g``, rad per pixel (an image without contrast).
GRADIENT_FLOOR = 1e-4
#: Prior variance of the phase, rad^2 per pixel: the ridge
#: ``sum (phi - <phi>)^2 / (2 PHASE_VARIANCE)`` (a Gaussian prior, independent of
#: the dose) sets the phase components the image does not measure (transferred
#: with ``w sin^2(chi) E^2 << 1 / PHASE_VARIANCE``, ``w`` the data curvature) to
#: zero instead of leaving them to drift. 4 rad^2 (an rms phase of 2 rad) is
#: above the phase variance of every benchmark specimen (0.1 to 3.7 rad^2 over a
#: 128-pixel field), so measured components are not shrunk.
PHASE_VARIANCE = 4.0
#: When the best loss stalls (no decrease by ``tolerance`` over
#: :data:`CONVERGENCE_WINDOW` iterations: converged, or Adam oscillating about a
#: strong-phase minimum), the fit restarts from the best iterate with the learning
#: rate times :data:`LR_DECAY_FACTOR`, at most :data:`LR_DECAYS` times, before it
#: counts as converged.
LR_DECAYS = 3
#: Factor applied to the learning rate at each restart (see :data:`LR_DECAYS`).
LR_DECAY_FACTOR = 0.3
#: Floor of the Fourier preconditioner, relative to its largest curvature.
PRECONDITIONER_FLOOR = 1e-6
#: Default Adam learning rate, whitened units.
DEFAULT_LEARNING_RATE = 0.01
#: Iterations of linear learning-rate warm-up (Adam's first steps are +-lr
#: in every variable).
WARMUP_ITERATIONS = 10
#: Default iteration limit.
DEFAULT_MAX_ITERATIONS = 1000
#: Default relative tolerance on the decrease of the best loss over
#: :data:`CONVERGENCE_WINDOW` iterations.
DEFAULT_TOLERANCE = 1e-5
#: Iterations over which the relative loss decrease is compared to ``tolerance``.
CONVERGENCE_WINDOW = 20

_LIKELIHOODS = ("poisson", "gaussian")
_INITS = ("sitie", "flat")
_PRIORS = ("tv",)
_OPTIMIZERS = ("lbfgs", "adam")


# ============================================================================ checks
def _check_image(image, likelihood):
    img = np.asarray(image)
    if img.dtype == object or not (np.issubdtype(img.dtype, np.number)
                                   or img.dtype == np.bool_):
        raise ValueError("image must be a numeric (H, W) array of intensities")
    if np.iscomplexobj(img):
        raise ValueError("image must be real intensities, not a complex wave; pass abs(wave)**2")
    img = img.astype(np.float64)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(
            f"image must be one 2-D image (H, W), got shape {img.shape}; for a focal "
            f"series use reconstruct_ad")
    h, w = img.shape
    if h < 8 or w < 8:
        raise ValueError(f"image must be at least 8 x 8 pixels, got {h} x {w}")
    bad = ~np.isfinite(img)
    if bad.any():
        raise ValueError(
            f"image contains {int(bad.sum())} non-finite (NaN/inf) pixels; replace them "
            f"(e.g. interpolate dead pixels) or crop them away first")
    if not np.any(img != 0):
        raise ValueError("image is all zeros; pass the recorded intensities (counts)")
    if likelihood == "poisson" and img.min() < 0:
        raise ValueError(
            f"likelihood='poisson' needs non-negative counts, but the image has "
            f"{int((img < 0).sum())} negative pixels (minimum {img.min():.4g}); pass the "
            f"raw counts (no background subtraction), or use likelihood='gaussian'")
    if img.mean() <= 0:
        raise ValueError("image must have a positive mean intensity; pass the recorded "
                         "intensities, not a background-subtracted image")
    return img


def _check_defocus(defocus):
    if isinstance(defocus, (list, tuple, np.ndarray)) and np.size(defocus) == 1:
        defocus = np.asarray(defocus).reshape(()).item()  # a length-1 defocus axis
    d = _as_float(defocus, "defocus", "nm, positive = overfocus",
                  fix="; single-image AD needs the defocus of the one image")
    if d == 0:
        raise ValueError(
            "defocus is 0: an in-focus image of a uniform-amplitude specimen shows no "
            "magnetic contrast; pass the (nonzero) defocus of the image in nm, positive "
            "for overfocus")
    return d


# ============================================================================ helpers
def canvas_padding(shape, pixel_size, beam_energy, defocus, cs=1.0, theta_c=0.01,
                   defocus_spread=500.0):
    """Free border of the phase canvas, pixels, for an image of ``shape``.

    The Fresnel spread ``lambda |df| q_max`` in pixels (rounded up), with
    ``q_max`` the spatial frequency at which the coherence envelope falls to
    :data:`~hyperspy_lorentz.reconstruction.canvas.ENVELOPE_CUTOFF` (at most the
    Nyquist frequency), capped at half the larger image side; at least 4.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(H, W)``.
    pixel_size : float or (float, float)
        Pixel size, nm.
    beam_energy : float
        keV.
    defocus : float
        nm.
    cs, theta_c, defocus_spread : float
        mm, mrad, nm.

    Returns
    -------
    (int, int)
        ``(py, px)``: pixels added above and below, left and right.
    """
    # one implementation of the border for every AD solver (reconstruction/canvas.py)
    return free_border(shape, pixel_size, beam_energy, float(defocus), cs, theta_c,
                       defocus_spread)


def _preconditioner(shape, pixel, wavelength, df, cs, theta_c, spread, *, weight, coverage,
                    beta, eps, ridge, m, dtype, device):
    """Diagonal Gauss-Newton Fourier preconditioner of the phase (rfft layout).

    ``p = (H + floor)^(-1/2)`` with ``H`` the curvature per Fourier coefficient of
    the weak-phase data term (``weight sin^2(chi) E^2``, times the measured
    fraction of the canvas), of the quadratic part of the TV
    (``beta / eps |2 sin(pi f)|^2``) and of the ridge, all divided by ``m``.
    """
    hc, wc = shape
    f64 = dict(dtype=torch.float64, device=device)
    fy = torch.fft.fftfreq(hc, d=pixel[0], **f64)
    fx = torch.fft.rfftfreq(wc, d=pixel[1], **f64)
    qy, qx = torch.meshgrid(fy, fx, indexing="ij")
    T = optics.transfer_function(qy, qx, wavelength, df, cs=cs, theta_c=theta_c,
                                 defocus_spread=spread).reshape(qy.shape)
    h = weight * coverage * T.imag**2
    if beta > 0:
        sy = torch.sin(math.pi * qy * pixel[0]) ** 2
        sx = torch.sin(math.pi * qx * pixel[1]) ** 2
        h = h + (beta / eps) * 4.0 * (sy + sx)
    h = (h + 2.0 * ridge) / m
    p = 1.0 / torch.sqrt(h + PRECONDITIONER_FLOOR * float(h.max()))
    p[0, 0] = 0.0  # the mean phase is not measured
    return p.to(dtype)


class _Objective:
    """The loss, of the canvas phase or of the whitened variables ``u``."""

    def __init__(self, *, model, data, likelihood, dose, weight, phase0, precond, window,
                 beta, eps, ridge):
        self.model = model
        self.data = data  # Poisson: counts; Gaussian: mean-normalised amplitudes
        self.likelihood = likelihood
        self.dose = dose
        self.weight = weight  # Gaussian: 1 / sigma^2
        self.phase0 = phase0
        self.precond = precond
        self.window = window
        self.beta = beta
        self.eps = eps
        self.ridge = ridge
        self.m = float(data.numel())
        self.shape = tuple(phase0.shape)

    def phase(self, u):
        """Canvas phase of the whitened variables ``u``."""
        return self.phase0 + torch.fft.irfft2(torch.fft.rfft2(u) * self.precond, s=self.shape)

    def image(self, phi, defocus):
        """Mean-normalised model image in the measured window."""
        (t, b), (l, r) = self.window
        img = self.model(phi, None, defocus)[0, t:b, l:r]
        return img / img.mean()

    def _poisson(self, img):
        """Half the Poisson deviance per pixel of the mean-normalised image ``img``:
        the focal-series fits' fused kernel
        (``_PoissonData`` of :mod:`~hyperspy_lorentz.reconstruction.ad.objective`), which
        forms each pixel's ``lam - k - k ln(lam / k)`` before the sum."""
        return _PoissonData.apply(img[None], None, self.data[None], self.dose, 1.0 / self.m)

    def data_loss(self, phi, defocus):
        img = self.image(phi, defocus)
        if self.likelihood == "poisson":
            return self._poisson(img)
        r = torch.sqrt(img + 1e-6) - self.data
        return 0.5 * self.weight * (r * r).sum() / self.m

    def loss_of_phase(self, phi, defocus):
        img = self.image(phi, defocus)
        if self.likelihood == "poisson":
            loss = self._poisson(img)
        else:
            r = torch.sqrt(img + 1e-6) - self.data
            loss = 0.5 * self.weight * (r * r).sum() / self.m
        if self.beta > 0:
            loss = loss + (self.beta / self.m) * _tv(phi, self.eps, periodic=True)
        if self.ridge > 0:
            d = phi - phi.mean()
            loss = loss + (self.ridge / self.m) * (d * d).sum()
        return loss

    def __call__(self, u, defocus):
        return self.loss_of_phase(self.phase(u), defocus)


def _adam(objective, defocus, u0, *, lr, max_iterations, tolerance, window, progress):
    """Adam with warm-up, best-iterate tracking, NaN and KeyboardInterrupt handling.

    ``losses[i]`` is the loss of the ``i``-th iterate (``losses[0]``: the start);
    every iteration costs one forward and one backward pass. Converged: the best
    loss decreased by less than ``tolerance`` (relative) over ``window``
    iterations.
    """
    u = u0.clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    state = dict(losses=[], best_u=u0.clone(), best=math.inf, iterations=0, converged=False,
                 nonfinite=False, interrupted=False, decays=0)
    lr_now = lr
    losses = state["losses"]

    def evaluate():
        opt.zero_grad(set_to_none=True)
        try:
            loss = objective(u, defocus)
        except NonFiniteError:  # a diverged step: stop with the best finite iterate
            return math.nan
        lv = float(loss.detach())
        if math.isfinite(lv):
            loss.backward()
        return lv

    lv = evaluate()
    if not math.isfinite(lv):
        raise FloatingPointError(
            "single-image AD: the loss is not finite at the starting point; check the "
            "image, defocus and optical parameters (units nm, mm, mrad, keV)")
    losses.append(lv)
    state["best"] = lv
    bests = [lv]
    try:
        while state["iterations"] < max_iterations:
            for group in opt.param_groups:
                group["lr"] = lr_now * min(1.0, (state["iterations"] + 1) / WARMUP_ITERATIONS)
            opt.step()
            state["iterations"] += 1
            lv = evaluate()
            if not math.isfinite(lv):
                state["nonfinite"] = True
                break
            losses.append(lv)
            if lv < state["best"]:
                state["best"] = lv
                state["best_u"] = u.detach().clone()
            bests.append(state["best"])
            if progress is not None:
                progress(state["iterations"], lv)
            if tolerance > 0 and len(bests) > window:
                if bests[-1 - window] - bests[-1] <= tolerance * max(abs(bests[-1]), 1e-30):
                    if state["decays"] >= LR_DECAYS:
                        state["converged"] = True
                        break
                    # stalled (or oscillating): restart from the best iterate, smaller steps
                    state["decays"] += 1
                    lr_now *= LR_DECAY_FACTOR
                    with torch.no_grad():
                        u.copy_(state["best_u"])
                    bests = [state["best"]]
    except KeyboardInterrupt:
        state["interrupted"] = True
    return state


def _lbfgs(objective, defocus, u0, *, lr, max_iterations, tolerance, window, progress):
    """L-BFGS (``_Optimiser`` of :mod:`~hyperspy_lorentz.reconstruction.ad.optimiser`, the
    optimiser of the focal-series fits) on the whitened variables; the same state
    dict as :func:`_adam`. Converged: the loss decreased by less than ``tolerance``
    (relative) over ``window`` iterations, or no step decreases it."""
    from hyperspy_lorentz.reconstruction.ad.optimiser import LBFGS_HISTORY, _Optimiser, _Stop

    shape = u0.shape
    opt = _Optimiser(lambda x: objective(x.reshape(shape), defocus), u0.reshape(-1),
                     method="lbfgs", learning_rate=lr, history=LBFGS_HISTORY,
                     max_iterations=max_iterations, tolerance=tolerance, window=window,
                     progress=progress)
    interrupted = False
    try:
        opt.run()
    except _Stop:
        raise FloatingPointError(
            "single-image AD: the loss is not finite at the starting point; check the "
            "image, defocus and optical parameters (units nm, mm, mrad, keV)") from None
    except KeyboardInterrupt:
        interrupted = True
    return dict(losses=list(opt.losses), best_u=opt.best_x.reshape(shape),
                best=opt.best_loss, iterations=opt.iterations,
                converged=bool(opt.converged and not interrupted), nonfinite=opt.nonfinite,
                interrupted=interrupted, decays=0)


# ============================================================================ main
def reconstruct_single_image(image, defocus, *, pixel_size, beam_energy, cs=1.0,
                             theta_c=0.01, defocus_spread=500.0, likelihood="poisson",
                             dose=None, regularization="auto",
                             max_iterations=DEFAULT_MAX_ITERATIONS,
                             tolerance=DEFAULT_TOLERANCE, learning_rate=None, init="sitie",
                             prior="tv", device="auto", dtype="float32", seed=None,
                             progress=None, optimizer="lbfgs"):
    """Retrieve the magnetic phase from one defocused image by AD.

    The specimen is assumed to have a uniform amplitude (a continuous film or
    the inside of a patterned element); see the module docstring for the model,
    the objective and what a single image cannot determine.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Defocused image. Electron counts for ``likelihood="poisson"`` (or any
        unit together with ``dose``); any unit for ``"gaussian"``.
    defocus : float
        Defocus of the image, nm, positive for overfocus, nonzero.
    pixel_size : float or (float, float)
        Pixel size, nm.
    beam_energy : float
        Accelerating voltage, keV.
    cs : float
        Spherical aberration, mm.
    theta_c : float
        Beam divergence (illumination semi-angle), mrad.
    defocus_spread : float
        Focal spread, nm (1/e half-width).
    likelihood : {"poisson", "gaussian"}
        Noise model (module docstring). Poisson is right for counted and
        low-dose data.
    dose : float, optional
        Poisson only: mean electrons per pixel; the image is rescaled to counts
        with this mean. ``None``: the image already is in counts (the dose is its
        mean).
    regularization : "auto", float or None
        TV weight ``beta`` (1/rad, MAP rate in units of the negative
        log-likelihood). ``"auto"`` (default): ``TV_RATE / g`` with ``g`` the
        mean phase gradient of the SITIE solution (module docstring); larger
        values smooth more and shrink the phase at low dose. ``0`` or ``None``:
        no TV (the ridge, :data:`PHASE_VARIANCE`, remains). The TV smoothing is
        ``TV_EPSILON_FRACTION * g`` in every case; the values used are in
        ``parameters["regularization"]`` and ``parameters["tv_epsilon"]``.
    max_iterations : int
        Maximum number of iterations (default :data:`DEFAULT_MAX_ITERATIONS`).
    tolerance : float
        Stop when the loss decreased by less than this fraction over
        :data:`CONVERGENCE_WINDOW` iterations (default
        :data:`DEFAULT_TOLERANCE`); 0 runs ``max_iterations``.
    learning_rate : float, optional
        With ``optimizer="adam"``, its learning rate in whitened units (default
        :data:`DEFAULT_LEARNING_RATE`); with L-BFGS, a factor on its cautious first
        step (default 1), as in :func:`~hyperspy_lorentz.reconstruction.ad.reconstruct_ad`.
    init : {"sitie", "flat"}
        Starting phase: the SITIE solution
        (:func:`~hyperspy_lorentz.reconstruction.tie.sitie_phase`, default
        cut-off), mirror-extended over the free border, or zero. (SITIE is
        computed either way: it sets the automatic TV weight.)
    prior : {"tv"}
        The prior. A deep-image prior (as in SIPRAD) was measured and is not
        offered (``benchmarks/bench_single_image.py --dip``, module docstring):
        in place of TV it was less accurate, and on top of TV it gained at most
        0.003 in accuracy for about a hundred times the run time.
    device : "auto", "cpu", "cuda", ...
        ``"auto"`` picks CUDA when torch sees a GPU.
    dtype : {"float32", "float64"}
        Working precision.
    seed : int, optional
        Seeds torch's generator during the fit (the fit itself has no random
        step, so results are the same with or without it).
    progress : callable, optional
        ``progress(iteration, loss)`` after every iteration. A
        ``KeyboardInterrupt`` (also from it) ends the fit with the best iterate
        so far, ``interrupted=True`` and a warning.
    optimizer : {"lbfgs", "adam"}
        L-BFGS (default; the optimiser of
        :func:`~hyperspy_lorentz.reconstruction.ad.reconstruct_ad`) or Adam with
        warm-up and restarts at a smaller rate when the loss stalls.

    Returns
    -------
    ADResult
        ``phase`` (rad, float64, mean subtracted), ``amplitude`` (ones),
        ``defocus`` ``(1,)``, ``shifts`` zeros ``(1, 2)``, ``theta_c``,
        ``scale`` ``(1,)`` (1: the model is mean-normalised), ``loss_history``
        (the start, then one value per iteration), ``iterations``,
        ``converged``, ``interrupted``, ``time_s``, ``refined=()``,
        ``not_identifiable=()``, ``parameters`` (every setting, JSON-friendly)
        and ``device``.

    Raises
    ------
    ValueError
        Bad input: not one finite 2-D image, an all-zero image, negative counts
        with the Poisson likelihood, a zero or non-finite defocus, a
        non-positive pixel size, unknown options.
    FloatingPointError
        If the loss is not finite at the starting point.
    """
    t_start = time.perf_counter()
    if likelihood not in _LIKELIHOODS:
        raise ValueError(f"likelihood must be 'poisson' or 'gaussian', got {likelihood!r}")
    img = _check_image(image, likelihood)
    h, w = img.shape
    df = _check_defocus(defocus)
    try:
        pixel = optics._check_pixel_size(pixel_size)
    except ValueError as exc:
        raise ValueError(f"{exc}; pass the calibrated pixel size in nm (e.g. 4.0), or a "
                         f"(py, px) pair") from None
    energy = optics._check_beam_energy(beam_energy)
    wl = optics.wavelength(energy)
    cs = _as_float(cs, "cs", "mm")
    theta_c = _as_float(theta_c, "theta_c", "mrad", nonneg=True)
    defocus_spread = _as_float(defocus_spread, "defocus_spread", "nm", nonneg=True)
    if init not in _INITS:
        raise ValueError(f"init must be 'sitie' or 'flat', got {init!r}")
    if prior not in _PRIORS:
        raise ValueError(
            f"prior must be 'tv', got {prior!r} (a deep-image prior did not improve on TV "
            f"in benchmarks/bench_single_image.py and is not provided)")
    if isinstance(max_iterations, (bool, np.bool_)) or int(max_iterations) != max_iterations \
            or int(max_iterations) < 0:
        raise ValueError(f"max_iterations must be a non-negative integer, got {max_iterations!r}")
    max_iterations = int(max_iterations)
    tolerance = _as_float(tolerance, "tolerance", "relative", nonneg=True)
    beta, _ = _regularization(regularization)  # "auto": None, TV_RATE / g from SITIE
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    default_lr = DEFAULT_LEARNING_RATE if optimizer == "adam" else 1.0
    lr = default_lr if learning_rate is None else _as_float(
        learning_rate, "learning_rate", "whitened units", positive=True)
    if progress is not None and not callable(progress):
        raise ValueError("progress must be a callable progress(iteration, loss) or None")
    if dose is not None:
        if likelihood != "poisson":
            raise ValueError("dose is only used with likelihood='poisson'; leave it None for "
                             "likelihood='gaussian'")
        dose = _as_float(dose, "dose", "mean electrons per pixel", positive=True)
    tdt = _torch_dtype(dtype)
    dev = _resolve_device(device)

    settings = dict(
        method="single-image AD", pixel_size=list(pixel), beam_energy=energy, wavelength=wl,
        cs=cs, theta_c=theta_c, defocus_spread=defocus_spread, defocus=[df],
        likelihood=likelihood, dose_input=None if dose is None else float(dose),
        regularization_input=(
            regularization if isinstance(regularization, (str, type(None)))
            else float(regularization)),
        prior=prior, tv_rate=TV_RATE, tv_epsilon_fraction=TV_EPSILON_FRACTION,
        phase_variance=PHASE_VARIANCE, lr_decays=LR_DECAYS,
        lr_decay_factor=LR_DECAY_FACTOR,
        max_iterations=max_iterations, tolerance=tolerance,
        convergence_window=CONVERGENCE_WINDOW, learning_rate=lr, optimizer=optimizer,
        warmup_iterations=WARMUP_ITERATIONS, preconditioner_floor=PRECONDITIONER_FLOOR,
        init=init, device=str(dev), dtype=str(tdt).replace("torch.", ""),
        seed=None if seed is None else int(seed),
    )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        objective, u0, geom = _build_problem(
            img, df, pixel, energy, cs, theta_c, defocus_spread, likelihood, dose, beta, init,
            tdt, dev)
        settings.update(geom)
        run = _adam if optimizer == "adam" else _lbfgs
        state = run(objective, df, u0, lr=lr, max_iterations=max_iterations,
                    tolerance=tolerance, window=CONVERGENCE_WINDOW, progress=progress)
        settings["learning_rate_decays"] = state["decays"]
        if state["interrupted"]:
            warnings.warn(
                f"single-image AD interrupted after {state['iterations']} iterations; "
                f"returning the best iterate so far (loss {state['best']:.6g})", stacklevel=2)
        if state["nonfinite"]:
            warnings.warn(
                f"single-image AD: the loss became NaN/inf after {state['iterations']} "
                f"iterations; stopped and returned the best finite iterate (loss "
                f"{state['best']:.6g})", RuntimeWarning, stacklevel=2)
        with torch.no_grad():
            phase = _crop(objective.phase(state["best_u"]), objective.window)
    return ADResult(
        phase=phase, amplitude=np.ones((h, w)), defocus=np.array([df]),
        shifts=np.zeros((1, 2)), theta_c=theta_c, astigmatism=0.0, astigmatism_angle=0.0,
        scale=np.ones(1), defocus_spread=defocus_spread,
        loss_history=[float(v) for v in state["losses"]], iterations=state["iterations"],
        converged=state["converged"], interrupted=state["interrupted"],
        time_s=time.perf_counter() - t_start, refined=(), not_identifiable=(),
        parameters=settings, device=str(dev))


def _crop(phi, window):
    """Window of a canvas phase as a mean-subtracted float64 NumPy array."""
    (t, b), (l, r) = window
    out = phi.detach()[t:b, l:r].to(torch.float64).cpu().numpy()
    return out - out.mean()


def _build_problem(img, df, pixel, energy, cs, theta_c, defocus_spread, likelihood, dose,
                   beta, init, dtype, device):
    """Objective, start point (whitened, zero) and canvas geometry of a fit.

    Inputs already validated; ``beta=None`` is ``regularization="auto"``.
    Returns ``(objective, u0, info)`` with ``info`` the JSON-friendly settings
    that depend on the data (TV weight and smoothing, dose, noise, canvas, SITIE
    cut-off).
    """
    h, w = img.shape
    wl = optics.wavelength(energy)
    mean = float(img.mean())
    sigma = None
    if likelihood == "poisson":
        if dose is None:
            counts, dose_used = img, mean
        else:
            dose_used = float(dose)
            counts = img * (dose_used / mean)
        weight = 4.0 * dose_used
    else:
        dose_used = None
        amps = np.sqrt(img.clip(min=0.0) / mean)
        sigma = max(float(estimate_noise(amps)), NOISE_FLOOR)
        weight = 1.0 / sigma**2

    # canvas: a free border of the Fresnel spread around the image
    py, px = canvas_padding((h, w), pixel, energy, df, cs, theta_c, defocus_spread)
    hc, wc = _next_fast_len(h + 2 * py), _next_fast_len(w + 2 * px)
    window = ((py, py + h), (px, px + w))

    # SITIE: the start point and the scale g of the phase gradient (rad / px)
    sitie, sinfo = sitie_phase(img, df, pixel, wl)
    gy, gx = np.gradient(sitie)
    g = max(float(np.mean(np.hypot(gy, gx))), GRADIENT_FLOOR)
    if beta is None:
        beta = TV_RATE / g
    eps = TV_EPSILON_FRACTION * g
    if init == "sitie":
        phase0 = np.pad(sitie, ((py, hc - h - py), (px, wc - w - px)), mode="symmetric")
    else:
        phase0 = np.zeros((hc, wc))

    tens = dict(dtype=dtype, device=device)
    model = ForwardModel((hc, wc), pixel, energy, cs=cs, theta_c=theta_c,
                         defocus_spread=defocus_spread, device=device, dtype=dtype)
    ridge = 0.5 / PHASE_VARIANCE  # a Gaussian prior of variance PHASE_VARIANCE per pixel
    precond = _preconditioner(
        (hc, wc), pixel, wl, df, cs, theta_c, defocus_spread, weight=weight,
        coverage=h * w / (hc * wc), beta=beta, eps=eps, ridge=ridge, m=float(h * w),
        dtype=dtype, device=device)
    objective = _Objective(
        model=model,
        data=torch.as_tensor(counts if likelihood == "poisson" else amps, **tens),
        likelihood=likelihood, dose=dose_used, weight=weight,
        phase0=torch.as_tensor(phase0, **tens), precond=precond, window=window, beta=beta,
        eps=eps, ridge=ridge)
    info = dict(regularization=float(beta), tv_epsilon=eps, gradient_scale=g, dose=dose_used,
                phase_ridge_weight=float(ridge),
                noise_sigma=sigma, sitie_qc=float(sinfo["qc"]), canvas_shape=[hc, wc],
                canvas_padding=[py, px])
    return objective, torch.zeros((hc, wc), **tens), info
