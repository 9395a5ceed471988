"""Calibration of the refined optical parameters of the AD phase retrieval (issue #12, item 7).

Are the defocus values and image shifts that
:func:`~hyperspy_lorentz.reconstruction.ad.reconstruct_ad` refines right, and
are their reported standard errors (``res.standard_errors``, from the
parametric-bootstrap bias correction) honest?

Specimen: a Bloch skyrmion lattice in a continuous film
(:func:`hyperspy_lorentz.data.skyrmion_lattice`, 2.5 nm pixels, a *window* onto
the film: phase range about 1.2 rad at 256 x 256), 200 kV, Cs 1 mm, theta_c
0.01 mrad, focal spread 500 nm. The exit wave is simulated over a field larger
than the frame by the Fresnel spread of the series and the drift, and the
images are cropped to the frame after propagation and drift, so specimen outside
the frame deflects electrons into it (as in a micrograph).

Every case has

* true defocus -600/-300/0/+300/+600 um (``5``) or the subset -600/0/+600 um
  (``3``), given to the fit as *nominal* values with a scale error
  (``--scale-error``, default x1.04: the calibration of the lens is 4 % off);
* drift up to ``--drift`` px (default 2) on every image, the in-focus one
  included (a fixed pattern, :data:`DRIFT`, scaled so its largest component is
  ``--drift``);
* Poisson noise at the dose of the row (``--doses``), one series per noise
  seed (``--seeds`` of them);

and the fit is ``reconstruct_ad(images, nominal, likelihood="poisson",
dose=dose, refine=("defocus", "shifts"), refine_amplitude=..., seed=seed)``
with every other setting at its default (500 iterations, the race of starts,
3 bootstrap replicates). Cases (``--cases``):

``weak5``, ``weak3``
    the lattice's own phase (x1), 5 / 3 images, amplitude refined;
``strong5``, ``strong3``
    the phase x4 (saturation magnetisation x4: about 5 rad), amplitude refined;
``weak5-fixed``, ``strong5-fixed``
    5 images, amplitude *not* refined (``refine_amplitude=False``; the film's
    amplitude is uniform, so the model is still right);
``weak5-theta``, ``strong5-theta``
    5 images, amplitude refined, and ``theta_c`` refined as well
    (``refine=("defocus", "shifts", "theta_c")``) from a nominal value
    :data:`THETA_NOMINAL` times the true one (not in the default grid).

Columns (per dose and case, over the seeds):

``df err %``
    the largest defocus error over seeds and images, ``|df_fit - df_true|`` in
    % of ``|df_true|`` (of the largest ``|df_true|`` of the series for the
    in-focus image, whose true defocus is 0);
``SE nm`` / ``err nm``
    the reported standard error of that image's defocus
    (``res.standard_errors["defocus"]``) and its error, nm;
``max err/SE``
    the largest ``|error| / SE`` over seeds and images;
``cov 2SE``
    coverage: the fraction of (seed, image) whose true defocus lies within +-2 SE
    of the fitted one (about 0.95 for honest Gaussian errors);
``shift px``
    the largest shift error, px (Euclidean), over seeds and the images of the
    shift reference (``res.parameters["shift_reference"]``: the images with
    contrast; the fitted shifts are relative to their mean, and so is the
    truth here; the other images keep 0 and are not identifiable);
    ``shift cov``: as ``cov 2SE`` for each shift component of those images;
    where a defocus mode is reported not identifiable (``"defocus scale"``,
    ``"defocus offset"``), the fit holds it at the nominal value, and the
    defocus errors are taken against the truth moved to that value;
``df* %``, ``off nm``, ``shift* px``
    the same errors with the gauge-like parts removed: ``df*`` after
    subtracting each fit's common defocus offset (the mean error over its
    images; ``off nm``, the largest over seeds, is that offset -- with the
    amplitude refined, a common defocus offset is nearly a change of the plane
    of the exit wave, which the data alone do not fix), ``shift*`` after
    subtracting each fit's error that grows with the defocus (a beam tilt,
    which a phase ramp mimics: ``"shift tilt"``);
``theta %`` / ``theta cov``
    (``-theta`` cases) the largest ``theta_c`` error in % of the truth, and the
    fraction of seeds whose truth lies within +-2 reported standard errors
    (``nan`` where it was reported not identifiable, and held);
``acc``
    mean phase accuracy (:func:`~hyperspy_lorentz.reconstruction.metrics.phase_accuracy`);
``not ident.``
    the union of ``res.not_identifiable``;
``time s``
    mean wall time per fit.

Usage::

    python benchmarks/bench_refine.py                               # everything, 256 x 256 (long)
    python benchmarks/bench_refine.py --size 128 --seeds 1 --cases weak5 strong3 --doses 100
    python benchmarks/bench_refine.py --doses 10 100 --seeds 5 --json refine.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: True defocus, nm, of the 5-image series and the indices of the 3-image subset.
DEFOCUS = (-600e3, -300e3, 0.0, 300e3, 600e3)
SUBSET3 = (0, 2, 4)
#: Drift pattern (dy, dx) per image of the 5-image series, px, scaled to ``--drift``.
DRIFT = ((1.5, -1.0), (-0.7, 1.2), (0.3, -0.4), (-1.6, -1.2), (0.9, 2.0))
PIXEL_SIZE = 2.5  # nm
MICROSCOPE = dict(beam_energy=200.0, cs=1.0, theta_c=0.01, defocus_spread=500.0)

#: case -> (phase scale, images, refine the amplitude)
CASES = {
    "weak5": (1.0, 5, True),
    "weak3": (1.0, 3, True),
    "strong5": (4.0, 5, True),
    "strong3": (4.0, 3, True),
    "weak5-fixed": (1.0, 5, False),
    "strong5-fixed": (4.0, 5, False),
    "weak5-theta": (1.0, 5, True),
    "strong5-theta": (4.0, 5, True),
}
#: The cases of the default grid (the ``-theta`` ones on request).
DEFAULT_CASES = ("weak5", "weak3", "strong5", "strong3", "weak5-fixed", "strong5-fixed")
#: Nominal / true ``theta_c`` of the ``-theta`` cases.
THETA_NOMINAL = 1.5
DOSES = (10.0, 100.0, 1000.0)


def noise_free_series(size, phase_scale, drift):
    """Noise-free images of the lattice (true defocus :data:`DEFOCUS`, drift),
    the true phase of the frame and the true shifts.

    The phase is that of a window onto the film larger than the frame by the
    Fresnel spread of the series plus the drift; the images are propagated
    over it and cropped to the central ``size x size`` frame.
    """
    from hyperspy_lorentz import data
    from hyperspy_lorentz.reconstruction.canvas import fresnel_spread
    from hyperspy_lorentz.simulation import simulate_focal_series

    spread = max(fresnel_spread(PIXEL_SIZE, MICROSCOPE["beam_energy"], DEFOCUS, MICROSCOPE["cs"],
                                MICROSCOPE["theta_c"], MICROSCOPE["defocus_spread"]))
    margin = int(math.ceil(spread / PIXEL_SIZE + drift)) + 8
    big = size + 2 * margin
    lattice = data.skyrmion_lattice(shape=(big, big), pixel_size=PIXEL_SIZE, dose=None,
                                    defocus=(0.0,), ms=3.84e5 * phase_scale, **MICROSCOPE)
    phase = np.asarray(lattice.metadata.Simulation.phase, dtype=float)
    pattern = np.asarray(DRIFT, dtype=float)
    shifts = pattern * (drift / np.abs(pattern).max()) if drift > 0 else np.zeros_like(pattern)
    s = simulate_focal_series(phase, None, defocus=DEFOCUS, scale=PIXEL_SIZE, shifts=shifts,
                              padding="edge", window=(margin, margin, size, size), **MICROSCOPE)
    truth = phase[margin:margin + size, margin:margin + size]
    return np.asarray(s.data, dtype=float), truth, shifts


def run_fit(images, nominal, dose, seed, refine_amplitude, max_iterations, replicates=None,
            theta=False):
    from hyperspy_lorentz.reconstruction.ad import reconstruct_ad

    optics = dict(MICROSCOPE)
    refine = ("defocus", "shifts")
    if theta:  # theta_c refined too, from a wrong nominal value
        optics["theta_c"] = MICROSCOPE["theta_c"] * THETA_NOMINAL
        refine += ("theta_c",)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        res = reconstruct_ad(images, nominal, pixel_size=PIXEL_SIZE, likelihood="poisson", dose=dose,
                             refine=refine, refine_amplitude=refine_amplitude,
                             max_iterations=max_iterations, seed=seed,
                             bias_correction="auto" if replicates is None else replicates,
                             **optics)
        elapsed = time.perf_counter() - t
    return res, elapsed, sorted({str(w.message)[:120] for w in caught})


def score(res, true_df, true_shifts, truth_phase):
    """Per-image errors of one fit (JSON-friendly)."""
    from hyperspy_lorentz.reconstruction.metrics import phase_accuracy

    true_df = np.asarray(true_df, float)
    refs = list(res.parameters["shift_reference"])
    denom = np.where(true_df != 0, np.abs(true_df), np.abs(true_df).max())
    held = [m for m in ("scale", "offset") if f"defocus {m}" in res.not_identifiable]
    if held:
        # a mode held at its nominal value: compare with the truth moved to it
        from hyperspy_lorentz.reconstruction.ad.modes import mode_coefficients, mode_design

        t = mode_coefficients(true_df, np.asarray(res.parameters["defocus"], float) - true_df)
        t = t * np.array([m in held for m in ("scale", "offset")], float)
        true_df = true_df + mode_design(true_df) @ t
    err = res.defocus - true_df
    se = np.asarray(res.standard_errors.get("defocus", np.full(len(true_df), np.nan)), float)
    rel_shifts = true_shifts - true_shifts[refs].mean(axis=0)
    serr = res.shifts - rel_shifts
    sse = np.asarray(res.standard_errors.get("shifts", np.full(rel_shifts.shape, np.nan)), float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(err) / se
        zs = np.abs(serr) / sse
    # the gauge-like parts: a common defocus offset (with the amplitude refined,
    # nearly a change of the exit-wave plane) and a drift error that grows with
    # the defocus (a beam tilt, which a phase ramp mimics) removed
    offset = err.mean()
    lever = true_df[refs] - true_df[refs].mean()
    translation = ((lever[:, None] * serr[refs]).sum(axis=0) / (lever**2).sum()
                   if np.any(lever) else np.zeros(2))  # tilt, px / nm
    serr_free = serr[refs] - np.outer(lever, translation)
    theta = {}
    if "theta_c" in res.refined or "theta_c" in res.not_identifiable:
        t_true = MICROSCOPE["theta_c"]
        t_se = float(res.standard_errors.get("theta_c", math.nan))
        held = "theta_c" in res.not_identifiable
        theta = dict(theta_fit=float(res.theta_c), theta_error_pct=100 * abs(res.theta_c - t_true) / t_true,
                     theta_se=t_se, theta_held=held,
                     theta_covered=None if held else bool(abs(res.theta_c - t_true) <= 2 * t_se))
    return dict(
        **theta,
        defocus_fit=res.defocus.tolist(), defocus_true=true_df.tolist(), defocus_error_nm=err.tolist(),
        defocus_error_pct=(100 * np.abs(err) / denom).tolist(), defocus_se_nm=se.tolist(),
        z=z.tolist(), covered=(z <= 2).tolist(),
        shift_reference=refs, shifts_fit=res.shifts.tolist(), shifts_true_relative=rel_shifts.tolist(),
        shift_error_px=np.hypot(serr[refs, 0], serr[refs, 1]).tolist(), shift_se_px=sse.tolist(),
        shift_covered=(zs <= 2).tolist(),
        defocus_offset_nm=float(offset),
        defocus_error_free_pct=(100 * np.abs(err - offset) / denom).tolist(),
        shift_tilt_px_per_um=(1e3 * translation).tolist(),
        shift_error_free_px=np.hypot(serr_free[:, 0], serr_free[:, 1]).tolist(),
        accuracy=float(phase_accuracy(res.phase, truth_phase)),
        not_identifiable=list(res.not_identifiable), iterations=int(res.iterations),
        converged=bool(res.converged), reduced_chi2=res.parameters.get("reduced_chi2"),
    )


def summarise(fits):
    """One table row from the per-seed scores."""
    pct = np.array([f["defocus_error_pct"] for f in fits])
    errs = np.array([f["defocus_error_nm"] for f in fits])
    ses = np.array([f["defocus_se_nm"] for f in fits])
    z = np.array([f["z"] for f in fits], dtype=float)
    worst = np.unravel_index(np.argmax(pct), pct.shape)
    # images outside the shift reference keep 0 (not identifiable): not counted;
    # nor the shifts of a fit that does not explain the data ("shifts" not
    # identifiable, no standard errors)
    shift_cov = [c for f in fits if "shifts" not in f["not_identifiable"]
                 for k, pair in enumerate(f["shift_covered"])
                 if k in f["shift_reference"] for c in pair]
    return dict(
        max_defocus_error_pct=float(pct.max()), worst_error_nm=float(errs[worst]),
        worst_se_nm=float(ses[worst]), max_z=float(np.nanmax(z)) if np.isfinite(z).any() else math.nan,
        coverage=float(np.mean(z <= 2)) if np.isfinite(z).all() else math.nan,
        max_shift_error_px=float(max(max(f["shift_error_px"]) for f in fits)),
        shift_coverage=float(np.mean(shift_cov)) if shift_cov else math.nan,
        max_defocus_error_free_pct=float(max(max(f["defocus_error_free_pct"]) for f in fits)),
        max_defocus_offset_nm=float(max((f["defocus_offset_nm"] for f in fits), key=abs)),
        max_shift_error_free_px=float(max(max(f["shift_error_free_px"], default=0.0) for f in fits)),
        accuracy=float(np.mean([f["accuracy"] for f in fits])),
        not_identifiable=sorted({p for f in fits for p in f["not_identifiable"]}),
        time_s=float(np.mean([f["time_s"] for f in fits])),
        **({} if "theta_error_pct" not in fits[0] else dict(
            max_theta_error_pct=float(max(f["theta_error_pct"] for f in fits)),
            theta_coverage=(float(np.mean([f["theta_covered"] for f in fits]))
                            if all(f["theta_covered"] is not None for f in fits) else math.nan))),
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--doses", nargs="+", type=float, default=list(DOSES), help="e-/pixel (default 10 100 1000)")
    p.add_argument("--seeds", type=int, default=3, help="noise seeds per row: 0 .. N-1 (default 3)")
    p.add_argument("--size", type=int, default=256, help="image size, px (default 256; 128 quick)")
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(DEFAULT_CASES))
    p.add_argument("--scale-error", type=float, default=1.04, help="nominal / true defocus (default 1.04)")
    p.add_argument("--drift", type=float, default=2.0, help="largest drift component, px (default 2)")
    p.add_argument("--max-iterations", type=int, default=500, help="of reconstruct_ad (default 500)")
    p.add_argument("--replicates", type=int, default=None,
                   help="bootstrap replicates (bias_correction; default: the library's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--json", default=None, help="also write every fit and row to this file")
    a = p.parse_args(argv)
    if a.seeds < 1:
        p.error("--seeds must be >= 1")
    seeds = list(range(a.seeds))
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)

    header = (f"{'dose':>6} {'case':>14} {'n':>2} {'df err %':>8} {'err nm':>8} {'SE nm':>8} "
              f"{'max err/SE':>10} {'cov 2SE':>7} {'df* %':>6} {'off nm':>7} {'shift px':>8} "
              f"{'shift cov':>9} {'shift* px':>9} {'acc':>6} "
              f"{'not ident.':>10} {'time s':>7}")
    print(f"size {a.size}, pixel {PIXEL_SIZE} nm, nominal defocus x{a.scale_error:g}, drift <= {a.drift:g} px, "
          f"seeds {seeds}, likelihood poisson, refine (defocus, shifts)")
    print(header)
    print("-" * len(header))
    rows, series = [], {}
    for dose in a.doses:
        for case in a.cases:
            scale, n_img, amp = CASES[case]
            if scale not in series:
                series[scale] = noise_free_series(a.size, scale, a.drift)
            clean, truth, shifts = series[scale]
            sel = list(range(5)) if n_img == 5 else list(SUBSET3)
            true_df = np.asarray(DEFOCUS)[sel]
            nominal = true_df * a.scale_error
            fits = []
            for seed in seeds:
                rng = np.random.default_rng([seed, int(dose)])
                images = rng.poisson(np.clip(clean[sel], 0, None) * dose).astype(float)
                res, elapsed, msgs = run_fit(images, nominal, dose, seed, amp, a.max_iterations, a.replicates,
                                             theta=case.endswith("-theta"))
                f = score(res, true_df, shifts[sel], truth)
                f.update(seed=seed, time_s=elapsed, warnings=msgs)
                fits.append(f)
            row = dict(dose=dose, case=case, images=n_img, phase_scale=scale, refine_amplitude=amp,
                       seeds=seeds, **summarise(fits), fits=fits)
            rows.append(row)
            ni = ",".join(row["not_identifiable"]) or "-"
            print(f"{dose:6g} {case:>14} {n_img:2d} {row['max_defocus_error_pct']:8.3f} "
                  f"{row['worst_error_nm']:8.0f} {row['worst_se_nm']:8.0f} {row['max_z']:10.2f} "
                  f"{row['coverage']:7.2f} {row['max_defocus_error_free_pct']:6.3f} "
                  f"{row['max_defocus_offset_nm']:7.0f} {row['max_shift_error_px']:8.3f} "
                  f"{row['shift_coverage']:9.2f} {row['max_shift_error_free_px']:9.3f} "
                  f"{row['accuracy']:6.3f} {ni:>10} {row['time_s']:7.1f}", flush=True)
            if "max_theta_error_pct" in row:
                print(f"{'':>6} {'':>14}    theta_c: largest error {row['max_theta_error_pct']:.2f} %, "
                      f"within 2 SE {row['theta_coverage']:.2f}", flush=True)
    # over the grid: the values a fit reports as measured (not held at the nominal
    # values, not left without error bars by a misfit)
    z = np.array([v for r in rows for f in r["fits"] if "defocus" not in f["not_identifiable"]
                  for v in f["z"]], dtype=float)
    covered = [c for r in rows for f in r["fits"] if "shifts" not in f["not_identifiable"]
               for k, pair in enumerate(f["shift_covered"]) if k in f["shift_reference"]
               for c in pair]
    z = z[np.isfinite(z)]
    if z.size:
        print(f"\nover the grid: defocus within +-2 SE in {np.mean(z <= 2):.3f} of {z.size} values, "
              f"shifts in {np.mean(covered):.3f} of {len(covered)} components (fits whose defocus "
              f"was held, or whose misfit left no error bars, not counted)")
    if a.json:
        Path(a.json).write_text(json.dumps(dict(
            replicates=a.replicates, size=a.size, pixel_size=PIXEL_SIZE, microscope=MICROSCOPE, defocus_true=DEFOCUS,
            scale_error=a.scale_error, drift=a.drift, seeds=seeds, rows=rows), indent=1))
    return rows


if __name__ == "__main__":
    main()
