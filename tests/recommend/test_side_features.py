"""MatrixFactorization with side features and cold start.

* one mini-batch of the feature path (``features_step`` around the fused loss kernels) against
  the plain-NumPy gradient of the feature model (``sparseopt._reference.mf_feature_gradients``);
* identity features train to the same bits as no features, for both losses;
* the representations serve ``predict`` / ``recommend`` / ``similar_*``; cold start from
  feature rows and from interactions (fold-in, against the closed form / the optimum);
* every new argument refuses hostile input before anything changes.
"""
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from sparseopt import _reference as R
from sparseopt._kernels import _mf as K
from sparseopt.datasets import make_interactions, make_ratings
from sparseopt.recommend import MatrixFactorization, add_identity_features
from sparseopt.recommend._mf import _Fitted, features_step
from sparseopt.recommend._sampling import pack_ratings


def _features(n, f, seed, density=0.4, negative=True):
    rng = np.random.default_rng(seed)
    F = sp.random(n, f, density=density, random_state=seed, format="csr",
                  data_rvs=lambda m: rng.normal(size=m) if negative else rng.random(m) + 0.1)
    return F


def _dense_grad(g, n_rows, d):
    out = np.zeros((n_rows, d))
    np.add.at(out, np.asarray(g.indices), np.asarray(g.values, np.float64))
    return out


@pytest.mark.parametrize("loss", ["squared", "bpr"])
@pytest.mark.parametrize("which", ["both", "users", "items"])
def test_feature_batch_gradient_matches_reference(loss, which):
    rng = np.random.default_rng(1)
    n_users, n_items, k, B = 12, 9, 3, 40
    Fu = _features(n_users, 5, 2) if which in ("both", "users") else None
    Fi = _features(n_items, 4, 3) if which in ("both", "items") else None
    ub, ib = loss == "squared", True
    U = rng.normal(size=(n_users if Fu is None else 5, k + ub))
    Q = rng.normal(size=(n_items if Fi is None else 4, k + ib))
    st = _Fitted(U, Q, k, ub, ib, 0.3, n_users, n_items, Fu, Fi)
    users = rng.integers(0, n_users, B).astype(np.int64)
    items = rng.integers(0, n_items, B).astype(np.int64)
    scale, alpha = 1.0 / B, 0.05
    if loss == "squared":
        r = rng.normal(size=B) + 3.0
        err = np.empty(B)

        def kernel(Ru, Ri, ul, il, uslot, islot, urows, irows, gu, gi):
            rec = pack_ratings(ul, il[0], r)
            return K.mf_squared_batch(Ru, Ri, np.arange(B, dtype=np.int64), rec, k, ub, ib,
                                      0.3, scale, alpha, uslot, islot, urows, irows, gu, gi,
                                      err)
        gU, gQ = features_step(st, users, (items,), kernel)
        target = r
    else:
        neg = rng.integers(0, n_items, B).astype(np.int64)
        out = np.empty(B)

        def kernel(Ru, Ri, ul, il, uslot, islot, urows, irows, gu, gi):
            return K.mf_bpr_batch(Ru, Ri, ul, il[0], il[1], np.empty(0), k, ib, scale, alpha,
                                  uslot, islot, urows, irows, gu, gi, out)
        gU, gQ = features_step(st, users, (items, neg), kernel)
        target = neg
    refU, refQ = R.mf_feature_gradients(Fu, Fi, U, Q, users, items, target, k, ub, ib, 0.3,
                                        scale, alpha, loss)
    np.testing.assert_allclose(_dense_grad(gU, U.shape[0], U.shape[1]), refU, rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(_dense_grad(gQ, Q.shape[0], Q.shape[1]), refQ, rtol=1e-10,
                               atol=1e-12)
    # only the features the batch uses are handed to the optimizer, each once
    assert len(np.unique(gU.indices)) == len(gU.indices)
    assert len(np.unique(gQ.indices)) == len(gQ.indices)


@pytest.mark.parametrize("loss", ["squared", "bpr"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identity_features_train_to_the_same_bits(loss, dtype):
    X = make_ratings(60, 40, 900, random_state=0) if loss == "squared" else \
        make_interactions(60, 40, 900, random_state=0)
    kw = dict(n_components=4, loss=loss, n_epochs=3, batch_size=128, random_state=0,
              dtype=dtype)
    a = MatrixFactorization(**kw).fit(X)
    b = MatrixFactorization(**kw).fit(X, user_features=sp.identity(60, format="coo"),
                                      item_features=sp.identity(40, format="csc"))
    np.testing.assert_array_equal(a.user_table_, b.user_table_)
    np.testing.assert_array_equal(a.item_table_, b.item_table_)
    assert [h["loss"] for h in a.history_] == [h["loss"] for h in b.history_]
    ia, sa = a.recommend(np.arange(10), n=5)
    ib_, sb = b.recommend(np.arange(10), n=5)
    np.testing.assert_array_equal(ia, ib_)
    np.testing.assert_array_equal(sa, sb)
    a.partial_fit(X)
    b.partial_fit(X)
    np.testing.assert_array_equal(a.item_table_, b.item_table_)


def _fitted_with_features(loss="squared", seed=0):
    X = make_ratings(50, 30, 700, random_state=seed) if loss == "squared" else \
        make_interactions(50, 30, 700, random_state=seed)
    Fu, Fi = _features(50, 6, 10, negative=False), _features(30, 5, 11, negative=False)
    mf = MatrixFactorization(n_components=4, loss=loss, n_epochs=4, random_state=seed,
                             dtype=np.float64)
    return mf.fit(X, user_features=Fu, item_features=Fi), X, Fu, Fi


@pytest.mark.parametrize("loss", ["squared", "bpr"])
def test_representations_serve_every_call(loss):
    mf, X, Fu, Fi = _fitted_with_features(loss)
    assert mf.user_table_.shape[0] == 6 and mf.item_table_.shape[0] == 5
    assert mf.n_user_features_ == 6 and mf.n_item_features_ == 5
    P, Qr = Fu @ mf.user_table_, Fi @ mf.item_table_
    np.testing.assert_allclose(mf.user_factors_, P[:, :4])
    np.testing.assert_allclose(mf.item_factors_, Qr[:, :4])
    np.testing.assert_allclose(mf.item_bias_, Qr[:, 4])
    u, i = np.array([0, 3, 7]), np.array([1, 2, 29])
    expect = np.einsum("ij,ij->i", P[u, :4], Qr[i, :4]) + Qr[i, 4]
    if loss == "squared":
        expect += mf.global_mean_ + P[u, 4]
    np.testing.assert_allclose(mf.predict(u, i), expect, rtol=1e-10)
    ids, scores = mf.recommend(u, n=3)
    assert ids.shape == (3, 3)
    assert not any(X[uu, ii] for uu, row in zip(u, ids) for ii in row)
    assert mf.similar_items([0], n=2)[0].shape == (1, 2)
    assert mf.similar_users([0], n=2)[0].shape == (1, 2)
    # the same rows given as cold-start features give the same answers
    np.testing.assert_allclose(mf.predict(u, i, user_features=Fu, item_features=Fi),
                               mf.predict(u, i))
    ids2, scores2 = mf.recommend(u, n=3, user_features=Fu[:8], exclude_seen=False)
    np.testing.assert_array_equal(ids2, mf.recommend(u, n=3, exclude_seen=False)[0])
    clone = pickle.loads(pickle.dumps(mf))
    np.testing.assert_array_equal(clone.predict(u, i), mf.predict(u, i))


def test_cold_items_and_users_from_feature_rows():
    mf, X, Fu, Fi = _fitted_with_features("bpr")
    new_items = _features(7, 5, 20, negative=False)
    ids, scores = mf.recommend([0, 1], n=3, item_features=new_items)
    assert ids.shape == (2, 3) and ids.max() < 7
    S = (Fu[[0, 1]] @ mf.user_table_) @ (new_items @ mf.item_table_)[:, :4].T + \
        (new_items @ mf.item_table_)[:, 4]
    np.testing.assert_array_equal(ids, np.argsort(-S, axis=1, kind="stable")[:, :3])
    ids, _ = mf.recommend([0], n=2, item_features=new_items, items=[1, 2, 3],
                          filter_items=[2])
    assert set(ids[0]) <= {1, 3}
    new_users = _features(3, 6, 21, negative=False)
    p = mf.predict([0, 2], [4, 4], user_features=new_users, item_features=new_items)
    P = new_users @ mf.user_table_
    q = new_items @ mf.item_table_
    np.testing.assert_allclose(p, P[[0, 2], :4] @ q[4, :4] + q[4, 4])
    one_ids, one_scores = mf.recommend(1, n=4, user_features=new_users)
    assert one_ids.shape == (4,)


def test_fold_in_squared_is_the_ridge_solution():
    X = make_ratings(40, 25, 500, random_state=3)
    mf = MatrixFactorization(n_components=3, n_epochs=3, random_state=0,
                             dtype=np.float64).fit(X)
    R_new = X[[2, 5]]
    k, alpha = 3, mf.get_params()["alpha"] or 0.2
    P = mf._fitted()
    for row in range(2):
        items = R_new[row].indices
        r = R_new[row].data
        A = np.hstack([mf.item_factors_[items], np.ones((len(items), 1))])
        t = r - mf.global_mean_ - mf.item_bias_[items]
        x = np.linalg.solve(A.T @ A + alpha * len(items) * np.eye(k + 1), A.T @ t)
        pred = mf.predict([row] * 25, np.arange(25), user_interactions=R_new)
        expect = mf.global_mean_ + x[k] + mf.item_bias_ + mf.item_factors_ @ x[:k]
        np.testing.assert_allclose(pred, expect, rtol=1e-9)
    ids, _ = mf.recommend([0, 1], n=25, user_interactions=R_new)
    for row in range(2):  # the user's own items are excluded, padding at the end
        kept = ids[row][ids[row] >= 0]
        assert not set(kept) & set(R_new[row].indices)
        assert len(kept) == 25 - R_new[row].nnz
    assert P.n_users == 40


def test_fold_in_bpr_minimises_its_objective():
    mf, X, Fu, Fi = _fitted_with_features("bpr")
    R_new = sp.csr_matrix(X[[4]])
    S = mf.predict([0] * 30, np.arange(30), user_interactions=R_new)
    Q = Fi @ mf.item_table_
    # the folded-in user's vector: solve scores = Q[:, :k] @ p + c for p
    p = np.linalg.lstsq(Q[:, :4], S - Q[:, 4], rcond=None)[0]
    pos = R_new.indices
    neg = np.setdiff1d(np.arange(30), pos)
    alpha = 0.02

    def objective(v):
        s = Q[:, :4] @ v + Q[:, 4]
        x = s[pos][:, None] - s[neg][None, :]
        return np.logaddexp(0, -x).sum() / len(neg) + 0.5 * alpha * len(pos) * v @ v

    f0 = objective(p)
    rng = np.random.default_rng(0)
    for _ in range(20):  # no nearby point is better
        assert objective(p + 1e-3 * rng.normal(size=4)) >= f0 - 1e-9
    assert objective(np.zeros(4)) > f0
    # a user with no interaction is the zero vector: the item bias alone ranks
    empty = sp.csr_matrix((1, 30))
    np.testing.assert_allclose(mf.predict([0] * 30, np.arange(30), user_interactions=empty),
                               Q[:, 4])


def test_partial_fit_keeps_or_replaces_features():
    mf, X, Fu, Fi = _fitted_with_features("squared")
    before = mf.item_table_.copy()
    mf.partial_fit(X)  # the stored features are used
    assert not np.array_equal(before, mf.item_table_)
    Fu2 = Fu.copy()
    Fu2.data *= 2.0
    mf.partial_fit(X, user_features=Fu2)
    np.testing.assert_allclose(mf.user_factors_, (Fu2 @ mf.user_table_)[:, :4])
    with pytest.raises(ValueError, match="number of features cannot change"):
        mf.partial_fit(X, item_features=_features(30, 6, 1))
    plain = MatrixFactorization(n_components=2, n_epochs=1, random_state=0).fit(X)
    with pytest.raises(ValueError, match="fitted without them"):
        plain.partial_fit(X, user_features=Fu)


def test_add_identity_features():
    F = sp.csr_matrix(np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0]]))
    A = add_identity_features(F).toarray()
    np.testing.assert_array_equal(A, np.hstack([np.eye(3), F.toarray()]))
    B = add_identity_features(F, n_identity=1, normalize=True).toarray()
    np.testing.assert_allclose(B.sum(axis=1), 1.0)
    assert B.shape == (3, 3) and B[1, 0] == 0 and B[0, 0] == 0.5
    with pytest.raises(ValueError, match="n_identity"):
        add_identity_features(F, n_identity=4)
    with pytest.raises(TypeError, match="features"):
        add_identity_features(F.toarray())


# -- hostile inputs of every new argument -------------------------------------------------------

def _bad_feature_cases(n_rows, n_cols):
    ok = _features(n_rows, n_cols, 0)
    nan = ok.copy()
    nan.data[0] = np.nan
    inf = ok.copy()
    inf.data[0] = np.inf
    big = ok.astype(np.float64)
    big.data[0] = 1e300  # finite in float64, not in the model's float32
    return {
        "dense": (ok.toarray(), TypeError, "scipy.sparse"),
        "list": ([[1.0] * n_cols] * n_rows, TypeError, "scipy.sparse"),
        "complex": (ok.astype(np.complex128), TypeError, "real"),
        "wrong rows": (_features(n_rows + 1, n_cols, 0), ValueError, "rows"),
        "no columns": (sp.csr_matrix((n_rows, 0)), ValueError, "no column"),
        "nan": (nan, ValueError, "NaN"),
        "inf": (inf, ValueError, "NaN or infinite"),
        "too large for float32": (big, ValueError, "too large"),
    }


@pytest.mark.parametrize("side", ["user_features", "item_features"])
@pytest.mark.parametrize("case", list(_bad_feature_cases(4, 3)))
def test_fit_refuses_bad_features_and_changes_nothing(side, case):
    X = make_ratings(20, 15, 200, random_state=0)
    n_rows = 20 if side == "user_features" else 15
    value, exc, match = _bad_feature_cases(n_rows, 3)[case]
    mf = MatrixFactorization(n_components=2, n_epochs=1, random_state=0).fit(X)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v)
              for k, v in vars(mf).items()}
    with pytest.raises(exc, match=match):
        mf.fit(X, **{side: value})
    with pytest.raises(exc, match=match):
        mf.partial_fit(X, **{side: value})
    for k, v in vars(mf).items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(v, before[k])
        else:
            assert v is before[k], k


def test_malformed_feature_structure_is_refused_before_use():
    X = make_ratings(20, 15, 200, random_state=0)
    F = _features(20, 3, 0)
    bad = sp.csr_matrix((F.data, F.indices.copy(), F.indptr), shape=F.shape)
    bad.indices[0] = 99  # a column past the end
    with pytest.raises(ValueError, match="user_features is malformed"):
        MatrixFactorization(n_components=2, n_epochs=1).fit(X, user_features=bad)


def test_negative_feature_values_are_weights():
    X = make_ratings(20, 15, 200, random_state=0)
    F = _features(15, 3, 0, negative=True)
    assert (F.data < 0).any()
    mf = MatrixFactorization(n_components=2, n_epochs=2, random_state=0,
                             dtype=np.float64).fit(X, item_features=F)
    np.testing.assert_allclose(mf.item_factors_, (F @ mf.item_table_)[:, :2])
    # an item without any feature has the zero representation: it scores mu + b_u
    F0 = F.tolil()
    F0[3, :] = 0
    F0 = F0.tocsr()
    F0.eliminate_zeros()
    mf0 = MatrixFactorization(n_components=2, n_epochs=2, random_state=0).fit(
        X, item_features=F0)
    assert np.all(mf0.item_factors_[3] == 0) and mf0.item_bias_[3] == 0


def test_serving_arguments_refuse_hostile_input():
    mf, X, Fu, Fi = _fitted_with_features("squared")
    with pytest.raises(ValueError, match="item_features has 4 columns"):
        mf.recommend([0], item_features=_features(3, 4, 1))
    with pytest.raises(ValueError, match="user_features has 5 columns"):
        mf.predict([0], [0], user_features=_features(3, 5, 1))
    with pytest.raises(TypeError, match="user_features must be a scipy.sparse"):
        mf.recommend([0], user_features=np.ones((2, 6)))
    nan = _features(2, 5, 1)
    nan.data[0] = np.nan
    with pytest.raises(ValueError, match="item_features holds NaN"):
        mf.recommend([0], item_features=nan)
    with pytest.raises(ValueError, match="no row"):
        mf.recommend([0], item_features=sp.csr_matrix((0, 5)))
    with pytest.raises(IndexError, match="user_ids"):
        mf.recommend([3], user_features=_features(3, 6, 1))
    with pytest.raises(IndexError, match="items"):
        mf.recommend([0], item_features=_features(3, 5, 1), items=[3])
    with pytest.raises(IndexError, match="item_ids"):
        mf.predict([0], [3], item_features=_features(3, 5, 1))
    with pytest.raises(ValueError, match="not both"):
        mf.recommend([0], user_features=Fu, user_interactions=X)
    with pytest.raises(ValueError, match="user_interactions has 29 columns"):
        mf.recommend([0], user_interactions=X[:, :29])
    # a dense array stands for the matrix of its non-zero entries, as X does in fit
    dense = mf.recommend([0], user_interactions=X[:1].toarray())
    sparse = mf.recommend([0], user_interactions=X[:1])
    np.testing.assert_array_equal(dense[0], sparse[0])
    with pytest.raises(ValueError, match="user_interactions"):
        mf.recommend([0], user_interactions=np.ones(30))
    bad = X[:2].copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="user_interactions holds NaN"):
        mf.recommend([0], user_interactions=bad)
    dup = sp.coo_matrix((np.array([4.0, 5.0]), (np.array([0, 0]), np.array([1, 1]))),
                        shape=(1, 30))
    with pytest.raises(ValueError, match="user_interactions"):
        mf.recommend([0], user_interactions=dup)


def test_models_without_features_take_identity_shaped_rows():
    X = make_ratings(20, 15, 200, random_state=0)
    mf = MatrixFactorization(n_components=2, n_epochs=1, random_state=0,
                             dtype=np.float64).fit(X)
    assert mf.n_user_features_ == 20 and mf.n_item_features_ == 15
    E = sp.identity(15, format="csr")[[3, 4]]
    np.testing.assert_allclose(mf.predict([0, 0], [0, 1], item_features=E),
                               mf.predict([0, 0], [3, 4]))
    with pytest.raises(ValueError, match="item_features has 14 columns"):
        mf.predict([0], [0], item_features=sp.identity(14, format="csr"))


def test_tampered_feature_count_is_refused():
    mf, X, Fu, Fi = _fitted_with_features("squared")
    mf.n_item_features_ = 7
    with pytest.raises(ValueError, match="n_item_features_"):
        mf.predict([0], [0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("itype", [np.int32, np.int64])
def test_feature_kernels_match_reference(dtype, itype):
    from sparseopt._kernels import _features as FK
    rng = np.random.default_rng(4)
    F = _features(30, 12, 5).astype(dtype)
    L = F.tolil()
    L[7, :] = 0  # a row without features
    F = L.tocsr()
    F.indptr, F.indices = F.indptr.astype(itype), F.indices.astype(itype)
    table = rng.normal(size=(12, 5)).astype(dtype)
    ids = rng.integers(0, 30, 50).astype(np.int64)
    ids[3] = 7
    slot = np.full(30, -1, np.int32)
    uniq, local = np.empty(50, np.int64), np.empty(50, np.int64)
    m = FK.remap_ids(ids, slot, uniq, local)
    assert (slot == -1).all()
    first = np.sort(np.unique(ids, return_index=True)[1])
    np.testing.assert_array_equal(uniq[:m], ids[first])
    np.testing.assert_array_equal(uniq[local], ids)
    rows = uniq[:m]
    out = np.empty((m, 5), dtype)
    FK.gather_rows(F.indptr, F.indices, F.data, rows, table, out)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, R.feature_gather(F, rows, table), rtol=tol, atol=tol)
    assert not out[list(rows).index(7)].any()
    G = rng.normal(size=(m, 5)).astype(dtype)
    fslot = np.full(12, -1, np.int32)
    frows, grad = np.empty(12, np.int64), np.empty((12, 5), dtype)
    n = FK.scatter_rows(F.indptr, F.indices, F.data, rows, G, fslot, frows, grad)
    assert (fslot == -1).all()
    used, ref = R.feature_scatter(F, rows, G)
    order = np.argsort(frows[:n])
    np.testing.assert_array_equal(frows[:n][order], used)
    np.testing.assert_allclose(grad[:n][order], ref, rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("loss", ["squared", "bpr"])
def test_feature_model_is_seeded_and_thread_independent(loss):
    X = make_ratings(60, 40, 900, random_state=1) if loss == "squared" else \
        make_interactions(60, 40, 900, random_state=1)
    Fi = add_identity_features(_features(40, 5, 3, negative=False))
    tables = []
    for n_threads in (1, 2, 1):
        mf = MatrixFactorization(n_components=4, loss=loss, n_epochs=2, batch_size=64,
                                 random_state=0, n_threads=n_threads)
        mf.fit(X, item_features=Fi, user_features=_features(60, 4, 4))
        tables.append((mf.user_table_, mf.item_table_, mf.recommend(np.arange(5), n=4)[0]))
    for other in tables[1:]:
        for a, b in zip(tables[0], other):
            np.testing.assert_array_equal(a, b)


def test_warp_refuses_side_features_before_any_change():
    X = make_interactions(50, 30, 700, random_state=0)
    mf = MatrixFactorization(n_components=4, loss="warp", n_epochs=1, random_state=0).fit(X)
    before = mf.item_table_.copy()
    with pytest.raises(ValueError, match="not yet with loss='warp'"):
        mf.fit(X, item_features=_features(30, 5, 11, negative=False))
    np.testing.assert_array_equal(mf.item_table_, before)


def test_cold_start_on_a_model_of_raw_ids():
    pd = pytest.importorskip("pandas")
    X = make_ratings(50, 30, 700, random_state=0).tocoo()
    df = pd.DataFrame({"user": [f"u{u}" for u in X.row], "item": [f"i{i}" for i in X.col],
                       "rating": X.data})
    mf = MatrixFactorization(n_components=4, n_epochs=2, random_state=0, dtype=np.float64)
    mf.fit(df)
    assert mf.item_ids_.dtype.kind == "U"
    # new users by their interactions (columns in item_ids_ order): items come back as raw ids
    R = sp.csr_matrix((np.array([5.0, 1.0]), ([0, 0], [3, 4])), shape=(1, 30))
    ids, scores = mf.recommend([0], n=3, user_interactions=R)
    assert ids.dtype.kind == "U" and set(ids[0]) <= set(mf.item_ids_)
    assert mf.item_ids_[3] not in ids[0] and mf.item_ids_[4] not in ids[0]
    p = mf.predict([0], [mf.item_ids_[3]], user_interactions=R)
    assert p.shape == (1,) and np.isfinite(p).all()
