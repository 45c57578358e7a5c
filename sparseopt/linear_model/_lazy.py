"""Lazy, exact elastic-net penalty and weight averaging for feature-major weights.

Semantics
---------
The penalty is *decoupled* from the optimizer, as AdamW decouples weight decay (Loshchilov &
Hutter, 2019), and applied as a proximal step (FOBOS, Duchi & Singer, 2009): after the update
of every optimizer step ``s`` with learning rate ``eta_s``, **every** coefficient (never the
intercept) is mapped by

    w <- sign(w) * max(|w| - eta_s * l1, 0) / (1 + eta_s * l2)

with ``l1 = alpha * l1_ratio`` and ``l2 = alpha * (1 - l1_ratio)``: L1 soft-thresholding, then
the exact proximal operator of ``l2/2 * w**2``. Nothing touches the whole table per step; the
result equals, up to rounding, applying the map to every coefficient at every step. Two exact
implementations:

* **L2 only, no averaging** -- the weight-scaling trick (as scikit-learn's ``WeightVector``):
  the table holds ``V`` with true weights ``wscale * V``. A step's shrink is ``wscale *= c``
  (``c = 1/(1 + eta*l2)``) plus ``V_intercept /= c`` for the unpenalised intercept, and the
  optimizer runs with learning rate ``eta / wscale`` so that its update of the true weights is
  the one it computes from the true gradient (every update rule here is linear in its learning
  rate). The table is multiplied out (``wscale = 1``) at the end of every epoch and call, and
  whenever ``wscale`` falls below ``MIN_SCALE``.
* **L1, elastic net or averaging** -- catch-up when touched: between two touches a coefficient
  only receives the maps above, which compose in closed form. With ``Q_s = prod_{u<=s} c_u`` and
  ``A_s = sum_{u<=s} eta_u l1 / Q_{u-1}`` a coefficient current at step ``p`` is, at ``s > p``,

      |w_s| = max(0, |w_p| - Q_p (A_s - A_p)) * Q_s / Q_p        (sign kept; 0 stays 0)

  so the kernel brings the rows of a mini-batch up to date before computing their margins
  (``_kernels/_linear._catch_up``) and every row is brought up to date at the end of each
  *segment* of steps. Averaging (``average``) keeps the sum of each coefficient's values at the
  end of every step since averaging started; between touches that sum has a closed form too
  (cumulative sums of ``Q`` and ``A*Q``, and a binary search for the step where L1 reaches 0).

A segment is at most one epoch, and short enough that ``Q`` stays above
``exp(-MAX_LOG_DECAY)`` (``1/Q`` can neither overflow nor lose precision); its tables are
float64, built here with NumPy for any learning-rate schedule.

The kernels see this bookkeeping through one ``_kernels._linear.LazyPenalty`` bundle, bound
by ``bind`` at the start of every training call (after the estimator has checked the arrays
against its weight table) and kept current here: ``before_step`` binds a new segment's tables
and sets the step's scalars, then hands the bundle to the gradient kernel.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .._kernels import _linear

P = _linear.PENALTY_FLAGS

# A segment ends before the L2 factor of its tables falls below exp(-MAX_LOG_DECAY).
MAX_LOG_DECAY = 30.0
# The weight-scaling trick multiplies the table out when the scale falls below this.
MIN_SCALE = 1e-6


def _no_segment():
    """The tables of a segment of zero steps: ``Q[0] = 1`` (an empty product), sums 0."""
    return np.ones(1), np.zeros(1), np.ones(1), np.zeros(1)


class LazyRegularizer:
    """Bookkeeping of the lazy penalty and average of one weight table.

    Parameters
    ----------
    n_rows, n_outputs : int
        Shape of the weight table (rows ``>= n_feat`` are intercepts and never penalised).
    l1, l2 : float
        ``alpha * l1_ratio`` and ``alpha * (1 - l1_ratio)``.
    average_from_sample : int
        0: no averaging; else averaging starts at the step during which the
        ``average_from_sample``-th sample is seen (scikit-learn's ``average``).
    """

    def __init__(self, n_rows: int, n_outputs: int, l1: float, l2: float,
                 average_from_sample: int) -> None:
        self.l1 = float(l1)
        self.l2 = float(l2)
        self.average_from_sample = int(average_from_sample)
        # the weight-scaling trick covers the default (L2 only, no averaging)
        self.scaled = self.l2 > 0 and self.l1 == 0 and self.average_from_sample == 0
        self.wscale = 1.0
        flags = 0
        if not self.scaled:
            flags = (P["L1"] if self.l1 > 0 else 0) | (P["L2"] if self.l2 > 0 else 0)
        if self.average_from_sample > 0:
            flags |= P["AVG"]
        self.flags = flags
        # the running sum of the average and the step each row is current at: only when
        # the kernels need them (flags), else absent
        self.avg = (np.zeros((n_rows, n_outputs), dtype=np.float64) if flags & P["AVG"]
                    else None)
        self.pen_step = np.zeros(n_rows, dtype=np.int64) if flags else None
        self.n_avg = 0            # steps averaged so far
        self.avg_start: Optional[int] = None  # global step of the first averaged step
        self.kernel_state: Optional[_linear.LazyPenalty] = None  # see bind()
        self._reset_tables()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["kernel_state"] = None  # a view of the arrays above, bound again by bind()
        return state

    def _reset_tables(self) -> None:
        self.base = 0             # global step at which the current segment starts
        self.t = 0                # steps done in the current segment
        self.length = 0           # steps the current segment's tables cover
        self.Q, self.cum_a, self.cum_q, self.cum_aq = _no_segment()

    def bind(self) -> None:
        """Bind the kernels' view of this bookkeeping (``kernel_state``). Every training
        call does it first, after the estimator checked the arrays against its weight table,
        so the kernels never read an array through a view older than that check."""
        state = _linear.LazyPenalty(self.flags, self.pen_step, self.avg)
        if self.flags and self.length > 0:
            state.set_segment(self.Q, self.cum_a, self.cum_q, self.cum_aq)
        state.wscale = self.wscale
        self.kernel_state = state

    # -- before a step ---------------------------------------------------------------------

    def before_step(self, global_step: int, etas: Callable[[int, int], np.ndarray],
                    steps_wanted: int, seen_before: int, batch: int) -> _linear.LazyPenalty:
        """Start a new segment when the current one is used up (``etas(first, n)`` gives the
        learning rates of global steps ``first .. first + n - 1``; ``global_step`` = steps taken
        so far), and start averaging if this step's batch reaches the threshold. Returns the
        kernels' bundle, current for this step."""
        if (self.average_from_sample > 0 and self.avg_start is None
                and seen_before + batch >= self.average_from_sample):
            self.avg_start = global_step + 1
        if self.flags and self.t >= self.length:
            self._new_segment(global_step, etas, steps_wanted)
        state = self.kernel_state
        state.step = self.step_index()
        state.avg_from = self.avg_from()
        state.wscale = self.wscale
        return state

    def _new_segment(self, global_step: int, etas: Callable[[int, int], np.ndarray],
                     steps_wanted: int) -> None:
        n = max(1, int(steps_wanted))
        eta = np.asarray(etas(global_step + 1, n), dtype=np.float64)
        decay = np.log1p(eta * self.l2) if self.l2 > 0 else np.zeros(n)
        logq = np.zeros(n + 1)
        np.cumsum(-decay, out=logq[1:])
        if logq[-1] < -MAX_LOG_DECAY:
            n = max(1, int(np.searchsorted(-logq, MAX_LOG_DECAY, side="right")) - 1)
            logq, eta = logq[: n + 1], eta[:n]
        q = np.exp(logq)
        cum_a = np.zeros(n + 1)
        if self.l1 > 0:
            np.cumsum(eta * self.l1 / q[:-1], out=cum_a[1:])
        self.Q, self.cum_a = q, cum_a
        self.cum_q = np.cumsum(q)
        self.cum_aq = np.cumsum(cum_a * q)
        self.base, self.t, self.length = global_step, 0, n
        self.kernel_state.set_segment(self.Q, self.cum_a, self.cum_q, self.cum_aq)

    def lr_factor(self) -> float:
        """Multiplier of the optimizer's learning rate for this step (1 / wscale)."""
        return 1.0 / self.wscale

    def step_index(self) -> int:
        """This step's index in the current segment's tables (the kernel catches up to it -1)."""
        return self.t + 1

    def avg_from(self) -> int:
        """First averaged step, relative to the current segment."""
        if self.avg_start is None:
            return _linear.AVERAGE_NOT_STARTED
        return max(1, self.avg_start - self.base)

    # -- after a step ----------------------------------------------------------------------

    def after_step(self, model: _linear.LinearModel, eta: float, global_step: int,
                   n_threads: int) -> None:
        """Apply this step's penalty (scaled mode) or advance the segment (``global_step`` =
        steps taken, this one included)."""
        if self.avg_start is not None:
            self.n_avg = global_step - self.avg_start + 1
        if self.scaled:
            c = 1.0 / (1.0 + eta * self.l2)
            self.wscale *= c
            W = model.W
            if W.shape[0] > model.n_feat:  # the intercept row is not penalised
                W[model.n_feat:] /= c
            if self.wscale < MIN_SCALE:
                self.flush(model, n_threads)
            return
        self.t += 1
        if self.flags and self.t >= self.length:
            self.flush(model, n_threads)

    def flush(self, model: _linear.LinearModel, n_threads: int) -> None:
        """Bring every row up to the last step (true weights in ``model.W``) and restart."""
        if self.scaled:
            if self.wscale != 1.0:
                W = model.W
                W *= self.wscale
                self.wscale = 1.0
            return
        if self.flags and self.t > 0:
            state = self.kernel_state
            state.avg_from = self.avg_from()
            _linear.catch_up_rows(model, state, self.t, n_threads)
        self._reset_tables()

    def penalty(self, W: np.ndarray, n_feat: int) -> float:
        """``l2/2 ||w||^2 + l1 |w|_1`` of the true feature weights."""
        Wf = W[:n_feat]
        val = 0.0
        if self.l2 > 0:
            val += 0.5 * self.l2 * self.wscale ** 2 * float(np.vdot(Wf, Wf))
        if self.l1 > 0:
            val += self.l1 * self.wscale * float(np.abs(Wf).sum())
        return val

    def averaged(self, W: np.ndarray) -> Optional[np.ndarray]:
        """The averaged weights (after ``flush``), or None before averaging has started."""
        if not (self.flags & P["AVG"]) or self.n_avg <= 0:
            return None
        return (self.avg / self.n_avg).astype(W.dtype)
