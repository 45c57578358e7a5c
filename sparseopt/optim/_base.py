"""The optimizer base class: parameters, per-parameter state, the step protocol.

A step runs in two phases so that bad input changes nothing (SPEC section 5):

1. *prepare*: read and validate the hyper-parameters, then validate and merge every gradient
   (``_grad.merge``) — any error is raised here;
2. *apply*: allocate state on first use, advance each parameter's step counter, compute the
   float64 scalars and call the kernel.

Subclasses define ``_DEFAULTS`` / ``_PRESETS``, ``_check_group`` (hyper-parameter checks),
``_state_spec`` (which state arrays a parameter needs) and ``_apply`` (the kernel call).
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from .. import _validation as V
from .._kernels import _info, _rows
from ._grad import MergedRows, RowIndexer, merge

FLAGS = _rows.FLAGS

# Below this many updated elements (rows x width) a kernel runs on one thread: waking a team
# costs more than it saves (suite, warm: 2,417 x 16 rows took 0.36 ms on 2 threads, 0.27 ms on
# 1, with the threshold at 1 << 16), and on a loaded machine a parallel region can wait milliseconds for a descheduled thread (measured: a
# 4,096-index step at width 32 took 0.15 ms on 1 thread, 2.3 ms on 2 while the other core was
# busy). Benchmark suite, 2 threads vs 1 on a quiet machine: with 1 << 16, batches of 4,096 x 64
# and 2,417 x 16 ran at 0.74-0.95x; 25,629 x 16 (410k elements) and larger at 1.2-1.7x.
PARALLEL_MIN_ELEMENTS = 3 << 17
# Duplicate sums go parallel only from MERGE_PARALLEL_SCALE times that (batch rows x width)
# and only with few repeats (_grad.REPEATS_SERIAL_DIVISOR): a complete 2-thread step on
# 65,536 x 64 uniform indices took 7.15 vs 7.63 ms; at width 16 the merge was 0.67 vs 0.53 ms.
MERGE_PARALLEL_SCALE = 8

_COUNTERS = ("row_step", "last_step", "first_step")


class PowTable:
    """``table[i] = base ** i`` in float64, grown by doubling as step counters grow.

    Bias corrections ``1 - beta**tau`` and lazy decay factors ``beta**skipped`` are looked up
    here instead of calling ``pow`` per row (SPEC section 4: never float32 powers).
    """

    def __init__(self) -> None:
        self.base: Optional[float] = None
        self.table = np.ones(1)

    def get(self, base: float, upto: int) -> np.ndarray:
        if base != self.base or self.table.shape[0] <= upto:
            size = max(64, 1 << int(upto + 1).bit_length())
            self.table = np.power(float(base), np.arange(size, dtype=np.float64))
            self.base = base
        return self.table


# Large NumPy arrays start 16 bytes past a page boundary (glibc's mmap chunk header), so a
# 256-byte row spans 5 cache lines instead of 4 and a 64-byte row 2 instead of 1. State rows
# are read and written at random, once per touched row: align them to cache lines.
STATE_ALIGNMENT = 64


def aligned_zeros(shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
    """A zero-filled C-contiguous array whose data starts on a 64-byte boundary.

    Zeros come from calloc, so pages are mapped lazily: a huge table's state costs memory only
    for the rows that are touched (np.full would write every page).
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.zeros(nbytes + STATE_ALIGNMENT, dtype=np.uint8)
    start = (-raw.ctypes.data) % STATE_ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def interleaved_zeros(names: Tuple[str, ...], shape: Tuple[int, int], dtype) -> Dict[str, Any]:
    """Zeroed state arrays of ``shape`` = (n, d) that share rows: views of one aligned
    (n, len(names) * d) buffer, so a row's entries of every array sit in adjacent memory.

    An update reads and writes these arrays at the same random rows; adjacent rows mean fewer
    scattered cache-line fetches (Adam steps 1.01-1.17x faster with torch's step in between;
    the C driver benchmarks/c/interleave_rows.c shows the kernel-only effect).
    """
    n, d = shape
    buf = aligned_zeros((n, len(names) * d), dtype)
    return {name: buf[:, j * d:(j + 1) * d] for j, name in enumerate(names)}


def _width(p: np.ndarray) -> int:
    """Row width of a parameter (1 for a 1-D parameter)."""
    return 1 if p.ndim == 1 else p.shape[1]


class _Dummies:
    """1-row stand-ins for optional kernel arguments whose flag is off (never written)."""

    _cache: Dict[Any, np.ndarray] = {}

    @classmethod
    def rows(cls, dtype) -> np.ndarray:
        key = np.dtype(dtype)
        if key not in cls._cache:
            cls._cache[key] = np.zeros((1, 1), dtype=key)
        return cls._cache[key]


DUMMY_I64 = np.zeros(1, dtype=np.int64)
DUMMY_F64 = np.zeros(1, dtype=np.float64)


class Optimizer:
    """Base class of sparseopt's lazy optimizers (see ``Adam``, ``Adagrad``, ``RMSprop``)."""

    _DEFAULTS: Dict[str, Any] = {}
    _PRESETS: Dict[str, Dict[str, Any]] = {}
    # Hyper-parameters that decide which state exists; they cannot change after construction.
    _FIXED: Tuple[str, ...] = ()
    # State arrays that are always updated together and are kept row-interleaved (2-D params).
    _INTERLEAVED: Tuple[str, ...] = ()

    def __init__(self, params: Any, hyper: Dict[str, Any], *, preset: Optional[str],
                 n_threads: Optional[int], duplicates: str, nonfinite: str) -> None:
        V.check_choice("preset", preset, (None,) + tuple(self._PRESETS))
        group = dict(self._DEFAULTS)
        if preset is not None:
            group.update(self._PRESETS[preset])
        group.update({k: v for k, v in hyper.items() if v is not None})
        group = self._check_group(group)
        self.preset = preset
        self.n_threads = V.check_n_threads(n_threads)
        self.duplicates = V.check_choice("duplicates", duplicates, ("sum", "mean"))
        self.nonfinite = V.check_choice("nonfinite", nonfinite, ("raise", "skip", "ignore"))
        keys, arrays, is_dict = V.check_params(params)
        self._keys: List[Any] = keys
        self._is_dict = is_dict
        self._params: List[np.ndarray] = arrays
        self.param_groups: List[Dict[str, Any]] = [dict(group, params=list(keys))]
        self.state: Dict[Any, Dict[str, Any]] = {k: {} for k in keys}
        self._init_runtime()

    # -- runtime objects that are rebuilt on unpickling --------------------------------------

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._indexers = [RowIndexer(p.shape[0]) for p in self._params]
        self._pow = {}
        self._checked = None

    def __getstate__(self) -> Dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("_lock", "_indexers", "_pow", "_checked"):
            d.pop(k, None)
        return d

    def __setstate__(self, d: Dict[str, Any]) -> None:
        self.__dict__.update(d)
        for key, p in zip(self._keys, self._params):  # unpickled arrays lose the layout
            st = self.state[key]
            for sname, arr in st.items():
                if (isinstance(arr, np.ndarray) and arr.ndim and sname not in _COUNTERS
                        and arr.ctypes.data % STATE_ALIGNMENT):
                    st[sname] = aligned_zeros(arr.shape, arr.dtype)
                    st[sname][...] = arr
            self._relayout(st, p)
        self._init_runtime()

    def _current_group(self) -> Dict[str, Any]:
        """The validated hyper-parameters; re-validated only when param_groups[0] changed
        (a per-step check of every value would dominate tiny steps)."""
        raw = self.param_groups[0]
        if self._checked is None or raw != self._checked[0]:
            self._checked = (dict(raw), self._check_group(raw))
        return self._checked[1]

    def _pow_table(self, name: str, base: float, upto: int) -> np.ndarray:
        tab = self._pow.get(name)
        if tab is None:
            tab = self._pow[name] = PowTable()
        return tab.get(base, upto)

    # -- public API --------------------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The learning rate; assign to it between steps to follow a schedule."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.param_groups[0]["lr"] = V.check_real("lr", value)

    @property
    def defaults(self) -> Dict[str, Any]:
        return {k: v for k, v in self.param_groups[0].items() if k != "params"}

    @property
    def params(self) -> List[np.ndarray]:
        """The parameter arrays, in order (the optimizer updates them in place)."""
        return list(self._params)

    def step(self, grads: Any) -> None:
        """Apply one update.

        Parameters
        ----------
        grads : list, dict or single gradient
            One gradient per parameter (a list of the same length, or a dict holding a subset
            of the names): a ``RowGrad``, a ``scipy.sparse`` matrix or array, a dense array, or
            ``None`` to skip the parameter. A parameter given a gradient — even an empty one —
            advances its step count.

        Raises
        ------
        IndexError, ValueError, TypeError, KeyError, FloatingPointError
            Before anything changes (SPEC section 5).
        """
        with self._lock:
            group = self._current_group()
            pairs = V.match_grads(grads, self._keys, self._is_dict)
            prepared: List[Tuple[int, MergedRows]] = []
            for i in sorted(pairs):
                prepared.append((i, merge(self._keys[i], pairs[i], self._params[i],
                                          self._indexers[i], self.duplicates, self.nonfinite,
                                          self._merge_threads)))
            for i, merged in prepared:
                state = self._ensure_state(i, group)
                state["step"] += 1
                self._apply(i, state, merged, group)

    def flush(self) -> None:
        """Bring every row's pending lazy decay up to the current step (``lazy="decay"``).

        Afterwards parameters and state equal those of a dense optimizer at each parameter's
        step (for the quantities ``lazy="decay"`` tracks). A no-op in ``"frozen"`` mode.
        """
        with self._lock:
            group = self._current_group()
            for i, key in enumerate(self._keys):
                state = self.state[key]
                if state and "last_step" in state:
                    self._flush(i, state, group)

    def state_dict(self) -> Dict[str, Any]:
        """State as plain NumPy arrays and Python scalars (picklable, ``np.savez``-able).

        Arrays are returned by reference, as ``torch.optim`` does; copy them to snapshot.
        """
        return {
            "optimizer": type(self).__name__,
            "state": {k: self._export_state(self.state[k]) for k in self._keys if self.state[k]},
            "param_groups": [dict(g, params=list(g["params"])) for g in self.param_groups],
        }

    @staticmethod
    def _export_state(st: Dict[str, Any]) -> Dict[str, Any]:
        out = dict(st)
        if "wd_log" in out:
            out["wd_log"] = out["wd_log"][: st["step"] + 1]
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load state saved by ``state_dict`` (validated: names, shapes and dtypes must match).

        Arrays are copied, so the loaded optimizer never aliases ``state_dict``.
        """
        if not isinstance(state_dict, Mapping) or "state" not in state_dict:
            raise ValueError("load_state_dict expects a dict made by state_dict()")
        kind = state_dict.get("optimizer", type(self).__name__)
        if kind != type(self).__name__:
            raise ValueError(f"state_dict is from a {kind} optimizer, not {type(self).__name__}")
        groups = state_dict.get("param_groups", self.param_groups)
        if len(groups) != 1 or list(groups[0].get("params", self._keys)) != list(self._keys):
            raise ValueError(
                f"state_dict's parameters {groups[0].get('params') if groups else None} do not "
                f"match this optimizer's {self._keys}"
            )
        group = {k: v for k, v in groups[0].items() if k != "params"}
        unknown = set(group) - set(self._DEFAULTS)
        if unknown:
            raise KeyError(f"state_dict has unknown hyper-parameters {sorted(unknown)}")
        group = self._check_group(dict(self.param_groups[0], **group))
        new_state: Dict[Any, Dict[str, Any]] = {k: {} for k in self._keys}
        for key, st in state_dict["state"].items():
            if key not in new_state:
                raise KeyError(f"state_dict has state for unknown parameter {key!r}")
            i = self._keys.index(key)
            new_state[key] = self._check_loaded_state(i, st, group)
        self.param_groups[0].update(group)
        self.state = new_state

    # -- internals ---------------------------------------------------------------------------

    def _check_loaded_state(self, i: int, st: Mapping[str, Any],
                            group: Dict[str, Any]) -> Dict[str, Any]:
        name = V.describe(self._keys[i])
        p = self._params[i]
        if "step" not in st:
            raise KeyError(f"state_dict: state of {name} has no 'step'")
        step = st["step"]
        if isinstance(step, np.ndarray):
            step = step.item()
        if not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"state_dict: {name} has an invalid step {step!r}")
        step = int(step)
        out: Dict[str, Any] = {"step": step}
        expected = {sname for sname, _ in self._state_spec(group)}
        given = set(st) - {"step"}
        if given - expected:
            unknown = ", ".join(map(repr, sorted(given - expected)))
            raise KeyError(
                f"state_dict: unknown state {unknown} for {name} (this optimizer's settings "
                f"keep {sorted(expected)})"
            )
        if expected - given:
            raise KeyError(f"state_dict: state of {name} lacks {sorted(expected - given)}")
        for sname in sorted(expected):
            arr = np.asarray(st[sname])
            shape, dtype = self._state_shape(sname, p, step)
            if arr.shape != shape or arr.dtype != dtype:
                raise ValueError(
                    f"state_dict: state {sname!r} of {name} has shape {arr.shape} and dtype "
                    f"{arr.dtype}, expected {shape} and {dtype}"
                )
            # Counters index float64 tables in the kernels: they must lie in [0, step].
            if sname in _COUNTERS and arr.size and (arr.min() < 0 or arr.max() > step):
                raise ValueError(
                    f"state_dict: counter {sname!r} of {name} has values outside [0, {step}]"
                )
            if sname == "wd_log" and not (np.all(np.isfinite(arr)) and np.all(arr <= 0)):
                raise ValueError(f"state_dict: 'wd_log' of {name} must be finite and <= 0")
            copy = aligned_zeros(shape, dtype) if sname not in _COUNTERS + ("wd_log",) else \
                np.empty(shape, dtype)
            copy[...] = arr
            out[sname] = copy
        return self._relayout(out, p)

    def _relayout(self, st: Dict[str, Any], p: np.ndarray) -> Dict[str, Any]:
        """Put loaded or unpickled state back into the kernels' layout (aligned, interleaved)."""
        pair = self._INTERLEAVED
        if pair and p.ndim == 2 and all(n in st for n in pair):
            fresh = interleaved_zeros(pair, p.shape, p.dtype)
            for n in pair:
                fresh[n][...] = st[n]
            st.update(fresh)
        return st

    def _state_shape(self, sname: str, p: np.ndarray, step: int):
        """(shape, dtype) that state ``sname`` must have, or (None, None) if unknown."""
        if sname in _COUNTERS:
            return (p.shape[0],), np.dtype(np.int64)
        if sname == "wd_log":
            return (step + 1,), np.dtype(np.float64)
        return self._array_state_shape(sname, p)

    def _array_state_shape(self, sname: str, p: np.ndarray):
        raise NotImplementedError

    def _ensure_state(self, i: int, group: Dict[str, Any]) -> Dict[str, Any]:
        """Allocate (on first use) every state array the current settings need."""
        key = self._keys[i]
        state = self.state[key]
        if not state:
            state["step"] = 0
        p = self._params[i]
        pair = self._INTERLEAVED
        if pair and p.ndim == 2 and not any(n in state for n in pair) and \
                all(n in dict(self._state_spec(group)) for n in pair):
            state.update(interleaved_zeros(pair, p.shape, p.dtype))
        for sname, fill in self._state_spec(group):
            if sname not in state:
                if sname == "wd_log":
                    arr = np.zeros(state["step"] + 1, dtype=np.float64)
                else:
                    shape, dtype = self._state_shape(sname, p, state["step"])
                    arr = aligned_zeros(shape, dtype)
                    if fill != 0:
                        arr.fill(fill)
                state[sname] = arr
        return state

    def _state_spec(self, group: Dict[str, Any]) -> List[Tuple[str, float]]:
        raise NotImplementedError

    def _check_group(self, group: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    def _check_fixed(self, group: Dict[str, Any]) -> None:
        fixed = self.__dict__.get("_fixed_values")
        if fixed is None:
            self._fixed_values = {k: group[k] for k in self._FIXED}
            return
        for k, v in fixed.items():
            if group[k] != v:
                raise ValueError(
                    f"{k} cannot change after construction (it decides which state is kept): "
                    f"it was {v!r}, got {group[k]!r}; build a new optimizer instead"
                )

    def _apply(self, i: int, state: Dict[str, Any], merged: MergedRows,
               group: Dict[str, Any]) -> None:
        raise NotImplementedError

    def _flush(self, i: int, state: Dict[str, Any], group: Dict[str, Any]) -> None:
        raise NotImplementedError

    def _threads(self, n_rows: int, width: int) -> int:
        """Threads for a kernel call: one for small work, else n_threads or OpenMP's default."""
        if n_rows * width < PARALLEL_MIN_ELEMENTS:
            return 1
        n = self.n_threads if self.n_threads is not None else _info.max_threads()
        return max(1, min(n, n_rows))

    def _merge_threads(self, k: int, width: int) -> int:
        """Threads for summing the duplicates of a batch of ``k`` rows of ``width``."""
        if k * width < PARALLEL_MIN_ELEMENTS * MERGE_PARALLEL_SCALE:
            return 1
        return self._threads(k, width)

    @staticmethod
    def _advance_wd_log(state: Dict[str, Any], lr: float, weight_decay: float) -> np.ndarray:
        """Append log(1 - lr*weight_decay) of this step to the running sum (lazy decay mode).

        ``wd_log[s]`` is the log of the product of the weight-decay factors of steps 1..s, so a
        row last current at step l, touched at t, misses exp(wd_log[t-1] - wd_log[l]). The
        buffer grows by doubling; entries past ``step`` are unused.
        """
        t = state["step"]
        log = state["wd_log"]
        if log.shape[0] < t + 1:
            grown = np.zeros(max(t + 1, 2 * log.shape[0]), dtype=np.float64)
            grown[: log.shape[0]] = log
            log = state["wd_log"] = grown
        log[t] = log[t - 1] + np.log1p(-lr * weight_decay)
        return log

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items())
        shapes = ", ".join(f"{k!r}: {p.shape}" for k, p in zip(self._keys, self._params))
        return f"{type(self).__name__}({{{shapes}}}, {hp})"
