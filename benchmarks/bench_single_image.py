"""Benchmark single-image AD against SITIE on a simulated skyrmion lattice.

Usage::

    python benchmarks/bench_single_image.py                    # the table
    python benchmarks/bench_single_image.py --seeds 1 2 3 --threads 1
    python benchmarks/bench_single_image.py --dip              # + deep image prior
    python benchmarks/bench_single_image.py --scan --thickness 20   # prior constants

Specimen: a Bloch skyrmion lattice (period 90 nm) in a continuous film,
``Ms = 4e5 A/m``, ``t = 50 nm`` (magnetic phase about 0.9 rad peak to peak),
imaged at 200 kV with ``Cs = 1 mm``, ``theta_c = 0.01 mrad``, focal spread
500 nm, 4 nm pixels, 256 x 256 pixels (1 um field of view), 0.5 mm overfocus.

The truth is computed on a field three times larger
(:func:`~hyperspy_lorentz.physics.magnetisation.magnetic_phase` of
:func:`~hyperspy_lorentz.physics.textures.skyrmion_lattice`), propagated with
:func:`~hyperspy_lorentz.physics.forward.simulate_images` and cropped to the
central 256 x 256 pixels, so the image contains the electrons deflected across
the edges of the field of view as a real one does (no periodic wrap-around, and
the reconstruction does not see the specimen outside the field). Poisson noise
at ``dose`` electrons per pixel.

Methods (each row: mean over ``--seeds`` of the accuracy and of the time):

* ``SITIE``: :func:`~hyperspy_lorentz.reconstruction.tie.sitie_phase` with its
  defaults (boundaries chosen from the data, ``boundary="auto"``; automatic
  ``qc``) -- what the package does;
* ``SITIE mirror`` / ``SITIE periodic``: the same with ``symmetric=True`` /
  ``False`` (for reference: mirror boundaries force a zero normal gradient at
  the edge, wrong wherever flux crosses it, as on a lattice window);
* ``AD (TV)``: :func:`~hyperspy_lorentz.reconstruction.single_image.reconstruct_single_image`
  with its defaults;
* ``AD (DIP)`` and ``AD (DIP+TV)`` (``--dip``): the same objective with the
  phase correction produced by a deep-image-prior network (a small U-Net from
  fixed noise, as in SIPRAD, McCray et al. 2024) instead of (or besides) the TV
  prior; the row reports the iterate of lowest loss and the ``oracle stop`` row,
  an *upper bound* that needs the truth, the best accuracy met along the way
  (early stopping is how a DIP regularises).

``accuracy`` is :func:`~hyperspy_lorentz.reconstruction.metrics.phase_accuracy`
(normalised cross-correlation with the truth, 8-pixel border excluded);
``slope`` is the least-squares scale of the retrieved phase on the truth (1 =
right magnitude: NCC does not see a uniformly shrunk phase, which the priors
produce at low dose). Times are wall-clock seconds of the reconstruction call.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from hyperspy_lorentz.physics.forward import simulate_images
from hyperspy_lorentz.physics.magnetisation import magnetic_phase
from hyperspy_lorentz.physics.optics import wavelength
from hyperspy_lorentz.physics.textures import skyrmion_lattice
from hyperspy_lorentz.reconstruction import single_image
from hyperspy_lorentz.reconstruction.metrics import phase_accuracy
from hyperspy_lorentz.reconstruction.tie import sitie_phase

BORDER = 8
MICROSCOPE = dict(beam_energy=200.0, cs=1.0, theta_c=0.01, defocus_spread=500.0)


def simulate(n=256, pixel_size=4.0, period=90.0, ms=4e5, thickness=50.0, defocus=5e5,
             seed=0):
    """Noise-free image and true magnetic phase (n x n) of a skyrmion lattice."""
    rng = np.random.default_rng(seed)
    big = 3 * n
    rotation = float(rng.uniform(0.0, 60.0))
    centre = tuple(float(v) for v in rng.uniform(0.0, period, 2))
    tex = skyrmion_lattice((big, big), period, pixel_size=pixel_size, rotation=rotation,
                           center=centre)
    phase = magnetic_phase(tex.mx, tex.my, ms, thickness, pixel_size, padding=1, mz=tex.mz)
    image = simulate_images(phase, None, defocus, pixel_size, **MICROSCOPE, dtype=np.float64)[0]
    sl = slice(n, 2 * n)
    return phase[sl, sl].copy(), image[sl, sl].copy()


def slope(retrieved, truth, border=BORDER):
    a = retrieved[border:-border, border:-border]
    b = truth[border:-border, border:-border]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (b * b).sum())


# --------------------------------------------------------------------- methods
def run_sitie(image, defocus, pixel_size, symmetric=None):
    t = time.perf_counter()
    phase, _ = sitie_phase(image, defocus, pixel_size, wavelength(MICROSCOPE["beam_energy"]),
                           symmetric=symmetric)
    return phase, time.perf_counter() - t


def run_ad(image, defocus, pixel_size, **kw):
    t = time.perf_counter()
    res = single_image.reconstruct_single_image(image, defocus, pixel_size=pixel_size,
                                                **MICROSCOPE, **kw)
    return res.phase, time.perf_counter() - t, res


class _UNet(torch.nn.Module):
    """Small encoder-decoder with skips (deep image prior, Ulyanov et al. 2018)."""

    def __init__(self, channels=16, depth=4, in_channels=8):
        super().__init__()
        nn = torch.nn
        act = nn.LeakyReLU(0.2)
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        self.skip = nn.ModuleList()
        c_in = in_channels
        for _ in range(depth):
            self.down.append(nn.Sequential(
                nn.Conv2d(c_in, channels, 3, stride=2, padding=1, padding_mode="reflect"),
                nn.BatchNorm2d(channels), act,
                nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"),
                nn.BatchNorm2d(channels), act))
            self.skip.append(nn.Sequential(nn.Conv2d(c_in, 4, 1), nn.BatchNorm2d(4), act))
            c_in = channels
        for _ in range(depth):
            self.up.append(nn.Sequential(
                nn.Conv2d(channels + 4, channels, 3, padding=1, padding_mode="reflect"),
                nn.BatchNorm2d(channels), act,
                nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels), act))
        self.out = nn.Conv2d(channels, 1, 1)
        torch.nn.init.zeros_(self.out.weight)  # start at the SITIE phase
        torch.nn.init.zeros_(self.out.bias)

    def forward(self, z):
        skips = []
        x = z
        for down, skip in zip(self.down, self.skip):
            skips.append(skip(x))
            x = down(x)
        for up, s in zip(self.up, reversed(skips)):
            x = torch.nn.functional.interpolate(x, size=s.shape[-2:], mode="bilinear",
                                                align_corners=False)
            x = up(torch.cat([x, s], dim=1))
        return self.out(x)[0, 0]


def run_dip(image, defocus, pixel_size, truth, *, iterations=1500, lr=1e-2, beta=0.0,
            channels=16, seed=0):
    """Deep-image-prior variant on the objective of single-image AD.

    The phase is the SITIE start plus the output of :class:`_UNet` (fed with
    fixed noise, last layer zero at the start), and the network weights are
    fitted by Adam to the same Poisson likelihood and ridge as single-image AD,
    with the TV weight ``beta`` (0: the network is the only prior; ``None``: the
    automatic TV weight as well). Returns (the phase of lowest loss, the best
    accuracy met along the way -- needs the truth --, time).
    """
    t0 = time.perf_counter()
    img = np.asarray(image, dtype=float)
    energy = MICROSCOPE["beam_energy"]
    objective, _, _ = single_image._build_problem(
        img, float(defocus), (pixel_size, pixel_size), energy, MICROSCOPE["cs"],
        MICROSCOPE["theta_c"], MICROSCOPE["defocus_spread"], "poisson", None, beta, "sitie",
        torch.float32, torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    hc, wc = objective.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _UNet(channels=channels)
    z = 0.1 * torch.rand((1, 8, hc, wc), generator=gen)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    best_loss, best_phase, best_acc = math.inf, None, -1.0
    for it in range(iterations):
        opt.zero_grad()
        phi = objective.phase0 + net(z)
        loss = objective.loss_of_phase(phi, float(defocus))
        lv = float(loss.detach())
        if not math.isfinite(lv):
            break
        if lv < best_loss:
            best_loss = lv
            best_phase = single_image._crop(phi, objective.window)
        if it % 25 == 0 or it == iterations - 1:
            a = phase_accuracy(single_image._crop(phi, objective.window), truth, border=BORDER)
            best_acc = max(best_acc, a)
        loss.backward()
        opt.step()
    return best_phase, best_acc, time.perf_counter() - t0


# --------------------------------------------------------------------- main
def table(args):
    rows = []
    for dose in args.doses:
        acc = {}
        for seed in args.seeds:
            truth, clean = simulate(n=args.size, defocus=args.defocus, seed=seed,
                                    thickness=args.thickness)
            rng = np.random.default_rng(1000 + seed)
            image = rng.poisson(clean * dose).astype(float)
            for name, fn in (("SITIE", lambda: run_sitie(image, args.defocus, 4.0)),
                             ("SITIE mirror",
                              lambda: run_sitie(image, args.defocus, 4.0, symmetric=True)),
                             ("SITIE periodic",
                              lambda: run_sitie(image, args.defocus, 4.0, symmetric=False)),
                             ("AD (TV)", lambda: run_ad(image, args.defocus, 4.0)[:2])):
                phase, t = fn()
                acc.setdefault(name, []).append(
                    (phase_accuracy(phase, truth, border=BORDER), slope(phase, truth), t))
            if args.dip:
                for name, beta in (("AD (DIP)", 0.0), ("AD (DIP+TV)", None)):
                    phase, oracle, t = run_dip(image, args.defocus, 4.0, truth, beta=beta,
                                               iterations=args.dip_iterations, seed=seed)
                    acc.setdefault(name, []).append(
                        (phase_accuracy(phase, truth, border=BORDER), slope(phase, truth), t))
                    acc.setdefault(name + " oracle stop", []).append(
                        (oracle, float("nan"), t))
        for name, v in acc.items():
            v = np.array(v)
            rows.append((dose, name, v[:, 0].mean(), v[:, 0].min(), v[:, 1].mean(),
                         v[:, 2].mean()))
    print(f"\n{args.size} x {args.size} px, 4 nm/px, skyrmion lattice period 90 nm, "
          f"Ms 4e5 A/m, t {args.thickness:g} nm, defocus {args.defocus / 1e6:g} mm, "
          f"seeds {args.seeds}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'dose (e-/px)':>12}  {'method':<26}{'accuracy':>9}{'(min)':>8}{'slope':>7}"
          f"{'time (s)':>10}")
    for dose, name, a, amin, sl, t in rows:
        print(f"{dose:>12g}  {name:<26}{a:>9.4f}{amin:>8.4f}{sl:>7.3f}{t:>10.2f}")


def scan(args):
    """Accuracy and slope of single-image AD against its prior constants."""
    keep = (single_image.TV_RATE, single_image.TV_EPSILON_FRACTION, single_image.PHASE_VARIANCE)
    print(f"film {args.thickness:g} nm, {args.size} px, seeds {args.seeds}")
    print(f"{'dose':>6} {'ridge':>7} {'rate':>6} {'eps/g':>6} {'accuracy':>9} {'slope':>7}")
    try:
        for dose in args.doses:
            data = []
            for seed in args.seeds:
                truth, clean = simulate(n=args.size, defocus=args.defocus, seed=seed,
                                        thickness=args.thickness)
                rng = np.random.default_rng(1000 + seed)
                data.append((truth, rng.poisson(clean * dose).astype(float)))
            for ridge in (1.0, 4.0, 16.0):  # PHASE_VARIANCE, rad^2
                for rate in (0.2, 0.4, 0.8):
                    for frac in (0.6, 1.2):
                        single_image.PHASE_VARIANCE = ridge
                        single_image.TV_RATE = rate
                        single_image.TV_EPSILON_FRACTION = frac
                        r = np.array([(phase_accuracy(p, t, border=BORDER), slope(p, t))
                                      for t, im in data
                                      for p in [run_ad(im, args.defocus, 4.0)[0]]])
                        print(f"{dose:>6g} {ridge:>7g} {rate:>6g} {frac:>6g} "
                              f"{r[:, 0].mean():>9.4f} {r[:, 1].mean():>7.3f}", flush=True)
    finally:
        (single_image.TV_RATE, single_image.TV_EPSILON_FRACTION,
         single_image.PHASE_VARIANCE) = keep


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--defocus", type=float, default=5e5, help="nm (default 0.5 mm)")
    p.add_argument("--thickness", type=float, default=50.0, help="film, nm (default 50)")
    p.add_argument("--doses", type=float, nargs="+", default=[50.0, 500.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--dip", action="store_true", help="also run the deep image prior")
    p.add_argument("--dip-iterations", type=int, default=1500)
    p.add_argument("--scan", action="store_true",
                   help="scan TV_RATE, TV_EPSILON_FRACTION and PHASE_VARIANCE")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scan:
        scan(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
