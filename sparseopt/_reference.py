"""The update rules of sparseopt's optimizers, the losses and mini-batch gradient of its linear
models and the implicit-feedback (BPR, WARP) mini-batch gradients of its matrix factorisation,
in plain NumPy: the specification in code, and the oracle the kernels are tested against.

Written for clarity, not speed: dense state, one step at a time, duplicates merged with
``np.add.at`` (which adds in position order), lazy catch-up spelled out row by row. The classes
take the same arguments as ``sparseopt.Adam`` / ``Adagrad`` / ``RMSprop`` and keep state under
the same names, so tests can compare every array. Input is assumed valid.

Notation: ``t`` is a parameter's step (advanced by every ``step`` that passes it a gradient, even
an empty one); a row last brought up to date at step ``last`` and touched at ``t`` has skipped
``t - last - 1`` steps.

Two float64 rules fix every per-row factor, with bounded memory however long training runs;
the kernels follow them operation for operation, so these factors agree to the bit:

* **Powers** ``beta**n`` (bias corrections ``1 - beta**tau``, lazy decay ``beta**skipped``) are
  :func:`power`: write ``n`` in base 256, ``n = sum_k b_k 256**k``; take
  ``beta**b_0``, then multiply (in float64, rounding after each product) by
  ``beta**(b_k * 256**k)`` for k = 1, 2, ... up to the highest non-zero byte, where every factor
  is libm's correctly rounded ``pow`` of exact float64 operands (``math.pow``). A factor of a zero
  byte is exactly 1.0, so where the loop stops changes nothing. The kernels look the factors up
  in an ``(8, 256)`` table per base (16 KiB), so any int64 ``n`` is covered. The result is within
  a few ulps of the exact power (one rounding per non-zero byte beyond the first).
  A decayed moment is ``(beta * beta**skipped) * m + (1 - beta) * g``: the two factors are
  multiplied in float64 and rounded once to the parameter's dtype.
* **Weight-decay catch-up** (``lazy="decay"``): each step that passes the parameter a gradient
  adds ``log1p(-lr_t * weight_decay_t)`` (``math.log1p``, float64) to the parameter's running sum
  ``S_t`` (``wd_log_sum``, starting at 0), using the ``lr`` and ``weight_decay`` of that step.
  Each row keeps ``row_wd_log[r]``, the value of ``S`` at the step through which its weight decay
  has been applied. A row updated at step ``t`` is multiplied by
  ``(1 - lr_t * weight_decay_t) * exp(S_{t-1} - row_wd_log[r])`` (``math.exp``; the product in
  float64, rounded once to the dtype), and ``flush()`` multiplies every row by
  ``exp(S_t - row_wd_log[r])``; then ``row_wd_log[r] = S_t``. This equals the product of the
  factors ``1 - lr_s * weight_decay_s`` of the steps the row missed to about
  ``t * 1e-16`` relative (the rounding of the running sum), with one float per parameter and one
  per row instead of one per step.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import scipy.sparse as sp

from ._rowgrad import RowGrad

_PRESETS = {
    "Adam": {
        "torch": dict(bias_correction="global", lazy="frozen", eps_mode="uncorrected"),
        "tensorflow": dict(bias_correction="global", lazy="frozen", eps_mode="uncorrected",
                           eps=1e-7),
    },
    "Adagrad": {"torch": {}, "tensorflow": dict(initial_accumulator_value=0.1, eps=0.0)},
    "Ftrl": {"tensorflow": {},
             "vw": dict(beta=0.1, initial_accumulator_value=0.0, convention="paper")},
    "RMSprop": {
        "torch": {},
        "tensorflow": dict(alpha=0.9, eps=1e-10, eps_mode="inside", initial_square_avg=1.0),
    },
}


def power(base: float, n: int) -> float:
    """``base**n`` for an integer ``n >= 0`` by the byte rule above (what the kernels compute)."""
    n = int(n)
    f = math.pow(base, float(n & 255))
    shift = 8
    n >>= 8
    while n:
        f *= math.pow(base, float((n & 255) << shift))
        n >>= 8
        shift += 8
    return f


def merge_gradient(grad: Any, param: np.ndarray, duplicates: str = "sum"
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Return ``(rows, G)``: unique touched rows (first-appearance order) and their merged
    gradients as a ``(len(rows), d)`` array of the parameter's dtype."""
    n = param.shape[0]
    d = 1 if param.ndim == 1 else param.shape[1]
    if isinstance(grad, RowGrad):
        idx = np.asarray(grad.indices).astype(np.int64).reshape(-1)
        vals = np.asarray(grad.values).astype(param.dtype).reshape(len(idx), d)
        rows, first, inverse, counts = np.unique(idx, return_index=True, return_inverse=True,
                                                 return_counts=True)
        G = np.zeros((len(rows), d), dtype=param.dtype)
        np.add.at(G, inverse.reshape(-1), vals)
        if duplicates == "mean":
            G = (G / counts[:, None].astype(param.dtype)).astype(param.dtype)
        order = np.argsort(first, kind="stable")
        return rows[order], G[order]
    if sp.issparse(grad):
        csr = sp.csr_matrix(grad)
        if param.ndim == 1 and csr.shape == (1, n) and n != 1:
            csr = csr.T.tocsr()
        rows = np.flatnonzero(np.diff(csr.indptr))
        return rows.astype(np.int64), csr[rows].toarray().astype(param.dtype)
    dense = np.asarray(grad, dtype=param.dtype).reshape(n, d)
    return np.arange(n, dtype=np.int64), dense.copy()


def first_touch_slots(rows: Any, slot_of_row: np.ndarray, row_of_slot: np.ndarray,
                      n_used: int) -> Tuple[np.ndarray, int]:
    """The compact state layout's slot assignment (``sparseopt.optim._slots``), in place: in
    the order of the unique ``rows``, a row without a slot (``slot_of_row[r] == 0``) takes slot
    ``n_used`` (``slot_of_row[r] = n_used + 1``, ``row_of_slot[n_used] = r``, ``n_used += 1``).
    Returns ``(slot of each row, n_used)``. Slots never change a result: a row's moments live
    in its slot, and a row without one has all-zero moments."""
    out = np.empty(len(rows), dtype=np.int64)
    for j, r in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
        if slot_of_row[r] == 0:
            row_of_slot[n_used] = r
            n_used += 1
            slot_of_row[r] = n_used
        out[j] = slot_of_row[r] - 1
    return out, n_used


def column_groups(d: int, tail: int) -> List[slice]:
    """The columns that share one row-wise scalar (``rowwise_tail``): the whole row, or its
    leading ``d - tail`` columns and its last ``tail``, each group with its own scalar."""
    return [slice(0, d)] if not tail else [slice(0, d - tail), slice(d - tail, d)]


class _Reference:
    _NAME = ""
    _DEFAULTS: Dict[str, Any] = {}

    def __init__(self, params: Any, preset: Optional[str] = None, n_threads: Any = None,
                 duplicates: str = "sum", nonfinite: str = "raise", **hyper: Any) -> None:
        if isinstance(params, np.ndarray):
            params = [params]
        self.keys = list(params) if isinstance(params, dict) else list(range(len(params)))
        self.params = dict(params) if isinstance(params, dict) else dict(enumerate(params))
        h = dict(self._DEFAULTS)
        if preset is not None:
            h.update(_PRESETS[self._NAME][preset])
        h.update({k: v for k, v in hyper.items() if v is not None})
        self.h = h
        self.duplicates = duplicates
        self.nonfinite = nonfinite
        self.state: Dict[Any, Dict[str, Any]] = {k: {} for k in self.keys}
        # S_t of each parameter: the running sum of log1p(-lr * weight_decay) (lazy="decay")
        self.wd_log_sum: Dict[Any, float] = {k: 0.0 for k in self.keys}

    def _column_groups(self, key: Any, d: int) -> List[slice]:
        """Parameter ``key``'s column groups of row-wise state (``rowwise_tail``: an int for
        every parameter or one per parameter, in order)."""
        tail = self.h.get("rowwise_tail", 0)
        if isinstance(tail, (list, tuple)):
            tail = tail[self.keys.index(key)]
        return column_groups(d, int(tail))

    @property
    def lr(self) -> float:
        return self.h["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.h["lr"] = float(value)

    def step(self, grads: Any) -> None:
        if isinstance(grads, dict):
            pairs = [(k, g) for k, g in grads.items() if g is not None]
        elif isinstance(grads, (list, tuple)):
            pairs = [(k, g) for k, g in zip(self.keys, grads) if g is not None]
        else:
            pairs = [] if grads is None else [(self.keys[0], grads)]
        for key, grad in pairs:
            p = self.params[key]
            P = p.reshape(p.shape[0], -1)
            rows, G = merge_gradient(grad, p, self.duplicates)
            if self.nonfinite != "ignore" and len(rows):
                ok = np.isfinite(G).all(axis=1)
                if not ok.all() and self.nonfinite == "raise":
                    raise FloatingPointError("non-finite gradient")
                rows, G = rows[ok], G[ok]
            st = self.state[key]
            self._groups = self._column_groups(key, P.shape[1])
            if not st:
                self._init_state(st, P)
            st["step"] += 1
            sums = (self.wd_log_sum[key],) * 2  # S_{t-1}, S_t
            if self.h.get("lazy") == "decay":
                self.wd_log_sum[key] += math.log1p(-self.h["lr"] * self.h["weight_decay"])
                sums = (sums[0], self.wd_log_sum[key])
            if len(rows):
                self._update(st, P, rows, G, st["step"], sums)

    def _catch_up(self, st: Dict[str, Any], r: int, t: int, bases: Tuple[float, ...],
                  sums: Tuple[float, float]) -> Tuple[Tuple[float, ...], float]:
        """Row ``r``, touched at step ``t``: the decay factors of this update, one per base
        (``base * base**skipped`` with ``lazy="decay"``, else ``base``), and the factor the row
        is multiplied by (``1 - lr * weight_decay``, times the missed factors with
        ``lazy="decay"``); the row is then current through step ``t``."""
        shrink = 1.0 - self.h["lr"] * self.h["weight_decay"]
        if self.h["lazy"] != "decay":
            return bases, shrink
        skipped = t - int(st["last_step"][r]) - 1
        factors = tuple(b * power(b, skipped) for b in bases)
        shrink *= self._wd_catch_up(st, r, sums)
        st["last_step"][r] = t
        return factors, shrink

    @staticmethod
    def _wd_catch_up(st: Dict[str, Any], r: int, sums: Tuple[float, float]) -> float:
        """The weight-decay factor row ``r`` missed: ``exp(sums[0] - row_wd_log[r])`` (see the
        module docstring); afterwards the row is current through ``row_wd_log[r] = sums[1]``."""
        f = math.exp(sums[0] - float(st["row_wd_log"][r]))
        st["row_wd_log"][r] = sums[1]
        return f

    def flush(self) -> None:
        for key in self.keys:
            st = self.state[key]
            if not st or self.h.get("lazy") != "decay":
                continue
            P = self.params[key].reshape(self.params[key].shape[0], -1)
            t = st["step"]
            for r in range(P.shape[0]):
                s = t - int(st["last_step"][r])
                if s <= 0:
                    continue
                for name, base in self._decaying(st):
                    st[name].reshape(P.shape[0], -1)[r] *= P.dtype.type(power(base, s))
                P[r] *= P.dtype.type(self._wd_catch_up(st, r, (self.wd_log_sum[key],) * 2))
                st["last_step"][r] = t


class Adam(_Reference):
    """Reference Adam / AdamW / AMSGrad with lazy modes and per-row bias correction."""

    _NAME = "Adam"
    _DEFAULTS = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                     lazy="frozen", bias_correction="row", eps_mode="corrected",
                     rowwise=False, rowwise_tail=0)

    def _init_state(self, st, P) -> None:
        st["step"] = 0
        st["exp_avg"] = np.zeros_like(P)
        # rowwise="v": one second moment per row (per column group)
        vshape = (P.shape[0], len(self._groups)) if self.h["rowwise"] else P.shape
        st["exp_avg_sq"] = np.zeros(vshape, dtype=P.dtype)
        st["max_exp_avg_sq"] = np.zeros(vshape, dtype=P.dtype)
        st["row_step"] = np.zeros(P.shape[0], dtype=np.int64)
        st["last_step"] = np.zeros(P.shape[0], dtype=np.int64)
        st["first_step"] = np.zeros(P.shape[0], dtype=np.int64)
        st["row_wd_log"] = np.zeros(P.shape[0], dtype=np.float64)

    def _decaying(self, st):
        b1, b2 = self.h["betas"]
        return [("exp_avg", b1), ("exp_avg_sq", b2)]

    def _update(self, st, P, rows, G, t, wd_sums) -> None:
        h = self.h
        b1, b2 = h["betas"]
        lr, eps = h["lr"], h["eps"]
        T = P.dtype.type
        m, v, vmax = st["exp_avg"], st["exp_avg_sq"], st["max_exp_avg_sq"]
        for r, g in zip(rows, G):
            (b1e, b2e), shrink = self._catch_up(st, r, t, (b1, b2), wd_sums)
            if h["lazy"] == "decay":
                if st["first_step"][r] == 0:
                    st["first_step"][r] = t
                tau = t - int(st["first_step"][r]) + 1
            else:
                st["row_step"][r] += 1
                tau = int(st["row_step"][r])
            if h["bias_correction"] == "global":
                tau = t
            m[r] = T(b1e) * m[r] + T(1 - b1) * g
            if h["rowwise"]:
                # the group mean of g**2 (float64 sum, rounded once) stands for its g_j**2
                means = [np.mean(g[c].astype(np.float64) ** 2) for c in self._groups]
                v[r] = T(b2e) * v[r] + T(1 - b2) * np.array(means).astype(P.dtype)
            else:
                v[r] = T(b2e) * v[r] + T(1 - b2) * g * g
            vv = v[r]
            if h["amsgrad"]:
                vmax[r] = np.maximum(vmax[r], v[r])
                vv = vmax[r]
            bc1, bc2 = 1.0 - power(b1, tau), 1.0 - power(b2, tau)
            if h["rowwise"]:
                # one float64 factor per row, rounded once: p <- shrink*p - k*m
                if h["eps_mode"] == "uncorrected":
                    a, c = lr * math.sqrt(bc2) / bc1, 1.0
                else:
                    a, c = lr / bc1, 1.0 / math.sqrt(bc2)
                for j, cols in enumerate(self._groups):
                    k = a / (math.sqrt(float(vv[j])) * c + eps)
                    P[r, cols] = T(shrink) * P[r, cols] - T(k) * m[r, cols]
                continue
            if h["eps_mode"] == "uncorrected":
                step = lr * np.sqrt(bc2) / bc1
                P[r] = T(shrink) * P[r] - T(step) * m[r] / (np.sqrt(vv) + T(eps))
            else:
                P[r] = T(shrink) * P[r] - T(lr / bc1) * m[r] / (np.sqrt(vv) / T(np.sqrt(bc2))
                                                                 + T(eps))


class Adagrad(_Reference):
    """Reference Adagrad (element-wise or row-wise accumulator)."""

    _NAME = "Adagrad"
    _DEFAULTS = dict(lr=1e-2, lr_decay=0.0, eps=1e-10, initial_accumulator_value=0.0,
                     weight_decay=0.0, rowwise=False, rowwise_tail=0)

    def _init_state(self, st, P) -> None:
        st["step"] = 0
        shape = (P.shape[0], len(self._groups)) if self.h["rowwise"] else P.shape
        st["sum"] = np.full(shape, self.h["initial_accumulator_value"], dtype=P.dtype)

    def _update(self, st, P, rows, G, t, wd_sums) -> None:
        h = self.h
        T = P.dtype.type
        clr = h["lr"] / (1 + (t - 1) * h["lr_decay"])
        S = st["sum"]
        for r, g in zip(rows, G):
            if h["rowwise"]:
                shrink = 1.0 - clr * h["weight_decay"]
                for j, cols in enumerate(self._groups):
                    S[r, j] += T(np.mean(g[cols].astype(np.float64) ** 2))
                    k = clr / (math.sqrt(float(S[r, j])) + h["eps"])
                    P[r, cols] = T(shrink) * P[r, cols] - T(k) * g[cols]
                continue
            S[r] += g * g
            P[r] = T(1.0 - clr * h["weight_decay"]) * P[r] - T(clr) * g / (np.sqrt(S[r])
                                                                         + T(h["eps"]))


class RMSprop(_Reference):
    """Reference RMSprop (centred, momentum, lazy modes, TF1 eps-inside form)."""

    _NAME = "RMSprop"
    _DEFAULTS = dict(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, centered=False,
                     weight_decay=0.0, lazy="frozen", eps_mode="outside", initial_square_avg=0.0,
                     rowwise=False, rowwise_tail=0)

    def _init_state(self, st, P) -> None:
        st["step"] = 0
        # rowwise: one square average (and one gradient average) per row
        vshape = (P.shape[0], len(self._groups)) if self.h["rowwise"] else P.shape
        st["square_avg"] = np.full(vshape, self.h["initial_square_avg"], dtype=P.dtype)
        st["grad_avg"] = np.zeros(vshape, dtype=P.dtype)
        st["momentum_buffer"] = np.zeros_like(P)
        st["last_step"] = np.zeros(P.shape[0], dtype=np.int64)
        st["row_wd_log"] = np.zeros(P.shape[0], dtype=np.float64)

    def _decaying(self, st):
        a, mu = self.h["alpha"], self.h["momentum"]
        return [("square_avg", a), ("grad_avg", a), ("momentum_buffer", mu)]

    def _update(self, st, P, rows, G, t, wd_sums) -> None:
        h = self.h
        T = P.dtype.type
        a, mu, lr = h["alpha"], h["momentum"], h["lr"]
        inside = h["eps_mode"] == "inside"
        v, ga, buf = st["square_avg"], st["grad_avg"], st["momentum_buffer"]
        for r, g in zip(rows, G):
            (ae, mue), shrink = self._catch_up(st, r, t, (a, mu), wd_sums)
            if h["rowwise"]:
                self._rowwise_update(st, P, r, g, ae, mue, shrink)
                continue
            v[r] = T(ae) * v[r] + T(1 - a) * g * g
            var = v[r]
            if h["centered"]:
                ga[r] = T(ae) * ga[r] + T(1 - a) * g
                var = v[r] - ga[r] * ga[r]
            den = np.sqrt(var + T(h["eps"])) if inside else np.sqrt(var) + T(h["eps"])
            if mu > 0:
                buf[r] = T(mue) * buf[r] + g / den
                P[r] = T(shrink) * P[r] - T(lr) * buf[r]
            else:
                P[r] = T(shrink) * P[r] - T(lr) * g / den


    def _rowwise_update(self, st, P, r, g, ae, mue, shrink) -> None:
        """Row-wise RMSprop, per column group: the group means of g**2 and of g (float64 sums,
        rounded once) update the scalars ``v`` and ``a``; one float64 factor per group, rounded
        once, scales ``g``."""
        h = self.h
        T = P.dtype.type
        a, lr = h["alpha"], h["lr"]
        v, ga, buf = st["square_avg"], st["grad_avg"], st["momentum_buffer"]
        eps_in, eps = (h["eps"], 0.0) if h["eps_mode"] == "inside" else (0.0, h["eps"])
        for j, cols in enumerate(self._groups):
            g64 = g[cols].astype(np.float64)
            v[r, j] = T(ae) * v[r, j] + T(1 - a) * T(np.mean(g64 ** 2))
            var = v[r, j]
            if h["centered"]:
                ga[r, j] = T(ae) * ga[r, j] + T(1 - a) * T(np.mean(g64))
                var = v[r, j] - ga[r, j] * ga[r, j]
            den = math.sqrt(float(var) + eps_in) + eps
            if h["momentum"] > 0:
                buf[r, cols] = T(mue) * buf[r, cols] + T(1.0 / den) * g[cols]
                P[r, cols] = T(shrink) * P[r, cols] - T(lr) * buf[r, cols]
            else:
                P[r, cols] = T(shrink) * P[r, cols] - T(lr / den) * g[cols]


class Ftrl(_Reference):
    """Reference FTRL-Proximal (``docs/semantics.md``, "FTRL-Proximal"), coordinate by
    coordinate in the parameter's dtype.

    TensorFlow's convention (``SparseApplyFtrlV2``; ``tf.keras.optimizers.Ftrl`` folds
    ``beta`` into ``l2`` as ``l2 + beta/(2 lr)``)::

        g_s = g + 2*l2_shrinkage*w
        n'  = n + g**2
        z  += g_s - (n'**p - n**p) / lr * w
        w   = (sign(z)*l1 - z) / (n'**p / lr + 2*(l2 + beta/(2 lr)))  if |z| > l1 else 0

    The paper's (Algorithm 1, Vowpal Wabbit's ``--ftrl``): the same with ``g_s = g +
    l2_shrinkage*w`` and the denominator ``(beta + n'**p)/lr + l2``. ``p = -lr_power``; ``p =
    0.5`` is a square root. A zero denominator gives ``w = 0``. Row ``free_row`` (the
    optimizer's ``_free_row``; -1: none) takes no penalty (``l1 = l2 = l2_shrinkage = 0``).
    """

    free_row = -1

    _NAME = "Ftrl"
    _DEFAULTS = dict(lr=1e-3, beta=0.0, l1=0.0, l2=0.0, l2_shrinkage=0.0, lr_power=-0.5,
                     initial_accumulator_value=0.1, convention="tensorflow")

    def _init_state(self, st, P) -> None:
        st["step"] = 0
        st["z"] = np.zeros_like(P)
        st["n"] = np.full_like(P, self.h["initial_accumulator_value"])

    def _scalars(self):
        h = self.h
        lr = h["lr"]
        if h["convention"] == "tensorflow":
            return (lr, 0.0, h["l1"], 2.0 * (h["l2"] + h["beta"] / (2.0 * lr)),
                    2.0 * h["l2_shrinkage"])
        return lr, h["beta"], h["l1"], h["l2"], h["l2_shrinkage"]

    def _update(self, st, P, rows, G, t, wd_sums) -> None:
        T = P.dtype.type
        lr, b0, l1, l2, shr = (T(x) for x in self._scalars())
        pw = T(-self.h["lr_power"])

        def q(x):
            # libm's pow in float64, rounded once to the dtype, element by element (the
            # kernel's rule; NumPy's vectorised pow is not libm's to the last bit)
            if pw == T(0.5):
                return np.sqrt(x)
            return np.array([math.pow(float(v), float(pw)) for v in x.ravel()],
                            dtype=np.float64).astype(T).reshape(x.shape)

        Z, N = st["z"], st["n"]
        penalties = (l1, l2, shr)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            for r, g in zip(rows, G):
                l1, l2, shr = (T(0),) * 3 if r == self.free_row else penalties
                w = P[r].copy()
                n_new = N[r] + g * g
                qn = q(n_new)
                sigma = (qn - q(N[r])) / lr
                z = Z[r] + ((g + shr * w) - sigma * w)
                den = (qn + b0) / lr + l2
                num = np.where(z > 0, l1 - z, -l1 - z)
                keep = ~((np.abs(z) <= l1) | (den == 0))  # NaN z or den: NaN weight
                N[r] = n_new
                Z[r] = z
                P[r] = np.where(keep, num / np.where(keep, den, T(1)), T(0))


class SGD(_Reference):
    """Reference plain SGD: ``p_r <- p_r - lr * g_r`` on the touched rows (no state)."""

    _NAME = "SGD"
    _DEFAULTS = dict(lr=1e-2)

    def _init_state(self, st, P) -> None:
        st["step"] = 0

    def _update(self, st, P, rows, G, t, wd_sums) -> None:
        T = P.dtype.type
        for r, g in zip(rows, G):
            P[r] = P[r] - T(self.h["lr"]) * g


# --------------------------------------------------------------------------- half precision
# Half-precision weights: a parameter stored as float16, or as bfloat16 bits in a uint16 array.
# The update is the float32 rule of the optimizer on the widened row (exact), with float32
# state and gradients; the updated row is then rounded back:
#
# * bfloat16 = the upper 16 bits of a float32. Nearest: add 0x7fff plus the lowest kept bit to
#   the float32 bits, keep the upper half; a NaN keeps its upper half with the quiet bit 0x0040
#   set. Stochastic: add the low 16 bits of ``noise`` to the float32 bits and keep the upper
#   half (NaN and infinities are rounded to nearest).
# * float16 = IEEE binary16, rounded to nearest even (NumPy's ``astype(np.float16)``; a NaN
#   stays a NaN, its payload unspecified).
# * ``noise`` of column j of row r of parameter i at its step t: ``k = mix64(mix64(stream ^
#   mix64(t)) ^ r)`` truncated to 32 bits, with ``stream = seed | (i << 32)`` and ``mix64``
#   splitmix64's finaliser; then ``lowbias32(k + j * 0x9e3779b9)`` (32-bit wrapping).
#
# A row whose float32 value is exactly representable rounds to itself under either rule, so
# rounding every row after a step (as ``HalfPrecision`` does) changes only the touched ones.
#
# bfloat16 state (``Adam``, ``Adagrad`` and ``RMSprop`` with ``state_dtype="bfloat16"``): the
# state arrays of a touched row are widened too, updated with the weights by the float32 rule,
# and rounded to bfloat16 by the weights' rule, the random bits of each array from the row's key
# xor its salt (``STATE_SALTS``). A start value (Adagrad's ``initial_accumulator_value``,
# RMSprop's ``initial_square_avg``) is stored rounded to nearest.

STATE_SALTS = {"exp_avg": 0x68E31DA4, "exp_avg_sq": 0x5297A4D1, "max_exp_avg_sq": 0x1B56C4E9,
               "sum": 0x3C6EF372, "square_avg": 0x2F8B61D5, "grad_avg": 0x7A3C09E1,
               "momentum_buffer": 0x4D2A8B17}

_U64 = np.uint64


def _mix64(z: np.ndarray) -> np.ndarray:
    z = z + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def rounding_noise(stream: int, step: int, rows: Any, d: int, salt: int = 0) -> np.ndarray:
    """The ``(len(rows), d)`` uint32 random words of stochastic rounding (see above); ``salt``
    is xored into each row's key."""
    s = np.array([stream], dtype=np.uint64)
    t = np.array([step], dtype=np.int64).astype(np.uint64)
    r = np.asarray(rows, dtype=np.int64).astype(np.uint64)
    k = _mix64(_mix64(s ^ _mix64(t)) ^ r).astype(np.uint32) ^ np.uint32(salt)
    x = k[:, None] + np.arange(d, dtype=np.uint32) * np.uint32(0x9E3779B9)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def bfloat16_to_float32(h: Any) -> np.ndarray:
    """The float32 values of bfloat16 bits (uint16), exactly."""
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def float32_to_bfloat16(x: Any, noise: Optional[np.ndarray] = None) -> np.ndarray:
    """float32 values rounded to bfloat16 bits (uint16): to nearest even, or stochastically
    with the uint32 ``noise`` of the same shape."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    one = np.uint32(1)
    nearest = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & one)) >> np.uint32(16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    nearest = np.where(nan, (u >> np.uint32(16)) | np.uint32(0x0040), nearest)
    if noise is None:
        return nearest.astype(np.uint16)
    special = (u & np.uint32(0x7F800000)) == np.uint32(0x7F800000)
    sr = (u + (noise & np.uint32(0xFFFF))) >> np.uint32(16)
    return np.where(special, nearest, sr).astype(np.uint16)


class HalfPrecision:
    """Reference of an optimizer on half-precision parameters: ``cls`` (``Adam``, ...) run on
    float32 copies of the widened parameters, whose every row is rounded back after each
    ``step`` and ``flush`` (the rule above). ``params`` are float16 arrays, or uint16 arrays of
    bfloat16 bits with ``dtype="bfloat16"``; they are updated in place."""

    def __init__(self, cls: type, params: Any, dtype: Optional[str] = None,
                 rounding: str = "nearest", seed: int = 0, state_dtype: Optional[str] = None,
                 **kwargs: Any) -> None:
        if isinstance(params, np.ndarray):
            params = [params]
        keys = list(params) if isinstance(params, dict) else list(range(len(params)))
        self.half = dict(params) if isinstance(params, dict) else dict(enumerate(params))
        self.keys = keys
        self.stochastic = rounding == "stochastic"
        self.seed = seed
        self.state_dtype = state_dtype
        self.wide = {k: self._widen(self.half[k]) for k in keys}
        self.ref = cls({k: self.wide[k] for k in keys} if isinstance(params, dict)
                       else [self.wide[k] for k in keys], **kwargs)

    @staticmethod
    def _widen(h: np.ndarray) -> np.ndarray:
        if h.dtype == np.float32:  # a float32 parameter (with bfloat16 moments) is itself
            return h
        if h.dtype == np.float16:
            return h.astype(np.float32)
        return bfloat16_to_float32(h)

    @property
    def state(self) -> Dict[Any, Dict[str, Any]]:
        return self.ref.state

    def step(self, grads: Any) -> None:
        self.ref.step(grads)
        self._round()

    def flush(self) -> None:
        self.ref.flush()
        self._round()

    def _round(self) -> None:
        for i, k in enumerate(self.keys):
            h, w = self.half[k], self.wide[k]
            n = h.shape[0]
            W = w.reshape(n, -1)
            step = self.ref.state[k].get("step", 0)
            if self.state_dtype is not None:
                for sname, salt in STATE_SALTS.items():
                    arr = self.ref.state[k].get(sname)
                    if arr is None:
                        continue
                    S = arr.reshape(n, -1)
                    noise = (rounding_noise(self.seed | (i << 32), step, np.arange(n),
                                            S.shape[1], salt) if self.stochastic else None)
                    S[...] = bfloat16_to_float32(float32_to_bfloat16(S, noise))
            if h.dtype == np.float32:
                continue
            if h.dtype == np.float16:
                with np.errstate(over="ignore"):  # overflow rounds to infinity
                    new = W.astype(np.float16)
            else:
                noise = None
                if self.stochastic:
                    noise = rounding_noise(self.seed | (i << 32), step, np.arange(n),
                                           W.shape[1])
                new = float32_to_bfloat16(W, noise)
            h.reshape(n, -1)[...] = new.view(h.dtype)
            W[...] = self._widen(new.view(h.dtype))


# --------------------------------------------------------------------------- linear models
# The losses of ``SGDClassifier`` / ``SGDRegressor`` by the kernel's names
# (``sparseopt._kernels._linear.LOSSES``) and the gradient of a mini-batch, as the fused kernel
# ``_kernels/_linear.pyx`` computes them (it clips each derivative to +-1e12 before weighting).


def linear_loss(loss: str, p: Any, y: Any, c: float) -> Tuple[np.ndarray, np.ndarray]:
    """``(loss, d loss / d p)`` of scikit-learn's formulas, element-wise: ``p`` the margin,
    ``y`` the target (+1/-1 for the classification losses), ``c`` the hinge margin or
    epsilon."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if loss == "log":
        z = p * y
        return np.logaddexp(0, -z), -y / (np.exp(z) + 1.0)
    if loss == "hinge":
        z = p * y
        return np.where(z <= c, c - z, 0.0), np.where(z <= c, -y, 0.0)
    if loss == "squared_hinge":
        z = c - p * y
        return np.where(z > 0, z * z, 0.0), np.where(z > 0, -2 * y * z, 0.0)
    if loss == "modified_huber":
        z = p * y
        lv = np.where(z >= 1, 0.0, np.where(z >= -1, (1 - z) ** 2, -4 * z))
        dl = np.where(z >= 1, 0.0, np.where(z >= -1, -2 * (1 - z) * y, -4 * y))
        return lv, dl
    r = p - y
    if loss == "squared":
        return 0.5 * r * r, r
    if loss == "huber":
        small = np.abs(r) <= c
        return (np.where(small, 0.5 * r * r, c * np.abs(r) - 0.5 * c * c),
                np.where(small, r, c * np.sign(r)))
    if loss == "epsilon_insensitive":
        lv = np.maximum(0, np.abs(r) - c)
        return lv, np.where(-r > c, -1.0, np.where(r > c, 1.0, 0.0))
    if loss == "squared_epsilon_insensitive":
        e = np.maximum(0, np.abs(r) - c)
        return e * e, np.where(-r > c, -2 * (-r - c), np.where(r > c, 2 * (r - c), 0.0))
    raise ValueError(f"unknown loss {loss!r}")


def softmax_loss(Z: Any, cls: Any) -> Tuple[np.ndarray, np.ndarray]:
    """The multinomial log-loss of each row of margins ``Z`` (n, K) for the class indices
    ``cls`` (n,), and its derivative ``softmax(Z) - onehot(cls)``, computed stably."""
    Z = np.asarray(Z, dtype=np.float64)
    cls = np.asarray(cls).astype(int)
    rows = np.arange(Z.shape[0])
    mx = Z.max(axis=1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(Z - mx).sum(axis=1))
    D = np.exp(Z - lse[:, None])
    D[rows, cls] -= 1.0
    return lse - Z[rows, cls], D


def linear_batch_gradient(Xb: Any, yb: np.ndarray, swb: np.ndarray, W: np.ndarray,
                          n_feat: int, fit_intercept: bool, loss: str, c: float,
                          scale: Optional[float] = None) -> Tuple[np.ndarray, float]:
    """The dense ``(n_rows, K)`` gradient of the weighted loss of a mini-batch times ``scale``
    (default ``1 / batch size``), and the weighted loss sum.

    ``W`` is the feature-major weight table (row ``n_feat`` the intercept when
    ``fit_intercept``); ``yb`` holds +1/-1 targets for one output, class indices for several
    (one-vs-rest, or multinomial with ``loss="softmax"``), real targets for regression.
    """
    Xb = np.asarray(Xb.todense()) if sp.issparse(Xb) else np.asarray(Xb)
    K = W.shape[1]
    Z = Xb @ W[:n_feat].astype(np.float64)
    if fit_intercept:
        Z = Z + W[n_feat].astype(np.float64)
    if loss == "softmax":
        lv, D = softmax_loss(Z, yb)
    elif K == 1:
        lv, d = linear_loss(loss, Z[:, 0], yb, c)
        D = d[:, None]
    else:  # one-vs-rest
        Y = np.where(np.arange(K)[None, :] == yb.astype(int)[:, None], 1.0, -1.0)
        lv, D = linear_loss(loss, Z, Y, c)
        lv = lv.sum(axis=1)
    scale = 1.0 / Xb.shape[0] if scale is None else scale
    D = D * (swb * scale)[:, None]
    G = np.zeros((W.shape[0], K))
    G[:n_feat] = Xb.T @ D
    if fit_intercept:
        G[n_feat] = D.sum(axis=0)
    return G, float((lv * swb).sum())


# --------------------------------------------------------------------------- linear penalty
# The penalty step of ``SGDClassifier`` / ``SGDRegressor`` applied to every coefficient, as the
# lazy catch-up of ``_kernels/_linear.pyx`` composes it (``sparseopt/linear_model/_lazy.py``):
# ``linear_penalty_step`` with an adaptive optimizer, ``sgd_penalty_step`` with plain SGD.


def penalty_flow(a: Any, T: Any, l1: float, l2: float) -> np.ndarray:
    """``|w|`` after the flow ``dw/dtau = -(l1 sign(w) + l2 w)`` for a time ``T`` from
    ``|w| = a`` (0 once it reaches 0): ``max(0, a e^-x - (l1/l2)(1 - e^-x))`` with ``x = l2 T``,
    or ``max(0, a - l1 T)`` without L2."""
    a, T = np.asarray(a, dtype=np.float64), np.asarray(T, dtype=np.float64)
    if l2 > 0:
        x = l2 * T
        r = a * np.exp(-x)
        if l1 > 0:
            r = r + (l1 / l2) * np.expm1(-x)
    else:
        r = a - l1 * T
    return np.where(r > 0, r, 0.0)


def penalty_zero_time(a: Any, l1: float, l2: float) -> np.ndarray:
    """The time the flow takes to bring ``|w| = a`` to 0 (``l1 > 0``)."""
    a = np.asarray(a, dtype=np.float64)
    if l2 > 0:
        return np.log1p(a * l2 / l1) / l2
    return a / l1


def step_multipliers(kind: str, S: Any, row_step: Any = None, eps: float = 0.0,
                     beta2: float = 0.0) -> np.ndarray:
    """Each coefficient's step multiplier ``h`` from an adaptive optimizer's state (float64,
    shaped like ``S``): ``1 / (sqrt(v) + eps)`` with ``v = S`` (``kind='sqrt'``: Adagrad's
    ``sum``, RMSprop's ``square_avg``) or ``v = S / (1 - beta2**row_step)`` per row
    (``kind='adam'``: ``exp_avg_sq``; ``v = 0`` while ``row_step`` is 0), and ``h = 0`` where
    ``v`` is 0."""
    v = np.array(S, dtype=np.float64)
    if kind == "adam":
        tau = np.asarray(row_step, dtype=np.float64)
        with np.errstate(divide="ignore"):
            bias = np.where(tau > 0, 1.0 / (1.0 - beta2 ** tau), 0.0)
        v = v * bias[:, None]
    with np.errstate(divide="ignore"):
        return np.where(v > 0, 1.0 / (np.sqrt(v) + eps), 0.0)


def _charge(debt: np.ndarray, sign: np.ndarray, amount: np.ndarray) -> None:
    """Coefficients of ``sign`` took ``amount`` of L1: their side's debt falls by it, the
    other side's rises by it (in place)."""
    debt[0] -= np.where(sign > 0, amount, -amount) * (sign != 0)
    debt[1] -= np.where(sign < 0, amount, -amount) * (sign != 0)


def _pay(a: np.ndarray, sign: np.ndarray, debt: np.ndarray) -> np.ndarray:
    """``|w|`` after paying its sign's debt as far as it goes (in place on ``debt``)."""
    owed = np.where(sign > 0, debt[0], debt[1])
    pay = np.where((a > 0) & (owed > 0), np.minimum(a, np.maximum(owed, 0.0)), 0.0)
    _charge(debt, sign, pay)
    return a - pay


def sgd_penalty_step(W: Any, debt: np.ndarray, eta: float, l1: float,
                     l2: float) -> np.ndarray:
    """Plain SGD's penalty step of rate ``eta`` on coefficients ``W`` (float64, any shape),
    after the step's update: pay the L1 debt (``debt`` as in ``linear_penalty_step``), scale
    by ``c = max(1 - eta*l2, 1e-300)``, soft-threshold by ``eta*l1``. Both debts grow by
    ``eta*l1`` and the L1 the threshold takes is paid from its sign's side. Returns the new
    coefficients. (The step's update was divided by ``c`` beforehand, so that with the scaling
    it enters whole: ``w <- c*w - eta*g``, as in scikit-learn.)"""
    w = np.asarray(W, dtype=np.float64)
    sign = np.sign(w)
    a = np.abs(w)
    if l1 > 0:
        a = _pay(a, sign, debt)
    a = a * (max(1.0 - eta * l2, 1e-300) if l2 > 0 else 1.0)
    if l1 > 0:
        debt += eta * l1
        _charge(debt, sign, np.minimum(a, eta * l1))
        a = np.maximum(a - eta * l1, 0.0)
    return sign * a


def linear_penalty_step(W: Any, debt: np.ndarray, T: Any, l1: float, l2: float) -> np.ndarray:
    """An adaptive optimizer's penalty step on coefficients ``W`` (float64, any shape) whose
    flow time is ``T`` (the step's rate times each one's multiplier ``h``, see
    ``step_multipliers``), with scikit-learn's cumulative L1:
    ``debt`` (shape ``(2,) + W.shape``, updated in place) holds what each coefficient owes when
    positive (``debt[0]``) and when negative (``debt[1]``).

    A non-zero coefficient first pays its sign's debt, as far as it goes; then both debts grow
    by ``l1 * T``, the coefficient follows ``penalty_flow`` for ``T``, and the L1 that flow
    applies (``l1`` times its time until 0) is paid from its sign's debt. Whatever a side pays
    is added to the other side's debt. Returns the new coefficients."""
    w = np.asarray(W, dtype=np.float64)
    T = np.broadcast_to(np.asarray(T, dtype=np.float64), w.shape)
    sign = np.sign(w)
    a = np.abs(w)
    if l1 > 0:
        a = _pay(a, sign, debt)
        debt += l1 * T
        with np.errstate(divide="ignore", invalid="ignore"):
            applied = np.where(a > 0, l1 * np.minimum(T, penalty_zero_time(a, l1, l2)), 0.0)
        _charge(debt, sign, applied)
    return sign * penalty_flow(a, T, l1, l2)


# --------------------------------------------------------------------------- implicit MF
# The per-batch gradients of ``MatrixFactorization(loss="bpr" / "warp")``, as the fused kernels
# of ``_kernels/_mf.pyx`` form them: item scores ``x_ui = <U[u,:k], V[i,:k]> (+ V[i,k])``, a
# sample weight ``w`` on every term of a sample (its loss and its rows' per-occurrence L2),
# duplicates summed into one row per unique table row in order of first appearance (user,
# then positive item, then negative item of each sample). Gradients in float64.


def _item_score(U: np.ndarray, V: np.ndarray, u: int, i: int, k: int,
                item_bias: bool) -> float:
    return float(U[u, :k] @ V[i, :k] + (V[i, k] if item_bias else 0.0))


def _merge_rows(per_sample: list) -> Tuple[np.ndarray, np.ndarray]:
    """``[(row, grad), ...]`` in sample order -> unique rows in order of first appearance
    and their summed gradients."""
    rows: Dict[int, np.ndarray] = {}
    for r, g in per_sample:
        rows[r] = rows[r] + g if r in rows else g.copy()
    ids = np.array(list(rows), dtype=np.int64)
    grads = np.array(list(rows.values())) if rows else np.empty((0, 0))
    return ids, grads


def implicit_mf_gradient(U: np.ndarray, V: np.ndarray, users: np.ndarray, pos: np.ndarray,
                         negatives: np.ndarray, weight: Optional[np.ndarray], k: int,
                         item_bias: bool, scale: float, alpha: float, loss: str,
                         n_items: Optional[int] = None, seen: Any = None
                         ) -> Dict[str, np.ndarray]:
    """The merged gradient of a BPR or WARP mini-batch.

    ``loss="bpr"``: ``negatives`` holds one item per sample; the sample's term is
    ``w * (softplus(-(x_ui - x_uj)) + alpha/2 (|U[u]|^2 + |V[i]|^2 + |V[j]|^2))``.

    ``loss="warp"``: ``negatives`` is ``(B, S)``, the candidates of each sample in draw
    order; ``j`` is the first with ``x_uj > x_ui - 1`` that is not stored in row ``u`` of
    ``seen`` (a sparse users x items pattern; ``None``: nothing is skipped), and ``N`` its
    1-based position (a skipped candidate counts). A sample without one adds nothing
    (``drawn = 0``, loss 0); else its term is
    ``w * (L * (1 - x_ui + x_uj) + alpha/2 (...))`` with the rank weight
    ``L = log(max(1, floor((n_items - 1) / N)))``.

    The batch objective is ``scale`` times the sum of the terms. Returns ``urows``, ``gu``,
    ``irows``, ``gi`` (merged rows), ``loss`` (per sample, the weighted loss without L2) and,
    for WARP, ``drawn`` (``N`` or 0).
    """
    U64, V64 = np.asarray(U, dtype=np.float64), np.asarray(V, dtype=np.float64)
    B = len(users)
    w_all = np.ones(B) if weight is None or len(weight) == 0 else \
        np.asarray(weight, dtype=np.float64)
    gus, gis, losses, drawn = [], [], np.zeros(B), np.zeros(B, dtype=np.int64)
    S = sp.csr_matrix(seen) if seen is not None else None
    for s in range(B):
        u, i, w = int(users[s]), int(pos[s]), float(w_all[s])
        xi = _item_score(U64, V64, u, i, k, item_bias)
        if loss == "bpr":
            j = int(negatives[s])
            z = xi - _item_score(U64, V64, u, j, k, item_bias)
            losses[s] = w * np.logaddexp(0.0, -z)
            dx = -1.0 / (1.0 + math.exp(z)) if z > -700 else -1.0  # d softplus(-z) / dz
            d_i, d_j = w * dx, -w * dx   # d term / d x_ui, d term / d x_uj
        else:
            j, n_drawn = -1, 0
            for t, c in enumerate(negatives[s]):
                xj = _item_score(U64, V64, u, int(c), k, item_bias)
                if xj > xi - 1.0 and (S is None or S[u, int(c)] == 0):
                    j, n_drawn = int(c), t + 1
                    break
            drawn[s] = n_drawn
            if n_drawn == 0:
                continue
            rank = math.log(max(1.0, math.floor((n_items - 1) / n_drawn)))
            losses[s] = w * rank * (1.0 - xi + xj)
            d_i, d_j = -w * rank, w * rank
        a = scale * w * alpha
        pu, qi, qj = U64[u], V64[i], V64[j]
        g_u = scale * (d_i * qi[:k] + d_j * qj[:k]) + a * pu
        g_i, g_j = a * qi.copy(), a * qj.copy()
        g_i[:k] += scale * d_i * pu[:k]
        g_j[:k] += scale * d_j * pu[:k]
        if item_bias:
            g_i[k] += scale * d_i
            g_j[k] += scale * d_j
        gus.append((u, g_u))
        gis += [(i, g_i), (j, g_j)]
    urows, gu = _merge_rows(gus)
    irows, gi = _merge_rows(gis)
    out = dict(urows=urows, gu=gu, irows=irows, gi=gi, loss=losses)
    if loss == "warp":
        out["drawn"] = drawn
    return out


def mf_feature_gradients(Fu: Any, Fi: Any, U: np.ndarray, Q: np.ndarray, users: np.ndarray,
                         items: np.ndarray, target: np.ndarray, k: int, user_bias: bool,
                         item_bias: bool, mu: float, scale: float, alpha: float, loss: str
                         ) -> Tuple[np.ndarray, np.ndarray]:
    """The gradient of the feature tables ``U`` (user features x (k + user_bias)) and ``Q``
    (item features x (k + item_bias)) of matrix factorisation with side features, over one
    mini-batch, in float64, one sample at a time.

    A user's representation is ``p = Fu[u] @ U`` (an item's ``q = Fi[i] @ Q``); ``Fu`` /
    ``Fi`` ``None`` means identity features (``p = U[u]``). Per sample, the objective is
    ``scale * (loss_s + alpha/2 * sum of ||representation||^2 of the sample's rows)``:

    * ``loss="squared"``: ``target[s]`` the rating, ``loss_s = 1/2 (mu + <p, q> + b_u + c_i -
      r)^2`` (biases the last column of each representation when present);
    * ``loss="bpr"``: ``target[s]`` the negative item ``j``, ``loss_s = softplus(-x)``,
      ``x = <p, q_i - q_j> + c_i - c_j``.

    The gradient of a representation row ``g`` reaches the feature rows by the chain rule:
    ``grad U += outer(Fu[u], g)``.
    """
    Ud, Qd = np.asarray(U, np.float64), np.asarray(Q, np.float64)
    GU, GQ = np.zeros_like(Ud), np.zeros_like(Qd)

    def weights(F: Any, r: int, n: int) -> np.ndarray:
        if F is None:
            w = np.zeros(n)
            w[r] = 1.0
            return w
        return np.asarray(F[r].toarray(), np.float64).reshape(-1)

    for s in range(len(users)):
        wu = weights(Fu, int(users[s]), Ud.shape[0])
        wi = weights(Fi, int(items[s]), Qd.shape[0])
        p, q = wu @ Ud, wi @ Qd
        if loss == "squared":
            e = mu + p[:k] @ q[:k] - float(target[s])
            if user_bias:
                e += p[k]
            if item_bias:
                e += q[k]
            gp = scale * e * np.concatenate([q[:k], [1.0] if user_bias else []])
            gq = scale * e * np.concatenate([p[:k], [1.0] if item_bias else []])
            GU += np.outer(wu, gp + scale * alpha * p)
            GQ += np.outer(wi, gq + scale * alpha * q)
        else:
            wj = weights(Fi, int(target[s]), Qd.shape[0])
            qj = wj @ Qd
            x = p[:k] @ (q[:k] - qj[:k])
            if item_bias:
                x += q[k] - qj[k]
            d = -scale / (1.0 + math.exp(x))  # -scale * sigmoid(-x)
            gp = d * (q[:k] - qj[:k])
            one = [1.0] if item_bias else []
            GU += np.outer(wu, gp + scale * alpha * p)
            GQ += np.outer(wi, d * np.concatenate([p[:k], one]) + scale * alpha * q)
            GQ += np.outer(wj, -d * np.concatenate([p[:k], one]) + scale * alpha * qj)
    return GU, GQ


def feature_gather(F: Any, rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The representations of ``rows``: ``F[rows] @ table`` in float64 (the rule of
    ``_kernels._features.gather_rows``)."""
    return np.asarray(sp.csr_matrix(F, dtype=np.float64)[rows] @ np.asarray(table, np.float64))


def feature_scatter(F: Any, rows: np.ndarray, G: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(features, grad)``: the gradient ``F[rows].T @ G`` of the feature table on the
    features those rows use, sorted (the rule of ``_kernels._features.scatter_rows``, which
    lists them in order of first appearance)."""
    sub = sp.csr_matrix(F, dtype=np.float64)[rows]
    used = np.unique(sub.indices)
    full = np.asarray(sub.T @ np.asarray(G, np.float64))
    return used.astype(np.int64), full[used]


def fm_predict(X: Any, W: np.ndarray, w0: np.ndarray, k: int) -> np.ndarray:
    """Second-order factorisation machine outputs by the pairwise definition, ``(n, n_out)``:
    ``yhat_c(x) = w0[c] + sum_j x_j w_jc + sum_{j<l} <v_jc, v_lc> x_j x_l``, where row ``j`` of
    ``W`` holds, per output ``c``, the factors ``v_jc`` (``k`` values) then ``w_jc``."""
    Xd = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    n_out = np.asarray(w0).shape[0]
    T = np.asarray(W, dtype=np.float64).reshape(W.shape[0], n_out, k + 1)
    out = np.empty((Xd.shape[0], n_out))
    for c in range(n_out):
        V, w = T[:, c, :k], T[:, c, k]
        G = V @ V.T
        pair = 0.5 * (np.einsum("si,ij,sj->s", Xd, G, Xd) - np.einsum("si,ii,si->s", Xd, G, Xd))
        out[:, c] = w0[c] + Xd @ w + pair
    return out


def fm_merge_rows(G: np.ndarray, idx: Any) -> Tuple[np.ndarray, np.ndarray]:
    """``(rows, summed)``: the distinct ids of ``idx`` in order of first appearance and, for
    each, the sum of its rows of ``G`` added in entry order in ``G``'s dtype (what an
    optimizer's merge of ``RowGrad(idx, G)`` computes)."""
    idx = np.asarray(idx)
    rows: List[int] = []
    where: Dict[int, int] = {}
    out = []
    for p, j in enumerate(idx.tolist()):
        if j not in where:
            where[j] = len(rows)
            rows.append(j)
            out.append(np.array(G[p], dtype=G.dtype))
        else:
            out[where[j]] = (out[where[j]] + G[p]).astype(G.dtype)
    summed = np.array(out, dtype=G.dtype).reshape(len(rows), G.shape[1])
    return np.array(rows, dtype=np.int64), summed
