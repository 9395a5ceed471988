"""The ``hyperspy-lorentz`` command line: a demonstration and batch reconstruction.

``hyperspy-lorentz demo`` needs no input: it simulates a skyrmion-lattice focal
series with Poisson noise, drift and a defocus error, reconstructs it with AD and
TIE, and writes the results. ``hyperspy-lorentz reconstruct FILES...`` turns vendor
files into calibrated phase and induction maps.

Exit status: 0 on success, 1 on bad input or a failed reconstruction (with a
one-line reason on standard error), 2 on a usage error, 130 when interrupted.
Outputs are written to a temporary folder beside ``--output`` and renamed into
place at the end: a failed run leaves nothing that looks complete.
"""

from __future__ import annotations

import argparse
import os
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
        # The temporary folder sits beside the output: the final move is a rename,
        # and dask workers that write into it see the same file system.
        parent = self.path.resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.incomplete.", dir=parent))

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
#: Electrons per pixel of the demo: low enough that the TIE's noise amplification
#: shows, as in most in-situ and beam-sensitive work.
_DEMO_DOSE = 100.0
#: True defocus of the demo's images, nm.
_DEMO_DEFOCUS = (-3.0e5, -1.5e5, 0.0, 1.5e5, 3.0e5)
#: The microscope's reading of the defocus, relative to the truth.
_DEMO_DEFOCUS_READING = 1.04
#: Largest drift of a defocused image, px.
_DEMO_DRIFT = 1.5


def _demo_series(size, seed, dose=_DEMO_DOSE):
    """Simulate the demo's focal series; return (series, truth dict).

    :func:`hyperspy_lorentz.data.skyrmion_lattice`: a ``size`` x ``size`` window
    (as every micrograph is) onto a Bloch skyrmion lattice (period 70 nm, 2.5 nm
    pixels) in an 80 nm FeGe-like film, a weak phase object, five images at
    -0.3 ... +0.3 mm with Poisson noise at ``dose``, drift of up to 1.5 px on
    every defocused image, and a defocus reading 4 % too large.
    """
    from hyperspy_lorentz import data

    s = data.skyrmion_lattice(shape=(size, size), dose=dose, seed=seed, defocus=_DEMO_DEFOCUS,
                              drift=_DEMO_DRIFT)
    sim = s.metadata.Simulation
    truth = {"phase": np.asarray(sim.phase, dtype=float),
             "defocus": np.asarray(_DEMO_DEFOCUS, dtype=float),
             "shifts": np.asarray(sim.shifts, dtype=float), "dose": dose}
    # The microscope's reading of the defocus is 4% off, as it often is.
    s.set_defocus(truth["defocus"] * _DEMO_DEFOCUS_READING)
    s.metadata.General.title = "Simulated skyrmion lattice"
    return s, truth


def _aligned(retrieved, truth):
    """``retrieved`` shifted (sub-pixel, periodic) onto ``truth``; and the shift (dy, dx).

    A phase retrieved from drifting images is defined up to a rigid shift (the
    in-focus image of a phase object has no contrast to pin it down).
    """
    from scipy.ndimage import fourier_shift
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(truth, retrieved, upsample_factor=20, normalization=None)
    moved = np.fft.ifftn(fourier_shift(np.fft.fftn(retrieved), shift)).real
    return moved, np.asarray(shift)


def _figure(path, series, phases, induction, truth_phase):
    """Images, true / TIE / AD phases, AD induction colour map with wheel, profiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hyperspy_lorentz.physics.colour import colour_wheel, induction_to_rgb

    sx, sy = series.axes_manager.signal_axes
    ext = [sx.axis[0], sx.axis[-1], sy.axis[-1], sy.axis[0]]
    fig, axes = plt.subplots(2, 4, figsize=(17, 8.2), constrained_layout=True)
    dfs = series.axes_manager["defocus"].axis
    shown = [0, len(dfs) // 2, len(dfs) - 1]  # most under-, in-, most overfocused
    for ax, i in zip(axes[0, :3], shown):
        ax.imshow(series.data[i], cmap="gray", extent=ext)
        ax.set_title(f"image at {dfs[i] / 1e6:+.3f} mm (nominal)")
    truth = truth_phase - truth_phase.mean()
    vmin, vmax = np.percentile(truth, [0.5, 99.5])
    panels = [(axes[0, 3], truth, "true phase (rad)")]
    panels += [(axes[1, j], phases[name][0] - phases[name][0].mean(), f"{name} phase (rad), accuracy "
                f"{phases[name][1]:.3f}") for j, name in enumerate(("TIE", "AD"))]
    for ax, data, title in panels:
        im = ax.imshow(data, cmap="viridis", extent=ext, vmin=vmin, vmax=vmax)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.75)
    bx, by = (np.asarray(induction.data[k]) for k in range(2))
    vmax_b = float(np.percentile(np.hypot(bx, by), 99)) or 1.0
    ax = axes[1, 2]
    ax.imshow(np.clip(induction_to_rgb(bx, by, max_magnitude=vmax_b), 0, 1), extent=ext)
    ax.set_title(f"AD induction (full colour at {vmax_b:.0f} {induction.units})")
    inset = ax.inset_axes([0.80, 0.80, 0.19, 0.19])
    inset.imshow(colour_wheel(96))
    inset.set_axis_off()
    ax = axes[1, 3]
    row = int(np.argmin(truth.min(axis=1)))  # through skyrmion cores
    ax.plot(sx.axis, truth[row], "k-", lw=2, label="truth")
    for name, style in (("TIE", "C1--"), ("AD", "C0-")):
        data = phases[name][0]
        ax.plot(sx.axis, data[row] - data.mean(), style, lw=1.2, label=name)
    ax.set_xlabel(f"x ({sx.units})")
    ax.set_ylabel("phase (rad)")
    ax.set_title(f"profile along y = {sy.axis[row]:.0f} {sy.units}")
    low, high = truth[row].min(), truth[row].max()
    ax.set_ylim(low - 0.15 * (high - low), high + 0.45 * (high - low))
    ax.legend(loc="upper center", ncol=3, frameon=False)
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    width = float(sx.axis[-1] - sx.axis[0])
    bar = float(10 ** np.floor(np.log10(width / 4)))  # 1, 2 or 5 x 10^k, about a fifth
    bar = max(b * bar for b in (1, 2, 5) if b * bar <= width / 4)
    for a in list(axes[0, :3]) + [axes[0, 3], axes[1, 0], axes[1, 1], axes[1, 2]]:
        a.set_xlabel(f"x ({sx.units})")
        a.set_ylabel(f"y ({sy.units})")
        a.add_artist(AnchoredSizeBar(a.transData, bar, f"{bar:g} {sx.units}", "lower left",
                                     pad=0.4, color="white", frameon=False, size_vertical=width / 150))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_demo(args):
    from hyperspy_lorentz.reconstruction.metrics import phase_accuracy

    out = _Output(args.output, args.overwrite)
    try:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        series, truth = _demo_series(args.size, args.seed, dose=args.dose)
        h, w = series.axes_manager.signal_shape[::-1]
        print(f"Simulated a {series.axes_manager['defocus'].size}-image focal series of {h} x {w} pixels "
              f"(skyrmion lattice, {args.dose:g} e-/pixel, drift, defocus reading 4% off).")
        tie = series.reconstruct_phase(method="tie", show_progressbar=False)
        ad = series.reconstruct_phase(
            method="ad", refine=("defocus", "shifts"), likelihood="poisson", seed=args.seed,
            max_iterations=args.iterations, show_progressbar=not args.quiet,
        )
        induction = ad.induction(show_progressbar=False)
        ad.save(out.file("phase_ad.hspy"), show_progressbar=False)
        tie.save(out.file("phase_tie.hspy"), show_progressbar=False)
        induction.save(out.file("induction_ad.hspy"), show_progressbar=False)
        series.save(out.file("focal_series.hspy"), show_progressbar=False)
        phases = {}
        for name, sig in (("TIE", tie), ("AD", ad)):
            moved, shift = _aligned(np.asarray(sig.data, dtype=float), truth["phase"])
            phases[name] = (moved, phase_accuracy(moved, truth["phase"]), shift)
        _figure(out.file("demo.png"), series, phases, induction, truth["phase"])

        rec = ad.metadata.Signal.Reconstruction
        nominal = series.axes_manager["defocus"].axis
        lines = ["", f"{'parameter':<30}{'truth':>16}{'nominal':>12}{'AD retrieved':>26}"
                     f"{'  within 2 SE':>14}"]
        df_fit = np.asarray(rec.defocus, dtype=float)
        se = np.asarray(rec.get_item("defocus_standard_error"), dtype=float) \
            if rec.has_item("defocus_standard_error") else np.full(df_fit.shape, np.nan)
        for i in range(truth["defocus"].size):
            err = abs(df_fit[i] - truth["defocus"][i])
            lines.append(f"{'defocus image ' + str(i) + ' (um)':<30}{truth['defocus'][i] / 1e3:>16.1f}"
                         f"{nominal[i] / 1e3:>12.1f}{f'{df_fit[i] / 1e3:.1f} +- {se[i] / 1e3:.1f}':>26}"
                         f"{'yes' if err <= 2 * se[i] else 'no':>14}")
        ref = [int(i) for i in np.atleast_1d(rec.shift_reference)]
        shifts = np.asarray(rec.shifts, dtype=float)
        sse = np.asarray(rec.get_item("shifts_standard_error"), dtype=float) \
            if rec.has_item("shifts_standard_error") else np.full(shifts.shape, np.nan)
        true_rel = truth["shifts"] - truth["shifts"][ref].mean(axis=0)
        for i in ref:
            t, r, e = true_rel[i], shifts[i], sse[i]
            ok = bool(np.all(np.abs(r - t) <= 2 * e))
            lines.append(f"{'drift image ' + str(i) + ' (px)':<30}{f'({t[0]:+.2f}, {t[1]:+.2f})':>16}"
                         f"{'(0, 0)':>12}{f'({r[0]:+.2f}, {r[1]:+.2f}) +- {max(e):.2f}':>26}"
                         f"{'yes' if ok else 'no':>14}")
        n_ok = sum(abs(df_fit[i] - truth["defocus"][i]) <= 2 * se[i] for i in range(df_fit.size))
        lines += [
            "",
            f"(Drift relative to the mean over the images with contrast, {ref}; not identifiable:",
            f" {', '.join(np.atleast_1d(rec.not_identifiable)) or 'nothing'}. The +- is the",
            " bootstrap standard error: the fit repeated on simulated data from the nominal values;",
            f" {n_ok} of {df_fit.size} defocus values are within 2 of them.)",
            "",
            "phase accuracy (normalised cross-correlation with the truth, after a rigid sub-pixel",
            f"alignment): AD {phases['AD'][1]:.4f}, TIE {phases['TIE'][1]:.4f}",
            f"AD: {rec.iterations} iterations in the fit, {rec.get_item('iterations_all_fits')} "
            f"with the race of starts, the tests at the nominal defocus and the bootstrap "
            f"(the progress bar's count), "
            f"{rec.time_s:.1f} s; total {time.perf_counter() - t0:.1f} s",
        ]
        print("\n".join(lines))
        out.file("summary.txt").write_text("\n".join(lines).lstrip() + "\n")
        out.commit()
        print(f"\nWrote {out.path}/: phase_ad.hspy, phase_tie.hspy, induction_ad.hspy, "
              "focal_series.hspy, demo.png, summary.txt")
    except BaseException:
        out.discard()
        raise
    return 0


# ---------------------------------------------------------------- reconstruct
_SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://", "ws://", "wss://")


def _connect(address):
    """A dask.distributed Client for ``address`` (or a scheduler file); fail fast."""
    try:
        from distributed import Client
    except ImportError:
        raise CLIError("--scheduler needs dask.distributed: pip install 'dask[distributed]'") from None
    path = Path(address)
    if address.endswith(".json") or (path.exists() and path.is_file()):
        if not path.is_file():
            raise CLIError(f"scheduler file not found: {address}")
        try:
            return Client(scheduler_file=str(path), timeout="10s")
        except Exception as exc:
            raise CLIError(f"cannot reach the dask scheduler of {address}: {_one_line(exc)}") from None
    if not address.startswith(_SCHEMES):
        if "://" in address:
            raise CLIError(f"unknown scheduler protocol in {address!r}; use e.g. tcp://host:8786")
        address = "tcp://" + address
    if address.startswith(("tcp://", "tls://")):
        import socket

        hostport = address.split("://", 1)[1].rstrip("/")
        host, sep, port = hostport.rpartition(":")
        if not sep or not port.isdigit():
            raise CLIError(f"the scheduler address {address!r} needs a port, e.g. tcp://host:8786")
        host = host.strip("[]") or "127.0.0.1"
        try:
            with socket.create_connection((host, int(port)), timeout=3):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise CLIError(f"cannot reach the dask scheduler at {address}: {reason}") from None
    try:
        return Client(address, timeout="10s")
    except Exception as exc:
        raise CLIError(f"cannot reach the dask scheduler at {address}: {_one_line(exc)}") from None


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


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
            for f, x in zip(files, signals):
                if isinstance(x, list):
                    raise CLIError(f"{f} holds {len(x)} signals; give files holding one image each")
                if x.axes_manager.navigation_dimension:
                    raise CLIError(
                        f"{f} holds a stack ({x.axes_manager.navigation_shape}); give one file per "
                        "image, or the stack as the only file"
                    )
                if not x.metadata.get_item("General.original_filename"):
                    # some readers (hspy) do not record it; the defocus may be in the name
                    x.metadata.set_item("General.original_filename", Path(f).name)
            shapes = {tuple(x.axes_manager.signal_shape) for x in signals}
            if len(shapes) > 1:
                sizes = ", ".join(
                    f"{Path(f).name}: {'x'.join(map(str, x.axes_manager.signal_shape))}"
                    for f, x in zip(files, signals)
                )
                raise CLIError(f"the files hold images of different sizes ({sizes}); crop or bin them to one size")
            # Not named "defocus" yet: set_defocus names it once the values are known.
            s = hs.stack(signals, new_axis_name="image", show_progressbar=False)
            s.original_metadata.set_item("stack_elements", {
                f"element{i}": {"original_metadata": x.original_metadata.as_dictionary(),
                                "metadata": x.metadata.as_dictionary()}
                for i, x in enumerate(signals)
            })
    except CLIError:
        raise
    except Exception as exc:  # a reader's own error, reported in one line
        raise CLIError(f"could not read {files[0] if len(files) == 1 else 'the files'}: {_one_line(exc)}") from None
    if isinstance(s, list):
        raise CLIError(f"{files[0]} holds {len(s)} signals; give one file per focal series")
    if s.axes_manager.signal_dimension != 2:
        raise CLIError(f"the data are not images (signal dimension {s.axes_manager.signal_dimension}, not 2)")
    if not s.axes_manager.navigation_dimension:
        raise CLIError(
            f"{files[0]} holds a single image: give one file per image of the focal series, "
            "or a file holding the whole series"
        )
    s.set_signal_type("lorentz_focal_series")
    return s


def _set_calibrations(s, args):
    """Defocus and microscope parameters from the files and the command line."""
    axis = args.defocus_axis
    if axis is not None and axis.lstrip("-").isdigit():
        axis = int(axis)
    convention = getattr(args, "convention", "ours") or "ours"
    try:
        if args.defocus:
            s.set_defocus(args.defocus, units=args.defocus_units, axis=axis, convention=convention)
        elif s._defocus_axis(required=False) is None:
            s.set_defocus(axis=axis, convention=convention)
        elif convention != "ours":
            # a defocus axis read with the files (e.g. .hspy): its values are in `convention`
            from hyperspy_lorentz.signals._common import DEFOCUS_CONVENTION_ITEM

            if s.metadata.has_item(DEFOCUS_CONVENTION_ITEM):
                raise CLIError(
                    "the files' defocus axis was already converted from the "
                    f"{s.metadata.get_item(DEFOCUS_CONVENTION_ITEM)!r} convention into ours "
                    f"(positive for overfocus); drop --convention {convention}")
            d = s.axes_manager["defocus"]
            s.set_defocus(np.asarray(d.axis), units=d.units or "nm", axis="defocus",
                          convention=convention)
    except ValueError as exc:
        text = str(exc)
        if "No defocus values were found" in text:
            text = ("the files hold no defocus axis and no defocus values were found in their "
                    "metadata or names; give them with --defocus (e.g. --defocus -1.6 0 1.6 --defocus-units mm)")
        elif "say which runs through focus" in text:
            nav = [a.name for a in s.axes_manager.navigation_axes]
            text = (f"the stack has {len(nav)} navigation axes ({', '.join(map(str, nav))}) and none is "
                    "named 'defocus'; say which runs through focus with --defocus-axis NAME_OR_INDEX")
        raise CLIError(text) from None
    if args.beam_energy is not None or args.pixel_size is not None:
        try:
            s.set_microscope_parameters(beam_energy=args.beam_energy, pixel_size=args.pixel_size)
        except (TypeError, ValueError) as exc:
            raise CLIError(str(exc)) from None
    p = s.get_microscope_parameters()
    if p["beam_energy_kV"] is None:
        raise CLIError("the beam energy is not in the files; give it with --beam-energy (keV)")
    if "pixel_size_nm" in p.get("problems", {}):
        raise CLIError(f"{p['problems']['pixel_size_nm']} On the command line, --pixel-size (nm) "
                       "sets both axes.")
    if p["pixel_size_nm"] is None:
        raise CLIError("the pixel size is not calibrated in the files; give it with --pixel-size (nm)")
    return p


def _method_kwargs(args):
    kwargs = {}
    if args.method == "ad":
        if args.iterations is not None:  # else the library's default
            kwargs["max_iterations"] = args.iterations
        if args.refine is not None:  # else the library's default (none)
            kwargs["refine"] = tuple(args.refine)
        if args.uniform_amplitude:
            kwargs["refine_amplitude"] = False
        if args.likelihood:
            kwargs["likelihood"] = args.likelihood
        if args.device:
            kwargs["device"] = args.device
        if args.seed is not None:
            kwargs["seed"] = args.seed
    elif args.qc is not None:
        kwargs["qc"] = args.qc
    return kwargs


def _scheduler_for_local_files(client):
    """dask config for writing HDF5 files here (h5py objects cannot go to workers)."""
    import contextlib

    import dask

    return dask.config.set(scheduler="threads") if client is not None else contextlib.nullcontext()


def cmd_reconstruct(args):
    import hyperspy_lorentz  # noqa: F401

    out = _Output(args.output, args.overwrite)  # refuses an existing output first: costs nothing
    client = None
    try:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        if args.scheduler:
            client = _connect(args.scheduler)
            n_workers = len(client.scheduler_info().get("workers", {}))
            print(f"Connected to the dask scheduler at {client.scheduler.address} ({n_workers} workers).")
        lazy = bool(args.lazy or client is not None)
        files = list(args.files)
        not_zarr = [f for f in files if Path(f).suffix.lower() != ".zspy"]
        if client is not None and not_zarr and not args.lazy:
            # HDF5-based and vendor files opened lazily cannot be shared with worker
            # processes: read them here and send the series to the workers.
            print("Reading the files here (only .zspy files are read by the workers).")
            s = _load(files, lazy=False)
            lazy_output = True
        elif client is not None and not_zarr:
            raise CLIError(
                f"{not_zarr[0]} cannot be read by the dask workers (only .zspy can): convert it "
                "with hs.load(...).save('series.zspy'), or drop --lazy to read it here"
            )
        else:
            s = _load(files, lazy=lazy)
            lazy_output = None
        p = _set_calibrations(s, args)
        shape = s.axes_manager.signal_shape[::-1]
        n_images = s.axes_manager["defocus"].size
        n_series = int(np.prod(s.axes_manager.navigation_shape)) // n_images
        print(f"{n_series} focal series of {n_images} images of {shape[0]} x {shape[1]} pixels, "
              f"defocus {', '.join(f'{d:g}' for d in p['defocus_nm'])} nm, "
              f"{p['beam_energy_kV']:g} keV, {p['pixel_size_nm']:.4g} nm/pixel; method {args.method.upper()}"
              + (" (lazy)" if lazy or lazy_output else ""))
        t0 = time.perf_counter()
        phase = s.reconstruct_phase(method=args.method, show_progressbar=not args.quiet,
                                    lazy_output=lazy_output, **_method_kwargs(args))
        fmt = args.format
        if phase._lazy:
            _write_lazy(phase, out, fmt, client, quiet=args.quiet)
        else:
            phase.save(out.file(f"phase.{fmt}"), show_progressbar=False)
            induction = phase.induction(show_progressbar=False)
            induction.save(out.file(f"induction.{fmt}"), show_progressbar=False)
        phase = _reload(out.file(f"phase.{fmt}"))
        induction = _reload(out.file(f"induction.{fmt}"))
        _result_png(out.file("phase.png"), phase, induction)
        summary = _summary(phase, p, time.perf_counter() - t0)
        out.file("summary.txt").write_text(summary + "\n")
        for sig in (phase, induction):
            _close(sig)
        out.commit()
        print(summary)
        print(f"Wrote {out.path}/: phase.{fmt}, induction.{fmt}, phase.png, summary.txt")
    except ValueError as exc:
        out.discard()
        raise CLIError(_one_line(exc)) from None
    except BaseException:
        out.discard()
        raise
    finally:
        if client is not None:
            client.close()
    return 0


def _write_lazy(phase, out, fmt, client, quiet):
    """Write a lazy reconstruction series by series; nothing is held in memory whole."""
    from hyperspy_lorentz.signals._series import save_lazy_result

    zspy = out.file("phase.zspy")
    save_lazy_result(phase, zspy, overwrite=True, show_progressbar=not quiet)
    # phase now reads from phase.zspy
    induction = phase.induction(show_progressbar=False)
    if fmt == "zspy":
        induction.save(out.file("induction.zspy"), show_progressbar=False)
        return
    with _scheduler_for_local_files(client):
        phase.save(out.file(f"phase.{fmt}"), show_progressbar=False)
        induction.save(out.file(f"induction.{fmt}"), show_progressbar=False)
    shutil.rmtree(zspy)


def _close(signal):
    """Close the file a lazily loaded signal reads from (before the folder moves)."""
    try:
        signal.close_file()
    except Exception:  # zarr stores need no closing; never fail a finished run here
        pass


def _reload(path):
    import hyperspy.api as hs

    return hs.load(path, lazy=True)


def _summary(phase, p, seconds):
    rec = phase.metadata.get_item("Signal.Reconstruction")
    rec = rec.as_dictionary() if rec is not None else {}
    nav = phase.axes_manager.navigation_shape
    n_series = int(np.prod(nav)) if nav else 1
    lines = [f"{rec.get('method', '?').upper()} reconstruction of {n_series} focal series in {seconds:.1f} s"]
    defocus = rec.get("defocus")
    if defocus is not None and rec.get("method") == "ad":
        d = np.asarray(defocus, dtype=float).reshape(-1, np.asarray(p["defocus_nm"]).size)
        lines.append(f"{'defocus (nm)':<16}{'nominal':>14}{'retrieved' + (' (series 0)' if n_series > 1 else ''):>24}")
        for k, nominal in enumerate(p["defocus_nm"]):
            lines.append(f"{'  image ' + str(k):<16}{nominal:>14.1f}{d[0, k]:>24.1f}")
    for key in ("iterations", "converged", "qc"):
        value = rec.get(key)
        if value is not None:
            v = np.asarray(value)
            lines.append(f"{key}: {v.item() if v.size == 1 else v.ravel()[:8].tolist()}")
    return "\n".join(lines)


def _first(signal):
    """The first navigation position of a (lazy) signal, as an eager 2-D array."""
    data = signal.data
    data = data[(0,) * (data.ndim - 2)]
    return np.asarray(data.compute() if hasattr(data, "compute") else data)


def _result_png(path, phase, induction):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hyperspy_lorentz.physics.colour import colour_wheel, induction_to_rgb

    p = _first(phase)
    b = induction.data  # (*outer, component, y, x)
    b = b[(0,) * (b.ndim - 3)]
    bx, by = np.asarray(b.compute() if hasattr(b, "compute") else b)
    mag = np.hypot(bx, by)
    vmax = float(np.percentile(mag, 99.5)) or 1.0
    rgb = induction_to_rgb(bx, by, max_magnitude=vmax)
    sx, sy = phase.axes_manager.signal_axes
    ext = [sx.axis[0], sx.axis[-1], sy.axis[-1], sy.axis[0]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), constrained_layout=True)
    im = axes[0].imshow(p, cmap="viridis", extent=ext)
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="phase (rad)")
    title = phase.metadata.General.title
    nav = phase.axes_manager.navigation_shape
    axes[0].set_title(title + (" (series 0)" if nav else ""))
    axes[1].imshow(np.clip(rgb, 0, 1), extent=ext)
    axes[1].set_title(f"induction (full brightness at {vmax:.3g} {induction.units})")
    for ax in axes:
        ax.set_xlabel(f"x ({sx.units})")
        ax.set_ylabel(f"y ({sy.units})")
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
    demo.add_argument("--size", type=int, default=192,
                      help="image size in pixels (default 192: a 192 x 192 window onto the lattice)")
    demo.add_argument("--dose", type=float, default=_DEMO_DOSE,
                      help=f"electrons per pixel (default {_DEMO_DOSE:g})")
    demo.add_argument("--threads", type=int, default=1,
                      help="PyTorch threads (default 1: the images are small; 0 keeps PyTorch's default)")
    demo.add_argument("--iterations", type=int, default=500, help="maximum AD iterations")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    rec = sub.add_parser(
        "reconstruct", help="reconstruct focal series from vendor files",
        description="Reconstruct the phase of every focal series in FILES and write phase and "
                    "induction maps (HyperSpy files) with a PNG preview into the --output folder.",
    )
    rec.add_argument("files", nargs="+",
                     help="one file holding the series (or a stack of series), or one file per image")
    rec.add_argument("--output", required=True, help="output folder (refused if it exists, unless --overwrite)")
    rec.add_argument("--defocus", type=float, nargs="+", metavar="DF",
                     help="defocus of each image, positive for overfocus (see --defocus-units); "
                          "default: read from the files")
    rec.add_argument("--defocus-units", default="nm", help="unit of --defocus: nm (default), um or mm")
    rec.add_argument("--convention", choices=("ours", "pylorentz", "kirkland"), default="ours",
                     help="sign convention of the defocus values (given or read from the files): "
                          "ours (default; positive for overfocus, as on the microscope), pylorentz "
                          "(series simulated with PyLorentz or the AD-LTEM notebooks) or kirkland "
                          "(positive for underfocus); the last two are negated into ours")
    rec.add_argument("--defocus-axis", metavar="NAME_OR_INDEX",
                     help="the navigation axis that runs through focus, where a stack has several")
    rec.add_argument("--method", choices=("ad", "tie"), default="ad", help="ad (default) or tie")
    rec.add_argument("--refine", nargs="*",
                     choices=("defocus", "shifts", "theta_c", "astigmatism", "scale", "amplitude"),
                     help="AD: experimental parameters to refine besides the exit wave "
                          "(default: none), e.g. --refine defocus shifts; the amplitude is "
                          "refined either way unless --uniform-amplitude ('amplitude' is "
                          "accepted here for older command lines)")
    rec.add_argument("--uniform-amplitude", action="store_const", const=True, default=None,
                     help="AD: hold the exit-wave amplitude (the in-focus image's, or uniform) "
                          "instead of refining it")
    rec.add_argument("--likelihood", choices=("gaussian", "poisson"), help="AD: noise model")
    rec.add_argument("--iterations", type=int,
                     # literal, not read from the solvers: importing them (torch) would
                     # slow every --help; test_iterations_default_is_the_librarys checks it
                     help="AD: maximum iterations (default: the library's, 500 for a focal "
                          "series, 1000 for a single image)")
    rec.add_argument("--device", help="AD: torch device, auto (default), cpu or cuda")
    rec.add_argument("--seed", type=int, help="AD: random seed")
    rec.add_argument("--threads", type=int,
                     help="PyTorch threads of an AD fit run in this process (default: PyTorch's)")
    rec.add_argument("--qc", type=float, help="TIE: regularisation frequency, 1/nm (default from the noise)")
    rec.add_argument("--beam-energy", type=float, help="keV, where the files do not hold it")
    rec.add_argument("--pixel-size", type=float, help="nm, where the files do not hold it")
    rec.add_argument("--format", choices=("hspy", "zspy"), default="hspy", help="output format (default hspy)")
    rec.add_argument("--lazy", action="store_true",
                     help="load lazily and reconstruct series by series (large stacks)")
    rec.add_argument("--scheduler", metavar="ADDRESS",
                     help="run on a dask.distributed scheduler: tcp://host:8786 or a scheduler file "
                          "(implies --lazy for .zspy input)")
    rec.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    rec.add_argument("--quiet", action="store_true", help="no progress bars")
    rec.set_defaults(func=cmd_reconstruct)
    return parser


class _NoNumbaNotice:
    """Drop HyperSpy's "Numba is not installed" log notice (nothing the user must act on)."""

    @staticmethod
    def filter(record):
        return "Numba is not installed" not in record.getMessage()


class _Warnings:
    """Show warnings on one line each, as ``hyperspy-lorentz: warning: ...``."""

    def __enter__(self):
        import logging
        import warnings

        self._filter = _NoNumbaNotice()
        self._loggers = [logging.getLogger(name) for name in ("hyperspy", "hyperspy.decorators")]
        for logger in self._loggers:
            logger.addFilter(self._filter)

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", FutureWarning)  # library deprecations: not the user's business
        warnings.simplefilter("ignore", DeprecationWarning)

        def show(message, category, filename, lineno, file=None, line=None):
            print(f"hyperspy-lorentz: warning: {_one_line(message)}", file=sys.stderr)

        warnings.showwarning = show
        return self

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        for logger in self._loggers:
            logger.removeFilter(self._filter)
        return False


#: Options of ``reconstruct`` that only one method uses, with that method.
METHOD_OPTIONS = {
    "refine": "ad",
    "uniform_amplitude": "ad",
    "likelihood": "ad",
    "iterations": "ad",
    "device": "ad",
    "seed": "ad",
    "threads": "ad",
    "qc": "tie",
}


def check_method_options(args):
    """The options given that the chosen ``--method`` does not use, as one message.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of ``reconstruct``.

    Returns
    -------
    str or None
        A message naming each such option and the method that uses it, or
        ``None`` where every option given is used.
    """
    unused = [name for name, method in METHOD_OPTIONS.items()
              if getattr(args, name, None) is not None and method != args.method]
    if not unused:
        return None
    names = ", ".join("--" + name.replace("_", "-") for name in unused)
    other = {"ad": "tie", "tie": "ad"}[args.method]
    return (f"{names} {'is an option' if len(unused) == 1 else 'are options'} of --method {other}, "
            f"which --method {args.method} does not use; drop {'it' if len(unused) == 1 else 'them'} "
            f"or choose --method {other}")


def main(argv=None):
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "reconstruct":
        problem = check_method_options(args)
        if problem:
            parser.error(problem)  # a usage error: exit status 2
    try:
        with _Warnings():
            return args.func(args)
    except CLIError as exc:
        print(f"hyperspy-lorentz: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hyperspy-lorentz: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("HYPERSPY_LORENTZ_DEBUG"):
            raise
        print(f"hyperspy-lorentz: error: {type(exc).__name__}: {_one_line(exc)} "
              "(set HYPERSPY_LORENTZ_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
