"""Fixtures shared by the whole test suite."""

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir():
    """``../shared/data`` beside the repository, or $HYPERSPY_LORENTZ_SHARED/data."""
    env = os.environ.get("HYPERSPY_LORENTZ_SHARED")
    root = Path(env) if env else REPO.parent / "shared"
    return root / "data"


@pytest.fixture
def paper_object_dir():
    """The AD-LTEM paper's simulated test object (skips where ../shared is absent)."""
    d = shared_data_dir() / "ad_ltem_paper"
    if not (d / "design_tphi.tiff").exists():
        pytest.skip(f"{d} not found: the paper's test object lives in ../shared beside the repository")
    return d
