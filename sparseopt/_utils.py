"""Policies shared by the optimizers and the models built on them: how many threads a kernel
call gets, how random state is made, and how a model builds its optimizer.

Each rule lives here once; callers import it rather than keep a local copy.
"""
from __future__ import annotations

import numbers
import os
from typing import Any, Dict, Optional

import numpy as np

from ._kernels import _info

__all__ = ["OPTIMIZERS", "PARALLEL_MIN_ELEMENTS", "PARALLEL_MIN_MODEL_WORK", "max_n_threads",
           "threads_for", "check_random_state", "make_optimizer"]

# Below this many updated elements (rows x width) an optimizer's row kernel runs on one thread:
# waking a team costs more than a small update, and on a loaded machine a parallel region can
# wait for a descheduled thread. The figures behind it are in benchmarks/README.md.
PARALLEL_MIN_ELEMENTS = 3 << 17
# The models' fused kernels (margins, loss derivatives, gradient rows, top-n) do several times
# more arithmetic per element than an optimizer row update, so they go parallel earlier.
PARALLEL_MIN_MODEL_WORK = 1 << 15

OPTIMIZERS = ("adam", "adagrad", "rmsprop", "sgd")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def max_n_threads() -> int:
    """The most threads any kernel call may use: four per core this process may run on, and
    never more than OpenMP's thread limit. Asking OpenMP for more than it can start ends the
    process ("Thread creation failed") instead of raising, so the limit is enforced here."""
    return max(1, min(4 * _cores(), _info.thread_limit()))


def threads_for(n_threads: Optional[int], work: int,
                min_work: int = PARALLEL_MIN_ELEMENTS) -> int:
    """Threads for one kernel call doing ``work`` elements of work.

    One thread below ``min_work``; otherwise ``n_threads`` (``None``: OpenMP's default team
    size, which follows ``OMP_NUM_THREADS`` and threadpoolctl), at most :func:`max_n_threads`
    and at most ``work``. Results never depend on the count: kernels partition rows, never
    reduce across them.
    """
    if work < min_work:
        return 1
    n = _info.max_threads() if n_threads is None else int(n_threads)
    return max(1, min(n, max_n_threads(), work))


def check_random_state(random_state: Any) -> np.random.Generator:
    """A ``numpy.random.Generator`` from None, an int seed in [0, 2**32), a Generator (used
    as is) or a legacy ``RandomState`` (a Generator seeded from it).

    Raises
    ------
    TypeError, ValueError
        Naming ``random_state``.

    Examples
    --------
    >>> check_random_state(0).integers(10) == check_random_state(0).integers(10)
    True
    """
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31 - 1))
    if isinstance(random_state, (bool, np.bool_)) or \
            not isinstance(random_state, numbers.Integral):
        raise TypeError("random_state must be None, an int, a numpy Generator or a "
                        f"RandomState, got {random_state!r}")
    if not 0 <= int(random_state) < 2**32:
        raise ValueError(f"random_state must be an int in [0, 2**32), got {random_state!r}")
    return np.random.default_rng(int(random_state))


def make_optimizer(name: str, params: Any, lr: float,
                   n_threads: Optional[int], optimizer_params: Optional[Dict[str, Any]] = None,
                   **fixed: Any):
    """The sparseopt optimizer called ``name`` over ``params`` (a list or dict of arrays).

    ``optimizer_params`` are the user's extra settings; they may not set what the model itself
    decides (``params``, ``lr``, ``n_threads`` and the keys of ``fixed``). ``fixed`` holds the
    model's own settings (e.g. ``nonfinite="ignore"``); ``optimizer="sgd"`` takes none of the
    user's.
    """
    from . import _validation as V
    from .optim import SGD, Adagrad, Adam, RMSprop

    V.check_choice("optimizer", name, OPTIMIZERS)
    if optimizer_params is not None and not isinstance(optimizer_params, dict):
        raise TypeError(f"optimizer_params must be a dict or None, got "
                        f"{type(optimizer_params).__name__}")
    kw = dict(optimizer_params or {})
    for bad in ("params", "lr", "n_threads") + tuple(fixed):
        if bad in kw:
            raise ValueError(f"optimizer_params may not set {bad!r}: the model sets it")
    if name == "sgd":
        if kw:
            raise ValueError(f"optimizer='sgd' takes no optimizer_params, got {sorted(kw)}")
        sgd_fixed = {k: v for k, v in fixed.items() if k in ("nonfinite", "duplicates")}
        return SGD(params, lr=lr, n_threads=n_threads, **sgd_fixed)
    cls = {"adam": Adam, "adagrad": Adagrad, "rmsprop": RMSprop}[name]
    return cls(params, lr=lr, n_threads=n_threads, **fixed, **kw)
