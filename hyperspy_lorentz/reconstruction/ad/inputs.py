"""Checks of the inputs of :func:`~hyperspy_lorentz.reconstruction.ad.reconstruct_ad`.

The images and defocus values, the parameters to refine, and the options
(parsed into an ``_Options``), with the messages that say what is wrong.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hyperspy_lorentz.physics import optics
from hyperspy_lorentz.reconstruction._torch_common import (
    _as_float,
    _regularization,
    _resolve_device,
    _torch_dtype,
)
from hyperspy_lorentz.reconstruction.ad.weight import DEFAULT_TV_WEIGHT

#: Parameters that can be refined besides the phase.
REFINABLE = ("amplitude", "defocus", "shifts", "theta_c", "astigmatism", "scale",
             "defocus_spread")
#: Parameters refined by default.
DEFAULT_REFINE = ("amplitude",)

_OPTICAL = ("defocus", "shifts", "theta_c", "astigmatism", "scale")


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


@dataclasses.dataclass
class _Options:
    """The checked options of one call of ``reconstruct_ad`` (lengths nm, ``cs`` mm,
    ``theta_c`` mrad, energy keV; the astigmatism angle in radians)."""

    pixel: tuple
    energy: float
    wl: float
    cs: float
    theta_c: float
    defocus_spread: float
    astig: float
    astig_angle: float
    refine: tuple
    likelihood: str
    optimizer: str
    init: str
    padding: object  # "periodic" is None here
    max_iterations: int
    tolerance: float
    beta: float  # the starting TV weight
    auto_weight: bool
    lr: float
    n_boot: object  # None: "auto"
    tdt: object
    dev: object
    # as given: passed on to the fits of the race and of the coarse pass, and recorded
    regularization: object
    learning_rate: object
    dtype: object
    progress: object
    seed: object
    # the images whose drift the data fix (set by the solver from their contrast)
    shift_reference: object = None


def _check_options(*, pixel_size, beam_energy, cs, theta_c, defocus_spread, astigmatism,
                   astigmatism_angle, refine, refine_amplitude, likelihood, optimizer, init,
                   padding, max_iterations, tolerance, regularization, learning_rate, progress,
                   bias_correction, dtype, device, seed):
    """The options of ``reconstruct_ad`` checked and converted (ValueError if bad)."""
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
    beta, auto_weight = _regularization(regularization)
    if auto_weight:
        beta = DEFAULT_TV_WEIGHT  # the start of the data-derived rule
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
    return _Options(
        pixel=pixel, energy=energy, wl=wl, cs=cs, theta_c=theta_c,
        defocus_spread=defocus_spread, astig=astig, astig_angle=astig_angle, refine=refine,
        likelihood=likelihood, optimizer=optimizer, init=init, padding=padding,
        max_iterations=max_iterations, tolerance=tolerance, beta=beta,
        auto_weight=auto_weight, lr=lr, n_boot=n_boot, tdt=tdt, dev=dev,
        regularization=regularization, learning_rate=learning_rate, dtype=dtype,
        progress=progress, seed=seed)


def _check_start(initial_phase, initial_amplitude, shape):
    """The given starting phase and amplitude as float arrays of the image shape."""
    h, w = shape
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
    return initial_phase, initial_amplitude
