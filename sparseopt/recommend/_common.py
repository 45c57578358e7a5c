"""Shared pieces of the recommenders: optimizer choice, thread counts, checks."""
from __future__ import annotations

import numbers
from typing import Any, Dict, Optional, Sequence

import numpy as np

from .. import _validation as V
from .._kernels import _info
from ..datasets import _rng
from ..optim import SGD, Adagrad, Adam, RMSprop

__all__ = ["make_optimizer", "kernel_threads", "check_random_state", "OPTIMIZERS"]

OPTIMIZERS = ("adam", "adagrad", "rmsprop", "sgd")

# Below this many output elements a kernel runs on one thread (waking a team costs more).
KERNEL_PARALLEL_MIN = 1 << 15


def check_random_state(random_state: Any) -> np.random.Generator:
    """``numpy.random.Generator`` from None, an int, a Generator or a RandomState."""
    return _rng(random_state)


def kernel_threads(n_threads: Optional[int], work: int) -> int:
    """Threads for one of our kernels: 1 for small work, else ``n_threads`` or OpenMP's
    default."""
    if work < KERNEL_PARALLEL_MIN:
        return 1
    n = n_threads if n_threads is not None else _info.max_threads()
    return max(1, int(n))


def make_optimizer(name: str, params: Sequence[np.ndarray], learning_rate: float,
                   n_threads: Optional[int], optimizer_params: Optional[Dict[str, Any]]):
    """The sparseopt optimizer ``name`` over ``params`` (``optimizer_params`` are passed on)."""
    V.check_choice("optimizer", name, OPTIMIZERS)
    kw = dict(optimizer_params or {})
    for bad in ("params", "lr", "n_threads"):
        if bad in kw:
            raise ValueError(f"optimizer_params may not set {bad!r} (use the estimator's "
                             "learning_rate / n_threads)")
    if name == "sgd":
        if kw:
            raise ValueError(f"optimizer='sgd' takes no optimizer_params, got {sorted(kw)}")
        return SGD(list(params), lr=learning_rate, n_threads=n_threads)
    cls = {"adam": Adam, "adagrad": Adagrad, "rmsprop": RMSprop}[name]
    return cls(list(params), lr=learning_rate, n_threads=n_threads, **kw)


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_ids(name: str, ids: Any, n: int, what: str) -> np.ndarray:
    """1-D integer ids in [0, n) as int64 (IndexError naming the first bad one)."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        if arr.size == 0:
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)
    if arr.size:
        bad = (arr < 0) | (arr >= n)
        if bad.any():
            pos = int(np.argmax(bad))
            raise IndexError(f"{name}[{pos}] = {int(arr[pos])} is out of range: the model has "
                             f"{n} {what}")
    return arr
