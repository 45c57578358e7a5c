"""``sparseopt.dask.fit``: data-parallel training by iterative parameter mixing.

One round (a *sync*): every partition's task copies the model (the worker's replica of the
driver's model, see "replicas" below), runs the estimator's own ``partial_fit`` on the next
slice of its partition (``sync_every`` mini-batches, or the whole partition) and returns a
``RowDelta`` of the rows that slice changed; the deltas are merged pairwise on the workers
(a tree, in partition order) and the driver writes the merged rows into its model
(``_mixing``). Tasks are pure functions of the model and a partition, so Dask may re-run a
task lost with a worker and the result is the same model. The recommenders' initialisation
and tasks are in ``_recommend``; ``MatrixFactorization``'s DSGD (no mixing) in ``_dsgd``.
"""
from __future__ import annotations

import contextlib
import copy
import threading
import time
import warnings
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
    """``n_rows`` rows of the tables of a model that has not trained yet (what a first
    partial_fit starts from): zero weights and zero state (float64, as the first sync's
    deltas carry it)."""
    out = {"W": np.zeros((n_rows, n_out), dtype=dtype)}
    for name in _STATE_RULES[est.optimizer]:
        if name == "row_step":
            out[name] = np.zeros(n_rows, dtype=np.int64)
        else:
            out[name] = np.zeros((n_rows, n_out), dtype=np.float64)
    return out


def _train_linear(model, X, y, start, stop, classes, n_features, support=None,
                  in_place=False):
    """One partition's pass of one sync: ``partial_fit`` of a copy of the broadcast
    ``model`` on rows ``start:stop`` of the partition. Returns ``(delta, skeleton, cpu)``,
    where ``skeleton`` is, on the first sync, the trained copy without its tables
    (``_Skeleton``: the driver's model and the workers' replicas are built from the first
    partition's, with zero tables, before the mixed rows are written) and None otherwise, and
    ``cpu`` the task's CPU seconds.

    Every step after the copy costs O(rows the pass can change), not O(table): those rows
    are the slice's features (and the intercept), which the pass updates, and the rows of
    ``model`` that may be non-zero (``support``: sorted rows outside of which every table of
    ``model`` is zero; None finds them by a scan), which the lazy penalty may move. A row
    outside both is zero before and after the pass (the penalty leaves 0 at 0, and the
    optimizers' state of a row changes only with its gradient), so the delta is the one a
    comparison of the whole tables gives.

    ``in_place`` (a worker that runs one task at a time): the pass trains a copy of the
    estimator that shares ``model``'s tables, and those rows of the tables are written back
    afterwards (also when the pass fails), so ``model`` is left as it was without a
    table-sized copy."""
    cpu0 = time.process_time()
    Xc, ys = _checked_partition(X, y)
    Xs = Xc if (start, stop) == (0, Xc.shape[0]) else Xc[start:stop]
    ys = ys if (start, stop) == (0, ys.shape[0]) else ys[start:stop]
    cols, col_counts = _slice_columns(X, Xc, start, stop)
    first = not hasattr(model, "_W")
    rows, counts = cols, col_counts
    if bool(model.fit_intercept if first else model._intercept_row):
        rows = np.append(rows, np.int64(Xc.shape[1]))  # the intercept's row, after the features
        counts = np.append(counts, np.float64(Xs.shape[0]))
    if first:
        before, t0 = None, 0
        support = np.zeros(0, dtype=np.int64)
    else:
        # ``model`` is not modified (``est`` is a deep copy): it is the "before" as it is
        before, t0 = _linear_tables(model), model.t_
        if support is None:
            support = _nonzero_rows(before)
    cand = _mixing.union_sorted(rows, support)
    if first:
        est = copy.deepcopy(model)
    elif in_place:  # the tables are shared (the memo), everything else is copied
        old_all = {k: a[cand] for k, a in before.items()}
        est = copy.deepcopy(model, {id(a): a for a in before.values()})
    else:
        est = _copy_model(model)
    # the lazy penalty's end-of-call catch-up visits these rows only (every other row is
    # zero with no optimizer state, and stays so)
    est._live_rows = cand
    try:
        if first:
            est.partial_fit(Xs, ys, **({"classes": classes} if classes is not None else {}))
        else:
            est.partial_fit(Xs, ys)
        after = _linear_tables(est)
        new = {k: a[cand] for k, a in after.items()}
    finally:
        del est._live_rows
        if in_place and not first:  # the only rows the pass can have written
            for k, a in before.items():
                a[cand] = old_all[k]
    cand_counts = np.zeros(cand.shape[0])
    cand_counts[np.searchsorted(cand, rows)] = counts
    if before is None:  # the model before the first pass: zero tables
        old = _zeros_like_tables(est, cand.shape[0], est._W.shape[1], est._W.dtype)
        old = {k: old[k] for k in after}
    elif in_place:
        old = {k: old_all[k] for k in after}
    else:
        old = {k: before[k][cand] for k in after}
    keep = _mixing.changed_rows(old, new)
    delta = _mixing.RowDelta(cand[keep], cand_counts[keep],
                             {k: np.ascontiguousarray(v[keep]) for k, v in new.items()},
                             {k: np.ascontiguousarray(v[keep]) for k, v in old.items()},
                             {k: _linear_rules(est)[k] for k in after}, est.t_ - t0,
                             Xs.shape[0])
    return delta, (_Skeleton(est, after) if first else None), time.process_time() - cpu0


def _nonzero_rows(tables: Dict[str, np.ndarray]) -> np.ndarray:
    """Sorted rows where any table is non-zero (NaN counts as non-zero)."""
    mask = None
    for a in tables.values():
        d = a != 0
        if d.ndim > 1:
            d = d.reshape(d.shape[0], -1).any(axis=1)
        mask = d if mask is None else (mask | d)
    return np.flatnonzero(mask).astype(np.int64)


# Per partition object in a worker's memory (a persisted partition is the same object at
# every sync): whether the check left it as it is and, per slice, its distinct columns and
# their entry
# counts. Checking a partition and counting a slice's columns cost O(entries) and, for the
# counts, O(columns); done once per partition instead of once per sync. Entries go with their
# partition (a weak reference), and at most _PART_CACHE_SIZE partitions are kept.
_PART_CACHE: Dict[int, Any] = {}
_PART_CACHE_SIZE = 64
_PART_LOCK = threading.Lock()


def _part_entry(X):
    import weakref
    key = id(X)
    with _PART_LOCK:
        entry = _PART_CACHE.get(key)
        if entry is not None and entry["ref"]() is X:
            return entry
        try:
            ref = weakref.ref(X, lambda _r, key=key: _PART_CACHE.pop(key, None))
        except TypeError:  # an object without weak references is not cached
            return {"ref": lambda: None, "slices": {}}
        entry = {"ref": ref, "slices": {}}
        _PART_CACHE[key] = entry
        while len(_PART_CACHE) > _PART_CACHE_SIZE:
            _PART_CACHE.pop(next(iter(_PART_CACHE)))
        return entry


def _checked_partition(X, y):
    """``(X as a checked CSR matrix, y as an array)``. A partition the check leaves as it is
    is checked once; one it converts (index or value types, duplicates) is checked again at
    every sync, as keeping the converted copy would double the partition's memory."""
    entry = _part_entry(X)
    Xc = entry.get("checked")
    if Xc is None:
        Xc = V.check_sparse_matrix("X partition", X if sp.issparse(X) else sp.csr_matrix(X))
        if sp.issparse(X) and X.format == "csr" and X.shape == Xc.shape and all(
                a.dtype == b.dtype and np.array_equal(a, b)
                for a, b in ((X.indptr, Xc.indptr), (X.indices, Xc.indices),
                             (X.data, Xc.data))):
            Xc = entry["checked"] = X
    return Xc, np.asarray(y)


def _slice_columns(X, Xc, start, stop):
    """``(columns, counts)`` of rows ``start:stop`` of the checked partition ``Xc``: its
    distinct columns (sorted, int64) and their numbers of stored entries (float64, the
    mixing's update counts), computed once per partition and slice."""
    slices = _part_entry(X)["slices"]
    got = slices.get((start, stop))
    if got is None:
        idx = Xc.indices[Xc.indptr[start]:Xc.indptr[stop]]
        # a bincount over the columns costs less than sorting the slice's entries; once
        # per slice
        c = np.bincount(idx, minlength=Xc.shape[1])
        cols = np.flatnonzero(c).astype(np.int64)
        got = (cols, c[cols].astype(np.float64))
        slices[(start, stop)] = got
    return got


def _copy_model(model):
    """A deep copy of a fitted linear estimator whose tables are copied straight into
    64-byte aligned buffers: the optimizer's unpickling re-allocates (zero-filled, page by
    page) and copies again any state array that is not aligned, as a plain deepcopy's are."""
    from ..optim._base import STATE_ALIGNMENT as align
    memo = {}
    for a in _linear_tables(model).values():
        raw = np.empty(a.nbytes + align, dtype=np.uint8)
        start = (-raw.ctypes.data) % align
        c = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
        c[...] = a
        memo[id(a)] = c
    return copy.deepcopy(model, memo)


class _Skeleton:
    """A fitted estimator without its row tables (weights, optimizer state): what a model
    that has not trained yet holds, minus the zeros. ``inflate`` gives the estimator with
    zero tables, so the first sync sends the hyper-parameters and shapes, not the table
    (the driver and every worker build the same zero model from the same skeleton)."""

    def __init__(self, est, tables: Dict[str, np.ndarray]):
        import io
        import pickle

        # every reference to a table (the weights are shared with the optimizer) is
        # pickled as its name; unpickling gives all of them one zero table
        ids = {id(a): name for name, a in tables.items()}
        self.shapes = {name: (a.shape, a.dtype.str) for name, a in tables.items()}
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.persistent_id = lambda obj: ids.get(id(obj))
        pickler.dump(est)
        self.blob = buf.getvalue()

    @property
    def nbytes(self) -> int:
        return len(self.blob)

    def __sizeof__(self) -> int:  # for Dask's ``sizeof`` (see ``RowDelta.__sizeof__``)
        return object.__sizeof__(self) + self.nbytes

    def inflate(self):
        import io
        import pickle

        made: Dict[str, np.ndarray] = {}
        shapes = self.shapes

        def load(name):
            if name not in made:
                shape, dtype = shapes[name]
                made[name] = np.zeros(shape, dtype=dtype)
            return made[name]

        unpickler = pickle.Unpickler(io.BytesIO(self.blob))
        unpickler.persistent_load = load
        return unpickler.load()


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


def _balance(client, xs, ys, sizes):
    """The persisted partitions spread over the workers in proportion to their threads.

    A partition's task runs where its data is, so partitions that all sit on some of the
    workers (as the scheduler happened to place them) leave the others idle at every sync.
    A partition stays where it is while its worker holds no more than its share of the rows
    (largest partitions first); the others are copied, once, to the workers furthest below
    their share, with their targets."""
    if len(xs) < 2 or not all(_is_future(x) for x in xs) \
            or not all(_is_future(v) for v in ys):
        return xs, ys
    workers = client.scheduler_info()["workers"]
    if len(workers) < 2:
        return xs, ys
    threads = {w: max(1, int(d.get("nthreads", 1) or 1)) for w, d in workers.items()}
    share = {w: sum(sizes) * t / sum(threads.values()) for w, t in threads.items()}
    holders = client.who_has(xs)
    load = dict.fromkeys(threads, 0)
    order = sorted(range(len(xs)), key=lambda i: -sizes[i])
    place, moved = {}, []
    for i in order:
        held = sorted((w for w in holders.get(xs[i].key, ()) if w in load),
                      key=lambda w: load[w] / threads[w])
        if held and load[held[0]] + sizes[i] <= share[held[0]]:
            place[i] = held[0]
            load[held[0]] += sizes[i]
        else:
            moved.append(i)
    for i in moved:
        w = min(load, key=lambda w: ((load[w] + sizes[i]) / threads[w], w))
        held = holders.get(xs[i].key, ())
        place[i] = w
        load[w] += sizes[i]
        if w not in held:
            # the copy's task may run elsewhere if that worker is lost meanwhile
            xs[i] = client.submit(_identity, xs[i], workers=[w], allow_other_workers=True,
                                  pure=False)
            ys[i] = client.submit(_identity, ys[i], workers=[w], allow_other_workers=True,
                                  pure=False)
    return xs, ys


def _shape_and_labels(X, y, classify):
    """``(rows, columns, the distinct labels or None)`` of a partition."""
    return _shape_of(X, y) + ((_unique(y) if classify else None),)


def fit(estimator, X, y=None, client=None, sync_every=None, n_epochs=None, *,
        persist=True, stats=None, callback=None, method="auto", n_blocks=None):
    """Train ``estimator`` on a Dask cluster by iterative parameter mixing, or by DSGD
    (``MatrixFactorization``).

    Every partition of ``X`` is trained on by the estimator's own ``partial_fit`` (the lazy
    row optimizers), starting from the model the driver holds; after every pass over the
    partitions (or every ``sync_every`` mini-batches of each) the rows the partitions
    changed are sent back as sparse deltas and mixed: weights averaged by per-row update
    counts, Adagrad accumulators summed (``sparseopt.dask._mixing`` states the rule), so the
    result is an ordinary fitted estimator whose optimizer state resumes training. Each
    worker keeps a replica of the model and the model never travels: the first sync sends
    the unfitted estimator, the second its fitted skeleton (no tables: the workers start
    from zeros, as the first sync did) and the merged rows, later syncs the merged rows.

    A ``MatrixFactorization`` with the squared loss trains by DSGD (Gemulla et al. 2011,
    ``sparseopt.dask._dsgd``) unless ``method="mixing"``: users and items are hashed into
    ``n_blocks`` blocks, the ratings cut once into the grid of cells on the workers, and
    each sub-epoch trains cells that share no user and no item in parallel, every task
    returning its blocks and their optimizer rows exactly. No average is taken: the model is
    that of one process training the same cells in the same order, and converges as the
    single-process fit does. A cell holds ``1 / n_blocks`` of a row's ratings, so it trains
    in batches of ``ceil(batch_size / n_blocks)`` (each row as often per batch as in a batch
    of ``batch_size`` of all the data, every rating weighted ``1 / (n_blocks x that)``), and an
    epoch makes at least 4 sub-epochs (each cell's pass in as many runs).

    A worker lost mid-fit changes nothing in the result: every task is a pure function of
    the model and its partition (random draws are seeded per epoch, sync and partition), so
    Dask re-runs the lost tasks and the driver re-runs a sync (a DSGD epoch) that failed.

    Parameters
    ----------
    estimator : SGDClassifier, SGDRegressor, MatrixFactorization, FMRegressor or FMClassifier
        The model to train (not modified: a fitted copy is returned). ``average``,
        ``early_stopping``, ``warm_start`` and ``class_weight='balanced'`` are refused (they
        need the whole data in one process); ``batch_size='auto'`` is resolved from the
        total number of rows, as a single-process ``fit`` would. ``MatrixFactorization``
        trains with any loss (squared, BPR, WARP: each task draws its negatives among the
        items its users have in no partition) and without side features; an optimizer
        option that keeps state without a mixing rule (``amsgrad``, lazy weight decay
        bookkeeping) is refused.
    X : dask array of scipy CSR blocks, list of dask.delayed CSR matrices, or, for \
``MatrixFactorization``, a dask DataFrame or a list of dask.delayed partitions of columns
        The training data, partitioned by rows. ``MatrixFactorization`` takes (user, item,
        value) columns of raw ids, as its ``fit`` does (a DataFrame with ``user``, ``item``
        and ``rating`` / ``value`` columns, or a tuple ``(users, items[, values])`` per
        partition); the model's ``IdEncoder`` s are built first from the distinct ids of
        all partitions, computed on the cluster. Partitions must not rate one
        (user, item) pair twice between them; empty partitions are skipped.
    y : 1-D dask array, list of dask.delayed arrays, or None
        Targets, partitioned like ``X`` (None for ``MatrixFactorization``).
    client : distributed.Client or None
        The cluster; None uses the current default client.
    sync_every : int or None
        Mini-batches each partition trains between two mixings; None mixes once per pass.
        Mixing only (``method="auto"`` then mixes).
    n_epochs : int or None
        Passes over the data (each partition's rows once per pass); required for the
        linear models, else None takes the estimator's ``n_epochs``.
    persist : bool, default=True
        Keep the partitions in the workers' memory between passes. ``False`` recomputes
        them from their graph at every sync (out-of-core: give ``dask.delayed`` loaders,
        and only the partitions being trained on are in memory, in the workers). Mixing
        only: DSGD keeps its grid of ratings in the workers' memory.
    stats : list or None
        When a list, one dict is appended per sync: ``epoch``, ``sync``, ``seconds``,
        ``rows`` (rows mixed, all tables), ``table_rows``, ``bytes`` (delta bytes sent by
        the partitions' tasks), ``sent_bytes`` (bytes sent to the workers: the rows
        merged at the previous sync, with the fitted skeleton on the second sync; the
        whole model only when a worker lost its replica), ``last`` (the epoch's last
        sync) and, for the linear models, ``task_cpu`` and ``task_worker`` (each partition
        task's CPU seconds and worker address, in partition order). With DSGD a "sync" is a sub-epoch: ``rows`` and ``bytes`` are the
        item-block rows and bytes that move to another worker after it, ``sent_bytes`` the
        model's blocks sent at the start, ``gathered_bytes`` the model gathered by the
        driver at the end of an epoch, ``ratings`` and ``task_cpu`` (CPU seconds) per task;
        ``seconds`` is set on an epoch's last sub-epoch only (NaN on the others); the first
        dict's ``setup`` holds the driver's seconds per setup step (``read``: the
        partitions read and summarised; ``encoders``; ``tables``; ``seen``: waiting for the
        partitions' pairs and building the seen items, while the first epoch trains).
    callback : callable or None
        Called as ``callback(model, info)`` on the driver after every sync, with the mixed
        model (read it, do not modify it) and the dict appended to ``stats``; with DSGD,
        after every epoch only (the driver holds the model between epochs only).
    method : {"auto", "dsgd", "mixing"}, default="auto"
        ``"dsgd"``: DSGD, for a ``MatrixFactorization`` with ``loss="squared"`` and an
        optimizer whose row update reads no global step count (Adagrad without
        ``lr_decay``, RMSprop with ``lazy="frozen"``, SGD; not stochastic rounding);
        anything else raises ``ValueError`` saying why. ``"mixing"``: parameter mixing.
        ``"auto"``: DSGD when it applies and neither ``sync_every`` nor ``persist=False``
        is given, else mixing (BPR and WARP draw negatives among all the items, which a
        block does not hold).
    n_blocks : int or None
        DSGD's number of user (and item) blocks; None takes the number of workers. The
        model depends on it, not on the workers: the same ``n_blocks`` and seed give the
        same model on any cluster. A multiple of the workers keeps them all busy.

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

    Matrix factorisation on partitions of raw-id columns:

    >>> import pandas as pd
    >>> from sparseopt.recommend import MatrixFactorization
    >>> ratings = pd.DataFrame({"user": ["ann", "bob", "ann", "cat", "bob", "cat"],
    ...                         "item": [1, 1, 2, 2, 3, 3], "rating": [5., 3, 4, 2, 1, 4]})
    >>> with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
    ...                   dashboard_address=None) as cluster, Client(cluster) as client:
    ...     mf = sparseopt.dask.fit(MatrixFactorization(n_components=2, random_state=0),
    ...                             [dask.delayed(ratings[:3]), dask.delayed(ratings[3:])],
    ...                             client=client, n_epochs=2)
    >>> mf.user_ids_.tolist(), mf.predict(["ann"], [3]).shape
    (['ann', 'bob', 'cat'], (1,))
    """
    from distributed import default_client

    V.check_distributed_fit(estimator, sync_every, n_epochs, persist, stats, callback)
    method = V.check_fit_method(method, n_blocks, estimator, sync_every, persist)
    if client is None:
        client = default_client()
    from ..linear_model import SGDClassifier, SGDRegressor
    if type(estimator).__name__ == "MatrixFactorization":
        if y is not None:
            raise TypeError("MatrixFactorization takes no y: X holds the (user, item, "
                            "value) columns")
        if method == "dsgd":
            from ._dsgd import fit_dsgd
            return fit_dsgd(estimator, X, client, n_epochs, n_blocks, persist, stats,
                            callback)
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
    classify = isinstance(estimator, SGDClassifier)
    # one round trip: every partition's shape and, for a classifier, its labels
    shapes = client.gather(client.compute(
        [_delayed_call(_shape_and_labels, x, v, classify) for x, v in zip(xs, ys)]))
    sizes = [s[0] for s in shapes]
    widths = {s[1] for s in shapes}
    if len(widths) != 1:
        raise ValueError(f"the partitions of X have different numbers of columns "
                         f"{sorted(widths)}")
    n_total = sum(sizes)
    if n_total == 0:
        raise ValueError("X has no rows")
    classes = None
    if classify:
        classes = np.unique(np.concatenate([s[2] for s in shapes]))
    if persist:
        xs, ys = _balance(client, xs, ys, sizes)
    model = copy.deepcopy(estimator)
    from ..linear_model._base import auto_batch_size
    if isinstance(model.batch_size, str):
        model.batch_size = auto_batch_size(n_total)
    batch = int(model.batch_size)
    span = max(sizes) if sync_every is None else sync_every * batch
    rounds = -(-max(sizes) // span)
    replicas = _Replicas(client, _apply_linear_update)
    try:
        _linear_loop(client, model, xs, ys, sizes, span, rounds, n_epochs, classes,
                     n_features, replicas, stats, callback)
    finally:
        replicas.close()
    model = replicas.model
    model.n_iter_ = n_epochs
    return model


def _linear_loop(client, model, xs, ys, sizes, span, rounds, n_epochs, classes, n_features,
                 replicas, stats, callback):
    for epoch in range(n_epochs):
        for r in range(rounds):
            tic = time.perf_counter()
            start = r * span
            live = [i for i in range(len(xs)) if sizes[i] > start]
            bounds = [(start, min(sizes[i], start + span)) for i in live]
            mixed, mixed_f, first, (nbytes, (task_cpu, task_worker)) = _sync(
                client, model, [xs[i] for i in live], [ys[i] for i in live], bounds,
                classes, n_features, replicas)
            t0 = getattr(model, "t_", 0)
            s0 = getattr(model, "_samples_seen", 0)
            if first is not None:
                model, t0, s0 = first.inflate(), 0, 0
            _apply_linear(model, mixed, t0, s0)
            sent = replicas.sent
            # the workers hold the unfitted estimator after the first sync: the next one
            # sends them the skeleton, from which they build the same zero model
            replicas.advance(mixed_f, mixed.nbytes, model, skeleton=first)
            replicas.model = model
            info = dict(epoch=epoch, sync=r, seconds=time.perf_counter() - tic,
                        rows=int(mixed.rows.size), bytes=int(nbytes), sent_bytes=int(sent),
                        table_rows=int(model._W.shape[0]), last=r == rounds - 1,
                        task_cpu=task_cpu, task_worker=task_worker)
            if stats is not None:
                stats.append(info)
            if callback is not None:
                callback(model, info)


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
    replicas = _Replicas(client, _apply_tables_update)
    try:
        _tables_epochs(client, model, view, sizes, span, rounds, n_epochs, tasks,
                       end_epoch, stats, callback, replicas)
    finally:
        replicas.close()


def _tables_epochs(client, model, view, sizes, span, rounds, n_epochs, tasks, end_epoch,
                   stats, callback, replicas):
    from . import _recommend as R
    for epoch in range(n_epochs):
        loss_sum, n_rows, t_epoch = 0.0, 0, time.perf_counter()
        for r in range(rounds):
            tic = time.perf_counter()
            start = r * span
            live = [i for i in range(len(sizes)) if sizes[i] > start]
            bounds = [(start, min(sizes[i], start + span)) for i in live]
            deltas, deltas_f, (ls, nr), nbytes = _sync_tables(
                client, view(), lambda ref, chain: tasks(ref, chain, epoch, r, live, bounds),
                replicas)
            R.apply_sides(model, deltas)
            sent = replicas.sent
            replicas.advance(deltas_f, sum(d.nbytes for d in deltas), model)
            loss_sum += ls
            n_rows += nr
            info = dict(epoch=epoch, sync=r, seconds=time.perf_counter() - tic,
                        rows=int(sum(d.rows.size for d in deltas)), bytes=int(nbytes),
                        sent_bytes=int(sent),
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

    def tasks(ref, chain, epoch, r, live, bounds):
        return client.compute([_delayed_call(_with_replica, R.train_mf, ref, *chain, encs[i],
                                             a, z, [seed, epoch, r, i])
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

    def tasks(ref, chain, epoch, r, live, bounds):
        return client.compute([_delayed_call(_with_replica, R.train_fm, ref, *chain, xs[i],
                                             ys[i], a, z, [seed, epoch, r, i])
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


# ----------------------------------------------------------------------------- replicas

# Every worker keeps a replica of the model it trains (per fit, keyed by a token), and each
# sync after the first sends it only the merged rows of the syncs it missed, not the whole
# model: what travels per sync scales with the rows the partitions touched. The replica is
# updated by the driver's own writes (``apply`` of the same stripped deltas, then the
# driver's scalar attributes), so it is bitwise the driver's model. A worker without the
# replica (a new or restarted worker, or one that missed more than ``_CHAIN`` syncs) makes
# its task raise ``ReplicaMissing``, and the driver runs the sync again with the whole model.
_CHAIN = 3
_REPLICAS: Dict[str, Any] = {}
_KEEP_FITS = 2
_LOCK = threading.Lock()  # tasks of one worker's threads update its replicas one at a time


class ReplicaMissing(Exception):
    """A task needs a model version this worker does not hold."""


def _scalars(model) -> Dict[str, Any]:
    """The model's scalar attributes (step counters, sample counts, ...): sent with every
    update so that a replica matches the driver's model exactly."""
    return {k: v for k, v in model.__dict__.items()
            if v is None or isinstance(v, (bool, int, float, str, np.generic))}


def _resolve(ref, chain):
    """The model of version ``ref[1]`` on this worker (see above)."""
    return _resolve_entry(ref, chain)[1]


def _resolve_entry(ref, chain):
    """``[version, model, support]`` of this worker's replica at version ``ref[1]``:
    ``support``, for a linear model, the sorted rows outside of which every table is zero
    (a superset: the rows of every update since the zero model of the skeleton), or None
    when unknown (a replica sent whole)."""
    token, version, base, versions, scalars, applier = ref
    with _LOCK:
        if base is not None:
            support = None
            if isinstance(base, _Skeleton):
                # the model of the version before the chain (the first update's): a worker
                # that holds no later one (only the unfitted estimator of the first sync,
                # which no update applies to) starts from it
                start = version - len(versions)
                entry = _REPLICAS.get(token)
                model = base.inflate() if entry is None or entry[0] <= start else None
                support = np.zeros(0, dtype=np.int64)  # the skeleton's tables are zero
            else:  # the stored dependency may be sent on unchanged
                model, start = copy.deepcopy(base), version
            if model is not None:
                _REPLICAS.pop(token, None)
                _REPLICAS[token] = [start, model, support]
                while len(_REPLICAS) > _KEEP_FITS:
                    _REPLICAS.pop(next(iter(_REPLICAS)))
                if start == version:
                    return _REPLICAS[token]
        entry = _REPLICAS.get(token)
        if entry is None or entry[0] < versions[0] - 1 or entry[0] > version:
            raise ReplicaMissing(f"this worker holds no replica of version "
                                 f"{version - len(versions)}..{version}")
        for v, delta, sc in zip(versions, chain, scalars):
            if v == entry[0] + 1:
                applier(entry[1], delta)
                entry[1].__dict__.update(sc)
                entry[0] = v
                if entry[2] is not None:
                    entry[2] = (_mixing.union_sorted(entry[2], delta.rows)
                                if isinstance(delta, _mixing.RowDelta) else None)
        return entry


def _with_replica(fn, ref, *args):
    n = len(ref[3])
    model = _resolve(ref, args[:n])
    return fn(model, *args[n:])


def _with_linear_replica(ref, *args):
    """``_train_linear`` on this worker's replica, given the rows where it may be non-zero
    (found by one scan, then kept up to date by the updates, when the replica came whole)."""
    n = len(ref[3])
    entry = _resolve_entry(ref, args[:n])
    model = entry[1]
    if entry[2] is None and hasattr(model, "_W"):
        entry[2] = _nonzero_rows(_linear_tables(model))
    return _train_linear(model, *args[n:], support=entry[2],
                         in_place=_one_task_at_a_time()) + (_worker_name(),)


def _worker_name() -> Optional[str]:
    """The address of the worker running this task (None outside a worker)."""
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError, AttributeError):
        return None


def _one_task_at_a_time() -> bool:
    """This is a worker that runs one task at a time (one thread): a task may then train on
    the replica's own tables and write its rows back (no other task reads them meanwhile)."""
    try:
        from distributed import get_worker
        return get_worker().state.nthreads == 1
    except (ImportError, ValueError, AttributeError):
        return False


def _drop_replica(token):
    with _LOCK:
        _REPLICAS.pop(token, None)


class _Replicas:
    """The driver's side: the version of the model, and the futures of the last updates."""

    def __init__(self, client, applier):
        import uuid
        self.client = client
        self.token = uuid.uuid4().hex
        self.version = 0
        self.applier = applier
        self.updates: List[Any] = []  # (version, future of the stripped delta, scalars)
        self.full = True
        self.skeleton = None  # the model before the first update, when it is one
        self.sent = 0

    def ref(self, view):
        """(the reference tasks resolve, the futures it needs) for the current version;
        ``sent`` is set to the bytes of the arrays that go out: the whole model, or the
        newest update (with the skeleton of the model it starts from, the first time). The
        older updates the chain lists are in the workers' memory from the syncs that sent
        them, unless Dask's memory manager dropped a worker's extra copy: that fetch again,
        and a worker's that missed a sync, are not counted. (Two workers, 6 syncs of a
        2**22-row table, four runs: 5 fetches of the 5 updates with the memory manager off,
        5 and 9 with it on.)"""
        if self.full:
            self.sent = _model_bytes(view)
            return (self.token, self.version, _broadcast(self.client, view), [], [],
                    self.applier), []
        chain = self.updates[-_CHAIN:]
        self.sent = int(chain[-1][3])
        base = None
        if self.skeleton is not None and self.version == len(chain):
            # every update since the skeleton is in the chain: a worker that ran no task
            # since the first sync builds the model from it
            base = self.skeleton
            if self.version == 1:
                self.sent += base.nbytes
        return (self.token, self.version, base, [u[0] for u in chain],
                [u[2] for u in chain], self.applier), [u[1] for u in chain]

    def advance(self, delta_future, nbytes, model, full_next: bool = False, skeleton=None):
        """Record the update to the next version; ``skeleton`` (first update only): the
        model the update starts from, which the workers do not hold yet."""
        self.version += 1
        self.updates.append((self.version, delta_future, _scalars(model), int(nbytes)))
        self.updates = self.updates[-_CHAIN:]
        self.full = full_next
        if skeleton is not None or self.version > _CHAIN:
            self.skeleton = skeleton

    def close(self):
        try:
            self.client.run(_drop_replica, self.token)
        except Exception:  # a worker that is gone holds nothing
            pass


def _model_bytes(model) -> int:
    """Bytes of the arrays of a model (its tables and optimizer state), each buffer once."""
    seen, total = set(), 0

    def walk(obj, depth=0):
        nonlocal total
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in seen:
                seen.add(id(base))
                total += base.nbytes
        elif depth < 5 and isinstance(obj, dict):
            for v in obj.values():
                walk(v, depth + 1)
        elif depth < 5 and isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, depth + 1)
        elif depth < 5 and hasattr(obj, "__dict__") and not isinstance(obj, type):
            walk(vars(obj), depth + 1)
    walk(model)
    return total


def _apply_linear_update(model, delta):
    _apply_linear(model, delta, model.t_, model._samples_seen)


def _apply_tables_update(model, deltas):
    from . import _recommend as R
    R.apply_sides(model, deltas)


def _broadcast(client, model):
    """The model as a future every task of the sync reads.

    It travels as the argument of a task that the scheduler holds, not by
    ``client.scatter``: a worker lost with its copy has it recomputed from that task (a
    scattered copy cannot be), and no driver call waits on a transfer to one chosen worker
    (a broadcast scatter to a worker that dies on the way can wait forever)."""
    with large_arguments():
        return client.submit(_identity, model, pure=False)


@contextlib.contextmanager
def large_arguments():
    """Dask's advice against large task arguments silenced (its "Large object" and "Sending
    large graph" warnings): holding the argument in the scheduler is the point where the
    model or a block is sent this way, so that a copy lost with a worker can be recomputed."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*[Ll]arge (object|graph)",
                                category=UserWarning)
        yield


def _identity(x):
    return x


def _tree(client, level, merge):
    """Merge task results pairwise on the workers, in a fixed pairing (the result does not
    depend on which task finished first)."""
    while len(level) > 1:
        level = [client.submit(merge, level[i], level[i + 1], pure=False, retries=3)
                 if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
    return level[0]


def _rerun(run, replicas=None):
    """``run()``, run again after a failure of the cluster (a worker lost mid-sync): its
    tasks are pure functions of the broadcast model and the partitions, so a rerun gives the
    same result. A worker without the model's replica makes the rerun send the whole
    model."""
    errors = _cluster_errors() + (ReplicaMissing,)
    for attempt in range(_RERUNS + 1):
        try:
            return run()
        except errors as exc:
            if attempt == _RERUNS:
                raise
            if replicas is not None:
                replicas.full = True
            if not isinstance(exc, ReplicaMissing):
                time.sleep(0.2 * (attempt + 1))


def _sync(client, model, xs, ys, bounds, classes, n_features, replicas):
    """One sync: send the model (whole, or the updates of the workers' replicas), train
    every partition's slice, merge the deltas as a tree on the workers. Returns (merged
    delta, its future, the first partition's trained copy on the first sync else None,
    bytes the tasks sent)."""
    def run():
        ref, chain = replicas.ref(model)
        futs = client.compute(
            [_delayed_call(_with_linear_replica, ref, *chain, x, y, a, b, classes,
                           n_features)
             for x, y, (a, b) in zip(xs, ys, bounds)], retries=3)
        deltas = [client.submit(_first, f, pure=False, retries=3) for f in futs]
        size = client.submit(_sizes_and_cpu, deltas, futs, pure=False, retries=3)
        merged = _tree(client, deltas, _mixing.merge)
        # the driver needs the new values only
        stripped = client.submit(_mixing.strip_old, merged, pure=False, retries=3)
        # one round trip: the mixed rows, the bytes the tasks sent and their CPU seconds
        # and, on the first sync, the first partition's skeleton (the driver's model before
        # the mixed rows)
        wanted = [stripped, size]
        if not hasattr(model, "_W"):
            wanted.append(client.submit(_second, futs[0], pure=False, retries=3))
        got = client.gather(wanted)
        first = got[2] if len(got) > 2 else None
        return got[0], stripped, first, got[1]
    return _rerun(run, replicas)


def _sync_tables(client, view, tasks, replicas):
    """One sync of a recommender: send ``view`` (whole, or the updates of the workers'
    replicas), run ``tasks(ref, chain)`` (one future of (per-table deltas, (loss x rows,
    rows)) per partition slice), merge on the workers. Returns (mixed deltas, their future,
    (loss x rows, rows), bytes the tasks sent)."""
    from . import _recommend as R

    def run():
        futs = tasks(*replicas.ref(view))
        sizes = client.gather([client.submit(R.nbytes_sides, f, pure=False, retries=3)
                               for f in futs])
        merged = _tree(client, futs, R.merge_sides)
        stripped = client.submit(R.strip_sides, merged, pure=False, retries=3)
        deltas_f = client.submit(_first, stripped, pure=False, retries=3)
        deltas, loss = stripped.result()
        return deltas, deltas_f, loss, int(sum(sizes))
    return _rerun(run, replicas)


def _first(pair):
    return pair[0]


def _second(pair):
    return pair[1]


def _sizes_and_cpu(deltas, results):
    """(bytes of the tasks' deltas, (each task's CPU seconds, its worker))."""
    return sum(d.nbytes for d in deltas), ([float(r[2]) for r in results],
                                           [r[3] if len(r) > 3 else None for r in results])


def _delayed_call(fn, *args):
    import dask
    return dask.delayed(fn, pure=False)(*args)
