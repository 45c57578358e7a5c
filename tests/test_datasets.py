"""sparseopt.datasets: generated ratings and interactions, and the holdout split."""
import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sparseopt import datasets
from sparseopt.datasets import holdout_split, make_interactions, make_ratings

ROOT = Path(__file__).resolve().parents[1]


def _canonical(X):
    assert sp.issparse(X) and X.format == "csr"
    assert X.has_sorted_indices
    coo = X.tocoo()
    keys = coo.row.astype(np.int64) * X.shape[1] + coo.col
    assert np.unique(keys).shape[0] == X.nnz, "a (user, item) pair is stored twice"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_make_ratings_shape_and_pairs(dtype):
    X = make_ratings(300, 120, 5000, random_state=0, dtype=dtype)
    assert X.shape == (300, 120) and X.nnz == 5000 and X.dtype == dtype
    _canonical(X)
    assert np.all(np.isfinite(X.data))


def test_make_ratings_is_seeded():
    a = make_ratings(200, 100, 3000, random_state=7)
    b = make_ratings(200, 100, 3000, random_state=7)
    c = make_ratings(200, 100, 3000, random_state=8)
    assert (a != b).nnz == 0 and np.array_equal(a.data, b.data)
    assert (a != c).nnz > 0
    g = np.random.default_rng(7)
    assert make_ratings(50, 40, 300, random_state=g).nnz == 300


def test_make_ratings_truth_without_noise():
    X, truth = make_ratings(150, 80, 2000, rank=4, noise=0.0, random_state=1,
                            dtype=np.float64, return_truth=True)
    coo = X.tocoo()
    expect = (truth["mean"] + truth["user_bias"][coo.row] + truth["item_bias"][coo.col]
              + np.einsum("ij,ij->i", truth["user_factors"][coo.row],
                          truth["item_factors"][coo.col]))
    np.testing.assert_allclose(coo.data, expect, rtol=1e-12)
    assert truth["user_factors"].shape == (150, 4)
    # the factors are scaled so that <p, q> has unit variance
    dots = np.einsum("ij,ij->i", truth["user_factors"][coo.row], truth["item_factors"][coo.col])
    assert 0.5 < dots.std() < 1.6


def test_make_ratings_noise_is_the_residual():
    X, t = make_ratings(400, 200, 20000, noise=0.3, random_state=2, dtype=np.float64,
                        return_truth=True)
    coo = X.tocoo()
    clean = (t["mean"] + t["user_bias"][coo.row] + t["item_bias"][coo.col]
             + np.einsum("ij,ij->i", t["user_factors"][coo.row], t["item_factors"][coo.col]))
    assert abs((coo.data - clean).std() - 0.3) < 0.01


def test_zipf_popularity_is_heavy_tailed():
    def top_share(zipf):
        X = make_ratings(2000, 1000, 20000, zipf=zipf, random_state=3)
        counts = np.sort(np.bincount(X.indices, minlength=1000))[::-1]
        return counts[:10].sum() / X.nnz
    heavy, flat = top_share(1.1), top_share(0.0)
    assert heavy > 0.15 and flat < 0.03
    # popular ids are scattered over the id range, not the first rows
    X = make_ratings(2000, 1000, 20000, zipf=1.1, random_state=3)
    top = np.argsort(np.bincount(X.indices, minlength=1000))[::-1][:10]
    assert top.max() > 100


def test_saturated_head_still_gives_exact_count():
    # 40 x 30 = 1200 cells, 1000 ratings with a steep head: must still return 1000 distinct pairs
    X = make_ratings(40, 30, 1000, zipf=2.0, random_state=0)
    assert X.nnz == 1000
    _canonical(X)


def test_make_interactions():
    X, t = make_interactions(500, 300, 6000, signal=4.0, random_state=0, return_truth=True)
    assert X.shape == (500, 300) and X.nnz == 6000
    _canonical(X)
    assert np.all(X.data == 1.0)
    coo = X.tocoo()
    kept = np.einsum("ij,ij->i", t["user_factors"][coo.row], t["item_factors"][coo.col])
    rng = np.random.default_rng(0)
    ru, ri = rng.integers(0, 500, 6000), rng.integers(0, 300, 6000)
    other = np.einsum("ij,ij->i", t["user_factors"][ru], t["item_factors"][ri])
    assert kept.mean() > other.mean() + 0.3   # users kept the items they like


def test_holdout_split_partitions():
    X = make_ratings(100, 60, 1500, random_state=0)
    tr, te = holdout_split(X, 0.2, random_state=0)
    assert tr.shape == te.shape == X.shape
    assert tr.nnz + te.nnz == X.nnz and te.nnz == 300
    assert tr.multiply(te).nnz == 0                       # disjoint
    assert abs(tr + te - X).max() == 0                    # together they are X
    tr2, te2 = holdout_split(X, 0.2, random_state=0)
    assert (te2 != te).nnz == 0


@pytest.mark.parametrize("call, err", [
    (lambda: make_ratings(10, 10, 101), ValueError),
    (lambda: make_ratings(0, 10, 5), ValueError),
    (lambda: make_ratings(10, 10, 5, zipf=-1), ValueError),
    (lambda: make_ratings(10.5, 10, 5), TypeError),
    (lambda: make_interactions(10, 10, 200), ValueError),
    (lambda: make_ratings(10, 10, 5, random_state="x"), TypeError),
    (lambda: holdout_split(np.ones((3, 3))), TypeError),
    (lambda: holdout_split(sp.eye(3, format="csr"), test_size=1.0), ValueError),
])
def test_errors(call, err):
    with pytest.raises(err):
        call()


@pytest.mark.parametrize("call, exc, word", [
    (lambda: make_ratings(10, 10, 5, random_state=-1), ValueError, "random_state"),
    (lambda: make_ratings(10, 10, 5, random_state=2**32), ValueError, "random_state"),
    (lambda: make_ratings(10, 10, 5, mean="x"), TypeError, "mean"),
    (lambda: make_ratings(10, 10, 5, mean=float("inf")), ValueError, "mean"),
    (lambda: make_ratings(10, 10, 5, bias_scale=-1), ValueError, "bias_scale"),
    (lambda: make_ratings(10, 10, 5, dtype="x"), ValueError, "dtype"),
    (lambda: make_ratings(10, 10, 5, dtype=np.int64), ValueError, "dtype"),
    (lambda: make_ratings(10, 10, 5, return_truth="yes"), TypeError, "return_truth"),
    (lambda: make_ratings(10, 10, 5, zipf=float("nan")), ValueError, "zipf"),
    (lambda: make_ratings(10, 10, 5, noise="x"), TypeError, "noise"),
    (lambda: make_ratings(2**31, 10, 5), ValueError, "n_users"),
    (lambda: make_ratings(10, 10, 101), ValueError, "n_ratings"),
    (lambda: make_ratings(10, 10, -1), ValueError, "n_ratings"),
    (lambda: make_ratings(10, 10, True), TypeError, "n_ratings"),
    (lambda: make_interactions(10, 10, 101), ValueError, "n_interactions"),
    (lambda: make_interactions(10, 10, 5, signal=-1.0), ValueError, "signal"),
    (lambda: make_interactions(10, 10, 5, random_state=-1), ValueError, "random_state"),
    (lambda: holdout_split(sp.eye(3, format="csr"), test_size=0.0), ValueError, "test_size"),
    (lambda: holdout_split(sp.eye(3, format="csr"), test_size="x"), TypeError, "test_size"),
    (lambda: holdout_split(sp.eye(3, format="csr"), random_state=-1), ValueError,
     "random_state"),
    (lambda: holdout_split(np.eye(3)), TypeError, "X"),
])
def test_dataset_errors_name_the_argument(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


def test_dense_and_saturated_requests_finish_quickly():
    # a full or nearly full matrix must not fall back to uniform draws that a full matrix
    # almost always rejects; in a child so that such a fall-back fails on the timeout
    # instead of hanging
    code = """
import time
from sparseopt.datasets import make_interactions, make_ratings
t = time.perf_counter()
assert make_ratings(500, 500, 250000, random_state=0).nnz == 250000
assert make_interactions(500, 500, 250000, random_state=0).nnz == 250000
assert make_ratings(1000, 1000, 499000, zipf=3.0, random_state=0).nnz == 499000
assert make_interactions(1000, 1000, 400000, zipf=2.0, signal=20.0,
                         random_state=0).nnz == 400000
# more pairs than the liked ones, with a signal that rounds the others' keep probability to 0
X, truth = make_interactions(60, 60, 1790, signal=1e4, random_state=0, return_truth=True)
liked = truth["user_factors"] @ truth["item_factors"].T > 0
assert X.nnz == 1790 and liked.sum() < 1790 and liked[X.toarray() != 0].sum() == liked.sum()
print(time.perf_counter() - t)
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=str(ROOT), env=env)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) < 15


def _exact_inclusion(weights, n):
    """P(cell c is among the first n distinct draws) of i.i.d. draws from ``weights``, by
    enumerating the ordered samples."""
    w = weights / weights.sum()
    p = np.zeros(w.shape[0])
    for seq in itertools.permutations(range(w.shape[0]), n):
        prob, left = 1.0, 1.0
        for c in seq:
            prob *= w[c] / left
            left -= w[c]
        p[list(seq)] += prob
    return p


@pytest.mark.parametrize("one_pass", [True, False])
@pytest.mark.parametrize("taste", [False, True])
def test_both_samplers_draw_the_weighted_sample_without_replacement(one_pass, taste,
                                                                    monkeypatch):
    # 3 x 3 cells, 3 pairs: the one-pass sampler (dense requests) and the draw-and-dedupe
    # rounds (sparse requests) must both give each cell the inclusion probability of
    # sequential weighted sampling without replacement (counted by popularity rank)
    monkeypatch.setattr(datasets, "_DENSE_SHARE", 0.0 if one_pass else 2.0)
    zipf, runs = 1.5, 3000
    log_rank = -zipf * np.log(np.arange(1, 4.0))
    P, Q = np.array([[1.0], [-1.0], [0.5]]), np.array([[1.0], [0.2], [-1.0]])
    keep = 1.0 / (1.0 + np.exp(-2.0 * P @ Q.T)) if taste else np.ones((3, 3))
    exact = {}
    counts, expect = np.zeros((3, 3)), np.zeros((3, 3))
    for seed in range(runs):
        probe = np.random.default_rng(seed)  # the sampler's first draws: the id permutations
        perm_u, perm_i = probe.permutation(3), probe.permutation(3)
        key = (tuple(perm_u), tuple(perm_i))
        if key not in exact:
            w = np.exp(log_rank[np.argsort(perm_u)][:, None]
                       + log_rank[np.argsort(perm_i)][None, :]) * keep
            exact[key] = _exact_inclusion(w.reshape(-1), 3).reshape(3, 3)
        expect += exact[key][np.ix_(perm_u, perm_i)]
        t = datasets._Taste(P, Q, 2.0) if taste else None
        u, i = datasets._sample_pairs(np.random.default_rng(seed), 3, 3, 3, zipf, t)
        assert len(set(zip(u.tolist(), i.tolist()))) == 3
        counts[np.argsort(perm_u)[u], np.argsort(perm_i)[i]] += 1
    freq, expect = counts / runs, expect / runs
    # a binomial standard error of at most 0.0092 at 3000 runs: 5 of them
    np.testing.assert_allclose(freq, expect, atol=0.046)
    assert expect.max() > 0.6 and expect.min() < 0.15   # far from uniform (1/3 each)


def test_dense_requests_keep_the_popularity_law():
    # three quarters of the cells: the popular items fill their columns, the tail does not
    X = make_ratings(200, 100, 15000, zipf=1.1, random_state=0)
    counts = np.sort(np.bincount(X.indices, minlength=100))[::-1]
    assert counts[:10].min() > 190 and counts[-10:].max() < 120
    flat = np.sort(np.bincount(make_ratings(200, 100, 15000, zipf=0.0,
                                            random_state=0).indices, minlength=100))
    assert flat[-1] - flat[0] < 60


def test_holdout_split_checks_and_keeps_its_input():
    X = sp.coo_matrix((np.array([1, 2, 3]), (np.array([0, 0, 1]), np.array([1, 1, 2]))),
                      shape=(2, 3))
    tr, te = holdout_split(X, 0.5, random_state=0)
    assert tr.dtype == X.dtype and (tr + te).toarray().tolist() == [[0, 3, 0], [0, 0, 3]]
    assert X.nnz == 3   # the caller's duplicates are left in place
    bad = sp.csr_matrix(np.eye(3))
    bad.indices[0] = 7
    with pytest.raises(ValueError, match="X is malformed"):
        holdout_split(bad)
