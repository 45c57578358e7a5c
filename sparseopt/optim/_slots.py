"""Compact first-touch state: the per-element state rows of a big table kept in *slots*.

A table of ``n`` rows whose optimizer state is ``(n, d)`` per array touches, in a recommender,
a few thousand random rows per step and keeps reaching rows it never touched before. With the
state laid out by row (the *direct* layout) every such row writes a page of its own for the
first time: a page fault and a zero-filled 4 KiB page per new row, for ever. The *compact*
layout gives a row a slot the first time a step touches it, in the order rows are first
touched, so new rows fill the state buffers sequentially (one fault per page of new rows, the
buffers are advised huge pages) and the memory follows the rows touched, not the table size.

The slot buffers reserve one slot per row of the table as address space (mapped lazily, as the
direct layout's arrays are), so they never move: only the pages the used slots reach become
resident. Growing them instead (allocate twice the slots, copy, swap) was measured in the
DLRM loop: a growth from 2**19 to 2**20 slots within 40 steps raised the mean step's CPU time
by 2.5 ms (the copy, and faulting in the new buffer), where the reserved buffers added none.

Per compact table, ``Optimizer.state[key]`` holds (besides the scalars and the lazy-decay
counters, which stay indexed by row):

* ``slot_of_row``: int64 ``(n,)``, 0 for a row without a slot, else its slot + 1;
* ``row_of_slot``: int64 ``(capacity,)``, the row of each slot (the first ``n_slots``);
* ``n_slots``: the number of slots in use;
* each slotted state array (e.g. Adam's ``exp_avg``) as ``(capacity, d)``: row ``s`` is the
  state of row ``row_of_slot[s]``; slots past ``n_slots`` are zero;
* each slotted counter (``SLOTTED_COUNTERS``: Adam's ``row_step``, read and written at every
  touch of a row) as int64 ``(capacity,)``, entry ``s`` for row ``row_of_slot[s]``. Indexed
  by row it would be one more random page per updated row; by slot it sits with the hot
  slots (the rows touched early and often have the low slots).

The capacity is the table's row count (a row has at most one slot); the checks allow any
capacity, and a step that finds no free slot is refused.

A row without a slot has all-zero state, as in the direct layout, so the two layouts give
bitwise the same results. Slots are assigned before the parallel kernel, in one thread, in the
order of the step's merged rows: the same for any thread count.
"""
from __future__ import annotations

import mmap
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from .. import _validation as V
from .._kernels import _rows
from .._utils import LAZY_ZEROS_MIN_BYTES

SLOT_OF_ROW = "slot_of_row"
ROW_OF_SLOT = "row_of_slot"
N_SLOTS = "n_slots"
SLOT_KEYS = (SLOT_OF_ROW, ROW_OF_SLOT, N_SLOTS)

LAYOUTS = ("auto", "direct", "compact")

STATE_ALIGNMENT = 64

# Slotted state that is one int64 per slot rather than a (capacity, d) row.
SLOTTED_COUNTERS = V.SLOTTED_COUNTERS


def uses_compact(layout: str, p: np.ndarray, state_bytes: int) -> bool:
    """Whether a 2-D table's state goes in slots: ``"compact"`` always, ``"auto"`` when its
    slotted state is at least ``LAZY_ZEROS_MIN_BYTES`` (below that the state is small enough
    to be resident, and the direct layout has no map to follow)."""
    if layout == "direct" or p.ndim != 2:
        return False
    return layout == "compact" or state_bytes >= LAZY_ZEROS_MIN_BYTES


def slot_zeros(shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
    """Zeroed, 64-byte aligned, C-contiguous: the slot buffers, mapped lazily. They fill from
    the start, so where the kernel allows it they are advised huge pages (a fault per 2 MiB of
    new slots, at most 2 MiB resident beyond the used ones): in the DLRM loop 0-2 faults and
    0.05 ms of system time per step, against 89 faults and 0.13-0.18 ms on 4 KiB pages."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    total = nbytes + STATE_ALIGNMENT
    raw = None
    if total >= LAZY_ZEROS_MIN_BYTES and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            buf = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            buf.madvise(mmap.MADV_HUGEPAGE)
            raw = np.frombuffer(buf, dtype=np.uint8)
        except (OSError, ValueError):
            raw = None
    if raw is None:
        raw = np.zeros(total, dtype=np.uint8)
    start = (-raw.ctypes.data) % STATE_ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def slotted_zeros(names: Sequence[str], interleaved: Sequence[str], capacity: int, width: int,
                  dtype: Any) -> Dict[str, np.ndarray]:
    """``(capacity, width)`` zero arrays for ``names`` (int64 ``(capacity,)`` for the
    ``SLOTTED_COUNTERS``); those in ``interleaved`` (all present) are views of one
    ``(capacity, k * width)`` buffer, so a slot's entries are adjacent."""
    out: Dict[str, np.ndarray] = {}
    pair = [n for n in interleaved if n in names]
    if pair and len(pair) == len(interleaved):
        buf = slot_zeros((capacity, len(pair) * width), dtype)
        for j, name in enumerate(pair):
            out[name] = buf[:, j * width:(j + 1) * width]
    for name in names:
        if name in SLOTTED_COUNTERS:
            out[name] = slot_zeros((capacity,), np.int64)
        elif name not in out:
            out[name] = slot_zeros((capacity, width), dtype)
    return out


def new_maps(n_rows: int) -> Dict[str, Any]:
    """The maps of a table with no slot yet. ``slot_of_row`` is written at the rows touched:
    4 KiB pages, resident as rows are reached (512 rows per page); ``row_of_slot`` fills from
    the start."""
    from ._base import aligned_zeros
    return {SLOT_OF_ROW: aligned_zeros((n_rows,), np.int64),
            ROW_OF_SLOT: slot_zeros((n_rows,), np.int64), N_SLOTS: 0}


def state_rows(key: Any, state: Dict[str, Any], rows: np.ndarray) -> np.ndarray:
    """The slot of each of ``rows`` (unique, in range), giving slots to rows without one. A
    corrupt map is refused with the maps unchanged; ``release(state, start)`` takes the new
    slots back (``start``: ``n_slots`` before the call)."""
    srows = np.empty(rows.shape[0], dtype=np.int64)
    got = _rows.assign_slots(rows, state[SLOT_OF_ROW], state[ROW_OF_SLOT], state[N_SLOTS],
                             srows)
    if got < 0:
        V.raise_corrupt_slot(key, int(rows[-1 - got]), state)
    state[N_SLOTS] = int(got)
    return srows


def release(state: Dict[str, Any], start: int) -> None:
    """Undo the ``state_rows`` calls since ``n_slots`` was ``start`` (a refused step)."""
    used = state[N_SLOTS]
    if used > start:
        _rows.release_slots(state[SLOT_OF_ROW], state[ROW_OF_SLOT], start, used)
        state[N_SLOTS] = start


def dense(key: Any, state: Dict[str, Any], names: Sequence[str], n_rows: int
          ) -> Dict[str, np.ndarray]:
    """The slotted arrays as ``(n, d)`` arrays by row (counters ``(n,)``; zero for rows
    without a slot)."""
    rows = V.check_slot_maps(key, state, n_rows)
    out = {}
    for name in names:
        arr = state[name]
        full = np.zeros((n_rows,) + arr.shape[1:], dtype=arr.dtype)
        full[rows] = arr[:rows.shape[0]]
        out[name] = full
    return out


def compact(state: Dict[str, Any], names: Sequence[str], interleaved: Sequence[str],
            n_rows: int) -> Dict[str, Any]:
    """Loaded ``(n, d)`` arrays ``names`` of ``state`` put in slots: the rows where any of
    them has a non-zero bit get a slot, in row order (a row whose state is all +0.0 and whose
    counters are 0 reads as a row without a slot, so results are unchanged)."""
    arrays = [state[name] for name in names]
    touched = np.zeros(n_rows, dtype=bool)
    for arr in arrays:
        bits = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
        touched |= (bits != 0).reshape(n_rows, -1).any(axis=1)
    rows = np.flatnonzero(touched).astype(np.int64)
    used = rows.shape[0]
    moment = next(arr for arr in arrays if arr.ndim == 2)
    fresh = slotted_zeros(names, interleaved, n_rows, moment.shape[1], moment.dtype)
    for name, arr in zip(names, arrays):
        fresh[name][:used] = arr[rows]
    maps = new_maps(n_rows)
    maps[SLOT_OF_ROW][rows] = np.arange(1, used + 1, dtype=np.int64)
    maps[ROW_OF_SLOT][:used] = rows
    maps[N_SLOTS] = used
    state.update(fresh)
    state.update(maps)
    return state


def relayout(state: Dict[str, Any], names: Sequence[str], interleaved: Sequence[str]
             ) -> Dict[str, Any]:
    """Unpickled compact state back into slot buffers (aligned, interleaved, lazily mapped:
    the unused slots are zero and stay so)."""
    arrays = [state[name] for name in names]
    moment = next(arr for arr in arrays if arr.ndim == 2)
    cap, width = moment.shape
    fresh = slotted_zeros(names, interleaved, cap, width, moment.dtype)
    for name, arr in zip(names, arrays):
        fresh[name][...] = arr
    state.update(fresh)
    return state
