"""Parametric-bootstrap bias correction and standard errors of the optical parameters.

See "Identifiability and bias of the optical parameters" in
:mod:`hyperspy_lorentz.reconstruction.ad`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy import stats

from hyperspy_lorentz.reconstruction.ad.inputs import _OPTICAL
from hyperspy_lorentz.reconstruction.ad.modes import compensate, mode_coefficients, mode_design
from hyperspy_lorentz.reconstruction.ad.optimiser import (
    CONVERGENCE_WINDOW,
    LBFGS_HISTORY,
    _stage_optimiser,
)

#: Parametric-bootstrap replicates of ``bias_correction="auto"`` when optical
#: parameters are refined: three give a bias estimate, a standard error and a
#: usable test of whether the bias estimate stands out of its own noise (with
#: two, a real -0.5 % defocus bias at 200 electrons/px was judged noise).
BOOTSTRAP_REPLICATES = 3
#: A bias estimate is subtracted only where it exceeds this many of its own
#: standard errors (replicate spread / sqrt(replicates)); smaller ones are
#: noise and would only add variance (with one replicate it is always applied).
BOOTSTRAP_SIGNIFICANCE = 2.0
#: Replicates start this far (fraction) from the fit along the defocus scale
#: when the nominal values are closer: the recovery of a miscalibration of this
#: size is what tells whether the data fix the scale.
PROBE_STEP = 0.02
#: A defocus mode is identifiable when the replicates recover at least this
#: fraction of their start's distance from their truth.
RECOVERY_MIN = 0.5

#: The refined defocus values are kept only if they explain the data better than
#: the nominal ones (the exit wave and the other refined parameters fitted again
#: with the defocus held at its nominal values) by at least this quantile of
#: chi^2 with one degree of freedom per defocus value: a likelihood-ratio test.
NOMINAL_TEST_LEVEL = 0.95

#: Optical parameters of a ``start`` dict, and whether they are corrected on a
#: log scale (positive quantities).
_BOOTSTRAP_KEYS = {"defocus": ("defocus", False), "shifts": ("shifts", False),
                   "theta_c": ("theta_c", True), "astigmatism": ("astig", False),
                   "scale": ("scale", True)}


def _jsonable(v):
    """A float or nested lists of floats, ``None`` for NaN (JSON has no NaN)."""
    a = np.asarray(v, float)
    if a.ndim == 0:
        return float(a) if np.isfinite(a) else None
    return [_jsonable(x) for x in a]


def _tilt(shifts, defocus, reference):
    """The drift that grows with the defocus, px per nm (dy, dx): the least-squares
    slope of the shifts of the reference images against their defocus (0 if they
    share one defocus)."""
    d = np.asarray(defocus, float)[reference]
    d = d - d.mean()
    if not np.any(d):
        return np.zeros(2)
    return (d[:, None] * np.asarray(shifts, float)[reference]).sum(axis=0) / (d**2).sum()


def _replicate_start(fit, state, refine, nominal, t_start):
    """Where a replicate starts: the optical parameters at their nominal values
    (shifts 0, ``theta_c`` as given), the defocus moved along its modes by
    ``t_start`` from the fit, with the exit wave compensated: for the defocus
    (:func:`.modes.compensate`), and for the drift that grows with the defocus
    (a beam tilt), which a phase ramp mimics exactly (a ramp ``exp(2 pi i k.r)``
    moves the image at defocus ``df`` by ``lambda df k``)."""
    start = dict(state)
    if "defocus" in refine:
        start = compensate(start, state["defocus"], t_start, fit.o.wl, fit.o.pixel,
                           "amplitude" in refine)
    if "shifts" in refine:
        ref = fit.shift_reference
        df = np.asarray(state["defocus"], float)
        # (on a periodic field a phase ramp is not possible: the data fix the tilt)
        tilt = np.zeros(2) if fit.canvas.is_periodic else _tilt(state["shifts"], df, ref)
        shifts = np.zeros_like(np.asarray(state["shifts"], float))
        if np.any(tilt):
            k = tilt * np.asarray(fit.o.pixel) / fit.o.wl  # cycles / nm
            phase = start["phase"]
            h, w = phase.shape
            kw = dict(dtype=phase.dtype, device=phase.device)
            y = (torch.arange(h, **kw) - h // 2) * fit.o.pixel[0]
            x = (torch.arange(w, **kw) - w // 2) * fit.o.pixel[1]
            start["phase"] = phase + 2.0 * math.pi * (k[0] * y[:, None] + k[1] * x[None, :])
            # the ramp also moves the series as a whole (by the tilt at the mean
            # defocus of the reference images): kept in the start's shifts
            shifts[ref] = -tilt * df[ref].mean()
        start["shifts"] = shifts
    if "theta_c" in refine:
        start["theta_c"] = nominal["theta_c"]
    return start


def _bootstrap(fit, state, refine, replicates, seed, *, likelihood, sigma, dose, optimiser,
               nominal, held=()):
    """Parametric bootstrap of the refined optical parameters: bias, standard
    errors, and whether the defocus modes are identifiable.

    Simulates ``replicates`` data sets from the fitted ``state`` with the noise
    model of the fit (Gaussian amplitudes with the per-image ``sigma``, or
    Poisson counts at ``dose``) and refits each *from the nominal values*
    (``nominal``: the given ``defocus`` and ``theta_c``; shifts 0), the exit
    wave compensated for the defocus move (:mod:`.modes`). Along each defocus
    mode (scale and offset), the start is the nominal value, or
    :data:`PROBE_STEP` either side of the fit when the nominal is closer; the
    mode is identifiable when the replicates recover at least
    :data:`RECOVERY_MIN` of that start's distance, else it is held at its
    nominal value; the modes named in ``held`` are held regardless (a test
    against the nominal values found them not identifiable).
    Returns the corrected state, a record, the standard errors and the
    parameters found not identifiable.
    """
    tens = fit.tens
    problem = fit.problem(state, refine)
    x0 = torch.zeros(problem.size, **tens)
    with torch.no_grad():
        img = problem.images(problem.physical(x0)).to(torch.float64).cpu().numpy()
    del problem, x0
    seed = 0 if seed is None else int(seed)  # reproducible by default
    rng = np.random.default_rng(seed)
    keys = [k for k in _BOOTSTRAP_KEYS if k in refine]
    samples = {k: [] for k in keys}
    iterations = []
    df_hat = np.asarray(state["defocus"], float)
    amplitude_refined = "amplitude" in refine
    t_nominal = mode_coefficients(df_hat, np.asarray(nominal["defocus"], float) - df_hat)
    starts, ends = [], []
    for r in range(replicates):
        if likelihood == "gaussian":
            sim = np.sqrt(np.clip(img, 0.0, None)) + (
                np.asarray(sigma, float)[:, None, None] * rng.standard_normal(img.shape))
        else:
            sim = rng.poisson(np.clip(img, 0.0, None) * dose[:, None, None]).astype(float)
        sign = 1.0 if r % 2 == 0 else -1.0
        t = np.where(np.abs(t_nominal) >= PROBE_STEP, t_nominal, sign * PROBE_STEP)
        start = _replicate_start(fit, state, refine, nominal, t)
        pr = fit.problem(start, refine, data=torch.as_tensor(sim, **tens))
        del sim
        opt = _stage_optimiser(pr, tens, **optimiser)
        opt.run()
        iterations.append(opt.iterations)
        refit = pr.state(opt.best_x)
        if "shifts" in refine:  # to the shift reference (the mean over its images)
            ref = fit.shift_reference
            refit["shifts"] = np.where(ref[:, None], refit["shifts"]
                                       - refit["shifts"][ref].mean(axis=0), refit["shifts"])
        for k in keys:
            samples[k].append(np.asarray(refit[_BOOTSTRAP_KEYS[k][0]], float))
        if "defocus" in refine:
            starts.append(t)
            ends.append(mode_coefficients(df_hat, refit["defocus"] - df_hat))
        del pr, opt
    not_ident, modes = [], {}
    hold = np.zeros(2)
    if "defocus" in refine:
        starts, ends = np.asarray(starts), np.asarray(ends)
        for j, name in enumerate(("scale", "offset")):
            recovery = float(np.mean(1.0 - ends[:, j] / starts[:, j]))
            ok = recovery >= RECOVERY_MIN and name not in held
            modes[name] = dict(start=starts[:, j].tolist(), end=ends[:, j].tolist(),
                               recovery=recovery, identifiable=ok,
                               nominal=float(t_nominal[j]))
            if not ok:
                if name not in held:  # (held ones are reported by their test)
                    not_ident.append(f"defocus {name}")
                hold[j] = 1.0
    # the drift that grows with the defocus: how much of it the replicates recover
    # from zero (the rest is the prior's: a phase ramp would do as well)
    tilt_se = None
    if "shifts" in refine and not fit.canvas.is_periodic:
        ref = fit.shift_reference
        tilt_hat = _tilt(state["shifts"], df_hat, ref)
        norm2 = float(tilt_hat @ tilt_hat)
        if norm2 > 0:
            found = [float(_tilt(s, df_hat, ref) @ tilt_hat) / norm2 for s in samples["shifts"]]
            recovery = float(np.mean(found))
            modes["tilt"] = dict(px_per_um=(1e3 * tilt_hat).tolist(), recovery=recovery,
                                 identifiable=recovery >= RECOVERY_MIN)
            if recovery < RECOVERY_MIN:
                not_ident.append("shift tilt")
            # the unrecovered part is an error the spread does not show
            lever = np.where(ref, df_hat - df_hat[ref].mean(), 0.0)
            tilt_se = np.abs(np.outer(lever, tilt_hat)) * min(max(1.0 - recovery, 0.0), 1.0)
            # and the replicates' tilt is neither bias nor spread
            for i, s_ in enumerate(samples["shifts"]):
                samples["shifts"][i] = s_ - np.outer(lever, _tilt(s_, df_hat, ref) - tilt_hat)
    # the error bars: the replicate spread, widened for the few replicates
    # (Student t) and, where the bias is subtracted, for its own error
    widen = stats.t.ppf(0.975, max(replicates - 1, 1)) / stats.norm.ppf(0.975)
    corrected = dict(state)
    bias, uncorrected, errors, applied, spread = {}, {}, {}, {}, {}
    for k in keys:
        name, log = _BOOTSTRAP_KEYS[k]
        est = np.asarray(state[name], float)
        reps = np.stack(samples[k])
        if k == "defocus" and hold.any():  # held modes: no error, no correction
            design = mode_design(df_hat)
            coef = np.linalg.lstsq(design, (reps - est).T, rcond=None)[0].T * hold
            reps = reps - coef @ design.T
        t_reps, t_est = (np.log(reps), np.log(est)) if log else (reps, est)
        b = t_reps.mean(axis=0) - t_est
        # a bias estimate within its own noise would add variance, not remove bias
        use = np.ones(np.shape(b), dtype=bool)
        if replicates > 1:
            se_mean = t_reps.std(axis=0, ddof=1) / math.sqrt(replicates)
            use = np.abs(b) > BOOTSTRAP_SIGNIFICANCE * se_mean
            spread[k] = _jsonable(t_reps.std(axis=0, ddof=1))
            errors[k] = reps.std(axis=0, ddof=1) * widen * np.where(
                use, math.sqrt(1.0 + 1.0 / replicates), 1.0)
        new = np.where(use, np.exp(t_est - b) if log else t_est - b, est)
        bias[k] = np.asarray(est * (np.exp(b) - 1.0) if log else b).tolist()
        applied[k] = np.asarray(use).tolist()
        uncorrected[k] = est.tolist()
        corrected[name] = float(new) if np.ndim(new) == 0 else new
    if tilt_se is not None and "shifts" in errors:
        errors["shifts"] = np.hypot(errors["shifts"], tilt_se)
    if "shifts" in keys:  # images without contrast: no drift measured
        free = ~np.asarray(fit.shift_reference, bool)
        corrected["shifts"] = np.where(free[:, None], np.asarray(state["shifts"], float),
                                       corrected["shifts"])
        if "shifts" in errors:
            errors["shifts"] = np.where(free[:, None], np.nan, errors["shifts"])
    if hold.any():  # the held modes at their nominal values, the exit wave compensated
        dfc = np.asarray(corrected["defocus"], float)
        t_now = mode_coefficients(df_hat, dfc - df_hat)
        move = (t_nominal - t_now) * hold
        shifted = compensate(corrected, dfc, move, fit.o.wl, fit.o.pixel, amplitude_refined)
        corrected["phase"], corrected["amplitude"] = shifted["phase"], shifted["amplitude"]
        corrected["defocus"] = dfc + mode_design(df_hat) @ move
    if "astigmatism" in errors:  # vector (A cos 2a, A sin 2a) -> magnitude, angle
        reps = np.stack(samples["astigmatism"])
        errors["astigmatism_angle"] = widen * np.degrees(
            0.5 * np.unwrap(np.arctan2(reps[:, 1], reps[:, 0]))).std(ddof=1)
        errors["astigmatism"] = widen * np.hypot(reps[:, 0], reps[:, 1]).std(ddof=1)
    errors = {k: (float(v) if np.ndim(v) == 0 else np.asarray(v, float))
              for k, v in errors.items()}
    record = dict(method="parametric bootstrap from the nominal values",
                  replicates=int(replicates), seed=seed, iterations=iterations, bias=bias,
                  applied=applied, uncorrected=uncorrected, modes=modes,
                  spread=spread, widening=float(widen),
                  standard_errors={k: _jsonable(v) for k, v in errors.items()})
    return corrected, dict(record=record, standard_errors=errors, not_identifiable=not_ident)


def _defocus_against_nominal(fit, nominal_defocus, budget):
    """Likelihood-ratio test of the refined defocus values against the nominal ones.

    The fit is repeated with the defocus held at ``nominal_defocus`` (nm), from the
    fitted exit wave compensated along the defocus modes (:mod:`.modes`), with the
    other refined parameters free (at most ``budget`` iterations). When the refined
    values improve the misfit (chi^2, summed over the measured pixels) by less than
    the :data:`NOMINAL_TEST_LEVEL` quantile of chi^2 with as many degrees of freedom
    as images, the data do not support the move: the fit at the nominal values
    replaces the state, and ``"defocus"`` is not identifiable. (At 10 electrons per
    pixel, a weak phase object's refined defocus wandered 35 % from the truth
    while fitting the data *worse* than the nominal values 4 % off.)
    The misfit of the fitted state is ``fit.settings["reduced_chi2"]`` (the solver's).
    Returns the record of the test, or ``None`` when the fit did not move.
    """
    df_hat = np.asarray(fit.start["defocus"], float)
    return _defocus_test(fit, np.asarray(nominal_defocus, float), df_hat.size, budget)


def _offset_against_nominal(fit, nominal_defocus, budget):
    """Likelihood-ratio test of the refined common offset of the defocus values.

    As :func:`_defocus_against_nominal`, with one degree of freedom: the
    alternative keeps the refined values but moves their common offset (the
    offset mode of :mod:`.modes`) to that of ``nominal_defocus``, the exit wave
    refocused accordingly. With the amplitude refined pixel by pixel a common
    offset is a refocusing of the exit wave that only the spatial-coherence
    envelope distinguishes, so the fitted offset is mostly the prior's choice
    (the sharpest plane): a bootstrap around the fit then returns to that same
    plane and reports it as recovered with a tight error bar. At 10 e-/px a
    weak phase lattice (256 px, 5 images) came out 16 um off with 0.1 um
    standard errors; the chi^2 the data give is the test that sees it.
    Returns the record, or ``None`` when the offsets already agree.
    """
    df_hat = np.asarray(fit.start["defocus"], float)
    t = mode_coefficients(df_hat, np.asarray(nominal_defocus, float) - df_hat)
    if t[1] == 0.0:
        return None
    alternative = df_hat + mode_design(df_hat)[:, 1] * t[1]
    return _defocus_test(fit, alternative, 1, budget)


def _defocus_test(fit, alternative, dof, budget):
    """The likelihood-ratio test of the fitted defocus values against ``alternative``
    (nm) with ``dof`` degrees of freedom (see :func:`_defocus_against_nominal`)."""
    from hyperspy_lorentz.reconstruction.ad.weight import _reduced_chi2

    state = fit.start
    df_hat = np.asarray(state["defocus"], float)
    if np.array_equal(df_hat, alternative):
        return None
    refine = fit.gradient_refine
    t = mode_coefficients(df_hat, alternative - df_hat)
    start = compensate(state, df_hat, t, fit.o.wl, fit.o.pixel, "amplitude" in refine)
    start["defocus"] = alternative.copy()
    held = tuple(r for r in refine if r != "defocus")
    problem = fit.problem(start, held)
    opt = _stage_optimiser(problem, fit.tens, **fit.optimiser_options(budget, fit.o.tolerance))
    opt.run()
    alt = problem.state(opt.best_x)
    del problem
    m = float(fit.data.numel())
    chi2_fit = fit.settings["reduced_chi2"] * m  # of ``state``, computed by the solver
    chi2_alt = _reduced_chi2(fit.problem(alt, ()), fit.tens) * m
    # the compensated start is a candidate too: the refit minimises chi^2 *plus
    # the prior*, and may give up data fit for a smoother wave
    chi2_refit = chi2_alt
    chi2_start = _reduced_chi2(fit.problem(start, ()), fit.tens) * m
    if chi2_start < chi2_alt:
        chi2_alt, alt = chi2_start, start
    threshold = float(stats.chi2.ppf(NOMINAL_TEST_LEVEL, dof))
    gain = chi2_alt - chi2_fit
    kept = bool(gain >= threshold) and math.isfinite(gain)
    if not kept:
        fit.start = alt
        fit.settings["reduced_chi2"] = chi2_alt / m  # the misfit of what is returned
    return dict(chi2_gain=float(gain), threshold=threshold, level=NOMINAL_TEST_LEVEL,
                degrees_of_freedom=int(dof), identifiable=kept, iterations=int(opt.iterations),
                chi2_gain_refit=float(chi2_refit - chi2_fit),
                chi2_gain_start=float(chi2_start - chi2_fit),
                reduced_chi2_refined=chi2_fit / m, reduced_chi2_nominal=chi2_alt / m)


def _correct_bias(fit, n_boot, *, sigma, dose, nominal_defocus):
    """The bias correction of ``bias_correction`` (``n_boot`` replicates, ``None``:
    :data:`BOOTSTRAP_REPLICATES` when optical parameters are fitted) on the fitted
    state; records it in ``settings["bias_correction"]`` and returns the standard
    errors."""
    o = fit.o
    optical_fitted = tuple(r for r in fit.gradient_refine if r in _OPTICAL)
    if n_boot is None:
        n_boot = BOOTSTRAP_REPLICATES if optical_fitted else 0
    fit.settings["bias_correction"] = None
    fit.settings["defocus_offset_test"] = None
    standard_errors = {}
    held_modes = ()
    refine = fit.gradient_refine
    # the iterations of each test fit and of each bootstrap replicate
    budget = max(2 * CONVERGENCE_WINDOW, o.max_iterations // 3)

    def interruptible(test):
        try:
            return test(fit, nominal_defocus, budget)
        except KeyboardInterrupt:
            fit.interrupted = True
            return None

    if "defocus" in refine and not (fit.interrupted or fit.nonfinite):
        fit.current = (None, None)  # free the main fit's buffers (the state is kept)
        test = interruptible(_defocus_against_nominal)
        fit.settings["defocus_test"] = test
        if test is not None and not test["identifiable"]:
            fit.not_identifiable.append("defocus")
            refine = tuple(r for r in refine if r != "defocus")
            fit.refined = tuple(r for r in fit.refined if r != "defocus")
            optical_fitted = tuple(r for r in refine if r in _OPTICAL)
        elif "amplitude" in refine and not fit.interrupted:
            offset = interruptible(_offset_against_nominal)
            fit.settings["defocus_offset_test"] = offset
            if offset is not None and not offset["identifiable"]:
                fit.not_identifiable.append("defocus offset")
                held_modes = ("offset",)
    if n_boot and optical_fitted and not (fit.interrupted or fit.nonfinite):
        fit.current = (None, None)  # free the main fit's buffers (the state is kept)
        try:
            fit.start, boot = _bootstrap(
                fit, fit.start, refine, n_boot, o.seed,
                nominal=dict(defocus=nominal_defocus, theta_c=o.theta_c), held=held_modes,
                likelihood=o.likelihood,
                sigma=None if o.likelihood != "gaussian" else sigma,
                dose=None if o.likelihood == "gaussian" else np.asarray(dose, float),
                optimiser=dict(method=o.optimizer, learning_rate=o.lr, history=LBFGS_HISTORY,
                               max_iterations=budget, tolerance=o.tolerance, window=CONVERGENCE_WINDOW,
                               progress=o.progress))
            fit.settings["bias_correction"] = boot["record"]
            standard_errors = boot["standard_errors"]
            fit.not_identifiable += boot["not_identifiable"]
        except KeyboardInterrupt:
            fit.interrupted = True
            warnings.warn("AD reconstruction: bias correction interrupted; returning the "
                          "uncorrected optical parameters", stacklevel=3)
    return standard_errors
