"""Shared fixtures and helpers for the optimizer tests.

* ``dtype`` / ``index_dtype`` / ``width`` / ``n_threads`` fixtures run a test over the grid of
  kernels (float32/float64, int32/int64 indices, row widths with SIMD tails, thread counts).
* ``force_parallel`` sets ``sparseopt.optim._base.PARALLEL_MIN_ELEMENTS`` to 0 so that even
  small steps run on a team of threads; without it the kernels run serially below that many
  updated elements and a thread test would compare one thread with itself.
* ``assert_close`` compares with the tolerances of the reference tests (rtol 1e-5 for float32,
  1e-12 for float64) plus an absolute tolerance scaled to the compared array, so entries that
  happen to sit near zero do not fail on a last-bit difference.
* ``assert_state_matches`` compares every state array two optimizers both keep, counters and
  the float64 weight-decay sums (computed by the same float64 rule on both sides) exactly.
"""
from __future__ import annotations

import numpy as np
import pytest

import sparseopt as so
from sparseopt import _reference as ref
from sparseopt.optim import _base

DTYPES = [np.float32, np.float64]
INDEX_DTYPES = [np.int32, np.int64]
WIDTHS = [1, 3, 7, 8, 16, 17, 64, 257]
THREADS = [1, 2, 4]

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}

# State that counts steps, and the per-row running sums of log1p(-lr * weight_decay) (float64,
# the same additions in the same order in the optimizer and the reference): compared exactly.
COUNTERS = ("step", "row_step", "last_step", "first_step")
EXACT_STATE = COUNTERS + ("row_wd_log",)

OPTIMIZERS = {"Adam": so.Adam, "Adagrad": so.Adagrad, "RMSprop": so.RMSprop, "Ftrl": so.Ftrl}
REFERENCES = {"Adam": ref.Adam, "Adagrad": ref.Adagrad, "RMSprop": ref.RMSprop,
              "Ftrl": ref.Ftrl}


@pytest.fixture(params=DTYPES, ids=lambda t: np.dtype(t).name)
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=INDEX_DTYPES, ids=lambda t: np.dtype(t).name)
def index_dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=WIDTHS, ids=lambda w: f"d{w}")
def width(request):
    return request.param


@pytest.fixture(params=THREADS, ids=lambda n: f"threads{n}")
def n_threads(request):
    return request.param


@pytest.fixture
def force_parallel(monkeypatch):
    """Make every kernel call use the requested thread count, however small the step."""
    monkeypatch.setattr(_base, "PARALLEL_MIN_ELEMENTS", 0)


def tolerance(dtype) -> float:
    return RTOL[np.dtype(dtype)]


def assert_close(actual, desired, dtype=None, rtol=None, err_msg=""):
    """``assert_allclose`` with the dtype's rtol and an atol of rtol * max|desired|."""
    actual = np.asarray(actual)
    desired = np.asarray(desired)
    dt = np.dtype(dtype) if dtype is not None else desired.dtype
    rtol = tolerance(dt) if rtol is None else rtol
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale, err_msg=err_msg)


def assert_state_matches(opt_state, ref_state, dtype, rtol=None, where=""):
    """Every array in both states agrees (reshaped: 1-D parameters and row-wise accumulators
    are ``(n,)`` in the optimizer and ``(n, 1)`` in the reference); counters exactly."""
    assert opt_state["step"] == ref_state["step"], f"{where}: step"
    common = sorted(set(opt_state) & set(ref_state) - {"step"})
    for name in common:
        a = np.asarray(opt_state[name])
        b = np.asarray(ref_state[name])
        assert a.size == b.size, f"{where}: state {name!r} sizes {a.shape} vs {b.shape}"
        a = a.reshape(b.shape)
        if name in EXACT_STATE:
            np.testing.assert_array_equal(a, b, err_msg=f"{where}: counter {name!r}")
        else:
            assert a.dtype == np.dtype(dtype), f"{where}: state {name!r} dtype {a.dtype}"
            assert_close(a, b, dtype, rtol=rtol, err_msg=f"{where}: state {name!r}")
    return common


def snapshot(opt):
    """Deep copy of params and state (for bitwise before/after comparisons)."""
    params = [p.copy() for p in opt.params]
    state = {k: {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in st.items()}
             for k, st in opt.state.items()}
    return params, state


def assert_bitwise_equal(opt_a, opt_b, where=""):
    """Params and every state entry identical bit for bit (NaN-safe, dtype included)."""
    for i, (a, b) in enumerate(zip(opt_a.params, opt_b.params)):
        assert a.dtype == b.dtype
        assert np.array_equal(a, b), f"{where}: param {i} differs"
    assert set(opt_a.state) == set(opt_b.state)
    for key in opt_a.state:
        sa, sb = opt_a.state[key], opt_b.state[key]
        assert set(sa) == set(sb), f"{where}: state names of {key!r}"
        for name in sa:
            va, vb = sa[name], sb[name]
            if isinstance(va, np.ndarray):
                assert va.dtype == vb.dtype and va.shape == vb.shape
                assert np.array_equal(va, vb), f"{where}: state {key!r}/{name!r} differs"
            else:
                assert va == vb, f"{where}: state {key!r}/{name!r}: {va!r} != {vb!r}"
