"""scikit-learn's parameters keep scikit-learn's meaning (``docs/semantics.md``, "Estimators").

* plain SGD with ``batch_size=1`` retraces scikit-learn's SGD (every schedule, L2 and L1,
  hinge and log-loss, the 'adaptive' stopping rule);
* ``alpha`` is on scikit-learn's objective: L1 gives comparable sparsity with every optimizer,
  and the objective ``tol`` watches falls while the loss falls;
* ``class_weight='balanced'`` works as scikit-learn's on an imbalanced problem;
* ``n_jobs`` is the thread count when ``n_threads`` is None (joblib's convention).
"""
from __future__ import annotations

import contextlib
import io
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import SGDClassifier as SkClassifier  # noqa: E402
from sklearn.linear_model import SGDRegressor as SkRegressor  # noqa: E402
from sklearn.metrics import balanced_accuracy_score  # noqa: E402

from sparseopt import _validation as V  # noqa: E402
from sparseopt.linear_model import SGDClassifier, SGDRegressor  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OPTIMIZERS = ["adagrad", "adam", "rmsprop", "sgd"]


def _dense_problem():
    X, y = make_classification(600, 12, n_informative=6, random_state=0)
    return X, y


def _text_problem(seed=1):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_text import make_text_data
    finally:
        sys.path.pop(0)
    return make_text_data(6000, n_features=2**14, seed=seed)


# --------------------------------------------------------------------------- plain SGD

CASES = [(loss, penalty, alpha, schedule)
         for loss in ("hinge", "log_loss")
         for penalty, alpha in (("l2", 1e-4), ("l2", 1e-2), ("l1", 1e-3))
         for schedule in ("optimal", "constant", "invscaling", "adaptive")
         # log-loss with 'optimal' at a small alpha starts at a rate of alpha**-0.25 (10 at
         # 1e-4): a chaotic phase in which the last bits of the margins, summed in another
         # order here, grow into visible differences
         if not (loss == "log_loss" and schedule == "optimal" and alpha < 1e-2)]


@pytest.mark.parametrize("loss,penalty,alpha,schedule", CASES, ids=lambda v: str(v))
def test_plain_sgd_with_batches_of_one_is_scikit_learns(loss, penalty, alpha, schedule):
    """Same data in the same order (shuffle=False), dense X (scikit-learn damps the
    intercept's steps on sparse X): the coefficients agree to rounding."""
    X, y = _dense_problem()
    kw = dict(loss=loss, penalty=penalty, alpha=alpha, learning_rate=schedule, eta0=0.01,
              shuffle=False, max_iter=8, tol=None)
    theirs = SkClassifier(**kw).fit(X, y)
    ours = SGDClassifier(optimizer="sgd", batch_size=1, **kw).fit(X, y)
    scale = np.abs(theirs.coef_).max()
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ours.coef_ == 0, theirs.coef_ == 0)


@pytest.mark.parametrize("tol,patience", [(10.0, 1), (10.0, 3), (1e-3, 2)])
def test_adaptive_schedule_stops_as_scikit_learn(tol, patience):
    """'adaptive' divides the rate by 5 when ``tol`` is not met for ``n_iter_no_change``
    epochs and stops once it is below 1e-6: the same epochs and model as scikit-learn's
    (with tol=10 nothing improves enough: 1 + 6 divisions of 0.01 ... + the stop)."""
    X, y = _dense_problem()
    kw = dict(loss="hinge", learning_rate="adaptive", eta0=0.01, tol=tol,
              n_iter_no_change=patience, shuffle=False, max_iter=300, alpha=1e-4)
    theirs = SkClassifier(**kw).fit(X, y)
    ours = SGDClassifier(optimizer="sgd", batch_size=1, **kw).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    if tol == 10.0:
        assert ours.n_iter_ == 1 + 7 * patience
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=0,
                               atol=1e-10 * np.abs(theirs.coef_).max())


def test_regressor_defaults_retrace_scikit_learn():
    """SGDRegressor's schedule defaults ('invscaling', eta0=0.01, power_t=0.25) with plain
    SGD, batches of one and scikit-learn's alpha are scikit-learn's SGDRegressor."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6))
    y = X @ np.linspace(-2, 2, 6) + 0.5 + 0.1 * rng.normal(size=400)
    kw = dict(shuffle=False, max_iter=6, tol=None, alpha=1e-4)
    theirs = SkRegressor(**kw).fit(X, y)
    ours = SGDRegressor(optimizer="sgd", batch_size=1, **kw).fit(X, y)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-10)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=1e-10)


# --------------------------------------------------------------------------- alpha

@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_l1_sparsity_is_comparable_to_scikit_learn(optimizer):
    """The same alpha gives about as many non-zero coefficients as scikit-learn, far below
    the number of features, whatever the optimizer (the penalty moves each coefficient on the
    scale the optimizer moves it, and its L1 part is scikit-learn's cumulative penalty)."""
    X, y = _text_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = SkClassifier(loss="log_loss", penalty="l1", alpha=1e-3,
                              random_state=0).fit(X, y)
        ours = SGDClassifier(loss="log_loss", penalty="l1", alpha=1e-3, optimizer=optimizer,
                             random_state=0).fit(X, y)
    n_theirs, n_ours = np.count_nonzero(theirs.coef_), np.count_nonzero(ours.coef_)
    assert 0 < n_theirs < X.shape[1] / 100
    assert n_theirs / 2 <= n_ours <= 2 * n_theirs, (n_ours, n_theirs)


def _verbose_fit(est, X, y):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        est.fit(X, y)
    out = buf.getvalue()
    return ([float(v) for v in re.findall(r"Avg\. loss: (\S+), Objective", out)],
            [float(v) for v in re.findall(r"Objective: (\S+)", out)])


@pytest.mark.parametrize("optimizer", ["adagrad", "sgd"])
@pytest.mark.parametrize("penalty,alpha", [("l2", 1e-4), ("l1", 1e-3)])
def test_objective_falls_with_the_loss(optimizer, penalty, alpha):
    """The objective ``tol`` watches (printed by ``verbose``) falls while the loss falls, and
    ``tol`` ends training before ``max_iter``."""
    X, y = _text_problem()
    loss, objective = _verbose_fit(SGDClassifier(
        loss="log_loss", penalty=penalty, alpha=alpha, optimizer=optimizer, tol=None,
        max_iter=12, verbose=1, random_state=0), X, y)
    assert len(objective) == 12
    assert objective[-1] < objective[2] < objective[0] and loss[-1] < loss[0]
    est = SGDClassifier(loss="log_loss", penalty=penalty, alpha=alpha, optimizer=optimizer,
                        random_state=0).fit(X, y)
    assert est.n_iter_ < est.max_iter


# --------------------------------------------------------------------------- class weights

def test_balanced_class_weight_as_scikit_learn():
    """On a problem with 4% positives, 'balanced' weights lift the balanced accuracy as
    scikit-learn's do, with the default optimizer and with plain SGD."""
    X, y = make_classification(6000, 30, n_informative=8, weights=[0.96], flip_y=0.01,
                               random_state=3)
    Xtr, ytr, Xte, yte = X[:4000], y[:4000], X[4000:], y[4000:]
    theirs = SkClassifier(class_weight="balanced", random_state=0).fit(Xtr, ytr)
    ref = balanced_accuracy_score(yte, theirs.predict(Xte))
    plain = balanced_accuracy_score(yte, SGDClassifier(random_state=0).fit(Xtr, ytr)
                                    .predict(Xte))
    for optimizer in ("adagrad", "sgd"):
        ours = SGDClassifier(class_weight="balanced", optimizer=optimizer,
                             random_state=0).fit(Xtr, ytr)
        got = balanced_accuracy_score(yte, ours.predict(Xte))
        assert got > ref - 0.03 and got > plain + 0.05, (optimizer, got, ref, plain)


# --------------------------------------------------------------------------- threads

def test_n_jobs_is_the_thread_count_unless_n_threads_is_set():
    cores = V._cores()
    assert V.check_n_jobs(None) is None
    assert V.check_n_jobs(1) == 1
    assert V.check_n_jobs(-1) == min(cores, V.max_n_threads())
    assert V.check_n_jobs(-cores - 5) == 1
    for bad in (0, 1.0, True, "2"):
        with pytest.raises(ValueError, match="n_jobs"):
            V.check_n_jobs(bad)
    assert SGDClassifier(n_jobs=1)._check_params()["n_threads"] == 1
    assert SGDClassifier(n_jobs=-1)._check_params()["n_threads"] == V.check_n_jobs(-1)
    assert SGDClassifier(n_jobs=-1, n_threads=2)._check_params()["n_threads"] == 2
    assert SGDClassifier()._check_params()["n_threads"] is None
    assert "n_jobs" in SGDClassifier().get_params()
    assert "n_jobs" not in SGDRegressor().get_params()  # as in scikit-learn


def test_parameters_are_scikit_learns():
    """Every parameter of scikit-learn's estimators exists here with its default, except the
    documented ones (``alpha`` 5e-6 and ``tol`` 1e-2, chosen on real data)."""
    for ours, theirs in ((SGDClassifier(), SkClassifier()), (SGDRegressor(), SkRegressor())):
        mine, sk = ours.get_params(), theirs.get_params()
        assert set(sk) <= set(mine), set(sk) - set(mine)
        differ = {k for k in sk if mine[k] != sk[k]}
        assert differ == {"alpha", "tol"}, differ
        assert (mine["alpha"], sk["alpha"]) == (5e-6, 1e-4)
        assert (mine["tol"], sk["tol"]) == (1e-2, 1e-3)
        assert ours.set_params(optimizer="sgd")._check_params()["eta0"] == sk["eta0"]
