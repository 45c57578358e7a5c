"""Optimizer state of a large table becomes resident only for the pages of the rows a step
touches (sparseopt._utils.lazy_zeros), not for the whole table."""
import os

import numpy as np
import pytest

import sparseopt as so
from sparseopt import _utils

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="resident memory is read from /proc")


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_first_step_makes_only_touched_pages_resident():
    n, d = 2_000_000, 16
    E = np.zeros((n, d), dtype=np.float32)
    E[...] = 0.5  # the parameter itself is resident before the step
    rows = np.random.default_rng(0).choice(n, 1000, replace=False)
    opt = so.Adam([E], lr=0.01)
    before = _rss()
    opt.step([so.RowGrad(rows, np.ones((1000, d), dtype=np.float32))])
    grown = _rss() - before
    state = opt.state_dict()["state"][0]
    full = sum(v.nbytes for v in state.values() if isinstance(v, np.ndarray))
    assert full > 250 << 20
    # 1000 rows x (a page of moments, of counters, of merge slots) is at most 12 MB
    assert grown < 32 << 20, (grown, full)
    assert np.all(E[rows] < 0.5) and np.all(state["exp_avg"][rows] != 0)
    assert np.count_nonzero(state["row_step"]) == 1000


def test_small_arrays_are_ordinary_zeros():
    a = _utils.lazy_zeros(100)
    assert a.shape == (100,) and not a.any() and a.flags.writeable
    big = _utils.lazy_zeros(_utils.LAZY_ZEROS_MIN_BYTES)
    assert big.ctypes.data % 4096 == 0 and not big[::4096].any()
