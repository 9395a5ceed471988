"""The state of one AD fit: data tensors, forward model, problems and stage bookkeeping."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import torch

from hyperspy_lorentz.physics.forward import ForwardModel
from hyperspy_lorentz.reconstruction.ad.objective import JOINT_TV_COUPLING, TV_EPSILON, _Problem
from hyperspy_lorentz.reconstruction.ad.optimiser import (
    CONVERGENCE_WINDOW,
    LBFGS_HISTORY,
    _stage_optimiser,
)


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


@dataclasses.dataclass(eq=False)
class _Fit:
    """What the stages of one fit share: the options, the canvas, the data tensors, the
    forward model, the current state and the bookkeeping of the stages run.

    ``start`` is the current state (a ``start`` dict of
    :class:`~hyperspy_lorentz.reconstruction.ad.objective._Problem`), ``current`` the
    problem and optimiser of the last stage (kept for an interruption), ``refined`` the
    parameters actually fitted and ``gradient_refine`` those of them fitted by gradient
    (not ``defocus_spread``).
    """

    o: object  # inputs._Options
    shape: tuple
    border: object
    canvas: object
    shift_reference: np.ndarray
    data: torch.Tensor
    weights: torch.Tensor
    dose: object
    beta: float
    start: dict = None
    model: object = None
    settings: dict = None
    refined: tuple = ()
    gradient_refine: tuple = ()
    not_identifiable: list = dataclasses.field(default_factory=list)
    spread: float = None
    losses: list = dataclasses.field(default_factory=list)
    total_it: int = 0
    evaluations: int = 0
    stage_info: list = dataclasses.field(default_factory=list)
    converged: bool = False
    nonfinite: bool = False
    interrupted: bool = False
    current: tuple = (None, None)

    @classmethod
    def begin(cls, o, shape, canvas, border, settings, *, data, sigma, dose):
        """A fit of ``data`` (Gaussian: the measured amplitudes, weighted by
        ``1 / sigma^2``; Poisson: the counts, at ``dose``) at the starting weight."""
        t = dict(dtype=o.tdt, device=o.dev)
        if o.likelihood == "gaussian":
            data_t = torch.as_tensor(data, **t)
            weights = torch.as_tensor(1.0 / sigma**2, **t)
            dose_t = None
        else:
            data_t = torch.as_tensor(data, **t)
            weights = torch.ones(data.shape[0], **t)
            dose_t = torch.as_tensor(dose, **t)
        fit = cls(o=o, shape=tuple(shape), border=border, canvas=canvas,
                  shift_reference=np.asarray(o.shift_reference, bool),
                  data=data_t, weights=weights, dose=dose_t, beta=o.beta, settings=settings,
                  refined=o.refine,
                  gradient_refine=tuple(r for r in o.refine if r != "defocus_spread"),
                  spread=o.defocus_spread)
        fit.model = fit.make_model()
        return fit

    def set_start(self, phase0, amp0, df):
        """The starting state: the fields on the canvas, the given optical parameters."""
        o, t = self.o, self.tens
        self.start = {
            "phase": torch.as_tensor(phase0, **t),
            "amplitude": None if amp0 is None else torch.as_tensor(amp0, **t),
            "defocus": df.copy(), "shifts": None, "theta_c": o.theta_c,
            "astig": np.array([o.astig * math.cos(2 * o.astig_angle),
                               o.astig * math.sin(2 * o.astig_angle)]),
            "scale": np.ones(len(df)),
        }

    @property
    def tens(self):
        return dict(dtype=self.o.tdt, device=self.o.dev)

    def make_model(self, spread=None):
        """The forward model, at the given focal spread by default (``theta_c`` is
        the state's, passed by the problem on every call)."""
        o = self.o
        return ForwardModel(self.shape, o.pixel, o.energy, cs=o.cs, theta_c=o.theta_c,
                            defocus_spread=o.defocus_spread if spread is None else spread,
                            padding=o.padding, pad_width=self.border, device=o.dev,
                            dtype=o.tdt)

    def problem(self, start, refine, model=None, data=None):
        """The objective from ``start`` with ``refine`` fitted (the current model and
        weight; the measured data unless ``data`` is given)."""
        o = self.o
        model = self.model if model is None else model
        pr = _Problem(data=self.data if data is None else data, weights=self.weights,
                      likelihood=o.likelihood, dose=self.dose,
                      model=model, start=start, refine=refine, beta=self.beta, eps=TV_EPSILON,
                      kappa=JOINT_TV_COUPLING, periodic=o.padding is None,
                      shift_reference=self.shift_reference, device=o.dev, dtype=o.tdt,
                      coverage=self.canvas.coverage)
        pr.build_preconditioners(o.wl, o.cs, model.defocus_spread, o.pixel)
        return pr

    def optimiser_options(self, budget, tol):
        o = self.o
        return dict(method=o.optimizer, learning_rate=o.lr, history=LBFGS_HISTORY,
                    max_iterations=budget, tolerance=tol, window=CONVERGENCE_WINDOW,
                    progress=o.progress, offset=self.total_it)

    def run_stage(self, start, refine, budget, tol, refined=None):
        """Fit from ``start`` with ``refine`` fitted; ``start`` becomes its best state."""
        problem = self.problem(start, refine)
        self.current = (problem, None)
        opt = _stage_optimiser(problem, self.tens, **self.optimiser_options(budget, tol))
        self.current = (problem, opt)
        opt.run()
        self.losses.extend(opt.losses)
        self.total_it += opt.iterations
        self.evaluations += opt.evaluations
        self.converged, self.nonfinite = opt.converged, opt.nonfinite
        self.stage_info.append(dict(refine=list(refine) if refined is None else refined,
                                    iterations=opt.iterations, converged=opt.converged,
                                    loss=opt.best_loss, tolerance=tol))
        self.start = problem.state(opt.best_x)

    def interrupt(self):
        """Account the stage a ``KeyboardInterrupt`` stopped; keep its best iterate."""
        self.interrupted = True
        problem, opt = self.current
        if opt is not None:
            self.losses += opt.losses
            self.total_it += opt.iterations
            self.evaluations += opt.evaluations
            if math.isfinite(opt.best_loss):
                self.start = problem.state(opt.best_x)
        self.converged = False
