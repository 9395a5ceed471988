"""Lazy focal-series stacks (dask), a dask.distributed cluster, and memory bounds.

The cluster tests share one ``LocalCluster`` of two worker processes (one
thread each); they need ``distributed`` and are skipped only where it is not
installed.
"""

import os
import signal as _signal
import time
import warnings

import dask
import dask.array as da
import hyperspy.api as hs
import numpy as np
import pytest

from hyperspy_lorentz.physics.optics import wavelength
from hyperspy_lorentz.reconstruction import memory
from hyperspy_lorentz.reconstruction.tie import tie_phase
from hyperspy_lorentz.signals import _series
from hyperspy_lorentz.signals.electron_phase import ElectronPhase, LazyElectronPhase
from hyperspy_lorentz.simulation import simulate_focal_series

DEFOCUS = (-800.0, 0.0, 800.0)
SIZE = 48
N_SERIES = 4


def _phase(k):
    y, x = np.mgrid[-SIZE // 2:SIZE // 2, -SIZE // 2:SIZE // 2]
    return (1.0 + 0.5 * k) * np.exp(-((x - k) ** 2 + y**2) / 120.0)


@pytest.fixture(scope="module")
def stack():
    """Four focal series along a ``field`` axis: navigation (field, defocus)."""
    series = [simulate_focal_series(_phase(k), defocus=DEFOCUS, scale=5.0, dose=2000, seed=k)
              for k in range(N_SERIES)]
    s = hs.stack(series, new_axis_name="field", show_progressbar=False)
    s.axes_manager["field"].units = "mT"
    return s


@pytest.fixture(scope="module")
def stack_file(stack, tmp_path_factory):
    """The stack on disk as .zspy, one chunk per focal series."""
    path = tmp_path_factory.mktemp("lazy") / "stack.zspy"
    stack.save(path, chunks=(1, len(DEFOCUS), SIZE, SIZE), show_progressbar=False)
    return path


@pytest.fixture(scope="module")
def eager_tie(stack):
    return stack.reconstruct_phase(method="tie", show_progressbar=False)


AD_KWARGS = dict(method="ad", max_iterations=4, tolerance=0.0, device="cpu")


@pytest.fixture(scope="module")
def eager_ad(stack):
    return stack.reconstruct_phase(show_progressbar=False, **AD_KWARGS)


def _load_lazy(path):
    s = hs.load(path, lazy=True)
    assert s._lazy and type(s).__name__ == "LazyLorentzFocalSeries"
    return s


# ------------------------------------------------------------------ lazy
def test_lazy_stack_gives_lazy_phase_chunked_by_series(stack_file, eager_tie):
    s = _load_lazy(stack_file)
    phase = s.reconstruct_phase(method="tie")
    assert isinstance(phase, LazyElectronPhase)
    assert phase.data.shape == (N_SERIES, SIZE, SIZE)
    # one chunk (and one task) per chunk of whole series of the input
    assert phase.data.chunks == ((1,) * N_SERIES, (SIZE,), (SIZE,))
    assert phase.axes_manager.navigation_axes[0].name == "field"
    phase.compute()
    assert isinstance(phase, ElectronPhase) and not phase._lazy
    np.testing.assert_allclose(phase.data, eager_tie.data, atol=1e-12)
    rec = phase.metadata.Signal.Reconstruction
    assert rec.method == "tie"
    np.testing.assert_allclose(rec.qc, eager_tie.metadata.Signal.Reconstruction.qc)


def test_each_task_gets_whole_series_one_at_a_time(stack_file):
    s = _load_lazy(stack_file)
    seen = []

    def kernel(images):
        seen.append(images.shape)
        return images.mean(axis=0), {"n": images.shape[0]}

    results, infos = _series.apply_kernel(s, kernel, result_shape=(SIZE, SIZE))
    assert isinstance(results, da.Array)
    assert results.numblocks == (N_SERIES, 1, 1)
    with dask.config.set(scheduler="synchronous"):
        res, inf = dask.compute(results, infos)
    # computed together: each series reconstructed exactly once
    assert seen == [(len(DEFOCUS), SIZE, SIZE)] * N_SERIES
    assert [d["n"] for d in inf] == [len(DEFOCUS)] * N_SERIES
    assert res.shape == (N_SERIES, SIZE, SIZE)


def test_complex_results_keep_their_dtype(stack_file):
    s = _load_lazy(stack_file)

    def kernel(images):
        return images[0] * (1 + 1j), {}

    results, _ = _series.apply_kernel(s, kernel, result_shape=(SIZE, SIZE), result_dtype=complex)
    out = results.compute(scheduler="synchronous")
    assert out.dtype == complex and np.all(out.imag == out.real)


def test_chunks_that_split_series_are_rechunked_with_a_warning(stack, tmp_path, eager_tie):
    path = tmp_path / "split.zspy"
    stack.save(path, chunks=(2, 1, SIZE // 2, SIZE), show_progressbar=False)
    s = _load_lazy(path)
    with pytest.warns(UserWarning, match="split focal series"):
        phase = s.reconstruct_phase(method="tie")
    assert phase.data.chunks[1:] == ((SIZE,), (SIZE,))
    phase.compute()
    np.testing.assert_allclose(phase.data, eager_tie.data, atol=1e-12)


def test_whole_series_chunks_need_no_warning(stack_file):
    s = _load_lazy(stack_file)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        s.reconstruct_phase(method="tie")


def test_eager_result_from_lazy_input_reads_series_by_series(stack_file, eager_tie):
    s = _load_lazy(stack_file)
    phase = s.reconstruct_phase(method="tie", lazy_output=False, show_progressbar=False)
    assert not phase._lazy
    np.testing.assert_allclose(phase.data, eager_tie.data, atol=1e-12)


def test_save_lazy_result_streams_and_records_the_information(stack_file, tmp_path, eager_tie):
    phase = _load_lazy(stack_file).reconstruct_phase(method="tie")
    out = tmp_path / "phase.zspy"
    _series.save_lazy_result(phase, out, show_progressbar=False)
    # the signal now reads from the file: no reconstruction runs again
    assert phase._lazy and phase._lazy_reconstruction_info is None
    assert "reconstruct-series" not in str(dict(phase.data.dask))
    back = hs.load(out)
    assert isinstance(back, ElectronPhase)
    np.testing.assert_allclose(back.data, eager_tie.data, atol=1e-12)
    rec = back.metadata.Signal.Reconstruction
    assert rec.method == "tie"
    np.testing.assert_allclose(rec.qc, eager_tie.metadata.Signal.Reconstruction.qc)
    assert back.axes_manager.navigation_axes[0].name == "field"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        _series.save_lazy_result(phase, out)
    _series.save_lazy_result(phase, out, overwrite=True, chunks=(2, SIZE, SIZE), show_progressbar=False)
    assert hs.load(out, lazy=True).data.chunks[0] == (2, 2)


def test_plain_save_of_lazy_result_writes_the_phase(stack_file, tmp_path, eager_tie):
    """``phase.save`` streams the phase; the per-series information is not kept
    (documented; save_lazy_result keeps it)."""
    phase = _load_lazy(stack_file).reconstruct_phase(method="tie")
    out = tmp_path / "plain.zspy"
    phase.save(out, chunks=(1, SIZE, SIZE), show_progressbar=False)
    back = hs.load(out)
    np.testing.assert_allclose(back.data, eager_tie.data, atol=1e-12)
    assert back.metadata.Signal.Reconstruction.method == "tie"


def test_lazy_ad_equals_eager(stack_file, eager_ad):
    phase = _load_lazy(stack_file).reconstruct_phase(**AD_KWARGS)
    assert isinstance(phase, LazyElectronPhase)
    phase.compute()
    np.testing.assert_allclose(phase.data, eager_ad.data, atol=1e-5)
    rec = phase.metadata.Signal.Reconstruction
    assert rec.method == "ad"
    np.testing.assert_array_equal(rec.iterations, eager_ad.metadata.Signal.Reconstruction.iterations)
    assert np.asarray(rec.loss_history).shape[0] == N_SERIES


# ---------------------------------------------------------------- memory
def test_estimate_memory_scales_with_size_images_and_options():
    tie = memory.estimate_memory((1024, 1024), 3, "tie")
    # measured ~ (540 + 8 N) bytes per pixel, plus the 20 % margin
    assert 500 * 2**20 < tie < 900 * 2**20
    assert memory.estimate_memory((2048, 2048), 3, "tie") == pytest.approx(4 * tie, rel=0.01)
    assert memory.estimate_memory((1024, 1024), 9, "tie") > tie
    assert memory.estimate_memory((1024, 1024), 3, "tie", padding=False) < tie / 2
    ad = memory.estimate_memory((512, 512), 3, "ad")
    assert memory.estimate_memory((512, 512), 3, "ad", dtype="float64") > 1.5 * ad
    periodic = memory.estimate_memory((512, 512), 3, "ad", padding="periodic")
    assert memory.estimate_memory((512, 512), 3, "ad", padding="reflect") > 1.5 * periodic
    assert ad > 1.5 * periodic  # the default free border: a canvas, a quarter larger each side
    assert memory.estimate_memory((512, 512), 3, "ad", refine=("defocus",)) >= ad
    with pytest.raises(ValueError, match="Unknown method"):
        memory.estimate_memory((64, 64), 3, "holography")
    with pytest.raises(ValueError, match="shape"):
        memory.estimate_memory((64,), 3, "tie")


def test_check_memory_says_what_to_do():
    assert memory.check_memory((256, 256), 3, "tie", available=2**40) > 0
    with pytest.raises(ValueError) as info:
        memory.check_memory((4096, 4096), 5, "ad", available=2**30)
    text = str(info.value)
    assert "GiB" in text and "crop" in text and "rebin" in text and "GPU" in text
    with pytest.raises(ValueError) as info:
        memory.check_memory((4096, 4096), 5, "tie", available=2**30)
    assert "GPU" not in str(info.value)


def test_reconstruction_checks_memory_before_running(stack, stack_file, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: (2**16, "available RAM"))
    calls = []
    import hyperspy_lorentz.reconstruction.tie as tie_module

    monkeypatch.setattr(tie_module, "tie_phase", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match="rebin"):
        stack.reconstruct_phase(method="tie", show_progressbar=False)
    with pytest.raises(ValueError, match="rebin"):  # lazy, local scheduler: at build time
        _load_lazy(stack_file).reconstruct_phase(method="tie")
    assert not calls


def test_memory_check_runs_in_each_task(stack_file, monkeypatch):
    phase = _load_lazy(stack_file).reconstruct_phase(method="tie")  # fits now
    monkeypatch.setattr(memory, "available_memory", lambda: (2**16, "available RAM"))
    with pytest.raises(ValueError, match="crop"):
        phase.data.compute(scheduler="synchronous")


# --------------------------------------------------------------- threads
class _FakeState:
    def __init__(self, nthreads, executing=1, resources=None):
        self.nthreads = nthreads
        self.executing = set(range(executing))
        self.total_resources = resources or {}


class _FakeWorker:
    def __init__(self, *args, **kwargs):
        self.state = _FakeState(*args, **kwargs)


def test_torch_threads_share_the_worker_threads():
    assert _series.torch_threads_for_worker() is None  # not on a worker
    assert _series.torch_threads_for_worker(_FakeWorker(1)) == 1
    assert _series.torch_threads_for_worker(_FakeWorker(8, executing=1)) == 8
    assert _series.torch_threads_for_worker(_FakeWorker(8, executing=4)) == 2
    assert _series.torch_threads_for_worker(_FakeWorker(2, executing=4)) == 1
    assert _series.torch_threads_for_worker(_FakeWorker(1, resources={"torch_threads": 6})) == 6


def test_worker_threads_sets_and_restores(monkeypatch):
    import torch

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    monkeypatch.setattr(_series, "torch_threads_for_worker", lambda worker=None: target)
    with _series.worker_threads() as n:
        assert n == target and torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    monkeypatch.setattr(_series, "torch_threads_for_worker", lambda worker=None: None)
    with _series.worker_threads() as n:
        assert n is None and torch.get_num_threads() == before


# ----------------------------------------------------------- distributed
@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        memory_limit="4GiB",
    )
    c = distributed.Client(cluster)
    # import the package on the workers once (the first task would otherwise pay)
    c.run(lambda: __import__("hyperspy_lorentz.signals._series"))
    c.run(lambda: __import__("hyperspy_lorentz.reconstruction.tie"))
    yield c
    c.close()
    cluster.close()


def test_distributed_compute_equals_eager(client, stack_file, eager_tie):
    phase = _load_lazy(stack_file).reconstruct_phase(method="tie")
    phase.compute()  # on the cluster: the Client is the default scheduler
    np.testing.assert_allclose(phase.data, eager_tie.data, atol=1e-12)
    np.testing.assert_allclose(phase.metadata.Signal.Reconstruction.qc,
                               eager_tie.metadata.Signal.Reconstruction.qc)


def test_distributed_save_lazy_result(client, stack_file, tmp_path, eager_tie):
    phase = _load_lazy(stack_file).reconstruct_phase(method="tie")
    out = tmp_path / "phase.zspy"
    _series.save_lazy_result(phase, out, show_progressbar=False)  # the workers write the chunks
    back = hs.load(out)
    np.testing.assert_allclose(back.data, eager_tie.data, atol=1e-12)
    np.testing.assert_allclose(back.metadata.Signal.Reconstruction.qc,
                               eager_tie.metadata.Signal.Reconstruction.qc)


def test_distributed_ad_equals_eager(client, stack_file, eager_ad, tmp_path):
    phase = _load_lazy(stack_file).reconstruct_phase(**AD_KWARGS)
    out = tmp_path / "ad.zspy"
    _series.save_lazy_result(phase, out, show_progressbar=False)
    back = hs.load(out)
    np.testing.assert_allclose(back.data, eager_ad.data, atol=1e-5)
    rec = back.metadata.Signal.Reconstruction
    np.testing.assert_array_equal(rec.iterations, eager_ad.metadata.Signal.Reconstruction.iterations)
    assert list(np.atleast_1d(rec.device)) in (["cpu"], ["cpu"] * N_SERIES)


def _slow_tie_kernel(defocus, pixel, lam, delay):
    def kernel(images):
        import torch

        time.sleep(delay)
        phase, info = tie_phase(images, defocus, pixel, lam)
        info = dict(info, pid=os.getpid(), torch_threads=torch.get_num_threads())
        return phase, info

    return kernel


def test_killed_worker_is_recovered(client, stack_file, stack, eager_tie):
    """A worker killed mid-run: dask recomputes its series; nothing is lost."""
    s = _load_lazy(stack_file)
    kernel = _slow_tie_kernel(np.asarray(DEFOCUS), 5.0, wavelength(200.0), delay=1.0)
    results, infos = _series.apply_kernel(s, kernel, result_shape=(SIZE, SIZE))
    futures = client.compute([results, infos])
    deadline = time.time() + 60
    busy = {}
    while time.time() < deadline:
        busy = {w: keys for w, keys in client.processing().items() if keys}
        if busy:
            break
        time.sleep(0.02)
    assert busy, "no task started"
    victim = sorted(busy)[0]
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, _signal.SIGKILL)
    assert not futures[0].done()
    res, inf = client.gather(futures)
    np.testing.assert_allclose(res, eager_tie.data, atol=1e-12)
    pids = {d["pid"] for d in inf}
    assert pid not in pids  # the killed worker's series were recomputed elsewhere
    # one thread per worker: torch was given one thread, and it was restored
    assert {d["torch_threads"] for d in inf} == {1}
    threads = client.run(lambda: __import__("torch").get_num_threads())
    assert set(threads.values()) == {1}
