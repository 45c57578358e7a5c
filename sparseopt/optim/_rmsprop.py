"""Lazy RMSprop (plain, centred, with momentum)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import _validation as V
from .._kernels import _halfrows, _rows
from ._base import (DUMMY_F64, DUMMY_I64, DUMMY_POW, FLAGS, ROW_WD, WD_SUM, Optimizer,
                    _Dummies, _width, state_dtype, storage_doc)
from ._grad import MergedRows
from ._rowwise import RowwiseGroups


@storage_doc
class RMSprop(RowwiseGroups, Optimizer):
    """RMSprop (Hinton, Coursera lecture 6e) on the rows a gradient touches.

    Per touched row with merged gradient ``g``::

        v <- alpha*v + (1-alpha)*g**2
        centred: a <- alpha*a + (1-alpha)*g ;  den = sqrt(v - a**2) + eps   (else sqrt(v) + eps)
        momentum mu > 0: buf <- mu*buf + g/den ;  theta <- theta*(1 - lr*wd) - lr*buf
        otherwise:                                theta <- theta*(1 - lr*wd) - lr*g/den

    Parameters
    ----------
    params : ndarray, list of ndarray or dict of str -> ndarray
        C-contiguous float32/float64 arrays of shape ``(n,)`` or ``(n, d)``, updated in place.
    lr : float, default 1e-2
    alpha : float, optional
        Smoothing constant; default 0.99 (0.9 with ``preset="tensorflow"``).
    eps : float, optional
        Default 1e-8 (1e-10, added inside the square root, with ``preset="tensorflow"``). Must
        be > 0: ``v`` (and ``v - a**2`` when centred) can be zero, even when it starts at 1 (a
        long run of zero gradients underflows it), and 0 / 0 would make the row NaN.
    momentum : float, default 0
    centered : bool, default False
    weight_decay : float, default 0
        Decoupled: ``theta *= 1 - lr*weight_decay`` on the rows updated (caught up in
        ``lazy="decay"`` mode).
    lazy : {"frozen", "decay"}, default "frozen"
        ``"decay"``: a row touched after ``s`` skipped steps first has ``v, a *= alpha**s`` and
        ``buf *= mu**s``. Without momentum this is exactly a dense RMSprop; ``flush()`` brings
        every row up to date. The factors are float64 powers from fixed 16 KiB tables (see
        ``sparseopt._reference.power``); catching up weight decay costs one float64 per row.
    rowwise : bool, default False
        One square average per row, ``v <- alpha*v + (1-alpha)*mean(g**2)`` (the mean over the
        row, summed in float64), as row-wise Adagrad keeps its accumulator: a row is divided by
        one scalar. Centred, the gradient average is one scalar per row too,
        ``a <- alpha*a + (1-alpha)*mean(g)``, and ``den = sqrt(v - a**2) + eps``: ``v - a**2``
        is then the variance of all the row's entries pooled (it also counts how far the
        entries' means differ from each other), never below zero in exact arithmetic, and the
        state stays two scalars per row. The momentum buffer stays per element. Every lazy
        mode and preset combines with it. Fixed after construction.
    rowwise_tail : int or list of int, default 0
        With ``rowwise``: the last ``rowwise_tail`` columns of each row keep their own
        scalars (``square_avg`` and ``grad_avg`` become ``(n, 2)``), as for :class:`Adam`.
    preset : {None, "torch", "tensorflow"}
        ``"torch"``: ``torch.optim.RMSprop`` applied to touched rows (the defaults).
        ``"tensorflow"``: TF1 sparse RMSProp (alpha=0.9, eps=1e-10 inside the root, ``v``
        starting at 1).
    n_threads, duplicates, nonfinite
        As for :class:`Adam`.

    {storage_parameters}
    state_dtype : {None, "bfloat16"}, default None
        ``"bfloat16"``: keep ``square_avg`` (and ``grad_avg``, ``momentum_buffer``) as
        bfloat16 bits (uint16 arrays in ``state``), half the memory of float32 state. A touched
        row's state is widened to float32, updated with the weights by the float32 rule and
        rounded back as the weights are (``rounding``; with ``"nearest"`` a square average can
        stall, since ``alpha * v`` rounds back to ``v`` when ``1 - alpha`` is below half a
        bfloat16 ulp, so ``"stochastic"`` is the usual choice); ``initial_square_avg`` is
        stored rounded to nearest. Needs float32 or half-precision parameters,
        ``lazy="frozen"`` and ``rowwise=False``.

    Examples
    --------
    >>> import numpy as np, sparseopt as so
    >>> E = np.ones((100, 4), dtype=np.float32)
    >>> opt = so.RMSprop({"emb": E}, lr=0.01, lazy="decay")
    >>> opt.step({"emb": so.RowGrad([5], np.full((1, 4), 2.0, dtype=np.float32))})
    >>> opt.flush()
    >>> round(float(E[5, 0]), 4)
    0.9

    The square average as bfloat16 bits (uint16 words, the upper half of a float32):

    >>> E = np.zeros((100, 4), dtype=np.float32)
    >>> opt = so.RMSprop([E], lr=0.01, state_dtype="bfloat16")
    >>> opt.step([so.RowGrad([5], np.full((1, 4), 2.0, dtype=np.float32))])
    >>> v = opt.state[0]["square_avg"]
    >>> v.dtype, float((v[5].astype(np.uint32) << 16).view(np.float32)[0])
    (dtype('uint16'), 0.0400390625)
    """

    _HALF = True
    _DEFAULTS = dict(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, centered=False,
                     weight_decay=0.0, lazy="frozen", eps_mode="outside",
                     initial_square_avg=0.0, rowwise=False, rowwise_tail=0)
    _PRESETS = {
        "torch": {},
        "tensorflow": dict(alpha=0.9, eps=1e-10, eps_mode="inside", initial_square_avg=1.0),
    }
    _FIXED = ("lazy", "rowwise", "rowwise_tail")
    _NONNEGATIVE = ("square_avg",)

    def __init__(self, params: Any, lr: float = 1e-2, alpha: Optional[float] = None,
                 eps: Optional[float] = None, momentum: float = 0.0, centered: bool = False,
                 weight_decay: float = 0.0, lazy: str = "frozen", preset: Optional[str] = None,
                 n_threads: Optional[int] = None, duplicates: str = "sum",
                 nonfinite: str = "raise", rowwise: bool = False,
                 dtype: Optional[str] = None, rounding: str = "nearest", seed: int = 0,
                 state_dtype: Optional[str] = None, rowwise_tail: Any = 0) -> None:
        self._state_dtype = V.check_state_dtype(state_dtype)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                                      centered=centered, weight_decay=weight_decay, lazy=lazy,
                                      rowwise=rowwise, rowwise_tail=rowwise_tail),
                         preset=preset, n_threads=n_threads, duplicates=duplicates,
                         nonfinite=nonfinite, dtype=dtype,
                         rounding=rounding, seed=seed)
        if self._bf16_state:
            V.check_bf16_state(self.param_groups[0]["lazy"], self._params)
        V.check_rowwise_storage("RMSprop", self.param_groups[0]["rowwise"], self._kinds,
                                self._bf16_state)
        self._init_tails()

    @property
    def state_dtype(self) -> Optional[str]:
        """``None`` (state in the parameter's precision) or ``"bfloat16"`` (read-only)."""
        return self.__dict__.get("_state_dtype")

    @property
    def _bf16_state(self) -> bool:
        return self.__dict__.get("_state_dtype") is not None

    def _state_shape(self, sname: str, p):
        if self._bf16_state and sname in ("square_avg", "grad_avg", "momentum_buffer"):
            return p.shape, np.dtype(np.uint16)  # bfloat16 bits
        return super()._state_shape(sname, p)

    def _check_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        g = dict(group)
        g["lr"] = V.check_real("lr", g["lr"])
        g["alpha"] = V.check_real("alpha", g["alpha"], high=1.0, high_open=True)
        g["eps"] = V.check_eps(g["eps"])
        g["momentum"] = V.check_real("momentum", g["momentum"], high=1.0, high_open=True)
        g["weight_decay"] = V.check_real("weight_decay", g["weight_decay"])
        g["initial_square_avg"] = V.check_real("initial_square_avg", g["initial_square_avg"])
        g["centered"] = bool(g["centered"])
        g["rowwise"] = V.check_flag("rowwise", g["rowwise"])
        g["rowwise_tail"] = self._check_tail(g.get("rowwise_tail", 0))
        V.check_choice("lazy", g["lazy"], ("frozen", "decay"))
        V.check_choice("eps_mode", g["eps_mode"], ("outside", "inside"))
        V.check_lr_weight_decay(g["lr"], g["weight_decay"])
        self._check_fixed(g)
        if self._bf16_state:
            V.check_bf16_state(g["lazy"], getattr(self, "_params", None))
            V.check_rowwise_bf16_state("RMSprop", g["rowwise"], True)
        return g

    def _check_loaded_values(self, name, arrays, scalars, step, group) -> None:
        # bfloat16 state is checked as the float32 values it holds
        if self._bf16_state:
            arrays = {k: ((arr.astype(np.uint32) << np.uint32(16)).view(np.float32)
                          if arr.dtype == np.uint16 else arr) for k, arr in arrays.items()}
        super()._check_loaded_values(name, arrays, scalars, step, group)
        if "grad_avg" in arrays and arrays["grad_avg"].size:
            # Centred RMSprop divides by sqrt(square_avg - grad_avg**2): a run keeps
            # grad_avg**2 <= square_avg (up to rounding), so state far past it is corrupt.
            sq = arrays["square_avg"].astype(np.float64, copy=False)
            ga = arrays["grad_avg"].astype(np.float64, copy=False)
            bad = np.flatnonzero(ga * ga > sq * (1 + 1e-3) + np.finfo(np.float32).tiny)
            if bad.size:
                j = int(bad[0])
                raise ValueError(
                    f"state_dict: states 'square_avg' and 'grad_avg' of {name} are "
                    f"inconsistent: grad_avg**2 exceeds square_avg at flat position {j} "
                    f"({float(ga.flat[j]) ** 2!r} > {float(sq.flat[j])!r}), which no run of "
                    "centred RMSprop produces")

    def _rowwise(self) -> bool:
        groups = self.__dict__.get("param_groups")
        return bool(groups and groups[0].get("rowwise"))

    def _array_state_shape(self, sname: str, p):
        if sname == "momentum_buffer":
            return p.shape, p.dtype
        if sname in ("square_avg", "grad_avg"):
            return (self._rowwise_shape(p) if self._rowwise() else p.shape), p.dtype
        return None, None

    def _state_spec(self, group: Dict[str, Any]) -> List[Tuple[str, float]]:
        spec = [("square_avg", group["initial_square_avg"])]
        if group["centered"]:
            spec.append(("grad_avg", 0.0))
        if group["momentum"] > 0:
            spec.append(("momentum_buffer", 0.0))
        if group["lazy"] == "decay":
            spec += [("last_step", 0), (WD_SUM, 0.0), (ROW_WD, 0.0)]
        return spec

    def _apply(self, i: int, state: Dict[str, Any], merged: MergedRows,
               group: Dict[str, Any]) -> None:
        lazy_flags, wd_prev, wd_now = self._start_lazy_step(state, group)
        n = merged.rows.shape[0]
        if n == 0:
            return
        p = self._params[i]
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        decay = bool(lazy_flags)
        dummy = _Dummies.rows(state_dtype(p))
        centered, mom = group["centered"], mu > 0
        flags = (lazy_flags
                 | (FLAGS["CENTERED"] if centered else 0)
                 | (FLAGS["MOMENTUM"] if mom else 0))
        inside = group["eps_mode"] == "inside"
        if self._bf16_state:
            kind = self._kinds[i]
            bdummy = np.zeros((1, 1), np.uint16)
            _halfrows.rmsprop_rows_update_bf16_state(
                V.rows_view(p).view(np.uint8), -1 if kind is None else kind,
                V.rows_view(state["square_avg"]),
                V.rows_view(state["grad_avg"]) if centered else bdummy,
                V.rows_view(state["momentum_buffer"]) if mom else bdummy,
                merged.values, merged.scratch, merged.rows, merged.src, lr, group["alpha"], mu,
                group["eps"] if inside else 0.0, 0.0 if inside else group["eps"], 1.0 - lr * wd,
                flags, self._threads(n, _width(p)), self.rounding == "stochastic",
                self.seed | ((i + self._stream_base) << 32), state["step"])
            return
        tail = self._tail(i) if group["rowwise"] else 0
        kernel = (_rows.rmsprop_rowwise_split_update if tail else _rows.rmsprop_rowwise_update
                  if group["rowwise"] else _rows.rmsprop_rows_update)
        self._kernel(i, kernel)(
            V.rows_view(p), V.rows_view(state["square_avg"]),
            V.rows_view(state["grad_avg"]) if centered else dummy,
            V.rows_view(state["momentum_buffer"]) if mom else dummy,
            merged.values, merged.scratch, merged.rows, merged.src,
            state.get("last_step", DUMMY_I64),
            self._pow_table("alpha", group["alpha"]) if decay else DUMMY_POW,
            self._pow_table("momentum", mu) if decay and mom else DUMMY_POW,
            state[ROW_WD] if decay else DUMMY_F64, state["step"], lr, group["alpha"], mu,
            group["eps"] if inside else 0.0, 0.0 if inside else group["eps"], 1.0 - lr * wd,
            wd_prev, wd_now, flags, self._threads(n, _width(p)), *((tail,) if tail else ()))

    def _flush(self, i: int, state: Dict[str, Any], group: Dict[str, Any]) -> None:
        kept = dict(self._state_spec(group))  # the arrays phase 1 checked
        self._flush_lazy(i, state, [
            (sname, hyper, group[hyper])
            for sname, hyper in (("square_avg", "alpha"), ("grad_avg", "alpha"),
                                 ("momentum_buffer", "momentum"))
            if sname in kept])
