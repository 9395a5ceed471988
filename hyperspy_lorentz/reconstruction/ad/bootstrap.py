"""Parametric-bootstrap bias correction and standard errors of the optical parameters.

See "Identifiability and bias of the optical parameters" in
:mod:`hyperspy_lorentz.reconstruction.ad`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from hyperspy_lorentz.reconstruction.ad.inputs import _OPTICAL
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

#: Optical parameters of a ``start`` dict, and whether they are corrected on a
#: log scale (positive quantities).
_BOOTSTRAP_KEYS = {"defocus": ("defocus", False), "shifts": ("shifts", False),
                   "theta_c": ("theta_c", True), "astigmatism": ("astig", False),
                   "scale": ("scale", True)}


def _bootstrap(fit, state, refine, replicates, seed, *, likelihood, sigma, dose, optimiser):
    """Parametric-bootstrap bias correction of the refined optical parameters.

    Simulates ``replicates`` data sets from the fitted ``state`` with the noise
    model of the fit (Gaussian amplitudes with the per-image ``sigma``, or
    Poisson counts at ``dose``), refits each from that known truth and
    subtracts the mean deviation. Returns the corrected state and a record.
    ``fit`` (a :class:`~hyperspy_lorentz.reconstruction.ad.fit._Fit`) makes the
    problems, with its current model and weight.
    """
    tens = fit.tens
    problem = fit.problem(state, refine)
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
        pr = fit.problem(state, refine, data=torch.as_tensor(sim, **tens))
        del sim
        opt = _stage_optimiser(pr, tens, **optimiser)
        opt.run()
        iterations.append(opt.iterations)
        refit = pr.state(opt.best_x)
        for k in keys:
            samples[k].append(np.asarray(refit[_BOOTSTRAP_KEYS[k][0]], float))
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


def _correct_bias(fit, n_boot, *, sigma, dose):
    """The bias correction of ``bias_correction`` (``n_boot`` replicates, ``None``:
    :data:`BOOTSTRAP_REPLICATES` when optical parameters are fitted) on the fitted
    state; records it in ``settings["bias_correction"]`` and returns the standard
    errors."""
    o = fit.o
    optical_fitted = tuple(r for r in fit.gradient_refine if r in _OPTICAL)
    if n_boot is None:
        n_boot = BOOTSTRAP_REPLICATES if optical_fitted else 0
    fit.settings["bias_correction"] = None
    standard_errors = {}
    if n_boot and optical_fitted and not (fit.interrupted or fit.nonfinite):
        fit.current = (None, None)  # free the main fit's buffers (the state is kept)
        try:
            fit.start, boot = _bootstrap(
                fit, fit.start, fit.gradient_refine, n_boot, o.seed,
                likelihood=o.likelihood,
                sigma=None if o.likelihood != "gaussian" else sigma,
                dose=None if o.likelihood == "gaussian" else np.asarray(dose, float),
                optimiser=dict(method=o.optimizer, learning_rate=o.lr, history=LBFGS_HISTORY,
                               max_iterations=max(2 * CONVERGENCE_WINDOW,
                                                  o.max_iterations // 3),
                               tolerance=o.tolerance, window=CONVERGENCE_WINDOW,
                               progress=o.progress))
            fit.settings["bias_correction"] = boot["record"]
            standard_errors = boot["standard_errors"]
        except KeyboardInterrupt:
            fit.interrupted = True
            warnings.warn("AD reconstruction: bias correction interrupted; returning the "
                          "uncorrected optical parameters", stacklevel=3)
    return standard_errors
