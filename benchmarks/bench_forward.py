"""Benchmark the LTEM forward model against the FFT floor.

Usage::

    python benchmarks/bench_forward.py --size 1024 --n 5
    python benchmarks/bench_forward.py --size 1024 2048 --n 5 --threads 2

For each image size and each gradient mode the script reports

* ``fft floor``: the time of the ``2N + 2`` complex 2-D FFTs that one
  forward + backward pass cannot avoid (``N + 1`` forward and ``N + 1`` inverse
  ``torch.fft`` calls on ``N + 1`` distinct ``H x W`` images, complex64 for
  float32, both unnormalised, as the model uses them), measured
  in the same process with the same thread count, interleaved with the model
  timings; the faster of per-image calls and one batched call is used;
* ``fwd+bwd``: the time of ``images = model(...)`` followed by
  ``images.backward(G)`` with a fixed random ``G`` (no loss function, so only
  the model is timed), the transfer function already cached;
* the ratio of the two (best of ``--repeat`` runs each), for wall-clock time
  and for process CPU time (``time.process_time``, all threads), and ``med
  rat``, the median over the repetitions of the CPU-time ratio of each model run
  to the floor measured just before it; on a machine shared with other jobs the
  CPU-time ratios are the more robust ones;
* ``peak MiB``: peak resident memory *added* by one forward + backward pass,
  i.e. ``VmHWM`` during the pass minus ``VmRSS`` just before it, read from
  ``/proc/self/status`` after resetting the high-water mark through
  ``/proc/self/clear_refs``. PyTorch's CPU allocator returns large blocks to the
  OS, so this counts every tensor alive at the peak: saved waves, outputs,
  gradients, work buffers and FFT scratch, but not the inputs, the model's cached
  grids, work buffers or the cached transfer functions, which exist before the
  pass and are reported separately as ``model MiB`` (resident memory added by
  constructing the model and making its first call, after a warm-up call on a
  throw-away model has loaded the libraries and FFT plans). ``1st MiB`` is the
  peak added by that first call, which also builds the cache. The memory runs
  set ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc returns freed blocks to the
  OS and the resident set follows the live tensors. Each measurement runs in a
  fresh subprocess. ``proc MiB`` is the high-water mark of the whole process
  during that steady-state pass (Python, torch libraries, inputs, ``G``, model
  and pass together).

Modes: ``phase`` (gradient w.r.t. phase only), ``phase+amp``, ``shifts``
(phase, amplitude, per-image shifts and scales: cached transfer function times
separable shift ramps) and ``all`` (phase, amplitude, defocus, theta_c,
astigmatism, angle, shifts and scale all learnt; the transfer function is then
rebuilt on every call).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time

MODES = ("phase", "phase+amp", "shifts", "all")


def _status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # MiB
    return float("nan")


def _reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _setup(size, n, mode, dtype_name, padding):
    import torch

    from hyperspy_lorentz.physics.forward import ForwardModel

    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    phase = (0.5 * torch.randn(size, size, generator=g)).to(dtype).requires_grad_()
    amp = (1.0 + 0.1 * torch.rand(size, size, generator=g)).to(dtype)
    df = torch.linspace(-2e5, 2e5, n, dtype=dtype)
    kw = {}
    if mode != "phase":
        amp.requires_grad_()
    if mode == "shifts":
        kw = dict(shifts=torch.zeros(n, 2, dtype=dtype, requires_grad=True),
                  scale=torch.ones(n, dtype=dtype, requires_grad=True))
    if mode == "all":
        df.requires_grad_()
        kw = dict(theta_c=torch.tensor(0.01, dtype=dtype, requires_grad=True),
                  astigmatism=torch.zeros(n, dtype=dtype, requires_grad=True),
                  astigmatism_angle=torch.zeros(n, dtype=dtype, requires_grad=True),
                  shifts=torch.zeros(n, 2, dtype=dtype, requires_grad=True),
                  scale=torch.ones(n, dtype=dtype, requires_grad=True))
    G = torch.randn(n, size, size, generator=g).to(dtype)
    leaves = [phase, amp, df, *kw.values()]

    def make_model():
        return ForwardModel((size, size), 2.0, 200.0, cs=1.0, theta_c=0.01,
                            defocus_spread=500.0, padding=padding, dtype=dtype)

    def clear():
        for t in leaves:
            t.grad = None

    def step(model):
        clear()
        out = model(phase, amp, df, **kw)
        out.backward(G)

    return make_model, step, clear


def _child(args):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    size, n = args.size[0], args.n
    make_model, step, clear = _setup(size, n, args.mode[0], args.dtype, args.padding)
    res = {"threads": torch.get_num_threads()}
    if args.what == "memory":
        # warm-up on a throw-away model: loads MKL/OpenMP code and FFT plans
        warm = make_model()
        step(warm)
        clear()
        del warm
        base0 = _status("VmRSS")
        model = make_model()
        base1 = _status("VmRSS")
        res["hwm_reset"] = _reset_hwm()
        step(model)  # first call: also builds the cached transfer function
        res["first_mib"] = _status("VmHWM") - base1
        clear()
        # grids + cached transfer functions + work buffers left behind
        res["model_mib"] = _status("VmRSS") - base0
        base = _status("VmRSS")
        _reset_hwm()
        step(model)
        res["peak_mib"] = _status("VmHWM") - base
        res["proc_mib"] = _status("VmHWM")  # whole process, libraries and inputs included
    else:
        model = make_model()
        step = functools.partial(step, model)
        cdtype = torch.complex64 if args.dtype == "float32" else torch.complex128
        hp, wp = model.padded_shape
        xb = torch.randn(n + 1, hp, wp, dtype=cdtype)

        # unnormalised transforms (the model folds 1/(H W) into its transfer function)
        # distinct inputs, as in the model (one array re-used would stay in cache)
        def floor_single():
            for k in range(n + 1):
                torch.fft.fft2(xb[k])
            for k in range(n + 1):
                torch.fft.ifft2(xb[k], norm="forward")

        def floor_batched():
            torch.fft.fft2(xb)
            torch.fft.ifft2(xb, norm="forward")

        step()
        floor_single()
        floor_batched()
        def timed(fn):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            return time.perf_counter() - t0, time.process_time() - c0

        tf, tb, tm = [], [], []
        for _ in range(args.repeat):
            tf.append(timed(floor_single))
            tb.append(timed(floor_batched))
            tm.append(timed(step))
        res["floor_single"] = tf
        res["floor_batched"] = tb
        res["model"] = tm
    json.dump(res, sys.stdout)


def _run_child(argv, memory=False):
    env = dict(os.environ)
    if memory:
        # make glibc return every freed block of >= 64 KiB to the OS at once, so
        # that the resident set tracks the live tensors (timing runs keep the
        # default allocator behaviour)
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    out = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True,
                         text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, nargs="+", default=[1024, 2048],
                   help="image side(s), pixels (default 1024 2048)")
    p.add_argument("--n", type=int, default=5, help="number of defocus images (default 5)")
    p.add_argument("--repeat", type=int, default=7, help="timed repetitions (default 7)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads in the benchmark process (default: torch's default)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--padding", choices=("reflect", "edge"), default=None)
    p.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--what", choices=("time", "memory"), default="time", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return

    common = ["--n", str(args.n), "--repeat", str(args.repeat), "--threads", str(args.threads),
              "--dtype", args.dtype] + (["--padding", args.padding] if args.padding else [])
    print(f"# N = {args.n} images, {args.dtype}, padding = {args.padding}, "
          f"repeat = {args.repeat}, cpu count = {os.cpu_count()}")
    hdr = (f"{'size':>11} {'mode':>9} {'thr':>3} {'floor ms':>9} {'fwd+bwd ms':>10} "
           f"{'ratio':>6} {'floor cpu':>8} {'f+b cpu':>8} {'cpu rat':>7} {'med rat':>7} "
           f"{'peak MiB':>8} {'1st MiB':>8} {'model MiB':>9} {'proc MiB':>8}")
    print(hdr)
    print("-" * len(hdr))
    for size in args.size:
        for mode in args.mode:
            sub = common + ["--size", str(size), "--mode", mode]
            t = _run_child(sub + ["--what", "time"])
            m = _run_child(sub + ["--what", "memory"], memory=True)
            fs, fb, mo = t["floor_single"], t["floor_batched"], t["model"]
            fwall = min(min(x[0] for x in fs), min(x[0] for x in fb))
            fcpu = min(min(x[1] for x in fs), min(x[1] for x in fb))
            mwall, mcpu = min(x[0] for x in mo), min(x[1] for x in mo)
            # ratio of each model run to the floor measured just before it, median
            paired = sorted(m_[1] / min(a[1], b[1]) for m_, a, b in zip(mo, fs, fb))
            pmed = paired[len(paired) // 2]
            print(f"{args.n:>2}x{size:>4}^2 {mode:>9} {t['threads']:>3} {1e3 * fwall:9.1f} "
                  f"{1e3 * mwall:10.1f} {mwall / fwall:6.2f} {1e3 * fcpu:8.1f} "
                  f"{1e3 * mcpu:8.1f} {mcpu / fcpu:7.2f} {pmed:7.2f} "
                  f"{m['peak_mib']:8.0f} {m['first_mib']:8.0f} {m['model_mib']:9.0f} "
                  f"{m['proc_mib']:8.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
