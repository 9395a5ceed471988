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
``regularization="auto"`` first fits at
:data:`~hyperspy_lorentz.reconstruction.ad.weight.DEFAULT_TV_WEIGHT` (the weight
of the paper's cases). It then compares the reduced chi^2 with the value
expected of a fit that takes up no more noise than its effective degrees of
freedom allow (:meth:`!_Problem.expected_chi2`: the linearised model is
diagonal in Fourier space, ``s_q = H_q / (H_q + beta |D_q|^2 / (eps M))``,
expected chi^2 ``1 - sum(2 s - s^2) / M``). Where the fit explains the data
better than that (by
:data:`~hyperspy_lorentz.reconstruction.ad.weight.OVERFIT_SIGNIFICANCE` standard
errors), and where the estimate holds
(:data:`~hyperspy_lorentz.reconstruction.ad.weight.QUADRATIC_VALIDITY`), the fit is repeated at the
maximum-likelihood rate of the isotropic Laplace prior on the phase gradient
that the TV is, ``2 / mean|grad phi|``, and, if that over-smooths, at the weight
interpolated (in log weight) to where chi^2 meets its expectation. The record
is ``parameters["regularization_rule"]``. Low-dose windows of magnetic
textures gain most (a lattice at 100 e-/px: 0.955 -> 0.991); strong phases with
steep flanks keep the default (the estimate misses their degrees of freedom).

After the stages the phase is unwrapped (2 pi): the images depend on
``exp(i phi)`` only, and the unwrapped phase is taken where its TV is lower
(:func:`!_unwrap`; vortex discs of 4 rad
from 3 images: 0.93 -> 0.9999).

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
  shifts in pixels (fitted for the images with contrast, relative to their
  mean: see "Error bars"), ``ln theta_c``, the astigmatism as the vector ``(A cos 2a, A sin 2a)``
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
for :data:`~hyperspy_lorentz.reconstruction.ad.stages.INIT_RACE_ITERATIONS`
iterations each and runs the one with the
lowest loss (the same objective for all; on every case measured the loss after
20 iterations ranked the starts as their final accuracies did). The race is
skipped when there is one candidate or ``max_iterations`` is below
``4 * INIT_RACE_ITERATIONS``; ``parameters["init_race"]`` records the losses.
The fit then runs in stages, each keeping its best iterate:

1. when optical parameters (defocus, shifts, ``theta_c``, astigmatism, scale)
   are refined and the images are at least 128 px: a coarse pass on images
   binned by :data:`~hyperspy_lorentz.reconstruction.ad.stages.PYRAMID_BINNING`,
   where a drift of a few pixels and a
   defocus error of several per cent are still inside the basin of
   convergence (on the full grid the phase first locks onto the misregistered
   images); otherwise a short phase-only warm start, which gives the optical
   parameters a structured phase for their whitening;
2. when the amplitude is refined: the phase (and the optical parameters) with
   the amplitude held -- an amplitude refined from the start absorbs phase
   errors;
3. everything refined.

Warm-start stages stop at ``10 * tolerance``; the last at ``tolerance``, the
relative loss decrease over
:data:`~hyperspy_lorentz.reconstruction.ad.optimiser.CONVERGENCE_WINDOW`
iterations, or when the
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

Error bars
----------
The bias is corrected, the error bars estimated and the identifiability of
the degenerate directions tested by one parametric bootstrap
(``bias_correction``, on by default when optical parameters are refined;
Efron & Tibshirani, *An Introduction to the Bootstrap*, ch. 10). Images are
simulated from the fitted exit wave and parameters with the fitted noise model
(:data:`~hyperspy_lorentz.reconstruction.ad.bootstrap.BOOTSTRAP_REPLICATES`
times; the noise estimated from the data, not floored by
:data:`~hyperspy_lorentz.reconstruction.ad.data.NOISE_FLOOR`), and each is
fitted again *from the nominal values* -- the given defocus and ``theta_c``, no
drift -- with the exit wave compensated so that the start gives the images
the fitted state would (:mod:`~hyperspy_lorentz.reconstruction.ad.modes`: the
phase scaled for a defocus scale, the wave refocused for an offset, a phase
ramp for a drift that grows with the defocus). A replicate thus has to travel
as far as the fit did, through the same near-degenerate directions; a
replicate started at its own truth (as before) does not move along them, and
its error bars were 10-180 times too small. The result:

* *bias*: the mean deviation of the replicates from their truth, subtracted
  where it exceeds
  :data:`~hyperspy_lorentz.reconstruction.ad.bootstrap.BOOTSTRAP_SIGNIFICANCE`
  of its own standard errors (a smaller estimate is mostly noise and would add
  variance: on a clean series with astigmatism refined, correcting it
  regardless moved the angle from 30.3 to 27.2 degrees, truth 30);
* *standard errors* (``ADResult.standard_errors``): the replicates' spread,
  widened by ``t(0.975, R - 1) / 1.96`` for the few replicates (x2.2 for
  three: a spread from three samples is itself uncertain, and +-2 of them
  should still cover about 95 %), and by ``sqrt(1 + 1/R)`` where a bias was
  subtracted (its own error);
* *the defocus scale and the common offset* are identifiable when the
  replicates, started at the nominal value (or
  :data:`~hyperspy_lorentz.reconstruction.ad.bootstrap.PROBE_STEP` of the
  largest defocus either side of the fit when the nominal is closer), recover
  at least :data:`~hyperspy_lorentz.reconstruction.ad.bootstrap.RECOVERY_MIN`
  of the distance; otherwise ``"defocus scale"`` / ``"defocus offset"`` goes
  to ``not_identifiable`` and the mode is held at its nominal value (the exit
  wave compensated). With the amplitude refined, the offset is fixed only by
  the coherence envelope and the strong-phase terms (above);
* *the drift that grows with the defocus* (a beam tilt) moves the images as a
  uniform in-plane induction (a phase ramp) does: only the prior separates
  them. Where the replicates recover less than half of it, ``"shift tilt"`` is
  reported; the fitted drift is kept and the part the replicates did not
  recover is added to its standard errors.

Shifts are relative to the *shift reference*: the mean over the images whose
contrast fixes their drift (a contrast above noise,
:func:`~hyperspy_lorentz.reconstruction.contrast.defocus_contrast`). An image
without contrast (the in-focus image of a pure phase object) keeps zero shift
and is reported as ``"shifts of image i"``. With drift refined on a free
field the race of starts leaves out the TIE start, which reads drift as a
phase ramp that the fit then keeps, trading it for a tilt of the drift (a
lattice window with 1.5 px drift: accuracy 0.59 from the TIE start, 0.98 from
the flat one with the coarse pass). Holding the tilt where the periodic coarse
pass put it was tried and dropped: on 128 px images (a 32 px coarse pass) it
held a wrong tilt (accuracy 0.37 against 0.95).

Before the bootstrap, the refined defocus values must beat the nominal ones: the
fit is repeated with the defocus held at the nominal values (the exit wave
compensated along the modes, the other refined parameters free), and unless the
refined values lower chi^2 (summed over the measured pixels) by at least the
:data:`~hyperspy_lorentz.reconstruction.ad.bootstrap.NOMINAL_TEST_LEVEL` (95 %)
quantile of chi^2 with one degree of freedom per image -- a likelihood-ratio
test -- ``"defocus"`` is not identifiable and the fit at the nominal values is
returned (``parameters["defocus_test"]``: the gain, the threshold). On a weak
lattice window at 10 electrons per pixel with the amplitude held, the refined
defocus had wandered 35 % from the truth while fitting the images *worse* than
the nominal values 4 % off (gains of -680 to -1060), with error bars of 1-2 %.
The test is only as good as its chi^2 law: that assumes the exit wave absorbs as
much noise at the refined defocus as at the nominal one, which fails when the
defocus moves far. On 96 px periodic lattices at 3-10 electrons per pixel with
``refine=("defocus",)``, single images moved by 100-460 % and the fit gained
thousands of units of chi^2 from it (a large defocus lets the phase fit the
noise): passed, and wrong. Below about 30 electrons per pixel, hold the
defocus or check it against the calibration.

The alternative's misfit is the lower of two candidates at the nominal values:
the refit, and the compensated start itself. The refit minimises chi^2 *plus
the prior* and can give up data fit for a smoother wave, so a refit alone
charges the nominal values for the prior's preference. With the amplitude
refined, the common offset of the defocus values is tested on its own in the
same way (one degree of freedom, ``parameters["defocus_offset_test"]``): the
refined values with their offset moved to the nominal one, the exit wave
refocused. A refocusing is invisible to the data but for the
spatial-coherence envelope, so the refined offset is mostly the prior's choice
of the sharpest plane, and the bootstrap, whose replicates return to the same
plane, reported it recovered with a tight error bar: on a weak lattice window
(256 px, 5 images, 10 e-/px) the offset came out 16 um off with standard
errors of 0.1 um, and the refocused wave at the nominal offset fitted the
images *better* (chi^2 lower by 68) than the refined state, while its refit
was worse by 8761. Where the gain is below the chi^2 quantile of one degree
of freedom, ``"defocus offset"`` is not identifiable and held at its nominal
value (largest error of that series 24 -> 6 um).

What the error bars do not hold: the bias of the prior (the TV shrinks the
phase, and the bootstrap's truth is the fitted, smoother exit wave, so up to
half of that bias can remain), and a model that does not describe the data (a
uniform amplitude assumed for a specimen whose amplitude is not uniform). Phase
and amplitude are the MAP estimates of the main fit.

A parameter whose doubling changes the fit by less than one unit of chi^2
(:data:`~hyperspy_lorentz.reconstruction.ad.stages.IDENTIFIABILITY_CHI2`) --
typically ``defocus_spread``, which the
paper's attempt to refine did not move either -- is kept at its given value and
reported in ``ADResult.not_identifiable`` (with a warning).
"""

from __future__ import annotations


# Re-exports: the public names, every documented constant, and the private names
# the tests use (they patch _Problem and _Optimiser in place; _available_memory is
# patched where _check_memory looks it up, in the memory module).
from hyperspy_lorentz.reconstruction._torch_common import _resolve_device  # noqa: F401
from hyperspy_lorentz.reconstruction.ad.bootstrap import (  # noqa: F401
    BOOTSTRAP_REPLICATES,
    BOOTSTRAP_SIGNIFICANCE,
)
from hyperspy_lorentz.reconstruction.ad.data import INFOCUS_FRACTION, NOISE_FLOOR  # noqa: F401
from hyperspy_lorentz.reconstruction.ad.inputs import DEFAULT_REFINE, REFINABLE  # noqa: F401
from hyperspy_lorentz.reconstruction.ad.memory import (  # noqa: F401
    MEMORY_COEFFICIENTS,
    _available_memory,
    _padded_shape,
    estimate_memory,
)
from hyperspy_lorentz.reconstruction.ad.objective import (  # noqa: F401
    JOINT_TV_COUPLING,
    PRECONDITIONER_FLOOR,
    PRECONDITIONER_TV,
    TV_EPSILON,
    _Problem,
)
from hyperspy_lorentz.reconstruction.ad.optimiser import (  # noqa: F401
    CONVERGENCE_WINDOW,
    FIRST_STEP,
    LBFGS_HISTORY,
    _Optimiser,
)
from hyperspy_lorentz.reconstruction.ad.result import ADResult  # noqa: F401
from hyperspy_lorentz.reconstruction.ad.solver import MISFIT_CHI2, reconstruct_ad  # noqa: F401
from hyperspy_lorentz.reconstruction.ad.stages import (  # noqa: F401
    COARSE_PADDING,
    IDENTIFIABILITY_CHI2,
    INIT_RACE_ITERATIONS,
    PYRAMID_BINNING,
    PYRAMID_MIN_SIZE,
    STAGE1_ITERATIONS_OPTICAL,
    STAGE1_TOLERANCE_FACTOR,
)
from hyperspy_lorentz.reconstruction.ad.weight import (  # noqa: F401
    DEFAULT_TV_WEIGHT,
    GRADIENT_FLOOR,
    OVERFIT_SIGNIFICANCE,
    QUADRATIC_VALIDITY,
    REFIT_MIN_ITERATIONS,
    WEIGHT_CHANGE,
)

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
    "MISFIT_CHI2",
]
