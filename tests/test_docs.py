"""The documentation: every public name has a runnable example and a reference page, and the
Sphinx site builds with warnings as errors.

The public names are the ``__all__`` of the documented modules. The reference lists them in
``docs/api/index.rst`` (autosummary tables, one generated page per name); a name added to an
``__all__`` without a page, or a page left behind for a removed name, fails here rather than
silently vanishing from the site. The build test runs ``python -m sphinx -W`` in a subprocess
into a temporary directory (skipped where the ``docs`` packages are missing; the ``test`` extra
installs them). The build includes the example gallery (which executes every example) once
``examples/`` has the gallery's header (``README.txt``); ``SPHINX_GALLERY=0`` or ``=1`` in the
environment decides instead (``docs/conf.py`` reads it).
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API_INDEX = DOCS / "api" / "index.rst"

# the documented modules; torch and dask are optional dependencies, installed in CI
MODULES = ["sparseopt", "sparseopt.linear_model", "sparseopt.recommend",
           "sparseopt.recommend.metrics", "sparseopt.torch", "sparseopt.dask",
           "sparseopt.datasets", "sparseopt.optim"]
OPTIONAL = {"sparseopt.torch": ["torch"], "sparseopt.dask": ["dask", "distributed"]}
# named in the reference's text rather than given a page of their own
NO_PAGE = {"sparseopt.__version__", "sparseopt.optim.OPTIMIZERS"}


def _module(name: str):
    for dep in OPTIONAL.get(name, []):
        pytest.importorskip(dep)
    return importlib.import_module(name)


def _public(name: str):
    mod = _module(name)
    return [(f"{name}.{n}", getattr(mod, n)) for n in mod.__all__]


def _reference_entries(text: str):
    """The fully qualified names listed in the autosummary tables of ``text``."""
    entries, module, in_table = [], None, False
    for line in text.splitlines():
        m = re.match(r"\.\. currentmodule:: (\S+)", line)
        if m:
            module, in_table = m.group(1), False
            continue
        if line.startswith(".. autosummary::"):
            in_table = True
            continue
        if in_table:
            stripped = line.strip()
            if not stripped or stripped.startswith(":"):
                continue
            if not line.startswith("   "):
                in_table = False
                continue
            entries.append(f"{module}.{stripped}")
    return entries


def test_reference_parser_reads_tables():
    text = ("x\n\n.. currentmodule:: a.b\n\n.. autosummary::\n   :toctree: generated/\n\n"
            "   F\n   g\n\nSome text.\n\n.. currentmodule:: c\n\n.. autosummary::\n\n   h\n")
    assert _reference_entries(text) == ["a.b.F", "a.b.g", "c.h"]


@pytest.mark.parametrize("module", MODULES)
def test_every_public_name_has_a_reference_page(module):
    listed = _reference_entries(API_INDEX.read_text(encoding="utf-8"))
    # a name re-exported from another documented module shares that module's page
    pages = set()
    for qualname in listed:
        mod, _, name = qualname.rpartition(".")
        try:
            pages.add(id(getattr(importlib.import_module(mod), name)))
        except ImportError:
            pass
    missing = [q for q, obj in _public(module)
               if q not in listed and q not in NO_PAGE and id(obj) not in pages]
    assert not missing, f"public names without a page in docs/api/index.rst: {missing}"


def test_reference_lists_only_public_names():
    listed = _reference_entries(API_INDEX.read_text(encoding="utf-8"))
    assert len(listed) == len(set(listed)), "a name is listed twice in docs/api/index.rst"
    for qualname in listed:
        module, _, name = qualname.rpartition(".")
        if module in OPTIONAL and any(importlib.util.find_spec(d) is None
                                      for d in OPTIONAL[module]):
            continue
        mod = importlib.import_module(module)
        assert name in mod.__all__, f"{qualname} is in the reference but not in {module}.__all__"


@pytest.mark.parametrize("module", MODULES)
def test_every_public_class_and_function_has_examples(module):
    lacking = []
    for qualname, obj in _public(module):
        if not (inspect.isclass(obj) or inspect.isfunction(obj)
                or inspect.isbuiltin(obj)):
            continue   # data (MIN_TORCH, __version__) and submodules (listed by their names)
        doc = inspect.getdoc(obj) or ""
        section = re.search(r"^Examples\n-{8,}\n(.*?)(?:^\S[^\n]*\n-{3,}\n|\Z)", doc,
                            re.S | re.M)
        if section is None or not _runs(section.group(1)):
            lacking.append(qualname)
    assert not lacking, f"no numpydoc Examples section with a doctest that runs: {lacking}"


def _runs(examples: str) -> bool:
    """Whether an Examples section holds a doctest line that is not skipped."""
    return any(line.lstrip().startswith(">>>") and "+SKIP" not in line
               for line in examples.splitlines())


def test_examples_check_can_fail():
    def undocumented():
        """Only a summary."""

    def documented():
        """Summary.

        Examples
        --------
        >>> 1 + 1
        2
        """

    pattern = r"^Examples\n-{8,}\n(.*?)(?:^\S[^\n]*\n-{3,}\n|\Z)"
    assert re.search(pattern, inspect.getdoc(undocumented), re.S | re.M) is None
    assert _runs(re.search(pattern, inspect.getdoc(documented), re.S | re.M).group(1))
    assert not _runs(">>> so.show_config()  # doctest: +SKIP\nsparseopt 1.0\n")


def _sphinx_build(tmp_path: Path, gallery: bool) -> subprocess.CompletedProcess:
    for package in ["sphinx", "numpydoc", "myst_parser", "pydata_sphinx_theme",
                    "matplotlib"] + (["sphinx_gallery"] if gallery else []):
        pytest.importorskip(package)
    env = dict(os.environ, SPHINX_GALLERY="1" if gallery else "0", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)


def _gallery_wanted() -> bool:
    choice = os.environ.get("SPHINX_GALLERY")
    if choice is not None:
        return choice != "0"
    return any((ROOT / "examples" / name).is_file()
               for name in ("README.txt", "README.rst", "GALLERY_HEADER.rst"))


def test_docs_build_without_warnings(tmp_path):
    gallery = _gallery_wanted()
    proc = _sphinx_build(tmp_path, gallery=gallery)
    assert proc.returncode == 0, f"sphinx -W failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    html = tmp_path / "html"
    for page in ["index", "api/index", "architecture", "semantics"] + (
            ["auto_examples/index"] if gallery else []):
        assert (html / f"{page}.html").is_file(), page
    for qualname in _reference_entries(API_INDEX.read_text(encoding="utf-8")):
        assert (html / "api" / "generated" / f"{qualname}.html").is_file(), qualname


def _parse_warnings(doc: str):
    docscrape = pytest.importorskip("numpydoc.docscrape")
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        docscrape.NumpyDocString(doc)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("module", MODULES)
def test_docstrings_have_only_numpydoc_sections(module):
    # numpydoc drops a section it does not know from the page without a Sphinx warning, so
    # "Notes"-like headings of one's own must be rubrics, not sections
    problems = []
    for qualname, obj in _public(module):
        targets = [(qualname, obj)]
        if inspect.isclass(obj):
            targets += [(f"{qualname}.{k}", v) for k, v in vars(obj).items()
                        if not k.startswith("_") and (callable(v) or isinstance(v, property))]
        for name, target in targets:
            problems += [f"{name}: {m}" for m in _parse_warnings(inspect.getdoc(target) or "")]
    assert not problems, problems


def test_section_check_can_fail():
    assert _parse_warnings("Summary.\n\nModels\n------\nText.\n")
    assert not _parse_warnings("Summary.\n\n.. rubric:: Models\n\nText.\n")
