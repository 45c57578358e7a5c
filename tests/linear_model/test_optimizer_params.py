"""``optimizer_params`` of SGDClassifier / SGDRegressor: the optimizer's further options
(bfloat16 moments, row-wise state, ...), checked at fit time with scikit-learn's ValueErrors."""
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from sparseopt.linear_model import SGDClassifier, SGDRegressor


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the short fits
        yield


def _data(n=300, d=6, seed=0, classes=2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) if classes == 2 else \
        np.digitize(X[:, 0], [-0.5, 0.5])
    return X, y


def test_round_trips_through_get_params_and_clone():
    kw = {"state_dtype": "bfloat16", "rounding": "stochastic"}
    m = SGDClassifier(optimizer="adam", optimizer_params=kw)
    assert m.get_params()["optimizer_params"] == kw
    c = clone(m)
    assert c.get_params()["optimizer_params"] == kw
    r = SGDRegressor(optimizer="rmsprop").set_params(optimizer_params={"rowwise": True})
    assert r.optimizer_params == {"rowwise": True}
    assert SGDRegressor().get_params()["optimizer_params"] is None


def test_bfloat16_moments_reach_the_optimizer():
    X, y = _data()
    m = SGDClassifier(optimizer="adam", penalty=None, max_iter=3, random_state=0,
                      warm_start=True,
                      optimizer_params={"state_dtype": "bfloat16", "rounding": "stochastic"})
    m.fit(X, y)
    st = m.optimizer_.state["coef"]
    assert st["exp_avg"].dtype == np.uint16 and st["exp_avg_sq"].dtype == np.uint16
    assert m.score(X, y) > 0.9
    again = clone(m).fit(X, y)
    np.testing.assert_array_equal(again.coef_, m.coef_)  # seeded rounding: reproducible


@pytest.mark.parametrize("optimizer,kw,name,shape", [
    ("adam", {"rowwise": "v"}, "exp_avg_sq", (7,)),
    ("rmsprop", {"rowwise": True}, "square_avg", (7,)),
    ("adagrad", {"rowwise": True}, "sum", (7,)),
])
def test_rowwise_state_reaches_a_multiclass_table(optimizer, kw, name, shape):
    X, y = _data(classes=3)
    m = SGDClassifier(optimizer=optimizer, penalty=None, max_iter=3, random_state=0,
                      warm_start=True, optimizer_params=kw).fit(X, y)
    assert m.optimizer_.state["coef"][name].shape == shape  # 6 features + intercept, 3 classes
    assert m.score(X, y) > 0.6


def test_options_change_the_fit():
    X, y = _data()
    kw = dict(optimizer="adam", penalty=None, max_iter=3, random_state=0)
    base = SGDClassifier(**kw).fit(X, y).coef_
    ams = SGDClassifier(optimizer_params={"amsgrad": True, "lazy": "decay"}, **kw).fit(X, y)
    assert not np.array_equal(base, ams.coef_)
    same = SGDClassifier(optimizer_params={}, **kw).fit(X, y).coef_
    np.testing.assert_array_equal(base, same)


@pytest.mark.parametrize("optimizer,kw,match", [
    ("adam", {"betas": (0.9, 0.99)}, "'betas': it is decided by beta1 and beta2"),
    ("adam", {"eps": 1e-6}, "'eps': it is decided by eps"),
    ("adagrad", {"lr": 0.1}, "'lr': it is decided by eta0"),
    ("adam", {"n_threads": 2}, "'n_threads'"),
    ("adam", {"dtype": "bfloat16"}, "'dtype'"),
    ("rmsprop", {"alpha": 0.9}, "'alpha': it is decided by rho"),
    ("ftrl", {"l1": 0.1}, "'l1': it is decided by alpha, l1_ratio and penalty"),
    ("ftrl", {"convention": "tensorflow"}, "'convention'"),
    ("adam", {"momentum": 0.9}, "unknown key 'momentum' for optimizer='adam'"),
    ("adagrad", {"rowwize": True}, "unknown key 'rowwize'"),
    ("sgd", {"rowwise": True}, "optimizer='sgd' takes no optimizer_params"),
    ("adam", [("amsgrad", True)], "must be a dict"),
    ("adam", {1: True}, "keys must be strings"),
])
def test_bad_optimizer_params_are_refused_before_training(optimizer, kw, match):
    X, y = _data()
    m = SGDClassifier(optimizer=optimizer, penalty=None, optimizer_params=kw)
    with pytest.raises(ValueError, match=match):
        m.fit(X, y)
    assert not hasattr(m, "coef_")


@pytest.mark.parametrize("optimizer,kw", [
    ("adam", {"rowwise": "v"}), ("adam", {"state_dtype": "bfloat16"}),
    ("adam", {"amsgrad": True}), ("adam", {"bias_correction": "global"}),
    ("rmsprop", {"momentum": 0.9}), ("adagrad", {"lr_decay": 0.1}),
])
def test_options_that_change_what_the_lazy_penalty_reads_need_no_penalty(optimizer, kw):
    X, y = _data()
    with pytest.raises(ValueError, match="cannot be combined with an L1/L2 penalty"):
        SGDClassifier(optimizer=optimizer, alpha=1e-3, optimizer_params=kw).fit(X, y)
    SGDClassifier(optimizer=optimizer, penalty=None, max_iter=2,
                  optimizer_params=kw).fit(X, y)
    SGDClassifier(optimizer=optimizer, alpha=0.0, learning_rate="constant", max_iter=2,
                  optimizer_params=kw).fit(X, y)


def test_penalty_keeps_the_options_that_leave_its_reads_alone():
    X, y = _data()
    m = SGDRegressor(optimizer="adagrad", alpha=1e-3, max_iter=2, warm_start=True,
                     optimizer_params={"initial_accumulator_value": 0.1,
                                       "weight_decay": 0.01}).fit(X, X[:, 0])
    assert m.optimizer_.param_groups[0]["initial_accumulator_value"] == 0.1
    f = SGDRegressor(optimizer="ftrl", penalty="l1", max_iter=2, warm_start=True,
                     optimizer_params={"lr_power": -0.3}).fit(X, X[:, 0])
    assert f.optimizer_.param_groups[0]["lr_power"] == -0.3


def test_partial_fit_with_other_optimizer_params_starts_a_new_optimizer():
    X, y = _data()
    m = SGDRegressor(optimizer="rmsprop", penalty=None, optimizer_params={"rowwise": False})
    m.partial_fit(X, X[:, 0])
    first = m.optimizer_
    m.partial_fit(X, X[:, 0])
    assert m.optimizer_ is first  # unchanged settings: the run goes on
    m.set_params(optimizer_params={"momentum": 0.5})
    m.partial_fit(X, X[:, 0])
    assert m.optimizer_ is not first
    assert m.optimizer_.param_groups[0]["momentum"] == 0.5
