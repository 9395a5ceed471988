"""Accuracy of every phase-retrieval method on a benchmark of specimens.

Each *kind* of specimen is simulated (with :mod:`hyperspy_lorentz.data`) as a
window onto a larger specimen and as an isolated or periodic field, at each
dose (noise-free, 1000, 100 and 10 electrons per pixel by default), with one
fixed noise seed per row, and every method is run on the same data with its
defaults -- one set of defaults, nothing tuned per case:

* ``ad``: :func:`~hyperspy_lorentz.reconstruction.ad.reconstruct_ad` on the
  whole series;
* ``single``: :func:`~hyperspy_lorentz.reconstruction.single_image.reconstruct_single_image`
  on the image with the most contrast (noise-corrected);
* ``tie``: :func:`~hyperspy_lorentz.reconstruction.tie.tie_phase` on the series;
* ``sitie``: :func:`~hyperspy_lorentz.reconstruction.tie.sitie_phase` on the
  image ``single`` uses.

The likelihood of the AD solvers follows the data: Poisson for counted images,
Gaussian for noise-free ones. The accuracy is
:func:`~hyperspy_lorentz.reconstruction.metrics.phase_accuracy` (normalised
cross-correlation) over the whole frame against the true total phase, for every
method: what one image or one series fixes is the phase of the exit wave. Where
the specimen has an electrostatic phase (islands, vortex discs), no method
separates the magnetic part without a flipped series; the JSON records the
accuracy against the magnetic phase as well (``accuracy_magnetic``). Times are
per reconstruction.

Kinds: ``lattice`` (Bloch skyrmion lattice, window / periodic), ``islands``
(spin-ice-like permalloy islands in vacuum, isolated / window), ``walls``
(in-plane domains with meandering walls crossing the frame, window /
periodic), ``vortex`` (permalloy vortex discs with electrostatic phase and
absorption, isolated / window), ``stripes`` (up/down stripes with Bloch walls,
window / periodic), ``paper`` (the AD-LTEM paper's test object, read from
``../shared``: a window of its central part at 5 nm pixels, and the whole
object binned to the size as a periodic field).

    python benchmarks/bench_specimens.py                                # everything, 256 x 256 (long)
    python benchmarks/bench_specimens.py --size 128 --kinds lattice walls --methods tie sitie
    python benchmarks/bench_specimens.py --doses inf 100 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = {
    "lattice": ("skyrmion_lattice", ("window", "periodic")),
    "islands": ("island_array", ("isolated", "window")),
    "walls": ("domain_walls", ("window", "periodic")),
    "vortex": ("vortex_discs", ("isolated", "window")),
    "stripes": ("stripe_domains", ("window", "periodic")),
    "paper": (None, ("window", "periodic")),
}
METHODS = ("ad", "single", "tie", "sitie")
DOSES = ("inf", "1000", "100", "10")
#: Defocus of the paper's object, nm (its notebooks use +-1.6 mm at 5 nm pixels).
PAPER_DEFOCUS = (-1.6e6, -0.8e6, 0.0, 0.8e6, 1.6e6)


def _dose(text):
    return None if text in ("inf", "none", "None") else float(text)


def row_seed(base, kind, field, dose):
    """One fixed noise seed per row (kind, field, dose), independent of the other rows."""
    return (base + zlib.crc32(f"{kind}/{field}/{dose}".encode())) % (2**31)


def paper_series(field, size, dose, seed):
    """The paper's object as a window (central crop at 5 nm) or a periodic field (binned)."""
    from _paper_object import BEAM_ENERGY, CS, DEFOCUS_SPREAD, PIXEL_SIZE, THETA_C, load_paper_object

    from hyperspy_lorentz.simulation import simulate_focal_series

    phase, amplitude = load_paper_object()
    n = phase.shape[0]
    common = dict(defocus=PAPER_DEFOCUS, beam_energy=BEAM_ENERGY, cs=CS, theta_c=THETA_C,
                  defocus_spread=DEFOCUS_SPREAD, dose=dose, seed=seed, padding="periodic")
    if field == "window":
        if size > n:
            raise ValueError(f"the paper's object is {n} pixels wide: --size {size} is too large")
        top = (n - size) // 2
        s = simulate_focal_series(phase, amplitude, scale=PIXEL_SIZE, window=(top, top, size, size), **common)
    else:
        if n % size:
            raise ValueError(f"--size must divide {n} for the periodic paper object, not {size}")
        b = n // size
        binned = [a.reshape(size, b, size, b).mean(axis=(1, 3)) for a in (phase, amplitude)]
        s = simulate_focal_series(binned[0], binned[1], scale=PIXEL_SIZE * b, **common)
    s.metadata.set_item("Simulation.Specimen", {"kind": "paper", "field": field})
    return s


def make_series(kind, field, size, dose, seed):
    """The focal series of one row."""
    if kind == "paper":
        return paper_series(field, size, dose, seed)
    from hyperspy_lorentz import data

    return getattr(data, KINDS[kind][0])(shape=(size, size), field=field, dose=dose, seed=seed)


def most_contrast(images, dose):
    """Index of the image with the largest noise-corrected relative variance."""
    mean = images.mean(axis=(1, 2))
    var = images.var(axis=(1, 2)) / mean**2
    if dose is not None:  # Poisson counts: remove the shot-noise variance 1 / mean
        var = var - 1.0 / mean
    return int(np.argmax(var))


def run_method(method, images, defocus, k, p, dose):
    """Retrieved phase of one method (rad)."""
    from hyperspy_lorentz.physics.optics import wavelength
    from hyperspy_lorentz.reconstruction import tie

    likelihood = "gaussian" if dose is None else "poisson"
    optics = dict(pixel_size=p["pixel_size"], beam_energy=p["beam_energy"], cs=p["cs"], theta_c=p["theta_c"],
                  defocus_spread=p["defocus_spread"])
    lam = wavelength(p["beam_energy"])
    if method == "ad":
        from hyperspy_lorentz.reconstruction.ad import reconstruct_ad

        return reconstruct_ad(images, defocus, likelihood=likelihood, seed=0, **optics).phase
    if method == "single":
        from hyperspy_lorentz.reconstruction.single_image import reconstruct_single_image

        return reconstruct_single_image(images[k], defocus[k], likelihood=likelihood, seed=0, **optics).phase
    if method == "tie":
        return tie.tie_phase(images, defocus, p["pixel_size"], lam)[0]
    if method == "sitie":
        return tie.sitie_phase(images[k], defocus[k], p["pixel_size"], lam)[0]
    raise ValueError(method)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--doses", nargs="+", default=list(DOSES), help="e-/pixel; 'inf' for noise-free")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--fields", nargs="+", default=None, help="restrict to these fields (window, isolated, periodic)")
    ap.add_argument("--size", type=int, default=256, help="image side, pixels (128 for a quick run)")
    ap.add_argument("--seed", type=int, default=0, help="base of the per-row noise seeds")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", default=None, help="write every result to this JSON file")
    args = ap.parse_args(argv)
    doses = [_dose(d) for d in args.doses]

    from hyperspy_lorentz.reconstruction.metrics import phase_accuracy

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"Specimen benchmark, {args.size} x {args.size}; accuracy = NCC with the true total phase "
          f"over the whole frame; seconds per reconstruction")
    head = f"{'kind':<9}{'field':<10}{'dose':>6}  " + "".join(f"{m:>19}" for m in args.methods)
    print(head)
    print("-" * len(head))
    records = []
    for kind in args.kinds:
        for field in KINDS[kind][1]:
            if args.fields and field not in args.fields:
                continue
            for dose in doses:
                seed = row_seed(args.seed, kind, field, dose)
                try:
                    s = make_series(kind, field, args.size, dose, seed)
                except FileNotFoundError as err:
                    print(f"{kind:<9}{field:<10} skipped: {err}")
                    break
                p = s.get_microscope_parameters()
                p = {"pixel_size": p["pixel_size_nm"], "beam_energy": p["beam_energy_kV"], "cs": p["cs_mm"],
                     "theta_c": p["theta_c_mrad"], "defocus_spread": p["defocus_spread_nm"]}
                images = np.asarray(s.data, dtype=float)
                defocus = np.asarray(s.axes_manager["defocus"].axis, dtype=float)
                sim = s.metadata.Simulation
                total = np.asarray(sim.phase)
                magnetic = np.asarray(sim.magnetic_phase) if sim.has_item("magnetic_phase") else total
                k = most_contrast(images, dose)
                cells = []
                for method in args.methods:
                    ref, name = total, "tot"
                    t0 = time.perf_counter()
                    try:
                        phase = run_method(method, images, defocus, k, p, dose)
                        acc = phase_accuracy(phase, ref)
                        acc_mag = phase_accuracy(phase, magnetic) if magnetic is not total else None
                        err = None
                    except Exception as exc:  # a failure is a result too
                        acc, acc_mag, err = float("nan"), None, f"{type(exc).__name__}: {exc}"
                    dt = time.perf_counter() - t0
                    cells.append(f"{acc:>7.3f} {name} {dt:>7.2f}s")
                    records.append({
                        "kind": kind, "field": field, "dose": dose, "method": method, "reference": name,
                        "accuracy": None if np.isnan(acc) else float(acc), "time_s": dt, "seed": seed,
                        "accuracy_magnetic": acc_mag,
                        "size": args.size, "pixel_size_nm": p["pixel_size"], "defocus_nm": defocus.tolist(),
                        "image_used": int(k) if method in ("single", "sitie") else None, "error": err,
                    })
                    if err:
                        print(f"  {method} failed: {err}", file=sys.stderr)
                dose_txt = "inf" if dose is None else f"{dose:g}"
                print(f"{kind:<9}{field:<10}{dose_txt:>6}  " + "".join(f"{c:>19}" for c in cells), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
        print(f"wrote {len(records)} results to {args.json}")
    return records


if __name__ == "__main__":
    main()
