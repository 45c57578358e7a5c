"""The users x items interaction matrix of a recommender: its rules, and the pattern a model
remembers of every matrix it was trained on.

* :func:`check_interactions` turns ``X`` / ``eval_set`` / ``score``'s ``X`` into the checked
  CSR matrix the kernels trust (structure first, then values, then duplicates);
* :class:`SeenItems` is the union of the training patterns: ``recommend`` leaves those items
  out, and BPR never draws them as negatives.

No scikit-learn here: the rules only need NumPy and SciPy.
"""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np
import scipy.sparse as sp

from .. import _validation as V

__all__ = ["MAX_IDS", "check_interactions", "SeenItems"]

# User and item ids are packed into the two 32-bit halves of one int64 per rating
# (``_sampling.pack_ratings``), so neither count may exceed what 31 bits hold.
MAX_IDS = 2**31 - 1


def check_interactions(name: str, X: Any, implicit: bool) -> sp.csr_matrix:
    """``X`` as a checked CSR matrix of interactions, or an exception naming ``name``.

    Parameters
    ----------
    name : str
        The argument's name in the caller's signature (``"X"``, ``"eval_set"``), used in
        every message.
    X : scipy.sparse matrix or array, shape (n_users, n_items)
        Any SciPy format; its structure is checked before any SciPy routine converts it.
    implicit : bool
        ``True``: every stored non-zero is one positive interaction; a pair stored more than
        once is one positive (its entries are summed, then stored zeros dropped).
        ``False``: stored values are explicit ratings, stored zeros included, and a pair
        stored more than once is refused (see :func:`_refuse_duplicates`).

    Returns
    -------
    scipy.sparse.csr_matrix
        Canonical enough for the kernels: one index dtype, exactly ``nnz`` entries, finite
        values. It may share arrays with ``X``; it is never written to.

    Raises
    ------
    TypeError
        ``X`` is not a SciPy sparse matrix or array, or holds non-real values.
    ValueError
        A malformed structure, more than ``2**31 - 1`` users or items, NaN or infinite
        values, or (explicit ratings) a pair stored twice.
    """
    if not sp.issparse(X):
        raise TypeError(f"{name} must be a scipy.sparse users x items matrix, got "
                        f"{type(X).__name__}")
    V.check_sparse_structure(name, X)  # before X.shape is trusted and before any conversion
    if max(X.shape) > MAX_IDS:
        raise ValueError(f"{name} has shape {X.shape}: at most 2**31 - 1 users and items")
    if implicit:
        # an interaction stored twice is one interaction (summed, then a stored 0 is no
        # interaction)
        X = V.check_sparse_matrix(name, X, dtype=np.float64)
        if X.nnz and not X.data.all():
            X = X.copy()  # X may share the caller's index arrays
            X.eliminate_zeros()
    else:
        if X.format == "coo":  # SciPy's COO -> CSR conversion would sum the duplicates
            coords = X.coords if hasattr(X, "coords") else (X.row, X.col)
            _refuse_duplicates(name, coords[0], coords[1], X.shape[1])
        X = V.check_sparse_matrix(name, X, sum_duplicates=False)
        rows = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
        _refuse_duplicates(name, rows, X.indices, X.shape[1])
    if X.nnz and not np.all(np.isfinite(X.data)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return X


def _refuse_duplicates(name: str, rows: np.ndarray, cols: np.ndarray, n_cols: int) -> None:
    """A rating stored twice is ambiguous (SciPy would add the two: 4 and 5 would train as
    9), so it is refused; the message says how to aggregate."""
    keys = np.sort(rows.astype(np.int64) * n_cols + cols, kind="stable")  # CSR: sorted runs
    dup = np.flatnonzero(keys[1:] == keys[:-1])
    if dup.shape[0]:
        u, i = divmod(int(keys[dup[0]]), n_cols)
        raise ValueError(
            f"{name} stores {dup.shape[0]} duplicate (user, item) entr"
            f"{'y' if dup.shape[0] == 1 else 'ies'} (the first: user {u}, item {i}); each "
            "rating must be stored once. Aggregate them first: X.sum_duplicates() adds them "
            "up; the MatrixFactorization docstring shows how to average them")


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
        A matrix checked by :func:`check_interactions`.

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
