"""Invariants of optimizer state, checked where state enters: ``load_state_dict`` (values are
scanned) and every ``step()`` / ``flush()`` (shapes, dtypes, layouts and the parameters
themselves, O(1) per array: ``state_dict()`` and ``opt.state`` hand out arrays by reference, so
anything may have been replaced between steps).

Every refusal is a ``TypeError``/``KeyError``/``ValueError`` that names the state and the
parameter, raised before any parameter, state array or step counter changes.
"""
from __future__ import annotations

import copy
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sparseopt as so

ROOT = Path(__file__).resolve().parents[2]
N = 20


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"emb": rng.normal(size=(N, 4)).astype(np.float32), "bias": rng.normal(size=N)}


def _grads(t):
    rng = np.random.default_rng(100 + t)
    idx = rng.integers(0, N, size=7)
    return {"emb": so.RowGrad(idx, rng.normal(size=(7, 4)).astype(np.float32)),
            "bias": so.RowGrad(idx, rng.normal(size=7))}


CONFIGS = {
    "Adam": (so.Adam, dict(lr=0.05)),
    "Adam-amsgrad-global": (so.Adam, dict(lr=0.05, amsgrad=True, bias_correction="global")),
    "Adam-decay-wd": (so.Adam, dict(lr=0.05, lazy="decay", weight_decay=0.1)),
    "Adagrad": (so.Adagrad, dict(lr=0.1)),
    "Adagrad-rowwise": (so.Adagrad, dict(lr=0.1, rowwise=True)),
    "RMSprop-centered-momentum": (so.RMSprop, dict(lr=0.01, centered=True, momentum=0.5)),
    "RMSprop-decay-wd": (so.RMSprop, dict(lr=0.01, lazy="decay", weight_decay=0.1,
                                          momentum=0.5, centered=True)),
}


def _trained(config, n_steps=4):
    cls, kw = CONFIGS[config]
    opt = cls(_params(), **kw)
    for t in range(n_steps):
        opt.step(_grads(t))
    return opt


def _snapshot(opt):
    return ([p.copy() for p in opt.params], copy.deepcopy(opt.state))


def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and a.tobytes() == b.tobytes())
    return type(a) is type(b) and (a == b or (a != a and b != b))


def assert_unchanged(opt, snap):
    params, state = snap
    for p, q in zip(opt.params, params):
        assert _same(p, q)
    assert opt.state.keys() == state.keys()
    for key in state:
        assert opt.state[key].keys() == state[key].keys(), key
        for name in state[key]:
            assert _same(opt.state[key][name], state[key][name]), (key, name)


def _edit(sd, key, name, value):
    sd = pickle.loads(pickle.dumps(sd))
    if callable(value):
        value = value(sd["state"][key])
    sd["state"][key][name] = value
    return sd


def _with(name, idx, value):
    """A copy of state ``name`` with ``value`` written at ``idx``."""
    def fn(st):
        arr = np.array(st[name], copy=True)
        arr[idx] = value
        return arr
    return fn


# --------------------------------------------------------------------------- load: values

BAD_VALUES = [
    ("Adam", "emb", "exp_avg_sq", _with("exp_avg_sq", (3, 1), -1e-3), r"must be >= 0"),
    ("Adam", "bias", "exp_avg_sq", _with("exp_avg_sq", 5, -2.0), r"must be >= 0"),
    ("Adam-amsgrad-global", "emb", "max_exp_avg_sq", _with("max_exp_avg_sq", (0, 0), -1.0),
     r"must be >= 0"),
    ("Adagrad", "emb", "sum", _with("sum", (2, 2), -0.5), r"must be >= 0"),
    ("Adagrad-rowwise", "bias", "sum", _with("sum", 4, -1e-9), r"must be >= 0"),
    ("RMSprop-centered-momentum", "emb", "square_avg", _with("square_avg", (1, 3), -1.0),
     r"must be >= 0"),
    ("Adam", "emb", "exp_avg", _with("exp_avg", (4, 0), np.nan), r"NaN or infinite"),
    ("Adam", "bias", "exp_avg_sq", _with("exp_avg_sq", 0, np.inf), r"NaN or infinite"),
    ("Adam-amsgrad-global", "bias", "max_exp_avg_sq", _with("max_exp_avg_sq", 9, np.inf),
     r"NaN or infinite"),
    ("Adagrad", "bias", "sum", _with("sum", 3, np.nan), r"NaN or infinite"),
    ("RMSprop-centered-momentum", "emb", "grad_avg", _with("grad_avg", (2, 1), -np.inf),
     r"NaN or infinite"),
    ("RMSprop-centered-momentum", "bias", "momentum_buffer", _with("momentum_buffer", 7, np.nan),
     r"NaN or infinite"),
    ("RMSprop-decay-wd", "emb", "square_avg", _with("square_avg", (0, 0), np.nan),
     r"NaN or infinite"),
    ("RMSprop-decay-wd", "bias", "row_wd_log", _with("row_wd_log", 1, np.nan),
     r"NaN or infinite"),
    ("Adam-decay-wd", "emb", "row_wd_log", _with("row_wd_log", 1, 0.5), r"must be <= 0"),
    ("Adam-decay-wd", "emb", "row_wd_log", lambda st: np.full(N, st["wd_log_sum"] - 1.0),
     r"below 'wd_log_sum'"),
    ("Adam-decay-wd", "emb", "first_step",
     lambda st: np.where(st["last_step"] > 0, st["last_step"] + 1, 0).clip(0, st["step"]),
     r"inconsistent: row \d+ has 'first_step' \d+ after its 'last_step' \d+"),
    ("Adam-decay-wd", "bias", "last_step", _with("last_step", 2, -1), r"outside \[0, 4\]"),
    ("Adam", "emb", "row_step", _with("row_step", 2, 5), r"outside \[0, 4\]"),
    ("RMSprop-decay-wd", "emb", "last_step", _with("last_step", 0, 2**62), r"outside \[0, 4\]"),
]


@pytest.mark.parametrize("config,key,name,value,pattern", BAD_VALUES,
                         ids=[f"{c}-{k}-{n}-{i}" for i, (c, k, n, _, _) in enumerate(BAD_VALUES)])
def test_load_rejects_state_values_no_run_produces(config, key, name, value, pattern):
    opt = _trained(config)
    bad = _edit(opt.state_dict(), key, name, value)
    fresh = _trained(config, n_steps=2)
    snap = _snapshot(fresh)
    with pytest.raises(ValueError) as info:
        fresh.load_state_dict(bad)
    msg = str(info.value)
    assert f"'{name}'" in msg and f"parameter '{key}'" in msg, msg
    assert re.search(pattern, msg), msg
    assert_unchanged(fresh, snap)
    opt.load_state_dict(opt.state_dict())  # the unedited state loads


def test_load_accepts_zero_and_negative_zero_second_moments():
    """Zero is a value a run produces (untouched rows); -0.0 compares equal to it."""
    opt = _trained("Adam")
    sd = opt.state_dict()
    sd["state"]["emb"]["exp_avg_sq"][:2] = -0.0
    opt.load_state_dict(sd)


# --------------------------------------------------------------------------- load: malformed input

MALFORMED = {
    "list": ([], TypeError, r"expects a dict made by state_dict\(\), got list"),
    "none": (None, TypeError, r"got NoneType"),
    "string": ("state", TypeError, r"got str"),
    "no-state": ({"param_groups": []}, ValueError, r"no 'state' entry"),
    "state-list": ({"state": []}, TypeError, r"state_dict\['state'\] must be a dict"),
    "state-none": ({"state": None}, TypeError, r"state_dict\['state'\] must be a dict"),
    "param-state-list": ({"state": {"emb": []}}, TypeError,
                         r"the state of parameter 'emb' must be a dict, got list"),
    "param-state-none": ({"state": {"bias": None}}, TypeError,
                         r"the state of parameter 'bias' must be a dict"),
    "groups-string": ({"state": {}, "param_groups": "lr"}, TypeError, r"param_groups"),
    "groups-of-none": ({"state": {}, "param_groups": [None]}, TypeError, r"param_groups"),
    "groups-empty": ({"state": {}, "param_groups": []}, ValueError, r"param_groups.*one group"),
    "step-string": ({"state": {"emb": {"step": "3"}}}, ValueError, r"invalid step '3'"),
    "step-float": ({"state": {"emb": {"step": 2.5}}}, ValueError, r"invalid step 2.5"),
    "step-bool": ({"state": {"emb": {"step": True}}}, ValueError, r"invalid step True"),
    "step-too-big": ({"state": {"emb": {"step": 2**63}}}, ValueError, r"invalid step"),
    "array-ragged": ({"state": {"bias": {"step": 1, "exp_avg": [[1.0], [1.0, 2.0]],
                                         "exp_avg_sq": np.zeros(N), "row_step": np.zeros(N,
                                                                                  np.int64)}}},
                     ValueError, r"'exp_avg' of parameter 'bias'"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_load_rejects_malformed_input_without_attribute_errors(case):
    value, exc, pattern = MALFORMED[case]
    opt = _trained("Adam")
    snap = _snapshot(opt)
    with pytest.raises(exc, match=pattern):
        opt.load_state_dict(value)
    assert_unchanged(opt, snap)


# --------------------------------------------------------------------------- a read-only parameter


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("locked", ["emb", "bias"])
def test_parameter_made_read_only_raises_before_anything_changes(config, locked):
    """Two parameters, one made read-only after construction: the step raises ValueError
    naming it before the other parameter moves or any step counter advances."""
    opt = _trained(config)
    dict(zip(opt._keys, opt.params))[locked].flags.writeable = False
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=f"parameter '{locked}' is read-only"):
        opt.step(_grads(9))
    assert_unchanged(opt, snap)
    if CONFIGS[config][1].get("lazy") == "decay":
        with pytest.raises(ValueError, match=f"parameter '{locked}' is read-only"):
            opt.flush()
        assert_unchanged(opt, snap)
    dict(zip(opt._keys, opt.params))[locked].flags.writeable = True
    opt.step(_grads(9))
    assert opt.state["emb"]["step"] == opt.state["bias"]["step"] == 5


def test_parameter_reshaped_in_place_raises():
    P = np.zeros((6, 4))
    opt = so.Adam({"w": P}, lr=0.1)
    opt.step({"w": so.RowGrad([1], np.ones((1, 4)))})
    P.shape = (24,)
    with pytest.raises(ValueError, match=r"parameter 'w' changed from shape \(6, 4\)"):
        opt.step({"w": so.RowGrad([20], np.ones(1))})
    assert opt.state["w"]["step"] == 1


# ------------------------------------------------------------------------ state replaced in place

_REPLACE_PROBE = r"""
import copy, json
import numpy as np, sparseopt as so
CASES = {cases}
out = {{}}
for case, (cls_name, kw, key, edit, call) in CASES.items():
    cls = getattr(so, cls_name)
    rng = np.random.default_rng(0)
    params = {{"emb": rng.normal(size=(20, 4)).astype(np.float32), "bias": rng.normal(size=20)}}
    opt = cls(params, **kw)
    def grads(t):
        r = np.random.default_rng(100 + t)
        idx = r.integers(0, 20, size=7)
        return {{"emb": so.RowGrad(idx, r.normal(size=(7, 4)).astype(np.float32)),
                "bias": so.RowGrad(idx, r.normal(size=7))}}
    for t in range(4):
        opt.step(grads(t))
    st = opt.state[key]
    exec(edit)
    before = ([p.copy() for p in opt.params], copy.deepcopy(opt.state))
    try:
        opt.step(grads(9)) if call == "step" else opt.flush()
        res = dict(exc=None, msg="")
    except Exception as e:
        res = dict(exc=type(e).__name__, msg=str(e))
    def same(v, w):
        if isinstance(v, dict):
            return isinstance(w, dict) and v.keys() == w.keys() and all(same(v[n], w[n])
                                                                        for n in v)
        if isinstance(v, np.ndarray):
            return isinstance(w, np.ndarray) and v.dtype == w.dtype and v.tobytes() == w.tobytes()
        return type(v) is type(w) and (v == w or (v != v and w != w))
    res["unchanged"] = bool(all(np.array_equal(p, q) for p, q in zip(opt.params, before[0]))
                            and same(before[1], opt.state))
    out[case] = res
print(json.dumps(out))
"""

A = ("Adam", dict(lr=0.05))
AD = ("Adam", dict(lr=0.05, lazy="decay", weight_decay=0.1, amsgrad=True))
RD = ("RMSprop", dict(lr=0.01, lazy="decay", weight_decay=0.1, momentum=0.5, centered=True))
AG = ("Adagrad", dict(lr=0.1, rowwise=True))
# case: (optimizer, kwargs, parameter, edit of `st`, call, message pattern)
REPLACED = {
    "exp_avg-fewer-rows": (*A, "bias", "st['exp_avg'] = np.zeros(5)", "step",
                           r"state 'exp_avg' of parameter 'bias' is shape \(5,\)"),
    "exp_avg_sq-other-width": (*A, "emb", "st['exp_avg_sq'] = np.zeros((20, 2), np.float32)",
                               "step", r"'exp_avg_sq' of parameter 'emb' is shape \(20, 2\)"),
    "exp_avg-other-dtype": (*A, "emb", "st['exp_avg'] = np.zeros((20, 4))", "step",
                            r"'exp_avg' of parameter 'emb' is shape \(20, 4\) and dtype float64"),
    "exp_avg-list": (*A, "bias", "st['exp_avg'] = [0.0] * 20", "step",
                     r"'exp_avg' of parameter 'bias' is a list"),
    "exp_avg-fortran": (*A, "emb",
                        "st['exp_avg'] = np.asfortranarray(np.zeros((20, 4), np.float32))",
                        "step", r"'exp_avg' of parameter 'emb' must be C-contiguous within each"),
    "exp_avg_sq-strided-1d": (*A, "bias", "st['exp_avg_sq'] = np.zeros(40)[::2]", "step",
                              r"'exp_avg_sq' of parameter 'bias' must be C-contiguous"),
    "exp_avg_sq-read-only": (*A, "emb", "st['exp_avg_sq'].flags.writeable = False", "step",
                             r"'exp_avg_sq' of parameter 'emb' is read-only"),
    "row_step-int32": (*A, "emb", "st['row_step'] = st['row_step'].astype(np.int32)", "step",
                       r"'row_step' of parameter 'emb' .* dtype int32"),
    "row_step-short": (*A, "bias", "st['row_step'] = np.zeros(3, np.int64)", "step",
                       r"'row_step' of parameter 'bias' is shape \(3,\)"),
    "step-negative": (*A, "emb", "opt.state['emb']['step'] = -1", "step",
                      r"parameter 'emb': the step counter must be in"),
    "step-string": (*A, "bias", "opt.state['bias']['step'] = '4'", "step",
                    r"parameter 'bias': the step counter must be an int"),
    "step-deleted": (*A, "bias", "del opt.state['bias']['step']", "step",
                     r"parameter 'bias': the step counter must be an int, got None"),
    "state-entry-removed": (*A, "bias", "del opt.state['bias']", "step",
                            r"opt.state has no entry for parameter 'bias'"),
    "state-entry-list": (*A, "bias", "opt.state['bias'] = []", "step",
                         r"opt.state\['bias'\] must be a dict"),
    "max_exp_avg_sq-short": (*AD, "emb", "st['max_exp_avg_sq'] = np.zeros((3, 4), np.float32)",
                             "step", r"'max_exp_avg_sq' of parameter 'emb' is shape \(3, 4\)"),
    "first_step-short": (*AD, "emb", "st['first_step'] = np.zeros(2, np.int64)", "step",
                         r"'first_step' of parameter 'emb' is shape \(2,\)"),
    "last_step-float": (*AD, "bias", "st['last_step'] = np.zeros(20)", "flush",
                        r"'last_step' of parameter 'bias' .* dtype float64"),
    "row_wd_log-short": (*AD, "bias", "st['row_wd_log'] = np.zeros(4)", "step",
                         r"'row_wd_log' of parameter 'bias' is shape \(4,\)"),
    "row_wd_log-short-flush": (*AD, "emb", "st['row_wd_log'] = np.zeros(4)", "flush",
                               r"'row_wd_log' of parameter 'emb' is shape \(4,\)"),
    "row_wd_log-float32": (*AD, "emb", "st['row_wd_log'] = np.zeros(20, np.float32)", "step",
                           r"'row_wd_log' of parameter 'emb' .* dtype float32"),
    "wd_log_sum-string": (*AD, "emb", "opt.state['emb']['wd_log_sum'] = 'x'", "step",
                          r"'wd_log_sum' of parameter 'emb' must be a finite number"),
    "wd_log_sum-nan": (*RD, "bias", "opt.state['bias']['wd_log_sum'] = float('nan')", "flush",
                       r"'wd_log_sum' of parameter 'bias' must be a finite number"),
    "square_avg-short": (*RD, "emb", "st['square_avg'] = np.zeros((2, 4), np.float32)", "flush",
                         r"'square_avg' of parameter 'emb' is shape \(2, 4\)"),
    "grad_avg-other-dtype": (*RD, "bias", "st['grad_avg'] = np.zeros(20, np.float32)", "step",
                             r"'grad_avg' of parameter 'bias' .* dtype float32"),
    "momentum_buffer-short": (*RD, "bias", "st['momentum_buffer'] = np.zeros(1)", "flush",
                              r"'momentum_buffer' of parameter 'bias' is shape \(1,\)"),
    "sum-rowwise-2d": (*AG, "emb", "st['sum'] = np.zeros((20, 4), np.float32)", "step",
                       r"'sum' of parameter 'emb' is shape \(20, 4\)"),
    "sum-short": (*AG, "bias", "st['sum'] = np.zeros(3)", "step",
                  r"'sum' of parameter 'bias' is shape \(3,\)"),
}


@pytest.fixture(scope="module")
def replaced_results():
    """All cases in one child process (a replaced array that reached a kernel could corrupt
    the heap)."""
    cases = {k: v[:5] for k, v in REPLACED.items()}
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _REPLACE_PROBE.format(cases=repr(cases))],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, f"child exit code {proc.returncode}: {proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


@pytest.mark.parametrize("case", list(REPLACED))
def test_state_replaced_between_steps_raises_before_anything_changes(case, replaced_results):
    """A state array replaced (or a counter object edited) between steps is refused by the
    O(1) checks of phase 1 with a ValueError naming it; parameters, state and every step
    counter are as before the call."""
    res = replaced_results[case]
    assert res["exc"] == "ValueError", res
    assert re.search(REPLACED[case][5], res["msg"]), res["msg"]
    assert res["unchanged"], res


def test_row_contiguous_views_are_accepted_as_moments():
    """Adam's moments may be any arrays whose rows are contiguous (its own are views of one
    interleaved buffer): a view of a wider array works and gives the same bits."""
    a, b = _trained("Adam"), _trained("Adam")
    st = a.state["emb"]
    wide = np.zeros((N, 12), np.float32)
    wide[:, 2:6] = st["exp_avg"]
    wide[:, 7:11] = st["exp_avg_sq"]
    st["exp_avg"], st["exp_avg_sq"] = wide[:, 2:6], wide[:, 7:11]
    for t in range(4, 8):
        a.step(_grads(t))
        b.step(_grads(t))
    np.testing.assert_array_equal(a.params[0], b.params[0])
    np.testing.assert_array_equal(wide[:, 2:6], b.state["emb"]["exp_avg"])

