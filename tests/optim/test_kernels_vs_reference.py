"""Kernels against the plain-NumPy oracle ``sparseopt._reference``.

Every optimizer and a grid of configurations runs a multi-step trajectory (random batches with
duplicate indices, empty batches, first and last rows, rows first touched late, a change of
``lr`` half-way) on the Cython side and on the reference side by side; params and every state
array both keep are compared after each step (counters exactly). Further tests cover each
gradient form (``RowGrad`` with int32/int64/list indices, every ``scipy.sparse`` format and
sparse-array class, dense arrays, ``None``, dict params), ``duplicates="mean"``, and the bitwise
guarantees: untouched rows unchanged in ``"frozen"`` mode, any thread count giving the same bits,
int32 and int64 indices giving the same bits.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparseopt as so
from sparseopt import _reference as ref

from conftest import (OPTIMIZERS, REFERENCES, WIDTHS, assert_bitwise_equal, assert_close,
                      assert_state_matches, snapshot)

# --------------------------------------------------------------------------- configurations

# (optimizer, id, constructor kwargs, lr schedule). A schedule of None means: the lr is
# multiplied by 0.3 once, half-way through the trajectory; "every" changes it at every step.
CONFIGS = [
    ("Adam", "default", dict(lr=0.05), None),
    ("Adam", "amsgrad", dict(lr=0.05, amsgrad=True), None),
    ("Adam", "weight_decay", dict(lr=0.05, weight_decay=0.5), None),
    ("Adam", "decay", dict(lr=0.05, lazy="decay"), None),
    ("Adam", "decay_global", dict(lr=0.05, lazy="decay", bias_correction="global"), None),
    ("Adam", "decay_amsgrad", dict(lr=0.05, lazy="decay", amsgrad=True), None),
    ("Adam", "global", dict(lr=0.05, bias_correction="global"), None),
    ("Adam", "torch", dict(lr=0.05, preset="torch"), None),
    ("Adam", "tensorflow", dict(lr=0.05, preset="tensorflow"), None),
    ("Adam", "decay_wd_schedule", dict(lr=0.05, lazy="decay", weight_decay=0.5), "every"),
    # row-wise second moments: one v (Adam) / square average (RMSprop) per row
    ("Adam", "rowwise", dict(lr=0.05, rowwise="v"), None),
    ("Adam", "rowwise_amsgrad", dict(lr=0.05, rowwise="v", amsgrad=True), None),
    ("Adam", "rowwise_decay_wd", dict(lr=0.05, rowwise="v", lazy="decay", weight_decay=0.5),
     "every"),
    ("Adam", "rowwise_decay_global_amsgrad",
     dict(lr=0.05, rowwise="v", lazy="decay", bias_correction="global", amsgrad=True), None),
    ("Adam", "rowwise_torch", dict(lr=0.05, rowwise="v", preset="torch"), None),
    ("Adagrad", "default", dict(lr=0.1), None),
    ("Adagrad", "rowwise", dict(lr=0.1, rowwise=True), None),
    ("Adagrad", "lr_decay", dict(lr=0.1, lr_decay=0.1), None),
    ("Adagrad", "weight_decay", dict(lr=0.1, weight_decay=0.5), None),
    ("Adagrad", "rowwise_wd", dict(lr=0.1, rowwise=True, weight_decay=0.5), "every"),
    # lr_t = lr / (1 + (t-1) lr_decay) scales the weight decay as well: 1 - lr_t * weight_decay
    ("Adagrad", "lr_decay_wd", dict(lr=0.1, lr_decay=0.1, weight_decay=0.5), None),
    ("Adagrad", "tensorflow", dict(lr=0.1, preset="tensorflow"), None),
    ("Adagrad", "initial_acc", dict(lr=0.1, initial_accumulator_value=0.3, eps=1e-6), None),
    ("RMSprop", "default", dict(lr=0.01), None),
    ("RMSprop", "centered", dict(lr=0.01, centered=True), None),
    ("RMSprop", "momentum", dict(lr=0.01, momentum=0.9), None),
    ("RMSprop", "centered_momentum", dict(lr=0.01, centered=True, momentum=0.9), None),
    ("RMSprop", "decay", dict(lr=0.01, lazy="decay"), None),
    ("RMSprop", "decay_centered_momentum",
     dict(lr=0.01, lazy="decay", centered=True, momentum=0.8), None),
    ("RMSprop", "decay_wd_schedule", dict(lr=0.01, lazy="decay", weight_decay=0.5), "every"),
    ("RMSprop", "tensorflow", dict(lr=0.01, preset="tensorflow"), None),
    ("RMSprop", "tensorflow_centered", dict(lr=0.01, preset="tensorflow", centered=True), None),
    ("RMSprop", "rowwise", dict(lr=0.01, rowwise=True), None),
    ("RMSprop", "rowwise_centered_momentum",
     dict(lr=0.01, rowwise=True, centered=True, momentum=0.9), None),
    ("RMSprop", "rowwise_decay_centered_momentum_wd",
     dict(lr=0.01, rowwise=True, lazy="decay", centered=True, momentum=0.8, weight_decay=0.5),
     "every"),
    ("RMSprop", "rowwise_tensorflow_centered",
     dict(lr=0.01, rowwise=True, preset="tensorflow", centered=True), None),
    ("Ftrl", "default", dict(lr=0.1), None),
    ("Ftrl", "l1_l2", dict(lr=0.1, l1=0.05, l2=0.2, beta=0.5), None),
    ("Ftrl", "shrinkage", dict(lr=0.1, l1=0.02, l2_shrinkage=0.3), "every"),
    ("Ftrl", "lr_power", dict(lr=0.1, l1=0.02, lr_power=-0.3), None),
    ("Ftrl", "constant_rate", dict(lr=0.1, l1=0.02, lr_power=0.0), None),
    ("Ftrl", "vw", dict(lr=0.1, preset="vw", l1=0.05, l2=0.1), None),
    ("Ftrl", "vw_zero_start", dict(lr=0.1, preset="vw", beta=0.0), None),
]
CONFIG_IDS = [f"{o}-{c}" for o, c, _, _ in CONFIGS]
FROZEN_CONFIGS = [c for c in CONFIGS if c[2].get("lazy", "frozen") == "frozen"]
FROZEN_IDS = [f"{o}-{c}" for o, c, _, _ in FROZEN_CONFIGS]
DECAY_CONFIGS = [c for c in CONFIGS if c[2].get("lazy") == "decay"]


def build(opt_name, kwargs, params, **extra):
    """The kernel optimizer and the reference on independent copies of ``params``."""
    if isinstance(params, dict):
        p_opt = {k: v.copy() for k, v in params.items()}
        p_ref = {k: v.copy() for k, v in params.items()}
    else:
        p_opt = [v.copy() for v in params]
        p_ref = [v.copy() for v in params]
    opt = OPTIMIZERS[opt_name](p_opt, **kwargs, **extra)
    oracle = REFERENCES[opt_name](p_ref, **kwargs, **extra)
    return opt, oracle


def flush_both(opt, oracle):
    opt.flush()
    oracle.flush()


def lr_at(kwargs, schedule, t, n_steps):
    """The lr used at step t (1-based)."""
    lr = kwargs["lr"]
    if schedule == "every":
        return lr * (1.0 + 0.5 * np.sin(t))
    return lr if t <= n_steps // 2 else lr * 0.3


def compare(opt, oracle, dtype, where):
    """Params and every common state array of every parameter."""
    for key in opt._keys:
        p_opt = opt.params[opt._keys.index(key)]
        p_ref = oracle.params[key]
        assert_close(p_opt, p_ref, dtype, err_msg=f"{where}: param {key!r}")
        if oracle.state[key]:
            assert_state_matches(opt.state[key], oracle.state[key], dtype, where=f"{where} {key!r}")
        else:
            assert not opt.state[key]


# --------------------------------------------------------------------------- batches

N_ROWS = 40
N_STEPS = 24
EMPTY_STEPS = (4, 13)  # steps with k = 0
EDGE_STEPS = (2, 7, 16, 23)  # steps touching rows 0 and n - 1
LATE = range(20, 24)  # rows first touched at step LATE_START
LATE_START = 17


def batch_indices(rng, t, n_rows=N_ROWS):
    """Row ids of step t: random with duplicates, sometimes empty, first/last rows at times."""
    if t in EMPTY_STEPS:
        return np.zeros(0, dtype=np.int64)
    k = int(rng.integers(3, 2 * n_rows // 3))
    idx = rng.integers(0, n_rows, size=k)
    if t < LATE_START:
        idx = idx[(idx < LATE.start) | (idx >= LATE.stop)]
    else:
        idx = np.concatenate([idx, np.asarray(LATE)])
    if t in EDGE_STEPS:
        idx = np.concatenate([idx, [0, n_rows - 1]])
    if idx.size:
        idx = np.concatenate([idx, idx[: 3]])  # guaranteed duplicates
    return rng.permutation(idx).astype(np.int64)


def row_grad(rng, idx, param, dtype, index_form):
    """A RowGrad for ``param`` with ``idx`` given as int32, int64 or a Python list."""
    shape = (idx.shape[0],) + param.shape[1:]
    vals = rng.normal(size=shape).astype(dtype)
    if index_form == "int32":
        return so.RowGrad(idx.astype(np.int32), vals)
    if index_form == "int64":
        return so.RowGrad(idx.astype(np.int64), vals)
    return so.RowGrad(idx.tolist(), vals.tolist())


def make_params(rng, dtype, width, n_rows=N_ROWS):
    """A dict of one (n, width) table, plus a 1-D (n,) vector when width == 1."""
    params = {"table": rng.normal(size=(n_rows, width)).astype(dtype)}
    if width == 1:
        params["vector"] = rng.normal(size=n_rows).astype(dtype)
    return params


# --------------------------------------------------------------------------- trajectories


@pytest.mark.parametrize("opt_name,cfg,kwargs,schedule", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("width", WIDTHS, ids=lambda w: f"d{w}")
def test_trajectory_matches_reference(opt_name, cfg, kwargs, schedule, width, dtype):
    rng = np.random.default_rng([zlib.crc32(f"{opt_name}-{cfg}".encode()), width])
    params = make_params(rng, dtype, width)
    opt, oracle = build(opt_name, kwargs, params)
    forms = ("int32", "int64", "list")
    for t in range(1, N_STEPS + 1):
        lr = lr_at(kwargs, schedule, t, N_STEPS)
        opt.lr = lr
        oracle.lr = lr
        grads = {}
        for j, (key, p) in enumerate(params.items()):
            idx = batch_indices(rng, t)
            grads[key] = row_grad(rng, idx, p, dtype, forms[(t + j) % 3])
        opt.step(grads)
        oracle.step(grads)
        compare(opt, oracle, dtype, f"step {t}")
        if t == 10:  # a flush mid-way: later catch-up starts from the flushed step
            flush_both(opt, oracle)
            compare(opt, oracle, dtype, f"flush at step {t}")
    flush_both(opt, oracle)
    compare(opt, oracle, dtype, "after flush")


@pytest.mark.parametrize("opt_name,cfg,kwargs,schedule", CONFIGS, ids=CONFIG_IDS)
def test_trajectory_with_mixed_forms_and_skips(opt_name, cfg, kwargs, schedule, dtype):
    """Two parameters per step in every gradient form, some skipped with None."""
    rng = np.random.default_rng(7)
    n = 30
    params = {"emb": rng.normal(size=(n, 5)).astype(dtype),
              "bias": rng.normal(size=n).astype(dtype)}
    opt, oracle = build(opt_name, kwargs, params)
    for t in range(1, 25):
        lr = lr_at(kwargs, schedule, t, 24)
        opt.lr = oracle.lr = lr
        grads = {name: make_form(rng, FORMS[(t * 3 + j) % len(FORMS)], p, dtype)
                 for j, (name, p) in enumerate(params.items())}
        opt.step(grads)
        oracle.step(grads)
        compare(opt, oracle, dtype, f"step {t}")
    flush_both(opt, oracle)
    compare(opt, oracle, dtype, "after flush")


# --------------------------------------------------------------------------- hyper-parameters

# (optimizer, kwargs, hyper-parameter, new value): each of these bases has its own power table
HYPER_CHANGES = [
    ("Adam", dict(lr=0.05), "betas", (0.5, 0.9)),
    ("Adam", dict(lr=0.05, amsgrad=True), "betas", (0.9, 0.5)),
    ("Adam", dict(lr=0.05, lazy="decay", weight_decay=0.2), "betas", (0.6, 0.95)),
    ("Adam", dict(lr=0.05, lazy="decay", bias_correction="global"), "betas", (0.8, 0.99)),
    ("Adam", dict(lr=0.05, preset="torch"), "betas", (0.7, 0.9)),
    ("RMSprop", dict(lr=0.01, lazy="decay"), "alpha", 0.5),
    ("RMSprop", dict(lr=0.01, lazy="decay", centered=True, momentum=0.9), "alpha", 0.7),
    ("RMSprop", dict(lr=0.01, lazy="decay", momentum=0.9), "momentum", 0.3),
]
HYPER_IDS = [f"{o}-{'-'.join(f'{k}={v}' for k, v in kw.items() if k != 'lr')}-{h}"
             for o, kw, h, _ in HYPER_CHANGES]
CHANGE_AT = 9


def _hyper_run(opt_name, kwargs, rng, params, steps, targets, dtype):
    for t in steps:
        grads = {}
        for key, p in params.items():
            # rows 0-9 every step; the rest now and then, so rows skip steps across the change
            idx = np.concatenate([rng.integers(0, 10, size=6),
                                  rng.integers(10, N_ROWS, size=2 if t % 3 == 0 else 0)])
            grads[key] = so.RowGrad(idx, rng.normal(size=(idx.size,) + p.shape[1:]).astype(dtype))
        for o in targets:
            o.step(grads)


@pytest.mark.parametrize("opt_name,kwargs,hyper,value", HYPER_CHANGES, ids=HYPER_IDS)
def test_changed_betas_alpha_momentum_follow_the_reference(opt_name, kwargs, hyper, value,
                                                           dtype):
    """A hyper-parameter whose powers come from a table, changed between steps through
    ``param_groups``: later bias corrections and decay factors use the new value (as the
    reference does), flushed or not."""
    rng = np.random.default_rng(11)
    params = make_params(rng, dtype, 3)
    opt, oracle = build(opt_name, kwargs, params)
    _hyper_run(opt_name, kwargs, rng, params, range(1, CHANGE_AT), (opt, oracle), dtype)
    compare(opt, oracle, dtype, "before the change")
    opt.param_groups[0][hyper] = value
    oracle.h[hyper] = value
    for t in range(CHANGE_AT, CHANGE_AT + 8):
        _hyper_run(opt_name, kwargs, rng, params, [t], (opt, oracle), dtype)
        compare(opt, oracle, dtype, f"step {t}, {hyper}={value}")
    flush_both(opt, oracle)
    compare(opt, oracle, dtype, "after flush")


@pytest.mark.parametrize("opt_name,kwargs,hyper,value", HYPER_CHANGES, ids=HYPER_IDS)
def test_hyper_parameters_loaded_with_state_replace_the_running_ones(opt_name, kwargs, hyper,
                                                                    value, dtype):
    """``load_state_dict`` from an optimizer with another ``hyper``: the loading optimizer,
    which has stepped with its own value, continues exactly like the saved one (bitwise) and
    like the reference built with the loaded value."""
    rng = np.random.default_rng(12)
    params = make_params(rng, dtype, 3)
    mine = OPTIMIZERS[opt_name]({k: v.copy() for k, v in params.items()}, **kwargs)
    theirs, oracle = build(opt_name, dict(kwargs, **{hyper: value}), params)
    _hyper_run(opt_name, kwargs, np.random.default_rng(13), params, range(1, 6), (mine,),
               dtype)
    _hyper_run(opt_name, kwargs, rng, params, range(1, CHANGE_AT), (theirs, oracle), dtype)
    mine.load_state_dict(theirs.state_dict())
    for p, q in zip(mine.params, theirs.params):
        p[...] = q
    assert mine.param_groups[0][hyper] == value
    for t in range(CHANGE_AT, CHANGE_AT + 8):
        _hyper_run(opt_name, kwargs, rng, params, [t], (mine, theirs, oracle), dtype)
    flush_both(mine, oracle)
    theirs.flush()
    assert_bitwise_equal(mine, theirs, f"loaded {hyper}={value}")
    compare(mine, oracle, dtype, f"loaded {hyper}={value}")


# --------------------------------------------------------------------------- gradient forms

SPARSE_FORMS = {
    "csr": sp.csr_matrix, "csc": sp.csc_matrix, "coo": sp.coo_matrix, "lil": sp.lil_matrix,
    "dok": sp.dok_matrix, "bsr": sp.bsr_matrix, "dia": sp.dia_matrix,
    "csr_array": sp.csr_array, "csc_array": sp.csc_array, "coo_array": sp.coo_array,
}
FORMS = ["rowgrad_int32", "rowgrad_int64", "rowgrad_list", "rowgrad_uint16",
         "rowgrad_float64_values", "rowgrad_empty", "rowgrad_strided", "rowgrad_bigendian",
         "rowgrad_readonly", "rowgrad_broadcast", "coo_duplicates", "csr_explicit_zero",
         "csr_noncanonical", "csr_int64_index", "dense", "dense_int", "dense_fortran",
         "none"] + list(SPARSE_FORMS)


def sparse_dense_pattern(rng, n, d, dtype):
    """A dense (n, d) gradient with ~40% of rows nonzero, themselves partly zero, and row
    0 and n - 1 always nonzero."""
    g = rng.normal(size=(n, d)).astype(dtype)
    g[rng.random(size=(n, d)) < 0.3] = 0
    keep = rng.random(size=n) < 0.4
    keep[[0, n - 1]] = True
    g[~keep] = 0
    g[0, 0] = g[n - 1, d - 1] = 1.5
    return g


def make_form(rng, form, param, dtype):
    """A gradient for ``param`` in the given form (1-D params: sparse as (1, n) or (n, 1))."""
    n = param.shape[0]
    d = 1 if param.ndim == 1 else param.shape[1]
    if form.startswith("rowgrad") or form == "none":
        if form == "none":
            return None
        k = 0 if form == "rowgrad_empty" else int(rng.integers(1, 2 * n))
        idx = rng.integers(0, n, size=k)
        vals = rng.normal(size=(k,) + param.shape[1:])
        if form == "rowgrad_int32":
            return so.RowGrad(idx.astype(np.int32), vals.astype(dtype))
        if form == "rowgrad_int64":
            return so.RowGrad(idx.astype(np.int64), vals.astype(dtype))
        if form == "rowgrad_uint16":
            return so.RowGrad(idx.astype(np.uint16), vals.astype(dtype))
        if form == "rowgrad_float64_values":  # cast to the parameter's dtype
            return so.RowGrad(idx, vals.astype(np.float64))
        if form == "rowgrad_strided":  # views with strides, values in Fortran order
            idx2 = np.repeat(idx, 2)[::2]
            vals2 = np.asfortranarray(np.repeat(vals, 2, axis=0)[::2].astype(dtype))
            return so.RowGrad(idx2, vals2)
        if form == "rowgrad_bigendian":
            return so.RowGrad(idx.astype(">i8"), vals.astype(dtype.newbyteorder(">")))
        if form == "rowgrad_readonly":
            idx, vals = idx.copy(), vals.astype(dtype)
            idx.setflags(write=False)
            vals.setflags(write=False)
            return so.RowGrad(idx, vals)
        if form == "rowgrad_broadcast":  # stride-0 views: one row repeated k times
            return so.RowGrad(np.broadcast_to(idx[:1], idx.shape),
                              np.broadcast_to(vals[:1].astype(dtype), vals.shape))
        if form == "rowgrad_empty":
            return so.RowGrad(np.zeros(0, dtype=np.int64), vals.astype(dtype))
        return so.RowGrad(idx.tolist(), vals.astype(dtype).tolist())
    if form.startswith("dense"):
        g = rng.normal(size=param.shape)
        if form == "dense_int":
            return np.round(g * 3).astype(np.int64)
        if form == "dense_fortran" and param.ndim == 2:
            return np.asfortranarray(g.astype(dtype))
        return g.astype(dtype)
    g = sparse_dense_pattern(rng, n, d, dtype)
    if form == "coo_duplicates":
        r, c = np.nonzero(g)
        v = g[r, c]
        # each entry stored twice (a quarter and three quarters): summed on conversion
        rr, cc = np.concatenate([r, r]), np.concatenate([c, c])
        vv = np.concatenate([v * dtype.type(0.25), v - v * dtype.type(0.25)])
        m = sp.coo_matrix((vv, (rr, cc)), shape=(n, d))
    elif form == "csr_explicit_zero":
        # an explicitly stored zero in an otherwise empty row: the row counts as touched
        coo = sp.coo_matrix(g)
        empty = np.setdiff1d(np.arange(n), coo.row)
        r = np.concatenate([coo.row, empty[:1]])
        c = np.concatenate([coo.col, np.zeros(min(1, empty.size), dtype=coo.col.dtype)])
        v = np.concatenate([coo.data, np.zeros(min(1, empty.size), dtype=dtype)])
        m = sp.coo_matrix((v, (r, c)), shape=(n, d)).tocsr()
        assert m.nnz == np.count_nonzero(g) + min(1, empty.size)
    elif form == "csr_int64_index":
        m = sp.csr_matrix(g)
        m.indices = m.indices.astype(np.int64)
        m.indptr = m.indptr.astype(np.int64)
    elif form == "csr_noncanonical":
        # unsorted column indices and repeated (row, col) entries, stored as given
        coo = sp.coo_matrix(g)
        order = np.lexsort((-coo.col, coo.row))  # columns descending within a row
        r, c, v = coo.row[order], coo.col[order], coo.data[order]
        r, c = np.concatenate([r, r[:5]]), np.concatenate([c, c[:5]])
        v = np.concatenate([v, v[:5]])
        order = np.argsort(r, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=n))])
        m = sp.csr_matrix((v[order], c[order], indptr), shape=(n, d))
        assert not m.has_canonical_format
    else:
        m = SPARSE_FORMS[form](g)
    if param.ndim == 1 and rng.random() < 0.5:
        m = m.T  # (1, n) instead of (n, 1)
    return m


GRADIENT_CONFIGS = [
    ("Adam", "default", dict(lr=0.05)),
    ("Adam", "decay", dict(lr=0.05, lazy="decay", weight_decay=0.2)),
    ("Adagrad", "default", dict(lr=0.1)),
    ("Adagrad", "rowwise", dict(lr=0.1, rowwise=True)),
    ("RMSprop", "centered_momentum", dict(lr=0.01, centered=True, momentum=0.5)),
    ("RMSprop", "decay", dict(lr=0.01, lazy="decay")),
    ("Ftrl", "l1_l2", dict(lr=0.1, l1=0.05, l2=0.2)),
]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("opt_name,cfg,kwargs", GRADIENT_CONFIGS,
                         ids=[f"{o}-{c}" for o, c, _ in GRADIENT_CONFIGS])
def test_gradient_form_matches_reference(opt_name, cfg, kwargs, form, dtype):
    rng = np.random.default_rng(11)
    n = 25
    params = {"emb": rng.normal(size=(n, 6)).astype(dtype),
              "bias": rng.normal(size=n).astype(dtype)}
    opt, oracle = build(opt_name, kwargs, params)
    for t in range(1, 7):
        grads = {name: make_form(rng, form, p, dtype) for name, p in params.items()}
        if t == 3:  # the same form for one parameter, the other skipped
            grads["bias"] = None
        before = snapshot(opt)
        opt.step(grads)
        oracle.step(grads)
        compare(opt, oracle, dtype, f"{form} step {t}")
        for j, name in enumerate(params):
            steps_before = before[1][name].get("step", 0)
            advanced = grads[name] is not None
            assert opt.state[name].get("step", 0) == steps_before + advanced
    flush_both(opt, oracle)
    compare(opt, oracle, dtype, f"{form} after flush")


@pytest.mark.parametrize("fmt", list(SPARSE_FORMS))
@pytest.mark.parametrize("layout", ["row", "column"])
def test_sparse_gradient_of_1d_param_is_elementwise(fmt, layout, dtype):
    """For a 1-D parameter a sparse gradient touches exactly its stored elements, whether it
    comes as (1, n) or (n, 1)."""
    n = 12
    w = np.linspace(-1, 1, n).astype(dtype)
    opt = so.Adam([w], lr=0.1)
    g = np.zeros(n, dtype=dtype)
    g[[0, 4, 5, n - 1]] = [1.0, -2.0, 3.0, -4.0]
    mat = g[None, :] if layout == "row" else g[:, None]
    before = w.copy()
    opt.step([SPARSE_FORMS[fmt](mat)])
    moved = np.flatnonzero(w != before)
    np.testing.assert_array_equal(moved, [0, 4, 5, n - 1])
    # first Adam step of size lr against the gradient's sign (eps / |g| <= 1e-8 off)
    assert_close(w[moved] - before[moved], -0.1 * np.sign(g[moved]), dtype, rtol=1e-6)


# --------------------------------------------------------------------------- duplicates="mean"


@pytest.mark.parametrize("opt_name,cfg,kwargs,schedule",
                         [c for c in CONFIGS if c[1] in ("default", "decay", "rowwise")],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_duplicates_mean_matches_reference(opt_name, cfg, kwargs, schedule, dtype):
    rng = np.random.default_rng(3)
    params = make_params(rng, dtype, 4)
    opt, oracle = build(opt_name, kwargs, params, duplicates="mean")
    for t in range(1, 21):
        idx = rng.integers(0, 8, size=0 if t == 5 else 30)  # heavy duplication
        grads = {"table": row_grad(rng, idx, params["table"], dtype, "int64")}
        opt.step(grads)
        oracle.step(grads)
        compare(opt, oracle, dtype, f"step {t}")


def test_duplicates_mean_is_the_average(dtype):
    """A row given the same gradient three times moves as if given it once (mean), and as if
    given three times that gradient (sum) otherwise."""
    g = np.array([[1.0, -2.0]], dtype=dtype)
    one = np.zeros((3, 2), dtype=dtype)
    mean = np.zeros((3, 2), dtype=dtype)
    tripled = np.zeros((3, 2), dtype=dtype)
    summed = np.zeros((3, 2), dtype=dtype)
    so.Adagrad([one], lr=0.1).step([so.RowGrad([1], g)])
    so.Adagrad([mean], lr=0.1, duplicates="mean").step([so.RowGrad([1, 1, 1], np.repeat(g, 3, 0))])
    so.Adagrad([tripled], lr=0.1).step([so.RowGrad([1], 3 * g)])
    so.Adagrad([summed], lr=0.1).step([so.RowGrad([1, 1, 1], np.repeat(g, 3, 0))])
    np.testing.assert_array_equal(mean, one)
    np.testing.assert_array_equal(summed, tripled)


# --------------------------------------------------------------------------- property test


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    opt_name=st.sampled_from(sorted(OPTIMIZERS)),
    lazy=st.sampled_from(["frozen", "decay"]),
    width=st.sampled_from(WIDTHS[:6]),
    n_rows=st.integers(1, 12),
    batches=st.lists(st.lists(st.integers(0, 10**6), max_size=25), min_size=1, max_size=5),
    use_f32=st.booleans(),
)
def test_property_index_patterns(opt_name, lazy, width, n_rows, batches, use_f32):
    """Any index pattern (duplicates, empty, one-row tables) matches the reference."""
    dtype = np.dtype(np.float32 if use_f32 else np.float64)
    rng = np.random.default_rng(len(batches))
    params = [rng.normal(size=(n_rows, width)).astype(dtype)]
    kwargs = dict(lr=0.05)
    if opt_name in ("Adam", "RMSprop"):
        kwargs["lazy"] = lazy
    opt, oracle = build(opt_name, kwargs, params)
    for t, b in enumerate(batches, 1):
        idx = np.asarray(b, dtype=np.int64) % n_rows
        grads = [so.RowGrad(idx, rng.normal(size=(idx.size, width)).astype(dtype))]
        opt.step(grads)
        oracle.step(grads)
        compare(opt, oracle, dtype, f"step {t}")
    flush_both(opt, oracle)
    compare(opt, oracle, dtype, "after flush")


# --------------------------------------------------------------------------- bitwise guarantees


def row_slices(arr, rows):
    """Rows of a parameter or state array (counters and row-wise accumulators are 1-D)."""
    return arr[rows]


@pytest.mark.parametrize("opt_name,cfg,kwargs,schedule", FROZEN_CONFIGS, ids=FROZEN_IDS)
def test_untouched_rows_bitwise_unchanged_frozen(opt_name, cfg, kwargs, schedule, dtype):
    rng = np.random.default_rng(5)
    params = {"table": rng.normal(size=(N_ROWS, 9)).astype(dtype),
              "vector": rng.normal(size=N_ROWS).astype(dtype)}
    opt = OPTIMIZERS[opt_name](params, **kwargs)
    for t in range(1, N_STEPS + 1):
        opt.lr = lr_at(kwargs, schedule, t, N_STEPS)
        grads, touched = {}, {}
        for name, p in params.items():
            idx = batch_indices(rng, t)
            grads[name] = row_grad(rng, idx, p, dtype, "int64")
            touched[name] = np.unique(idx)
        if t == 10:  # a sparse gradient touches only its stored rows
            g = sparse_dense_pattern(rng, N_ROWS, 9, dtype)
            grads["table"] = sp.csr_matrix(g)
            touched["table"] = np.flatnonzero(np.any(g != 0, axis=1))
        before_p, before_s = snapshot(opt)
        opt.step(grads)
        for i, (name, p) in enumerate(params.items()):
            untouched = np.setdiff1d(np.arange(N_ROWS), touched[name])
            assert np.array_equal(p[untouched], before_p[i][untouched]), f"step {t} {name}"
            if touched[name].size:
                assert not np.array_equal(p[touched[name]], before_p[i][touched[name]])
            for sname, arr in opt.state[name].items():
                if sname == "step":
                    continue
                if sname in before_s[name]:
                    assert np.array_equal(row_slices(arr, untouched),
                                          row_slices(before_s[name][sname], untouched)), \
                        f"step {t}: state {name}/{sname} of untouched rows changed"
    # flush is a no-op in frozen mode
    before_p, before_s = snapshot(opt)
    opt.flush()
    for p, b in zip(opt.params, before_p):
        assert np.array_equal(p, b)


THREAD_WIDTHS = [1, 17, 64]


def run_threads(opt_name, kwargs, schedule, dtype, width, n_threads, seed=0, n_rows=600,
                index_dtype=np.int64):
    """A trajectory with large batches, a dense and a sparse step, and a final flush."""
    rng = np.random.default_rng(seed)
    params = {"table": rng.normal(size=(n_rows, width)).astype(dtype),
              "vector": rng.normal(size=n_rows).astype(dtype)}
    opt = OPTIMIZERS[opt_name](params, n_threads=n_threads, **kwargs)
    for t in range(1, 9):
        opt.lr = lr_at(kwargs, schedule, t, 8)
        grads = {}
        for name, p in params.items():
            if t == 4:
                grads[name] = rng.normal(size=p.shape).astype(dtype)
            elif t == 6:
                d = 1 if p.ndim == 1 else p.shape[1]
                g = sparse_dense_pattern(rng, n_rows, d, dtype)
                grads[name] = sp.csr_matrix(g if p.ndim == 2 else g.T)
            else:
                k = 0 if t == 2 else 2 * n_rows
                idx = rng.zipf(1.3, size=k) % n_rows
                if t % 3 == 0:
                    idx = idx % (n_rows // 3)  # leave two thirds of the rows behind
                grads[name] = so.RowGrad(idx.astype(index_dtype),
                                         rng.normal(size=(k,) + p.shape[1:]).astype(dtype))
        opt.step(grads)
    opt.flush()
    return opt


@pytest.mark.usefixtures("force_parallel")
@pytest.mark.parametrize("opt_name,cfg,kwargs,schedule", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("width", THREAD_WIDTHS, ids=lambda w: f"d{w}")
def test_thread_counts_bitwise_equal(opt_name, cfg, kwargs, schedule, width, dtype):
    runs = [run_threads(opt_name, kwargs, schedule, dtype, width, n) for n in (1, 2, 4)]
    assert_bitwise_equal(runs[0], runs[1], "1 vs 2 threads")
    assert_bitwise_equal(runs[0], runs[2], "1 vs 4 threads")


def test_parallel_threshold_really_splits_work(monkeypatch):
    """The thread tests only mean something if the patched threshold reaches the kernels."""
    from sparseopt.optim import _base
    opt = so.Adam([np.zeros((10, 2))], n_threads=4)
    assert opt._threads(10, 2) == 1
    monkeypatch.setattr(_base, "PARALLEL_MIN_ELEMENTS", 0)
    assert opt._threads(10, 2) == 4


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_large_step_parallel_without_patch_bitwise_equal(opt_name):
    """Steps above the default threshold (rows * width >= PARALLEL_MIN_ELEMENTS: here the dense
    step and the flush) run threaded and give the same bits as one thread."""
    from sparseopt.optim import _base
    width = 64
    n_rows = 2 * -(-_base.PARALLEL_MIN_ELEMENTS // width)
    kwargs = dict(lr=0.01)
    if opt_name in ("Adam", "RMSprop"):
        kwargs["lazy"] = "decay"
    runs = [run_threads(opt_name, kwargs, None, np.dtype(np.float32), width, n,
                        n_rows=n_rows) for n in (1, 2)]
    assert runs[1]._threads(n_rows, width) == 2
    assert_bitwise_equal(runs[0], runs[1], "1 vs 2 threads")


@pytest.mark.parametrize("opt_name,cfg,kwargs,schedule", CONFIGS, ids=CONFIG_IDS)
def test_index_dtypes_bitwise_equal(opt_name, cfg, kwargs, schedule, dtype):
    runs = [run_threads(opt_name, kwargs, schedule, dtype, 7, 1, n_rows=120, index_dtype=it)
            for it in (np.int32, np.int64)]
    assert_bitwise_equal(runs[0], runs[1], "int32 vs int64 indices")


@pytest.mark.usefixtures("force_parallel")
def test_index_dtype_and_threads_bitwise_equal(index_dtype, n_threads):
    """The fixture grid: every (index dtype, thread count) gives the bits of (int64, 1)."""
    kwargs = dict(lr=0.01, lazy="decay", weight_decay=0.1)
    base = run_threads("Adam", kwargs, None, np.dtype(np.float32), 16, 1, n_rows=300)
    run = run_threads("Adam", kwargs, None, np.dtype(np.float32), 16, n_threads, n_rows=300,
                      index_dtype=index_dtype)
    assert_bitwise_equal(base, run, f"{index_dtype} with {n_threads} threads")


def test_gradient_inputs_not_modified(dtype):
    """Optimizers read gradients and never write them (values, indices, sparse data)."""
    rng = np.random.default_rng(0)
    E = rng.normal(size=(10, 3)).astype(dtype)
    idx = np.array([1, 1, 4, 9], dtype=np.int32)
    vals = rng.normal(size=(4, 3)).astype(dtype)
    csr = sp.csr_matrix(sparse_dense_pattern(rng, 10, 3, dtype))
    dense = rng.normal(size=(10, 3)).astype(dtype)
    copies = (idx.copy(), vals.copy(), csr.copy(), dense.copy())
    for cls in OPTIMIZERS.values():
        opt = cls([E])
        opt.step([so.RowGrad(idx, vals)])
        opt.step([csr])
        opt.step([dense])
    np.testing.assert_array_equal(idx, copies[0])
    np.testing.assert_array_equal(vals, copies[1])
    np.testing.assert_array_equal(csr.toarray(), copies[2].toarray())
    np.testing.assert_array_equal(dense, copies[3])


def test_reference_merge_matches_definition(dtype):
    """Sanity of the oracle itself: sums duplicates in first-appearance order."""
    p = np.zeros((5, 2), dtype=dtype)
    rows, G = ref.merge_gradient(so.RowGrad([3, 1, 3], np.array([[1, 2], [3, 4], [5, 6]],
                                                               dtype=dtype)), p)
    np.testing.assert_array_equal(rows, [3, 1])
    np.testing.assert_array_equal(G, [[6, 8], [3, 4]])


@pytest.mark.parametrize("opt_name", ["Adam", "RMSprop"])
def test_reference_flush_is_noop_in_frozen_mode(opt_name):
    """flush is a no-op in "frozen" mode — for the oracle too (regression: the
    reference keeps ``last_step`` in every mode and once decayed frozen state on flush)."""
    p = np.ones((3, 2))
    oracle = REFERENCES[opt_name]([p], lr=0.1)
    oracle.step([so.RowGrad([0], np.ones((1, 2)))])
    oracle.step([so.RowGrad([1], np.ones((1, 2)))])
    before = {k: v.copy() for k, v in oracle.state[0].items() if isinstance(v, np.ndarray)}
    p_before = p.copy()
    oracle.flush()
    np.testing.assert_array_equal(p, p_before)
    for name, arr in before.items():
        np.testing.assert_array_equal(oracle.state[0][name], arr, err_msg=name)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("width", [1, 7, 64])
def test_parallel_duplicate_sums_bitwise_equal(index_dtype, width, dtype):
    """The duplicate sums cut into 1..7 position blocks (one per thread) equal the serial
    position-order sums bitwise, with rows that start in one block and recur in later ones,
    rows local to a block, more blocks than some rows have positions, and NaN detection."""
    from sparseopt._kernels import _coalesce

    rng = np.random.default_rng(width)
    n_rows, k = 50, 301
    idx = (rng.zipf(1.2, size=k) % n_rows).astype(index_dtype)
    values = (rng.normal(size=(k, width)) * 10.0 ** rng.integers(-3, 4, size=(k, 1))).astype(dtype)

    def run(nb, vals, mean=False):
        slot = np.zeros(n_rows, dtype=np.int32)
        rows, src = np.empty(k, np.int64), np.empty(k, np.int64)
        count, pos2u = np.empty(k, np.int32), np.empty(k, np.int32)
        mstart = np.empty(nb, dtype=np.int32)
        m, ndup = _coalesce.coalesce_index(idx, slot, rows, src, count, pos2u, n_rows, mstart)
        assert not slot.any()
        scratch = np.full((ndup, width), np.nan, dtype=dtype)
        bad = _coalesce.sum_duplicates(vals, scratch, pos2u, src, count, m, mean, True,
                                       mstart, np.empty(k, dtype=np.int32))
        return rows[:m], src[:m], scratch, bad

    rows1, src1, sums1, bad1 = run(1, values)
    assert not bad1 and sums1.shape[0] > 5
    # the serial sums are the position-order sums of the reference
    for j in np.flatnonzero(src1 < 0):
        expect = np.zeros(width, dtype=dtype)
        for pos in np.flatnonzero(idx == rows1[j]):
            expect = expect + values[pos]
        np.testing.assert_array_equal(sums1[-src1[j] - 1], expect)
    for nb in range(2, 8):
        for mean in (False, True):
            r, s, sums, bad = run(nb, values, mean)
            ref = run(1, values, mean)
            np.testing.assert_array_equal(r, ref[0])
            np.testing.assert_array_equal(s, ref[1])
            assert_bitwise_equal_arrays(sums, ref[2])
            assert not bad
    # a NaN in a single row and in a repeated row is found with any block count
    single = int(src1[src1 >= 0][-1])
    repeated_pos = int(np.flatnonzero(idx == rows1[np.flatnonzero(src1 < 0)[-1]])[-1])
    for pos in (single, repeated_pos):
        bad_values = values.copy()
        bad_values[pos, width // 2] = np.nan
        for nb in (1, 2, 3, 5):
            assert run(nb, bad_values)[3]


def assert_bitwise_equal_arrays(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.usefixtures("force_parallel")
@pytest.mark.parametrize("opt_name", ["Adam", "Adagrad", "RMSprop", "Ftrl"])
def test_parallel_duplicate_sums_in_a_step(opt_name, monkeypatch):
    """A batch with few repeats (the case where the duplicate sums run on the optimizer's
    threads) gives bitwise the same step on 1, 2 and 3 threads, and the parallel path ran."""
    from sparseopt._kernels import _coalesce
    from sparseopt.optim import _grad

    blocks = []
    real = _coalesce.sum_duplicates

    class Spy:
        def __getattr__(self, attr):
            return getattr(_coalesce, attr)

        @staticmethod
        def sum_duplicates(*args):
            blocks.append(0 if args[8] is None else len(args[8]))
            return real(*args)

        @staticmethod
        def coalesce_sum(*args):  # the one-thread merge, passes fused
            blocks.append(0)
            return _coalesce.coalesce_sum(*args)

    monkeypatch.setattr(_grad, "_coalesce", Spy())
    results = []
    for n in (1, 2, 3):
        rng = np.random.default_rng(5)
        table = rng.normal(size=(5000, 9)).astype(np.float32)
        opt = OPTIMIZERS[opt_name]([table], n_threads=n, lr=0.01)
        for _ in range(3):
            idx = rng.integers(0, 5000, size=300)
            idx[rng.integers(0, 300, size=20)] = idx[:20]  # ~10% repeats, across blocks
            opt.step([so.RowGrad(idx, rng.normal(size=(300, 9)).astype(np.float32))])
        results.append(opt)
    assert_bitwise_equal(results[0], results[1], "1 vs 2 threads")
    assert_bitwise_equal(results[0], results[2], "1 vs 3 threads")
    assert blocks[:3] == [0, 0, 0] and blocks[3:6] == [2, 2, 2] and blocks[6:] == [3, 3, 3]


def test_sum_duplicates_without_repeats_still_checks():
    """No repeated row (empty scratch): the non-finite check still looks at every row."""
    from sparseopt._kernels import _coalesce

    values = np.ones((3, 2))
    empty = np.empty((0, 2))
    pos2u = np.arange(3, dtype=np.int32)
    src = np.arange(3, dtype=np.int64)
    count = np.ones(3, dtype=np.int32)
    assert not _coalesce.sum_duplicates(values, empty, pos2u, src, count, 3, False, True)
    values[2, 1] = np.inf
    assert _coalesce.sum_duplicates(values, empty, pos2u, src, count, 3, False, True)
    assert not _coalesce.sum_duplicates(values, empty, pos2u, src, count, 3, False, False)


# --------------------------------------------------------------------------- determinism


@pytest.mark.usefixtures("force_parallel")
@pytest.mark.parametrize("opt_name,cfg,kwargs,schedule", CONFIGS, ids=CONFIG_IDS)
def test_int32_on_4_threads_equals_int64_on_1_thread(opt_name, cfg, kwargs, schedule, dtype):
    """test_reference checks threads and index dtypes one at a time (and together for one Adam
    configuration); here every configuration, with ``duplicates="mean"``, both at once."""
    kw = dict(kwargs, duplicates="mean")
    base = run_threads(opt_name, kw, schedule, dtype, 17, 1, n_rows=150, seed=4,
                         index_dtype=np.int64)
    other = run_threads(opt_name, kw, schedule, dtype, 17, 4, n_rows=150, seed=4,
                          index_dtype=np.int32)
    assert_bitwise_equal(base, other, "int32 on 4 threads vs int64 on 1 thread")


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("width", [1, 7, 16, 64])
@pytest.mark.parametrize("hashed", [False, True])
def test_one_walk_merge_equals_two_passes(index_dtype, width, hashed, dtype):
    """``coalesce_sum`` (slots or hash, sums and the non-finite check in one walk) gives the
    rows, sources, counts and duplicate sums of ``coalesce_index`` + ``sum_duplicates``
    bitwise (sums from +0, so an all -0.0 row sums to +0.0 in both), means included; a NaN in
    a single or a repeated row is found."""
    from sparseopt._kernels import _coalesce

    rng = np.random.default_rng(width)
    no = np.zeros(0, dtype=np.int32)
    for trial in range(40):
        n_rows, k = int(rng.integers(1, 300)), int(rng.integers(0, 400))
        idx = (rng.zipf(1.3, size=k) % n_rows).astype(index_dtype)
        values = (rng.normal(size=(k, width))
                  * 10.0 ** rng.integers(-3, 4, size=(k, 1))).astype(dtype)
        if k and trial % 3 == 0:
            values[idx == idx[0]] = -0.0
        if k and trial % 4 == 1:
            values[rng.integers(0, k), width // 2] = np.nan
        mean = bool(trial % 2)
        slot = np.zeros(n_rows, dtype=np.int32)
        rows, src = np.empty(k, np.int64), np.empty(k, np.int64)
        count, pos2u = np.empty(k, np.int32), np.empty(k, np.int32)
        m, ndup = _coalesce.coalesce_index(idx, slot, rows, src, count, pos2u, n_rows, None)
        sums = np.empty((ndup, width), dtype=dtype)
        bad = _coalesce.sum_duplicates(values, sums, pos2u, src, count, m, mean, True)
        rows2, src2 = np.full(k, -7, np.int64), np.full(k, -7, np.int64)
        count2, sums2 = np.full(k, -7, np.int32), np.full((k // 2, width), np.nan, dtype=dtype)
        table = np.full(1 << max(4, (2 * k - 1).bit_length()), 5, np.int32) if hashed else no
        m2, ndup2, bad2 = _coalesce.coalesce_sum(idx, values, no if hashed else slot, table,
                                                 rows2, src2, count2, sums2, n_rows, mean,
                                                 True, 10**9)
        assert not slot.any()
        assert (m2, ndup2) == (m, ndup) and bool(bad2) == bool(bad)
        np.testing.assert_array_equal(rows2[:m], rows[:m])
        np.testing.assert_array_equal(src2[:m], src[:m])
        np.testing.assert_array_equal(count2[:m], count[:m])
        assert_bitwise_equal_arrays(sums2[:ndup], sums)
        assert bool(bad) == bool(np.isnan(values).any())


def test_one_walk_merge_refuses_and_gives_up():
    """An index out of range is reported with its position (slot restored); ids that collide
    in the hash (multiples of a Fibonacci number) exceed the probe budget and the call gives up,
    keeping nothing; undersized arrays are refused."""
    from sparseopt._kernels import _coalesce

    no = np.zeros(0, dtype=np.int32)
    idx = np.array([1, 2, 1, 7, 3])
    for hashed in (False, True):
        slot = np.zeros(5, dtype=np.int32)
        out = _coalesce.coalesce_sum(idx, np.ones((5, 2)), no if hashed else slot,
                                     np.zeros(16, np.int32) if hashed else no,
                                     np.empty(5, np.int64), np.empty(5, np.int64),
                                     np.empty(5, np.int32), np.empty((2, 2)), 5, False, True, 99)
        assert out == (-1, 3, False) and not slot.any()
    k = 2048
    idx = np.arange(1, k + 1, dtype=np.int64) * 2178309
    args = (idx, np.ones((k, 1)), no, np.empty(2 * k, np.int32), np.empty(k, np.int64),
            np.empty(k, np.int64), np.empty(k, np.int32), np.empty((k // 2, 1)), 2**40,
            False, True)
    assert _coalesce.coalesce_sum(*args, 16 * k + 64) == (-2, 0, False)
    assert _coalesce.coalesce_sum(*args, 10**9) == (k, 0, False)
    with pytest.raises(ValueError, match="mismatched"):
        _coalesce.coalesce_sum(idx, np.ones((k, 1)), no, np.empty(2 * k, np.int32),
                               np.empty(k, np.int64), np.empty(k, np.int64),
                               np.empty(k, np.int32), np.empty((k // 2 - 1, 1)), 2**40,
                               False, True, 99)
    with pytest.raises(ValueError, match="power of two"):
        _coalesce.coalesce_sum(idx, np.ones((k, 1)), no, np.empty(2 * k - 1, np.int32),
                               np.empty(k, np.int64), np.empty(k, np.int64),
                               np.empty(k, np.int32), np.empty((k // 2, 1)), 2**40,
                               False, True, 99)
    with pytest.raises(ValueError, match="slot"):
        _coalesce.coalesce_sum(np.array([1]), np.ones((1, 1)), np.zeros(3, np.int32), no,
                               np.empty(1, np.int64), np.empty(1, np.int64),
                               np.empty(1, np.int32), np.empty((0, 1)), 5, False, True, 99)


def test_step_merges_through_hash_or_slots_alike(monkeypatch):
    """A step whose merge goes through the hash, through the slot array, or gives up on the
    hash (a probe budget of zero) and falls back to the slot array updates the same bits."""
    from sparseopt.optim import _grad

    def run(ratio, probes):
        monkeypatch.setattr(_grad, "HASH_MIN_TABLE_RATIO", ratio)
        monkeypatch.setattr(_grad, "HASH_PROBES_PER_INDEX", probes)
        rng = np.random.default_rng(3)
        table = rng.normal(size=(4000, 5)).astype(np.float32)
        opt = so.Adam([table], lr=0.01, n_threads=1)
        for _ in range(4):
            idx = rng.zipf(1.2, size=600) % 4000
            opt.step([so.RowGrad(idx, rng.normal(size=(600, 5)).astype(np.float32))])
        return opt

    ref = run(10**9, 16)  # slots only
    hashed = run(1, 16)
    fallback = run(1, -100)
    assert_bitwise_equal(ref, hashed, "hash vs slots")
    assert_bitwise_equal(ref, fallback, "hash given up vs slots")
