"""Lazy Adagrad (element-wise or row-wise accumulators)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import _reference, _validation as V
from .._kernels import _halfrows, _rows
from ._base import FLAGS, Optimizer, _width, storage_doc
from ._grad import MergedRows
from ._rowwise import RowwiseGroups


def _widen_bf16(h: np.ndarray) -> np.ndarray:
    """The float32 values of bfloat16 bits (uint16), exactly."""
    return (h.astype(np.uint32) << np.uint32(16)).view(np.float32)


@storage_doc
class Adagrad(RowwiseGroups, Optimizer):
    """Adagrad (Duchi, Hazan & Singer, 2011) on the rows a gradient touches.

    Per touched row with merged gradient ``g`` at step ``t``::

        G <- G + g**2
        theta <- theta*(1 - lr_t*weight_decay) - lr_t * g / (sqrt(G) + eps)
        lr_t = lr / (1 + (t - 1) * lr_decay)

    Adagrad needs no lazy catch-up: a skipped step adds nothing to ``G``.

    Parameters
    ----------
    params : ndarray, list of ndarray or dict of str -> ndarray
        C-contiguous float32/float64 arrays of shape ``(n,)`` or ``(n, d)``, updated in place.
    lr : float, default 1e-2
    lr_decay : float, default 0
    eps : float, optional
        Default 1e-10 (0 with ``preset="tensorflow"``). ``eps=0`` is allowed only when ``G``
        can never be zero: with ``initial_accumulator_value > 0`` (``G`` only grows), and then
        state loaded or kept from before must have every ``G > 0``; otherwise a zero gradient
        on a zero accumulator would compute 0 / 0. A ``ValueError`` naming ``eps`` says so.
    initial_accumulator_value : float, optional
        Starting value of ``G``; default 0 (0.1 with ``preset="tensorflow"``).
    weight_decay : float, default 0
        Decoupled: ``theta *= 1 - lr_t*weight_decay`` on the rows updated.
    rowwise : bool, default False
        One accumulator per row, ``G_r <- G_r + mean(g**2)`` (FBGEMM's EXACT_ROWWISE_ADAGRAD):
        state memory divided by the row width.
    rowwise_tail : int or list of int, default 0
        With ``rowwise``: the last ``rowwise_tail`` columns of each row keep their own
        accumulator (``sum`` becomes ``(n, 2)``), as for :class:`Adam`; float32 / float64
        parameters only.
    preset : {None, "torch", "tensorflow"}
        ``"torch"``: ``torch.optim.Adagrad``'s sparse path (the defaults). ``"tensorflow"``: TF1
        Adagrad (accumulator starts at 0.1, no eps).
    n_threads, duplicates, nonfinite
        As for :class:`Adam`.

    {storage_parameters}
    state_dtype : {None, "bfloat16"}, default None
        ``"bfloat16"``: keep ``G`` as bfloat16 bits (a uint16 array ``state[...]["sum"]``), half
        the memory of a float32 accumulator. A touched row's ``G`` is widened to float32,
        updated with the weights by the float32 rule and rounded back as the weights are
        (``rounding``); ``initial_accumulator_value`` is stored rounded to nearest. With
        ``"nearest"``, ``G`` stops growing once ``g**2`` is below half a bfloat16 ulp of it.
        Needs float32 or half-precision parameters and ``rowwise=False``.

    Examples
    --------
    >>> import numpy as np, sparseopt as so
    >>> w = np.zeros(10, dtype=np.float64)
    >>> opt = so.Adagrad([w], lr=0.5)
    >>> opt.step([so.RowGrad([2, 2], [1.0, 3.0])])
    >>> round(float(w[2]), 6)
    -0.5

    The accumulator as bfloat16 bits (uint16 words, the upper half of a float32):

    >>> E = np.zeros((100, 4), dtype=np.float32)
    >>> opt = so.Adagrad([E], lr=0.5, state_dtype="bfloat16")
    >>> opt.step([so.RowGrad([2], np.full((1, 4), 3.0, dtype=np.float32))])
    >>> G = opt.state[0]["sum"]
    >>> G.dtype, float((G[2].astype(np.uint32) << 16).view(np.float32)[0]), float(E[2, 0])
    (dtype('uint16'), 9.0, -0.5)
    """

    _HALF = True
    _DEFAULTS = dict(lr=1e-2, lr_decay=0.0, eps=1e-10, initial_accumulator_value=0.0,
                     weight_decay=0.0, rowwise=False, rowwise_tail=0)
    _PRESETS = {"torch": {}, "tensorflow": dict(initial_accumulator_value=0.1, eps=0.0)}
    _FIXED = ("rowwise", "rowwise_tail")
    _NONNEGATIVE = ("sum",)

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0,
                 eps: Optional[float] = None, initial_accumulator_value: Optional[float] = None,
                 weight_decay: float = 0.0, rowwise: bool = False, preset: Optional[str] = None,
                 n_threads: Optional[int] = None, duplicates: str = "sum",
                 nonfinite: str = "raise", dtype: Optional[str] = None,
                 rounding: str = "nearest", seed: int = 0,
                 state_dtype: Optional[str] = None, rowwise_tail: Any = 0) -> None:
        self._state_dtype = V.check_state_dtype(state_dtype)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps,
                                      initial_accumulator_value=initial_accumulator_value,
                                      weight_decay=weight_decay, rowwise=rowwise,
                                      rowwise_tail=rowwise_tail),
                         preset=preset, n_threads=n_threads, duplicates=duplicates,
                         nonfinite=nonfinite, dtype=dtype,
                         rounding=rounding, seed=seed)
        if self._bf16_state:
            V.check_bf16_state("frozen", self._params)
        V.check_rowwise_bf16_state("Adagrad", self.param_groups[0]["rowwise"],
                                   self._bf16_state)
        self._init_tails()

    @property
    def state_dtype(self) -> Optional[str]:
        """``None`` (``G`` in the parameter's precision) or ``"bfloat16"`` (read-only)."""
        return self.__dict__.get("_state_dtype")

    @property
    def _bf16_state(self) -> bool:
        return self.__dict__.get("_state_dtype") is not None

    def _state_shape(self, sname: str, p):
        if self._bf16_state and sname == "sum":
            return p.shape, np.dtype(np.uint16)  # bfloat16 bits
        return super()._state_shape(sname, p)

    def _check_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        g = dict(group)
        for name in ("lr", "lr_decay", "initial_accumulator_value", "weight_decay"):
            g[name] = V.check_real(name, g[name])
        # G starts at initial_accumulator_value and only grows, so eps may be 0 exactly when
        # that start is > 0 in every dtype the accumulator can have (float32 included).
        start = np.float32(g["initial_accumulator_value"])
        if self._bf16_state:  # stored rounded to nearest bfloat16 (a tiny start becomes 0)
            start = _widen_bf16(_reference.float32_to_bfloat16([start]))[0]
        positive_start = start > 0
        g["eps"] = V.check_eps(
            g["eps"], allow_zero=bool(positive_start),
            zero_hint="Adagrad allows eps=0 only with initial_accumulator_value > 0, got "
                      f"{g['initial_accumulator_value']!r}")
        g["rowwise"] = bool(g["rowwise"])
        g["rowwise_tail"] = self._check_tail(g.get("rowwise_tail", 0))
        V.check_rowwise_bf16_state("Adagrad", g["rowwise"], self._bf16_state)
        V.check_lr_weight_decay(g["lr"], g["weight_decay"])
        self._check_fixed(g)
        return g

    def _init_runtime(self) -> None:
        super()._init_runtime()
        # parameter key -> the accumulator array known to hold only values > 0 (eps=0 needs it)
        self._positive: Dict[Any, np.ndarray] = {}

    _RUNTIME = Optimizer._RUNTIME + ("_positive",)

    def _check_ready_extra(self, i: int, st: Dict[str, Any], group: Dict[str, Any]) -> None:
        """With eps=0 every accumulator value must be > 0. Kept state is scanned once (when eps
        becomes 0 or the array was replaced) and remembered; arrays this optimizer allocated
        with a positive start, or loaded after a scan, are known to be positive."""
        if group["eps"] != 0.0:
            return
        key = self._keys[i]
        acc = st.get("sum")
        if acc is None or self._positive.get(key) is acc:
            return  # (a missing accumulator is allocated at initial_accumulator_value > 0)
        if acc.dtype == np.uint16:  # bfloat16 bits
            acc = _widen_bf16(acc)
        if acc.size and not acc.min() > 0:
            raise ValueError(
                f"eps=0 needs every accumulator value > 0, but state 'sum' of "
                f"{V.describe(key)} holds values <= 0 (it started at 0 or was edited); use "
                "eps > 0"
            )
        self._positive[key] = st["sum"]

    def _loaded(self, group: Dict[str, Any]) -> None:
        self._positive = {}
        if group["eps"] == 0.0:  # _check_loaded_values established sum > 0
            self._positive = {k: st["sum"] for k, st in self.state.items() if "sum" in st}

    def _check_loaded_values(self, name, arrays, scalars, step, group) -> None:
        # bfloat16 accumulators are checked as the float32 values they hold
        if self._bf16_state:
            arrays = {k: (_widen_bf16(a) if a.dtype == np.uint16 else a)
                      for k, a in arrays.items()}
        super()._check_loaded_values(name, arrays, scalars, step, group)
        if group["eps"] == 0.0 and "sum" in arrays:
            V.check_state_values(name, "sum", arrays["sum"], low=0.0, low_open=True,
                                 what=" when eps=0 (a zero accumulator would divide 0 by 0)")

    def _array_state_shape(self, sname: str, p):
        if sname == "sum":
            rowwise = self.param_groups[0]["rowwise"] if hasattr(self, "param_groups") else False
            return (self._rowwise_shape(p) if rowwise else p.shape), p.dtype
        return None, None

    def _state_spec(self, group: Dict[str, Any]) -> List[Tuple[str, float]]:
        return [("sum", group["initial_accumulator_value"])]

    def _apply(self, i: int, state: Dict[str, Any], merged: MergedRows,
               group: Dict[str, Any]) -> None:
        if group["eps"] == 0.0:
            # phase 1 checked kept state; new state started at initial_accumulator_value > 0
            self._positive[self._keys[i]] = state["sum"]
        n = merged.rows.shape[0]
        if n == 0:
            return
        t = state["step"]
        clr = group["lr"] / (1.0 + (t - 1) * group["lr_decay"])
        p = self._params[i]
        acc = state["sum"]
        if self._bf16_state:
            kind = self._kinds[i]
            _halfrows.adagrad_rows_update_bf16_state(
                V.rows_view(p).view(np.uint8), -1 if kind is None else kind, V.rows_view(acc),
                merged.values, merged.scratch, merged.rows, merged.src, clr, group["eps"],
                1.0 - clr * group["weight_decay"], self._threads(n, _width(p)),
                self.rounding == "stochastic", self.seed | ((i + self._stream_base) << 32),
                state["step"])
            return
        tail = self._tail(i) if group["rowwise"] else 0
        if tail:  # two accumulators per row (float32 / float64 parameters only)
            _rows.adagrad_rowwise_update(
                V.rows_view(p), acc, merged.values, merged.scratch, merged.rows, merged.src,
                clr, group["eps"], 1.0 - clr * group["weight_decay"], tail,
                self._threads(n, _width(p)))
            return
        self._kernel(i, _rows.adagrad_rows_update)(
            V.rows_view(p), acc.reshape(-1, 1) if group["rowwise"] else V.rows_view(acc),
            merged.values, merged.scratch, merged.rows, merged.src, clr, group["eps"],
            1.0 - clr * group["weight_decay"], FLAGS["ROWWISE"] if group["rowwise"] else 0,
            self._threads(n, _width(p)))

    def _flush(self, i, state, group) -> None:  # pragma: no cover - Adagrad keeps no lazy debt
        pass
