"""Every input check and dtype decision of sparseopt (docs/semantics.md, "Errors").

Kernels never raise: anything that can be wrong is refused here, before a kernel runs, so a
rejected step leaves parameters and optimizer state exactly as they were. Messages name the
parameter and the problem; users never see Cython's buffer errors.
"""
from __future__ import annotations

import math
import numbers
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse as sp

from ._kernels import _info

ParamKey = Union[int, str]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Half-precision parameter storage: float16 arrays, and uint16 arrays holding bfloat16 bits.
_HALF_DTYPES = (np.dtype(np.float16), np.dtype(np.uint16))
_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def describe(key: ParamKey) -> str:
    """How messages name a parameter: ``parameter 'emb'`` or ``parameter 0``."""
    return f"parameter {key!r}"


# --------------------------------------------------------------------------- parameters


def check_params(params: Any, *, half: bool = False, bfloat16: bool = False
                 ) -> Tuple[List[ParamKey], List[np.ndarray], bool]:
    """Validate the ``params`` argument of an optimizer (``half``, ``bfloat16``: see
    ``check_param``).

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
        check_param(key, arr, half=half, bfloat16=bfloat16)
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


def check_param(key: ParamKey, arr: Any, *, half: bool = False, bfloat16: bool = False) -> None:
    """A parameter is a writeable, C-contiguous float32/float64 array of 1 or 2 dimensions.

    ``half``: float16 is accepted too (an optimizer that updates half-precision tables).
    ``bfloat16``: the parameter must instead be a uint16 array holding bfloat16 bits (NumPy
    has no bfloat16 dtype)."""
    name = describe(key)
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(arr).__name__}")
    if bfloat16:
        if arr.dtype != np.uint16:
            raise TypeError(
                f"{name} has dtype {arr.dtype}; with dtype='bfloat16' every parameter must be a "
                "uint16 array holding bfloat16 bits (the upper 16 bits of float32 values)"
            )
    elif half and arr.dtype == np.float16:
        pass
    elif arr.dtype not in _FLOAT_DTYPES:
        hint = ""
        if half and arr.dtype == np.uint16:
            hint = " (for bfloat16 bits in a uint16 array, pass dtype='bfloat16')"
        elif half:
            hint = " (or float16, or bfloat16 bits in a uint16 array with dtype='bfloat16')"
        raise TypeError(f"{name} must be float32 or float64{hint}, got dtype {arr.dtype}")
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


def check_storage(dtype: Any, rounding: Any, seed: Any, supported: bool
                  ) -> Tuple[bool, bool, int]:
    """The half-precision options of an optimizer: ``(bfloat16, stochastic, seed)``.

    ``dtype`` is None (each parameter's own NumPy dtype) or ``"bfloat16"`` (uint16 arrays of
    bfloat16 bits); ``rounding`` is ``"nearest"`` or ``"stochastic"``; ``seed`` an int in
    ``[0, 2**32)``. ``supported``: whether the optimizer updates half-precision tables."""
    if dtype is not None and not (isinstance(dtype, str) and dtype == "bfloat16"):
        raise ValueError(f"dtype must be None or 'bfloat16', got {dtype!r} (float16 "
                         "parameters need no dtype: pass np.float16 arrays)")
    if dtype is not None and not supported:
        raise ValueError("this optimizer does not update half-precision parameters "
                         "(dtype='bfloat16')")
    check_choice("rounding", rounding, ("nearest", "stochastic"))
    seed = check_int("seed", seed, 0, 2**32 - 1)
    return dtype is not None, rounding == "stochastic", seed


def check_state_dtype(state_dtype: Any) -> Optional[str]:
    """``state_dtype`` of an optimizer: None (the parameter's precision) or ``"bfloat16"``."""
    if state_dtype is not None and not (isinstance(state_dtype, str)
                                        and state_dtype == "bfloat16"):
        raise ValueError(f"state_dtype must be None or 'bfloat16', got {state_dtype!r}")
    return state_dtype


def check_bf16_state(lazy: str, params: Any) -> None:
    """bfloat16 moments: ``lazy="frozen"`` only, and no float64 parameter (its moments would
    lose more than the weights keep)."""
    if lazy != "frozen":
        raise ValueError("state_dtype='bfloat16' needs lazy='frozen' (got lazy="
                         f"{lazy!r})")
    for j, p in enumerate(params or ()):
        if isinstance(p, np.ndarray) and p.dtype == np.float64:
            raise ValueError(f"state_dtype='bfloat16' needs float32 or half-precision "
                             f"parameters; parameter {j} is float64")


def check_rowwise_storage(name: str, rowwise: Any, kinds: Any, bf16_state: bool) -> None:
    """Row-wise second moments are kept for float32 / float64 tables with float32 / float64
    state only: the half-precision twins of the kernels cover the element-wise rules (and
    row-wise Adagrad)."""
    if not rowwise:
        return
    if bf16_state:
        raise ValueError(f"{name}: rowwise={rowwise!r} cannot be combined with "
                         "state_dtype='bfloat16'")
    for j, kind in enumerate(kinds or ()):
        if kind is not None:
            raise ValueError(f"{name}: rowwise={rowwise!r} needs float32 or float64 parameters; "
                             f"parameter {j} is half precision")


def check_rowwise_tail(value: Any, n_params: Optional[int] = None
                       ) -> Union[int, Tuple[int, ...]]:
    """``rowwise_tail``: an int >= 0 for every parameter, or a list / tuple of them, one per
    parameter in the parameters' order (returned as a tuple). With ``n_params`` (once the
    parameters are known) an int is returned as one entry per parameter, so that equal
    settings compare equal whichever way they were written."""
    def one(v: Any, where: str) -> int:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"rowwise_tail{where} must be an int >= 0 (the number of trailing "
                             f"columns that keep their own row-wise state), got {v!r}")
        return int(v)
    if isinstance(value, (list, tuple)):
        return tuple(one(v, f"[{j}]") for j, v in enumerate(value))
    tail = one(value, "")
    return tail if n_params is None else (tail,) * n_params


def rowwise_tails(name: str, rowwise: Any, tail: Union[int, Tuple[int, ...]],
                  keys: Sequence[ParamKey], params: Sequence[np.ndarray],
                  kinds: Sequence[Any]) -> Tuple[int, ...]:
    """Each parameter's ``rowwise_tail`` (checked by ``check_rowwise_tail``): the trailing
    columns of a 2-D parameter that form a second group with its own row-wise state. A
    group needs at least one column (``0 < tail < width``, or 0 for one group), the state
    is row-wise only with ``rowwise``, and only the float32 / float64 kernels split a row."""
    tails = tail if isinstance(tail, tuple) else (tail,) * len(params)
    if len(tails) != len(params):
        raise ValueError(f"{name}: rowwise_tail has {len(tails)} entries, one per parameter is "
                         f"needed ({len(params)} parameters)")
    if any(tails) and not rowwise:
        raise ValueError(f"{name}: rowwise_tail={tail!r} needs row-wise state (rowwise="
                         f"{'v' if name == 'Adam' else True!r}); element-wise state already "
                         "keeps every column apart")
    for key, p, k, kind in zip(keys, params, tails, kinds):
        if not k:
            continue
        width = p.shape[1] if p.ndim == 2 else 1
        if p.ndim != 2 or k >= width:
            raise ValueError(f"{name}: rowwise_tail={k} for {describe(key)} of shape "
                             f"{p.shape}: the tail must leave at least one leading column "
                             f"(0 < rowwise_tail < width; 0 keeps one group per row)")
        if kind is not None:
            raise ValueError(f"{name}: rowwise_tail needs float32 or float64 parameters; "
                             f"{describe(key)} is half precision")
    return tuple(tails)


# optimizer_params keys of the linear estimators that their own parameters decide:
# key -> the estimator parameter(s) to set instead
_LINEAR_DECIDED = {
    "params": "the estimator's weight table", "lr": "eta0 and learning_rate",
    "n_threads": "n_threads", "nonfinite": "the estimator (it trains on every row)",
    "dtype": "the estimator (its weights follow X's dtype)",
}
_LINEAR_DECIDED_BY = {
    "adam": {"betas": "beta1 and beta2", "eps": "eps"},
    "adagrad": {"eps": "eps"},
    "rmsprop": {"alpha": "rho", "eps": "eps"},
    "ftrl": {"l1": "alpha, l1_ratio and penalty", "l2": "alpha, l1_ratio and penalty",
             "convention": "the estimator (the paper's)", "beta": "the estimator",
             "initial_accumulator_value": "the estimator", "preset": "the estimator"},
}
# With the lazy L1/L2 penalty (an adaptive optimizer and alpha > 0), the penalty divides by
# the optimizer's per-coefficient step multiplier, read from its state as float32/float64 per
# element under the default rule (Adam with per-row bias correction and no max of moments,
# RMSprop without momentum or centring): only these keys leave that multiplier as it reads it.
_LINEAR_PENALTY_SAFE = {
    "adam": ("duplicates", "weight_decay"),
    "adagrad": ("duplicates", "weight_decay", "initial_accumulator_value"),
    "rmsprop": ("duplicates", "weight_decay", "initial_square_avg"),
}


def check_linear_optimizer_params(value: Any, optimizer: str, accepted: Sequence[str],
                                  penalized: bool) -> Dict[str, Any]:
    """``optimizer_params`` of ``SGDClassifier`` / ``SGDRegressor``: a dict (or None) of
    keyword arguments of the ``optimizer`` class, whose parameters are ``accepted``. Refused
    (ValueError, scikit-learn's parameter error): a non-dict, an unknown key, a key that an
    estimator parameter decides, any key for ``optimizer='sgd'``, and, when ``penalized``
    (the lazy penalty reads the optimizer's state), a key that changes what it reads."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"optimizer_params must be a dict of keyword arguments of the "
                         f"optimizer or None, got {type(value).__name__}")
    kw = dict(value)
    for key in kw:
        if not isinstance(key, str):
            raise ValueError(f"optimizer_params keys must be strings, got {key!r}")
    if kw and optimizer == "sgd":
        raise ValueError(f"optimizer='sgd' takes no optimizer_params, got {sorted(kw)}")
    decided = dict(_LINEAR_DECIDED, **_LINEAR_DECIDED_BY.get(optimizer, {}))
    for key in sorted(kw):
        if key in decided:
            raise ValueError(f"optimizer_params may not set {key!r}: it is decided by "
                             f"{decided[key]}")
        if key not in accepted:
            raise ValueError(f"optimizer_params has an unknown key {key!r} for "
                             f"optimizer={optimizer!r}; it takes "
                             f"{sorted(k for k in accepted if k not in decided)}")
    if penalized:
        bad = sorted(k for k in kw if k not in _LINEAR_PENALTY_SAFE.get(optimizer, ()))
        if bad:
            raise ValueError(
                f"optimizer_params {bad} cannot be combined with an L1/L2 penalty "
                f"(penalty 'l2', 'l1' or 'elasticnet' with alpha > 0) and "
                f"optimizer={optimizer!r}: the lazy penalty reads the optimizer's step size "
                "per coefficient from its float32/float64 per-element state under the "
                "default rule. Use penalty=None (or alpha=0), or leave these keys out "
                f"(allowed with a penalty: {list(_LINEAR_PENALTY_SAFE.get(optimizer, ()))})")
    return kw


def check_rowwise_bf16_state(name: str, rowwise: Any, bf16_state: bool) -> None:
    """bfloat16 state has element-wise kernels only: a row-wise accumulator (one scalar per
    row, where rounding would stall the sum soonest) is refused with it."""
    if rowwise and bf16_state:
        raise ValueError(f"{name}: rowwise={rowwise!r} cannot be combined with "
                         "state_dtype='bfloat16' (bfloat16 state is kept per element only)")


def check_rounding_for(key: ParamKey, arr: np.ndarray, stochastic: bool) -> None:
    """Stochastic rounding is defined for bfloat16 storage only: float16 parameters are
    refused with it (float32 and float64 ones are never rounded)."""
    if stochastic and arr.dtype == np.float16:
        raise ValueError(f"rounding='stochastic' needs bfloat16 parameters (dtype='bfloat16'); "
                         f"{describe(key)} has dtype {arr.dtype}")


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


def check_float_dtype(name: str, dtype: Any) -> np.dtype:
    """A ``dtype`` argument naming float32 or float64 (anything ``np.dtype`` reads)."""
    try:
        dt = np.dtype(dtype)  # None reads as float64, NumPy's default
    except TypeError:
        raise ValueError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dt not in _FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got {dtype!r}")
    return dt


def check_betas(betas: Any) -> Tuple[float, float]:
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
    return (check_real("betas[0]", b1, high=1.0, high_open=True),
            check_real("betas[1]", b2, high=1.0, high_open=True))


def check_n_threads(n_threads: Any, name: str = "n_threads") -> Union[int, None]:
    """None (OpenMP's default) or a thread count from 1 to what the machine can start
    (:func:`max_n_threads`: four per available core, within OpenMP's limit).

    A request OpenMP cannot honour would end the process instead of raising, so it is refused
    here with a ValueError.
    """
    if n_threads is None:
        return None
    if isinstance(n_threads, (bool, np.bool_)) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"{name} must be None or a positive int, got {n_threads!r}")
    if int(n_threads) < 1:
        raise ValueError(f"{name} must be None or a positive int, got {n_threads!r}")
    limit = max_n_threads()
    if int(n_threads) > limit:
        raise ValueError(f"{name}={n_threads!r} is more threads than this machine can start "
                         f"usefully (at most {limit}: four per available core, within "
                         "OpenMP's thread limit)")
    return int(n_threads)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def max_n_threads() -> int:
    """The most threads any kernel call may use: four per core this process may run on, and
    never more than OpenMP's thread limit. Asking OpenMP for more than it can start ends the
    process ("Thread creation failed") instead of raising, so the limit is enforced here."""
    return max(1, min(4 * _cores(), _info.thread_limit()))


def check_real_array(name: str, value: Any, dtype: Any, *, finite: bool = False
                     ) -> np.ndarray:
    """``value`` (an array-like or a scalar) as a new array of the float ``dtype``.

    Raises
    ------
    ValueError
        Naming ``name``: values that are not real numbers (complex, strings, objects that
        are not numbers, ragged nesting) and, with ``finite``, NaN or infinity, also where the
        cast to ``dtype`` overflows.
    """
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of real numbers ({exc})") from None
    if arr.dtype.kind not in "fiubO":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = arr.astype(dtype)  # a new array: the caller's is never modified
    except (TypeError, ValueError):  # an object array holding something else than numbers
        raise ValueError(f"{name} must hold real numbers, got objects that are not") from None
    if finite and arr.size:
        ok = np.isfinite(arr)
        if not ok.all():
            flat = int(np.argmin(ok.reshape(-1)))
            where = (f"position {flat}" if arr.ndim <= 1 else
                     f"index {tuple(int(i) for i in np.unravel_index(flat, arr.shape))}")
            raise ValueError(f"{name} must be finite (in {arr.dtype.name}), got "
                             f"{float(arr.reshape(-1)[flat])} at {where}")
    return arr


def check_sample_weight(sample_weight: Any, n_samples: int, *,
                        non_negative: bool = False) -> np.ndarray:
    """The ``sample_weight`` argument of a model's ``fit`` / ``partial_fit``: one finite
    float64 weight per sample, as a new C-contiguous array.

    ``None`` means a weight of 1 for every sample and a real scalar the same weight for every
    sample (as in scikit-learn); anything else must be a 1-D array-like of ``n_samples`` real
    numbers. Models that divide each batch by its total weight need ``non_negative`` weights
    (a batch whose weights cancel has no scale); the linear estimators, like scikit-learn's,
    also accept negative ones.

    Raises
    ------
    ValueError
        Naming ``sample_weight``: a sparse matrix; values that are not real numbers; another
        shape or length; NaN or infinity; every weight zero; with ``non_negative``, a weight
        below zero. The message for each is the same for every model.

    Examples
    --------
    >>> check_sample_weight(None, 3)
    array([1., 1., 1.])
    >>> check_sample_weight([0, 0], 2)
    Traceback (most recent call last):
    ...
    ValueError: sample_weight must contain at least one non-zero weight
    """
    if sp.issparse(sample_weight):
        raise ValueError("sample_weight must be a dense array or a scalar, got a sparse "
                         "matrix; pass sample_weight.toarray().ravel()")
    if sample_weight is None:
        return np.ones(n_samples, dtype=np.float64)
    arr = check_real_array("sample_weight", sample_weight, np.float64, finite=True)
    if arr.ndim == 0:
        arr = np.full(n_samples, arr.item(), dtype=np.float64)
    if arr.shape != (n_samples,):
        raise ValueError(f"sample_weight must be a scalar or a 1-D array of {n_samples} "
                         f"weights (one per sample), got shape {arr.shape}")
    if non_negative and arr.size and arr.min() < 0:
        pos = int(np.argmin(arr))
        raise ValueError(f"sample_weight must be non-negative, got {float(arr[pos])} at "
                         f"position {pos}")
    if arr.size and not arr.any():
        raise ValueError("sample_weight must contain at least one non-zero weight")
    return arr


# The smallest positive weight a batch may carry, relative to the largest weight scaled into
# [0.5, 1): the reciprocal of any batch total at or above it is a finite float64.
_MIN_RELATIVE_WEIGHT = float(np.finfo(np.float64).tiny)


def relative_weights(name: str, weights: np.ndarray) -> np.ndarray:
    """Checked non-negative weights (:func:`check_sample_weight` with ``non_negative``) that
    count only relative to each other, scaled by a power of two so that the largest lies in
    [0.5, 1).

    A model that divides each batch's weighted gradient by the batch's total weight gives the
    same result for any common scale; scaling by a power of two is exact, so results are bit for
    bit those of the unscaled weights, while weights near the float64 limit can no longer
    overflow a gradient or a sum. A batch holding only the smallest positive weights must still
    have a total whose reciprocal is finite, so a positive weight more than about 2**1021 times
    smaller than the largest is refused (ValueError naming ``name``).
    """
    w = np.asarray(weights, dtype=np.float64)
    top = float(w.max()) if w.size else 0.0
    if top <= 0.0:
        return w
    _, exponent = math.frexp(top)
    low = float(w[w > 0].min())
    if low < math.ldexp(_MIN_RELATIVE_WEIGHT, exponent):  # before scaling, which could round
        raise ValueError(
            f"{name} holds a positive weight ({low:.3g}) more than 2**1021 times smaller than "
            f"the largest ({top:.3g}); each batch is divided by its total weight, whose "
            "reciprocal would overflow. Set such weights to 0 (they count as nothing)")
    return np.ldexp(w, -exponent)


def check_positive_int(name: str, value: Any) -> int:
    """An int >= 1 (bools refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """An int in ``[low, high]`` (bools refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return int(value)


def check_flag(name: str, value: Any) -> bool:
    """A bool (NumPy bools and the ints 0 and 1 count): a string such as ``"no"`` is truthy
    and would silently mean True."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def check_adam_rowwise(value: Any) -> Union[bool, str]:
    """Adam's ``rowwise``: ``False`` (a second moment per element) or ``"v"`` (one per row).
    ``True`` is refused: it would not say whether the first moment is row-wise too."""
    if isinstance(value, (bool, np.bool_)) and not value:
        return False
    if isinstance(value, str) and value == "v":
        return "v"
    raise ValueError(f"rowwise must be False or 'v' (one second moment per row, the mean of "
                     f"g**2 over the row; the first moment stays per element), got {value!r}")


def check_verbose(value: Any) -> int:
    """``verbose``: a bool or a non-negative int (scikit-learn's convention)."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if not isinstance(value, numbers.Integral):
        raise TypeError(f"verbose must be a bool or a non-negative int, got {value!r}")
    if value < 0:
        raise ValueError(f"verbose must be a bool or a non-negative int, got {value!r}")
    return int(value)


def check_ids(name: str, ids: Any, n: int, what: str) -> np.ndarray:
    """1-D integer ids in [0, n) as int64 (IndexError naming the first bad one)."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        if arr.size == 0:
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) >= n:
        pos = int(np.argmax(arr >= n))  # before the cast: uint64 ids past 2**63 would wrap
        raise IndexError(f"{name}[{pos}] = {int(arr.reshape(-1)[pos])} is out of range: the "
                         f"model has {n} {what}")
    arr = np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)
    if arr.size:
        bad = (arr < 0) | (arr >= n)
        if bad.any():
            pos = int(np.argmax(bad))
            raise IndexError(f"{name}[{pos}] = {int(arr[pos])} is out of range: the model has "
                             f"{n} {what}")
    return arr


def check_item_subset(name: str, ids: Any, n_items: int, *, allow_empty: bool
                      ) -> Optional[np.ndarray]:
    """``None``, or a 1-D list of item ids (``TypeError`` unless integers, ``IndexError``
    naming the first id outside ``[0, n_items)``, ``ValueError`` for more than one axis or,
    unless ``allow_empty``, no id at all); duplicates are allowed."""
    if ids is None:
        return None
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D list of item ids, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: it must name at least one item")
    return check_ids(name, arr, n_items, "items")


def check_candidates(filter_items: Any, items: Any, n_items: int
                     ) -> Tuple[Optional[np.ndarray], int]:
    """The items ``recommend`` may not return and the number it may: ``(blocked, n_left)``,
    ``blocked`` the sorted ids outside ``items`` (all items when ``None``) or inside
    ``filter_items``, or ``None`` when nothing is blocked. ``ValueError`` when no item is
    left."""
    f = check_item_subset("filter_items", filter_items, n_items, allow_empty=True)
    i = check_item_subset("items", items, n_items, allow_empty=False)
    if (f is None or f.size == 0) and i is None:
        return None, n_items
    allowed = np.ones(n_items, dtype=bool)
    if i is not None:
        allowed[:] = False
        allowed[i] = True
    if f is not None:
        allowed[f] = False
    n_left = int(allowed.sum())
    if n_left == 0:
        raise ValueError("items and filter_items leave no item to recommend")
    return np.flatnonzero(~allowed), n_left


def check_metric_names(metrics: Any, known: Sequence[str]) -> List[str]:
    """``None`` (every name of ``known``, in that order), one name, or a list of distinct
    names from ``known``."""
    if metrics is None:
        return list(known)
    if isinstance(metrics, str):
        metrics = [metrics]
    try:
        names = list(metrics)
    except TypeError:
        raise TypeError(f"metrics must be None, a name or a list of names, got "
                        f"{metrics!r}") from None
    if not names:
        raise ValueError("metrics is empty: name at least one of " + ", ".join(known))
    for m in names:
        if not isinstance(m, str):
            raise TypeError(f"metrics must hold names (str), got {m!r}")
        if m not in known:
            raise ValueError(f"unknown metric {m!r}; the known ones are " + ", ".join(known))
    if len(set(names)) != len(names):
        raise ValueError(f"metrics names a metric twice: {names}")
    return names


def check_evaluation(X_train: Any, X_test: Any, k: Any, metrics: Any, *, implicit: bool,
                     shape: Tuple[int, int], known: Sequence[str]
                     ) -> Tuple[sp.csr_matrix, sp.csr_matrix, int, List[str]]:
    """The checked arguments of ``recommend.evaluate`` for a model of ``shape`` (n_users,
    n_items): both matrices by the rules of the model's ``fit`` (``implicit``) and of its
    shape, ``k`` a positive int, ``metrics`` names from ``known``."""
    k = check_positive_int("k", k)
    names = check_metric_names(metrics, known)
    out = []
    for name, X in (("X_train", X_train), ("X_test", X_test)):
        X = check_interactions(name, X, implicit)
        if X.shape != tuple(shape):
            raise ValueError(f"{name} has shape {X.shape}, the model was fitted on "
                             f"{tuple(shape)}")
        out.append(X)
    return out[0], out[1], k, names


def check_lr_weight_decay(lr: float, weight_decay: float) -> None:
    """Decoupled weight decay multiplies rows by (1 - lr * weight_decay): it must stay positive."""
    if weight_decay > 0 and lr * weight_decay >= 1.0:
        raise ValueError(
            f"lr * weight_decay must be < 1 (decoupled weight decay multiplies rows by "
            f"1 - lr * weight_decay), got lr={lr!r}, weight_decay={weight_decay!r}"
        )


def check_ftrl_group(g: Dict[str, Any]) -> Dict[str, Any]:
    """FTRL-Proximal's hyper-parameters (``sparseopt.Ftrl``), checked and as Python floats.

    ``lr`` divides every update, so it must be > 0 in float32 as well (a float64 ``lr`` that
    rounds to float32 zero would divide by zero in a float32 table). ``lr_power`` must be
    <= 0 (``n**(-lr_power)`` must not blow up at ``n = 0``); ``beta``, ``l1``, ``l2``,
    ``l2_shrinkage`` and ``initial_accumulator_value`` must be >= 0 (a negative value makes the
    proximal objective unbounded or the accumulator's root undefined).
    """
    out = dict(g)
    out["lr"] = check_real("lr", g["lr"], low_open=True)
    if not np.float32(out["lr"]) > 0:
        raise ValueError(f"lr must be > 0 in float32 as well (FTRL divides by it), "
                         f"got {g['lr']!r}")
    out["lr_power"] = check_real("lr_power", g["lr_power"], low=-math.inf, high=0.0)
    for name in ("beta", "l1", "l2", "l2_shrinkage", "initial_accumulator_value"):
        out[name] = check_real(name, g[name])
    check_choice("convention", g["convention"], ("tensorflow", "paper"))
    return out


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
    if grad.format in ("lil", "dok", "dia"):
        grad = grad.tocoo()  # safe once the structure is checked; COO is compacted below
    if grad.format == "coo":
        # Compact first: a CSR of the whole table would cost O(n_rows) per step, however few
        # entries the gradient holds; this costs O(nnz log nnz).
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
    """The gradient form of :func:`check_sparse_structure` (messages say "sparse gradient")."""
    check_sparse_structure(name, grad, what=f"{name}: the sparse gradient")


def match_grads(grads: Any, keys: List[ParamKey], is_dict: bool) -> Dict[int, Any]:
    """Pair the ``grads`` argument of ``step`` with parameter positions (``None`` dropped)."""
    if type(grads) is dict and is_dict and len(grads) == 1 and len(keys) == 1:
        # one gradient by name (sparseopt.torch steps one parameter per optimizer)
        (k, g), = grads.items()
        if k == keys[0]:
            return {} if g is None else {0: g}
    if type(grads) is list and not is_dict and len(grads) == len(keys):
        # the common case first, by exact type: a tiny step costs little more than its
        # Python overhead, of which an isinstance check against an abstract base class
        # would be a visible part (benchmarks/README.md, "Per-call overhead")
        return {i: g for i, g in enumerate(grads) if g is not None}
    if sp.issparse(grads) or isinstance(grads, np.ndarray):
        # one gradient (a DOK matrix is also a dict: it must not be read as one per name)
        if len(keys) == 1:
            return {0: grads}
        raise TypeError(
            f"step() got one {type(grads).__name__} for {len(keys)} parameters; pass a list of "
            f"{len(keys)} gradients (or a dict by name)"
        )
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


# --------------------------------------------------------------------------- sparse structure
#
# SciPy trusts the index arrays of a sparse matrix: ``csr_matrix((data, indices, indptr))``
# accepts column indices past the shape, a decreasing indptr or an indptr longer than the data,
# and its compiled routines (``sum_duplicates``, ``tocsc``, ``tocsr``, products) then read and
# write out of bounds. Every entry point therefore checks the structure here first, before any
# SciPy method or kernel sees the matrix. The checks cost O(nnz + rows), a fraction of a pass
# over the data.

SPARSE_FORMATS = ("csr", "csc", "coo", "bsr", "dia", "lil", "dok")


class _Malformed(ValueError):
    pass


def _integer_index_array(arr: Any, what: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise _Malformed(f"{what} is a {type(arr).__name__}, not a NumPy array")
    if arr.dtype.kind not in "iu":
        raise _Malformed(f"{what} has dtype {arr.dtype}; index arrays must hold integers")
    if arr.ndim != 1:
        raise _Malformed(f"{what} has shape {arr.shape}; it must be 1-D")
    return arr


def _check_in_range(ix: np.ndarray, size: int, what: str) -> None:
    if ix.size:
        lo, hi = int(ix.min()), int(ix.max())
        if lo < 0 or hi >= size:
            raise _Malformed(f"{what} index {lo if lo < 0 else hi} is out of range for {size} "
                             f"{what}s")


def _check_compressed(indptr: Any, indices: Any, n_stored: int, major: int, minor: int,
                      major_name: str, minor_name: str) -> None:
    """indptr of length major + 1, from 0, never decreasing, ending at most at the stored
    length; the indices it covers within [0, minor)."""
    indptr = _integer_index_array(indptr, "indptr")
    indices = _integer_index_array(indices, "indices")
    if indptr.shape[0] != major + 1:
        raise _Malformed(f"indptr has length {indptr.shape[0]}, expected {major + 1} (one more "
                         f"than the number of {major_name}s)")
    if int(indptr[0]) != 0 or (major > 1 and bool((indptr[1:] < indptr[:-1]).any())):
        raise _Malformed("indptr must start at 0 and never decrease")
    end = int(indptr[-1])
    if end > indices.shape[0] or end > n_stored:
        raise _Malformed(f"indptr ends at {end} but only {indices.shape[0]} indices and "
                         f"{n_stored} values are stored")
    _check_in_range(indices[:end], minor, minor_name)


def check_sparse_structure(name: str, X: Any, *, what: str = "") -> None:
    """Refuse a scipy.sparse matrix or array whose index arrays contradict its shape.

    Every SciPy format is checked: CSR and CSC (indptr of the right length, starting at 0,
    non-decreasing, ending within the stored indices and values; indices within the shape), BSR
    (the same over blocks, plus the block and data shapes), COO (coordinates as long as the
    values, within the shape), DIA (integer offsets, one data row per offset), LIL (one value
    per column index, indices within the shape) and DOK (keys within the shape). Index arrays
    must hold integers. The dimensions must fit in int64.

    Raises
    ------
    ValueError
        Naming ``name`` and the problem; nothing of ``X`` is used before this check passes.
    TypeError
        For a sparse object of a format SciPy does not define.
    """
    label = what or f"{name}"
    fmt = getattr(X, "format", None)
    if fmt not in SPARSE_FORMATS:
        raise TypeError(f"{label}: unsupported sparse format {fmt!r} (expected one of "
                        f"{', '.join(SPARSE_FORMATS)})")
    try:
        shape = tuple(int(n) for n in X.shape)
        if len(shape) != 2:
            raise _Malformed(f"it must be 2-D, got shape {shape}")
        if min(shape) < 0:
            raise _Malformed(f"negative shape {shape}")
        n_rows, n_cols = shape
        data = getattr(X, "data", None)  # DOK keeps its values in the dict itself
        if fmt in ("csr", "csc"):
            major, minor = (n_rows, n_cols) if fmt == "csr" else (n_cols, n_rows)
            if not isinstance(data, np.ndarray) or data.ndim != 1:
                raise _Malformed("data must be a 1-D array")
            _check_compressed(X.indptr, X.indices, data.shape[0], major, minor,
                              "row" if fmt == "csr" else "column",
                              "column" if fmt == "csr" else "row")
        elif fmt == "bsr":
            R, C = (int(b) for b in X.blocksize)
            if R < 1 or C < 1 or n_rows % R or n_cols % C:
                raise _Malformed(f"blocksize {(R, C)} does not divide the shape {shape}")
            if not isinstance(data, np.ndarray) or data.ndim != 3 or data.shape[1:] != (R, C):
                raise _Malformed(f"data has shape {getattr(data, 'shape', None)}, expected "
                                 f"(n_blocks, {R}, {C})")
            _check_compressed(X.indptr, X.indices, data.shape[0], n_rows // R, n_cols // C,
                              "block row", "block column")
        elif fmt == "coo":
            coords = X.coords if hasattr(X, "coords") else (X.row, X.col)
            if len(coords) != 2:
                raise _Malformed(f"it has {len(coords)} coordinate arrays, expected 2")
            if not isinstance(data, np.ndarray) or data.ndim != 1:
                raise _Malformed("data must be a 1-D array")
            for axis, (ix, size) in enumerate(zip(coords, shape)):
                ix = _integer_index_array(ix, f"coordinate array {axis}")
                if ix.shape[0] != data.shape[0]:
                    raise _Malformed(f"coordinate array {axis} has {ix.shape[0]} entries for "
                                     f"{data.shape[0]} values")
                _check_in_range(ix, size, "row" if axis == 0 else "column")
        elif fmt == "dia":
            offsets = _integer_index_array(X.offsets, "offsets")
            if not isinstance(data, np.ndarray) or data.ndim != 2 or \
                    data.shape[0] != offsets.shape[0]:
                raise _Malformed(f"data has shape {getattr(data, 'shape', None)} for "
                                 f"{offsets.shape[0]} offsets")
            if np.unique(offsets).shape[0] != offsets.shape[0]:
                raise _Malformed("offsets repeat")
        elif fmt == "lil":
            rows = X.rows
            if not isinstance(rows, np.ndarray) or not isinstance(data, np.ndarray) or \
                    rows.shape != (n_rows,) or data.shape != (n_rows,):
                raise _Malformed(f"rows and data must hold one list per row ({n_rows})")
            for i, (r, d) in enumerate(zip(rows, data)):
                if len(r) != len(d):
                    raise _Malformed(f"row {i} has {len(r)} column indices and {len(d)} values")
            cols = np.fromiter((c for r in rows for c in r), dtype=np.int64)
            _check_in_range(cols, n_cols, "column")
        elif fmt == "dok":
            keys = list(X.keys())
            if keys:
                ij = np.asarray(keys)
                if ij.ndim != 2 or ij.shape[1] != 2 or ij.dtype.kind not in "iu":
                    raise _Malformed("keys must be (row, column) pairs of integers")
                _check_in_range(ij[:, 0], n_rows, "row")
                _check_in_range(ij[:, 1], n_cols, "column")
    except _Malformed as e:
        raise ValueError(f"{label} is malformed ({fmt} format): {e}") from None
    except (TypeError, OverflowError) as e:
        raise ValueError(f"{label} is malformed ({fmt} format): {e}") from None


def index_dtype_for(*arrays: np.ndarray, maxval: int = 0) -> np.dtype:
    """int32 when every array and ``maxval`` fit in it, else int64 (kernels take one type)."""
    itype = np.dtype(np.int32)
    for a in arrays:
        itype = np.promote_types(itype, a.dtype)
    if itype not in _INDEX_DTYPES or maxval > np.iinfo(np.int32).max:
        itype = np.dtype(np.int64)
    return itype


def check_sparse_matrix(name: str, X: Any, *, dtype: Any = None,
                        n_cols: Union[int, None] = None,
                        sum_duplicates: bool = True) -> "sp.csr_matrix":
    """A checked sparse input as a canonical CSR matrix that kernels may trust.

    The structure is checked first (:func:`check_sparse_structure`); only then is the input
    converted: to CSR with one int32/int64 index type for ``indptr`` and ``indices``
    (int64 when nnz or a dimension needs it), values of ``dtype`` (default: the input's
    floating type, float64 for other real types) and, with ``sum_duplicates``, sorted
    column indices with duplicate entries summed (SciPy's canonical form). ``data`` and
    ``indices`` hold exactly the stored entries, so kernels may read them whole.

    Parameters
    ----------
    name : str
        How messages name the input (``"X"``, ``"eval_set"``, ``"X_true"``).
    X : scipy.sparse matrix or array
    dtype : numpy dtype, optional
    n_cols : int, optional
        The number of columns the model expects; a mismatch is a ValueError.
    sum_duplicates : bool, default True

    Raises
    ------
    TypeError
        ``X`` is not sparse, or holds complex, object or other non-real values.
    ValueError
        A malformed structure or a wrong number of columns. Values are not checked for NaN
        or infinity here: each caller has its own policy.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from sparseopt._validation import check_sparse_matrix
    >>> X = sp.csr_matrix((np.ones(2), np.array([0, 5]), np.array([0, 1, 2])), shape=(2, 3))
    >>> check_sparse_matrix("X", X)
    Traceback (most recent call last):
    ...
    ValueError: X is malformed (csr format): column index 5 is out of range for 3 columns
    """
    if not sp.issparse(X):
        raise TypeError(f"{name} must be a scipy.sparse matrix or array, got "
                        f"{type(X).__name__}")
    check_sparse_structure(name, X)
    if X.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if n_cols is not None and X.shape[1] != n_cols:
        raise ValueError(f"{name} has {X.shape[1]} columns (features), expected {n_cols}")
    if dtype is None:
        dtype = X.dtype if X.dtype in _FLOAT_DTYPES else np.dtype(np.float64)
    if X.format in ("lil", "dok", "dia"):
        X = X.tocoo()
    csr = sp.csr_matrix(X)  # the structure is known to be sound: conversions are safe now
    if sum_duplicates and not csr.has_canonical_format:
        csr = csr.copy()  # csr_matrix(X) may share X's arrays: never edit the caller's input
        csr.sum_duplicates()
    itype = index_dtype_for(csr.indptr, csr.indices, maxval=max(csr.nnz, *csr.shape))
    end = int(csr.indptr[-1])  # SciPy allows data and indices longer than the stored entries
    return sp.csr_matrix((np.ascontiguousarray(csr.data[:end], dtype=dtype),
                          np.ascontiguousarray(csr.indices[:end], dtype=itype),
                          np.ascontiguousarray(csr.indptr, dtype=itype)),
                         shape=csr.shape, copy=False)


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
    dtype = np.dtype(dtype)
    check_param(key, arr, half=dtype in _HALF_DTYPES, bfloat16=dtype == np.uint16)
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


# --------------------------------------------------------------------------- recommenders' interaction matrices

# User and item ids are packed into the two 32-bit halves of one int64 per rating
# (``_sampling.pack_ratings``), so neither count may exceed what 31 bits hold.
MAX_IDS = 2**31 - 1


def check_interactions(name: str, X: Any, implicit: bool) -> sp.csr_matrix:
    """``X`` as a checked CSR matrix of interactions, or an exception naming ``name``.

    Parameters
    ----------
    name : str
        The argument's name in the caller's signature (``"X"``, ``"eval_set"``), used in
        every message.
    X : scipy.sparse matrix or array, or ndarray, shape (n_users, n_items)
        Any SciPy format; its structure is checked before any SciPy routine converts it. A
        dense array stands for the sparse matrix of its non-zero entries.
    implicit : bool
        ``True``: every stored non-zero is one positive interaction; a pair stored more than
        once is one positive (its entries are summed, then stored zeros dropped).
        ``False``: stored values are explicit ratings, stored zeros included, and a pair
        stored more than once is refused (see :func:`_refuse_duplicates`).

    Returns
    -------
    scipy.sparse.csr_matrix
        Canonical enough for the kernels: one index dtype, exactly ``nnz`` entries, finite
        values. It may share arrays with ``X``; it is never written to.

    Raises
    ------
    TypeError
        ``X`` is not a SciPy sparse matrix or array, or holds non-real values.
    ValueError
        A malformed structure, more than ``2**31 - 1`` users or items, NaN or infinite
        values, or (explicit ratings) a pair stored twice.
    """
    if isinstance(X, np.ndarray):  # dense: its non-zero entries are the interactions
        X = check_dense_interactions(name, X)
    if not sp.issparse(X):
        raise TypeError(f"{name} must be a scipy.sparse users x items matrix, a 2-D array, "
                        f"a DataFrame or a tuple of columns, got {type(X).__name__}")
    check_sparse_structure(name, X)  # before X.shape is trusted and before any conversion
    if X.ndim != 2 or 0 in X.shape:
        # worded as scikit-learn's check_array words it, which its estimator checks expect
        what = "sample(s)" if X.shape[0] == 0 else "feature(s)"
        raise ValueError(f"{name} has shape {X.shape}: it needs at least one user and one "
                         f"item; found array with 0 {what} (shape={X.shape}) while a "
                         "minimum of 1 is required.")
    if max(X.shape) > MAX_IDS:
        raise ValueError(f"{name} has shape {X.shape}: at most 2**31 - 1 users and items")
    if implicit:
        # an interaction stored twice is one interaction (summed, then a stored 0 is no
        # interaction)
        X = check_sparse_matrix(name, X, dtype=np.float64)
        if X.nnz and not X.data.all():
            X = X.copy()  # X may share the caller's index arrays
            X.eliminate_zeros()
    else:
        if X.format == "coo":  # SciPy's COO -> CSR conversion would sum the duplicates
            coords = X.coords if hasattr(X, "coords") else (X.row, X.col)
            _refuse_duplicates(name, coords[0], coords[1], X.shape[1])
        X = check_sparse_matrix(name, X, sum_duplicates=False)
        rows = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
        _refuse_duplicates(name, rows, X.indices, X.shape[1])
    if X.nnz and not np.all(np.isfinite(X.data)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return X


def _refuse_duplicates(name: str, rows: np.ndarray, cols: np.ndarray, n_cols: int) -> None:
    """A rating stored twice is ambiguous (SciPy would add the two: 4 and 5 would train as
    9), so it is refused; the message says how to aggregate."""
    keys = np.sort(rows.astype(np.int64) * n_cols + cols, kind="stable")  # CSR: sorted runs
    dup = np.flatnonzero(keys[1:] == keys[:-1])
    if dup.shape[0]:
        u, i = divmod(int(keys[dup[0]]), n_cols)
        raise ValueError(
            f"{name} stores {dup.shape[0]} duplicate (user, item) entr"
            f"{'y' if dup.shape[0] == 1 else 'ies'} (the first: user {u}, item {i}); each "
            "rating must be stored once. Aggregate them first: X.sum_duplicates() adds them "
            "up; the MatrixFactorization docstring shows how to average them")


def check_id_counts(name: str, n_users: int, n_items: int) -> None:
    """At most ``MAX_IDS`` distinct users and items (the kernels' int32 ids), as
    :func:`check_interactions` requires of a matrix's shape."""
    if max(n_users, n_items) > MAX_IDS:
        raise ValueError(f"{name} has {n_users} users and {n_items} items: at most 2**31 - 1 "
                         "of each")


def pair_order(name: str, users: np.ndarray, items: np.ndarray, n_items: int,
               user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """The order that sorts encoded ratings by (user, item), the order of the CSR matrix a
    single-process fit builds from them; a (user, item) pair given twice is refused, naming
    its raw ids (``user_ids`` / ``item_ids``: the encoders' classes) as
    ``recommend._interactions.interactions_input`` does.

    ``users`` and ``items`` are int64 row indices below ``len(user_ids)`` and ``n_items``
    (at most ``MAX_IDS`` each, so ``user * n_items + item`` fits in an int64)."""
    keys = users * np.int64(n_items) + items
    order = np.argsort(keys, kind="stable")  # a radix / merge sort: sorted runs are cheap
    sorted_keys = keys[order]
    dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if dup.shape[0]:
        first = order[dup[0]]
        raise duplicate_pairs_error(name, dup.shape[0], user_ids[users[first]],
                                    item_ids[items[first]])
    return order


def duplicate_pairs_error(name: str, count: int, user: Any, item: Any) -> ValueError:
    """The error for ratings that give a (user, item) pair ``count`` times over; ``user`` and
    ``item``: the raw ids of the first (NumPy scalars)."""
    return ValueError(
        f"{name} holds {count} duplicate (user, item) pair{'' if count == 1 else 's'} (the "
        f"first: user {user.item()!r}, item {item.item()!r}); each rating must be given once. "
        "Aggregate them first, e.g. "
        "df.groupby(['user', 'item'], as_index=False)['rating'].mean()")


def check_n_jobs(n_jobs: Any, name: str = "n_jobs") -> Union[int, None]:
    """scikit-learn's ``n_jobs`` as a thread count for :func:`check_n_threads`: None stays
    None (the default threads), a positive int is itself, a negative one counts back from the
    available cores as joblib does (-1: every core, -2: all but one; at least 1). 0 and
    anything but an int raise ``ValueError`` naming ``name``; so does a count above
    :func:`max_n_threads`."""
    if n_jobs is None:
        return None
    if isinstance(n_jobs, (bool, np.bool_)) or not isinstance(n_jobs, numbers.Integral):
        raise ValueError(f"{name} must be None or a non-zero int, got {n_jobs!r}")
    n = int(n_jobs)
    if n == 0:
        raise ValueError(f"{name} == 0 has no meaning (None, a positive count, or -1 for "
                         "every core)")
    if n < 0:
        n = max(1, _cores() + 1 + n)
    try:
        return check_n_threads(n, name)
    except TypeError as exc:  # pragma: no cover - n is an int here
        raise ValueError(str(exc)) from None


# =========================================================================== raw ids
# Interactions given as columns (a pandas DataFrame, or a tuple of user ids, item ids and
# optionally values) carry the caller's own ids: integers or strings, encoded by
# ``recommend._interactions.IdEncoder``. The rules for those columns live here.


class UnknownIdError(ValueError, IndexError):
    """A raw user or item id the model was not fitted with.

    A ``ValueError`` (as scikit-learn's encoders raise for unseen labels) and an
    ``IndexError`` (as an out-of-range index raises for a model fitted on a matrix), so code
    written for either form catches it.

    Examples
    --------
    >>> from sparseopt.recommend import IdEncoder, UnknownIdError
    >>> enc = IdEncoder("items").fit(["a", "b"])
    >>> try:
    ...     enc.transform(["z"])
    ... except UnknownIdError as e:
    ...     print(e)
    items[0] = 'z' is not one of the 2 items the model was fitted with
    """


# pandas' missing-value markers, recognised without importing pandas
_MISSING_TYPES = ("NAType", "NaTType")


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return type(value).__name__ in _MISSING_TYPES


def _column_array(name: str, values: Any) -> np.ndarray:
    """A 1-D NumPy array of a column (pandas Series, array-like or scalar-free list)."""
    to_numpy = getattr(values, "to_numpy", None)
    try:
        if callable(to_numpy) and not isinstance(values, np.ndarray):
            arr = np.asarray(to_numpy())
        else:
            arr = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D array of ids ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of ids, got shape {arr.shape}")
    return arr


def check_raw_ids(name: str, ids: Any, *, allow_scalar: bool = False) -> np.ndarray:
    """Raw ids as a 1-D array of one kind: ``int64`` (or ``uint64`` for ids past
    ``2**63 - 1``), or NumPy strings (``<U``).

    Integers of any width and strings are ids; mixing the two (``1`` and ``"1"``), floats
    (a NaN-holding integer column that pandas made float), bools, missing values (NaN,
    ``None``, ``pd.NA``) and other objects are refused, naming the first offender: an id
    silently converted would match another id or none.

    Raises
    ------
    TypeError
        Ids that are neither integers nor strings, or a mix of both.
    ValueError
        A missing value, an integer beyond 64 bits, more than one axis.
    """
    if allow_scalar and np.ndim(ids) == 0 and not hasattr(ids, "to_numpy"):
        ids = [ids.item() if isinstance(ids, np.generic) else ids]
    arr = _column_array(name, ids)
    kind = arr.dtype.kind
    if arr.size == 0:
        return arr.astype(np.int64) if kind not in "US" else arr.astype(str)
    if kind in "iu":
        if kind == "u" and arr.dtype.itemsize == 8 and int(arr.max()) > np.iinfo(np.int64).max:
            return np.ascontiguousarray(arr, dtype=np.uint64)
        return np.ascontiguousarray(arr, dtype=np.int64)
    if kind == "U":
        return np.ascontiguousarray(arr)
    if kind == "S":
        raise TypeError(f"{name} holds bytes; decode them to str first")
    if kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            pos = int(np.argmax(bad))
            raise ValueError(f"{name}[{pos}] is a missing value ({arr[pos]}): every "
                             "interaction needs an id")
        raise TypeError(f"{name} holds floats (dtype {arr.dtype}); ids must be integers or "
                        "strings (convert with .astype('int64') or .astype(str))")
    if kind != "O":
        raise TypeError(f"{name} must hold integers or strings, got dtype {arr.dtype}")
    # an object array: every element an int (not a bool) or every element a str. pandas,
    # when the caller already imported it, classifies the column in C (a column of a
    # DataFrame is an object array of str); anything but a clean column is walked below
    # to name the first offender
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        try:
            inferred = pandas.api.types.infer_dtype(arr, skipna=False)
        except Exception:  # pragma: no cover - a pandas without it: walk the column
            inferred = None
        if inferred == "string":
            return arr.astype(str)
    n_str = n_int = 0
    for pos, v in enumerate(arr):
        if isinstance(v, str):
            n_str += 1
        elif isinstance(v, (numbers.Integral, np.integer)) and \
                not isinstance(v, (bool, np.bool_)):
            n_int += 1
        elif _is_missing(v):
            raise ValueError(f"{name}[{pos}] is a missing value ({v!r}): every interaction "
                             "needs an id")
        else:
            raise TypeError(f"{name}[{pos}] = {v!r} ({type(v).__name__}): ids must be "
                            "integers or strings")
        if n_str and n_int:
            raise TypeError(f"{name} mixes integers and strings (at position {pos}: {v!r}); "
                            "use one kind, e.g. .astype(str)")
    if n_str:
        return arr.astype(str)
    try:
        return np.array(list(arr), dtype=np.int64)
    except OverflowError:
        pass
    try:
        return np.array(list(arr), dtype=np.uint64)
    except OverflowError:
        big = next(v for v in arr if not -2**63 <= int(v) < 2**64)
        raise ValueError(f"{name} holds {int(big)}, beyond 64 bits; ids are int64, uint64 "
                         "or strings (convert such ids to str)") from None


# The column names of a DataFrame of interactions: users, items, then the optional value
# column (explicit models need it; implicit ones count a row as a positive unless its
# value is 0).
USER_COLUMN, ITEM_COLUMN, VALUE_COLUMNS = "user", "item", ("rating", "value")


def is_columns(X: Any) -> bool:
    """Whether ``X`` is interactions as columns (a DataFrame or a tuple), not a matrix."""
    return isinstance(X, tuple) or (hasattr(X, "columns") and hasattr(X, "iloc"))


def check_columns(name: str, X: Any, implicit: bool
                  ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Tuple[str, str]]:
    """Interactions given as columns: ``(user_ids, item_ids, values or None, labels)``, the
    ids checked by :func:`check_raw_ids`, the values finite float64, ``labels`` how
    messages name the two id columns (``"X[0]"``, ``"X['user']"``).

    ``X`` is a tuple ``(user_ids, item_ids)`` or ``(user_ids, item_ids, values)`` of
    equal-length 1-D array-likes, or a pandas DataFrame with columns ``"user"``, ``"item"``
    and optionally one of ``"rating"`` / ``"value"`` (other columns are ignored). Explicit
    models (``implicit=False``) need the values.
    """
    if isinstance(X, tuple):
        if len(X) not in (2, 3):
            raise ValueError(f"{name} as a tuple must be (user_ids, item_ids) or (user_ids, "
                             f"item_ids, values), got {len(X)} elements")
        users, items = X[0], X[1]
        values = X[2] if len(X) == 3 else None
        labels = (f"{name}[0]", f"{name}[1]", f"{name}[2]")
    else:
        columns = list(X.columns)
        missing = [c for c in (USER_COLUMN, ITEM_COLUMN) if c not in columns]
        if missing:
            raise ValueError(f"{name} has no column {missing[0]!r}: a DataFrame of "
                             f"interactions has columns 'user', 'item' and optionally "
                             f"'rating' (or 'value'); got columns {columns[:10]}")
        found = [c for c in VALUE_COLUMNS if c in columns]
        if len(found) > 1:
            raise ValueError(f"{name} has both a 'rating' and a 'value' column; keep one")
        for c in (USER_COLUMN, ITEM_COLUMN) + tuple(found):
            if columns.count(c) > 1:
                raise ValueError(f"{name} has the column {c!r} more than once")
        users, items = X[USER_COLUMN], X[ITEM_COLUMN]
        values = X[found[0]] if found else None
        labels = (f"{name}['user']", f"{name}['item']",
                  f"{name}[{found[0]!r}]" if found else "")
    u = check_raw_ids(labels[0], users)
    i = check_raw_ids(labels[1], items)
    if u.shape[0] != i.shape[0]:
        raise ValueError(f"{name}: the user and item columns differ in length: "
                         f"{u.shape[0]} vs {i.shape[0]}")
    v = None
    if values is not None:
        to_numpy = getattr(values, "to_numpy", None)
        if callable(to_numpy) and not isinstance(values, np.ndarray):
            try:
                values = to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError):
                values = to_numpy()
        v = check_real_array(labels[2], values, np.float64, finite=True)
        if v.ndim != 1:
            raise ValueError(f"{labels[2]} must be 1-D, got shape {v.shape}")
        if v.shape[0] != u.shape[0]:
            raise ValueError(f"{name}: the value column has {v.shape[0]} entries, the id "
                             f"columns {u.shape[0]}")
    elif not implicit:
        raise ValueError(f"{name} holds no ratings: an explicit model (loss='squared') needs "
                         "(user_ids, item_ids, ratings), or a DataFrame with a 'rating' "
                         "column")
    if u.shape[0] == 0:
        raise ValueError(f"{name} holds no interaction (0 rows)")
    return u, i, v, (labels[0], labels[1])


def check_dense_interactions(name: str, X: np.ndarray) -> sp.csr_matrix:
    """A dense 2-D array of interactions as a CSR matrix of its non-zero entries (zeros are
    missing ratings / no interaction), its values real and finite."""
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D users x items array, got shape {X.shape}")
    if X.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} holds complex values")
    dtype = X.dtype if X.dtype in _FLOAT_DTYPES else np.dtype(np.float64)
    arr = check_real_array(name, X, dtype)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return sp.csr_matrix(arr)


def check_seen_flags(filter_already_liked: Any, exclude_seen: Any) -> bool:
    """``recommend``'s flag under its two names: ``filter_already_liked`` (documented) and
    ``exclude_seen`` (its former name); True when neither is given, an error when both are
    given with different values."""
    a = None if filter_already_liked is None else \
        check_flag("filter_already_liked", filter_already_liked)
    b = None if exclude_seen is None else check_flag("exclude_seen", exclude_seen)
    if a is not None and b is not None and a != b:
        raise ValueError(f"filter_already_liked={a} and exclude_seen={b} disagree: they are "
                         "two names of one flag (give filter_already_liked only)")
    return True if a is None and b is None else bool(a if a is not None else b)


def check_id_list(name: str, ids: Any) -> Any:
    """A 1-D list of raw ids (``filter_items`` / ``items`` of a model fitted on raw ids):
    more than one axis is a ``ValueError``; the ids themselves are checked when encoded."""
    if np.ndim(ids) != 1:
        raise ValueError(f"{name} must be a 1-D list of item ids, got shape {np.shape(ids)}")
    return ids


def check_rating_range(value: Any) -> Tuple[float, float]:
    """A fitted ``rating_range_``: two finite floats, low <= high (``ValueError`` naming the
    attribute otherwise)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"rating_range_ must be (lowest, highest) training rating, got "
                         f"{value!r}; fitted attributes cannot be changed (refit "
                         "instead)") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"rating_range_ must be two finite ratings, low <= high, got "
                         f"{value!r}")
    return lo, hi


def check_indices_in(name: str, indices: Any, low: int, n: int) -> np.ndarray:
    """Integer indices of any shape in ``[low, n)`` as int64 (``TypeError`` unless integers,
    ``IndexError`` naming the first one out of range)."""
    arr = np.asarray(indices)
    if arr.dtype.kind not in "iu":
        if arr.size:
            raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    if arr.size:
        flat = arr.reshape(-1)
        bad = (flat > n - 1) if arr.dtype.kind == "u" else ((flat < low) | (flat >= n))
        if bad.any():
            pos = int(np.argmax(bad))
            raise IndexError(f"{name}[{pos}] = {int(flat[pos])} is out of range: the encoder "
                             f"holds {n} ids")
    return arr.astype(np.int64)
# Most WARP candidates drawn per positive: a scan costs up to max_sampled dot products per
# positive, and past a few hundred draws the scan finds a violation so rarely that the step's
# rank weight (log of n_items / draws) is nearly 0 anyway.
MAX_WARP_SAMPLED = 1000


def check_max_sampled(value: Any) -> Union[int, str]:
    """``max_sampled`` of ``MatrixFactorization(loss="warp")``: ``"auto"`` or an int in
    [1, 1000]."""
    if isinstance(value, str):
        if value == "auto":
            return value
        raise ValueError(f"max_sampled must be 'auto' or a positive int, got {value!r}")
    n = check_positive_int("max_sampled", value)
    if n > MAX_WARP_SAMPLED:
        raise ValueError(f"max_sampled must be at most {MAX_WARP_SAMPLED}, got {n}")
    return n


def confidence_weights(name: str, values: np.ndarray, alpha: float) -> Optional[np.ndarray]:
    """The sample weights ``1 + alpha * r`` of implicit positives whose stored values ``r``
    (a checked interaction matrix's ``data``: finite, duplicates summed) are counts; ``None``
    when ``alpha`` is 0 (values ignored, every positive weighs 1).

    Raises
    ------
    ValueError
        With ``alpha > 0``: a negative value (a count cannot be), or a weight too large to
        be a finite float64.
    """
    if alpha == 0.0:
        return None
    r = np.asarray(values, dtype=np.float64)
    if r.shape[0] and r.min() < 0:
        raise ValueError(f"{name} holds negative values; confidence_alpha > 0 reads them as "
                         "counts (each positive weighs 1 + confidence_alpha * value)")
    with np.errstate(over="ignore"):
        w = 1.0 + alpha * r
    if w.shape[0] and not np.isfinite(w).all():
        raise ValueError(f"{name}'s values times confidence_alpha={alpha!r} overflow float64; "
                         "scale the values or the weight down")
    return w


def check_features(name: str, F: Any, n_rows: Optional[int], n_features: Optional[int],
                   dtype: Any, what: str) -> sp.csr_matrix:
    """Side features of users or items (``user_features``, ``item_features``) as a checked
    CSR matrix of ``dtype``, or an exception naming ``name``.

    Parameters
    ----------
    name : str
        The argument's name in the caller's signature.
    F : scipy.sparse matrix or array, shape (n_rows, n_features)
        One row per user (item), one column per feature; a stored value is the feature's
        weight in that row's representation. Any real value is allowed (negative weights
        included); NaN and infinity are refused. Any SciPy format; the structure is checked
        before any conversion, and entries stored twice are summed.
    n_rows : int or None
        The rows ``F`` must have (the users or items of ``X``); ``None``: any number of at
        least one row (new users or items at serving time).
    n_features : int or None
        The columns ``F`` must have (the features the model was fitted with); ``None``: any
        number of at least one column (the first fit).
    dtype : numpy dtype
        The model's dtype: the values are stored in it, as the tables they multiply.
    what : str
        ``"users"`` or ``"items"``, for the messages.

    Raises
    ------
    TypeError
        ``F`` is not a SciPy sparse matrix or array, or holds non-real values.
    ValueError
        A malformed structure, a wrong number of rows or columns, no column, more than
        ``2**31 - 1`` rows or columns, NaN or infinite values (also after the cast to
        ``dtype``).
    """
    if not sp.issparse(F):
        raise TypeError(f"{name} must be a scipy.sparse {what} x features matrix, got "
                        f"{type(F).__name__}")
    check_sparse_structure(name, F)  # before F.shape is trusted and before any conversion
    if F.ndim != 2:
        raise ValueError(f"{name} must be 2-D ({what} x features), got shape {F.shape}")
    if max(F.shape) > MAX_IDS:
        raise ValueError(f"{name} has shape {F.shape}: at most 2**31 - 1 {what} and features")
    if n_rows is not None and F.shape[0] != n_rows:
        raise ValueError(f"{name} has {F.shape[0]} rows, expected one per {what[:-1]} of X "
                         f"({n_rows})")
    if n_rows is None and F.shape[0] == 0:
        raise ValueError(f"{name} has no row: it must describe at least one of the {what}")
    if F.shape[1] == 0:
        raise ValueError(f"{name} has no column: it must hold at least one feature")
    if n_features is not None and F.shape[1] != n_features:
        raise ValueError(f"{name} has {F.shape[1]} columns (features), the model was fitted "
                         f"with {n_features}")
    F = check_sparse_matrix(name, F)
    if F.nnz and not np.all(np.isfinite(F.data)):
        raise ValueError(f"{name} holds NaN or infinite values")
    with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
        data = F.data.astype(dtype)
    if data.size and not np.all(np.isfinite(data)):
        raise ValueError(f"{name} holds values too large for {np.dtype(dtype)}")
    return sp.csr_matrix((data, F.indices, F.indptr), shape=F.shape, copy=False)


# --------------------------------------------------------------------------- PyTorch tensors
# sparseopt.torch's checks. They read a tensor's attributes and never import torch, so that
# ``import sparseopt`` stays free of it.

_TORCH_FLOAT_DTYPES = ("torch.float32", "torch.float64")
_TORCH_HALF_DTYPES = ("torch.float16", "torch.bfloat16")


def _torch_dtype_ok(name: str, dtype: Any, what: str, half: bool = False) -> None:
    d = str(dtype)
    if d in _TORCH_FLOAT_DTYPES or (half and d in _TORCH_HALF_DTYPES):
        return
    if d in _TORCH_HALF_DTYPES:
        raise TypeError(f"{name}: {what} has dtype {d}; float16 and bfloat16 are not supported "
                        "yet (sparseopt.torch updates float32 and float64 tensors)")
    raise TypeError(f"{name}: {what} must be float32 or float64, got dtype {d}")


def _torch_device_ok(name: str, t: Any, what: str) -> None:
    dev = getattr(t, "device", None)
    if getattr(dev, "type", None) != "cpu":
        raise ValueError(f"{name}: {what} is on device {dev}; sparseopt.torch updates CPU "
                         "tensors in place (keep this parameter on a torch.optim optimizer, or "
                         "move it to the CPU)")


def check_torch_param(name: str, t: Any) -> Tuple[int, ...]:
    """A parameter of a ``sparseopt.torch`` optimizer: a strided CPU tensor of float32,
    float64, float16 or bfloat16 that requires a gradient, contiguous (updated in place through a NumPy view).
    Returns the ``(n,)`` or ``(n, d)`` shape of that view: a 0-d tensor is one row, a tensor of
    more than 2 dimensions is viewed as ``(shape[0], prod(shape[1:]))``."""
    tensor_type = type(t).__mro__
    if not any(c.__module__.startswith("torch") and c.__name__ == "Tensor" for c in tensor_type):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if str(getattr(t, "layout", "")) != "torch.strided":
        raise TypeError(f"{name} has layout {t.layout}; only dense (strided) parameters can be "
                        "optimized (their gradients may be sparse)")
    _torch_device_ok(name, t, "the parameter")
    _torch_dtype_ok(name, t.dtype, "the parameter", half=True)
    if not t.requires_grad:
        raise ValueError(f"{name} has requires_grad=False: it never gets a gradient; leave it "
                         "out of the optimizer's parameters")
    if not t.is_contiguous():
        raise ValueError(f"{name} is not contiguous (shape {tuple(t.shape)}, strides "
                         f"{tuple(t.stride())}); it is updated in place through a NumPy view, "
                         "so pass a contiguous parameter (p.data = p.data.contiguous())")
    shape = tuple(t.shape)
    if len(shape) == 0:
        return (1,)
    if len(shape) <= 2:
        return shape
    return (shape[0], int(np.prod(shape[1:], dtype=np.int64)))


def check_torch_param_unchanged(name: str, t: Any, shape: Tuple[int, ...], dtype: Any) -> None:
    """A parameter whose memory changed since the last step (``p.data = ...``,
    ``torch.utils.swap_tensors``) must still be one the optimizer's state fits."""
    check_torch_param(name, t)
    if tuple(t.shape) != shape or t.dtype != dtype:
        raise ValueError(
            f"{name} changed from shape {shape} and dtype {dtype} to shape {tuple(t.shape)} and "
            f"dtype {t.dtype} after the optimizer was built (its state no longer fits); build "
            "a new optimizer for it"
        )


def check_torch_grad(name: str, g: Any, param: Any) -> str:
    """The gradient of a parameter: ``"dense"`` (strided, the parameter's shape) or
    ``"rows"`` (sparse COO over the first dimension, any number of entries, duplicates
    allowed) or ``"coo2"`` (a fully sparse COO gradient of a 2-D parameter); CPU, the
    parameter's dtype."""
    # the common case at every step, in a few attribute reads: a dense CPU gradient of the
    # (strided, CPU) parameter's layout, dtype and shape (layouts and dtypes are singletons)
    if getattr(g, "layout", None) is param.layout and getattr(g, "dtype", None) is param.dtype \
            and getattr(g, "is_cpu", False) is True and g.shape == param.shape:
        return "dense"
    layout = str(getattr(g, "layout", ""))
    _torch_device_ok(name, g, "the gradient")
    if g.dtype != param.dtype:
        raise TypeError(f"{name}: the gradient has dtype {g.dtype}, the parameter {param.dtype}")
    if tuple(g.shape) != tuple(param.shape):
        raise ValueError(f"{name}: the gradient has shape {tuple(g.shape)}, the parameter "
                         f"{tuple(param.shape)}")
    if layout == "torch.strided":
        return "dense"
    if layout != "torch.sparse_coo":
        raise TypeError(f"{name}: gradients of layout {layout} are not supported (dense or "
                        "sparse COO gradients are)")
    sd = g.sparse_dim()
    if sd == 1 and param.dim() >= 1:
        return "rows"
    if sd == 2 and param.dim() == 2:
        return "coo2"
    raise ValueError(f"{name}: a sparse gradient with {sd} sparse dimension(s) of a parameter "
                     f"of shape {tuple(param.shape)} is not supported (sparse over rows, as "
                     "nn.Embedding(sparse=True) makes, or fully sparse 2-D)")


def check_torch_step(name: str, value: Any) -> int:
    """A step count from a state dict: an int, or a 0-d tensor (float in torch.optim.Adagrad)
    holding a whole number."""
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "ndim", 0) == 0 and \
            not isinstance(value, (bool, np.bool_)):
        value = item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"state_dict: {name} has an invalid step {value!r} (a whole number "
                         "is expected)")
    return int(value)


def check_torch_state_dict(state_dict: Any, group_sizes: Sequence[int]
                           ) -> Tuple[Mapping[Any, Any], Sequence[Mapping[str, Any]]]:
    """The structure of a state dict given to a ``sparseopt.torch`` optimizer (torch's
    format): ``state`` (parameter id -> dict) and ``param_groups`` (dicts with ``params``), as
    many groups as the optimizer has, each listing as many parameters, and state only for
    listed ids. Returns ``(state, param_groups)``; the values are checked when loaded."""
    if not isinstance(state_dict, Mapping) or "state" not in state_dict or \
            "param_groups" not in state_dict:
        raise TypeError("load_state_dict expects a dict made by state_dict() (with 'state' "
                        f"and 'param_groups'), got {type(state_dict).__name__}")
    states, groups = state_dict["state"], state_dict["param_groups"]
    if not isinstance(states, Mapping):
        raise TypeError(f"state_dict['state'] must be a dict, got {type(states).__name__}")
    if not isinstance(groups, (list, tuple)) or not all(
            isinstance(g, Mapping) and isinstance(g.get("params"), (list, tuple))
            for g in groups):
        raise TypeError("state_dict['param_groups'] must be a list of dicts with a 'params' "
                        "list")
    if len(groups) != len(group_sizes):
        raise ValueError(f"state_dict has {len(groups)} param groups, this optimizer "
                         f"{len(group_sizes)}")
    known = set()
    for gi, (g, n) in enumerate(zip(groups, group_sizes)):
        if len(g["params"]) != n:
            raise ValueError(f"param group {gi} of state_dict has {len(g['params'])} "
                             f"parameters, this optimizer's {n}")
        known.update(g["params"])
    unknown = [k for k in states if k not in known]
    if unknown:
        raise KeyError(f"state_dict has state for parameters {unknown[:5]} that no param "
                       "group lists")
    return states, groups


def check_torch_state_tensor(name: str, sname: str, t: Any) -> None:
    """A state tensor from a state dict: dense, on the CPU (its values are checked by the
    NumPy optimizer's ``load_state_dict``)."""
    if str(getattr(t, "layout", "")) != "torch.strided" or \
            getattr(getattr(t, "device", None), "type", None) != "cpu":
        raise ValueError(f"state_dict: state {sname!r} of {name} must be a dense CPU tensor, "
                         f"got layout {t.layout} on device {t.device}")


# --------------------------------------------------------------------------- distributed fit


def dsgd_refusal(p: Dict[str, Any], optimizer_params: Any) -> Optional[str]:
    """Why ``sparseopt.dask.fit`` cannot train a ``MatrixFactorization`` of resolved
    parameters ``p`` by DSGD, or None when it can. DSGD trains blocks of users and items
    that share no row in parallel, each with the rows' own optimizer state: it needs a loss
    whose gradient reads only the rating's user and item (squared; BPR and WARP draw
    negatives among all the items) and a row update that does not read the global step
    count (which the blocks do not share)."""
    if p["loss"] != "squared":
        return (f"loss={p['loss']!r} draws its negatives among all the items, which a block "
                "of DSGD does not hold: DSGD trains loss='squared'")
    kw = optimizer_params if isinstance(optimizer_params, dict) else {}
    name = p["optimizer"]
    if name not in ("adagrad", "rmsprop", "sgd"):
        return (f"optimizer={name!r} reads the global step count (bias correction), which "
                "the blocks of DSGD do not share: DSGD trains with 'adagrad', 'rmsprop' or "
                "'sgd'")
    for key, ok in (("lr_decay", 0), ("lazy", "frozen"), ("rounding", "nearest")):
        if key in kw and kw[key] != ok:
            return (f"optimizer_params {key}={kw[key]!r} reads the global step count, which "
                    f"the blocks of DSGD do not share; DSGD needs {key}={ok!r}")
    return None


def check_fit_method(method: Any, n_blocks: Any, estimator: Any, sync_every: Any,
                     persist: bool) -> str:
    """The training method of ``sparseopt.dask.fit``: ``"dsgd"`` or ``"mixing"``.

    ``"auto"`` is DSGD for a ``MatrixFactorization`` that DSGD can train (``dsgd_refusal``)
    when neither ``sync_every`` (a mixing interval) nor ``persist=False`` (DSGD keeps its
    grid of ratings in the workers' memory) is given, and mixing otherwise. ``n_blocks``
    is DSGD's."""
    method = check_choice("method", method, ("auto", "dsgd", "mixing"))
    if n_blocks is not None:
        check_positive_int("n_blocks", n_blocks)
    name = type(estimator).__name__
    if name != "MatrixFactorization":
        if method == "dsgd":
            raise ValueError(f"method='dsgd' trains MatrixFactorization; {name} trains by "
                             "parameter mixing (method='auto' or 'mixing')")
        reason = "mixing"
    else:
        p = estimator._check_params()
        reason = dsgd_refusal(p, estimator.optimizer_params)
        if reason is None and sync_every is not None:
            reason = ("sync_every sets the interval of parameter mixing; DSGD exchanges "
                      "blocks after every cell (leave sync_every=None)")
        if reason is None and not persist:
            reason = ("DSGD keeps its grid of ratings in the workers' memory; persist=False "
                      "(partitions loaded at every pass) trains by method='mixing'")
        if method == "dsgd" and reason is not None:
            raise ValueError(f"method='dsgd' cannot train this model: {reason}")
        if method == "mixing" or reason is not None:
            reason = "mixing"
    resolved = "mixing" if reason == "mixing" else "dsgd"
    if n_blocks is not None and resolved != "dsgd":
        raise ValueError(f"n_blocks is the grid size of method='dsgd'; this fit trains by "
                         f"mixing (method={method!r})")
    return resolved


def check_distributed_fit(estimator: Any, sync_every: Any, n_epochs: Any, persist: Any,
                          stats: Any = None, callback: Any = None) -> None:
    """The arguments of ``sparseopt.dask.fit``, before any task is sent: the estimator must
    be one that trains by ``partial_fit`` on row partitions without needing all the data in
    one process, and the counts must be positive ints."""
    from .linear_model import SGDClassifier, SGDRegressor
    if isinstance(estimator, type):
        raise TypeError(f"estimator must be an estimator instance, got the class "
                        f"{estimator.__name__}")
    linear = isinstance(estimator, (SGDClassifier, SGDRegressor))
    name = type(estimator).__name__
    # the recommenders by class name: importing them needs scikit-learn, which a refused
    # estimator of another kind must not
    recommender = name in ("MatrixFactorization", "FMRegressor", "FMClassifier") and \
        type(estimator).__module__.startswith("sparseopt.recommend")
    if not (linear or recommender):
        raise TypeError(
            f"sparseopt.dask.fit trains SGDClassifier, SGDRegressor, MatrixFactorization, "
            f"FMRegressor and FMClassifier; {name} cannot be distributed (its training needs "
            "state that cannot be mixed row by row)")
    if n_epochs is None and linear:
        raise ValueError("n_epochs is required for SGDClassifier and SGDRegressor: the "
                         "distributed fit has no convergence test; pass the number of passes")
    if n_epochs is not None:
        check_positive_int("n_epochs", n_epochs)
    if sync_every is not None:
        check_positive_int("sync_every", sync_every)
    check_flag("persist", persist)
    if stats is not None and not isinstance(stats, list):
        raise TypeError(f"stats must be a list (one dict is appended per sync) or None, got "
                        f"{type(stats).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if recommender:
        if getattr(estimator, "early_stopping", False) is True:
            raise ValueError("early_stopping=True cannot be distributed (its validation split "
                             "needs all the data in one process); pass early_stopping=False")
        if getattr(estimator, "warm_start", False) is True:
            raise ValueError("warm_start=True cannot be distributed: the distributed fit "
                             "starts from a new model; pass warm_start=False")
        return
    avg = estimator.average
    if isinstance(avg, (bool, np.bool_, numbers.Integral)) and avg:
        raise ValueError(f"average={avg!r} cannot be distributed (the running average of "
                         "every step is a sequential quantity); fit with average=False")
    if estimator.early_stopping:
        raise ValueError("early_stopping=True cannot be distributed (its validation split "
                         "needs all the data in one process); pass early_stopping=False")
    cw = getattr(estimator, "class_weight", None)
    if isinstance(cw, str) and cw == "balanced":
        raise ValueError("class_weight='balanced' needs the class counts of all the data; "
                         "compute them (sklearn.utils.class_weight.compute_class_weight) and "
                         "pass a dict")


# --------------------------------------------------------------------------- compact state slots
# A compact table's state (sparseopt/optim/_slots.py) is reached through two maps a user can
# overwrite (``opt.state`` is public): the per-step checks below are O(1); the slots a step
# uses are checked against both maps as they are looked up (O(rows touched)), and the whole
# maps before a pass over every row (flush, state_dict).

# State of a compact table that is one int64 counter per slot (``sparseopt.optim._slots``).
SLOTTED_COUNTERS = ("row_step",)


def check_slot_state(key: ParamKey, state: Mapping[str, Any], names: Sequence[str],
                     n_rows: int, width: int, dtype: Any) -> None:
    """O(1): ``slot_of_row`` is a writeable C-contiguous int64 ``(n_rows,)`` array,
    ``row_of_slot`` a writeable C-contiguous int64 ``(capacity,)`` one, ``n_slots`` an int in
    ``[0, capacity]`` and each slotted array in ``names`` (present) a writeable
    ``(capacity, width)`` array of ``dtype`` with contiguous rows (a slotted counter: a
    writeable C-contiguous int64 ``(capacity,)`` array)."""
    name = describe(key)
    smap = state.get("slot_of_row")
    rmap = state.get("row_of_slot")
    i64 = np.dtype(np.int64)
    if smap is None or rmap is None or "n_slots" not in state:
        raise ValueError(f"{name} keeps its moments in slots (state_layout='compact'), but its "
                         "state lacks 'slot_of_row', 'row_of_slot' or 'n_slots' (was it replaced "
                         "between steps? use load_state_dict to set state)")
    for sname, arr in (("slot_of_row", smap), ("row_of_slot", rmap)):
        if not (isinstance(arr, np.ndarray) and arr.ndim == 1 and arr.dtype == i64
                and arr.flags.c_contiguous and arr.flags.writeable):
            raise ValueError(f"state {sname!r} of {name} must be a writeable C-contiguous 1-D "
                             "int64 array (was it replaced between steps? use load_state_dict "
                             "to set state)")
    if smap.shape[0] != n_rows:
        raise ValueError(f"state 'slot_of_row' of {name} has {smap.shape[0]} entries, expected "
                         f"one per row ({n_rows})")
    cap = rmap.shape[0]
    used = state.get("n_slots")
    if type(used) is not int or not 0 <= used <= cap:
        raise ValueError(f"state 'n_slots' of {name} must be an int in [0, {cap}] (the capacity "
                         f"of its slots), got {used!r}")
    for sname in names:
        if sname in state:
            if sname in SLOTTED_COUNTERS:
                check_state_array(name, sname, state[sname], (cap,), i64)
            else:
                check_state_array(name, sname, state[sname], (cap, width), dtype,
                                  strided_rows=True)


def raise_corrupt_slot(key: ParamKey, row: int, state: Mapping[str, Any]) -> None:
    """The slot maps of ``key`` disagree at ``row`` (or have no room left for it)."""
    raise ValueError(
        f"state of {describe(key)}: the slot of row {row} is corrupt (slot_of_row = "
        f"{int(state['slot_of_row'][row])}, n_slots = {state['n_slots']}, capacity "
        f"{state['row_of_slot'].shape[0]}); slot_of_row and row_of_slot must map the first "
        "n_slots slots and their rows to each other (use load_state_dict to set state)")


def check_slot_maps(key: ParamKey, state: Mapping[str, Any], n_rows: int) -> np.ndarray:
    """O(rows + capacity): the two maps of a compact table are inverse to each other on the
    ``n_slots`` slots in use and no other row has a slot. Returns the rows of the used slots."""
    smap, rmap, used = state["slot_of_row"], state["row_of_slot"], state["n_slots"]
    rows = rmap[:used]
    ok = rows.size == 0 or (int(rows.min()) >= 0 and int(rows.max()) < n_rows)
    if ok:
        ok = (np.array_equal(smap[rows], np.arange(1, used + 1, dtype=np.int64))
              and int(np.count_nonzero(smap)) == used)
    if not ok:
        raise ValueError(f"state of {describe(key)}: slot_of_row and row_of_slot are not "
                         f"inverse maps of its {used} slots (use load_state_dict to set state)")
    return rows
