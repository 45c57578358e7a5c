"""recommend's filter_items / items and recommend.evaluate, against brute force."""
import numpy as np
import pytest
import scipy.sparse as sp

from sparseopt.datasets import make_interactions, make_ratings

pytest.importorskip("sklearn")
from sparseopt.recommend import MatrixFactorization, _serving, evaluate, metrics  # noqa: E402


def brute_topn(S, n, excl):
    """Top n of each row of S over the entries not in excl, ties to the lower id; padded."""
    ids = np.full((S.shape[0], n), -1)
    sc = np.full((S.shape[0], n), -np.inf)
    for r in range(S.shape[0]):
        cand = sorted((c for c in range(S.shape[1]) if not excl[r, c]),
                      key=lambda c: (-S[r, c], c))[:n]
        ids[r, :len(cand)] = cand
        sc[r, :len(cand)] = S[r, cand]
    return ids, sc


def all_scores(mf, users, n_items):
    """The unclipped scores recommend ranks by (clipping to the rating range is applied to
    the scores of the selected items only)."""
    clip = mf.clip_predictions
    mf.set_params(clip_predictions=False)
    try:
        return mf.predict(np.repeat(users, n_items),
                          np.tile(np.arange(n_items), users.shape[0])).reshape(-1, n_items)
    finally:
        mf.set_params(clip_predictions=clip)


def assert_same_top(ids, scores, bi, bs):
    valid = bi >= 0
    assert np.array_equal(ids >= 0, valid)
    np.testing.assert_allclose(scores[valid], bs[valid], rtol=1e-10)
    assert np.all(np.isneginf(scores[~valid]))
    # ids agree except where two scores are within rounding of each other
    gap = np.abs(np.diff(np.where(valid, bs, 0), axis=1)).min(initial=1.0)
    if gap > 1e-9:
        assert np.array_equal(ids, bi)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("loss", ["squared", "bpr"])
def test_recommend_with_filter_items_and_items_matches_brute_force(loss, seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n_users, n_items = 50, 40
    X = make_ratings(n_users, n_items, 600, random_state=seed, dtype=np.float64)
    mf = MatrixFactorization(n_components=5, loss=loss, n_epochs=3, dtype=np.float64,
                             random_state=seed).fit(X)
    monkeypatch.setattr(_serving, "_BLOCK_ENTRIES", n_items * 7)   # several blocks
    users = rng.integers(0, n_users, size=12)
    S = all_scores(mf, users, n_items)
    seen = X[users].toarray() != 0
    filt = rng.choice(n_items, size=9)                         # duplicates allowed
    only = rng.choice(n_items, size=15)
    cases = [(None, None), (filt, None), (None, only), (filt, only), ([], None),
             (np.array([], dtype=np.int64), only[:1]), (np.uint8(3), None)]
    for f, i in cases:
        allowed = np.ones(n_items, dtype=bool)
        if i is not None:
            allowed[:] = False
            allowed[np.asarray(i)] = True
        if f is not None:
            allowed[np.asarray(f, dtype=np.int64).reshape(-1)] = False
        for exclude, n in ((True, 10), (False, 10), (True, 40), (False, 1), (False, 100)):
            if np.ndim(f) == 0 and f is not None:
                with pytest.raises(ValueError, match="1-D"):
                    mf.recommend(users, n=n, exclude_seen=exclude, filter_items=f, items=i)
                continue
            ids, scores = mf.recommend(users, n=n, exclude_seen=exclude, filter_items=f,
                                       items=i)
            width = min(n, int(allowed.sum()))
            assert ids.shape == scores.shape == (users.shape[0], width)
            excl = ~allowed[None, :] | (seen if exclude else False)
            bi, bs = brute_topn(S, width, np.broadcast_to(excl, S.shape))
            assert_same_top(ids, scores, bi, bs)


def test_recommend_filters_keep_a_single_user_shape_and_pad():
    X = sp.csr_matrix(np.array([[1.0, 1, 0, 0, 0], [0, 0, 1, 0, 0]]))
    mf = MatrixFactorization(n_components=2, loss="bpr", n_epochs=1, random_state=0).fit(X)
    ids, scores = mf.recommend(0, n=3, items=[0, 1, 4])
    # 3 candidates, of which user 0 has seen 2: one item, then padding
    assert ids.shape == (3,) and list(ids) == [4, -1, -1] and np.isneginf(scores[1:]).all()
    ids, _ = mf.recommend([0, 1], n=10, filter_items=[2, 3])
    assert ids.shape == (2, 3)                         # 3 items left: at most 3 columns
    assert list(ids[0]) == [4, -1, -1] and sorted(ids[1]) == [0, 1, 4]


# =========================================================================== evaluate


def plain_ranking(S, train, test, k):
    """The metrics of evaluate computed by a loop: lists by brute force, metrics by hand."""
    n_items = S.shape[1]
    out = {m: [] for m in ("precision", "recall", "ndcg", "map", "mrr", "hit_rate")}
    covered = set()
    for u in range(S.shape[0]):
        rel = set(np.flatnonzero(test[u]).tolist())
        if not rel:
            continue
        cand = sorted((i for i in range(n_items) if not train[u, i]),
                      key=lambda i: (-S[u, i], i))[:k]
        covered |= set(cand)
        hits = [int(i in rel) for i in cand] + [0] * (k - len(cand))
        n_hit = np.cumsum(hits)
        out["precision"].append(sum(hits) / k)
        out["recall"].append(sum(hits) / len(rel))
        dcg = sum(h / np.log2(j + 2) for j, h in enumerate(hits))
        out["ndcg"].append(dcg / sum(1 / np.log2(j + 2) for j in range(min(k, len(rel)))))
        out["map"].append(sum(n_hit[j] / (j + 1) for j in range(k) if hits[j])
                          / min(k, len(rel)))
        out["mrr"].append(1 / (hits.index(1) + 1) if 1 in hits else 0.0)
        out["hit_rate"].append(float(any(hits)))
    res = {m: float(np.mean(v)) for m, v in out.items()}
    res["coverage"] = len(covered) / n_items
    return res


@pytest.mark.parametrize("loss", ["squared", "bpr"])
def test_evaluate_matches_a_loop(loss):
    n_users, n_items = 40, 30
    X = make_interactions(n_users, n_items, 400, random_state=1)
    other = make_interactions(n_users, n_items, 300, random_state=2)   # not the fit data
    test = make_interactions(n_users, n_items, 150, random_state=3)
    mf = MatrixFactorization(n_components=4, loss=loss, n_epochs=2, dtype=np.float64,
                             random_state=0).fit(X)
    S = all_scores(mf, np.arange(n_users), n_items)
    for train, k in ((X, 5), (other, 10), (X, 1)):
        got = evaluate(mf, train, test, k=k)
        want = plain_ranking(S, train.toarray() != 0, test.toarray() != 0, k)
        assert list(got) == ["precision", "recall", "ndcg", "map", "mrr", "hit_rate",
                             "coverage"]
        for m in want:
            assert got[m] == pytest.approx(want[m], rel=1e-12, abs=1e-15), (m, k)
    # k beyond the catalogue: lists padded to k, precision still over k
    got = evaluate(mf, X, test, k=45, metrics=["precision", "recall", "coverage"])
    want = plain_ranking(S, X.toarray() != 0, test.toarray() != 0, 45)
    assert list(got) == ["precision", "recall", "coverage"]
    for m in got:
        assert got[m] == pytest.approx(want[m], rel=1e-12)
    assert evaluate(mf, X, test, k=3, metrics="mrr") == {"mrr": evaluate(mf, X, test, k=3)["mrr"]}


def test_evaluate_matches_recommend_and_the_metrics_on_the_fit_data():
    X = make_interactions(60, 50, 700, random_state=0)
    test = make_interactions(60, 50, 200, random_state=5)
    mf = MatrixFactorization(n_components=4, loss="bpr", n_epochs=2, random_state=0).fit(X)
    users = np.flatnonzero(np.diff(test.indptr))
    recs, _ = mf.recommend(users, n=10)
    got = evaluate(mf, X, test, k=10)
    assert got["precision"] == metrics.precision_at_k(test[users], recs, 10)
    assert got["ndcg"] == metrics.ndcg_at_k(test[users], recs, 10)
    assert got["coverage"] == metrics.coverage_at_k(recs, 50, 10)
    # empty test data: averaged metrics NaN, nothing covered
    empty = evaluate(mf, X, sp.csr_matrix((60, 50)), k=5)
    assert np.isnan(empty["precision"]) and empty["coverage"] == 0.0


def test_evaluate_explicit_ratings_are_binary_relevance():
    R = make_ratings(30, 20, 250, random_state=0)
    test = make_ratings(30, 20, 80, random_state=9)
    mf = MatrixFactorization(n_components=3, n_epochs=2, random_state=0).fit(R)
    ones = test.copy()
    ones.data[:] = 1.0
    assert evaluate(mf, R, test, k=5) == evaluate(mf, R, ones, k=5)


# =========================================================================== similar_users


def test_similar_users_matches_brute_force_and_mirrors_similar_items():
    X = make_ratings(30, 80, 900, random_state=3, dtype=np.float64)
    mf = MatrixFactorization(n_components=6, n_epochs=2, dtype=np.float64, random_state=0).fit(X)
    P = mf.user_factors_
    Pn = P / np.linalg.norm(P, axis=1, keepdims=True)
    C = Pn @ Pn.T
    users = np.array([0, 29, 5, 5])
    for n in (5, 29, 100):
        ids, sims = mf.similar_users(users, n=n)
        bi, bs = brute_topn(C[users], min(n, 29), np.eye(30, dtype=bool)[users])
        assert_same_top(ids, sims, bi, bs)
        assert not np.any(ids == users[:, None])
    one, s1 = mf.similar_users(7, n=3)
    assert one.shape == (3,) and np.array_equal(one, mf.similar_users([7], n=3)[0][0])
    # similar_items is similar_users of the transposed problem: same code path
    ids_i, _ = mf.similar_items([0, 1], n=4)
    Q = mf.item_factors_
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    bi, bs = brute_topn((Qn @ Qn.T)[[0, 1]], 4, np.eye(80, dtype=bool)[[0, 1]])
    assert_same_top(ids_i, _, bi, bs)


def test_similar_users_refuses_bad_ids():
    X = make_ratings(10, 8, 40, random_state=0)
    mf = MatrixFactorization(n_components=2, n_epochs=1, random_state=0).fit(X)
    with pytest.raises(IndexError, match="user_ids"):
        mf.similar_users([10])
    with pytest.raises(IndexError, match="user_ids"):
        mf.similar_users([-1])
    with pytest.raises(TypeError, match="user_ids"):
        mf.similar_users([0.5])
    with pytest.raises(ValueError, match="n"):
        mf.similar_users([0], n=0)
    with pytest.raises(AttributeError, match="not fitted"):
        MatrixFactorization().similar_users([0])
