"""Smoke test of the factorisation machine quality suite (benchmarks/quality_fm.py) on tiny
generated stand-ins: a one-hot click set whose label depends on a pair of blocks, and a
rating set built by benchmarks/quality_rec_data.py's own builder from a made-up frame. The
real data is not needed; modern-fm is skipped with a note when it is not installed. Skipped
when pandas or threadpoolctl is missing.
"""
import csv
import importlib.util
import json
import os
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("pandas")
pytest.importorskip("threadpoolctl")
import pandas as pd  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)
from benchmarks import quality_fm, quality_rec_data  # noqa: E402


def _clicks(rng, n=3000, blocks=(30, 20, 10)):
    """One-hot rows of three categorical blocks; the positive rate depends on the first two
    blocks' pair (an interaction) and on the third block (a main effect)."""
    cats = [rng.integers(0, b, n) for b in blocks]
    offs = np.cumsum((0,) + blocks[:-1])
    cols = np.column_stack([c + o for c, o in zip(cats, offs)])
    X = sp.csr_matrix((np.ones(cols.size), cols.ravel(), np.arange(0, cols.size + 1, 3)),
                      shape=(n, sum(blocks)))
    a, b = rng.normal(size=(blocks[0], 2)), rng.normal(size=(blocks[1], 2))
    logit = 2 * (a[cats[0]] * b[cats[1]]).sum(1) + rng.normal(size=blocks[2])[cats[2]]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    tr = np.arange(n) < int(0.8 * n)
    return types.SimpleNamespace(name="clicks", task="binary", X_train=X[tr], X_test=X[~tr],
                                 y_train=y[tr], y_test=y[~tr])


def _ratings(rng, n_users=60, n_items=40, n=2000):
    u = rng.integers(0, n_users, n)
    i = rng.integers(0, n_items, n)
    bu, bi = rng.normal(0, 0.8, n_users), rng.normal(0, 0.8, n_items)
    r = np.clip(np.round(3 + bu[u] + bi[i] + rng.normal(0, 0.3, n)), 1, 5)
    frame = pd.DataFrame({"s": u + 1, "d": i + 1000, "y": r.astype(int), "studage": 2,
                          "lectage": 1, "service": 0, "dept": 1})
    return quality_rec_data.build_insteval(frame)


def test_one_hot_and_derived_clicks():
    X = quality_fm.one_hot(3, 4, [0, 2], [3, 1])
    assert X.toarray().tolist() == [[1, 0, 0, 0, 0, 0, 1], [0, 0, 1, 0, 1, 0, 0]]
    rec = _ratings(np.random.default_rng(1))
    d = quality_fm.clicks_from_ratings("insteval_clicks", rec)
    assert d.X_train.shape == (len(rec.train_u), rec.n_users + rec.n_items)
    assert np.array_equal(d.y_test, (rec.test_r >= 4).astype(int))
    assert set(quality_fm.DATASETS) == set(quality_fm.CLICK_SETS) | set(quality_fm.RATING_SETS)


def test_suite_runs_and_reports(tmp_path):
    rng = np.random.default_rng(0)
    data = [_clicks(rng), _ratings(rng)]
    logs = []
    results = [quality_fm.run_dataset(d, repeats=2, log=logs.append) for d in data]
    assert logs
    has_mfm = importlib.util.find_spec("modern_fm") is not None
    clicks, ratings = results
    names = [r["model"] for r in clicks["rows"]]
    expected = [n for n, _ in quality_fm.CLICK_CONTENDERS if has_mfm or n != "modern-fm FM"]
    assert names == expected
    assert len(clicks["notes"]) == (0 if has_mfm else 1)  # a skipped contender says why
    by = {r["model"]: r for r in clicks["rows"]}
    for r in clicks["rows"]:
        assert 0.5 < r["auc"] <= 1 and r["fit_s"] >= 0 and r["runs"] == 2
    assert by[quality_fm.CLICK_REFERENCE]["time_ratio"] == 1.0
    # the label is mostly a pairwise interaction, which a linear model cannot represent
    assert by["sparseopt FM"]["auc"] > by["sparseopt linear"]["auc"]
    assert [r["model"] for r in ratings["rows"]] == ["sparseopt FM", "sparseopt MF"]
    d = data[1]
    mean_rmse = np.sqrt(np.mean((d.test_r - d.train_r.mean()) ** 2))
    rmse = {r["model"]: r["rmse"] for r in ratings["rows"]}
    assert all(0 < v < 4 for v in rmse.values()), rmse
    assert rmse["sparseopt FM"] < mean_rmse  # the FM learns the biases
    md = quality_fm.write_outputs(results, str(tmp_path / "out"), "python x")
    n_rows = sum(len(res["rows"]) for res in results)
    models = {r["model"] for res in results for r in res["rows"]}
    assert len([ln for ln in md.splitlines() if ln.startswith("| ")
                and ln.split("|")[2].strip() in models]) == n_rows
    with open(tmp_path / "out" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == n_rows
    with open(tmp_path / "out" / "results.json") as f:
        assert len(json.load(f)["results"]) == 2


def test_cli_rejects_unknown_sets_and_repeats():
    with pytest.raises(SystemExit):
        quality_fm.main(["--datasets", "nope"])
    with pytest.raises(SystemExit):
        quality_fm.main(["--repeats", "0"])
