"""FTRL-Proximal (per-coordinate, McMahan et al. 2013)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import _validation as V
from .._kernels import _rows
from ._base import Optimizer, _width
from ._grad import MergedRows


class Ftrl(Optimizer):
    """FTRL-Proximal (McMahan et al., 2013, "Ad Click Prediction: a View from the Trenches")
    on the rows a gradient touches.

    Each coordinate keeps ``z`` (the linear term) and ``n`` (the sum of squared gradients,
    starting at ``initial_accumulator_value``); its weight is a function of the two. Per
    touched coordinate with merged gradient ``g`` and current weight ``w``, with
    ``p = -lr_power`` (0.5 by default)::

        sigma = ((n + g**2)**p - n**p) / lr            # >= 0: the step's added curvature
        z <- z + (g + c*l2_shrinkage*w) - sigma*w
        n <- n + g**2
        w <- 0                                     if |z| <= l1
             (sign(z)*l1 - z) / (n**p / lr + L2)   otherwise

    With ``convention="tensorflow"`` (TensorFlow's ``SparseApplyFtrlV2`` and
    ``tf.keras.optimizers.Ftrl``) ``c = 2`` and ``L2 = 2*(l2 + beta/(2*lr))``: TF's penalties
    are ``l2*w**2`` and ``l2_shrinkage*w**2`` (gradients ``2*l2*w``, ``2*l2_shrinkage*w``) and
    ``beta`` is folded into ``l2``. With ``convention="paper"`` (the paper's Algorithm 1, as
    Vowpal Wabbit's ``--ftrl`` applies it) ``c = 1`` and the denominator is
    ``(beta + n**p)/lr + l2``. The two agree when the paper's ``l2`` is twice TF's. A
    coordinate whose denominator is 0 (no gradient yet, with ``beta = l2 = 0`` and ``n = 0``)
    gets weight 0.

    FTRL needs no lazy catch-up: an untouched row's weights depend on its own ``z`` and ``n``
    only, so rows no gradient touches are never read or written and owe nothing. Weights
    whose ``|z| <= l1`` are exactly 0 (the sparsity that L1 buys). The parameter's starting
    values matter only through ``sigma*w`` at a row's first update; the weights after that
    come from ``z`` and ``n``.

    Parameters
    ----------
    params : ndarray, list of ndarray or dict of str -> ndarray
        C-contiguous float32/float64 arrays of shape ``(n,)`` or ``(n, d)``, updated in place.
    lr : float, default 1e-3
        ``alpha`` of the paper, > 0 (TensorFlow's default; Vowpal Wabbit's ``--ftrl_alpha``
        default is 0.005, which ``preset="vw"`` does not set: pass ``lr`` with it).
    beta : float, optional
        Default 0 (TensorFlow's); 0.1 with ``preset="vw"`` (VW's ``--ftrl_beta``).
    l1, l2, l2_shrinkage : float, default 0
        L1 and L2 strengths, and TensorFlow's L2 shrinkage (a penalty that enters the
        gradient, not the denominator); scaled as ``convention`` says.
    lr_power : float, default -0.5
        <= 0; -0.5 is the paper's per-coordinate ``1/sqrt(n)`` rate, 0 a constant rate.
    initial_accumulator_value : float, optional
        Starting ``n``, >= 0; default 0.1 (TensorFlow's), 0 with ``preset="vw"``.
    convention : {"tensorflow", "paper"}, optional
        How ``l2``, ``l2_shrinkage`` and ``beta`` enter the update (above); default
        ``"tensorflow"``, ``"paper"`` with ``preset="vw"``.
    preset : {None, "tensorflow", "vw"}
        ``"tensorflow"``: the defaults above (``tf.keras.optimizers.Ftrl``). ``"vw"``: Vowpal
        Wabbit's ``--ftrl`` (beta 0.1, ``n`` from 0, the paper's convention).
        Explicit arguments override a preset.
    n_threads, duplicates, nonfinite
        As for :class:`Adam`.

    Examples
    --------
    TensorFlow's update, one coordinate, ``lr=0.5``, ``l1=0.1``, ``initial_accumulator_value
    =0.1``: the gradient 0.3 gives ``n = 0.19``, ``z = 0.3 - (sqrt(0.19) - sqrt(0.1))/0.5 * 0``
    and ``w = (0.1 - 0.3) / (sqrt(0.19)/0.5)``:

    >>> import numpy as np, sparseopt as so
    >>> w = np.zeros(4)
    >>> opt = so.Ftrl([w], lr=0.5, l1=0.1)
    >>> opt.step([so.RowGrad([2], [0.3])])
    >>> round(float(w[2]), 6), float(w[0])
    (-0.229416, 0.0)
    >>> round(float((0.1 - 0.3) / (np.sqrt(0.19) / 0.5)), 6)
    -0.229416
    """

    _DEFAULTS = dict(lr=1e-3, beta=0.0, l1=0.0, l2=0.0, l2_shrinkage=0.0, lr_power=-0.5,
                     initial_accumulator_value=0.1, convention="tensorflow")
    _PRESETS = {
        "tensorflow": {},
        "vw": dict(beta=0.1, initial_accumulator_value=0.0, convention="paper"),
    }
    _NONNEGATIVE = ("n",)

    def __init__(self, params: Any, lr: float = 1e-3, beta: Optional[float] = None,
                 l1: float = 0.0, l2: float = 0.0, l2_shrinkage: float = 0.0,
                 lr_power: float = -0.5, initial_accumulator_value: Optional[float] = None,
                 convention: Optional[str] = None, preset: Optional[str] = None,
                 n_threads: Optional[int] = None, duplicates: str = "sum",
                 nonfinite: str = "raise") -> None:
        super().__init__(params, dict(lr=lr, beta=beta, l1=l1, l2=l2, l2_shrinkage=l2_shrinkage,
                                      lr_power=lr_power,
                                      initial_accumulator_value=initial_accumulator_value,
                                      convention=convention),
                         preset=preset, n_threads=n_threads, duplicates=duplicates,
                         nonfinite=nonfinite)
        # A row of the (single) parameter that takes no penalty (-1: none): the linear
        # models' intercept, set by them; not a hyper-parameter and not in state_dict.
        self._free_row = -1

    def _check_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        return V.check_ftrl_group(group)

    def _array_state_shape(self, sname: str, p):
        if sname in ("z", "n"):
            return p.shape, p.dtype
        return None, None

    def _state_spec(self, group: Dict[str, Any]) -> List[Tuple[str, float]]:
        return [("z", 0.0), ("n", group["initial_accumulator_value"])]

    @staticmethod
    def _kernel_scalars(group: Dict[str, Any]) -> Tuple[float, float, float, float, float, float]:
        """``(lr, b0, l1, l2, shr, pw)`` of ``_rows.ftrl_rows_update``: the convention's
        factors applied in float64 (the reference computes the same numbers)."""
        lr = group["lr"]
        if group["convention"] == "tensorflow":
            # TF folds beta into l2 (l2 + beta/(2 lr)) and doubles both L2 terms
            return (lr, 0.0, group["l1"], 2.0 * (group["l2"] + group["beta"] / (2.0 * lr)),
                    2.0 * group["l2_shrinkage"], -group["lr_power"])
        return (lr, group["beta"], group["l1"], group["l2"], group["l2_shrinkage"],
                -group["lr_power"])

    def _apply(self, i: int, state: Dict[str, Any], merged: MergedRows,
               group: Dict[str, Any]) -> None:
        n = merged.rows.shape[0]
        if n == 0:
            return
        p = self._params[i]
        _rows.ftrl_rows_update(
            V.rows_view(p), V.rows_view(state["z"]), V.rows_view(state["n"]), merged.values,
            merged.scratch, merged.rows, merged.src, *self._kernel_scalars(group),
            self._free_row, self._threads(n, _width(p)))

    def _refresh(self) -> None:
        """Recompute the weights of every row that has taken a non-zero gradient (some ``n``
        above ``initial_accumulator_value``) from its ``z`` and ``n`` under the current
        hyper-parameters, as a step with a zero gradient would, without ``l2_shrinkage`` and
        without advancing the step count.

        A row's weights are otherwise recomputed only when a gradient touches it; the linear
        models raise ``l1`` / ``l2`` with every step (``linear_model._base._ftrl_penalty``),
        so at the end of each epoch they bring every row to the current penalty (rows that
        were not touched since it grew then take their exact zeros)."""
        with self._lock:
            group = self._current_group()
            lr, b0, l1, l2, _, pw = self._kernel_scalars(group)
            for i, key in enumerate(self._keys):
                st = self._state_of(i)
                if not st:
                    continue
                self._check_ready(i, group, advancing=False)
                p = self._params[i]
                n = V.rows_view(st["n"])
                rows = np.flatnonzero((n > n.dtype.type(group["initial_accumulator_value"]))
                                      .any(axis=1)).astype(np.int64)
                if rows.shape[0] == 0:
                    continue
                zero = np.zeros((1, n.shape[1]), dtype=p.dtype)
                _rows.ftrl_rows_update(
                    V.rows_view(p), V.rows_view(st["z"]), n, zero, zero, rows,
                    np.zeros(rows.shape[0], dtype=np.int64), lr, b0, l1, l2, 0.0, pw,
                    self._free_row, self._threads(rows.shape[0], _width(p)))

    def _flush(self, i, state, group) -> None:  # pragma: no cover - FTRL keeps no lazy debt
        pass
