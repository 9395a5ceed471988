"""The AD focal-series solver: :func:`reconstruct_ad`, the recipe.

Check the inputs; prepare the data and their noise; choose the start (the race
of starts); set up the fit on its canvas; coarse pass; stages; unwrap; adapt
the weight; bootstrap the optical parameters; assemble the result. The steps
live in the sibling modules (see :mod:`hyperspy_lorentz.reconstruction.ad`).
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from hyperspy_lorentz.reconstruction.ad.bootstrap import _correct_bias
from hyperspy_lorentz.reconstruction.ad.data import _amplitudes, _counts, _drift_reference
from hyperspy_lorentz.reconstruction.ad.fit import _deterministic, _Fit
from hyperspy_lorentz.reconstruction.ad.inputs import (
    _check_images,
    _check_options,
    _check_start,
)
from hyperspy_lorentz.reconstruction.ad.memory import _check_memory
from hyperspy_lorentz.reconstruction.ad.objective import _canvas
from hyperspy_lorentz.reconstruction.ad.optimiser import _Stop
from hyperspy_lorentz.reconstruction.ad.result import _parameters, _result
from hyperspy_lorentz.reconstruction.ad.stages import (
    IDENTIFIABILITY_CHI2,
    _coarse_pass,
    _race_starts,
    _run_stages,
    _stage_plan,
    _start_fields,
    _unwrap,
    _wants_coarse_pass,
)
from hyperspy_lorentz.reconstruction.ad.weight import _reduced_chi2, _refit_at_data_weight

__all__ = ["reconstruct_ad"]

#: A fit whose reduced chi^2 (misfit per measured pixel in units of the noise) ends
#: above this does not explain the data: a model that describes them gives about 1
#: or less (the unknowns absorb part of the noise), with a scatter of
#: ``sqrt(2 / M)`` for ``M`` pixels (0.005 for 5 x 128 x 128). The margin above 1
#: is for the small model errors of real data (residuals 20 % above the noise are
#: not a wrong basin); above it, the other starts of the race are fitted to
#: convergence and, if none explains the data, a warning gives the figure and the
#: likely causes.
MISFIT_CHI2 = 1.5


def reconstruct_ad(images, defocus, *, pixel_size, beam_energy, cs=1.0, theta_c=0.01,
                   defocus_spread=500.0, astigmatism=0.0, astigmatism_angle=0.0,
                   refine=(), refine_amplitude=True, likelihood="gaussian", dose=None,
                   regularization="auto", max_iterations=500, tolerance=1e-5,
                   learning_rate=None, initial_phase=None, initial_amplitude=None, init="auto",
                   padding="free", device="auto", dtype="float32", seed=None, progress=None,
                   optimizer="lbfgs", bias_correction="auto", _pyramid=True, _race=True,
                   _drift_margin=None, _shift_reference=None):
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
        ``"defocus"`` (per image), ``"shifts"`` (per-image drift, sub-pixel,
        relative to the mean over the images with contrast; see ``ADResult.shifts``),
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
        chosen from the data, starting at
        :data:`~hyperspy_lorentz.reconstruction.ad.weight.DEFAULT_TV_WEIGHT` (module
        docstring, "Regularisation weight"); ``0`` or ``None``: none.
    max_iterations : int
        Maximum optimiser iterations (all stages).
    tolerance : float
        Stop when the loss decreased by less than this fraction over
        :data:`~hyperspy_lorentz.reconstruction.ad.optimiser.CONVERGENCE_WINDOW`
        iterations (default 1e-5: with the free border, 1e-4 stopped the paper's
        asymmetric cases early, 0.986 / 0.977 against 0.993 / 0.989).
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
        optical parameters (defocus, shifts, ``theta_c``, astigmatism, scale),
        to estimate their standard errors and to test whether the defocus scale
        and the drift that grows with the defocus are identifiable (see the
        module docstring, "Error bars"). Each replicate is a fit of data simulated
        from the fitted state, started from the nominal values (the exit wave
        compensated), at most ``max_iterations // 3`` iterations. ``"auto"``:
        :data:`~hyperspy_lorentz.reconstruction.ad.bootstrap.BOOTSTRAP_REPLICATES` when
        optical parameters are refined, else 0; ``0``: the joint MAP values,
        uncorrected. The replicates' noise is drawn from ``seed`` (``None``: seed 0, so
        that repeated calls agree).
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
    call = dict(locals())  # the arguments, for fits from the other starts
    t_start = time.perf_counter()
    imgs, df = _check_images(images, defocus)
    n, h, w = imgs.shape
    o = _check_options(
        pixel_size=pixel_size, beam_energy=beam_energy, cs=cs, theta_c=theta_c,
        defocus_spread=defocus_spread, astigmatism=astigmatism,
        astigmatism_angle=astigmatism_angle, refine=refine, refine_amplitude=refine_amplitude,
        likelihood=likelihood, optimizer=optimizer, init=init, padding=padding,
        max_iterations=max_iterations, tolerance=tolerance, regularization=regularization,
        learning_rate=learning_rate, progress=progress, bias_correction=bias_correction,
        dtype=dtype, device=device, seed=seed)

    # the data and their noise; the canvas; enough memory?
    counts, dose_n = _counts(imgs, o.likelihood, dose)
    norm = imgs / imgs.mean(axis=(1, 2), keepdims=True)
    initial_phase, initial_amplitude = _check_start(initial_phase, initial_amplitude, (h, w))
    border, canvas = _canvas(o, (h, w), df, _drift_margin)
    _check_memory((h, w), n, o.refine, o.tdt, o.padding, border, o.dev)
    # the shift gauge: drift relative to the mean over the images with contrast
    o.shift_reference = (_drift_reference(imgs, df) if _shift_reference is None
                         else np.asarray(_shift_reference, bool))
    amps = sigma_estimated = sigma = None
    if o.likelihood == "gaussian":
        amps, sigma_estimated, sigma = _amplitudes(norm, o.tdt)

    # the start: the race of starts (init="auto"), then the starting fields
    init, race, race_iterations = o.init, None, 0
    if init == "auto" and initial_phase is None and _race:
        race, race_iterations, init, _pyramid, stopped = _race_starts(
            reconstruct_ad, imgs, df, o, dose=dose, initial_amplitude=initial_amplitude,
            pyramid=_pyramid)
        if stopped is not None:
            return stopped
    phase0, amp0, init_used, tie_info, amp_source = _start_fields(
        o, imgs, df, norm, init, canvas, initial_phase, initial_amplitude)
    del norm
    settings = _parameters(
        o, df, canvas, dose=dose,
        init=("coarse-to-fine" if _pyramid == "always" and init_used == "flat" else init_used),
        amp_source=amp_source, sigma=sigma,
        sigma_estimated=sigma_estimated, dose_n=dose_n, tie_info=tie_info, race=race,
        race_iterations=race_iterations)

    with _deterministic(o.seed, o.dev):
        fit = _Fit.begin(o, (h, w), canvas, border, settings,
                         data=amps if o.likelihood == "gaussian" else counts, sigma=sigma,
                         dose=dose_n)
        del amps
        fit.set_start(phase0, amp0, df)

        # coarse pass, stages, unwrapping, the data-derived weight
        coarse = None
        if _wants_coarse_pass(o, (h, w), _pyramid, init_used):
            coarse = _coarse_pass(fit, reconstruct_ad, imgs, df, dose=dose, dose_n=dose_n,
                                  initial_amplitude=initial_amplitude)
        stages = _stage_plan(fit, coarse)
        if fit.interrupted:
            stages = []
            warnings.warn(f"AD reconstruction interrupted after {fit.total_it} iterations "
                          f"(coarse pass); returning the best iterate so far", stacklevel=2)
        try:
            _run_stages(fit, stages)
            if not fit.nonfinite and stages and fit.beta > 0:
                fit.start, settings["phase_unwrapped_pixels"] = _unwrap(
                    fit.start, fit.problem(fit.start, ()), fit.tens)
            if o.auto_weight and not fit.nonfinite and stages:
                _refit_at_data_weight(fit)
        except KeyboardInterrupt:
            fit.interrupt()
            warnings.warn(
                f"AD reconstruction interrupted after {fit.total_it} iterations; returning the "
                f"best iterate so far", stacklevel=2)
        except _Stop as exc:
            raise FloatingPointError(
                f"AD reconstruction failed: {exc}; check the images, the defocus values and "
                f"the optical parameters (units nm, mm, mrad, keV)") from None
        if fit.nonfinite:
            warnings.warn(
                f"AD reconstruction: the loss became NaN/inf after {fit.total_it} iterations; "
                f"stopped and returned the best finite iterate", RuntimeWarning, stacklevel=2)

        # the fit's misfit, then the bias correction of the optical parameters
        settings["regularization"] = fit.beta
        settings["reduced_chi2"] = _reduced_chi2(fit.problem(fit.start, ()), fit.tens)
        standard_errors = _correct_bias(fit, o.n_boot, sigma=sigma_estimated, dose=dose_n,
                                        nominal_defocus=df)
    if "shifts" in fit.gradient_refine:
        ref = fit.shift_reference
        fit.not_identifiable += [f"shifts of image {i}" for i in np.flatnonzero(~ref)]
        if (not fit.canvas.is_periodic and np.unique(df[ref]).size == 2
                and "shift tilt" not in fit.not_identifiable):
            # two defocus values: their relative drift is all tilt (a phase ramp)
            fit.not_identifiable.append("shift tilt")
    boot = settings.get("bias_correction") or {}
    # what a progress callback counted: the race of starts, the fit (coarse pass
    # and stages) and the bootstrap replicates
    settings["iterations_all_fits"] = int(
        (settings.get("init_race_iterations") or 0) + fit.total_it
        + settings.get("coarse_extra_iterations", 0)
        + ((settings.get("defocus_test") or {}).get("iterations") or 0)
        + ((settings.get("defocus_offset_test") or {}).get("iterations") or 0)
        + sum(boot.get("iterations", ())))
    result = _result(fit, standard_errors, t_start)
    top = _race and _pyramid is True  # not a trial of the race or the coarse pass
    if top and race and not fit.interrupted and _misfit(result):
        # the fit does not explain the data: the other starts, to convergence
        retry = _other_starts(call, race, result)
        if retry is not None:
            result, caught = retry
            for w_ in caught:
                warnings.warn(w_.message, w_.category, stacklevel=2)
            if _misfit(result):
                _report_misfit(result, o, n)
            return result
    for name in fit.not_identifiable:
        warnings.warn(f"{name} is not identifiable from these data ({_why(name)}); "
                      f"{_kept(name)}", stacklevel=2)
    if top and not fit.interrupted and _misfit(result):
        _report_misfit(result, o, n)
    return result


def _report_misfit(result, o, n):
    """A fit that does not explain the data: its optical parameters distrusted,
    and the warning (to the caller of :func:`reconstruct_ad`)."""
    _distrust(result)
    warnings.warn(_misfit_message(result, o, n), stacklevel=3)


#: Optical parameters whose refined values a misfit leaves unmeasured.
_MEASURED_OPTICS = ("defocus", "shifts", "theta_c", "astigmatism")


def _distrust(result):
    """A fit that does not explain the data measures none of its optical
    parameters: the refined ones go to ``not_identifiable`` and lose their
    standard errors (NaN), and ``parameters["misfit_not_identifiable"]`` names
    them. On three images of a strong phase with drift (the refine benchmark's
    ``strong3``) the fit lands in a wrong basin with defocus errors of 1-3 %
    and bootstrap error bars 6-13 times smaller."""
    names = [k for k in _MEASURED_OPTICS if k in result.refined]
    if not names:
        return
    result.not_identifiable = tuple(result.not_identifiable) + tuple(
        k for k in names if k not in result.not_identifiable)
    for key, value in list(result.standard_errors.items()):
        if key in names or (key == "astigmatism_angle" and "astigmatism" in names):
            result.standard_errors[key] = (float("nan") if np.ndim(value) == 0
                                           else np.full(np.shape(value), np.nan))
    result.parameters["misfit_not_identifiable"] = names


def _misfit(result):
    """Whether a fit leaves a misfit the noise cannot explain: ``reduced_chi2`` above
    :data:`MISFIT_CHI2`."""
    chi2 = result.parameters.get("reduced_chi2")
    return chi2 is not None and np.isfinite(chi2) and chi2 > MISFIT_CHI2


def _other_starts(call, race, result):
    """Fits from the starts of the race that lost it, each to convergence; the one
    with the smallest ``reduced_chi2`` if it is below ``result``'s, with the
    warnings it gave, else ``None``. Records the figures in
    ``result.parameters["misfit_retry"]`` (and in the one returned), and counts
    the iterations of all these fits in ``iterations_all_fits``."""
    winner = min(race, key=race.get)
    tried = {winner: float(result.parameters["reduced_chi2"])}
    best = None
    counted = {winner: int(result.parameters["iterations_all_fits"])}
    for cand in race:
        if cand == winner:
            continue
        kw = dict(call, init="tie" if cand == "tie" else "flat", _race=False,
                  _pyramid="always" if cand == "coarse-to-fine" else call["_pyramid"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                trial = reconstruct_ad(**kw)
            except (ValueError, FloatingPointError):
                continue
        if trial.interrupted:
            break
        tried[cand] = float(trial.parameters["reduced_chi2"])
        counted[cand] = int(trial.parameters["iterations_all_fits"])
        if tried[cand] < (tried[best[0]] if best else tried[winner]):
            best = (cand, trial, list(caught))
    record = dict(chosen=best[0] if best else winner, reduced_chi2=tried)
    result.parameters["misfit_retry"] = record
    # every fit run reported to ``progress``: the count is theirs together
    result.parameters["iterations_all_fits"] = sum(counted.values())
    if best is None:
        return None
    best[1].parameters["iterations_all_fits"] = sum(counted.values())
    best[1].parameters["misfit_retry"] = record
    best[1].parameters["init"] = best[0]
    return best[1], best[2]


def _misfit_message(result, o, n):
    """The warning for a fit that does not explain the data, with the likely causes."""
    chi2 = result.parameters["reduced_chi2"]
    tried = result.parameters.get("misfit_retry", {}).get("reduced_chi2")
    causes = []
    if "defocus" not in o.refine:
        causes.append("defocus values that are off (refine them: refine=('defocus',))")
    if "shifts" not in o.refine:
        causes.append("images that drift (refine=('shifts',), or register them first)")
    if n <= 3:
        causes.append(f"too few images for a strong phase ({n}; add images at more defocus "
                      f"values)")
    if not result.converged and result.iterations >= o.max_iterations:
        causes.append(f"a fit stopped at max_iterations={o.max_iterations} (raise it)")
    causes.append("wrong optical parameters or pixel size (beam energy, Cs, theta_c, "
                  "defocus spread)")
    starts = (" from every start (" + ", ".join(f"{k} {v:.2f}" for k, v in tried.items()) + ")"
              if tried else "")
    distrusted = result.parameters.get("misfit_not_identifiable")
    unmeasured = (f" The refined {', '.join(distrusted)} are reported not identifiable, "
                  f"without standard errors." if distrusted else "")
    return (f"AD reconstruction: the fit does not explain the data: reduced chi^2 "
            f"{chi2:.2f}{starts}, where a model that describes the data gives about 1 or "
            f"less. The phase may be in a wrong basin.{unmeasured} Likely causes: "
            + "; ".join(causes))


def _why(name):
    """Why the parameter ``name`` was found not identifiable (for the warning)."""
    if name in ("theta_c", "defocus_spread"):
        return f"doubling it changes chi^2 by less than {IDENTIFIABILITY_CHI2:g}"
    if name == "defocus offset":
        return ("a common offset of the defocus values is a refocusing of the exit wave: "
                "refocused to the nominal offset, the wave explains the images about as "
                "well (a likelihood-ratio test with one degree of freedom), or fits of "
                "simulated data started from the nominal values recover less than half of "
                "a miscalibration of it")
    if name == "defocus scale":
        return ("fits of simulated data started from the nominal values recover less than "
                "half of a miscalibration of the common scale")
    if name == "defocus":
        return ("the refined values explain the images no better than the nominal ones: "
                "the misfit improves by less than the 95 % point of chi^2 with one "
                "degree of freedom per image (a likelihood-ratio test)")
    if name == "shift tilt":
        return ("a drift that grows with the defocus (a beam tilt) moves the images as a "
                "phase ramp, a uniform in-plane induction, does; only the prior separates "
                "them (fits started without the tilt recover less than half of it, or the "
                "images with contrast have two defocus values)")
    return "the image has no contrast above its noise, so any drift fits it"


def _kept(name):
    """What was done with the unidentifiable parameter ``name`` (for the warning)."""
    if name == "shift tilt":
        return "the drift is reported with wider error bars"
    if name.startswith("shifts of image"):
        return "its shift was kept at 0"
    if name == "defocus":
        return "the nominal defocus values were kept and the exit wave fitted at them"
    return "it was kept at its given value"
