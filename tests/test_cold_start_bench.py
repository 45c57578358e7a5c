"""Smoke test of the cold-start benchmark (benchmarks/cold_start.py) on a tiny generated
frame with dslabs::movielens's columns: the split holds whole films out, every contender runs,
and the metrics are in range. The real data are not needed."""
import os
import sys

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.append(ROOT)
from benchmarks import cold_start  # noqa: E402

GENRES = ["Drama", "Comedy", "Action", "Thriller", "Romance", "Horror"]


def _frame(n_users=80, n_films=120, n=3000, seed=0):
    """Users who like one genre: a film's genres drive its ratings."""
    rng = np.random.default_rng(seed)
    film_genres = [sorted(set(rng.choice(GENRES, size=rng.integers(1, 3)))) for _ in
                   range(n_films)]
    taste = rng.integers(0, len(GENRES), n_users)
    u = rng.integers(0, n_users, n)
    f = rng.integers(0, n_films, n)
    like = np.array([GENRES[taste[a]] in film_genres[b] for a, b in zip(u, f)])
    rating = np.clip(np.where(like, 4.5, 2.5) + rng.normal(0, 0.7, n), 0.5, 5.0)
    years = rng.integers(1950, 2016, n_films).astype(float)
    years[:3] = np.nan
    return pd.DataFrame({"userId": u + 1, "movieId": f * 7 + 3, "rating": rating,
                         "genres": ["|".join(film_genres[b]) for b in f],
                         "year": years[f], "title": [f"film {b}" for b in f]})


def test_split_holds_whole_films_out():
    s = cold_start.build_split(_frame(), seed=0)
    assert s.X_train.shape[1] + s.X_test.shape[1] == 120
    assert s.X_test.shape[1] == 24  # 20% of the films
    assert s.F_warm.shape[0] == s.X_train.shape[1] and s.F_cold.shape[0] == s.X_test.shape[1]
    np.testing.assert_allclose(np.asarray(s.F_warm.sum(axis=1)).ravel(), 1.0)
    assert any(n == "decade=unknown" for n in s.feature_names)
    assert any(n.startswith("genres=") for n in s.feature_names)
    users = s.test_users
    assert (np.diff(s.X_test.indptr)[users] > 0).all()


def test_every_contender_runs_and_features_help():
    lines = []
    results = cold_start.run(_frame(), seeds=(0,), log=lines.append)
    assert set(results) == set(cold_start.CONTENDERS)
    for name, rows in results.items():
        r = rows[0]
        assert 0.0 <= r["precision@10"] <= 1.0 and 0.0 <= r["recall@10"] <= 1.0
        assert 0.0 <= r["auc"] <= 1.0, name
    # users here rate by genre: the feature model must rank cold films far above chance
    assert results["MF-BPR + item features"][0]["auc"] > 0.7
    assert "mean +- std" not in "\n".join(lines)
    assert "MF-BPR + item features" in cold_start.summary(results)


def test_cli_options_parse(monkeypatch):
    monkeypatch.setattr(cold_start, "run", lambda frame, seeds, normalize, genre_sets: {
        "random": [dict(zip(["precision@10", "recall@10", "auc"], [0.0, 0.0, 0.5]))]})
    import benchmarks.quality_rec_data as qrd
    monkeypatch.setattr(qrd, "_rdata", lambda *a: None)
    sys.modules.setdefault("quality_rec_data", qrd)
    monkeypatch.setitem(sys.modules, "quality_rec_data", qrd)
    assert cold_start.main(["--seeds", "3", "--no-genre-sets", "--raw-features"]) == 0
