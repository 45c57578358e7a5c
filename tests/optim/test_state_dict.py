"""state_dict / load_state_dict, pickling and learning-rate changes.

An interrupted run, saved and loaded into a new optimizer over a copy of the parameters, must
continue *bitwise* like the run that was never interrupted, for every optimizer and lazy mode.
Saving goes through pickle, through ``np.savez`` (plain arrays only: loaded with
``allow_pickle=False``), or pickles the whole optimizer.
"""
import copy
import io
import pickle
import re

import numpy as np
import pytest
import scipy.sparse as sp

import sparseopt as so
from sparseopt import _reference as ref

N = 30
N_STEPS = 14
CUT = 7  # the run is interrupted after this many steps

CONFIGS = {
    "Adam": (so.Adam, {}),
    "Adam-frozen-global-amsgrad": (so.Adam, dict(bias_correction="global", amsgrad=True)),
    "Adam-frozen-wd": (so.Adam, dict(weight_decay=0.05)),
    "Adam-decay-row-wd": (so.Adam, dict(lazy="decay", weight_decay=0.05)),
    "Adam-decay-global-wd-amsgrad": (so.Adam, dict(lazy="decay", bias_correction="global",
                                                   weight_decay=0.05, amsgrad=True)),
    "Adam-torch": (so.Adam, dict(preset="torch")),
    "Adam-rowwise-decay-wd-amsgrad": (so.Adam, dict(rowwise="v", lazy="decay", weight_decay=0.05,
                                                    amsgrad=True)),
    "Adagrad": (so.Adagrad, dict(lr_decay=0.02, initial_accumulator_value=0.1)),
    "Adagrad-rowwise-wd": (so.Adagrad, dict(rowwise=True, weight_decay=0.05)),
    "Adagrad-tensorflow": (so.Adagrad, dict(preset="tensorflow")),
    "RMSprop-frozen-centered-momentum": (so.RMSprop, dict(centered=True, momentum=0.9)),
    "RMSprop-decay": (so.RMSprop, dict(lazy="decay")),
    "RMSprop-decay-wd-centered-momentum": (so.RMSprop, dict(lazy="decay", weight_decay=0.05,
                                                            centered=True, momentum=0.8)),
    "RMSprop-tensorflow-decay": (so.RMSprop, dict(preset="tensorflow", lazy="decay")),
    "RMSprop-rowwise-decay-wd-centered-momentum": (so.RMSprop, dict(
        rowwise=True, lazy="decay", weight_decay=0.05, centered=True, momentum=0.8)),
}
CONFIG_IDS = list(CONFIGS)
REF_CLASS = {so.Adam: ref.Adam, so.Adagrad: ref.Adagrad, so.RMSprop: ref.RMSprop}


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"emb": rng.normal(size=(N, 5)).astype(np.float32),
            "bias": rng.normal(size=N),
            "w": rng.normal(size=(6, 3)).astype(np.float32)}


def _grads(step):
    """Gradients of one step: rows first touched late, duplicates, an empty RowGrad, steps that
    skip a parameter (None), a sparse and a dense parameter."""
    rng = np.random.default_rng(1000 + step)
    if step == 4:
        emb = so.RowGrad(np.empty(0, np.int64), np.empty((0, 5), np.float32))
    elif step % 5 == 3:
        emb = None
    else:
        hi = min(N, 6 + 2 * step)
        idx = rng.integers(0, hi, size=8)
        idx[-1] = idx[0]
        emb = so.RowGrad(idx, rng.normal(size=(8, 5)).astype(np.float32))
    bias = sp.random(N, 1, density=0.2, format="csr", random_state=step) * 3.0
    w = rng.normal(size=(6, 3)).astype(np.float32) if step % 2 == 0 else None
    return {"emb": emb, "bias": bias, "w": w}


def _lr_at(step, base):
    """A schedule that changes lr on some steps only (set by ``opt.lr = ...``)."""
    return {2: base * 0.5, 5: base * 2.0, 9: base * 0.25, 11: 0.0}.get(step)


def _run(opt, steps, base_lr, form="dict", flush_after=()):
    for s in steps:
        lr = _lr_at(s, base_lr)
        if lr is not None:
            opt.lr = lr
        g = _grads(s)
        opt.step(g if form == "dict" else list(g.values()))
        if s in flush_after:
            opt.flush()


def _make(config, params, form="dict", **override):
    cls, kw = CONFIGS[config]
    kw = dict(kw, lr=0.05)
    kw.update(override)
    return cls(params if form == "dict" else list(params.values()), **kw)


def _same_bytes(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return type(a) is type(b) and a == b


def assert_identical(opt, other):
    """Parameters, exported state and hyper-parameters bitwise equal."""
    for key, p, q in zip(opt._keys, opt.params, other.params):
        assert _same_bytes(p, q), f"parameter {key!r} differs"
    sa, sb = opt.state_dict(), other.state_dict()
    assert sa["optimizer"] == sb["optimizer"]
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for key in sa["state"]:
        assert sa["state"][key].keys() == sb["state"][key].keys(), key
        for name in sa["state"][key]:
            assert _same_bytes(sa["state"][key][name], sb["state"][key][name]), (key, name)


# --------------------------------------------------------------------------- np.savez


def flatten(sd):
    """A state_dict as a flat name -> array mapping for ``np.savez``."""
    out = {"optimizer": np.asarray(sd["optimizer"])}
    (group,) = sd["param_groups"]
    for k, v in group.items():
        out[f"param_groups/{k}"] = np.asarray(v)
    out["param_groups/params"] = np.asarray(group["params"])
    for key, st in sd["state"].items():
        for name, val in st.items():
            out[f"state/{key}/{name}"] = np.asarray(val)
    return out


def unflatten(flat):
    """Inverse of ``flatten``: Python scalars back from 0-d arrays, tuples for pairs."""
    params = flat["param_groups/params"].tolist()
    by_str = {str(k): k for k in params}
    group, state = {}, {}
    for name in flat.files if hasattr(flat, "files") else flat:
        val = flat[name]
        parts = name.split("/")
        if parts[0] == "param_groups":
            group[parts[1]] = (val.item() if val.ndim == 0 else
                               val.tolist() if parts[1] == "params" else tuple(val.tolist()))
        elif parts[0] == "state":
            st = state.setdefault(by_str[parts[1]], {})
            st[parts[2]] = val.item() if parts[2] == "step" else val
    return {"optimizer": flat["optimizer"].item(), "state": state, "param_groups": [group]}


def _save_load_savez(sd):
    buf = io.BytesIO()
    np.savez(buf, **flatten(sd))
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        return unflatten(f)


def _save_load_pickle(sd):
    return pickle.loads(pickle.dumps(sd))


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("how", ["pickle", "savez", "savez-list-params", "flush-then-savez",
                                 "pickle-optimizer"])
@pytest.mark.parametrize("config", CONFIG_IDS)
def test_interrupted_run_resumes_bitwise(config, how):
    form = "list" if how.endswith("list-params") else "dict"
    flush_after = (CUT - 1,) if how.startswith("flush") else ()
    # the uninterrupted run
    full = _make(config, _params(), form)
    _run(full, range(N_STEPS), 0.05, form, flush_after)
    full.flush()
    # the interrupted one
    first = _make(config, _params(), form)
    _run(first, range(CUT), 0.05, form, flush_after)
    if how == "pickle-optimizer":
        second = pickle.loads(pickle.dumps(first))
        assert all(p is not q for p, q in zip(second.params, first.params))
    else:
        saved = (_save_load_savez if "savez" in how else _save_load_pickle)(first.state_dict())
        copies = {k: p.copy() for k, p in zip(_params().keys(), first.params)}
        # a different lr on construction: the state_dict's lr must win
        second = _make(config, copies, form, lr=0.01)
        second.load_state_dict(saved)
        assert second.lr == first.lr
    del first
    _run(second, range(CUT, N_STEPS), 0.05, form)
    second.flush()
    assert_identical(second, full)


@pytest.mark.parametrize("config", CONFIG_IDS)
def test_state_dict_is_plain_and_loading_copies(config):
    opt = _make(config, _params())
    _run(opt, range(5), 0.05)
    sd = opt.state_dict()
    assert sd["optimizer"] == type(opt).__name__
    for st in sd["state"].values():
        for name, val in st.items():
            # the step is an int, the running weight-decay sum (lazy="decay") a float
            assert isinstance(val, (int, float, np.ndarray)), (name, type(val))
            if name == "wd_log_sum":
                assert type(val) is float
    for v in sd["param_groups"][0].values():
        assert isinstance(v, (int, float, str, bool, tuple, list)), v
    other = _make(config, {k: p.copy() for k, p in zip(_params(), opt.params)})
    other.load_state_dict(sd)
    arrays = [v for st in sd["state"].values() for v in st.values()
              if isinstance(v, np.ndarray)]
    for a in arrays:
        a[...] = 0  # scribbling over the state_dict must not reach the loaded optimizer
    _run(other, range(5, 9), 0.05)
    reference = _make(config, _params())
    _run(reference, range(9), 0.05)
    assert_identical(other, reference)


@pytest.mark.parametrize("config", ["Adam-decay-row-wd", "RMSprop-decay-wd-centered-momentum"])
def test_state_dict_before_any_step_and_of_skipped_parameter(config):
    """An optimizer that has not stepped (or a parameter never given a gradient) has no state;
    its state_dict round-trips and the resumed run is identical."""
    a = _make(config, _params())
    sd = _save_load_savez(a.state_dict())
    assert sd["state"] == {}
    b = _make(config, _params())
    b.load_state_dict(sd)
    a.step({"emb": _grads(0)["emb"]})
    sd = _save_load_savez(a.state_dict())
    assert list(sd["state"]) == ["emb"]
    b.step({"emb": _grads(0)["emb"]})
    c = _make(config, {k: p.copy() for k, p in zip(_params(), a.params)})
    c.load_state_dict(sd)
    for s in range(1, 6):
        a.step(_grads(s))
        c.step(_grads(s))
    assert_identical(a, c)


# --------------------------------------------------------------------------- load errors


def _trained(config="Adam-decay-row-wd", form="dict"):
    opt = _make(config, _params(), form)
    _run(opt, range(6), 0.05, form)
    return opt


def _snapshot(opt):
    return dict(params=[p.copy() for p in opt.params], state=copy.deepcopy(opt.state),
                groups=copy.deepcopy(opt.param_groups))


def _assert_unchanged(opt, snap):
    for p, q in zip(opt.params, snap["params"]):
        assert _same_bytes(p, q)
    assert opt.state.keys() == snap["state"].keys()
    for key in opt.state:
        assert opt.state[key].keys() == snap["state"][key].keys()
        for name in opt.state[key]:
            assert _same_bytes(opt.state[key][name], snap["state"][key][name]), (key, name)
    assert opt.param_groups == snap["groups"]


def _edit(sd, fn):
    sd = pickle.loads(pickle.dumps(sd))
    fn(sd)
    return sd


def _set(path, value):
    def fn(sd):
        d = sd
        for p in path[:-1]:
            d = d[p]
        d[path[-1]] = value
    return fn


def _delete(path):
    def fn(sd):
        d = sd
        for p in path[:-1]:
            d = d[p]
        del d[path[-1]]
    return fn


def _legacy(sd, key, wd_log):
    """``sd`` with parameter ``key``'s weight-decay state in the per-step ``wd_log`` form."""
    st = sd["state"][key]
    del st["wd_log_sum"], st["row_wd_log"]
    st["wd_log"] = wd_log


LOAD_ERRORS = {
    "state-shape": (_set(("state", "emb", "exp_avg"), np.zeros((N - 1, 5), np.float32)),
                    ValueError, [r"'exp_avg'", r"parameter 'emb'", re.escape(f"({N - 1}, 5)"),
                                 re.escape(f"({N}, 5)")]),
    "state-dtype": (_set(("state", "emb", "exp_avg_sq"), np.zeros((N, 5))), ValueError,
                    [r"'exp_avg_sq'", r"float64", r"float32"]),
    "state-1d-shape": (_set(("state", "bias", "exp_avg"), np.zeros((N, 1))), ValueError,
                       [r"'exp_avg'", re.escape(f"({N}, 1)"), re.escape(f"({N},)")]),
    "counter-dtype": (_set(("state", "emb", "last_step"), np.zeros(N, np.int32)), ValueError,
                      [r"'last_step'", r"int32", r"int64"]),
    "counter-shape": (_set(("state", "emb", "first_step"), np.zeros(N + 1, np.int64)),
                      ValueError, [r"'first_step'", re.escape(f"({N + 1},)")]),
    "row-wd-log-shape": (_set(("state", "emb", "row_wd_log"), np.zeros(N - 1)), ValueError,
                         [r"'row_wd_log'", re.escape(f"({N - 1},)"), re.escape(f"({N},)")]),
    "row-wd-log-dtype": (_set(("state", "emb", "row_wd_log"), np.zeros(N, np.float32)),
                         ValueError, [r"'row_wd_log'", r"float32", r"float64"]),
    "wd-log-sum-positive": (_set(("state", "emb", "wd_log_sum"), 0.5), ValueError,
                            [r"'wd_log_sum'", r"parameter 'emb'", r"<= 0"]),
    "wd-log-sum-nan": (_set(("state", "emb", "wd_log_sum"), float("nan")), ValueError,
                       [r"'wd_log_sum'", r"finite"]),
    "wd-log-sum-type": (_set(("state", "emb", "wd_log_sum"), "0"), ValueError,
                        [r"'wd_log_sum'"]),
    "legacy-wd-log-shape": (lambda sd: _legacy(sd, "emb", np.zeros(3)), ValueError,
                            [r"'wd_log'", r"\(3,\)"]),
    "legacy-wd-log-positive": (lambda sd: _legacy(sd, "emb",
                                                  np.full(sd["state"]["emb"]["step"] + 1, 0.25)),
                               ValueError,
                               [r"'wd_log'", r"parameter 'emb'", r"<= 0"]),
    "legacy-and-new-wd-state": (_set(("state", "emb", "wd_log"), np.zeros(7)), KeyError,
                                [r"unknown state 'wd_log'"]),
    "unknown-state-name": (_set(("state", "emb", "momentum_buffer"), np.zeros((N, 5),
                                                                             np.float32)),
                           KeyError, [r"unknown state 'momentum_buffer'", r"parameter 'emb'"]),
    "unknown-parameter": (_set(("state", "embedding"), {"step": 1}), KeyError,
                          [r"unknown parameter 'embedding'"]),
    "missing-step": (_delete(("state", "bias", "step")), KeyError, [r"no 'step'"]),
    "negative-step": (_set(("state", "bias", "step"), -1), ValueError, [r"invalid step"]),
    "other-class": (_set(("optimizer",), "Adagrad"), ValueError, [r"Adagrad", r"not Adam"]),
    "other-params": (_set(("param_groups", 0, "params"), ["emb", "bias"]), ValueError,
                     [r"parameters"]),
    "unknown-hyper": (_set(("param_groups", 0, "nesterov"), True), KeyError, [r"nesterov"]),
    "bad-hyper": (_set(("param_groups", 0, "lr"), -1.0), ValueError, [r"lr must be in"]),
    "other-lazy": (_set(("param_groups", 0, "lazy"), "frozen"), ValueError,
                   [r"lazy cannot change after construction"]),
    "other-bias-correction": (_set(("param_groups", 0, "bias_correction"), "global"),
                              ValueError, [r"bias_correction cannot change"]),
    "not-a-state-dict": (lambda sd: sd.clear(), ValueError, [r"made by state_dict"]),
}


@pytest.mark.parametrize("case", list(LOAD_ERRORS))
def test_load_state_dict_rejects_and_changes_nothing(case):
    fn, exc, patterns = LOAD_ERRORS[case]
    opt = _trained()
    bad = _edit(opt.state_dict(), fn)
    snap = _snapshot(opt)
    with pytest.raises(exc) as info:
        opt.load_state_dict(bad)
    for pat in patterns:
        assert re.search(pat, str(info.value)), (pat, str(info.value))
    _assert_unchanged(opt, snap)


def test_load_state_dict_from_each_other_class():
    params = _params()
    opts = {c: CONFIGS[c][0](params, lr=0.01) for c in ("Adam", "Adagrad", "RMSprop-decay")}
    for c in ("Adam", "Adagrad", "RMSprop-decay"):
        opts[c].step(_grads(0))
    for src, a in opts.items():
        for dst, b in opts.items():
            if type(a) is type(b):
                continue
            with pytest.raises(ValueError, match=f"from a {type(a).__name__} optimizer, "
                                                 f"not {type(b).__name__}"):
                b.load_state_dict(a.state_dict())


def test_load_state_dict_rowwise_cannot_change():
    a = _make("Adagrad-rowwise-wd", _params())
    _run(a, range(3), 0.05)
    b = _make("Adagrad", _params())
    with pytest.raises(ValueError, match="rowwise cannot change"):
        b.load_state_dict(a.state_dict())


def test_load_state_dict_list_keys():
    opt = _trained(form="list")
    sd = opt.state_dict()
    assert set(sd["state"]) == {0, 1, 2}
    bad = _edit(sd, _set(("state", 5), {"step": 1}))
    with pytest.raises(KeyError, match="unknown parameter 5"):
        opt.load_state_dict(bad)
    bad = _edit(sd, _set(("state", "emb"), sd["state"][0]))
    with pytest.raises(KeyError, match="unknown parameter 'emb'"):
        opt.load_state_dict(bad)


def test_load_state_dict_is_atomic_when_a_later_parameter_is_bad():
    opt = _trained()
    sd = opt.state_dict()
    good = _edit(sd, lambda s: None)
    other = _make("Adam-decay-row-wd", {k: p.copy() for k, p in zip(_params(), opt.params)})
    _run(other, range(2), 0.05)
    snap = _snapshot(other)
    # the first parameter's state is fine, the last one's is not
    bad = _edit(good, _set(("state", "w", "exp_avg"), np.zeros((6, 4), np.float32)))
    with pytest.raises(ValueError, match="'exp_avg' of parameter 'w'"):
        other.load_state_dict(bad)
    _assert_unchanged(other, snap)


@pytest.mark.parametrize("config,name", [
    ("RMSprop-frozen-centered-momentum", "last_step"), ("Adam", "wd_log"),
    ("Adagrad", "first_step"), ("Adam-frozen-global-amsgrad", "row_step"),
])
def test_load_state_dict_rejects_counters_the_mode_does_not_keep(config, name):
    """State names the configuration does not keep (counters of another mode) are an "unknown
    state". Today any counter name is accepted for any optimizer, and ``flush()`` of a frozen
    Adam/RMSprop that loaded ``last_step`` then fails with KeyError 'wd_log'."""
    opt = _make(config, _params())
    _run(opt, range(3), 0.05)
    sd = opt.state_dict()
    step = sd["state"]["emb"]["step"]
    extra = np.zeros(step + 1) if name == "wd_log" else np.zeros(N, np.int64)
    bad = _edit(sd, _set(("state", "emb", name), extra))
    with pytest.raises(KeyError, match=f"unknown state '{name}'"):
        opt.load_state_dict(bad)
    opt.flush()


@pytest.mark.parametrize("config,name,value", [
    ("RMSprop-decay", "last_step", "step+1"), ("Adam-decay-row-wd", "last_step", -1),
    ("Adam-decay-row-wd", "first_step", "step+1"), ("Adam", "row_step", "huge"),
])
def test_load_state_dict_rejects_counters_out_of_range(config, name, value):
    """Row counters index float64 power tables inside nogil kernels (no bounds checks): a
    counter outside [0, step] must be refused on load, not read out of bounds later."""
    opt = _make(config, _params())
    _run(opt, range(3), 0.05)
    sd = opt.state_dict()
    step = sd["state"]["emb"]["step"]
    bad_value = {-1: -1, "step+1": step + 1, "huge": 10**9}[value]
    counters = sd["state"]["emb"][name].copy()
    counters[1] = bad_value
    bad = _edit(sd, _set(("state", "emb", name), counters))
    with pytest.raises(ValueError, match=name):
        opt.load_state_dict(bad)


# --------------------------------------------------------------------------- fixed settings


@pytest.mark.parametrize("config,key,value", [
    ("Adam", "lazy", "decay"), ("Adam-decay-row-wd", "lazy", "frozen"),
    ("Adam", "bias_correction", "global"), ("RMSprop-decay", "lazy", "frozen"),
    ("RMSprop-frozen-centered-momentum", "lazy", "decay"), ("Adagrad", "rowwise", True),
])
def test_changing_fixed_settings_after_construction_raises(config, key, value):
    opt = _make(config, _params())
    _run(opt, range(3), 0.05)
    opt.param_groups[0][key] = value
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=f"{key} cannot change after construction"):
        opt.step(_grads(3))
    _assert_unchanged(opt, snap)
    if "lazy" in CONFIGS[config][1] or key == "lazy":
        with pytest.raises(ValueError, match=f"{key} cannot change after construction"):
            opt.flush()
    _assert_unchanged(opt, snap)


# --------------------------------------------------------------------------- learning rate

REF_TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}


@pytest.mark.parametrize("config", CONFIG_IDS)
def test_lr_changes_between_steps_follow_the_reference(config):
    cls, kw = CONFIGS[config]
    mine = _make(config, _params())
    oracle = REF_CLASS[cls](_params(), **dict(kw, lr=0.05))
    for s in range(N_STEPS):
        lr = _lr_at(s, 0.05)
        if lr is not None:
            mine.lr = lr
            oracle.lr = lr
        mine.step(_grads(s))
        oracle.step(_grads(s))
    if mine.param_groups[0].get("lazy") == "decay":
        mine.flush()
        oracle.flush()  # (in frozen mode see test_reference_flush_is_a_no_op_in_frozen_mode)
    for key, p in zip(mine._keys, mine.params):
        np.testing.assert_allclose(p, oracle.params[key], **REF_TOL[p.dtype.type],
                                   err_msg=key)


@pytest.mark.parametrize("config", ["Adam", "Adam-decay-row-wd", "Adagrad-rowwise-wd",
                                    "RMSprop-decay-wd-centered-momentum"])
def test_lr_setter_and_param_groups_are_the_same_knob(config):
    a = _make(config, _params())
    b = _make(config, _params())
    for s in range(8):
        lr = 0.05 * (0.7 ** s)
        a.lr = lr
        b.param_groups[0]["lr"] = lr
        a.step(_grads(s))
        b.step(_grads(s))
        assert a.lr == b.lr == lr
    assert_identical(a, b)


@pytest.mark.parametrize("config", CONFIG_IDS)
def test_lr_zero_moves_nothing_and_lr_takes_effect(config):
    """lr = 0 leaves every parameter where it is (state still advances); raising lr again makes
    the next step move (so the assignment is read at each step, not cached)."""
    opt = _make(config, _params())
    _run(opt, range(3), 0.05)
    opt.flush()  # lazy="decay" rows would otherwise catch up earlier steps' weight decay
    opt.lr = 0.0
    before = [p.copy() for p in opt.params]
    opt.step(_grads(3))
    opt.step(_grads(4))
    for p, q in zip(opt.params, before):
        np.testing.assert_array_equal(p, q)
    opt.lr = 0.05
    opt.step(_grads(5))
    assert not np.array_equal(opt.params[0], before[0])


@pytest.mark.parametrize("cls", [so.Adam, so.RMSprop], ids=lambda c: c.__name__)
def test_reference_flush_is_a_no_op_in_frozen_mode(cls):
    """``flush()`` in ``lazy="frozen"`` mode changes nothing (the optimizers' docstring). The
    NumPy oracle must agree, or it cannot be used to check a frozen run that calls flush()."""
    a = np.ones((3, 2))
    b = a.copy()
    opt = cls([a], lr=0.1, weight_decay=0.5)
    oracle = REF_CLASS[cls]([b], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        g = so.RowGrad([0], np.ones((1, 2)))
        opt.step([g])
        oracle.step([g])
    opt.flush()
    oracle.flush()
    np.testing.assert_array_equal(a[1:], 1.0)  # untouched rows: never decayed in frozen mode
    np.testing.assert_array_equal(b[1:], 1.0)
    np.testing.assert_allclose(b, a, rtol=1e-12)


# --------------------------------------------------------------------------- resumption via files


def _save(sd, how, directory):
    """Write a state_dict to ``directory`` and read it back (plain arrays only)."""
    flat = flatten(sd)
    if how in ("savez", "savez_compressed"):
        path = directory / "state.npz"
        getattr(np, how)(path, **flat)
        with np.load(path, allow_pickle=False) as f:
            return unflatten({k: f[k] for k in f.files})
    # one .npy per array, reopened as read-only memory maps
    names = sorted(flat)
    for i, name in enumerate(names):
        np.save(directory / f"{i}.npy", flat[name], allow_pickle=False)
    loaded = {}
    for i, name in enumerate(names):
        arr = np.load(directory / f"{i}.npy", mmap_mode="r", allow_pickle=False)
        if arr.ndim and arr.size:
            assert isinstance(arr, np.memmap) and not arr.flags.writeable
        loaded[name] = arr
    return unflatten(loaded)


@pytest.mark.parametrize("how", ["savez", "savez_compressed", "npy-mmap"])
@pytest.mark.parametrize("config", CONFIG_IDS)
def test_resume_from_files_is_bitwise(config, how, tmp_path):
    """Interrupted at step CUT, state saved to disk; with "npy-mmap" the parameters are saved
    too and training resumes on them as writable memory maps."""
    full = _make(config, _params())
    _run(full, range(N_STEPS), 0.05)
    full.flush()
    first = _make(config, _params())
    _run(first, range(CUT), 0.05)
    saved = _save(first.state_dict(), how, tmp_path)
    if how == "npy-mmap":
        params = {}
        for key, p in zip(first._keys, first.params):
            np.save(tmp_path / f"param-{key}.npy", p)
            params[key] = np.load(tmp_path / f"param-{key}.npy", mmap_mode="r+")
    else:
        params = {k: p.copy() for k, p in zip(first._keys, first.params)}
    del first
    second = _make(config, params, lr=0.01)
    second.load_state_dict(saved)
    _run(second, range(CUT, N_STEPS), 0.05)
    second.flush()
    assert_identical(second, full)
    if how == "npy-mmap":
        for key, p in zip(second._keys, second.params):
            assert isinstance(p, np.memmap)
            p.flush()
            np.testing.assert_array_equal(np.load(tmp_path / f"param-{key}.npy"), p)


@pytest.mark.parametrize("config", ["Adam-decay-row-wd", "Adagrad-rowwise-wd",
                                    "RMSprop-decay-wd-centered-momentum"])
def test_deepcopy_of_an_optimizer_resumes_bitwise(config):
    full = _make(config, _params())
    _run(full, range(N_STEPS), 0.05)
    full.flush()
    first = _make(config, _params())
    _run(first, range(CUT), 0.05)
    second = copy.deepcopy(first)
    assert all(p is not q and not np.may_share_memory(p, q)
               for p, q in zip(first.params, second.params))
    _run(second, range(CUT, N_STEPS), 0.05)
    second.flush()
    assert_identical(second, full)
    # the original was not touched by the copy's steps, and still resumes identically
    _run(first, range(CUT, N_STEPS), 0.05)
    first.flush()
    assert_identical(first, full)


def test_load_state_dict_accepts_non_contiguous_state_arrays():
    """State arrays from other tools may be Fortran-ordered or strided views; they are copied
    into C order on load."""
    config = "Adam-decay-row-wd"
    full = _make(config, _params())
    _run(full, range(N_STEPS), 0.05)
    first = _make(config, _params())
    _run(first, range(CUT), 0.05)
    sd = first.state_dict()
    odd = {"optimizer": sd["optimizer"], "param_groups": sd["param_groups"], "state": {}}
    for key, st in sd["state"].items():
        odd["state"][key] = {}
        for name, val in st.items():
            if isinstance(val, np.ndarray) and val.ndim == 2:
                val = np.asfortranarray(val)
            elif isinstance(val, np.ndarray) and val.ndim == 1:
                val = np.repeat(val, 2)[::2]
            odd["state"][key][name] = val
    second = _make(config, {k: p.copy() for k, p in zip(first._keys, first.params)})
    second.load_state_dict(odd)
    _run(second, range(CUT, N_STEPS), 0.05)
    assert_identical(second, full)
