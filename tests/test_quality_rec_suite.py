"""Smoke test of the recommender quality suite (benchmarks/quality_rec.py) on tiny generated
stand-ins of its data sets: the same preprocessing (benchmarks/quality_rec_data.py) and the
same contenders, on frames with the real columns but made-up rows. Neither the real data nor
the optional packages (Surprise, implicit, torch) are needed: a contender whose package is
missing is skipped with a note. Skipped when pandas or threadpoolctl is missing.
"""
import csv
import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("pandas")
pytest.importorskip("threadpoolctl")
import pandas as pd  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)
from benchmarks import quality_rec, quality_rec_data  # noqa: E402

PACKAGES = {"Surprise SVD": "surprise", "Surprise BaselineOnly": "surprise",
            "torch MF (tuned)": "torch", "implicit BPR": "implicit", "implicit ALS": "implicit",
            "implicit ALS (counts)": "implicit", "LightFM WARP": "lightfm"}


def _expected(contenders):
    return {name for name, _ in contenders
            if name not in PACKAGES or importlib.util.find_spec(PACKAGES[name]) is not None}


def _ratings(rng, n_users=60, n_items=40, n=1500, lo=1.0, hi=5.0, step=1.0):
    """Ratings with strong user and item biases plus a rank-2 interaction."""
    u = rng.integers(0, n_users, size=n)
    i = rng.integers(0, n_items, size=n)
    bu, bi = rng.normal(0, 0.8, n_users), rng.normal(0, 0.8, n_items)
    P, Q = rng.normal(0, 0.6, (n_users, 2)), rng.normal(0, 0.6, (n_items, 2))
    r = 3 + bu[u] + bi[i] + (P[u] * Q[i]).sum(1) + rng.normal(0, 0.3, n)
    return u, i, np.clip(np.round(r / step) * step, lo, hi)


def _groups(rng, n_users, n_items, per_user, n_groups=4):
    """Each user takes per_user items, 90% of them from their group's block of items."""
    users, items = [], []
    block = n_items // n_groups
    for user in range(n_users):
        g = user % n_groups
        own = rng.random(per_user) < 0.9
        pick = np.where(own, g * block + rng.integers(0, block, per_user),
                        rng.integers(0, n_items, per_user))
        users += [user] * per_user
        items += list(pick)
    return np.array(users), np.array(items)


@pytest.fixture(scope="module")
def stand_ins():
    rng = np.random.default_rng(0)
    u, i, r = _ratings(rng, step=0.5)
    movielens = pd.DataFrame({"userId": u + 1, "movieId": i * 7 + 3, "rating": r,
                              "title": "t", "year": 2000.0, "genres": "Drama",
                              "timestamp": 0})
    u, i, r = _ratings(rng)
    insteval = pd.DataFrame({"s": u + 1, "d": i + 1000, "y": r.astype(int), "studage": 2,
                             "lectage": 1, "service": 0, "dept": 1})
    u, i = _groups(rng, 80, 24, 6)
    tail = np.array([f"N{x:03d}" for x in u], dtype=object)
    tail[::17] = None  # flights without a tail number are dropped
    flights = pd.DataFrame({"tailnum": tail, "dest": [f"D{x}" for x in i], "carrier": "UA"})
    u, i = _groups(rng, 150, 32, 3)
    pizza = pd.DataFrame({"id": [f"2015-{x:06d}" for x in u], "name": [f"p{x}" for x in i],
                          "size": "M", "price": 12.0})
    return [quality_rec_data.build_movielens(movielens),
            quality_rec_data.build_insteval(insteval),
            quality_rec_data.build_movielens_implicit(movielens),
            quality_rec_data.build_flights_planes(flights),
            quality_rec_data.build_pizza_orders(pizza),
            quality_rec_data.SPECS["flights_planes_counts"].build(flights),
            quality_rec_data.SPECS["pizza_orders_counts"].build(pizza),
            quality_rec_data.build_insteval_implicit(insteval)]


def test_builders_split_cleanly(stand_ins):
    by_name = {d.name: d for d in stand_ins}
    assert set(by_name) == set(quality_rec_data.SPECS)
    for d in stand_ins:
        assert d.task == quality_rec_data.SPECS[d.name].task
        for u, i in ((d.train_u, d.train_i), (d.test_u, d.test_i)):
            assert u.min() >= 0 and u.max() < d.n_users and i.min() >= 0 and i.max() < d.n_items
        assert len(d.test_u) > 0
        train = set(zip(d.train_u.tolist(), d.train_i.tolist()))
        test = set(zip(d.test_u.tolist(), d.test_i.tolist()))
        if d.task == "rating":
            # held-out ratings are warm: their user and item have training ratings
            assert set(d.test_u) <= set(d.train_u) and set(d.test_i) <= set(d.train_i)
            n = len(d.train_u) + len(d.test_u) + d.info["cold_test_dropped"]
            assert abs(len(d.test_u) + d.info["cold_test_dropped"] - 0.2 * n) <= 1
        else:
            assert not train & test  # a held-out positive is never a training positive
            assert np.all(d.test_r == 1)
            if d.info.get("counts"):  # training values are counts, at least one
                assert np.all(d.train_r >= 1) and np.all(d.train_r == np.round(d.train_r))
            else:
                assert np.all(d.train_r == 1)
            assert len(train) == len(d.train_u)  # one positive per pair
            assert set(d.test_u) <= set(d.train_u)  # an evaluated user has training items
    assert by_name["movielens_implicit"].info["positive"].startswith("rating >= 4")
    assert by_name["movielens"].train_r.min() >= 1 and by_name["insteval"].train_r.max() <= 5
    # rows without a tail number are dropped; every plane still has other rows
    assert by_name["flights_planes"].n_users == 80 and by_name["flights_planes"].n_items <= 24
    # a _counts variant: the plain set's pairs and split, the number of raw rows as value
    for name in ("flights_planes", "pizza_orders"):
        plain, counted = by_name[name], by_name[name + "_counts"]
        for a in ("train_u", "train_i", "test_u", "test_i", "test_r"):
            np.testing.assert_array_equal(getattr(plain, a), getattr(counted, a))
        assert counted.train_r.max() > 1  # the stand-ins repeat pairs
    pizza, counted = stand_ins[4], stand_ins[6]
    assert counted.train_r.sum() + len(counted.test_u) <= 450  # 150 orders x 3 pizzas


def test_cache_round_trip(stand_ins, tmp_path, monkeypatch):
    data = stand_ins[3]
    calls = []

    def build(frame, max_rows):
        calls.append(max_rows)
        return data

    spec = quality_rec_data.SPECS[data.name]
    monkeypatch.setitem(quality_rec_data.SPECS, data.name,
                        quality_rec_data.Spec(spec.name, spec.task, spec.package, spec.source,
                                              lambda: None, build))
    first = quality_rec_data.load(data.name, str(tmp_path))
    second = quality_rec_data.load(data.name, str(tmp_path))
    assert calls == [None]
    for got in (first, second):
        assert (got.X_train != data.X_train).nnz == 0 and (got.X_test != data.X_test).nnz == 0
        assert (got.n_users, got.n_items, got.task) == (data.n_users, data.n_items, "implicit")
    assert len(list(tmp_path.glob("*.npz"))) == 1


def test_ranking_metrics_and_exclusion():
    X_train = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=float))
    X_test = sp.csr_matrix(np.array([[0, 1, 0, 1, 0], [0, 0, 1, 0, 0]], dtype=float))
    scores = np.array([[9.0, 1.0, 2.0, 3.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    rec = quality_rec.top_k_excluding(scores, np.array([0, 1]), X_train, k=3)
    np.testing.assert_array_equal(rec, [[3, 2, 1], [4, 3, 2]])  # item 0 seen by user 0
    # user 0: hits at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2; user 1: hit at rank 3 -> 1/3
    assert quality_rec.map_at_k(X_test, rec, 3) == pytest.approx(((1 + 2 / 3) / 2 + 1 / 3) / 2)
    # at k=1 user 0 has more relevant items than k: AP divides by min(k, relevant) = 1
    assert quality_rec.map_at_k(X_test, rec, 1) == pytest.approx((1 + 0) / 2)
    s = quality_rec.ranking_scores(X_test, np.array([0, 1]), rec, k=3)
    assert s["precision"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert s["recall"] == pytest.approx((1 + 1) / 2)


def test_suite_runs_and_reports(stand_ins, tmp_path):
    logs = []
    results = [quality_rec.run_dataset(d, quick=True, log=logs.append) for d in stand_ins]
    assert logs
    md = quality_rec.write_outputs(results, str(tmp_path / "out"), "python x --quick",
                                   [n for res in results for n in res["notes"]])
    for res in results:
        table = quality_rec.RATING_CONTENDERS if res["task"] == "rating" else \
            quality_rec.IMPLICIT_CONTENDERS + \
            (quality_rec.COUNT_CONTENDERS if res["info"].get("counts") else [])
        names = [r["model"] for r in res["rows"]]
        assert set(names) == _expected(table) and len(names) == len(set(names))
        skipped = {n for n, _ in table} - set(names)
        assert len(res["notes"]) == len(skipped)  # every skipped contender says why
        by = {r["model"]: r for r in res["rows"]}
        for r in res["rows"]:
            assert r["fit_s"] >= 0 and r["epochs"] >= 1
            if res["task"] == "rating":
                assert 0 < r["rmse"] < 4, r
            else:
                for m in ("precision", "recall", "ndcg", "map"):
                    assert 0 <= r[m] <= 1, r
        if res["task"] == "rating":
            d = next(x for x in stand_ins if x.name == res["dataset"])
            mean_rmse = np.sqrt(np.mean((d.test_r - d.train_r.mean()) ** 2))
            # the stand-ins have strong biases: the bias baseline must beat the global mean
            assert by["bias baseline"]["rmse"] < 0.9 * mean_rmse
    # on a set with counts the binary rows read the plain set's matrix: the same figures
    by_set = {res["dataset"]: {r["model"]: r for r in res["rows"]} for res in results}
    for name in ("flights_planes", "pizza_orders"):
        for model in ("sparseopt MF BPR", "sparseopt MF WARP", "popularity"):
            for m in ("precision", "recall", "ndcg", "map"):
                assert by_set[name][model][m] == by_set[name + "_counts"][model][m]
    # outputs: one table row per contender, CSV and JSON agree
    all_models = {r["model"] for res in results for r in res["rows"]}
    table_rows = [ln for ln in md.splitlines() if ln.startswith("| ")
                  and ln.split("|")[2].strip() in all_models]
    n_rows = sum(len(res["rows"]) for res in results)
    assert len(table_rows) == n_rows
    with open(tmp_path / "out" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == n_rows
    with open(tmp_path / "out" / "results.json") as f:
        assert len(json.load(f)["results"]) == len(stand_ins)


def test_an_oracle_scores_perfectly(stand_ins):
    """The evaluation path itself: a contender that scores by the held-out matrix gets the
    ideal precision (every list full of held-out items, capped by their number)."""
    d = next(x for x in stand_ins if x.name == "flights_planes")

    def oracle(data):
        X = data.X_test.toarray()
        return 0.0, (lambda users: X[users]), 1, ""

    res = quality_rec.run_dataset(d, contenders=[("oracle", oracle)], log=lambda s: None)
    (row,) = res["rows"]
    assert row["recall"] == pytest.approx(1.0) and row["ndcg"] == pytest.approx(1.0)
    assert row["map"] == pytest.approx(1.0)
    n_rel = np.bincount(d.test_u, minlength=d.n_users)
    ideal = np.mean(np.minimum(n_rel[n_rel > 0], 10) / 10)
    assert row["precision"] == pytest.approx(ideal)


def test_datasets_option_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit):
        quality_rec.main(["--datasets", "no_such_set"])
    assert "unknown data set" in capsys.readouterr().err
