"""The models' trusted step (``Optimizer._step_trusted``) against the public ``step``.

A gradient of unique in-range rows, applied with ``nonfinite="ignore"``, must give bitwise
the same parameters, state, counters and learning rate through either path.
"""
import pickle

import numpy as np
import pytest

import sparseopt as so
from sparseopt.optim import make_optimizer

NAMES = ("adam", "adagrad", "rmsprop", "sgd")


def _pair(name, dtype, width, **fixed):
    rng = np.random.default_rng(0)
    W0 = rng.normal(size=(50, width)).astype(dtype)
    A, B = W0.copy(), W0.copy()
    kw = dict(nonfinite="ignore", **fixed)
    if name == "sgd":
        kw = dict(nonfinite="ignore")
    return (A, make_optimizer(name, {"coef": A}, 0.05, 1, None, **kw),
            B, make_optimizer(name, {"coef": B}, 0.05, 1, None, **kw))


def _grads(dtype, width, n_steps, seed=1, nonfinite=False):
    rng = np.random.default_rng(seed)
    for s in range(n_steps):
        k = int(rng.integers(0, 20))
        rows = rng.choice(50, size=k, replace=False).astype(np.int64)  # unique, any order
        G = rng.normal(size=(k, width)).astype(dtype)
        if nonfinite and k > 2:
            G[0, 0] = np.nan
            G[1, -1] = np.inf
        yield rows, G, 0.05 / (1.0 + 0.1 * s)


def _assert_same(A, a, B, b):
    assert np.array_equal(A, B, equal_nan=True)
    sa, sb = a.state["coef"], b.state["coef"]
    assert sa.keys() == sb.keys()
    for key in sa:
        if isinstance(sa[key], np.ndarray):
            assert np.array_equal(sa[key], sb[key], equal_nan=True), key
        else:
            assert sa[key] == sb[key], key
    assert a.param_groups[0]["lr"] == b.param_groups[0]["lr"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("width", [1, 3])
def test_trusted_step_is_the_public_step(name, dtype, width):
    A, a, B, b = _pair(name, dtype, width)
    b._begin_trusted()
    for rows, G, lr in _grads(dtype, width, 25):
        a.lr = lr
        a.step([so.RowGrad(rows, G)])
        b._step_trusted(rows, G.copy(), lr)
        _assert_same(A, a, B, b)
    assert b.state["coef"]["step"] == 25


@pytest.mark.parametrize("name", NAMES)
def test_trusted_step_applies_nonfinite_rows_as_the_models_setting_does(name):
    A, a, B, b = _pair(name, np.float64, 2)
    for rows, G, lr in _grads(np.float64, 2, 10, seed=3, nonfinite=True):
        a.lr = lr
        a.step([so.RowGrad(rows, G)])
        b._step_trusted(rows, G.copy(), lr)  # without _begin_trusted: it checks on first use
    _assert_same(A, a, B, b)
    assert np.isnan(A).any()


def test_trusted_step_sees_changed_hyper_parameters_and_checks_lr():
    A, a, B, b = _pair("adagrad", np.float64, 2)
    steps = list(_grads(np.float64, 2, 6, seed=5))
    b._begin_trusted()
    for s, (rows, G, lr) in enumerate(steps):
        if s == 3:
            for opt in (a, b):
                opt.param_groups[0]["eps"] = 1e-3
                opt.param_groups[0]["lr_decay"] = 0.5
        a.lr = lr
        a.step([so.RowGrad(rows, G)])
        b._step_trusted(rows, G.copy(), lr)
        _assert_same(A, a, B, b)
    before = B.copy()
    with pytest.raises(ValueError, match="lr must be"):
        b._step_trusted(steps[0][0], steps[0][1], float("nan"))
    b.param_groups[0]["lr_decay"] = -1.0
    with pytest.raises(ValueError, match="lr_decay"):
        b._step_trusted(steps[0][0], steps[0][1], 0.1)
    assert np.array_equal(B, before) and b.state["coef"]["step"] == 6


def test_optimizer_pickles_after_trusted_steps():
    A, a, B, b = _pair("adam", np.float64, 2)
    for rows, G, lr in _grads(np.float64, 2, 5):
        b._step_trusted(rows, G, lr)
    c = pickle.loads(pickle.dumps(b))
    rows, G, lr = next(_grads(np.float64, 2, 1, seed=9))
    b._step_trusted(rows, G, lr)
    c.lr = lr
    c.step([so.RowGrad(rows, G)])
    assert np.array_equal(b.params[0], c.params[0])
