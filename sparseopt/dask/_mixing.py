"""Sparse row deltas and their mixing (iterative parameter mixing, McDonald et al., 2010).

Pure NumPy, no Dask: a worker's pass over its partition changes some rows of the model's
tables (weights, optimizer state). ``RowDelta`` holds those rows only -- their new values,
their values in the broadcast model, and per-row update counts -- so what travels scales
with the rows a partition touches, not with the table. ``merge`` combines two deltas (it is
associative and commutative up to rounding, so the driver reduces them as a tree) and
``apply`` writes the result into the driver's model.

The combination rule, per row ``r`` and per table:

* ``'mean'`` tables (the weights, Adam's and RMSprop's moving averages): the new values of the
  workers that *updated* the row (count > 0) are averaged, weighted by their update counts
  (the number of stored entries of that feature in the worker's data; for the intercept row
  the number of samples). A feature seen by one worker keeps that worker's value: it is not
  diluted by the workers that never saw it, as a plain average would. A change without
  updates (count 0: only the lazy penalty moved the row) is added on top: penalty steps
  taken by different workers compose.
* ``'sum'`` tables (Adagrad's sum of squared gradients, Adam's per-row step counters): the
  increments of all workers are added, ``old + sum_k (new_k - old)``: the state one process
  would hold after seeing every worker's gradients, so training resumes (``partial_fit``, a
  ``warm_start`` fit or another distributed fit) with step sizes as if it had run in one
  process.

A row that only one worker changed gets exactly that worker's values (no arithmetic), so with
one partition the mixed model is bitwise the single-process one.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from .._utils import sorted_unique

RULES = ("mean", "sum")


class RowDelta:
    """The rows of a set of tables that one or more workers changed.

    Attributes
    ----------
    rows : int64 array, sorted and unique
    counts : float64 array, the update count of every row (summed over merged workers)
    new, old : dict name -> array of shape ``(len(rows),) + table.shape[1:]``
    rules : dict name -> 'mean' or 'sum'
    steps, samples : int, optimizer steps and samples of the merged workers' passes
    """

    __slots__ = ("rows", "counts", "new", "old", "rules", "steps", "samples")

    def __init__(self, rows, counts, new, old, rules, steps=0, samples=0):
        self.rows = rows
        self.counts = counts
        self.new = new
        self.old = old
        self.rules = rules
        self.steps = int(steps)
        self.samples = int(samples)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays a transfer carries."""
        n = self.rows.nbytes + self.counts.nbytes  # noqa: E501
        return n + sum(a.nbytes for a in self.new.values()) + \
            sum(a.nbytes for a in self.old.values())

    def __sizeof__(self) -> int:
        # what Dask's ``sizeof`` reads (through ``sys.getsizeof``): without it a delta of
        # tens of MB counts as a few bytes in the scheduler's placement of the tasks that
        # read it and in the workers' memory accounting
        return object.__sizeof__(self) + self.nbytes

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, d):
        for k in self.__slots__:
            setattr(self, k, d[k])


def changed_rows(before: Dict[str, np.ndarray], after: Dict[str, np.ndarray]) -> np.ndarray:
    """Rows (sorted) where any table differs between ``before`` and ``after`` (NaN-aware:
    a row that turned NaN counts as changed)."""
    mask = None
    for name, a in after.items():
        b = before[name]
        d = a != b
        if d.ndim > 1:
            d = d.reshape(d.shape[0], -1).any(axis=1)
        mask = d if mask is None else (mask | d)
    return np.flatnonzero(mask).astype(np.int64)


def extract(before: Dict[str, np.ndarray], after: Dict[str, np.ndarray],
            row_counts: np.ndarray, rules: Dict[str, str], steps: int,
            samples: int, rows: Optional[np.ndarray] = None) -> RowDelta:
    """The delta of one worker's pass: the changed rows of ``after`` against ``before``
    (the broadcast model), with ``row_counts`` (one per table row) as update counts."""
    if rows is None:
        rows = changed_rows(before, after)
    return RowDelta(rows, np.asarray(row_counts)[rows].astype(np.float64),
                    {k: np.ascontiguousarray(after[k][rows]) for k in after},
                    {k: np.ascontiguousarray(before[k][rows]) for k in after},
                    dict(rules), steps, samples)


def _scatter(n: int, pos: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros((n,) + values.shape[1:], dtype=values.dtype)
    out[pos] = values
    return out


def merge(a: RowDelta, b: RowDelta) -> RowDelta:
    """Combine two deltas of the same broadcast model (see the module docstring)."""
    if a.rows.size == 0:
        return RowDelta(b.rows, b.counts, b.new, b.old, b.rules, a.steps + b.steps,
                        a.samples + b.samples)
    if b.rows.size == 0:
        return RowDelta(a.rows, a.counts, a.new, a.old, a.rules, a.steps + b.steps,
                        a.samples + b.samples)
    rows = union_sorted(a.rows, b.rows)
    n = rows.shape[0]
    pa = np.searchsorted(rows, a.rows)
    pb = np.searchsorted(rows, b.rows)
    in_a = np.zeros(n, dtype=bool)
    in_a[pa] = True
    in_b = np.zeros(n, dtype=bool)
    in_b[pb] = True
    both = in_a & in_b
    ca = _scatter(n, pa, a.counts)
    cb = _scatter(n, pb, b.counts)
    new, old = {}, {}
    for name, rule in a.rules.items():
        va = _scatter(n, pa, a.new[name])
        vb = _scatter(n, pb, b.new[name])
        oa = _scatter(n, pa, a.old[name])
        ob = _scatter(n, pb, b.old[name])
        # rows of one side keep that side's values exactly
        v = np.where(_col(in_a, va), va, vb)
        o = np.where(_col(in_a, oa), oa, ob)
        idx = np.flatnonzero(both)
        if idx.size:
            xa, xb, ov = va[idx], vb[idx], oa[idx]
            if rule == "sum":
                v[idx] = xa + (xb - ov)
            else:
                wa, wb = ca[idx], cb[idx]
                tot = wa + wb
                upd = (wa > 0) & (wb > 0)
                mixed = xa + (xb - ov)  # at most one side updated: compose the changes
                if upd.any():
                    fa = _col(np.where(upd, wa / np.where(tot > 0, tot, 1.0), 0.0), xa)
                    fb = _col(np.where(upd, wb / np.where(tot > 0, tot, 1.0), 0.0), xa)
                    avg = (fa * xa + fb * xb).astype(xa.dtype, copy=False)
                    mixed = np.where(_col(upd, xa), avg, mixed)
                # one updated, the other only decayed: the updated value plus the decay
                v[idx] = mixed
        new[name], old[name] = v, o
    return RowDelta(rows, ca + cb, new, old, dict(a.rules), a.steps + b.steps,
                    a.samples + b.samples)


def union_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The sorted union of two sorted unique arrays (a sort of the concatenation: faster
    than np.union1d's hashing on the million-row deltas of a large table)."""
    return sorted_unique(np.concatenate([a, b]), runs=True)


def _col(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``mask`` broadcast over the trailing axes of ``like``."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def tree_merge(deltas):
    """Pairwise reduction in a fixed order (the result does not depend on which worker
    finished first)."""
    level = list(deltas)
    if not level:
        return None
    while len(level) > 1:
        level = [merge(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]


def strip_old(delta: RowDelta) -> RowDelta:
    """The merged delta without the broadcast model's values and the update counts (which
    ``apply`` does not read; a stripped delta is not merged again): less than half the
    bytes of the transfers to the driver and to the workers' replicas."""
    return RowDelta(delta.rows, np.zeros(0), delta.new, {}, delta.rules, delta.steps,
                    delta.samples)


def apply(delta: RowDelta, tables: Dict[str, np.ndarray]) -> None:
    """Write the mixed rows into the driver's tables (in place)."""
    if delta is None or delta.rows.size == 0:
        return
    for name, values in delta.new.items():
        tables[name][delta.rows] = values


def reference_mix(old: Dict[str, np.ndarray], news, counts, rules) -> Dict[str, np.ndarray]:
    """Plain dense statement of the rule for tests: the tables after mixing ``news`` (the
    workers' full tables) trained from ``old`` with per-row ``counts`` (one per worker)."""
    out = {}
    for name, rule in rules.items():
        o = old[name].astype(np.float64)
        res = o.copy()
        n = o.shape[0]
        for r in range(n):
            changed = [k for k in range(len(news)) if not np.array_equal(news[k][name][r],
                                                                          old[name][r])]
            if not changed:
                continue
            if rule == "sum":
                res[r] = o[r] + sum(news[k][name][r] - o[r] for k in changed)
                continue
            upd = [k for k in changed if counts[k][r] > 0]
            dec = [k for k in changed if counts[k][r] <= 0]
            if upd:
                tot = sum(counts[k][r] for k in upd)
                base = sum(counts[k][r] / tot * news[k][name][r] for k in upd)
            else:
                base = o[r]
            res[r] = base + sum(news[k][name][r] - o[r] for k in dec)
        out[name] = res
    return out
