"""Memory estimate of an AD fit, and the check made before it allocates.

:func:`~hyperspy_lorentz.reconstruction.ad.estimate_memory` (re-exported by
:mod:`hyperspy_lorentz.reconstruction.ad`) is the formula, with the measured
:data:`MEMORY_COEFFICIENTS`; ``_check_memory`` refuses a fit that does not fit in
the memory available.
"""

from __future__ import annotations

import math

import torch

from hyperspy_lorentz.reconstruction._torch_common import _torch_dtype
from hyperspy_lorentz.reconstruction.ad.inputs import _OPTICAL, DEFAULT_REFINE
from hyperspy_lorentz.reconstruction.canvas import Canvas

#: Peak memory of a fit, bytes per propagated (padded) pixel at float32:
#: ``fixed + n per_image + amplitude [amplitude refined] + optical [optical
#: parameters refined]``, plus 8 bytes per input pixel and image (float64
#: copies), times a 20 % margin; read by
#: :mod:`hyperspy_lorentz.reconstruction.memory`. Measured with
#: ``benchmarks/bench_ad.py --memory-only`` (RSS high-water mark added by a fit;
#: CPU, torch 2.13.0+cpu, 2 threads, float32, no padding). The peak grows until
#: L-BFGS holds its 10 history pairs (2 vectors per unknown, 160 B/px with the
#: amplitude), so fits of 15+ iterations were measured -- refine=("amplitude",):
#: 5 x 256^2 46 MiB (743 B/px), 5 x 512^2 181 MiB (724), 5 x 1024^2 729 MiB
#: (729), 2 x 1024^2 541 MiB (541), 5 x 2048^2 2.41 GiB (616; glibc returns the
#: large arrays at once); refine=(): 5 x 1024^2 669 MiB; refine=("amplitude",
#: "defocus", "shifts") (with the bootstrap, measured while the main fit's
#: optimiser was still held during it; it is freed first now, so these bound
#: the peak from above): 5 x 512^2 (40 iterations) 272 MiB (1089 B/px),
#: 2 x 1024^2 849 MiB, 5 x 1024^2 1021 MiB. After 3 iterations (the
#: benchmark's default) the peak is lower: 5 x 512^2 140 MiB, 2 x 1024^2
#: 397 MiB, 5 x 2048^2 1.94 GiB. Estimates: 5 x 2048^2 3.45 GiB (1.43 x the
#: 15-iteration peak), 5 x 512^2 221 MiB, 2 x 1024^2 655 MiB.
#: Since the backward pass no longer keeps conj(T) and saves the image waves
#: on the field of view only, the peaks are lower and the coefficients above
#: (kept) are an upper bound: on the free canvas, 15 iterations, amplitude
#: refined, 5 x 512^2 214 MiB (estimate 1.25 x), 5 x 1024^2 699 MiB (1.40 x),
#: 2 x 1024^2 587 MiB (1.24 x), 5 x 2048^2 2.29 GiB (1.58 x); nothing refined,
#: 5 x 1024^2 755 MiB (1.19 x); amplitude, defocus and shifts, 5 x 512^2
#: 285 MiB (1.52 x), 5 x 1024^2 1008 MiB (1.56 x). The glibc high-water marks
#: scatter by 10-25 % between shapes of one configuration (664 to 519 bytes per
#: canvas pixel for 5 images with the amplitude), too much for a tighter
#: per-pixel formula that never falls below the peak.
MEMORY_COEFFICIENTS = {"fixed": 360.0, "per_image": 55.0, "amplitude": 60.0,
                       "optical": 370.0}


def _padded_shape(h, w, padding, border=None):
    if padding in (None, "periodic"):
        return h, w
    if border is None:
        border = (h + 3) // 4, (w + 3) // 4
    return Canvas.around((h, w), border).shape


def estimate_memory(shape, n_images, refine=DEFAULT_REFINE, dtype="float32", padding="free",
                    border=None):
    """Estimate the peak memory added by :func:`reconstruct_ad`.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(H, W)``.
    n_images : int
        Number of images in the series.
    refine : sequence of str
        Parameters refined (see
        :data:`~hyperspy_lorentz.reconstruction.ad.inputs.REFINABLE`). Refining optical parameters
        keeps the spectrum of the exit wave and runs the bootstrap (a second
        optimiser); the amplitude adds a second field.
    dtype : {"float32", "float64"}
        Working precision (float64 doubles the memory).
    padding : "free", None, "periodic", "reflect" or "edge"
        Boundaries of the fit (see :func:`reconstruct_ad`): ``None`` and
        ``"periodic"`` propagate the image grid itself; the others a canvas
        with ``border`` pixels on each side, its size rounded up to a
        2,3,5,7-smooth number.
    border : (int, int), optional
        Border of the canvas, pixels; default a quarter of the image (rounded
        up), an upper bound of
        :func:`~hyperspy_lorentz.reconstruction.canvas.free_border` for most
        data.

    Returns
    -------
    int
        Bytes, with a 20 % margin, including the float64 copies of the input
        made by :func:`reconstruct_ad`.
    """
    try:
        h, w = (int(v) for v in tuple(shape)[-2:])
    except (TypeError, ValueError):
        raise ValueError(f"shape must be the image shape (H, W), got {shape!r}") from None
    n = int(n_images)
    if h < 1 or w < 1 or n < 1:
        raise ValueError(f"shape and n_images must be positive, got {shape!r}, {n_images!r}")
    scale = 2.0 if _torch_dtype(dtype) == torch.float64 else 1.0
    hp, wp = _padded_shape(h, w, padding, border)
    refine = tuple(refine or ())
    c = MEMORY_COEFFICIENTS
    optical = any(r in refine for r in _OPTICAL)
    per_px = c["fixed"] + n * c["per_image"] + (c["optical"] if optical else 0.0)
    if "amplitude" in refine:
        per_px += c["amplitude"]
    return int(math.ceil(1.2 * (scale * per_px * hp * wp + 8.0 * n * h * w)))


def _available_memory(device):
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), "free GPU memory"
    import psutil

    return int(psutil.virtual_memory().available), "available RAM"


def _check_memory(shape, n, refine, dtype, padding, border, device):
    need = estimate_memory(shape, n, refine, dtype, padding, border)
    avail, where = _available_memory(device)
    if need > avail:
        h, w = shape
        f = math.ceil(math.sqrt(need / max(avail, 1)))
        advice = (f"crop the images (s.isig[...]) to about {h // f} x {w // f} pixels or "
                  f"bin them (s.rebin(scale=(1, {f}, {f})))")
        if device.type != "cuda":
            advice += ", or run the fit on a GPU (device='cuda')"
        raise ValueError(
            f"Not enough memory: an AD reconstruction of {n} images of {h} x {w} pixels "
            f"needs about {need / 2**30:.2f} GiB, more than the {avail / 2**30:.2f} GiB of "
            f"{where}; {advice}."
        )
    return need
