"""The documentation builds (offline) with Sphinx and numpydoc.

Sphinx and numpydoc are in the ``[docs]`` extra, not in ``[tests]``: without
them these tests are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory):
    """Build the HTML documentation once into a temporary folder."""
    pytest.importorskip("sphinx", reason="the docs need Sphinx: pip install -e '.[docs]'")
    pytest.importorskip("numpydoc", reason="the docs need numpydoc: pip install -e '.[docs]'")
    from sphinx.cmd.build import build_main

    out = tmp_path_factory.mktemp("html")
    warnings_file = out / "sphinx-warnings.txt"
    # -E: read every source afresh; -w: keep the warnings for the second test.
    rc = build_main(["-b", "html", "-q", "-E", "-w", str(warnings_file), str(DOCS), str(out)])
    warnings = warnings_file.read_text(encoding="utf-8") if warnings_file.exists() else ""
    return rc, out, warnings


def test_docs_build(built_docs):
    rc, out, warnings = built_docs
    assert rc == 0, f"sphinx-build failed:\n{warnings}"
    for page in ("index", "introduction", "installation", "conventions", "metadata", "api",
                 "changelog", "user_guide/index", "user_guide/ad_reconstruction"):
        assert (out / f"{page}.html").is_file(), page
    for figure in ("transfer_function.png", "focal_series.png", "induction_colour.png"):
        assert (out / "_static" / figure).is_file(), figure


def test_docs_pages_have_no_warnings(built_docs):
    """The hand-written pages (docs/*.rst) build without a warning.

    Warnings raised by docstrings of modules still being written are reported
    by ``python -m sphinx -W`` but not checked here.
    """
    _, _, warnings = built_docs
    own = [
        line for line in warnings.splitlines()
        if re.match(r"^\S*docs[/\\][^:]*\.rst:", line)
    ]
    assert not own, "warnings in the documentation pages:\n" + "\n".join(own)


def test_figures_are_small():
    for png in ("transfer_function.png", "focal_series.png", "induction_colour.png"):
        path = DOCS / "_static" / png
        assert path.is_file(), f"{png} missing: run python docs/make_figures.py"
        assert path.stat().st_size < 200 * 1024, f"{png} is over 200 KiB"
