"""Sphinx configuration of the sparseopt documentation.

Build with ``python -m sphinx -W -b html docs docs/_build/html`` (warnings are errors).
Everything the pages show is produced from this repository at build time: the API
reference from the docstrings, the figures by the scripts they name, the gallery by
running the examples. Nothing is downloaded.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import sparseopt  # noqa: E402

project = "sparseopt"
author = "the sparseopt developers"
copyright = "2026, the sparseopt developers"
release = sparseopt.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "matplotlib.sphinxext.plot_directive",
    "sphinx_gallery.gen_gallery",
]

# SPHINX_GALLERY=0 builds everything but the example gallery (which runs every example): the
# extension is left out and the index's link to the gallery, then dangling, is not a warning.
GALLERY = os.environ.get("SPHINX_GALLERY", "1") != "0"
if not GALLERY:
    extensions.remove("sphinx_gallery.gen_gallery")
    suppress_warnings = ["toc.not_readable"]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# --- API reference -------------------------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False   # a module's page lists the names of its __all__ only
autodoc_typehints = "none"          # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
# the reference pages (docs/api/generated/, one per public name) come from docs/_templates



def _defined_in(obj):
    """The module that defines a method, property or function (``""`` if unknown)."""
    target = getattr(obj, "fget", None) or getattr(obj, "__func__", None) or obj
    return getattr(target, "__module__", None) or ""


def _skip_member(app, what, name, obj, skip, options):
    # A class page shows the members its class has, inherited from sparseopt's private bases
    # included (fit, predict, step, state_dict, ...), but not those of scikit-learn's or
    # PyTorch's classes (get_params, zero_grad, set_fit_request, ...): their docstrings point
    # into those projects' own docs and they are documented there.
    if what == "class" and not skip and not _defined_in(obj).startswith("sparseopt"):
        return True
    return skip


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)


# --- figures and gallery --------------------------------------------------------------------
# The user guide's figures are scripts under docs/guide/figures/ run by the plot directive;
# they call sparseopt on tiny problems, so they take a few seconds together.
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.dpi": 110}

# Every example of the gallery is executed while the site is built, on small data: the
# examples read SPARSEOPT_EXAMPLES_QUICK (smaller tables and fewer steps), and the two with
# command-line sizes get their small ones from docs/_gallery_argv.py. Run by hand, each example
# keeps its full size. No example is excluded.
os.environ["SPARSEOPT_EXAMPLES_QUICK"] = "1"
sys.path.insert(0, str(ROOT / "docs"))  # _gallery_argv.py

sphinx_gallery_conf = {
    "examples_dirs": [str(ROOT / "examples")],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/.*\.py$",
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "reset_argv": "_gallery_argv.reset_argv",
    "abort_on_example_error": True,
    "show_memory": False,
    "min_reported_time": 1,
}

# --- HTML -----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sparseopt {release}"
html_static_path = []
html_theme_options = {"navigation_with_keys": False}
