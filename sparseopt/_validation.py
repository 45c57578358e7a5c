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
import scipy.sparse as sp

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
    _check_no_overlap(items)
    return [k for k, _ in items], [a for _, a in items], is_dict


def _check_no_overlap(items: List[Tuple[ParamKey, np.ndarray]]) -> None:
    """Two parameters must not share memory (``[E, E[:]]``, overlapping row slices): each
    would be updated once per parameter. Parameters are C-contiguous, so each occupies exactly
    ``[address, address + nbytes)``; sorting the intervals finds any overlap in O(P log P).
    Disjoint views of one table (``E[:500]``, ``E[500:]``) are fine."""
    spans = sorted((a.__array_interface__["data"][0], a.nbytes, i)
                   for i, (_, a) in enumerate(items) if a.nbytes)
    for (s0, n0, i0), (s1, _, i1) in zip(spans, spans[1:]):
        if s1 < s0 + n0:
            first, second = sorted((i0, i1))
            raise ValueError(
                f"{describe(items[second][0])} shares memory with {describe(items[first][0])}; "
                "each would be updated twice per step (pass one array, or disjoint views)"
            )


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
    idx = _as_array(name, indices, "gradient indices")
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
    vals = _as_array(name, values, "gradient values")
    _value_dtype_ok(name, vals, "gradient values")
    expected = (k,) + param.shape[1:]
    if vals.shape != expected:
        raise ValueError(
            f"{name}: gradient values have shape {vals.shape}, expected {expected} "
            f"({k} indices, parameter shape {param.shape})"
        )
    return rows_view(_unaliased(np.ascontiguousarray(vals, dtype=param.dtype), param))


def _as_array(name: str, obj: Any, what: str) -> np.ndarray:
    """``np.asarray`` with our message for ragged nested lists."""
    try:
        return np.asarray(obj)
    except ValueError as e:
        raise ValueError(f"{name}: {what} are not a rectangular array ({e})") from None


def _unaliased(values: np.ndarray, param: np.ndarray) -> np.ndarray:
    """Gradient values that are a view of the parameter itself (``RowGrad(idx, E[:k])``,
    ``step([w])``) are copied: the kernels update rows in place and in parallel, so they would
    otherwise read gradients that another row's update has already overwritten."""
    if values.size and np.may_share_memory(values, param):
        return values.copy()
    return values


def check_dense(name: str, grad: np.ndarray, param: np.ndarray) -> np.ndarray:
    _value_dtype_ok(name, grad, "a dense gradient")
    if grad.shape != param.shape:
        raise ValueError(
            f"{name}: dense gradient has shape {grad.shape}, parameter has shape {param.shape}"
        )
    return rows_view(_unaliased(np.ascontiguousarray(grad, dtype=param.dtype), param))


def check_sparse(name: str, grad: Any, param: np.ndarray):
    """A scipy.sparse gradient over the parameter's ``(n_rows, d)`` view, as
    ``(rows, local, indptr, indices, data)``: the touched table rows (those holding a stored
    entry) and, for each, its row ``local[j]`` in the CSR arrays."""
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
    _check_sparse_structure(name, grad)
    if grad.format == "coo":
        # Compact first: a CSR of the whole table would cost O(n_rows) per step (1.6 s for a
        # 3-entry gradient on 67M rows); this costs O(nnz log nnz).
        row, col = (grad.coords if hasattr(grad, "coords") else (grad.row, grad.col))
        rows, local_of_entry = np.unique(np.asarray(row), return_inverse=True)
        csr = sp.csr_matrix((grad.data, (local_of_entry.reshape(-1), np.asarray(col))),
                            shape=(rows.shape[0], grad.shape[1]))
        rows = rows.astype(np.int64, copy=False)
        local = np.arange(rows.shape[0], dtype=np.int64)
    else:
        csr = grad.tocsr()
        rows = local = None
    itype = np.promote_types(csr.indptr.dtype, csr.indices.dtype)
    if itype not in _INDEX_DTYPES:
        itype = np.dtype(np.int64)
    indptr = np.ascontiguousarray(csr.indptr, dtype=itype)
    indices = np.ascontiguousarray(csr.indices, dtype=itype)
    data = np.ascontiguousarray(csr.data, dtype=param.dtype)
    if rows is None:
        rows = local = np.flatnonzero(np.diff(indptr)).astype(np.int64, copy=False)
    return rows, local, indptr, indices, data


def _check_sparse_structure(name: str, grad: Any) -> None:
    """Refuse CSR/CSC/COO gradients whose index arrays contradict their shape.

    scipy checks index bounds only in ``check_format(full_check=True)``: a matrix built from raw
    ``(data, indices, indptr)`` (or edited afterwards) may hold a column index past the shape,
    and converting or densifying it reads and writes out of bounds (heap corruption, not an
    exception). O(nnz + rows), a fraction of the cost of densifying the touched rows.
    """
    fmt = grad.format
    if fmt in ("csr", "csc"):
        major, minor = grad.shape if fmt == "csr" else grad.shape[::-1]
        indptr, indices = grad.indptr, grad.indices
        nnz = min(indices.shape[0], grad.data.shape[0])
        problem = None
        if indptr.ndim != 1 or indptr.shape[0] != major + 1:
            problem = f"indptr has shape {indptr.shape}, expected ({major + 1},)"
        elif indptr[0] != 0 or (major > 1 and (indptr[1:] < indptr[:-1]).any()):
            problem = "indptr must start at 0 and never decrease"
        elif indptr[-1] > nnz:
            problem = (f"indptr ends at {int(indptr[-1])} but only {indices.shape[0]} indices "
                       f"and {grad.data.shape[0]} values are stored")
        elif indptr[-1] > 0:
            used = indices[: int(indptr[-1])]
            lo, hi = used.min(), used.max()
            if lo < 0 or hi >= minor:
                what = "column" if fmt == "csr" else "row"
                problem = (f"{what} index {int(lo if lo < 0 else hi)} is out of range for "
                           f"{minor} {what}s")
    elif fmt == "coo":
        problem = None
        coords = grad.coords if hasattr(grad, "coords") else (grad.row, grad.col)
        for axis, (ix, size) in enumerate(zip(coords, grad.shape)):
            ix = np.asarray(ix)
            if ix.size and (ix.min() < 0 or ix.max() >= size):
                bad = int(ix.min() if ix.min() < 0 else ix.max())
                problem = f"index {bad} on axis {axis} is out of range for size {size}"
                break
    else:
        return
    if problem is not None:
        raise ValueError(f"{name}: the sparse gradient is malformed: {problem}")


def match_grads(grads: Any, keys: List[ParamKey], is_dict: bool) -> Dict[int, Any]:
    """Pair the ``grads`` argument of ``step`` with parameter positions (``None`` dropped)."""
    if type(grads) is list and not is_dict and len(grads) == len(keys):
        # the common case first: an ABC isinstance check costs ~2 us of a ~15 us tiny step
        return {i: g for i, g in enumerate(grads) if g is not None}
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


# =========================================================================== optimizer state
# Rules for optimizer state and for the parameters an optimizer already holds: state loaded by
# ``load_state_dict``, and state or parameters changed between steps (``state_dict()`` and
# ``opt.state`` hand out the arrays by reference, so anything may have been replaced or edited
# in place). The per-step checks are O(1) per array; only loading scans values.

# Step counters are int64 in the kernels: ``t`` may reach 2**63 - 1 and no further.
MAX_STEP = 2**63 - 1


def check_eps(value: Any, *, allow_zero: bool = False, zero_hint: str = "") -> float:
    """``eps`` of an optimizer whose denominator can otherwise be zero: it must be > 0 (a row
    with zero gradient and zero second moment would compute 0 / 0 = NaN), or >= 0 when the
    caller has established that the denominator cannot vanish (``allow_zero``)."""
    eps = check_real("eps", value)
    if eps == 0.0 and not allow_zero:
        raise ValueError(
            f"eps must be > 0, got {value!r}: a row whose gradient and second moment are both "
            "zero would compute 0 / 0 and become NaN" + (f" ({zero_hint})" if zero_hint else "")
        )
    return eps


def check_step_count(key: ParamKey, step: Any, *, advancing: bool) -> int:
    """Parameter ``key``'s step counter: an int in [0, 2**63 - 1]; one that is about to advance
    (``advancing``) must stay below 2**63 - 1."""
    top = MAX_STEP - 1 if advancing else MAX_STEP
    if type(step) is int and 0 <= step <= top:
        return step
    if isinstance(step, np.ndarray) and step.ndim == 0:
        step = step.item()
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral):
        raise ValueError(f"{describe(key)}: the step counter must be an int, got {step!r}")
    step = int(step)
    if not 0 <= step <= top:
        raise ValueError(f"{describe(key)}: the step counter must be in [0, {top}], got {step}")
    return step


def check_param_unchanged(key: ParamKey, arr: Any, shape: Tuple[int, ...], dtype: Any) -> None:
    """A parameter is, at every step, what it was at construction: a writeable C-contiguous
    array of the same shape and dtype (it may have been made read-only or reshaped in place).
    O(1); the common case costs a few attribute reads."""
    if isinstance(arr, np.ndarray) and arr.shape == shape and arr.dtype == dtype:
        flags = arr.flags
        if flags.writeable and flags.c_contiguous:
            return
    check_param(key, arr)
    if arr.shape != shape or arr.dtype != dtype:
        raise ValueError(
            f"{describe(key)} changed from shape {shape} and dtype {np.dtype(dtype)} to shape "
            f"{arr.shape} and dtype {arr.dtype} after the optimizer was built; build a new "
            "optimizer for it"
        )


# What a state layout check expects of one entry: (name, shape, dtype, rows_only) for an array
# (``rows_only``: each row's elements contiguous, the rows anywhere, as for interleaved moments),
# or (name, None, None, False) for a running log sum (a float).
StateLayout = Tuple[Tuple[str, Any, Any, bool], ...]
_ABSENT = object()


def check_step_ready(key: ParamKey, param: Any, shape: Tuple[int, ...], dtype: Any,
                     state: Mapping[str, Any], layout: StateLayout, *, advancing: bool) -> None:
    """Before a kernel runs on parameter ``key``: the parameter is unchanged
    (``check_param_unchanged``), its step counter is valid (``check_step_count``) and its state
    has ``layout`` (``check_state_layout``). O(1) per array; a non-empty ``state`` only."""
    check_param_unchanged(key, param, shape, dtype)
    step = state.get("step")
    if not (type(step) is int and 0 <= step <= (MAX_STEP - 1 if advancing else MAX_STEP)):
        check_step_count(key, step, advancing=advancing)
    check_state_layout(key, state, layout)


def check_state_layout(key: ParamKey, state: Mapping[str, Any], layout: StateLayout) -> None:
    """O(1) per entry: every entry of ``layout`` present in ``state`` is what a kernel can be
    handed (see ``check_state_array`` and ``check_state_log_sum``); absent entries are
    allocated by the optimizer. Run before every step, so the common case is a few attribute
    reads per array."""
    for sname, shape, dtype, rows_only in layout:
        arr = state.get(sname, _ABSENT)
        if arr is _ABSENT:
            continue
        if shape is None:
            if not (type(arr) is float and -math.inf < arr <= 0.0):
                check_state_log_sum(describe(key), sname, arr)
            continue
        if isinstance(arr, np.ndarray) and arr.shape == shape and (arr.dtype is dtype
                                                                   or arr.dtype == dtype):
            flags = arr.flags
            if flags.writeable and (flags.c_contiguous
                                    or (rows_only and arr.strides[-1] == arr.itemsize)):
                continue
        check_state_array(describe(key), sname, arr, shape, dtype, strided_rows=rows_only)


def check_state_array(name: str, sname: str, arr: Any, shape: Tuple[int, ...], dtype: Any, *,
                      strided_rows: bool = False) -> None:
    """O(1) check of a state array a kernel is about to read and write: a writeable ndarray of
    the given shape and dtype, C-contiguous (``strided_rows``: only each row's elements need be
    contiguous, as for row-interleaved moments). Unaligned arrays are fine (as for parameters,
    the row loops make no alignment assumption)."""
    dtype = np.dtype(dtype)
    if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype:
        got = (f"shape {arr.shape} and dtype {arr.dtype}" if isinstance(arr, np.ndarray)
               else f"a {type(arr).__name__}")
        raise ValueError(
            f"state {sname!r} of {name} is {got}, expected shape {shape} and dtype {dtype} "
            "(was it replaced between steps? use load_state_dict to set state)"
        )
    if strided_rows and arr.ndim == 2:
        ok = arr.shape[1] <= 1 or arr.strides[1] == arr.itemsize
    else:
        ok = arr.flags.c_contiguous
    if not ok:
        raise ValueError(
            f"state {sname!r} of {name} must be C-contiguous"
            + (" within each row" if strided_rows else "")
            + " (was it replaced between steps? use load_state_dict to set state)"
        )
    if not arr.flags.writeable:
        raise ValueError(f"state {sname!r} of {name} is read-only; the optimizer updates its "
                         "state in place")


def check_state_log_sum(name: str, sname: str, value: Any) -> float:
    """A running sum of ``log1p(-lr * weight_decay)``: a finite real number <= 0."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or \
            not (math.isfinite(float(value)) and float(value) <= 0.0):
        raise ValueError(
            f"state {sname!r} of {name} must be a finite number <= 0 (a sum of "
            f"log(1 - lr * weight_decay)), got {value!r}"
        )
    return float(value)


def check_state_values(name: str, sname: str, arr: np.ndarray, *, low: Any = None,
                       low_open: bool = False, high: Any = None, what: str = "") -> None:
    """Scan a loaded state array: every value finite, and >= ``low`` (> with ``low_open``) and
    <= ``high`` when given. Two reductions (min, max), no temporary of the array's size."""
    if arr.size == 0:
        return
    lo, hi = arr.min(), arr.max()
    if arr.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"state_dict: state {sname!r} of {name} holds NaN or infinite values")
    if low is not None and (lo <= low if low_open else lo < low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(
            f"state_dict: state {sname!r} of {name} must be {bound}{what}, but its minimum is "
            f"{lo}"
        )
    if high is not None and hi > high:
        raise ValueError(
            f"state_dict: state {sname!r} of {name} must be <= {high}{what}, but its maximum "
            f"is {hi}"
        )
