"""Benchmark lazy focal-series stacks on a dask.distributed LocalCluster.

Usage::

    python benchmarks/bench_scale.py                       # everything, AD, 20 iterations
    python benchmarks/bench_scale.py --method tie
    python benchmarks/bench_scale.py --skip-memory --workers 1 2 4
    python benchmarks/bench_scale.py --memory-table --sizes 256 512 1024 2048

Three measurements, printed as tables:

* **throughput**: a stack of ``--n-series`` focal series of ``--n-images`` images
  of ``--size`` x ``--size`` pixels on disk (``.zspy``, one chunk per series) is
  loaded lazily, reconstructed and streamed to a ``.zspy`` result
  (:func:`hyperspy_lorentz.signals._series.save_lazy_result`) on a
  ``LocalCluster`` of 1, 2, ... worker processes with one thread each (so PyTorch
  runs one thread per worker). Series per second and the speed-up over one
  worker; also the CPU seconds of all processes, which tell a busy machine from
  a slow program. Each cluster is warmed up first (imports, one small fit per
  worker), so the times are those of the reconstructions and the I/O.
* **memory against the number of series**: the same run for 8, 16, 32, 64
  series (``--memory-series``) on a fresh cluster each time. Resident memory
  (RSS) of *every* process -- this one (client and scheduler) and all its
  children (nannies and workers) -- is sampled by a thread every
  ``--interval`` seconds with psutil; the table gives the peak of the sum, the
  peak of the largest worker, and the sum just before the run. With whole
  series per chunk and the result streamed to disk, these stay flat.
* **peak memory per image size** (``--memory-table``): one series in a fresh
  subprocess, the peak resident memory *added* by the reconstruction
  (``VmHWM`` minus ``VmRSS`` before it, after resetting the high-water mark),
  against :func:`hyperspy_lorentz.reconstruction.memory.estimate_memory`. AD
  runs at least 15 iterations here: L-BFGS keeps 10 pairs of history vectors,
  so the peak grows over the first 10 iterations.

The AD fits run a fixed number of iterations (``--iterations``, default 20;
the tolerance is set to 0 so that every fit runs them all) with no parameter
refined, on the CPU (``device="cpu"``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


# ------------------------------------------------------------------- sampling
class RSSSampler:
    """Sample the RSS of this process and all its descendants in a thread."""

    def __init__(self, interval=0.05):
        import psutil

        self.interval = interval
        self.root = psutil.Process()
        self.peak_total = 0
        self.peak_child = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self):
        import psutil

        procs = [self.root]
        try:
            procs += self.root.children(recursive=True)
        except psutil.Error:
            pass
        total, largest_child = 0, 0
        for p in procs:
            try:
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            if p.pid != self.root.pid:
                largest_child = max(largest_child, rss)
        return total, largest_child

    def _run(self):
        while not self._stop.is_set():
            total, child = self.sample()
            self.peak_total = max(self.peak_total, total)
            self.peak_child = max(self.peak_child, child)
            self._stop.wait(self.interval)

    def __enter__(self):
        self.before, _ = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        total, child = self.sample()
        self.peak_total = max(self.peak_total, total)
        self.peak_child = max(self.peak_child, child)
        return False


def cpu_seconds():
    """User + system CPU seconds of this process and its live descendants."""
    import psutil

    root = psutil.Process()
    total = 0.0
    for p in [root] + root.children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


# ----------------------------------------------------------------------- data
def base_images(size, n_images, pixel=4.0):
    """Noise-free images of a skyrmion lattice at +-0.3 mm (as the demo)."""
    from hyperspy_lorentz.physics import magnetisation, textures
    from hyperspy_lorentz.physics.forward import simulate_images

    tex = textures.skyrmion_lattice((size, size), period=48 * pixel, pixel_size=pixel)
    phase = magnetisation.magnetic_phase(tex.mx, tex.my, ms=3.8e5, thickness=40.0, pixel_size=pixel)
    defocus = np.linspace(-3e5, 3e5, n_images)
    images = np.asarray(simulate_images(phase, None, defocus, pixel_size=pixel, beam_energy=200.0), dtype=float)
    return images, defocus, pixel


def _noisy(block, images, dose, block_info=None):
    k = block_info[0]["chunk-location"][0]
    rng = np.random.default_rng(k)
    return rng.poisson(images * dose).astype(np.float32)[None]


def make_stack(path, n_series, size, n_images):
    """Write a lazy stack of ``n_series`` noisy series to ``path`` (.zspy), streamed."""
    import dask.array as da

    from hyperspy_lorentz.signals.focal_series import LazyLorentzFocalSeries

    images, defocus, pixel = base_images(size, n_images)
    seeds = da.zeros((n_series, n_images, size, size), chunks=(1, n_images, size, size), dtype=np.float32)
    data = seeds.map_blocks(_noisy, images, 500.0, dtype=np.float32)
    s = LazyLorentzFocalSeries(data)
    s.axes_manager.navigation_axes[1].name = "series"
    s.set_defocus(defocus, axis=0)
    s.set_microscope_parameters(beam_energy=200.0, pixel_size=pixel)
    s.metadata.General.title = "bench"
    s.save(path, overwrite=True, show_progressbar=False)


def reconstruct_kwargs(method, iterations):
    if method == "ad":
        return dict(method="ad", max_iterations=iterations, tolerance=0.0, device="cpu")
    return dict(method="tie")


def _warm(method, iterations):
    """Import and run one small fit in this (worker) process."""
    import torch  # noqa: F401

    from hyperspy_lorentz.simulation import simulate_focal_series

    y, x = np.mgrid[-16:16, -16:16]
    s = simulate_focal_series(np.exp(-(x**2 + y**2) / 50.0), defocus=(-500, 0, 500), scale=5.0)
    s.reconstruct_phase(show_progressbar=False, **reconstruct_kwargs(method, 2))
    return os.getpid()


def run_once(stack, out, method, iterations, n_workers, interval):
    """Reconstruct a stack on a fresh LocalCluster; return timings and memory."""
    import hyperspy.api as hs
    from distributed import Client, LocalCluster

    from hyperspy_lorentz.signals._series import save_lazy_result

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit=0) as cluster, Client(cluster) as client:
        client.run(_warm, method, iterations)
        time.sleep(0.5)
        s = hs.load(stack, lazy=True)
        n_series = s.data.shape[0]
        cpu0 = cpu_seconds()
        with RSSSampler(interval) as rss:
            t0 = time.perf_counter()
            phase = s.reconstruct_phase(**reconstruct_kwargs(method, iterations))
            save_lazy_result(phase, out, overwrite=True, show_progressbar=False)
            wall = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
    return dict(n_series=n_series, workers=n_workers, wall=wall, cpu=cpu, before=rss.before,
                peak_total=rss.peak_total, peak_worker=rss.peak_child)


# --------------------------------------------------------------- memory table
_CHILD = r"""
import json, sys, numpy as np
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
size, n, method, refine, iterations = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
refine = tuple(r for r in refine.split(",") if r)
from hyperspy_lorentz.physics.optics import wavelength
from hyperspy_lorentz.reconstruction.memory import estimate_memory
rng = np.random.default_rng(0)
images = rng.poisson(500, (n, size, size)).astype(np.float32)
defocus = np.linspace(-3e5, 3e5, n)
if method == "tie":
    from hyperspy_lorentz.reconstruction.tie import tie_phase
    run = lambda im: tie_phase(im, defocus, 4.0, wavelength(200.0))
else:
    import torch
    torch.set_num_threads(1)
    from hyperspy_lorentz.reconstruction.ad import reconstruct_ad
    run = lambda im: reconstruct_ad(im, defocus, pixel_size=4.0, beam_energy=200.0, refine=refine,
                                    max_iterations=iterations, tolerance=0.0, device="cpu")
run(images[:, :32, :32])  # imports, first-call allocations
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
run(images)
peak = status("VmHWM")
print(json.dumps({"added": peak - base, "estimate": estimate_memory((size, size), n, method, refine=refine)}))
"""


def memory_table(sizes, n_images, iterations):
    rows = []
    for method, refine in (("tie", ""), ("ad", ""), ("ad", "defocus,shifts")):
        for size in sizes:
            proc = subprocess.run([sys.executable, "-c", _CHILD, str(size), str(n_images), method, refine,
                                   str(iterations)], capture_output=True, text=True)
            if proc.returncode:
                print(proc.stderr[-2000:], file=sys.stderr)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append((method + (f" (refine {refine})" if refine else ""), size, r["added"], r["estimate"]))
            print(f"  measured {rows[-1][0]} {size}: {r['added'] / 2**20:.0f} MiB", file=sys.stderr)
    return rows


# ----------------------------------------------------------------------- main
def _mib(x):
    return f"{x / 2**20:,.0f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=("ad", "tie"), default="ad")
    parser.add_argument("--iterations", type=int, default=20, help="AD iterations per series (fixed)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n-images", type=int, default=5)
    parser.add_argument("--n-series", type=int, default=32, help="series of the throughput run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--memory-series", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--memory-workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.05, help="RSS sampling interval, s")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-table", action="store_true", help="also peak memory per image size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--workdir", help="folder for the data (default: a temporary folder)")
    args = parser.parse_args(argv)

    import psutil

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    what = (f"AD, {args.iterations} iterations, no refinement" if args.method == "ad" else "TIE")
    print(f"# bench_scale: {what}; series of {args.n_images} x {args.size} x {args.size} float32; "
          f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"load average at start {os.getloadavg()[0]:.1f}")
    try:
        if not args.skip_throughput:
            stack = work / f"stack_{args.n_series}.zspy"
            if not stack.exists():
                make_stack(stack, args.n_series, args.size, args.n_images)
            rows = []
            for w in args.workers:
                rows.append(run_once(stack, work / "out.zspy", args.method, args.iterations, w, args.interval))
                print(f"  {w} worker(s): {rows[-1]['wall']:.1f} s", file=sys.stderr)
            t1 = rows[0]["wall"] * rows[0]["workers"] if rows[0]["workers"] == 1 else None
            print(f"\n## Throughput: {args.n_series} series, LocalCluster, 1 thread per worker process\n")
            print(f"{'workers':>8} {'wall s':>9} {'series/s':>9} {'speed-up':>9} {'CPU s':>8} "
                  f"{'s/series/worker':>16} {'peak RSS MiB':>13}")
            for r in rows:
                speed = f"{t1 / r['wall']:.2f}" if t1 else "-"
                print(f"{r['workers']:>8} {r['wall']:>9.1f} {r['n_series'] / r['wall']:>9.3f} {speed:>9} "
                      f"{r['cpu']:>8.1f} {r['wall'] * r['workers'] / r['n_series']:>16.2f} "
                      f"{_mib(r['peak_total']):>13}")
        if not args.skip_memory:
            rows = []
            for n in args.memory_series:
                stack = work / f"stack_{n}.zspy"
                if not stack.exists():
                    make_stack(stack, n, args.size, args.n_images)
                rows.append(run_once(stack, work / "out.zspy", args.method, args.iterations,
                                     args.memory_workers, args.interval))
                print(f"  {n} series: {rows[-1]['wall']:.1f} s", file=sys.stderr)
            print(f"\n## Resident memory against the number of series ({args.memory_workers} worker "
                  "processes; all processes summed: client + scheduler, nannies, workers)\n")
            print(f"{'series':>7} {'input MiB':>10} {'before MiB':>11} {'peak MiB':>9} {'growth MiB':>11} "
                  f"{'largest worker MiB':>19} {'wall s':>8}")
            for r in rows:
                nbytes = r["n_series"] * args.n_images * args.size**2 * 4
                print(f"{r['n_series']:>7} {_mib(nbytes):>10} {_mib(r['before']):>11} {_mib(r['peak_total']):>9} "
                      f"{_mib(r['peak_total'] - r['before']):>11} {_mib(r['peak_worker']):>19} {r['wall']:>8.1f}")
        if args.memory_table:
            rows = memory_table(args.sizes, args.n_images, max(args.iterations, 15))
            print(f"\n## Peak memory added by one series of {args.n_images} images (fresh process, CPU)\n")
            print(f"{'method':<28} {'size':>6} {'measured MiB':>13} {'estimate MiB':>13} {'B/pixel':>8}")
            for method, size, added, est in rows:
                print(f"{method:<28} {size:>6} {_mib(added):>13} {_mib(est):>13} {added / size**2:>8.0f}")
        print(f"\n# load average at end {os.getloadavg()[0]:.1f}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
