"""Hostile input to the recommenders and their metrics.

Every entry point must refuse malformed sparse matrices, impossible thread counts, tampered
fitted attributes and bad arguments with a Python exception that names the argument, raised
before anything changes; two threads on one model must be serialised. Probes that could crash
the interpreter (a kernel or a SciPy routine reading out of bounds) run in a child process;
the child compares a snapshot of the model's attributes (tables, optimizer state, random
generator) before and after each refused call.
"""
import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sparseopt.datasets import make_ratings

pytest.importorskip("sklearn")
from sparseopt.recommend import FMClassifier, FMRegressor, MatrixFactorization  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# Shared by every child: the models, a snapshot of a model's state and an `expect` helper.
PRELUDE = r'''
import threading
import numpy as np, scipy.sparse as sp
from sparseopt.recommend import MatrixFactorization, FMRegressor, FMClassifier, metrics
from sparseopt.recommend import evaluate
from sparseopt.datasets import make_ratings, make_interactions, holdout_split
from sparseopt.optim._base import Optimizer


def snap(v):
    """Everything a call could change, as comparable bytes (arrays are copied)."""
    if isinstance(v, np.ndarray):
        return ("nd", v.dtype.str, v.shape, v.flags.c_contiguous, v.tobytes())
    if isinstance(v, np.random.Generator):
        return ("rng", repr(v.bit_generator.state))
    if isinstance(v, Optimizer):
        return ("opt", snap(v.state_dict()), tuple(snap(p) for p in v.params))
    if sp.issparse(v):
        c = v.tocoo()
        return ("sparse", v.format, v.shape, snap(c.data), snap(c.row), snap(c.col))
    if isinstance(v, dict):
        return ("dict", tuple((repr(k), snap(x)) for k, x in sorted(v.items(), key=repr)))
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(snap(x) for x in v))
    return ("obj", repr(v))


def expect(exc, words, fn, *models):
    """fn() raises exc with every word of `words` in its message, and leaves `models` as
    they were."""
    before = [snap(vars(m)) for m in models]
    try:
        fn()
    except exc as e:
        msg = str(e)
        for w in words:
            assert w in msg, (w, msg)
    else:
        raise AssertionError(f"no {exc} from {fn}")
    for m, b in zip(models, before):
        assert snap(vars(m)) == b, f"{type(m).__name__} changed by a refused call"


def ratings(n_users=6, n_items=5, seed=0):
    X = sp.random(n_users, n_items, density=0.5, format="csr", random_state=seed)
    X.data[:] = np.arange(1, X.nnz + 1) % 5 + 1.0
    return X


def fm_data(n=40, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.5, format="csr", random_state=seed)
    return X, X @ rng.normal(size=d), rng.permutation(np.arange(n) % 2)


def mf(**kw):
    return MatrixFactorization(n_components=3, n_epochs=2, random_state=0, **kw)


def fm(cls, **kw):
    return cls(n_components=2, n_epochs=2, random_state=0, **kw)
'''


def run_child(code: str, timeout: float = 120) -> str:
    """Run PRELUDE + code in a fresh interpreter; fail on a crash, a hang or an error."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    src = PRELUDE + textwrap.dedent(code) + "\nprint('CHILD-OK')\n"
    try:
        proc = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True,
                              timeout=timeout, cwd=str(ROOT), env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"child still running after {timeout} s")
    assert proc.returncode == 0 and "CHILD-OK" in proc.stdout, (
        f"child exited with {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


# =========================================================================== malformed matrices

# How each probe breaks a valid (6, 5) CSR matrix `X` (in place) and what it returns.
MALFORMED = {
    "column index just past the end": "X.indices[0] = X.shape[1]",
    "column index far past the end": "X.indices[-1] = 10**6",
    "negative column index": "X.indices[0] = -1",
    "decreasing indptr": "X.indptr[2] = X.indptr[4] + 1",
    "indptr not starting at 0": "X.indptr[0] = 1",
    "indptr past the stored entries": "X.indptr[-1] = X.nnz + 7",
    "COO row past the end": "X = X.tocoo(); X.row[0] = X.shape[0]",
    "CSC row index past the end": "X = X.tocsc(); X.indices[0] = X.shape[0]",
    "BSR block column past the end": "X = X.tobsr(blocksize=(1, 1)); X.indices[0] = X.shape[1]",
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_sparse_input_is_refused_everywhere(kind):
    run_child(f"""
def bad(shape=(6, 5)):
    X = sp.random(*shape, density=0.5, format="csr", random_state=1)
    X.data[:] = np.arange(1, X.nnz + 1) % 5 + 1.0
    {MALFORMED[kind]}
    return X

R = ratings()
words = ["malformed"]
for loss in ("squared", "bpr"):
    fresh = mf(loss=loss)
    expect(ValueError, ["X"] + words, lambda: fresh.fit(bad()), fresh)
    fitted = mf(loss=loss).fit(R)
    expect(ValueError, ["X"] + words, lambda: fitted.fit(bad()), fitted)
    expect(ValueError, ["X"] + words, lambda: fitted.partial_fit(bad()), fitted)
    expect(ValueError, ["eval_set"] + words, lambda: fitted.fit(R, eval_set=bad()), fitted)
    expect(ValueError, ["eval_set"] + words, lambda: fitted.partial_fit(R, eval_set=bad()),
           fitted)
    assert fitted.predict([0], [0]).shape == (1,)

Xf, yr, yc = fm_data(n=6)
for cls, y in ((FMRegressor, yr), (FMClassifier, yc)):
    fresh = fm(cls)
    expect(ValueError, ["X"] + words, lambda: fresh.fit(bad(), y), fresh)
    fitted = fm(cls).fit(Xf, y)
    expect(ValueError, ["X"] + words, lambda: fitted.fit(bad(), y), fitted)
    if cls is FMClassifier:
        expect(ValueError, ["X"] + words, lambda: fitted.partial_fit(bad(), y), fitted)
        first = fm(cls)
        expect(ValueError, ["X"] + words, lambda: first.partial_fit(bad(), y, classes=[0, 1]),
               first)
        methods = ("predict", "predict_proba", "predict_log_proba", "decision_function")
    else:
        expect(ValueError, ["X"] + words, lambda: fitted.partial_fit(bad(), y), fitted)
        methods = ("predict",)
    for name in methods:
        expect(ValueError, ["X"] + words, lambda: getattr(fitted, name)(bad()), fitted)
    expect(ValueError, ["X"] + words, lambda: fitted.score(bad(), y), fitted)

rec = np.tile(np.arange(5), (6, 1))
for metric in (metrics.precision_at_k, metrics.recall_at_k, metrics.ndcg_at_k):
    expect(ValueError, ["X_true"] + words, lambda: metric(bad(), rec, 3))
S = np.zeros((6, 5))
expect(ValueError, ["X_true"] + words, lambda: metrics.auc_score(bad(), S))
expect(ValueError, ["exclude"] + words, lambda: metrics.auc_score(R, S, exclude=bad()))
expect(ValueError, ["X"] + words, lambda: holdout_split(bad(), 0.5, random_state=0))
""")


# =========================================================================== threads


def test_two_threads_on_one_model_are_serialised():
    run_child("""
errors = []

def hammer(fn, times):
    def run():
        try:
            for _ in range(times):
                fn()
        except Exception as e:  # a crash would end the process; an exception is recorded
            errors.append(repr(e))
    return threading.Thread(target=run)

# MF: fits of two shapes at once; the model ends as one serial fit of one of them
A, B = make_ratings(60, 40, 800, random_state=0), make_ratings(90, 25, 900, random_state=1)
for loss in ("squared", "bpr"):
    m = mf(loss=loss)
    ts = [hammer(lambda: m.fit(A), 6), hammer(lambda: m.fit(B), 6)]
    [t.start() for t in ts]; [t.join() for t in ts]
    assert not errors, errors
    last = A if m.user_table_.shape[0] == 60 else B
    ref = mf(loss=loss).fit(last)
    assert np.array_equal(m.user_table_, ref.user_table_)
    assert np.array_equal(m.item_table_, ref.item_table_)
    # partial_fit from two threads: the same as two calls in a row
    m = mf(loss=loss).fit(A)
    ts = [hammer(lambda: m.partial_fit(A), 3) for _ in range(2)]
    [t.start() for t in ts]; [t.join() for t in ts]
    ref = mf(loss=loss).fit(A)
    for _ in range(6):
        ref.partial_fit(A)
    assert not errors, errors
    assert np.array_equal(m.user_table_, ref.user_table_) and m.n_epochs_ == 8

# MF: predictions while another thread refits other shapes: results or clean errors only
m = mf().fit(A)
stop = []
def refit():
    for i in range(8):
        m.fit(A if i % 2 else B)
    stop.append(1)
def predict():
    while not stop:
        try:
            m.predict([0, 1], [0, 1]); m.recommend([0, 1], n=3); m.similar_items([0], n=2)
        except (ValueError, IndexError, AttributeError):
            pass
ts = [threading.Thread(target=refit), threading.Thread(target=predict)]
[t.start() for t in ts]; [t.join() for t in ts]

# FM: fits on 5 and on 50 features at once (the kernel would read rows past the table)
X5, y5, c5 = fm_data(200, 5, seed=0)
X50, y50, c50 = fm_data(200, 50, seed=1)
for cls, a, b in ((FMRegressor, y5, y50), (FMClassifier, c5, c50)):
    m = fm(cls)
    ts = [hammer(lambda: m.fit(X5, a), 5), hammer(lambda: m.fit(X50, b), 5)]
    [t.start() for t in ts]; [t.join() for t in ts]
    assert not errors, errors
    X, y = (X5, a) if m.n_features_in_ == 5 else (X50, b)
    np.testing.assert_array_equal(m.predict(X), fm(cls).fit(X, y).predict(X))
    m = fm(cls).fit(X5, a)
    kw = {"classes": [0, 1]} if cls is FMClassifier else {}
    ts = [hammer(lambda: m.partial_fit(X5, a), 3) for _ in range(2)]
    [t.start() for t in ts]; [t.join() for t in ts]
    assert not errors, errors
    assert m.n_iter_ == 8
""")


# =========================================================================== thread counts


def test_impossible_thread_counts_are_refused():
    run_child("""
R = ratings()
for n in (10**4, 10**5):
    fresh = mf(n_threads=n)
    expect(ValueError, ["n_threads"], lambda: fresh.fit(R), fresh)
    m = mf().fit(R)
    m.set_params(n_threads=n)
    for call in (lambda: m.predict([0], [0]), lambda: m.recommend([0]),
                 lambda: m.similar_items([0]), lambda: m.partial_fit(R),
                 lambda: m.fit(R)):
        expect(ValueError, ["n_threads"], call, m)
    X, y, c = fm_data()
    for cls, t in ((FMRegressor, y), (FMClassifier, c)):
        fresh = fm(cls, n_threads=n)
        expect(ValueError, ["n_threads"], lambda: fresh.fit(X, t), fresh)
        f = fm(cls).fit(X, t)
        f.set_params(n_threads=n)
        calls = [lambda: f.predict(X), lambda: f.partial_fit(X, t), lambda: f.fit(X, t)]
        if cls is FMClassifier:
            calls += [lambda: f.decision_function(X), lambda: f.predict_proba(X)]
        for call in calls:
            expect(ValueError, ["n_threads"], call, f)
""")


# =========================================================================== tampered attributes


def test_tampered_mf_attributes_are_refused_before_any_kernel():
    run_child("""
R = make_ratings(30, 20, 200, random_state=0)
for loss in ("squared", "bpr"):
    m = mf(loss=loss).fit(R)
    U, Q = m.user_table_, m.item_table_
    uses = {
        "predict": lambda: m.predict([0, 29], [19, 0]),
        "recommend": lambda: m.recommend([0, 29], n=5),
        "similar_items": lambda: m.similar_items([0, 19], n=5),
        "partial_fit": lambda: m.partial_fit(R),
        "user_factors_": lambda: m.user_factors_,
    }
    tamper = [
        ("item_table_", Q[:5]), ("item_table_", np.vstack([Q, Q])),
        ("user_table_", U[:, :2].copy()), ("user_table_", U.astype(np.float64)),
        ("user_table_", np.asfortranarray(U)), ("item_table_", Q.tolist()),
        ("item_table_", Q[::-1]), ("n_components_", 100), ("n_items_", 10**6),
        ("n_users_", 5),
    ]
    for attr, value in tamper:
        original = getattr(m, attr)
        setattr(m, attr, value)
        for name, use in uses.items():
            expect(ValueError, [attr], use, m)
        setattr(m, attr, original)
    m.global_mean_ = "x"
    expect((TypeError, ValueError), ["global_mean_"], lambda: m.predict([0], [0]), m)
    m.global_mean_ = float("nan")
    expect(ValueError, ["global_mean_"], lambda: m.recommend([0]), m)
    m.global_mean_ = 3.0
    m.predict([0], [0])

    # a replaced table of the right layout: used by predict, refused by training
    m.user_table_ = U.copy()
    m.user_table_[0] += 1.0
    assert m.predict([0], [0])[0] != mf(loss=loss).fit(R).predict([0], [0])[0]
    expect(ValueError, ["user_table_", "replaced"], lambda: m.partial_fit(R), m)
    m.user_table_ = U
    m.optimizer_ = None
    expect(ValueError, ["optimizer_"], lambda: m.partial_fit(R), m)
    m.optimizer_ = mf(loss=loss).fit(R).optimizer_
    expect(ValueError, ["user_table_"], lambda: m.partial_fit(R), m)
    m = mf(loss=loss).fit(R)
    m.item_table_.flags.writeable = False
    m.recommend([0]); m.predict([0], [0])
    expect(ValueError, ["item_table_", "read-only"], lambda: m.partial_fit(R), m)

    # in-place edits are the model's own and stay allowed
    m = mf(loss=loss).fit(R)
    m.item_factors_[3] = 0.0
    assert not m.item_table_[3, :3].any()
    m.partial_fit(R)
    if loss == "bpr":  # no user bias is learnt: the zeros are not a table to write into
        assert not m.user_bias_.flags.writeable
""")


def test_tampered_fm_attributes_are_refused_before_any_kernel():
    run_child("""
X, y, c = fm_data()
for cls, t in ((FMRegressor, y), (FMClassifier, c)):
    f = fm(cls).fit(X, t)
    W, w0 = f.table_, f.w0_
    uses = [lambda: f.predict(X), lambda: f.score(X, t), lambda: f.partial_fit(X, t),
            lambda: f.coef_]
    if cls is FMClassifier:
        uses += [lambda: f.decision_function(X), lambda: f.predict_proba(X),
                 lambda: f.predict_log_proba(X)]
    tamper = [("table_", W[:3]), ("table_", np.hstack([W, W])), ("table_", W.astype(np.float32)),
              ("table_", np.asfortranarray(W)), ("table_", W[:, ::-1]), ("w0_", np.zeros(5)),
              ("w0_", w0.astype(np.float32)), ("w0_", 0.0), ("n_components_", 40)]
    for attr, value in tamper:
        original = getattr(f, attr)
        setattr(f, attr, value)
        for use in uses:
            expect(ValueError, [attr], use, f)
        warm = f.set_params(warm_start=True)
        expect(ValueError, [attr], lambda: warm.fit(X, t), f)
        f.set_params(warm_start=False)
        setattr(f, attr, original)
    f.table_ = W.copy()
    f.predict(X)
    expect(ValueError, ["table_", "replaced"], lambda: f.partial_fit(X, t), f)
    f.table_ = W

# the softmax kernel indexes its outputs by a label's position in classes_: a longer classes_
# would make training write past them
y3 = np.arange(X.shape[0]) % 3
for labels in (c, y3):
    f = fm(FMClassifier).fit(X, labels)
    classes = f.classes_
    for bad in (classes[:1], np.arange(7), list(classes)):
        f.classes_ = bad
        for use in (lambda: f.predict(X), lambda: f.decision_function(X),
                    lambda: f.partial_fit(X, np.arange(X.shape[0]) % 7 % (len(classes))),
                    lambda: f.partial_fit(X, np.arange(X.shape[0]) % 7)):
            expect(ValueError, ["classes_"], use, f)
    f.classes_ = classes
    f.partial_fit(X, labels)
""")


# =========================================================================== arguments


def _model_state(m):
    d = {}
    for k, v in vars(m).items():
        d[k] = v.copy() if isinstance(v, np.ndarray) else v
    return d


@pytest.mark.parametrize("param, value, exc", [
    ("random_state", -1, ValueError), ("random_state", "x", TypeError),
    ("verbose", "x", TypeError), ("verbose", -1, ValueError), ("use_biases", "no", TypeError),
    ("n_components", 0, ValueError), ("batch_size", 1.5, TypeError),
    ("learning_rate", -1.0, ValueError), ("alpha", float("nan"), ValueError),
    ("dtype", "x", ValueError), ("dtype", np.int32, ValueError), ("loss", "hinge", ValueError),
    ("optimizer_params", [1], TypeError), ("optimizer_params", {"bogus": 1}, TypeError),
    ("optimizer_params", {"lr": 1.0}, ValueError), ("early_stopping", "yes", TypeError),
    ("validation_fraction", 0.0, ValueError), ("validation_fraction", 1.0, ValueError),
    ("validation_fraction", float("nan"), ValueError), ("n_iter_no_change", 0, ValueError),
])
def test_mf_bad_parameters_name_themselves_and_change_nothing(param, value, exc):
    R = make_ratings(30, 20, 200, random_state=0)
    m = MatrixFactorization(n_components=3, n_epochs=1, random_state=0).fit(R)
    # a copy: state_dict() returns the optimizer's arrays by reference
    U, Q = m.user_table_.copy(), m.item_table_.copy()
    state = copy.deepcopy(m.optimizer_.state_dict())
    m.set_params(**{param: value})
    # an unknown optimizer setting is named by the optimizer's own TypeError
    word = "bogus" if value == {"bogus": 1} else param
    with pytest.raises(exc, match=word):
        m.fit(R)
    with pytest.raises(exc, match=word):
        MatrixFactorization(**{param: value}).fit(R)
    assert np.array_equal(m.user_table_, U) and np.array_equal(m.item_table_, Q)
    assert m.n_epochs_ == 1 and len(m.history_) == 1
    assert m.optimizer_.state_dict()["state"].keys() == state["state"].keys()
    after = m.optimizer_.state_dict()["state"]
    for group, st in state["state"].items():  # every state entry of the default optimizer
        assert after[group].keys() == st.keys()
        for key, value in st.items():
            np.testing.assert_array_equal(after[group][key], value)


@pytest.mark.parametrize("param, value, exc", [
    ("random_state", -1, ValueError), ("verbose", "x", TypeError),
    ("warm_start", "yes", TypeError), ("n_components", 0, ValueError),
    ("optimizer_params", {"lr": 1.0}, ValueError),
])
@pytest.mark.parametrize("cls", [FMRegressor, FMClassifier])
def test_fm_bad_parameters_name_themselves_and_change_nothing(cls, param, value, exc):
    rng = np.random.default_rng(0)
    X = sp.random(40, 5, density=0.5, format="csr", random_state=0)
    y = rng.integers(0, 2, 40) if cls is FMClassifier else rng.normal(size=40)
    f = cls(n_components=2, n_epochs=2, random_state=0).fit(X, y)
    before = _model_state(f)
    f.set_params(**{param: value})
    with pytest.raises(exc, match=param):
        f.fit(X, y)
    after = _model_state(f)
    assert after.keys() == before.keys()
    for k in before:
        if k == param:  # the parameter just set
            continue
        if isinstance(before[k], np.ndarray):
            assert np.array_equal(after[k], before[k]), k
        else:
            assert after[k] is before[k] or after[k] == before[k], k


def test_fm_failed_fit_after_validation_restores_the_model():
    # sample_weight and classes fail after scikit-learn's validate_data has set
    # n_features_in_: the guard puts the attributes back
    rng = np.random.default_rng(0)
    X = sp.random(40, 5, density=0.5, format="csr", random_state=0)
    y = rng.integers(0, 2, 40)
    f = FMClassifier(n_components=2, n_epochs=2, random_state=0).fit(X, y)
    before = _model_state(f)
    W = f.table_.copy()
    X7 = sp.random(40, 7, density=0.5, format="csr", random_state=0)
    with pytest.raises(ValueError, match="sample_weight"):
        f.fit(X7, y, sample_weight=-np.ones(40))
    with pytest.raises(ValueError, match="class"):
        f.fit(X7, np.zeros(40, dtype=int))
    assert f.n_features_in_ == 5 and np.array_equal(f.table_, W)
    assert {k: type(v) for k, v in _model_state(f).items()} == \
        {k: type(v) for k, v in before.items()}
    first = FMClassifier(n_components=2, random_state=0)
    with pytest.raises(ValueError, match="class"):
        first.partial_fit(X, np.zeros(40, dtype=int), classes=[0])
    assert not hasattr(first, "classes_") and not hasattr(first, "n_features_in_")


def test_mf_bad_call_arguments():
    R = make_ratings(30, 20, 200, random_state=0)
    m = MatrixFactorization(n_components=3, n_epochs=1, random_state=0).fit(R)
    with pytest.raises(TypeError, match="exclude_seen"):
        m.recommend([0], exclude_seen="no")
    with pytest.raises(IndexError, match="user_ids"):
        m.recommend(np.array([2**64 - 1], dtype=np.uint64))
    with pytest.raises(TypeError, match="item_ids"):
        m.similar_items([0.5])
    with pytest.raises(ValueError, match="n"):
        m.recommend([0], n=0)
    with pytest.raises(ValueError, match="shape"):
        m.partial_fit(make_ratings(31, 20, 200, random_state=0))
    with pytest.raises(ValueError, match="eval_set has shape"):
        m.fit(R, eval_set=make_ratings(31, 20, 200, random_state=0))
    with pytest.raises(ValueError, match="2\\*\\*31"):
        m.fit(sp.csr_matrix((1, 2**31)))
    with pytest.raises(TypeError, match="eval_set"):
        m.fit(R, eval_set=R.toarray().tolist())
    with pytest.raises(TypeError, match="real"):
        m.fit(R.astype(np.complex128))
    assert m.n_epochs_ == 1


def test_recommend_filters_and_evaluate_refuse_hostile_arguments_and_change_nothing():
    run_child("""
R = ratings(6, 5)
for loss in ("squared", "bpr"):
    m = mf(loss=loss).fit(R)
    before = m.recommend([0, 1, 2], n=3)
    for arg in ("filter_items", "items"):
        rec = lambda **kw: m.recommend([0, 1], n=3, **kw)
        expect(IndexError, [arg, "out of range"], lambda: rec(**{arg: [0, 5]}), m)
        expect(IndexError, [arg, "out of range"], lambda: rec(**{arg: [-1]}), m)
        expect(IndexError, [arg, "out of range"],
               lambda: rec(**{arg: np.array([2**64 - 1], dtype=np.uint64)}), m)
        expect(TypeError, [arg, "integers"], lambda: rec(**{arg: [0.0, 1.0]}), m)
        expect(TypeError, [arg, "integers"], lambda: rec(**{arg: [True, False]}), m)
        expect(TypeError, [arg, "integers"], lambda: rec(**{arg: ["1"]}), m)
        expect(ValueError, [arg, "1-D"], lambda: rec(**{arg: [[0, 1]]}), m)
        expect(ValueError, [arg, "1-D"], lambda: rec(**{arg: 3}), m)
    expect(ValueError, ["items", "empty"], lambda: m.recommend([0], items=[]), m)
    expect(ValueError, ["items", "empty"],
           lambda: m.recommend([0], items=np.zeros(0, dtype=np.int64)), m)
    expect(ValueError, ["no item"], lambda: m.recommend([0], items=[1, 2], filter_items=[2, 1]), m)
    expect(ValueError, ["no item"], lambda: m.recommend([0], filter_items=np.arange(5)), m)
    expect(IndexError, ["user_ids"], lambda: m.recommend([6], filter_items=[0]), m)
    expect(TypeError, ["n"], lambda: m.recommend([0], n=2.0, items=[0]), m)
    # an empty filter and an empty user list are no error
    assert np.array_equal(m.recommend([0, 1, 2], n=3, filter_items=[])[0], before[0])
    assert m.recommend([], n=3, items=[0, 1])[0].shape == (0, 2)
    after = m.recommend([0, 1, 2], n=3)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])

    T = ratings(6, 5, seed=1)
    ev = lambda *a, **kw: evaluate(m, *a, **kw)
    expect(ValueError, ["X_test", "shape"], lambda: ev(R, ratings(7, 5)), m)
    expect(ValueError, ["X_train", "shape"], lambda: ev(ratings(6, 4), T), m)
    expect(TypeError, ["X_test", "scipy.sparse"], lambda: ev(R, T.toarray().tolist()), m)
    expect(ValueError, ["X_test", "NaN"], lambda: ev(R, T.multiply(np.nan).tocsr()), m)
    expect(ValueError, ["k"], lambda: ev(R, T, k=0), m)
    expect(TypeError, ["k"], lambda: ev(R, T, k=2.5), m)
    expect(TypeError, ["k"], lambda: ev(R, T, k=True), m)
    expect(ValueError, ["unknown metric", "'auc'"], lambda: ev(R, T, metrics=["auc"]), m)
    expect(ValueError, ["unknown metric"], lambda: ev(R, T, metrics="rmse"), m)
    expect(ValueError, ["empty"], lambda: ev(R, T, metrics=[]), m)
    expect(ValueError, ["twice"], lambda: ev(R, T, metrics=["map", "map"]), m)
    expect(TypeError, ["metrics"], lambda: ev(R, T, metrics=[3]), m)
    expect(TypeError, ["metrics"], lambda: ev(R, T, metrics=3), m)
    assert set(ev(R, T, k=2)) == {"precision", "recall", "ndcg", "map", "mrr", "hit_rate",
                                  "coverage"}
expect(TypeError, ["model"], lambda: evaluate(fm(FMRegressor), R, R))
expect(TypeError, ["model"], lambda: evaluate(None, R, R))
unfitted = mf()
expect(AttributeError, ["not fitted"], lambda: evaluate(unfitted, R, R), unfitted)
""")


# =========================================================================== duplicate ratings


def _dupes(fmt):
    rows, cols = np.array([0, 0, 1, 2]), np.array([1, 1, 2, 0])
    return sp.coo_matrix((np.array([4.0, 5.0, 3.0, 2.0]), (rows, cols)),
                         shape=(3, 3)).asformat(fmt) if fmt == "coo" else \
        sp.csr_matrix((np.array([4.0, 5.0, 3.0, 2.0]), np.array([1, 1, 2, 0]),
                       np.array([0, 2, 3, 4])), shape=(3, 3)).asformat(fmt)


@pytest.mark.parametrize("fmt", ["coo", "csr", "csc"])
def test_mf_refuses_duplicate_ratings(fmt):
    X = _dupes(fmt)
    m = MatrixFactorization(n_components=2, n_epochs=1, random_state=0)
    with pytest.raises(ValueError, match=r"X stores 1 duplicate \(user, item\) entry "
                                         r"\(the first: user 0, item 1\).*sum_duplicates"):
        m.fit(X)
    assert not hasattr(m, "user_table_")
    good = sp.csr_matrix(np.array([[0, 4.5, 0], [0, 0, 3.0], [2.0, 0, 0]]))
    m.fit(good)
    assert m.global_mean_ == pytest.approx(9.5 / 3)   # 4 and 5 summed would give 14/3
    U = m.user_table_.copy()
    with pytest.raises(ValueError, match="eval_set stores 1 duplicate"):
        m.fit(good, eval_set=X)
    with pytest.raises(ValueError, match="X stores 1 duplicate"):
        m.partial_fit(X)
    assert np.array_equal(m.user_table_, U) and m.n_epochs_ == 1
    # the caller's matrix is left as it was
    assert X.nnz == 4 and X.format == fmt


def test_mf_averaging_recipe_in_the_docstring_works():
    X = _dupes("coo")
    S = X.tocsr(copy=True)
    S.sum_duplicates()
    C = X.copy()
    C.data[:] = 1
    C = C.tocsr()
    C.sum_duplicates()
    S.data /= C.data
    assert S[0, 1] == 4.5 and S.nnz == 3
    assert MatrixFactorization(n_epochs=1, random_state=0).fit(S).global_mean_ == \
        pytest.approx((4.5 + 3 + 2) / 3)


def test_bpr_duplicate_interactions_are_one_positive():
    X = _dupes("coo")
    a = MatrixFactorization(loss="bpr", n_components=2, n_epochs=2, random_state=0).fit(X)
    one = sp.csr_matrix(np.array([[0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]]))
    b = MatrixFactorization(loss="bpr", n_components=2, n_epochs=2, random_state=0).fit(one)
    assert np.array_equal(a.item_table_, b.item_table_)
