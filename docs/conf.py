"""Sphinx configuration of the hyperspy_lorentz documentation.

Build offline, with warnings as errors::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The figures in ``_static/`` are made by ``docs/make_figures.py`` and committed;
the build does not run it.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import re
import sys

# The package is normally pip-installed (editable); fall back to the checkout.
_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
try:
    import hyperspy_lorentz
except ImportError:  # pragma: no cover - building from a bare checkout
    sys.path.insert(0, _ROOT)
    import hyperspy_lorentz

# -- Project information -----------------------------------------------------
project = "hyperspy_lorentz"
author = "The hyperspy_lorentz developers"
copyright = f"{datetime.date.today().year}, {author}"
release = hyperspy_lorentz.__version__
version = ".".join(release.split(".")[:2])

# -- General configuration ---------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = []
root_doc = "index"
language = "en"

# The build must work without a network: no intersphinx inventories are fetched.
intersphinx_mapping = {}

# -- autodoc / autosummary / numpydoc ----------------------------------------
autosummary_generate = False  # the API page uses automodule directly
autodoc_member_order = "bysource"
# api.rst says ``:members:`` on each automodule; nothing is documented implicitly.
autodoc_default_options = {}
# Signatures as written; type hints stay out of the signatures (numpydoc
# documents the types in the Parameters sections).
autodoc_typehints = "none"

# numpydoc renders Parameters/Returns/Attributes; it does not add autosummary
# tables of class members (autodoc's :members: already documents them, and the
# tables would describe every object twice -> duplicate-object warnings).
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
# "Attributes" sections become parameter lists, not ``.. attribute::`` objects
# that would clash with the members autodoc documents (NamedTuple fields).
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# Docstrings use double back-quotes for code and :ref:`conventions` / :ref:`metadata`.
default_role = None
nitpicky = False
# ``sphinx -n`` (nitpicky) reports every reference without a target. Objects of
# other packages would get theirs from intersphinx, which an offline build does
# not have: references to them (``numpy.gradient``, ``torch.autograd.Function``
# ...) are rendered as code without a link, and not reported. References to
# this package's own objects are still checked.
_EXTERNAL = ("numpy", "scipy", "skimage", "torch", "dask", "distributed", "matplotlib",
             "hyperspy", "rsciio", "pint", "colorcet", "zarr", "h5py", "psutil")
nitpick_ignore_regex = [(r"py:.*", rf"(~?)({'|'.join(_EXTERNAL)})(\..*)?")]
suppress_warnings = [
    # A short cross-reference such as :func:`angle` or :func:`magnitude` can match
    # more than one documented object (physics.induction.angle and
    # MagneticInduction.angle); Sphinx then picks the one nearest the reference,
    # which is what the docstrings mean.
    "ref.python",
]
# "duplicate object description" warnings have no warning type in Sphinx, so
# they cannot be suppressed here; they are avoided by construction instead:
# the top-level package documents only ``simulate_focal_series`` (the signal
# classes are documented once, in their modules), numpydoc adds no member
# tables and renders Attributes as parameter lists, and the NamedTuple field
# aliases of ``Texture`` are excluded in api.rst. If one appears, give the
# second description the ``:no-index:`` option.

# -- HTML output ---------------------------------------------------------------
html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"hyperspy_lorentz {release}"
html_theme_options = {
    "description": "Lorentz TEM phase retrieval for HyperSpy",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_sidebars = {
    "**": ["about.html", "navigation.html", "relations.html", "searchbox.html"],
}
html_show_sourcelink = False

# -- Modules that are still being written ------------------------------------
# docs/api.rst lists every public module with ``.. automodule::``. While the
# package is being written some of them do not exist yet; for those (and only
# those: a module that exists but fails to import still fails the build) the
# automodule block is replaced by a short note, so that the rest of the
# documentation builds with -W.
_AUTOMODULE = re.compile(
    r"^\.\. automodule:: (?P<name>[\w.]+)\n(?P<options>(?:[ \t]+:[^\n]*\n)*)",
    re.MULTILINE,
)


def _module_exists(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


#: Public modules that could not be found when the documentation was built.
missing_modules = []


def _documented_constants(name):
    """Module constants documented with ``#:`` but left out of ``__all__``.

    ``:members:`` documents what ``__all__`` lists; docstrings also refer to
    constants (``:data:`CONVERGENCE_WINDOW```) that a module documents but does
    not export. Those get an ``autodata`` entry, so that the references resolve.
    """
    import importlib

    from sphinx.pycode import ModuleAnalyzer

    try:
        module = importlib.import_module(name)
        attr_docs = ModuleAnalyzer.for_module(name).find_attr_docs()
    except Exception:  # a module that fails to import fails in automodule itself
        return []
    exported = set(getattr(module, "__all__", None) or ())
    if not exported:  # without __all__, :members: already documents them
        return []
    return [
        attr for (namespace, attr) in attr_docs
        if namespace == "" and attr.isupper() and attr not in exported and hasattr(module, attr)
    ]


def _replace_missing_modules(app, docname, source):
    if docname != "api":
        return

    def replace(match):
        name = match.group("name")
        if _module_exists(name):
            extra = "".join(f".. autodata:: {name}.{attr}\n" for attr in _documented_constants(name))
            return match.group(0) + ("\n" + extra if extra else "")
        missing_modules.append(name)
        return (
            f".. note::\n\n   ``{name}`` is not part of this build yet (the module is "
            "still being written); its reference will appear here.\n\n"
        )

    source[0] = _AUTOMODULE.sub(replace, source[0])


def _report_missing(app, exception):
    if exception is None and missing_modules:
        from sphinx.util import logging

        logging.getLogger(__name__).info(
            "hyperspy_lorentz docs: modules not documented yet (not found): "
            + ", ".join(sorted(set(missing_modules)))
        )


def setup(app):
    app.connect("source-read", _replace_missing_modules)
    app.connect("build-finished", _report_missing)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
