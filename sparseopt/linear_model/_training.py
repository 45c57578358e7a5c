"""The parts of one training call of ``SGDClassifier``/``SGDRegressor``, one job each.

``BaseSGD._run`` (``_base.py``) is the loop that uses them:

* ``Schedule``   the learning-rate schedule, for one step and for a run of steps (the
                 lazy penalty's tables need the rates of the steps ahead);
* ``Batches``    the visiting order, the batch boundaries and the kernel bundles of the call;
                 ``gradient`` runs the fused kernel on one batch;
* ``Progress``   what ``verbose`` prints.

The lazy penalty and averaging have their own home, ``_lazy.LazyRegularizer``; the
convergence test (``Stopping``) is shared with the recommenders in ``sparseopt._sklearn``.
"""
from __future__ import annotations

import time
from typing import Iterator, Optional, Tuple

import numpy as np

from .._kernels import _linear


SCHEDULES = ("constant", "optimal", "invscaling", "adaptive")
# learning_rate="adaptive" (as scikit-learn): when the convergence test fails, the rate is
# divided by ADAPTIVE_DIVISOR and training goes on, unless it is already below ADAPTIVE_MIN.
ADAPTIVE_DIVISOR = 5.0
ADAPTIVE_MIN = 1e-6


class Schedule:
    """The rate ``eta_k`` of step ``k`` (1-based, counted since ``fit`` started; ``partial_fit``
    continues the count), scikit-learn's schedules with a step in place of a sample:

    * ``'constant'``: ``eta0``;
    * ``'optimal'``: ``1 / (alpha * (t0 + k - 1))`` (``Schedule.optimal``);
    * ``'invscaling'``: ``eta0 / k**power_t``;
    * ``'adaptive'``: ``eta0``, divided by 5 each time the convergence test fails
      (``plateau``).

    For ``optimizer='sgd'`` ``eta_k`` is the step size of the batch-mean gradient; for the
    adaptive optimizers it is their ``lr`` (see ``BaseSGD._schedule``).
    """

    def __init__(self, kind: str, eta0: float, power_t: float = 0.0, alpha: float = 0.0,
                 t0: float = 1.0) -> None:
        self.kind = kind
        self.eta0 = float(eta0)
        self.eta = float(eta0)  # the current rate of 'constant' and 'adaptive'
        self.power_t = float(power_t)
        self.alpha = float(alpha)
        self.t0 = float(t0)

    @classmethod
    def optimal(cls, alpha: float, eta_first: float) -> "Schedule":
        """``'optimal'``: ``eta_k = 1 / (alpha * (t0 + k - 1))`` with ``t0 = 1 / (alpha *
        eta_first)``, so that the first step has the rate ``eta_first`` (Bottou's heuristic
        picks it from the loss; see ``BaseSGD._schedule``)."""
        return cls("optimal", eta_first, alpha=alpha, t0=1.0 / (alpha * eta_first))

    @property
    def lr(self) -> float:
        """The base rate (``eta0``, the current rate of 'adaptive', the first of 'optimal')."""
        return self.eta

    def at(self, k: int) -> float:
        """The rate of step ``k``."""
        if self.kind == "optimal":
            return 1.0 / (self.alpha * (self.t0 + k - 1))
        if self.kind == "invscaling":
            return self.eta0 / float(k) ** self.power_t
        return self.eta

    def run(self, first: int, n: int) -> np.ndarray:
        """The rates of steps ``first .. first + n - 1`` (float64), each as ``at`` gives it."""
        k = np.arange(first, first + n, dtype=np.float64)
        if self.kind == "optimal":
            return 1.0 / (self.alpha * (self.t0 + k - 1))
        if self.kind == "invscaling":
            return self.eta0 / k ** self.power_t
        return np.full(n, self.eta)

    def plateau(self) -> bool:
        """The convergence test failed: ``'adaptive'`` divides its rate by 5 and returns True
        (training goes on) while the rate is above 1e-6; every schedule else returns False
        (training stops)."""
        if self.kind != "adaptive" or not self.eta > ADAPTIVE_MIN:
            return False
        self.eta /= ADAPTIVE_DIVISOR
        return True


class Batches:
    """The mini-batches of one training call and the gradient kernel's bundles for them.

    Parameters
    ----------
    Xk : (indptr, indices, data)
        ``_base.kernel_csr`` of the checked training data.
    y, sample_weight : ndarray of float64
        Kernel targets and normalised weights, one per row of X.
    order : ndarray of int64
        The training samples; shuffled in place between epochs.
    batch_size : int
        Samples per step (the last step of an epoch may have fewer).
    model : _linear.LinearModel
        The weight table and loss.
    n_threads : int
        Team of the kernel's per-sample loop; ``min_row_work`` its threshold for the row loop.
    flush_threads : int
        Team of the lazy penalty's catch-up of every row at the end of a segment.
    """

    def __init__(self, Xk: Tuple[np.ndarray, np.ndarray, np.ndarray], y: np.ndarray,
                 sample_weight: np.ndarray, order: np.ndarray, batch_size: int,
                 model: _linear.LinearModel, n_threads: int, flush_threads: int,
                 min_row_work: int) -> None:
        indptr, indices, data = Xk
        W = model.W
        self.order = order
        self.n_samples = order.shape[0]
        self.size = batch_size
        self.steps = -(-self.n_samples // batch_size)
        self._starts = np.arange(0, self.n_samples, batch_size)
        self._row_nnz = np.diff(indptr)
        self.model = model
        self.flush_threads = flush_threads
        self.samples = _linear.CSRSamples(indptr, indices, data, y, sample_weight, order)
        self.scratch = _linear.BatchScratch(W.shape[0], W.shape[1], batch_size, W.dtype,
                                            n_threads, min_row_work)
        self._kernel = _linear.gradient_kernel(W.dtype, indices.dtype)

    def new_epoch(self, rng: Optional[np.random.Generator]) -> None:
        """Shuffle the order with ``rng`` (None: keep it) and make room in the scratch for
        the largest batch of the new order."""
        if rng is not None:
            rng.shuffle(self.order)
        self.scratch.reserve(int(np.add.reduceat(self._row_nnz[self.order],
                                                 self._starts).max()))

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        """``(start, stop)`` of every batch of an epoch: ``order[start:stop]``."""
        for start in range(0, self.n_samples, self.size):
            yield start, min(start + self.size, self.n_samples)

    def gradient(self, start: int, stop: int,
                 penalty: _linear.LazyPenalty) -> Tuple[int, float]:
        """Run the kernel on one batch: ``(m, loss_sum)``, the gradient rows being
        ``scratch.rows[:m]`` and ``scratch.G[:m]``."""
        return self._kernel(self.samples, self.model, self.scratch, penalty, start, stop)


class Progress:
    """The lines ``verbose`` prints (scikit-learn's format); silent when it is 0."""

    def __init__(self, verbose) -> None:
        self.verbose = bool(verbose)
        self._t0 = time.perf_counter()

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def epoch(self, epoch: int) -> None:
        if self.verbose:
            print(f"-- Epoch {epoch}")

    def validation(self, mean_loss: float, score: float, t: int) -> None:
        if self.verbose:
            print(f"Avg. loss: {mean_loss:.6f}, validation score: {score:.6f}, T: {t}")

    def objective(self, Wf: np.ndarray, mean_loss: float, objective: float, t: int) -> None:
        """``Wf``: the feature rows of the weight table (true weights)."""
        if self.verbose:
            print(f"Norm: {np.linalg.norm(Wf):.2f}, NNZs: {np.count_nonzero(Wf)}, T: {t}, "
                  f"Avg. loss: {mean_loss:.6f}, Objective: {objective:.6f}")

    def epoch_done(self) -> None:
        if self.verbose:
            print(f"Total training time: {self._elapsed():.2f} seconds.")

    def converged(self, epoch: int) -> None:
        if self.verbose:
            print(f"Convergence after {epoch} epochs took {self._elapsed():.2f} seconds")
