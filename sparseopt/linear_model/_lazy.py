"""Lazy, exact elastic-net penalty and weight averaging for feature-major weights.

Semantics (``docs/semantics.md``, "Estimators")
----------------------------------------------
The estimators minimise scikit-learn's objective, the mean sample-weighted loss plus
``alpha * (l1_ratio * |w|_1 + (1 - l1_ratio)/2 * |w|_2**2)``, with ``l1 = alpha * l1_ratio``
and ``l2 = alpha * (1 - l1_ratio)``. The penalty is a proximal step (FOBOS, Duchi & Singer,
2009; with an adaptive optimizer the composite mirror-descent step of Duchi, Hazan & Singer,
2011): after the update of every optimizer step ``s`` with rate ``eta_s``, **every**
coefficient (never the intercept) follows the penalty's flow

    dw/dtau = -h * (l1 * sign(w) + l2 * w)   for tau in [0, eta_s]   (0 stays 0),

    i.e.  |w| <- max(0, |w| e^{-x} - (l1/l2)(1 - e^{-x})),  x = l2 * h * eta_s
          (|w| <- max(0, |w| - l1 * h * eta_s) without L2).

``h`` is the step multiplier the optimizer gives that coefficient: 1 for plain SGD,
``1 / (sqrt(G) + eps)`` for Adagrad, ``1 / (sqrt(v_hat) + eps)`` for Adam and
``1 / (sqrt(v) + eps)`` for RMSprop, from the state after the step, and 0 while that second
moment is 0 (the optimizer has given the coefficient no step size yet; no penalty, no debt).
The penalty thus moves each coefficient on the scale the loss gradient moves it, and the fixed
points are those of the objective: ``alpha`` means what it means in scikit-learn whatever the
optimizer. (A penalty decoupled from the optimizer, as AdamW decouples weight decay, weighs
``alpha`` against each feature's gradient scale: far too weakly on rare features.) With plain
SGD and L2 the step's own update is not shrunk by its step's L2, ``w <- c w - eta g`` with
``c = exp(-eta * l2)``, as in scikit-learn (``lr_factor``).

The L1 part is scikit-learn's *cumulative* L1 penalty (Tsuruoka, Tsujii & Ananiadou, 2009):
each coefficient keeps two debts, what it owes when positive and what it owes when negative.
Both grow by the L1 of every step (``l1 * h * eta_s``); the L1 a coefficient takes is paid from
its sign's debt and added to the other's; and at the start of a step's penalty a non-zero
coefficient first pays its sign's debt, as far as it goes. A coefficient held at 0 thus owes
the L1 it could not take, and a noisy update that pushes it off 0 is taken back: rarely
informative coefficients stay exactly 0, as scikit-learn's do. The debts start at 0 in every
training call, as in scikit-learn.

Nothing touches the whole table per step; the result equals, up to rounding, applying the
penalty to every coefficient at every step. The optimizers are lazy ("frozen"): a row they do
not update keeps its state, so ``h`` is constant between two updates of a row, only the first
missed step can find a debt to pay (after it a coefficient is 0 or owes nothing), and the flows
of the steps in between compose into one flow for the sum of their rates. Three exact
implementations:

* **L2 only, plain SGD, no averaging** -- the weight-scaling trick (as scikit-learn's
  ``WeightVector``): the table holds ``V`` with true weights ``wscale * V``. A step's shrink is
  ``wscale *= c`` plus ``V_intercept /= c`` for the unpenalised intercept, and the optimizer
  runs with learning rate ``eta / (wscale * c)`` so that its update of the true weights is the
  one it computes from the true gradient. The table is multiplied out (``wscale = 1``) at the
  end of every epoch and call, and whenever ``wscale`` falls below ``MIN_SCALE``.
* **plain SGD otherwise (h = 1 everywhere)** -- catch-up when touched, with tables: with
  ``E_s = sum_{u<=s} eta_u``, ``Q_s = exp(-l2 E_s)`` and ``A_s = l1 (1/Q_s - 1)/l2`` (``l1 E_s``
  without L2), a coefficient current at step ``p`` (its debt paid) is, at ``s > p``,

      |w_s| = max(0, |w_p| - Q_p (A_s - A_p)) * Q_s / Q_p        (sign kept; 0 stays 0)

  so the kernel brings the rows of a mini-batch up to date before computing their margins
  (``_kernels/_linear._catch_up``) and every row is brought up to date at the end of each
  *segment* of steps. Averaging (``average``) keeps the sum of each coefficient's values at the
  end of every step since averaging started; between touches that sum has a closed form too
  (cumulative sums of ``Q`` and ``A*Q``, and a binary search for the step where L1 reaches 0).
* **adaptive optimizers** -- the same catch-up with the flow for ``h * (E_q - E_p)``, ``h``
  read by the kernel from the optimizer's state (``set_preconditioner``); with averaging the
  sum adds the value after each missed step (``h`` differs per coefficient, so no table can
  sum the exponentials): O(steps missed) per caught-up coefficient.

A segment is at most one epoch, and short enough that ``Q`` stays above
``exp(-MAX_LOG_DECAY)`` (``1/Q`` can neither overflow nor lose precision); its tables are
float64, built here with NumPy for any learning-rate schedule.

The kernels see this bookkeeping through one ``_kernels._linear.LazyPenalty`` bundle, bound
by ``bind`` at the start of every training call (after the estimator has checked the arrays
against its weight table) and kept current here: ``before_step`` binds a new segment's tables
and sets the step's scalars, then hands the bundle to the gradient kernel. Between training
calls every row is current (each call ends with ``flush``): the per-row steps and the debts
(float64, twice the table's size, with an L1 part) are allocated by ``bind`` and are not
pickled.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from .._kernels import _linear

P = _linear.PENALTY_FLAGS

# A segment ends before the L2 factor of its tables falls below exp(-MAX_LOG_DECAY).
MAX_LOG_DECAY = 30.0
# The weight-scaling trick multiplies the table out when the scale falls below this.
MIN_SCALE = 1e-6
# The smallest L2 factor of a plain SGD step: the coefficients vanish, and 1/Q stays finite
# within a segment (which ends as soon as Q falls below exp(-MAX_LOG_DECAY)).
TINY = 1e-300


def _no_segment():
    """The tables of a segment of zero steps: ``E[0] = 0``, ``Q[0] = 1``, sums 0."""
    return np.zeros(1), np.ones(1), np.zeros(1), np.ones(1), np.zeros(1)


def preconditioner(optimizer) -> Optional[Tuple[str, np.ndarray, Optional[np.ndarray],
                                                 float, float]]:
    """``(kind, S, row_step, eps, beta2)`` for ``LazyPenalty.set_preconditioner``: where the
    step multiplier ``h`` of each coefficient of ``optimizer``'s single parameter lives in its
    state (see the module docstring), or None before its first step (no state yet).

    ``h`` is the factor by which the optimizer multiplies a (momentum of the) gradient, per
    unit of learning rate: ``1 / (sqrt(sum) + eps)`` (Adagrad), ``1 / (sqrt(square_avg) +
    eps)`` (RMSprop, without momentum or centring, as the estimators build it) and
    ``1 / (sqrt(exp_avg_sq / (1 - beta2**row_step)) + eps)`` (Adam, per-row bias correction);
    0 where that second moment is 0.
    """
    name = type(optimizer).__name__
    state = optimizer.state[optimizer._keys[0]]
    group = optimizer.param_groups[0]
    if name == "Adagrad":
        S = state.get("sum")
        return None if S is None else ("sqrt", S, None, float(group["eps"]), 0.0)
    if name == "RMSprop":
        S = state.get("square_avg")
        return None if S is None else ("sqrt", S, None, float(group["eps"]), 0.0)
    if name == "Adam":
        S = state.get("exp_avg_sq")
        if S is None:
            return None
        return ("adam", S, state["row_step"], float(group["eps"]), float(group["betas"][1]))
    raise TypeError(f"no step multipliers are defined for a {name} optimizer")


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
    preconditioned : bool
        The optimizer is adaptive: each coefficient's penalty step carries its step multiplier,
        read from the optimizer's state (``bind``).
    """

    def __init__(self, n_rows: int, n_outputs: int, l1: float, l2: float,
                 average_from_sample: int, preconditioned: bool = False) -> None:
        self.l1 = float(l1)
        self.l2 = float(l2)
        self.average_from_sample = int(average_from_sample)
        self.n_rows = int(n_rows)
        self.n_outputs = int(n_outputs)
        penalised = self.l1 > 0 or self.l2 > 0
        self.preconditioned = bool(preconditioned) and penalised
        # the weight-scaling trick covers plain SGD's default (L2 only, no averaging)
        self.scaled = (self.l2 > 0 and self.l1 == 0 and self.average_from_sample == 0
                       and not self.preconditioned)
        self.wscale = 1.0
        flags = 0
        if not self.scaled:
            flags = (P["L1"] if self.l1 > 0 else 0) | (P["L2"] if self.l2 > 0 else 0)
        if self.preconditioned:
            flags |= P["PRE"]
        if self.average_from_sample > 0:
            flags |= P["AVG"]
        self.flags = flags
        # the running sum of the average: only when the kernels need it (flags), else absent
        self.avg = (np.zeros((n_rows, n_outputs), dtype=np.float64) if flags & P["AVG"]
                    else None)
        self.pen_step: Optional[np.ndarray] = None  # see bind()
        self.debt: Optional[np.ndarray] = None      # see bind()
        self.n_avg = 0            # steps averaged so far
        self.avg_start: Optional[int] = None  # global step of the first averaged step
        self.kernel_state: Optional[_linear.LazyPenalty] = None  # see bind()
        self._optimizer = None    # whose state gives the multipliers (preconditioned)
        self.live_rows: Optional[np.ndarray] = None  # see bind()
        self._reset_tables()

    def __getstate__(self):
        state = self.__dict__.copy()
        # views of arrays held elsewhere, bound again by bind()
        state.update(kernel_state=None, _optimizer=None, debt=None, live_rows=None)
        if self.t == 0:  # between calls: every row is current, pen_step is all zeros
            state["pen_step"] = None
        return state

    def _reset_tables(self) -> None:
        self.base = 0             # global step at which the current segment starts
        self.t = 0                # steps done in the current segment
        self.length = 0           # steps the current segment's tables cover
        self.E, self.Q, self.cum_a, self.cum_q, self.cum_aq = _no_segment()

    def bind(self, optimizer=None, live_rows: Optional[np.ndarray] = None) -> None:
        """Bind the kernels' view of this bookkeeping (``kernel_state``) at the start of a
        training call, after the estimator checked the arrays against its weight table, so the
        kernels never read an array through a view older than that check. ``optimizer``
        (preconditioned penalty) is the one training the table: its state is bound as soon as
        it exists (after its first step).

        ``live_rows`` (int64, strictly increasing): the rows the call may touch or find
        non-zero, when the caller knows them; every other row is zero with no optimizer state
        and stays so, and ``flush`` brings only these up to date (O(rows), not O(table))."""
        self.live_rows = live_rows
        if self.flags and self.pen_step is None:
            self.pen_step = np.zeros(self.n_rows, dtype=np.int64)
        # the L1 debt starts at 0 in every call, as scikit-learn's cumulative penalty does
        self.debt = (np.zeros((self.n_rows, 2 * self.n_outputs)) if self.flags & P["L1"]
                     else None)
        state = _linear.LazyPenalty(self.flags, self.pen_step, self.avg, self.l1, self.l2,
                                    self.debt)
        if self.flags and self.length > 0:
            state.set_segment(self.Q, self.cum_a, self.cum_q, self.cum_aq, self.E)
        state.wscale = self.wscale
        self.kernel_state = state
        self._optimizer = optimizer if self.preconditioned else None
        self._bind_preconditioner()

    def unbind(self) -> None:
        """The end of a training call (every row current): release the kernels' view and the
        per-call arrays (per-row steps, L1 debts), which ``bind`` makes again."""
        self.kernel_state = None
        self._optimizer = None
        self.debt = None
        self.live_rows = None
        if self.t == 0:
            self.pen_step = None

    def _bind_preconditioner(self) -> bool:
        """Hand the kernels the optimizer state that gives the multipliers (True once bound);
        before the optimizer's first step there is none, and nothing to catch up either."""
        state = self.kernel_state
        if self._optimizer is None or state.precond:
            return True
        found = preconditioner(self._optimizer)
        if found is None:
            return False
        kind, S, row_step, eps, beta2 = found
        state.set_preconditioner(kind, S, row_step, eps, beta2)
        return True

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
        E = np.zeros(n + 1)
        np.cumsum(eta, out=E[1:])
        logq = np.zeros(n + 1)
        if self.preconditioned:  # the flow: only E is read
            logq[1:] = -self.l2 * E[1:]
        elif self.l2 > 0:  # plain SGD scales by c = 1 - eta*l2 (0 at the least)
            np.cumsum(np.log(np.maximum(1.0 - eta * self.l2, TINY)), out=logq[1:])
        if logq[-1] < -MAX_LOG_DECAY:
            n = max(1, int(np.searchsorted(-logq, MAX_LOG_DECAY, side="right")) - 1)
            logq, E, eta = logq[: n + 1], E[: n + 1], eta[:n]
        q = np.exp(logq)
        cum_a = np.zeros(n + 1)
        if self.l1 > 0:
            np.cumsum(eta * self.l1 / q[1:], out=cum_a[1:])
        self.E, self.Q, self.cum_a = E, q, cum_a
        self.cum_q = np.cumsum(q)
        self.cum_aq = np.cumsum(cum_a * q)
        self.base, self.t, self.length = global_step, 0, n
        self.kernel_state.set_segment(self.Q, self.cum_a, self.cum_q, self.cum_aq, self.E)

    def shrink(self, eta: float) -> float:
        """Plain SGD's L2 factor for a step of rate ``eta``: ``c = 1 - eta * l2``, at least
        ``TINY`` (scikit-learn's is at least 0: either way the coefficients vanish)."""
        return max(1.0 - eta * self.l2, TINY)

    def lr_factor(self, eta: float) -> float:
        """Multiplier of the optimizer's learning rate for a step of rate ``eta``:
        ``1 / wscale`` (weight-scaling trick), times ``1 / c`` with plain SGD and L2. The
        step's shrink ``c`` then leaves the step's own update whole, ``w <- c * w - eta * g``
        as in scikit-learn (the adaptive optimizers' steps are ``w <- flow(w - eta * h * g)``).
        The intercept, which the shrink does not touch, takes ``c`` back through
        ``intercept_factor``."""
        f = 1.0 / self.wscale
        if self.l2 > 0 and not self.preconditioned:
            f /= self.shrink(eta)
        return f

    def intercept_factor(self, eta: float) -> float:
        """Multiplier of the intercept's gradient for a step of rate ``eta`` (see
        ``lr_factor``): ``c`` with plain SGD and L2, else 1."""
        if self.l2 > 0 and not self.preconditioned:
            return self.shrink(eta)
        return 1.0

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
            c = self.shrink(eta)
            W = model.W
            if c < MIN_SCALE:  # dividing the intercept by c could overflow: shrink in place
                self.flush(model, n_threads)
                W[:model.n_feat] *= c
                return
            self.wscale *= c
            if W.shape[0] > model.n_feat:  # the intercept row is not penalised
                W[model.n_feat:] /= c
            if self.wscale < MIN_SCALE:
                self.flush(model, n_threads)
            return
        if not self._bind_preconditioner():  # pragma: no cover - the step made the state
            raise RuntimeError("the optimizer has no state after its step")
        self.t += 1
        if self.flags and self.t >= self.length:
            self.flush(model, n_threads)

    def flush(self, model: _linear.LinearModel, n_threads: int) -> None:
        """Bring every row up to the last step (true weights in ``model.W``) and restart."""
        if self.scaled:
            if self.wscale != 1.0:
                W = model.W
                if self.live_rows is None:
                    W *= self.wscale
                else:  # the other rows are 0
                    W[self.live_rows] *= self.wscale
                self.wscale = 1.0
            return
        if self.flags and self.t > 0:
            state = self.kernel_state
            state.avg_from = self.avg_from()
            _linear.catch_up_rows(model, state, self.t, n_threads, self.live_rows)
        self._reset_tables()

    def penalty(self, W: np.ndarray, n_feat: int) -> float:
        """``l2/2 ||w||^2 + l1 |w|_1`` of the true feature weights: ``alpha`` times
        scikit-learn's penalty."""
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
