"""Smoke tests for ``python -m sparseopt`` and the scripts in examples/.

Each runs in a subprocess, as a user would run it; the whole file takes a
few seconds plus the example scripts' own runtime.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

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


def test_demo_is_deterministic_given_seed(quick_demo, workdir):
    # same seed, one thread instead of the default: identical losses (rows are
    # independent, so the thread count must not change any result)
    def losses(text):
        # every RMSE printed during training (timings cut off) and the summary's
        per_epoch = [ln.split(" step ")[0] for ln in text.splitlines() if "RMSE" in ln]
        return per_epoch, summary_rows(text)
    again = run("-m", "sparseopt", "demo", "--quick", "--seed", "3", "--epochs", "3",
                "--threads", "1", cwd=workdir)
    assert losses(again) == losses(quick_demo)
    assert len(losses(again)[0]) > 4 * 4


def test_cli_config_and_usage(workdir):
    assert run("-m", "sparseopt", "config", cwd=workdir).strip()
    proc = run_raw("-m", "sparseopt", cwd=workdir)
    assert proc.returncode == 2 and "demo" in proc.stderr


def test_cli_benchmark_forwards_or_explains(workdir):
    spec = importlib.util.find_spec("sparseopt.benchmarks")
    proc = run_raw("-m", "sparseopt", "benchmark", "--help", cwd=workdir)
    if spec is not None and spec.origin is not None:
        # --help after the command belongs to the benchmarks, not to our parser
        assert proc.returncode == 0 and "usage" in proc.stdout, proc.stderr
        assert "{demo,config,benchmark}" not in proc.stdout
    else:
        assert proc.returncode == 2
        assert "sparseopt.benchmarks" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("script", ["embedding_adam.py", "state_dict_resume.py",
                                    "torch_embedding.py"])
def test_example_runs(script, workdir):
    if script.startswith("torch") and importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    out = run(str(EXAMPLES / script), cwd=workdir)
    assert out.strip()
    if script == "state_dict_resume.py":
        assert "identical to uninterrupted run: True" in out
    if script == "torch_embedding.py":
        # preset="torch" follows torch.optim.SparseAdam to float32 rounding
        diff = float(out.split("with preset='torch':")[1].split()[0])
        assert diff < 1e-4, out
