"""Smoke test of the real-data quality suite (benchmarks/quality.py) on tiny generated
stand-ins of its data sets: the same preprocessing (benchmarks/quality_data.py) and the same
contenders, on frames with the real columns but made-up rows. The real data packages are never
needed; the test is skipped when pandas or threadpoolctl is missing.
"""
import csv
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("pandas")
pytest.importorskip("threadpoolctl")
import pandas as pd  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)
from benchmarks import quality, quality_data  # noqa: E402

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
WORDS_POS = ["great", "fun", "moving", "superb", "charming", "smart"]
WORDS_NEG = ["dull", "boring", "messy", "flat", "tedious", "bland"]
WORDS_PLOT = ["when", "his", "family", "town", "discovers", "must"]


def _texts(rng, n, vocab):
    return [" ".join(rng.choice(vocab, size=8)) for _ in range(n)]


def _reviews_frame(rng, n=300):
    cats = rng.choice(["fresh", "rotten", "plot"], size=n, p=[0.45, 0.4, 0.15])
    vocab = {"fresh": WORDS_POS, "rotten": WORDS_NEG, "plot": WORDS_PLOT}
    neutral = ["film", "movie", "story", "the", "a", "cast"]
    text = [" ".join(_texts(rng, 1, vocab[c] + neutral)) for c in cats]
    return pd.DataFrame({"category": cats, "text": text, "movie_name": "m",
                         "has_plot_and_reviews": True})


def _tweets_frame(rng, n=300):
    src = rng.choice(["Twitter for Android", "Twitter for iPhone", "Twitter Web Client"],
                     size=n)
    text = [" ".join(_texts(rng, 1, (WORDS_NEG if s.endswith("Android") else WORDS_POS)
                            + ["rally", "today"])) for s in src]
    return pd.DataFrame({"source": src, "text": text, "is_retweet": rng.random(n) < 0.1})


def _flights_frame(rng, n=600):
    carrier = rng.choice(["UA", "AA", "B6", "DL"], size=n)
    origin = rng.choice(["EWR", "JFK", "LGA"], size=n)
    hour = rng.integers(5, 23, size=n)
    month = rng.integers(1, 13, size=n)
    day = rng.integers(1, 29, size=n)
    late = (origin == "EWR") & (hour > 15)
    delay = np.where(late, 40.0, 0.0) + rng.normal(0, 10, size=n)
    cancelled = rng.random(n) < np.where(late, 0.3, 0.02)
    return pd.DataFrame({
        "year": 2013, "month": month, "day": day,
        "dep_time": np.where(cancelled, np.nan, hour * 100.0),
        "sched_dep_time": hour * 100, "arr_delay": np.where(cancelled, np.nan, delay),
        "sched_arr_time": (hour + 2) % 24 * 100, "carrier": carrier,
        "flight": rng.integers(1, 50, size=n), "origin": origin,
        "dest": rng.choice(["IAH", "MIA", "ORD", "ATL", "LAX"], size=n),
        "distance": rng.integers(200, 2500, size=n), "hour": hour,
        "time_hour": [f"2013-{m:02d}-{d:02d}T{h:02d}:00:00Z"
                      for m, d, h in zip(month, day, hour)]})


def _movies_frame(rng, n=400):
    genres = ["Action", "Animation", "Comedy", "Drama", "Documentary", "Romance", "Short"]
    g = rng.random((n, len(genres))) < 0.3
    rating = 5 + 1.5 * g[:, 3] - 1.0 * g[:, 0] + rng.normal(0, 0.5, size=n)
    frame = pd.DataFrame(g.astype(int), columns=genres)
    frame["title"] = _texts(rng, n, WORDS_POS + WORDS_NEG)
    frame["year"] = rng.integers(1950, 2005, size=n)
    frame["length"] = rng.integers(5, 180, size=n)
    frame["votes"] = rng.integers(5, 5000, size=n)
    frame["budget"] = np.where(rng.random(n) < 0.5, np.nan, rng.integers(1e5, 1e8, size=n))
    frame["mpaa"] = rng.choice(["R", "PG", None], size=n)
    frame["rating"] = np.clip(rating, 1, 10)
    return frame


@pytest.fixture(scope="module")
def stand_ins():
    rng = np.random.default_rng(0)
    reviews, flights = _reviews_frame(rng), _flights_frame(rng)
    built = [quality_data.build_tweets(_tweets_frame(rng)),
             quality_data.build_reviews3(reviews),
             quality_data.build_reviews_hashed(reviews),
             quality_data.build_flights_delay(flights),
             quality_data.build_flights_cancelled(flights, max_rows=500),
             quality_data.build_movies(_movies_frame(rng))]
    return built


def test_preprocessing_shapes_and_splits(stand_ins):
    by_name = {d.name: d for d in stand_ins}
    assert set(by_name) == set(quality_data.SPECS)
    for d in stand_ins:
        assert d.task == quality_data.SPECS[d.name].task
        assert d.X_train.format == "csr" and d.X_test.format == "csr"
        assert d.X_train.shape[1] == d.X_test.shape[1]
        assert d.X_train.shape[0] == len(d.y_train) and d.X_test.shape[0] == len(d.y_test)
        n = d.X_train.shape[0] + d.X_test.shape[0]
        assert abs(d.X_test.shape[0] - quality_data.TEST_SIZE * n) <= 1
        assert np.all(np.isfinite(d.X_train.data))
    assert by_name["reviews_hashed"].X_train.shape[1] == 2**20
    assert sorted(np.unique(by_name["reviews3"].y_train)) == [0, 1, 2]
    # retweets and other sources are dropped
    assert by_name["tweets"].X_train.shape[0] + by_name["tweets"].X_test.shape[0] < 300
    # one-hot flights: one nonzero (value 1) per feature group in every row
    fl = by_name["flights_delay"].X_train
    assert np.all(np.diff(fl.indptr) == len(quality_data._FLIGHT_GROUPS))
    assert np.all(fl.data == 1.0)
    # the subsample is honoured, and cancelled flights are kept as positives
    fc = by_name["flights_cancelled"]
    assert fc.X_train.shape[0] + fc.X_test.shape[0] == 500
    assert 0 < fc.y_train.mean() < 0.5


def test_cache_round_trip(stand_ins, tmp_path, monkeypatch):
    data = stand_ins[1]
    calls = []

    def build(frame, max_rows):
        calls.append(max_rows)
        return data

    spec = quality_data.SPECS["reviews3"]
    monkeypatch.setitem(quality_data.SPECS, "reviews3",
                        quality_data.Spec(spec.name, spec.task, spec.package, spec.source,
                                          spec.features, lambda: None, build))
    first = quality_data.load("reviews3", str(tmp_path))
    second = quality_data.load("reviews3", str(tmp_path))
    assert calls == [None]  # built once, then read from the cache
    for got in (first, second):
        assert (got.X_train != data.X_train).nnz == 0
        assert (got.X_test != data.X_test).nnz == 0
        np.testing.assert_array_equal(got.y_test, data.y_test)
        assert got.task == "multiclass"
    assert len(list(tmp_path.glob("*.npz"))) == 1


def test_suite_runs_and_reports(stand_ins, tmp_path):
    logs = []
    results = [quality.run_dataset(d, epochs=2, use_vw=False, log=logs.append)
               for d in stand_ins]
    assert logs  # progress is reported
    img = str(tmp_path / "img" / "quality.png") if HAS_MATPLOTLIB else None
    md, png = quality.write_outputs(results, str(tmp_path / "out"), img, "python x --quick")
    models = {"sparseopt", "sparseopt ftrl l1", "sparseopt best alpha", "sklearn SGD",
              "sklearn SGD best alpha"}
    for res in results:
        names = {r["model"] for r in res["rows"]}
        assert models <= names and len(names) == 6
        ftrl = next(r for r in res["rows"] if r["model"] == "sparseopt ftrl l1")
        dense = next(r for r in res["rows"] if r["model"] == "sparseopt")
        assert 0 < ftrl["nnz"] <= dense["nnz"]  # L1's exact zeros are counted
        assert set(res["curves"]) == {"sparseopt", "sklearn SGD"}
        for c in res["curves"].values():
            assert len(c["score"]) == 2 and c["time_s"][0] <= c["time_s"][1]
        for r in res["rows"]:
            assert r["fit_s"] > 0
            if res["task"] == "regression":
                assert 0 < r["rmse"] and r["r2"] <= 1
            else:
                assert 0 <= r["auc"] <= 1 and 0 <= r["accuracy"] <= 1 and r["logloss"] > 0
        best_key = [r for r in res["rows"] if "best alpha" in r["model"]]
        for r in best_key:  # the reported alpha is the best of its grid
            grid = r["grid"]
            assert set(grid) == set(quality.ALPHAS)
            pick = max if res["key"] == "auc" else min
            assert grid[r["alpha"]] == pick(grid.values())
        # the best score and target are consistent, and a contender at the best meets it
        key = res["key"]
        scores = [r[key] for r in res["rows"]]
        if key == "auc":
            assert res["best"] >= max(scores) and res["target"] == pytest.approx(
                0.99 * res["best"])
        else:
            assert res["best"] <= min(scores)
        assert any(r["t99_s"] is not None for r in res["rows"])
    # the stand-ins carry signal: the suite must find it
    by_name = {res["dataset"]: res for res in results}
    assert by_name["tweets"]["best"] > 0.9
    assert by_name["flights_delay"]["best"] > 0.7
    # outputs: one table row per contender, CSV and JSON agree with it
    table_rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "model" not in ln
                  and "train rows" not in ln and ln.split("|")[2].strip() in
                  {r["model"] for res in results for r in res["rows"]}]
    n_rows = sum(len(res["rows"]) for res in results)
    assert len(table_rows) == n_rows
    with open(tmp_path / "out" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == n_rows
    with open(tmp_path / "out" / "results.json") as f:
        assert len(json.load(f)["results"]) == len(stand_ins)
    if HAS_MATPLOTLIB:
        assert png and os.path.getsize(png) > 1000


def test_datasets_option_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit):
        quality.main(["--datasets", "no_such_set"])
    assert "unknown data set" in capsys.readouterr().err


def test_grid_search_script_runs_both_libraries_unchanged():
    """benchmarks/gridsearch.py's search is plain scikit-learn code: it runs every candidate
    of its grid on both estimator classes (the same 24 parameter sets, scored), and
    sparseopt's candidates learn on a separable problem."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import SGDClassifier as SkSGD

    from benchmarks import gridsearch
    from sparseopt.linear_model import SGDClassifier
    X, y = make_classification(240, 12, n_informative=6, random_state=0)
    results = {}
    for cls in (SkSGD, SGDClassifier):
        grid = gridsearch.search(cls, X, y)
        assert isinstance(grid.best_estimator_, cls)
        results[cls] = grid.cv_results_
    params = [gridsearch._describe(p) for p in results[SGDClassifier]["params"]]
    assert len(params) == len(set(params)) == 24
    assert params == [gridsearch._describe(p) for p in results[SkSGD]["params"]]
    scores = results[SGDClassifier]["mean_test_score"]
    assert np.all(np.isfinite(scores)) and scores.min() > 0.75, scores
