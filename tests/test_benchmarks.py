"""Smoke test of the benchmark suite (``python -m benchmarks``): its quick mode on a tiny
configuration.

It checks that the suite runs end to end, that the Markdown table has one row per
(case, optimizer, implementation, thread count) with the documented columns, and that the
figures are sane: finite and positive, derived columns consistent with the measured medians,
and the table showing the JSON's numbers.
"""

import importlib.util
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# The suite lives at the root of the source tree (benchmarks/), not in the installed package.
ROOT = next(p for p in Path(__file__).resolve().parents
            if (p / "benchmarks" / "__main__.py").is_file())
if not any(Path(p or ".").resolve() == ROOT for p in sys.path):
    sys.path.insert(0, str(ROOT))

from benchmarks import cli, timing, workloads  # noqa: E402
from benchmarks.report import BYTES_PER_ELEMENT, COLUMNS, fmt_ms  # noqa: E402

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
HAS_REFERENCE = importlib.util.find_spec("sparseopt._reference") is not None

TINY_ARGS = ["--quick", "--tables", "3000x8", "--batches", "256", "--repeats", "2",
             "--bw-mb", "4", "--min-sample-ms", "0.2", "--warm-up-ms", "2", "--threads", "1,2"]


def _results_rows(markdown):
    """The header and rows of the table under '## Results'."""
    lines = markdown.split("## Results", 1)[1].strip().splitlines()
    table = []
    for line in lines:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    header, rule, *rows = table
    assert set("".join(rule)) <= set("-:")
    return header, rows


def _expected_rows(use_torch, use_reference):
    cases = [("256", "zipf"), ("256", "uniform"), ("16", "zipf (tiny)")]
    expected = set()
    for batch, dist in cases:
        for opt in ("Adam", "Adagrad", "RMSprop"):
            for threads in ("1", "2"):
                expected.add((batch, dist, opt, "sparseopt", threads))
                if use_torch and opt != "RMSprop":
                    name = "SparseAdam" if opt == "Adam" else opt
                    expected.add((batch, dist, opt, f"torch.optim.{name}", threads))
            if use_reference:
                expected.add((batch, dist, opt, "reference", "1"))
    return expected


@pytest.mark.parametrize("missing", [False, True], ids=["all-contenders", "no-torch-no-plots"])
def test_quick_mode_writes_the_expected_table(tmp_path, capsys, monkeypatch, missing):
    extra = []
    if missing:  # torch and matplotlib "not installed": their parts are skipped, not fatal
        monkeypatch.setitem(sys.modules, "torch", None)
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        extra = ["--reference", "none"]
    status = cli.main([*TINY_ARGS, "--out", str(tmp_path), *extra])
    assert status == 0

    use_torch = HAS_TORCH and not missing
    use_reference = HAS_REFERENCE and not missing
    markdown = (tmp_path / "results.md").read_text()
    assert markdown.strip() in capsys.readouterr().out  # printed as well as saved

    header, rows = _results_rows(markdown)
    assert tuple(header) == COLUMNS
    col = {name: i for i, name in enumerate(header)}
    got = [(r[col["batch"]], r[col["dist"]], r[col["optimizer"]], r[col["impl"]],
            r[col["threads"]]) for r in rows]
    assert len(got) == len(set(got))
    assert set(got) == _expected_rows(use_torch, use_reference)
    for r in rows:
        assert r[col["table"]] == "3k x 8"
        assert float(r[col["ms/step"]]) > 0
        assert float(r[col["M rows/s"]]) >= 0  # printed with 2 decimals
        assert float(r[col["% BW"]]) >= 0
        lo, hi = (float(x) for x in r[col["min-max ms"]].split("-"))
        assert lo <= float(r[col["ms/step"]]) <= hi
        has_torch_twin = use_torch and r[col["optimizer"]] != "RMSprop"
        assert (r[col["x torch"]] != "-") == has_torch_twin

    assert "## In-place update bandwidth" in markdown
    assert "## Per-call overhead (16 indices)" in markdown
    report = json.loads((tmp_path / "results.json").read_text())
    assert len(report["results"]) == len(rows)
    _check_figures(report, rows, col)
    for name in ("speedup.png", "bandwidth.png"):
        if HAS_MATPLOTLIB and not missing:
            assert (tmp_path / name).stat().st_size > 0
            assert f"]({name})" in markdown
        elif missing:
            assert not (tmp_path / name).exists()


def _close(a, b, rel=1e-9):
    return abs(a - b) <= rel * max(abs(a), abs(b))


def _check_figures(report, rows, col):
    """The figures themselves: every timing finite and positive, the derived columns computed
    from them (rows/s from the unique rows and the median, bandwidth from the bytes moved,
    speed-ups from the torch twin's median), and the Markdown table showing the JSON's values."""
    bandwidth = report["bandwidth"]
    for threads, bw in bandwidth.items():
        for key in ("gbs", "scale_gbs", "add_gbs"):
            assert math.isfinite(bw[key]) and 0 < bw[key] < 1e4, (threads, bw)
    by_key = {}
    for r in report["results"]:
        samples = r["samples_ms"]
        assert len(samples) == r["repeats"] >= 1, r
        assert all(math.isfinite(x) and x > 0 for x in samples), r
        assert _close(r["median_ms"], statistics.median(samples)), r
        assert _close(r["min_ms"], min(samples)) and _close(r["max_ms"], max(samples)), r
        assert 1 <= r["unique"] <= min(r["batch"], r["n_rows"]), r
        assert _close(r["mrows_s"], r["unique"] / (r["median_ms"] / 1e3) / 1e6), r
        assert math.isfinite(r["gbs"]) and r["gbs"] > 0, r
        # GB/s: the optimizer's bytes per element of every unique row, over the median
        per_element = r["gbs"] * 1e9 * (r["median_ms"] / 1e3) / (r["unique"] * r["width"])
        assert per_element == pytest.approx(BYTES_PER_ELEMENT[r["optimizer"]],
                                            rel=1e-9), r
        bw = bandwidth.get(str(r["threads"]), bandwidth.get(r["threads"], {})).get("gbs")
        if r["pct_bw"] is not None:
            assert bw and _close(r["pct_bw"], 100.0 * r["gbs"] / bw), (r, bw)
        by_key[(r["table"], r["batch"], r["dist"], r["optimizer"], r["threads"],
                r["impl"])] = r
    for (table, batch, dist, opt, threads, impl), r in by_key.items():
        twin = by_key.get((table, batch, dist, opt, threads, "torch"))
        if twin is None or impl == "torch":
            assert r["speedup_vs_torch"] is None or impl == "torch", r
            continue
        ratio = r["speedup_vs_torch"]
        assert math.isfinite(ratio) and 1e-3 < ratio < 1e3, r
        assert _close(ratio, twin["median_ms"] / r["median_ms"]), (r, twin)
    # the Markdown rows show these numbers (in the JSON's order)
    for r, row in zip(report["results"], rows):
        assert row[col["ms/step"]] == fmt_ms(r["median_ms"]), (row, r)
        assert row[col["M rows/s"]] == format(r["mrows_s"], ".2f"), (row, r)
        if r["speedup_vs_torch"] is not None:
            assert row[col["x torch"]] == format(r["speedup_vs_torch"], ".1f"), (row, r)


@pytest.mark.parametrize("dist", ["zipf", "uniform"])
@pytest.mark.parametrize("zipf", ["bounded", "folded"])
def test_index_sampler_stays_in_the_table(dist, zipf):
    n = 1000
    sampler = workloads.IndexSampler(n, np.random.default_rng(0), zipf=zipf)
    idx = sampler.draw(20_000, dist, np.int32)
    assert idx.dtype == np.int32 and idx.shape == (20_000,)
    assert idx.min() >= 0 and idx.max() < n
    counts = np.bincount(idx, minlength=n)
    if dist == "zipf":  # the hottest row is about 1/zeta share of the draws
        assert counts.max() > 0.05 * idx.size
    else:
        assert counts.max() < 0.01 * idx.size


@pytest.mark.parametrize("order", ["round-robin", "blocked"])
def test_sample_order(order):
    """round-robin alternates the contenders sample by sample; blocked runs each one's samples
    back to back. Either way every contender gets its repeats (the reference at most its cap)."""
    calls = []

    def contender(name, max_repeats=None):
        c = timing.Contender("Adam", name, 1, lambda: calls.append(name),
                             max_repeats=max_repeats, fixed_number=1)
        return c

    cs = [contender("a"), contender("b"), contender("ref", max_repeats=2)]
    timing.interleave(cs, 3, 1, 0.0, warm_s=0.0, pause_s=0.0, order=order)
    timed = calls[-8:]  # after the warm-up steps (two rounds each, plus the fixed number)
    if order == "blocked":
        assert timed == ["a", "a", "a", "b", "b", "b", "ref", "ref"]
    else:
        assert timed == ["a", "b", "ref", "a", "b", "ref", "a", "b"]
    assert [len(c.samples) for c in cs] == [3, 3, 2]


def test_runs_as_a_module_from_the_checkout():
    """``python -m benchmarks`` from the root of the source tree: the documented command."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert text.startswith("usage: python -m benchmarks "), text
    # every option of the suite, and the report's default home next to the suite
    for option in ("--quick", "--repeats", "--out", "--threads", "--tables", "--batches",
                   "--dists", "--optimizers", "--reference", "--no-torch", "--no-tiny",
                   "--no-plots", "--bw-mb", "--index-dtype", "--distinct-batches", "--zipf",
                   "--min-sample-ms", "--warm-up-ms", "--order", "--seed"):
        assert f"{option} " in text, option
    assert "(default benchmarks/results)" in text, text


def test_torch_loop_quick_runs(tmp_path):
    """benchmarks/torch_loop.py (the DLRM-style loop) in its tiny mode: every contender
    trains at 1 and 2 threads, is compared with its torch counterpart, and the plot is
    written."""
    pytest.importorskip("torch.optim")
    pytest.importorskip("matplotlib")
    from benchmarks import torch_loop
    png = tmp_path / "loop.png"
    rows = torch_loop.main(["--quick", "--iters", "3", "--plot", str(png)])
    assert png.stat().st_size > 0
    assert [(r["name"], r["threads"]) for r in rows] == \
        [(n, t) for t in (1, 2) for n in torch_loop.CONTENDERS]
    for r in rows:
        assert r["it_ms"] > 0 and r["opt_ms"] > 0 and 0 < r["loss"] < 2
        assert r["it_range"][0] <= r["it_ms"] <= r["it_range"][1]
        assert r["opt_range"][0] <= r["opt_ms"] <= r["opt_range"][1]
        assert r["first_opt_ms"] > 0
        assert (r["it_ratio"] is None) == (r["name"] not in torch_loop.BASELINE)
    # preset="torch" is SparseAdam + Adam's rule: the same losses to float32 rounding
    for t in (1, 2):
        by = {r["name"]: r for r in rows if r["threads"] == t}
        assert abs(by["sparseopt Adam preset=torch"]["loss"]
                   - by["torch SparseAdam+Adam"]["loss"]) < 1e-5


def test_torch_loop_memory_probe():
    """The peak-memory child of the loop benchmark: torch's SparseAdam state (two moments per
    element of every table, zero-filled at the first step) is resident; the probe sees it."""
    pytest.importorskip("torch.optim")
    from benchmarks import torch_loop
    args = torch_loop.parse(["--quick", "--rows", "200000", "--threads", "1"])
    out = torch_loop.memory_in_child("torch SparseAdam+Adam", args)
    # two float32 moments of 200000 x 16: 24.4 MiB
    assert out["peak_mb"] > 20, out
