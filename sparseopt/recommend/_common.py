"""Checks only the recommenders need: the hyper-parameters every recommender shares, and the
fitted tables and attributes their kernels read.

Input rules (sparse structure, ids, counts, flags, thread counts) live in
``sparseopt._validation``; random state in ``sparseopt._utils``; the rules of an interaction
matrix in ``_interactions``; this module holds the rules that only make sense for models
trained as embedding tables. No scikit-learn here.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from .. import _validation as V
from ..optim import OPTIMIZERS

__all__ = ["check_training_params", "check_table", "check_recorded", "check_trains"]


def check_training_params(est: Any) -> Dict[str, Any]:
    """The hyper-parameters every recommender has, checked, under the names the training
    code uses: ``k`` (``n_components``), ``optimizer``, ``lr`` (``learning_rate``),
    ``alpha``, ``n_epochs``, ``batch_size``, ``init_std``, ``n_threads``, ``verbose``.

    A model adds its own parameters to the returned dict; each raises ``ValueError`` /
    ``TypeError`` naming the parameter.
    """
    return dict(
        k=V.check_positive_int("n_components", est.n_components),
        optimizer=V.check_choice("optimizer", est.optimizer, OPTIMIZERS),
        lr=V.check_real("learning_rate", est.learning_rate, low_open=True),
        alpha=V.check_real("alpha", est.alpha),
        n_epochs=V.check_positive_int("n_epochs", est.n_epochs),
        batch_size=V.check_positive_int("batch_size", est.batch_size),
        init_std=V.check_real("init_std", est.init_std),
        n_threads=V.check_n_threads(est.n_threads),
        verbose=V.check_verbose(est.verbose),
    )


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
