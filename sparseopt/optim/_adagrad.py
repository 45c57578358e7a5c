"""Lazy Adagrad (element-wise or row-wise accumulators)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from .. import _validation as V
from .._kernels import _rows
from ._base import FLAGS, Optimizer, _width
from ._grad import MergedRows


class Adagrad(Optimizer):
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
        Default 1e-10 (0 with ``preset="tensorflow"``).
    initial_accumulator_value : float, optional
        Starting value of ``G``; default 0 (0.1 with ``preset="tensorflow"``).
    weight_decay : float, default 0
        Decoupled: ``theta *= 1 - lr_t*weight_decay`` on the rows updated.
    rowwise : bool, default False
        One accumulator per row, ``G_r <- G_r + mean(g**2)`` (FBGEMM's EXACT_ROWWISE_ADAGRAD):
        state memory divided by the row width.
    preset : {None, "torch", "tensorflow"}
        ``"torch"``: ``torch.optim.Adagrad``'s sparse path (the defaults). ``"tensorflow"``: TF1
        Adagrad (accumulator starts at 0.1, no eps).
    n_threads, duplicates, nonfinite
        As for :class:`Adam`.

    Examples
    --------
    >>> import numpy as np, sparseopt as so
    >>> w = np.zeros(10, dtype=np.float64)
    >>> opt = so.Adagrad([w], lr=0.5)
    >>> opt.step([so.RowGrad([2, 2], [1.0, 3.0])])
    >>> round(float(w[2]), 6)
    -0.5
    """

    _DEFAULTS = dict(lr=1e-2, lr_decay=0.0, eps=1e-10, initial_accumulator_value=0.0,
                     weight_decay=0.0, rowwise=False)
    _PRESETS = {"torch": {}, "tensorflow": dict(initial_accumulator_value=0.1, eps=0.0)}
    _FIXED = ("rowwise",)

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0,
                 eps: Optional[float] = None, initial_accumulator_value: Optional[float] = None,
                 weight_decay: float = 0.0, rowwise: bool = False, preset: Optional[str] = None,
                 n_threads: Optional[int] = None, duplicates: str = "sum",
                 nonfinite: str = "raise") -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps,
                                      initial_accumulator_value=initial_accumulator_value,
                                      weight_decay=weight_decay, rowwise=rowwise),
                         preset=preset, n_threads=n_threads, duplicates=duplicates,
                         nonfinite=nonfinite)

    def _check_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        g = dict(group)
        for name in ("lr", "lr_decay", "eps", "initial_accumulator_value", "weight_decay"):
            g[name] = V.check_real(name, g[name])
        g["rowwise"] = bool(g["rowwise"])
        V.check_lr_weight_decay(g["lr"], g["weight_decay"])
        self._check_fixed(g)
        return g

    def _array_state_shape(self, sname: str, p):
        if sname == "sum":
            rowwise = self.param_groups[0]["rowwise"] if hasattr(self, "param_groups") else False
            return ((p.shape[0],) if rowwise else p.shape), p.dtype
        return None, None

    def _state_spec(self, group: Dict[str, Any]) -> List[Tuple[str, float]]:
        return [("sum", group["initial_accumulator_value"])]

    def _apply(self, i: int, state: Dict[str, Any], merged: MergedRows,
               group: Dict[str, Any]) -> None:
        n = merged.rows.shape[0]
        if n == 0:
            return
        t = state["step"]
        clr = group["lr"] / (1.0 + (t - 1) * group["lr_decay"])
        p = self._params[i]
        acc = state["sum"]
        _rows.adagrad_rows_update(
            V.rows_view(p), acc.reshape(-1, 1) if group["rowwise"] else V.rows_view(acc),
            merged.values, merged.scratch, merged.rows, merged.src, clr, group["eps"],
            1.0 - clr * group["weight_decay"], FLAGS["ROWWISE"] if group["rowwise"] else 0,
            self._threads(n, _width(p)))

    def _flush(self, i, state, group) -> None:  # pragma: no cover - Adagrad keeps no lazy debt
        pass
