"""What the scikit-learn-style models share: input validation in front of scikit-learn's own,
the guard every ``fit`` / ``partial_fit`` runs under, and the early-stopping rule.

Requires scikit-learn (the ``[sklearn]`` extra); importing :mod:`sparseopt` does not import it.
"""
from __future__ import annotations

import functools
import threading
import warnings
import weakref
from typing import Any, Callable, Optional, TypeVar

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

from . import _validation as V

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - scikit-learn 1.4 / 1.5
    _sk_validate_data = None

__all__ = ["validate_data", "fit_guard", "serialised", "model_lock", "Stopping"]


def validate_data(est: Any, X: Any = "no_validation", y: Any = "no_validation", **kwargs: Any):
    """scikit-learn's ``validate_data`` (``BaseEstimator._validate_data`` before 1.6), after
    our structural check of sparse input.

    scikit-learn converts sparse formats and sums duplicates with SciPy routines that trust
    the index arrays, so a malformed matrix must be refused before it gets there.
    """
    for name, arr in (("X", X), ("y", y)):
        if sp.issparse(arr):
            V.check_sparse_structure(name, arr)
    if _sk_validate_data is not None:
        return _sk_validate_data(est, X, y, **kwargs)
    return est._validate_data(X, y, **kwargs)  # pragma: no cover


# One lock per model object, kept outside the object so that it never reaches pickles,
# clones or get_params, and goes away with the object.
_LOCKS: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(est: Any) -> threading.RLock:
    """The lock that serialises ``fit``-like calls on ``est`` (re-entrant: ``fit`` may call
    ``partial_fit``)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(est)
        if lock is None:
            lock = _LOCKS[est] = threading.RLock()
        return lock


F = TypeVar("F", bound=Callable[..., Any])


def fit_guard(method: F) -> F:
    """Run a training method one call at a time per model, and undo its attribute changes
    if it raises an exception (an interrupt keeps the partly trained model, as scikit-learn does).

    Two threads fitting one model would resize the tables the other's kernels are writing;
    the second call waits instead. A call that fails (bad input, a parameter refused) leaves
    the model's attributes as they were: the model's ``__dict__`` is restored from a shallow
    snapshot, so every check must run before tables are updated in place.
    """
    @functools.wraps(method)
    def guarded(self, *args: Any, **kwargs: Any):
        with model_lock(self):
            before = dict(self.__dict__)
            try:
                return method(self, *args, **kwargs)
            except Exception:
                self.__dict__.clear()
                self.__dict__.update(before)
                raise
    return guarded  # type: ignore[return-value]


def serialised(method: F) -> F:
    """Run a method under the model's lock: a prediction never sees a model that a ``fit`` in
    another thread has half replaced."""
    @functools.wraps(method)
    def locked(self, *args: Any, **kwargs: Any):
        with model_lock(self):
            return method(self, *args, **kwargs)
    return locked  # type: ignore[return-value]


class Stopping:
    """Training stops when a value to minimise (the epoch's objective, or minus the
    validation score) has not improved on the best so far by ``tol`` for
    ``n_iter_no_change`` epochs in a row; ``tol=None`` never stops."""

    def __init__(self, tol: Optional[float], n_iter_no_change: int) -> None:
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.best = np.inf
        self.no_improvement = 0

    def update(self, value: float) -> None:
        """Record one epoch's value."""
        if self.tol is not None and value > self.best - self.tol:
            self.no_improvement += 1
        else:
            self.no_improvement = 0
        self.best = min(self.best, value)

    @property
    def converged(self) -> bool:
        return self.no_improvement >= self.n_iter_no_change

    def warn_if_unconverged(self, epochs: int, max_iter: int) -> None:
        """ConvergenceWarning when ``max_iter`` (> 1) epochs ran without convergence."""
        if max_iter > 1 and epochs == max_iter and self.tol is not None \
                and not self.converged:
            warnings.warn("Maximum number of iteration reached before convergence. Consider "
                          "increasing max_iter to improve the fit.", ConvergenceWarning)
