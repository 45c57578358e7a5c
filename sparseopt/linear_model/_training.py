"""The parts of one training call of ``SGDClassifier``/``SGDRegressor``, one job each.

``BaseSGD._run`` (``_base.py``) is the loop that uses them:

* ``StepSizes``  the learning-rate schedule, for one step and for a run of steps (the
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


class StepSizes:
    """Step ``t`` (1-based, counted over the estimator's life) uses ``lr / t**power_t``:
    constant for ``power_t == 0`` (the adaptive optimizers), scikit-learn's 'invscaling'
    otherwise (plain SGD needs a decaying step to settle)."""

    def __init__(self, lr: float, power_t: float) -> None:
        self.lr = lr
        self.power_t = power_t

    def at(self, t: int) -> float:
        """The step size of step ``t``."""
        if self.power_t == 0.0:
            return self.lr
        return self.lr / float(t) ** self.power_t

    def run(self, first: int, n: int) -> np.ndarray:
        """The step sizes of steps ``first .. first + n - 1`` (float64)."""
        if self.power_t == 0.0:
            return np.full(n, self.lr)
        return self.lr / np.arange(first, first + n, dtype=np.float64) ** self.power_t


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
