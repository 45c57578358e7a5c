"""Hostile inputs to every public entry point: a clear error, and nothing changes.

The contract: malformed input is refused with a Python exception that names the argument,
before any compiled code (or SciPy method that trusts a sparse structure) runs, and the
optimizer / estimator keeps every parameter, state array and attribute it had. No input,
state or attribute value may crash the interpreter, hang, or silently corrupt a result.

How it runs: every probe below is a snippet (``_probes.Probe``) executed in ONE child Python
that imports the libraries and fits the small models once, then forks workers that run the
probes in chunks (``_probes.run_probes``); a worker that dies is replaced and the probe it died
in is re-run alone (and, if it then survives, the probes before it are bisected), so a
segfault, an abort of a corrupted heap or a hang is reported as the outcome of the probe that
caused it, and pytest itself never runs a hostile input. Each probe is one parametrized test
here; the batch runs once per session. ``python tests/test_hostile_inputs.py`` prints the
failing probes grouped by entry point (the to-do list).

Families of probes:

* ``sparse/...``: every entry point that takes a sparse matrix x every SciPy format (CSR, CSC,
  COO, BSR, DIA, LIL, DOK; ``*_matrix`` and ``*_array`` alternately) x every structural
  corruption of ``_strategies.KINDS``; ``valid/...``: the same entry points with valid input of
  every format, which must succeed.
* hand-written probes for the rest of the contract: thread counts, ``eps``, read-only
  parameters, loaded and edited optimizer state, fitted attributes replaced by arrays of
  another shape, failed fits, duplicates in ratings, ranking metrics with duplicate and padded
  ids, dataset generators (speed and argument checks), ids out of range, two threads on one
  object, and messages that must name the argument (or must not blame the wrong thing).
* ``test_hypothesis_corrupted_sparse``: Hypothesis draws valid and corrupted CSR/CSC/COO/BSR
  matrices (``_strategies.sparse_inputs``), >= 500 examples per fit/predict/metric, inside
  the same forked children.
"""
from __future__ import annotations

import math
import os
import time

import pytest

from _probes import Probe, describe, run_probes, verdict
from _strategies import DTYPE_KINDS, FORMATS, KINDS, TARGET_NAMES

HYPOTHESIS_EXAMPLES = int(os.environ.get("SPARSEOPT_HOSTILE_EXAMPLES", "500"))

PRELUDE = r'''
import copy, gc, threading, time, warnings
import numpy as np
import scipy.sparse as sp
import sparseopt as so
from sparseopt.optim import SGD
from sparseopt import datasets
from sparseopt.datasets import make_ratings, make_interactions, holdout_split
from sparseopt.linear_model import SGDClassifier, SGDRegressor
from sparseopt.recommend import MatrixFactorization, FMRegressor, FMClassifier, metrics
from sparseopt.recommend import evaluate, IdEncoder, add_identity_features
from _strategies import bad_sparse, valid_sparse, corrupt, dense_full_rows, _fitted
warnings.simplefilter("ignore")

FIT = {k: _fitted(k) for k in ("sgdc", "sgdr", "fmr", "fmc", "mf", "mfbpr", "mfwarp")}
R_TRAIN = make_ratings(9, 8, 30, random_state=0)        # what FIT["mf"] was fitted on
FEAT8 = sp.random(8, 3, density=0.5, format="csr", random_state=0)  # features of its items

def fresh(k):
    return copy.deepcopy(FIT[k])

def ycls(X):
    return np.arange(X.shape[0]) % 2

def yreg(X):
    return np.linspace(-1.0, 1.0, X.shape[0])

X8 = sp.csr_matrix(dense_full_rows((8, 7), seed=1))   # valid input of the fitted estimators

# models fitted on columns of raw ids: string users and integer items from a DataFrame
# (explicit), and the same ids as a tuple without values (implicit)
import pandas as pd
_C = R_TRAIN.tocoo()
DF = pd.DataFrame({"user": np.array([f"u{r}" for r in _C.row]), "item": _C.col * 10 + 5,
                   "rating": _C.data.astype(np.float64)})
FIT_RAW = MatrixFactorization(n_components=2, n_epochs=1, random_state=0).fit(DF)
FIT_RAW_BPR = MatrixFactorization(n_components=2, n_epochs=1, loss="bpr",
                                  random_state=0).fit((DF["user"].to_numpy(),
                                                       DF["item"].to_numpy()))

def fresh_raw(bpr=False):
    return copy.deepcopy(FIT_RAW_BPR if bpr else FIT_RAW)

OPT_CLASSES = {
    "Adam": (so.Adam, {}),
    "Adam-decay": (so.Adam, dict(lazy="decay", weight_decay=0.01)),
    "Adagrad-rowwise": (so.Adagrad, dict(rowwise=True)),
    "Adam-rowwise": (so.Adam, dict(rowwise="v", lazy="decay", amsgrad=True, weight_decay=0.01)),
    "RMSprop-rowwise": (so.RMSprop, dict(rowwise=True, centered=True, momentum=0.5)),
    "RMSprop-decay": (so.RMSprop, dict(lazy="decay", centered=True, momentum=0.5)),
    "SGD": (SGD, {}),
    "Ftrl": (so.Ftrl, dict(l1=0.01, l2=0.1, l2_shrinkage=0.05)),
}

def make_opt(kind="Adam", **kw):
    cls, base = OPT_CLASSES[kind]
    rng = np.random.default_rng(0)
    params = {"emb": rng.normal(size=(12, 4)).astype(np.float32), "bias": rng.normal(size=12)}
    return cls(params, lr=0.05, **dict(base, **kw))

def row_grad(rows, d=4, dtype=np.float32, value=1.0):
    rows = np.asarray(rows)
    return so.RowGrad(rows, np.full((rows.shape[0], d), value, dtype=dtype))

def warmed(kind="Adam", steps=3, **kw):
    """An optimizer that has taken a few steps (state allocated)."""
    opt = make_opt(kind, **kw)
    for s in range(steps):
        opt.step({"emb": row_grad([s, 5, 5]), "bias": np.ones(12)})
    return opt

def finite(*arrays):
    return all(np.all(np.isfinite(np.asarray(a))) for a in arrays)

def opt_finite(opt):
    arrays = list(opt.params)
    for st in opt.state.values():
        arrays += [v for k, v in st.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
    return finite(*arrays)

def run_threads(fns, seconds=1.0):
    """Run each callable in a loop in its own thread for ``seconds``; returns the exceptions."""
    errors, stop = [], time.perf_counter() + seconds
    def loop(fn):
        while time.perf_counter() < stop:
            try:
                fn()
            except Exception as e:
                errors.append(e)
    ths = [threading.Thread(target=loop, args=(fn,)) for fn in fns]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return errors

def only_runtime_errors(errors):
    bad = [e for e in errors if not isinstance(e, RuntimeError)]
    if bad:
        raise AssertionError(f"{len(bad)} unexpected errors from concurrent calls, first: "
                             f"{type(bad[0]).__name__}: {bad[0]}")
'''


# =========================================================================== sparse inputs
# entry point -> (shape of X, setup, act using X, names the message must use, watched object)

def _est(key, call, names=("X",), shape=(8, 7)):
    return dict(shape=shape, setup=f"est = fresh({key!r})", act=call, names=names,
                watch="est")


SPARSE_ENTRIES = {
    "Adam.step": dict(shape=(12, 4), setup="opt = warmed('Adam')",
                      act="opt.step({'emb': X, 'bias': np.ones(12)})", names=("emb",),
                      watch="opt"),
    "SGDClassifier.fit": _est("sgdc", "est.fit(X, ycls(X))"),
    "SGDClassifier.partial_fit": _est("sgdc", "est.partial_fit(X, ycls(X))"),
    "SGDClassifier.predict": _est("sgdc", "est.predict(X)"),
    "SGDClassifier.decision_function": _est("sgdc", "est.decision_function(X)"),
    "SGDClassifier.predict_proba": _est("sgdc", "est.predict_proba(X)"),
    "SGDClassifier.predict_log_proba": _est("sgdc", "est.predict_log_proba(X)"),
    "SGDClassifier.score": _est("sgdc", "est.score(X, ycls(X))"),
    "SGDRegressor.fit": _est("sgdr", "est.fit(X, yreg(X))"),
    "SGDRegressor.partial_fit": _est("sgdr", "est.partial_fit(X, yreg(X))"),
    "SGDRegressor.predict": _est("sgdr", "est.predict(X)"),
    "SGDRegressor.score": _est("sgdr", "est.score(X, yreg(X))"),
    "FMRegressor.fit": _est("fmr", "est.fit(X, yreg(X))"),
    "FMRegressor.partial_fit": _est("fmr", "est.partial_fit(X, yreg(X))"),
    "FMRegressor.predict": _est("fmr", "est.predict(X)"),
    "FMRegressor.score": _est("fmr", "est.score(X, yreg(X))"),
    "FMClassifier.fit": _est("fmc", "est.fit(X, ycls(X))"),
    "FMClassifier.partial_fit": _est("fmc", "est.partial_fit(X, ycls(X))"),
    "FMClassifier.predict": _est("fmc", "est.predict(X)"),
    "FMClassifier.predict_proba": _est("fmc", "est.predict_proba(X)"),
    "FMClassifier.decision_function": _est("fmc", "est.decision_function(X)"),
    "FMClassifier.predict_log_proba": _est("fmc", "est.predict_log_proba(X)"),
    "FMClassifier.score": _est("fmc", "est.score(X, ycls(X))"),
    "MatrixFactorization.fit": _est("mf", "est.fit(X)", shape=(9, 8)),
    "MatrixFactorization.partial_fit": _est("mf", "est.partial_fit(X)", shape=(9, 8)),
    "MatrixFactorization.fit(eval_set)": _est("mf", "est.fit(R_TRAIN, eval_set=X)",
                                              names=("eval_set",), shape=(9, 8)),
    "MatrixFactorization-bpr.fit": _est("mfbpr", "est.fit(X)", shape=(9, 8)),
    "MatrixFactorization-warp.fit": _est("mfwarp", "est.fit(X)", shape=(9, 8)),
    "MatrixFactorization-warp.partial_fit": _est("mfwarp", "est.partial_fit(X)", shape=(9, 8)),
    "MatrixFactorization.fit(user_features)": _est(
        "mf", "est.fit(R_TRAIN, user_features=X)", names=("user_features",), shape=(9, 5)),
    "MatrixFactorization.fit(item_features)": _est(
        "mf", "est.fit(R_TRAIN, item_features=X)", names=("item_features",), shape=(8, 3)),
    "MatrixFactorization.partial_fit(item_features)": dict(
        shape=(8, 3), setup="est = fresh('mf'); est.fit(R_TRAIN, item_features=FEAT8)",
        act="est.partial_fit(R_TRAIN, item_features=X)", names=("item_features",),
        watch="est"),
    "MatrixFactorization.recommend(item_features)": _est(
        "mf", "est.recommend([0], n=2, item_features=X)", names=("item_features",),
        shape=(9, 8)),
    "MatrixFactorization.predict(user_features)": _est(
        "mf", "est.predict([0], [1], user_features=X)", names=("user_features",),
        shape=(3, 9)),
    "MatrixFactorization.recommend(user_interactions)": _est(
        "mf", "est.recommend([0], n=2, user_interactions=X)", names=("user_interactions",),
        shape=(3, 8)),
    "MatrixFactorization-bpr.predict(user_interactions)": _est(
        "mfbpr", "est.predict([0], [1], user_interactions=X)", names=("user_interactions",),
        shape=(3, 8)),
    "metrics.precision_at_k": dict(shape=(3, 8), setup="rec = np.array([[0, 1, 2], [3, 4, 5], "
                                   "[6, 7, 0]])", act="metrics.precision_at_k(X, rec, k=3)",
                                   names=("X_true",), watch=None),
    "metrics.recall_at_k": dict(shape=(3, 8), setup="rec = np.array([[0, 1, 2], [3, 4, 5], "
                                "[6, 7, 0]])", act="metrics.recall_at_k(X, rec, k=3)",
                                names=("X_true",), watch=None),
    "metrics.ndcg_at_k": dict(shape=(3, 8), setup="rec = np.array([[0, 1, 2], [3, 4, 5], "
                              "[6, 7, 0]])", act="metrics.ndcg_at_k(X, rec, k=3)",
                              names=("X_true",), watch=None),
    "metrics.auc_score": dict(shape=(3, 8), setup="S = np.random.default_rng(0).normal("
                              "size=(3, 8))", act="metrics.auc_score(X, S)",
                              names=("X_true",), watch=None),
    "metrics.auc_score(exclude)": dict(
        shape=(3, 8), setup="S = np.random.default_rng(0).normal(size=(3, 8)); "
        "T = sp.csr_matrix(dense_full_rows((3, 8), seed=5))",
        act="metrics.auc_score(T, S, exclude=X)", names=("exclude",), watch=None),
    "metrics.map_at_k": dict(shape=(3, 8), setup="rec = np.array([[0, 1, 2], [3, 4, 5], "
                             "[6, 7, 0]])", act="metrics.map_at_k(X, rec, k=3)",
                             names=("X_true",), watch=None),
    "metrics.mrr_at_k": dict(shape=(3, 8), setup="rec = np.array([[0, 1, 2], [3, 4, 5], "
                             "[6, 7, 0]])", act="metrics.mrr_at_k(X, rec, k=3)",
                             names=("X_true",), watch=None),
    "metrics.hit_rate_at_k": dict(shape=(3, 8), setup="rec = np.array([[0, 1, 2], [3, 4, 5], "
                                  "[6, 7, 0]])", act="metrics.hit_rate_at_k(X, rec, k=3)",
                                  names=("X_true",), watch=None),
    "recommend.evaluate(X_train)": _est("mf", "evaluate(est, X, R_TRAIN, k=3)",
                                        names=("X_train",), shape=(9, 8)),
    "recommend.evaluate(X_test)": _est("mf", "evaluate(est, R_TRAIN, X, k=3)",
                                       names=("X_test",), shape=(9, 8)),
    "recommend.add_identity_features": dict(shape=(5, 3), setup="",
                                            act="add_identity_features(X, n_identity=2)",
                                            names=("features",), watch=None),
    "datasets.holdout_split": dict(shape=(9, 8), setup="", act="holdout_split(X, 0.5, "
                                   "random_state=0)", names=("X",), watch=None),
}

# Entry points that share their validation with one above get a representative subset of the
# corruptions (a few per format); the others get every kind.
REDUCED_KINDS = {"csr": ("index-past-end", "indptr-decreasing", "indptr-end-past-nnz"),
                 "csc": ("index-negative", "indptr-start-negative", "data-short"),
                 "coo": ("col-past-end", "row-negative"),
                 "bsr": ("block-index-past-end", "indptr-decreasing"),
                 "dia": ("more-offsets-than-diagonals",),
                 "lil": ("col-past-end",),
                 "dok": ("key-past-end",)}
for _entry in ("SGDClassifier.decision_function", "SGDClassifier.predict_proba",
               "SGDClassifier.predict_log_proba", "FMClassifier.predict_log_proba",
               "SGDClassifier.score", "SGDRegressor.score", "FMRegressor.score",
               "FMClassifier.predict_proba", "FMClassifier.decision_function",
               "FMClassifier.score", "MatrixFactorization.fit(eval_set)",
               "MatrixFactorization-bpr.fit", "MatrixFactorization-warp.fit",
               "MatrixFactorization-warp.partial_fit", "metrics.recall_at_k",
               "metrics.ndcg_at_k",
               "MatrixFactorization.partial_fit(item_features)",
               "recommend.add_identity_features",
               "MatrixFactorization.predict(user_features)",
               "MatrixFactorization-bpr.predict(user_interactions)",
               "metrics.auc_score(exclude)", "metrics.map_at_k", "metrics.mrr_at_k",
               "metrics.hit_rate_at_k", "recommend.evaluate(X_train)",
               "recommend.evaluate(X_test)"):
    SPARSE_ENTRIES[_entry]["kinds"] = REDUCED_KINDS
for _o in ("Adam-decay", "Adagrad-rowwise", "Adam-rowwise", "RMSprop-rowwise", "RMSprop-decay",
           "SGD", "Ftrl"):
    SPARSE_ENTRIES[f"{_o}.step"] = dict(shape=(12, 4), setup=f"opt = warmed({_o!r})",
                                        act="opt.step({'emb': X, 'bias': np.ones(12)})",
                                        names=("emb",), watch="opt", kinds=REDUCED_KINDS)


def _sparse_probes():
    probes = []
    for e_i, (entry, spec) in enumerate(SPARSE_ENTRIES.items()):
        shape = spec["shape"]
        kinds_by_fmt = spec.get("kinds")
        for f_i, fmt in enumerate(FORMATS):
            kinds = KINDS[fmt] if kinds_by_fmt is None else kinds_by_fmt[fmt]
            for k_i, kind in enumerate(kinds):
                array = (e_i + f_i + k_i) % 2 == 1
                cls = f"{fmt}_{'array' if array else 'matrix'}"
                setup = (f"{spec['setup']}\n"
                         f"X = bad_sparse({fmt!r}, {kind!r}, {shape!r}, array={array})")
                expect = ("ValueError", "TypeError") if kind in DTYPE_KINDS else ("ValueError",)
                # a message about NaN values means the malformed structure was converted
                # (and read out of bounds) before anything checked it
                probes.append(Probe(
                    name=f"sparse/{entry}/{cls}/{kind}", setup=setup, act=spec["act"],
                    expect=expect, names=spec["names"], watch=spec["watch"], limit=10,
                    forbid=("NaN", "infinite")))
            # the same entry point with a valid matrix of this format must work
            array = (e_i + f_i) % 2 == 0
            setup = (f"{spec['setup']}\nX = valid_sparse({fmt!r}, {shape!r}, array={array})")
            if fmt == "dia":
                setup += f"\nX = sp.{fmt}_{'array' if array else 'matrix'}(X)"
            probes.append(Probe(name=f"valid/{entry}/{fmt}_{'array' if array else 'matrix'}",
                                setup=setup, act=spec["act"], expect=(), limit=10))
    return probes


# =========================================================================== hand-written probes

def P(name, setup, act, expect=("ValueError",), **kw):
    return Probe(name=name, setup=setup, act=act, expect=tuple(expect), **kw)


# a step large enough to run on several threads
BIG = "P = np.zeros((1024, 512), np.float32); G = np.ones_like(P)"


def _thread_probes():
    out = []
    for n in (10**4, 10**5):
        for cls in ("so.Adam", "so.Adagrad", "so.RMSprop", "so.Ftrl", "SGD"):
            out.append(P(f"n_threads/{cls.split('.')[-1]}({n})", BIG,
                         f"opt = {cls}([P], n_threads={n}); opt.step([G])",
                         names=("n_threads",), limit=15))
        out.append(P(f"n_threads/Adam.n_threads attribute set to {n}", BIG + "\nopt = so.Adam([P])",
                     f"opt.n_threads = {n}; opt.step([G])", names=("n_threads",),
                     watch="P", success_ok=True, check="finite(P)", limit=15))
        for est, fit in (("SGDClassifier", "fit(X8, ycls(X8))"),
                         ("SGDRegressor", "fit(X8, yreg(X8))"),
                         ("FMRegressor", "fit(X8, yreg(X8))"),
                         ("FMClassifier", "fit(X8, ycls(X8))"),
                         ("MatrixFactorization", "fit(R_TRAIN)")):
            out.append(P(f"n_threads/{est}({n}).fit", "",
                         f"{est}(n_threads={n}).{fit}", names=("n_threads",), limit=15))
        # a fitted model whose n_threads was raised: predicting a large batch must not try to
        # start that many threads (refuse it, or run)
        out.append(P(f"n_threads/MatrixFactorization.predict after set_params({n})",
                     "est = fresh('mf'); est.set_params(n_threads=" + str(n) + ")\n"
                     "u = np.arange(40000) % 9; i = np.arange(40000) % 8",
                     "est.predict(u, i)", names=("n_threads",), watch="est",
                     success_ok=True, limit=15))
        out.append(P(f"n_threads/FMRegressor.predict after set_params({n})",
                     "est = fresh('fmr'); est.set_params(n_threads=" + str(n) + ")\n"
                     "Xb = sp.random(20000, 7, density=0.9, format='csr', random_state=0)",
                     "est.predict(Xb)", names=("n_threads",), watch="est",
                     success_ok=True, limit=15))
    return out


def _eps_probes():
    out = []
    zero_step = "opt.step([so.RowGrad([1], np.zeros((1, 4), np.float32))])"
    for label, ctor in [
        ("Adam", "so.Adam([P], eps=0.0)"),
        ("Adam-amsgrad", "so.Adam([P], eps=0.0, amsgrad=True)"),
        ("Adam-torch", "so.Adam([P], eps=0.0, preset='torch')"),
        ("Adam-decay", "so.Adam([P], eps=0.0, lazy='decay')"),
        ("Adagrad", "so.Adagrad([P], eps=0.0)"),
        ("Adagrad-rowwise", "so.Adagrad([P], eps=0.0, rowwise=True)"),
        ("RMSprop", "so.RMSprop([P], eps=0.0)"),
        ("RMSprop-centered", "so.RMSprop([P], eps=0.0, centered=True)"),
        ("RMSprop-momentum", "so.RMSprop([P], eps=0.0, momentum=0.9)"),
    ]:
        out.append(P(f"eps=0/{label}", "P = np.ones((6, 4), np.float32)",
                     f"opt = {ctor}\n{zero_step}\n{zero_step}", names=("eps",),
                     success_ok=True, check="finite(P)"))
    # valid: TF's Adagrad has no eps but starts its accumulator at 0.1
    out.append(P("eps=0/Adagrad-tensorflow (valid)", "P = np.ones((6, 4), np.float32)",
                 f"opt = so.Adagrad([P], preset='tensorflow')\n{zero_step}", expect=(),
                 check="finite(P)"))
    # eps changed to 0 between steps through param_groups
    for label, kind in (("Adam", "Adam"), ("Adagrad", "Adagrad-rowwise"),
                        ("RMSprop", "RMSprop-decay")):
        out.append(P(f"eps=0/{label} via param_groups", f"opt = warmed({kind!r})",
                     "opt.param_groups[0]['eps'] = 0.0\n"
                     "opt.step({'emb': row_grad([7], value=0.0), 'bias': None})",
                     names=("eps",), success_ok=True, check="opt_finite(opt)"))
    return out


def _ftrl_probes():
    """FTRL's hyper-parameters: refused before any kernel runs (lr that divides, lr_power
    whose power of a zero accumulator blows up, negative penalties, a float64 lr that is 0
    in float32), whether given to the constructor or through param_groups; and a state
    whose accumulator went negative."""
    out = []
    step = "opt.step({'emb': row_grad([7], value=1.0), 'bias': None})"
    for hyper, value in (("lr", 0.0), ("lr", 1e-50), ("lr", float("nan")), ("lr_power", 0.5),
                         ("l1", -1.0), ("l2", -0.1), ("l2_shrinkage", float("inf")),
                         ("beta", -1.0), ("initial_accumulator_value", -0.1),
                         ("convention", "'keras'")):
        v = value if isinstance(value, str) else f"float({str(value)!r})"
        out.append(P(f"ftrl/{hyper}={value} (constructor)", "",
                     f"so.Ftrl([np.ones((6, 4), np.float32)], {hyper}={v})", names=(hyper,)))
        out.append(P(f"ftrl/{hyper}={value} (param_groups)",
                     f"opt = warmed('Ftrl'); opt.param_groups[0][{hyper!r}] = {v}", step,
                     names=(hyper,), watch="opt"))
    out.append(P("ftrl/negative accumulator in state_dict", "opt = warmed('Ftrl')",
                 "sd = opt.state_dict(); sd['state']['emb']['n'] = -np.ones((12, 4), np.float32)"
                 "\nopt.load_state_dict(sd)", names=("n",), watch="opt"))
    return out


def _half_probes():
    """Half-precision tables: a storage option that does not fit the arrays is refused at
    construction; a bad gradient or a float32 view of the table changes nothing or is read
    before the update."""
    out = []
    for what, setup, act, exc, names in (
            ("dtype='bfloat16' on a float32 array", "",
             "so.Adam([np.zeros((6, 4), np.float32)], dtype='bfloat16')", "TypeError",
             ("uint16",)),
            ("a uint16 array without dtype", "",
             "so.Adagrad([np.zeros((6, 4), np.uint16)])", "TypeError", ("bfloat16",)),
            ("stochastic rounding of float16", "",
             "so.RMSprop([np.zeros((6, 4), np.float16)], rounding='stochastic')",
             "ValueError", ("stochastic",)),
            ("dtype='float16' (a string)", "",
             "so.Adam([np.zeros((6, 4), np.uint16)], dtype='float16')", "ValueError",
             ("dtype",)),
            ("seed=2**32", "",
             "so.Adam([np.zeros((6, 4), np.uint16)], dtype='bfloat16', seed=2**32)",
             "ValueError", ("seed",)),
            ("Ftrl on float16", "", "so.Ftrl([np.zeros((6, 4), np.float16)])", "TypeError",
             ("float16",)),
            ("gradient of the wrong width",
             "H = np.zeros((6, 4), np.uint16); opt = so.Adam([H], dtype='bfloat16')",
             "opt.step([row_grad([1], d=3)])", "ValueError", ("shape",)),
            ("gradient row out of range",
             "H = np.zeros((6, 4), np.float16); opt = so.Adam([H])",
             "opt.step([row_grad([6])])", "IndexError", ("6",)),
            ("state_dtype='float16'", "",
             "so.Adam([np.zeros((6, 4), np.float32)], state_dtype='float16')", "ValueError",
             ("state_dtype",)),
            ("bfloat16 moments with lazy='decay'", "",
             "so.Adam([np.zeros((6, 4), np.float32)], state_dtype='bfloat16', lazy='decay')",
             "ValueError", ("lazy",)),
            ("bfloat16 moments of a float64 table", "",
             "so.Adam([np.zeros((6, 4))], state_dtype='bfloat16')", "ValueError",
             ("float64",)),
            ("float32 moments loaded into bfloat16 moments",
             "H = np.zeros((6, 4), np.float32); opt = so.Adam([H], state_dtype='bfloat16'); "
             "src = so.Adam([np.zeros((6, 4), np.float32)]); src.step([row_grad([1])])",
             "opt.load_state_dict(src.state_dict())", "ValueError", ("uint16",)),
            ("bfloat16 square average with lazy='decay'", "",
             "so.RMSprop([np.zeros((6, 4), np.float32)], state_dtype='bfloat16', lazy='decay')",
             "ValueError", ("lazy",)),
            ("bfloat16 row-wise accumulator", "",
             "so.Adagrad([np.zeros((6, 4), np.float32)], state_dtype='bfloat16', rowwise=True)",
             "ValueError", ("rowwise",)),
            ("bfloat16 row-wise square average", "",
             "so.RMSprop([np.zeros((6, 4), np.float32)], state_dtype='bfloat16', rowwise=True)",
             "ValueError", ("rowwise",)),
            ("bfloat16 accumulator of a float64 table", "",
             "so.Adagrad([np.zeros((6, 4))], state_dtype='bfloat16')", "ValueError",
             ("float64",)),
            ("eps=0 with a start that rounds to bfloat16 zero", "",
             "so.Adagrad([np.zeros((6, 4), np.float32)], state_dtype='bfloat16', eps=0.0, "
             "initial_accumulator_value=1e-45)", "ValueError", ("eps",)),
            ("float32 accumulator loaded into a bfloat16 one",
             "H = np.zeros((6, 4), np.float32); opt = so.Adagrad([H], state_dtype='bfloat16'); "
             "src = so.Adagrad([np.zeros((6, 4), np.float32)]); src.step([row_grad([1])])",
             "opt.load_state_dict(src.state_dict())", "ValueError", ("uint16",)),
            ("bfloat16 square average replaced by float32",
             "H = np.zeros((6, 4), np.float32); "
             "opt = so.RMSprop([H], state_dtype='bfloat16'); opt.step([row_grad([1])]); "
             "opt.state[0]['square_avg'] = np.zeros((6, 4), np.float32)",
             "opt.step([row_grad([2])])", "ValueError", ("square_avg",))):
        out.append(P(f"half/{what}", setup, act, expect=(exc,), names=names,
                     **({"watch": "H"} if "H =" in setup else {})))
    return out


def _readonly_probes():
    out = []
    for kind in ("Adam", "Adam-decay", "Adagrad-rowwise", "Adam-rowwise", "RMSprop-rowwise",
                 "RMSprop-decay", "SGD"):
        for which in ("emb", "bias"):
            out.append(P(f"read-only/{kind}.step ({which} read-only)",
                         f"opt = warmed({kind!r}); opt.params[{0 if which == 'emb' else 1}]"
                         ".flags.writeable = False",
                         "opt.step({'emb': row_grad([1, 2]), 'bias': np.ones(12)})",
                         names=(which,), watch="opt"))
    out.append(P("read-only/Adam-decay.flush", "opt = warmed('Adam-decay', steps=4); "
                 "opt.params[0].flags.writeable = False", "opt.flush()", names=("emb",),
                 watch="opt"))
    out.append(P("read-only/MatrixFactorization.partial_fit (item_table_ read-only)",
                 "est = fresh('mf'); est.item_table_.flags.writeable = False",
                 "est.partial_fit(R_TRAIN)", names=("item_table_", "read-only"), watch="est"))
    out.append(P("read-only/FMRegressor.partial_fit (table_ read-only)",
                 "est = fresh('fmr'); est.table_.flags.writeable = False",
                 "est.partial_fit(X8, yreg(X8))", names=("table_", "read-only"), watch="est"))
    return out


def _state_probes():
    out = []
    g = "opt.step({'emb': row_grad([0, 5]), 'bias': np.ones(12)})"
    loads = [
        ("Adam", "exp_avg_sq", "-1.0", ("exp_avg_sq",)),
        ("Adam", "exp_avg_sq", "np.inf", ("exp_avg_sq",)),
        ("Adam", "exp_avg", "np.nan", ("exp_avg",)),
        ("Adam", "exp_avg", "np.inf", ("exp_avg",)),
        ("Adagrad-rowwise", "sum", "-1.0", ("sum",)),
        ("Adagrad-rowwise", "sum", "np.nan", ("sum",)),
        ("Adam-rowwise", "exp_avg_sq", "-1.0", ("exp_avg_sq",)),
        ("Adam-rowwise", "max_exp_avg_sq", "np.nan", ("max_exp_avg_sq",)),
        ("RMSprop-rowwise", "square_avg", "-1.0", ("square_avg",)),
        ("RMSprop-rowwise", "grad_avg", "np.inf", ("grad_avg",)),
        ("RMSprop-decay", "square_avg", "-1.0", ("square_avg",)),
        ("RMSprop-decay", "grad_avg", "np.nan", ("grad_avg",)),
        ("RMSprop-decay", "momentum_buffer", "np.inf", ("momentum_buffer",)),
    ]
    for kind, key, value, names in loads:
        out.append(P(f"load_state_dict/{kind} {key}={value}",
                     f"opt = warmed({kind!r}); sd = copy.deepcopy(opt.state_dict()); "
                     f"sd['state']['emb'][{key!r}][0] = {value}",
                     "opt.load_state_dict(sd)", names=names, watch="opt"))
    out.append(P("load_state_dict/Adam-amsgrad max_exp_avg_sq=-1",
                 "opt = warmed('Adam', amsgrad=True); sd = copy.deepcopy(opt.state_dict()); "
                 "sd['state']['emb']['max_exp_avg_sq'][0] = -1.0",
                 "opt.load_state_dict(sd)", names=("max_exp_avg_sq",), watch="opt"))
    out.append(P("load_state_dict/Adagrad sum=-1 (element-wise)",
                 "opt = make_opt('Adam'); opt = so.Adagrad({'emb': opt.params[0], 'bias': "
                 "opt.params[1]}); opt.step({'emb': row_grad([1]), 'bias': None}); "
                 "sd = copy.deepcopy(opt.state_dict()); sd['state']['emb']['sum'][1] = -4.0",
                 "opt.load_state_dict(sd)", names=("sum",), watch="opt"))
    out.append(P("load_state_dict/RMSprop-centered square_avg < grad_avg**2",
                 "opt = warmed('RMSprop-decay'); sd = copy.deepcopy(opt.state_dict()); "
                 "sd['state']['emb']['square_avg'][5] = 0.0; "
                 "sd['state']['emb']['grad_avg'][5] = 1.0",
                 f"opt.load_state_dict(sd)\n{g}",
                 names=("square_avg", "grad_avg"), watch="opt", success_ok=True,
                 check="opt_finite(opt)"))
    for label, sd in [("state=[]", "dict(opt.state_dict(), state=[])"),
                      ("state=None", "dict(opt.state_dict(), state=None)"),
                      ("state={'emb': []}", "dict(opt.state_dict(), state={'emb': []})"),
                      ("state={'emb': None}", "dict(opt.state_dict(), state={'emb': None})"),
                      ("param_groups=[]", "dict(opt.state_dict(), param_groups=[])"),
                      ("param_groups=[None]", "dict(opt.state_dict(), param_groups=[None])"),
                      ("step='3'", "copy.deepcopy(opt.state_dict())"),
                      ("exp_avg as list", "copy.deepcopy(opt.state_dict())")]:
        setup = f"opt = warmed('Adam'); sd = {sd}"
        if label == "step='3'":
            setup += "; sd['state']['emb']['step'] = '3'"
        if label == "exp_avg as list":
            setup += "; sd['state']['emb']['exp_avg'] = sd['state']['emb']['exp_avg'].tolist()"
        names = {"state=[]": ("state",), "state=None": ("state",),
                 "state={'emb': []}": ("emb", "state"), "state={'emb': None}": ("emb", "state"),
                 "param_groups=[]": ("param_groups",), "param_groups=[None]": ("param_groups",),
                 "step='3'": ("step",), "exp_avg as list": ("exp_avg",)}[label]
        out.append(P(f"load_state_dict/{label}", setup, "opt.load_state_dict(sd)",
                     expect=("ValueError", "TypeError"), names=names, watch="opt",
                     success_ok=label == "exp_avg as list",
                     check="opt_finite(opt)" if label == "exp_avg as list" else None))
    # a huge but consistent step count: loading it must be refused, or stepping must work
    out.append(P("load_state_dict/Adam step=2**62",
                 "opt = warmed('Adam'); sd = copy.deepcopy(opt.state_dict()); "
                 "sd['state']['emb']['step'] = 2**62",
                 f"opt.load_state_dict(sd)\n{g}", names=("step",), watch="opt",
                 success_ok=True, check="opt_finite(opt)"))
    out.append(P("load_state_dict/Adam-decay step=2**62",
                 "opt = warmed('Adam-decay'); sd = copy.deepcopy(opt.state_dict()); "
                 "st = sd['state']['emb']; st['step'] = 2**62",
                 f"opt.load_state_dict(sd)\n{g}\nopt.flush()", expect=("ValueError",),
                 names=("step",), watch="opt", success_ok=True,
                 check="opt_finite(opt)"))
    # counters edited in place after state_dict() (its arrays are the live state)
    for kind, counter in (("Adam", "row_step"), ("Adam-decay", "last_step"),
                          ("Adam-decay", "first_step"), ("RMSprop-decay", "last_step")):
        for value in ("-1", "-(2**40)", "2**62", "50"):
            out.append(P(f"edited counter/{kind} {counter}={value}",
                         f"opt = warmed({kind!r}); sd = opt.state_dict(); "
                         f"sd['state']['emb'][{counter!r}][:] = {value}",
                         f"{g}\nopt.flush()",
                         expect=("ValueError", "RuntimeError", "IndexError", "OverflowError"),
                         names=(counter, "emb"), success_ok=True, check="opt_finite(opt)"))
    # opt.state replaced wholesale: must be refused at the next step, not read by a kernel
    out.append(P("edited state/Adam exp_avg replaced by a shorter array",
                 "opt = warmed('Adam'); opt.state['emb']['exp_avg'] = np.zeros((2, 4), "
                 "np.float32)", g, names=("exp_avg", "emb"), watch="opt"))
    out.append(P("edited state/Adagrad-rowwise sum replaced by a shorter array",
                 "opt = warmed('Adagrad-rowwise'); opt.state['emb']['sum'] = np.zeros(2, "
                 "np.float32)", g, names=("sum", "emb"), watch="opt"))
    for kind, key in (("Adam-rowwise", "exp_avg_sq"), ("RMSprop-rowwise", "square_avg")):
        out.append(P(f"edited state/{kind} {key} replaced by a shorter array",
                     f"opt = warmed({kind!r}); opt.state['emb'][{key!r}] = np.zeros(2, "
                     "np.float32)", g, names=(key, "emb"), watch="opt"))
        out.append(P(f"edited state/{kind} {key} replaced by a per-element array",
                     f"opt = warmed({kind!r}); opt.state['emb'][{key!r}] = np.zeros((12, 4), "
                     "np.float32)", g, names=(key, "emb"), watch="opt"))
    out.append(P("edited state/Adam-decay row_wd_log truncated",
                 "opt = warmed('Adam-decay', steps=5); opt.state['emb']['row_wd_log'] = "
                 "np.zeros(1)", f"{g}\nopt.flush()", names=("row_wd_log", "emb"),
                 watch="opt"))
    return out


def _dok_probes():
    out = []
    dok = "D = sp.dok_matrix((12, 4), dtype=np.float32); D[3, 1] = 1.0"
    out.append(P("dok/step(dok_matrix) on a 2-parameter dict optimizer", f"opt = warmed(); {dok}",
                 "opt.step(D)", expect=("TypeError", "ValueError"),
                 names=("dok_matrix", "sparse", "grads"),
                 forbid=("unknown parameter",), watch="opt"))
    out.append(P("dok/step(empty dok_matrix) on a 2-parameter dict optimizer",
                 "opt = warmed(); D = sp.dok_matrix((12, 4), dtype=np.float32)",
                 "opt.step(D)", expect=("TypeError", "ValueError"),
                 names=("dok_matrix", "sparse", "grads"), watch="opt"))
    out.append(P("dok/step(dok_array) on a 2-parameter list optimizer",
                 "rng = np.random.default_rng(0); opt = so.Adam([rng.normal(size=(12, 4)), "
                 "rng.normal(size=12)]); D = sp.dok_array((12, 4)); D[3, 1] = 1.0",
                 "opt.step(D)", expect=("TypeError", "ValueError"),
                 names=("dok_array", "sparse", "grads"),
                 forbid=("built from a list",), watch="opt"))
    # valid: a DOK gradient for a single parameter, however the optimizer was built
    for label, build in (("array", "so.Adam(P, lr=0.1)"), ("list", "so.Adam([P], lr=0.1)"),
                         ("dict", "so.Adam({'w': P}, lr=0.1)")):
        out.append(P(f"dok/step(dok_matrix) on a single-parameter optimizer ({label}) works",
                     "P = np.ones((12, 4)); Q = P.copy(); "
                     "D = sp.dok_matrix((12, 4)); D[3, 1] = 1.0; D[7, 0] = -2.0; "
                     f"opt = {build}; twin = so.Adam([Q], lr=0.1)",
                     "opt.step(D); twin.step([D.tocsr()])", expect=(),
                     check="np.array_equal(P, Q) and not np.array_equal(P, np.ones((12, 4)))"))
    return out


def _attribute_probes():
    out = []
    mf_calls = {"predict": "est.predict([0, 1, 8], [7, 6, 0])",
                "recommend": "est.recommend([0, 1, 8], n=5)",
                "similar_items": "est.similar_items([0, 7], n=3)",
                "similar_users": "est.similar_users([0, 8], n=3)",
                "recommend(items)": "est.recommend([0, 8], n=3, filter_items=[0], items=[1, 7])",
                "evaluate": "evaluate(est, R_TRAIN, R_TRAIN, k=3)",
                "partial_fit": "est.partial_fit(R_TRAIN)"}
    mf_edits = {
        "item_table_[:5]": ("est.item_table_ = est.item_table_[:5]", ("item_table_",)),
        "user_table_[:3]": ("est.user_table_ = est.user_table_[:3]", ("user_table_",)),
        "user_table_ narrower": ("est.user_table_ = np.ascontiguousarray(est.user_table_[:, :1])",
                                 ("user_table_",)),
        "item_table_ float64": ("est.item_table_ = est.item_table_.astype(np.float64)",
                                ("item_table_",)),
        "item_table_ Fortran order": ("est.item_table_ = np.asfortranarray(est.item_table_)",
                                      ("item_table_",)),
        "n_items_=100": ("est.n_items_ = 100", ("n_items_", "item_table_")),
        "n_users_=100": ("est.n_users_ = 100", ("n_users_", "user_table_")),
        "n_components_=40": ("est.n_components_ = 40",
                             ("n_components_", "user_table_", "item_table_")),
    }
    for edit, (code, names) in mf_edits.items():
        for call, act in mf_calls.items():
            if edit == "n_users_=100" and call == "predict":
                act = "est.predict([50, 1], [0, 1])"
            if edit == "n_users_=100" and call == "recommend":
                act = "est.recommend([50, 99], n=3)"
            if edit == "n_items_=100" and call == "predict":
                act = "est.predict([0, 1], [50, 99])"
            if edit == "n_items_=100" and call == "similar_items":
                act = "est.similar_items([50, 99], n=3)"
            if edit == "n_users_=100" and call == "similar_users":
                act = "est.similar_users([50, 99], n=3)"
            if edit == "n_items_=100" and call == "recommend(items)":
                act = "est.recommend([0], n=3, filter_items=[50], items=[99, 1])"
            out.append(P(f"attribute/MatrixFactorization {edit} -> {call}",
                         f"est = fresh('mf'); {code}", act, names=names, watch="est"))
    fm_calls = {"fmr": {"predict": "est.predict(X8)", "partial_fit":
                        "est.partial_fit(X8, yreg(X8))"},
                "fmc": {"predict_proba": "est.predict_proba(X8)", "partial_fit":
                        "est.partial_fit(X8, ycls(X8))"}}
    fm_edits = {
        "table_[:5]": ("est.table_ = est.table_[:5]", ("table_",)),
        "table_ narrower": ("est.table_ = np.ascontiguousarray(est.table_[:, :2])", ("table_",)),
        "table_ float32": ("est.table_ = est.table_.astype(np.float32)", ("table_",)),
        "w0_ empty": ("est.w0_ = np.zeros(0)", ("w0_",)),
        "w0_ (3,)": ("est.w0_ = np.zeros(3)", ("w0_",)),
        "n_components_=30": ("est.n_components_ = 30", ("n_components_", "table_")),
    }
    for key, calls in fm_calls.items():
        label = {"fmr": "FMRegressor", "fmc": "FMClassifier"}[key]
        for edit, (code, names) in fm_edits.items():
            for call, act in calls.items():
                out.append(P(f"attribute/{label} {edit} -> {call}",
                             f"est = fresh({key!r}); {code}", act, names=names, watch="est"))
    # SGD: coef_/intercept_ are properties; a wrong shape is refused by the setter (naming
    # the attribute) or, if it was stored, by predict
    sgd_edits = {
        "coef_ (1, 3)": ("est.coef_ = np.zeros((1, 3))", ("coef_",)),
        "coef_ (2, 7)": ("est.coef_ = np.zeros((2, 7))", ("coef_",)),
        "coef_ sparse (1, 3)": ("est.coef_ = sp.csr_matrix((1, 3))", ("coef_",)),
        "coef_ sparse (1, 50)": ("est.coef_ = sp.csr_matrix(np.ones((1, 50)))", ("coef_",)),
        "intercept_ (3,)": ("est.intercept_ = np.zeros(3)", ("intercept_",)),
        "intercept_ empty": ("est.intercept_ = np.zeros(0)", ("intercept_",)),
    }
    for key, label, call in (("sgdc", "SGDClassifier", "est.decision_function(X8)"),
                             ("sgdr", "SGDRegressor", "est.predict(X8)")):
        for edit, (code, names) in sgd_edits.items():
            out.append(P(f"attribute/{label} set {edit}", f"est = fresh({key!r})", code,
                         names=names, watch="est", success_ok=True))
            out.append(P(f"attribute/{label} {edit} -> predict",
                         f"est = fresh({key!r})\ntry:\n    {code}\n    refused = False\n"
                         "except ValueError:\n    refused = True",
                         call, names=names, watch="est", success_ok=True,
                         check="refused"))
            out.append(P(f"attribute/{label} {edit} -> partial_fit",
                         f"est = fresh({key!r})\ntry:\n    {code}\n    refused = False\n"
                         "except ValueError:\n    refused = True",
                         "est.partial_fit(X8, " + ("ycls" if key == "sgdc" else "yreg") +
                         "(X8))", names=names + ("densify",), watch="est", success_ok=True,
                         check="refused"))
    return out


def _failed_fit_probes():
    out = []
    X5 = "X5 = sp.csr_matrix(dense_full_rows((8, 5), seed=2))"
    for key, label, y in (("sgdc", "SGDClassifier", "ycls"), ("sgdr", "SGDRegressor", "yreg")):
        out.append(P(f"failed fit/{label} warm_start refit with 5 features instead of 7",
                     f"est = fresh({key!r}); est.set_params(warm_start=True); {X5}",
                     f"est.fit(X5, {y}(X5))", names=("X", "coef_init", "n_features",
                                                     "features"), watch="est"))
        out.append(P(f"failed fit/{label} partial_fit with 5 features",
                     f"est = fresh({key!r}); {X5}", f"est.partial_fit(X5, {y}(X5))",
                     names=("X",), watch="est"))
        out.append(P(f"failed fit/{label} fit with coef_init of the wrong shape",
                     f"est = fresh({key!r}); {X5}",
                     f"est.fit(X5, {y}(X5), coef_init=np.zeros(3))", names=("coef_init",),
                     watch="est"))
        out.append(P(f"failed fit/{label} fit with sample_weight of the wrong length",
                     f"est = fresh({key!r}); {X5}",
                     f"est.fit(X5, {y}(X5), sample_weight=np.ones(3))",
                     names=("sample_weight",), watch="est"))
        out.append(P(f"failed fit/{label} fit with NaN in X",
                     f"est = fresh({key!r}); Xn = X8.toarray(); Xn[0, 0] = np.nan",
                     f"est.fit(Xn, {y}(Xn))", names=("X",), watch="est"))
        out.append(P(f"failed fit/{label} fit with invalid alpha",
                     f"est = fresh({key!r}); est.set_params(alpha=-1.0); {X5}",
                     f"est.fit(X5, {y}(X5))", names=("alpha",), watch="est"))
    out.append(P("failed fit/SGDClassifier fit with one class and 5 features",
                 f"est = fresh('sgdc'); {X5}", "est.fit(X5, np.zeros(8))",
                 names=("y", "classes", "class"), watch="est"))
    out.append(P("failed fit/SGDClassifier partial_fit with new classes",
                 "est = fresh('sgdc')", "est.partial_fit(X8, ycls(X8) + 5, classes=[5, 6])",
                 names=("classes",), watch="est"))
    for key, label, y in (("fmr", "FMRegressor", "yreg"), ("fmc", "FMClassifier", "ycls")):
        out.append(P(f"failed fit/{label} fit with negative sample_weight and 5 features",
                     f"est = fresh({key!r}); {X5}",
                     f"est.fit(X5, {y}(X5), sample_weight=-np.ones(8))",
                     names=("sample_weight",), watch="est"))
        out.append(P(f"failed fit/{label} partial_fit with 5 features",
                     f"est = fresh({key!r}); {X5}", f"est.partial_fit(X5, {y}(X5))",
                     names=("X",), watch="est"))
        out.append(P(f"failed fit/{label} fit with invalid n_components and 5 features",
                     f"est = fresh({key!r}); est.set_params(n_components=0); {X5}",
                     f"est.fit(X5, {y}(X5))", expect=("ValueError", "TypeError"),
                     names=("n_components",), watch="est"))
    out.append(P("failed fit/FMClassifier warm_start refit with other classes and 5 features",
                 f"est = fresh('fmc'); est.set_params(warm_start=True); {X5}",
                 "est.fit(X5, ycls(X5) + 2)", names=("classes", "y"), watch="est"))
    out.append(P("failed fit/FMClassifier partial_fit with an unknown label",
                 "est = fresh('fmc')", "est.partial_fit(X8, ycls(X8) * 7)",
                 names=("y", "classes"), watch="est"))
    out.append(P("failed fit/MatrixFactorization partial_fit with another shape",
                 "est = fresh('mf')", "est.partial_fit(make_ratings(10, 8, 30, random_state=1))",
                 names=("X",), watch="est"))
    out.append(P("failed fit/MatrixFactorization partial_fit with another loss",
                 "est = fresh('mf'); est.set_params(loss='bpr')", "est.partial_fit(R_TRAIN)",
                 names=("loss",), watch="est"))
    out.append(P("failed fit/MatrixFactorization fit with NaN ratings",
                 "est = fresh('mf'); Xn = R_TRAIN.copy(); Xn.data[0] = np.nan",
                 "est.fit(Xn)", names=("X",), watch="est"))
    # a dense array is accepted (the matrix of its non-zero entries), but only of reals
    out.append(P("failed fit/MatrixFactorization fit with a dense complex X",
                 "est = fresh('mf')", "est.fit(R_TRAIN.toarray().astype(complex))",
                 expect=("TypeError", "ValueError"), names=("X",), watch="est"))
    out.append(P("failed fit/MatrixFactorization fit with eval_set of another shape",
                 "est = fresh('mf')", "est.fit(R_TRAIN, eval_set=R_TRAIN[:4])",
                 names=("eval_set",), watch="est"))
    feat = "est = fresh('mf'); est.fit(R_TRAIN, item_features=FEAT8)"
    for label, act, exp, names in (
            ("item_features with NaN", "F = FEAT8.copy(); F.data[0] = np.nan; "
             "est.fit(R_TRAIN, item_features=F)", ("ValueError",), ("item_features",)),
            ("dense item_features", "est.fit(R_TRAIN, item_features=FEAT8.toarray())",
             ("TypeError",), ("item_features",)),
            ("item_features of another row count", "est.fit(R_TRAIN, item_features=FEAT8[:7])",
             ("ValueError",), ("item_features",)),
            ("user_features of float64 values too large for float32",
             "est.fit(R_TRAIN, user_features=sp.csr_matrix(np.full((9, 2), 1e39)))",
             ("ValueError",), ("user_features",)),
            ("partial_fit with another feature count",
             "est.partial_fit(R_TRAIN, item_features=sp.random(8, 4, density=0.5, "
             "format='csr', random_state=1))", ("ValueError",), ("item_features",)),
            ("partial_fit with user_features it was fitted without",
             "est.partial_fit(R_TRAIN, user_features=sp.identity(9, format='csr'))",
             ("ValueError",), ("user_features",))):
        out.append(P(f"failed fit/MatrixFactorization {label}", feat, act, expect=exp,
                     names=names, watch="est"))
    out.append(P("cold start/MatrixFactorization recommend with item_features of another "
                 "feature count", feat, "est.recommend([0], item_features=FEAT8[:, :2])",
                 names=("item_features",), watch="est"))
    out.append(P("cold start/MatrixFactorization recommend with user_features and "
                 "user_interactions", feat, "est.recommend([0], user_features="
                 "sp.identity(9, format='csr'), user_interactions=R_TRAIN)",
                 names=("user_features", "user_interactions"), watch="est"))
    out.append(P("cold start/MatrixFactorization predict with a new user id past the rows",
                 feat, "est.predict([3], [0], user_interactions=R_TRAIN[:3])",
                 expect=("IndexError",), names=("user_ids",), watch="est"))
    return out


def _duplicate_probes():
    out = []
    # ratings 4 and 5 for the same (user, item): summing them into 9 is silent corruption
    coo = ("R = sp.{cls}(({data}, ([0, 0, 1, 2], [0, 0, 1, 2])), shape=(3, 3))")
    csr = ("R = sp.{cls}(({data}, np.array([0, 0, 1, 2]), np.array([0, 2, 3, 4])), "
           "shape=(3, 3))")
    # summing gives the ratings 9, 3, 2 (mean 14/3); averaging 4.5, 3, 2; keeping both 4, 5, 3, 2
    check = "abs(est.global_mean_ - 14.0 / 3.0) > 1e-6"
    for label, build in (("coo_matrix", coo.format(cls="coo_matrix", data="[4.0, 5.0, 3.0, 2.0]")),
                         ("coo_array", coo.format(cls="coo_array", data="[4.0, 5.0, 3.0, 2.0]")),
                         ("csr_matrix", csr.format(cls="csr_matrix",
                                                   data="np.array([4.0, 5.0, 3.0, 2.0])")),
                         ("csr_array", csr.format(cls="csr_array",
                                                  data="np.array([4.0, 5.0, 3.0, 2.0])"))):
        out.append(P(f"duplicates/MatrixFactorization.fit {label} with (0, 0) rated 4 and 5",
                     build + "\nest = MatrixFactorization(n_components=2, n_epochs=1, "
                     "random_state=0)", "est.fit(R)", names=("X", "duplicate", "duplicates"),
                     success_ok=True, check=check))
    out.append(P("duplicates/MatrixFactorization.partial_fit coo with (0, 0) rated 4 and 5",
                 coo.format(cls="coo_matrix", data="[4.0, 5.0, 3.0, 2.0]") +
                 "\nest = MatrixFactorization(n_components=2, n_epochs=1, random_state=0)",
                 "est.partial_fit(R)", names=("X", "duplicate", "duplicates"),
                 success_ok=True, check=check))
    out.append(P("duplicates/MatrixFactorization eval_set with duplicates",
                 coo.format(cls="coo_matrix", data="[4.0, 5.0, 3.0, 2.0]") +
                 "\nest = MatrixFactorization(n_components=2, n_epochs=1, random_state=0)"
                 "\nT = sp.csr_matrix(([4.0, 3.0, 2.0], ([0, 1, 2], [0, 1, 2])), shape=(3, 3))",
                 "est.fit(T, eval_set=R)", names=("eval_set", "duplicate", "duplicates"),
                 success_ok=True,
                 check="est.history_[-1]['eval'] < 3.0"))
    return out


def _implicit_loss_probes():
    """The parameters of the implicit losses (``confidence_alpha``, ``max_sampled``) and the
    values confidence weighting reads: refused before anything changes."""
    out = []
    C = "C = R_TRAIN.copy()"   # ratings 1..5 read as counts
    for label, v in (("-1", "-1.0"), ("nan", "np.nan"), ("inf", "np.inf"), ("str", "'1'"),
                     ("bool", "True"), ("None", "None")):
        for key in ("mfwarp", "mfbpr"):
            out.append(P(f"implicit/{key}.fit(confidence_alpha={label})",
                         f"est = fresh({key!r}); est.set_params(confidence_alpha={v}); {C}",
                         "est.fit(C)", expect=("ValueError", "TypeError"),
                         names=("confidence_alpha",), watch="est"))
    for label, v in (("0", "0"), ("-3", "-3"), ("1001", "1001"), ("10**12", "10**12"),
                     ("2.5", "2.5"), ("True", "True"), ("None", "None")):
        out.append(P(f"implicit/warp.fit(max_sampled={label})",
                     f"est = fresh('mfwarp'); est.set_params(max_sampled={v}); {C}",
                     "est.fit(C)", expect=("ValueError", "TypeError"),
                     names=("max_sampled",), watch="est"))
        out.append(P(f"implicit/warp.partial_fit(max_sampled={label})",
                     f"est = fresh('mfwarp'); est.set_params(max_sampled={v}); {C}",
                     "est.partial_fit(C)", expect=("ValueError", "TypeError"),
                     names=("max_sampled",), watch="est"))
    out.append(P("implicit/squared loss with confidence_alpha=1",
                 "est = fresh('mf'); est.set_params(confidence_alpha=1.0)", "est.fit(R_TRAIN)",
                 names=("confidence_alpha",), watch="est"))
    for key, call in (("mfwarp", "fit"), ("mfwarp", "partial_fit"), ("mfbpr", "fit")):
        out.append(P(f"implicit/{key}.{call} with confidence and a negative count",
                     f"est = fresh({key!r}); est.set_params(confidence_alpha=1.0); {C}; "
                     "C.data[3] = -2.0", f"est.{call}(C)", names=("X",), watch="est"))
        out.append(P(f"implicit/{key}.{call} with confidence weights that overflow",
                     f"est = fresh({key!r}); est.set_params(confidence_alpha=1e300); {C}; "
                     "C.data[:] = 1e300", f"est.{call}(C)", names=("X", "confidence_alpha"),
                     watch="est"))
    # values ignored without confidence: negative and huge values are positives like any other
    out.append(P("implicit/warp.fit without confidence reads any value as a positive",
                 f"est = fresh('mfwarp'); est.set_params(confidence_alpha=0.0); {C}; "
                 "C.data[:3] = [-2.0, 1e30, -1e30]", "est.fit(C)", expect=(),
                 check="finite(est.item_table_, est.user_table_)"))
    # a finite but enormous weight: the optimizer refuses the non-finite gradient it makes
    out.append(P("implicit/warp.fit with confidence weights of 1e300",
                 f"est = fresh('mfwarp'); est.set_params(confidence_alpha=1e300); {C}",
                 "est.fit(C)", expect=("FloatingPointError",), names=("learning_rate",),
                 success_ok=True, check="finite(est.item_table_, est.user_table_)"))
    # a warp model refuses to continue as bpr (and back)
    out.append(P("implicit/warp partial_fit with loss changed to bpr",
                 "est = fresh('mfwarp'); est.set_params(loss='bpr')", "est.partial_fit(R_TRAIN)",
                 names=("loss",), watch="est"))
    return out


def _metric_probes():
    out = []
    T = "T = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 1, 1]]))"
    cases = [
        # (label, recommended, expected precision, recall, ndcg) for relevant {1} and {2, 3}
        ("duplicate ids", "[[1, 1, 1], [2, 2, 2]]", (1 / 3 + 1 / 3) / 2, (1.0 + 0.5) / 2,
         (1.0 + 1.0 / (1.0 + 1.0 / math.log2(3))) / 2),
        ("-1 padding", "[[-1, -1, -1], [-1, 3, -1]]", (0.0 + 1 / 3) / 2, (0.0 + 0.5) / 2,
         (0.0 + (1 / math.log2(3)) / (1.0 + 1 / math.log2(3))) / 2),
        ("duplicates and padding", "[[1, -1, 1], [3, 3, -1]]", (1 / 3 + 1 / 3) / 2,
         (1.0 + 0.5) / 2, (1.0 + 1.0 / (1.0 + 1 / math.log2(3))) / 2),
        ("ids past the last item", "[[4, 5, 1], [2, 99, 3]]", (1 / 3 + 2 / 3) / 2,
         (1.0 + 1.0) / 2, None),
    ]
    for label, rec, prec, rec_v, ndcg in cases:
        for metric, want in (("precision_at_k", prec), ("recall_at_k", rec_v),
                             ("ndcg_at_k", ndcg)):
            check = "0.0 <= v <= 1.0"
            if want is not None:
                check += f" and abs(v - {want!r}) < 1e-9"
            out.append(P(f"metrics/{metric} with {label}", T + f"\nrec = np.array({rec})",
                         f"v = metrics.{metric}(T, rec, k=3)", names=("recommended",),
                         success_ok=True, check=check))
    out.append(P("metrics/recall_at_k with many duplicates stays <= 1",
                 "T = sp.csr_matrix(np.eye(5)); rec = np.zeros((5, 10), dtype=int)",
                 "v = metrics.recall_at_k(T, rec, k=10)", names=("recommended",),
                 success_ok=True, check="0.0 <= v <= 1.0 and abs(v - 0.2) < 1e-12"))
    out.append(P("metrics/ndcg_at_k with many duplicates stays <= 1",
                 "T = sp.csr_matrix(np.eye(5)); rec = np.zeros((5, 10), dtype=int)",
                 "v = metrics.ndcg_at_k(T, rec, k=10)", names=("recommended",),
                 success_ok=True, check="0.0 <= v <= 1.0 and abs(v - 0.2) < 1e-12"))
    out.append(P("metrics/auc_score with a dense X_true of another shape",
                 "S = np.zeros((2, 4))", "metrics.auc_score(np.eye(3), S)",
                 names=("X_true", "scores")))
    out.append(P("metrics/precision_at_k with k=0", T + "\nrec = np.array([[1], [2]])",
                 "metrics.precision_at_k(T, rec, k=0)", names=("k",)))
    return out


def _dataset_probes():
    out = []
    for label, call in (("make_ratings(500, 500, 250000)",
                         "X = make_ratings(500, 500, 250000, random_state=0)"),
                        ("make_ratings(500, 500, 240000)",
                         "X = make_ratings(500, 500, 240000, random_state=0)"),
                        ("make_interactions(500, 500, 250000)",
                         "X = make_interactions(500, 500, 250000, random_state=0)")):
        n = int(label.rstrip(")").split(", ")[-1])
        out.append(P(f"datasets/{label} finishes in seconds", "", call, expect=(),
                     check=f"X.nnz == {n} and X.has_sorted_indices", limit=4.0))
    bad_args = [
        ("make_ratings", "mean='x'", ("mean",)),
        ("make_ratings", "bias_scale='x'", ("bias_scale",)),
        ("make_ratings", "mean=float('nan')", ("mean",)),
        ("make_ratings", "noise='x'", ("noise",)),
        ("make_ratings", "zipf=-1.0", ("zipf",)),
        ("make_ratings", "random_state=-1", ("random_state",)),
        ("make_ratings", "dtype='x'", ("dtype",)),
        ("make_ratings", "dtype=np.int8", ("dtype",)),
        ("make_ratings", "rank=0", ("rank",)),
        ("make_interactions", "signal='x'", ("signal",)),
        ("make_interactions", "random_state=-1", ("random_state",)),
        ("make_interactions", "dtype='x'", ("dtype",)),
    ]
    for fn, arg, names in bad_args:
        out.append(P(f"datasets/{fn}({arg})", "", f"{fn}(20, 10, 50, {arg})",
                     expect=("ValueError", "TypeError"), names=names, limit=5.0))
    out.append(P("datasets/holdout_split(random_state=-1)", "",
                 "holdout_split(R_TRAIN, 0.5, random_state=-1)",
                 expect=("ValueError", "TypeError"), names=("random_state",)))
    out.append(P("datasets/holdout_split(test_size='x')", "",
                 "holdout_split(R_TRAIN, 'x')", expect=("ValueError", "TypeError"),
                 names=("test_size",)))
    return out


def _message_probes():
    out = []
    fits = {"SGDClassifier": "fit(X8, ycls(X8))", "SGDRegressor": "fit(X8, yreg(X8))",
            "FMRegressor": "fit(X8, yreg(X8))", "FMClassifier": "fit(X8, ycls(X8))",
            "MatrixFactorization": "fit(R_TRAIN)"}
    for est, fit in fits.items():
        out.append(P(f"message/{est}(random_state=-1).fit", "", f"{est}(random_state=-1).{fit}",
                     expect=("ValueError", "TypeError"), names=("random_state",)))
        out.append(P(f"message/{est}(verbose='x').fit", "",
                     f"{est}(verbose='x').{fit}", expect=("ValueError", "TypeError"),
                     names=("verbose",), success_ok=True))
    for est in ("SGDClassifier",):
        for cw in ("{0: np.nan, 1: 1.0}", "{0: np.inf, 1: 1.0}"):
            out.append(P(f"message/{est}(class_weight={cw}).fit", "",
                         f"{est}(class_weight={cw}, max_iter=5, tol=None).fit(X8, ycls(X8))",
                         names=("class_weight",),
                         forbid=("StandardScaler", "learning_rate", "learning rate")))
    for est, y in (("SGDClassifier", "ycls"), ("SGDRegressor", "yreg"),
                   ("FMRegressor", "yreg"), ("FMClassifier", "ycls")):
        ctor = f"{est}(max_iter=5, tol=None)" if est.startswith("SGD") else \
            f"{est}(n_epochs=2, random_state=0)"
        attr = "coef_" if est.startswith("SGD") else "table_"
        for label, sw in (("1e308", "np.full(8, 1e308)"), ("inf", "np.full(8, np.inf)"),
                          ("nan", "np.r_[np.nan, np.ones(7)]")):
            out.append(P(f"message/{est}.fit(sample_weight={label})", f"est = {ctor}",
                         f"est.fit(X8, {y}(X8), sample_weight={sw})",
                         names=("sample_weight",),
                         forbid=("StandardScaler", "learning_rate", "learning rate"),
                         success_ok=label == "1e308",
                         check=f"finite(est.{attr}) and finite(est.predict(X8).astype(float))"))
    return out


def _id_probes():
    out = []
    cases = [
        ("predict item 100", "est.predict([0], [100])", ("IndexError", "ValueError"),
         ("item_ids",)),
        ("predict user -1", "est.predict([-1], [0])", ("IndexError", "ValueError"),
         ("user_ids",)),
        ("predict uint64 max", "est.predict(np.array([2**64 - 1], np.uint64), [0])",
         ("IndexError", "ValueError"), ("user_ids",)),
        ("predict float ids", "est.predict([0.5], [1])", ("TypeError", "ValueError"),
         ("user_ids",)),
        ("predict bool ids", "est.predict([True], [1])", ("TypeError", "ValueError"),
         ("user_ids",)),
        ("predict lengths differ", "est.predict([0, 1], [1])", ("ValueError",),
         ("user_ids", "item_ids")),
        ("recommend user 9", "est.recommend([9])", ("IndexError", "ValueError"), ("user_ids",)),
        ("recommend n=0", "est.recommend([0], n=0)", ("ValueError",), ("n",)),
        ("recommend n='x'", "est.recommend([0], n='x')", ("TypeError", "ValueError"), ("n",)),
        ("similar_items item 8", "est.similar_items([8])", ("IndexError", "ValueError"),
         ("item_ids",)),
        ("similar_items item -1", "est.similar_items(-1)", ("IndexError", "ValueError"),
         ("item_ids",)),
        ("similar_users user 9", "est.similar_users([9])", ("IndexError", "ValueError"),
         ("user_ids",)),
        ("similar_users user -1", "est.similar_users(-1)", ("IndexError", "ValueError"),
         ("user_ids",)),
        ("recommend filter_items 8", "est.recommend([0], filter_items=[8])",
         ("IndexError", "ValueError"), ("filter_items",)),
        ("recommend items -1", "est.recommend([0], items=[-1])", ("IndexError", "ValueError"),
         ("items",)),
        ("recommend items 2-D", "est.recommend([0], items=[[1]])", ("ValueError",), ("items",)),
        ("recommend items float", "est.recommend([0], items=[1.0])",
         ("TypeError", "ValueError"), ("items",)),
        ("evaluate k=0", "evaluate(est, R_TRAIN, R_TRAIN, k=0)", ("ValueError",), ("k",)),
        ("evaluate metric", "evaluate(est, R_TRAIN, R_TRAIN, metrics=['auc'])",
         ("ValueError",), ("metric",)),
    ]
    for label, act, expect, names in cases:
        out.append(P(f"ids/MatrixFactorization.{label}", "est = fresh('mf')", act,
                     expect=expect, names=names, watch="est"))
    rg = [
        ("index 12 of 12 rows", "so.RowGrad([3, 12], np.ones((2, 4), np.float32))",
         ("IndexError",)),
        ("index -1", "so.RowGrad([-1], np.ones((1, 4), np.float32))", ("IndexError",)),
        ("uint64 max", "so.RowGrad(np.array([2**64 - 1], np.uint64), np.ones((1, 4), "
         "np.float32))", ("IndexError",)),
        ("int8 -1", "so.RowGrad(np.array([-1], np.int8), np.ones((1, 4), np.float32))",
         ("IndexError",)),
        ("float indices", "so.RowGrad([1.0], np.ones((1, 4), np.float32))", ("TypeError",)),
        ("values of another width", "so.RowGrad([1], np.ones((1, 3), np.float32))",
         ("ValueError",)),
        ("complex values", "so.RowGrad([1], np.ones((1, 4), np.complex64))", ("TypeError",)),
        ("sparse gradient of another shape", "sp.csr_matrix((12, 5), dtype=np.float32)",
         ("ValueError",)),
        ("complex sparse gradient", "sp.csr_matrix(np.ones((12, 4), np.complex64))",
         ("TypeError",)),
    ]
    for kind in ("Adam", "Adagrad-rowwise", "RMSprop-decay", "SGD"):
        for label, grad, expect in rg:
            out.append(P(f"ids/{kind}.step RowGrad {label}", f"opt = warmed({kind!r})",
                         f"opt.step({{'emb': {grad}, 'bias': np.ones(12)}})", expect=expect,
                         names=("emb",), watch="opt"))
    out.append(P("ids/Adam hyper-parameter lr=nan via param_groups",
                 "opt = warmed(); opt.param_groups[0]['lr'] = float('nan')",
                 "opt.step({'emb': row_grad([1]), 'bias': None})", names=("lr",), watch="opt"))
    out.append(P("ids/Adam hyper-parameter betas=(1.0, 0.999) via param_groups",
                 "opt = warmed(); opt.param_groups[0]['betas'] = (1.0, 0.999)",
                 "opt.step({'emb': row_grad([1]), 'bias': None})", names=("betas", "betas[0]"),
                 watch="opt"))
    return out


def _raw_id_probes():
    """Interactions as columns of raw ids (DataFrame / tuple) and the calls that take raw
    ids: every malformed column, unknown id and conflicting flag is refused, by name, and
    changes nothing on a fitted model."""
    out = []
    u, i, r = "DF['user'].to_numpy()", "DF['item'].to_numpy()", "DF['rating'].to_numpy()"
    fits = [
        # (label, bad input, expected exceptions, names)
        ("tuple columns of different lengths", f"({u}, {i}[:-1], {r})", ("ValueError",),
         ("X",)),
        ("tuple values of another length", f"({u}, {i}, {r}[:-1])", ("ValueError",),
         ("X",)),
        ("tuple of 4 columns", f"({u}, {i}, {r}, {r})", ("ValueError",), ("X",)),
        ("tuple of 1 column", f"({u},)", ("ValueError",), ("X",)),
        ("NaN user id (float column)", f"(np.where(np.arange(30) == 3, np.nan, 1.0), {i}, {r})",
         ("ValueError",), ("X[0][3]", "X")),
        ("None user id (object column)",
         f"(np.array(list({u}[:-1]) + [None], object), {i}, {r})", ("ValueError",), ("X",)),
        ("pd.NA item id", "DF.assign(item=pd.array([pd.NA] + [1] * 29, dtype='Int64'))",
         ("ValueError", "TypeError"), ("X",)),
        ("integral float ids", f"({u}, {i}.astype(float), {r})", ("TypeError",), ("X",)),
        ("bool ids", f"({u}, np.ones(30, bool), {r})", ("TypeError",), ("X",)),
        ("bytes ids", f"({u}.astype('S'), {i}, {r})", ("TypeError",), ("X",)),
        ("mixed int and str ids", f"(np.array([1, 'a'] * 15, object), {i}, {r})",
         ("TypeError",), ("X",)),
        ("ids beyond 64 bits", f"(np.array([2**70] * 30, object), {i}, {r})", ("ValueError",),
         ("X",)),
        ("dict ids", f"(np.array([{{}}] * 30, object), {i}, {r})", ("TypeError",), ("X",)),
        ("2-D id column", f"({u}.reshape(15, 2), {i}, {r})", ("ValueError",), ("X",)),
        ("NaN rating", f"({u}, {i}, np.where(np.arange(30) == 2, np.nan, 3.0))",
         ("ValueError",), ("X",)),
        ("inf rating", "DF.assign(rating=np.inf)", ("ValueError",), ("X",)),
        ("string ratings", f"({u}, {i}, np.array(['a'] * 30))", ("ValueError",), ("X",)),
        ("complex ratings", f"({u}, {i}, np.ones(30, complex))", ("ValueError",), ("X",)),
        ("explicit data without ratings", f"({u}, {i})", ("ValueError",), ("X",)),
        ("frame without a rating column", "DF[['user', 'item']]", ("ValueError",), ("X",)),
        ("frame without a user column", "DF.rename(columns={'user': 'uid'})",
         ("ValueError",), ("X",)),
        ("frame with rating and value", "DF.assign(value=1.0)", ("ValueError",), ("X",)),
        ("frame with the user column twice",
         "pd.concat([DF, DF[['user']]], axis=1)", ("ValueError",), ("X",)),
        ("empty frame", "DF.iloc[:0]", ("ValueError",), ("X",)),
        ("empty tuple columns", "(np.array([], str), np.array([], np.int64), np.array([]))",
         ("ValueError",), ("X",)),
        ("duplicate (user, item) rated 4 and 5",
         "pd.concat([DF, DF.iloc[:1].assign(rating=DF['rating'].iloc[0] + 1)])",
         ("ValueError",), ("X", "duplicate")),
        ("a list of lists", "R_TRAIN.toarray().tolist()", ("TypeError",), ("X",)),
        ("dense NaN", "np.full((3, 3), np.nan)", ("ValueError",), ("X",)),
        ("dense 3-D", "np.ones((2, 2, 2))", ("ValueError",), ("X",)),
        ("dense of 0 items", "np.ones((3, 0))", ("ValueError",), ("X",)),
        ("dense strings", "np.array([['a']])", ("ValueError", "TypeError"), ("X",)),
        ("y as a matrix (eval_set is keyword-only)", "DF, DF", ("TypeError",),
         ("eval_set",)),
    ]
    for label, bad, expect, names in fits:
        act = f"est.fit({bad})" if label.startswith("y as") else f"est.fit({bad})"
        out.append(P(f"raw ids/MatrixFactorization.fit {label}", "est = fresh_raw()", act,
                     expect=expect, names=names, watch="est"))
    calls = [
        ("predict unknown user", "est.predict(['nobody'], [5])", ("user_ids",)),
        ("predict unknown item", "est.predict(['u0'], [6])", ("item_ids",)),
        ("predict int user of a str model", "est.predict([0], [5])", ("user_ids",)),
        ("predict str item of an int model", "est.predict(['u0'], ['5'])", ("item_ids",)),
        ("predict negative item", "est.predict(['u0'], [-5])", ("item_ids",)),
        ("predict uint64 max item", "est.predict(['u0'], np.array([2**64 - 1], np.uint64))",
         ("item_ids",)),
        ("recommend unknown user", "est.recommend('nobody')", ("user_ids",)),
        ("recommend unknown filter_items", "est.recommend('u0', filter_items=[6])",
         ("filter_items",)),
        ("recommend unknown items", "est.recommend('u0', items=[5, 7])", ("items",)),
        ("similar_items unknown", "est.similar_items(6)", ("item_ids",)),
        ("similar_users unknown", "est.similar_users(['u0', 'u99'])", ("user_ids",)),
        ("partial_fit unknown user",
         "est.partial_fit(pd.DataFrame({'user': ['new'], 'item': [5], 'rating': [3.0]}))",
         ("X['user']", "X")),
        ("partial_fit unknown item",
         "est.partial_fit(pd.DataFrame({'user': ['u0'], 'item': [6], 'rating': [3.0]}))",
         ("X['item']", "X")),
        ("score unknown user",
         "est.score(pd.DataFrame({'user': ['new'], 'item': [5], 'rating': [3.0]}))",
         ("X['user']", "X")),
        ("evaluate unknown item in X_test",
         "evaluate(est, DF, pd.DataFrame({'user': ['u0'], 'item': [6], 'rating': [3.0]}))",
         ("X_test['item']", "X_test")),
        ("fit eval_set with an unknown item",
         "est.fit(DF, eval_set=pd.DataFrame({'user': ['u0'], 'item': [6], 'rating': [3.0]}))",
         ("eval_set['item']", "eval_set")),
    ]
    for label, act, names in calls:
        out.append(P(f"raw ids/MatrixFactorization.{label}", "est = fresh_raw()", act,
                     expect=("ValueError", "IndexError"), names=names, watch="est"))
    flags = [
        ("recommend filter_already_liked=True, exclude_seen=False",
         "est.recommend('u0', filter_already_liked=True, exclude_seen=False)", ("ValueError",),
         ("filter_already_liked", "exclude_seen")),
        ("recommend filter_already_liked='no'", "est.recommend('u0', filter_already_liked='no')",
         ("TypeError",), ("filter_already_liked",)),
        ("recommend exclude_seen=2", "est.recommend('u0', exclude_seen=2)", ("TypeError",),
         ("exclude_seen",)),
        ("recommend items 2-D raw ids", "est.recommend('u0', items=[[5]])", ("ValueError",),
         ("items",)),
        ("recommend items empty", "est.recommend('u0', items=[])", ("ValueError",),
         ("items",)),
        ("predict clip_predictions='yes'",
         "est.set_params(clip_predictions='yes'); est.predict(['u0'], [5])", ("TypeError",),
         ("clip_predictions",)),
        ("predict rating_range_ replaced by a string",
         "est.rating_range_ = 'ab'; est.predict(['u0'], [5])", ("ValueError",),
         ("rating_range_",)),
        ("predict rating_range_ reversed",
         "est.rating_range_ = (5.0, 1.0); est.predict(['u0'], [5])", ("ValueError",),
         ("rating_range_",)),
        ("partial_fit rating_range_ of NaN",
         "est.rating_range_ = (np.nan, 1.0); est.partial_fit(DF)", ("ValueError",),
         ("rating_range_",)),
    ]
    for label, act, expect, names in flags:
        # the attribute probes replace rating_range_ first: watched after the replacement
        setup, act_ = "est = fresh_raw()", act
        if act.startswith("est.rating_range_") or act.startswith("est.set_params"):
            first, act_ = act.split("; ", 1)
            setup += "\n" + first
        out.append(P(f"raw ids/MatrixFactorization.{label}", setup, act_, expect=expect,
                     names=names, watch="est"))
    # the implicit model: repeated pairs are one positive (not an error); unknown ids are
    out.append(P("raw ids/MatrixFactorization(bpr).partial_fit repeated known pairs",
                 "est = fresh_raw(bpr=True)",
                 "est.partial_fit((np.array(['u0', 'u0']), np.array([5, 5])))", expect=(),
                 check="est.n_epochs_ == 2"))
    out.append(P("raw ids/MatrixFactorization(bpr).partial_fit unknown item",
                 "est = fresh_raw(bpr=True)",
                 "est.partial_fit((np.array(['u0']), np.array([123456789])))",
                 expect=("ValueError", "IndexError"), names=("X[1]", "X"), watch="est"))
    # IdEncoder on its own: a refused input leaves it as it was
    enc = "enc = IdEncoder('items').fit(np.array(['b', 'a', 'c']))"
    for label, act, expect, names in (
            ("transform before fit", "IdEncoder('items').transform(['a'])", ("ValueError",),
             ("fit",)),
            ("fit NaN", "enc.fit(np.array([1.0, np.nan]))", ("ValueError",), ("items",)),
            ("fit mixed", "enc.fit(np.array([1, 'a'], object))", ("TypeError",), ("items",)),
            ("fit 2-D", "enc.fit(np.array([['a']]))", ("ValueError",), ("items",)),
            ("transform unknown", "enc.transform(['a', 'zz'])", ("ValueError", "IndexError"),
             ("items",)),
            ("transform ints of a str encoder", "enc.transform([0])",
             ("ValueError", "IndexError"), ("items",)),
            ("inverse_transform 3 of 3", "enc.inverse_transform([3])", ("IndexError",),
             ("indices",)),
            ("inverse_transform -1 without fill", "enc.inverse_transform([-1])",
             ("IndexError",), ("indices",)),
            ("inverse_transform -2 with fill", "enc.inverse_transform([-2], fill=True)",
             ("IndexError",), ("indices",)),
            ("inverse_transform uint64 max",
             "enc.inverse_transform(np.array([2**64 - 1], np.uint64))", ("IndexError",),
             ("indices",)),
            ("inverse_transform floats", "enc.inverse_transform([0.0])", ("TypeError",),
             ("indices",)),
            ("inverse_transform fill='yes'", "enc.inverse_transform([0], fill='yes')",
             ("TypeError",), ("fill",))):
        out.append(P(f"raw ids/IdEncoder.{label}", enc, act, expect=expect, names=names,
                     watch="enc"))
    # a model fitted on a matrix knows indices, not ids: columns are refused
    for label, act in (("score", "est.score(DF)"), ("partial_fit", "est.partial_fit(DF)"),
                       ("fit eval_set", "est.fit(R_TRAIN, eval_set=DF)")):
        out.append(P(f"raw ids/MatrixFactorization fitted on a matrix: {label} of columns",
                     "est = fresh('mf')", act, expect=("TypeError",),
                     names=("X", "eval_set"), watch="est"))
    return out


def _concurrency_probes():
    out = []
    out.append(P("threads/one Adam stepped from two threads", "opt = make_opt('Adam'); "
                 "g = {'emb': row_grad(np.arange(12)), 'bias': np.ones(12)}",
                 "errors = run_threads([lambda: opt.step(g), lambda: opt.step(g)], 0.7)\n"
                 "only_runtime_errors(errors)", expect=(),
                 check="opt_finite(opt) and opt.state['emb']['step'] > 10"))
    out.append(P("threads/one Adam: step and load_state_dict at once",
                 "opt = warmed('Adam-decay'); sd = copy.deepcopy(opt.state_dict())",
                 "errors = run_threads([lambda: opt.step({'emb': row_grad([1, 2, 3]), 'bias': "
                 "np.ones(12)}), lambda: opt.load_state_dict(sd), lambda: opt.flush()], 0.7)\n"
                 "only_runtime_errors(errors)", expect=(), check="opt_finite(opt)"))
    out.append(P("threads/MatrixFactorization: fit of two shapes, predict and recommend at once",
                 "est = fresh('mf'); A = make_ratings(60, 50, 600, random_state=1); "
                 "B = make_ratings(9, 8, 30, random_state=2)",
                 "errors = run_threads([lambda: est.fit(A), lambda: est.fit(B), "
                 "lambda: est.predict([5, 8], [7, 7]), lambda: est.recommend([8], n=4), "
                 "lambda: est.partial_fit(B)], 1.5)\n"
                 "errors = [e for e in errors if not (isinstance(e, ValueError) and "
                 "'fitted on' in str(e))]\n"
                 "only_runtime_errors(errors)\n"
                 "assert est.user_table_.shape[0] == est.n_users_", expect=(), limit=30))
    out.append(P("threads/FMRegressor: fit with 7 and 40 features, predict at once",
                 "est = fresh('fmr'); est.set_params(n_epochs=1); "
                 "A = sp.random(200, 40, density=0.3, format='csr', random_state=0)",
                 "errors = run_threads([lambda: est.fit(A, yreg(A)), lambda: est.fit(X8, yreg(X8)),"
                 " lambda: est.predict(X8), lambda: est.partial_fit(X8, yreg(X8))], 1.5)\n"
                 "errors = [e for e in errors if not (isinstance(e, ValueError) and "
                 "'features' in str(e))]\n"
                 "only_runtime_errors(errors)", expect=(), limit=30))
    out.append(P("threads/SGDClassifier: fit with 7 and 40 features, predict at once",
                 "est = fresh('sgdc'); "
                 "A = sp.random(300, 40, density=0.3, format='csr', random_state=0)",
                 "errors = run_threads([lambda: est.fit(A, ycls(A)), "
                 "lambda: est.fit(X8, ycls(X8)), lambda: est.decision_function(X8), "
                 "lambda: est.partial_fit(X8, ycls(X8))], 1.5)\n"
                 "errors = [e for e in errors if not (isinstance(e, ValueError) and "
                 "'features' in str(e))]\n"
                 "only_runtime_errors(errors)", expect=(), limit=30))
    return out


def _hypothesis_probes():
    out = []
    for target in TARGET_NAMES:
        out.append(P(f"hypothesis/{target}",
                     "import sys\nfrom _strategies import run_hypothesis_target",
                     f"counts = run_hypothesis_target({target!r}, {HYPOTHESIS_EXAMPLES}, "
                     "log=sys.stderr)", expect=(),
                     check=f"counts['valid'] + counts['corrupted'] >= {HYPOTHESIS_EXAMPLES} "
                     "and counts['valid'] > 0 and counts['corrupted'] > 0",
                     limit=240, chunk=1))
    return out


def _dask_probes():
    """``sparseopt.dask.fit``: arguments that are refused before any cluster is contacted
    (``client=None`` would look up a default client only after the checks)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        return []
    setup = ("import dask, sparseopt.dask as sd\n"
             "xs = [dask.delayed(X8)]; ys = [dask.delayed(ycls(X8))]")
    cases = [
        ("object", "sd.fit(object(), xs, ys, n_epochs=1)", "TypeError", "distributed"),
        ("FM warm_start", "sd.fit(FMRegressor(warm_start=True), xs, ys, n_epochs=1)",
         "ValueError", "warm_start"),
        ("class", "sd.fit(SGDClassifier, xs, ys, n_epochs=1)", "TypeError", "estimator"),
        ("n_epochs=None", "sd.fit(SGDClassifier(), xs, ys)", "ValueError", "n_epochs"),
        ("n_epochs=0", "sd.fit(SGDClassifier(), xs, ys, n_epochs=0)", "ValueError", "n_epochs"),
        ("n_epochs=True", "sd.fit(SGDClassifier(), xs, ys, n_epochs=True)", "TypeError",
         "n_epochs"),
        ("sync_every=-1", "sd.fit(SGDClassifier(), xs, ys, n_epochs=1, sync_every=-1)",
         "ValueError", "sync_every"),
        ("sync_every=nan", "sd.fit(SGDClassifier(), xs, ys, n_epochs=1, sync_every=np.nan)",
         "TypeError", "sync_every"),
        ("persist='no'", "sd.fit(SGDClassifier(), xs, ys, n_epochs=1, persist='no')",
         "TypeError", "persist"),
        ("stats=dict", "sd.fit(SGDClassifier(), xs, ys, n_epochs=1, stats={})", "TypeError",
         "stats"),
        ("callback=1", "sd.fit(SGDClassifier(), xs, ys, n_epochs=1, callback=1)", "TypeError",
         "callback"),
        ("average", "sd.fit(SGDClassifier(average=3), xs, ys, n_epochs=1)", "ValueError",
         "average"),
        ("early_stopping", "sd.fit(SGDRegressor(early_stopping=True), xs, ys, n_epochs=1)",
         "ValueError", "early_stopping"),
        ("balanced", "sd.fit(SGDClassifier(class_weight='balanced'), xs, ys, n_epochs=1)",
         "ValueError", "class_weight"),
    ]
    return [P(f"dask.fit/{label}", setup, act, expect=(exc,), names=(name,), limit=20)
            for label, act, exc, name in cases]


HAND_PROBES = (_thread_probes() + _eps_probes() + _ftrl_probes() + _half_probes()
               + _readonly_probes()
               + _state_probes() + _dok_probes() + _attribute_probes() + _failed_fit_probes()
               + _duplicate_probes() + _implicit_loss_probes() + _metric_probes()
               + _dataset_probes() + _message_probes() + _id_probes() + _raw_id_probes()
               + _concurrency_probes() + _dask_probes())
SPARSE_PROBES = _sparse_probes()
HYPOTHESIS_PROBES = _hypothesis_probes()
ALL_PROBES = {p.name: p for p in HAND_PROBES + SPARSE_PROBES + HYPOTHESIS_PROBES}
assert len(ALL_PROBES) == len(HAND_PROBES) + len(SPARSE_PROBES) + len(HYPOTHESIS_PROBES)


# =========================================================================== sparseopt.torch
# A batch of its own (torch is optional, and a child that imports it is larger): gradients
# built without torch's invariant checks (rows out of range), corrupted groups, state and
# state dicts, parameters whose memory was replaced. ``tsnap`` is a plain-data view of
# everything a refused call must leave unchanged (parameters, shown state, groups and the
# NumPy optimizers behind them).

TORCH_PRELUDE = r'''
import io, warnings
import numpy as np
import torch
import sparseopt.torch as sot
warnings.simplefilter("ignore")
torch.set_num_threads(1)


def sgrad(idx, shape, dtype=torch.float32, value=1.0):
    idx = torch.tensor(idx, dtype=torch.int64)
    vals = torch.full((idx.shape[1],) + tuple(shape[idx.shape[0]:]), value, dtype=dtype)
    return torch.sparse_coo_tensor(idx, vals, shape, check_invariants=False)


def tnet(kind="Adam", steps=2, **kw):
    """An embedding table E (20, 4) and a bias b (3,) after `steps` steps."""
    E = torch.nn.Parameter(torch.randn(20, 4, generator=torch.Generator().manual_seed(0)))
    b = torch.nn.Parameter(torch.zeros(3))
    opt = getattr(sot, kind)([E, b], **kw)
    for s in range(steps):
        E.grad, b.grad = sgrad([[1, 2, 1 + s]], (20, 4)), torch.ones(3)
        opt.step()
    return E, b, opt


def tsnap(opt):
    def plain(v):
        return v.detach().numpy().copy() if isinstance(v, torch.Tensor) else v
    params = [p for g in opt.param_groups for p in g["params"]]
    return ([plain(p) for p in params],
            [{k: plain(v) for k, v in opt.state[p].items()} for p in params if p in opt.state],
            [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
            [opt._slots[p].inner for p in params])


def saved(opt):
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)
'''


def _torch_probes():
    out = []
    T = "E, b, opt = tnet({kind!r}{extra})\n"
    step = "opt.step()"
    for kind, extra in (("Adam", ""), ("Adam", ", lazy='decay', weight_decay=0.01"),
                        ("Adagrad", ", rowwise=True"), ("RMSprop", ", momentum=0.9"),
                        ("SGD", "")):
        tag = f"{kind}{extra.split('=')[0].replace(', ', '-') if extra else ''}"
        setup = T.format(kind=kind, extra=extra)
        for what, idx in (("row 10**9", "[[1, 10**9]]"), ("row -1", "[[1, -1]]"),
                          ("row 20", "[[20]]"), ("row 2**63-1", "[[2**63 - 1]]")):
            out.append(P(f"torch/{tag}.step (sparse gradient with {what})",
                         setup + f"E.grad = sgrad({idx}, (20, 4)); b.grad = torch.ones(3)",
                         step, expect=("IndexError",), names=("index", "row", "range"),
                         watch="tsnap(opt)"))
        out.append(P(f"torch/{tag}.step (2-D sparse gradient, column out of range)",
                     setup + "E.grad = sgrad([[1, 2], [0, 9]], (20, 4)); b.grad = torch.ones(3)",
                     step, expect=("IndexError", "ValueError"),
                     names=("index", "column", "range", "indices"), watch="tsnap(opt)"))
        out.append(P(f"torch/{tag}.step (NaN in the second parameter's gradient)",
                     setup + "E.grad = sgrad([[1, 2]], (20, 4)); "
                     "b.grad = torch.tensor([1.0, float('nan'), 0.0])",
                     step, expect=("FloatingPointError",), names=("NaN",), watch="tsnap(opt)"))
        for key, val, exc in (("lr", "-1.0", "ValueError"), ("lr", "'fast'", "TypeError"),
                              ("lr", "float('nan')", "ValueError")):
            out.append(P(f"torch/{tag}.step (group {key}={val})",
                         setup + f"opt.param_groups[0][{key!r}] = {val}; "
                         "E.grad = sgrad([[1]], (20, 4))", step, expect=(exc,), names=(key,),
                         watch="tsnap(opt)"))
        for what, code, names in (
                ("another shape", "E.data = torch.zeros(21, 4)", ("shape",)),
                ("non-contiguous", "E.data = torch.zeros(4, 20).t()", ("contiguous",)),
                ("float64", "E.data = torch.zeros(20, 4, dtype=torch.float64)", ("dtype",))):
            out.append(P(f"torch/{tag}.step (p.data replaced: {what})",
                         setup + code + "; E.grad = sgrad([[1]], tuple(E.shape), E.dtype); "
                         "b.grad = torch.ones(3)", step,
                         expect=("ValueError", "TypeError"), names=names,
                         watch="tsnap(opt)"))
        if kind != "SGD":
            sname = {"Adam": "exp_avg", "Adagrad": "sum", "RMSprop": "square_avg"}[kind]
            for what, code in (("a wrong shape", f"torch.zeros(19, 4)"),
                               ("float64", f"torch.zeros(20, 4, dtype=torch.float64)"),
                               ("a list", "[0.0] * 80")):
                out.append(P(f"torch/{tag}.step (opt.state[E][{sname!r}] replaced by {what})",
                             setup + f"opt.state[E][{sname!r}] = {code}; "
                             "E.grad = sgrad([[1]], (20, 4))", step,
                             expect=("ValueError", "TypeError"), names=(sname,),
                             watch="tsnap(opt)"))
            out.append(P(f"torch/{tag}.step (opt.state[E]['step'] = -1)",
                         setup + "opt.state[E]['step'] = -1; E.grad = sgrad([[1]], (20, 4))",
                         step, names=("step",), watch="tsnap(opt)"))
            for what, edit, names in (
                    ("negative second moment or sum",
                     f"sd['state'][0][{'exp_avg_sq' if kind == 'Adam' else sname!r}]"
                     ".fill_(-1.0)", ("exp_avg_sq", "sum", "square_avg")),
                    ("step 1.5", "sd['state'][0]['step'] = 1.5", ("step",)),
                    ("step 2**70", "sd['state'][0]['step'] = 2**70", ("step",)),
                    ("a meta tensor", f"sd['state'][0][{sname!r}] = "
                     "torch.zeros(20, 4, device='meta')", (sname,)),
                    ("a sparse tensor", f"sd['state'][0][{sname!r}] = "
                     "torch.zeros(20, 4).to_sparse()", (sname,)),
                    ("state of an unknown parameter", "sd['state'][7] = sd['state'][0]",
                     ("parameters",)),
                    ("an unknown state name", "sd['state'][0]['bogus'] = torch.zeros(3)",
                     ("bogus",)),
                    ("no param_groups", "del sd['param_groups']", ("param_groups",)),
                    ("group lr -1", "sd['param_groups'][0]['lr'] = -1.0", ("lr",))):
                out.append(P(f"torch/{tag}.load_state_dict ({what})",
                             setup + "sd = saved(opt)\n" + edit,
                             "opt.load_state_dict(sd)",
                             expect=("ValueError", "TypeError", "KeyError"), names=names,
                             watch="tsnap(opt)"))
        out.append(P(f"torch/{tag}.step (opt.state[E] counters edited in place)",
                     setup + "\n".join(f"if {c!r} in opt.state[E]: opt.state[E][{c!r}].fill_("
                                        "2**62)" for c in ("row_step", "last_step"))
                     + "\nE.grad = sgrad([[1, 5]], (20, 4))", step, success_ok=True,
                     check="bool(torch.isfinite(E).all())", names=("step",),
                     watch="tsnap(opt)"))
    out.append(P("torch/Adam.step (group lazy changed after construction)",
                 T.format(kind="Adam", extra="") + "opt.param_groups[0]['lazy'] = 'decay'; "
                 "E.grad = sgrad([[1]], (20, 4))", step, names=("lazy",), watch="tsnap(opt)"))
    out.append(P("torch/Adam.step (group betas (1.5, 0.9))",
                 T.format(kind="Adam", extra="") + "opt.param_groups[0]['betas'] = (1.5, 0.9); "
                 "E.grad = sgrad([[1]], (20, 4))", step, names=("betas",), watch="tsnap(opt)"))
    out.append(P("torch/Adam.step (3-sparse-dim gradient of a 3-D parameter)",
                 "C = torch.nn.Parameter(torch.zeros(4, 3, 2)); opt = sot.Adam([C])\n"
                 "C.grad = sgrad([[0], [1], [1]], (4, 3, 2))", step, names=("sparse",),
                 watch="tsnap(opt)"))
    out.append(P("torch/Adam.load_state_dict (SparseAdam with maximize=True)",
                 "E = torch.nn.Parameter(torch.zeros(20, 4)); "
                 "sa = torch.optim.SparseAdam([E], maximize=True)\n"
                 "E.grad = sgrad([[1]], (20, 4)); sa.step()\n"
                 "opt = sot.Adam([E], preset='torch')", "opt.load_state_dict(sa.state_dict())",
                 names=("maximize",), watch="tsnap(opt)"))
    for what, code, exc, names in (
            ("an int tensor", "torch.zeros(3, dtype=torch.int64)", "TypeError", ("float32",)),
            ("a complex parameter",
             "torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))", "TypeError",
             ("float32",)),
            ("requires_grad=False", "torch.zeros(3)", "ValueError", ("requires_grad",)),
            ("a NumPy array", "np.zeros(3, np.float32)", "TypeError", ("Tensor", "Tensors")),
            ("a sparse parameter",
             "torch.nn.Parameter(torch.zeros(4, 2).to_sparse())", "TypeError", ("layout",))):
        out.append(P(f"torch/Adam.add_param_group ({what})",
                     T.format(kind="Adam", extra=""),
                     f"opt.add_param_group({{'params': [{code}]}})",
                     expect=(exc,), names=names, watch="tsnap(opt)"))
    for n in (10**5, -1, 2.5):
        out.append(P(f"torch/Adam(n_threads={n})",
                     "E = torch.nn.Parameter(torch.zeros(20, 4))",
                     f"sot.Adam([E], n_threads={n})", expect=("ValueError", "TypeError"),
                     names=("n_threads",)))
    return out


TORCH_PROBES = _torch_probes()
assert len({p.name for p in TORCH_PROBES}) == len(TORCH_PROBES)


@pytest.fixture(scope="session")
def torch_probe_results():
    pytest.importorskip("torch.optim")
    return run_probes(TORCH_PROBES, TORCH_PRELUDE, timeout=600, jobs=1)


@pytest.mark.parametrize("name", [p.name for p in TORCH_PROBES])
def test_torch_contract(name, torch_probe_results):
    probe, res = {p.name: p for p in TORCH_PROBES}[name], torch_probe_results[name]
    problems = verdict(probe, res)
    if problems:
        pytest.fail("; ".join(problems) + "\n" + describe(probe, res), pytrace=False)


@pytest.fixture(scope="session")
def probe_results():
    t0 = time.perf_counter()
    # the long Hypothesis runs first, so the two workers stay busy to the end
    ordered = HYPOTHESIS_PROBES + HAND_PROBES + SPARSE_PROBES
    results = run_probes(ordered, PRELUDE, timeout=900, jobs=2)
    results["__seconds__"] = time.perf_counter() - t0
    return results


def _check(name, probe_results):
    probe, res = ALL_PROBES[name], probe_results[name]
    problems = verdict(probe, res)
    if problems:
        # the message says everything; a Python traceback of this helper would add nothing
        # but formatting time (over a thousand probes fail on unvalidated code)
        pytest.fail("; ".join(problems) + "\n" + describe(probe, res), pytrace=False)


@pytest.mark.parametrize("name", [p.name for p in HAND_PROBES])
def test_contract(name, probe_results):
    _check(name, probe_results)


@pytest.mark.parametrize("name", [p.name for p in SPARSE_PROBES])
def test_malformed_sparse(name, probe_results):
    _check(name, probe_results)


@pytest.mark.parametrize("name", [p.name for p in HYPOTHESIS_PROBES])
def test_hypothesis_corrupted_sparse(name, probe_results):
    _check(name, probe_results)


def test_no_unattributed_crashes(probe_results):
    """A worker that died during a probe that passes by itself must have been killed by an
    earlier probe; the harness names it (a `crash` outcome on that probe) or reports here."""
    assert not probe_results["__unattributed__"]["crashes"]


def test_every_format_and_corruption_is_probed():
    """The table covers each SciPy format, both containers, and every corruption kind."""
    names = [p.name for p in SPARSE_PROBES]
    for fmt in FORMATS:
        for cont in ("matrix", "array"):
            assert any(f"/{fmt}_{cont}/" in n for n in names), (fmt, cont)
        for kind in KINDS[fmt]:
            assert any(n.endswith(f"/{kind}") and f"/{fmt}_" in n for n in names), (fmt, kind)
    entries = {n.split("/")[1] for n in names}
    assert len(entries) == len(SPARSE_ENTRIES)


# =========================================================================== the to-do list

def _classify(probe, res):
    """A short label of how a failing probe breaks the contract."""
    problems = verdict(probe, res)
    if not problems:
        return None
    outcome = res.get("outcome")
    msg = res.get("msg") or ""
    if outcome == "crash":
        if "while exiting" in msg:
            return "heap corruption (abort at exit)"
        if "corrupts the process" in msg:
            return "corrupts the process (a later probe crashed)"
        return f"CRASH ({msg})"
    if outcome == "hang":
        return f"HANG ({msg})"
    if outcome == "setup-error":
        return f"probe setup failed ({res.get('type')}: {msg[:80]})"
    if outcome == "ok":
        if probe.check and res.get("check") is not True:
            return "wrong result (check failed)"
        return "accepted silently"
    kinds = []
    if any(p.startswith("wrong exception") for p in problems):
        kinds.append(f"{res.get('type')} instead of {'/'.join(probe.expect)}")
    if any(p.startswith("message does not name") for p in problems):
        where = (res.get("where") or ["?"])[-1].split(" ")[0]
        kinds.append(f"message does not name the argument (raised at {where})")
    if any(p.startswith("message blames") for p in problems):
        kinds.append("message blames the wrong thing")
    if any(p.startswith("state changed") for p in problems):
        kinds.append(f"changed the object ({res.get('changed')})")
    if any("expected success" in p for p in problems):
        if res.get("type") == "AssertionError":  # a Hypothesis run or a threaded probe
            kinds.append(f"breach: {msg[:160]}")
        else:
            kinds.append(f"valid input refused ({res.get('type')}: {msg[:100]})")
    return "; ".join(kinds) or "; ".join(problems)


def todo_report(results):
    """The failing probes grouped by family and entry point, one line each."""
    lines = []
    groups = {}
    for name, probe in ALL_PROBES.items():
        label = _classify(probe, results[name])
        if label is not None:
            family = name.split("/")[0]
            entry = name.split("/")[1] if family in ("sparse", "valid") else ""
            groups.setdefault((family, entry), []).append((name, label))
    for (family, entry), items in groups.items():
        lines.append(f"## {family}{'/' + entry if entry else ''}: {len(items)} failing")
        for name, label in items:
            short = name.split("/", 2 if entry else 1)[-1]
            lines.append(f"- {short}: {label}")
    n_fail = sum(len(v) for v in groups.values())
    lines.append(f"\n{n_fail} of {len(ALL_PROBES)} probes fail; "
                 f"unexplained worker deaths: {results['__unattributed__']['crashes']}")
    return "\n".join(lines)


if __name__ == "__main__":  # python tests/test_hostile_inputs.py: print the to-do list
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    _t0 = time.perf_counter()
    _res = run_probes(HYPOTHESIS_PROBES + HAND_PROBES + SPARSE_PROBES, PRELUDE, timeout=900,
                      jobs=2)
    print(todo_report(_res))
    print(f"({time.perf_counter() - _t0:.0f} s)")
