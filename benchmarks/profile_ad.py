"""Profile of one AD iteration: forward + backward of the objective of ``reconstruct_ad``.

The objective is built exactly as :func:`~hyperspy_lorentz.reconstruction.ad.reconstruct_ad`
builds it (same input checks, noise estimate, free canvas, flat start, in-focus
amplitude, Fourier preconditioners, calibrated whitening; ``refine`` the default,
the amplitude), from a simulated 3-image series of the AD-LTEM paper's object
(or a synthetic one where ``../shared`` is absent). One *iteration* here is one
evaluation of the loss and its gradient (what an accepted L-BFGS step without
backtracking costs). ``torch.profiler`` (CPU) records it; the script prints the
top operators by self CPU time, the share of self CPU time in FFTs, in
elementwise kernels and in the rest, and the ratio of the pass time to the FFT
floor measured in the same run: the FFTs the pass cannot avoid (``N + 1``
forward and ``N + 1`` inverse complex FFTs on the model's padded grid, and an
``rfft2``/``irfft2`` pair in the forward and again in the backward pass of each
whitened field, phase and log-amplitude, on the canvas).

Usage::

    python benchmarks/profile_ad.py                    # 512 x 512 x 3, torch's threads
    python benchmarks/profile_ad.py --size 256 --n 3 --threads 2 --top 20

Measured on the shared 2-core development machine while other jobs ran on it
(load average 5.6), so the absolute times are noisy; one torch thread (with two,
OpenMP threads waiting on each other under that load made the times several
times slower and meaningless); ``python benchmarks/profile_ad.py --threads 1``::

    torch 2.13.0+cpu, 1 threads; paper object; 3 x 512 x 512, canvas 588 x 588,
    model grid 588 x 588, refine=('amplitude',)

    top 15 operators by self CPU time (per iteration; profiler total 33.5 ms):
    operator                            self ms  calls  share  kind
    aten::_fft_c2c                        12.96     10  38.7%  fft
    aten::mul                              5.58     28  16.7%  elementwise
    aten::_fft_r2c                         3.45      4  10.3%  fft
    aten::_fft_c2r                         1.82      2   5.4%  fft
    aten::addcmul_                         1.58     11   4.7%  elementwise
    aten::sub                              0.95      6   2.8%  elementwise
    aten::cos                              0.88      2   2.6%  elementwise
    aten::sin                              0.77      2   2.3%  elementwise
    aten::add                              0.63      4   1.9%  elementwise
    aten::copy_                            0.61     36   1.8%  elementwise
    aten::fill_                            0.46     21   1.4%  elementwise
    aten::sqrt_                            0.44      2   1.3%  elementwise
    aten::mul_                             0.43     15   1.3%  elementwise
    aten::complex                          0.41      4   1.2%  elementwise
    aten::add_                             0.36      8   1.1%  elementwise

    self CPU time: FFT 55%, elementwise 42%, other 3%
    iteration (loss + gradient, unprofiled, median of 5): 31.5 ms; FFT floor 17.1 ms;
    ratio 1.85

(a second run: FFT 56 %, elementwise 41 %, 29.6 ms against 16.9 ms, ratio 1.75).
Reading: the FFTs are over half of the pass and the pass is within 2x of its
FFT floor; the rest is elementwise work on the 588 x 588 grid (complex
multiplies by the transfer function, the sin/cos of the exit wave, the fused
data term), not Python or dispatch overhead ("other" 3 %). The ``c2c`` count
(10) is above the ``2N + 2 = 8`` of the model because ``rfft2``/``irfft2`` of
the preconditioned fields run one ``c2c`` pass along the first axis besides
their ``r2c``/``c2r``; the floor includes those transforms.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MM = 1e6  # nm per mm


# ------------------------------------------------------------------ inputs
def test_series(size, n, noise=0.10, seed=0):
    """``(images, defocus_nm, pixel_nm, optics)``: a simulated focal series of ``n`` images.

    The paper's object (cropped to ``size`` if smaller than 512, tiled if larger)
    where ``../shared`` has it, else a synthetic vortex; defocus spread over
    +-1.6 mm, noise ``I ~ Normal(I, s I)``.
    """
    from _paper_object import BEAM_ENERGY, CS, DEFOCUS_SPREAD, PIXEL_SIZE, THETA_C

    from hyperspy_lorentz.physics.forward import simulate_images

    try:
        from _paper_object import load_paper_object

        phase, amp = load_paper_object()
        reps = -(-size // phase.shape[0])
        phase, amp = np.tile(phase, (reps, reps))[:size, :size], np.tile(amp, (reps, reps))[
            :size, :size]
        source = "paper object"
    except FileNotFoundError:
        y, x = np.mgrid[:size, :size] - size / 2
        r = np.hypot(y, x)
        phase = 2.0 * np.exp(-(r / (0.25 * size)) ** 2) * np.cos(np.arctan2(y, x))
        amp = 1.0 - 0.05 * (r < 0.3 * size)
        source = "synthetic vortex"
    df = np.linspace(-1.6, 1.6, n) * MM
    optics = dict(pixel_size=PIXEL_SIZE, beam_energy=BEAM_ENERGY, cs=CS, theta_c=THETA_C,
                  defocus_spread=DEFOCUS_SPREAD)
    images = simulate_images(phase, amp, df, PIXEL_SIZE, beam_energy=BEAM_ENERGY, cs=CS,
                             theta_c=THETA_C, defocus_spread=DEFOCUS_SPREAD)
    images = np.random.default_rng(seed).normal(images, noise * images)
    return images, df, optics, source


def ad_objective(images, defocus, *, device="cpu", dtype="float32", refine=(),
                 padding="free", **optics):
    """``(problem, x0)``: the objective of the first stage of ``reconstruct_ad`` (flat start).

    Built with the solver's own steps (``reconstruct_ad`` without the race,
    coarse pass and bootstrap): ``problem.loss(x)`` is the function its
    optimiser differentiates, ``x0`` its whitened start (zeros).
    """
    import torch

    from hyperspy_lorentz.reconstruction.ad.data import _amplitudes, _drift_reference
    from hyperspy_lorentz.reconstruction.ad.fit import _Fit
    from hyperspy_lorentz.reconstruction.ad.inputs import _check_images, _check_options
    from hyperspy_lorentz.reconstruction.ad.objective import _canvas
    from hyperspy_lorentz.reconstruction.ad.stages import _start_fields

    imgs, df = _check_images(images, defocus)
    n, h, w = imgs.shape
    o = _check_options(
        astigmatism=0.0, astigmatism_angle=0.0, refine=refine, refine_amplitude=True,
        likelihood="gaussian", optimizer="lbfgs", init="flat", padding=padding,
        max_iterations=1, tolerance=0.0, regularization="auto", learning_rate=None,
        progress=None, bias_correction=0, dtype=dtype, device=device, seed=0, **optics)
    norm = imgs / imgs.mean(axis=(1, 2), keepdims=True)
    border, canvas = _canvas(o, (h, w), df)
    o.shift_reference = _drift_reference(imgs, df)
    amps, _, sigma = _amplitudes(norm, o.tdt)
    phase0, amp0, *_ = _start_fields(o, imgs, df, norm, "flat", canvas, None, None)
    fit = _Fit.begin(o, (h, w), canvas, border, {}, data=amps, sigma=sigma, dose=None)
    fit.set_start(phase0, amp0, df)
    problem = fit.problem(fit.start, o.refine)
    x0 = torch.zeros(problem.size, dtype=o.tdt, device=o.dev)
    problem.calibrate(x0)
    return problem, x0


def loss_and_grad(problem, x):
    """Loss (0-d tensor) and gradient at ``x``, as the optimiser evaluates them."""
    import torch

    x = x.detach().requires_grad_(True)
    loss = problem.loss(x)
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach(), g


def _sync(device):
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_pass(problem, x, repeat=5):
    """Seconds of one loss + gradient evaluation (median of ``repeat``, after a warm-up)."""
    dev = x.device
    loss_and_grad(problem, x)
    _sync(dev)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        loss_and_grad(problem, x)
        _sync(dev)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def objective_fft_floor(problem, repeat=5):
    """Seconds of the FFTs one loss + gradient evaluation cannot avoid (median of ``repeat``).

    ``N + 1`` forward and ``N + 1`` inverse complex FFTs on the model's padded
    grid (distinct inputs; the faster of per-image and batched calls), plus an
    ``rfft2`` and an ``irfft2`` in the forward and in the backward pass of
    each whitened field on the canvas; same device and dtype as ``problem``.
    """
    import torch

    dev, n = problem.device, problem.n
    hp, wp = problem.model.padded_shape
    h, w = problem.h, problem.w
    cdt = torch.complex64 if problem.dtype == torch.float32 else torch.complex128
    fields = 1 + ("amplitude" in problem.slices)
    xb = torch.randn(n + 1, hp, wp, dtype=cdt, device=dev)
    xr = torch.randn(fields, h, w, dtype=problem.dtype, device=dev)

    def real_part():
        for _ in range(2):  # forward and backward pass
            for k in range(fields):
                torch.fft.irfft2(torch.fft.rfft2(xr[k]), s=(h, w))

    def single():
        for k in range(n + 1):
            torch.fft.fft2(xb[k])
        for k in range(n + 1):
            torch.fft.ifft2(xb[k], norm="forward")
        real_part()

    def batched():
        torch.fft.fft2(xb)
        torch.fft.ifft2(xb, norm="forward")
        real_part()

    best = math.inf
    for fn in (single, batched):
        fn()
        _sync(dev)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            _sync(dev)
            times.append(time.perf_counter() - t)
        best = min(best, float(np.median(times)))
    return best


# ------------------------------------------------------------------ profile
_FFT_OPS = ("fft", "_fft_")
_ELEMENTWISE = (
    "add", "sub", "mul", "div", "neg", "exp", "log", "sqrt", "rsqrt", "pow", "sin", "cos",
    "abs", "where", "clamp", "copy_", "fill_", "zero_", "conj", "real", "imag", "complex",
    "polar", "square", "reciprocal", "sgn", "sign", "atan2", "maximum", "minimum", "lerp",
    "addcmul", "addcdiv", "view_as_real", "view_as_complex", "_conj", "resolve_conj",
    "threshold", "hypot", "expm1", "log1p", "tanh", "sigmoid", "eq", "ne", "lt", "gt", "le",
    "ge", "isfinite", "masked_fill",
)


def op_kind(name):
    """``"fft"``, ``"elementwise"`` or ``"other"`` for a profiler event name (``aten::...``)."""
    base = name.split("::")[-1].lower()
    if any(s in base for s in _FFT_OPS):
        return "fft"
    stem = base.rstrip("_")
    if stem in _ELEMENTWISE or base in _ELEMENTWISE:
        return "elementwise"
    return "other"


def profile_iteration(problem, x, top=15, iterations=3):
    """Profile ``iterations`` loss + gradient evaluations; return the summary dict."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    loss_and_grad(problem, x)  # warm-up: plans, caches
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iterations):
            loss_and_grad(problem, x)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    shares = {"fft": 0.0, "elementwise": 0.0, "other": 0.0}
    for e in events:
        shares[op_kind(e.key)] += e.self_cpu_time_total
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return dict(
        total_ms=total / 1e3 / iterations,
        shares={k: v / max(total, 1e-30) for k, v in shares.items()},
        top=[(e.key, e.self_cpu_time_total / 1e3 / iterations, e.count // iterations,
              op_kind(e.key)) for e in rows],
        threads=torch.get_num_threads())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--n", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    images, df, optics, source = test_series(args.size, args.n)
    problem, x0 = ad_objective(images, df, **optics)
    # a point away from the flat start (small random whitened step), as mid-fit
    x = 0.3 * torch.randn(problem.size, generator=torch.Generator().manual_seed(1))
    hp, wp = problem.model.padded_shape
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {source}; "
          f"{args.n} x {args.size} x {args.size}, canvas {problem.h} x {problem.w}, "
          f"model grid {hp} x {wp}, refine={problem.refine or ('phase only',)}")
    prof = profile_iteration(problem, x, top=args.top)
    floor_a = objective_fft_floor(problem, args.repeat)
    t_pass = time_pass(problem, x, args.repeat)
    floor = 0.5 * (floor_a + objective_fft_floor(problem, args.repeat))
    print(f"\ntop {args.top} operators by self CPU time (per iteration; profiler total "
          f"{prof['total_ms']:.1f} ms):")
    print(f"{'operator':<34}{'self ms':>9}{'calls':>7}{'share':>7}  kind")
    for name, ms, calls, kind in prof["top"]:
        print(f"{name:<34}{ms:9.2f}{calls:7d}{ms / prof['total_ms']:7.1%}  {kind}")
    s = prof["shares"]
    print(f"\nself CPU time: FFT {s['fft']:.0%}, elementwise {s['elementwise']:.0%}, "
          f"other {s['other']:.0%}")
    print(f"iteration (loss + gradient, unprofiled, median of {args.repeat}): "
          f"{1e3 * t_pass:.1f} ms; FFT floor {1e3 * floor:.1f} ms; ratio {t_pass / floor:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
