"""Lazy Adam / AdamW / AMSGrad."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import _validation as V
from .._kernels import _halfrows, _rows
from ._base import (DUMMY_F64, DUMMY_I64, FLAGS, ROW_WD, WD_SUM, Optimizer, _Dummies, _width,
                    state_dtype, storage_doc)
from ._grad import MergedRows
from ._rowwise import RowwiseGroups


def _reference_widen(h: np.ndarray) -> np.ndarray:
    return (h.astype(np.uint32) << np.uint32(16)).view(np.float32)


@storage_doc
class Adam(RowwiseGroups, Optimizer):
    """Adam (Kingma & Ba, 2015) that reads and writes only the rows a gradient touches.

    Per touched row ``r`` with merged gradient ``g``::

        m <- beta1*m + (1-beta1)*g ;  v <- beta2*v + (1-beta2)*g**2
        theta <- theta*(1 - lr*weight_decay) - lr * m_hat / (sqrt(v_hat) + eps)

    with ``m_hat = m / (1 - beta1**tau_r)``, ``v_hat = v / (1 - beta2**tau_r)``.

    Parameters
    ----------
    params : ndarray, list of ndarray or dict of str -> ndarray
        C-contiguous float32/float64 arrays of shape ``(n,)`` or ``(n, d)``, updated in place.
    lr : float, default 1e-3
        Learning rate; may be changed between steps (``opt.lr = ...``).
    betas : (float, float), default (0.9, 0.999)
    eps : float, optional
        Added to the denominator; default 1e-8 (1e-7 with ``preset="tensorflow"``). Must be
        > 0: a row whose gradient and second moment are zero would otherwise compute 0 / 0.
    weight_decay : float, default 0
        Decoupled (AdamW, Loshchilov & Hutter 2019): a row is multiplied by
        ``1 - lr*weight_decay`` when it is updated; with ``lazy="decay"`` it first receives the
        factors of the steps it missed.
    amsgrad : bool, default False
        Keep ``v_max = max(v_max, v)`` and use it in place of ``v`` (Reddi et al., 2018).
    lazy : {"frozen", "decay"}, optional
        ``"frozen"`` (default): untouched rows and their moments do not change (PyTorch
        SparseAdam, TF LazyAdam). ``"decay"``: a row touched after ``s`` skipped steps first
        has ``m *= beta1**s``, ``v *= beta2**s``, so its moments equal those of a dense Adam that
        saw zero gradients meanwhile; ``flush()`` applies pending decay to every row.
    bias_correction : {"row", "global"}, optional
        ``"row"`` (default): ``tau_r`` counts the row's own steps (frozen) or the steps since its
        first touch (decay), so a row first touched late takes a first step of size ``lr``.
        ``"global"``: ``tau = t``, as PyTorch and TensorFlow do. Powers ``beta**tau`` (and the
        decay factors ``beta**s``) are computed in float64 from fixed 16 KiB tables, however
        long training runs (see ``sparseopt._reference.power``).
    rowwise : {False, "v"}, default False
        ``"v"``: partial row-wise Adam (FBGEMM's row-wise state): ``m`` stays per element, ``v``
        (and ``v_max``) is one scalar per row, ``v <- beta2*v + (1-beta2)*mean(g**2)`` (the
        mean over the row, summed in float64), so a row is divided by one
        ``sqrt(v_hat) + eps``. State per row of width ``d``: ``d + 1`` values instead of
        ``2d``. Every lazy mode, bias correction, ``amsgrad`` and preset combines with it (a
        preset then sets only its conventions). Fixed after construction.
    rowwise_tail : int or list of int, default 0
        With ``rowwise``: the last ``rowwise_tail`` columns of each row keep their own
        row-wise scalars (``v`` and ``v_max`` become ``(n, 2)``: the leading columns, the
        tail), so a bias kept as a row's last column beside factors (whose gradient is on
        another scale) does not set the factors' step size. 0 keeps one group per row; a
        list gives one value per parameter, in order. Each non-zero value needs a 2-D
        float32/float64 parameter of width above it. Fixed after construction.
    preset : {None, "torch", "tensorflow"}
        ``"torch"`` matches ``torch.optim.SparseAdam`` (global correction, frozen, eps added to
        the uncorrected ``sqrt(v)``); ``"tensorflow"`` matches TF-Addons LazyAdam (the same with
        eps=1e-7). Explicit arguments override a preset.
    n_threads : int, optional
        Threads for large steps; ``None`` follows OpenMP's default (and threadpoolctl).
    duplicates : {"sum", "mean"}, default "sum"
        How repeated indices of a ``RowGrad`` are merged.
    nonfinite : {"raise", "skip", "ignore"}, default "raise"
        What a gradient row with NaN/inf does: raise ``FloatingPointError`` before anything
        changes, leave the row out of the step, or apply it.

    {storage_parameters}
    state_dtype : {None, "bfloat16"}, default None
        ``"bfloat16"``: keep the moments as bfloat16 bits (uint16 arrays in ``state``), half
        the memory of float32 moments. Each touched row's moments are widened to float32,
        updated with the weights by the float32 rule and rounded back as the weights are
        (``rounding``; with ``"nearest"`` a second moment can stall, since ``beta2 * v``
        rounds back to ``v`` when ``1 - beta2`` is below half a bfloat16 ulp, so
        ``"stochastic"`` is the usual choice). Needs float32 or half-precision parameters
        and ``lazy="frozen"``.
    state_layout : {"auto", "direct", "compact"}, default "auto"
        Where the moments of a 2-D table live. ``"direct"``: ``(n, d)`` arrays indexed by
        row. ``"compact"``: *slots* given to rows in the order steps first touch them, so new
        rows fill the moment buffers sequentially (a page fault per page of new rows instead
        of one per row) and the resident memory follows the rows touched. ``"auto"``: compact
        for tables whose moments take at least ``sparseopt._utils.LAZY_ZEROS_MIN_BYTES``
        (4 MiB), direct for smaller ones. Results are bitwise the same. Compact applies to
        float32 / float64 tables with element-wise moments; half-precision tables,
        ``state_dtype="bfloat16"`` and ``rowwise="v"`` keep the direct layout. ``opt.state``
        of a compact table holds the moments as slot rows (row ``s`` belongs to table row
        ``row_of_slot[s]``) with the maps ``slot_of_row`` (slot + 1 per row, 0: none),
        ``row_of_slot`` and ``n_slots``; ``state_dict()`` returns the moments as ``(n, d)``
        arrays by row, and ``load_state_dict`` puts loaded moments back in slots (rows in
        order). Fixed after construction.

    Examples
    --------
    >>> import numpy as np, sparseopt as so
    >>> E = np.zeros((1000, 8), dtype=np.float32)
    >>> opt = so.Adam([E], lr=0.01)
    >>> opt.step([so.RowGrad(np.array([3, 7, 3]), np.ones((3, 8), dtype=np.float32))])
    >>> round(float(E[3, 0]), 6), float(E[0, 0])   # a first step moves a row by ~lr
    (-0.01, 0.0)

    A bfloat16 table (uint16 words; the value is the upper half of a float32):

    >>> H = np.zeros((1000, 8), dtype=np.uint16)
    >>> opt = so.Adam([H], lr=0.01, dtype="bfloat16")
    >>> opt.step([so.RowGrad(np.array([3]), np.ones((1, 8), dtype=np.float32))])
    >>> float((H[3].astype(np.uint32) << 16).view(np.float32)[0]), opt.state[0]["exp_avg"].dtype
    (-0.010009765625, dtype('float32'))
    """

    _HALF = True
    _DEFAULTS = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                     lazy="frozen", bias_correction="row", eps_mode="corrected",
                     rowwise=False, rowwise_tail=0)
    _PRESETS = {
        "torch": dict(bias_correction="global", lazy="frozen", eps_mode="uncorrected"),
        "tensorflow": dict(bias_correction="global", lazy="frozen", eps_mode="uncorrected",
                           eps=1e-7),
    }
    _FIXED = ("lazy", "bias_correction", "rowwise", "rowwise_tail")
    _NONNEGATIVE = ("exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params: Any, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: Optional[float] = None, weight_decay: float = 0.0, amsgrad: bool = False,
                 lazy: Optional[str] = None, bias_correction: Optional[str] = None,
                 preset: Optional[str] = None, n_threads: Optional[int] = None,
                 duplicates: str = "sum", nonfinite: str = "raise",
                 rowwise: Any = False, dtype: Optional[str] = None,
                 rounding: str = "nearest", seed: int = 0,
                 state_dtype: Optional[str] = None, rowwise_tail: Any = 0,
                 state_layout: str = "auto") -> None:
        self._state_dtype = V.check_state_dtype(state_dtype)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, lazy=lazy,
                                      bias_correction=bias_correction, rowwise=rowwise,
                                      rowwise_tail=rowwise_tail),
                         preset=preset, n_threads=n_threads, duplicates=duplicates,
                         nonfinite=nonfinite, dtype=dtype,
                         rounding=rounding, seed=seed)
        if self._bf16_state:
            V.check_bf16_state(self.param_groups[0]["lazy"], self._params)
        V.check_rowwise_storage("Adam", self.param_groups[0]["rowwise"], self._kinds,
                                self._bf16_state)
        self._init_tails()
        self._init_layout(state_layout)

    def _init_layout(self, state_layout: str) -> None:
        """Which tables keep their moments in slots (the rule: ``state_layout``)."""
        plain = not self._bf16_state and not self._rowwise()
        self._init_state_layout(state_layout, [plain and k is None for k in self._kinds])

    def _check_adam_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        g = dict(group)
        g["lr"] = V.check_real("lr", g["lr"])
        g["betas"] = V.check_betas(g["betas"])
        g["eps"] = V.check_eps(g["eps"])
        g["weight_decay"] = V.check_real("weight_decay", g["weight_decay"])
        g["amsgrad"] = bool(g["amsgrad"])
        g["rowwise"] = V.check_adam_rowwise(g["rowwise"])
        g["rowwise_tail"] = self._check_tail(g.get("rowwise_tail", 0))
        V.check_choice("lazy", g["lazy"], ("frozen", "decay"))
        V.check_choice("bias_correction", g["bias_correction"], ("row", "global"))
        V.check_choice("eps_mode", g["eps_mode"], ("corrected", "uncorrected"))
        V.check_lr_weight_decay(g["lr"], g["weight_decay"])
        self._check_fixed(g)
        return g

    # with compact state: the moments and the per-row step count of bias_correction="row"
    _SLOTTED = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "row_step")

    @property
    def state_layout(self) -> str:
        """``"auto"``, ``"direct"`` or ``"compact"``, as constructed (read-only)."""
        return self.__dict__.get("_state_layout_name", "direct")

    @property
    def _INTERLEAVED(self) -> Tuple[str, ...]:
        # m and v share rows only when they have the same shape (not row-wise)
        return () if self._rowwise() else ("exp_avg", "exp_avg_sq")

    def _rowwise(self) -> bool:
        groups = self.__dict__.get("param_groups")
        return bool(groups and groups[0].get("rowwise"))

    def _array_state_shape(self, sname: str, p):
        if sname == "exp_avg":
            return p.shape, p.dtype
        if sname in ("exp_avg_sq", "max_exp_avg_sq"):
            return (self._rowwise_shape(p) if self._rowwise() else p.shape), p.dtype
        return None, None

    def _state_shape(self, sname: str, p):
        if self._bf16_state and sname in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            return p.shape, np.dtype(np.uint16)  # bfloat16 bits
        return super()._state_shape(sname, p)

    @property
    def state_dtype(self) -> Optional[str]:
        """``None`` (moments in the parameter's precision) or ``"bfloat16"`` (read-only)."""
        return self.__dict__.get("_state_dtype")

    @property
    def _bf16_state(self) -> bool:
        return self.__dict__.get("_state_dtype") is not None

    def _check_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        g = self._check_adam_group(group)
        if self._bf16_state:
            V.check_bf16_state(g["lazy"], getattr(self, "_params", None))
        return g

    def _check_loaded_values(self, name, arrays, scalars, step, group) -> None:
        """bfloat16 moments are checked as the float32 values they hold."""
        if self._bf16_state:
            arrays = {k: (_reference_widen(a) if a.dtype == np.uint16 else a)
                      for k, a in arrays.items()}
        super()._check_loaded_values(name, arrays, scalars, step, group)

    def _state_spec(self, group: Dict[str, Any]) -> List[Tuple[str, float]]:
        spec = [("exp_avg", 0.0), ("exp_avg_sq", 0.0)]
        if group["amsgrad"]:
            spec.append(("max_exp_avg_sq", 0.0))
        if group["lazy"] == "decay":
            spec += [("last_step", 0), (WD_SUM, 0.0), (ROW_WD, 0.0)]
            if group["bias_correction"] == "row":
                spec.append(("first_step", 0))
        elif group["bias_correction"] == "row":
            spec.append(("row_step", 0))
        return spec

    def _apply(self, i: int, state: Dict[str, Any], merged: MergedRows,
               group: Dict[str, Any]) -> None:
        lazy_flags, wd_prev, wd_now = self._start_lazy_step(state, group)
        n = merged.rows.shape[0]
        if n == 0:
            return
        p = self._params[i]
        lr, wd = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        flags = (lazy_flags
                 | (FLAGS["AMSGRAD"] if group["amsgrad"] else 0)
                 | (FLAGS["ROW_BIAS"] if group["bias_correction"] == "row" else 0)
                 | (FLAGS["EPS_RAW"] if group["eps_mode"] == "uncorrected" else 0))
        if self._bf16_state:
            self._apply_bf16_state(i, p, state, merged, group, flags)
            return
        tail = self._tail(i) if group["rowwise"] else 0
        if self._is_compact(i):  # never row-wise: compact tables have element-wise moments
            kernel = _rows.adam_slots_update
            rows = (merged.rows, self._state_rows(i, state, merged))
        else:
            kernel = self._kernel(i, _rows.adam_rowwise_split_update if tail
                                  else _rows.adam_rowwise_update if group["rowwise"]
                                  else _rows.adam_rows_update)
            rows = (merged.rows,)
        kernel(
            V.rows_view(p), V.rows_view(state["exp_avg"]), V.rows_view(state["exp_avg_sq"]),
            V.rows_view(state["max_exp_avg_sq"]) if group["amsgrad"] else _Dummies.rows(state_dtype(p)),
            merged.values, merged.scratch, *rows, merged.src,
            state.get("row_step", DUMMY_I64), state.get("last_step", DUMMY_I64),
            state.get("first_step", DUMMY_I64),
            self._pow_table("beta1", beta1), self._pow_table("beta2", beta2),
            state[ROW_WD] if lazy_flags else DUMMY_F64,
            state["step"], lr, beta1, beta2, group["eps"], 1.0 - lr * wd, wd_prev, wd_now, flags,
            self._threads(n, _width(p)), *((tail,) if tail else ()))

    def _apply_bf16_state(self, i, p, state, merged, group, flags) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        kind = self._kinds[i]
        n = merged.rows.shape[0]
        dummy = np.zeros((1, 1), np.uint16)
        _halfrows.adam_rows_update_bf16_state(
            V.rows_view(p).view(np.uint8), -1 if kind is None else kind,
            V.rows_view(state["exp_avg"]), V.rows_view(state["exp_avg_sq"]),
            V.rows_view(state["max_exp_avg_sq"]) if group["amsgrad"] else dummy,
            merged.values, merged.scratch, merged.rows, merged.src,
            state.get("row_step", DUMMY_I64),
            self._pow_table("beta1", beta1), self._pow_table("beta2", beta2),
            state["step"], lr, beta1, beta2, group["eps"], 1.0 - lr * wd, flags,
            self._threads(n, _width(p)), self.rounding == "stochastic",
            self.seed | ((i + self._stream_base) << 32), state["step"])

    def _flush(self, i: int, state: Dict[str, Any], group: Dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        self._flush_lazy(i, state, [("exp_avg", "beta1", beta1),
                                    ("exp_avg_sq", "beta2", beta2)])
