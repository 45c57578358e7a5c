"""Interactions as the models take them, and the pattern a recommender remembers of them.

* :func:`interactions_input`: the one conversion every training call (and ``score``,
  ``evaluate``) makes of its input -- a users x items matrix, or columns of raw ids (a
  DataFrame or a tuple) encoded by :class:`IdEncoder` -- into a checked CSR matrix;
* :class:`IdEncoder`: raw user or item ids (integers or strings) <-> row indices;
* :class:`SeenItems`: the union of the training patterns: ``recommend`` leaves those items
  out, and BPR never draws them as negatives.

The rules an input must meet are in ``sparseopt._validation`` (``check_interactions``,
``check_columns``, ``check_raw_ids``).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Tuple

import numpy as np
import scipy.sparse as sp

from .. import _validation as V
from .._utils import sorted_unique

__all__ = ["SeenItems", "IdEncoder", "Interactions", "interactions_input"]


class IdEncoder:
    """Raw ids (integers or strings) <-> indices ``0`` to ``n - 1``, like scikit-learn's
    ``LabelEncoder`` but with the rules of a recommender's ids.

    ``classes_`` holds the distinct ids in sorted order; an id's index is its position in
    it, so the encoding does not depend on the order of the rows. Ids are int64 (uint64
    past ``2**63 - 1``) or strings; floats, bools, missing values and a mix of integers and
    strings are refused (see ``sparseopt._validation.check_raw_ids``). An id that is not in
    ``classes_`` raises :class:`~sparseopt.recommend.UnknownIdError` (a ``ValueError`` and
    an ``IndexError``) naming it.

    Parameters
    ----------
    what : str, default "ids"
        How messages name the ids (``"users"``, ``"items"``).

    Attributes
    ----------
    classes_ : ndarray, shape (n,)
        The distinct ids, sorted: int64, uint64 or str.

    Examples
    --------
    >>> from sparseopt.recommend import IdEncoder
    >>> enc = IdEncoder("items").fit(["b", "a", "c", "a"])
    >>> enc.classes_.tolist(), enc.transform(["c", "a"]).tolist()
    (['a', 'b', 'c'], [2, 0])
    >>> enc.inverse_transform([1]).tolist()
    ['b']
    """

    def __init__(self, what: str = "ids") -> None:
        self.what = what

    def fit(self, ids: Any) -> "IdEncoder":
        """Learn the distinct ids of ``ids`` (a 1-D array-like of integers or strings)."""
        self.classes_ = sorted_unique(V.check_raw_ids(self.what, ids))
        self.classes_.flags.writeable = False  # the model's ids: edit by refitting
        return self

    def fit_transform(self, ids: Any) -> np.ndarray:
        """:meth:`fit`, then the int64 index of every id (one pass)."""
        arr = V.check_raw_ids(self.what, ids)
        classes, codes = sorted_unique(arr, return_inverse=True)
        classes.flags.writeable = False
        self.classes_ = classes
        return codes

    def __len__(self) -> int:
        return int(self._classes().shape[0])

    def _classes(self) -> np.ndarray:
        classes = getattr(self, "classes_", None)
        if classes is None:
            raise ValueError(f"this IdEncoder of {self.what} is not fitted yet; call fit first")
        return classes

    def transform(self, ids: Any, name: Optional[str] = None) -> np.ndarray:
        """The int64 indices of ``ids`` (a scalar or 1-D array-like); ``name`` is how
        messages call the argument."""
        name = name or self.what
        classes = self._classes()
        arr = V.check_raw_ids(name, ids, allow_scalar=True)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if (arr.dtype.kind == "U") != (classes.dtype.kind == "U"):
            kind = "strings" if classes.dtype.kind == "U" else "integers"
            raise V.UnknownIdError(f"{name}[0] = {arr[0].item()!r} is not one of the model's "
                                   f"{self.what}: its ids are {kind}")
        if arr.dtype != classes.dtype and arr.dtype.kind != "U":
            # int64 queries of uint64 ids (or the reverse): range-checked, then cast to the
            # ids' dtype, because NumPy compares int64 with uint64 through float64, where
            # distinct ids past 2**53 would match
            ok = (arr >= 0) if arr.dtype.kind == "i" else (arr <= np.iinfo(np.int64).max)
            if not ok.all():
                pos = int(np.argmin(ok))
                raise V.UnknownIdError(f"{name}[{pos}] = {arr[pos].item()!r} is not one of the "
                                       f"model's {self.what}")
            arr = arr.astype(classes.dtype)
        pos = np.searchsorted(classes, arr)
        found = pos < classes.shape[0]
        found[found] = classes[pos[found]] == arr[found]
        if not found.all():
            bad = int(np.argmin(found))
            raise V.UnknownIdError(f"{name}[{bad}] = {arr[bad].item()!r} is not one of the "
                                   f"{len(self)} {self.what} the model was fitted with")
        return pos.astype(np.int64)

    def inverse_transform(self, indices: Any, fill: bool = False) -> np.ndarray:
        """The raw ids at ``indices`` (integers in ``[0, n)``, the shape kept); with
        ``fill``, an index of -1 (padding) gives the fill id (-1, or the empty string for
        string ids, see ``padding_id``)."""
        classes = self._classes()
        fill = V.check_flag("fill", fill)
        idx = V.check_indices_in("indices", indices, -1 if fill else 0, classes.shape[0])
        if not fill:
            return classes[idx]
        pad = idx < 0
        out = classes[np.where(pad, 0, idx)]
        if pad.any():
            out = np.array(out)  # a copy: never write into classes_
            out[pad] = padding_id(classes.dtype)
        return out


def padding_id(dtype: np.dtype) -> Any:
    """What ``recommend`` returns for a padded slot of a model with raw ids of ``dtype``:
    -1 for integers (the largest uint64 for uint64 ids), the empty string for strings. It
    may also be a real id: the score -inf is what marks padding."""
    if dtype.kind == "U":
        return ""
    if dtype.kind == "u":
        return np.iinfo(dtype).max
    return -1


class Interactions(NamedTuple):
    """A checked training / evaluation input: the CSR matrix the kernels read and, when it
    came as columns of raw ids, the encoders of its users and items."""
    X: sp.csr_matrix
    users: Optional[IdEncoder]
    items: Optional[IdEncoder]


def interactions_input(name: str, X: Any, implicit: bool,
                       users: Optional[IdEncoder] = None,
                       items: Optional[IdEncoder] = None) -> Interactions:
    """``X`` in any accepted form as a checked CSR matrix (``_validation.check_interactions``).

    * a SciPy sparse matrix or a dense 2-D array: rows are users, columns items; returned
      with no encoders;
    * a pandas DataFrame (columns ``user``, ``item`` and optionally ``rating`` or
      ``value``) or a tuple ``(user_ids, item_ids[, values])`` of raw ids
      (``_validation.check_columns``): encoded by ``users`` / ``items`` when given (an id
      they do not know raises ``UnknownIdError``), else by new encoders learnt from ``X``.
      Without values every row is one interaction of value 1. Explicit models refuse a
      (user, item) pair given twice; implicit ones sum its values, and a pair whose value
      is then 0 is no interaction (the rules of a sparse matrix).
    """
    if not V.is_columns(X):
        return Interactions(V.check_interactions(name, X, implicit), None, None)
    u_raw, i_raw, values, labels = V.check_columns(name, X, implicit)
    if users is None:
        users, items = IdEncoder("users"), IdEncoder("items")
        u = users.fit_transform(u_raw)
        i = items.fit_transform(i_raw)
    else:
        u = users.transform(u_raw, labels[0])
        i = items.transform(i_raw, labels[1])
    if values is None:
        values = np.ones(u.shape[0], dtype=np.float64)
    shape = (len(users), len(items))
    if not implicit:
        order = np.lexsort((i, u))
        dup = np.flatnonzero((np.diff(u[order]) == 0) & (np.diff(i[order]) == 0))
        if dup.shape[0]:
            first = order[dup[0]]
            raise V.duplicate_pairs_error(name, dup.shape[0], users.classes_[u[first]],
                                          items.classes_[i[first]])
    itype = np.int32 if max(shape) <= np.iinfo(np.int32).max else np.int64
    coo = sp.coo_matrix((values, (u.astype(itype), i.astype(itype))), shape=shape)
    # duplicates (implicit only here) are summed by the conversion; the structure is ours.
    # Sorted indices: the matrix, and so the training, does not depend on the row order
    csr = coo.tocsr()
    csr.sort_indices()
    return Interactions(V.check_interactions(name, csr, implicit), users, items)

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
