"""MAP, MRR, hit rate and coverage at k: by hand, against a plain loop, and on edge cases."""
import numpy as np
import pytest
import scipy.sparse as sp

from sparseopt.recommend import metrics


def _truth():
    # user 0 likes items {1, 3}; user 1 likes {0}; user 2 likes nothing (left out)
    return sp.csr_matrix(np.array([[0, 1, 0, 1, 0, 0],
                                   [1, 0, 0, 0, 0, 0],
                                   [0, 0, 0, 0, 0, 0]]))


def test_map_mrr_hit_rate_coverage_by_hand():
    rec = np.array([[3, 2, 1, 5],
                    [4, 5, 0, -1],
                    [0, 1, 2, 3]])
    T = _truth()
    # k=3. user 0: hits at ranks 1 and 3 -> AP (1/1 + 2/3) / min(3, 2); RR 1; hit.
    #      user 1: hit at rank 3 -> AP (1/3) / min(3, 1); RR 1/3; hit. user 2: left out.
    assert metrics.map_at_k(T, rec, k=3) == pytest.approx(((1 + 2 / 3) / 2 + 1 / 3) / 2)
    assert metrics.mrr_at_k(T, rec, k=3) == pytest.approx((1 + 1 / 3) / 2)
    assert metrics.hit_rate_at_k(T, rec, k=3) == pytest.approx(1.0)
    # k=2: user 1 has no hit any more
    assert metrics.map_at_k(T, rec, k=2) == pytest.approx((1 / 2 + 0) / 2)
    assert metrics.mrr_at_k(T, rec, k=2) == pytest.approx((1 + 0) / 2)
    assert metrics.hit_rate_at_k(T, rec, k=2) == pytest.approx(0.5)
    # k=4: user 0's denominator is min(4, 2) = 2, not 4
    assert metrics.map_at_k(T, rec, k=4) == pytest.approx(((1 + 2 / 3) / 2 + 1 / 3) / 2)
    # coverage counts every row (no held-out data) and ignores the -1 padding
    assert metrics.coverage_at_k(rec, 6, k=2) == pytest.approx(len({3, 2, 4, 5, 0, 1}) / 6)
    assert metrics.coverage_at_k(rec, 6, k=1) == pytest.approx(len({3, 4, 0}) / 6)
    assert metrics.coverage_at_k(rec[1:2], 6, k=4) == pytest.approx(3 / 6)
    assert metrics.coverage_at_k(rec, 100, k=4) == pytest.approx(6 / 100)
    assert metrics.coverage_at_k(np.zeros((0, 3), dtype=np.int64), 5, k=3) == 0.0
    # perfect lists
    perfect = np.array([[1, 3, 0], [0, 2, 4], [1, 2, 3]])
    assert metrics.map_at_k(T, perfect, k=3) == pytest.approx(1.0)
    assert metrics.mrr_at_k(T, perfect, k=1) == pytest.approx(1.0)


def test_users_without_relevant_items_and_repeats():
    empty = sp.csr_matrix((2, 6))
    rec = np.array([[0, 1], [2, 3]])
    for metric in (metrics.map_at_k, metrics.mrr_at_k, metrics.hit_rate_at_k):
        assert np.isnan(metric(empty, rec, k=2))
    # a repeated id is one hit, at its first position; -1 and ids >= n_items never hit
    T = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 0, 0]]))
    rec = np.array([[1, 1, 1], [-1, 4, 0]])
    assert metrics.map_at_k(T, rec, 3) == pytest.approx((1.0 + 1 / 3) / 2)
    assert metrics.mrr_at_k(T, rec, 3) == pytest.approx((1.0 + 1 / 3) / 2)
    assert metrics.hit_rate_at_k(T, rec, 3) == 1.0
    assert metrics.coverage_at_k(rec, 4, 3) == pytest.approx(2 / 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_match_a_loop_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items, width = 60, 25, 12
    T = sp.random(n_users, n_items, density=0.08, random_state=seed, format="csr")
    # repeats and padding included
    rec = rng.integers(-1, n_items + 1, size=(n_users, width))
    rec[::3] = np.array([rng.permutation(n_items)[:width] for _ in range(0, n_users, 3)])
    for k in (1, 5, width):
        ap, rr, hit = [], [], []
        for r in range(n_users):
            rel = set(T[r].indices.tolist())
            if not rel:
                continue
            seen, n_hit, s, first = set(), 0, 0.0, None
            for j, i in enumerate(rec[r, :k].tolist()):
                if i in rel and i not in seen:
                    n_hit += 1
                    s += n_hit / (j + 1)
                    if first is None:
                        first = j + 1
                seen.add(i)
            ap.append(s / min(k, len(rel)))
            rr.append(0.0 if first is None else 1.0 / first)
            hit.append(float(n_hit > 0))
        assert metrics.map_at_k(T, rec, k) == pytest.approx(np.mean(ap), rel=1e-12)
        assert metrics.mrr_at_k(T, rec, k) == pytest.approx(np.mean(rr), rel=1e-12)
        assert metrics.hit_rate_at_k(T, rec, k) == pytest.approx(np.mean(hit), rel=1e-12)
        covered = {i for row in rec[:, :k].tolist() for i in row if 0 <= i < n_items}
        assert metrics.coverage_at_k(rec, n_items, k) == pytest.approx(len(covered) / n_items)


def test_bad_arguments_are_refused():
    T = _truth()
    rec = np.array([[3, 2], [4, 5], [0, 1]])
    for metric in (metrics.map_at_k, metrics.mrr_at_k, metrics.hit_rate_at_k):
        with pytest.raises(ValueError, match="fewer than k"):
            metric(T, rec, k=3)
        with pytest.raises(ValueError, match="rows"):
            metric(T, rec[:2], k=2)
        with pytest.raises(ValueError, match="k must be"):
            metric(T, rec, k=0)
        with pytest.raises(ValueError, match="item ids"):
            metric(T, rec.astype(float), k=2)
    with pytest.raises(ValueError, match="k must be"):
        metrics.coverage_at_k(rec, 6, k=True)
    with pytest.raises(ValueError, match="n_items"):
        metrics.coverage_at_k(rec, 0, k=2)
    with pytest.raises(ValueError, match="n_items"):
        metrics.coverage_at_k(rec, 6.0, k=2)
    with pytest.raises(ValueError, match="fewer than k"):
        metrics.coverage_at_k(rec, 6, k=3)
    with pytest.raises(ValueError, match="item ids"):
        metrics.coverage_at_k(rec[None], 6, k=2)
