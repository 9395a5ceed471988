"""The result of an AD reconstruction: :class:`ADResult`."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch

from hyperspy_lorentz.reconstruction.ad.objective import (
    JOINT_TV_COUPLING,
    PRECONDITIONER_FLOOR,
    PRECONDITIONER_TV,
    TV_EPSILON,
)
from hyperspy_lorentz.reconstruction.ad.optimiser import CONVERGENCE_WINDOW, LBFGS_HISTORY


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
        Image shifts ``(dy, dx)``, pixels; a positive value moves the image
        content toward ``+y`` / ``+x``. Relative to the *shift reference*, the
        mean over the images whose contrast fixes their drift
        (``parameters["shift_reference"]``, their indices); the other images
        (an in-focus image of a pure phase object) keep 0 and are listed in
        ``not_identifiable``.
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


def _result(fit, standard_errors, t_start):
    """The :class:`ADResult` of a finished fit: the window of the canvas, the phase
    offset removed, the amplitude normalised to ``<A^2> = 1``."""
    o, start, canvas = fit.o, fit.start, fit.canvas
    n = len(start["defocus"])
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
    if "astigmatism" not in fit.refined:
        a_mag, a_ang = o.astig, math.degrees(o.astig_angle)
    settings = fit.settings
    settings["evaluations"] = fit.evaluations
    settings["stages"] = fit.stage_info
    return ADResult(
        phase=phase, amplitude=amplitude, defocus=np.asarray(start["defocus"], float),
        shifts=np.asarray(shifts, float), theta_c=float(start["theta_c"]),
        astigmatism=a_mag, astigmatism_angle=a_ang, scale=np.asarray(start["scale"], float),
        defocus_spread=float(fit.spread), loss_history=[float(v) for v in fit.losses],
        iterations=fit.total_it, converged=bool(fit.converged), interrupted=fit.interrupted,
        time_s=time.perf_counter() - t_start, refined=fit.refined,
        not_identifiable=tuple(fit.not_identifiable), parameters=settings, device=str(o.dev),
        standard_errors=standard_errors, canvas_phase=canvas_phase,
        canvas_amplitude=canvas_amplitude)


def _parameters(o, df, canvas, *, dose, init, amp_source, sigma, sigma_estimated,
                dose_n, tie_info, race, race_iterations):
    """The record of the settings of a fit (``ADResult.parameters``, JSON-friendly)."""
    n = len(df)
    likelihood = o.likelihood
    regularization = o.regularization
    return dict(
        pixel_size=list(o.pixel), beam_energy=o.energy, wavelength=o.wl, cs=o.cs,
        theta_c=o.theta_c, defocus_spread=o.defocus_spread, astigmatism=o.astig,
        astigmatism_angle=math.degrees(o.astig_angle), defocus=df.tolist(),
        refine=list(o.refine), refine_amplitude="amplitude" in o.refine, likelihood=likelihood,
        dose=None if dose is None else np.broadcast_to(np.asarray(dose, float), (n,)).tolist(),
        regularization=o.beta,
        regularization_input=(regularization if isinstance(regularization, (str, type(None)))
                              else float(regularization)),
        tv_epsilon=TV_EPSILON, joint_tv_coupling=JOINT_TV_COUPLING,
        max_iterations=o.max_iterations, tolerance=o.tolerance,
        convergence_window=CONVERGENCE_WINDOW, learning_rate=o.lr, optimizer=o.optimizer,
        lbfgs_history=LBFGS_HISTORY, preconditioner_floor=PRECONDITIONER_FLOOR,
        preconditioner_tv=PRECONDITIONER_TV,
        init=init,
        initial_amplitude=amp_source,
        padding="periodic" if o.padding is None else o.padding,
        canvas_shape=list(canvas.shape), canvas_border=list(canvas.border),
        device=str(o.dev), dtype=str(o.tdt).replace("torch.", ""), seed=o.seed,
        shift_reference=np.flatnonzero(o.shift_reference).tolist(),
        noise_sigma=sigma.tolist() if likelihood == "gaussian" else None,
        noise_sigma_estimated=(sigma_estimated.tolist() if likelihood == "gaussian"
                               else None),
        dose_used=None if likelihood == "gaussian" else np.asarray(dose_n, float).tolist(),
        tie_qc=None if tie_info is None else tie_info.get("qc"),
        init_race=race, init_race_iterations=race_iterations,
    )
