"""Checks only the recommenders need: ids, counts and flags of their parameters, and the fitted
tables and attributes their kernels read.

Sparse structure, thread counts, random state and the optimizer factory are the package's own
(``sparseopt._validation``, ``sparseopt._utils``); this module holds the rules that only make
sense for user x item data and embedding tables.
"""
from __future__ import annotations

import numbers
from typing import Any, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

from .. import _validation as V

__all__ = ["sparse_input", "check_positive_int", "check_flag", "check_verbose", "check_ids",
           "check_table", "check_recorded", "check_trains"]


def sparse_input(name: str, X: Any, **kwargs: Any) -> sp.csr_matrix:
    """:func:`sparseopt._validation.check_sparse_matrix`, with ``data`` and ``indices`` cut to
    the stored entries (SciPy allows arrays longer than ``indptr[-1]``; the models read
    ``data`` and ``indices`` as a whole)."""
    X = V.check_sparse_matrix(name, X, **kwargs)
    if X.data.shape[0] != X.nnz or X.indices.shape[0] != X.nnz:
        X.prune()  # rebinds this matrix's arrays to slices; the caller's arrays are untouched
    return X


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_flag(name: str, value: Any) -> bool:
    """A bool (NumPy bools and the ints 0 and 1 count): a string such as ``"no"`` is truthy
    and would silently mean True."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def check_verbose(value: Any) -> int:
    """``verbose``: a bool or a non-negative int (scikit-learn's convention)."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if not isinstance(value, numbers.Integral):
        raise TypeError(f"verbose must be a bool or a non-negative int, got {value!r}")
    if value < 0:
        raise ValueError(f"verbose must be a bool or a non-negative int, got {value!r}")
    return int(value)


def check_ids(name: str, ids: Any, n: int, what: str) -> np.ndarray:
    """1-D integer ids in [0, n) as int64 (IndexError naming the first bad one)."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        if arr.size == 0:
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) >= n:
        pos = int(np.argmax(arr >= n))  # before the cast: uint64 ids past 2**63 would wrap
        raise IndexError(f"{name}[{pos}] = {int(arr.reshape(-1)[pos])} is out of range: the "
                         f"model has {n} {what}")
    arr = np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)
    if arr.size:
        bad = (arr < 0) | (arr >= n)
        if bad.any():
            pos = int(np.argmax(bad))
            raise IndexError(f"{name}[{pos}] = {int(arr[pos])} is out of range: the model has "
                             f"{n} {what}")
    return arr


# --------------------------------------------------------------------------- fitted state
#
# A model records the layout of its tables when it is initialised (private, never documented);
# before a kernel runs, the public attributes it reads are compared with that record. The
# comparisons are of shapes, dtypes and flags, never scans of the values, so they cost nothing
# next to a prediction.


def check_recorded(name: str, value: Any, recorded: Any) -> None:
    """A fitted scalar attribute (``n_components_``, ``n_users_``) still holds the value the
    tables were built for."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or \
            int(value) != recorded:
        raise ValueError(f"{name} is {value!r} but the fitted tables were built for "
                         f"{recorded!r}; fitted attributes cannot be changed (refit instead)")


def check_table(name: str, arr: Any, shape: Tuple[int, ...], dtype: np.dtype,
                writeable: bool = False) -> np.ndarray:
    """A fitted table as the kernels need it: an ndarray of the recorded shape and dtype, C
    contiguous (and writeable when it is about to be trained)."""
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array of shape {shape}, got "
                         f"{type(arr).__name__}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} has shape {arr.shape}, but the model was fitted with shape "
                         f"{tuple(shape)}; fitted tables cannot be resized (refit instead)")
    if arr.dtype != dtype:
        raise ValueError(f"{name} has dtype {arr.dtype}, but the model was fitted in {dtype}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (assign into it, "
                         f"e.g. {name}[...] = values, rather than replacing it)")
    if writeable and not arr.flags.writeable:
        raise ValueError(f"{name} is read-only; training updates it in place")
    return arr


def check_trains(optimizer: Any, tables: Sequence[Tuple[str, np.ndarray]]) -> None:
    """Before more training: ``optimizer_`` still updates the model's own tables (a table
    replaced by a copy would be left behind while the optimizer trains the original)."""
    from ..optim._base import Optimizer

    if not isinstance(optimizer, Optimizer):
        raise ValueError(f"optimizer_ must be the model's sparseopt optimizer, got "
                         f"{type(optimizer).__name__}; call fit to start over")
    params = optimizer.params
    if len(params) != len(tables):
        raise ValueError(f"optimizer_ trains {len(params)} arrays, the model has "
                         f"{len(tables)} tables; call fit to start over")
    for (name, table), param in zip(tables, params):
        if table is not param:
            raise ValueError(f"{name} is no longer the array optimizer_ trains (it was "
                             f"replaced); assign into it instead ({name}[...] = values), or "
                             "call fit to start over")
