"""Plain (lazy by nature) SGD on the rows a gradient touches."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from .. import _validation as V
from .._kernels import _rows
from ._base import Optimizer, _width, storage_doc
from ._grad import MergedRows


@storage_doc
class SGD(Optimizer):
    """Stochastic gradient descent without momentum: ``theta_r <- theta_r - lr * g_r`` for
    every row ``r`` a gradient touches, with ``g_r`` the merged (summed, or averaged with
    ``duplicates="mean"``) gradient of the row.

    It keeps no state, so it has no lazy debt: untouched rows simply do not move, exactly as
    in dense SGD with a zero gradient. This is the optimizer behind ``optimizer="sgd"`` of the
    estimators; it takes gradients in every form ``Adam`` does, with the same validation,
    duplicate merging, non-finite policy and threading.

    Parameters
    ----------
    params : ndarray, list of ndarray or dict of str -> ndarray
        C-contiguous float32/float64 arrays of shape ``(n,)`` or ``(n, d)``, updated in place.
    lr : float, default 1e-2
        Learning rate; may be changed between steps (``opt.lr = ...``).
    n_threads, duplicates, nonfinite
        As for :class:`~sparseopt.Adam`.

    {storage_parameters}

    Examples
    --------
    >>> import numpy as np
    >>> from sparseopt.optim import SGD, RowGrad
    >>> E = np.zeros((4, 2))
    >>> SGD([E], lr=0.5).step([RowGrad([1, 1, 3], np.ones((3, 2)))])
    >>> E[:, 0]
    array([ 0. , -1. ,  0. , -0.5])
    """

    _HALF = True
    _DEFAULTS = dict(lr=1e-2)

    def __init__(self, params: Any, lr: float = 1e-2, n_threads: Optional[int] = None,
                 duplicates: str = "sum", nonfinite: str = "raise", dtype: Optional[str] = None,
                 rounding: str = "nearest", seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr), preset=None, n_threads=n_threads,
                         duplicates=duplicates, nonfinite=nonfinite, dtype=dtype,
                         rounding=rounding, seed=seed)

    def _check_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        g = dict(group)
        g["lr"] = V.check_real("lr", g["lr"])
        return g

    def _array_state_shape(self, sname: str, p):
        return None, None

    def _state_spec(self, group: Dict[str, Any]) -> List[Tuple[str, float]]:
        return []

    def _apply(self, i: int, state: Dict[str, Any], merged: MergedRows,
               group: Dict[str, Any]) -> None:
        n = merged.rows.shape[0]
        if n == 0:
            return
        p = self._params[i]
        self._kernel(i, _rows.sgd_rows_update)(V.rows_view(p), merged.values, merged.scratch, merged.rows,
                              merged.src, group["lr"], self._threads(n, _width(p)))

    def _flush(self, i: int, state: Dict[str, Any], group: Dict[str, Any]) -> None:
        pass  # no state, nothing owed
