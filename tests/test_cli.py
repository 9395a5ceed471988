"""The ``hyperspy-lorentz`` command line: ``demo`` and ``reconstruct``.

Most tests call :func:`hyperspy_lorentz.cli.main` in-process; one runs the
installed console script.
"""

import shutil
import subprocess
import sys
import time

import hyperspy.api as hs
import numpy as np
import pytest

from hyperspy_lorentz.cli import main
from hyperspy_lorentz.simulation import simulate_focal_series

SIZE = 48
DEFOCUS = (-800.0, 0.0, 800.0)


def _phase(k=0):
    y, x = np.mgrid[-SIZE // 2:SIZE // 2, -SIZE // 2:SIZE // 2]
    return (1.5 + 0.3 * k) * np.exp(-((x - 2 * k) ** 2 + y**2) / 120.0)


@pytest.fixture(scope="module")
def series():
    return simulate_focal_series(_phase(), defocus=DEFOCUS, scale=5.0, dose=2000, seed=1)


@pytest.fixture(scope="module")
def files(series, tmp_path_factory):
    """Input files: a series, one file per image, odd sizes, stacks."""
    d = tmp_path_factory.mktemp("cli_in")
    paths = {"series": d / "series.hspy"}
    series.save(paths["series"], show_progressbar=False)
    singles = []
    for i, name in enumerate(("img_m800nm", "img_0nm", "img_p800nm")):
        im = hs.signals.Signal2D(series.data[i].copy())
        for ax in im.axes_manager.signal_axes:
            ax.scale, ax.units = 5.0, "nm"
        im.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 200.0)
        singles.append(d / f"{name}.hspy")
        im.save(singles[-1], show_progressbar=False)
    paths["singles"] = singles
    big = hs.signals.Signal2D(np.ones((SIZE + 16, SIZE), np.float32))
    paths["big"] = d / "big.hspy"
    big.save(paths["big"], show_progressbar=False)
    # a stack whose navigation axes have no names and no defocus
    raw = hs.signals.Signal2D(np.stack([series.data, series.data]))
    for ax in raw.axes_manager.signal_axes:
        ax.scale, ax.units = 5.0, "nm"
    raw.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 200.0)
    paths["nodefocus"] = d / "nodefocus.hspy"
    raw.save(paths["nodefocus"], show_progressbar=False)
    # three series along a field axis, on disk as zspy with chunks that split them
    stack = hs.stack(
        [simulate_focal_series(_phase(k), defocus=DEFOCUS, scale=5.0, dose=2000, seed=k) for k in range(3)],
        new_axis_name="field", show_progressbar=False,
    )
    paths["split"] = d / "split.zspy"
    stack.save(paths["split"], chunks=(3, 1, SIZE, SIZE), show_progressbar=False)
    paths["stack"] = d / "stack.zspy"
    stack.save(paths["stack"], chunks=(1, 3, SIZE, SIZE), show_progressbar=False)
    paths["stack_phase"] = stack.reconstruct_phase(method="tie", show_progressbar=False).data
    one_sided = simulate_focal_series(_phase(), defocus=(200.0, 600.0, 1000.0), scale=5.0)
    paths["one_sided"] = d / "one_sided.hspy"
    one_sided.save(paths["one_sided"], show_progressbar=False)
    return paths


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if ".incomplete." in p.name]


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err):
    lines = [line for line in err.strip().splitlines() if line.startswith("hyperspy-lorentz: error:")]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------ reconstruct
def test_reconstruct_tie_writes_calibrated_results(files, series, tmp_path, capsys):
    out = tmp_path / "result"
    code, stdout, err = _run(["reconstruct", files["series"], "--method", "tie", "--output", out, "--quiet"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["induction.hspy", "phase.hspy", "phase.png", "summary.txt"]
    assert not _leftovers(tmp_path)
    phase = hs.load(out / "phase.hspy")
    assert type(phase).__name__ == "ElectronPhase"
    expected = series.reconstruct_phase(method="tie", show_progressbar=False)
    np.testing.assert_allclose(phase.data, expected.data, atol=1e-12)
    assert phase.axes_manager.signal_axes[0].scale == pytest.approx(5.0)
    assert phase.metadata.Signal.Reconstruction.method == "tie"
    induction = hs.load(out / "induction.hspy")
    assert type(induction).__name__ == "MagneticInduction"
    assert "1 focal series of 3 images" in stdout and "Wrote" in stdout


def test_existing_output_is_refused_unless_overwrite(files, tmp_path, capsys):
    out = tmp_path / "result"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = _run(["reconstruct", files["series"], "--method", "tie", "--output", out], capsys)
    assert code == 1
    assert "--overwrite" in _one_line_error(err)
    assert (out / "keep.txt").read_text() == "mine"
    code, _, err = _run(["reconstruct", files["series"], "--method", "tie", "--output", out,
                         "--overwrite", "--quiet"], capsys)
    assert code == 0, err
    assert not (out / "keep.txt").exists() and (out / "phase.hspy").exists()


def test_one_file_per_image_defocus_from_the_names(files, series, tmp_path, capsys):
    out = tmp_path / "result"
    code, stdout, err = _run(["reconstruct", *files["singles"], "--method", "tie", "--output", out, "--quiet"], capsys)
    assert code == 0, err
    assert "defocus -800, 0, 800 nm" in stdout
    expected = series.reconstruct_phase(method="tie", show_progressbar=False)
    np.testing.assert_allclose(hs.load(out / "phase.hspy").data, expected.data, atol=1e-6)


def test_defocus_on_the_command_line(files, tmp_path, capsys):
    out = tmp_path / "result"
    code, stdout, err = _run(["reconstruct", *files["singles"], "--defocus", "-0.8", "0", "0.8",
                              "--defocus-units", "um", "--method", "tie", "--output", out, "--quiet"], capsys)
    assert code == 0, err
    assert "defocus -800, 0, 800 nm" in stdout


def test_convention_negates_defocus_into_ours(files, series, tmp_path, capsys):
    """--convention pylorentz/kirkland: labels of the other sign give our reconstruction."""
    expected = series.reconstruct_phase(method="tie", show_progressbar=False).data
    # the same images, labelled as PyLorentz would: +0.8 um for our -0.8 um
    out = tmp_path / "given"
    code, stdout, err = _run(["reconstruct", *files["singles"], "--defocus", "0.8", "0", "-0.8",
                              "--defocus-units", "um", "--convention", "pylorentz", "--method", "tie",
                              "--output", out, "--quiet"], capsys)
    assert code == 0, err
    assert "defocus -800, 0, 800 nm" in stdout
    phase = hs.load(out / "phase.hspy")
    np.testing.assert_allclose(phase.data, expected, atol=1e-6)
    # a defocus axis stored in the file in Kirkland's sign (positive for underfocus)
    kirk = series.deepcopy()
    kirk.axes_manager["defocus"].axis = -np.asarray(series.axes_manager["defocus"].axis)
    path = tmp_path / "kirkland.hspy"
    kirk.save(path, show_progressbar=False)
    out = tmp_path / "from_file"
    code, stdout, err = _run(["reconstruct", path, "--convention", "kirkland", "--method", "tie",
                              "--output", out, "--quiet"], capsys)
    assert code == 0, err
    assert "defocus -800, 0, 800 nm" in stdout
    np.testing.assert_allclose(hs.load(out / "phase.hspy").data, expected, atol=1e-6)
    # without --convention the sign is ours: the same labels give the opposite phase
    out = tmp_path / "ours"
    code, _, err = _run(["reconstruct", *files["singles"], "--defocus", "0.8", "0", "-0.8",
                         "--defocus-units", "um", "--method", "tie", "--output", out, "--quiet"], capsys)
    assert code == 0, err
    assert np.corrcoef(hs.load(out / "phase.hspy").data.ravel(), expected.ravel())[0, 1] < -0.9
    with pytest.raises(SystemExit) as info:
        main(["reconstruct", str(files["series"]), "--convention", "dunno", "--output", str(out)])
    assert info.value.code == 2 and "pylorentz" in capsys.readouterr().err


def test_files_of_mixed_sizes(files, tmp_path, capsys):
    out = tmp_path / "result"
    code, _, err = _run(["reconstruct", files["singles"][0], files["big"], "--output", out], capsys)
    assert code == 1
    line = _one_line_error(err)
    assert "different sizes" in line and "48x48" in line and "48x64" in line
    assert not out.exists() and not _leftovers(tmp_path)


def test_stack_without_defocus_axis(files, tmp_path, capsys):
    out = tmp_path / "result"
    code, _, err = _run(["reconstruct", files["nodefocus"], "--output", out], capsys)
    assert code == 1
    assert "--defocus-axis" in _one_line_error(err)
    code, _, err = _run(["reconstruct", files["nodefocus"], "--defocus-axis", "0", "--output", out], capsys)
    assert code == 1
    assert "--defocus" in _one_line_error(err)
    code, _, err = _run(["reconstruct", files["nodefocus"], "--defocus-axis", "0", "--defocus", "-800", "0", "800",
                         "--method", "tie", "--output", out, "--quiet"], capsys)
    assert code == 0, err
    assert hs.load(out / "phase.hspy").data.shape == (2, SIZE, SIZE)


def test_wrong_number_of_defocus_values(files, tmp_path, capsys):
    code, _, err = _run(["reconstruct", files["series"], "--defocus", "-800", "800",
                         "--output", tmp_path / "r"], capsys)
    assert code == 1
    assert "one value per image" in _one_line_error(err)


def test_failed_reconstruction_leaves_nothing(files, tmp_path, capsys):
    out = tmp_path / "result"
    code, _, err = _run(["reconstruct", files["one_sided"], "--method", "tie", "--output", out], capsys)
    assert code == 1
    assert "both sides of focus" in _one_line_error(err)
    assert not out.exists() and not _leftovers(tmp_path)


def test_missing_file_and_usage_errors(tmp_path, capsys):
    code, _, err = _run(["reconstruct", tmp_path / "nope.hspy", "--output", tmp_path / "r"], capsys)
    assert code == 1 and "file not found" in _one_line_error(err)
    with pytest.raises(SystemExit) as info:
        main(["reconstruct", "x.hspy"])  # --output missing
    assert info.value.code == 2
    capsys.readouterr()


def test_lazy_split_chunks_warn_and_stream_to_zspy(files, tmp_path, capsys):
    out = tmp_path / "result"
    code, stdout, err = _run(["reconstruct", files["split"], "--method", "tie", "--lazy", "--format", "zspy",
                              "--output", out, "--quiet"], capsys)
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("hyperspy-lorentz: warning:")]
    assert len(warning) == 1 and "split focal series" in warning[0]
    assert sorted(p.name for p in out.iterdir()) == ["induction.zspy", "phase.png", "phase.zspy", "summary.txt"]
    phase = hs.load(out / "phase.zspy")
    np.testing.assert_allclose(phase.data, files["stack_phase"], atol=1e-12)
    assert np.asarray(phase.metadata.Signal.Reconstruction.qc).shape == (3,)
    assert "3 focal series" in stdout


def test_lazy_to_hspy(files, tmp_path, capsys):
    out = tmp_path / "result"
    code, _, err = _run(["reconstruct", files["stack"], "--method", "tie", "--lazy", "--output", out, "--quiet"],
                        capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["induction.hspy", "phase.hspy", "phase.png", "summary.txt"]
    np.testing.assert_allclose(hs.load(out / "phase.hspy").data, files["stack_phase"], atol=1e-12)


def test_unreachable_scheduler_fails_fast(files, tmp_path, capsys):
    out = tmp_path / "result"
    t0 = time.perf_counter()
    code, _, err = _run(["reconstruct", files["stack"], "--scheduler", "tcp://127.0.0.1:9", "--output", out], capsys)
    assert time.perf_counter() - t0 < 10
    assert code == 1
    line = _one_line_error(err)
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:9" in line
    code, _, err = _run(["reconstruct", files["stack"], "--scheduler", "127.0.0.1", "--output", out], capsys)
    assert code == 1 and "needs a port" in _one_line_error(err)
    code, _, err = _run(["reconstruct", files["stack"], "--scheduler", tmp_path / "nope.json", "--output", out],
                        capsys)
    assert code == 1 and "scheduler file not found" in _one_line_error(err)
    assert not out.exists() and not _leftovers(tmp_path)


def test_scheduler_runs_the_series_on_the_cluster(files, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        out = tmp_path / "result"
        code, stdout, err = _run(["reconstruct", files["stack"], "--method", "tie", "--scheduler",
                                  cluster.scheduler_address, "--format", "zspy", "--output", out, "--quiet"],
                                 capsys)
        assert code == 0, err
        assert "Connected to the dask scheduler" in stdout
        np.testing.assert_allclose(hs.load(out / "phase.zspy").data, files["stack_phase"], atol=1e-12)
        # non-zspy input is read here and sent to the workers; hspy output written here
        out2 = tmp_path / "result2"
        code, stdout, err = _run(["reconstruct", files["series"], "--method", "tie", "--scheduler",
                                  cluster.scheduler_address, "--output", out2, "--quiet"], capsys)
        assert code == 0, err
        assert "Reading the files here" in stdout
        assert (out2 / "phase.hspy").exists()


def test_reconstruct_ad(files, tmp_path, capsys):
    out = tmp_path / "result"
    code, stdout, err = _run(["reconstruct", files["series"], "--method", "ad", "--iterations", "5",
                              "--refine", "defocus", "--output", out, "--quiet"], capsys)
    assert code == 0, err
    phase = hs.load(out / "phase.hspy")
    rec = phase.metadata.Signal.Reconstruction
    assert rec.method == "ad" and rec.iterations <= 5
    assert "retrieved" in stdout and "image 2" in stdout


@pytest.mark.parametrize("refine, expected", [
    (None, ["amplitude"]), ([], ["amplitude"]), (["shifts"], ["amplitude", "shifts"]),
    (["amplitude", "shifts"], ["amplitude", "shifts"]),  # older command lines
    (["shifts", "--uniform-amplitude"], ["shifts"]), (["--uniform-amplitude"], []),
])
def test_reconstruct_ad_refine_default_is_the_librarys(files, tmp_path, capsys, refine, expected):
    """Naming optical parameters never switches the amplitude off; only
    --uniform-amplitude does."""
    out = tmp_path / "result"
    extra = [] if refine is None else (["--refine", *refine] if refine[:1] != ["--uniform-amplitude"]
                                       else refine)
    code, _, err = _run(["reconstruct", files["series"], "--method", "ad", "--iterations", "3",
                         *extra, "--output", out, "--quiet"], capsys)
    assert code == 0, err
    rec = hs.load(out / "phase.hspy").metadata.Signal.Reconstruction
    assert list(rec.refined) == expected


@pytest.mark.parametrize(
    "extra, named, method",
    [
        (["--qc", "0.1"], "--qc", "ad"),
        (["--method", "tie", "--refine", "defocus"], "--refine", "tie"),
        (["--method", "tie", "--refine"], "--refine", "tie"),
        (["--method", "tie", "--likelihood", "poisson"], "--likelihood", "tie"),
        (["--method", "tie", "--iterations", "5"], "--iterations", "tie"),
        (["--method", "tie", "--uniform-amplitude"], "--uniform-amplitude", "tie"),
        (["--method", "tie", "--seed", "1", "--device", "cpu"], "--device, --seed", "tie"),
    ],
)
def test_options_the_method_does_not_use_are_refused(files, tmp_path, capsys, extra, named, method):
    out = tmp_path / "result"
    with pytest.raises(SystemExit) as info:
        main(["reconstruct", str(files["series"]), "--output", str(out), *extra])
    assert info.value.code == 2  # a usage error
    err = capsys.readouterr().err
    assert f"hyperspy-lorentz: error: {named}" in err
    assert f"which --method {method} does not use" in err
    assert not out.exists() and not _leftovers(tmp_path)


def test_iterations_default_is_the_librarys():
    import inspect

    from hyperspy_lorentz.cli import _method_kwargs, build_parser
    from hyperspy_lorentz.reconstruction.ad import reconstruct_ad
    from hyperspy_lorentz.reconstruction.single_image import reconstruct_single_image

    parser = build_parser()
    args = parser.parse_args(["reconstruct", "x.hspy", "--output", "r"])
    assert "max_iterations" not in _method_kwargs(args)  # the library's default applies
    args = parser.parse_args(["reconstruct", "x.hspy", "--output", "r", "--iterations", "7"])
    assert _method_kwargs(args)["max_iterations"] == 7
    rec = next(a for a in parser._subparsers._group_actions[0].choices["reconstruct"]._actions
               if "--iterations" in a.option_strings)
    for solver in (reconstruct_ad, reconstruct_single_image):
        default = inspect.signature(solver).parameters["max_iterations"].default
        assert str(default) in rec.help


def test_non_square_pixels_name_the_option(series, tmp_path, capsys):
    s = series.deepcopy()
    s.axes_manager.signal_axes[1].scale = 6.0
    path = tmp_path / "nonsquare.hspy"
    s.save(path, show_progressbar=False)
    code, _, err = _run(["reconstruct", path, "--method", "tie", "--output", tmp_path / "r"], capsys)
    assert code == 1
    line = _one_line_error(err)
    assert "not square" in line and "--pixel-size" in line
    code, _, err = _run(["reconstruct", path, "--method", "tie", "--pixel-size", "5", "--output", tmp_path / "r",
                         "--quiet"], capsys)
    assert code == 0, err


# ------------------------------------------------------------------------- demo
def test_demo_small(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, err = _run(["demo", "--output", out, "--size", "64", "--iterations", "10", "--quiet"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["demo.png", "focal_series.hspy", "induction_ad.hspy", "phase_ad.hspy", "phase_tie.hspy",
                     "summary.txt"]
    summary = (out / "summary.txt").read_text()
    for key in ("defocus image 0", "drift image 1", "truth", "AD retrieved", "phase accuracy", "+-",
                "within 2 SE", "not identifiable"):
        assert key in summary
    # the iteration counts: the fit's, and all fits' (what the progress bar counts)
    line = next(li for li in summary.splitlines() if li.startswith("AD: "))
    fit_its, all_its = [int(w) for w in line.replace(",", " ").split() if w.isdigit()][:2]
    assert 0 < fit_its <= all_its
    s = hs.load(out / "focal_series.hspy")
    assert np.abs(s.axes_manager["defocus"].axis).max() >= 2e5  # contrast needs large defocus
    code, _, err = _run(["demo", "--output", out], capsys)
    assert code == 1 and "--overwrite" in _one_line_error(err)


# -------------------------------------------------------------- console script
def test_console_script(files, tmp_path):
    exe = shutil.which("hyperspy-lorentz")
    cmd = [exe] if exe else [sys.executable, "-m", "hyperspy_lorentz.cli"]
    out = tmp_path / "result"
    proc = subprocess.run(cmd + ["reconstruct", str(files["series"]), "--method", "tie", "--output", str(out),
                                 "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "phase.hspy").exists()
    proc = subprocess.run(cmd + ["reconstruct", str(files["series"]), "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("hyperspy-lorentz: error:")
    assert "Traceback" not in proc.stderr
