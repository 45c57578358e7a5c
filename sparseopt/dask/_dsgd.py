"""Distributed SGD for ``MatrixFactorization`` (DSGD; Gemulla et al. 2011, "Large-scale
matrix factorization with distributed stochastic gradient descent").

Users are cut into ``B`` blocks and items into ``B`` blocks by a hash of their row index,
so the ratings form a ``B x B`` grid of cells, built once on the workers and kept there. A
*sub-epoch* ``s`` trains the ``B`` cells ``(b, (b + s) mod B)``, one task each: they share
no user and no item, so the tasks run in parallel and none sees another's rows. After ``B``
sub-epochs every rating was seen once.

Nothing is averaged. A task trains its cell with the estimator's own mini-batch pass (the
fused kernel and the lazy row optimizer) on its user block and item block, and returns both,
rows and optimizer state rows, exactly. An optimizer whose row update depends only on the
row's own state (Adagrad without ``lr_decay``, RMSprop with ``lazy="frozen"``, SGD) then
gives the same bits as one process running the cells in the same order on the whole tables:
a sequential SGD over a reordered stream, which converges as the single-process fit does.
Adam (global bias correction), a learning-rate decay, ``lazy="decay"`` and stochastic
rounding read the global step count, which the blocks do not share; those use mixing.

User block ``b`` and its cells stay on one worker (``b mod n_workers``); between sub-epochs
only the item blocks travel, from the task that trained one to the task that trains it next.
Tasks are pure functions of (user block, item block, cell, seed): a task lost with a worker
is re-run from its inputs, and a failed epoch is re-run from the model the driver gathered at
the end of the previous one.
"""
from __future__ import annotations

import collections
import copy
import math
import threading
import time
from typing import Any, Dict, List, Tuple

import numpy as np

from .._utils import sorted_unique

# the high 32 bits of a 64-bit multiplicative (Fibonacci) hash: the block of a row is spread
# over all bits of its index, so neither a run of popular ids nor a stride lands in one block
_HASH = np.uint64(0x9E3779B97F4A7C15)

# an epoch trains the B strata R times over, each time on the next of R consecutive runs (of
# whole batches) of every cell's shuffled pass, so a row meets the blocks of the other side in
# turn R times per epoch. Within a sub-epoch an item block sees the users of one user block
# only, and the model drifts towards the last blocks it saw; more sub-epochs per epoch bring
# the stream's order closer to a global shuffle, at the cost of one hop of the item blocks
# between the workers each. R is the smallest with B x R >= MIN_SUB_EPOCHS: on the generated
# benchmark problem (2M ratings, 3 epochs; single process 1.0153), 2 sub-epochs per epoch
# ended at RMSE 1.0217, 4 at 1.0175 / 1.0176 (B = 2 / 4), 8 at 1.0164 / 1.0133
MIN_SUB_EPOCHS = 4


def rounds_for(n_blocks: int) -> int:
    """The rounds R of an epoch of ``n_blocks`` blocks (one block: one cell, one round)."""
    return 1 if n_blocks == 1 else -(-MIN_SUB_EPOCHS // n_blocks)


def block_of(ids: np.ndarray, n_blocks: int) -> np.ndarray:
    """The block (0..n_blocks-1) of each row index."""
    with np.errstate(over="ignore"):
        h = (np.asarray(ids, dtype=np.uint64) * _HASH) >> np.uint64(32)
    return (h % np.uint64(n_blocks)).astype(np.int64)


def block_rows(n: int, n_blocks: int) -> Tuple[List[np.ndarray], np.ndarray]:
    """The row indices of every block (ascending), and every row's index in its block."""
    blk = block_of(np.arange(n), n_blocks)
    rows = [np.flatnonzero(blk == b) for b in range(n_blocks)]
    local = np.empty(n, dtype=np.int64)
    for r in rows:
        local[r] = np.arange(r.size)
    return rows, local


# ----------------------------------------------------------------------------- the grid

# The setup runs where the partitions live, with one round trip to the driver: each
# partition is checked and summarised in place (``read_partition``), the driver merges only
# the distinct ids (small) into the encoders and builds the model, then every partition is
# encoded and cut into the grid's cells on its own worker (``encode_split``) and each cell is
# assembled on its user block's worker (``make_cell``), submitted with the first epoch's
# tasks, so that training starts as soon as a cell is ready.

def read_partition(part, implicit: bool):
    """One partition's checked columns ``(users, items, values)`` (raw ids), its distinct
    users and items, and its summary ``(n, sum, min, max)`` of the values."""
    from ._recommend import _empty
    from .. import _validation as V
    if _empty(part):
        e = np.empty(0, dtype=np.int64)
        return (e, e, np.empty(0, dtype=np.float64)), (e, e), (0, 0.0, math.inf, -math.inf)
    u, i, v, _ = V.check_columns("X partition", part, implicit)
    if v is None:
        v = np.ones(u.shape[0], dtype=np.float64)
    summary = (int(v.size), float(v.sum()), float(v.min()), float(v.max()))
    return (u, i, v), (sorted_unique(u), sorted_unique(i)), summary


def ids_and_summary(read):
    """What the driver gathers of a read partition: its distinct ids and its summary."""
    return read[1], read[2]


def encode_split(read, users, items, n_blocks: int):
    """A read partition encoded by the model's encoders and cut into the grid's cells
    (row-major, ``bu * B + bi``): per cell ``(user rows in block bu, item rows in block bi,
    values)``, each cell's ratings in (user, item) order, the order of the CSR matrix a
    single-process fit trains on; and the partition's ``(users, items)`` row indices (int32,
    for the model's seen items)."""
    from .. import _validation as V
    (u_raw, i_raw, v), _, _ = read
    n_cells = n_blocks * n_blocks
    if u_raw.shape[0] == 0:
        e = np.empty(0, dtype=np.int64)
        return [(e, e, np.empty(0, dtype=np.float64))] * n_cells, (e.astype(np.int32),) * 2
    u = users.transform(u_raw, "X partition['user']")
    i = items.transform(i_raw, "X partition['item']")
    order = V.pair_order("X partition", u, i, len(items), users.classes_, items.classes_)
    u, i, v = u[order], i[order], v[order]
    bu, lu = _block_and_local(len(users), n_blocks)
    bi, li = _block_and_local(len(items), n_blocks)
    cell = bu[u] * n_blocks + bi[i]
    # a stable sort of small integers is a radix sort: the cells keep the (user, item) order
    small = np.uint16 if n_cells <= 1 << 16 else np.int64
    by_cell = np.argsort(cell.astype(small), kind="stable")
    ends = np.cumsum(np.bincount(cell, minlength=n_cells))
    starts = ends - np.bincount(cell, minlength=n_cells)
    lu, li = lu[u], li[i]
    pieces = []
    for a, z in zip(starts, ends):
        k = by_cell[a:z]
        pieces.append((lu[k], li[k], v[k]))
    return pieces, (u.astype(np.int32), i.astype(np.int32))


def _block_and_local(n: int, n_blocks: int) -> Tuple[np.ndarray, np.ndarray]:
    """Every row's block and its index in its block."""
    blk = block_of(np.arange(n), n_blocks)
    local = np.empty(n, dtype=np.int64)
    for b in range(n_blocks):
        rows = np.flatnonzero(blk == b)
        local[rows] = np.arange(rows.size)
    return blk, local


def pick_row(pieces, bu: int, n_blocks: int):
    """The pieces of cells ``(bu, 0..B-1)`` of a split partition (a task next to the split:
    only they travel to user block ``bu``'s worker)."""
    return pieces[0][bu * n_blocks:(bu + 1) * n_blocks]


def seen_pairs(pieces):
    """The ``(users, items)`` row indices of a split partition."""
    return pieces[1]


def make_cell(bi: int, *rows) -> np.ndarray:
    """Cell ``(bu, bi)`` from its pieces in every partition's row ``bu`` (``pick_row``, in
    partition order): packed records (``pack_ratings``) of the ratings' row indices in
    their user block and item block."""
    from ..recommend._sampling import pack_ratings
    pieces = [r[bi] for r in rows]
    u = np.concatenate([p[0] for p in pieces]) if pieces else np.empty(0, np.int64)
    i = np.concatenate([p[1] for p in pieces]) if pieces else np.empty(0, np.int64)
    v = np.concatenate([p[2] for p in pieces]) if pieces else np.empty(0, np.float64)
    return pack_ratings(np.ascontiguousarray(u, dtype=np.int64),
                        np.ascontiguousarray(i, dtype=np.int64), v)


# ----------------------------------------------------------------------------- blocks

def table_state(model, side: int) -> Dict[str, np.ndarray]:
    """The row state arrays of table ``side`` (0 users, 1 items) of the model's optimizer,
    by reference."""
    opt = model.optimizer_
    state = opt._ensure_state(side, opt.param_groups[0])
    n = opt._params[side].shape[0]
    return {name: arr for name, arr in state.items()
            if isinstance(arr, np.ndarray) and arr.shape[:1] == (n,)}


def take_block(model, side: int, rows: np.ndarray, state: bool = True):
    """Block ``rows`` of table ``side``: ``(rows of the table, {state name: rows})``;
    without ``state``, ``{}`` (a task's fresh optimizer starts from the start value)."""
    table = model.optimizer_._params[side]
    return (np.ascontiguousarray(table[rows]),
            {k: np.ascontiguousarray(a[rows]) for k, a in table_state(model, side).items()}
            if state else {})


def put_block(model, side: int, rows: np.ndarray, block) -> None:
    """Write a block back into the model's table and optimizer state."""
    W, state = block
    model.optimizer_._params[side][rows] = W
    full = table_state(model, side)
    for k, a in state.items():
        full[k][rows] = a


def block_bytes(block) -> int:
    return int(block[0].nbytes + sum(a.nbytes for a in block[1].values()))


# A cell's shuffle in one epoch: the epoch's R runs over the cell cut one permutation, so a
# worker keeps it from the cell's first run for the next ones rather than drawing it R times
# (a draw of 500k positions took 10-20 ms, a tenth to a fifth of that cell's task). The last
# _PERM_KEEP permutations are kept, at most _PERM_BYTES of them, per process.
_PERMS: "collections.OrderedDict[Any, np.ndarray]" = collections.OrderedDict()
_PERM_KEEP = 16
_PERM_BYTES = 256 << 20
_PERM_LOCK = threading.Lock()


def cell_permutation(seed, n: int, reuse: bool) -> np.ndarray:
    """The permutation of ``n`` positions drawn from ``seed`` (``np.random.default_rng``);
    ``reuse``: a later run over the same cell will ask for it again, so it is kept (and
    given read-only)."""
    if not reuse:
        return np.random.default_rng(seed).permutation(n)
    key = (tuple(seed) if isinstance(seed, (list, tuple)) else seed, int(n))
    with _PERM_LOCK:
        perm = _PERMS.get(key)
        if perm is not None:
            _PERMS.move_to_end(key)
            return perm
    perm = np.random.default_rng(seed).permutation(n)
    perm.flags.writeable = False
    if perm.nbytes <= _PERM_BYTES:
        with _PERM_LOCK:
            _PERMS[key] = perm
            total = sum(p.nbytes for p in _PERMS.values())
            while len(_PERMS) > _PERM_KEEP or total > _PERM_BYTES:
                total -= _PERMS.popitem(last=False)[1].nbytes
    return perm


def cell_pass(est, records: np.ndarray, p: Dict[str, Any], st, n_blocks: int, seed,
              part: int, n_parts: int) -> Tuple[float, int, int]:
    """Part ``part`` of ``n_parts`` of one shuffled pass of ``est`` (tables ``st``) over one
    cell's packed ratings (the permutation drawn from ``seed``, cut into ``n_parts``
    consecutive runs): the fused
    kernel and the optimizer step of ``MatrixFactorization``'s squared pass, in mini-batches
    of ``size = ceil(batch_size / n_blocks)`` ratings whose gradient is scaled by
    ``1 / (n_blocks x size)``. A cell holds ``1 / n_blocks`` of a user's (item's) ratings
    among ``1 / n_blocks**2`` of all of them, so a batch of that size holds each of its rows
    as often as a batch of ``batch_size`` of all the ratings does, and the ``n_blocks``
    cells of a sub-epoch together take the single-process fit's steps: as many updates of
    each row per epoch, each as large. (Batches of ``batch_size`` would touch each row
    ``n_blocks`` times less often with a larger gradient, which Adagrad's normalised steps
    turn into slower training.) Returns ``(sum of squared errors, optimizer steps,
    ratings)``."""
    from ..optim import RowGrad
    from ..recommend._mf import _mf_kernel, _scratch
    n_all = int(records.shape[0])
    size = -(-int(p["batch_size"]) // n_blocks)
    lo, hi = part_bounds(n_all, size, part, n_parts)
    if hi == lo:
        return 0.0, 0, 0
    perm = cell_permutation(seed, n_all, n_parts > 1)[lo:hi]
    n = hi - lo
    # every sample weighs 1 / (size x n_blocks), in a full batch or the cell's last one: a
    # last batch of a few ratings scaled by 1 / its length would weigh each of them up to
    # `size` times more, at every cell and run
    scale = 1.0 / (size * n_blocks)
    size = min(size, n)
    gu, gi, urows, irows, uslot, islot = _scratch(st, size, 1)
    err = np.empty(size, dtype=np.float64)
    sq, steps = 0.0, 0
    for s in range(0, n, size):
        e = min(s + size, n)
        b = e - s
        nu, ni = _mf_kernel.mf_squared_batch(st.U, st.Q, perm[s:e], records, st.k,
                                             st.user_bias, st.item_bias, st.mu,
                                             scale, p["alpha"], uslot, islot,
                                             urows, irows, gu, gi, err)
        est._step([RowGrad(urows[:nu], gu[:nu]), RowGrad(irows[:ni], gi[:ni])], True)
        sq += float(np.dot(err[:b], err[:b]))
        steps += 1
    return sq, steps, n


def train_cell(uheld, iblock, records, ctx, seed, n_blocks, part, n_parts, fresh):
    """One task of a sub-epoch: the estimator's own mini-batch pass over one cell, on its
    user and item blocks (copies), with the blocks' optimizer state rows; returns the new
    user block, the new item block, and the user block's record of the epoch so far: per
    task ``((loss x ratings, ratings, optimizer steps), CPU seconds)``, this one last.

    ``uheld[0]`` is the user block: ``uheld`` is the output of the block's previous task,
    which ran on this worker (read in place: no task between the two, so one scheduler
    round trip less per sub-epoch), or ``(block,)`` at the start; the record goes on from
    ``uheld[2]`` unless ``fresh`` (an epoch's first sub-epoch), so the driver gathers an
    epoch's records with its final user blocks, without a task per record. A pure function
    of its arguments: the shuffle is drawn from ``seed``."""
    cpu = time.process_time()
    record = [] if fresh else list(uheld[2])
    out_u, out_i, res = _train_cell(uheld[0], iblock, records, ctx, seed, n_blocks, part,
                                    n_parts)
    record.append((res, time.process_time() - cpu))
    return out_u, out_i, record


def _train_cell(ublock, iblock, records, ctx, seed, n_blocks, part, n_parts):
    from ..optim import make_optimizer
    from ..recommend._mf import _Fitted

    template, p = ctx
    U, Q = ublock[0].copy(), iblock[0].copy()
    lo, hi = part_bounds(int(records.shape[0]), -(-int(ctx[1]["batch_size"]) // n_blocks),
                         part, n_parts)
    if hi == lo:
        return (U, dict(ublock[1])), (Q, dict(iblock[1])), (0.0, 0, 0)
    est = copy.copy(template)  # the estimator's parameters and scalars; no tables
    est.optimizer_ = make_optimizer(p["optimizer"], [U, Q], p["lr"], p["n_threads"],
                                    est._optimizer_kwargs(p))
    for side, block in ((0, ublock), (1, iblock)):
        state = table_state(est, side)
        for k, a in block[1].items():
            state[k][...] = a
    _, _, k, ub, ib, _ = template._layout
    st = _Fitted(U, Q, k, ub, ib, template.global_mean_, U.shape[0], Q.shape[0], None, None)
    est._begin_steps()
    sq, steps, n = cell_pass(est, records, p, st, n_blocks, seed, part, n_parts)
    out_u = (U, table_state(est, 0))
    out_i = (Q, table_state(est, 1))
    return out_u, out_i, (0.5 * sq, n, steps)


def part_bounds(n: int, size: int, part: int, n_parts: int) -> Tuple[int, int]:
    """The ratings ``[lo, hi)`` of a cell's shuffled pass (``n`` ratings in batches of
    ``size``) that run ``part`` of ``n_parts`` trains: whole batches, so that only the
    pass's last batch is short."""
    n_batches = -(-n // size)
    return (min(n, n_batches * part // n_parts * size),
            min(n, n_batches * (part + 1) // n_parts * size))


def second(x):
    return x[1]


def block_and_record(x):
    """The user block and the epoch's record of a user block's last task."""
    return x[0], x[2]


def identity(x):
    return x


def template_of(model):
    """What every task needs of the driver's model: its parameters and scalars, without
    the tables, the optimizer, the encoders or the seen items."""
    t = copy.copy(model)
    for name in ("user_table_", "item_table_", "optimizer_", "_seen", "_id_encoders",
                 "history_", "_rng"):
        t.__dict__.pop(name, None)
    return t


def cell_seed(seed: int, epoch: int, bu: int, bi: int) -> List[int]:
    """The seed of the shuffle of cell ``(bu, bi)`` in ``epoch``."""
    return [seed, epoch, bu, bi]


# ----------------------------------------------------------------------------- sequential

def sequential_reference(model, cells, n_blocks: int, n_epochs: int, seed: int,
                         n_rounds: int):
    """The DSGD schedule run in one process on the whole tables (for the tests): every
    sub-epoch's cells in block order, each by the estimator's own pass with the cell's
    seed (``cell_pass``). ``cells[bu][bi]`` are ``(users, items, values)`` of global row
    indices in the grid's order. Returns a trained copy of ``model``."""
    from ..recommend._sampling import pack_ratings
    est = copy.deepcopy(model)
    p = est._check_params()
    for epoch in range(n_epochs):
        for r in range(n_rounds):
            for s in range(n_blocks):
                for b in range(n_blocks):
                    j = (b + s) % n_blocks
                    u, i, v = cells[b][j]
                    est._begin_steps()
                    cell_pass(est, pack_ratings(u, i, v), p, est._fitted(training=True),
                              n_blocks, cell_seed(seed, epoch, b, j), r, n_rounds)
    return est


# ----------------------------------------------------------------------------- driver

def init_model(estimator, client, parts, on_encoders=None, phases=None):
    """The driver's model (encoders from the distinct ids of all the partitions, global mean
    and rating range from their summaries; no seen items yet), and the read partitions
    (futures, on the workers) with their sizes. One round trip: only the distinct ids and
    the summaries reach the driver. ``on_encoders(users, items, reads, sizes)`` is called
    before the tables are built (the workers encode while the driver builds them).
    ``phases`` (a dict) receives the driver's seconds per step: ``read`` (the partitions
    read and summarised, waited for), ``encoders``, ``tables``."""
    import dask
    import scipy.sparse as sp
    from ..recommend._interactions import IdEncoder
    from .. import _validation as V
    from .._utils import check_random_state
    from ._recommend import prepare_optimizer

    model = copy.deepcopy(estimator)
    p = model._check_params()
    p["user_features"] = p["item_features"] = None  # side features are not distributed
    implicit = model._implicit_feedback(p)
    phases = {} if phases is None else phases
    tic = time.perf_counter()
    reads = client.compute([dask.delayed(read_partition, pure=False)(x, implicit)
                            for x in parts])
    small = client.gather([client.submit(ids_and_summary, r, pure=False) for r in reads])
    sizes = [s_[1][0] for s_ in small]
    phases["read"] = time.perf_counter() - tic
    tic = time.perf_counter()
    n = sum(sizes)
    if n == 0:
        raise ValueError("X has no interactions")
    users = IdEncoder("users").fit(merged_ids([s_[0][0] for s_ in small]))
    items = IdEncoder("items").fit(merged_ids([s_[0][1] for s_ in small]))
    shape = (len(users), len(items))
    V.check_id_counts("X", *shape)
    if on_encoders is not None:
        on_encoders(users, items, reads, sizes)
    phases["encoders"] = time.perf_counter() - tic
    tic = time.perf_counter()
    model._init_model(sp.csr_matrix(shape), p, check_random_state(model.random_state),
                      (users, items))
    if not implicit:
        model.global_mean_ = sum(s_[1][1] for s_ in small) / n
        model.rating_range_ = (min(s_[1][2] for s_ in small), max(s_[1][3] for s_ in small))
    prepare_optimizer(model)
    phases["tables"] = time.perf_counter() - tic
    return model, reads, sizes


def merged_ids(arrays: List[np.ndarray]) -> np.ndarray:
    """The distinct ids of sorted arrays of distinct ids (the partitions'), sorted (a stable
    sort merges the sorted runs in linear time)."""
    return sorted_unique(np.concatenate(arrays), runs=True)


def seen_items(pairs, n_users: int, n_items: int):
    """The model's seen items from every partition's ``(users, items)`` row indices."""
    import scipy.sparse as sp
    from ..recommend._interactions import SeenItems
    u = np.concatenate([a for a, _ in pairs])
    i = np.concatenate([b for _, b in pairs])
    return SeenItems(sp.csr_matrix((np.ones(u.size, dtype=np.int8), (u, i)),
                                   shape=(n_users, n_items)))


def fit_dsgd(estimator, X, client, n_epochs, n_blocks, persist, stats, callback,
             n_rounds=None):
    """``sparseopt.dask.fit`` of a ``MatrixFactorization`` by DSGD (see the module)."""
    from ._fit import _cluster_errors, _column_partitions, _RERUNS, large_arguments

    parts = _column_partitions(X)
    workers = sorted(client.scheduler_info()["workers"])
    B = len(workers) if n_blocks is None else n_blocks
    B = max(1, B)

    def owner(b):
        """Where block ``b``'s tasks run: its worker, loosely (another one when it is gone;
        anywhere while the cluster has none)."""
        if not workers:
            return {}
        return dict(workers=[workers[b % len(workers)]], allow_other_workers=True)

    grid = {}

    def submit_grid(users, items, reads, sizes):
        """The grid, built on the workers and kept there: each partition encoded and split
        where it lives, cell (bu, bi) assembled on bu's worker."""
        with large_arguments():  # the encoders: 8 bytes per distinct id
            enc_u = client.submit(identity, users, pure=False)
            enc_i = client.submit(identity, items, pure=False)
        live = [r for r, n in zip(reads, sizes) if n > 0]
        # a partition is split, and its cells' pieces picked, where it was read: only the
        # pieces travel (the scheduler would move a whole partition to a worker it finds
        # idle sooner)
        held = client.who_has(live)
        where = [dict(workers=list(held.get(r.key, ()))[:1], allow_other_workers=True)
                 if held.get(r.key) else {} for r in live]
        splits = [client.submit(encode_split, r, enc_u, enc_i, B, pure=False, retries=3, **w)
                  for r, w in zip(live, where)]
        rows = [[client.submit(pick_row, sp_, bu, B, pure=False, retries=3, **w)
                 for sp_, w in zip(splits, where)] for bu in range(B)]
        # a worker builds its cells in the order its sub-epochs need them (cell (bu, bi) at
        # sub-epoch (bi - bu) mod B), not in the order they were submitted
        grid["cells"] = [[client.submit(make_cell, bi, *rows[bu], pure=False, retries=3,
                                        priority=-((bi - bu) % B), **owner(bu))
                          for bi in range(B)] for bu in range(B)]
        grid["seen"] = [client.submit(seen_pairs, sp_, pure=False, retries=3, **w)
                        for sp_, w in zip(splits, where)]

    phases = {}
    model, _, _ = init_model(estimator, client, parts, submit_grid, phases)
    cells, seen = grid.pop("cells"), grid.pop("seen")
    p = model._check_params()
    p["user_features"] = p["item_features"] = None
    n_epochs = p["n_epochs"] if n_epochs is None else n_epochs
    n_rounds = rounds_for(B) if n_rounds is None else n_rounds
    seed = int(model._rng.integers(2 ** 63))
    n_users, n_items = model.n_users_, model.n_items_
    urows, _ = block_rows(n_users, B)
    irows, _ = block_rows(n_items, B)
    template = template_of(model)
    ctx = client.submit(identity, (template, p), pure=False)
    table_rows = n_users + n_items
    opt = model.optimizer_
    # the model's optimizer state, allocated now (what every block starts from)
    for side in (0, 1):
        table_state(model, side)

    def scatter_blocks():
        """The driver's model as block futures, each block's rows the argument of a task
        the scheduler holds (recomputable when a worker is lost). Before the first epoch
        the optimizer state is the optimizer's start value in every row, which the task's
        fresh optimizer holds already: only the tables travel then."""
        fresh = model.n_epochs_ == 0
        with large_arguments():
            ublocks = [take_block(model, 0, r, state=not fresh) for r in urows]
            iblocks = [take_block(model, 1, r, state=not fresh) for r in irows]
            ub = [client.submit(identity, (blk,), pure=False, **owner(b))
                  for b, blk in enumerate(ublocks)]
            ib = [client.submit(identity, blk, pure=False, **owner(b))
                  for b, blk in enumerate(iblocks)]
        sent = sum(block_bytes(blk) for blk in ublocks + iblocks)
        return ub, ib, sent

    def submit_epoch(epoch, ub, ib):
        """Every task of one epoch; returns (the last task of every user block, final item
        blocks, futures of every user block's (final block, the epoch's record))."""
        ub, ib = list(ub), list(ib)
        for r, s in ((r, s) for r in range(n_rounds) for s in range(B)):
            new_u, new_i = [None] * B, [None] * B
            for b in range(B):
                j = (b + s) % B
                out = client.submit(train_cell, ub[b], ib[j], cells[b][j], ctx,
                                    cell_seed(seed, epoch, b, j), B, r, n_rounds,
                                    r == s == 0, pure=False, retries=3, **owner(b))
                new_u[b] = out
                new_i[j] = client.submit(second, out, pure=False, retries=3, **owner(b))
            ub, ib = new_u, new_i
        # what the driver gathers (the next epoch reads the tasks' outputs)
        final_u = [client.submit(block_and_record, out, pure=False, retries=3, **owner(b))
                   for b, out in enumerate(ub)]
        return ub, ib, final_u

    iblock_bytes = [int(r.size) * (block_bytes(take_block(model, 1, r[:1])) if r.size else 0)
                    for r in irows]
    ub, ib, sent = scatter_blocks()
    pending = submit_epoch(0, ub, ib)
    sent_first = sent
    epoch, reruns = 0, 0
    t_epoch = time.perf_counter()
    while epoch < n_epochs:
        ub, ib, final_u = pending
        try:
            if seen is not None:
                # the model's seen items, while the first epoch trains (a duplicate pair,
                # found by the split, raises here); the next epoch is submitted after
                # them: while the workers build the grid, the driver's scheduler CPU
                # would slow them on a machine with as many cores as workers
                tic = time.perf_counter()
                model._seen = seen_items(client.gather(seen), n_users, n_items)
                phases["seen"] = time.perf_counter() - tic
                seen = None
            nxt = submit_epoch(epoch + 1, ub, ib) if epoch + 1 < n_epochs else None
            finals, iblocks = client.gather([final_u, ib])
        except _cluster_errors():
            if reruns == _RERUNS:
                raise
            reruns += 1
            time.sleep(0.2 * reruns)
            # the epoch again, from the model the driver holds (the end of the last epoch)
            ub, ib, sent_first = scatter_blocks()
            pending = submit_epoch(epoch, ub, ib)
            continue
        ublocks = [f[0] for f in finals]
        # per sub-epoch, its tasks' ((loss x n, n, steps), cpu seconds) in block order
        results = [[f[1][q] for f in finals] for q in range(n_rounds * B)]
        for b in range(B):
            put_block(model, 0, urows[b], ublocks[b])
            put_block(model, 1, irows[b], iblocks[b])
        loss_sum = sum(r[0][0] for sub in results for r in sub)
        n_rows = sum(r[0][1] for sub in results for r in sub)
        steps = sum(r[0][2] for sub in results for r in sub)
        for key in opt._keys:
            opt.state[key]["step"] = opt.state[key].get("step", 0) + steps
        seconds = time.perf_counter() - t_epoch
        t_epoch = time.perf_counter()
        model.n_epochs_ += 1
        model.history_.append(dict(loss=loss_sum / n_rows if n_rows else float("nan"),
                                   epoch=model.n_epochs_, seconds=seconds,
                                   rows_per_s=n_rows / seconds if seconds > 0 else 0.0,
                                   eval=None))
        n_workers = len(workers)
        model_bytes = sum(block_bytes(b_) for b_ in ublocks) + sum(block_bytes(b_)
                                                                 for b_ in iblocks)
        for q, sub in enumerate(results):
            s = q % B
            # item block j, trained by task (j - s) mod B, is trained next by task
            # (j - s - 1) mod B (the next epoch's first sub-epoch after the last one): it
            # travels when the two run on different workers
            final = q == len(results) - 1 and epoch == n_epochs - 1
            moves = [j for j in range(B) if not final and
                     (j - s) % B % n_workers != (j - s - 1) % B % n_workers]
            last = q == len(results) - 1
            d = dict(epoch=epoch, sync=q, seconds=seconds if last else float("nan"),
                     rows=int(sum(irows[j].size for j in moves)), table_rows=table_rows,
                     bytes=int(sum(iblock_bytes[j] for j in moves)),
                     sent_bytes=int(sent_first if q == 0 else 0),
                     gathered_bytes=int(model_bytes if last else 0),
                     ratings=[int(r[0][1]) for r in sub],
                     task_cpu=[float(r[1]) for r in sub], last=last)
            if epoch == 0 and q == 0:
                d["setup"] = dict(phases)
            if stats is not None:
                stats.append(d)
        sent_first = 0
        if callback is not None:
            callback(model, d)
        epoch += 1
        pending = nxt
    return model
