"""Distributed training of the recommenders: ``MatrixFactorization`` on partitions of
(user, item, value) columns, ``FMRegressor`` / ``FMClassifier`` on row partitions of a sparse
matrix.

The driver builds the model first, from statistics computed on the cluster (the distinct
user and item ids, the global mean rating, the rating range; the FM's number of features,
target mean or class counts), so that every worker starts from the same tables. A sync then
runs the estimator's own ``partial_fit`` on a copy of the broadcast model per partition
slice, and mixes the rows each copy changed (``_mixing``): the user table and the item table
(biases are columns of them) of MF, the feature table and the global bias of an FM, each
with its optimizer's row state, one ``RowDelta`` per table.

Update counts (the weights of the ``'mean'`` rule): a user row counts its ratings in the
slice, an item row its ratings (for BPR / WARP: its positives; an item moved only as a
sampled negative has count 0, so the changes of two workers that both only sampled it are
added), a feature row its stored entries, the FM's global bias the slice's samples.

Random draws: each task seeds the copy's generator from ``(seed, epoch, sync, partition)``
where ``seed`` is drawn once from the model's generator, so a task that Dask re-runs (a lost
worker) draws the same shuffles and negatives and gives the same delta. BPR and WARP draw a
user's negatives among items the user has in *no* partition: the broadcast model carries the
seen items of all the data.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List

import numpy as np
import scipy.sparse as sp

from .. import _validation as V
from .._utils import sorted_unique
from . import _mixing

# optimizer name -> row state name -> mixing rule (see _mixing); "step" is the scalar step
# counter, set to the sum of the workers' steps
STATE_RULES = {
    "adagrad": {"sum": "sum"},
    "adam": {"exp_avg": "mean", "exp_avg_sq": "mean", "row_step": "sum"},
    "rmsprop": {"square_avg": "mean"},
    "sgd": {},
}


# ----------------------------------------------------------------------------- tables

def _opt_name(opt) -> str:
    return type(opt).__name__.lower()


def prepare_optimizer(est) -> None:
    """Allocate every optimizer state array now (a fresh optimizer allocates them on its
    first step), so that the broadcast model holds the state every worker starts from, and
    refuse state that has no mixing rule."""
    opt = est.optimizer_
    rules = STATE_RULES.get(_opt_name(opt))
    if rules is None:
        raise ValueError(f"optimizer {type(opt).__name__} cannot be distributed (its state has "
                         f"no mixing rule); use one of {sorted(STATE_RULES)}")
    for i in range(len(opt._keys)):
        state = opt._ensure_state(i, opt.param_groups[0])
        for name, value in state.items():
            if name == "step":
                continue
            if name not in rules:
                raise ValueError(f"the {type(opt).__name__} state {name!r} (set by the "
                                 f"optimizer's options) cannot be distributed: it has no "
                                 f"mixing rule")


def side_tables(est) -> List[Dict[str, np.ndarray]]:
    """Per optimizer parameter: the table itself (``'W'``) and its row state, by reference."""
    opt = est.optimizer_
    rules = STATE_RULES[_opt_name(opt)]
    out = []
    for i, key in enumerate(opt._keys):
        t = {"W": opt._params[i]}
        for name in rules:
            arr = opt.state[key].get(name)
            if isinstance(arr, np.ndarray):
                t[name] = arr
        out.append(t)
    return out


def side_rules(est, tables: Dict[str, np.ndarray]) -> Dict[str, str]:
    rules = dict(STATE_RULES[_opt_name(est.optimizer_)])
    rules["W"] = "mean"
    return {k: rules[k] for k in tables}


def _steps(est) -> int:
    opt = est.optimizer_
    return int(opt.state[opt._keys[0]].get("step", 0))


def _deltas(model, est, counts, samples) -> List[_mixing.RowDelta]:
    """One ``RowDelta`` per table: ``est`` (a trained copy) against ``model`` (the broadcast,
    unchanged)."""
    before, after = side_tables(model), side_tables(est)
    steps = _steps(est) - _steps(model)
    return [_mixing.extract(b, a, c, side_rules(est, a), steps, samples)
            for b, a, c in zip(before, after, counts)]


def merge_sides(a, b):
    """Merge two tasks' results: per-table deltas, and (loss x rows, rows)."""
    return ([_mixing.merge(x, y) for x, y in zip(a[0], b[0])],
            (a[1][0] + b[1][0], a[1][1] + b[1][1]))


def strip_sides(res):
    return [_mixing.strip_old(d) for d in res[0]], res[1]


def nbytes_sides(res) -> int:
    return int(sum(d.nbytes for d in res[0]))


def apply_sides(model, deltas) -> None:
    """Write the mixed rows into the driver's tables and advance the step counter."""
    opt = model.optimizer_
    step0 = _steps(model)
    for tables, d in zip(side_tables(model), deltas):
        _mixing.apply(d, tables)
    for key, d in zip(opt._keys, deltas):
        opt.state[key]["step"] = step0 + d.steps


# ----------------------------------------------------------------------------- MF

def _empty(part) -> bool:
    """A partition without rows (a filtered dask DataFrame often has some): skipped."""
    try:
        return len(part) == 0 if hasattr(part, "columns") else len(part[0]) == 0
    except TypeError:
        return False


def mf_ids(part, implicit: bool):
    """The distinct raw user and item ids of one partition of columns (checked)."""
    if _empty(part):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    u, i, _, _ = V.check_columns("X partition", part, implicit)
    return sorted_unique(u), sorted_unique(i)


def mf_encode(part, users, items, implicit: bool):
    """One partition as ``(users, items, values)`` row indices of the model (int64, int64,
    float64) by the fitted encoders, and its summary ``(n, sum, min, max)``."""
    from ..recommend._interactions import interactions_input
    if _empty(part):
        e = np.empty(0, dtype=np.int64)
        return (e, e, np.empty(0, dtype=np.float64)), (0, 0.0, math.inf, -math.inf)
    X = interactions_input("X partition", part, implicit, users, items).X.tocoo()
    u = X.row.astype(np.int64)
    i = X.col.astype(np.int64)
    v = np.asarray(X.data, dtype=np.float64)
    summary = (int(v.size), float(v.sum()), float(v.min()) if v.size else math.inf,
               float(v.max()) if v.size else -math.inf)
    return (u, i, v), summary


def _first(x):
    return x[0]


def _second(x):
    return x[1]


def mf_pairs(enc):
    return enc[0][0], enc[0][1]


def train_mf(model, enc, start: int, stop: int, seed):
    """``partial_fit`` of a copy of ``model`` on ratings ``start:stop`` of an encoded
    partition; the per-table deltas and ``(loss x rows, rows)``."""
    u, i, v = enc[0]
    n_users, n_items = model.n_users_, model.n_items_
    u, i, v = u[start:stop], i[start:stop], v[start:stop]
    est = copy.deepcopy(model)
    est._rng = np.random.default_rng(seed)
    X = sp.csr_matrix((v, (u, i)), shape=(n_users, n_items))
    est.partial_fit(X)
    counts = [np.bincount(u, minlength=n_users), np.bincount(i, minlength=n_items)]
    loss = float(est.history_[-1]["loss"]) if est.history_ else 0.0
    return _deltas(model, est, counts, int(u.size)), (loss * u.size, int(u.size))


def init_mf(estimator, client, parts, persist: bool):
    """The driver's model, built from statistics of all the partitions; the encoded
    partitions (futures when ``persist``, else delayed)."""
    import dask
    from ..recommend._interactions import IdEncoder, SeenItems
    from .._utils import check_random_state
    from ._fit import large_arguments

    model = copy.deepcopy(estimator)
    p = model._check_params()
    p["user_features"] = p["item_features"] = None  # side features are not distributed
    implicit = model._implicit_feedback(p)
    if persist:
        parts = client.compute(parts)
    ids = client.gather(client.compute([_delayed(mf_ids, x, implicit) for x in parts]))
    users = IdEncoder("users").fit(np.concatenate([a for a, _ in ids]))
    items = IdEncoder("items").fit(np.concatenate([b for _, b in ids]))
    # the encoders (8 bytes per distinct id) travel in the graph once, shared by every
    # partition's task
    encs = [_delayed(mf_encode, x, dask.delayed(users), dask.delayed(items), implicit)
            for x in parts]
    if persist:
        with large_arguments():
            encs = client.compute(encs)
        # the raw partitions are not needed once encoded
        del parts
    summaries = client.gather(client.compute([_delayed(_second, e) for e in encs]))
    n = sum(s[0] for s in summaries)
    if n == 0:
        raise ValueError("X has no interactions")
    pairs = client.gather(client.compute([_delayed(mf_pairs, e) for e in encs]))
    shape = (len(users), len(items))
    model._init_model(sp.csr_matrix(shape), p, check_random_state(model.random_state),
                      (users, items))
    if not implicit:
        model.global_mean_ = sum(s[1] for s in summaries) / n
        model.rating_range_ = (min(s[2] for s in summaries), max(s[3] for s in summaries))
    u = np.concatenate([a for a, _ in pairs])
    i = np.concatenate([b for _, b in pairs])
    model._seen = SeenItems(sp.csr_matrix((np.ones(u.size, dtype=np.int8), (u, i)),
                                          shape=shape))
    prepare_optimizer(model)
    sizes = [s[0] for s in summaries]
    return model, encs, sizes, implicit


def mf_broadcast_view(model, implicit: bool):
    """What the workers need of the driver's model: all of it for BPR / WARP (their
    negatives avoid every seen item); for squared loss the seen items are left out (training
    does not read them; ``partial_fit`` adds the slice's own)."""
    if implicit:
        return model
    from ..recommend._interactions import SeenItems
    view = copy.copy(model)
    view._seen = SeenItems(sp.csr_matrix(model._seen.shape, dtype=np.int8))
    view.history_ = []
    return view


# ----------------------------------------------------------------------------- FM

def fm_summary(X, y, classify: bool):
    """(rows, columns, dtype, target summary) of one partition: the sum of y, or the
    distinct labels and their counts."""
    X = X if sp.issparse(X) else np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"a partition of X has {X.ndim} dimensions; expected a 2-D matrix")
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"a partition of X has {X.shape[0]} rows but its y has shape "
                         f"{y.shape}")
    dt = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    if classify:
        return X.shape[0], X.shape[1], dt, np.unique(y, return_counts=True)
    return X.shape[0], X.shape[1], dt, float(np.asarray(y, dtype=np.float64).sum())


def init_fm(estimator, summaries):
    """The driver's FM model from the partitions' summaries (the first ``partial_fit``'s
    initialisation, with the intercept from all the targets)."""
    from ..recommend import FMClassifier
    model = copy.deepcopy(estimator)
    p = model._check_params()
    widths = {s[1] for s in summaries}
    dtypes = {np.dtype(s[2]) for s in summaries}
    if len(widths) != 1:
        raise ValueError(f"the partitions of X have different numbers of columns "
                         f"{sorted(widths)}")
    if len(dtypes) != 1:
        raise ValueError(f"the partitions of X have different dtypes {sorted(map(str, dtypes))}")
    n_features, dtype = widths.pop(), dtypes.pop()
    n = sum(s[0] for s in summaries)
    if n == 0:
        raise ValueError("X has no rows")
    if isinstance(model, FMClassifier):
        labels = np.concatenate([s[3][0] for s in summaries])
        classes = np.unique(labels)
        counts = np.zeros(classes.shape[0], dtype=np.float64)
        for s in summaries:
            counts[np.searchsorted(classes, s[3][0])] += s[3][1]
        if classes.shape[0] < 2:
            raise ValueError(f"FMClassifier needs samples of at least 2 classes in the data; "
                             f"got 1 class: {classes[0]!r}")
        # the intercept FMClassifier._encode starts from: the log-odds of the class prior
        if classes.shape[0] == 2:
            prior = np.clip(counts[1] / n, 1e-6, 1 - 1e-6)
            w0 = np.array([np.log(prior / (1 - prior))])
        else:
            w0 = np.log(np.clip(counts / n, 1e-6, None))
            w0 -= w0.mean()
        model.classes_ = classes
        n_out = 1 if classes.shape[0] == 2 else classes.shape[0]
    else:
        w0 = np.array([sum(s[3] for s in summaries) / n])
        n_out = 1
    model._init_model(n_features, dtype, n_out, w0, p)
    model.n_features_in_ = n_features
    prepare_optimizer(model)
    return model


def train_fm(model, X, y, start: int, stop: int, seed):
    """``partial_fit`` of a copy of ``model`` on rows ``start:stop`` of a partition."""
    X = V.check_sparse_matrix("X partition", X if sp.issparse(X) else sp.csr_matrix(X))
    Xs, ys = X[start:stop], np.asarray(y)[start:stop]
    est = copy.deepcopy(model)
    est._rng = np.random.default_rng(seed)
    est.partial_fit(Xs, ys)
    n_rows = est.table_.shape[0]
    counts = [np.bincount(Xs.indices, minlength=n_rows),
              np.full(est.w0_.shape[0], float(Xs.shape[0]))]
    loss = float(est.loss_curve_[-1]) if est.loss_curve_ else 0.0
    return _deltas(model, est, counts, int(Xs.shape[0])), (loss * Xs.shape[0],
                                                           int(Xs.shape[0]))


def _delayed(fn, *args):
    import dask
    return dask.delayed(fn, pure=False)(*args)
