"""The data-derived regularisation weight of ``regularization="auto"``.

See "Regularisation weight" in :mod:`hyperspy_lorentz.reconstruction.ad`.
"""

from __future__ import annotations

import math

import torch

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


def _refit_at_data_weight(fit):
    """``regularization="auto"``: refit at the Laplace weight when the fit explains more
    than its degrees of freedom allow, then at the weight where chi^2 meets its
    expectation (see the package docstring); the rule is recorded in
    ``settings["regularization_rule"]``."""
    o = fit.o
    rule = _adapt_weight(fit.problem(fit.start, ()), fit.tens, fit.canvas, fit.beta)
    fit.settings["regularization_rule"] = rule
    base_state, base_beta = fit.start, fit.beta
    lo = (math.log(fit.beta), rule["discrepancy"])
    trial = rule["laplace_weight"] if rule["refit"] else None
    while trial is not None and o.max_iterations - fit.total_it >= REFIT_MIN_ITERATIONS:
        fit.beta = trial
        fit.run_stage(base_state, fit.gradient_refine, o.max_iterations - fit.total_it,
                      o.tolerance)
        fit.stage_info[-1]["regularization"] = fit.beta
        chi2_b, expected_b, _ = _discrepancy(fit.problem(fit.start, ()), fit.tens, fit.beta)
        d = chi2_b - expected_b
        rule["trials"].append(dict(weight=fit.beta, discrepancy=d))
        trial = None
        if d > 0 and len(rule["trials"]) == 1:
            # over-smoothed at the Laplace weight: interpolate (log weight)
            # to where the discrepancy vanishes
            t = lo[1] / (lo[1] - d)
            trial = math.exp(lo[0] + t * (math.log(fit.beta) - lo[0]))
            if trial < WEIGHT_CHANGE * base_beta:  # not worth it: keep
                trial = None
                fit.beta, fit.start = base_beta, base_state
