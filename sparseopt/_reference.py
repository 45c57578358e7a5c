"""The update rules of SPEC section 4 in plain NumPy: the specification in code, and the oracle
the kernels are tested against.

Written for clarity, not speed: dense state, one step at a time, duplicates merged with
``np.add.at`` (which adds in position order), lazy catch-up spelled out from a per-step history.
The classes take the same arguments as ``sparseopt.Adam`` / ``Adagrad`` / ``RMSprop`` and keep
state under the same names, so tests can compare every array. Input is assumed valid.

Notation: ``t`` is a parameter's step (advanced by every ``step`` that passes it a gradient, even
an empty one); a row last brought up to date at step ``last`` and touched at ``t`` has skipped
``t - last - 1`` steps.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import scipy.sparse as sp

from .optim._grad import RowGrad

_PRESETS = {
    "Adam": {
        "torch": dict(bias_correction="global", lazy="frozen", eps_mode="uncorrected"),
        "tensorflow": dict(bias_correction="global", lazy="frozen", eps_mode="uncorrected",
                           eps=1e-7),
    },
    "Adagrad": {"torch": {}, "tensorflow": dict(initial_accumulator_value=0.1, eps=0.0)},
    "RMSprop": {
        "torch": {},
        "tensorflow": dict(alpha=0.9, eps=1e-10, eps_mode="inside", initial_square_avg=1.0),
    },
}


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
        self.history: Dict[Any, List[float]] = {k: [] for k in self.keys}  # lr at each step

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
            if not st:
                self._init_state(st, P)
            st["step"] += 1
            self.history[key].append(self.h["lr"])
            if len(rows):
                self._update(st, P, rows, G, st["step"], self.history[key])

    def _wd_catch_up(self, history: List[float], last: int, upto: int) -> float:
        """Product of the decoupled weight-decay factors of steps last+1 .. upto (float64)."""
        wd = self.h["weight_decay"]
        f = 1.0
        for s in range(last + 1, upto + 1):
            f *= 1.0 - history[s - 1] * wd
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
                    st[name].reshape(P.shape[0], -1)[r] *= P.dtype.type(base ** s)
                P[r] *= P.dtype.type(self._wd_catch_up(self.history[key],
                                                       int(st["last_step"][r]), t))
                st["last_step"][r] = t


class Adam(_Reference):
    """Reference Adam / AdamW / AMSGrad with lazy modes and per-row bias correction."""

    _NAME = "Adam"
    _DEFAULTS = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                     lazy="frozen", bias_correction="row", eps_mode="corrected")

    def _init_state(self, st, P) -> None:
        st["step"] = 0
        st["exp_avg"] = np.zeros_like(P)
        st["exp_avg_sq"] = np.zeros_like(P)
        st["max_exp_avg_sq"] = np.zeros_like(P)
        st["row_step"] = np.zeros(P.shape[0], dtype=np.int64)
        st["last_step"] = np.zeros(P.shape[0], dtype=np.int64)
        st["first_step"] = np.zeros(P.shape[0], dtype=np.int64)

    def _decaying(self, st):
        b1, b2 = self.h["betas"]
        return [("exp_avg", b1), ("exp_avg_sq", b2)]

    def _update(self, st, P, rows, G, t, history) -> None:
        h = self.h
        b1, b2 = h["betas"]
        lr, eps, wd = h["lr"], h["eps"], h["weight_decay"]
        T = P.dtype.type
        m, v, vmax = st["exp_avg"], st["exp_avg_sq"], st["max_exp_avg_sq"]
        for r, g in zip(rows, G):
            shrink = 1.0 - lr * wd
            if h["lazy"] == "decay":
                last = int(st["last_step"][r])
                skipped = t - last - 1
                m[r] *= T(b1 ** skipped)
                v[r] *= T(b2 ** skipped)
                shrink *= self._wd_catch_up(history, last, t - 1)
                st["last_step"][r] = t
                if st["first_step"][r] == 0:
                    st["first_step"][r] = t
                tau = t - int(st["first_step"][r]) + 1
            else:
                st["row_step"][r] += 1
                tau = int(st["row_step"][r])
            if h["bias_correction"] == "global":
                tau = t
            m[r] = T(b1) * m[r] + T(1 - b1) * g
            v[r] = T(b2) * v[r] + T(1 - b2) * g * g
            vv = v[r]
            if h["amsgrad"]:
                vmax[r] = np.maximum(vmax[r], v[r])
                vv = vmax[r]
            bc1, bc2 = 1.0 - b1 ** tau, 1.0 - b2 ** tau
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
                     weight_decay=0.0, rowwise=False)

    def _init_state(self, st, P) -> None:
        st["step"] = 0
        shape = (P.shape[0], 1) if self.h["rowwise"] else P.shape
        st["sum"] = np.full(shape, self.h["initial_accumulator_value"], dtype=P.dtype)

    def _update(self, st, P, rows, G, t, history) -> None:
        h = self.h
        T = P.dtype.type
        clr = h["lr"] / (1 + (t - 1) * h["lr_decay"])
        S = st["sum"]
        for r, g in zip(rows, G):
            if h["rowwise"]:
                S[r] += T(np.mean(g.astype(np.float64) ** 2))
            else:
                S[r] += g * g
            P[r] = T(1.0 - clr * h["weight_decay"]) * P[r] - T(clr) * g / (np.sqrt(S[r])
                                                                         + T(h["eps"]))


class RMSprop(_Reference):
    """Reference RMSprop (centred, momentum, lazy modes, TF1 eps-inside form)."""

    _NAME = "RMSprop"
    _DEFAULTS = dict(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, centered=False,
                     weight_decay=0.0, lazy="frozen", eps_mode="outside", initial_square_avg=0.0)

    def _init_state(self, st, P) -> None:
        st["step"] = 0
        st["square_avg"] = np.full_like(P, self.h["initial_square_avg"])
        st["grad_avg"] = np.zeros_like(P)
        st["momentum_buffer"] = np.zeros_like(P)
        st["last_step"] = np.zeros(P.shape[0], dtype=np.int64)

    def _decaying(self, st):
        a, mu = self.h["alpha"], self.h["momentum"]
        return [("square_avg", a), ("grad_avg", a), ("momentum_buffer", mu)]

    def _update(self, st, P, rows, G, t, history) -> None:
        h = self.h
        T = P.dtype.type
        a, mu, lr, wd = h["alpha"], h["momentum"], h["lr"], h["weight_decay"]
        inside = h["eps_mode"] == "inside"
        v, ga, buf = st["square_avg"], st["grad_avg"], st["momentum_buffer"]
        for r, g in zip(rows, G):
            shrink = 1.0 - lr * wd
            if h["lazy"] == "decay":
                last = int(st["last_step"][r])
                skipped = t - last - 1
                v[r] *= T(a ** skipped)
                ga[r] *= T(a ** skipped)
                buf[r] *= T(mu ** skipped)
                shrink *= self._wd_catch_up(history, last, t - 1)
                st["last_step"][r] = t
            v[r] = T(a) * v[r] + T(1 - a) * g * g
            var = v[r]
            if h["centered"]:
                ga[r] = T(a) * ga[r] + T(1 - a) * g
                var = v[r] - ga[r] * ga[r]
            den = np.sqrt(var + T(h["eps"])) if inside else np.sqrt(var) + T(h["eps"])
            if mu > 0:
                buf[r] = T(mu) * buf[r] + g / den
                P[r] = T(shrink) * P[r] - T(lr) * buf[r]
            else:
                P[r] = T(shrink) * P[r] - T(lr) * g / den


class SGD(_Reference):
    """Reference plain SGD: ``p_r <- p_r - lr * g_r`` on the touched rows (no state)."""

    _NAME = "SGD"
    _DEFAULTS = dict(lr=1e-2)

    def _init_state(self, st, P) -> None:
        st["step"] = 0

    def _update(self, st, P, rows, G, t, history) -> None:
        T = P.dtype.type
        for r, g in zip(rows, G):
            P[r] = P[r] - T(self.h["lr"]) * g
