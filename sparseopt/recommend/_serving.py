"""Top-n selection for ``recommend`` and ``similar_items``: score a block of rows as one dense
product, then keep the best ``n`` of each row, leaving out excluded entries.

Scores are computed for blocks of rows so that memory stays bounded (``_BLOCK_ENTRIES``
scores at a time) whatever the number of rows asked for; the selection itself is a Cython
kernel (``topn_rows``) that runs in parallel over rows with a bounded heap per row, ties going
to the lower column id, so the result does not depend on the thread count.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np
import scipy.sparse as sp

from .. import _utils
from .._kernels import _topk
from .._utils import threads_for

__all__ = ["top_n", "top_n_by_blocks", "self_exclusions"]

# Scores computed at once by recommend / similar_items (entries of the dense block).
_BLOCK_ENTRIES = 1 << 22


def top_n(scores: np.ndarray, exclude: Optional[sp.csr_matrix], n: int,
          n_threads: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    """The ``n`` best columns of each row of ``scores``, best first.

    Parameters
    ----------
    scores : ndarray (m, n_cols), C-contiguous
        Scratch: the kernel may overwrite it.
    exclude : CSR matrix of ``scores``' shape, or None
        Built by the caller from the model's own data (never from user input), so its
        indices are in range.
    n : int
        ``1 <= n <= n_cols``.
    n_threads : int or None
        The checked ``n_threads`` of the model; the team follows ``threads_for``.

    Returns
    -------
    ids : ndarray of int64 (m, n)
        Padded with -1 when a row has fewer than ``n`` candidates.
    values : ndarray of float64 (m, n)
        The scores of ``ids``; -inf for padding.
    """
    m = scores.shape[0]
    ids = np.empty((m, n), dtype=np.int64)
    out = np.empty((m, n), dtype=np.float64)
    if exclude is None:
        indptr = np.zeros(m + 1, dtype=np.int64)
        indices = np.zeros(1, dtype=np.int64)
    else:
        indptr = exclude.indptr.astype(np.int64, copy=False)
        indices = exclude.indices.astype(np.int64, copy=False)
        if indices.shape[0] == 0:  # the kernel takes a non-empty array even when unused
            indices = np.zeros(1, dtype=np.int64)
    threads = threads_for(n_threads, scores.size, _utils.PARALLEL_MIN_MODEL_WORK)
    _topk.topn_rows(scores, indptr, indices, ids, out, threads)
    return ids, out


def top_n_by_blocks(rows: np.ndarray, n: int, n_cols: int, dtype: np.dtype,
                    block_scores: Callable[[np.ndarray], np.ndarray],
                    block_exclusions: Callable[[np.ndarray], Optional[sp.csr_matrix]],
                    n_threads: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`top_n` of every row of a score matrix that is never held whole.

    ``block_scores(rows[s:e])`` returns the C-contiguous ``(e - s, n_cols)`` scores of a block
    of rows and ``block_exclusions(rows[s:e])`` the entries to leave out (or None). Returns
    ``(ids, values)`` of shape ``(rows.shape[0], n)``, the values cast to ``dtype``.
    """
    m = rows.shape[0]
    ids = np.empty((m, n), dtype=np.int64)
    values = np.empty((m, n), dtype=dtype)
    block = max(1, _BLOCK_ENTRIES // max(1, n_cols))
    for s in range(0, m, block):
        b = rows[s:s + block]
        bi, bv = top_n(block_scores(b), block_exclusions(b), n, n_threads)
        ids[s:s + block] = bi
        values[s:s + block] = bv
    return ids, values


def self_exclusions(rows: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """One entry per row at column ``rows[r]``: an item is not similar to itself."""
    return sp.csr_matrix((np.ones(rows.shape[0]), rows, np.arange(rows.shape[0] + 1)),
                         shape=(rows.shape[0], n_cols))
