"""Peak-memory estimates of the reconstructions, and a check against free RAM.

A reconstruction works on one focal series at a time; its peak memory is set by
the image size ``H x W``, the number of images ``N``, the method and, for AD, the
parameters refined, the precision and the padding. The coefficients were
measured as the peak resident memory *added* by one reconstruction (``VmHWM``
minus ``VmRSS`` just before it, the input images already in memory) on CPU. The
AD estimate *is* the kernel's own,
:func:`hyperspy_lorentz.reconstruction.ad.estimate_memory` (one formula, with the
padded grid of :class:`~hyperspy_lorentz.physics.forward.ForwardModel`; its
coefficients :data:`~hyperspy_lorentz.reconstruction.ad.memory.MEMORY_COEFFICIENTS`
are re-measured by ``benchmarks/bench_ad.py --memory-only``), and the TIE's is
measured below (``benchmarks/bench_scale.py --memory-table``).
The TIE estimate includes a 20 % margin (:data:`MARGIN`); the AD estimate is
the upper envelope of its measured peaks (1.00-1.19 x them up to 1024 x 1024,
1.39 x at 2048 x 2048). They tell a reconstruction that will fit from one that
will not, not the last megabyte.

:func:`check_memory` is called by the signal methods before they run (an eager
signal: one series; a lazy signal: each dask chunk, on the worker that runs it).
"""

from __future__ import annotations

import math

__all__ = ["estimate_memory", "check_memory", "available_memory"]

#: Safety margin applied to the measured TIE coefficients.
MARGIN = 1.2

# --- TIE (measured, bytes per image pixel; tests/..., benchmarks/bench_scale.py)
# symmetric=True (mirror padding to 2H x 2W, the default): ~540 B/px fixed
# (padded complex spectra, kernels, gradients) + 8 B/px per image (float64 copy).
_TIE_FIXED = {True: 560.0, False: 150.0}
_TIE_PER_IMAGE = 8.0

_METHODS = ("ad", "tie", "sitie")


def _shape(shape):
    try:
        h, w = (int(v) for v in tuple(shape)[-2:])
    except (TypeError, ValueError):
        raise ValueError(f"shape must be the image shape (H, W), not {shape!r}.") from None
    if len(tuple(shape)) < 2 or h < 1 or w < 1:
        raise ValueError(f"shape must be the image shape (H, W), not {shape!r}.")
    return h, w


def estimate_memory(shape, n_images, method, refine=None, dtype="float32", padding=None):
    """Estimate the peak memory of one focal-series reconstruction.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(H, W)`` (extra leading axes are ignored).
    n_images : int
        Number of images in the series.
    method : {"ad", "tie", "sitie"}
        The reconstruction method.
    refine : sequence of str or None
        AD: the parameters refined (``"amplitude"``, ``"defocus"``, ``"shifts"``,
        ``"theta_c"``, ``"astigmatism"``, ``"scale"``). ``None`` (default): those
        :func:`~hyperspy_lorentz.reconstruction.ad.reconstruct_ad` refines by
        default (:data:`~hyperspy_lorentz.reconstruction.ad.inputs.DEFAULT_REFINE`);
        ``()``: none. Refining optical parameters keeps the image spectra for
        their gradients and runs the bootstrap bias correction.
    dtype : str or numpy dtype
        AD: working precision, ``"float32"`` (default) or ``"float64"`` (twice
        the memory). The TIE always works in float64.
    padding : None, str or bool
        AD: the boundaries of the fit (``"free"``, the kernel's default, also
        for ``None``; ``"periodic"``, ``"reflect"``, ``"edge"``); a canvas is
        taken a quarter of the image, rounded up, larger on each side (an upper
        bound of the free border for most data) and rounded up to a
        2,3,5,7-smooth size, as
        :class:`~hyperspy_lorentz.physics.forward.ForwardModel` pads. TIE: the
        mirror padding of the ``symmetric`` solver, ``None`` or ``True``
        (default, mirror padding to ``2H x 2W``) or ``False``.

    Returns
    -------
    int
        Bytes added at the peak, besides the input images already in memory.
    """
    method = str(method).lower()
    if method not in _METHODS:
        raise ValueError(f"Unknown method {method!r}: use 'ad', 'tie' or 'sitie'.")
    h, w = _shape(shape)
    n = int(n_images)
    if n < 1:
        raise ValueError(f"n_images must be >= 1, not {n_images!r}.")
    if method in ("tie", "sitie"):
        symmetric = padding is None or padding is True or padding in ("mirror", "symmetric")
        n_eff = n if method == "tie" else 1
        per_px = _TIE_FIXED[symmetric] + _TIE_PER_IMAGE * n_eff
        return int(math.ceil(MARGIN * per_px * h * w))
    # AD: the kernel's own estimate (measured with the forward model it uses)
    from hyperspy_lorentz.reconstruction import ad

    refine = ad.DEFAULT_REFINE if refine is None else tuple(refine)
    padding = "free" if padding is None else padding
    return int(ad.estimate_memory((h, w), n, refine=refine, dtype=dtype, padding=padding))


def available_memory():
    """Bytes this process may still allocate: free RAM, and on a dask worker its limit.

    Returns
    -------
    available : int
    where : str
        ``"available RAM"`` or ``"the dask worker's memory limit"`` (95 % of
        the limit, where the nanny restarts the worker, less what the worker
        process holds already).
    """
    import psutil

    available = int(psutil.virtual_memory().available)
    where = "available RAM"
    import sys

    if "distributed" not in sys.modules:
        return available, where
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return available, where
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    if limit:
        used = psutil.Process().memory_info().rss
        # the nanny restarts the worker at 95 % of its limit
        room = int(0.95 * limit - used)
        if room < available:
            return max(room, 0), "the dask worker's memory limit"
    return available, where


def _fmt(nbytes):
    gib = nbytes / 2**30
    return f"{gib:.1f} GiB" if gib >= 1 else f"{nbytes / 2**20:.0f} MiB"


def check_memory(shape, n_images, method, refine=None, dtype="float32", padding=None, *,
                 n_series=1, extra=0, available=None, device=None):
    """Raise a ValueError when a reconstruction will not fit in memory.

    Parameters
    ----------
    shape, n_images, method, refine, dtype, padding
        As :func:`estimate_memory`.
    n_series : int
        Series reconstructed at the same time (one dask chunk is one at a time).
    extra : int
        Further bytes that will be needed (e.g. input not loaded yet).
    available : int or None
        Bytes available; default :func:`available_memory`. On a CUDA ``device``
        the free GPU memory.
    device : str or None
        AD: ``"cuda..."`` compares with the free GPU memory.

    Returns
    -------
    int
        The estimate, bytes, when it fits.

    Raises
    ------
    ValueError
        Saying how much is needed and available, and what to do: crop
        (``s.isig[...]``), bin (``s.rebin(scale=(1, 2, 2))``), or move the AD fit
        to a GPU.
    """
    need = estimate_memory(shape, n_images, method, refine=refine, dtype=dtype, padding=padding)
    need = need * max(int(n_series), 1) + int(extra)
    where = "available RAM"
    on_gpu = device is not None and str(device).startswith("cuda")
    if available is None:
        if on_gpu:
            import torch

            available, _ = torch.cuda.mem_get_info(torch.device(device))
            where = "free GPU memory"
        else:
            available, where = available_memory()
    if need <= available:
        return need
    h, w = _shape(shape)
    factor = math.ceil(math.sqrt(need / max(available, 1)))
    advice = [f"crop the images (s.isig[a:b, c:d]) to about {h // factor} x {w // factor} pixels",
              f"bin them (s.rebin(scale=(..., {factor}, {factor})) on the image axes)"]
    if str(method).lower() == "ad" and not on_gpu:
        advice.append("run the AD fit on a GPU (device='cuda')")
    if int(n_series) > 1:
        advice.append("use smaller chunks along the other navigation axes")
    raise ValueError(
        f"The {method.upper()} reconstruction of a series of {n_images} images of {h} x {w} pixels "
        f"{'(x ' + str(int(n_series)) + ' series at once) ' if int(n_series) > 1 else ''}needs about "
        f"{_fmt(need)}, more than the {_fmt(available)} of {where}: " + ", or ".join(advice) + "."
    )
