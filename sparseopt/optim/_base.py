"""The optimizer base class: parameters, per-parameter state, the step protocol.

A step runs in two phases so that bad input changes nothing:

1. *prepare*: read and validate the hyper-parameters, then validate and merge every gradient
   (``_grad.merge``) — any error is raised here;
2. *apply*: allocate state on first use, advance each parameter's step counter, compute the
   float64 scalars and call the kernel.

Subclasses define ``_DEFAULTS`` / ``_PRESETS``, ``_check_group`` (hyper-parameter checks),
``_state_spec`` (which state arrays a parameter needs), ``_array_state_shape`` (their shapes),
``_apply`` (the kernel call) and ``_flush``; optimizers with lazy modes start ``_apply`` with
``_start_lazy_step`` and flush with ``_flush_lazy``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import threading
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .. import _reference, _validation as V
from .._kernels import _halfrows, _rows
# The thread rules live in sparseopt._utils; _threads and _merge_threads read this module's
# name for the threshold, which tests lower to force parallel steps on small tables.
from .._utils import MERGE_PARALLEL_SCALE, PARALLEL_MIN_ELEMENTS, lazy_zeros, threads_for
from . import _slots
from ._grad import MergedRows, RowIndexer, merge

FLAGS = _rows.FLAGS

_COUNTERS = ("row_step", "last_step", "first_step")
# Weight-decay catch-up (lazy="decay"): a float per parameter and a float64 per row.
WD_SUM = "wd_log_sum"
ROW_WD = "row_wd_log"
# A state_dict may hold, in place of the two, the running sum at every step (one float64 per
# step, so it grows without bound); loading and unpickling convert it to the two.
LEGACY_WD_LOG = "wd_log"

POW_SHAPE: Tuple[int, int] = tuple(_rows.POW_SHAPE)


@functools.lru_cache(maxsize=64)
def _power_levels(base: float) -> np.ndarray:
    levels, radix = POW_SHAPE
    bits = radix.bit_length() - 1
    tab = np.empty(POW_SHAPE, dtype=np.float64)
    for k in range(levels):
        for b in range(radix):
            tab[k, b] = math.pow(base, float(b << (bits * k)))
    tab.flags.writeable = False
    return tab


class PowTable:
    """``beta**n`` for every int64 ``n`` in constant memory: ``table[k, b] = beta**(b * 256**k)``
    (float64, from libm's ``pow``), one level per byte of ``n``, 16 KiB per base.

    The kernels multiply the entries of the bytes of ``n`` from the lowest up (``_rows._power``,
    the rule of ``sparseopt._reference.power``), so a bias correction ``1 - beta**tau`` or a lazy
    decay factor ``beta**skipped`` costs one to eight lookups in a table that never grows, and
    every index is a masked byte: no counter value can address outside it. Tables are shared
    between optimizers with the same base (read-only); an optimizer keeps the one for each of
    its bases and replaces it when the hyper-parameter changes.
    """

    __slots__ = ("base", "table")

    def __init__(self, base: float) -> None:
        self.base = float(base)
        self.table = _power_levels(self.base)


# Table argument of a kernel whose flag says it is unused (full size all the same).
DUMMY_POW = np.ones(POW_SHAPE, dtype=np.float64)
DUMMY_POW.flags.writeable = False


# Large NumPy arrays start 16 bytes past a page boundary (glibc's mmap chunk header), so a
# 256-byte row spans 5 cache lines instead of 4 and a 64-byte row 2 instead of 1. State rows
# are read and written at random, once per touched row: align them to cache lines.
STATE_ALIGNMENT = 64


def aligned_zeros(shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
    """A zero-filled C-contiguous array whose data starts on a 64-byte boundary.

    Pages are mapped lazily, 4 KiB at a time (``sparseopt._utils.lazy_zeros``): a huge
    table's state costs memory and zero-filling only for the pages of rows that are touched
    (np.full would write every page).
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = lazy_zeros(nbytes + STATE_ALIGNMENT)
    start = (-raw.ctypes.data) % STATE_ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def interleaved_zeros(names: Tuple[str, ...], shape: Tuple[int, int], dtype) -> Dict[str, Any]:
    """Zeroed state arrays of ``shape`` = (n, d) that share rows: views of one aligned
    (n, len(names) * d) buffer, so a row's entries of every array sit in adjacent memory.

    An update reads and writes these arrays at the same random rows; adjacent rows mean fewer
    scattered cache-line fetches (the measurement: benchmarks/README.md, "Interleaved
    moments", and the C driver benchmarks/c/interleave_rows.c).
    """
    n, d = shape
    buf = aligned_zeros((n, len(names) * d), dtype)
    return {name: buf[:, j * d:(j + 1) * d] for j, name in enumerate(names)}


def state_dtype(p: np.ndarray) -> np.dtype:
    """The dtype of a parameter's state, gradients and arithmetic: its own, or float32 for a
    half-precision parameter (float16, or bfloat16 bits in uint16)."""
    return np.dtype(np.float32) if p.dtype.itemsize == 2 else p.dtype


def _grad_template(p: np.ndarray) -> np.ndarray:
    """What gradients of a half-precision parameter are checked against: a float32 array of
    its shape that holds no memory (zero strides); gradients are merged in float32."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=p.shape,
                                           strides=(0,) * p.ndim, writeable=False)


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


@dataclasses.dataclass(frozen=True)
class MemoryUsage:
    """Bytes an optimizer's parameters and state take (``Optimizer.memory()``).

    Attributes
    ----------
    params : int
        Bytes of the parameter arrays.
    state : dict of str -> int
        Bytes of each kind of state array (e.g. ``"exp_avg"``, ``"row_step"``), summed over
        the parameters; per-parameter scalars (the step count) are not counted.
    per_param : dict
        Parameter key -> its own ``{state name: bytes}``.
    n_elements, n_rows : int
        Parameter elements and rows (a 1-D parameter has one element per row), all
        parameters together.

    Examples
    --------
    >>> import numpy as np, sparseopt as so
    >>> mem = so.RMSprop({"emb": np.zeros((100, 8)), "bias": np.zeros(100)}).memory()
    >>> mem.params, mem.state, mem.per_param["bias"]
    (7200, {'square_avg': 7200}, {'square_avg': 800})
    >>> mem.state_per_element, mem.state_per_row
    (8.0, 36.0)
    """

    params: int
    state: Dict[str, int]
    per_param: Dict[Any, Dict[str, int]]
    n_elements: int
    n_rows: int

    @property
    def state_total(self) -> int:
        """Bytes of all the state arrays."""
        return sum(self.state.values())

    @property
    def state_per_element(self) -> float:
        """State bytes per parameter element."""
        return self.state_total / self.n_elements if self.n_elements else 0.0

    @property
    def state_per_row(self) -> float:
        """State bytes per parameter row (an average when the parameters' widths differ)."""
        return self.state_total / self.n_rows if self.n_rows else 0.0

    @property
    def params_per_row(self) -> float:
        """Parameter bytes per row."""
        return self.params / self.n_rows if self.n_rows else 0.0


# The storage parameters every optimizer with half-precision kernels takes, documented once.
_STORAGE_PARAMETERS = """\
    dtype : {None, "bfloat16"}, default None
        Storage of the parameters. ``None``: each array's own dtype (float32, float64, or
        float16). ``"bfloat16"``: every parameter is a uint16 array holding bfloat16 bits (the
        upper 16 bits of a float32; NumPy has no bfloat16 dtype). Half-precision rows are
        updated in float32 (state and gradients are float32) and rounded back on store.
    rounding : {"nearest", "stochastic"}, default "nearest"
        How updated half-precision rows are rounded: to nearest even, or (bfloat16 only;
        float16 parameters are refused with it) stochastically, from a hash of (seed,
        parameter, step, row, column): the same bits for any thread count, and a run resumed
        from ``state_dict`` with the same ``seed`` reproduces them.
    seed : int, default 0
        Seed of stochastic rounding, in ``[0, 2**32)``.
"""


def storage_doc(cls):
    """Fill in the ``dtype`` / ``rounding`` / ``seed`` parameters in ``cls``'s docstring."""
    cls.__doc__ = cls.__doc__.replace("    {storage_parameters}\n", _STORAGE_PARAMETERS)
    return cls


class Optimizer:
    """Base class of sparseopt's lazy optimizers (see ``Adam``, ``Adagrad``, ``RMSprop``).

    It holds what every optimizer shares: the parameter arrays, ``param_groups`` (the
    hyper-parameters, which may be changed between steps), the per-parameter ``state``,
    ``step``, ``state_dict`` / ``load_state_dict`` and ``flush``. It is not constructed
    directly; subclasses define the update rule and their state.

    Examples
    --------
    >>> import numpy as np, sparseopt as so
    >>> from sparseopt.optim import Optimizer
    >>> W = np.zeros((100, 4), dtype=np.float32)
    >>> opt = so.Adagrad([W], lr=0.1)
    >>> isinstance(opt, Optimizer), opt.param_groups[0]["lr"]
    (True, 0.1)
    >>> opt.step([so.RowGrad(np.array([5]), np.ones((1, 4), dtype=np.float32))])
    >>> sorted(opt.state_dict())
    ['optimizer', 'param_groups', 'state']
    """

    _DEFAULTS: Dict[str, Any] = {}
    _PRESETS: Dict[str, Dict[str, Any]] = {}
    # Hyper-parameters that decide which state exists; they cannot change after construction.
    _FIXED: Tuple[str, ...] = ()
    # State arrays that are always updated together and are kept row-interleaved (2-D params).
    _INTERLEAVED: Tuple[str, ...] = ()
    # Whether the optimizer updates half-precision parameters (``_halfrows`` has its kernels).
    _HALF = False
    # (n, d) state arrays a compact table keeps in slots (see ``_slots``); () when the
    # optimizer has no slot kernels.
    _SLOTTED: Tuple[str, ...] = ()
    # Parameter i draws the stochastic-rounding stream ``i + _stream_base`` (sparseopt.torch
    # keeps one optimizer per tensor and numbers the tensors of its optimizer).
    _stream_base = 0

    def __init__(self, params: Any, hyper: Dict[str, Any], *, preset: Optional[str],
                 n_threads: Optional[int], duplicates: str, nonfinite: str,
                 dtype: Optional[str] = None, rounding: str = "nearest", seed: int = 0) -> None:
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
        bf16, stochastic, seed = V.check_storage(dtype, rounding, seed, self._HALF)
        keys, arrays, is_dict = V.check_params(params, half=self._HALF, bfloat16=bf16)
        for key, arr in zip(keys, arrays):
            V.check_rounding_for(key, arr, stochastic)
        self._storage = (dtype, rounding, seed)
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
        # what each parameter was at construction (it may be reshaped or locked in place later)
        self._layouts = [(p.shape, p.dtype) for p in self._params]
        self._pow: Dict[str, PowTable] = {}
        self._layout_cache: Dict[int, Tuple[Dict[str, Any], Any]] = {}
        self._checked = None
        self._trusted = None
        self._src_cache = np.arange(0, dtype=np.int64)
        self._scratch_cache = None
        # storage kind of each parameter: None (float32/64), or a _halfrows.KIND
        self._kinds = [_halfrows.KIND["float16"] if dt == np.float16
                       else _halfrows.KIND["bfloat16"] if dt == np.uint16 else None
                       for _, dt in self._layouts]

    # Attributes rebuilt by _init_runtime, never pickled.
    _RUNTIME = ("_lock", "_indexers", "_layouts", "_pow", "_layout_cache", "_checked",
                "_trusted", "_src_cache", "_scratch_cache", "_kinds")

    def __getstate__(self) -> Dict[str, Any]:
        d = dict(self.__dict__)
        for k in self._RUNTIME:
            d.pop(k, None)
        return d

    def __setstate__(self, d: Dict[str, Any]) -> None:
        self.__dict__.update(d)
        for key, p in zip(self._keys, self._params):  # unpickled arrays lose the layout
            st = self.state[key]
            if isinstance(st.get(LEGACY_WD_LOG), np.ndarray) and "last_step" in st:
                self._convert_wd_log(st, st.pop(LEGACY_WD_LOG), st["step"])
            for sname, arr in st.items():
                if (isinstance(arr, np.ndarray) and arr.ndim and sname not in _COUNTERS
                        and arr.ctypes.data % STATE_ALIGNMENT):
                    st[sname] = aligned_zeros(arr.shape, arr.dtype)
                    st[sname][...] = arr
            if _slots.SLOT_OF_ROW in st:
                _slots.relayout(st, [n for n in self._SLOTTED if n in st], self._INTERLEAVED)
            else:
                self._relayout(st, p)
        self._init_runtime()

    # -- compact state (``_slots``) ----------------------------------------------------------

    def _init_state_layout(self, layout: str, supported: List[bool]) -> None:
        """Decide, once, which tables keep their ``_SLOTTED`` state in compact slots:
        ``layout`` ("auto", "direct" or "compact") where ``supported[i]``."""
        V.check_choice("state_layout", layout, _slots.LAYOUTS)
        self._state_layout_name = layout
        compact = []
        for p, ok in zip(self._params, supported):
            nbytes = p.size * state_dtype(p).itemsize * max(1, len(self._INTERLEAVED))
            compact.append(bool(ok) and _slots.uses_compact(layout, p, nbytes))
        self._compact = compact

    def _is_compact(self, i: int) -> bool:
        compact = self.__dict__.get("_compact")
        return bool(compact) and compact[i]

    def _slotted(self, i: int, group: Dict[str, Any]) -> List[str]:
        """The state arrays parameter ``i`` keeps in slots under ``group`` ([] if direct)."""
        if not self._is_compact(i):
            return []
        return [n for n, _ in self._state_spec(group) if n in self._SLOTTED]

    def _state_rows(self, i: int, state: Dict[str, Any], merged: MergedRows) -> np.ndarray:
        """The slots of a compact table's touched rows: given in phase 1 when the table had
        state, else (its first step) assigned now."""
        if merged.srows is not None:
            return merged.srows
        return _slots.state_rows(self._keys[i], state, merged.rows)

    def _current_group(self) -> Dict[str, Any]:
        """The validated hyper-parameters; re-validated only when param_groups[0] changed
        (a per-step check of every value would dominate tiny steps)."""
        raw = self.param_groups[0]
        if self._checked is None or raw != self._checked[0]:
            self._checked = (dict(raw), self._check_group(raw))
        return self._checked[1]

    def _pow_table(self, name: str, base: float) -> np.ndarray:
        """The power table of hyper-parameter ``name`` at its current value ``base``."""
        tab = self._pow.get(name)
        if tab is None or tab.base != base:
            tab = self._pow[name] = PowTable(base)
        return tab.table

    # -- public API --------------------------------------------------------------------------

    @property
    def lr(self) -> float:
        """The learning rate; assign to it between steps to follow a schedule."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.param_groups[0]["lr"] = V.check_real("lr", value)

    # Read-only: they decide the parameters' storage and the stochastic-rounding streams.
    @property
    def dtype(self) -> Optional[str]:
        """``None`` (each parameter's own dtype) or ``"bfloat16"`` (uint16 arrays of bits)."""
        return self.__dict__.get("_storage", (None, "nearest", 0))[0]

    @property
    def rounding(self) -> str:
        """How updated half-precision rows are rounded: ``"nearest"`` or ``"stochastic"``."""
        return self.__dict__.get("_storage", (None, "nearest", 0))[1]

    @property
    def seed(self) -> int:
        """The seed of stochastic rounding."""
        return self.__dict__.get("_storage", (None, "nearest", 0))[2]

    @property
    def defaults(self) -> Dict[str, Any]:
        """The hyper-parameters of the first param group, as a new dict."""
        return {k: v for k, v in self.param_groups[0].items() if k != "params"}

    @property
    def params(self) -> List[np.ndarray]:
        """The parameter arrays, in order (the optimizer updates them in place)."""
        return list(self._params)

    def memory(self) -> MemoryUsage:
        """Bytes of the parameters and of the optimizer's state, from the arrays themselves.

        State not allocated yet (before a parameter's first step) is counted as the current
        settings will allocate it, so the figures hold before training too. Sizes follow each
        array's own dtype and shape (row-wise state, reduced-precision moments). A compact
        table (``Adam(state_layout=...)``) counts the slots in use: the moments (and
        ``row_step``) of the rows touched so far, ``slot_of_row`` (8 bytes per row) and
        ``row_of_slot`` (8 per slot in use).

        Returns
        -------
        MemoryUsage
            ``params``, ``state`` (bytes per state name), ``per_param``, ``n_elements`` and
            ``n_rows``, with ``state_total``, ``state_per_element``, ``state_per_row``.

        Examples
        --------
        >>> import numpy as np, sparseopt as so
        >>> E = np.zeros((1000, 64), dtype=np.float32)
        >>> so.Adam([E]).memory().state_per_row          # m and v: 2 * 64 * 4, a row counter
        520.0
        >>> so.Adam([E], rowwise="v").memory().state      # doctest: +NORMALIZE_WHITESPACE
        {'exp_avg': 256000, 'exp_avg_sq': 4000, 'row_step': 8000}
        """
        with self._lock:
            group = self._current_group()
            totals: Dict[str, int] = {}
            per_param: Dict[Any, Dict[str, int]] = {}
            for i, (key, p) in enumerate(zip(self._keys, self._params)):
                st = self.state.get(key) or {}
                mine: Dict[str, int] = {}
                slotted = self._slotted(i, group)
                extra = []
                if slotted:  # the slots in use, and the two maps
                    extra = [(_slots.SLOT_OF_ROW, 0), (_slots.ROW_OF_SLOT, 0)]
                    used = st.get(_slots.N_SLOTS, 0)
                    used = used if type(used) is int and used >= 0 else 0
                for sname, _ in self._state_spec(group) + extra:
                    if sname == WD_SUM:  # one float per parameter
                        continue
                    arr = st.get(sname)
                    if sname in slotted or sname == _slots.ROW_OF_SLOT:
                        nbytes = 0
                        if isinstance(arr, np.ndarray) and arr.ndim:
                            nbytes = used * (arr.nbytes // max(1, arr.shape[0]))
                    elif sname == _slots.SLOT_OF_ROW:
                        nbytes = 8 * p.shape[0]
                    elif isinstance(arr, np.ndarray):
                        nbytes = int(arr.nbytes)
                    else:
                        shape, dtype = self._state_shape(sname, p)
                        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                    mine[sname] = nbytes
                    totals[sname] = totals.get(sname, 0) + nbytes
                per_param[key] = mine
            return MemoryUsage(
                params=sum(int(p.nbytes) for p in self._params), state=totals,
                per_param=per_param, n_elements=sum(int(p.size) for p in self._params),
                n_rows=sum(int(p.shape[0]) for p in self._params))

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
            Before anything changes: bad gradients, hyper-parameters, a parameter that became
            read-only or was reshaped, and state arrays replaced by ones of another shape,
            dtype or layout are all refused before any parameter or counter moves.
        """
        with self._lock:
            self._commit(*self._prepare(grads))

    def _prepare(self, grads: Any) -> Tuple[Dict[str, Any], List[Tuple[int, MergedRows]]]:
        """Phase 1 of ``step`` (the caller holds the lock): check the hyper-parameters, the
        parameters and their state, validate and merge every gradient. Changes nothing but
        the slots it gives to the new rows of compact tables, which ``_release`` takes back;
        a caller stepping several optimizers (``sparseopt.torch``) prepares them all first and
        releases the prepared ones if a later one is refused."""
        group = self._current_group()
        pairs = V.match_grads(grads, self._keys, self._is_dict)
        prepared: List[Tuple[int, MergedRows]] = []
        try:
            for i in sorted(pairs):
                self._check_ready(i, group, advancing=True)
                p = self._params[i]
                half = self._kinds[i] is not None
                merged = merge(self._keys[i], pairs[i], _grad_template(p) if half else p,
                               self._indexers[i], self.duplicates, self.nonfinite,
                               self._merge_threads)
                if half and merged.values.size and np.may_share_memory(merged.values, p):
                    merged.values = merged.values.copy()  # a float32 view of the table
                st = self.state[self._keys[i]]
                if self._is_compact(i) and merged.rows.size and st:
                    # slots are given here, in one pass that also checks the maps; a refusal
                    # later in phase 1 takes them back (_release)
                    merged.slots_start = st[_slots.N_SLOTS]
                    merged.srows = _slots.state_rows(self._keys[i], st, merged.rows)
                prepared.append((i, merged))
        except BaseException:
            self._release(prepared)
            raise
        return group, prepared

    def _release(self, prepared: List[Tuple[int, MergedRows]]) -> None:
        """Take back the slots phase 1 gave to ``prepared`` (its step is refused), newest
        first, so every compact table's maps are as they were before ``_prepare``."""
        for i, merged in reversed(prepared):
            if merged.srows is not None:
                _slots.release(self.state[self._keys[i]], merged.slots_start)
                merged.srows = None

    def _kernel(self, i: int, kernel: Any) -> Any:
        """The kernel to call for parameter ``i``: ``kernel`` (a ``_rows`` function), or for a
        half-precision parameter its ``_halfrows`` twin, called with the same arguments (the
        parameter's 16-bit view in place of the parameter) and the storage ones after them."""
        kind = self._kinds[i]
        if kind is None:
            return kernel
        twin = getattr(_halfrows, kernel.__name__)
        stochastic = self.rounding == "stochastic"
        stream = self.seed | ((i + self._stream_base) << 32)
        step = self.state[self._keys[i]]["step"]

        def call(p, *args):
            return twin(p.view(np.uint16), *args, kind, stochastic, stream, step)
        return call

    def _commit(self, group: Dict[str, Any], prepared: List[Tuple[int, MergedRows]]) -> None:
        """Phase 2 of ``step``: allocate state, advance the counters, run the kernels."""
        for i, merged in prepared:
            state = self._ensure_state(i, group)
            state["step"] += 1
            self._apply(i, state, merged, group)

    # -- the models' trusted step -----------------------------------------------------------

    def _begin_trusted(self) -> None:
        """Phase-1 checks of ``_step_trusted``, run once before a run of trusted steps (the
        models call it at the start of every epoch): the hyper-parameters, the parameter and
        its state, as ``step`` checks them. Nothing but the trusted steps may change the
        optimizer until the run ends."""
        with self._lock:
            self._check_trusted()

    def _check_trusted(self) -> None:
        """``_begin_trusted`` with the lock held."""
        group = self._current_group()
        for i in range(len(self._params)):
            self._check_ready(i, group, advancing=True)
        # the hyper-parameters as checked, to tell when one changes (see _trusted_group)
        self._trusted = (dict(self.param_groups[0]), group)

    def _trusted_group(self, lr: float) -> Dict[str, Any]:
        """The checked hyper-parameters with learning rate ``lr``: ``_check_group`` of
        ``param_groups[0]`` with ``lr`` in it, without re-checking the others while they are
        unchanged since ``_begin_trusted``. ``lr`` is checked as ``step`` checks it, and
        written to ``param_groups[0]`` as the ``lr`` setter does."""
        raw = self.param_groups[0]
        if lr != raw["lr"]:
            raw["lr"] = V.check_real("lr", lr)
        if self._trusted is None:
            self._check_trusted()
        snap, base = self._trusted
        snap["lr"] = raw["lr"]
        if raw != snap:  # another hyper-parameter changed: check them all (as step does)
            self._check_trusted()
            snap, base = self._trusted
        group = dict(base)
        group["lr"] = lr = raw["lr"]
        wd = group.get("weight_decay")
        if wd is not None:
            V.check_lr_weight_decay(lr, wd)
        return group

    def _src(self, m: int) -> np.ndarray:
        """``arange(m)`` (int64, shared between steps): a unique-row gradient's sources."""
        src = self._src_cache
        if src.shape[0] < m:
            src = self._src_cache = np.arange(max(m, 2 * src.shape[0]), dtype=np.int64)
        return src[:m]

    def _step_trusted(self, rows: np.ndarray, values: np.ndarray, lr: float,
                      i: int = 0) -> None:
        """One step of parameter ``i`` (default the first) with learning rate ``lr``, from a
        gradient the caller guarantees: ``rows`` unique int64 row ids in range (C-contiguous,
        any order), ``values`` the C-contiguous ``(len(rows), width)`` gradient rows of the
        parameter's dtype, not a view of the parameter, and no hyper-parameter other than
        ``lr`` changed since ``_begin_trusted``, nor the parameter or its state. ``values``
        of a 1-D parameter are ``(len(rows), 1)``.

        Bitwise the same update, counters and state as a ``step`` of ``RowGrad(rows, values)``
        for parameter ``i`` alone
        after ``lr = lr``, with ``nonfinite="ignore"`` (the models' setting: rows are applied
        whatever their values), without validating or merging the gradient: such a gradient
        merges into itself, each row its own source (``_grad.merge``). The models' inner
        loop, where ``step``'s checks would cost more than the update."""
        with self._lock:
            group = self._trusted_group(lr)
            m = rows.shape[0]
            merged = MergedRows(rows, self._src(m), values, self._empty_scratch(values),
                                False)
            state = self._ensure_state(i, group)
            state["step"] += 1
            self._apply(i, state, merged, group)

    def _empty_scratch(self, values: np.ndarray) -> np.ndarray:
        scratch = self._scratch_cache
        if scratch is None or scratch.dtype != values.dtype or \
                scratch.shape[1] != values.shape[1]:
            scratch = self._scratch_cache = np.empty((0, values.shape[1]), dtype=values.dtype)
        return scratch

    def flush(self) -> None:
        """Bring every row's pending lazy decay up to the current step (``lazy="decay"``).

        Afterwards parameters and state equal those of a dense optimizer at each parameter's
        step (for the quantities ``lazy="decay"`` tracks). A no-op in ``"frozen"`` mode.
        """
        with self._lock:
            group = self._current_group()
            if group.get("lazy") != "decay":
                return
            todo = [i for i, key in enumerate(self._keys) if self._state_of(i)]
            for i in todo:
                self._check_ready(i, group, advancing=False)
            for i in todo:
                self._flush(i, self._ensure_state(i, group), group)

    def state_dict(self) -> Dict[str, Any]:
        """State as plain NumPy arrays and Python scalars (picklable, ``np.savez``-able).

        Arrays are returned by reference, as ``torch.optim`` does; copy them to snapshot.
        The state a compact table keeps in slots (``state_layout``) is returned as new ``(n,
        d)`` arrays by row, as a direct table holds it (zero for rows never touched).
        Whatever is written into them between steps cannot make a kernel read or write outside
        an array (shapes, dtypes and layouts are checked at each step, counter values are
        clamped to the range a real run produces), but values edited in place change results.
        """
        states = {}
        for i, k in enumerate(self._keys):
            st = self.state[k]
            if not st:
                continue
            st = dict(st)
            if self._is_compact(i) and _slots.SLOT_OF_ROW in st:
                for name in _slots.SLOT_KEYS:
                    st.pop(name, None)
                names = [n for n in self._SLOTTED if n in st]
                st.update(_slots.dense(k, self.state[k], names, self._params[i].shape[0]))
            states[k] = st
        return {
            "optimizer": type(self).__name__,
            "state": states,
            "param_groups": [dict(g, params=list(g["params"])) for g in self.param_groups],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load state saved by ``state_dict``, after checking all of it.

        Names, shapes and dtypes must match this optimizer's settings, and the values must be
        ones a run can produce: finite moments and accumulators, no negative second moment
        (``exp_avg_sq``, ``max_exp_avg_sq``, ``square_avg``) or accumulator (``sum``; > 0
        when ``eps=0``), step counters in ``[0, step]`` with a row's first touch no later than
        its last. State saved with the per-step ``wd_log`` array of ``lazy="decay"`` is
        converted. Anything else raises ``TypeError``, ``KeyError`` or ``ValueError`` naming the
        state and the parameter, and the optimizer is left as it was.

        Arrays are copied, so the loaded optimizer never aliases ``state_dict``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                "load_state_dict expects a dict made by state_dict(), got "
                f"{type(state_dict).__name__}"
            )
        if "state" not in state_dict:
            raise ValueError("load_state_dict expects a dict made by state_dict() (it has no "
                             "'state' entry)")
        kind = state_dict.get("optimizer", type(self).__name__)
        if kind != type(self).__name__:
            raise ValueError(f"state_dict is from a {kind} optimizer, not {type(self).__name__}")
        states = state_dict["state"]
        if not isinstance(states, Mapping):
            raise TypeError(f"state_dict['state'] must be a dict parameter -> state, got "
                            f"{type(states).__name__}")
        groups = state_dict.get("param_groups", self.param_groups)
        if not isinstance(groups, (list, tuple)) or \
                not all(isinstance(g, Mapping) for g in groups):
            raise TypeError("state_dict['param_groups'] must be a list holding one dict of "
                            "hyper-parameters")
        if len(groups) != 1:
            raise ValueError(f"state_dict['param_groups'] must hold exactly one group (this "
                             f"optimizer has one), got {len(groups)}")
        if list(groups[0].get("params", self._keys)) != list(self._keys):
            raise ValueError(
                f"state_dict['param_groups'][0]['params'] {groups[0].get('params')} do not "
                f"match this optimizer's parameters {self._keys}"
            )
        group = {k: v for k, v in groups[0].items() if k != "params"}
        unknown = set(group) - set(self._DEFAULTS)
        if unknown:
            raise KeyError(f"state_dict has unknown hyper-parameters {sorted(unknown)}")
        group = self._check_group(dict(self.param_groups[0], **group))
        new_state: Dict[Any, Dict[str, Any]] = {k: {} for k in self._keys}
        for key, st in states.items():
            if key not in new_state:
                raise KeyError(f"state_dict has state for unknown parameter {key!r}")
            if not isinstance(st, Mapping):
                raise TypeError(f"state_dict: the state of {V.describe(key)} must be a dict, "
                                f"got {type(st).__name__}")
            i = self._keys.index(key)
            new_state[key] = self._check_loaded_state(i, st, group)
        self.param_groups[0].update(group)
        self.state = new_state
        self._loaded(group)

    # -- internals ---------------------------------------------------------------------------

    def _loaded(self, group: Dict[str, Any]) -> None:
        """Hook: state was just loaded (and checked) with the hyper-parameters ``group``."""

    def _state_of(self, i: int) -> Dict[str, Any]:
        """Parameter ``i``'s state dict (``opt.state`` is public: refuse what a step cannot
        use, before anything changes)."""
        key = self._keys[i]
        try:
            st = self.state[key]
        except (KeyError, TypeError, IndexError):
            raise ValueError(f"opt.state has no entry for {V.describe(key)} (opt.state must "
                             "keep one dict per parameter; use load_state_dict to set state)"
                             ) from None
        if type(st) is not dict and not isinstance(st, dict):
            raise ValueError(f"opt.state[{key!r}] must be a dict, got {type(st).__name__}")
        return st

    def _check_ready(self, i: int, group: Dict[str, Any], advancing: bool) -> None:
        """Phase-1 check of parameter ``i`` and of every state array a kernel will be handed:
        O(1) per array (shape, dtype, layout, writeable), never a scan of values."""
        key = self._keys[i]
        shape, dtype = self._layouts[i]
        st = self._state_of(i)
        if not st:  # state is allocated in phase 2
            V.check_param_unchanged(key, self._params[i], shape, dtype)
            return
        V.check_step_ready(key, self._params[i], shape, dtype, st, self._state_layout(i, group),
                           advancing=advancing)
        if self._is_compact(i):
            p = self._params[i]
            V.check_slot_state(key, st, self._slotted(i, group), p.shape[0], _width(p),
                               state_dtype(p))
        self._check_ready_extra(i, st, group)

    def _state_layout(self, i: int, group: Dict[str, Any]) -> "V.StateLayout":
        """What ``V.check_state_layout`` expects of parameter ``i``'s state under ``group``
        (kept until the hyper-parameters change)."""
        cached = self._layout_cache.get(i)
        if cached is not None and cached[0] is group:
            return cached[1]
        p = self._params[i]
        rows_only = self._INTERLEAVED if p.ndim == 2 else ()
        slotted = self._slotted(i, group)  # checked by V.check_slot_state
        layout = []
        for sname, _ in self._state_spec(group):
            if sname in slotted:
                continue
            if sname == WD_SUM:
                layout.append((sname, None, None, False))
            else:
                sshape, sdtype = self._state_shape(sname, p)
                layout.append((sname, sshape, sdtype, sname in rows_only))
        self._layout_cache[i] = (group, tuple(layout))
        return self._layout_cache[i][1]

    def _check_ready_extra(self, i: int, st: Dict[str, Any], group: Dict[str, Any]) -> None:
        """Hook for a subclass's own phase-1 conditions on existing state."""

    def _check_loaded_state(self, i: int, st: Mapping[str, Any],
                            group: Dict[str, Any]) -> Dict[str, Any]:
        name = V.describe(self._keys[i])
        p = self._params[i]
        if "step" not in st:
            raise KeyError(f"state_dict: state of {name} has no 'step'")
        try:
            step = V.check_step_count(self._keys[i], st["step"], advancing=False)
        except ValueError:
            raise ValueError(f"state_dict: {name} has an invalid step {st['step']!r} (an int "
                             f"in [0, {V.MAX_STEP}] is expected)") from None
        out: Dict[str, Any] = {"step": step}
        expected = {sname for sname, _ in self._state_spec(group)}
        given = set(st) - {"step"}
        legacy = (LEGACY_WD_LOG in given and WD_SUM in expected
                  and not given & {WD_SUM, ROW_WD})
        if legacy:
            expected = (expected - {WD_SUM, ROW_WD}) | {LEGACY_WD_LOG}
        if given - expected:
            unknown = ", ".join(map(repr, sorted(given - expected)))
            raise KeyError(
                f"state_dict: unknown state {unknown} for {name} (this optimizer's settings "
                f"keep {sorted(expected)})"
            )
        if expected - given:
            raise KeyError(f"state_dict: state of {name} lacks {sorted(expected - given)}")
        arrays: Dict[str, np.ndarray] = {}
        for sname in sorted(expected):
            if sname == WD_SUM:
                out[sname] = V.check_state_log_sum(name, sname, st[sname])
                continue
            try:
                arr = np.asarray(st[sname])
            except (TypeError, ValueError) as e:
                raise ValueError(f"state_dict: state {sname!r} of {name} is not an array "
                                 f"({e})") from None
            if sname == LEGACY_WD_LOG:
                shape, dtype = (step + 1,), np.dtype(np.float64)
            else:
                shape, dtype = self._state_shape(sname, p)
            if arr.shape != shape or arr.dtype != dtype:
                raise ValueError(
                    f"state_dict: state {sname!r} of {name} has shape {arr.shape} and dtype "
                    f"{arr.dtype}, expected {shape} and {dtype}"
                )
            arrays[sname] = arr
        self._check_loaded_values(name, arrays, out, step, group)
        slotted = self._slotted(i, group)
        for sname, arr in arrays.items():
            if sname in slotted:  # copied into slots below
                out[sname] = arr
                continue
            if sname in _COUNTERS or sname == LEGACY_WD_LOG:
                copy = np.empty(arr.shape, arr.dtype)
            else:
                copy = aligned_zeros(arr.shape, arr.dtype)
            copy[...] = arr
            out[sname] = copy
        if legacy:
            self._convert_wd_log(out, out.pop(LEGACY_WD_LOG), step)
        if slotted:  # a compact table loads into slots, re-compacted in row order
            return _slots.compact(out, slotted, self._INTERLEAVED, p.shape[0])
        return self._relayout(out, p)

    # State that is a running average of squares or a sum of squares: never negative.
    _NONNEGATIVE: Tuple[str, ...] = ()

    def _check_loaded_values(self, name: str, arrays: Dict[str, np.ndarray],
                             scalars: Dict[str, Any], step: int, group: Dict[str, Any]) -> None:
        """The values of loaded state must be ones a run can produce (one scan per array)."""
        for sname, arr in arrays.items():
            if sname in _COUNTERS:
                # Kernels clamp counters, but values outside [0, step] mean the state is not
                # this parameter's (or was corrupted): refuse it rather than guess.
                if arr.size and (arr.min() < 0 or arr.max() > step):
                    raise ValueError(
                        f"state_dict: counter {sname!r} of {name} has values outside "
                        f"[0, {step}]"
                    )
            elif sname in (ROW_WD, LEGACY_WD_LOG):
                V.check_state_values(name, sname, arr, high=0.0,
                                     what=" (a sum of log(1 - lr * weight_decay))")
            else:
                V.check_state_values(name, sname, arr,
                                     low=0.0 if sname in self._NONNEGATIVE else None,
                                     what=" (a running average or sum of squared gradients)")
        if "first_step" in arrays and "last_step" in arrays:
            first, last = arrays["first_step"], arrays["last_step"]
            bad = np.flatnonzero(first > last)
            if bad.size:
                r = int(bad[0])
                raise ValueError(
                    f"state_dict: counters of {name} are inconsistent: row {r} has 'first_step' "
                    f"{int(first[r])} after its 'last_step' {int(last[r])}"
                )
        if ROW_WD in arrays and WD_SUM in scalars and arrays[ROW_WD].size and \
                arrays[ROW_WD].min() < scalars[WD_SUM]:
            raise ValueError(
                f"state_dict: state {ROW_WD!r} of {name} has values below {WD_SUM!r} "
                f"({scalars[WD_SUM]!r}): a row cannot owe a weight-decay factor above 1"
            )

    @staticmethod
    def _convert_wd_log(st: Dict[str, Any], wd_log: np.ndarray, step: int) -> None:
        """State holding ``wd_log`` (``wd_log[s]``: the sum of ``log1p(-lr * wd)`` over steps
        1..s) converted to the kept form: the sum at ``step``, and per row the sum at its last
        step."""
        last = np.clip(st["last_step"], 0, step)
        st[WD_SUM] = float(wd_log[step])
        row = aligned_zeros(last.shape, np.float64)
        row[...] = wd_log[last]
        st[ROW_WD] = row

    def _relayout(self, st: Dict[str, Any], p: np.ndarray) -> Dict[str, Any]:
        """Put loaded or unpickled state back into the kernels' layout (aligned, interleaved)."""
        pair = self._INTERLEAVED
        if pair and p.ndim == 2 and all(n in st for n in pair):
            fresh = interleaved_zeros(pair, p.shape, self._state_shape(pair[0], p)[1])
            for n in pair:
                fresh[n][...] = st[n]
            st.update(fresh)
        return st

    def _state_shape(self, sname: str, p: np.ndarray):
        """(shape, dtype) that state array ``sname`` must have, or (None, None) if unknown."""
        if sname in _COUNTERS:
            return (p.shape[0],), np.dtype(np.int64)
        if sname == ROW_WD:
            return (p.shape[0],), np.dtype(np.float64)
        shape, dtype = self._array_state_shape(sname, p)
        if dtype is not None and dtype == p.dtype:
            dtype = state_dtype(p)
        return shape, dtype

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
        slotted = self._slotted(i, group)
        if slotted:
            if _slots.SLOT_OF_ROW not in state:
                state.update(_slots.new_maps(p.shape[0]))
            missing = [n for n in slotted if n not in state]
            if missing:  # one slot per row, as address space (see _slots)
                cap = state[_slots.ROW_OF_SLOT].shape[0]
                state.update(_slots.slotted_zeros(
                    missing, pair if len(missing) == len(slotted) else (), cap, _width(p),
                    state_dtype(p)))
        elif pair and p.ndim == 2 and not any(n in state for n in pair) and \
                all(n in dict(self._state_spec(group)) for n in pair):
            state.update(interleaved_zeros(pair, p.shape, self._state_shape(pair[0], p)[1]))
        for sname, fill in self._state_spec(group):
            if sname not in state:
                if sname == WD_SUM:
                    state[sname] = 0.0
                    continue
                shape, dtype = self._state_shape(sname, p)
                arr = aligned_zeros(shape, dtype)
                if fill != 0:
                    # uint16 state holds bfloat16 bits: the start value rounded to nearest
                    arr.fill(_reference.float32_to_bfloat16([fill])[0]
                             if arr.dtype == np.uint16 else fill)
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
        """Threads for a kernel call over ``n_rows`` rows (the shared rule, at most one per
        row)."""
        return min(threads_for(self.n_threads, n_rows * width, PARALLEL_MIN_ELEMENTS),
                   max(1, n_rows))

    def _merge_threads(self, k: int, width: int) -> int:
        """Threads for summing the duplicates of a batch of ``k`` rows of ``width``."""
        if k * width < PARALLEL_MIN_ELEMENTS * MERGE_PARALLEL_SCALE:
            return 1
        return self._threads(k, width)

    def _start_lazy_step(self, state: Dict[str, Any], group: Dict[str, Any]
                         ) -> Tuple[int, float, float]:
        """The lazy-mode part of a step of Adam or RMSprop, run before anything else of
        ``_apply`` (an empty step counts too): ``(flags, S_prev, S_now)``.

        With ``lazy="decay"``, this step's ``log1p(-lr * weight_decay)`` is added to the
        parameter's running sum ``S`` (``wd_log_sum``); ``flags`` holds ``DECAY``, and
        ``WEIGHT_DECAY`` while rows may owe weight-decay factors. A row brought up to date at a
        step whose sum was ``S_l`` (kept per row in ``row_wd_log``) and touched now misses
        ``exp(S_prev - S_l)``, the product of the factors of the steps in between (the rule
        and its rounding: ``sparseopt._reference``, "Weight-decay catch-up"). With
        ``lazy="frozen"``: ``(0, 0.0, 0.0)``.
        """
        if group["lazy"] != "decay":
            return 0, 0.0, 0.0
        wd = group["weight_decay"]
        prev = state[WD_SUM]
        state[WD_SUM] = now = prev + math.log1p(-group["lr"] * wd)
        return FLAGS["DECAY"] | (FLAGS["WEIGHT_DECAY"] if wd > 0 or now != 0.0 else 0), prev, now

    def _flush_lazy(self, i: int, state: Dict[str, Any],
                    decaying: List[Tuple[str, str, float]]) -> None:
        """``flush()`` for a lazy-decay optimizer: every row of parameter ``i`` owes the decay
        of its skipped steps to each ``(state name, hyper-parameter, base)`` in ``decaying``
        (at most three) and its missed weight decay; bring them all up to date."""
        p = self._params[i]
        dummy = _Dummies.rows(state_dtype(p))
        arrays = [V.rows_view(state[sname]) for sname, _, _ in decaying]
        tables = [self._pow_table(hyper, base) for _, hyper, base in decaying]
        n_states = len(arrays)
        arrays += [dummy] * (3 - n_states)
        tables += [DUMMY_POW] * (3 - n_states)
        if self._is_compact(i):
            V.check_slot_maps(self._keys[i], state, p.shape[0])
            _rows.flush_decay_slots(V.rows_view(p), *arrays, *tables, n_states,
                                    state["last_step"], state[ROW_WD],
                                    state[_slots.SLOT_OF_ROW], state["step"], state[WD_SUM],
                                    state[WD_SUM] != 0.0, self._threads(p.shape[0], _width(p)))
            return
        self._kernel(i, _rows.flush_decay)(V.rows_view(p), *arrays, *tables, n_states, state["last_step"],
                          state[ROW_WD], state["step"], state[WD_SUM], state[WD_SUM] != 0.0,
                          self._threads(p.shape[0], _width(p)))

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items())
        shapes = ", ".join(f"{k!r}: {p.shape}" for k, p in zip(self._keys, self._params))
        return f"{type(self).__name__}({{{shapes}}}, {hp})"
