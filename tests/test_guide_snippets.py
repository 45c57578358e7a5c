"""The Python blocks of the user guide (docs/guide/*.rst) run against the current API.

Each page's ``.. code-block:: python`` blocks are run in order in one namespace, as a reader
would paste them; their asserts are the checks. A page whose blocks import an optional
dependency (torch, dask, pandas, scikit-learn) is skipped without it.
"""
import importlib.util
import re
import textwrap
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide"
OPTIONAL = ("torch", "dask", "distributed", "pandas", "sklearn", "threadpoolctl")


def python_blocks(text):
    """The bodies of the ``.. code-block:: python`` directives of an rst text, dedented."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if re.match(r"^\s*\.\. code-block:: python\s*$", lines[i]):
            indent = len(lines[i]) - len(lines[i].lstrip())
            i += 1
            body = []
            while i < len(lines) and (not lines[i].strip()
                                      or len(lines[i]) - len(lines[i].lstrip()) > indent):
                body.append(lines[i])
                i += 1
            blocks.append(textwrap.dedent("\n".join(body)).strip("\n"))
        else:
            i += 1
    return blocks


PAGES = sorted(p for p in GUIDE.glob("*.rst") if python_blocks(p.read_text()))


def test_the_guide_has_code():
    assert len(PAGES) >= 6, PAGES


def test_block_extraction():
    text = ("Intro\n\n.. code-block:: python\n\n   x = 1\n\n   y = x + 1\n\nAfter\n\n"
            ".. code-block:: bash\n\n   ls\n\n  .. code-block:: python\n\n     z = 3\n")
    assert python_blocks(text) == ["x = 1\n\ny = x + 1", "z = 3"]


def _page_param(page):
    """A page whose blocks start a local Dask cluster carries the suite's ``dask`` mark."""
    uses_dask = re.search(r"^\s*import dask\b", "\n".join(python_blocks(page.read_text())),
                          re.M)
    return pytest.param(page, id=page.stem, marks=[pytest.mark.dask] if uses_dask else [])


@pytest.mark.parametrize("page", [_page_param(p) for p in PAGES])
def test_guide_page_runs(page, tmp_path, monkeypatch):
    code = "\n\n".join(python_blocks(page.read_text()))
    for module in OPTIONAL:
        if re.search(rf"^\s*(import|from) {module}\b", code, re.M) \
                and importlib.util.find_spec(module) is None:
            pytest.skip(f"{page.name} needs {module}")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(page), "exec"), {"__name__": f"guide_{page.stem}"})


FIGURES = sorted((GUIDE / "figures").glob("*.py"))


@pytest.mark.parametrize("script", FIGURES, ids=[p.stem for p in FIGURES])
def test_guide_figure_scripts_run(script):
    """The scripts the plot directive runs while the guide is built, and what their figures
    show: a late row's first step is lr under per-row correction and about 3.16 lr under
    global correction; "decay" after flush() gives dense Adam's moments, "frozen" does not."""
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import runpy
    try:
        ns = runpy.run_path(str(script), run_name="guide_figure")
    finally:
        plt.close("all")
    if script.stem == "late_row_first_step":
        row, glob = ns["first_steps"]("row"), ns["first_steps"]("global")
        assert np.allclose(row, 1.0, atol=1e-3), row
        assert 3.0 < glob[-1] < 3.17 and glob[0] == pytest.approx(1.0, abs=1e-3), glob
    if script.stem == "skipped_row_moments":
        dense, flushed, frozen = (ns["run"](m) for m in ("dense", "flushed", "frozen"))
        for a, b in zip(dense, flushed):
            assert np.allclose(a, b, rtol=1e-12, atol=0)
        assert not np.allclose(dense[0], frozen[0])


EXAMPLES = GUIDE.parents[1] / "examples"
# What each example prints on the gallery's small data (SPARSEOPT_EXAMPLES_QUICK=1): its
# small size, and the result it exists to show.
QUICK_EXAMPLES = {
    "movie_recommender.py": ["54,545 training ratings", "135,000 training clicks"],
    "torch_embedding.py": ["30 steps of 2048 lookups"],
    "torch_dlrm.py": ["40 steps of 256 samples",
                      "bitwise equal to the uninterrupted run: True"],
}


@pytest.mark.parametrize("script", sorted(QUICK_EXAMPLES))
def test_examples_small_data_switch(script, tmp_path):
    """The gallery runs these examples with SPARSEOPT_EXAMPLES_QUICK=1 (docs/conf.py); the
    switch must shrink them and leave what they show intact. Without it they keep their
    full sizes (tests/test_demo.py runs them so)."""
    import os
    import subprocess
    import sys

    import sparseopt
    if script.startswith("torch") and importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    site = str(Path(sparseopt.__file__).resolve().parents[1])
    env = dict(os.environ, SPARSEOPT_EXAMPLES_QUICK="1",
               PYTHONPATH=os.pathsep.join([site, *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    for expected in QUICK_EXAMPLES[script]:
        assert expected in proc.stdout, proc.stdout
