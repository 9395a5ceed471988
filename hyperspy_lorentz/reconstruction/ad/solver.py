"""Automatic-differentiation (AD) phase retrieval from a Lorentz TEM focal series.

The method of Zhou, Cherukara & Phatak, "Differential programming enabled
functional imaging with Lorentz transmission electron microscopy", npj Comput.
Mater. 7, 141 (2021): a differentiable microscope
(:class:`~hyperspy_lorentz.physics.forward.ForwardModel`) turns a candidate exit
wave ``A exp(i phi)`` into a focal series, and the phase (pixel by pixel), and
optionally the amplitude and the experimental parameters, are fitted to the
measured images by gradient-based optimisation.

Pure array kernel: NumPy arrays in, an :class:`ADResult` out; nothing here knows
about HyperSpy. Units and signs follow :ref:`conventions` (lengths nm, ``Cs`` mm,
``theta_c`` mrad, beam energy keV, defocus positive for overfocus; the
astigmatism angle is in **degrees** here, from ``+x`` toward ``+y``).

Objective
---------
Every term is a negative log-probability divided by the number ``M = N H W`` of
measured pixels, so the data term is about 0.5 at the solution:

* ``likelihood="gaussian"`` (the paper's choice): the images are normalised by
  their mean and their *amplitudes* are fitted,
  ``sum_n sum_x (sqrt(I_n / <I_n>) - a_n)^2 / (2 sigma_n^2)``, with the noise
  ``sigma_n`` of each amplitude image estimated from the data (robust
  Laplacian-median estimator, Immerkaer 1996). The model images are normalised
  by their mean too, which makes the fit independent of the exposure and of the
  intensity the quasi-coherent envelope removes.
* ``likelihood="poisson"``: counted (low-dose) data, ``sum (lambda - k log
  lambda)`` with ``lambda_n = dose_n I_n / <I_n>`` and ``k`` the counts.

The prior is a smoothed isotropic total variation (forward differences, rad per
pixel) ``beta sum_x (sqrt(|grad phi|^2 + eps^2) - eps)``. When the amplitude is
refined it is the *joint* TV ``sqrt(|grad phi|^2 + kappa^2 |grad ln A|^2 +
eps^2)``, which puts amplitude edges where the phase has them (both come from
the same thickness changes) -- with separate TVs the amplitude of a two-image
series stays blurred. Because the data term is in units of the noise, the
weight ``beta`` is a MAP rate (1/rad) in the units of the likelihood.

Field of view
-------------
By default (``padding="free"``) the exit wave lives on a *canvas* larger than
the images by a free border sized from the physics (the Fresnel spread at the
largest defocus, a margin for refined drift;
:mod:`~hyperspy_lorentz.reconstruction.canvas`). The canvas is propagated with
periodic boundaries and the model images are its window: only measured pixels
enter the likelihood, and the border's phase and amplitude are unknowns under
the same prior. Electrons deflected into the field of view by specimen outside
it are modelled, and nothing wraps around (a skyrmion-lattice window: accuracy
0.42 periodic, 0.994 free). ``padding="periodic"`` is for truly periodic
simulations; the border costs accuracy on small fields of isolated objects
(the border can take up noise at the window's edges).

Regularisation weight
---------------------
``regularization="auto"`` first fits at :data:`DEFAULT_TV_WEIGHT` (the weight
of the paper's cases). It then compares the reduced chi^2 with the value
expected of a fit that takes up no more noise than its effective degrees of
freedom allow (:meth:`_Problem.expected_chi2`: the linearised model is
diagonal in Fourier space, ``s_q = H_q / (H_q + beta |D_q|^2 / (eps M))``,
expected chi^2 ``1 - sum(2 s - s^2) / M``). Where the fit explains the data
better than that (by :data:`OVERFIT_SIGNIFICANCE` standard errors), and where
the estimate holds (:data:`QUADRATIC_VALIDITY`), the fit is repeated at the
maximum-likelihood rate of the isotropic Laplace prior on the phase gradient
that the TV is, ``2 / mean|grad phi|``, and, if that over-smooths, at the weight
interpolated (in log weight) to where chi^2 meets its expectation. The record
is ``parameters["regularization_rule"]``. Low-dose windows of magnetic
textures gain most (a lattice at 100 e-/px: 0.955 -> 0.991); strong phases with
steep flanks keep the default (the estimate misses their degrees of freedom).

After the stages the phase is unwrapped (2 pi): the images depend on
``exp(i phi)`` only, and the unwrapped phase is taken where its TV is lower
(:func:`_unwrap`; vortex discs of 4 rad from 3 images: 0.93 -> 0.9999).

Optimisation
------------
L-BFGS (default; ``optimizer="adam"``: the paper's optimiser) on one flat
vector of *whitened* variables, so that a unit step is about right for all of
them:

* the phase is ``phi = phi_0 + F^-1[p(q) F[u]]`` with the diagonal Fourier
  preconditioner ``p = (H(q) + h_tv(q) + c max H)^(-1/2)``: ``H(q) = sum_n w_n
  sin^2(chi_n) E_n^2 / M`` is the Gauss-Newton curvature of the weak-phase data
  term, so that the low spatial frequencies, transferred only as ``q^2``,
  converge as fast as the others, and ``h_tv = beta |D(q)|^2 / (eps M)`` the
  curvature of the TV in flat regions (the log-amplitude likewise, with
  ``cos^2 chi`` and ``kappa^2``);
* the experimental parameters are offsets divided by the square root of their
  Gauss-Newton curvature (finite differences at the start): defocus in nm,
  shifts in pixels (the image nearest focus is the reference and stays at
  zero), ``ln theta_c``, the astigmatism as the vector ``(A cos 2a, A sin 2a)``
  in nm, and ``ln`` intensity scales.

Starting point and stages
-------------------------
No single start suits every series. A flat phase is the best start for
asymmetric series (paper object, -0.2/-0.1/+1.5/+1.6 mm: 0.991 from flat,
0.47 from the pair TIE): its first preconditioned steps are a CTF-weighted
linear (TIE-like) solution. A strong phase with sharp edges (patterned
elements, a few rad of electrostatic phase) can trap the flat start in a
phase-wrapped local minimum, from which the TIE start or a coarse-to-fine start
(the coarse pass below) escape (3 rad islands at 0.4 mm: flat 0.15, TIE 0.994,
coarse-to-fine 0.995). So ``init="auto"`` races the candidate starts -- flat,
coarse-to-fine (images >= 128 px), TIE (images on both sides of focus) --
for :data:`INIT_RACE_ITERATIONS` iterations each and runs the one with the
lowest loss (the same objective for all; on every case measured the loss after
20 iterations ranked the starts as their final accuracies did). The race is
skipped when there is one candidate or ``max_iterations`` is below
``4 * INIT_RACE_ITERATIONS``; ``parameters["init_race"]`` records the losses.
The fit then runs in stages, each keeping its best iterate:

1. when optical parameters (defocus, shifts, ``theta_c``, astigmatism, scale)
   are refined and the images are at least 128 px: a coarse pass on images
   binned by :data:`PYRAMID_BINNING`, where a drift of a few pixels and a
   defocus error of several per cent are still inside the basin of
   convergence (on the full grid the phase first locks onto the misregistered
   images); otherwise a short phase-only warm start, which gives the optical
   parameters a structured phase for their whitening;
2. when the amplitude is refined: the phase (and the optical parameters) with
   the amplitude held -- an amplitude refined from the start absorbs phase
   errors;
3. everything refined.

Warm-start stages stop at ``10 * tolerance``; the last at ``tolerance``, the
relative loss decrease over :data:`CONVERGENCE_WINDOW` iterations, or when the
``max_iterations`` (shared by all stages) run out. ``loss_history`` spans all
stages (the objectives differ between them), ``parameters["stages"]``
summarises each.

Identifiability and bias of the optical parameters
---------------------------------------------------
The common offset of the defocus values and the exit plane are degenerate when
the amplitude is refined (a wave propagated by ``d`` and imaged at ``df - d``
gives the same images); only the partial-coherence envelope and the
non-linear (strong-phase) terms of the images break this. In the weak-phase
limit the defocus scale trades against the phase spectrum in the same way.
Fitting the optical parameters jointly with a phase and an amplitude per pixel
is then a Neyman-Scott problem: the per-pixel unknowns absorb part of the
noise, the TV prior shrinks the high frequencies, and both pull the joint
estimate of the defocus (the separation of the defocus values shrinks, where
the coherence envelope passes more of the high frequencies, and their common
offset drifts). On the paper's object at +-1.6 mm and 10 % noise the overfocus
value came out 0.4-0.6 % low and the underfocus one 0.1-0.2 % too large in
magnitude, the same for every noise seed; noise-free the error vanishes.

It is corrected by a parametric bootstrap (``bias_correction``, on by default
when optical parameters are refined): images are simulated from the fitted
exit wave and parameters with the fitted noise model
(:data:`BOOTSTRAP_REPLICATES` times), the fit is repeated from that known
truth, and the mean deviation of the refitted parameters is the bias estimate
subtracted from the result (Efron & Tibshirani, *An Introduction to the
Bootstrap*, ch. 10) -- where it exceeds :data:`BOOTSTRAP_SIGNIFICANCE` of its
own standard errors; a smaller estimate is mostly noise and would add variance
(on a clean series with astigmatism refined, correcting it regardless moved the
angle from 30.3 to 27.2 degrees, truth 30). The replicates' noise is the
noise estimated from the data (not floored by :data:`NOISE_FLOOR`). The spread
of the replicates gives standard errors (``ADResult.standard_errors``). Phase and amplitude are the MAP estimates
of the main fit. The bootstrap cannot correct a bias that comes from a model
that does not describe the data (for instance a uniform amplitude assumed for
a specimen whose amplitude is not uniform). The standard errors are the
scatter from the noise about the fitted optimum only, a lower bound: the bias
estimate is made at the fitted (smoother) exit wave, and on the tests up to
about half of the bias remained after the correction.

A parameter whose doubling changes the fit by less than one unit of chi^2
(:data:`IDENTIFIABILITY_CHI2`) -- typically ``defocus_spread``, which the
paper's attempt to refine did not move either -- is kept at its given value and
reported in ``ADResult.not_identifiable`` (with a warning).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings

import numpy as np
import torch

from hyperspy_lorentz.physics import optics
from hyperspy_lorentz.physics.forward import ForwardModel, NonFiniteError
from hyperspy_lorentz.reconstruction._torch_common import (
    _as_float,
    _resolve_device,
    _torch_dtype,
    _tv,
)
from hyperspy_lorentz.reconstruction.canvas import DRIFT_MARGIN, Canvas, free_border
from hyperspy_lorentz.reconstruction.tie import estimate_noise

__all__ = [
    "ADResult",
    "reconstruct_ad",
    "estimate_memory",
    "REFINABLE",
    "DEFAULT_REFINE",
    "DEFAULT_TV_WEIGHT",
    "MEMORY_COEFFICIENTS",
    "NOISE_FLOOR",
    "BOOTSTRAP_REPLICATES",
    "BOOTSTRAP_SIGNIFICANCE",
    "INIT_RACE_ITERATIONS",
]

#: Parameters that can be refined besides the phase.
REFINABLE = ("amplitude", "defocus", "shifts", "theta_c", "astigmatism", "scale",
             "defocus_spread")
#: Parameters refined by default.
DEFAULT_REFINE = ("amplitude",)

#: Default total-variation weight (MAP rate, 1/rad, in units of the negative
#: log-likelihood); see the module docstring.
DEFAULT_TV_WEIGHT = 3.0
#: ``regularization="auto"`` raises the TV weight above :data:`DEFAULT_TV_WEIGHT`
#: only when the fit explains the data *better* than the noise allows:
#: ``reduced_chi2 < 1 - OVERFIT_SIGNIFICANCE * sqrt(2 / M)`` (``M`` measured
#: pixels; ``sqrt(2 / M)`` is the standard error of a reduced chi^2 of pure noise).
OVERFIT_SIGNIFICANCE = 3.0
#: ...and only when the data-derived weight is at least this many times the
#: current one (a smaller change is not worth a second fit).
WEIGHT_CHANGE = 1.5
#: ...and only where the effective degrees of freedom, computed for the TV in
#: its quadratic regime, describe the fit: the TV of the fitted phase at least
#: this fraction of its quadratic form ``sum |grad phi|^2 / (2 eps)``. Measured:
#: smooth magnetic phases (skyrmion-lattice windows, weak islands in vacuum)
#: 0.48-0.71, where the adapted weight raised the accuracy (0.955 -> 0.991 at
#: 100 e-/px); strong phases with steep flanks or sharp edges (a 5 rad bump,
#: 3 rad islands, the paper's object) 0.09-0.42, where the estimate misses the
#: degrees of freedom of the steep parts and the default weight was the most
#: accurate (a 5 rad bump at 200 e-/px: 0.98 at the default, 0.93 adapted).
QUADRATIC_VALIDITY = 0.45
#: Floor of the mean phase gradient of the adaptive weight, rad per pixel.
GRADIENT_FLOOR = 1e-3
#: Iterations at least given to the refit at the adapted weight.
REFIT_MIN_ITERATIONS = 60
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
#: Largest change of a whitened variable in the first L-BFGS step (times
#: ``learning_rate``); later steps are scaled by the curvature pairs.
FIRST_STEP = 1e-3
#: Iterations each candidate start runs in the race of ``init="auto"``.
INIT_RACE_ITERATIONS = 20
#: Binning of the coarse pass that starts the refinement of optical parameters.
PYRAMID_BINNING = 4
#: Boundaries of the coarse pass, by the boundaries of the fit: periodic for a
#: free border. The coarse pass only has to bring drift and defocus into the
#: basin of the full-resolution fit; on a free canvas of a 32 px binned image the
#: border unknowns made it much worse (islands with drift: 0.918 against 0.993
#: final accuracy).
COARSE_PADDING = {"free": None}
#: Smallest binned image side for which the coarse pass is run.
PYRAMID_MIN_SIZE = 32
#: L-BFGS memory (pairs of correction vectors).
LBFGS_HISTORY = 10
#: Iterations over which the relative loss decrease is compared to ``tolerance``.
CONVERGENCE_WINDOW = 10
#: Tolerance of the first (warm-start) stage relative to ``tolerance``.
STAGE1_TOLERANCE_FACTOR = 10.0
#: Iterations of the first stage when optical parameters are refined: enough to
#: give the phase structure for their whitening, short enough not to fit the
#: phase to wrong parameters.
STAGE1_ITERATIONS_OPTICAL = 20
#: A refinable scalar whose doubling changes chi^2 by less than this is reported
#: as not identifiable.
IDENTIFIABILITY_CHI2 = 1.0
#: Floor of the estimated relative amplitude noise: cleaner images are weighted
#: as if this noisy. It stands for the model's own error (detector MTF,
#: inelastic background, ...) and keeps the TV prior effective where the data
#: are nearly noise-free; without it the prior-determined frequencies converge
#: slowly. Paper object, +-1.6 mm, noise-free: accuracy 0.962 with a floor of
#: 1e-3, 0.998 with 0.01, 0.999 with 0.02; 1 % noise: 0.990 / 0.998 / 0.999;
#: the same with defocus and drift refined: 0.84 / 0.991 / 0.999. Not 0.02:
#: the optical parameters of very clean data lose accuracy (astigmatism angle
#: of a 0.5 %-noise test series 26 degrees instead of 30).
NOISE_FLOOR = 0.01
#: Defocus below this fraction of the largest ``|defocus|`` counts as in focus.
INFOCUS_FRACTION = 1e-3
#: Parametric-bootstrap replicates of ``bias_correction="auto"`` when optical
#: parameters are refined: three give a bias estimate, a standard error and a
#: usable test of whether the bias estimate stands out of its own noise (with
#: two, a real -0.5 % defocus bias at 200 electrons/px was judged noise).
BOOTSTRAP_REPLICATES = 3
#: A bias estimate is subtracted only where it exceeds this many of its own
#: standard errors (replicate spread / sqrt(replicates)); smaller ones are
#: noise and would only add variance (with one replicate it is always applied).
BOOTSTRAP_SIGNIFICANCE = 2.0
#: Offset inside the square root of the Gaussian data term (normalised units).
_SQRT_EPS = 1e-6

#: Peak memory of a fit, bytes per propagated (padded) pixel at float32:
#: ``fixed + n per_image + amplitude [amplitude refined] + optical [optical
#: parameters refined]``, plus 8 bytes per input pixel and image (float64
#: copies), times a 20 % margin; read by
#: :mod:`hyperspy_lorentz.reconstruction.memory`. Measured with
#: ``benchmarks/bench_ad.py --memory-only`` (RSS high-water mark added by a fit;
#: CPU, torch 2.13.0+cpu, 2 threads, float32, no padding). The peak grows until
#: L-BFGS holds its 10 history pairs (2 vectors per unknown, 160 B/px with the
#: amplitude), so fits of 15+ iterations were measured -- refine=("amplitude",):
#: 5 x 256^2 46 MiB (743 B/px), 5 x 512^2 181 MiB (724), 5 x 1024^2 729 MiB
#: (729), 2 x 1024^2 541 MiB (541), 5 x 2048^2 2.41 GiB (616; glibc returns the
#: large arrays at once); refine=(): 5 x 1024^2 669 MiB; refine=("amplitude",
#: "defocus", "shifts") (with the bootstrap, measured while the main fit's
#: optimiser was still held during it; it is freed first now, so these bound
#: the peak from above): 5 x 512^2 (40 iterations) 272 MiB (1089 B/px),
#: 2 x 1024^2 849 MiB, 5 x 1024^2 1021 MiB. After 3 iterations (the
#: benchmark's default) the peak is lower: 5 x 512^2 140 MiB, 2 x 1024^2
#: 397 MiB, 5 x 2048^2 1.94 GiB. Estimates: 5 x 2048^2 3.45 GiB (1.43 x the
#: 15-iteration peak), 5 x 512^2 221 MiB, 2 x 1024^2 655 MiB.
MEMORY_COEFFICIENTS = {"fixed": 360.0, "per_image": 55.0, "amplitude": 60.0,
                       "optical": 370.0}

_OPTICAL = ("defocus", "shifts", "theta_c", "astigmatism", "scale")


# ============================================================================ result
@dataclasses.dataclass
class ADResult:
    """Result of :func:`reconstruct_ad`.

    Attributes
    ----------
    phase : numpy.ndarray, shape (H, W)
        Retrieved phase, rad, float64, mean subtracted.
    amplitude : numpy.ndarray, shape (H, W)
        Exit-wave amplitude (refined, from the in-focus image, given, or
        uniform), normalised to a mean intensity ``<A^2> = 1``.
    defocus : numpy.ndarray, shape (N,)
        Defocus of each image, nm (refined or as given).
    shifts : numpy.ndarray, shape (N, 2)
        Image shifts ``(dy, dx)``, pixels, relative to the reference image (the
        one nearest focus); a positive value moves the image content toward
        ``+y`` / ``+x``.
    theta_c : float
        Beam divergence, mrad.
    astigmatism : float
        Two-fold astigmatism magnitude, nm.
    astigmatism_angle : float
        Astigmatism direction, degrees from ``+x`` toward ``+y``.
    scale : numpy.ndarray, shape (N,)
        Intensity scale of each image relative to the mean-normalised model.
    defocus_spread : float
        Focal spread, nm.
    loss_history : list of float
        Loss at the start and after every iteration (all stages).
    iterations : int
        Iterations performed (all stages).
    converged : bool
        The relative-loss tolerance was met (in the last stage).
    interrupted : bool
        The fit was stopped by ``KeyboardInterrupt``; the best iterate is returned.
    time_s : float
        Wall time of the whole call, s.
    refined : tuple of str
        Parameters actually refined (besides the phase).
    not_identifiable : tuple of str
        Parameters requested in ``refine`` but not identifiable from the data;
        kept at their given value.
    parameters : dict
        Every setting used (JSON-friendly), with per-stage summaries, the start
        chosen (``init``, ``init_race``), ``reduced_chi2`` (the misfit per
        pixel of the fitted images in units of the noise: about 1 when the model
        describes the data to the noise level, for the Gaussian likelihood as
        far as the estimated ``noise_sigma`` is right; well above 1 for a wrong
        model, e.g. unrefined drift) and the ``bias_correction`` record.
    device : str
        Device the fit ran on.
    standard_errors : dict
        Bootstrap standard errors of the refined optical parameters (keys
        ``defocus`` (nm), ``shifts`` (px), ``theta_c`` (mrad), ``astigmatism``
        (nm), ``astigmatism_angle`` (degrees), ``scale``), from the spread of
        the ``bias_correction`` replicates; empty with fewer than two.
    canvas_phase, canvas_amplitude : numpy.ndarray or None
        With ``padding="free"``: the exit wave on the whole canvas (the field
        of view and its free border, see
        :mod:`~hyperspy_lorentz.reconstruction.canvas`), the phase offset and
        the amplitude normalisation as ``phase`` and ``amplitude``; the window
        starts at ``parameters["canvas_border"]`` ``(top, left)``. ``None``
        otherwise.
    """

    phase: np.ndarray
    amplitude: np.ndarray
    defocus: np.ndarray
    shifts: np.ndarray
    theta_c: float
    astigmatism: float
    astigmatism_angle: float
    scale: np.ndarray
    defocus_spread: float
    loss_history: list
    iterations: int
    converged: bool
    interrupted: bool
    time_s: float
    refined: tuple
    not_identifiable: tuple
    parameters: dict
    device: str
    standard_errors: dict = dataclasses.field(default_factory=dict)
    canvas_phase: np.ndarray | None = None
    canvas_amplitude: np.ndarray | None = None

    def __repr__(self):
        loss = self.loss_history[-1] if self.loss_history else float("nan")
        return (
            f"ADResult(shape={self.phase.shape}, iterations={self.iterations}, "
            f"converged={self.converged}, interrupted={self.interrupted}, loss={loss:.6g}, "
            f"refined={self.refined}, not_identifiable={self.not_identifiable}, "
            f"time_s={self.time_s:.2f}, device={self.device!r})"
        )


# ============================================================================ memory
def _padded_shape(h, w, padding, border=None):
    if padding in (None, "periodic"):
        return h, w
    if border is None:
        border = (h + 3) // 4, (w + 3) // 4
    return Canvas.around((h, w), border).shape


def estimate_memory(shape, n_images, refine=DEFAULT_REFINE, dtype="float32", padding="free",
                    border=None):
    """Estimate the peak memory added by :func:`reconstruct_ad`.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(H, W)``.
    n_images : int
        Number of images in the series.
    refine : sequence of str
        Parameters refined (see :data:`REFINABLE`). Refining optical parameters
        keeps the spectrum of the exit wave and runs the bootstrap (a second
        optimiser); the amplitude adds a second field.
    dtype : {"float32", "float64"}
        Working precision (float64 doubles the memory).
    padding : "free", None, "periodic", "reflect" or "edge"
        Boundaries of the fit (see :func:`reconstruct_ad`): ``None`` and
        ``"periodic"`` propagate the image grid itself; the others a canvas
        with ``border`` pixels on each side, its size rounded up to a
        2,3,5,7-smooth number.
    border : (int, int), optional
        Border of the canvas, pixels; default a quarter of the image (rounded
        up), an upper bound of
        :func:`~hyperspy_lorentz.reconstruction.canvas.free_border` for most
        data.

    Returns
    -------
    int
        Bytes, with a 20 % margin, including the float64 copies of the input
        made by :func:`reconstruct_ad`.
    """
    try:
        h, w = (int(v) for v in tuple(shape)[-2:])
    except (TypeError, ValueError):
        raise ValueError(f"shape must be the image shape (H, W), got {shape!r}") from None
    n = int(n_images)
    if h < 1 or w < 1 or n < 1:
        raise ValueError(f"shape and n_images must be positive, got {shape!r}, {n_images!r}")
    scale = 2.0 if _torch_dtype(dtype) == torch.float64 else 1.0
    hp, wp = _padded_shape(h, w, padding, border)
    refine = tuple(refine or ())
    c = MEMORY_COEFFICIENTS
    optical = any(r in refine for r in _OPTICAL)
    per_px = c["fixed"] + n * c["per_image"] + (c["optical"] if optical else 0.0)
    if "amplitude" in refine:
        per_px += c["amplitude"]
    return int(math.ceil(1.2 * (scale * per_px * hp * wp + 8.0 * n * h * w)))


def _available_memory(device):
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), "free GPU memory"
    import psutil

    return int(psutil.virtual_memory().available), "available RAM"


def _check_memory(shape, n, refine, dtype, padding, border, device):
    need = estimate_memory(shape, n, refine, dtype, padding, border)
    avail, where = _available_memory(device)
    if need > avail:
        h, w = shape
        f = math.ceil(math.sqrt(need / max(avail, 1)))
        advice = (f"crop the images (s.isig[...]) to about {h // f} x {w // f} pixels or "
                  f"bin them (s.rebin(scale=(1, {f}, {f})))")
        if device.type != "cuda":
            advice += ", or run the fit on a GPU (device='cuda')"
        raise ValueError(
            f"Not enough memory: an AD reconstruction of {n} images of {h} x {w} pixels "
            f"needs about {need / 2**30:.2f} GiB, more than the {avail / 2**30:.2f} GiB of "
            f"{where}; {advice}."
        )
    return need


# ============================================================================ checks
def _check_images(images, defocus):
    imgs = np.asarray(images)
    if imgs.dtype == object or not (np.issubdtype(imgs.dtype, np.number)
                                    or imgs.dtype == bool):
        raise ValueError("images must be a numeric (N, H, W) array")
    if np.iscomplexobj(imgs):
        raise ValueError("images must be real intensities, got a complex array")
    imgs = np.asarray(imgs, dtype=np.float64)  # read only: no copy when already float64
    if imgs.ndim != 3:
        raise ValueError(
            f"images must be a focal series of shape (N, H, W), got shape {imgs.shape}; "
            f"for a single image use a single-image method (method='sitie', or "
            f"single-image AD)"
        )
    n, h, w = imgs.shape
    if h < 8 or w < 8:
        raise ValueError(f"images must be at least 8 x 8 pixels, got {h} x {w}")
    df = np.array(defocus, dtype=np.float64).reshape(-1)
    if df.size != n:
        raise ValueError(
            f"defocus must have one value (nm) per image: got {df.size} values for {n} "
            f"images (images {imgs.shape}, defocus {np.shape(defocus)})"
        )
    if not np.all(np.isfinite(df)):
        raise ValueError(f"defocus values must be finite (nm), got {df.tolist()}")
    scale = float(np.max(np.abs(df))) if n else 0.0
    distinct = np.unique(np.round(df / (1e-6 * scale + 1e-9))).size if n else 0
    if n < 2 or distinct < 2:
        raise ValueError(
            f"AD focal-series reconstruction needs at least two images at distinct "
            f"defocus values, got {n} image(s) at {df.tolist()} nm; for a single "
            f"defocused image use a single-image method (method='sitie', or "
            f"single-image AD)"
        )
    bad = ~np.isfinite(imgs)
    if bad.any():
        k = sorted(set(np.nonzero(bad)[0].tolist()))
        raise ValueError(
            f"images contain {int(bad.sum())} non-finite (NaN/inf) pixels (in images {k}); "
            f"replace them (e.g. interpolate dead pixels) or crop them away first"
        )
    means = imgs.mean(axis=(1, 2))
    for k in range(n):
        if not np.any(imgs[k] != 0):
            raise ValueError(f"image {k} is all zeros; remove it from the series")
        if means[k] <= 0:
            raise ValueError(
                f"image {k} has a non-positive mean intensity ({means[k]:g}); the images "
                f"must be intensities (counts), not e.g. background-subtracted"
            )
    return imgs, df


def _check_refine(refine, refine_amplitude=True):
    """The parameters fitted besides the phase, ``"amplitude"`` first when refined.

    ``refine`` names the optical parameters; the amplitude has its own switch,
    so that naming optical parameters never turns the amplitude off. For older
    code ``"amplitude"`` is still accepted in ``refine`` (it means
    ``refine_amplitude=True``).
    """
    if refine is None:
        refine = ()
    if isinstance(refine, str):
        refine = (refine,)
    if refine_amplitude not in (True, False):
        raise ValueError(f"refine_amplitude must be True or False, got {refine_amplitude!r}")
    out = []
    for r in refine:
        if r not in REFINABLE:
            raise ValueError(f"unknown parameter {r!r} in refine; choose from "
                             f"{REFINABLE[1:]} (the amplitude has its own switch, "
                             f"refine_amplitude)")
        if r == "amplitude" and not refine_amplitude:
            raise ValueError("refine names 'amplitude' but refine_amplitude=False; drop one "
                             "of them")
        if r not in out and r != "amplitude":
            out.append(r)
    amplitude = refine_amplitude or "amplitude" in refine
    return (("amplitude",) if amplitude else ()) + tuple(out)


# ============================================================================ helpers
@contextlib.contextmanager
def _deterministic(seed, device):
    """Seeded torch RNG and, on CUDA, deterministic algorithms; global state restored.

    The CPU kernels used here are deterministic for a given number of threads
    (and switching the flag on imports torch's compiler stack, ~2 s), so the
    flag is only set on CUDA.
    """
    cuda = device.type == "cuda"
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    devices = [device] if cuda else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(int(seed))
        if cuda:
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            if cuda:
                torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


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
    """Poisson NLL of mean-normalised images, fused: ``sum (lam - k ln lam) / M``.

    ``lam = dose_n s_n I_n / <I_n>``; ``dose`` (N, 1, 1).
    """

    @staticmethod
    def forward(ctx, img, scale, counts, dose, inv_m):
        p = img[0].numel()
        m = img.mean(dim=(1, 2), keepdim=True)
        f = 1.0 / m if scale is None else scale.reshape(-1, 1, 1) / m
        norm = img * f
        lam = norm * dose
        lam.add_(1e-12)
        value = (lam.sum() - (counts * torch.log(lam)).sum()) * inv_m
        # dL/dnorm = dose (1 - k / lam) / M
        g = torch.div(counts, lam).neg_().add_(1.0).mul_(dose * inv_m)
        ctx.save_for_backward(g, norm, m, f, scale)
        ctx.p = p
        return value

    backward = _GaussianData.backward


class _Stop(Exception):
    """Internal: the loss is not finite at the starting point."""


# ============================================================================ problem
class _Problem:
    """The objective of one stage on a flat vector of whitened variables.

    ``start`` holds the physical starting values (the zero of the whitened
    variables): ``phase`` (tensor), ``amplitude`` (tensor or None), ``defocus``
    (N,), ``shifts`` (N, 2), ``theta_c`` (mrad), ``astig`` (``A cos 2a``,
    ``A sin 2a``, nm), ``scale`` (N,).
    """

    def __init__(self, *, data, weights, likelihood, dose, model, start, refine, beta, eps,
                 kappa, periodic, ref_index, device, dtype, coverage=1.0):
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
        if likelihood == "poisson":
            k = data
            klogk = torch.where(k > 0, k * torch.log(torch.clamp(k, min=1e-30)),
                                torch.zeros_like(k))
            self.poisson_const = float((k - klogk).sum()) / self.m
        self.refine = tuple(refine)
        self.beta, self.eps, self.kappa = float(beta), float(eps), float(kappa)
        self.periodic = periodic
        self.ref_index = ref_index
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
        self.shift_mask = None
        if "shifts" in self.refine:
            mask = torch.ones(n, 2, **t)
            mask[ref_index] = 0.0
            self.shift_mask = mask.reshape(-1)
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
            z = x[self.slices["shifts"]] * self.inv_sqrt_h["shifts"] * self.shift_mask
            out["shifts"] = self.shifts0 + z.reshape(self.n, 2)
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
        kw = {}
        if phys["theta_c"] is not None:
            kw["theta_c"] = phys["theta_c"]
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
        return _PoissonData.apply(img, scale, self.data, self.dose, 1.0 / self.m) \
            - self.poisson_const

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
                curv[self.ref_index] = 1.0
                curv = curv.reshape(-1)
            floor = 1e-12 * max(float(curv.max()), 1e-30)
            self.inv_sqrt_h[name] = (1.0 / torch.sqrt(torch.clamp(curv, min=floor))).to(
                self.dtype)

    @torch.no_grad()
    def chi2_change(self, x, model):
        """chi^2 between the images of the stage's model and of ``model`` at ``x``."""
        phys = self.physical(x)
        a = self.white_amplitudes(self.images(phys))
        b = self.white_amplitudes(self.images(phys, model=model))
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


# ============================================================================ optimiser
class _Optimiser:
    """L-BFGS (Armijo backtracking) or Adam on a flat vector, keeping the best iterate."""

    def __init__(self, fun, x0, *, method, learning_rate, history, max_iterations, tolerance,
                 window, progress, offset=0):
        self.fun = fun
        self.x = x0.detach().clone()
        self.method = method
        self.lr = learning_rate
        self.history = history
        self.max_iterations = int(max_iterations)
        self.tolerance = float(tolerance)
        self.window = int(window)
        self.progress = progress
        self.offset = offset
        self.best_x = self.x.clone()
        self.best_loss = math.inf
        self.losses = []
        self.iterations = 0
        self.converged = False
        self.nonfinite = False
        self.evaluations = 0

    def _eval(self, x):
        """Loss (0-d tensor, not synchronised) and gradient at ``x``."""
        x = x.detach().requires_grad_(True)
        try:
            loss = self.fun(x)
        except NonFiniteError:
            # a trial step overflowed (a diverged phase, or exp of a large
            # log-amplitude): its loss counts as infinite, the step is rejected
            return torch.tensor(math.nan), None
        self.evaluations += 1
        (g,) = torch.autograd.grad(loss, x)
        return loss.detach(), g

    def _record(self, x, lv):
        self.losses.append(lv)
        if lv < self.best_loss:
            self.best_loss = lv
            self.best_x = x.detach().clone()

    def _check_converged(self):
        w = self.window
        if len(self.losses) > w:
            old, new = self.losses[-1 - w], self.losses[-1]
            if old - new <= self.tolerance * max(abs(new), 1e-30):
                return True
        return False

    def _report(self, lv):
        self.iterations += 1
        if self.progress is not None:
            self.progress(self.offset + self.iterations, lv)

    def run(self):
        if self.method == "adam":
            return self._run_adam()
        return self._run_lbfgs()

    def _run_lbfgs(self):
        # host synchronisations: one per function evaluation (loss and the
        # directional derivative together) and one per accepted step (curvature)
        x = self.x
        loss, g = self._eval(x)
        lv = float(loss)
        if not math.isfinite(lv) or g is None or not bool(torch.isfinite(g).all()):
            raise _Stop("the loss or its gradient is not finite at the starting point")
        self._record(x, lv)
        S, Y, R = [], [], []
        while self.iterations < self.max_iterations:
            # two-loop recursion
            q = g.clone()
            alphas = []
            for s, y, rho in zip(reversed(S), reversed(Y), reversed(R)):
                a = rho * torch.dot(s, q)
                alphas.append(a)
                q.sub_(y * a)
            if S:
                q.mul_(torch.dot(S[-1], Y[-1]) / torch.dot(Y[-1], Y[-1]))
            for (s, y, rho), a in zip(zip(S, Y, R), reversed(alphas)):
                q.add_(s * (a - rho * torch.dot(y, q)))
            d = q.neg_()
            gd_t = torch.dot(g, d)
            if S:
                step = 1.0
            else:
                # no curvature information yet: a cautious first step
                step = self.lr * FIRST_STEP / max(float(d.abs().max()), 1e-30)
            accepted = False
            n_nonfinite = 0
            gd = None
            for _ in range(30):
                xn = x + step * d
                ln, gn = self._eval(xn)
                if gd is None:
                    lnv, gd = torch.stack([ln.to(gd_t.dtype), gd_t]).tolist()
                    if not (gd < 0 and math.isfinite(gd)):
                        break  # not a descent direction: restart along the gradient
                else:
                    lnv = float(ln)
                if math.isfinite(lnv) and gn is not None:
                    if lnv <= lv + 1e-4 * step * gd:
                        accepted = True
                        break
                    step *= 0.5
                else:
                    n_nonfinite += 1
                    if n_nonfinite > 3:
                        break
                    step *= 0.1
            if not accepted:
                if n_nonfinite > 3:
                    self.nonfinite = True
                    break
                if S:  # retry along the gradient
                    S.clear(), Y.clear(), R.clear()
                    continue
                self.converged = True  # no decrease possible at this precision
                break
            s = xn - x
            y = gn - g
            sy, yy = torch.stack([torch.dot(s, y), torch.dot(y, y)]).tolist()
            if sy > 1e-10 * yy:
                S.append(s), Y.append(y), R.append(1.0 / sy)
                if len(S) > self.history:
                    S.pop(0), Y.pop(0), R.pop(0)
            x, g, lv = xn, gn, lnv
            self.x = x
            self._record(x, lv)
            self._report(lv)
            if self._check_converged():
                self.converged = True
                break
        return self

    def _run_adam(self):
        x = self.x.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.lr)
        while True:
            opt.zero_grad(set_to_none=True)
            try:
                loss = self.fun(x)
                lv = float(loss.detach())
            except NonFiniteError:
                lv = math.nan
            if not math.isfinite(lv):
                if not self.losses:
                    raise _Stop("the loss is not finite at the starting point")
                self.nonfinite = True
                break
            self._record(x, lv)
            if self.losses and len(self.losses) > 1:
                self._report(lv)
                if self._check_converged():
                    self.converged = True
                    break
            if self.iterations >= self.max_iterations:
                break
            loss.backward()
            opt.step()
            self.evaluations += 1
        self.x = x.detach()
        return self


# ============================================================================ main
def reconstruct_ad(images, defocus, *, pixel_size, beam_energy, cs=1.0, theta_c=0.01,
                   defocus_spread=500.0, astigmatism=0.0, astigmatism_angle=0.0,
                   refine=(), refine_amplitude=True, likelihood="gaussian", dose=None,
                   regularization="auto", max_iterations=500, tolerance=1e-4,
                   learning_rate=None, initial_phase=None, initial_amplitude=None, init="auto",
                   padding="free", device="auto", dtype="float32", seed=None, progress=None,
                   optimizer="lbfgs", bias_correction="auto", _pyramid=True, _race=True,
                   _drift_margin=None):
    """Retrieve the exit-wave phase of a focal series by automatic differentiation.

    Parameters
    ----------
    images : array_like, shape (N, H, W)
        Focal-series intensities (any unit; counts for ``likelihood="poisson"``
        without ``dose``), N >= 2 at >= 2 distinct defocus values.
    defocus : array_like, shape (N,)
        Defocus of each image, nm, positive for overfocus (nominal values when
        ``"defocus"`` is refined).
    pixel_size : float or (float, float)
        Pixel size, nm.
    beam_energy : float
        Accelerating voltage, keV.
    cs : float
        Spherical aberration, mm.
    theta_c : float
        Beam divergence (illumination semi-angle), mrad; the start if refined.
    defocus_spread : float
        Focal spread, nm (1/e half-width); the start if refined.
    astigmatism : float
        Two-fold astigmatism magnitude, nm (start value if refined).
    astigmatism_angle : float
        Astigmatism direction, **degrees** from ``+x`` toward ``+y``.
    refine : sequence of str
        Experimental parameters fitted besides the exit wave (default none):
        ``"defocus"`` (per image), ``"shifts"`` (per-image drift, sub-pixel;
        the image nearest focus is the reference, first on ties),
        ``"theta_c"``, ``"astigmatism"`` (magnitude and angle, shared),
        ``"scale"`` (per-image intensity), ``"defocus_spread"`` (only when the
        data constrain it). Parameters the data do not constrain are reported
        in ``not_identifiable``. Naming them never changes whether the
        amplitude is refined (``refine_amplitude``); ``"amplitude"`` is still
        accepted here, as ``refine_amplitude=True``.
    refine_amplitude : bool
        Fit the exit-wave amplitude pixel by pixel (joint-TV regularised) as
        well as the phase (default True: specimens absorb and scatter, and a
        uniform amplitude that does not describe them biases the phase and the
        optical parameters); False holds it at ``initial_amplitude`` (or the
        in-focus image's, or uniform).
    likelihood : {"gaussian", "poisson"}
        Noise model; see the module docstring.
    dose : float or array_like of shape (N,), optional
        Poisson only: electrons per pixel of each image; the images are rescaled
        to counts with this mean. ``None``: the images already are counts.
    regularization : "auto", float or None
        Total-variation weight ``beta`` (1/rad, MAP rate in units of the negative
        log-likelihood, independent of noise level and image size); ``"auto"``:
        chosen from the data, starting at :data:`DEFAULT_TV_WEIGHT` (module
        docstring, "Regularisation weight"); ``0`` or ``None``: none.
    max_iterations : int
        Maximum optimiser iterations (all stages).
    tolerance : float
        Stop when the loss decreased by less than this fraction over
        :data:`CONVERGENCE_WINDOW` iterations.
    learning_rate : float, optional
        L-BFGS: scales the first step (default 1; the later steps come from the
        curvature); Adam: the learning rate in whitened units (default 0.05).
    initial_phase : array_like (H, W), optional
        Starting phase, rad (overrides ``init``); extended over the free
        border by repeating its edge.
    initial_amplitude : array_like (H, W), optional
        Amplitude (held, or the start when ``"amplitude"`` is refined). Default:
        ``sqrt(I0 / <I0>)`` of the in-focus image(s) if the series has one
        (``|df| <= 1e-3 max|df|``), else uniform.
    init : {"auto", "flat", "tie", "random"}
        Starting phase. ``"auto"``: the best of the flat, coarse-to-fine and TIE
        starts after a short race (see the module docstring); ``"flat"``: a
        flat phase, with a coarse pass on binned images first when optical
        parameters are refined; ``"tie"``: the TIE solution
        (:func:`~hyperspy_lorentz.reconstruction.tie.tie_phase`, images on both
        sides of focus needed); ``"random"``: small random phase (``seed``).
    padding : "free", "periodic", None, "reflect" or "edge"
        Boundaries. ``"free"`` (default): the exit wave lives on a canvas
        larger than the images by a free border sized from the physics (the
        Fresnel spread at the largest defocus, and a margin for drift that is
        refined; :func:`~hyperspy_lorentz.reconstruction.canvas.free_border`),
        whose phase and amplitude are fitted under the same prior; only the
        measured pixels enter the likelihood. Right for every micrograph (a
        window onto a larger specimen) and for isolated objects.
        ``"periodic"`` (or ``None``): periodic boundaries on the image grid,
        for truly periodic simulations (cheaper, and exact there).
        ``"reflect"``/``"edge"``: the image-sized exit wave is mirrored or
        edge-extended by a quarter of the image before propagation (kept for
        comparison; both force the wrong boundary condition wherever flux
        crosses the edge).
    device : "auto", "cpu", "cuda", ...
        ``"auto"`` picks CUDA when torch sees a GPU.
    dtype : {"float32", "float64"}
        Working precision.
    seed : int, optional
        Seed of the random start (``init="random"``; torch's RNG is seeded in a
        forked state). The fit itself has no randomness: on CPU its kernels are
        deterministic for a given number of threads; on CUDA deterministic
        algorithms are switched on during the fit (and restored after).
    progress : callable, optional
        ``progress(iteration, loss)`` after every iteration, those of the race
        of starts and of the bias-correction replicates included (``iteration``
        counts within each of them and within the main fit). A
        ``KeyboardInterrupt`` (also one raised by it) ends the fit with the best
        iterate so far, ``interrupted=True`` and a warning.
    optimizer : {"lbfgs", "adam"}
        Optimiser (default L-BFGS).
    bias_correction : "auto" or int
        Parametric-bootstrap replicates used to correct the bias of the refined
        optical parameters (defocus, shifts, ``theta_c``, astigmatism, scale)
        and to estimate their standard errors (see the module docstring). Each
        replicate is a fit from the known truth of its simulated data, at most
        ``max_iterations // 3`` iterations (40-50 on the benchmarks). ``"auto"``:
        :data:`BOOTSTRAP_REPLICATES` when optical parameters are refined, else
        0; ``0``: the joint MAP values, uncorrected. The replicates' noise is
        drawn from ``seed`` (``None``: seed 0, so that repeated calls agree).
    _pyramid : bool or "always"
        Private: allow the coarse pass (the coarse pass itself runs without);
        ``"always"`` also without optical parameters (coarse-to-fine start).
    _race : bool
        Private: allow the race of starts of ``init="auto"``.

    Returns
    -------
    ADResult

    Raises
    ------
    ValueError
        Bad input (shape mismatch, fewer than two distinct defocus values,
        non-finite or all-zero images, unknown options), or a problem that does
        not fit in memory (crop, bin, or move to a GPU).
    FloatingPointError
        If the loss is not finite even at the starting point.
    """
    t_start = time.perf_counter()
    imgs, df = _check_images(images, defocus)
    n, h, w = imgs.shape
    pixel = optics._check_pixel_size(pixel_size)
    energy = _as_float(beam_energy, "beam_energy", "keV", positive=True)
    wl = optics.wavelength(energy)
    cs = _as_float(cs, "cs", "mm")
    theta_c = _as_float(theta_c, "theta_c", "mrad", nonneg=True)
    defocus_spread = _as_float(defocus_spread, "defocus_spread", "nm", nonneg=True)
    astig = _as_float(astigmatism, "astigmatism", "nm")
    astig_angle = math.radians(_as_float(astigmatism_angle, "astigmatism_angle", "degrees"))
    refine = _check_refine(refine, refine_amplitude)
    if likelihood not in ("gaussian", "poisson"):
        raise ValueError(f"likelihood must be 'gaussian' or 'poisson', got {likelihood!r}")
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    if init not in ("auto", "tie", "flat", "random"):
        raise ValueError(f"init must be 'auto', 'tie', 'flat' or 'random', got {init!r}")
    if padding not in ("free", "periodic", None, "reflect", "edge"):
        raise ValueError(f"padding must be 'free' (a free border; the default), 'periodic' "
                         f"(or None), 'reflect' or 'edge', got {padding!r}")
    if padding == "periodic":
        padding = None
    try:
        max_iterations = int(max_iterations)
    except (TypeError, ValueError):
        raise ValueError(f"max_iterations must be an integer, got {max_iterations!r}") from None
    if max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}")
    tolerance = _as_float(tolerance, "tolerance", "relative", nonneg=True)
    auto_weight = False
    if regularization is None:
        beta = 0.0
    elif isinstance(regularization, str):
        if regularization != "auto":
            raise ValueError(f"regularization must be 'auto', a number >= 0 or None, got "
                             f"{regularization!r}")
        beta, auto_weight = DEFAULT_TV_WEIGHT, True
    else:
        beta = _as_float(regularization, "regularization", "1/rad", nonneg=True)
    if learning_rate is None:
        lr = 1.0 if optimizer == "lbfgs" else 0.05
    else:
        lr = _as_float(learning_rate, "learning_rate", "whitened units", positive=True)
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be a callable(iteration, loss), got {progress!r}")
    if isinstance(bias_correction, str) and bias_correction == "auto":
        n_boot = None
    elif (isinstance(bias_correction, (int, np.integer)) and not isinstance(bias_correction, bool)
          and bias_correction >= 0):
        n_boot = int(bias_correction)
    else:
        raise ValueError(f"bias_correction must be 'auto' or a number of bootstrap replicates "
                         f">= 0, got {bias_correction!r}")
    tdt = _torch_dtype(dtype)
    dev = _resolve_device(device)
    if "theta_c" in refine and theta_c <= 0:
        raise ValueError("theta_c must be > 0 to refine it (a start value, e.g. 0.01 mrad)")
    if "defocus_spread" in refine and defocus_spread <= 0:
        raise ValueError("defocus_spread must be > 0 to refine it (a start value, e.g. 500 nm)")

    # ---------------------------------------------------------------- data
    if likelihood == "poisson":
        if np.min(imgs) < 0:
            raise ValueError("the Poisson likelihood needs non-negative counts; the images "
                             "have negative pixels (use likelihood='gaussian')")
        means = imgs.mean(axis=(1, 2))
        if dose is None:
            counts, dose_n = imgs, means
        else:
            try:
                d = np.broadcast_to(np.asarray(dose, dtype=float), (n,)).copy()
            except ValueError:
                raise ValueError(f"dose must be a number or one per image ({n}), got "
                                 f"{dose!r}") from None
            if not np.all(np.isfinite(d)) or np.any(d <= 0):
                raise ValueError(f"dose must be positive (electrons per pixel), got {dose!r}")
            counts = imgs / means[:, None, None] * d[:, None, None]
            dose_n = d
    elif dose is not None:
        raise ValueError("dose is only used with likelihood='poisson'")

    norm = imgs / imgs.mean(axis=(1, 2), keepdims=True)
    if initial_phase is not None:
        initial_phase = np.asarray(initial_phase, dtype=float)
        if initial_phase.shape != (h, w) or not np.all(np.isfinite(initial_phase)):
            raise ValueError(f"initial_phase must be a finite ({h}, {w}) array (rad)")
    if initial_amplitude is not None:
        initial_amplitude = np.asarray(initial_amplitude, dtype=float)
        if (initial_amplitude.shape != (h, w) or not np.all(np.isfinite(initial_amplitude))
                or np.any(initial_amplitude < 0) or not np.any(initial_amplitude > 0)):
            raise ValueError(f"initial_amplitude must be a finite, non-negative ({h}, {w}) "
                             f"array, not all zero")

    if padding == "free":
        border = free_border((h, w), pixel, energy, df, cs, theta_c, defocus_spread,
                             drift_margin=(0 if "shifts" not in refine else DRIFT_MARGIN
                                           if _drift_margin is None else _drift_margin))
        canvas = Canvas.around((h, w), border)
    else:
        border, canvas = None, Canvas.periodic((h, w))
    _check_memory((h, w), n, refine, tdt, padding, border, dev)

    ref_index = int(np.argmin(np.abs(df)))  # shift gauge: nearest focus, first on ties
    infocus = np.flatnonzero(np.abs(df) <= INFOCUS_FRACTION * np.max(np.abs(df)))
    if likelihood == "gaussian":
        amps = np.sqrt(np.clip(norm, 0.0, None), dtype=np.float32 if tdt == torch.float32
                       else np.float64)
        sigma_estimated = np.array([estimate_noise(a.astype(np.float64)) for a in amps])
        sigma = np.maximum(sigma_estimated, NOISE_FLOOR)

    # ---------------------------------------------------------------- start point
    race, race_iterations = None, 0
    if init == "auto" and initial_phase is None and _race:
        both_sides = bool(np.any(df < 0) and np.any(df > 0))
        candidates = ["flat"]
        if (_pyramid and not any(r in _OPTICAL for r in refine)
                and min(h, w) // PYRAMID_BINNING >= PYRAMID_MIN_SIZE):
            candidates.append("coarse-to-fine")
        if both_sides:
            candidates.append("tie")
        if len(candidates) > 1 and max_iterations >= 4 * INIT_RACE_ITERATIONS:
            race = {}
            for cand in candidates:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    trial = reconstruct_ad(
                        imgs, df, pixel_size=pixel, beam_energy=energy, cs=cs,
                        theta_c=theta_c, defocus_spread=defocus_spread, astigmatism=astig,
                        astigmatism_angle=math.degrees(astig_angle), refine=refine,
                        refine_amplitude="amplitude" in refine,
                        likelihood=likelihood, dose=dose, regularization=beta,
                        max_iterations=INIT_RACE_ITERATIONS, tolerance=tolerance,
                        learning_rate=learning_rate, initial_amplitude=initial_amplitude,
                        init="tie" if cand == "tie" else "flat", padding=padding,
                        device=dev, dtype=dtype, seed=seed, optimizer=optimizer,
                        progress=progress, bias_correction=0,
                        _pyramid="always" if cand == "coarse-to-fine" else _pyramid,
                        _race=False)
                stages_run = trial.parameters["stages"]
                race[cand] = float(stages_run[-1]["loss"] if stages_run
                                   else min(trial.loss_history, default=math.inf))
                race_iterations += trial.iterations
                if trial.interrupted:
                    trial.parameters["init_race"] = race
                    trial.parameters["init_race_iterations"] = race_iterations
                    warnings.warn("AD reconstruction interrupted while choosing the start "
                                  f"({cand!r}); returning the best iterate so far",
                                  stacklevel=2)
                    return trial
            winner = min(race, key=race.get)
            if winner == "coarse-to-fine":
                _pyramid = "always"
            init = "tie" if winner == "tie" else "flat"
    init_used, tie_info = ("flat" if init == "auto" else init), None
    if initial_phase is not None:
        phase0 = initial_phase - initial_phase.mean()
        init_used = "given"
    else:
        both = bool(np.any(df < 0) and np.any(df > 0))
        if init_used == "tie":
            if not both:
                raise ValueError("init='tie' needs images on both sides of focus (defocus < 0 "
                                 "and > 0); use init='flat'")
            from hyperspy_lorentz.reconstruction.tie import tie_phase

            phase0, tie_info = tie_phase(imgs, df, pixel, wl)
            phase0 = phase0 - phase0.mean()
        elif init_used == "random":
            phase0 = 0.01 * np.random.default_rng(seed).standard_normal((h, w))
        else:
            phase0 = np.zeros((h, w))
    if initial_amplitude is not None:
        amp0, amp_source = initial_amplitude, "given"
    elif infocus.size:
        amp0 = np.sqrt(np.clip(norm[infocus].mean(axis=0), 0.0, None))
        amp_source = f"in-focus image(s) {infocus.tolist()}"
    else:
        amp0, amp_source = None, "uniform"
    del norm
    if amp0 is not None:
        amp0 = amp0 / math.sqrt(float(np.mean(amp0**2)))
        if "amplitude" in refine:
            amp0 = np.maximum(amp0, 1e-3)
        amp0 = canvas.embed(amp0, "edge")
    phase0 = canvas.embed(phase0, "edge")

    settings = dict(
        pixel_size=list(pixel), beam_energy=energy, wavelength=wl, cs=cs, theta_c=theta_c,
        defocus_spread=defocus_spread, astigmatism=astig,
        astigmatism_angle=math.degrees(astig_angle), defocus=df.tolist(),
        refine=list(refine), refine_amplitude="amplitude" in refine, likelihood=likelihood,
        dose=None if dose is None else np.broadcast_to(np.asarray(dose, float), (n,)).tolist(),
        regularization=beta,
        regularization_input=(regularization if isinstance(regularization, (str, type(None)))
                              else float(regularization)),
        tv_epsilon=TV_EPSILON, joint_tv_coupling=JOINT_TV_COUPLING,
        max_iterations=max_iterations, tolerance=tolerance,
        convergence_window=CONVERGENCE_WINDOW, learning_rate=lr, optimizer=optimizer,
        lbfgs_history=LBFGS_HISTORY, preconditioner_floor=PRECONDITIONER_FLOOR,
        preconditioner_tv=PRECONDITIONER_TV,
        init=("coarse-to-fine" if _pyramid == "always" and init_used == "flat" else init_used),
        initial_amplitude=amp_source,
        padding="periodic" if padding is None else padding,
        canvas_shape=list(canvas.shape), canvas_border=list(canvas.border),
        device=str(dev), dtype=str(tdt).replace("torch.", ""), seed=seed,
        reference_image=ref_index,
        noise_sigma=sigma.tolist() if likelihood == "gaussian" else None,
        noise_sigma_estimated=(sigma_estimated.tolist() if likelihood == "gaussian"
                               else None),
        dose_used=None if likelihood == "gaussian" else np.asarray(dose_n, float).tolist(),
        tie_qc=None if tie_info is None else tie_info.get("qc"),
        init_race=race, init_race_iterations=race_iterations,
    )

    with _deterministic(seed, dev):
        tens = dict(dtype=tdt, device=dev)
        if likelihood == "gaussian":
            data_t = torch.as_tensor(amps, **tens)
            weights = torch.as_tensor(1.0 / sigma**2, **tens)
            dose_t = None
            del amps
        else:
            data_t = torch.as_tensor(counts, **tens)
            weights = torch.ones(n, **tens)
            dose_t = torch.as_tensor(dose_n, **tens)

        def make_model(spread=defocus_spread, theta=theta_c):
            return ForwardModel((h, w), pixel, energy, cs=cs, theta_c=theta,
                                defocus_spread=spread, padding=padding, pad_width=border,
                                device=dev, dtype=tdt)

        model = make_model()
        start = {
            "phase": torch.as_tensor(phase0, **tens),
            "amplitude": None if amp0 is None else torch.as_tensor(amp0, **tens),
            "defocus": df.copy(), "shifts": None, "theta_c": theta_c,
            "astig": np.array([astig * math.cos(2 * astig_angle),
                               astig * math.sin(2 * astig_angle)]),
            "scale": np.ones(n),
        }

        def make_problem(st, ref, mdl, data=None):
            pr = _Problem(data=data_t if data is None else data, weights=weights,
                          likelihood=likelihood, dose=dose_t,
                          model=mdl, start=st, refine=ref, beta=beta, eps=TV_EPSILON,
                          kappa=JOINT_TV_COUPLING, periodic=padding is None,
                          ref_index=ref_index, device=dev, dtype=tdt,
                          coverage=canvas.coverage)
            pr.build_preconditioners(wl, cs, mdl.defocus_spread, pixel)
            return pr

        def stage_options(budget, tol):
            return dict(method=optimizer, learning_rate=lr, history=LBFGS_HISTORY,
                        max_iterations=budget, tolerance=tol, window=CONVERGENCE_WINDOW,
                        progress=progress, offset=total_it)

        def finish_stage(problem, opt, refined, tol):
            """Account a finished stage; return its best state."""
            nonlocal total_it, evaluations, converged, nonfinite
            losses.extend(opt.losses)
            total_it += opt.iterations
            evaluations += opt.evaluations
            converged, nonfinite = opt.converged, opt.nonfinite
            stage_info.append(dict(refine=refined, iterations=opt.iterations,
                                   converged=opt.converged, loss=opt.best_loss, tolerance=tol))
            return problem.state(opt.best_x)

        fitted = refine
        gradient_refine = tuple(r for r in refine if r != "defocus_spread")
        optical = tuple(r for r in gradient_refine if r in _OPTICAL)
        interrupted = False
        losses, total_it, evaluations = [], 0, 0
        stage_info = []

        # coarse pass: the optical parameters (drift, defocus...) on binned images,
        # where they are far from the phase-wrapping local minima of the full grid
        coarse = None
        b = PYRAMID_BINNING
        if (_pyramid and (optical or _pyramid == "always") and init_used == "flat"
                and min(h, w) // b >= PYRAMID_MIN_SIZE
                and max_iterations >= 10):
            hc, wc = h // b, w // b
            blocks = imgs[:, :hc * b, :wc * b].reshape(n, hc, b, wc, b)
            if likelihood == "poisson":
                binned = blocks.sum(axis=(2, 4)) if dose is None else blocks.mean(axis=(2, 4))
                cdose = None if dose is None else np.asarray(dose_n) * b * b
            else:
                binned, cdose = blocks.mean(axis=(2, 4)), None
            camp = None
            if initial_amplitude is not None:
                camp = initial_amplitude[:hc * b, :wc * b].reshape(hc, b, wc, b).mean(axis=(1, 3))

            def coarse_progress(it, loss):
                if progress is not None:
                    progress(it, loss)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                coarse = reconstruct_ad(
                    binned, df, pixel_size=(pixel[0] * b, pixel[1] * b), beam_energy=energy,
                    cs=cs, theta_c=theta_c, defocus_spread=defocus_spread,
                    astigmatism=astig, astigmatism_angle=math.degrees(astig_angle),
                    refine=optical, refine_amplitude=False, likelihood=likelihood, dose=cdose,
                    regularization=beta,
                    max_iterations=max(max_iterations // 3, 1),
                    tolerance=STAGE1_TOLERANCE_FACTOR * tolerance, learning_rate=learning_rate,
                    initial_amplitude=camp, padding=COARSE_PADDING.get(padding, padding),
                    device=dev, dtype=dtype,
                    progress=coarse_progress, optimizer=optimizer, bias_correction=0,
                    _pyramid=False, _drift_margin=math.ceil(DRIFT_MARGIN / b))
            losses += coarse.loss_history
            total_it += coarse.iterations
            evaluations += coarse.parameters["evaluations"]
            stage_info.append(dict(refine=list(optical), iterations=coarse.iterations,
                                   converged=coarse.converged, binning=b,
                                   loss=min(coarse.loss_history), tolerance=(
                                       STAGE1_TOLERANCE_FACTOR * tolerance)))
            ac = coarse.astigmatism, math.radians(coarse.astigmatism_angle)
            start = dict(start, phase=torch.as_tensor(
                             canvas.embed(_upsample(coarse.phase, b, (h, w)), "edge"), **tens),
                         defocus=coarse.defocus.copy(), shifts=coarse.shifts * b,
                         theta_c=coarse.theta_c,
                         astig=np.array([ac[0] * math.cos(2 * ac[1]), ac[0] * math.sin(2 * ac[1])]),
                         scale=coarse.scale.copy())
            interrupted = coarse.interrupted

        # stage 1 (warm start): the phase alone -- or, after the coarse pass, the
        # phase and the optical parameters; last stage: everything refined
        stages = []
        if coarse is not None:
            if "amplitude" in gradient_refine:
                stages.append((optical, STAGE1_TOLERANCE_FACTOR * tolerance,
                               max_iterations // 2))
        elif gradient_refine or "defocus_spread" in refine:
            cap1 = (min(STAGE1_ITERATIONS_OPTICAL, max_iterations // 2) if optical
                    else max_iterations // 2)
            stages.append(((), STAGE1_TOLERANCE_FACTOR * tolerance, cap1))
        stages.append((gradient_refine, tolerance, None))
        if interrupted:
            stages = []
            warnings.warn(f"AD reconstruction interrupted after {total_it} iterations (coarse "
                          f"pass); returning the best iterate so far", stacklevel=2)
        not_ident = []
        cur_problem, cur_opt = None, None
        spread = defocus_spread
        converged = False
        nonfinite = False
        try:
            for k, (ref, tol, cap) in enumerate(stages):
                if total_it >= max_iterations and k > 0:
                    break
                if k == len(stages) - 1 and any(r in refine for r in
                                                ("defocus_spread", "theta_c")):
                    # scalars the data may not constrain: chi^2 change on doubling them
                    probe = make_problem(start, (), model)
                    xp = torch.zeros(probe.size, **tens)
                    for name, kw in (("defocus_spread", {"spread": 2.0 * defocus_spread}),
                                     ("theta_c", {"theta": 2.0 * theta_c})):
                        if name in refine:
                            dchi2 = probe.chi2_change(xp, make_model(**kw))
                            settings[f"chi2_change_{name}"] = dchi2
                            if dchi2 < IDENTIFIABILITY_CHI2:
                                not_ident.append(name)
                    del probe, xp
                    fitted = tuple(r for r in refine if r not in not_ident)
                    gradient_refine = tuple(r for r in fitted if r != "defocus_spread")
                    ref = gradient_refine
                cur_problem, cur_opt = make_problem(start, ref, model), None
                budget = max_iterations - total_it
                if cap is not None:
                    budget = min(budget, cap)
                cur_opt = _stage_optimiser(cur_problem, tens, **stage_options(budget, tol))
                cur_opt.run()
                start = finish_stage(cur_problem, cur_opt, list(ref), tol)
                if nonfinite:
                    break
            if "defocus_spread" in fitted and not nonfinite:
                new = _refine_spread(cur_problem, cur_opt.best_x, spread, make_model)
                if abs(new / spread - 1.0) > 1e-3:
                    spread = new
                    model = make_model(spread=spread)
                    cur_problem, cur_opt = make_problem(start, gradient_refine, model), None
                    cur_opt = _stage_optimiser(
                        cur_problem, tens,
                        **stage_options(max(max_iterations - total_it, 0), tolerance))
                    cur_opt.run()
                    start = finish_stage(cur_problem, cur_opt,
                                         list(gradient_refine) + ["defocus_spread"], tolerance)
            if not nonfinite and stages and beta > 0:
                start, settings["phase_unwrapped_pixels"] = _unwrap(
                    start, make_problem(start, (), model), tens)
            if auto_weight and not nonfinite and stages:
                # the data-derived weight (module docstring): refit at the Laplace
                # weight when the fit explains more than its degrees of freedom
                # allow, then at the weight where chi^2 meets its expectation
                rule = _adapt_weight(make_problem(start, (), model), tens, canvas, beta)
                settings["regularization_rule"] = rule
                base_state, base_beta = start, beta
                lo = (math.log(beta), rule["discrepancy"])
                trial = rule["laplace_weight"] if rule["refit"] else None
                while trial is not None and max_iterations - total_it >= REFIT_MIN_ITERATIONS:
                    beta = trial
                    cur_problem, cur_opt = make_problem(base_state, gradient_refine, model), None
                    cur_opt = _stage_optimiser(
                        cur_problem, tens,
                        **stage_options(max_iterations - total_it, tolerance))
                    cur_opt.run()
                    start = finish_stage(cur_problem, cur_opt, list(gradient_refine),
                                         tolerance)
                    stage_info[-1]["regularization"] = beta
                    chi2_b, expected_b, _ = _discrepancy(make_problem(start, (), model), tens,
                                                         beta)
                    d = chi2_b - expected_b
                    rule["trials"].append(dict(weight=beta, discrepancy=d))
                    trial = None
                    if d > 0 and len(rule["trials"]) == 1:
                        # over-smoothed at the Laplace weight: interpolate (log weight)
                        # to where the discrepancy vanishes
                        t = lo[1] / (lo[1] - d)
                        trial = math.exp(lo[0] + t * (math.log(beta) - lo[0]))
                        if trial < WEIGHT_CHANGE * base_beta:  # not worth it: keep
                            trial = None
                            beta, start = base_beta, base_state
        except KeyboardInterrupt:
            interrupted = True
            if cur_opt is not None:
                losses += cur_opt.losses
                total_it += cur_opt.iterations
                evaluations += cur_opt.evaluations
                if math.isfinite(cur_opt.best_loss):
                    start = cur_problem.state(cur_opt.best_x)
            converged = False
            warnings.warn(
                f"AD reconstruction interrupted after {total_it} iterations; returning the "
                f"best iterate so far", stacklevel=2)
        except _Stop as exc:
            raise FloatingPointError(
                f"AD reconstruction failed: {exc}; check the images, the defocus values and "
                f"the optical parameters (units nm, mm, mrad, keV)") from None
        if nonfinite:
            warnings.warn(
                f"AD reconstruction: the loss became NaN/inf after {total_it} iterations; "
                f"stopped and returned the best finite iterate", RuntimeWarning, stacklevel=2)

        settings["regularization"] = beta
        settings["reduced_chi2"] = _reduced_chi2(make_problem(start, (), model), tens)
        optical_fitted = tuple(r for r in gradient_refine if r in _OPTICAL)
        if n_boot is None:
            n_boot = BOOTSTRAP_REPLICATES if optical_fitted else 0
        settings["bias_correction"] = None
        standard_errors = {}
        if n_boot and optical_fitted and not (interrupted or nonfinite):
            cur_problem = cur_opt = None  # free the main fit's buffers (state is in start)
            try:
                start, boot = _bootstrap(
                    make_problem, start, gradient_refine, model, n_boot, seed,
                    likelihood=likelihood,
                    sigma=None if likelihood != "gaussian" else sigma_estimated,
                    dose=None if likelihood == "gaussian" else np.asarray(dose_n, float),
                    optimiser=dict(method=optimizer, learning_rate=lr, history=LBFGS_HISTORY,
                                   max_iterations=max(2 * CONVERGENCE_WINDOW,
                                                      max_iterations // 3),
                                   tolerance=tolerance, window=CONVERGENCE_WINDOW,
                                   progress=progress), tens=tens)
                settings["bias_correction"] = boot["record"]
                standard_errors = boot["standard_errors"]
            except KeyboardInterrupt:
                interrupted = True
                warnings.warn("AD reconstruction: bias correction interrupted; returning the "
                              "uncorrected optical parameters", stacklevel=2)

        canvas_phase = start["phase"].to(torch.float64).cpu().numpy()
        phase = canvas.crop(canvas_phase)
        offset = phase.mean()
        phase = phase - offset
        if start["amplitude"] is None:
            canvas_amplitude = np.ones(canvas.shape)
        else:
            canvas_amplitude = start["amplitude"].to(torch.float64).cpu().numpy()
        amplitude = canvas.crop(canvas_amplitude)
        norm_a = math.sqrt(float(np.mean(amplitude**2)))
        amplitude = amplitude / norm_a
        if canvas.is_periodic:
            canvas_phase = canvas_amplitude = None
        else:
            canvas_phase = canvas_phase - offset
            canvas_amplitude = canvas_amplitude / norm_a
        shifts = np.zeros((n, 2)) if start["shifts"] is None else start["shifts"]
        ac = start["astig"]
        a_mag = float(np.hypot(ac[0], ac[1]))
        a_ang = math.degrees(0.5 * math.atan2(ac[1], ac[0]))
        if "astigmatism" not in fitted:
            a_mag, a_ang = astig, math.degrees(astig_angle)
    for name in not_ident:
        warnings.warn(
            f"{name} is not identifiable from these data (doubling it changes chi^2 by less "
            f"than {IDENTIFIABILITY_CHI2:g}); it was kept at its given value", stacklevel=2)
    settings["evaluations"] = evaluations
    settings["stages"] = stage_info
    return ADResult(
        phase=phase, amplitude=amplitude, defocus=np.asarray(start["defocus"], float),
        shifts=np.asarray(shifts, float), theta_c=float(start["theta_c"]),
        astigmatism=a_mag, astigmatism_angle=a_ang, scale=np.asarray(start["scale"], float),
        defocus_spread=float(spread), loss_history=[float(v) for v in losses],
        iterations=total_it, converged=bool(converged), interrupted=interrupted,
        time_s=time.perf_counter() - t_start, refined=fitted,
        not_identifiable=tuple(not_ident), parameters=settings, device=str(dev),
        standard_errors=standard_errors, canvas_phase=canvas_phase,
        canvas_amplitude=canvas_amplitude)


def _stage_optimiser(problem, tens, **options):
    """The optimiser of one stage: whitened start at zero, scalar blocks calibrated."""
    x0 = torch.zeros(problem.size, **tens)
    problem.calibrate(x0)
    return _Optimiser(problem.loss, x0, **options)


@torch.no_grad()
def _unwrap(state, problem, tens):
    """Take the phase out of a 2 pi-wrapped local minimum.

    The images depend on ``exp(i phi)`` only, so ``phi`` and its 2 pi-unwrapped
    version (:func:`skimage.restoration.unwrap_phase` of ``phi`` wrapped,
    moved by whole turns to the fitted offset) give the same data term. A
    strong phase can be left with islands shifted by whole turns (a vortex
    disc of 4 rad: accuracy 0.93, 0.999 unwrapped); the unwrapped phase is
    taken when its prior (the TV) is lower, so the objective never increases.
    Returns the state and the number of pixels changed (0 when kept).
    """
    from skimage.restoration import unwrap_phase

    phase = state["phase"].to(torch.float64).cpu().numpy()
    wrapped = np.angle(np.exp(1j * phase))
    unwrapped = unwrap_phase(wrapped)
    unwrapped += 2.0 * np.pi * np.round(np.median(phase - unwrapped) / (2.0 * np.pi))
    changed = int(np.count_nonzero(np.abs(unwrapped - phase) > np.pi))
    if not changed:
        return state, 0
    x0 = torch.zeros(problem.size, **tens)
    phys = problem.physical(x0)
    new = dict(phys, phase=torch.as_tensor(unwrapped, **tens))
    if float(problem.prior(new)) >= float(problem.prior(phys)):
        return state, 0
    return dict(state, phase=new["phase"]), changed


@torch.no_grad()
def _discrepancy(problem, tens, beta):
    """(reduced chi^2, its expectation at weight ``beta``, scattered fraction) of the
    fit held by ``problem``; see :meth:`_Problem.expected_chi2`."""
    chi2 = _reduced_chi2(problem, tens)
    phys = problem.physical(torch.zeros(problem.size, **tens))
    amp = (torch.ones_like(phys["phase"]) if phys["amplitude"] is None
           else phys["amplitude"]).to(torch.float64)
    wave = amp * torch.exp(1j * phys["phase"].to(torch.float64))
    mixing = max(0.0, 1.0 - float(torch.abs(wave.mean()) ** 2 / (amp * amp).mean()))
    return chi2, problem.expected_chi2(beta, mixing), mixing


@torch.no_grad()
def _adapt_weight(problem, tens, canvas, beta):
    """The data-derived TV weight of ``regularization="auto"`` (see the module docstring).

    ``problem`` holds the fit at weight ``beta``. Returns a JSON-friendly record:
    the reduced chi^2 there, the threshold below which the fit explains the
    noise, the mean phase gradient ``g`` (rad/px, in the field of view) and the
    weight ``2 / g`` (the maximum-likelihood rate of the isotropic Laplace
    prior on the phase gradient that the TV is), and whether to refit with it.
    """
    chi2, expected, mixing = _discrepancy(problem, tens, beta)
    phys = problem.physical(torch.zeros(problem.size, **tens))
    threshold = expected - OVERFIT_SIGNIFICANCE * math.sqrt(2.0 / problem.m)
    phase = canvas.crop(phys["phase"]).to(torch.float64)
    gy = phase[1:, :-1] - phase[:-1, :-1]
    gx = phase[:-1, 1:] - phase[:-1, :-1]
    grad = torch.sqrt(gy * gy + gx * gx)
    g = max(float(grad.mean()), GRADIENT_FLOOR)
    eps = problem.eps
    tv = float((torch.sqrt(grad * grad + eps * eps) - eps).sum())
    quadratic = float((grad * grad).sum()) / (2.0 * eps)
    validity = tv / quadratic if quadratic > 0 else 1.0
    weight = 2.0 / g
    refit = bool(chi2 < threshold and weight > WEIGHT_CHANGE * beta
                 and validity >= QUADRATIC_VALIDITY)
    return dict(rule="discrepancy with effective degrees of freedom, Laplace-scale cap",
                weight_before=beta, reduced_chi2_before=chi2, expected_reduced_chi2=expected,
                discrepancy=chi2 - expected, threshold=threshold, mean_gradient=g,
                quadratic_validity=validity, mixing=mixing,
                laplace_weight=weight, refit=refit, trials=[])


@torch.no_grad()
def _reduced_chi2(problem, tens):
    """Misfit per pixel of the fitted images in units of the noise (1 when the
    model describes the data to the noise level): ``2 * data term`` for the
    Gaussian likelihood, the deviance per pixel for the Poisson one."""
    x0 = torch.zeros(problem.size, **tens)
    phys = problem.physical(x0)
    return 2.0 * float(problem.data_term(problem.raw_images(phys), phys["scale"]))


#: Optical parameters of a ``start`` dict, and whether they are corrected on a
#: log scale (positive quantities).
_BOOTSTRAP_KEYS = {"defocus": ("defocus", False), "shifts": ("shifts", False),
                   "theta_c": ("theta_c", True), "astigmatism": ("astig", False),
                   "scale": ("scale", True)}


def _bootstrap(make_problem, state, refine, model, replicates, seed, *, likelihood, sigma,
               dose, optimiser, tens):
    """Parametric-bootstrap bias correction of the refined optical parameters.

    Simulates ``replicates`` data sets from the fitted ``state`` with the noise
    model of the fit (Gaussian amplitudes with the per-image ``sigma``, or
    Poisson counts at ``dose``), refits each from that known truth and
    subtracts the mean deviation. Returns the corrected state and a record.
    """
    problem = make_problem(state, refine, model)
    x0 = torch.zeros(problem.size, **tens)
    with torch.no_grad():
        img = problem.images(problem.physical(x0)).to(torch.float64).cpu().numpy()
    seed = 0 if seed is None else int(seed)  # reproducible by default
    rng = np.random.default_rng(seed)
    keys = [k for k in _BOOTSTRAP_KEYS if k in refine]
    samples = {k: [] for k in keys}
    iterations = []
    for _ in range(replicates):
        if likelihood == "gaussian":
            sim = np.sqrt(np.clip(img, 0.0, None)) + (
                np.asarray(sigma, float)[:, None, None] * rng.standard_normal(img.shape))
        else:
            sim = rng.poisson(np.clip(img, 0.0, None) * dose[:, None, None]).astype(float)
        pr = make_problem(state, refine, model, data=torch.as_tensor(sim, **tens))
        del sim
        opt = _stage_optimiser(pr, tens, **optimiser)
        opt.run()
        iterations.append(opt.iterations)
        fit = pr.state(opt.best_x)
        for k in keys:
            samples[k].append(np.asarray(fit[_BOOTSTRAP_KEYS[k][0]], float))
        del pr, opt
    corrected = dict(state)
    bias, uncorrected, errors, applied = {}, {}, {}, {}
    for k in keys:
        name, log = _BOOTSTRAP_KEYS[k]
        est = np.asarray(state[name], float)
        reps = np.stack(samples[k])
        t_reps, t_est = (np.log(reps), np.log(est)) if log else (reps, est)
        b = t_reps.mean(axis=0) - t_est
        # a bias estimate within its own noise would add variance, not remove bias
        use = np.ones(np.shape(b), dtype=bool)
        if replicates > 1:
            se_mean = t_reps.std(axis=0, ddof=1) / math.sqrt(replicates)
            use = np.abs(b) > BOOTSTRAP_SIGNIFICANCE * se_mean
            errors[k] = reps.std(axis=0, ddof=1)
        new = np.where(use, np.exp(t_est - b) if log else t_est - b, est)
        bias[k] = np.asarray(est * (np.exp(b) - 1.0) if log else b).tolist()
        applied[k] = np.asarray(use).tolist()
        uncorrected[k] = est.tolist()
        corrected[name] = float(new) if np.ndim(new) == 0 else new
    if "astigmatism" in errors:  # vector (A cos 2a, A sin 2a) -> magnitude, angle
        reps = np.stack(samples["astigmatism"])
        errors["astigmatism_angle"] = np.degrees(
            0.5 * np.unwrap(np.arctan2(reps[:, 1], reps[:, 0]))).std(ddof=1)
        errors["astigmatism"] = np.hypot(reps[:, 0], reps[:, 1]).std(ddof=1)
    errors = {k: (float(v) if np.ndim(v) == 0 else np.asarray(v, float))
              for k, v in errors.items()}
    record = dict(method="parametric bootstrap", replicates=int(replicates), seed=seed,
                  iterations=iterations, bias=bias, applied=applied, uncorrected=uncorrected,
                  standard_errors={k: (v if np.ndim(v) == 0 else np.asarray(v).tolist())
                                   for k, v in errors.items()})
    return corrected, dict(record=record, standard_errors=errors)


def _upsample(a, b, shape):
    """Cubic, periodic upsampling of a b-times binned field to ``shape``."""
    from scipy import ndimage

    up = ndimage.zoom(a, b, order=3, mode="grid-wrap", grid_mode=True)
    h, w = shape
    up = up[:h, :w]
    if up.shape != (h, w):
        up = np.pad(up, ((0, h - up.shape[0]), (0, w - up.shape[1])), mode="edge")
    return up


def _refine_spread(problem, x, spread, make_model):
    """Golden-section search of ln(defocus_spread) (factor 10 either way), x fixed."""
    phys = problem.physical(x)

    def data_loss(d):
        with torch.no_grad():
            return float(problem.data_term(problem.raw_images(phys, model=make_model(spread=d)),
                                           phys["scale"]))

    a, b = math.log(spread) - math.log(10.0), math.log(spread) + math.log(10.0)
    gr = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - gr * (b - a), a + gr * (b - a)
    fc, fd = data_loss(math.exp(c)), data_loss(math.exp(d))
    for _ in range(20):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - gr * (b - a)
            fc = data_loss(math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + gr * (b - a)
            fd = data_loss(math.exp(d))
    best = math.exp(0.5 * (a + b))
    return best if data_loss(best) < data_loss(spread) else spread
