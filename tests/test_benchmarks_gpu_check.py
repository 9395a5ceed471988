"""The GPU check script (benchmarks/gpu_check.sh) in its CPU dry-run mode, and its bound."""

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_prints_the_table_and_passes():
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_TIMEOUT="120")
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "DRY RUN" in text and "gpu_check: ok" in text
    header = next(line for line in text.splitlines() if line.startswith("check"))
    for col in ("size", "result", "floor s", "ratio", "status"):
        assert col in header
    for row in ("pass fwd+bwd", "64 vs 32 bit (cpu) loss", "64 vs 32 bit (cpu) gradient",
                "paper case", "fit "):
        assert row in text, row
    assert "FAIL" not in text


def test_no_gpu_exits_with_its_own_code():
    if torch.cuda.is_available():
        return  # a GPU is lent: the full check would run (not here)
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("GPU_CHECK_DRY_RUN", None)
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=120)
    assert out.returncode == 2
    assert "no CUDA GPU" in out.stderr


def test_comparison_fails_beyond_the_rounding_bound():
    gc = _module()
    m = 3 * 512 * 512
    tol = gc.rounding_bound(m)
    assert math.isclose(tol, 2 * 5 * math.sqrt(m) * 2.0**-24)
    g = torch.linspace(1.0, 2.0, 100, dtype=torch.float64)
    ok = gc.compare_results((1.0, g), (1.0 + 0.5 * tol, g * (1 + 0.5 * tol)), (1.0, g), m,
                            "3x512^2", names=("cpu float32", "cuda float32"))
    assert [r["status"] for r in ok] == ["ok", "ok"]
    bad = gc.compare_results((1.0, g), (1.0 + 2 * tol, g * (1 + 2 * tol)), (1.0, g), m,
                             "3x512^2", names=("cpu float32", "cuda float32"))
    assert [r["status"] for r in bad] == ["FAIL", "FAIL"]
    assert all(r["failed"] for r in bad)
    assert bad[0]["check"] == "cuda vs cpu loss"
