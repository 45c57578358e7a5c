"""Shared pieces of the recommenders: optimizer choice, plain SGD, thread counts, checks."""
from __future__ import annotations

import numbers
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .. import _validation as V
from .._kernels import _info, _recommend
from ..datasets import _rng
from ..optim import Adagrad, Adam, RMSprop, RowGrad

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


class SGD:
    """Plain mini-batch SGD on rows, ``theta_r <- theta_r - lr * g_r``, with the optimizers'
    ``step`` protocol (a list of ``RowGrad`` / dense arrays / ``None``).

    Duplicate rows are applied one after another, in sample order, by a serial kernel (equal
    to summing them first, up to rounding). No state, so no lazy catch-up is ever owed.
    """

    def __init__(self, params: Sequence[np.ndarray], lr: float = 0.01,
                 n_threads: Optional[int] = None) -> None:
        self._params = list(params)
        for i, p in enumerate(self._params):
            V.check_param(i, p)
        self.param_groups = [dict(lr=V.check_real("lr", lr))]
        self.state: Dict[Any, Dict[str, Any]] = {}
        self.n_threads = n_threads

    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.param_groups[0]["lr"] = V.check_real("lr", value)

    @property
    def params(self) -> List[np.ndarray]:
        return list(self._params)

    def step(self, grads: Sequence[Any]) -> None:
        if len(grads) != len(self._params):
            raise ValueError(f"step() got {len(grads)} gradients for {len(self._params)} "
                             "parameters")
        lr = self.lr
        for p, g in zip(self._params, grads):
            if g is None:
                continue
            if isinstance(g, RowGrad):
                vals = V.rows_view(np.ascontiguousarray(g.values, dtype=p.dtype))
                idx = np.ascontiguousarray(g.indices)
                if idx.dtype not in (np.int32, np.int64):
                    idx = idx.astype(np.int64)
                if not np.all(np.isfinite(vals)):
                    raise FloatingPointError("SGD: the gradient has NaN or infinite values")
                _recommend.sgd_rows_update(V.rows_view(p), idx, vals, lr)
            else:
                g = np.asarray(g, dtype=p.dtype).reshape(p.shape)
                if not np.all(np.isfinite(g)):
                    raise FloatingPointError("SGD: the gradient has NaN or infinite values")
                p -= p.dtype.type(lr) * g

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizer": "SGD", "state": {}, "param_groups": [dict(self.param_groups[0])]}


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
        return SGD(params, lr=learning_rate, n_threads=n_threads)
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
