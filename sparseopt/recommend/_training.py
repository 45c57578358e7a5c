"""The epoch loop every recommender runs (``BaseRecommender`` and the factorisation machines):
time each pass, record it, print it, stop early, and turn a diverged optimizer step into an
error that says what to do.

Each model keeps its own bookkeeping (``history_`` for the user x item models, ``n_iter_``
and ``loss_curve_`` for the factorisation machines) in the ``record`` callback it passes to
:func:`run_epochs`; what is shared is the order of the steps and the rules below.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional, Sequence, TypeVar

from .._sklearn import Stopping

__all__ = ["run_epochs", "Stopping", "optimizer_step", "print_epoch"]

T = TypeVar("T")


def run_epochs(n_epochs: int, one_epoch: Callable[[], T], n_rows: int,
               record: Callable[[T, float, float], float],
               stopping: Optional[Stopping] = None) -> None:
    """Run up to ``n_epochs`` passes.

    Each pass is ``one_epoch()``, timed alone; then ``record(result, seconds, rows_per_s)``
    updates the model (and may evaluate or print: that time is not the epoch's) and returns
    the value early stopping watches (the epoch's loss). With ``stopping``, the loop ends
    once ``stopping.converged``; without, it runs all ``n_epochs``.
    """
    for _ in range(n_epochs):
        t0 = time.perf_counter()
        result = one_epoch()
        seconds = time.perf_counter() - t0
        rows_per_s = n_rows / seconds if seconds > 0 else float("inf")
        value = record(result, seconds, rows_per_s)
        if stopping is not None:
            stopping.update(value)
            if stopping.converged:
                break


def optimizer_step(optimizer: Any, grads: Any, model: str, epoch: int) -> None:
    """``optimizer.step(grads)``; a non-finite gradient (the optimizer refuses it before any
    row changes) becomes a ``FloatingPointError`` that names the model, the epoch and the
    learning rate to lower."""
    try:
        optimizer.step(grads)
    except FloatingPointError as exc:
        raise FloatingPointError(
            f"{model} diverged (non-finite gradient) in epoch {epoch}; lower learning_rate "
            f"(now {optimizer.lr})") from exc


def print_epoch(model: str, epoch: int, fields: Sequence[str]) -> None:
    """One ``verbose`` line, ``[Model] epoch   N  field  field ...``, flushed to stdout so it
    shows while training runs."""
    print(f"[{model}] " + "  ".join([f"epoch {epoch:3d}", *fields]), file=sys.stdout,
          flush=True)
