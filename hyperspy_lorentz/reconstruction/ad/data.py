"""The measured data of an AD fit: normalised images or counts, and their noise."""

from __future__ import annotations

import numpy as np
import torch

from hyperspy_lorentz.reconstruction.tie import estimate_noise

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


def _counts(imgs, likelihood, dose):
    """Poisson: the counts and the dose (electrons per pixel) of each image; Gaussian:
    ``(None, None)``."""
    n = imgs.shape[0]
    counts = dose_n = None
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
    return counts, dose_n


def _amplitudes(norm, tdt):
    """Gaussian: the measured amplitudes ``sqrt(I / <I>)`` (working precision), the noise
    of each estimated from them and that noise floored by :data:`NOISE_FLOOR`."""
    amps = np.sqrt(np.clip(norm, 0.0, None), dtype=np.float32 if tdt == torch.float32
                   else np.float64)
    sigma_estimated = np.array([estimate_noise(a.astype(np.float64)) for a in amps])
    sigma = np.maximum(sigma_estimated, NOISE_FLOOR)
    return amps, sigma_estimated, sigma


def _infocus(df):
    """Indices of the in-focus images (``|df| <= INFOCUS_FRACTION max|df|``)."""
    return np.flatnonzero(np.abs(df) <= INFOCUS_FRACTION * np.max(np.abs(df)))


def _drift_reference(imgs, df):
    """The images whose drift the data fix: those with contrast above their noise.

    An image's drift is measured only through its contrast: the in-focus image of
    a pure phase object is uniform, and any shift fits it. The contrast test is
    :func:`~hyperspy_lorentz.reconstruction.contrast.defocus_contrast` on each
    image itself (excess normalised variance above the white noise, more than its
    ``threshold`` standard errors). Shifts are fitted for these images only,
    relative to their mean (the *shift reference*); the others keep zero shift
    and are reported as not identifiable. If no image passes, all count.
    """
    from hyperspy_lorentz.reconstruction.contrast import defocus_contrast

    rec = defocus_contrast(imgs, df)
    ref = np.array([e > 0 and c / e > rec["threshold"]
                    for c, e in zip(rec["contrast"], rec["standard_error"])], dtype=bool)
    return ref if ref.any() else np.ones(len(df), dtype=bool)
