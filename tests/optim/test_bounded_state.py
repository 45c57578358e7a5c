"""Memory of the bias corrections, lazy-decay factors and weight-decay catch-up is bounded,
and no counter value makes a kernel read or write outside an array.

* Powers ``beta**n`` come from fixed ``(8, 256)`` float64 tables (one level per byte of ``n``):
  the kernels' lookups equal ``sparseopt._reference.power`` bit for bit for any int64 ``n`` and
  stay within a few ulps of the exact power.
* A state at step 10**8 (and counters near it) loads and steps with a few MB, in every lazy mode;
  steps near 2**62 and 2**63 - 1 follow the reference.
* Counters edited in place after ``state_dict()`` (which returns arrays by reference) to any int64
  are clamped by the kernels: results stay finite, counters come back in range, and thread counts
  still agree bitwise. Probes that could crash run in a child process.
* State saved with the per-step ``wd_log`` array (the earlier format) is converted on load and on
  unpickling, and continues as it would have.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sparseopt as so
from sparseopt import _reference as ref
from sparseopt._kernels import _rows
from sparseopt.optim._base import PowTable

from conftest import assert_bitwise_equal, assert_close

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"
INT64_MAX = 2**63 - 1
MB = 1 << 20


def run_child(code: str, timeout: float = 300) -> str:
    """Run ``code`` in a fresh interpreter importing this checkout; return its stdout. A crash
    (SIGSEGV from an out-of-bounds access) fails the calling test only."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)
    assert proc.returncode == 0, f"child exit code {proc.returncode}: {proc.stderr[-3000:]}"
    return proc.stdout


# --------------------------------------------------------------------------- power tables

BASES = [0.0, 0.5, 0.9, 0.99, 0.999, 0.999999, 1 - 2.0**-40, 1 - 2.0**-53, 1e-300]
EXPONENTS = ([0, 1, 2, 255, 256, 257, 511, 65535, 65536, 65537, 10**6, 10**8, 2**32 - 1,
              2**32, 2**40 + 12345, 2**48, 2**56 - 1, 2**62, 2**62 + 1, INT64_MAX - 1, INT64_MAX]
             + [int(x) for x in np.random.default_rng(0).integers(0, INT64_MAX, size=40)])


@pytest.mark.parametrize("base", BASES)
def test_kernel_power_is_the_reference_rule_bitwise(base):
    table = PowTable(base).table
    assert table.shape == (8, 256) and table.dtype == np.float64 and table.nbytes == 16384
    for n in EXPONENTS:
        got = _rows.power(table, n)
        want = ref.power(base, n)
        assert got == want or (math.isnan(got) and math.isnan(want)), (base, n, got, want)


@pytest.mark.parametrize("base", [0.5, 0.9, 0.999, 0.999999, 1 - 2.0**-40, 1 - 2.0**-53])
def test_power_is_within_a_few_ulps_of_the_exact_power(base):
    """Against ``exp(n * log(base))`` in 50-digit decimal arithmetic, where the result is a
    normal float64; one rounding per non-zero byte beyond the first."""
    from decimal import Decimal, getcontext
    getcontext().prec = 50
    lb = Decimal(base).ln()
    for n in EXPONENTS:
        exact = (Decimal(n) * lb).exp()
        if exact < Decimal("1e-300"):
            assert ref.power(base, n) < 1e-290
            continue
        got = Decimal(ref.power(base, n))
        assert abs(got / exact - 1) < Decimal(8 * 2.0**-52), (base, n)


def test_power_tables_do_not_grow_and_follow_hyper_parameter_changes():
    """An optimizer keeps one 16 KiB table per base whatever the step; a changed beta gets a
    new table (the old value's table is not reused)."""
    P = np.zeros((5, 2))
    opt = so.Adam([P], lr=0.1, lazy="decay")
    opt.step([so.RowGrad([0], np.ones((1, 2)))])
    tables = {name: t.table for name, t in opt._pow.items()}
    assert set(tables) == {"beta1", "beta2"}
    assert all(t.nbytes == 16384 for t in tables.values())
    opt.state[0]["step"] = 10**12  # a large step: nothing grows
    opt.state[0]["last_step"][:] = 10**12
    opt.step([so.RowGrad([1], np.ones((1, 2)))])
    assert {name: t.table for name, t in opt._pow.items()} == tables
    opt.param_groups[0]["betas"] = (0.5, 0.999)
    opt.step([so.RowGrad([1], np.ones((1, 2)))])
    assert opt._pow["beta1"].table[0, 1] == 0.5 and opt._pow["beta2"].table is tables["beta2"]


# --------------------------------------------------------------------------- memory at 1e8 steps

_MEMORY_PROBE = r"""
import gc, json, resource, tracemalloc
import numpy as np, sparseopt as so
cls = getattr(so, {cls!r})
kw = {kw!r}
S = {step}
N, D = 2000, 16
rng = np.random.default_rng(0)
P = rng.normal(size=(N, D)).astype(np.float32)
opt = cls([P], lr=0.01, **kw)
opt.step([so.RowGrad(np.arange(N), rng.normal(size=(N, D)).astype(np.float32))])
sd = opt.state_dict()
st = sd["state"][0]
st["step"] = S
gap = rng.integers(1, 50_000, size=N)
if "row_step" in st:
    st["row_step"][:] = S - gap
if "last_step" in st:
    st["last_step"][:] = S - gap
if "first_step" in st:
    st["first_step"][:] = S - gap - rng.integers(0, 10**7, size=N)
if "wd_log_sum" in st:
    st["wd_log_sum"] = -4000.0
    st["row_wd_log"][:] = -4000.0 + gap * 1e-5
Q = P.copy()
other = cls([Q], lr=0.01, **kw)
gc.collect()
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
tracemalloc.start()
other.load_state_dict(sd)
for t in range(5):
    idx = rng.integers(0, N, size=300)
    other.step([so.RowGrad(idx, rng.normal(size=(300, D)).astype(np.float32))])
other.flush()
peak = tracemalloc.get_traced_memory()[1]
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
st = other.state[0]
print(json.dumps(dict(peak=peak, rss=rss1 - rss0, step=st["step"],
                      finite=bool(np.isfinite(Q).all()), moved=bool((Q != P).any()))))
"""

MEMORY_CASES = {
    "Adam-frozen-row": ("Adam", dict()),
    "Adam-frozen-global": ("Adam", dict(bias_correction="global", amsgrad=True)),
    "Adam-decay-row-wd": ("Adam", dict(lazy="decay", weight_decay=0.01)),
    "Adam-decay-global-wd": ("Adam", dict(lazy="decay", bias_correction="global",
                                          weight_decay=0.01)),
    "RMSprop-frozen": ("RMSprop", dict(momentum=0.9, centered=True)),
    "RMSprop-decay-wd-momentum": ("RMSprop", dict(lazy="decay", weight_decay=0.01,
                                                  momentum=0.9)),
}


@pytest.mark.parametrize("case", list(MEMORY_CASES))
def test_state_at_1e8_steps_loads_and_steps_in_bounded_memory(case):
    """A state at step 10**8 (row counters up to it) costs what its arrays cost: loading it,
    five steps and a flush allocate < 50 MB (tracemalloc) and grow the peak RSS by < 50 MB.
    The state arrays themselves are ~0.4 MB here."""
    cls, kw = MEMORY_CASES[case]
    out = json.loads(run_child(_MEMORY_PROBE.format(cls=cls, kw=kw, step=10**8)))
    assert out["step"] == 10**8 + 5
    assert out["finite"] and out["moved"]
    assert out["peak"] < 50 * MB, f"tracemalloc peak {out['peak'] / MB:.0f} MB"
    assert out["rss"] < 50 * MB, f"peak RSS grew by {out['rss'] / MB:.0f} MB"


# --------------------------------------------------------------------------- huge step counters

_HUGE_PROBE = r"""
import numpy as np, sparseopt as so
from sparseopt import _reference as ref
cls, rcls = getattr(so, {cls!r}), getattr(ref, {cls!r})
kw = {kw!r}
S = {step}
N, D = 12, 3
rng = np.random.default_rng(1)
P0 = rng.normal(size=(N, D))
opt, oracle = cls([P0.copy()], lr=0.05, **kw), rcls([P0.copy()], lr=0.05, **kw)
g = so.RowGrad([0, 1, 2, 3], rng.normal(size=(4, D)))
opt.step([g]); oracle.step([g])
# the same state S steps later: rows 0-3 were touched long ago, rows 4-7 recently
st, rst = opt.state[0], oracle.state[0]
ages = np.array([S - 1, S - 2**40, S - 2**20, S - 255, 1, 2, 3, 300, 0, 0, 0, 0])
ages = np.clip(ages, 0, S - 1)
for name in ("row_step", "last_step"):
    if name in st:
        st[name][:4] = rst[name][:4] = S - 1 - ages[:4]
if "first_step" in st:
    st["first_step"][:4] = rst["first_step"][:4] = np.maximum(1, S - 1 - ages[:4] - 2**41)
st["step"] = rst["step"] = S - 1
if "wd_log_sum" in st:
    st["wd_log_sum"] = oracle.wd_log_sum[0] = -3.0
    st["row_wd_log"][:] = rst["row_wd_log"][:] = -3.0 + np.arange(N) * 1e-3
for t in range(3):
    idx = rng.integers(0, 8, size=6)
    g = so.RowGrad(idx, rng.normal(size=(6, D)))
    opt.step([g]); oracle.step([g])
opt.flush(); oracle.flush()
assert opt.state[0]["step"] == S + 2
np.testing.assert_allclose(opt.params[0], oracle.params[0], rtol=1e-11, atol=1e-13)
for name, arr in oracle.state[0].items():
    if name in opt.state[0] and name != "step":
        a = np.asarray(opt.state[0][name])
        if arr.dtype.kind == "i" or name == "row_wd_log":
            np.testing.assert_array_equal(a, arr, err_msg=name)
        else:
            np.testing.assert_allclose(a, arr.reshape(a.shape), rtol=1e-11, atol=1e-13,
                                       err_msg=name)
print("ok")
"""

HUGE_CASES = {
    "Adam-frozen-row": ("Adam", dict(betas=(0.9, 1 - 2.0**-45))),
    "Adam-decay-row-wd-amsgrad": ("Adam", dict(lazy="decay", weight_decay=0.1, amsgrad=True,
                                               betas=(0.9, 1 - 2.0**-45))),
    "Adam-decay-global": ("Adam", dict(lazy="decay", bias_correction="global",
                                       betas=(1 - 2.0**-20, 1 - 2.0**-50))),
    "RMSprop-decay-momentum-wd": ("RMSprop", dict(lazy="decay", alpha=1 - 2.0**-42,
                                                  momentum=0.9, weight_decay=0.1)),
}


@pytest.mark.parametrize("step", [2**62, 2**62 + 12345, INT64_MAX - 3],
                         ids=["2^62", "2^62+12345", "int64max-3"])
@pytest.mark.parametrize("case", list(HUGE_CASES))
def test_steps_near_2_to_the_62_and_int64_max_follow_the_reference(case, step):
    """Counters of 2**62 and more (rows last touched 1 step, 2**20, 2**40 steps ago): the kernels
    compute the same powers as the reference (betas close to 1 make them non-trivial)."""
    cls, kw = HUGE_CASES[case]
    assert run_child(_HUGE_PROBE.format(cls=cls, kw=kw, step=step)).strip() == "ok"


def test_step_counter_at_int64_max_refuses_to_advance():
    P = np.zeros((3, 2))
    opt = so.Adam([P], lr=0.1, lazy="decay")
    opt.step([so.RowGrad([0], np.ones((1, 2)))])
    sd = opt.state_dict()
    sd["state"][0]["step"] = INT64_MAX
    opt.load_state_dict(sd)
    opt.flush()  # a flush does not advance the counter
    before = P.copy()
    with pytest.raises(ValueError, match=r"step counter must be in \[0, 9223372036854775806\]"):
        opt.step([so.RowGrad([1], np.ones((1, 2)))])
    np.testing.assert_array_equal(P, before)
    assert opt.state[0]["step"] == INT64_MAX
    sd["state"][0]["step"] = INT64_MAX + 1
    with pytest.raises(ValueError, match="invalid step"):
        opt.load_state_dict(sd)


# ------------------------------------------------------------------------ counters edited in place

_EDIT_PROBE = r"""
import numpy as np, sparseopt as so
from sparseopt.optim import _base
cls = getattr(so, {cls!r})
kw = {kw!r}
VALUES = [-(2**63), -(2**62), -1, 0, 1, 7, 8, 9, 2**31, 2**62, 2**63 - 1]
N, D = len(VALUES) + 3, 5
rng = np.random.default_rng(2)
P0 = rng.normal(size=(N, D)).astype(np.float32)
def build(n_threads):
    opt = cls([P0.copy()], lr=0.05, n_threads=n_threads, **kw)
    for t in range(8):
        opt.step([so.RowGrad(rng_t[t], vals_t[t])])
    sd = opt.state_dict()  # arrays by reference: edits reach the optimizer
    for name in ("row_step", "last_step", "first_step"):
        if name in sd["state"][0]:
            arr = sd["state"][0][name]
            arr[: len(VALUES)] = VALUES if name != "first_step" else VALUES[::-1]
    return opt
rng_t = [rng.integers(0, N, size=6) for _ in range(8)]
vals_t = [rng.normal(size=(6, D)).astype(np.float32) for _ in range(8)]
_base.PARALLEL_MIN_ELEMENTS = 0  # really split the rows over threads
a, b = build(1), build(2)
for opt in (a, b):
    opt.step([so.RowGrad(np.arange(N), np.ones((N, D), np.float32))])
    opt.step([so.RowGrad(np.arange(0, N, 2), np.ones((len(range(0, N, 2)), D), np.float32))])
    opt.flush()
    st = opt.state[0]
    t = st["step"]
    assert t == 10, t
    assert np.isfinite(opt.params[0]).all()
    for name in ("exp_avg", "exp_avg_sq", "square_avg", "momentum_buffer", "grad_avg"):
        if name in st:
            assert np.isfinite(st[name]).all(), name
    if "row_step" in st:
        assert ((st["row_step"] >= 1) & (st["row_step"] <= t)).all(), st["row_step"]
    if "last_step" in st:
        assert (st["last_step"] == t).all(), st["last_step"]  # flushed
    if "first_step" in st:
        assert ((st["first_step"] >= 1) & (st["first_step"] <= t)).all(), st["first_step"]
np.testing.assert_array_equal(a.params[0], b.params[0])
for name, arr in a.state[0].items():
    assert np.array_equal(np.asarray(arr), np.asarray(b.state[0][name])), name
print("ok")
"""

EDIT_CASES = {
    "Adam-frozen-row": ("Adam", dict()),
    "Adam-decay-row-wd-amsgrad": ("Adam", dict(lazy="decay", weight_decay=0.1, amsgrad=True)),
    "Adam-decay-global": ("Adam", dict(lazy="decay", bias_correction="global")),
    "RMSprop-decay-centered-momentum-wd": ("RMSprop", dict(lazy="decay", centered=True,
                                                           momentum=0.5, weight_decay=0.1)),
    "RMSprop-decay-plain": ("RMSprop", dict(lazy="decay")),
}


@pytest.mark.parametrize("case", list(EDIT_CASES))
def test_counters_edited_in_place_to_any_int64_are_harmless(case):
    """Every counter of a row set in place (through the arrays ``state_dict()`` returned) to
    values from -2**63 to 2**63 - 1; then steps touching every row and a flush. No crash, finite
    parameters and moments, counters back in range, and 1 and 2 threads give the same bits."""
    cls, kw = EDIT_CASES[case]
    assert run_child(_EDIT_PROBE.format(cls=cls, kw=kw)).strip() == "ok"


# --------------------------------------------------------------------------- the wd_log format


def _fixture_grads(rng, t):
    """The gradients the fixture's run used at step t (see tests/data/README.md)."""
    idx = rng.integers(0, 12, size=5) if t % 4 != 2 else rng.integers(12, 20, size=3)
    return so.RowGrad(idx, rng.normal(size=(idx.size, 3)))


FIXTURE_RUNS = {
    "adam": (so.Adam, dict(lazy="decay", weight_decay=0.3, amsgrad=True)),
    "rmsprop": (so.RMSprop, dict(lazy="decay", weight_decay=0.3, momentum=0.5, centered=True)),
}


@pytest.mark.parametrize("name", list(FIXTURE_RUNS))
def test_state_saved_with_wd_log_loads_and_continues(name):
    """``tests/data/state_wd_log_format.npz``: a state_dict saved after 30 steps (lr schedule,
    weight decay, a flush at step 17) in the format that kept ``wd_log`` (one float64 per
    step), and what 6 more steps and a flush gave. Loaded today it continues the same run."""
    cls, kw = FIXTURE_RUNS[name]
    with np.load(DATA / "state_wd_log_format.npz", allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    prefix = f"{name}/state/"
    st = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
    st["step"] = int(st["step"])
    assert "wd_log" in st and st["wd_log"].shape == (st["step"] + 1,)
    P = data[f"{name}/saved_param"].copy()
    opt = cls([P], lr=0.05, **kw)
    opt.load_state_dict({"optimizer": cls.__name__, "state": {0: st},
                         "param_groups": [dict(opt.param_groups[0],
                                               lr=float(data[f"{name}/lr"]))]})
    new = opt.state[0]
    assert "wd_log" not in new
    assert new["wd_log_sum"] == st["wd_log"][-1]
    np.testing.assert_array_equal(new["row_wd_log"], st["wd_log"][st["last_step"]])
    rng = np.random.default_rng(7)
    rng.normal(size=(20, 3))
    for t in range(1, 31):
        _fixture_grads(rng, t)
    for t in range(31, 37):
        opt.lr = 0.05 * (1 + 0.5 * np.sin(t))
        opt.step([_fixture_grads(rng, t)])
    opt.flush()
    assert_close(P, data[f"{name}/final_param"], np.float64, rtol=1e-12)
    compared = []
    for sname, val in opt.state[0].items():
        key = f"{name}/final/{sname}"
        if key not in data:
            continue
        compared.append(sname)
        if sname in ("step", "last_step", "first_step"):
            np.testing.assert_array_equal(val, data[key], err_msg=sname)
        else:
            assert_close(val, data[key], np.float64, rtol=1e-12, err_msg=sname)
    assert "last_step" in compared and len(compared) >= 4


def _wd_history_run(cls, kw, n_steps, on_step=None):
    rng = np.random.default_rng(5)
    P = rng.normal(size=(15, 4)).astype(np.float32)
    opt = cls({"emb": P}, lr=0.05, **kw)
    sums = [0.0]
    for t in range(1, n_steps + 1):
        opt.lr = 0.05 * (1 + 0.5 * np.cos(t))
        idx = rng.integers(0, 10 if t < 9 else 15, size=4)
        opt.step({"emb": so.RowGrad(idx, rng.normal(size=(4, 4)).astype(np.float32))})
        sums.append(opt.state["emb"]["wd_log_sum"])
        if t == 6:
            opt.flush()
        if on_step is not None:
            on_step(t, opt, sums)
    return opt


def _as_wd_log_format(st, sums):
    """A state in the earlier format: ``wd_log[s]`` = the running sum after step s."""
    old = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in st.items()}
    del old["wd_log_sum"], old["row_wd_log"]
    old["wd_log"] = np.array(sums, dtype=np.float64)
    return old


@pytest.mark.parametrize("cls,kw", [(so.Adam, dict(lazy="decay", weight_decay=0.2)),
                                    (so.RMSprop, dict(lazy="decay", weight_decay=0.2,
                                                      momentum=0.5))],
                         ids=["Adam", "RMSprop"])
@pytest.mark.parametrize("how", ["load_state_dict", "unpickle"])
def test_wd_log_format_converts_to_the_bitwise_same_run(cls, kw, how):
    """The running sums are exactly the entries the per-step array held (the same float64
    additions), so a state converted from that form continues bit for bit."""
    saved = {}

    def snapshot(t, opt, sums):
        if t == 12:
            saved["opt"] = pickle.loads(pickle.dumps(opt))
            saved["state"] = _as_wd_log_format(opt.state["emb"], sums)

    full = _wd_history_run(cls, kw, 20, snapshot)
    resumed = saved["opt"]
    if how == "load_state_dict":
        sd = resumed.state_dict()
        sd["state"] = {"emb": saved["state"]}
        resumed.load_state_dict(sd)
    else:  # an optimizer pickled while it kept wd_log
        resumed.__dict__["state"] = {"emb": saved["state"]}
        resumed = pickle.loads(pickle.dumps(resumed))
    assert "wd_log" not in resumed.state["emb"]
    rng = np.random.default_rng(5)
    rng.normal(size=(15, 4))
    for t in range(1, 21):
        idx = rng.integers(0, 10 if t < 9 else 15, size=4)
        g = {"emb": so.RowGrad(idx, rng.normal(size=(4, 4)).astype(np.float32))}
        if t > 12:
            resumed.lr = 0.05 * (1 + 0.5 * np.cos(t))
            resumed.step(g)
    full.flush()
    resumed.flush()
    assert_bitwise_equal(full, resumed, how)
