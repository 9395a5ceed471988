"""The ``hyperspy-lorentz`` command line: a demonstration and batch reconstruction.

``hyperspy-lorentz demo`` needs no input: it simulates a skyrmion-lattice focal
series with Poisson noise, drift and a defocus error, reconstructs it with AD and
TIE, and writes the results. ``hyperspy-lorentz reconstruct FILES...`` turns vendor
files into calibrated phase and induction maps.

Exit status: 0 on success, 1 on bad input or a failed reconstruction (with a
one-line reason on standard error), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


# --------------------------------------------------------------------- output
class _Output:
    """Write results into a temporary folder and move it into place at the end.

    A run that fails leaves nothing at the output path, so partial results never
    look complete.
    """

    def __init__(self, path, overwrite):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise CLIError(f"{self.path} exists; choose another --output or pass --overwrite.")
        self.overwrite = overwrite
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent.resolve()
                                          if self.path.parent.exists() else None))

    def file(self, name):
        return self.tmp / name

    def commit(self):
        if self.path.exists():
            if self.path.is_dir():
                shutil.rmtree(self.path)
            else:
                self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.tmp), str(self.path))

    def discard(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


# ----------------------------------------------------------------------- demo
def _demo_series(size, seed):
    """Simulate the demo's focal series; return (series, truth dict)."""
    from hyperspy_lorentz.physics import magnetisation, textures
    from hyperspy_lorentz.simulation import simulate_focal_series

    pixel = 4.0  # nm
    texture = textures.skyrmion_lattice((size, size), period=size * pixel / 4, pixel_size=pixel)
    thickness = 40.0  # nm
    ms = 3.8e5  # A/m, a B20 / multilayer-like value
    phase = magnetisation.magnetic_phase(texture.mx, texture.my, ms=ms, thickness=thickness, pixel_size=pixel)
    # Skyrmion contrast at these fields needs large defocus: +-0.3 mm.
    truth_defocus = np.array([-3.0e5, 0.0, 3.0e5])
    rng = np.random.default_rng(seed)
    truth_shifts = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    truth_shifts[0] = rng.uniform(-1.5, 1.5, 2)
    truth_shifts[2] = rng.uniform(-1.5, 1.5, 2)
    s = simulate_focal_series(
        phase,
        defocus=truth_defocus,
        scale=pixel,
        shifts=truth_shifts,
        dose=400,
        seed=seed,
    )
    # The microscope's reading of the defocus is 4% off, as it often is.
    s.set_defocus(truth_defocus * 1.04)
    s.metadata.General.title = "Simulated skyrmion lattice"
    return s, {"phase": phase, "defocus": truth_defocus, "shifts": truth_shifts, "ms": ms,
               "thickness": thickness}


def _figure(path, series, ad, tie, induction, truth_phase=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hyperspy_lorentz.physics.colour import colour_wheel

    n = series.axes_manager["defocus"].size
    fig, axes = plt.subplots(2, max(n, 3), figsize=(4 * max(n, 3), 8), constrained_layout=True)
    ext = None
    sx, sy = series.axes_manager.signal_axes
    ext = [sx.axis[0], sx.axis[-1], sy.axis[-1], sy.axis[0]]
    for i, df in enumerate(series.axes_manager["defocus"].axis):
        ax = axes[0, i]
        ax.imshow(series.inav[i].data, cmap="gray", extent=ext)
        ax.set_title(f"image at {df / 1000:+.2f} µm (nominal)")
        ax.set_xlabel("x (nm)")
    for j in range(n, axes.shape[1]):
        axes[0, j].set_axis_off()
    vmin, vmax = np.percentile(ad.data, [1, 99])
    for ax, sig, title in ((axes[1, 0], tie, "TIE phase (rad)"), (axes[1, 1], ad, "AD phase (rad)")):
        im = ax.imshow(sig.data, cmap="viridis", extent=ext, vmin=vmin, vmax=vmax)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.8)
    rgb = induction.get_color_signal()
    ax = axes[1, 2]
    ax.imshow(np.stack([rgb.data["R"], rgb.data["G"], rgb.data["B"]], axis=-1), extent=ext)
    ax.set_title(f"AD induction (max {rgb.metadata.Signal.Colour.max_magnitude:.1f} {induction.units})")
    inset = ax.inset_axes([0.78, 0.78, 0.22, 0.22])
    inset.imshow(colour_wheel(96))
    inset.set_axis_off()
    for j in range(3, axes.shape[1]):
        axes[1, j].set_axis_off()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_demo(args):
    import hyperspy_lorentz  # noqa: F401 (registers nothing, imports fast)
    from hyperspy_lorentz.reconstruction.metrics import phase_accuracy

    out = _Output(args.output, args.overwrite)
    try:
        t0 = time.perf_counter()
        series, truth = _demo_series(args.size, args.seed)
        print(f"Simulated a {series.axes_manager['defocus'].size}-image focal series of "
              f"{args.size} x {args.size} pixels (skyrmion lattice, 400 e-/pixel, drift, "
              "defocus reading 4% off).")
        tie = series.reconstruct_phase(method="tie", show_progressbar=False)
        ad = series.reconstruct_phase(
            method="ad", refine=("defocus", "shifts"), likelihood="poisson", seed=args.seed,
            max_iterations=args.iterations, show_progressbar=not args.quiet,
        )
        induction = ad.induction()
        ad.save(out.file("phase_ad.hspy"))
        tie.save(out.file("phase_tie.hspy"))
        induction.save(out.file("induction_ad.hspy"))
        series.save(out.file("focal_series.hspy"))
        _figure(out.file("demo.png"), series, ad, tie, induction)
        rec = ad.metadata.Signal.Reconstruction
        acc_ad = phase_accuracy(ad.data, truth["phase"])
        acc_tie = phase_accuracy(tie.data, truth["phase"])
        lines = [
            "",
            f"{'parameter':<28}{'truth':>22}{'nominal':>22}{'AD retrieved':>22}",
        ]
        nominal = series.axes_manager["defocus"].axis
        for i in range(truth["defocus"].size):
            lines.append(
                f"{'defocus image ' + str(i) + ' (nm)':<28}{truth['defocus'][i]:>22.1f}"
                f"{nominal[i]:>22.1f}{rec.defocus[i]:>22.1f}"
            )
        shifts = np.asarray(rec.shifts)
        for i in range(truth["defocus"].size):
            t = truth["shifts"][i] - truth["shifts"][1]
            lines.append(
                f"{'drift image ' + str(i) + ' (px)':<28}{f'({t[0]:+.2f}, {t[1]:+.2f})':>22}"
                f"{'(+0.00, +0.00)':>22}{f'({shifts[i][0]:+.2f}, {shifts[i][1]:+.2f})':>22}"
            )
        lines += [
            "",
            f"phase accuracy (normalised cross-correlation with the truth): AD {acc_ad:.4f}, TIE {acc_tie:.4f}",
            f"AD: {rec.iterations} iterations in {rec.time_s:.1f} s; total {time.perf_counter() - t0:.1f} s",
        ]
        print("\n".join(lines))
        (out.file("summary.txt")).write_text("\n".join(lines).lstrip() + "\n")
        out.commit()
        print(f"\nWrote {out.path}/: phase_ad.hspy, phase_tie.hspy, induction_ad.hspy, "
              "focal_series.hspy, demo.png, summary.txt")
    except BaseException:
        out.discard()
        raise
    return 0


# ---------------------------------------------------------------- reconstruct
def _load(files, lazy):
    import hyperspy.api as hs

    missing = [f for f in files if not Path(f).exists()]
    if missing:
        raise CLIError(f"file not found: {missing[0]}")
    try:
        if len(files) == 1:
            s = hs.load(files[0], lazy=lazy)
        else:
            signals = [hs.load(f, lazy=lazy) for f in files]
            shapes = {tuple(x.axes_manager.signal_shape) for x in signals}
            if len(shapes) > 1:
                raise CLIError(
                    "the files hold images of different sizes "
                    f"({', '.join('x'.join(map(str, sh)) for sh in sorted(shapes))}); crop or bin them to one size"
                )
            s = hs.stack(signals, new_axis_name="defocus") if len(files) > 1 else signals[0]
            s.original_metadata.set_item("stack_elements", {
                f"element{i}": {"original_metadata": x.original_metadata.as_dictionary(),
                                "metadata": x.metadata.as_dictionary()}
                for i, x in enumerate(signals)
            })
    except CLIError:
        raise
    except Exception as exc:  # a reader's own error, reported in one line
        raise CLIError(f"could not read {files[0] if len(files) == 1 else 'the files'}: {exc}") from None
    if isinstance(s, list):
        raise CLIError(f"{files[0]} holds {len(s)} signals; give one file per focal series")
    if s.axes_manager.signal_dimension != 2:
        raise CLIError("the data are not images (2-D signals)")
    s.set_signal_type("lorentz_focal_series")
    return s


def cmd_reconstruct(args):
    import hyperspy_lorentz  # noqa: F401

    client = None
    if args.scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise CLIError("--scheduler needs dask.distributed: pip install 'dask[distributed]'") from None
        try:
            client = Client(args.scheduler, timeout="10s")
        except Exception as exc:
            raise CLIError(f"cannot reach the dask scheduler at {args.scheduler}: {exc}") from None
    out = _Output(args.output, args.overwrite)
    try:
        s = _load(args.files, lazy=bool(args.lazy or client))
        if args.defocus:
            s.set_defocus(args.defocus, units=args.defocus_units)
        elif s._defocus_axis(required=False) is None:
            try:
                s.set_defocus()
            except ValueError as exc:
                raise CLIError(f"{exc} On the command line: --defocus -1.6 0 1.6 --defocus-units mm") from None
        if args.beam_energy:
            s.set_microscope_parameters(beam_energy=args.beam_energy)
        if args.pixel_size:
            s.set_microscope_parameters(pixel_size=args.pixel_size)
        kwargs = {}
        if args.method == "ad":
            kwargs.update(refine=tuple(args.refine or ()), max_iterations=args.iterations)
            if args.likelihood:
                kwargs["likelihood"] = args.likelihood
        phase = s.reconstruct_phase(method=args.method, show_progressbar=not args.quiet, **kwargs)
        if phase._lazy:
            phase.compute(show_progressbar=not args.quiet)
        induction = phase.induction()
        fmt = args.format
        phase.save(out.file(f"phase.{fmt}"))
        induction.save(out.file(f"induction.{fmt}"))
        _result_png(out.file("phase.png"), phase, induction)
        out.commit()
        print(f"Wrote {out.path}/phase.{fmt}, induction.{fmt}, phase.png")
    except ValueError as exc:
        out.discard()
        raise CLIError(str(exc)) from None
    except BaseException:
        out.discard()
        raise
    finally:
        if client is not None:
            client.close()
    return 0


def _result_png(path, phase, induction):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hyperspy_lorentz.physics.colour import colour_wheel

    p = phase.data.reshape((-1,) + phase.data.shape[-2:])[0]
    rgb = induction.get_color_signal()
    c = rgb.data.reshape((-1,) + rgb.data.shape[-2:])[0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), constrained_layout=True)
    im = axes[0].imshow(p, cmap="viridis")
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="phase (rad)")
    axes[0].set_title(phase.metadata.General.title)
    axes[1].imshow(np.stack([c["R"], c["G"], c["B"]], axis=-1))
    axes[1].set_title("induction")
    inset = axes[1].inset_axes([0.78, 0.78, 0.22, 0.22])
    inset.imshow(colour_wheel(96))
    inset.set_axis_off()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------- main
def build_parser():
    parser = argparse.ArgumentParser(
        prog="hyperspy-lorentz",
        description="Lorentz TEM phase retrieval (AD and TIE) with HyperSpy.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="simulate a skyrmion-lattice focal series and reconstruct it")
    demo.add_argument("--output", default="hyperspy_lorentz_demo", help="output folder")
    demo.add_argument("--size", type=int, default=192, help="image size in pixels (default 192)")
    demo.add_argument("--iterations", type=int, default=300, help="maximum AD iterations")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    rec = sub.add_parser("reconstruct", help="reconstruct focal series from vendor files")
    rec.add_argument("files", nargs="+", help="one file holding the series, or one file per image")
    rec.add_argument("--defocus", type=float, nargs="+", help="defocus of each image (see --defocus-units)")
    rec.add_argument("--defocus-units", default="nm", help="unit of --defocus: nm, um or mm")
    rec.add_argument("--method", choices=("ad", "tie"), default="ad")
    rec.add_argument("--refine", nargs="*", choices=("defocus", "shifts", "theta_c", "astigmatism", "scale", "amplitude"),
                     help="experimental parameters to refine (AD)")
    rec.add_argument("--likelihood", choices=("gaussian", "poisson"))
    rec.add_argument("--iterations", type=int, default=500, help="maximum AD iterations")
    rec.add_argument("--beam-energy", type=float, help="keV, where the files do not hold it")
    rec.add_argument("--pixel-size", type=float, help="nm, where the files do not hold it")
    rec.add_argument("--output", required=True, help="output folder")
    rec.add_argument("--format", choices=("hspy", "zspy"), default="hspy")
    rec.add_argument("--lazy", action="store_true", help="load lazily (large stacks)")
    rec.add_argument("--scheduler", help="address of a dask.distributed scheduler, e.g. tcp://host:8786")
    rec.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    rec.add_argument("--quiet", action="store_true", help="no progress bars")
    rec.set_defaults(func=cmd_reconstruct)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"hyperspy-lorentz: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hyperspy-lorentz: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
