"""The stages of an AD fit: the race of starts, the coarse pass and the staged fit.

See "Starting point and stages" in :mod:`hyperspy_lorentz.reconstruction.ad`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from hyperspy_lorentz.reconstruction.ad.data import _infocus
from hyperspy_lorentz.reconstruction.ad.inputs import _OPTICAL
from hyperspy_lorentz.reconstruction.canvas import DRIFT_MARGIN

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
#: Tolerance of the first (warm-start) stage relative to ``tolerance``.
STAGE1_TOLERANCE_FACTOR = 10.0
#: Iterations of the first stage when optical parameters are refined: enough to
#: give the phase structure for their whitening, short enough not to fit the
#: phase to wrong parameters.
STAGE1_ITERATIONS_OPTICAL = 20
#: A refinable scalar whose doubling changes chi^2 by less than this is reported
#: as not identifiable.
IDENTIFIABILITY_CHI2 = 1.0


def _race_starts(solve, imgs, df, o, *, dose, initial_amplitude, pyramid):
    """The race of starts of ``init="auto"``: each candidate fitted for
    :data:`INIT_RACE_ITERATIONS` iterations by ``solve`` (``reconstruct_ad``).

    Returns ``(race, iterations, init, pyramid, interrupted)``: the losses (``None``
    when there was no race), the iterations spent, the start and pyramid switch to
    use, and the result of an interrupted candidate (to be returned), else ``None``.
    """
    h, w = imgs.shape[1:]
    init, race, race_iterations = o.init, None, 0
    both_sides = bool(np.any(df < 0) and np.any(df > 0))
    candidates = ["flat"]
    if (pyramid and not any(r in _OPTICAL for r in o.refine)
            and min(h, w) // PYRAMID_BINNING >= PYRAMID_MIN_SIZE):
        candidates.append("coarse-to-fine")
    if both_sides and not ("shifts" in o.refine and o.padding is not None):
        # not with drift refined on a free field: drift reads as a phase ramp to the
        # TIE, which the fit then keeps, trading it for a tilt of the drift (a lattice
        # window, 1.5 px drift: 0.79 from the TIE start, 0.98 from the flat one)
        candidates.append("tie")
    if len(candidates) > 1 and o.max_iterations >= 4 * INIT_RACE_ITERATIONS:
        race = {}
        for cand in candidates:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial = solve(
                    imgs, df, pixel_size=o.pixel, beam_energy=o.energy, cs=o.cs,
                    theta_c=o.theta_c, defocus_spread=o.defocus_spread, astigmatism=o.astig,
                    astigmatism_angle=math.degrees(o.astig_angle), refine=o.refine,
                    refine_amplitude="amplitude" in o.refine,
                    likelihood=o.likelihood, dose=dose, regularization=o.beta,
                    max_iterations=INIT_RACE_ITERATIONS, tolerance=o.tolerance,
                    learning_rate=o.learning_rate, initial_amplitude=initial_amplitude,
                    init="tie" if cand == "tie" else "flat", padding=o.padding,
                    device=o.dev, dtype=o.dtype, seed=o.seed, optimizer=o.optimizer,
                    progress=o.progress, bias_correction=0,
                    _pyramid="always" if cand == "coarse-to-fine" else pyramid,
                    _race=False, _shift_reference=o.shift_reference)
            stages_run = trial.parameters["stages"]
            race[cand] = float(stages_run[-1]["loss"] if stages_run
                               else min(trial.loss_history, default=math.inf))
            # all that the trial reported to ``progress`` (its coarse pass included)
            race_iterations += trial.parameters["iterations_all_fits"]
            if trial.interrupted:
                trial.parameters["init_race"] = race
                trial.parameters["init_race_iterations"] = race_iterations
                warnings.warn("AD reconstruction interrupted while choosing the start "
                              f"({cand!r}); returning the best iterate so far",
                              stacklevel=3)
                return race, race_iterations, init, pyramid, trial
        winner = min(race, key=race.get)
        if winner == "coarse-to-fine":
            pyramid = "always"
        init = "tie" if winner == "tie" else "flat"
    return race, race_iterations, init, pyramid, None


def _start_fields(o, imgs, df, norm, init, canvas, initial_phase, initial_amplitude):
    """The starting phase and amplitude on the canvas.

    Returns ``(phase0, amp0, init_used, tie_info, amp_source)``: ``amp0`` is ``None``
    for a uniform amplitude; ``init_used`` is ``"given"``, ``"tie"``, ``"random"`` or
    ``"flat"``.
    """
    h, w = imgs.shape[1:]
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

            phase0, tie_info = tie_phase(imgs, df, o.pixel, o.wl)
            phase0 = phase0 - phase0.mean()
            if "shifts" in o.refine:
                # drift between the images reads as a phase ramp to the TIE, and the
                # fit cannot take a ramp back out (it moves the images as a tilt of
                # the drift does): start without it (a lattice window with 1.5 px
                # drift: accuracy 0.59 with the ramp, 0.97 without)
                phase0 = phase0 - _plane(phase0)
        elif init_used == "random":
            phase0 = 0.01 * np.random.default_rng(o.seed).standard_normal((h, w))
        else:
            phase0 = np.zeros((h, w))
    infocus = _infocus(df)
    if initial_amplitude is not None:
        amp0, amp_source = initial_amplitude, "given"
    elif infocus.size:
        amp0 = np.sqrt(np.clip(norm[infocus].mean(axis=0), 0.0, None))
        amp_source = f"in-focus image(s) {infocus.tolist()}"
    else:
        amp0, amp_source = None, "uniform"
    if amp0 is not None:
        amp0 = amp0 / math.sqrt(float(np.mean(amp0**2)))
        if "amplitude" in o.refine:
            amp0 = np.maximum(amp0, 1e-3)
        amp0 = canvas.embed(amp0, "edge")
    phase0 = canvas.embed(phase0, "edge")
    return phase0, amp0, init_used, tie_info, amp_source


def _wants_coarse_pass(o, shape, pyramid, init_used):
    """Whether the coarse pass runs (optical parameters refined, or a coarse-to-fine
    start, from a flat phase, on images large enough to bin)."""
    h, w = shape
    optical = tuple(r for r in o.refine if r != "defocus_spread" and r in _OPTICAL)
    return bool(pyramid and (optical or pyramid == "always") and init_used == "flat"
                and min(h, w) // PYRAMID_BINNING >= PYRAMID_MIN_SIZE
                and o.max_iterations >= 10)


def _coarse_pass(fit, solve, imgs, df, *, dose, dose_n, initial_amplitude):
    """The coarse pass: the optical parameters (drift, defocus...) on images binned by
    :data:`PYRAMID_BINNING`, where they are far from the phase-wrapping local minima
    of the full grid; its result is the start of the full-resolution stages."""
    o = fit.o
    n = imgs.shape[0]
    h, w = fit.shape
    optical = tuple(r for r in fit.gradient_refine if r in _OPTICAL)
    progress = o.progress
    b = PYRAMID_BINNING
    hc, wc = h // b, w // b
    blocks = imgs[:, :hc * b, :wc * b].reshape(n, hc, b, wc, b)
    if o.likelihood == "poisson":
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
        coarse = solve(
            binned, df, pixel_size=(o.pixel[0] * b, o.pixel[1] * b), beam_energy=o.energy,
            cs=o.cs, theta_c=o.theta_c, defocus_spread=o.defocus_spread,
            astigmatism=o.astig, astigmatism_angle=math.degrees(o.astig_angle),
            refine=optical, refine_amplitude=False, likelihood=o.likelihood, dose=cdose,
            regularization=fit.beta,
            max_iterations=max(o.max_iterations // 3, 1),
            tolerance=STAGE1_TOLERANCE_FACTOR * o.tolerance, learning_rate=o.learning_rate,
            initial_amplitude=camp, padding=COARSE_PADDING.get(o.padding, o.padding),
            device=o.dev, dtype=o.dtype,
            progress=coarse_progress, optimizer=o.optimizer, bias_correction=0,
            _pyramid=False, _drift_margin=math.ceil(DRIFT_MARGIN / b),
            _shift_reference=o.shift_reference)
    fit.losses += coarse.loss_history
    fit.total_it += coarse.iterations
    # what the coarse pass reported to ``progress`` besides its fit (its own race)
    fit.settings["coarse_extra_iterations"] = (coarse.parameters["iterations_all_fits"]
                                               - coarse.iterations)
    fit.evaluations += coarse.parameters["evaluations"]
    fit.stage_info.append(dict(refine=list(optical), iterations=coarse.iterations,
                               converged=coarse.converged, binning=b,
                               loss=min(coarse.loss_history), tolerance=(
                                   STAGE1_TOLERANCE_FACTOR * o.tolerance)))
    ac = coarse.astigmatism, math.radians(coarse.astigmatism_angle)
    fit.start = dict(fit.start, phase=torch.as_tensor(
                         fit.canvas.embed(_upsample(coarse.phase, b, (h, w)), "edge"),
                         **fit.tens),
                     defocus=coarse.defocus.copy(), shifts=coarse.shifts * b,
                     theta_c=coarse.theta_c,
                     astig=np.array([ac[0] * math.cos(2 * ac[1]),
                                     ac[0] * math.sin(2 * ac[1])]),
                     scale=coarse.scale.copy())
    fit.interrupted = coarse.interrupted
    return coarse


def _stage_plan(fit, coarse):
    """The stages ``(refine, tolerance, iteration cap)``: a warm start (the phase
    alone -- or, after the coarse pass, the phase and the optical parameters with the
    amplitude held), then everything refined."""
    o = fit.o
    optical = tuple(r for r in fit.gradient_refine if r in _OPTICAL)
    stages = []
    if coarse is not None:
        if "amplitude" in fit.gradient_refine:
            stages.append((optical, STAGE1_TOLERANCE_FACTOR * o.tolerance,
                           o.max_iterations // 2))
    elif fit.gradient_refine or "defocus_spread" in o.refine:
        cap1 = (min(STAGE1_ITERATIONS_OPTICAL, o.max_iterations // 2) if optical
                else o.max_iterations // 2)
        stages.append(((), STAGE1_TOLERANCE_FACTOR * o.tolerance, cap1))
    stages.append((fit.gradient_refine, o.tolerance, None))
    return stages


def _check_identifiable(fit):
    """Drop the scalars the data may not constrain (``defocus_spread``, ``theta_c``):
    those whose doubling changes chi^2 by less than :data:`IDENTIFIABILITY_CHI2`."""
    o = fit.o
    # at the given values (theta_c belongs to the state, which earlier stages
    # may have moved: doubling a theta_c gone to 0 would test nothing)
    probe_start = dict(fit.start, theta_c=o.theta_c)
    probe = fit.problem(probe_start, ())
    xp = torch.zeros(probe.size, **fit.tens)
    doubled = {}
    if "defocus_spread" in o.refine:
        doubled["defocus_spread"] = fit.problem(
            probe_start, (), model=fit.make_model(spread=2.0 * o.defocus_spread))
    if "theta_c" in o.refine:
        doubled["theta_c"] = fit.problem(dict(probe_start, theta_c=2.0 * o.theta_c), ())
    changes = {name: probe.chi2_change(xp, other) for name, other in doubled.items()}
    del probe, xp, doubled
    for name, dchi2 in changes.items():
        fit.settings[f"chi2_change_{name}"] = dchi2
        if dchi2 < IDENTIFIABILITY_CHI2:
            fit.not_identifiable.append(name)
    if "theta_c" in fit.not_identifiable:  # kept at its given value
        fit.start = dict(fit.start, theta_c=o.theta_c)
    fit.refined = tuple(r for r in o.refine if r not in fit.not_identifiable)
    fit.gradient_refine = tuple(r for r in fit.refined if r != "defocus_spread")


def _run_stages(fit, stages):
    """Run the stages (sharing ``max_iterations``), then refine the focal spread."""
    o = fit.o
    for k, (ref, tol, cap) in enumerate(stages):
        if fit.total_it >= o.max_iterations and k > 0:
            break
        if k == len(stages) - 1 and any(r in o.refine for r in ("defocus_spread", "theta_c")):
            _check_identifiable(fit)
            ref = fit.gradient_refine
        budget = o.max_iterations - fit.total_it
        if cap is not None:
            budget = min(budget, cap)
        fit.run_stage(fit.start, ref, budget, tol)
        if fit.nonfinite:
            break
    if "defocus_spread" in fit.refined and not fit.nonfinite:
        problem, opt = fit.current
        new = _refine_spread(problem, opt.best_x, fit.spread, fit.make_model)
        if abs(new / fit.spread - 1.0) > 1e-3:
            fit.spread = new
            fit.model = fit.make_model(spread=fit.spread)
            fit.run_stage(fit.start, fit.gradient_refine, max(o.max_iterations - fit.total_it, 0),
                          o.tolerance, refined=list(fit.gradient_refine) + ["defocus_spread"])


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


def _plane(a):
    """The least-squares plane ``c + gy y + gx x`` of a 2-D array."""
    h, w = a.shape
    y = np.arange(h) - (h - 1) / 2.0
    x = np.arange(w) - (w - 1) / 2.0
    gy = float((a * y[:, None]).sum() / (w * (y**2).sum()))
    gx = float((a * x[None, :]).sum() / (h * (x**2).sum()))
    return float(a.mean()) + gy * y[:, None] + gx * x[None, :]


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
