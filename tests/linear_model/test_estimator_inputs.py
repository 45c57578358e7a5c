"""Hostile input for ``SGDClassifier`` and ``SGDRegressor``.

Every public method (fit, partial_fit, predict, predict_proba, predict_log_proba,
decision_function, score, sparsify, densify and the coef_/intercept_ setters) refuses malformed
sparse X, fitted attributes replaced after fit and bad arguments with an exception that names
the culprit, before SciPy or a kernel sees them, and leaves the estimator exactly as it was
(compared through its pickle).

Probes that could crash the interpreter run in a child process: one child per group runs
every probe of the group, printing a line before and a JSON result after each, so a crash
names the probe that caused it and the probes after it report "not run".
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("sklearn")

from sparseopt.linear_model import SGDClassifier, SGDRegressor  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
N_FEATURES = 6


# --------------------------------------------------------------------------- shared data

def _data(n=60, seed=0, classes=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    y = np.arange(n) % classes
    return X, y, X @ np.linspace(-1, 1, N_FEATURES) + 0.5


def _fitted(kind, **kw):
    """Small fitted models: a multinomial classifier with the lazy elastic-net path and
    averaging (the most state), a binary one, and a regressor."""
    X, y, yr = _data()
    if kind == "clf":
        params = dict(loss="log_loss", penalty="elasticnet", average=True, max_iter=3, tol=None,
                      random_state=0)
        params.update(kw)
        return SGDClassifier(**params).fit(X, y)
    if kind == "bin":
        params = dict(loss="log_loss", max_iter=3, tol=None, random_state=0)
        params.update(kw)
        return SGDClassifier(**params).fit(X, y % 2)
    params = dict(max_iter=3, tol=None, random_state=0)
    params.update(kw)
    return SGDRegressor(**params).fit(X, yr)


def _state(est) -> bytes:
    return pickle.dumps(est)


# --------------------------------------------------------------------------- malformed X

def _valid_csr(n=8):
    X, _, _ = _data(n=n)
    X[np.abs(X) < 0.7] = 0.0
    X[:, 0] = 1.0  # every row stores at least one entry
    return sp.csr_matrix(X)


def _malformed(kind):
    """A sparse matrix of shape (8, N_FEATURES) whose index arrays contradict its shape.
    SciPy's constructors check little, and nothing after construction: the arrays are
    edited in place."""
    X = _valid_csr()
    if kind == "csr_indptr_decreasing":
        X.indptr[3], X.indptr[4] = X.indptr[4], X.indptr[3]
    elif kind == "csr_col_too_large":
        X.indices[-1] = 10**7
    elif kind == "csr_col_negative":
        X.indices[2] = -1
    elif kind == "csr_indptr_not_from_zero":
        X.indptr[0] = 1
    elif kind == "csr_indptr_past_end":
        X.indptr[-1] = X.indptr[-1] + 50
    elif kind == "csr_indptr_too_short":
        X.indptr = X.indptr[:-2].copy()
    elif kind == "csr_float_indices":
        X.indices = X.indices.astype(np.float64)
    elif kind == "csr_array_col_too_large":
        X = sp.csr_array(X)
        X.indices[0] = 10**6
    elif kind == "csc_row_too_large":
        X = X.tocsc()
        X.indices[1] = 10**6
    elif kind == "csc_indptr_decreasing":
        X = X.tocsc()
        X.indptr[2], X.indptr[3] = X.indptr[3] + 1, X.indptr[2]
    elif kind == "coo_row_too_large":
        X = X.tocoo()
        X.row[0] = 10**6
    elif kind == "coo_col_negative":
        X = X.tocoo()
        X.col[0] = -5
    elif kind == "bsr_col_too_large":
        X = X.tobsr(blocksize=(2, 2))
        X.indices[0] = 10**5
    else:  # pragma: no cover - a typo in the probe table
        raise KeyError(kind)
    return X


MALFORMED = ["csr_indptr_decreasing", "csr_col_too_large", "csr_col_negative",
             "csr_indptr_not_from_zero", "csr_indptr_past_end", "csr_indptr_too_short",
             "csr_float_indices", "csr_array_col_too_large", "csc_row_too_large",
             "csc_indptr_decreasing", "coo_row_too_large", "coo_col_negative",
             "bsr_col_too_large"]

# (estimator, method): what the method is called on
X_METHODS = [("clf", m) for m in ("fit", "partial_fit", "partial_fit_first", "predict",
                                  "decision_function", "predict_proba", "predict_log_proba",
                                  "score")] + \
            [("reg", m) for m in ("fit", "partial_fit", "partial_fit_first", "predict",
                                  "score")]
MALFORMED_PROBES = [f"{e}-{m}-{k}" for e, m in X_METHODS for k in MALFORMED] + \
                   [f"{e}-{m}-y_malformed" for e in ("clf", "reg") for m in ("fit", "partial_fit")]


def _call(est, method, X, y):
    if method == "fit":
        return est.fit(X, y)
    if method == "partial_fit_first":
        return est.partial_fit(X, y, **({"classes": [0, 1, 2]}
                                        if isinstance(est, SGDClassifier) else {}))
    if method in ("partial_fit", "score"):
        return getattr(est, method)(X, y)
    return getattr(est, method)(X)


def _probe_malformed(name):
    kind_est, method, kind = name.split("-")
    fresh = method == "partial_fit_first"
    est = (SGDClassifier(loss="log_loss") if kind_est == "clf" else SGDRegressor()) if fresh \
        else _fitted(kind_est)
    n = 8
    X, y = _valid_csr(n), np.arange(n) % 3 if kind_est == "clf" else np.linspace(0, 1, n)
    if kind == "y_malformed":
        y = sp.csr_matrix(np.asarray(y, dtype=float).reshape(-1, 1))
        y.indices[0] = 10**6
    else:
        X = _malformed(kind)
    before = _state(est)
    try:
        _call(est, method, X, y)
    finally:
        _PROBE_STATE["unchanged"] = _state(est) == before


# --------------------------------------------------------------------------- tampering

def _tamper(name):
    """(estimator, method-independent setup) for a fitted model with one attribute replaced
    the way a user (or a bug) might."""
    if name == "W_fewer_rows":
        est = _fitted("clf")
        est._W = est._W[:-2].copy()
    elif name == "W_more_outputs":
        est = _fitted("reg")
        est._W = np.zeros((est._W.shape[0], 4))
    elif name == "W_int_dtype":
        est = _fitted("reg")
        est._W = est._W.astype(np.int64)
    elif name == "W_not_contiguous":
        est = _fitted("clf")
        est._W = np.asfortranarray(est._W)
    elif name == "W_list":
        est = _fitted("reg")
        est._W = est._W.tolist()
    elif name == "W_avg_fewer_rows":
        est = _fitted("clf")
        est._W_avg = est._W_avg[:-1].copy()
    elif name == "n_features_in_changed":
        est = _fitted("clf")
        est.n_features_in_ = N_FEATURES + 4
    elif name == "classes_more":
        est = _fitted("clf")
        est.classes_ = np.arange(5)
    elif name == "classes_binary":
        est = _fitted("clf")
        est.classes_ = np.array([0, 1])
    elif name == "classes_list":
        est = _fitted("clf")
        est.classes_ = [0, 1, 2]
    elif name == "sparse_coef_malformed":
        est = _fitted("clf").sparsify()
        est._coef_sparse.indices[0] = 10**6
    elif name == "sparse_coef_wrong_shape":
        est = _fitted("clf").sparsify()
        est._coef_sparse = sp.csr_matrix(np.ones((3, N_FEATURES + 3)))
    elif name == "sparse_intercept_wrong_shape":
        est = _fitted("clf").sparsify()
        est._intercept_fixed = np.zeros(7)
    elif name == "penalty_steps_short":
        est = _fitted("clf", penalty="l1")
        est._reg.pen_step = np.zeros(2, dtype=np.int64)
    elif name == "penalty_steps_out_of_range":
        est = _fitted("clf", penalty="l1")
        est._reg.pen_step = np.full(est._W.shape[0], 10**9, dtype=np.int64)
    elif name == "running_average_short":
        est = _fitted("clf")
        est._reg.avg = np.zeros((2, 3))
    elif name == "t_negative":
        est = _fitted("clf")
        est.t_ = -3
    elif name == "W_copied":  # a model that kept its optimizer (fit alone releases it)
        est = _fitted("reg", warm_start=True)
        est._W = est._W.copy()
    elif name == "W_read_only":
        est = _fitted("clf")
        est._W.flags.writeable = False
    elif name == "optimizer_replaced":
        import sparseopt as so
        est = _fitted("reg", warm_start=True)
        est.optimizer_ = so.Adagrad([np.zeros_like(est._W)])
    elif name == "fit_intercept_turned_on":
        est = _fitted("clf", fit_intercept=False)
        est.set_params(fit_intercept=True)
    elif name == "fit_intercept_turned_off":
        est = _fitted("reg")
        est.set_params(fit_intercept=False)
    else:  # pragma: no cover
        raise KeyError(name)
    return est


READERS = ["predict", "decision_function", "score", "sparsify", "densify", "partial_fit",
           "fit_warm_start", "set_coef", "set_intercept"]
TRAINING = ["partial_fit"]
# tamper -> (what the message names, methods that must refuse; the others must work)
TAMPERED = {
    "W_fewer_rows": ("weight table", READERS),
    "W_more_outputs": ("weight table", READERS),
    "W_int_dtype": ("weight table", READERS),
    "W_not_contiguous": ("C-contiguous", READERS),
    "W_list": ("weight table", READERS),
    "W_avg_fewer_rows": ("averaged weights", READERS),
    "n_features_in_changed": ("n_features_in_", READERS),
    "classes_more": ("classes_", READERS),
    "classes_binary": ("classes_", READERS),
    "classes_list": ("classes_", READERS),
    "sparse_coef_malformed": ("coef_ is malformed", READERS),
    "sparse_coef_wrong_shape": ("coef_", READERS),
    "sparse_intercept_wrong_shape": ("intercept_", READERS),
    "penalty_steps_short": ("penalty bookkeeping", TRAINING),
    "penalty_steps_out_of_range": ("penalty bookkeeping", TRAINING),
    "running_average_short": ("running average", TRAINING),
    "t_negative": ("t_", TRAINING),
    "W_copied": ("optimizer_", TRAINING),
    "W_read_only": ("read-only", TRAINING),
    "optimizer_replaced": ("optimizer_", TRAINING),
    "fit_intercept_turned_on": ("fit_intercept", TRAINING),
    "fit_intercept_turned_off": ("fit_intercept", TRAINING),
}
TAMPER_METHODS = READERS + ["fit_fresh"]
TAMPER_PROBES = [f"{t}-{m}" for t in TAMPERED for m in TAMPER_METHODS]


def _probe_tampered(name):
    tamper, method = name.split("-")
    est = _tamper(tamper)
    X, y, yr = _data(n=20, seed=1)
    if isinstance(est, SGDClassifier):
        y = y % 2 if tamper == "classes_binary" else y
        n_outputs = 3
    else:
        y = yr
        n_outputs = 1
        method = "predict" if method == "decision_function" else method
    if method.startswith("fit_"):
        est.set_params(warm_start=method == "fit_warm_start")
    before = _state(est)
    try:
        if method == "fit_warm_start":
            est.fit(X, y)
        elif method == "fit_fresh":
            est.fit(X, y)  # fit is the way out of any tampering
            assert est.predict(X).shape == (20,)
        elif method == "set_coef":
            est.coef_ = np.zeros((n_outputs, N_FEATURES))
        elif method == "set_intercept":
            est.intercept_ = np.zeros(n_outputs)
        elif method in ("sparsify", "densify"):
            getattr(est, method)()
        else:
            _call(est, method, X, y)
    finally:
        _PROBE_STATE["unchanged"] = _state(est) == before


# --------------------------------------------------------------------------- setters

SETTERS = {
    # name: (estimator, value builder, what the message names)
    "coef_wrong_width": ("clf", lambda est: np.zeros((3, N_FEATURES + 1)), "coef_"),
    "coef_transposed": ("clf", lambda est: np.zeros((N_FEATURES, 3)), "coef_"),
    "coef_strings": ("reg", lambda est: np.array(["a"] * N_FEATURES), "coef_"),
    "coef_sparse_malformed": ("clf", lambda est: _malformed_coef(), "coef_ is malformed"),
    "coef_sparse_wrong_shape": ("clf", lambda est: sp.csr_matrix(np.ones((2, N_FEATURES))),
                                "coef_"),
    "intercept_too_long": ("clf", lambda est: np.zeros(4), "intercept_"),
    "intercept_scalar_for_3_outputs": ("clf", lambda est: 0.5, "intercept_"),
    "intercept_too_long_sparse": ("sparse", lambda est: np.zeros(5), "intercept_"),
    "coef_wrong_width_sparse": ("sparse", lambda est: np.zeros((3, 2)), "coef_"),
}
SETTER_PROBES = list(SETTERS)


def _malformed_coef():
    coef = sp.csr_matrix(np.ones((3, N_FEATURES)))
    coef.indices[0] = 10**6
    return coef


def _probe_setter(name):
    kind, value, _ = SETTERS[name]
    est = _fitted("clf").sparsify() if kind == "sparse" else _fitted(kind)
    before = _state(est)
    try:
        attr = "coef_" if name.startswith("coef") else "intercept_"
        setattr(est, attr, value(est))
    finally:
        _PROBE_STATE["unchanged"] = _state(est) == before
    # never reached when the setter refuses; a crash-free predict is the point otherwise
    est.predict(_data(n=5)[0])


# --------------------------------------------------------------------------- threads

THREAD_PROBES = ["fit_fit", "partial_fit_partial_fit", "fit_predict"]


def _probe_threads(name):
    """Two threads on one estimator: calls are serialised (no crash, no torn state) and
    the result is the one a sequential run gives."""
    X, y, _ = _data(n=400)
    kw = dict(loss="log_loss", max_iter=5, tol=None, random_state=0, batch_size=16)
    est, ref = SGDClassifier(**kw), SGDClassifier(**kw)
    errors = []
    if name == "fit_fit":
        jobs = [lambda: est.fit(X, y)] * 2
        ref.fit(X, y)
    elif name == "partial_fit_partial_fit":
        est.partial_fit(X, y, classes=[0, 1, 2])
        ref.partial_fit(X, y, classes=[0, 1, 2])
        jobs = [lambda: est.partial_fit(X, y)] * 2
        ref.partial_fit(X, y)
        ref.partial_fit(X, y)
    else:
        est.fit(X, y)
        jobs = [lambda: est.fit(X, y)] + [lambda: [est.predict(X) for _ in range(20)]]
        ref.fit(X, y)

    def run(job):
        try:
            for _ in range(3 if name != "partial_fit_partial_fit" else 1):
                job()
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    # every call sees the same data, so any serial order gives the reference's result
    assert est.t_ == ref.t_
    np.testing.assert_array_equal(est.coef_, ref.coef_)
    np.testing.assert_array_equal(est.intercept_, ref.intercept_)


# --------------------------------------------------------------------------- child process

GROUPS = {"malformed": (_probe_malformed, MALFORMED_PROBES),
          "tampered": (_probe_tampered, TAMPER_PROBES),
          "setters": (_probe_setter, SETTER_PROBES),
          "threads": (_probe_threads, THREAD_PROBES)}
_PROBE_STATE: dict = {}


def child_main(group: str) -> None:
    """Run every probe of ``group`` (in the child process) and print the results."""
    import warnings
    warnings.simplefilter("ignore")
    probe, names = GROUPS[group]
    for name in names:
        print("PROBE", name, flush=True)
        _PROBE_STATE.clear()
        try:
            probe(name)
            result = {"error": None}
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            result = {"error": type(exc).__name__, "message": str(exc)}
        result["unchanged"] = _PROBE_STATE.get("unchanged")
        print("RESULT", json.dumps({"name": name, **result}), flush=True)


_RESULTS: dict = {}


def results(group: str) -> dict:
    """The child's results for ``group`` (run once per test session)."""
    if group not in _RESULTS:
        code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); "
                f"import test_estimator_inputs as T; T.child_main({group!r})")
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get(
            "PYTHONPATH", ""))
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        out = {}
        last = None
        for line in proc.stdout.splitlines():
            if line.startswith("PROBE "):
                last = line[6:]
            elif line.startswith("RESULT "):
                r = json.loads(line[7:])
                out[r["name"]] = r
                last = None
        _RESULTS[group] = (out, last, proc.returncode, proc.stderr[-2000:])
    return _RESULTS[group]


def outcome(group: str, name: str) -> dict:
    out, crashed_in, rc, err = results(group)
    if name in out:
        return out[name]
    if crashed_in == name:
        pytest.fail(f"probe {name} ended the child process (exit code {rc}):\n{err}")
    pytest.fail(f"probe {name} did not run: the child ended (exit code {rc}) in probe "
                f"{crashed_in}:\n{err}")


# --------------------------------------------------------------------------- the tests

@pytest.mark.parametrize("probe", MALFORMED_PROBES)
def test_malformed_sparse_input_is_refused_before_use(probe):
    r = outcome("malformed", probe)
    name = "y" if probe.endswith("y_malformed") else "X"
    assert r["error"] == "ValueError", r
    assert r["message"].startswith(f"{name} is malformed"), r
    assert r["unchanged"], "the estimator changed"


@pytest.mark.parametrize("probe", TAMPER_PROBES)
def test_replaced_fitted_attributes_are_refused_before_use(probe):
    tamper, method = probe.split("-")
    names, refusing = TAMPERED[tamper]
    r = outcome("tampered", probe)
    if method in refusing:
        assert r["error"] == "ValueError", r
        assert names in r["message"], r
        assert r["unchanged"], "the estimator changed"
    else:
        assert r["error"] is None, r


@pytest.mark.parametrize("probe", SETTER_PROBES)
def test_setters_refuse_other_shapes(probe):
    r = outcome("setters", probe)
    assert r["error"] == "ValueError", r
    assert SETTERS[probe][2] in r["message"], r
    assert r["unchanged"], "the estimator changed"


@pytest.mark.parametrize("probe", THREAD_PROBES)
def test_two_threads_on_one_estimator_are_serialised(probe):
    r = outcome("threads", probe)
    assert r["error"] is None, r


# --------------------------------------------------------------------------- in process
# (nothing below can reach a kernel or a SciPy routine with bad input, even on the old code)

BAD_PARAMS = [
    (dict(n_threads=10**4), "n_threads"), (dict(n_threads=10**5), "n_threads"),
    (dict(n_threads=0), "n_threads"), (dict(n_threads="4"), "n_threads"),
    (dict(n_threads=2.0), "n_threads"), (dict(random_state=-1), "random_state"),
    (dict(random_state=2**32), "random_state"), (dict(random_state="x"), "random_state"),
    (dict(random_state=1.5), "random_state"), (dict(verbose="x"), "verbose"),
    (dict(verbose=-1), "verbose"), (dict(class_weight={0: np.nan, 1: 1.0, 2: 1.0}),
                                    "class_weight"),
    (dict(class_weight={0: np.inf, 1: 1.0, 2: 1.0}), "class_weight"),
    (dict(class_weight={0: "heavy", 1: 1.0, 2: 1.0}), "class_weight"),
    (dict(class_weight=[1.0, 2.0, 3.0]), "class_weight"),
    (dict(class_weight="uniform"), "class_weight"),
]


@pytest.mark.parametrize("params,name", BAD_PARAMS, ids=[f"{k}={v!r}" for (p, _) in BAD_PARAMS
                                                         for k, v in p.items()])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_bad_parameters_name_themselves_and_change_nothing(params, name, method):
    X, y, _ = _data()
    est = _fitted("clf")
    before, params_before = _state(est), est.get_params()
    est.set_params(**params)
    with pytest.raises(ValueError, match=name) as info:
        est.fit(X, y) if method == "fit" else est.partial_fit(X, y)
    for blame in ("StandardScaler", "learning_rate", "Seed must be"):
        assert blame not in str(info.value)
    est.set_params(**params_before)
    assert _state(est) == before


@pytest.mark.parametrize("sample_weight,match", [
    (np.r_[np.ones(59), np.nan], "sample_weight"),
    (np.r_[np.ones(59), np.inf], "sample_weight"),
    (np.ones(59), "sample_weight"),
    (np.array(["a"] * 60), "sample_weight"),
    (sp.csr_matrix(np.ones((60, 1))), "sample_weight"),
])
@pytest.mark.parametrize("kind", ["clf", "reg"])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_bad_sample_weight_is_named(sample_weight, match, kind, method):
    X, y, yr = _data()
    est = _fitted(kind)
    before = _state(est)
    with pytest.raises(ValueError, match=match) as info:
        getattr(est, method)(X, y if kind == "clf" else yr, sample_weight=sample_weight)
    assert "StandardScaler" not in str(info.value)
    assert _state(est) == before


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_huge_sample_weights_are_refused_naming_them(kind):
    """Weights count as given, as in scikit-learn (against alpha), so weights at the top of
    float64 would overflow the gradients: they are refused up front, naming sample_weight, and
    the model is left as it was; weights just below the bound train to finite weights."""
    X, y, yr = _data()
    target = y if kind == "clf" else yr
    est = _fitted(kind)
    before = _state(est)
    with pytest.raises(ValueError, match="sample_weight: a weight of 1e\\+308 is above"):
        est.fit(X, target, sample_weight=np.full(len(target), 1e308))
    assert _state(est) == before
    big = _fitted(kind).fit(X, target, sample_weight=np.full(len(target), 1e15))
    assert np.isfinite(big.coef_).all() and np.isfinite(big.intercept_).all()


def test_overflowing_weights_are_refused_naming_them():
    X, y, yr = _data()
    reg = SGDRegressor(random_state=0).partial_fit(X, yr)
    before = _state(reg)
    with pytest.raises(ValueError, match="sample_weight: a weight of 1e\\+308") as info:
        reg.partial_fit(X, yr, sample_weight=np.full(len(yr), 1e308))
    assert "StandardScaler" not in str(info.value)
    assert _state(reg) == before
    clf = SGDClassifier(class_weight={0: 10.0, 1: 1.0, 2: 1.0})
    with pytest.raises(ValueError, match="sample_weight times class_weight"):
        clf.fit(X, y, sample_weight=np.full(len(y), 1e308))
    assert not hasattr(clf, "classes_") and not hasattr(clf, "n_features_in_")


@pytest.mark.parametrize("kwargs,match", [
    (dict(coef_init=np.full((3, N_FEATURES), np.nan)), "coef_init"),
    (dict(coef_init=np.zeros((3, N_FEATURES + 1))), "coef_init"),
    (dict(coef_init=[["a"] * N_FEATURES] * 3), "coef_init"),
    (dict(coef_init=np.full((3, N_FEATURES), 1e300)), "coef_init"),  # inf in float32
    (dict(intercept_init=[np.inf, 0.0, 0.0]), "intercept_init"),
    (dict(intercept_init=np.zeros(4)), "intercept_init"),
])
def test_bad_initial_coefficients_are_named(kwargs, match):
    X, y, _ = _data()
    est = _fitted("clf")
    before = _state(est)
    with pytest.raises(ValueError, match=match):
        est.fit(X.astype(np.float32), y, **kwargs)
    assert _state(est) == before


def test_failed_warm_start_leaves_the_model_usable():
    """warm_start with a new number of features fails; the model keeps its old
    n_features_in_ and weights, so partial_fit then trains exactly as on an untouched copy."""
    X, y, _ = _data()
    est = SGDClassifier(warm_start=True, max_iter=3, tol=None, random_state=0).fit(X, y)
    twin = pickle.loads(pickle.dumps(est))
    before = _state(est)
    X_wide = np.hstack([X, X[:, :2]])
    with pytest.raises(ValueError, match="coef_init"):
        est.fit(X_wide, y)
    assert est.n_features_in_ == N_FEATURES and _state(est) == before
    with pytest.raises(ValueError, match="features"):
        est.partial_fit(X_wide, y)
    est.partial_fit(X, y)
    twin.partial_fit(X, y)
    np.testing.assert_array_equal(est.coef_, twin.coef_)


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_wrong_number_of_features_is_named(kind):
    est = _fitted(kind)
    X, y, yr = _data()
    for Xw in (X[:, :3], sp.csr_matrix(X[:, :3])):
        with pytest.raises(ValueError, match="features"):
            est.predict(Xw)
        with pytest.raises(ValueError, match="features"):
            est.partial_fit(Xw, y if kind == "clf" else yr)


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc", "coo", "csr_int64", "csr_unsorted"])
@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_every_format_trains_and_predicts_alike_in_float32(fmt, kind):
    X, y, yr = _data(n=80)
    X[np.abs(X) < 0.5] = 0.0
    X = X.astype(np.float32)
    target = y if kind == "clf" else yr
    ref = _fitted(kind).fit(sp.csr_matrix(X), target)
    if fmt == "dense":
        Xf = X
    elif fmt == "csr_int64":
        Xf = sp.csr_matrix(X)
        Xf.indices = Xf.indices.astype(np.int64)
        Xf.indptr = Xf.indptr.astype(np.int64)
    elif fmt == "csr_unsorted":  # the same entries, column order reversed within each row
        csr = sp.csr_matrix(X)
        indices, data = csr.indices.copy(), csr.data.copy()
        for i in range(csr.shape[0]):
            lo, hi = csr.indptr[i], csr.indptr[i + 1]
            indices[lo:hi], data[lo:hi] = indices[lo:hi][::-1], data[lo:hi][::-1]
        Xf = sp.csr_matrix((data, indices, csr.indptr.copy()), shape=csr.shape)
        assert not Xf.has_sorted_indices
    else:
        Xf = sp.csr_matrix(X).asformat(fmt)
    est = _fitted(kind).fit(Xf, target)
    assert est.coef_.dtype == np.float32 and est._W.dtype == np.float32
    np.testing.assert_array_equal(est.coef_, ref.coef_)
    out = est.decision_function(Xf) if kind == "clf" else est.predict(Xf)
    np.testing.assert_allclose(out, ref.decision_function(X) if kind == "clf"
                               else ref.predict(X), rtol=1e-5, atol=1e-5)


def test_duplicate_entries_count_as_their_sum():
    """A CSR row storing a column twice means the sum of the two values, as in SciPy."""
    X, y, _ = _data(n=40)
    csr = sp.csr_matrix(X)
    indptr, indices, data = [0], [], []
    for i in range(csr.shape[0]):  # every entry stored as two halves
        lo, hi = csr.indptr[i], csr.indptr[i + 1]
        indices += list(csr.indices[lo:hi]) * 2
        data += list(csr.data[lo:hi] / 2) * 2
        indptr.append(len(indices))
    dup = sp.csr_matrix((np.array(data), np.array(indices), np.array(indptr)), shape=csr.shape)
    assert not dup.has_canonical_format
    a = _fitted("clf").fit(csr, y)
    b = _fitted("clf").fit(dup, y)
    np.testing.assert_array_equal(b.coef_, a.coef_)
    np.testing.assert_allclose(b.decision_function(dup), a.decision_function(csr),
                               rtol=1e-13, atol=1e-15)


def test_random_state_is_reproducible_and_accepts_what_scikit_learn_accepts():
    X, y, _ = _data(n=200)
    kw = dict(max_iter=4, tol=None, early_stopping=True, n_iter_no_change=10)
    a = SGDClassifier(random_state=7, **kw).fit(X, y)
    b = SGDClassifier(random_state=7, **kw).fit(X, y)
    c = SGDClassifier(random_state=8, **kw).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.array_equal(a.coef_, c.coef_)
    for rs in (np.random.RandomState(0), np.random.default_rng(0), None):
        assert SGDClassifier(random_state=rs, **kw).fit(X, y).coef_.shape == (3, N_FEATURES)
    g1 = SGDClassifier(random_state=np.random.default_rng(3), **kw).fit(X, y)
    g2 = SGDClassifier(random_state=np.random.default_rng(3), **kw).fit(X, y)
    np.testing.assert_array_equal(g1.coef_, g2.coef_)


def test_n_threads_at_the_machine_limit_is_accepted():
    from sparseopt._validation import max_n_threads
    X, y, _ = _data()
    est = SGDClassifier(n_threads=max_n_threads(), max_iter=2, tol=None).fit(X, y)
    assert est.predict(X).shape == (60,)
    with pytest.raises(ValueError, match="n_threads"):
        SGDClassifier(n_threads=max_n_threads() + 1).fit(X, y)


def test_kernel_thread_counts_follow_the_shared_rule(monkeypatch):
    """Thread counts come from _utils.threads_for with the model-kernel threshold, and the
    kernel receives that threshold for its row loop (no local constant)."""
    from sparseopt import _utils
    from sparseopt._kernels import _linear
    from sparseopt.linear_model import _base
    calls, row_thresholds = [], []

    def threads_spy(n_threads, work, min_work=_utils.PARALLEL_MIN_ELEMENTS):
        calls.append((n_threads, min_work))
        return _utils.threads_for(n_threads, work, min_work)

    real = _linear.gradient_kernel

    def kernel_spy(dtype, index_dtype):
        kernel = real(dtype, index_dtype)

        def spy(samples, model, scratch, penalty, start, stop):
            row_thresholds.append(scratch.min_row_work)
            return kernel(samples, model, scratch, penalty, start, stop)
        return spy

    monkeypatch.setattr(_base, "threads_for", threads_spy)
    monkeypatch.setattr(_linear, "gradient_kernel", kernel_spy)
    X, y, _ = _data()
    SGDClassifier(n_threads=2, max_iter=2, tol=None).fit(X, y)
    assert calls and set(calls) == {(2, _utils.PARALLEL_MIN_MODEL_WORK)}
    assert row_thresholds and set(row_thresholds) == {_utils.PARALLEL_MIN_MODEL_WORK}
