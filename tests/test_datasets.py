"""sparseopt.datasets: generated ratings and interactions, and the holdout split."""
import numpy as np
import pytest
import scipy.sparse as sp

from sparseopt.datasets import holdout_split, make_interactions, make_ratings


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
