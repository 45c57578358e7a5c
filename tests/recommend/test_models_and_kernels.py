"""sparseopt.recommend: kernels against NumPy references, models, recommend, metrics.

* every fused kernel's gradient is compared with a plain NumPy loop over the samples and with
  central finite differences of the mini-batch objective it claims to differentiate;
* one training step of each model is compared with the optimizer applied to the reference
  gradient (so the wiring -- scaling, signs, bias columns, merging -- is checked too);
* ``recommend`` / ``similar_items`` against a brute-force ranking; metrics against
  hand-computed cases; the FM estimators against scikit-learn's estimator checks.
"""
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

import sparseopt as so
from sparseopt._kernels import _fm as KFM, _mf as KMF, _topk as KTOP
from sparseopt.datasets import holdout_split, make_interactions, make_ratings
from sparseopt.recommend import metrics
from sparseopt import _utils
from sparseopt import _reference as R

sklearn = pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from sparseopt.recommend import FMClassifier, FMRegressor, MatrixFactorization  # noqa: E402
from sparseopt.optim import RowGrad  # noqa: E402
from sparseopt.recommend import _mf, _serving  # noqa: E402
from sparseopt.recommend._sampling import warp_candidates  # noqa: E402

RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def close(a, b, dtype, msg=""):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rtol = RTOL[np.dtype(dtype)]
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, np.abs(b).max(initial=0)),
                               err_msg=msg)


def softplus(z):
    return np.logaddexp(0.0, z)


# =========================================================================== MF: squared loss


def ref_mf_squared(U, V, users, items, ratings, k, ub, ib, mu, scale, alpha):
    """Plain loop: merged gradient of scale * sum_s [e^2/2 + alpha/2 (|U_u|^2 + |V_i|^2)]."""
    U, V = U.astype(np.float64), V.astype(np.float64)
    gU, gV, err = {}, {}, []
    for u, i, r in zip(users, items, ratings):
        pu, qi = U[u], V[i]
        e = mu + pu[:k] @ qi[:k] + (pu[k] if ub else 0.0) + (qi[k] if ib else 0.0) - r
        err.append(e)
        d, a = scale * e, scale * alpha
        gu = a * pu.copy()
        gu[:k] += d * qi[:k]
        gi = a * qi.copy()
        gi[:k] += d * pu[:k]
        if ub:
            gu[k] += d
        if ib:
            gi[k] += d
        gU[u] = gU.get(u, 0.0) + gu
        gV[i] = gV.get(i, 0.0) + gi
    return gU, gV, np.array(err)


def mf_objective(U, V, users, items, ratings, k, ub, ib, mu, scale, alpha):
    pu, qi = U[users], V[items]
    e = (mu + np.einsum("ij,ij->i", pu[:, :k], qi[:, :k]) + (pu[:, k] if ub else 0)
         + (qi[:, k] if ib else 0) - ratings)
    return scale * np.sum(0.5 * e ** 2 + 0.5 * alpha * ((pu ** 2).sum(1) + (qi ** 2).sum(1)))


def run_mf_squared(U, V, users, items, ratings, k, ub, ib, mu, scale, alpha, order=None):
    n = users.shape[0]
    order = np.arange(n, dtype=np.int64) if order is None else order
    rec = np.empty((n, 2), dtype=np.int64)
    KMF.pack_ratings(users.astype(np.int64), items.astype(np.int64),
                     ratings.astype(np.float64), rec)
    B = order.shape[0]
    uslot = np.full(U.shape[0], -1, np.int32)
    islot = np.full(V.shape[0], -1, np.int32)
    urows, irows = np.empty(B, np.int64), np.empty(B, np.int64)
    gu, gi = np.empty((B, U.shape[1]), U.dtype), np.empty((B, V.shape[1]), V.dtype)
    err = np.empty(B)
    nu, ni = KMF.mf_squared_batch(U, V, order, rec, k, ub, ib, mu, scale, alpha, uslot, islot,
                                  urows, irows, gu, gi, err)
    assert np.all(uslot == -1) and np.all(islot == -1), "slots must be restored"
    return urows[:nu], gu[:nu], irows[:ni], gi[:ni], err


def _mf_case(dtype, k, ub, ib, seed=0, n=40):
    rng = np.random.default_rng(seed)
    U = rng.normal(0, 0.5, (7, k + ub)).astype(dtype)
    V = rng.normal(0, 0.5, (5, k + ib)).astype(dtype)
    users = rng.integers(0, 7, n)
    items = rng.integers(0, 5, n)
    users[:3] = [6, 0, 6]          # duplicates, first and last rows
    items[:3] = [4, 4, 0]
    ratings = rng.normal(3, 1, n)
    return U, V, users, items, ratings


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 3, 8, 17])
@pytest.mark.parametrize("ub, ib", [(True, True), (False, False), (False, True)])
def test_mf_squared_kernel_vs_loop(dtype, k, ub, ib):
    U, V, users, items, ratings = _mf_case(dtype, k, ub, ib)
    mu, scale, alpha = 2.5, 1.0 / 40, 0.07
    r32 = ratings.astype(dtype).astype(np.float64)   # the model sees ratings in its dtype
    urows, gu, irows, gi, err = run_mf_squared(U, V, users, items, r32, k, ub, ib, mu, scale,
                                               alpha)
    gU, gV, e = ref_mf_squared(U, V, users, items, r32, k, ub, ib, mu, scale, alpha)
    assert list(urows) == list(gU) and list(irows) == list(gV)   # order of first appearance
    close(gu, np.array(list(gU.values())), dtype)
    close(gi, np.array(list(gV.values())), dtype)
    close(err, e, dtype)
    assert gu.dtype == dtype


def test_mf_squared_merge_is_the_optimizers_merge_bitwise():
    """Merging in the kernel gives bit for bit the step the optimizer takes when it is handed
    one float32 row per sample (duplicates left in) and merges them itself."""
    k = 17
    U, V, users, items, ratings = _mf_case(np.float32, k, True, True, seed=4, n=200)
    r32 = ratings.astype(np.float32)
    mu, scale, alpha = 3.0, 1.0 / 200, 0.02
    urows, gu, irows, gi, err = run_mf_squared(U, V, users, items, r32.astype(np.float64), k,
                                               True, True, mu, scale, alpha)
    # per-sample rows in float32, formed as the kernel forms them
    d = (scale * err).astype(np.float32)[:, None]
    a = np.float32(scale * alpha)
    pu, qi = U[users], V[items]
    su = np.empty_like(pu)
    si = np.empty_like(qi)
    su[:, :k] = d * qi[:, :k] + a * pu[:, :k]
    si[:, :k] = d * pu[:, :k] + a * qi[:, :k]
    su[:, k] = (scale * err + scale * alpha * pu[:, k].astype(np.float64)).astype(np.float32)
    si[:, k] = (scale * err + scale * alpha * qi[:, k].astype(np.float64)).astype(np.float32)
    A = [U.copy(), V.copy()]
    B = [U.copy(), V.copy()]
    so.Adam(A, lr=0.01).step([so.RowGrad(urows, gu), so.RowGrad(irows, gi)])
    so.Adam(B, lr=0.01).step([so.RowGrad(users, su), so.RowGrad(items, si)])
    assert np.array_equal(A[0], B[0]) and np.array_equal(A[1], B[1])


@pytest.mark.parametrize("ub, ib", [(True, True), (False, False)])
def test_mf_squared_kernel_finite_differences(ub, ib):
    k = 5
    U, V, users, items, ratings = _mf_case(np.float64, k, ub, ib, seed=1, n=25)
    args = (users, items, ratings, k, ub, ib, 3.0, 0.1, 0.3)
    urows, gu, irows, gi, _ = run_mf_squared(U, V, *args)
    GU, GV = np.zeros_like(U), np.zeros_like(V)
    GU[urows], GV[irows] = gu, gi
    h = 1e-6
    for T, G in ((U, GU), (V, GV)):
        for idx in np.ndindex(*T.shape):
            old = T[idx]
            T[idx] = old + h
            jp = mf_objective(U, V, *args)
            T[idx] = old - h
            jm = mf_objective(U, V, *args)
            T[idx] = old
            assert abs((jp - jm) / (2 * h) - G[idx]) < 1e-7, idx
    # rows outside the batch have zero gradient (the lazy update is exact)
    assert set(range(U.shape[0])) - set(users) == set(range(U.shape[0])) - set(urows)


# =========================================================================== MF: BPR


def ref_bpr(U, V, users, pos, neg, k, ib, scale, alpha):
    U, V = U.astype(np.float64), V.astype(np.float64)
    gU, gV, losses = {}, {}, []
    for u, i, j in zip(users, pos, neg):
        pu, qi, qj = U[u], V[i], V[j]
        x = pu @ (qi[:k] - qj[:k]) + ((qi[k] - qj[k]) if ib else 0.0)
        losses.append(softplus(-x))
        d = -scale / (1 + np.exp(x))
        a = scale * alpha
        g_u = d * (qi[:k] - qj[:k]) + a * pu
        g_i, g_j = a * qi.copy(), a * qj.copy()
        g_i[:k] += d * pu
        g_j[:k] -= d * pu
        if ib:
            g_i[k] += d
            g_j[k] -= d
        gU[u] = gU.get(u, 0.0) + g_u
        gV[i] = gV.get(i, 0.0) + g_i
        gV[j] = gV.get(j, 0.0) + g_j
    return gU, gV, np.array(losses)


def bpr_objective(U, V, users, pos, neg, k, ib, scale, alpha):
    pu, qi, qj = U[users], V[pos], V[neg]
    x = np.einsum("ij,ij->i", pu, qi[:, :k] - qj[:, :k]) + ((qi[:, k] - qj[:, k]) if ib else 0)
    reg = (pu ** 2).sum(1) + (qi ** 2).sum(1) + (qj ** 2).sum(1)
    return scale * np.sum(softplus(-x) + 0.5 * alpha * reg)


def run_bpr(U, V, users, pos, neg, k, ib, scale, alpha, weight=None):
    B = users.shape[0]
    uslot = np.full(U.shape[0], -1, np.int32)
    islot = np.full(V.shape[0], -1, np.int32)
    urows, irows = np.empty(B, np.int64), np.empty(2 * B, np.int64)
    gu, gi = np.empty((B, U.shape[1]), U.dtype), np.empty((2 * B, V.shape[1]), V.dtype)
    loss = np.empty(B)
    w = np.empty(0) if weight is None else np.ascontiguousarray(weight, np.float64)
    nu, ni = KMF.mf_bpr_batch(U, V, users, pos, neg, w, k, ib, scale, alpha, uslot, islot,
                              urows, irows, gu, gi, loss)
    assert np.all(uslot == -1) and np.all(islot == -1)
    return urows[:nu], gu[:nu], irows[:ni], gi[:ni], loss


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k, ib", [(3, True), (16, False), (9, True)])
def test_bpr_kernel_vs_loop_and_finite_differences(dtype, k, ib):
    rng = np.random.default_rng(2)
    U = rng.normal(0, 0.5, (6, k)).astype(dtype)
    V = rng.normal(0, 0.5, (8, k + ib)).astype(dtype)
    n = 30
    users = rng.integers(0, 6, n).astype(np.int64)
    pos = rng.integers(0, 8, n).astype(np.int64)
    neg = rng.integers(0, 8, n).astype(np.int64)
    neg[0] = pos[0]                     # a negative equal to its positive: contributions add
    args = (users, pos, neg, k, ib, 1.0 / n, 0.05)
    urows, gu, irows, gi, loss = run_bpr(U, V, *args)
    gU, gV, ref_loss = ref_bpr(U, V, *args)
    GU, GV = np.zeros(U.shape), np.zeros(V.shape)
    GU[urows], GV[irows] = gu, gi
    RU, RV = np.zeros(U.shape), np.zeros(V.shape)
    for r, g in gU.items():
        RU[r] = g
    for r, g in gV.items():
        RV[r] = g
    assert sorted(urows) == sorted(gU) and sorted(irows) == sorted(gV)
    close(GU, RU, dtype)
    close(GV, RV, dtype)
    close(loss, ref_loss, dtype)
    if dtype == np.float64:
        h = 1e-6
        for T, G in ((U, GU), (V, GV)):
            for idx in np.ndindex(*T.shape):
                old = T[idx]
                T[idx] = old + h
                jp = bpr_objective(U, V, *args)
                T[idx] = old - h
                jm = bpr_objective(U, V, *args)
                T[idx] = old
                assert abs((jp - jm) / (2 * h) - G[idx]) < 1e-7, idx


# =========================================================================== MF: WARP, weights


def run_warp(U, V, users, pos, cand, k, ib, scale, alpha, n_items, weight=None, seen=None,
             seed=0, n_draws=0):
    B = users.shape[0]
    seen = sp.csr_matrix((U.shape[0], V.shape[0])) if seen is None else sp.csr_matrix(seen)
    seen.sort_indices()
    uslot = np.full(U.shape[0], -1, np.int32)
    islot = np.full(V.shape[0], -1, np.int32)
    urows, irows = np.empty(B, np.int64), np.empty(2 * B, np.int64)
    gu, gi = np.empty((B, U.shape[1]), U.dtype), np.empty((2 * B, V.shape[1]), V.dtype)
    loss, drawn = np.empty(B), np.empty(B, np.int64)
    w = np.empty(0) if weight is None else np.ascontiguousarray(weight, np.float64)
    nu, ni = KMF.mf_warp_batch(U, V, users, pos, cand, seen.indptr.astype(np.int64),
                               seen.indices.astype(np.int64), w, k, ib, scale, alpha,
                               float(n_items), uslot, islot, urows, irows, gu, gi, loss, drawn,
                               seed, n_draws)
    assert np.all(uslot == -1) and np.all(islot == -1), "slots must be restored"
    return dict(urows=urows[:nu], gu=gu[:nu], irows=irows[:ni], gi=gi[:ni], loss=loss,
                drawn=drawn)


def _implicit_case(dtype, k, ib, seed=3, n_users=6, n_items=9, B=40, S=5, spread=0.5):
    rng = np.random.default_rng(seed)
    U = rng.normal(0, spread, (n_users, k)).astype(dtype)
    V = rng.normal(0, spread, (n_items, k + ib)).astype(dtype)
    users = rng.integers(0, n_users, B).astype(np.int64)
    pos = rng.integers(0, n_items, B).astype(np.int64)
    cand = rng.integers(0, n_items, (B, S)).astype(np.int64)
    users[:3] = [5, 0, 5]             # a repeated user, first and last rows
    pos[:3] = [8, 8, 0]
    cand[0, :] = pos[0]               # a candidate equal to its positive: contributions add
    weight = rng.uniform(0.5, 3.0, B)
    return U, V, users, pos, cand, weight


def _compare(got, ref, dtype):
    assert list(got["urows"]) == list(ref["urows"])   # order of first appearance
    assert list(got["irows"]) == list(ref["irows"])
    if len(ref["urows"]):
        close(got["gu"], ref["gu"], dtype)
        close(got["gi"], ref["gi"], dtype)
    close(got["loss"], ref["loss"], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 7, 8, 64, 257])
@pytest.mark.parametrize("ib", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("with_seen", [False, True])
def test_warp_kernel_vs_reference(dtype, k, ib, weighted, with_seen):
    from sparseopt import _reference as R
    # scores of spread ~2 whatever k: some samples find no violation in their 5 draws, some
    # find one at the 1st, 2nd, ... draw
    U, V, users, pos, cand, weight = _implicit_case(dtype, k, ib, spread=2 / k ** 0.25)
    w = weight if weighted else None
    # seen items: each user's positives of the batch (a violating one is skipped)
    seen = sp.csr_matrix((np.ones(40), (users, pos)), shape=(6, 9)) if with_seen else None
    args = (users, pos, cand, k, ib, 1.0 / 40, 0.05, 9)
    got = run_warp(U, V, *args, weight=w, seen=seen)
    ref = R.implicit_mf_gradient(U, V, users, pos, cand, w, k, ib, 1.0 / 40, 0.05, "warp", 9,
                                 seen=seen)
    np.testing.assert_array_equal(got["drawn"], ref["drawn"])
    _compare(got, ref, dtype)
    assert got["gu"].dtype == dtype


def test_warp_kernel_covers_every_outcome():
    """The case above is not vacuous: no violation, a violation at the first draw and at a
    later one, and a violating candidate skipped as seen, all occur."""
    from sparseopt import _reference as R
    k = 8
    U, V, users, pos, cand, _ = _implicit_case(np.float64, k, True, spread=2 / k ** 0.25)
    seen = sp.csr_matrix((np.ones(40), (users, pos)), shape=(6, 9))
    drawn = R.implicit_mf_gradient(U, V, users, pos, cand, None, k, True, 0.1, 0.0, "warp",
                                   9)["drawn"]
    assert (drawn == 0).any() and (drawn == 1).any() and (drawn > 1).any()
    skipping = R.implicit_mf_gradient(U, V, users, pos, cand, None, k, True, 0.1, 0.0, "warp",
                                      9, seen=seen)["drawn"]
    assert (skipping != drawn).any()


def test_warp_rank_weight_and_no_update():
    """One sample by hand: the N-th draw violates -> weight log(floor((n - 1) / N)); no
    violation among the draws -> no row claimed, loss 0."""
    U = np.array([[1.0, 0.0]])
    V = np.array([[2.0, 0.0], [0.0, 0.0], [1.5, 0.0], [-3.0, 0.0]])   # scores 2, 0, 1.5, -3
    users, pos = np.array([0, 0], np.int64), np.array([0, 0], np.int64)
    cand = np.array([[3, 1, 2], [3, 1, 3]], np.int64)   # x_uj > 2 - 1: only item 2 (1.5)
    got = run_warp(U, V, users, pos, cand, 2, False, 1.0, 0.0, n_items=101)
    assert list(got["drawn"]) == [3, 0]
    L = np.log(np.floor(100 / 3))
    assert got["loss"][0] == pytest.approx(L * (1 - 2.0 + 1.5)) and got["loss"][1] == 0.0
    assert list(got["urows"]) == [0] and list(got["irows"]) == [0, 2]
    np.testing.assert_allclose(got["gu"], [[L * (1.5 - 2.0), 0.0]])
    np.testing.assert_allclose(got["gi"], [[-L, 0.0], [L, 0.0]])
    # item 2 seen by the user: the violating draw is skipped (and counted), none is left
    got = run_warp(U, V, users, pos, cand, 2, False, 1.0, 0.0, n_items=101,
                   seen=sp.csr_matrix(([1.0], ([0], [2])), shape=(1, 4)))
    assert list(got["drawn"]) == [0, 0] and len(got["irows"]) == 0
    # (n_items - 1) / N below 2: the weight is log(1) = 0, but the rows are still claimed
    # (their per-occurrence L2 applies)
    got = run_warp(U, V, users[:1], pos[:1], cand[:1], 2, False, 1.0, 0.5, n_items=4)
    assert got["loss"][0] == 0.0 and list(got["irows"]) == [0, 2]
    np.testing.assert_allclose(got["gi"], [[1.0, 0.0], [0.75, 0.0]])


def test_warp_kernel_finite_differences():
    """With the violating candidate of each sample fixed (the kernel's ``drawn``), the
    gradient is that of the weighted hinge objective."""
    k, ib, n_items = 4, True, 9
    U, V, users, pos, cand, weight = _implicit_case(np.float64, k, ib, seed=5, B=25,
                                                    spread=0.6)
    scale, alpha = 1.0 / 25, 0.07
    got = run_warp(U, V, users, pos, cand, k, ib, scale, alpha, n_items, weight)
    hit = got["drawn"] > 0
    assert hit.sum() >= 10
    neg = cand[np.arange(25), np.maximum(got["drawn"] - 1, 0)]
    L = np.log(np.maximum(1.0, np.floor((n_items - 1) / np.maximum(got["drawn"], 1))))

    def objective(U, V):
        pu, qi, qj = U[users], V[pos], V[neg]
        x = np.einsum("ij,ij->i", pu, qi[:, :k] - qj[:, :k]) + qi[:, k] - qj[:, k]
        reg = (pu ** 2).sum(1) + (qi ** 2).sum(1) + (qj ** 2).sum(1)
        return scale * np.sum((weight * (L * (1 - x) + 0.5 * alpha * reg))[hit])

    GU, GV = np.zeros(U.shape), np.zeros(V.shape)
    GU[got["urows"]], GV[got["irows"]] = got["gu"], got["gi"]
    h = 1e-6
    for T, G in ((U, GU), (V, GV)):
        for idx in np.ndindex(*T.shape):
            old = T[idx]
            T[idx] = old + h
            jp = objective(U, V)
            T[idx] = old - h
            jm = objective(U, V)
            T[idx] = old
            assert abs((jp - jm) / (2 * h) - G[idx]) < 1e-7, idx


@pytest.mark.parametrize("kernel", ["bpr", "warp"])
def test_implicit_kernels_empty_batch(kernel):
    U = np.zeros((3, 4), np.float32)
    V = np.zeros((5, 5), np.float32)
    e = np.empty(0, np.int64)
    if kernel == "bpr":
        urows, gu, irows, gi, loss = run_bpr(U, V, e, e, e, 4, True, 1.0, 0.1)
    else:
        got = run_warp(U, V, e, e, np.empty((0, 10), np.int64), 4, True, 1.0, 0.1, 5)
        urows, irows = got["urows"], got["irows"]
    assert len(urows) == 0 and len(irows) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 7, 8, 64, 257])
def test_weighted_bpr_kernel_vs_reference(dtype, k):
    from sparseopt import _reference as R
    U, V, users, pos, cand, weight = _implicit_case(dtype, k, True)
    neg = np.ascontiguousarray(cand[:, 1])
    neg[0] = pos[0]
    urows, gu, irows, gi, loss = run_bpr(U, V, users, pos, neg, k, True, 1.0 / 40, 0.05,
                                         weight)
    ref = R.implicit_mf_gradient(U, V, users, pos, neg, weight, k, True, 1.0 / 40, 0.05, "bpr")
    _compare(dict(urows=urows, gu=gu, irows=irows, gi=gi, loss=loss), ref, dtype)
    # unit weights are no weights, to the bit
    a = run_bpr(U, V, users, pos, neg, k, True, 1.0 / 40, 0.05, np.ones(40))
    b = run_bpr(U, V, users, pos, neg, k, True, 1.0 / 40, 0.05)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 12345, 2 ** 64 - 1])
def test_warp_kernel_draws_equal_listed_candidates(dtype, seed):
    """Given no candidate rows, the kernel draws them from a seed: the rows, losses and draw
    counts are those of the listed candidates (warp_candidates) bit for bit, and the rows
    match the reference."""
    from sparseopt import _reference as R
    U, V, users, pos, _, weight = _implicit_case(dtype, 7, True)
    S, n_items = 6, V.shape[0]
    seen = sp.random(U.shape[0], n_items, density=0.3, format="csr", random_state=2)
    cand = warp_candidates(seed, len(users), S, n_items)
    assert cand.shape == (len(users), S) and cand.min() >= 0 and cand.max() < n_items
    listed = run_warp(U, V, users, pos, cand, 7, True, 1.0 / 40, 0.05, n_items, weight,
                      seen)
    drawn = run_warp(U, V, users, pos, np.empty((0, 0), np.int64), 7, True, 1.0 / 40, 0.05,
                     n_items, weight, seen, seed=seed, n_draws=S)
    for key in listed:
        np.testing.assert_array_equal(drawn[key], listed[key])
    assert 0 < np.count_nonzero(drawn["drawn"]) < len(users)   # both outcomes occur
    ref = R.implicit_mf_gradient(U, V, users, pos, cand, weight, 7, True, 1.0 / 40, 0.05,
                                 "warp", n_items, seen=seen)
    _compare(drawn, ref, dtype)


def test_warp_candidates_are_uniform():
    """The seeded draws cover every item about equally (a chi-square bound far in the
    tail) and differ between seeds."""
    n_items, n = 37, 200_000
    c = warp_candidates(7, n // 10, 10, n_items).ravel()
    counts = np.bincount(c, minlength=n_items)
    expected = n / n_items
    assert ((counts - expected) ** 2 / expected).sum() < 90   # df 36: p < 1e-6 beyond
    assert not np.array_equal(warp_candidates(7, 5, 10, n_items),
                              warp_candidates(8, 5, 10, n_items))


def test_warp_unit_weights_are_no_weights_bitwise():
    U, V, users, pos, cand, _ = _implicit_case(np.float32, 16, True, spread=0.3)
    a = run_warp(U, V, users, pos, cand, 16, True, 1.0 / 40, 0.05, 9, np.ones(40))
    b = run_warp(U, V, users, pos, cand, 16, True, 1.0 / 40, 0.05, 9)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


# =========================================================================== FM kernels


def fm_dense_predict(Xd, W, w0, k):
    """yhat per output by the O(n^2 k) definition sum_{j<l} <v_j, v_l> x_j x_l."""
    n_out = w0.shape[0]
    T = W.reshape(W.shape[0], n_out, k + 1).astype(np.float64)
    out = np.empty((Xd.shape[0], n_out))
    for c in range(n_out):
        Vc, wc = T[:, c, :k], T[:, c, k]
        G = Vc @ Vc.T
        for s, x in enumerate(Xd):
            pair = 0.0
            nz = np.flatnonzero(x)
            for a in range(len(nz)):
                for b in range(a + 1, len(nz)):
                    pair += G[nz[a], nz[b]] * x[nz[a]] * x[nz[b]]
            out[s, c] = w0[c] + x @ wc + pair
    return out


def fm_objective(X, y, sw, W, w0, k, loss, scale, alpha, samples):
    Xd = X.toarray()[samples]
    pred = fm_dense_predict(Xd, W, w0, k)
    yy, ww = y[samples], sw[samples]
    if loss == "squared":
        lo = 0.5 * (pred[:, 0] - yy) ** 2
    elif loss == "logistic":
        lo = softplus(-yy * pred[:, 0])
    else:
        m = pred.max(1, keepdims=True)
        lse = np.log(np.exp(pred - m).sum(1)) + m[:, 0]
        lo = lse - pred[np.arange(len(yy)), yy.astype(int)]
    Xs = sp.csr_matrix(X)[samples]      # the penalty follows the *stored* entries
    reg = np.array([(W[Xs.indices[Xs.indptr[r]:Xs.indptr[r + 1]]] ** 2).sum()
                    for r in range(len(samples))])
    return scale * np.sum(ww * (lo + 0.5 * alpha * reg))


def run_fm_grads(X, y, sw, W, w0, k, loss, scale, alpha, samples, n_threads=1):
    X = sp.csr_matrix(X)
    counts = X.indptr[samples + 1] - X.indptr[samples]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nnz, B, n_out = int(offsets[-1]), samples.shape[0], w0.shape[0]
    G = np.empty((nnz, W.shape[1]), W.dtype)
    gidx = np.empty(nnz, X.indices.dtype)
    g0 = np.empty((B, n_out))
    lo = np.empty(B)
    KFM.fm_grads(X.data.astype(W.dtype), X.indices, X.indptr, samples, offsets, W, w0, y, sw,
                 k, KFM.LOSSES[loss], scale, alpha, np.empty((B, 2 * n_out * k)),
                 np.empty((B, n_out)), G, gidx, g0, lo, n_threads)
    GW = np.zeros(W.shape)
    np.add.at(GW, gidx, G.astype(np.float64))
    return GW, g0.sum(0), lo


FM_CASES = [("squared", 1), ("logistic", 1), ("softmax", 3)]


@pytest.mark.parametrize("loss, n_out", FM_CASES)
@pytest.mark.parametrize("k", [1, 4])
def test_fm_kernels_finite_differences(loss, n_out, k):
    rng = np.random.default_rng(3)
    X = sp.random(12, 6, density=0.45, random_state=3, format="lil")
    X[0, 0] = 1.0
    X[5, :] = 0                       # an empty row
    X = sp.csr_matrix(X)
    X.data = rng.normal(size=X.nnz)
    X.data[0] = 0.0                   # an explicit zero: stored, so it is penalised
    W = rng.normal(0, 0.5, (6, n_out * (k + 1)))
    w0 = rng.normal(0, 0.5, n_out)
    y = {"squared": rng.normal(size=12), "logistic": rng.choice([-1.0, 1.0], 12),
         "softmax": rng.integers(0, n_out, 12).astype(np.float64)}[loss]
    sw = rng.uniform(0.5, 2.0, 12)
    samples = np.array([3, 0, 5, 7, 3, 11], dtype=np.int64)   # a repeated sample
    scale, alpha = 0.2, 0.3
    args = (X, y, sw, W, w0, k, loss, scale, alpha, samples)
    GW, g0, lo = run_fm_grads(*args)
    # predictions: the kernel's O(k nnz) formula vs the pairwise definition
    out = np.empty((12, n_out))
    KFM.fm_predict(X.data, X.indices, X.indptr, W, w0, k, out, 1)
    np.testing.assert_allclose(out, fm_dense_predict(X.toarray(), W, w0, k), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(out, R.fm_predict(X, W, w0, k), rtol=1e-12, atol=1e-12)
    h = 1e-6
    for T, G in ((W, GW), (w0, g0)):
        for idx in np.ndindex(*T.shape):
            old = T[idx]
            T[idx] = old + h
            jp = fm_objective(*args)
            T[idx] = old - h
            jm = fm_objective(*args)
            T[idx] = old
            assert abs((jp - jm) / (2 * h) - G[idx]) < 1e-6, (idx, G[idx])


def test_fm_kernel_float32_and_threads(monkeypatch):
    rng = np.random.default_rng(4)
    X = sp.random(400, 50, density=0.1, random_state=4, format="csr", dtype=np.float32)
    W = rng.normal(0, 0.3, (50, 3 * 5)).astype(np.float32)
    w0 = rng.normal(size=3).astype(np.float32)
    y = rng.integers(0, 3, 400).astype(np.float64)
    sw = np.ones(400)
    samples = rng.permutation(400)[:300].astype(np.int64)
    args = (X, y, sw, W, w0, 4, "softmax", 1 / 300, 0.01, samples)
    g1 = run_fm_grads(*args, n_threads=1)
    g2 = run_fm_grads(*args, n_threads=2)
    for a, b in zip(g1, g2):
        assert np.array_equal(a, b)          # per-sample rows: thread count does not matter
    g64 = run_fm_grads(X.astype(np.float64), y, sw, W.astype(np.float64), w0.astype(np.float64),
                       4, "softmax", 1 / 300, 0.01, samples)
    close(g1[0], g64[0], np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64])
def test_fm_merge_rows_sums_duplicates_in_order(dtype, idx_dtype):
    rng = np.random.default_rng(5)
    gidx = rng.integers(0, 9, 40).astype(idx_dtype)
    G0 = rng.normal(size=(40, 5)).astype(dtype)
    G = G0.copy()
    slot = np.full(9, -1, dtype=np.int32)
    rows = np.empty(40, dtype=np.int64)
    m = KFM.fm_merge_rows(G, gidx, slot, rows)
    ref_rows, ref = R.fm_merge_rows(G0, gidx)      # first appearance; entry order, in dtype
    assert m == len(ref_rows) and np.array_equal(rows[:m], ref_rows)
    assert np.array_equal(G[:m], ref)
    assert (slot == -1).all()                                          # restored
    assert KFM.fm_merge_rows(G[:0], gidx[:0], slot, rows) == 0


def test_fm_grads_reads_a_slice_of_epoch_offsets():
    # the model hands the kernel a slice of the epoch's running totals: rows are placed
    # relative to the slice's first value
    rng = np.random.default_rng(6)
    X = sp.random(30, 8, density=0.4, random_state=6, format="csr")
    W = rng.normal(0, 0.5, (8, 5))
    w0 = np.array([0.1])
    y = rng.choice([-1.0, 1.0], 30)
    sw = np.ones(30)
    perm = rng.permutation(30).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(np.diff(X.indptr)[perm])]).astype(np.int64)
    s, e = 7, 19
    nnz = int(offsets[e] - offsets[s])
    out = []
    for offs in (offsets[s:e + 1], offsets[s:e + 1] - offsets[s]):
        G = np.empty((nnz, 5))
        gidx = np.empty(nnz, X.indices.dtype)
        g0 = np.empty((e - s, 1))
        lo = np.empty(e - s)
        KFM.fm_grads(X.data, X.indices, X.indptr, perm[s:e], offs, W, w0, y, sw, 4,
                     KFM.LOSSES["logistic"], 1 / 12, 0.1, np.empty((e - s, 8)),
                     np.empty((e - s, 1)), G, gidx, g0, lo, 1)
        out.append((G, gidx, g0, lo))
    for a, b in zip(*out):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("optimizer", ["adagrad", "adam", "rmsprop", "sgd"])
def test_fm_merged_rows_step_like_the_optimizers_merge(optimizer):
    """fm_merge_rows + the trusted step update parameter and state bitwise as the
    optimizer's own merge and checked step of the per-entry rows."""
    from sparseopt.optim import make_optimizer
    rng = np.random.default_rng(8)
    gidx = rng.integers(0, 12, 60).astype(np.int32)
    G0 = rng.normal(size=(60, 4)).astype(np.float32)
    P0 = rng.normal(size=(12, 4)).astype(np.float32)
    P = [P0.copy(), P0.copy()]
    o1 = make_optimizer(optimizer, [P[0]], 0.05, 1)
    o2 = make_optimizer(optimizer, [P[1]], 0.05, 1)
    for _ in range(3):
        o1.step([RowGrad(gidx, G0)])
        G = G0.copy()
        rows = np.empty(60, dtype=np.int64)
        m = KFM.fm_merge_rows(G, gidx, np.full(12, -1, dtype=np.int32), rows)
        o2._begin_trusted()
        o2._step_trusted(rows[:m], G[:m], 0.05)
    assert np.array_equal(P[0], P[1])
    for key, st in o1.state[0].items():
        assert np.array_equal(np.asarray(st), np.asarray(o2.state[0][key])), key


def test_fm_trusted_path_equals_checked_path_and_threads(monkeypatch):
    """The estimator's trusted steps give bitwise the model its checked steps give (forced
    here by reporting every batch as non-finite), and 1 thread equals 2."""
    import sparseopt.recommend._fm as fm_mod
    X, y = _fm_data(n=300, seed=7)
    yb = (y > np.median(y)).astype(int)
    kw = dict(n_components=3, n_epochs=3, batch_size=16, tol=None, random_state=0)
    a = FMClassifier(**kw, n_threads=1).fit(X, yb)
    b = FMClassifier(**kw, n_threads=2).fit(X, yb)
    assert np.array_equal(a.table_, b.table_) and np.array_equal(a.w0_, b.w0_)
    r1 = FMRegressor(**kw, n_threads=1).fit(X, y)

    class _AlwaysNonfinite:
        @staticmethod
        def any_nonfinite(x):
            return True
    monkeypatch.setattr(fm_mod, "_coalesce", _AlwaysNonfinite)
    c = FMClassifier(**kw, n_threads=1).fit(X, yb)
    r2 = FMRegressor(**kw, n_threads=1).fit(X, y)
    assert np.array_equal(a.table_, c.table_) and np.array_equal(a.w0_, c.w0_)
    assert np.array_equal(r1.table_, r2.table_) and np.array_equal(r1.w0_, r2.w0_)
    assert a.loss_curve_ == c.loss_curve_


def test_fm_duplicates_mean_takes_the_checked_step():
    X, y = _fm_data(n=200, seed=9)
    kw = dict(n_components=3, n_epochs=2, batch_size=32, tol=None, random_state=0,
              optimizer_params={"duplicates": "mean"})
    m = FMRegressor(**kw).fit(X, y)
    assert m.optimizer_.duplicates == "mean" and np.isfinite(m.table_).all()
    s = FMRegressor(**dict(kw, optimizer_params=None)).fit(X, y)
    assert not np.array_equal(m.table_, s.table_)   # a mean of duplicates is another step


def test_fm_divergence_raises_before_the_step():
    X, y = _fm_data(n=200, seed=10)
    m = FMRegressor(optimizer="sgd", learning_rate=1e6, batch_size=8, n_epochs=5,
                    random_state=0)
    with pytest.raises(FloatingPointError, match="diverged"):
        m.fit(X, y * 1e6)


# =========================================================================== top-n kernel


def brute_topn(S, n, excl=None):
    S = np.array(S, dtype=np.float64)
    if excl is not None:
        S[excl] = -np.inf
    ids = np.full((S.shape[0], n), -1)
    sc = np.full((S.shape[0], n), -np.inf)
    for r in range(S.shape[0]):
        cand = [c for c in range(S.shape[1]) if np.isfinite(S[r, c])]
        cand.sort(key=lambda c: (-S[r, c], c))
        ids[r, :len(cand[:n])] = cand[:n]
        sc[r, :len(cand[:n])] = S[r, cand[:n]]
    return ids, sc


@pytest.mark.parametrize("n", [1, 3, 8, 12])
def test_topn_kernel_ties_exclusion_padding(n):
    rng = np.random.default_rng(5)
    S = rng.integers(0, 4, (6, 10)).astype(np.float64)       # many ties
    S[2, 3] = np.nan
    excl = sp.random(6, 10, density=0.3, random_state=5, format="lil")
    excl[4, :] = 1                                           # a row with nothing left
    excl = sp.csr_matrix(excl)
    for threads in (1, 2):
        ids = np.empty((6, n), np.int64)
        out = np.empty((6, n))
        KTOP.topn_rows(S.copy(), excl.indptr.astype(np.int64), excl.indices.astype(np.int64),
                       ids, out, threads)
        bi, bs = brute_topn(np.where(np.isnan(S), -np.inf, S), n, excl.toarray() != 0)
        assert np.array_equal(ids, bi)
        assert np.array_equal(out, bs)


# =========================================================================== MF estimator


@pytest.fixture(scope="module")
def ratings():
    X = make_ratings(400, 150, 8000, rank=4, noise=0.2, random_state=0, dtype=np.float64)
    return holdout_split(X, 0.2, random_state=0)


def _initial_tables(n_users, n_items, k, seed, ub, ib, std=0.01):
    """MatrixFactorization's initialisation (first draws of default_rng(random_state)); ``std``
    is the squared loss's default ``init_std``."""
    rng = np.random.default_rng(seed)
    U = rng.normal(0, std, (n_users, k + ub))
    V = rng.normal(0, std, (n_items, k + ib))
    if ub:
        U[:, k] = 0
    if ib:
        V[:, k] = 0
    return U, V


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adagrad", "rmsprop"])
@pytest.mark.parametrize("use_biases", [True, False])
def test_mf_one_step_equals_optimizer_on_reference_gradient(optimizer, use_biases):
    X = make_ratings(30, 20, 200, random_state=1, dtype=np.float64)
    k, lr, alpha = 4, 0.05, 0.1
    mf = MatrixFactorization(n_components=k, optimizer=optimizer, learning_rate=lr, alpha=alpha,
                             n_epochs=1, batch_size=10_000, use_biases=use_biases,
                             dtype=np.float64, random_state=3).fit(X)
    U, V = _initial_tables(30, 20, k, 3, use_biases, use_biases)
    coo = X.tocoo()
    mu = X.data.mean()
    gU, gV, _ = ref_mf_squared(U, V, coo.row, coo.col, coo.data, k, use_biases, use_biases, mu,
                               1.0 / X.nnz, alpha)
    GU, GV = np.zeros_like(U), np.zeros_like(V)
    for r, g in gU.items():
        GU[r] = g
    for r, g in gV.items():
        GV[r] = g
    rows_u, rows_v = np.array(sorted(gU)), np.array(sorted(gV))
    if optimizer == "sgd":
        U -= lr * GU
        V -= lr * GV
    else:
        kw = {"bias_correction": "global"} if optimizer == "adam" else {}
        opt = {"adam": so.Adam, "adagrad": so.Adagrad, "rmsprop": so.RMSprop}[optimizer](
            [U, V], lr=lr, **kw)
        opt.step([so.RowGrad(rows_u, GU[rows_u]), so.RowGrad(rows_v, GV[rows_v])])
    np.testing.assert_allclose(mf.user_table_, U, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mf.item_table_, V, rtol=1e-9, atol=1e-12)
    assert mf.global_mean_ == pytest.approx(mu)
    assert mf.user_factors_.shape == (30, k) and mf.user_bias_.shape == (30,)
    if not use_biases:
        assert not mf.user_bias_.any() and not mf.item_bias_.any()


def test_mf_untouched_rows_unchanged():
    X = sp.csr_matrix((np.array([4.0, 2.0, 5.0]), (np.array([0, 2, 2]), np.array([1, 1, 3]))),
                      shape=(5, 6))
    for opt in ("adam", "sgd"):
        mf = MatrixFactorization(n_components=3, optimizer=opt, n_epochs=3, random_state=0,
                                 dtype=np.float64, alpha=0.5).fit(X)
        U, V = _initial_tables(5, 6, 3, 0, True, True)
        for r in (1, 3, 4):
            assert np.array_equal(mf.user_table_[r], U[r])
        for r in (0, 2, 4, 5):
            assert np.array_equal(mf.item_table_[r], V[r])


def test_mf_learns_and_reports(ratings, capsys):
    tr, te = ratings
    mf = MatrixFactorization(n_components=8, n_epochs=15, batch_size=256, learning_rate=0.02,
                             random_state=0, verbose=True).fit(tr, eval_set=te)
    base = metrics.rmse(te.data, np.full(te.nnz, tr.data.mean()))
    final = mf.history_[-1]["eval"]
    assert final < 0.8 * base
    assert mf.history_[-1]["loss"] < mf.history_[0]["loss"]
    out = capsys.readouterr().out
    assert out.count("[MatrixFactorization] epoch") == 15
    assert "eval rmse" in out and "rows/s" in out
    coo = te.tocoo()
    pred = mf.predict(coo.row, coo.col)
    assert pred.dtype == np.float32
    assert metrics.rmse(coo.data, pred) == pytest.approx(final, rel=1e-6)


def test_mf_is_seeded_and_thread_independent(ratings, monkeypatch):
    tr, _ = ratings
    kw = dict(n_components=6, n_epochs=2, batch_size=128, random_state=5)
    a = MatrixFactorization(**kw, n_threads=1).fit(tr)
    monkeypatch.setattr(_utils, "PARALLEL_MIN_MODEL_WORK", 0)
    from sparseopt.optim import _base
    monkeypatch.setattr(_base, "PARALLEL_MIN_ELEMENTS", 0)
    b = MatrixFactorization(**kw, n_threads=2).fit(tr)
    c = MatrixFactorization(**dict(kw, random_state=6)).fit(tr)
    assert np.array_equal(a.user_table_, b.user_table_)
    assert np.array_equal(a.item_table_, b.item_table_)
    assert not np.array_equal(a.user_table_, c.user_table_)


def test_mf_partial_fit_and_pickle(ratings):
    tr, te = ratings
    mf = MatrixFactorization(n_components=4, random_state=0)
    mf.partial_fit(tr)
    mf.partial_fit(tr, eval_set=te)
    assert mf.n_epochs_ == 2 and len(mf.history_) == 2 and mf.history_[1]["eval"] > 0
    assert mf.optimizer_.state[0]["step"] == 2 * -(-tr.nnz // 1024)  # default batch_size
    clone = pickle.loads(pickle.dumps(mf))
    np.testing.assert_array_equal(clone.predict([0, 1], [2, 3]), mf.predict([0, 1], [2, 3]))
    clone.partial_fit(tr)
    mf.partial_fit(tr)
    np.testing.assert_array_equal(clone.user_table_, mf.user_table_)
    with pytest.raises(ValueError, match="shape"):
        mf.partial_fit(sp.csr_matrix((3, 3)))


@pytest.mark.parametrize("loss, optimizer, lr, alpha, n_epochs, batch, std", [
    ("squared", so.Adagrad, 0.03, 0.2, 20, 1024, 0.01),
    ("bpr", so.Adam, 0.01, 0.02, 10, 4096, 0.1),
    ("warp", so.Adagrad, 0.03, 0.0, 25, 1024, 0.01),
])
def test_mf_defaults_depend_on_the_loss(loss, optimizer, lr, alpha, n_epochs, batch, std):
    X = make_ratings(300, 100, 5000, random_state=0, dtype=np.float64)
    if loss != "squared":
        X.data[:] = 1.0
    a = MatrixFactorization(n_components=4, loss=loss, random_state=0, dtype=np.float64).fit(X)
    # get_params keeps None (clone and set_params see what the caller gave) ...
    assert all(a.get_params()[name] is None for name in
               ("optimizer", "learning_rate", "alpha", "n_epochs", "batch_size", "init_std"))
    # ... and the fit used the loss's values: the same bits as passing them explicitly
    assert type(a.optimizer_) is optimizer and a.optimizer_.lr == lr
    assert a.n_epochs_ == n_epochs
    assert a.optimizer_.state[0]["step"] == n_epochs * -(-X.nnz // batch)
    b = MatrixFactorization(n_components=4, loss=loss, optimizer=optimizer.__name__.lower(),
                            learning_rate=lr, alpha=alpha, n_epochs=n_epochs, batch_size=batch,
                            init_std=std, random_state=0, dtype=np.float64).fit(X)
    assert np.array_equal(a.user_table_, b.user_table_)
    assert np.array_equal(a.item_table_, b.item_table_)
    c = MatrixFactorization(n_components=4, loss=loss, random_state=0, dtype=np.float64,
                            alpha=2 * alpha or 0.05).fit(X)
    assert not np.array_equal(a.item_table_, c.item_table_)
    # a value the caller sets wins over the loss's default
    d = MatrixFactorization(n_components=4, loss=loss, optimizer="rmsprop", n_epochs=1,
                            learning_rate=0.5 * lr, random_state=0).fit(X)
    assert type(d.optimizer_) is so.RMSprop and d.optimizer_.lr == 0.5 * lr
    assert d.n_epochs_ == 1


@pytest.mark.parametrize("loss", ["squared", "bpr", "warp"])
def test_mf_early_stopping_keeps_the_best_epoch(loss):
    X = make_ratings(300, 100, 5000, random_state=0, dtype=np.float64)
    if loss != "squared":
        X.data[:] = 1.0
    # a large step and no L2: the validation metric gets worse within a few epochs
    kw = dict(n_components=8, loss=loss, optimizer="adam", learning_rate=0.05, alpha=0.0,
              batch_size=256, random_state=0, dtype=np.float64, early_stopping=True,
              n_iter_no_change=2)
    a = MatrixFactorization(n_epochs=60, **kw).fit(X)
    val = [h["validation"] for h in a.history_]
    assert a.n_epochs_ < 60 and len(val) == a.n_epochs_
    watched = np.array(val) if loss == "squared" else -np.array(val)
    # the latest of the best epochs, then n_iter_no_change epochs without improvement
    assert a.best_epoch_ == len(watched) - np.argmin(watched[::-1])
    assert a.best_epoch_ == a.n_epochs_ - 2
    # the kept tables are those of the best epoch: the same bits as training that long
    b = MatrixFactorization(n_epochs=a.best_epoch_, **kw).fit(X)
    assert b.best_epoch_ == b.n_epochs_ == a.best_epoch_
    assert np.array_equal(a.user_table_, b.user_table_)
    assert np.array_equal(a.item_table_, b.item_table_)
    assert a.score(X) == b.score(X)
    # a tenth of the entries was held out of training (fewer steps per epoch) ...
    n_train = X.nnz - round(0.1 * X.nnz)
    assert a.optimizer_.state[0]["step"] == a.n_epochs_ * -(-n_train // 256)
    # ... but recommend still excludes every interaction of X
    items, _ = a.recommend(np.arange(300), n=10, exclude_seen=True)
    rows = np.repeat(np.arange(300), 10)
    ok = items.ravel() >= 0
    assert X[rows[ok], items.ravel()[ok]].sum() == 0
    if loss == "squared":  # the global mean is the training part's
        assert a.global_mean_ != pytest.approx(X.data.mean(), abs=1e-12)


def test_mf_early_stopping_on_eval_set_and_off():
    X = make_ratings(300, 100, 5000, random_state=0, dtype=np.float64)
    tr, te = holdout_split(X, 0.2, random_state=0)
    kw = dict(n_components=8, optimizer="adam", learning_rate=0.05, alpha=0.0, batch_size=256,
              n_epochs=40, random_state=0, dtype=np.float64)
    a = MatrixFactorization(early_stopping=True, n_iter_no_change=2, **kw).fit(tr, eval_set=te)
    # eval_set is the validation set: nothing held out of X, the watched metric is eval
    assert [h["validation"] for h in a.history_] == [h["eval"] for h in a.history_]
    assert a.optimizer_.state[0]["step"] == a.n_epochs_ * -(-tr.nnz // 256)
    assert a.n_epochs_ < 40 and a.score(te) == -min(h["eval"] for h in a.history_)
    # off (the default): all epochs, no validation entry, no best_epoch_ (even after a refit)
    a.set_params(early_stopping=False).fit(tr, eval_set=te)
    assert a.n_epochs_ == 40 and "validation" not in a.history_[-1]
    assert not hasattr(a, "best_epoch_")
    # partial_fit makes its one epoch whatever early_stopping says
    c = MatrixFactorization(early_stopping=True, **kw).partial_fit(tr)
    assert c.n_epochs_ == 1 and "validation" not in c.history_[-1]


def test_mf_early_stopping_split_needs_a_training_entry():
    X = sp.csr_matrix(np.array([[4.0, 0.0], [0.0, 2.0]]))
    m = MatrixFactorization(n_components=2, early_stopping=True, validation_fraction=0.9)
    with pytest.raises(ValueError, match="validation_fraction"):
        m.fit(X)
    assert not hasattr(m, "user_table_")


def test_mf_fit_restarts():
    X = make_ratings(50, 40, 500, random_state=0)
    mf = MatrixFactorization(n_components=3, n_epochs=2, random_state=0)
    a = mf.fit(X).user_table_.copy()
    b = mf.fit(X).user_table_
    assert np.array_equal(a, b) and mf.n_epochs_ == 2


def test_bpr_negatives_and_learning():
    X = make_interactions(600, 200, 12000, rank=4, zipf=0.8, signal=4.0, random_state=0)
    tr, te = holdout_split(X, 0.2, random_state=0)
    mf = MatrixFactorization(n_components=4, loss="bpr", n_epochs=15, batch_size=256,
                             learning_rate=0.01, alpha=0.05, random_state=0)
    mf.fit(tr, eval_set=te)
    assert mf.user_table_.shape == (600, 4) and mf.item_table_.shape == (200, 5)
    assert not mf.user_bias_.any() and mf.global_mean_ == 0.0
    # negatives are never positives of their user (when the user has free items)
    u = np.repeat(np.arange(600), 20)
    neg = mf._sample_negatives(u.astype(np.int64), u.shape[0])
    assert tr[u, neg].sum() == 0
    # it beats recommending the most popular items
    users = np.flatnonzero(np.diff(te.indptr))
    recs, _ = mf.recommend(users, n=10)
    p_model = metrics.precision_at_k(te[users], recs, 10)
    pop = np.argsort(-np.bincount(tr.indices, minlength=200), kind="stable")
    seen = tr[users].toarray() != 0
    pop_recs = np.array([[i for i in pop if not seen[r, i]][:10] for r in range(len(users))])
    p_pop = metrics.precision_at_k(te[users], pop_recs, 10)
    assert p_model > 1.1 * p_pop
    assert mf.history_[-1]["eval"] == pytest.approx(p_model) or len(users) > 2000
    assert mf.history_[-1]["loss"] < mf.history_[0]["loss"]


def test_bpr_seeded():
    X = make_interactions(100, 50, 1000, random_state=1)
    kw = dict(n_components=4, loss="bpr", n_epochs=2, batch_size=64, random_state=2)
    a = MatrixFactorization(**kw).fit(X)
    b = MatrixFactorization(**kw).fit(X)
    assert np.array_equal(a.item_table_, b.item_table_)


def _beats_popularity(mf, tr, te, factor):
    users = np.flatnonzero(np.diff(te.indptr))
    recs, _ = mf.recommend(users, n=10)
    p_model = metrics.precision_at_k(te[users], recs, 10)
    pop = np.argsort(-np.bincount(tr.indices, minlength=tr.shape[1]), kind="stable")
    seen = tr[users].toarray() != 0
    pop_recs = np.array([[i for i in pop if not seen[r, i]][:10] for r in range(len(users))])
    p_pop = metrics.precision_at_k(te[users], pop_recs, 10)
    assert p_model > factor * p_pop, (p_model, p_pop)
    return p_model


def test_warp_learns_scores_and_serves(capsys):
    X = make_interactions(600, 200, 12000, rank=4, zipf=0.8, signal=4.0, random_state=0)
    tr, te = holdout_split(X, 0.2, random_state=0)
    mf = MatrixFactorization(n_components=4, loss="warp", n_epochs=15, batch_size=256,
                             optimizer="adam", learning_rate=0.01, alpha=0.05, random_state=0,
                             verbose=True)
    mf.fit(tr, eval_set=te)
    out = capsys.readouterr().out
    assert out.count("[MatrixFactorization] epoch") == 15 and "violations" in out
    assert mf.user_table_.shape == (600, 4) and mf.item_table_.shape == (200, 5)
    assert not mf.user_bias_.any() and mf.global_mean_ == 0.0
    p_model = _beats_popularity(mf, tr, te, 1.1)
    users = np.flatnonzero(np.diff(te.indptr))
    assert mf.score(te) == pytest.approx(p_model) == pytest.approx(mf.history_[-1]["eval"])
    # the share of positives that found a violation falls as the ranking improves
    share = [h["violations"] for h in mf.history_]
    assert share[0] > 0.9 and share[-1] < share[0]
    assert all(0 <= h["loss"] for h in mf.history_)
    items, scores = mf.recommend(users[:3], n=5)
    np.testing.assert_allclose(scores, mf.predict(np.repeat(users[:3], 5), items.ravel())
                               .reshape(3, 5), rtol=1e-5)
    assert mf.similar_items([0, 1], n=3)[0].shape == (2, 3)
    clone = pickle.loads(pickle.dumps(mf))
    np.testing.assert_array_equal(clone.recommend(users, n=10)[0], mf.recommend(users, n=10)[0])
    clone.partial_fit(tr)
    mf.partial_fit(tr)
    assert np.array_equal(clone.item_table_, mf.item_table_)
    with pytest.raises(ValueError, match="loss"):
        mf.set_params(loss="bpr").partial_fit(tr)


def test_warp_is_seeded_and_thread_independent(monkeypatch):
    X = make_interactions(200, 80, 3000, random_state=1)
    kw = dict(n_components=6, loss="warp", n_epochs=3, batch_size=128, random_state=5)
    a = MatrixFactorization(**kw, n_threads=1).fit(X)
    monkeypatch.setattr(_utils, "PARALLEL_MIN_MODEL_WORK", 0)
    from sparseopt.optim import _base
    monkeypatch.setattr(_base, "PARALLEL_MIN_ELEMENTS", 0)
    b = MatrixFactorization(**kw, n_threads=2).fit(X)
    c = MatrixFactorization(**dict(kw, random_state=6)).fit(X)
    assert np.array_equal(a.user_table_, b.user_table_)
    assert np.array_equal(a.item_table_, b.item_table_)
    assert not np.array_equal(a.item_table_, c.item_table_)
    d = MatrixFactorization(**dict(kw, max_sampled=1)).fit(X)   # the parameter is used
    assert not np.array_equal(a.item_table_, d.item_table_)


def test_warp_step_matches_the_reference(monkeypatch):
    """One mini-batch of a model: the optimizer receives the reference's gradient of the
    candidates the model drew (its generator replayed) and the seen items it skips."""
    from sparseopt import _reference as R
    X = make_interactions(40, 30, 400, random_state=3)
    X.data[:] = np.random.default_rng(0).integers(1, 4, X.nnz)        # counts
    calls = []
    real = _mf._mf_kernel.mf_warp_batch

    def spy(U, V, users, pos, cand, indptr, indices, w, k, ib, scale, alpha, n_items, *rest):
        # the model lets the kernel draw: the reference reads the candidates of that seed
        assert len(cand) == 0
        listed = warp_candidates(rest[-2], len(users), rest[-1], V.shape[0])
        calls.append(dict(U=np.array(U), V=np.array(V), users=np.array(users),
                          pos=np.array(pos), cand=listed, w=np.array(w), k=k, ib=ib,
                          scale=scale, alpha=alpha, n_items=n_items))
        out = real(U, V, users, pos, cand, indptr, indices, w, k, ib, scale, alpha, n_items,
                   *rest)
        calls[-1]["rows"] = (np.array(rest[2][:out[0]]), np.array(rest[4][:out[0]]),
                             np.array(rest[3][:out[1]]), np.array(rest[5][:out[1]]))
        return out

    monkeypatch.setattr(_mf._mf_kernel, "mf_warp_batch", spy)
    mf = MatrixFactorization(n_components=5, loss="warp", n_epochs=1, batch_size=64,
                             confidence_alpha=0.5, dtype=np.float64, random_state=0).fit(X)
    assert len(calls) == -(-X.nnz // 64)
    c = calls[0]
    ref = R.implicit_mf_gradient(c["U"], c["V"], c["users"], c["pos"], c["cand"], c["w"],
                                 c["k"], c["ib"], c["scale"], c["alpha"], "warp",
                                 int(c["n_items"]), seen=X)
    urows, gu, irows, gi = c["rows"]
    assert list(urows) == list(ref["urows"]) and list(irows) == list(ref["irows"])
    close(gu, ref["gu"], np.float64)
    close(gi, ref["gi"], np.float64)
    # the weight rule: 1 + confidence_alpha * the pair's value
    np.testing.assert_array_equal(c["w"], 1.0 + 0.5 * np.asarray(X[c["users"], c["pos"]])
                                  .ravel())
    assert c["scale"] == 1.0 / 64 and mf.n_epochs_ == 1


@pytest.mark.parametrize("loss", ["bpr", "warp"])
def test_confidence_weight_rule(loss, monkeypatch):
    """Each positive weighs 1 + confidence_alpha * r, r its stored value with duplicates
    summed; confidence_alpha=0 ignores the values (the same bits as the binary matrix)."""
    rng = np.random.default_rng(4)
    X = make_interactions(60, 40, 900, random_state=4).tocoo()
    counts = rng.integers(1, 6, X.nnz).astype(np.float64)
    # every entry stored twice, with values that sum to the count
    half = np.floor(counts / 2)
    D = sp.coo_matrix((np.r_[half, counts - half], (np.r_[X.row, X.row], np.r_[X.col, X.col])),
                      shape=X.shape)
    summed = sp.csr_matrix((counts, (X.row, X.col)), shape=X.shape)
    B = summed.copy()
    B.data[:] = 1.0
    kw = dict(n_components=4, loss=loss, n_epochs=2, batch_size=100, random_state=0)
    name = f"mf_{loss}_batch"
    seen_w = []
    real = getattr(_mf._mf_kernel, name)

    def spy(*args):
        # (U, V, users, pos, negatives or candidates, [seen indptr, indices,] weight, ...)
        seen_w.append((np.array(args[2]), np.array(args[3]),
                       np.array(args[7 if loss == "warp" else 5])))
        return real(*args)

    monkeypatch.setattr(_mf._mf_kernel, name, spy)
    a = MatrixFactorization(confidence_alpha=0.25, **kw).fit(D)
    for users, items, w in seen_w:
        np.testing.assert_array_equal(w, 1.0 + 0.25 * np.asarray(summed[users, items]).ravel())
    seen_w.clear()
    b = MatrixFactorization(confidence_alpha=0.25, **kw).fit(summed)
    assert np.array_equal(a.item_table_, b.item_table_)   # duplicates summed = counts
    c = MatrixFactorization(**kw).fit(summed)             # default 0: values ignored
    assert all(w.shape == (0,) for _, _, w in seen_w[-2:])
    d = MatrixFactorization(**kw).fit(B)
    assert np.array_equal(c.item_table_, d.item_table_)
    assert not np.array_equal(b.item_table_, c.item_table_)


@pytest.mark.parametrize("n_items, draws", [(8, 10), (549, 10), (550, 11), (3000, 60),
                                            (5049, 100), (20000, 100)])
def test_warp_auto_max_sampled(n_items, draws, monkeypatch):
    """max_sampled="auto" scans n_items // 50 draws within [10, 100]; an int is used as is."""
    assert _mf._max_sampled("auto", n_items) == draws
    assert _mf._max_sampled(7, n_items) == 7
    seen = []
    real = _mf._mf_kernel.mf_warp_batch

    def spy(*args):
        seen.append(args[-1])
        return real(*args)

    monkeypatch.setattr(_mf._mf_kernel, "mf_warp_batch", spy)
    X = make_interactions(30, n_items, 200, random_state=1)
    X.data[:] = 1.0
    MatrixFactorization(n_components=3, loss="warp", n_epochs=1, random_state=0).fit(X)
    assert seen and set(seen) == {draws}
    seen.clear()
    MatrixFactorization(n_components=3, loss="warp", n_epochs=1, max_sampled=3,
                        random_state=0).fit(X)
    assert set(seen) == {3}


def test_confidence_and_max_sampled_errors():
    X = make_interactions(20, 10, 60, random_state=0)
    for bad in (-1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="confidence_alpha"):
            MatrixFactorization(loss="warp", confidence_alpha=bad).fit(X)
    with pytest.raises(TypeError, match="confidence_alpha"):
        MatrixFactorization(loss="bpr", confidence_alpha="1").fit(X)
    with pytest.raises(ValueError, match="confidence_alpha"):
        MatrixFactorization(confidence_alpha=1.0).fit(X)      # squared loss
    for bad, err in ((0, ValueError), (1001, ValueError), (2.5, TypeError), (True, TypeError),
                     ("Auto", ValueError), ("10", ValueError)):
        with pytest.raises(err, match="max_sampled"):
            MatrixFactorization(loss="warp", max_sampled=bad).fit(X)
    neg = X.copy()
    neg.data[0] = -3.0
    m = MatrixFactorization(loss="warp", confidence_alpha=1.0)
    with pytest.raises(ValueError, match="negative"):
        m.fit(neg)
    assert not hasattr(m, "item_table_")
    MatrixFactorization(loss="warp", n_epochs=1).fit(neg)     # without confidence: a positive
    big = X.astype(np.float64)
    big.data[:] = 1e300
    with pytest.raises(ValueError, match="overflow"):
        MatrixFactorization(loss="bpr", confidence_alpha=1e10).fit(big)


@pytest.mark.parametrize("loss", ["squared", "bpr", "warp"])
def test_recommend_matches_brute_force(loss, monkeypatch):
    X = make_ratings(60, 40, 700, random_state=2, dtype=np.float64)
    mf = MatrixFactorization(n_components=5, loss=loss, n_epochs=3, dtype=np.float64,
                             random_state=0).fit(X)
    monkeypatch.setattr(_serving, "_BLOCK_ENTRIES", 40 * 7)      # several blocks of 7 users
    users = np.array([0, 59, 3, 3, 17, 42, 8, 9, 10, 11])
    allu = np.repeat(users, 40)
    alli = np.tile(np.arange(40), users.shape[0])
    S = mf.predict(allu, alli).reshape(users.shape[0], 40)
    for exclude, n in ((True, 10), (False, 10), (True, 40), (False, 1)):
        ids, scores = mf.recommend(users, n=n, exclude_seen=exclude)
        excl = (X[users].toarray() != 0) if exclude else None
        bi, bs = brute_topn(S, min(n, 40), excl)
        assert ids.shape == (users.shape[0], min(n, 40))
        valid = bi >= 0
        np.testing.assert_allclose(scores[valid], bs[valid], rtol=1e-10)
        # ids agree except where two scores are within rounding of each other
        gap = np.abs(np.diff(np.where(valid, bs, 0), axis=1)).min(initial=1.0)
        if gap > 1e-9:
            assert np.array_equal(ids, bi)
        assert np.all(ids[~valid] == -1) and np.all(np.isneginf(scores[~valid]))
    ids1, s1 = mf.recommend(3, n=4)
    assert ids1.shape == (4,) and np.array_equal(ids1, mf.recommend([3], n=4)[0][0])


def test_similar_items_matches_brute_force():
    X = make_ratings(80, 30, 900, random_state=3, dtype=np.float64)
    mf = MatrixFactorization(n_components=6, n_epochs=2, dtype=np.float64, random_state=0).fit(X)
    Q = mf.item_factors_
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    C = Qn @ Qn.T
    items = np.array([0, 29, 5])
    ids, sims = mf.similar_items(items, n=5)
    bi, bs = brute_topn(C[items], 5, np.eye(30, dtype=bool)[items])
    assert np.array_equal(ids, bi)
    np.testing.assert_allclose(sims, bs, rtol=1e-10)
    assert not np.any(ids == items[:, None])


def test_mf_errors():
    X = make_ratings(20, 10, 50, random_state=0)
    with pytest.raises(TypeError, match="scipy.sparse"):
        MatrixFactorization().fit(X.toarray().tolist())  # a list: neither matrix nor columns
    # a dense array stands for the matrix of its non-zero entries
    dense = MatrixFactorization(n_epochs=2, random_state=0).fit(X.toarray())
    sparse = MatrixFactorization(n_epochs=2, random_state=0).fit(sp.csr_matrix(X.toarray()))
    np.testing.assert_array_equal(dense.user_table_, sparse.user_table_)
    with pytest.raises(ValueError, match="loss"):
        MatrixFactorization(loss="hinge").fit(X)
    with pytest.raises(ValueError, match="optimizer"):
        MatrixFactorization(optimizer="lbfgs").fit(X)
    with pytest.raises(ValueError, match="learning_rate"):
        MatrixFactorization(learning_rate=0).fit(X)
    with pytest.raises(ValueError, match="n_components"):
        MatrixFactorization(n_components=0).fit(X)
    with pytest.raises(ValueError, match="optimizer_params"):
        MatrixFactorization(optimizer_params={"lr": 1.0}).fit(X)
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MatrixFactorization().fit(bad)
    with pytest.raises(AttributeError, match="not fitted"):
        MatrixFactorization().predict([0], [0])
    mf = MatrixFactorization(n_epochs=1, random_state=0).fit(X)
    with pytest.raises(IndexError, match="item_ids"):
        mf.predict([0], [10])
    with pytest.raises(IndexError, match="user_ids"):
        mf.recommend([-1])
    with pytest.raises(ValueError, match="length"):
        mf.predict([0, 1], [0])
    with pytest.raises(FloatingPointError, match="learning_rate"):
        MatrixFactorization(optimizer="sgd", learning_rate=1e30, n_epochs=3,
                            random_state=0).fit(X * 1e30)
    assert "n_components=4" in repr(MatrixFactorization(n_components=4))
    assert MatrixFactorization().set_params(alpha=0.5).get_params()["alpha"] == 0.5


# =========================================================================== FM estimators


@parametrize_with_checks([FMRegressor(random_state=0), FMClassifier(random_state=0)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


# A users x items model predicts for (user, item) pairs: predict(user_ids, item_ids), not
# predict(X) over the rows of a samples x features X. Every check below calls predict(X)
# on the matrix it fitted and so cannot apply; each one's other assertions (pickling,
# idempotent fits, input left unchanged, NaN refused in fit) are covered with pairs in
# tests/recommend and tests/test_hostile_inputs.py. Every other check runs and passes.
_PAIRS = "predict takes (user_ids, item_ids) pairs, not the rows of a samples x features X"
MF_NOT_APPLICABLE = {
    name: _PAIRS for name in (
        "check_estimators_dtypes", "check_dtype_object", "check_estimators_pickle",
        "check_f_contiguous_array_estimator", "check_methods_sample_order_invariance",
        "check_methods_subset_invariance", "check_dict_unchanged", "check_fit_idempotent",
        "check_fit2d_predict1d", "check_estimator_sparse_array",
        "check_estimator_sparse_matrix")
}
MF_NOT_APPLICABLE.update({
    "check_estimators_unfitted": _PAIRS + " (predict(u, i) before fit raises NotFittedError)",
    "check_estimators_nan_inf": _PAIRS + " (NaN and inf are refused by fit)",
    "check_n_features_in_after_fitting": "n_features_in_ is the number of items; predict "
                                         "takes ids, not feature rows whose width to check",
})


def _mf_expected_failures(estimator):
    return dict(MF_NOT_APPLICABLE) if isinstance(estimator, MatrixFactorization) else {}


try:
    _mf_checks = parametrize_with_checks(
        [MatrixFactorization(n_components=3, n_epochs=2, random_state=0),
         MatrixFactorization(n_components=3, n_epochs=2, loss="bpr", random_state=0)],
        expected_failed_checks=_mf_expected_failures)
except TypeError:  # pragma: no cover - scikit-learn < 1.6 has no expected_failed_checks
    _mf_checks = pytest.mark.skip(reason="scikit-learn >= 1.6 needed")


@_mf_checks
def test_mf_sklearn_compatible(estimator, check):
    check(estimator)


def test_mf_expected_failures_are_the_predict_ones():
    """The list of checks that do not apply is exact: every other check passes, and each
    listed one does fail (a check that starts passing must leave the list)."""
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(MatrixFactorization(n_components=3, n_epochs=2, random_state=0),
                              on_fail=None, expected_failed_checks={})
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    assert failed == set(MF_NOT_APPLICABLE)


def _fm_data(n=600, d=40, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.15, random_state=seed, format="csr")
    V = rng.normal(0, 0.7, (d, k))
    w = rng.normal(size=d)
    y = fm_dense_predict(X.toarray(), np.column_stack([V, w]), np.array([0.5]), k)[:, 0]
    return X, y


def test_fm_regressor_learns_an_fm():
    X, y = _fm_data()
    m = FMRegressor(n_components=3, n_epochs=150, batch_size=32, optimizer="adam",
                    learning_rate=0.02, alpha=0.0, tol=None, random_state=0).fit(X, y)
    assert m.score(X, y) > 0.97
    assert m.coef_.shape == (40,) and m.factors_.shape == (40, 3)
    assert m.intercept_.shape == (1,) and m.n_iter_ == 150
    assert np.shares_memory(m.coef_, m.table_)


def test_fm_classifiers_binary_and_multiclass():
    X, y = _fm_data(seed=1)
    yb = np.where(y > np.median(y), "yes", "no")
    # the generated FM is dense in its interactions: a weak penalty and Adam fit it (the
    # defaults are chosen for sparse one-hot data, see _fm._DEFAULTS)
    kw = dict(n_components=3, n_epochs=60, optimizer="adam", learning_rate=0.01, alpha=1e-4,
              random_state=0)
    clf = FMClassifier(**kw).fit(X, yb)
    assert clf.score(X, yb) > 0.9
    assert list(clf.classes_) == ["no", "yes"]
    p = clf.predict_proba(X[:5])
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert np.array_equal(clf.predict(X[:5]), clf.classes_[(p[:, 1] > 0.5).astype(int)])
    y3 = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    clf3 = FMClassifier(**kw).fit(X, y3)
    assert clf3.score(X, y3) > 0.85
    assert clf3.decision_function(X[:4]).shape == (4, 3)
    assert clf3.coef_.shape == (3, 40) and clf3.factors_.shape == (3, 40, 3)


def test_fm_partial_fit_warm_start_dtype():
    X, y = _fm_data(seed=2)
    X32 = X.astype(np.float32)
    m = FMRegressor(random_state=0)
    for _ in range(5):
        m.partial_fit(X32, y)
    assert m.n_iter_ == 5 and m.table_.dtype == np.float32
    assert m.predict(X32).dtype == np.float32
    yc = (y > 0).astype(int)
    c = FMClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes"):
        c.partial_fit(X, yc)
    c.partial_fit(X[:100], yc[:100], classes=[0, 1])
    c.partial_fit(X[100:], yc[100:])
    assert c.n_iter_ == 2
    w = FMRegressor(n_epochs=3, tol=None, warm_start=True, random_state=0).fit(X, y)
    before = w.table_.copy()
    w.fit(X, y)
    assert w.n_iter_ == 6 and not np.array_equal(before, w.table_)


def test_fm_sample_weight_zero_equals_dropping():
    X, y = _fm_data(n=80, seed=3)
    sw = np.ones(80)
    sw[::4] = 0
    keep = sw > 0
    kw = dict(n_epochs=5, batch_size=1000, tol=None, random_state=0)
    a = FMRegressor(**kw).fit(X, y, sample_weight=sw)
    b = FMRegressor(**kw).fit(X[keep], y[keep])
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-9)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rmsprop"])
def test_fm_other_optimizers(optimizer):
    X, y = _fm_data(seed=4)
    lr = {"sgd": 0.1, "adagrad": 0.1, "rmsprop": 0.01}[optimizer]
    m = FMRegressor(optimizer=optimizer, learning_rate=lr, n_epochs=40, batch_size=64,
                    alpha=1e-4, random_state=0)
    assert m.fit(X, y).score(X, y) > 0.6


# =========================================================================== metrics


def test_rmse():
    assert metrics.rmse([1, 2, 3], [1, 2, 3]) == 0.0
    assert metrics.rmse([0, 0], [3, 4]) == pytest.approx(np.sqrt(12.5))
    assert np.isnan(metrics.rmse([], []))
    with pytest.raises(ValueError):
        metrics.rmse([1], [1, 2])


def _truth():
    # user 0 likes items {1, 3}; user 1 likes {0}; user 2 likes nothing (left out)
    return sp.csr_matrix(np.array([[0, 1, 0, 1, 0, 0],
                                   [1, 0, 0, 0, 0, 0],
                                   [0, 0, 0, 0, 0, 0]]))


def test_precision_recall_ndcg_by_hand():
    rec = np.array([[3, 2, 1, 5],
                    [4, 5, -1, -1],
                    [0, 1, 2, 3]])
    T = _truth()
    # user 0: hits at ranks 1 and 3 (k=3): precision 2/3, recall 2/2; user 1: no hit
    assert metrics.precision_at_k(T, rec, k=3) == pytest.approx((2 / 3 + 0) / 2)
    assert metrics.recall_at_k(T, rec, k=3) == pytest.approx((1.0 + 0) / 2)
    dcg0 = 1 / np.log2(2) + 1 / np.log2(4)
    idcg0 = 1 / np.log2(2) + 1 / np.log2(3)
    assert metrics.ndcg_at_k(T, rec, k=3) == pytest.approx((dcg0 / idcg0 + 0) / 2)
    # k=1: user 0 hit at rank 1
    assert metrics.precision_at_k(T, rec, k=1) == pytest.approx(0.5)
    assert metrics.recall_at_k(T, rec, k=1) == pytest.approx(0.25)
    assert metrics.ndcg_at_k(T, rec, k=1) == pytest.approx(0.5)
    # perfect lists
    perfect = np.array([[1, 3, 0], [0, 2, 4], [1, 2, 3]])
    assert metrics.ndcg_at_k(T, perfect, k=3) == pytest.approx(1.0)
    assert metrics.recall_at_k(T, perfect, k=2) == pytest.approx(1.0)
    assert np.isnan(metrics.precision_at_k(sp.csr_matrix((2, 6)), rec[:2], k=2))
    with pytest.raises(ValueError, match="fewer than k"):
        metrics.precision_at_k(T, rec, k=5)
    with pytest.raises(ValueError, match="rows"):
        metrics.precision_at_k(T, rec[:2], k=2)


def test_auc_by_hand():
    T = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 1, 0, 0]]))
    S = np.array([[0.9, 0.1, 0.5, 0.2],     # pos 0.9 beats both negs; 0.2 beats 0.1 only
                  [0.3, 0.3, 0.1, 0.7]])    # pos 0.3: beats 0.1, ties 0.3, loses to 0.7
    assert metrics.auc_score(T, S) == pytest.approx(((2 + 1) / 4 + (1 + 0.5) / 3) / 2)
    # excluding item 2 for user 0 leaves one negative (0.1): AUC 1
    E = sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 0, 0, 0]]))
    assert metrics.auc_score(T, S, exclude=E) == pytest.approx((1.0 + 1.5 / 3) / 2)
    with pytest.raises(ValueError, match="finite"):
        metrics.auc_score(T, np.full((2, 4), np.nan))


def test_metrics_match_a_loop_on_random_data():
    rng = np.random.default_rng(0)
    T = sp.random(50, 30, density=0.1, random_state=0, format="csr")
    rec = np.array([rng.permutation(30)[:10] for _ in range(50)])
    S = rng.normal(size=(50, 30))
    prec, rec_, nd, auc = [], [], [], []
    for r in range(50):
        rel = set(T[r].indices)
        if not rel:
            continue
        hits = [int(i in rel) for i in rec[r, :5]]
        prec.append(sum(hits) / 5)
        rec_.append(sum(hits) / len(rel))
        dcg = sum(h / np.log2(j + 2) for j, h in enumerate(hits))
        idcg = sum(1 / np.log2(j + 2) for j in range(min(5, len(rel))))
        nd.append(dcg / idcg)
        pos = [S[r, i] for i in rel]
        neg = [S[r, i] for i in range(30) if i not in rel]
        auc.append(np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg]))
    assert metrics.precision_at_k(T, rec, 5) == pytest.approx(np.mean(prec))
    assert metrics.recall_at_k(T, rec, 5) == pytest.approx(np.mean(rec_))
    assert metrics.ndcg_at_k(T, rec, 5) == pytest.approx(np.mean(nd))
    assert metrics.auc_score(T, S) == pytest.approx(np.mean(auc))


# =========================================================================== scripts

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_movie_recommender_example_runs():
    import os
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "movie_recommender.py")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("test RMSE") == 8 and out.count("precision@10") >= 10
    assert "Top 10 for user 0" in out and "Most similar to" in out


def test_bench_mf_quick(capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_mf", ROOT / "benchmarks" / "bench_mf.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    variants = "4" if importlib.util.find_spec("torch") else ""
    results = bench.main(["--users", "500", "--items", "300", "--ratings", "8000",
                          "--test", "1000", "--epochs", "2", "--torch-variants", variants])
    out = capsys.readouterr().out
    assert "| sparseopt |" in out and "time / epoch" in out
    assert len(results["sparseopt"]["errs"]) == 2
    # the figures: held-out RMSEs finite, above the generator's noise floor (0.3) and below
    # the spread of the ratings; the summary consistent with the per-epoch figures
    for name, s in results.items():
        errs = np.asarray(s["errs"], dtype=float)
        assert np.all(np.isfinite(errs)) and np.all((0.27 < errs) & (errs < 1.6)), (name, s)
        assert s["best"] == errs.min() and s["final"] == errs[-1], (name, s)
        assert 1 <= s["best_epoch"] <= len(errs) and errs[s["best_epoch"] - 1] == s["best"]
        assert np.isfinite(s["epoch_s"]) and 0 < s["epoch_s"] <= s["total_s"] < 300, (name, s)
        assert s["cum"][-1] == pytest.approx(s["total_s"]), (name, s)
    if variants:
        assert "| torch (4 tables) |" in out and "Target vs torch (4 tables)" in out


# =========================================================================== later data


def _pattern(n_users, n_items, rows):
    """A 0/1 interaction matrix: rows[u] lists the items of user u."""
    r = [u for u, items in rows.items() for _ in items]
    c = [i for items in rows.values() for i in items]
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(n_users, n_items))


@pytest.mark.parametrize("loss", ["squared", "bpr"])
def test_later_partial_fit_interactions_are_excluded_from_recommend(loss):
    # the second matrix has the same number of entries and the same indptr as the first,
    # only other items: exclusion must follow the item ids, not the counts
    X1 = _pattern(4, 30, {0: range(0, 10), 1: [3, 4], 3: [29]})
    X2 = _pattern(4, 30, {0: range(10, 20), 1: [5, 6], 3: [0]})
    assert X1.nnz == X2.nnz and np.array_equal(X1.indptr, X2.indptr)
    mf = MatrixFactorization(n_components=3, loss=loss, random_state=0)
    mf.partial_fit(X1)
    mf.partial_fit(X2)
    mf.partial_fit(X2)  # the same matrix again adds nothing
    ids, _ = mf.recommend([0, 1, 2, 3], n=30)
    for u in range(4):
        seen = set(X1[u].indices) | set(X2[u].indices)
        got = [i for i in ids[u] if i >= 0]
        assert not seen & set(got), (u, seen & set(got))
        assert sorted(got) == sorted(set(range(30)) - seen)   # every other item, once
    all_ids, _ = mf.recommend([0], n=30, exclude_seen=False)
    assert sorted(all_ids[0]) == list(range(30))


def test_later_partial_fit_interactions_are_not_bpr_negatives(monkeypatch):
    n_items = 1000
    X1 = _pattern(3, n_items, {0: range(0, 10), 1: range(500, 520), 2: [7]})
    X2 = _pattern(3, n_items, {0: range(10, 50), 1: range(520, 560), 2: [8]})
    seen = [set(X1[u].indices) | set(X2[u].indices) for u in range(3)]
    mf = MatrixFactorization(n_components=3, loss="bpr", batch_size=16, random_state=0)
    mf.partial_fit(X1)
    drawn = []
    kernel = _mf._mf_kernel.mf_bpr_batch

    def spy(U, V, users, pos, neg, *args):
        drawn.append((users.copy(), neg.copy()))
        return kernel(U, V, users, pos, neg, *args)

    monkeypatch.setattr(_mf._mf_kernel, "mf_bpr_batch", spy)
    for _ in range(20):
        mf.partial_fit(X2)
    users = np.concatenate([u for u, _ in drawn])
    negs = np.concatenate([n for _, n in drawn])
    assert users.shape[0] == 20 * X2.nnz
    # a uniform draw would hit the second matrix's items of user 0 or 1 one time in 25
    hits = [int(n) in seen[int(u)] for u, n in zip(users, negs)]
    assert sum(hits) == 0
    # and the sampler itself, for many users at once
    u = np.repeat(np.arange(3), 3000).astype(np.int64)
    neg = mf._sample_negatives(u, u.shape[0])
    assert not any(int(n) in seen[int(x)] for x, n in zip(u, neg))


# =========================================================================== metrics: ids


def test_padding_and_out_of_range_ids_are_never_hits():
    # row 0 holds the last item and row 2 the first: a -1 in row 1 read as "the item before
    # 0" would hit row 0's last item, an id n_items in row 1 would hit row 2's item 0, and a
    # -1 replaced by 0 would hit row 1's own item 0
    n = 5
    T = sp.csr_matrix(np.array([[0, 0, 0, 0, 1],
                                [1, 0, 0, 0, 0],
                                [1, 0, 0, 0, 0]]))
    padded = np.array([[4, -1, -1],
                       [-1, -1, n],
                       [-1, -1, -1]])
    assert metrics.precision_at_k(T, padded, 3) == pytest.approx((1 / 3 + 0 + 0) / 3)
    assert metrics.recall_at_k(T, padded, 3) == pytest.approx(1 / 3)
    assert metrics.ndcg_at_k(T, padded, 3) == pytest.approx(1 / 3)
    # MF pads with -1 when a user has fewer candidates than n
    X = sp.csr_matrix(np.array([[1.0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]))
    mf = MatrixFactorization(n_components=2, loss="bpr", n_epochs=1, random_state=0).fit(X)
    ids, scores = mf.recommend([0], n=4)
    assert list(ids[0, 1:]) == [-1, -1, -1] and ids[0, 0] == 3
    truth = sp.csr_matrix(np.array([[1, 1, 1, 0]]))   # everything but item 3
    for metric in (metrics.precision_at_k, metrics.recall_at_k, metrics.ndcg_at_k):
        assert metric(truth, ids, 4) == 0.0


def test_repeated_recommended_ids_count_once():
    T = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 1, 0]]))
    rec = np.array([[1, 1, 1], [2, 3, 2]])
    # user 0: one hit (item 1 at rank 1); user 1: one hit (item 2 at rank 1), not two
    assert metrics.precision_at_k(T, rec, 3) == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert metrics.recall_at_k(T, rec, 3) == pytest.approx((1.0 + 0.5) / 2)
    idcg1 = 1 + 1 / np.log2(3)
    assert metrics.ndcg_at_k(T, rec, 3) == pytest.approx((1.0 + 1 / idcg1) / 2)
    # whatever the lists hold, every metric stays within [0, 1]
    rng = np.random.default_rng(0)
    T = sp.random(40, 8, density=0.3, random_state=0, format="csr")
    for _ in range(20):
        rec = rng.integers(-1, 9, size=(40, 6))
        for metric in (metrics.precision_at_k, metrics.recall_at_k, metrics.ndcg_at_k):
            assert 0.0 <= metric(T, rec, 6) <= 1.0
    # a repeat after the first hit changes nothing, wherever it is
    assert metrics.ndcg_at_k(T, np.tile([[0, 1, 2, 0, 1, 2]], (40, 1)), 6) == \
        pytest.approx(metrics.ndcg_at_k(T, np.tile([[0, 1, 2, -1, -1, -1]], (40, 1)), 6))


def test_metrics_check_their_sparse_inputs_and_leave_them_alone():
    T = sp.csr_matrix((np.array([1.0, 0.0, 1.0]), np.array([2, 1, 0]), np.array([0, 2, 3])),
                      shape=(2, 3))  # unsorted, with an explicit zero
    before = (T.data.copy(), T.indices.copy(), T.indptr.copy())
    rec = np.array([[2, 1], [0, 1]])
    assert metrics.precision_at_k(T, rec, 2) == pytest.approx(0.5)   # the 0 is not relevant
    E = sp.csr_matrix((np.array([1.0]), np.array([0]), np.array([0, 1, 1])), shape=(2, 3))
    assert metrics.auc_score(T, np.array([[0.0, 0.5, 1.0], [1.0, 0.0, 0.0]]),
                             exclude=E) == pytest.approx(1.0)
    for a, b in zip(before, (T.data, T.indices, T.indptr)):
        assert np.array_equal(a, b)
    # duplicates are summed before relevance: 1 + (-1) stored twice is no relevant item
    D = sp.coo_matrix((np.array([1.0, -1.0, 1.0]), (np.array([0, 0, 1]), np.array([2, 2, 0]))),
                      shape=(2, 3))
    assert metrics.recall_at_k(D, rec, 2) == pytest.approx(1.0)  # only user 1 counts
    # data longer than indptr says is ignored
    L = sp.csr_matrix((np.array([1.0, 1.0, 1.0]), np.array([2, 0, 1]), np.array([0, 1, 2])),
                      shape=(2, 3))
    assert L.nnz == 2
    assert metrics.recall_at_k(L, rec, 2) == pytest.approx(1.0)


def test_fm_sample_weights_count_only_relative_to_each_other():
    """Weights are rescaled by a power of two before training: any common scale gives the same
    bits, and weights near the float64 limit train like ordinary ones."""
    rng = np.random.default_rng(3)
    X = sp.random(120, 15, density=0.3, format="csr", random_state=3)
    y = rng.normal(size=120)
    sw = rng.uniform(0.5, 2.0, size=120)
    tables = []
    for scale in (1.0, 1024.0, 2.0 ** 900):
        m = FMRegressor(n_components=3, n_epochs=2, random_state=0)
        m.fit(X, y, sample_weight=sw * scale)
        tables.append(m.table_.copy())
    np.testing.assert_array_equal(tables[0], tables[1])
    np.testing.assert_array_equal(tables[0], tables[2])
