"""Gradients: the ``RowGrad`` container and the conversion of every accepted gradient form
into *merged rows* — unique row ids plus where each row's (summed) gradient lives.

Nothing here changes a parameter or optimizer state, so every error is raised before an
update kernel runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import scipy.sparse as sp

from .. import _validation as V
from .._kernels import _coalesce
from .._rowgrad import RowGrad
from .._utils import REPEATS_SERIAL_DIVISOR, lazy_zeros

__all__ = ["RowGrad", "MergedRows", "RowIndexer", "merge"]


@dataclass
class MergedRows:
    """A validated gradient: ``rows[j]``'s gradient is ``values[src[j]]`` or, when
    ``src[j] < 0``, ``scratch[-src[j] - 1]``."""

    rows: np.ndarray  # int64 (m,)
    src: np.ndarray  # int64 (m,)
    values: np.ndarray  # (k, d), parameter dtype, C-contiguous
    scratch: np.ndarray  # (n_dup, d)
    # False when every merged gradient (single rows in ``values`` and the sums in ``scratch``)
    # is known to be finite; True when the per-row check must look.
    maybe_nonfinite: bool = True
    # A compact table's slot of each row (``rows[j]``'s moments are row ``srows[j]`` of the
    # slot buffers), assigned in phase 1 when the table already has state; ``slots_start`` is
    # ``n_slots`` before the assignment, to take it back if the step is refused.
    srows: Optional[np.ndarray] = None
    slots_start: int = 0


# Largest duplicate-sum buffer a parameter keeps from one step to the next.
SCRATCH_KEEP_BYTES = 4 << 20
# A one-thread merge finds repeated rows through a hash of the batch's rows (a power of two of
# at least 2 k int32 entries, in cache) rather than the table-sized ``slot`` array once the
# table has this many times more rows than the hash has entries: a large table's slot array is
# out of cache, one miss per index (benchmarks/README.md, "Merging duplicates").
HASH_MIN_TABLE_RATIO = 8
# Probes per index after which a hashed merge gives up for the slot array (ids chosen to
# collide); random ids need about 1.5 at the hash's load of at most one half.
HASH_PROBES_PER_INDEX = 16
_NO_SLOT = np.zeros(0, dtype=np.int32)


class RowIndexer:
    """Per-parameter scratch for duplicate merging: ``slot[r]`` is 0 between steps.

    Allocated on the first RowGrad step (``sparseopt._utils.lazy_zeros``): 4 bytes per table
    row of address space, resident only for the pages of rows ever touched. Not part of the
    state.
    """

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows
        self._slot: Optional[np.ndarray] = None
        self._arange: Optional[np.ndarray] = None
        self._scratch: Optional[np.ndarray] = None
        self._table: Optional[np.ndarray] = None
        self._empty: Optional[np.ndarray] = None

    def slot(self) -> np.ndarray:
        if self._slot is None:
            self._slot = lazy_zeros(4 * self.n_rows).view(np.int32)
        return self._slot

    def empty_scratch(self, values: np.ndarray) -> np.ndarray:
        """A ``(0, d)`` scratch of ``values``' dtype and width (no duplicates), kept."""
        e = self._empty
        if e is None or e.dtype != values.dtype or e.shape[1] != values.shape[1]:
            e = self._empty = _empty_scratch(values)
        return e

    def table(self, cap: int) -> np.ndarray:
        """The int32 hash of a one-thread merge, ``cap`` entries (kept between steps)."""
        buf = self._table
        if buf is None or buf.shape[0] < cap:
            buf = self._table = np.empty(cap, dtype=np.int32)
        return buf[:cap]

    def scratch(self, n: int, d: int, dtype) -> np.ndarray:
        """An ``(n, d)`` array for the duplicate sums of a step. Up to ``SCRATCH_KEEP_BYTES``
        it is kept between steps: a fresh one of a few hundred KiB would be a new mapping,
        page-faulted in at every step. Larger ones are made per step (only the rows written
        become resident). A merged gradient refers to it until its step has run (the
        optimizer's lock covers both phases; each parameter has its own indexer)."""
        if n * d * np.dtype(dtype).itemsize > SCRATCH_KEEP_BYTES:
            return np.empty((n, d), dtype=dtype)
        buf = self._scratch
        if buf is None or buf.dtype != dtype or buf.shape[1] != d or buf.shape[0] < n:
            buf = self._scratch = np.empty((max(n, 16), d), dtype=dtype)
        return buf[:n]

    def arange(self) -> np.ndarray:
        if self._arange is None:
            self._arange = np.arange(self.n_rows, dtype=np.int64)
        return self._arange


def _empty_scratch(values: np.ndarray) -> np.ndarray:
    return np.empty((0, values.shape[1]), dtype=values.dtype)


def merge(key, grad: Any, param: np.ndarray, indexer: RowIndexer, duplicates: str,
          nonfinite: str, threads: Optional[Callable[[int, int], int]] = None) -> MergedRows:
    """Validate one gradient against its parameter and merge it into unique rows.

    ``threads(k, d)`` gives the threads for summing the duplicates of a batch of k rows of
    width d (the optimizer's rule); without it the merge runs on one thread.
    """
    name = V.describe(key)
    check = nonfinite != "ignore"
    if isinstance(grad, RowGrad):
        merged = _merge_rowgrad(name, grad, param, indexer, duplicates == "mean", check, threads)
    elif isinstance(grad, np.ndarray):  # before issparse: no sparse matrix is an ndarray
        values = V.check_dense(name, grad, param)
        rows = indexer.arange()
        merged = MergedRows(rows, rows, values, indexer.empty_scratch(values),
                            check and _coalesce.any_nonfinite(values))
    elif sp.issparse(grad):
        merged = _merge_sparse(name, grad, param)
        merged.maybe_nonfinite = check and _coalesce.any_nonfinite(merged.values)
    else:
        raise TypeError(
            f"{name}: a gradient must be a sparseopt.RowGrad, a scipy.sparse matrix or array, "
            f"a NumPy array or None; got {type(grad).__name__}"
        )
    if check and merged.rows.shape[0] and merged.maybe_nonfinite:
        flags = np.empty(merged.rows.shape[0], dtype=np.uint8)
        nbad = _coalesce.nonfinite_rows(merged.values, merged.scratch, merged.src, flags)
        if nbad:
            bad = flags.view(bool)
            if nonfinite == "raise":
                first = int(merged.rows[np.argmax(bad)])
                raise FloatingPointError(
                    f"{name}: the gradient has NaN or infinite values in {nbad} row(s), first "
                    f"in row {first}; nothing was updated (pass nonfinite='skip' to leave such "
                    "rows out of the step, or 'ignore' to apply them)"
                )
            keep = ~bad
            merged.rows = merged.rows[keep]
            merged.src = merged.src[keep]
    return merged


def _merge_rowgrad(name, grad: RowGrad, param, indexer: RowIndexer, mean: bool,
                   check: bool, threads: Optional[Callable[[int, int], int]]) -> MergedRows:
    n_rows = param.shape[0]
    idx = V.check_indices(name, grad.indices, n_rows)
    k = idx.shape[0]
    values = V.check_row_values(name, grad.values, k, param)
    if k >= 2**31 - 1:
        raise ValueError(f"{name}: a RowGrad holds at most 2**31 - 2 indices, got {k}")
    rows = np.empty(k, dtype=np.int64)
    src = np.empty(k, dtype=np.int64)
    count = np.empty(k, dtype=np.int32)
    nb = threads(k, values.shape[1]) if threads is not None else 1
    if nb == 1:
        # one walk: slots, sums and the non-finite check together
        scratch = indexer.scratch(k // 2, values.shape[1], values.dtype)
        m = -2
        cap = 1 << max(4, (2 * k - 1).bit_length())
        if n_rows >= HASH_MIN_TABLE_RATIO * cap:
            m, ndup, bad = _coalesce.coalesce_sum(idx, values, _NO_SLOT, indexer.table(cap),
                                                  rows, src, count, scratch, n_rows, mean, check,
                                                  HASH_PROBES_PER_INDEX * k + 64)
        if m == -2:  # a small table, or ids that collide in the hash
            m, ndup, bad = _coalesce.coalesce_sum(idx, values, indexer.slot(), _NO_SLOT, rows,
                                                  src, count, scratch, n_rows, mean, check)
        if m < 0:
            raise V.index_error(name, int(idx[ndup]), int(ndup), n_rows)
        return MergedRows(rows[:m], src[:m], values, scratch[:ndup], bad)
    pos2u = np.empty(k, dtype=np.int32)
    mstart = np.empty(nb, dtype=np.int32)
    m, ndup = _coalesce.coalesce_index(idx, indexer.slot(), rows, src, count, pos2u, n_rows,
                                       mstart)
    if m < 0:
        raise V.index_error(name, int(idx[ndup]), int(ndup), n_rows)
    scratch = np.empty((ndup, values.shape[1]), dtype=values.dtype)
    if ndup:
        # checks single rows and sums in the same pass. On several threads, the repeats of
        # rows first seen in an earlier block wait for that block, so batches with many
        # repeats stay serial (the rule: sparseopt._utils.REPEATS_SERIAL_DIVISOR).
        if nb > 1 and (k - m) * REPEATS_SERIAL_DIVISOR > k:
            mstart = None
        deferred = np.empty(k, dtype=np.int32) if mstart is not None else None
        bad = _coalesce.sum_duplicates(values, scratch, pos2u, src, count, m, mean, check,
                                       mstart, deferred)
    else:
        bad = check and _coalesce.any_nonfinite(values)
    return MergedRows(rows[:m], src[:m], values, scratch, bad)


def _merge_sparse(name, grad, param) -> MergedRows:
    rows, local, indptr, indices, data = V.check_sparse(name, grad, param)
    d = 1 if param.ndim == 1 else param.shape[1]
    values = np.empty((rows.shape[0], d), dtype=param.dtype)
    if rows.shape[0]:
        _coalesce.csr_rows_dense(indptr, indices, data, local, values)
    src = np.arange(rows.shape[0], dtype=np.int64)
    return MergedRows(rows, src, values, _empty_scratch(values))
