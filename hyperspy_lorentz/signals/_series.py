"""Run a per-focal-series kernel over every other navigation position.

A focal series signal may have navigation axes beside ``defocus`` (time, field,
temperature ...). Reconstructions are kernels ``images (N, H, W) -> (result (H, W),
info dict)``; this module iterates them over the other axes, eagerly with a
progress bar or lazily with dask (one task per chunk of whole focal series), and
gathers the per-series information into arrays for the result's metadata.
"""

from __future__ import annotations

import warnings

import numpy as np


def series_array(signal):
    """The signal's data with the defocus axis moved just before the image axes.

    Returns
    -------
    data : numpy.ndarray or dask.array.Array
        Shape ``(*outer, N, H, W)``.
    """
    idx = signal._defocus_axis().index_in_array
    data = signal.data
    if signal._lazy:
        import dask.array as da

        return da.moveaxis(data, idx, -3)
    return np.moveaxis(data, idx, -3)


def _run_block(block, kernel):
    """Apply ``kernel`` to each series of a block ``(*outer, N, H, W)``.

    Returns an object array of shape ``outer`` holding ``(result, info)`` tuples.
    """
    outer = block.shape[:-3]
    out = np.empty(outer, dtype=object)
    for index in np.ndindex(*outer):
        out[index] = kernel(np.asarray(block[index]))
    return out


def apply_kernel(signal, kernel, *, result_shape, result_dtype=float, show_progressbar=None, lazy_output=None):
    """Apply a focal-series kernel at every outer navigation position.

    Parameters
    ----------
    signal : LorentzFocalSeries
        The series (eager or lazy).
    kernel : callable
        ``kernel(images) -> (result, info)`` with ``images`` of shape (N, H, W),
        ``result`` an array of shape ``result_shape`` and ``info`` a dict.
    result_shape : tuple of int
        Shape of one result.
    result_dtype : numpy dtype
        dtype of the results.
    show_progressbar : bool or None
        Progress bar over the series (eager only; lazy computations show
        dask's progress when computed).
    lazy_output : bool or None
        ``None``: lazy if the input is lazy.

    Returns
    -------
    results : numpy.ndarray or dask.array.Array
        Shape ``(*outer, *result_shape)``.
    infos : numpy.ndarray (object) or dask.array.Array (object)
        One info dict per outer position, shape ``outer``.
    """
    data = series_array(signal)
    outer = tuple(data.shape[:-3])
    lazy = signal._lazy if lazy_output is None else bool(lazy_output)

    if not lazy:
        if signal._lazy:
            data = data.compute()
        from hyperspy.external.progressbar import progressbar

        results = np.empty(outer + tuple(result_shape), dtype=result_dtype)
        infos = np.empty(outer, dtype=object)
        for index in progressbar(
            list(np.ndindex(*outer)), disable=_disable(show_progressbar), desc="Focal series",
            leave=True,
        ):
            res, info = kernel(np.asarray(data[index]))
            results[index] = res
            infos[index] = info
        return results, infos

    import dask.array as da

    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=(1,) * len(outer) + tuple(data.shape[-3:]))
    whole = data.chunks[-3:]
    if any(len(c) > 1 for c in whole):
        warnings.warn(
            "The chunks of this lazy signal split focal series (the defocus or image axes "
            "are cut into several chunks); rechunking so that each chunk holds whole series. "
            "Load with chunks that keep the last three axes whole to avoid the copy.",
            UserWarning,
            stacklevel=3,
        )
        data = data.rechunk(data.chunks[:-3] + tuple(data.shape[-3:]))
    packed = data.map_blocks(
        _run_block, kernel, drop_axis=[data.ndim - 3, data.ndim - 2, data.ndim - 1], dtype=object,
        meta=np.empty((0,) * len(outer), dtype=object),
    )
    n_res = len(result_shape)
    results = packed.map_blocks(
        _unpack_results,
        result_shape,
        new_axis=list(range(len(outer), len(outer) + n_res)),
        chunks=packed.chunks + tuple((n,) for n in result_shape),
        dtype=result_dtype,
        meta=np.empty((0,) * (len(outer) + n_res), dtype=result_dtype),
    )
    infos = packed.map_blocks(_unpack_infos, dtype=object, meta=np.empty((0,) * len(outer), dtype=object))
    return results, infos


def _unpack_results(block, result_shape):
    out = np.empty(block.shape + tuple(result_shape))
    for index in np.ndindex(*block.shape):
        out[index] = block[index][0]
    return out


def _unpack_infos(block):
    out = np.empty(block.shape, dtype=object)
    for index in np.ndindex(*block.shape):
        out[index] = block[index][1]
    return out


def _disable(show_progressbar):
    if show_progressbar is None:
        from hyperspy.defaults_parser import preferences

        show_progressbar = preferences.General.show_progressbar
    return not show_progressbar


def merge_infos(infos):
    """Merge per-series info dicts into one dict for the metadata.

    For a single series (``infos`` of shape ``()``) the dict is returned as is.
    Otherwise each key holds an array of shape ``(*outer, ...)``; sequences of
    different lengths (loss histories) are padded with NaN.
    """
    infos = np.asarray(infos, dtype=object)
    if infos.shape == ():
        return dict(infos[()])
    flat = list(infos.flat)
    merged = {}
    for key in flat[0]:
        values = [d.get(key) for d in flat]
        try:
            arrays = [np.asarray(v, dtype=float) for v in values]
        except (TypeError, ValueError):
            # Not numeric: keep the first value when all agree, else a list.
            merged[key] = values[0] if all(v == values[0] for v in values) else values
            continue
        shapes = {a.shape for a in arrays}
        if len(shapes) == 1:
            merged[key] = np.stack(arrays).reshape(infos.shape + arrays[0].shape)
        elif all(a.ndim == 1 for a in arrays):
            n = max(a.size for a in arrays)
            padded = np.full((len(arrays), n), np.nan)
            for i, a in enumerate(arrays):
                padded[i, : a.size] = a
            merged[key] = padded.reshape(infos.shape + (n,))
        else:
            merged[key] = values
    return merged
