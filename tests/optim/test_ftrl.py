"""FTRL-Proximal: worked examples written out by hand from TensorFlow's documented update and
from the paper's Algorithm 1, the pitfalls other implementations fall into, exact sparsity,
and the estimators' optimizer="ftrl"."""
from __future__ import annotations

import math

import numpy as np
import pytest

import sparseopt as so
from sparseopt import _reference as ref
from sparseopt.linear_model import SGDClassifier, SGDRegressor


def _one(opt_kw, grads, w0=0.0, dtype=np.float64):
    """Run Ftrl on one coordinate (row 1 of a 3-row table) through ``grads``; the weights
    after each step."""
    w = np.array([0.0, w0, 0.0], dtype=dtype)
    opt = so.Ftrl([w], **opt_kw)
    out = []
    for g in grads:
        opt.step([so.RowGrad([1], [g])])
        out.append(float(w[1]))
    return out, opt


# --------------------------------------------------------------------------- worked examples


def test_tensorflow_two_steps_by_hand():
    """SparseApplyFtrlV2 as TensorFlow documents it, lr=0.5, l1=0.1, l2=0.2, accumulator 0.1,
    the variable starting at 0.4, gradients 0.3 then -0.5:

        accum_new = accum + g*g
        linear   += g - (sqrt(accum_new) - sqrt(accum)) / lr * var
        quadratic = sqrt(accum_new) / lr + 2*l2
        var       = (sign(linear)*l1 - linear) / quadratic  if |linear| > l1 else 0
    """
    # step 1
    acc1 = 0.1 + 0.3 * 0.3                                   # 0.19
    lin1 = 0.0 + (0.3 - (math.sqrt(acc1) - math.sqrt(0.1)) / 0.5 * 0.4)
    var1 = (0.1 - lin1) / (math.sqrt(acc1) / 0.5 + 2 * 0.2)  # lin1 = 0.2043 > l1
    # step 2
    acc2 = acc1 + 0.25                                       # 0.44
    lin2 = lin1 + (-0.5 - (math.sqrt(acc2) - math.sqrt(acc1)) / 0.5 * var1)
    var2 = (-0.1 - lin2) / (math.sqrt(acc2) / 0.5 + 2 * 0.2)  # lin2 = -0.2584 < -l1
    # the same numbers, rounded by hand
    assert (round(lin1, 6), round(var1, 6)) == (0.20427, -0.081988)
    assert (round(lin2, 6), round(var2, 6)) == (-0.258436, 0.091759)
    ws, opt = _one(dict(lr=0.5, l1=0.1, l2=0.2, preset="tensorflow"), [0.3, -0.5], w0=0.4)
    assert ws == pytest.approx([var1, var2], rel=1e-14)
    st = opt.state[0]
    assert st["n"][1] == pytest.approx(acc2, rel=1e-15)
    assert st["z"][1] == pytest.approx(lin2, rel=1e-14)
    assert st["n"][0] == 0.1 and st["z"][0] == 0.0  # untouched rows: their start


def test_tensorflow_beta_and_shrinkage_by_hand():
    """tf.keras Ftrl folds beta into l2 as l2 + beta/(2 lr); l2_shrinkage enters the gradient
    as 2*l2_shrinkage*var (and not the accumulator)."""
    lr, l1, l2, shr, beta = 0.2, 0.05, 0.1, 0.3, 0.4
    w0, g = -0.7, 0.25
    acc = 0.1 + g * g
    g_s = g + 2 * shr * w0
    lin = g_s - (math.sqrt(acc) - math.sqrt(0.1)) / lr * w0
    quad = math.sqrt(acc) / lr + 2 * (l2 + beta / (2 * lr))
    var = (math.copysign(l1, lin) - lin) / quad if abs(lin) > l1 else 0.0
    ws, opt = _one(dict(lr=lr, l1=l1, l2=l2, l2_shrinkage=shr, beta=beta), [g], w0=w0)
    assert var != 0.0
    assert ws[0] == pytest.approx(var, rel=1e-14)
    assert opt.state[0]["n"][1] == pytest.approx(acc, rel=1e-15)  # g**2, not g_s**2


def test_paper_two_steps_by_hand():
    """Algorithm 1 of McMahan et al. (2013) as Vowpal Wabbit's --ftrl runs it, alpha=0.1,
    beta=1, lambda1=0.05, lambda2=0.3, n from 0, w from 0, gradients 0.3 then -0.2:

        sigma = (sqrt(n + g^2) - sqrt(n)) / alpha;  z += g - sigma*w;  n += g^2
        w = -(z - sign(z)*lambda1) / ((beta + sqrt(n))/alpha + lambda2)  if |z| > lambda1
    """
    # step 1: sigma = 3, z = 0.3, w = (0.05 - 0.3) / ((1 + 0.3)/0.1 + 0.3) = -0.25 / 13.3
    w1 = -0.25 / 13.3
    # step 2: n = 0.13, sigma = (sqrt(0.13) - 0.3)/0.1, z = 0.3 + (-0.2 - sigma*w1)
    sigma2 = (math.sqrt(0.13) - 0.3) / 0.1
    z2 = 0.3 + (-0.2 - sigma2 * w1)
    w2 = (0.05 - z2) / ((1 + math.sqrt(0.13)) / 0.1 + 0.3)
    assert (round(w1, 6), round(z2, 6), round(w2, 6)) == (-0.018797, 0.111383, -0.004414)
    ws, opt = _one(dict(lr=0.1, l1=0.05, l2=0.3, preset="vw", beta=1.0), [0.3, -0.2])
    assert ws == pytest.approx([w1, w2], rel=1e-13)
    assert opt.state[0]["z"][1] == pytest.approx(z2, rel=1e-14)


def test_l1_gives_exact_zeros_and_a_weight_off_zero_at_the_threshold():
    # |z| = 0.3 <= l1 = 0.3: exactly 0; a hair above: a small negative weight
    assert _one(dict(lr=0.5, l1=0.3), [0.3])[0] == [0.0]
    (w,), _ = _one(dict(lr=0.5, l1=0.2999), [0.3])
    assert -1e-3 < w < 0


# --------------------------------------------------------------------------- pitfalls


def test_sigma_sign_without_penalty_ftrl_is_adagrad():
    """sigma = (n_new**p - n_old**p) / lr, subtracted as sigma*w: with no penalty, beta = 0 and
    n from 0, FTRL-Proximal is exactly Adagrad without eps, w <- w - lr*g/sqrt(n_new), from
    any starting w. The other sign (a common slip: sqrt(n_old) - sqrt(n_new), or z += sigma*w)
    drifts away at once."""
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(20, 3))
    grads = [rng.normal(size=(20, 3)) for _ in range(6)]
    w = w0.copy()
    opt = so.Ftrl([w], lr=0.3, initial_accumulator_value=0.0)
    a, n = w0.copy(), np.zeros_like(w0)
    wrong_w, wrong_z, wrong_n = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for g in grads:
        opt.step([g])
        n += g * g
        a -= 0.3 * g / np.sqrt(n)
        # the wrong sign of sigma
        n_new = wrong_n + g * g
        sigma_bad = (np.sqrt(wrong_n) - np.sqrt(n_new)) / 0.3
        wrong_z += g - sigma_bad * wrong_w
        wrong_n = n_new
        wrong_w = -wrong_z * 0.3 / np.sqrt(wrong_n)
    np.testing.assert_allclose(w, a, rtol=1e-12, atol=1e-12)
    assert np.abs(wrong_w - a).max() > 0.1


def test_l2_is_counted_once_with_the_convention_factor():
    """TensorFlow's l2 is the coefficient of l2*w**2: 2*l2 in the denominator and nowhere
    else. So TF's l2=c is the paper's lambda2=2c (with beta folded the same way), and
    counting it twice (2*l2 in the denominator *and* 2*l2*w in the gradient, as some ports
    do) gives other weights."""
    rng = np.random.default_rng(4)
    w0 = rng.normal(size=(10, 4))
    grads = [rng.normal(size=(10, 4)) for _ in range(5)]
    tf_w, paper_w = w0.copy(), w0.copy()
    tf = so.Ftrl([tf_w], lr=0.2, l1=0.05, l2=0.15, beta=0.3)
    paper = so.Ftrl([paper_w], lr=0.2, l1=0.05, l2=0.3, beta=0.3, convention="paper",
                    initial_accumulator_value=0.1)
    twice_w = w0.copy()
    twice = ref.Ftrl([twice_w], lr=0.2, l1=0.05, l2=0.15, beta=0.3, l2_shrinkage=0.15)
    for g in grads:
        tf.step([g])
        paper.step([g])
        twice.step([g])  # l2_shrinkage = l2 adds exactly the second count, 2*l2*w
    np.testing.assert_allclose(tf_w, paper_w, rtol=1e-12, atol=1e-13)
    assert np.abs(twice_w - tf_w).max() > 1e-3


def test_lr_power_zero_is_a_constant_rate():
    """lr_power = 0: n**0 = 1, so sigma = 0 and the denominator is (1 + beta)/lr (paper) -- a
    dual-averaging step with a constant rate, no per-coordinate scaling."""
    ws, _ = _one(dict(lr=0.5, lr_power=0.0, convention="paper", initial_accumulator_value=0.0),
                 [0.3, 0.1, -1.0], w0=2.0)
    np.testing.assert_allclose(ws, [-0.15, -0.2, 0.3], rtol=1e-15)


def test_zero_denominator_gives_zero_weight():
    """beta = l2 = 0 and n = 0 (no gradient yet): the proximal step has no curvature; the
    coordinate's weight is 0, never inf or NaN, also with l2_shrinkage pulling at it."""
    w = np.array([[1.5, -2.0]])
    opt = so.Ftrl([w], preset="vw", beta=0.0, l2_shrinkage=0.5)
    opt.step([so.RowGrad([0], [[0.0, 0.0]])])
    assert w.tolist() == [[0.0, 0.0]]


def test_untouched_rows_never_change_and_state_is_per_coordinate(dtype):
    rng = np.random.default_rng(5)
    w = rng.normal(size=(50, 7)).astype(dtype)
    before = w.copy()
    opt = so.Ftrl([w], lr=0.1, l1=0.01)
    for _ in range(4):
        opt.step([so.RowGrad([3, 9, 3], rng.normal(size=(3, 7)).astype(dtype))])
    mask = np.ones(50, bool)
    mask[[3, 9]] = False
    assert w[mask].tobytes() == before[mask].tobytes()
    assert (opt.state[0]["n"][mask] == dtype.type(0.1)).all()


def test_free_row_takes_no_penalty():
    """The estimators' intercept row: l1, l2 and l2_shrinkage do not apply to it, in the
    kernel and in the reference alike."""
    rng = np.random.default_rng(6)
    P = rng.normal(size=(5, 2))
    Q = P.copy()
    opt = so.Ftrl([P], lr=0.1, l1=100.0, l2=1.0)
    opt._free_row = 4
    oracle = ref.Ftrl([Q], lr=0.1, l1=100.0, l2=1.0)
    oracle.free_row = 4
    for _ in range(3):
        g = rng.normal(size=(5, 2))
        opt.step([g])
        oracle.step([g])
    assert (P[:4] == 0).all() and (P[4] != 0).all()  # l1 = 100 zeroes every other row
    np.testing.assert_array_equal(P, Q)


# --------------------------------------------------------------------------- hyper-parameters


@pytest.mark.parametrize("kw", [dict(lr=0.0), dict(lr=-1.0), dict(lr=1e-50),
                                dict(lr_power=0.1), dict(l1=-0.1), dict(l2=-1.0),
                                dict(l2_shrinkage=-1.0), dict(beta=-0.5),
                                dict(initial_accumulator_value=-1.0),
                                dict(convention="keras"), dict(l1=float("nan"))])
def test_bad_hyper_parameters_are_refused(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        so.Ftrl([np.zeros(3)], **kw)


def test_bad_hyper_parameter_via_param_groups_changes_nothing():
    w = np.ones(4)
    opt = so.Ftrl([w], lr=0.1)
    opt.step([np.ones(4)])
    snap = w.copy(), opt.state[0]["z"].copy()
    opt.param_groups[0]["lr_power"] = 1.0
    with pytest.raises(ValueError, match="lr_power"):
        opt.step([np.ones(4)])
    assert (w == snap[0]).all() and (opt.state[0]["z"] == snap[1]).all()
    assert opt.state[0]["step"] == 1


def test_negative_accumulator_in_loaded_state_is_refused():
    opt = so.Ftrl([np.ones((3, 2))], lr=0.1)
    opt.step([np.ones((3, 2))])
    sd = opt.state_dict()
    sd["state"][0]["n"] = -np.ones((3, 2))
    with pytest.raises(ValueError, match="'n'"):
        so.Ftrl([np.ones((3, 2))]).load_state_dict(sd)


# --------------------------------------------------------------------------- estimators


def _data(seed=0, n=600, d=60):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    coef = np.zeros(d)
    coef[:5] = rng.normal(size=5) * 2
    y = (X @ coef + 0.5 * rng.normal(size=n) > 0).astype(int)
    return X, y


def test_estimator_l1_gives_exact_zeros_and_l2_none():
    X, y = _data()
    l1 = SGDClassifier(optimizer="ftrl", penalty="l1", alpha=5e-2, random_state=0).fit(X, y)
    l2 = SGDClassifier(optimizer="ftrl", penalty="l2", alpha=1e-2, random_state=0).fit(X, y)
    assert np.count_nonzero(l1.coef_) < 0.5 * l1.coef_.size
    assert np.count_nonzero(l1.coef_[:, :5]) == 5  # the informative features stay
    assert np.count_nonzero(l2.coef_) == l2.coef_.size
    assert l1.score(X, y) > 0.85
    # the intercept takes no penalty: a strong L1 zeroes the coefficients, not it
    shifted = SGDClassifier(optimizer="ftrl", penalty="l1", alpha=10.0,
                            random_state=0).fit(X, np.r_[np.ones(500, int), np.zeros(100, int)])
    assert np.count_nonzero(shifted.coef_) == 0 and shifted.intercept_[0] > 0.5


def test_estimator_alpha_maps_to_growing_ftrl_penalty():
    """optimizer="ftrl" keeps the lazy regulariser out (FTRL applies the penalty) and sets
    FTRL's l1 / l2 to alpha's terms times the steps taken."""
    X, y = _data(1)
    m = SGDClassifier(optimizer="ftrl", penalty="elasticnet", alpha=1e-3, l1_ratio=0.25,
                      random_state=0, warm_start=True, max_iter=2, tol=None).fit(X, y)
    opt = m.optimizer_
    t = opt.state["coef"]["step"]
    assert opt.param_groups[0]["l1"] == pytest.approx(1e-3 * 0.25 * t)
    assert opt.param_groups[0]["l2"] == pytest.approx(1e-3 * 0.75 * t)
    assert opt.param_groups[0]["convention"] == "paper"
    assert m._reg.l1 == 0.0 and m._reg.l2 == 0.0


def test_estimator_regressor_and_partial_fit():
    X, _ = _data(2)
    y = X[:, 0] * 2 - X[:, 1]
    r = SGDRegressor(optimizer="ftrl", penalty="l1", alpha=1e-3, random_state=0).fit(X, y)
    assert r.score(X, y) > 0.9
    c = SGDClassifier(optimizer="ftrl", random_state=0)
    Xc, yc = _data(3)
    for _ in range(3):
        c.partial_fit(Xc, yc, classes=[0, 1])
    assert c.score(Xc, yc) > 0.8


def test_refresh_recomputes_weights_under_the_current_penalty():
    """_refresh (the estimators' end of epoch): every row that took a non-zero gradient gets
    the weights its z and n give under the current l1 / l2; other rows, z and n unchanged."""
    rng = np.random.default_rng(7)
    w = rng.normal(size=(30, 3))
    opt = so.Ftrl([w], lr=0.2, l1=0.01, initial_accumulator_value=0.0, convention="paper")
    opt.step([so.RowGrad(np.arange(20), rng.normal(size=(20, 3)))])
    z, n, untouched = opt.state[0]["z"].copy(), opt.state[0]["n"].copy(), w[20:].copy()
    opt.param_groups[0]["l1"] = 0.5
    opt._refresh()
    zt, nt = z[:20], n[:20]
    expected = np.where(np.abs(zt) > 0.5, (np.sign(zt) * 0.5 - zt) / (np.sqrt(nt) / 0.2), 0.0)
    np.testing.assert_allclose(w[:20], expected, rtol=1e-14, atol=0)
    assert (w[:20] == 0).any() and (w[20:] == untouched).all()
    assert (opt.state[0]["z"] == z).all() and (opt.state[0]["n"] == n).all()
    assert opt.state[0]["step"] == 1



# ------------------------------------------------------------- the L1 strength (alpha)


def _exact_l1(X, y, n_alpha):
    """L1-penalised logistic regression at C = 1 / (n alpha), solved to convergence by
    scikit-learn's saga (an unpenalised intercept, as the estimators')."""
    import sklearn
    from sklearn.linear_model import LogisticRegression
    major, minor = (int(v) for v in sklearn.__version__.split(".")[:2])
    # scikit-learn 1.8 spells L1 as l1_ratio=1 (penalty= is deprecated there)
    kw = dict(l1_ratio=1.0) if (major, minor) >= (1, 8) else dict(penalty="l1")
    return LogisticRegression(C=1.0 / n_alpha, solver="saga", tol=1e-10, max_iter=100000,
                              **kw).fit(X, y)


def _l1_data(seed=0, n=600, d=40, classes=2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    coef = np.zeros((d, classes - 1))
    coef[:8] = rng.normal(size=(8, classes - 1))
    Z = np.c_[np.zeros(n), X @ coef + rng.normal(size=(n, classes - 1))]
    return X, Z.argmax(axis=1)


@pytest.mark.parametrize("alpha", [0.01, 0.02, 0.04])
def test_estimator_l1_support_is_the_exact_l1_solutions(alpha):
    """alpha means scikit-learn's alpha with FTRL too (its l1 is alpha times the steps, each
    a batch-mean gradient): run to convergence, FTRL's exact zeros are those of the
    L1-penalised logistic regression solved by another method (saga, C = 1 / (n alpha)).
    The exact supports at 0.005, 0.01, 0.02, 0.04 have 25, 17, 11, 8 coefficients, so a
    penalty off by a factor of 2 fails."""
    X, y = _l1_data()
    exact = _exact_l1(X, y, X.shape[0] * alpha)
    support = exact.coef_[0] != 0
    assert 5 <= support.sum() < X.shape[1]
    for batch_size in (32, 600):  # the scale does not depend on the batch size
        m = SGDClassifier(loss="log_loss", optimizer="ftrl", penalty="l1", alpha=alpha,
                          tol=None, max_iter=200, batch_size=batch_size,
                          random_state=0).fit(X, y)
        np.testing.assert_array_equal(m.coef_[0] != 0, support)
        np.testing.assert_allclose(m.coef_[0], exact.coef_[0], atol=0.04)


def test_estimator_l1_sparsity_is_monotone_in_alpha_with_exact_zeros():
    X, y = _l1_data(1)
    nnz = []
    for alpha in [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]:
        m = SGDClassifier(loss="log_loss", optimizer="ftrl", penalty="l1", alpha=alpha,
                          random_state=0).fit(X, y)
        nnz.append(int(np.sum(m.coef_ != 0.0)))  # exact zeros, no threshold
    assert nnz == sorted(nnz, reverse=True) and nnz[0] > nnz[-1], nnz
    assert nnz[-1] < X.shape[1] // 4


@pytest.mark.parametrize("classes", [2, 3])
def test_l1_alpha_max_is_where_the_l1_solution_becomes_zero(classes):
    """l1_alpha_max: the exact L1 solution (saga; multinomial with three classes) is all
    zeros just above it and not just below it, and FTRL's agrees."""
    from sparseopt.linear_model import l1_alpha_max
    X, y = _l1_data(5, n=300, d=10, classes=classes)
    n = X.shape[0]
    amax = l1_alpha_max(X, y)
    assert amax > 0
    for f, zero in ((1.05, True), (0.9, False)):
        assert (np.count_nonzero(_exact_l1(X, y, n * amax * f).coef_) == 0) == zero
        m = SGDClassifier(loss="log_loss", optimizer="ftrl", penalty="l1", alpha=amax * f,
                          tol=None, max_iter=100, random_state=0).fit(X, y)
        assert (np.count_nonzero(m.coef_) == 0) == zero
    # weights count as the estimators count them: integer weights repeat samples
    w = np.arange(n) % 3
    rep = np.repeat(np.arange(n), w)
    assert l1_alpha_max(X, y, sample_weight=w) * n == pytest.approx(
        l1_alpha_max(X[rep], y[rep]) * rep.shape[0], rel=1e-12)


def test_l1_alpha_max_regression_and_refusals():
    from sklearn.linear_model import Lasso
    from sparseopt.linear_model import l1_alpha_max
    rng = np.random.default_rng(6)
    X = rng.normal(size=(200, 6))
    y = X[:, 0] - 2 * X[:, 3] + rng.normal(size=200)
    amax = l1_alpha_max(X, y, loss="squared_error")
    # Lasso's objective is the mean of (y - p)**2 / 2 plus alpha |w|_1, as SGDRegressor's
    assert np.count_nonzero(Lasso(alpha=amax * 1.01, tol=1e-12).fit(X, y).coef_) == 0
    assert np.count_nonzero(Lasso(alpha=amax * 0.95, tol=1e-12).fit(X, y).coef_) > 0
    import scipy.sparse as sp
    assert l1_alpha_max(sp.csr_matrix(X), y, loss="squared_error") == pytest.approx(amax)
    assert l1_alpha_max(X, np.ones(200), loss="squared_error") == 0.0
    with pytest.raises(ValueError, match="loss"):
        l1_alpha_max(X, y, loss="hinge")
    with pytest.raises(ValueError, match="sample_weight"):
        l1_alpha_max(X, y, loss="squared_error", sample_weight=np.ones(3))
    with pytest.raises(ValueError):
        l1_alpha_max(np.full((3, 2), np.nan), [0, 1, 0])
    # a malformed sparse X is refused by the project's structure check, before SciPy reads it
    bad = sp.csr_matrix(X)
    bad.indptr[-1] = 10**6
    with pytest.raises(ValueError, match="malformed"):
        l1_alpha_max(bad, y, loss="squared_error")
