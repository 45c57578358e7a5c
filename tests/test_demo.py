"""Smoke tests for ``python -m sparseopt`` and the scripts in examples/.

Each runs in a subprocess, as a user would run it; the whole file takes a
few seconds plus the example scripts' own runtime.
"""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sparseopt

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OPTIMIZER_LABELS = ["Adam", "Adam(decay)", "Adagrad", "RMSprop"]
# The subprocesses import the very sparseopt this test process imported (in-tree
# or installed), and run from an empty directory so the cwd cannot shadow it.
SITE = str(Path(sparseopt.__file__).resolve().parents[1])
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [SITE, *filter(None, [os.environ.get("PYTHONPATH")])]))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("demo")


def run_raw(*args, cwd, timeout=120):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=ENV)


def run(*args, cwd, timeout=120):
    proc = run_raw(*args, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def summary_rows(out):
    """{label: (train RMSE, held-out RMSE)} from the demo's final summary table."""
    table = out[out.index("summary after"):]
    rows = {}
    for line in table.splitlines():
        fields = line.split()
        if line.startswith("  global mean"):
            rows["baseline"] = (None, float(fields[2]))
        elif fields and fields[0] in OPTIMIZER_LABELS:
            # columns: optimizer, lr, train RMSE, held-out RMSE, timings ...
            rows[fields[0]] = (float(fields[2]), float(fields[3]))
    return rows


def summary_timings(out):
    """{label: (step s, total s, step %, M rows/s)} from the summary table."""
    table = out[out.index("summary after"):]
    rows = {}
    for line in table.splitlines():
        fields = line.split()
        if fields and fields[0] in OPTIMIZER_LABELS:
            step_s, total_s, pct, mrows = fields[4:8]
            rows[fields[0]] = (float(step_s), float(total_s), float(pct.rstrip("%")),
                               float(mrows))
    return rows


def epoch_lines(out):
    """{label: [(train RMSE, held-out RMSE), ...]} per section: the start line, then one per
    epoch (with its step time, total time and M rows/s)."""
    sections = {}
    label = None
    for line in out.splitlines():
        m = re.match(r"^(\S+): so\.", line)
        if m:
            label = m.group(1)
            sections[label] = []
            continue
        m = re.match(r"^\s+(?:start|epoch \d+/\d+)\s+train RMSE ([\d.]+)\s+held-out RMSE "
                     r"([\d.]+)(?:\s+step\s+([\d.]+) s of\s+([\d.]+) s\s+([\d.]+) M rows/s)?",
                     line)
        if m and label is not None:
            sections[label].append(tuple(float(g) if g is not None else None
                                         for g in m.groups()))
    return sections


def baseline_figures(out):
    """(global mean, its held-out RMSE, noise floor) from the demo's baseline line."""
    m = re.search(r"predicting the global mean ([\d.]+) gives held-out RMSE ([\d.]+); "
                  r"the noise floor is ([\d.]+)", out)
    assert m, out
    return tuple(float(g) for g in m.groups())


@pytest.fixture(scope="module")
def quick_demo(workdir):
    return run("-m", "sparseopt", "demo", "--quick", "--seed", "3", cwd=workdir)


def test_demo_quick_trains_every_optimizer(quick_demo):
    out = quick_demo
    rows = summary_rows(out)
    assert set(rows) == {"baseline", *OPTIMIZER_LABELS}, out
    for label in OPTIMIZER_LABELS:
        assert f"{label}: so." in out                        # per-optimizer section
        # the model learned: clearly better than predicting the global mean
        assert rows[label][1] < 0.9 * rows["baseline"][1], (label, rows)
    assert "M rows/s" in out


def test_demo_quick_figures_are_sane(quick_demo):
    """The printed figures, not just their presence: every optimizer starts at the baseline,
    improves every epoch on the training data, ends between the noise floor and the baseline
    on held-out data, and its timings are positive, finite and consistent with each other."""
    out = quick_demo
    mean, baseline, noise = baseline_figures(out)
    assert 1.0 <= mean <= 5.0 and noise < baseline
    sections = epoch_lines(out)
    assert set(sections) == set(OPTIMIZER_LABELS), out
    timings = summary_timings(out)
    for label in OPTIMIZER_LABELS:
        lines = sections[label]
        start, epochs = lines[0], lines[1:]
        assert len(epochs) == 3, lines
        # before training the model predicts about the global mean
        assert abs(start[1] - baseline) < 0.02 * baseline, (label, start, baseline)
        train = [start[0]] + [e[0] for e in epochs]
        assert all(b < a for a, b in zip(train, train[1:])), (label, train)
        held_out = epochs[-1][1]
        # nothing beats the noise of the generator by much; everything beats the mean
        assert 0.9 * noise < held_out < 0.9 * baseline, (label, held_out, noise, baseline)
        for _, _, step_s, total_s, mrows in epochs:
            assert 0 < step_s <= total_s < 60 and 0 < mrows < 1e4, (label, epochs)
        step_s, total_s, pct, mrows = timings[label]
        assert 0 < step_s <= total_s, (label, timings[label])
        assert abs(pct - 100.0 * step_s / total_s) <= 100.0 * 0.01 / total_s + 1.0, \
            (label, timings[label])
        assert np.isfinite(mrows) and 0 < mrows < 1e4, (label, timings[label])
        # the summary's M rows/s is that of the epochs' step time taken together
        per_epoch = sum(e[2] for e in epochs)
        assert abs(step_s - per_epoch) <= 0.005 * len(epochs) + 0.01, (label, step_s, epochs)
        assert summary_rows(out)[label][1] == held_out


def losses(text):
    """Every RMSE the demo printed during training (timings cut off) and the summary's."""
    per_epoch = [ln.split(" step ")[0] for ln in text.splitlines() if "RMSE" in ln]
    return per_epoch, summary_rows(text)


def test_demo_is_deterministic_given_seed(quick_demo, workdir):
    # same seed, one thread instead of the default: identical losses (rows are
    # independent, so the thread count must not change any result)
    again = run("-m", "sparseopt", "demo", "--quick", "--seed", "3", "--epochs", "3",
                "--threads", "1", cwd=workdir)
    assert losses(again) == losses(quick_demo)
    assert len(losses(again)[0]) > 4 * 4


def test_cli_config_and_usage(workdir):
    from sparseopt import _config
    facts = _config.config()
    lines = run("-m", "sparseopt", "config", cwd=workdir).strip().splitlines()
    assert lines[0].startswith(f"sparseopt {sparseopt.__version__} (Python "), lines
    assert lines[0].endswith(f", {facts['machine']})"), lines
    omp = next(line for line in lines if line.strip().startswith("OpenMP:"))
    if facts["openmp"]:
        m = re.search(r"yes \((\d+) threads by default\)", omp)
        assert m and int(m.group(1)) >= 1, omp
    else:
        assert "no (serial build)" in omp, omp
    simd = next(line for line in lines if line.strip().startswith("SIMD clones:"))
    assert simd.strip().endswith(facts["simd_dispatch"]), (simd, facts)
    assert ("yes, dispatching to" in simd) == bool(facts["simd_clones"]), simd
    proc = run_raw("-m", "sparseopt", cwd=workdir)
    assert proc.returncode == 2 and "demo" in proc.stderr


def test_cli_demo_runs_the_example_script(quick_demo, workdir):
    """``python -m sparseopt demo`` is a thin entry over examples/demo.py: the script run
    directly prints the same figures, and the command hands its arguments, --help included,
    to the script's own parser."""
    script = run(str(EXAMPLES / "demo.py"), "--quick", "--seed", "3", cwd=workdir)
    assert losses(script) == losses(quick_demo)
    assert len(losses(script)[0]) > 4 * 4
    usage = " ".join(run("-m", "sparseopt", "demo", "--help", cwd=workdir).split())
    assert usage.startswith("usage: python -m sparseopt demo "), usage
    for option in ("--quick", "--seed", "--threads", "--epochs"):
        assert f"{option} " in usage, (option, usage)
    # the benchmarks run from a source checkout (python -m benchmarks), not from the package
    proc = run_raw("-m", "sparseopt", "benchmark", cwd=workdir)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr, proc.stderr


@pytest.mark.parametrize("script", ["embedding_adam.py", "state_dict_resume.py",
                                    "torch_embedding.py", "torch_dlrm.py"])
def test_example_runs(script, workdir):
    if script.startswith("torch") and importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    out = run(str(EXAMPLES / script), cwd=workdir)
    assert out.strip()
    if script == "embedding_adam.py":
        # lazy: exactly the rows the batch touched changed, and every stored entry of w
        m = re.search(r"rows of E changed: (\d+) of (\d+) \| unique indices: (\d+) \| "
                      r"entries of w changed: (\d+)", out)
        assert m, out
        changed, total, unique, w_changed = map(int, m.groups())
        assert total == 100_000 and 0 < unique <= 512 and changed == unique, out
        assert w_changed == 100, out  # sp.random(1, 100_000, density=1e-3): 100 entries
    if script == "state_dict_resume.py":
        assert "identical to uninterrupted run: True" in out
    if script == "torch_embedding.py":
        # preset="torch" follows torch.optim.SparseAdam to float32 rounding
        diff = float(out.split("with preset='torch':")[1].split()[0])
        assert diff < 1e-4, out
    if script == "torch_dlrm.py":
        assert "bitwise equal to the uninterrupted run: True" in out, out
        first, last = map(float, re.search(r"first 10 steps ([0-9.]+), last 10 steps "
                                           r"([0-9.]+)", out).groups())
        assert last < first, out
