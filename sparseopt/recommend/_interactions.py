"""The pattern a recommender remembers of every users x items matrix it was trained on.

:class:`SeenItems` is the union of the training patterns: ``recommend`` leaves those items out,
and BPR never draws them as negatives. The rules a matrix must meet to get here are
``sparseopt._validation.check_interactions``.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import scipy.sparse as sp


__all__ = ["SeenItems"]

def _pattern(X: sp.csr_matrix) -> sp.csr_matrix:
    """The pattern of ``X``: values 1 (int8), indices sorted, so rows can be searched."""
    S = sp.csr_matrix((np.ones(X.nnz, dtype=np.int8), X.indices, X.indptr), shape=X.shape)
    S.sort_indices()
    return S


class SeenItems:
    """The (user, item) pairs of every interaction matrix a model was trained on.

    Immutable: :meth:`union` returns a new object, so the model's shallow attribute snapshot
    (``fit_guard``) restores it exactly when a later call fails.

    Parameters
    ----------
    X : scipy.sparse.csr_matrix
        A matrix checked by ``_validation.check_interactions``.

    Attributes
    ----------
    pattern : scipy.sparse.csr_matrix of int8
        Ones at the seen pairs, indices sorted within each row.
    indptr64, indices64 : ndarray of int64
        ``pattern``'s index arrays in the dtype of the negative-sampling kernel, converted
        once here rather than once per mini-batch.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> seen = SeenItems(sp.csr_matrix(np.array([[0, 2.0, 0], [1.0, 0, 0]])))
    >>> seen.union(sp.csr_matrix(np.array([[0, 0, 3.0], [0, 0, 0]]))).rows([0]).indices
    array([1, 2], dtype=int32)
    """

    def __init__(self, X: sp.csr_matrix) -> None:
        self.pattern = _pattern(X)
        self.indptr64 = self.pattern.indptr.astype(np.int64)
        self.indices64 = self.pattern.indices.astype(np.int64)

    @property
    def shape(self) -> Tuple[int, int]:
        return self.pattern.shape

    def union(self, X: sp.csr_matrix) -> "SeenItems":
        """The pairs seen so far plus those of ``X`` (a checked matrix of the same shape)."""
        S = self.pattern
        if X.nnz == S.nnz and X.has_sorted_indices and np.array_equal(X.indptr, S.indptr) \
                and np.array_equal(X.indices, S.indices):
            return self  # the same interactions again (another epoch of the same matrix)
        return SeenItems((S.astype(np.int32) + _pattern(X).astype(np.int32)).tocsr())

    def rows(self, users: np.ndarray) -> sp.csr_matrix:
        """The seen items of ``users`` (checked ids), one CSR row per entry."""
        return self.pattern[users]
