"""Recommenders fitted on columns of raw ids (a DataFrame or a tuple), clipping of explicit
predictions to the training rating range, and ``recommend``'s ``filter_already_liked``.

The reference for every raw-id result is the same model fitted on the matrix the columns
encode (ids sorted -> row / column indices): the two must train to the same bits and give
the same answers, mapped through ``user_ids_`` / ``item_ids_``.
"""
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

from sparseopt.datasets import make_interactions, make_ratings  # noqa: E402
from sparseopt.recommend import (IdEncoder, MatrixFactorization, UnknownIdError,  # noqa: E402
                                 evaluate)


def _columns(X, seed=0):
    """``X``'s entries as shuffled columns of raw ids: users ``"user<r>"`` (sorted as
    strings, not as numbers), items ``1000 - 3 * c`` (sorted in reverse column order)."""
    C = X.tocoo()
    order = np.random.default_rng(seed).permutation(C.nnz)
    users = np.array([f"user{r}" for r in C.row])[order]
    items = (1000 - 3 * C.col.astype(np.int64))[order]
    return users, items, C.data.astype(np.float64)[order]


def _index_matrix(X):
    """``X`` with its rows and columns in the sorted order of the raw ids ``_columns``
    gives them: the matrix a raw-id model trains on."""
    n_users, n_items = X.shape
    rows = np.argsort(np.array([f"user{r}" for r in range(n_users)]), kind="stable")
    cols = np.argsort(1000 - 3 * np.arange(n_items), kind="stable")
    M = sp.csr_matrix(X.tocsr().astype(np.float64)[rows][:, cols])  # the columns are float64
    M.sort_indices()  # the storage order raw-id columns are trained in
    return M


def _mf(**kw):
    kw.setdefault("n_components", 4)
    kw.setdefault("n_epochs", 3)
    return MatrixFactorization(random_state=0, dtype=np.float64, **kw)


@pytest.mark.parametrize("form", ["frame", "tuple"])
@pytest.mark.parametrize("loss", ["squared", "bpr"])
def test_raw_ids_train_as_the_matrix_they_encode(form, loss):
    X = (make_ratings if loss == "squared" else make_interactions)(30, 20, 300,
                                                                   random_state=0)
    u, i, v = _columns(X)
    data = pd.DataFrame({"user": u, "item": i, "rating": v, "other": 0}) \
        if form == "frame" else (u, i, v)
    raw = _mf(loss=loss).fit(data)
    ref = _mf(loss=loss).fit(_index_matrix(X))
    np.testing.assert_array_equal(raw.user_table_, ref.user_table_)
    np.testing.assert_array_equal(raw.item_table_, ref.item_table_)
    assert raw.user_ids_.tolist() == sorted(f"user{r}" for r in range(30))
    assert raw.item_ids_.tolist() == sorted(1000 - 3 * c for c in range(20))
    assert not hasattr(raw, "n_features_in_") and ref.n_features_in_ == 20
    U, I = raw.user_ids_, raw.item_ids_
    # predict, recommend, similar_items / similar_users: raw ids in, raw ids out
    np.testing.assert_array_equal(raw.predict(U[[0, 3]], I[[5, 1]]),
                                  ref.predict([0, 3], [5, 1]))
    ids, scores = raw.recommend(U[[2, 7]], n=5, filter_items=I[[0]], items=I[:12])
    rids, rscores = ref.recommend([2, 7], n=5, filter_items=[0], items=np.arange(12))
    np.testing.assert_array_equal(ids, np.where(rids >= 0, I[rids], -1))  # -1: padding
    np.testing.assert_array_equal(scores, rscores)
    one, _ = raw.recommend(U[4], n=3)
    np.testing.assert_array_equal(one, I[ref.recommend(4, n=3)[0]])
    np.testing.assert_array_equal(raw.similar_items(I[3], n=4)[0],
                                  I[ref.similar_items(3, n=4)[0]])
    np.testing.assert_array_equal(raw.similar_users(U[[1]], n=4)[0],
                                  U[ref.similar_users([1], n=4)[0]])
    # score and evaluate: columns and the matrix they encode give the same figure
    assert raw.score(data) == ref.score(_index_matrix(X))
    assert evaluate(raw, data, data, k=3) == evaluate(ref, _index_matrix(X),
                                                      _index_matrix(X), k=3)
    # a matrix given to a raw-id model is read by index
    assert raw.score(_index_matrix(X)) == ref.score(_index_matrix(X))
    # partial_fit with known ids continues as the matrix model does
    raw.partial_fit(data)
    ref.partial_fit(_index_matrix(X))
    np.testing.assert_array_equal(raw.user_table_, ref.user_table_)
    # a pickled model keeps its ids
    back = pickle.loads(pickle.dumps(raw))
    np.testing.assert_array_equal(back.recommend(U[:3], n=4)[0], raw.recommend(U[:3], n=4)[0])


def test_unknown_ids_are_refused_and_change_nothing():
    X = make_ratings(12, 9, 60, random_state=1)
    u, i, v = _columns(X)
    mf = _mf().fit((u, i, v))
    U = mf.user_table_.copy()
    with pytest.raises(UnknownIdError, match=r"user_ids\[1\] = 'nobody'"):
        mf.predict(["user0", "nobody"], [1000, 1000])
    with pytest.raises(IndexError, match="item_ids"):  # also an IndexError (and ValueError)
        mf.predict(["user0"], [1001])
    with pytest.raises(ValueError, match="its ids are strings"):
        mf.recommend(0)
    with pytest.raises(UnknownIdError, match=r"X\[0\]\[0\] = 'new'"):
        mf.partial_fit((np.array(["new"]), np.array([1000]), np.array([3.0])))
    np.testing.assert_array_equal(mf.user_table_, U)
    assert mf.n_epochs_ == 3
    # fitted on a matrix: columns are refused (its ids are indices)
    with pytest.raises(TypeError, match="fitted on a users x items matrix"):
        _mf().fit(X).partial_fit((u, i, v))
    # a refit replaces the form: on a matrix the ids go, on columns n_features_in_ goes
    mf.fit(X)
    assert not hasattr(mf, "user_ids_") and mf.n_features_in_ == 9
    assert mf.fit((u, i, v)).user_ids_.shape == (12,) and not hasattr(mf, "n_features_in_")


def test_implicit_columns_follow_the_matrix_rules():
    """Without values every row is one positive; a repeated pair is summed (one positive);
    a pair whose values sum to 0 is no interaction; the encoders still know its ids."""
    users = np.array(["a", "a", "b", "c", "c"])
    items = np.array([1, 1, 2, 3, 1])
    mf = _mf(loss="bpr").fit((users, items))
    assert mf._seen.pattern.nnz == 4
    mf = _mf(loss="bpr").fit((users, items, np.array([1.0, 1.0, 2.0, 0.0, 1.0])))
    assert mf._seen.pattern.nnz == 3 and mf.item_ids_.tolist() == [1, 2, 3]


def test_explicit_duplicates_and_missing_values():
    df = pd.DataFrame({"user": [1, 1, 2], "item": [7, 7, 8], "rating": [4.0, 5.0, 3.0]})
    with pytest.raises(ValueError, match="duplicate .* user 1, item 7.*groupby"):
        _mf().fit(df)
    with pytest.raises(ValueError, match="holds no ratings"):
        _mf().fit(df[["user", "item"]])
    with pytest.raises(ValueError, match=r"X\['user'\]\[1\] is a missing value"):
        _mf().fit(df.assign(user=[1.0, np.nan, 2.0]))
    with pytest.raises(TypeError, match="floats"):
        _mf().fit(df.assign(user=[1.0, 2.0, 3.0]))


def test_padding_and_wide_integer_ids():
    """Padding of raw ids: -1 for integers, the largest uint64 for uint64 ids, "" for
    strings; the -inf score is what marks it."""
    big = np.array([2**64 - 1, 2**63, 5], dtype=np.uint64)
    mf = _mf(loss="bpr").fit((np.array([0, 0, 1]), big))
    assert mf.item_ids_.dtype == np.uint64
    ids, scores = mf.recommend(0, n=3)        # user 0 saw 2 of the 3 items
    assert ids[1:].tolist() == [2**64 - 1, 2**64 - 1] and np.isneginf(scores[1:]).all()
    assert mf.predict([0], np.array([2**63], np.uint64)).shape == (1,)
    mf = _mf(loss="bpr").fit((np.array([7, 7, 8]), np.array(["x", "y", "z"])))
    ids, scores = mf.recommend([7], n=3)
    assert ids[0, 1:].tolist() == ["", ""] and np.isneginf(scores[0, 1:]).all()
    mf = _mf(loss="bpr").fit((np.array([-4, -4, 9]), np.array([-1, 3, 6])))
    assert mf.recommend(-4, n=2)[0].tolist() == [6, -1]


def test_id_encoder():
    enc = IdEncoder("users").fit(np.array([30, -2, 30, 7]))
    assert enc.classes_.tolist() == [-2, 7, 30] and len(enc) == 3
    assert enc.transform([30, -2]).tolist() == [2, 0]
    assert enc.inverse_transform([1, -1], fill=True).tolist() == [7, -1]
    with pytest.raises(UnknownIdError, match=r"ids\[0\] = 8"):
        enc.transform([8], "ids")
    with pytest.raises(ValueError):
        enc.classes_[0] = 1   # read-only: the model's ids change only by refitting
    assert IdEncoder().fit_transform(["b", "a", "b"]).tolist() == [1, 0, 1]


def test_clip_predictions_to_the_training_range():
    X = make_ratings(40, 30, 500, random_state=0)
    mf = _mf(alpha=0.0, learning_rate=0.3, n_epochs=10).fit(X)
    lo, hi = mf.rating_range_
    assert (lo, hi) == (X.data.min(), X.data.max())
    users = np.repeat(np.arange(40), 30)
    items = np.tile(np.arange(30), 40)
    clipped = mf.predict(users, items)
    mf.set_params(clip_predictions=False)
    raw = mf.predict(users, items)
    assert ((raw < lo) | (raw > hi)).any(), "the test needs predictions out of range"
    np.testing.assert_array_equal(clipped, np.clip(raw, lo, hi))
    ids_raw, s_raw = mf.recommend(np.arange(40), n=8)
    mf.set_params(clip_predictions=True)
    ids, s = mf.recommend(np.arange(40), n=8)
    np.testing.assert_array_equal(ids, ids_raw)                   # the ranking is unclipped
    np.testing.assert_array_equal(s[ids >= 0], np.clip(s_raw, lo, hi)[ids >= 0])
    assert mf.score(X) == pytest.approx(-np.sqrt(np.mean(
        (mf.predict(*X.nonzero()) - X.tocsr()[X.nonzero()].A1) ** 2)))
    # partial_fit widens the range; BPR has none
    wider = X.tocsr().copy()
    wider.data[:] = hi + 2.0
    assert mf.partial_fit(wider).rating_range_ == (lo, hi + 2.0)
    assert not hasattr(_mf(loss="bpr").fit(X), "rating_range_")


def test_filter_already_liked_and_its_former_name():
    X = make_interactions(20, 15, 150, random_state=0)
    mf = _mf(loss="bpr").fit(X)
    users = np.arange(20)
    default = mf.recommend(users, n=15)[0]
    for kw in ({"filter_already_liked": True}, {"exclude_seen": True},
               {"filter_already_liked": True, "exclude_seen": True}):
        np.testing.assert_array_equal(mf.recommend(users, n=15, **kw)[0], default)
    seen_too = mf.recommend(users, n=15, filter_already_liked=False)[0]
    np.testing.assert_array_equal(seen_too, mf.recommend(users, n=15, exclude_seen=False)[0])
    assert (seen_too >= 0).all() and (default == -1).any()
    with pytest.raises(ValueError, match="disagree"):
        mf.recommend(users, filter_already_liked=False, exclude_seen=True)


@pytest.mark.parametrize("kind", ["int64", "uint64", "int32", "str", "runs", "empty", "one"])
def test_sorted_unique_is_np_unique(kind):
    """The encoders' distinct ids (found by sorting) are np.unique's, with its inverse."""
    from sparseopt._utils import sorted_unique
    rng = np.random.default_rng(3)
    a = rng.integers(0, 500, 2000)
    if kind == "uint64":
        a = a.astype(np.uint64) + np.uint64(2 ** 63)
    elif kind == "int32":
        a = a.astype(np.int32)
    elif kind == "str":
        a = np.array([f"id{v}" for v in a])
    elif kind == "runs":
        a = np.concatenate([np.unique(a[:700]), np.unique(a[700:]), np.unique(a[1500:])])
    elif kind == "empty":
        a = a[:0]
    elif kind == "one":
        a = a[:1]
    want, want_inv = np.unique(a, return_inverse=True)
    got = sorted_unique(a, runs=kind == "runs")
    assert got.dtype == want.dtype and np.array_equal(got, want)
    got, inv = sorted_unique(a, return_inverse=True)
    assert np.array_equal(got, want)
    assert inv.dtype == np.int64 and np.array_equal(inv, want_inv.reshape(-1))
    assert np.array_equal(got[inv], a)
    enc = IdEncoder("users")
    assert np.array_equal(enc.fit_transform(a), want_inv.reshape(-1))
    assert np.array_equal(enc.classes_, want)
