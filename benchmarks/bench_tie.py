"""TIE and SITIE on windows, isolated specimens and periodic simulations.

A micrograph is a window onto a larger specimen; simulations are often
periodic or show a whole specimen in vacuum. This benchmark simulates each
specimen both ways with the package's forward model (200 kV, Cs 1 mm,
theta_c 0.01 mrad, defocus spread 500 nm; three images -df, 0, +df), adds
Poisson noise at a dose (e-/pixel, ``rng.poisson(images * dose) / dose``) and
prints the accuracy (normalised cross-correlation with the true phase,
:func:`~hyperspy_lorentz.reconstruction.metrics.phase_accuracy`) of

* ``TIE``    -- :func:`~hyperspy_lorentz.reconstruction.tie.tie_phase`, defaults
  (boundary and ``qc`` decided from the data; the boundary it chose in ``bc``:
  ``f`` free, ``p`` periodic, for y then x);
* ``SITIE``  -- :func:`~hyperspy_lorentz.reconstruction.tie.sitie_phase` of the
  overfocus image, defaults;
* ``mirror`` -- ``tie_phase(..., symmetric=True)``: mirror boundaries, default ``qc``;
* ``plain``  -- ``tie_phase(..., symmetric=False, qc=1/(N p))``: a plain periodic
  TIE with a fixed cut-off at the lowest frequency of the frame.

Specimens (256 x 256 px frames):

* ``lattice``  Bloch skyrmion lattice, period 70 nm, 2.5 nm px, Ms 4e5 A/m, 50 nm,
  df 100 um; ``window``: simulated on 512 x 512 px (periodic magnetic phase),
  images and phase cropped to the central 256 x 256; ``periodic``: simulated on
  the 256 x 256 frame itself;
* ``stripes``  stripe domains, period 120 nm, 25 degrees, same film and optics;
* ``islands``  uniformly magnetised rectangles (Ms 8e5 A/m, 20 nm, 5 nm px,
  df 500 um), magnetic phase with free-space stray fields; ``window``: islands
  over a 512 x 512 canvas, central 256 x 256 cropped; ``isolated``: islands in
  the central part of a 512 canvas, frame = central 256 with vacuum around;
  ``whole``: the islands' own 256 x 256 canvas is the frame (its images wrap
  around, as in most simulations of a whole specimen);
* ``paper``    the AD-LTEM paper's object (512 x 512, 5 nm px, df 200 um);
  ``window``: its central 256 x 256; ``periodic``: the whole simulated frame.
  Skipped where ../shared is absent.

    python benchmarks/bench_tie.py                      # the table (about a minute)
    python benchmarks/bench_tie.py --doses 1000 --seeds 0 1 2
    python benchmarks/bench_tie.py --paper-series       # paper object vs defocus/noise
    python benchmarks/bench_tie.py --paper-series --with-ad
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _paper_object import BEAM_ENERGY, PIXEL_SIZE, load_paper_object, simulate_series  # noqa: E402


def _islands(n, px, count, margin, seed):
    """Random non-overlapping uniformly magnetised rectangles on an n x n canvas."""
    from scipy.ndimage import binary_dilation

    from hyperspy_lorentz.physics import textures

    rng = np.random.default_rng(seed)
    mx, my = np.zeros((n, n)), np.zeros((n, n))
    mask = np.zeros((n, n), dtype=bool)
    placed = tries = 0
    while placed < count and tries < 2000:
        tries += 1
        length, width = rng.uniform(80, 250), rng.uniform(40, 100)
        if rng.random() < 0.3:
            length = width = rng.uniform(60, 160)
        horizontal = rng.random() < 0.5
        sy, sx = (width, length) if horizontal else (length, width)
        lo = margin * n * px
        cy = rng.uniform(lo + sy / 2, n * px - lo - sy / 2)
        cx = rng.uniform(lo + sx / 2, n * px - lo - sx / 2)
        direction = (0.0 if horizontal else 90.0) + 180.0 * rng.integers(2) + rng.uniform(-15, 15)
        t = textures.uniform_island((n, n), direction=direction, geometry="rectangle",
                                    size=(sy, sx), center=(cy, cx), pixel_size=px)
        if (binary_dilation(t.mask, iterations=4) & mask).any():
            continue
        mx, my, mask = mx + t.mx, my + t.my, mask | t.mask
        placed += 1
    return mx, my


def specimens(with_paper=True):
    """``(name, geometry, images, phase, defocus, pixel)`` for every case."""
    from hyperspy_lorentz.physics import textures
    from hyperspy_lorentz.physics.forward import simulate_images
    from hyperspy_lorentz.physics.magnetisation import magnetic_phase

    def crop(a, n):
        c = slice((a.shape[-1] - n) // 2, (a.shape[-1] - n) // 2 + n)
        return a[..., c, c]

    out = []
    for name, make in (
        ("lattice", lambda n: textures.skyrmion_lattice((n, n), period=70.0, rotation=7.0,
                                                        pixel_size=2.5)),
        ("stripes", lambda n: textures.stripe_domains((n, n), period=120.0, direction=25.0,
                                                      pixel_size=2.5)),
    ):
        df = np.array([-1e5, 0.0, 1e5])
        for geometry, n in (("window", 512), ("periodic", 256)):
            t = make(n)
            phase = magnetic_phase(t.mx, t.my, ms=4e5, thickness=50, pixel_size=2.5, padding=1)
            images = simulate_images(phase, None, df, 2.5)
            out.append((name, geometry, crop(images, 256), crop(phase, 256), df, 2.5))
    df = np.array([-5e5, 0.0, 5e5])
    for geometry, n, count, margin, pad in (("window", 512, 40, 0.02, 0),
                                            ("isolated", 256, 7, 0.15, 128),
                                            ("whole", 256, 7, 0.15, 0)):
        mx, my = _islands(n, 5.0, count, margin, seed=1 if geometry == "window" else 2)
        mx, my = np.pad(mx, pad), np.pad(my, pad)
        phase = magnetic_phase(mx, my, ms=8e5, thickness=20, pixel_size=5.0)
        images = simulate_images(phase, None, df, 5.0)
        out.append(("islands", geometry, crop(images, 256), crop(phase, 256), df, 5.0))
    if with_paper:
        try:
            phase, amplitude = load_paper_object()
        except FileNotFoundError as err:
            print(f"(paper object skipped: {err})")
        else:
            df = np.array([-2e5, 0.0, 2e5])
            images = simulate_series(phase, amplitude, df, 0.0)
            out.append(("paper", "window", crop(images, 256), crop(phase, 256), df, PIXEL_SIZE))
            out.append(("paper", "periodic", images, phase, df, PIXEL_SIZE))
    return out


def table(doses, seeds, with_paper=True):
    from hyperspy_lorentz.physics.optics import wavelength
    from hyperspy_lorentz.reconstruction.metrics import phase_accuracy
    from hyperspy_lorentz.reconstruction.tie import sitie_phase, tie_phase

    lam = wavelength(BEAM_ENERGY)
    t0 = time.perf_counter()
    cases = specimens(with_paper)
    print(f"simulated {len(cases)} cases in {time.perf_counter() - t0:.0f} s; accuracy = NCC "
          f"with the true phase (mean over seeds {list(seeds)})")
    head = (f"{'specimen':9}{'field':10}{'dose':>6}{'TIE':>8}{'bc':>4}{'SITIE':>8}"
            f"{'mirror':>8}{'plain':>8}")
    print(head)
    print("-" * len(head))
    for name, geometry, clean, truth, df, px in cases:
        n = clean.shape[-1]
        over = int(np.argmax(df))
        for dose in doses:
            acc = {k: [] for k in ("tie", "sitie", "mirror", "plain")}
            bc = ""
            for seed in seeds if dose else seeds[:1]:
                imgs = (clean if not dose else
                        np.random.default_rng(seed).poisson(clean * dose) / dose)
                phase, info = tie_phase(imgs, df, px, lam)
                bc = "".join(m[0] for m in info["boundary"])
                acc["tie"].append(phase_accuracy(phase, truth))
                acc["sitie"].append(phase_accuracy(
                    sitie_phase(imgs[over], df[over], px, lam)[0], truth))
                acc["mirror"].append(phase_accuracy(
                    tie_phase(imgs, df, px, lam, symmetric=True)[0], truth))
                acc["plain"].append(phase_accuracy(
                    tie_phase(imgs, df, px, lam, symmetric=False, qc=1.0 / (n * px))[0], truth))
            d = "none" if not dose else f"{dose:g}"
            m = {k: float(np.mean(v)) for k, v in acc.items()}
            print(f"{name:9}{geometry:10}{d:>6}{m['tie']:8.3f}{bc:>4}{m['sitie']:8.3f}"
                  f"{m['mirror']:8.3f}{m['plain']:8.3f}", flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s. SITIE assumes a uniform amplitude: it does "
          f"not apply to the paper's object (islands of lower amplitude).")


def paper_series(defocus_mm, noises, with_ad, seed):
    """TIE (and AD) on the paper's object against defocus and relative noise."""
    import torch

    from hyperspy_lorentz.physics.optics import wavelength
    from hyperspy_lorentz.reconstruction.metrics import phase_accuracy
    from hyperspy_lorentz.reconstruction.tie import tie_phase

    torch.set_num_threads(2)
    phase, amplitude = load_paper_object()
    lam = wavelength(BEAM_ENERGY)
    print("TIE (and AD) on the paper's object, 3 images (-df, 0, +df), noise I ~ N(I, s I)")
    head = f"{'df (mm)':>8}{'noise':>7}{'TIE':>8}{'bc':>4}{'TIE s':>7}"
    if with_ad:
        head += f"{'AD':>8}{'AD s':>7}"
    print(head)
    for df_mm in defocus_mm:
        defocus = np.array([-df_mm * 1e6, 0.0, df_mm * 1e6])
        for s in noises:
            images = simulate_series(phase, amplitude, defocus, s, seed=seed)
            t0 = time.perf_counter()
            tie, info = tie_phase(images, defocus, PIXEL_SIZE, lam)
            t_tie = time.perf_counter() - t0
            bc = "".join(m[0] for m in info["boundary"])
            line = f"{df_mm:>8.2f}{s:>7.0%}{phase_accuracy(tie, phase):>8.4f}{bc:>4}{t_tie:>7.2f}"
            if with_ad:
                from hyperspy_lorentz.reconstruction.ad import reconstruct_ad

                r = reconstruct_ad(images, defocus, pixel_size=PIXEL_SIZE, beam_energy=BEAM_ENERGY,
                                   seed=seed)
                line += f"{phase_accuracy(r.phase, phase):>8.4f}{r.time_s:>7.1f}"
            print(line, flush=True)
    print("paper: TIE 0.889 at 10 % noise (through-focus stack)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--doses", type=float, nargs="*", default=[0, 1000, 100, 10],
                   help="e-/pixel; 0 = noise-free")
    p.add_argument("--seeds", type=int, nargs="*", default=[0])
    p.add_argument("--no-paper", action="store_true", help="leave out the paper's object")
    p.add_argument("--paper-series", action="store_true",
                   help="instead: the paper's object against defocus and noise")
    p.add_argument("--defocus", type=float, nargs="*", default=[0.1, 0.2, 0.4, 0.8, 1.2, 1.6],
                   help="mm (--paper-series)")
    p.add_argument("--noise", type=float, nargs="*", default=[0.0, 0.1, 0.2],
                   help="relative noise (--paper-series)")
    p.add_argument("--with-ad", action="store_true", help="also run AD (--paper-series)")
    args = p.parse_args(argv)
    if args.paper_series:
        paper_series(args.defocus, args.noise, args.with_ad, args.seeds[0])
    else:
        table([d or None for d in args.doses], args.seeds, not args.no_paper)


if __name__ == "__main__":
    main()
