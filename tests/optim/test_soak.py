"""Soak: many small steps through every gradient form keep the resident set flat (no leak in
the kernels, the merge scratch or the per-row state)."""
from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import scipy.sparse as sp

import sparseopt as so
# --------------------------------------------------------------------------- soak


def _resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _growing_buffers(opts) -> int:
    """Bytes of the buffers that legitimately grow with the step count: the float64 power
    tables (one entry per step for each base) and ``wd_log`` (one per step and parameter)."""
    total = 0
    for o in opts:
        total += sum(t.table.nbytes for t in o._pow.values())
        total += sum(st["wd_log"].nbytes for st in o.state.values() if "wd_log" in st)
    return total


def _soak_optimizers():
    rng = np.random.default_rng(0)

    def params():
        return {"emb": rng.normal(size=(300, 8)).astype(np.float32),
                "bias": rng.normal(size=300)}

    return [
        so.Adam(params(), lr=0.01, lazy="decay", weight_decay=0.01, amsgrad=True),
        so.Adagrad(params(), lr=0.05, rowwise=True, nonfinite="skip", duplicates="mean"),
        so.RMSprop(params(), lr=0.01, lazy="decay", centered=True, momentum=0.5),
    ]


def _soak(opts, steps, start=0):
    """``steps`` small steps through every gradient form, lr changes, flushes, empty and
    skipped gradients, rejected steps and skipped non-finite rows."""
    rng = np.random.default_rng(start)
    idx64 = rng.integers(0, 300, size=(64, 24))
    vals = rng.normal(size=(64, 24, 8)).astype(np.float32)
    bias_vals = rng.normal(size=(64, 24))
    nan_vals = vals[0].copy()
    nan_vals[3, 2] = np.nan
    csr = [sp.random(300, 1, density=0.05, format="csr", random_state=i) for i in range(8)]
    coo = [sp.random(300, 8, density=0.01, format="coo", random_state=i, dtype=np.float32)
           for i in range(8)]
    dense_bias = rng.normal(size=300)
    empty = so.RowGrad(np.zeros(0, np.int64), np.zeros((0, 8), np.float32))
    bad = so.RowGrad([1, 300], np.ones((2, 8), np.float32))
    for s in range(start, start + steps):
        j = s % 64
        for o in opts:
            kind = s % 7
            if kind == 0:
                g = {"emb": so.RowGrad(idx64[j].astype(np.int32), vals[j]), "bias": csr[s % 8]}
            elif kind == 1:
                g = {"emb": so.RowGrad(idx64[j], vals[j]),
                     "bias": so.RowGrad(idx64[j], bias_vals[j])}
            elif kind == 2:
                g = {"emb": coo[s % 8], "bias": None}
            elif kind == 3:
                g = {"emb": empty, "bias": dense_bias}
            elif kind == 4:
                g = {"emb": so.RowGrad(idx64[j].tolist(), vals[j])}
            elif kind == 5 and o.nonfinite == "skip":
                g = {"emb": so.RowGrad(idx64[j], nan_vals)}
            else:
                g = {"bias": so.RowGrad(idx64[j][:4], bias_vals[j][:4])}
            o.step(g)
            if s % 97 == 0:
                o.flush()
            if s % 101 == 0:
                o.lr = o.lr * (0.5 if (s // 101) % 2 else 2.0)
                with pytest.raises(IndexError):
                    o.step({"emb": bad, "bias": csr[0]})


def _soak_growth(steps, warmup):
    opts = _soak_optimizers()
    _soak(opts, warmup)
    gc.collect()
    rss0, buf0 = _resident(), _growing_buffers(opts)
    _soak(opts, steps, start=warmup)
    gc.collect()
    rss1, buf1 = _resident(), _growing_buffers(opts)
    for o in opts:
        assert all(np.isfinite(p).all() for p in o.params)
    return rss1 - rss0, buf1 - buf0, opts


def _check_flat(steps, warmup, budget):
    grown, buffers, opts = _soak_growth(steps, warmup)
    unexplained = grown - buffers
    print(f"{steps} steps x {len(opts)} optimizers: resident +{grown / 1024:.0f} KiB, of which "
          f"step-indexed float64 tables +{buffers / 1024:.0f} KiB")
    # A leak of one small array (>= 100 bytes) per step would exceed the budget.
    assert unexplained < budget, (
        f"resident memory grew by {grown / 1024:.0f} KiB over {steps} steps, "
        f"{unexplained / 1024:.0f} KiB more than the step-indexed tables")
    # The step-indexed tables themselves: at most 2 x 8 bytes per step for each of them
    # (Adam: 2 power tables + 2 wd_log; RMSprop: 5 power tables + 2 wd_log).
    assert buffers <= 11 * 16 * (steps + warmup)


def test_soak_reduced_resident_memory_is_flat():
    """CI form: 10,000 steps per optimizer after a 2,000-step warm-up."""
    _check_flat(10_000, 2_000, budget=1 << 20)


@pytest.mark.slow
def test_soak_100k_steps_resident_memory_is_flat(request):
    """The full soak (about 15 s): runs with ``-m slow`` or ``SPARSEOPT_SLOW=1``; a plain
    ``pytest`` (CI) skips it and runs the reduced form above."""
    if "slow" not in (request.config.option.markexpr or "") and \
            os.environ.get("SPARSEOPT_SLOW") != "1":
        pytest.skip("slow: run with -m slow or SPARSEOPT_SLOW=1")
    _check_flat(100_000, 5_000, budget=4 << 20)
