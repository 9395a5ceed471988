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

#: Peak memory of a fit, bytes per propagated (canvas) pixel at float32:
#: ``fixed + n per_image + amplitude [amplitude refined] + optical [optical
#: parameters refined]``, plus 8 bytes per input pixel and image (float64
#: copies); read by :mod:`hyperspy_lorentz.reconstruction.memory`. The upper
#: envelope of the peaks measured with ``benchmarks/bench_ad.py --memory-child``
#: (RSS high-water mark added by a fit; CPU, torch 2.13.0+cpu, 2 threads,
#: float32, the free canvas, 15 iterations: the L-BFGS history full), with no
#: margin on top. Measured (canvas; peak; bytes per canvas pixel after the
#: input copies): amplitude refined (the default) 5 x 512^2 (567^2) 204 MiB,
#: 633 B/px; 2 x 1024^2 (1080^2) 642 MiB, 563; 3 x 1024^2 733 MiB, 637;
#: 5 x 1024^2 758 and 829 MiB, 645 and 709; 5 x 2048^2 (2100^2) 2.33 GiB, 529;
#: nothing refined 2 x 1024^2 534 MiB, 466; 5 x 1024^2 840, 763 and 789 MiB,
#: 719, 650 and 673; amplitude, defocus and shifts (with the tests at the
#: nominal defocus and the bootstrap) 5 x 512^2 (588^2) 270 MiB, 788;
#: 2 x 1024^2 (1120^2) 764 MiB, 625; 5 x 1024^2 1009 MiB, 810. Repeated runs
#: of one configuration scatter by 5-10 % (glibc's heap), and the amplitude's
#: second field is lost in that scatter. The estimate is 1.00-1.19 x these
#: peaks up to 1024^2 and 1.39 x at 2048^2, where glibc returns the large
#: arrays to the system at once and the cost per pixel is lower. (Until this
#: version the coefficients were those measured before the conjugate-free
#: backward pass, plus a 20 % margin: 1.07-1.72 x.)
MEMORY_COEFFICIENTS = {"fixed": 445.0, "per_image": 55.0, "amplitude": 30.0,
                       "optical": 65.0}


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
        Bytes: the upper envelope of the measured peaks (see
        :data:`~hyperspy_lorentz.reconstruction.ad.memory.MEMORY_COEFFICIENTS`),
        including the float64 copies of the input made by :func:`reconstruct_ad`.
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
    return int(math.ceil(scale * per_px * hp * wp + 8.0 * n * h * w))


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
