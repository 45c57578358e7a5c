"""``sparseopt.dask.fit``: data-parallel training by iterative parameter mixing.

One round (a *sync*): the driver broadcasts its model; every partition's task copies it,
runs the estimator's own ``partial_fit`` on the next slice of its partition (``sync_every``
mini-batches, or the whole partition) and returns a ``RowDelta`` of the rows that slice
changed; the deltas are merged pairwise on the workers (a tree, in partition order) and the
driver writes the merged rows into its model (``_mixing``). Tasks are pure functions of the
broadcast model and a partition, so Dask may re-run a task lost with a worker and the result
is the same model.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Dict, List, Optional

import numpy as np
import scipy.sparse as sp

from .. import _validation as V
from . import _mixing

# per optimizer: state name -> mixing rule (see _mixing)
_STATE_RULES = {
    "adagrad": {"sum": "sum"},
    "adam": {"exp_avg": "mean", "exp_avg_sq": "mean", "row_step": "sum"},
    "rmsprop": {"square_avg": "mean"},
    "sgd": {},
}


# ----------------------------------------------------------------------------- linear models

def _linear_tables(est) -> Dict[str, np.ndarray]:
    """The row tables of a linear estimator: its weights and its optimizer's row state."""
    tables = {"W": est._W}
    opt = est.optimizer_
    if opt is not None:
        st = opt.state_dict()["state"].get("coef", {})
        for name in _STATE_RULES[est.optimizer]:
            if name in st:
                arr = st[name]
                tables[name] = arr
    return tables


def _linear_rules(est) -> Dict[str, str]:
    rules = {"W": "mean"}
    rules.update(_STATE_RULES[est.optimizer])
    return rules


def _zeros_like_tables(est, n_rows: int, n_out: int, dtype) -> Dict[str, np.ndarray]:
    """The tables of a model that has not trained yet (what a first partial_fit starts
    from): zero weights and zero state."""
    out = {"W": np.zeros((n_rows, n_out), dtype=dtype)}
    for name in _STATE_RULES[est.optimizer]:
        if name == "row_step":
            out[name] = np.zeros(n_rows, dtype=np.int64)
        else:
            out[name] = np.zeros((n_rows, n_out), dtype=np.float64)
    return out


def _train_linear(model, X, y, start, stop, classes, n_features):
    """One partition's pass of one sync: ``partial_fit`` of a copy of the broadcast
    ``model`` on rows ``start:stop`` of the partition. Returns ``(delta, fitted)``, where
    ``fitted`` is the trained copy on the first sync of the first partition (the driver's
    skeleton) and None otherwise."""
    X = V.check_sparse_matrix("X partition", X if sp.issparse(X) else sp.csr_matrix(X))
    y = np.asarray(y)
    Xs, ys = X[start:stop], y[start:stop]
    first = not hasattr(model, "_W")
    est = copy.deepcopy(model)
    if first:
        est.partial_fit(Xs, ys, **({"classes": classes} if classes is not None else {}))
        W = est._W
        before = _zeros_like_tables(est, W.shape[0], W.shape[1], W.dtype)
        t0 = 0
    else:
        before = {k: v.copy() for k, v in _linear_tables(model).items()}
        t0 = model.t_
        est.partial_fit(Xs, ys)
    after = _linear_tables(est)
    before = {k: before[k] for k in after}
    n_rows = est._W.shape[0]
    counts = np.bincount(Xs.indices, minlength=n_rows).astype(np.float64)
    if est._intercept_row:
        counts[est._n_feat] = Xs.shape[0]
    delta = _mixing.extract(before, after, counts, {k: _linear_rules(est)[k] for k in after},
                            est.t_ - t0, Xs.shape[0])
    return delta, (est if first else None)


def _apply_linear(est, delta, t0: int, samples0: int) -> None:
    tables = _linear_tables(est)
    _mixing.apply(delta, tables)
    est.t_ = t0 + delta.steps
    est._samples_seen = samples0 + delta.samples
    opt = est.optimizer_
    if opt is not None and "coef" in opt.state:
        opt.state["coef"]["step"] = t0 + delta.steps
    # every row is current between calls, so fresh penalty bookkeeping is exact (and
    # smaller to broadcast)
    est._reg = None
    est.n_iter_ = 1


# ----------------------------------------------------------------------------- driver

def _partitions(X, y, client):
    """(list of X partition futures-or-delayed, list of y partitions, row counts,
    n_features)."""
    import dask
    import dask.array as da
    from dask.delayed import Delayed

    if isinstance(X, da.Array):
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D dask array, got {X.ndim} dimensions")
        if X.numblocks[1] != 1:
            X = X.rechunk({1: X.shape[1]})
        xs = list(X.to_delayed()[:, 0])
        sizes = list(X.chunks[0])
        n_features = int(X.shape[1])
    elif isinstance(X, (list, tuple)):
        if not X:
            raise ValueError("X is an empty list of partitions")
        xs = [x if isinstance(x, Delayed) or _is_future(x) else
              dask.delayed(x) for x in X]
        sizes = None
        n_features = None
    else:
        raise TypeError("X must be a dask array of scipy CSR blocks or a list of partitions "
                        f"(dask.delayed CSR matrices), got {type(X).__name__}")
    if isinstance(y, da.Array):
        if y.ndim != 1:
            raise ValueError(f"y must be a 1-D dask array, got {y.ndim} dimensions")
        if sizes is not None:
            if y.shape[0] != sum(sizes):
                raise ValueError(f"X has {sum(sizes)} rows but y has {y.shape[0]}")
            y = y.rechunk((tuple(sizes),))
        ys = list(y.to_delayed())
    elif isinstance(y, (list, tuple)):
        ys = [v if isinstance(v, Delayed) or _is_future(v) else
              dask.delayed(np.asarray(v)) for v in y]
    else:
        raise TypeError(f"y must be a dask array or a list of partitions, got "
                        f"{type(y).__name__}")
    if len(ys) != len(xs):
        raise ValueError(f"X has {len(xs)} partitions but y has {len(ys)}")
    return xs, ys, sizes, n_features


def _is_future(x) -> bool:
    from distributed import Future
    return isinstance(x, Future)


def _shape_of(X, y):
    X = X if sp.issparse(X) else np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"a partition of X has {X.ndim} dimensions; expected a 2-D matrix")
    n_y = np.shape(y)[0] if np.ndim(y) else -1
    if n_y != X.shape[0]:
        raise ValueError(f"a partition of X has {X.shape[0]} rows but its y has {n_y}")
    return X.shape[0], X.shape[1]


def _unique(y):
    return np.unique(np.asarray(y))


def fit(estimator, X, y=None, client=None, sync_every=None, n_epochs=None, *,
        persist=True, stats=None, callback=None):
    """Train ``estimator`` on a Dask cluster by iterative parameter mixing.

    Every partition of ``X`` is trained on by the estimator's own ``partial_fit`` (the lazy
    row optimizers), starting from the model the driver broadcasts; after every pass over
    the partitions (or every ``sync_every`` mini-batches of each) the rows the partitions
    changed are sent back as sparse deltas and mixed: weights averaged by per-row update
    counts, Adagrad accumulators summed (``sparseopt.dask._mixing`` states the rule), so the
    result is an ordinary fitted estimator whose optimizer state resumes training.

    Parameters
    ----------
    estimator : SGDClassifier or SGDRegressor
        The model to train (not modified: a fitted copy is returned). ``average``,
        ``early_stopping`` and ``class_weight='balanced'`` are refused (they need the whole
        data in one process); ``batch_size='auto'`` is resolved from the total number of
        rows, as a single-process ``fit`` would.
    X : dask array of scipy CSR blocks, or list of dask.delayed CSR matrices
        The training data, partitioned by rows.
    y : 1-D dask array, or list of dask.delayed arrays
        Targets, partitioned like ``X``.
    client : distributed.Client or None
        The cluster; None uses the current default client.
    sync_every : int or None
        Mini-batches each partition trains between two mixings; None mixes once per pass.
    n_epochs : int
        Passes over the data (each partition's rows once per pass).
    persist : bool, default=True
        Keep the partitions in the workers' memory between passes. ``False`` recomputes
        them from their graph at every sync (out-of-core: only the partitions being trained
        on are in memory).
    stats : list or None
        When a list, one dict per sync is appended: ``seconds``, ``rows`` (rows mixed),
        ``bytes`` (delta bytes sent by the partitions' tasks), ``broadcast_bytes``.

    callback : callable or None
        Called as ``callback(model, info)`` on the driver after every sync, with the mixed
        model (read it, do not modify it) and the dict appended to ``stats``.

    Returns
    -------
    estimator
        A fitted copy of ``estimator`` (with its optimizer state, as after ``partial_fit``).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, dask
    >>> from distributed import Client, LocalCluster
    >>> from sparseopt.linear_model import SGDClassifier
    >>> import sparseopt.dask
    >>> rng = np.random.default_rng(0)
    >>> parts = [sp.random(200, 50, density=0.1, format="csr", random_state=i)
    ...          for i in range(2)]
    >>> w = rng.normal(size=50)
    >>> ys = [(p @ w > 0).astype(int) for p in parts]
    >>> with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
    ...                   dashboard_address=None) as cluster, Client(cluster) as client:
    ...     model = sparseopt.dask.fit(SGDClassifier(loss="log_loss", random_state=0),
    ...                                [dask.delayed(p) for p in parts],
    ...                                [dask.delayed(v) for v in ys], client, n_epochs=3)
    >>> model.coef_.shape, model.t_  # 3 passes x 2 partitions x 25 steps of 8 rows
    ((1, 50), 150)
    """
    from distributed import default_client

    V.check_distributed_fit(estimator, sync_every, n_epochs, persist, stats, callback)
    if client is None:
        client = default_client()
    from ..linear_model import SGDClassifier, SGDRegressor
    if type(estimator).__name__ == "MatrixFactorization":
        if y is not None:
            raise TypeError("MatrixFactorization takes no y: X holds the (user, item, "
                            "value) columns")
        return _fit_mf(estimator, X, client, sync_every, n_epochs, persist, stats, callback)
    if not isinstance(estimator, (SGDClassifier, SGDRegressor)):
        if y is None:
            raise ValueError(f"{type(estimator).__name__} needs y")
        return _fit_fm(estimator, X, y, client, sync_every, n_epochs, persist, stats,
                       callback)
    if y is None:
        raise ValueError(f"{type(estimator).__name__} needs y")
    xs, ys, sizes, n_features = _partitions(X, y, client)
    if persist:  # futures: computed once, kept in the workers' memory
        xs = client.compute(xs)
        ys = client.compute(ys)
    shapes = client.gather(client.compute(
        [_delayed_call(_shape_of, x, v) for x, v in zip(xs, ys)]))
    sizes = [s[0] for s in shapes]
    widths = {s[1] for s in shapes}
    if len(widths) != 1:
        raise ValueError(f"the partitions of X have different numbers of columns "
                         f"{sorted(widths)}")
    n_total = sum(sizes)
    if n_total == 0:
        raise ValueError("X has no rows")
    classes = None
    if isinstance(estimator, SGDClassifier):
        uniq = client.gather(client.compute([_delayed_call(_unique, v) for v in ys]))
        classes = np.unique(np.concatenate(uniq))
    model = copy.deepcopy(estimator)
    from ..linear_model._base import auto_batch_size
    if isinstance(model.batch_size, str):
        model.batch_size = auto_batch_size(n_total)
    batch = int(model.batch_size)
    span = max(sizes) if sync_every is None else sync_every * batch
    rounds = -(-max(sizes) // span)
    for epoch in range(n_epochs):
        for r in range(rounds):
            tic = time.perf_counter()
            start = r * span
            live = [i for i in range(len(xs)) if sizes[i] > start]
            bounds = [(start, min(sizes[i], start + span)) for i in live]
            mixed, first, nbytes = _sync(client, model, [xs[i] for i in live],
                                        [ys[i] for i in live], bounds, classes, n_features)
            t0 = getattr(model, "t_", 0)
            s0 = getattr(model, "_samples_seen", 0)
            if first is not None:
                model, t0, s0 = first, 0, 0
            _apply_linear(model, mixed, t0, s0)
            info = dict(epoch=epoch, sync=r, seconds=time.perf_counter() - tic,
                        rows=int(mixed.rows.size), bytes=int(nbytes),
                        table_rows=int(model._W.shape[0]), last=r == rounds - 1)
            if stats is not None:
                stats.append(info)
            if callback is not None:
                callback(model, info)
    model.n_iter_ = n_epochs
    return model


# ----------------------------------------------------------------------------- recommenders

def _column_partitions(X):
    """Partitions of (user, item, value) columns: a dask DataFrame's, or a list of
    dask.delayed / futures / in-memory DataFrames or tuples."""
    import dask
    from dask.delayed import Delayed
    if hasattr(X, "to_delayed") and hasattr(X, "npartitions"):
        return list(X.to_delayed())
    if isinstance(X, list):
        if not X:
            raise ValueError("X is an empty list of partitions")
        return [x if isinstance(x, Delayed) or _is_future(x) else dask.delayed(x) for x in X]
    raise TypeError("X must be a dask DataFrame with user / item / value columns or a list of "
                    f"partitions (dask.delayed DataFrames or column tuples), got "
                    f"{type(X).__name__}")


def _loop_tables(client, model, view, sizes, span, n_epochs, tasks, end_epoch, stats,
                 callback):
    """The syncs of a recommender's fit: ``tasks(broadcast, epoch, sync, live, bounds)``
    submits one task per live partition slice; ``end_epoch(loss, rows, seconds)`` records
    an epoch."""
    from . import _recommend as R
    rounds = -(-max(sizes) // span)
    for epoch in range(n_epochs):
        loss_sum, n_rows, t_epoch = 0.0, 0, time.perf_counter()
        for r in range(rounds):
            tic = time.perf_counter()
            start = r * span
            live = [i for i in range(len(sizes)) if sizes[i] > start]
            bounds = [(start, min(sizes[i], start + span)) for i in live]
            deltas, (ls, nr), nbytes = _sync_tables(
                client, view(), lambda b: tasks(b, epoch, r, live, bounds))
            R.apply_sides(model, deltas)
            loss_sum += ls
            n_rows += nr
            info = dict(epoch=epoch, sync=r, seconds=time.perf_counter() - tic,
                        rows=int(sum(d.rows.size for d in deltas)), bytes=int(nbytes),
                        table_rows=int(sum(t["W"].shape[0] for t in R.side_tables(model))),
                        last=r == rounds - 1)
            if stats is not None:
                stats.append(info)
            if callback is not None:
                callback(model, info)
        end_epoch(loss_sum / n_rows if n_rows else float("nan"), n_rows,
                  time.perf_counter() - t_epoch)


def _fit_mf(estimator, X, client, sync_every, n_epochs, persist, stats, callback):
    from . import _recommend as R
    parts = _column_partitions(X)
    model, encs, sizes, implicit = R.init_mf(estimator, client, parts, persist)
    p = model._check_params()
    n_epochs = p["n_epochs"] if n_epochs is None else n_epochs
    span = max(sizes) if sync_every is None else sync_every * p["batch_size"]
    seed = int(model._rng.integers(2 ** 63))

    def tasks(b, epoch, r, live, bounds):
        return client.compute([_delayed_call(R.train_mf, b, encs[i], a, z, [seed, epoch, r, i])
                               for i, (a, z) in zip(live, bounds)], retries=3)

    def end_epoch(loss, rows, seconds):
        model.n_epochs_ += 1
        model.history_.append(dict(loss=loss, epoch=model.n_epochs_, seconds=seconds,
                                   rows_per_s=rows / seconds if seconds > 0 else 0.0,
                                   eval=None))

    _loop_tables(client, model, lambda: R.mf_broadcast_view(model, implicit), sizes, span,
                 n_epochs, tasks, end_epoch, stats, callback)
    return model


def _fit_fm(estimator, X, y, client, sync_every, n_epochs, persist, stats, callback):
    from . import _recommend as R
    from ..recommend import FMClassifier
    xs, ys, _, _ = _partitions(X, y, client)
    if persist:
        xs = client.compute(xs)
        ys = client.compute(ys)
    classify = isinstance(estimator, FMClassifier)
    summaries = client.gather(client.compute(
        [_delayed_call(R.fm_summary, x, v, classify) for x, v in zip(xs, ys)]))
    model = R.init_fm(estimator, summaries)
    p = model._check_params()
    n_epochs = p["n_epochs"] if n_epochs is None else n_epochs
    sizes = [s[0] for s in summaries]
    span = max(sizes) if sync_every is None else sync_every * p["batch_size"]
    seed = int(model._rng.integers(2 ** 63))

    def tasks(b, epoch, r, live, bounds):
        return client.compute([_delayed_call(R.train_fm, b, xs[i], ys[i], a, z,
                                             [seed, epoch, r, i])
                               for i, (a, z) in zip(live, bounds)], retries=3)

    def end_epoch(loss, rows, seconds):
        model.n_iter_ += 1
        model.t_ += rows
        model.loss_curve_.append(loss)

    _loop_tables(client, model, lambda: model, sizes, span, n_epochs, tasks, end_epoch,
                 stats, callback)
    return model


# failures of the cluster (a worker lost mid-sync), after which the sync is run again: its
# tasks are pure functions of the broadcast model and the partitions, so a rerun gives the
# same deltas
_RERUNS = 5


def _cluster_errors():
    from distributed import CancelledError
    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker
    return (CommClosedError, KilledWorker, CancelledError, OSError, TimeoutError)


def _broadcast(client, model):
    """The model as a future every task of the sync reads.

    It travels as the argument of a task that the scheduler holds, not by
    ``client.scatter``: a worker lost with its copy has it recomputed from that task (a
    scattered copy cannot be), and no driver call waits on a transfer to one chosen worker
    (a broadcast scatter to a worker that dies on the way can wait forever)."""
    return client.submit(_identity, model, pure=False)


def _identity(x):
    return x


def _tree(client, level, merge):
    """Merge task results pairwise on the workers, in a fixed pairing (the result does not
    depend on which task finished first)."""
    while len(level) > 1:
        level = [client.submit(merge, level[i], level[i + 1], pure=False, retries=3)
                 if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
    return level[0]


def _rerun(run):
    """``run()``, run again after a failure of the cluster (a worker lost mid-sync): its
    tasks are pure functions of the broadcast model and the partitions, so a rerun gives the
    same result."""
    errors = _cluster_errors()
    for attempt in range(_RERUNS + 1):
        try:
            return run()
        except errors:
            if attempt == _RERUNS:
                raise
            time.sleep(0.2 * (attempt + 1))


def _sync(client, model, xs, ys, bounds, classes, n_features):
    """One sync: broadcast ``model``, train every partition's slice, merge the deltas as a
    tree on the workers. Returns (merged delta, the first partition's trained copy on the
    first sync else None, bytes the tasks sent)."""
    def run():
        broadcast = _broadcast(client, model)
        futs = client.compute(
            [_delayed_call(_train_linear, broadcast, x, y, a, b, classes, n_features)
             for x, y, (a, b) in zip(xs, ys, bounds)], retries=3)
        deltas = [client.submit(_first, f, pure=False, retries=3) for f in futs]
        sizes = client.gather([client.submit(_nbytes, d, pure=False, retries=3)
                               for d in deltas])
        merged = _tree(client, deltas, _mixing.merge)
        # the driver needs the new values only
        mixed = client.submit(_mixing.strip_old, merged, pure=False, retries=3).result()
        # the first sync also brings back the first partition's trained copy: the
        # driver's model (its unchanged rows are the initial values)
        first = (client.submit(_second, futs[0], pure=False).result()
                 if not hasattr(model, "_W") else None)
        return mixed, first, int(sum(sizes))
    return _rerun(run)


def _sync_tables(client, view, tasks):
    """One sync of a recommender: broadcast ``view``, run ``tasks(broadcast)`` (one future
    of (per-table deltas, (loss x rows, rows)) per partition slice), merge on the workers.
    Returns (mixed deltas, (loss x rows, rows), bytes the tasks sent)."""
    from . import _recommend as R

    def run():
        futs = tasks(_broadcast(client, view))
        sizes = client.gather([client.submit(R.nbytes_sides, f, pure=False, retries=3)
                               for f in futs])
        merged = _tree(client, futs, R.merge_sides)
        deltas, loss = client.submit(R.strip_sides, merged, pure=False, retries=3).result()
        return deltas, loss, int(sum(sizes))
    return _rerun(run)


def _first(pair):
    return pair[0]


def _second(pair):
    return pair[1]


def _nbytes(delta):
    return delta.nbytes


def _delayed_call(fn, *args):
    import dask
    return dask.delayed(fn, pure=False)(*args)
