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


def _run_block(block, kernel, memory=None):
    """Apply ``kernel`` to each series of a block ``(*outer, N, H, W)``.

    Runs in a dask task. On a ``dask.distributed`` worker, PyTorch's thread count
    is set from the worker's threads for the duration of the block (and restored
    afterwards), and the memory one series needs is checked against what the
    worker's machine (and the worker's memory limit) has left.

    Returns an object array of shape ``outer`` holding ``(result, info)`` tuples.
    """
    outer = block.shape[:-3]
    out = np.empty(outer, dtype=object)
    with worker_threads():
        if memory is not None and outer and int(np.prod(outer)):
            _check(memory, block.shape[-3], block.shape[-2:])
        for index in np.ndindex(*outer):
            out[index] = kernel(np.asarray(block[index]))
    return out


# ----------------------------------------------------------------- threads
def _current_worker():
    """The dask.distributed worker running this code, or None."""
    import sys

    if "distributed" not in sys.modules:  # no worker without it; skip the import
        return None
    try:
        from distributed import get_worker
    except ImportError:  # pragma: no cover - distributed is optional
        return None
    try:
        return get_worker()
    except ValueError:
        return None


def torch_threads_for_worker(worker=None):
    """PyTorch threads one series gets on a dask.distributed worker (None elsewhere).

    A worker with ``nthreads`` threads runs up to ``nthreads`` series at once;
    the threads are shared out between the series it is running now, so that
    the fits together use what the worker was given and no more. A worker
    started with a ``torch_threads`` resource (``--resources torch_threads=8``)
    uses that number instead.
    """
    worker = _current_worker() if worker is None else worker
    if worker is None:
        return None
    state = getattr(worker, "state", worker)
    resources = getattr(state, "total_resources", None) or {}
    if "torch_threads" in resources:
        return max(1, int(resources["torch_threads"]))
    nthreads = int(getattr(state, "nthreads", 1) or 1)
    try:
        running = len(state.executing)
    except AttributeError:  # pragma: no cover - older distributed
        running = 1
    return max(1, nthreads // max(running, 1))


class worker_threads:  # noqa: N801 - used as a context manager
    """Set ``torch.set_num_threads`` for a task on a dask worker; restore on exit.

    Does nothing outside a ``dask.distributed`` worker.
    """

    def __enter__(self):
        import sys

        self._old = None
        # Only where the kernel uses torch (it is imported when the kernel is
        # unpickled): a TIE task should not pay for importing it.
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        n = torch_threads_for_worker()
        if n is None:
            return None

        self._old = torch.get_num_threads()
        if n != self._old:
            torch.set_num_threads(n)
        return n

    def __exit__(self, *exc):
        if self._old is not None:
            import torch

            if torch.get_num_threads() != self._old:
                torch.set_num_threads(self._old)
        return False


# ------------------------------------------------------------------ memory
def memory_spec(parameters):
    """Keywords of :func:`~hyperspy_lorentz.reconstruction.memory.check_memory`
    from a reconstruction's recorded parameters (None when unknown)."""
    if not parameters or "method" not in parameters:
        return None
    method = str(parameters["method"]).lower()
    if method in ("tie", "sitie"):
        symmetric = parameters.get("symmetric", True)
        return {"method": method, "padding": bool(True if symmetric is None else symmetric)}
    if method == "ad":
        refine = parameters.get("refine")  # not given: the kernel's default (None)
        if isinstance(refine, str):
            refine = (refine,)
        if refine is not None:  # the amplitude has its own switch (refined by default)
            refine = tuple(r for r in refine if r != "amplitude")
            if parameters.get("refine_amplitude", True):
                refine = ("amplitude",) + refine
        dtype = parameters.get("dtype") or "float32"
        return {
            "method": "ad",
            "refine": None if refine is None else tuple(str(r) for r in refine),
            "padding": parameters.get("padding"),
            "dtype": str(dtype).replace("torch.", ""),
            # resolved where the fit runs (a worker may have a GPU this machine lacks)
            "device": None if parameters.get("device") is None else str(parameters.get("device")),
        }
    return None


def _device_name(device):
    """``"cuda..."`` where an AD fit on ``device`` runs on a GPU here, else None."""
    import sys

    if device is None or str(device) == "auto":
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        return "cuda" if torch.cuda.is_available() else None
    return str(device) if str(device).startswith("cuda") else None


def _check(memory, n_images, shape, n_series=1, extra=0):
    from hyperspy_lorentz.reconstruction.memory import check_memory

    spec = dict(memory)
    method = spec.pop("method")
    device = _device_name(spec.pop("device", None)) if method == "ad" else None
    try:
        check_memory(shape, n_images, method, n_series=n_series, extra=extra, device=device, **spec)
    except ValueError:
        raise
    except Exception:  # pragma: no cover - never block a run on a failed estimate
        pass


def _client_active():
    """True when a dask.distributed Client is the default scheduler."""
    import sys

    if "distributed" not in sys.modules:  # no client without it; skip the import
        return False
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover
        return False
    try:
        default_client()
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------- apply
def apply_kernel(signal, kernel, *, result_shape, result_dtype=float, show_progressbar=None,
                 lazy_output=None, parameters=None):
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
    parameters : dict or None
        The reconstruction's parameters (``method``, ``refine``, ``padding``,
        ``symmetric``, ``dtype``, ``device``): with them the memory one series
        needs is checked before running (:mod:`hyperspy_lorentz.reconstruction.memory`):
        here for an eager result, and in each dask task, on the worker that runs
        it, for a lazy one.

    Returns
    -------
    results : numpy.ndarray or dask.array.Array
        Shape ``(*outer, *result_shape)``. A lazy result has one chunk per chunk
        of whole focal series of the input; computing it loads and reconstructs
        the series chunk by chunk.
    infos : numpy.ndarray (object) or dask.array.Array (object)
        One info dict per outer position, shape ``outer``. Lazy: computed by the
        same tasks as ``results``; compute both together (``dask.compute``) so
        that each series is reconstructed once.
    """
    data = series_array(signal)
    outer = tuple(data.shape[:-3])
    lazy = signal._lazy if lazy_output is None else bool(lazy_output)
    memory = memory_spec(parameters)
    n_images, image_shape = data.shape[-3], tuple(data.shape[-2:])

    if not lazy:
        if memory is not None:
            # An eager signal is in memory already; a lazy one is read series by series.
            series_bytes = n_images * int(np.prod(image_shape)) * data.dtype.itemsize
            _check(memory, n_images, image_shape, extra=series_bytes if signal._lazy else 0)
        from hyperspy.external.progressbar import progressbar

        results = np.empty(outer + tuple(result_shape), dtype=result_dtype)
        infos = np.empty(outer, dtype=object)
        for index in progressbar(
            list(np.ndindex(*outer)), disable=_disable(show_progressbar), desc="Focal series",
            leave=True,
        ):
            images = data[index]
            if signal._lazy:
                images = images.compute()
            res, info = kernel(np.asarray(images))
            results[index] = res
            infos[index] = info
        return results, infos

    import dask.array as da

    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=(1,) * len(outer) + tuple(data.shape[-3:]))
    data = whole_series_chunks(data)
    if memory is not None and not _client_active():
        # Local scheduler: fail now rather than in a task. (On a cluster each
        # task checks on its worker, whose memory this machine cannot know.)
        chunk_bytes = int(np.prod([max(c) for c in data.chunks])) * data.dtype.itemsize
        _check(memory, n_images, image_shape, extra=chunk_bytes)
    packed = data.map_blocks(
        _run_block, kernel, memory, drop_axis=[data.ndim - 3, data.ndim - 2, data.ndim - 1],
        dtype=object, meta=np.empty((0,) * len(outer), dtype=object),
        token="reconstruct-series",
    )
    n_res = len(result_shape)
    results = packed.map_blocks(
        _unpack_results,
        result_shape,
        np.dtype(result_dtype),
        new_axis=list(range(len(outer), len(outer) + n_res)),
        chunks=packed.chunks + tuple((n,) for n in result_shape),
        dtype=result_dtype,
        meta=np.empty((0,) * (len(outer) + n_res), dtype=result_dtype),
        token="series-result",
    )
    infos = packed.map_blocks(_unpack_infos, dtype=object, meta=np.empty((0,) * len(outer), dtype=object),
                              token="series-info")
    return results, infos


def whole_series_chunks(data, stacklevel=None):
    """Rechunk ``(*outer, N, H, W)`` so that no chunk splits a focal series.

    Warns when a rechunk is needed: the defocus or image axes were cut into
    several chunks. The outer axes keep their chunks.
    """
    if all(len(c) == 1 for c in data.chunks[-3:]):
        return data
    warnings.warn(
        "The chunks of this lazy signal split focal series (the defocus or image axes "
        f"are cut into several chunks: {tuple(len(c) for c in data.chunks[-3:])} along "
        "(defocus, y, x)); rechunking so that each chunk holds whole series. "
        "Load with chunks that keep the defocus and image axes whole to avoid the copy.",
        UserWarning,
        stacklevel=_user_stacklevel() if stacklevel is None else stacklevel,
    )
    return data.rechunk(data.chunks[:-3] + tuple((n,) for n in data.shape[-3:]))


def _user_stacklevel():
    """Stack level of the first caller outside this package (for warnings)."""
    import os
    import sys

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _unpack_results(block, result_shape, dtype):
    out = np.empty(block.shape + tuple(result_shape), dtype=dtype)
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
        if all(isinstance(v, (bool, np.bool_)) for v in values):
            merged[key] = np.array(values, dtype=bool).reshape(infos.shape)
            continue
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


# -------------------------------------------------------------------- saving
def save_lazy_result(signal, filename, *, infos=None, chunks=None, overwrite=None,
                     show_progressbar=None, **kwds):
    """Save a lazy reconstruction to ``.zspy``, streaming, with its per-series information.

    ``signal.save("x.zspy")`` on a lazy reconstruction writes the phase chunk by
    chunk but cannot keep the per-series information (refined parameters, loss
    histories), which the same tasks compute. This writes both in one pass over
    the data: the file's structure first, then the phase chunk by chunk as the
    series are reconstructed (``dask.array.store`` on the active scheduler:
    threads, or the workers of a ``dask.distributed`` client, which must see the
    file), then the information into ``metadata.Signal.Reconstruction``.

    The file is written under a temporary name beside ``filename`` and renamed
    at the end, so an interrupted run never leaves a file that looks complete.
    Afterwards the signal reads its data from the file (computing it again does
    not rerun the reconstructions).

    Parameters
    ----------
    signal : LazyElectronPhase or lazy ComplexSignal2D
        A lazy reconstruction.
    filename : str or pathlib.Path
        ``.zspy`` path (a folder).
    infos : dask.array.Array or None
        The lazy per-series information; default the signal's own
        (``_lazy_reconstruction_info``). Without it this is ``signal.save``
        (under the temporary name, then renamed).
    chunks : tuple of int or None
        Chunks of the saved array; default the result's chunks (one chunk of
        whole series each).
    overwrite : bool or None
        Replace an existing file. ``None`` or ``False`` refuse with a
        ``FileExistsError``.
    show_progressbar : bool or None
        Progress bar while the series are reconstructed and written (dask's on
        the local scheduler, ``distributed.progress`` on a cluster).
    **kwds
        Passed to ``signal.save`` (e.g. ``compressor``).
    """
    import shutil
    import tempfile
    from pathlib import Path

    import dask.array as da

    path = Path(filename)
    if path.suffix.lower() != ".zspy":
        raise ValueError(f"save_lazy_result writes .zspy files, not {path.suffix or path.name!r}.")
    if infos is None:
        infos = getattr(signal, "_lazy_reconstruction_info", None)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.incomplete.", dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        _materialise_metadata(signal)
        if infos is None:
            signal.save(tmp, chunks=chunks, show_progressbar=not _disable(show_progressbar), **kwds)
            dset = None
        else:
            dset = _store_with_infos(signal, tmp, infos, chunks, show_progressbar, kwds)
        # The old file (which the signal may be reading from) goes only now.
        if path.exists():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    if dset is not None:
        # Read from the file from now on: no reconstruction runs again.
        signal._lazy_reconstruction_info = None
        signal.data = da.from_zarr(_open_zarr(path, dset))


def _open_zarr(path, dataset_path):
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # NestedDirectoryStore, as rosettasciio uses
        store = zarr.storage.NestedDirectoryStore(str(path))
    if dataset_path is None:
        return zarr.open_group(store=store, mode="a")
    return zarr.open_array(store=store, path=dataset_path, mode="r")


def _store_with_infos(signal, path, infos, chunks, show_progressbar, kwds):
    """Write the signal and its lazy infos to ``path`` (.zspy) in one pass.

    Returns the path of the data array inside the file.
    """
    import dask
    import dask.array as da

    data = signal.data
    if chunks is None:
        chunks = tuple(c[0] for c in data.chunks)
    chunks = tuple(int(c) for c in chunks)
    # 1. axes, metadata, original metadata; no data yet
    signal.save(path, write_dataset=False, overwrite=True, show_progressbar=False, **kwds)
    # 2. the data array, where rosettasciio puts it
    root = _open_zarr(path, None)
    title = signal.metadata.get_item("General.title", "") or "__unnamed__"
    group = root["Experiments"][title.replace("/", "-")]
    compressor = kwds.get("compressor")
    if compressor is None:
        import numcodecs

        compressor = numcodecs.Blosc(cname="zstd", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE)
    dset = group.require_dataset("data", shape=data.shape, dtype=data.dtype, chunks=chunks,
                                 exact=True, compressor=compressor)
    if data.chunks != dset.chunks:
        data = data.rechunk(dset.chunks)
    # 3. one pass: every series reconstructed once, its chunk written when done
    store = da.store(data, dset, lock=False, compute=False)
    if _client_active():
        from distributed import default_client

        client = default_client()
        futures = client.compute([store, infos])
        if not _disable(show_progressbar):
            from distributed import progress

            progress(futures)
        _, infos = client.gather(futures)
    elif _disable(show_progressbar):
        _, infos = dask.compute(store, infos)
    else:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            _, infos = dask.compute(store, infos)
    # 4. the per-series information into the metadata; the file's metadata rewritten
    from hyperspy_lorentz.signals.focal_series import _is_plain

    if signal.metadata.get_item("Signal.Reconstruction") is None:
        signal.metadata.set_item("Signal.Reconstruction", {})
    node = signal.metadata.get_item("Signal.Reconstruction")
    for key, value in merge_infos(infos).items():
        if _is_plain(value):
            node.set_item(key, value)
    signal.save(path, write_dataset=False, overwrite=True, show_progressbar=False, **kwds)
    return dset.path


def _materialise_metadata(signal):
    """Load dask arrays held in (original) metadata, e.g. from a lazily read file.

    They are small; rosettasciio would otherwise store each one with its own
    dask computation (and progress bar).
    """
    import dask.array as da

    def walk(node):
        for key, value in list(node.as_dictionary().items()):
            item = node.get_item(key)
            if isinstance(item, da.Array):
                node.set_item(key, np.asarray(item.compute()))
            elif hasattr(item, "as_dictionary"):
                walk(item)

    walk(signal.metadata)
    walk(signal.original_metadata)
