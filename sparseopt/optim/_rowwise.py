"""Column groups of row-wise state (``rowwise_tail``), shared by Adam, Adagrad and RMSprop.

Row-wise state keeps one scalar per row. A row that holds quantities of different scale (a
bias kept as the last column beside factors) would share that scalar, and the larger gradient
would set every column's step. ``rowwise_tail=k`` splits each row into its leading
``width - k`` columns and its last ``k``, each with its own scalars: the state arrays are
``(n, 2)`` instead of ``(n,)``.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .. import _validation as V


class RowwiseGroups:
    """Mixin: each parameter's tail width (``_tails``) and the shape of its row-wise state."""

    def _init_tails(self) -> None:
        """Check ``rowwise_tail`` against the parameters (once they are known) and keep one
        value per parameter, also as the setting itself (a tuple, one entry per parameter)."""
        g = self.param_groups[0]
        self._tails = V.rowwise_tails(type(self).__name__, g["rowwise"],
                                      g.get("rowwise_tail", 0), self._keys, self._params,
                                      self._kinds)
        g["rowwise_tail"] = self._tails
        self._fixed_values["rowwise_tail"] = self._tails

    def _check_tail(self, value) -> Any:
        """``rowwise_tail`` as ``_check_group`` keeps it (one entry per parameter once the
        parameters are known)."""
        params = self.__dict__.get("_params")
        return V.check_rowwise_tail(value, None if params is None else len(params))

    def _tail(self, i: int) -> int:
        tails = self.__dict__.get("_tails")
        return tails[i] if tails else 0

    def _rowwise_shape(self, p: np.ndarray) -> Tuple[int, ...]:
        """Shape of ``p``'s row-wise scalars: ``(n,)``, or ``(n, 2)`` when its rows are split."""
        tails = self.__dict__.get("_tails") or ()
        for q, k in zip(self.__dict__.get("_params", ()), tails):
            if q is p:
                return (p.shape[0], 2) if k else (p.shape[0],)
        return (p.shape[0],)
