"""Every input check and dtype decision of sparseopt (SPEC section 5).

Kernels never raise: anything that can be wrong is refused here, before a kernel runs, so a
rejected step leaves parameters and optimizer state exactly as they were. Messages name the
parameter and the problem; users never see Cython's buffer errors.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

ParamKey = Union[int, str]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def describe(key: ParamKey) -> str:
    """How messages name a parameter: ``parameter 'emb'`` or ``parameter 0``."""
    return f"parameter {key!r}"


# --------------------------------------------------------------------------- parameters


def check_params(params: Any) -> Tuple[List[ParamKey], List[np.ndarray], bool]:
    """Validate the ``params`` argument of an optimizer.

    Returns ``(keys, arrays, is_dict)``: names for a dict, positions for a list (or for a single
    array, which counts as a list of one).
    """
    if isinstance(params, np.ndarray):
        items = [(0, params)]
        is_dict = False
    elif isinstance(params, Mapping):
        items = list(params.items())
        is_dict = True
        for key, _ in items:
            if not isinstance(key, str):
                raise TypeError(f"parameter names must be strings, got {key!r}")
    elif isinstance(params, (list, tuple)):
        items = list(enumerate(params))
        is_dict = False
    else:
        raise TypeError(
            "params must be a NumPy array, a list of arrays or a dict name -> array, "
            f"got {type(params).__name__}"
        )
    if not items:
        raise ValueError("optimizer got an empty parameter list")
    seen = set()
    for key, arr in items:
        check_param(key, arr)
        if id(arr) in seen:
            raise ValueError(f"{describe(key)} appears more than once in params")
        seen.add(id(arr))
    return [k for k, _ in items], [a for _, a in items], is_dict


def check_param(key: ParamKey, arr: Any) -> None:
    """A parameter is a writeable, C-contiguous float32/float64 array of 1 or 2 dimensions."""
    name = describe(key)
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(arr).__name__}")
    if arr.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be 1-D (n,) or 2-D (n, d), got shape {arr.shape}; reshape it to "
            "(n_rows, row_size) first"
        )
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise ValueError(f"{name} has rows of width 0 (shape {arr.shape})")
    if not arr.flags.c_contiguous:
        raise ValueError(
            f"{name} must be C-contiguous (it is updated in place); use np.ascontiguousarray "
            "and pass the copy"
        )
    if not arr.flags.writeable:
        raise ValueError(f"{name} is read-only; the optimizer updates parameters in place")


def rows_view(arr: np.ndarray) -> np.ndarray:
    """The ``(n_rows, row_size)`` view of a parameter or state array (no copy)."""
    if arr.ndim == 2:
        return arr
    return arr.reshape(arr.shape[0], 1)


# --------------------------------------------------------------------------- hyper-parameters


def check_real(name: str, value: Any, *, low: float = 0.0, high: float = math.inf,
               low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number in a range; returns it as a Python float (0-d arrays accepted)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    ok = math.isfinite(v)
    ok = ok and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open or high == math.inf else "]"
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")
    return v


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_betas(betas: Any) -> Tuple[float, float]:
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
    return (check_real("betas[0]", b1, high=1.0, high_open=True),
            check_real("betas[1]", b2, high=1.0, high_open=True))


def check_n_threads(n_threads: Any) -> Union[int, None]:
    if n_threads is None:
        return None
    if isinstance(n_threads, (bool, np.bool_)) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"n_threads must be None or a positive int, got {n_threads!r}")
    if int(n_threads) < 1:
        raise ValueError(f"n_threads must be None or a positive int, got {n_threads!r}")
    return int(n_threads)


def check_lr_weight_decay(lr: float, weight_decay: float) -> None:
    """Decoupled weight decay multiplies rows by (1 - lr * weight_decay): it must stay positive."""
    if weight_decay > 0 and lr * weight_decay >= 1.0:
        raise ValueError(
            f"lr * weight_decay must be < 1 (decoupled weight decay multiplies rows by "
            f"1 - lr * weight_decay), got lr={lr!r}, weight_decay={weight_decay!r}"
        )


# --------------------------------------------------------------------------- gradients


def _value_dtype_ok(name: str, arr: np.ndarray, what: str) -> None:
    if arr.dtype.kind not in "fiu":
        raise TypeError(
            f"{name}: {what} must hold real floating or integer numbers, got dtype {arr.dtype}"
        )


def check_indices(name: str, indices: Any, n_rows: int) -> np.ndarray:
    """Indices as a 1-D C-contiguous int32 or int64 array (no copy when they already are)."""
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        if idx.size == 0 and idx.dtype.kind == "f":
            idx = idx.astype(np.int64)  # np.asarray([]) is float64: an empty batch is fine
        else:
            raise TypeError(f"{name}: gradient indices must be integers, got dtype {idx.dtype}")
    if idx.ndim != 1:
        raise ValueError(f"{name}: gradient indices must be 1-D, got shape {idx.shape}")
    if idx.dtype not in _INDEX_DTYPES:
        if idx.dtype.kind == "u" and idx.size and int(idx.max()) >= n_rows:
            pos = int(np.argmax(idx >= n_rows))
            raise index_error(name, int(idx[pos]), pos, n_rows)
        idx = idx.astype(np.int64)
    return np.ascontiguousarray(idx)


def index_error(name: str, index: int, position: int, n_rows: int) -> IndexError:
    return IndexError(
        f"{name}: gradient index {index} (at position {position}) is out of range for a "
        f"parameter with {n_rows} rows"
    )


def check_row_values(name: str, values: Any, k: int, param: np.ndarray) -> np.ndarray:
    """Gradient rows as a C-contiguous ``(k, d)`` array of the parameter's dtype."""
    vals = np.asarray(values)
    _value_dtype_ok(name, vals, "gradient values")
    expected = (k,) + param.shape[1:]
    if vals.shape != expected:
        raise ValueError(
            f"{name}: gradient values have shape {vals.shape}, expected {expected} "
            f"({k} indices, parameter shape {param.shape})"
        )
    return rows_view(np.ascontiguousarray(vals, dtype=param.dtype))


def check_dense(name: str, grad: np.ndarray, param: np.ndarray) -> np.ndarray:
    _value_dtype_ok(name, grad, "a dense gradient")
    if grad.shape != param.shape:
        raise ValueError(
            f"{name}: dense gradient has shape {grad.shape}, parameter has shape {param.shape}"
        )
    return rows_view(np.ascontiguousarray(grad, dtype=param.dtype))


def check_sparse(name: str, grad: Any, param: np.ndarray):
    """A scipy.sparse gradient as CSR over the parameter's ``(n_rows, d)`` view."""
    _value_dtype_ok(name, np.empty(0, dtype=grad.dtype), "a sparse gradient")
    n = param.shape[0]
    shape = tuple(grad.shape)
    if param.ndim == 1:
        if shape == (1, n) and n != 1:
            grad = grad.T
        elif shape != (n, 1):
            raise ValueError(
                f"{name}: sparse gradient has shape {shape}, expected (1, {n}) or ({n}, 1) for a "
                f"parameter of shape {param.shape}"
            )
    elif shape != param.shape:
        raise ValueError(
            f"{name}: sparse gradient has shape {shape}, parameter has shape {param.shape}"
        )
    csr = grad.tocsr()
    itype = np.promote_types(csr.indptr.dtype, csr.indices.dtype)
    if itype not in _INDEX_DTYPES:
        itype = np.dtype(np.int64)
    indptr = np.ascontiguousarray(csr.indptr, dtype=itype)
    indices = np.ascontiguousarray(csr.indices, dtype=itype)
    data = np.ascontiguousarray(csr.data, dtype=param.dtype)
    return indptr, indices, data


def match_grads(grads: Any, keys: List[ParamKey], is_dict: bool) -> Dict[int, Any]:
    """Pair the ``grads`` argument of ``step`` with parameter positions (``None`` dropped)."""
    if isinstance(grads, Mapping):
        if not is_dict:
            raise TypeError("this optimizer was built from a list of parameters; pass a list")
        pos = {k: i for i, k in enumerate(keys)}
        out = {}
        for k, g in grads.items():
            if k not in pos:
                raise KeyError(f"step() got a gradient for unknown parameter {k!r}; known: "
                               f"{', '.join(map(repr, keys))}")
            if g is not None:
                out[pos[k]] = g
        return out
    if isinstance(grads, (list, tuple)):
        if len(grads) != len(keys):
            raise ValueError(
                f"step() got {len(grads)} gradients for {len(keys)} parameters (pass None to "
                "skip a parameter)"
            )
        return {i: g for i, g in enumerate(grads) if g is not None}
    if len(keys) == 1:
        return {} if grads is None else {0: grads}
    raise TypeError(
        f"step() takes a list of {len(keys)} gradients (or a dict by name), got "
        f"{type(grads).__name__}"
    )
