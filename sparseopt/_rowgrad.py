"""``RowGrad``, the row-sparse gradient container, in plain Python.

It has no compiled dependency, so the NumPy reference (``_reference.py``) can be imported and
run without the kernels it checks.
"""
from __future__ import annotations

from typing import Any

__all__ = ["RowGrad"]


class RowGrad:
    """A row-sparse gradient: ``values[i]`` is the gradient of row ``indices[i]``.

    Parameters
    ----------
    indices : array-like of int, shape (k,)
        Row ids, int32 or int64 (other integer types and lists are converted). Duplicates are
        allowed; the optimizer sums them (or averages them with ``duplicates="mean"``), in the
        order they appear, as ``torch.Tensor.coalesce`` does.
    values : array-like, shape (k, d), or (k,) for a 1-D parameter
        Gradient rows. Cast to the parameter's dtype if needed (one copy of the batch).

    Examples
    --------
    >>> import numpy as np, sparseopt as so
    >>> E = np.zeros((5, 2), dtype=np.float32)
    >>> opt = so.Adam([E], lr=0.1)
    >>> opt.step([so.RowGrad([1, 3, 1], np.ones((3, 2), dtype=np.float32))])
    >>> E[:, 0]
    array([ 0. , -0.1,  0. , -0.1,  0. ], dtype=float32)
    """

    __slots__ = ("indices", "values")

    def __init__(self, indices: Any, values: Any) -> None:
        self.indices = indices
        self.values = values

    def __repr__(self) -> str:
        shape = getattr(self.values, "shape", None)
        k = getattr(self.indices, "shape", (len(self.indices),))
        return f"RowGrad(k={k[0] if k else '?'}, values shape={shape})"

    def __reduce__(self):
        return (RowGrad, (self.indices, self.values))
