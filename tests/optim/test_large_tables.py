"""Tables beyond 2**31 (and 2**32) elements that cost little memory.

The parameter is an ``np.memmap`` over a *sparse file* in ``tmp_path``: 8-17 GB long but
holding only the few pages the test writes. Rows near the start, on both sides of element
2**31 (and 2**32) and at the very end are stepped; their values are checked against the same
optimizer run on a compact table holding only those rows (bitwise: rows are independent) and
against ``sparseopt._reference``. An overflow of 32-bit element arithmetic anywhere (kernel
addressing, row views, the file offset) would write the wrong row: the compact comparison,
the untouched neighbours and the file's allocated size would all show it.

Memory: every test measures its resident-set growth (``/proc/self/statm``) and must stay far
below 3 GB. What the optimizer allocates per table row (not per touched row) is measured and
asserted separately, see ``test_state_allocation_touches_only_touched_rows``: zero-initialised
state comes from calloc, so only the pages of touched rows become resident.
"""
from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import scipy.sparse as sp

import sparseopt as so
from sparseopt import _reference as ref

from conftest import assert_close

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1 << 20
WIDTH = 64


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def sparse_file(tmp_path, name, nbytes):
    """A file of ``nbytes`` that occupies (almost) no disk blocks; skips if unsupported."""
    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(nbytes)
    if os.stat(path).st_blocks * 512 > MB:
        path.unlink()
        pytest.skip("the temporary filesystem does not support sparse files")
    return path


def big_memmap(tmp_path, name, shape, dtype):
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    path = sparse_file(tmp_path, name, nbytes)
    return path, np.memmap(path, dtype=dtype, mode="r+", shape=shape)


def interesting_rows(n_rows, width):
    """Rows at the start, around elements 2**31 and 2**32 (when present) and at the end."""
    rows = {0, 1, n_rows - 2, n_rows - 1}
    for boundary in (2**31, 2**32):
        r = boundary // width
        if r + 1 < n_rows:
            rows |= {r - 1, r, r + 1}
    return np.array(sorted(rows), dtype=np.int64)


def trajectory(rows, width, dtype, n_steps, seed=0):
    """Steps over ``rows``: duplicates, an empty batch, rows skipped for a while, int32 and
    int64 indices, an lr change. Yields (lr factor, positions into rows, values, int32?)."""
    rng = np.random.default_rng(seed)
    for t in range(n_steps):
        if t == 2:
            pos = np.zeros(0, dtype=np.int64)
        else:
            k = int(rng.integers(2, 2 * len(rows)))
            pos = rng.integers(0, len(rows) if t % 3 else len(rows) // 2, size=k)
        vals = rng.normal(size=(pos.size, width)).astype(dtype)
        yield (0.5 if t == 4 else None), pos, vals, bool(t % 2)


def run_both(big_opt, big_key_rows, small_opt, oracle, rows, width, dtype, n_steps):
    for lr_factor, pos, vals, use_int32 in trajectory(rows, width, dtype, n_steps):
        if lr_factor is not None:
            for o in (big_opt, small_opt, oracle):
                o.lr = o.lr * lr_factor
        idx = rows[pos]
        big_opt.step([so.RowGrad(idx.astype(np.int32) if use_int32 else idx, vals)])
        small_opt.step([so.RowGrad(pos, vals)])
        oracle.step([so.RowGrad(pos, vals)])
    # No flush(): in lazy="decay" mode it brings *every* row up to date, which writes every
    # page of the table and its state (measured: 24 GB of dirty file pages for this size).
    # Unflushed rows keep their pending decay identically in all three runs.


def init_rows(big, rows, dtype, seed=1):
    """Write distinct values into the interesting rows (and only those pages)."""
    vals = np.random.default_rng(seed).normal(size=(len(rows), big.shape[1])).astype(dtype)
    big[rows] = vals
    return vals


# --------------------------------------------------------------------------- the user path


def test_adagrad_rowwise_on_a_table_beyond_2_to_the_32_elements(tmp_path):
    """A float32 memmap of 2**32 + 64,000 elements (16 GB sparse file) trained with row-wise
    Adagrad, the configuration whose state is one value per row. Rows around element 2**31,
    2**32 and at the end are updated correctly, written to the file, and nothing else is."""
    n_rows = 2**32 // WIDTH + 1000
    assert n_rows * WIDTH > 2**32
    gc.collect()
    before = rss_bytes()
    path, big = big_memmap(tmp_path, "table.f32", (n_rows, WIDTH), np.float32)
    rows = interesting_rows(n_rows, WIDTH)
    assert rows.max() * WIDTH > 2**32 and np.any((rows * WIDTH >= 2**31) & (rows * WIDTH < 2**32))
    start = init_rows(big, rows, np.float32)
    kw = dict(lr=0.1, rowwise=True, weight_decay=0.01, lr_decay=0.01)
    opt = so.Adagrad([big], **kw)
    small = so.Adagrad([start.copy()], **kw)
    oracle = ref.Adagrad([start.copy()], **kw)
    run_both(opt, rows, small, oracle, rows, WIDTH, np.float32, n_steps=8)
    # a sparse gradient too (COO -> CSR over all rows: O(n_rows) time, bounded memory)
    coo = sp.coo_matrix((np.ones(3, np.float32), ([rows[0], rows[-4], rows[-1]], [0, 5, 63])),
                        shape=big.shape)
    opt.step([coo])
    compact = sp.coo_matrix((np.ones(3, np.float32), ([0, len(rows) - 4, len(rows) - 1],
                                                      [0, 5, 63])), shape=small.params[0].shape)
    small.step([compact])
    oracle.step([compact])

    got = np.array(big[rows])
    np.testing.assert_array_equal(got, small.params[0])
    assert_close(got, oracle.params[0], np.float32)
    np.testing.assert_array_equal(opt.state[0]["sum"][rows], small.state[0]["sum"])
    assert not np.array_equal(got, start)
    # neighbours of the touched rows were not written
    for r in (2, rows[len(rows) // 2] - 2, n_rows - 3):
        if r not in rows:
            assert not big[r].any(), f"row {r} was written"
    # the file holds the new rows, and only a few pages of it were ever written
    big.flush()
    del big
    opt = None
    on_disk = np.memmap(path, dtype=np.float32, mode="r", shape=(n_rows, WIDTH))
    np.testing.assert_array_equal(np.asarray(on_disk[rows]), got)
    del on_disk
    assert os.stat(path).st_blocks * 512 < 64 * MB
    grown = rss_bytes() - before
    # RowIndexer's slot (4 bytes per row) + the row-wise accumulator (4 bytes per row)
    assert grown < 2 * 4 * n_rows + 256 * MB, f"resident memory grew by {grown / MB:.0f} MB"


# --------------------------------------------------------------------------- every optimizer


def memmap_state(opt, tmp_path, tag):
    """Give parameter 0 its state as sparse-file memmaps before the first step.

    The optimizer allocates state it does not find (``_ensure_state``) in memory (calloc: only
    touched pages become resident, see the test below); pre-seeding the arrays as sparse files
    lets every kernel run on a table beyond 2**31 elements whose state lives on disk. Only
    configurations whose state starts at zero can do this (a sparse file reads as zeros).
    """
    p = opt.params[0]
    group = opt._current_group()
    state = {"step": 0}
    for sname, fill in opt._state_spec(group):
        if sname == "wd_log_sum":
            state[sname] = 0.0  # a float per parameter
            continue
        assert fill == 0, (sname, fill)
        shape, dtype = opt._state_shape(sname, p)
        _, state[sname] = big_memmap(tmp_path, f"{tag}-{sname}.bin", shape, dtype)
    opt.state[opt._keys[0]] = state
    return state


LARGE_CONFIGS = {
    "Adam": (so.Adam, ref.Adam, dict(lr=0.05)),
    "Adam-decay-wd-amsgrad": (so.Adam, ref.Adam, dict(lr=0.05, lazy="decay", weight_decay=0.1,
                                                      amsgrad=True)),
    "Adam-torch": (so.Adam, ref.Adam, dict(lr=0.05, preset="torch")),
    "Adagrad": (so.Adagrad, ref.Adagrad, dict(lr=0.1, lr_decay=0.05)),
    "RMSprop-centered-momentum": (so.RMSprop, ref.RMSprop, dict(lr=0.01, centered=True,
                                                                momentum=0.9)),
    "RMSprop-decay-wd": (so.RMSprop, ref.RMSprop, dict(lr=0.01, lazy="decay", weight_decay=0.1,
                                                       centered=True, momentum=0.5)),
}


@pytest.mark.parametrize("config", list(LARGE_CONFIGS))
def test_every_kernel_addresses_rows_beyond_2_to_the_31_elements(tmp_path, config):
    """Each update kernel on a float32 table of 2**31 + 64,000 elements whose
    state arrays are sparse-file memmaps too."""
    cls, rcls, kw = LARGE_CONFIGS[config]
    n_rows = 2**31 // WIDTH + 1000
    gc.collect()
    before = rss_bytes()
    _, big = big_memmap(tmp_path, "table.f32", (n_rows, WIDTH), np.float32)
    rows = interesting_rows(n_rows, WIDTH)
    start = init_rows(big, rows, np.float32)
    # state by row (memmaps of the table's size); compact slots: the test below
    opt = cls([big], **kw, **({"state_layout": "direct"} if cls is so.Adam else {}))
    state = memmap_state(opt, tmp_path, "state")
    small = cls([start.copy()], **kw)
    oracle = rcls([start.copy()], **kw)
    run_both(opt, rows, small, oracle, rows, WIDTH, np.float32, n_steps=10)
    np.testing.assert_array_equal(np.asarray(big[rows]), small.params[0])
    assert_close(np.asarray(big[rows]), oracle.params[0], np.float32)
    assert opt.state[0] is state and opt.state[0]["step"] == small.state[0]["step"]
    for sname, arr in small.state[0].items():
        if not isinstance(arr, np.ndarray):
            assert state[sname] == arr, sname  # the step, the running weight-decay sum
            continue
        np.testing.assert_array_equal(np.asarray(state[sname][rows]), arr, err_msg=sname)
    for r in (2, rows[2] - 2 if rows[2] > 3 else 3, n_rows - 3):
        assert not big[r].any(), f"row {r} was written"
    grown = rss_bytes() - before
    # RowIndexer's slot: 4 bytes per row; everything else is a few pages
    assert grown < 4 * n_rows + 128 * MB, f"resident memory grew by {grown / MB:.0f} MB"


@pytest.mark.parametrize("config", ["Adam", "Adam-decay-wd-amsgrad", "Adam-torch"])
def test_compact_adam_addresses_rows_beyond_2_to_the_31_elements(tmp_path, config):
    """Adam with its moments in slots on a float32 table of 2**31 + 64,000 elements: parameter
    rows far beyond 2**31 elements, moments in the first slots of lazily mapped buffers."""
    cls, rcls, kw = LARGE_CONFIGS[config]
    n_rows = 2**31 // WIDTH + 1000
    gc.collect()
    before = rss_bytes()
    _, big = big_memmap(tmp_path, "table.f32", (n_rows, WIDTH), np.float32)
    rows = interesting_rows(n_rows, WIDTH)
    start = init_rows(big, rows, np.float32)
    opt = cls([big], **kw, state_layout="compact")
    small = cls([start.copy()], **kw)
    oracle = rcls([start.copy()], **kw)
    run_both(opt, rows, small, oracle, rows, WIDTH, np.float32, n_steps=10)
    np.testing.assert_array_equal(np.asarray(big[rows]), small.params[0])
    assert_close(np.asarray(big[rows]), oracle.params[0], np.float32)
    st = opt.state[0]
    assert st["n_slots"] == len(rows) and st["exp_avg"].shape[0] == n_rows  # address space
    slots = st["slot_of_row"][rows] - 1
    for sname in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        if sname in st:
            np.testing.assert_array_equal(st[sname][slots], small.state[0][sname],
                                          err_msg=sname)
    grown = rss_bytes() - before
    # RowIndexer's slot (4 bytes per row) and the slot map (8 bytes per row) at most
    assert grown < 12 * n_rows + 128 * MB, f"resident memory grew by {grown / MB:.0f} MB"


# --------------------------------------------------------------------------- state allocation


STATE_CASES = {
    "Adam": (so.Adam, {}),
    "Adam-decay": (so.Adam, dict(lazy="decay")),
    "Adagrad": (so.Adagrad, {}),
    "RMSprop-centered-momentum": (so.RMSprop, dict(centered=True, momentum=0.9)),
}


@pytest.mark.parametrize("case", list(STATE_CASES))
def test_state_allocation_touches_only_touched_rows(case):
    """A 64 MB float32 table from ``np.zeros`` (lazily zeroed pages) gets a first step on two
    rows. Zero-initialised state need not be resident before rows are touched."""
    cls, kw = STATE_CASES[case]
    table = np.zeros((2**18, WIDTH), dtype=np.float32)  # 64 MB, not yet resident
    gc.collect()
    before = rss_bytes()
    opt = cls([table], **kw)
    opt.step([so.RowGrad([0, 2**18 - 1], np.ones((2, WIDTH), np.float32))])
    grown = rss_bytes() - before
    # per-row scratch and counters (<= 12 bytes per row) are allowed; per-element state is not
    assert grown < 12 * 2**18 + 8 * MB, (
        f"{case}: the first step made {grown / MB:.0f} MB resident for a "
        f"{table.nbytes / MB:.0f} MB table")
