"""Bad input gets a clear error and changes nothing (docs/semantics.md, "Errors").

Every rejected step is checked to leave the parameters *and* the optimizer state (and the
hyper-parameters) byte-for-byte as they were, also when the bad gradient comes after good ones
in the same step (dict and list), and the optimizer must then continue exactly as a twin that
never saw the bad step. Messages are our own: a user never sees Cython's buffer errors.
"""
import copy
import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import sparseopt as so
from sparseopt import _reference as ref

N = 12  # rows of every test parameter

OPTIMIZERS = {
    "Adam": (so.Adam, {}),
    "Adam-decay-wd-amsgrad": (so.Adam, dict(lazy="decay", weight_decay=0.01, amsgrad=True)),
    "Adam-torch": (so.Adam, dict(preset="torch")),
    "Adagrad": (so.Adagrad, dict(lr_decay=0.01)),
    "Adagrad-rowwise-wd": (so.Adagrad, dict(rowwise=True, weight_decay=0.01)),
    "RMSprop-centered-momentum": (so.RMSprop, dict(centered=True, momentum=0.9)),
    "RMSprop-decay-wd": (so.RMSprop, dict(lazy="decay", weight_decay=0.01, centered=True)),
    "RMSprop-tensorflow": (so.RMSprop, dict(preset="tensorflow")),
    "Ftrl": (so.Ftrl, dict(l1=0.01, l2=0.1, l2_shrinkage=0.05)),
    "Ftrl-vw": (so.Ftrl, dict(preset="vw", l1=0.01)),
}
OPT_IDS = list(OPTIMIZERS)
NAMES = ("first", "emb", "bias")


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"first": rng.normal(size=(8, 4)).astype(np.float32),
            "emb": rng.normal(size=(N, 4)).astype(np.float32),
            "bias": rng.normal(size=N)}


def _make(opt_id, form="dict", seed=0):
    cls, kw = OPTIMIZERS[opt_id]
    params = _params(seed)
    return cls(params if form == "dict" else list(params.values()), lr=0.05, **kw)


def _good(name, rng):
    """A valid gradient for a parameter (duplicates included for RowGrad)."""
    if name == "first":
        return rng.normal(size=(8, 4)).astype(np.float32)
    if name == "emb":
        idx = np.array([3, 0, 3, 11, 7, 3])
        return so.RowGrad(idx, rng.normal(size=(6, 4)).astype(np.float32))
    m = sp.random(N, 1, density=0.5, format="csr", random_state=int(rng.integers(1 << 30)))
    return m


def _good_step(opt, rng, names=NAMES):
    grads = {n: _good(n, rng) for n in names}
    _step(opt, grads)


def _step(opt, grads):
    """Step with a name -> gradient dict, as a dict or a list depending on the optimizer."""
    if opt._is_dict:
        opt.step(grads)
    else:
        opt.step([grads.get(n) for n in NAMES])


def _warm(opt, n_steps, seed=1):
    rng = np.random.default_rng(seed)
    for _ in range(n_steps):
        _good_step(opt, rng)


def snapshot(opt):
    return dict(params=[p.copy() for p in opt.params], state=copy.deepcopy(opt.state),
                groups=copy.deepcopy(opt.param_groups))


def _same_bytes(a, b):
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and a.tobytes() == b.tobytes())
    return type(a) is type(b) and a == b


def assert_unchanged(opt, snap):
    for p, q in zip(opt.params, snap["params"]):
        assert _same_bytes(p, q), "a parameter changed"
    assert opt.state.keys() == snap["state"].keys()
    for key, st in opt.state.items():
        old = snap["state"][key]
        assert st.keys() == old.keys(), f"state of {key!r} gained/lost entries"
        for name in st:
            assert _same_bytes(st[name], old[name]), f"state {name!r} of {key!r} changed"
    assert opt.param_groups == snap["groups"]


def assert_same_optimizer(a, b):
    assert_unchanged(a, snapshot(b))


def _name(opt, key):
    return f"parameter {key!r}" if opt._is_dict else f"parameter {NAMES.index(key)}"


# --------------------------------------------------------------------------- bad gradients

def _ones(shape, dtype=np.float32):
    return np.ones(shape, dtype=dtype)


def _csr(shape, value=1.0, dtype=np.float64):
    m = sp.lil_matrix(shape, dtype=dtype)
    m[0, 0] = value
    m[shape[0] - 1, shape[1] - 1] = value
    return m.tocsr()


def _object_values():
    v = np.empty((2, 4), dtype=object)
    v[:] = 1.0
    return v


# (key, gradient factory, exception, regexes the message must contain)
BAD = {
    "negative-index": ("emb", lambda: so.RowGrad([1, -1, 2], _ones((3, 4))), IndexError,
                       [r"index -1\b"]),
    "index-n-rows": ("emb", lambda: so.RowGrad([0, N], _ones((2, 4))), IndexError,
                     [rf"index {N}\b", rf"{N} rows"]),
    "index-after-duplicates": ("emb", lambda: so.RowGrad([3, 3, 5, 3, 100, 5], _ones((6, 4))),
                               IndexError, [r"index 100\b", r"position 4"]),
    "index-int32-negative": ("emb", lambda: so.RowGrad(np.array([2, 2, -7], np.int32),
                                                       _ones((3, 4))), IndexError,
                             [r"index -7\b"]),
    "index-uint-too-big": ("emb", lambda: so.RowGrad(np.array([1, 2**40], np.uint64),
                                                     _ones((2, 4))), IndexError,
                           [rf"index {2**40}\b"]),
    "index-1d-param": ("bias", lambda: so.RowGrad([N + 3], np.ones(1)), IndexError,
                       [rf"index {N + 3}\b"]),
    "values-width": ("emb", lambda: so.RowGrad([1, 2, 3], _ones((3, 5))), ValueError,
                     [re.escape("(3, 5)"), re.escape("(3, 4)")]),
    "values-count": ("emb", lambda: so.RowGrad([1, 2], _ones((3, 4))), ValueError,
                     [re.escape("(3, 4)"), re.escape("(2, 4)")]),
    "values-1d-for-2d-param": ("emb", lambda: so.RowGrad([1, 2], _ones(2)), ValueError,
                               [re.escape("(2,)"), re.escape("(2, 4)")]),
    "values-2d-for-1d-param": ("bias", lambda: so.RowGrad([1, 2], np.ones((2, 3))), ValueError,
                               [re.escape("(2, 3)"), re.escape("(2,)")]),
    "indices-2d": ("emb", lambda: so.RowGrad([[1, 2]], _ones((2, 4))), ValueError,
                   [r"1-D", re.escape("(1, 2)")]),
    "sparse-shape": ("emb", lambda: _csr((N, 5)), ValueError,
                     [re.escape(f"({N}, 5)"), re.escape(f"({N}, 4)")]),
    "sparse-transposed": ("emb", lambda: _csr((4, N)), ValueError,
                          [re.escape(f"(4, {N})"), re.escape(f"({N}, 4)")]),
    "sparse-shape-1d-param": ("bias", lambda: _csr((1, N + 1)), ValueError,
                              [re.escape(f"(1, {N + 1})"), re.escape(f"({N},)")]),
    "sparse-array-shape": ("emb", lambda: sp.csr_array(_csr((N + 1, 4))), ValueError,
                           [re.escape(f"({N + 1}, 4)"), re.escape(f"({N}, 4)")]),
    "dense-shape": ("emb", lambda: _ones((N - 1, 4)), ValueError,
                    [re.escape(f"({N - 1}, 4)"), re.escape(f"({N}, 4)")]),
    "dense-shape-1d-param": ("bias", lambda: np.ones((N, 1)), ValueError,
                             [re.escape(f"({N}, 1)"), re.escape(f"({N},)")]),
    "complex-values": ("emb", lambda: so.RowGrad([1], _ones((1, 4), np.complex64)), TypeError,
                       [r"complex64"]),
    "object-values": ("emb", lambda: so.RowGrad([1, 2], _object_values()), TypeError,
                      [r"object"]),
    "bool-values": ("emb", lambda: so.RowGrad([1], _ones((1, 4), bool)), TypeError, [r"bool"]),
    "str-values": ("bias", lambda: so.RowGrad([1], np.array(["1.0"])), TypeError, [r"<U3"]),
    "float-indices": ("emb", lambda: so.RowGrad(np.array([1.0, 2.0]), _ones((2, 4))),
                      TypeError, [r"indices must be integers", r"float64"]),
    "bool-indices": ("bias", lambda: so.RowGrad(np.array([True, False]), np.ones(2)),
                     TypeError, [r"indices must be integers", r"bool"]),
    "complex-sparse": ("emb", lambda: _csr((N, 4), dtype=np.complex128), TypeError,
                       [r"complex128"]),
    "bool-sparse": ("bias", lambda: _csr((N, 1), value=True, dtype=bool), TypeError, [r"bool"]),
    "complex-dense": ("emb", lambda: _ones((N, 4), np.complex64), TypeError, [r"complex64"]),
    "bool-dense": ("bias", lambda: np.ones(N, dtype=bool), TypeError, [r"bool"]),
    "list-as-gradient": ("bias", lambda: [0.0] * N, TypeError, [r"a gradient must be",
                                                               r"list"]),
    "nan-rowgrad": ("emb", lambda: so.RowGrad([1, 5], np.array([[1, 2, 3, 4],
                                                                 [1, np.nan, 3, 4]],
                                                                np.float32)),
                    FloatingPointError, [r"NaN or infinite", r"row 5"]),
    "inf-rowgrad-1d": ("bias", lambda: so.RowGrad([4, 2], np.array([1.0, -np.inf])),
                       FloatingPointError, [r"NaN or infinite", r"row 2"]),
    "nan-sparse": ("emb", lambda: _csr((N, 4), value=np.nan), FloatingPointError,
                   [r"NaN or infinite"]),
    "inf-sparse-1d": ("bias", lambda: _csr((1, N), value=np.inf), FloatingPointError,
                      [r"NaN or infinite"]),
    "nan-dense": ("emb", lambda: np.where(np.arange(N * 4).reshape(N, 4) == 9, np.nan,
                                          1.0).astype(np.float32),
                  FloatingPointError, [r"NaN or infinite", r"row 2"]),
    "duplicates-sum-to-inf": ("emb", lambda: so.RowGrad([6, 1, 6], np.full((3, 4), 3e38,
                                                                            np.float32)),
                              FloatingPointError, [r"NaN or infinite", r"row 6"]),
    "float64-overflows-float32": ("emb", lambda: so.RowGrad([2], np.full((1, 4), 1e300)),
                                  FloatingPointError, [r"NaN or infinite", r"row 2"]),
}
BAD_IDS = list(BAD)


def _expect(opt, case):
    key, factory, exc, patterns = BAD[case]
    return key, factory, exc, [re.escape(_name(opt, key))] + patterns


def _raises_ours(exc, patterns, fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's overflow-in-cast warning
        with pytest.raises(exc) as info:
            fn()
    msg = str(info.value)
    for pat in patterns:
        assert re.search(pat, msg), f"{pat!r} not in {msg!r}"
    assert "Buffer dtype mismatch" not in msg and "buffer source array" not in msg
    return msg


@pytest.mark.parametrize("mode", ["alone-first-step", "after-good-dict", "after-good-list"])
@pytest.mark.parametrize("case", BAD_IDS)
@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_bad_gradient_raises_and_changes_nothing(opt_id, case, mode):
    form = "list" if mode.endswith("list") else "dict"
    opt, twin = _make(opt_id, form), _make(opt_id, form)
    warm = 0 if mode == "alone-first-step" else 3
    _warm(opt, warm)
    _warm(twin, warm)
    key, factory, exc, patterns = _expect(opt, case)
    snap = snapshot(opt)
    rng = np.random.default_rng(7)
    if mode == "alone-first-step":
        grads = {key: factory()}
    else:
        # every other parameter gets a good gradient, the bad one comes last in position
        grads = {n: (factory() if n == key else _good(n, rng)) for n in NAMES}
        if key == "emb":
            grads["bias"] = None  # so the bad gradient is second of the ones given
    _raises_ours(exc, patterns, lambda: _step(opt, grads))
    assert_unchanged(opt, snap)
    if warm == 0:
        assert all(st == {} for st in opt.state.values())
    # The optimizer carries on exactly as one that never saw the bad step (duplicate-merging
    # scratch was restored, no counter advanced).
    rng = np.random.default_rng(9)
    _good_step(opt, rng)
    rng = np.random.default_rng(9)
    _good_step(twin, rng)
    assert_same_optimizer(opt, twin)


@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_bad_gradient_first_in_dict_order_second_in_position(opt_id):
    """The order of the step dict does not matter: a bad 'emb' listed before a good 'first'
    still changes nothing (including 'first')."""
    opt = _make(opt_id)
    _warm(opt, 2)
    snap = snapshot(opt)
    grads = {"emb": so.RowGrad([0, N], _ones((2, 4))),
             "first": _good("first", np.random.default_rng(0))}
    _raises_ours(IndexError, [r"parameter 'emb'"], lambda: opt.step(grads))
    assert_unchanged(opt, snap)


# --------------------------------------------------------------------------- wrong structure


@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_wrong_number_of_gradients(opt_id):
    opt = _make(opt_id, "list")
    _warm(opt, 2)
    snap = snapshot(opt)
    rng = np.random.default_rng(0)
    for grads in ([_good("first", rng), _good("emb", rng)],
                  [_good("first", rng), None, None, None], []):
        _raises_ours(ValueError, [rf"got {len(grads)} gradients for 3 parameters"],
                     lambda: opt.step(grads))
    assert_unchanged(opt, snap)


@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_unknown_name(opt_id):
    opt = _make(opt_id)
    _warm(opt, 2)
    snap = snapshot(opt)
    rng = np.random.default_rng(0)
    grads = {"first": _good("first", rng), "embedding": _good("emb", rng)}
    _raises_ours(KeyError, [r"unknown parameter 'embedding'"], lambda: opt.step(grads))
    assert_unchanged(opt, snap)


@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_dict_for_list_optimizer_and_bare_gradient_for_many(opt_id):
    opt = _make(opt_id, "list")
    snap = snapshot(opt)
    _raises_ours(TypeError, [r"pass a list"], lambda: opt.step({0: _ones((8, 4))}))
    _raises_ours(TypeError, [r"list of 3 gradients"], lambda: opt.step(_ones((8, 4))))
    assert_unchanged(opt, snap)


# --------------------------------------------------------------------------- accepted casts


def _run_two(opt_id, grad_a, grad_b, key="emb"):
    """Step two identical optimizers with two gradients that must mean the same thing."""
    a, b = _make(opt_id), _make(opt_id)
    _warm(a, 2)
    _warm(b, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a cast we accept must not warn either
        a.step({key: grad_a})
    b.step({key: grad_b})
    return a, b


INT_VALUES = [np.int8, np.int32, np.int64, np.uint8, np.uint64]


@pytest.mark.parametrize("vdtype", INT_VALUES + [np.float16, np.float64, ">f4", ">f8"],
                         ids=lambda d: np.dtype(d).str)
@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_real_values_are_cast_to_the_parameter_dtype(opt_id, vdtype):
    rng = np.random.default_rng(3)
    ints = rng.integers(0, 5, size=(5, 4))
    vals = ints.astype(vdtype) if np.dtype(vdtype).kind in "iu" else (
        rng.normal(size=(5, 4)).astype(vdtype))
    idx = np.array([2, 9, 2, 0, 11])
    a, b = _run_two(opt_id, so.RowGrad(idx, vals),
                    so.RowGrad(idx, vals.astype(np.float32)))
    assert_same_optimizer(a, b)
    # the same for a float32 table fed through the 1-D float64 parameter, and sparse / dense
    a, b = _run_two(opt_id, so.RowGrad(idx, vals[:, 0]),
                    so.RowGrad(idx, vals[:, 0].astype(np.float64)), key="bias")
    assert_same_optimizer(a, b)
    dense = np.zeros((N, 4), dtype=vals.dtype)
    dense[::3] = vals[:4]
    a, b = _run_two(opt_id, dense, dense.astype(np.float32))
    assert_same_optimizer(a, b)
    if np.dtype(vdtype).isnative and np.dtype(vdtype) != np.float16:
        a, b = _run_two(opt_id, sp.csr_matrix(dense), sp.csr_matrix(dense.astype(np.float32)))
        assert_same_optimizer(a, b)


@pytest.mark.parametrize("idtype", [np.int8, np.int16, np.uint16, np.uint32, np.uint64, ">i8",
                                    ">i4", "list"], ids=str)
@pytest.mark.parametrize("opt_id", ["Adam", "Adagrad-rowwise-wd", "RMSprop-decay-wd"])
def test_integer_index_dtypes_are_accepted(opt_id, idtype):
    idx = [2, 9, 2, 0, 11]
    vals = np.arange(20, dtype=np.float32).reshape(5, 4)
    given = idx if idtype == "list" else np.array(idx, dtype=idtype)
    a, b = _run_two(opt_id, so.RowGrad(given, vals), so.RowGrad(np.array(idx), vals))
    assert_same_optimizer(a, b)


@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_read_only_and_strided_inputs_are_accepted(opt_id):
    """Read-only or non-contiguous gradients are inputs, not parameters: accepted as is."""
    idx = np.array([2, 9, 2, 0, 11, 5])
    vals = np.arange(48, dtype=np.float32).reshape(6, 8) / 7
    ro_idx, ro_vals = idx.copy(), vals[:, :4].copy()
    ro_idx.flags.writeable = False
    ro_vals.flags.writeable = False
    expected_grad = so.RowGrad(idx, vals[:, :4].copy())
    wide = np.zeros((6, 8), dtype=np.float32)
    wide[:, ::2] = ro_vals
    for grad in (so.RowGrad(ro_idx, ro_vals), so.RowGrad(idx, wide[:, ::2]),
                 so.RowGrad(np.repeat(idx, 2)[::2], np.asfortranarray(ro_vals)),
                 so.RowGrad(idx, np.broadcast_to(ro_vals, (6, 4)))):
        a, b = _run_two(opt_id, grad, expected_grad)
        assert_same_optimizer(a, b)
    dense = np.arange(N * 8, dtype=np.float32).reshape(N, 8)[:, ::2] / 11
    ro_dense = dense.copy()
    ro_dense.flags.writeable = False
    for grad in (dense, ro_dense, np.asfortranarray(dense)):
        a, b = _run_two(opt_id, grad, np.ascontiguousarray(dense))
        assert_same_optimizer(a, b)
    csr = sp.csr_matrix(dense * (np.arange(N)[:, None] % 3 == 0))
    for arr in (csr.data, csr.indices, csr.indptr):
        arr.flags.writeable = False
    a, b = _run_two(opt_id, csr, sp.csr_matrix(csr.toarray()))
    assert_same_optimizer(a, b)


ALL_DTYPES = sorted(set(np.typecodes["All"]) - set("MmVSUOc")) + ["U3", "O", ">i8", ">f4"]


@pytest.mark.parametrize("opt_id", ["Adam", "Adagrad", "RMSprop-decay-wd"])
def test_no_dtype_combination_leaks_a_cython_error(opt_id):
    """Every NumPy dtype as indices or as values (RowGrad, dense, sparse) either works, exactly
    when docs/semantics.md says it should, or raises our TypeError and changes nothing."""
    for code in ALL_DTYPES:
        dt = np.dtype(code)
        opt = _make(opt_id)
        _warm(opt, 1)
        candidates = [
            ("indices", dt.kind in "iu",
             so.RowGrad(np.array([1, 3, 1]).astype(dt), _ones((3, 4)))),
            ("values", dt.kind in "iuf", so.RowGrad([1, 3, 1], np.ones((3, 4)).astype(dt))),
            ("dense", dt.kind in "iuf", np.ones((N, 4)).astype(dt)),
        ]
        if dt.kind in "iufcb" and dt.isnative and dt.char not in "egG":  # scipy's dtypes
            candidates.append(("sparse", dt.kind in "iuf",
                               sp.csr_matrix(np.eye(N, 4).astype(dt))))
        for what, ok, grad in candidates:
            snap = snapshot(opt)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
                    opt.step({"emb": grad})
            except TypeError as e:
                assert not ok, (code, what, str(e))
                assert str(e).startswith("parameter 'emb': "), (code, what, str(e))
                assert_unchanged(opt, snap)
            else:
                assert ok, (code, what)
                assert opt.state["emb"]["step"] == snap["state"]["emb"]["step"] + 1


# --------------------------------------------------------------------------- nonfinite modes


def _nonfinite_cases(rng):
    """(gradient with non-finite rows, the same gradient without them) for 'emb'."""
    vals = rng.normal(size=(6, 4)).astype(np.float32)
    idx = np.array([3, 0, 3, 11, 7, 5])
    bad_vals = vals.copy()
    bad_vals[2, 1] = np.nan  # a duplicate of row 3 is NaN: all of row 3 is skipped
    bad_vals[4, :] = np.inf
    keep = np.isin(idx, [0, 11, 5])
    dense = rng.normal(size=(N, 4)).astype(np.float32)
    bad_dense = dense.copy()
    bad_dense[[1, 8], 2] = -np.inf
    good_rows = np.setdiff1d(np.arange(N), [1, 8])
    csr = sp.csr_matrix(dense * (np.arange(N)[:, None] % 2 == 0))
    bad_csr = csr.copy()
    bad_csr.data[0] = np.nan  # row 0
    csr_rows = np.arange(2, N, 2)
    return [
        ("rowgrad", so.RowGrad(idx, bad_vals), so.RowGrad(idx[keep], vals[keep]), [3, 7]),
        ("dense", bad_dense, so.RowGrad(good_rows, dense[good_rows]), [1, 8]),
        ("sparse", bad_csr, so.RowGrad(csr_rows, csr.toarray()[csr_rows]), [0]),
        ("all-bad", so.RowGrad([4, 4], np.full((2, 4), np.nan, np.float32)),
         so.RowGrad(np.empty(0, np.int64), np.empty((0, 4), np.float32)), [4]),
    ]


@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_nonfinite_skip_leaves_those_rows_and_updates_the_others(opt_id):
    cls, kw = OPTIMIZERS[opt_id]
    for label, bad, clean, bad_rows in _nonfinite_cases(np.random.default_rng(0)):
        a = cls(_params(), lr=0.05, nonfinite="skip", **kw)
        b = cls(_params(), lr=0.05, **kw)
        _warm(a, 2)
        _warm(b, 2)
        before = a.params[1][bad_rows].copy()
        a.step({"emb": bad, "bias": _csr((N, 1))})
        b.step({"emb": clean, "bias": _csr((N, 1))})
        assert_same_optimizer(a, b)  # includes: skipped rows' state untouched, t advanced
        np.testing.assert_array_equal(a.params[1][bad_rows], before, err_msg=label)
        assert a.state["emb"]["step"] == 3


@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_nonfinite_ignore_applies_them(opt_id):
    cls, kw = OPTIMIZERS[opt_id]
    rng = np.random.default_rng(0)
    idx = np.array([3, 0, 3, 11])
    vals = rng.normal(size=(4, 4)).astype(np.float32)
    bad = vals.copy()
    bad[1] = np.nan  # row 0
    a = cls(_params(), lr=0.05, nonfinite="ignore", **kw)
    b = cls(_params(), lr=0.05, **kw)
    _warm(a, 2)
    _warm(b, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        a.step({"emb": so.RowGrad(idx, bad)})
    b.step({"emb": so.RowGrad(idx[[0, 2, 3]], vals[[0, 2, 3]])})
    assert np.isnan(a.params[1][0]).all()
    others = np.arange(1, N)
    np.testing.assert_array_equal(a.params[1][others], b.params[1][others])


@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_nonfinite_default_is_raise(opt_id):
    opt = _make(opt_id)
    assert opt.nonfinite == "raise"


# --------------------------------------------------------------------------- parameters


def _ro(shape):
    a = np.zeros(shape, dtype=np.float32)
    a.flags.writeable = False
    return a


BAD_PARAMS = {
    "strided": (lambda: np.zeros((10, 8), np.float32)[:, ::2], ValueError, r"C-contiguous"),
    "fortran": (lambda: np.asfortranarray(np.zeros((10, 3))), ValueError, r"C-contiguous"),
    "strided-1d": (lambda: np.zeros(20)[::2], ValueError, r"C-contiguous"),
    "read-only": (lambda: _ro((10, 3)), ValueError, r"read-only"),
    "read-only-1d": (lambda: _ro(10), ValueError, r"read-only"),
    "int64": (lambda: np.zeros((10, 3), np.int64), TypeError, r"float32 or float64.*int64"),
    # bfloat16 bits need dtype="bfloat16" (float16 arrays are accepted: test_half_precision)
    "uint16": (lambda: np.zeros((10, 3), np.uint16), TypeError,
               r"float32 or float64.*dtype='bfloat16'.*uint16"),
    "complex": (lambda: np.zeros((10, 3), np.complex128), TypeError, r"float32 or float64"),
    "big-endian": (lambda: np.zeros((10, 3), ">f8"), TypeError, r"float32 or float64"),
    "3-d": (lambda: np.zeros((4, 3, 2), np.float32), ValueError,
            r"1-D \(n,\) or 2-D \(n, d\).*\(4, 3, 2\)"),
    "0-d": (lambda: np.zeros((), np.float32), ValueError, r"1-D \(n,\) or 2-D"),
    "width-0": (lambda: np.zeros((5, 0), np.float32), ValueError, r"width 0"),
    "list": (lambda: [[0.0, 1.0]], TypeError, r"must be a NumPy array, got list"),
}


@pytest.mark.parametrize("case", list(BAD_PARAMS))
@pytest.mark.parametrize("cls", [so.Adam, so.Adagrad, so.RMSprop], ids=lambda c: c.__name__)
def test_bad_parameter_rejected_at_construction(cls, case):
    factory, exc, pattern = BAD_PARAMS[case]
    good = np.zeros((3, 2), np.float32)
    _raises_ours(exc, [r"parameter 'w'", pattern], lambda: cls({"ok": good, "w": factory()}))
    _raises_ours(exc, [r"parameter 1\b", pattern], lambda: cls([good, factory()]))


@pytest.mark.parametrize("cls", [so.Adam, so.Adagrad, so.RMSprop], ids=lambda c: c.__name__)
def test_bad_params_container(cls):
    a = np.zeros((3, 2), np.float32)
    _raises_ours(ValueError, [r"empty parameter list"], lambda: cls([]))
    _raises_ours(ValueError, [r"empty parameter list"], lambda: cls({}))
    _raises_ours(ValueError, [r"more than once"], lambda: cls([a, a]))
    _raises_ours(TypeError, [r"names must be strings"], lambda: cls({0: a}))
    _raises_ours(TypeError, [r"params must be"], lambda: cls(5))


# --------------------------------------------------------------------------- hyper-parameters

COMMON_BAD = [
    (dict(lr=-1e-3), ValueError, r"lr must be in"),
    (dict(lr=float("nan")), ValueError, r"lr must be in"),
    (dict(lr="0.1"), TypeError, r"lr must be a real number"),
    (dict(weight_decay=-0.1), ValueError, r"weight_decay must be in"),
    (dict(lr=0.5, weight_decay=2.0), ValueError, r"lr \* weight_decay must be < 1"),
    (dict(preset="jax"), ValueError, r"preset must be one of"),
    (dict(n_threads=0), ValueError, r"n_threads must be None or a positive int"),
    (dict(n_threads=-2), ValueError, r"n_threads must be None or a positive int"),
    (dict(n_threads=1.5), TypeError, r"n_threads must be None or a positive int"),
    (dict(duplicates="max"), ValueError, r"duplicates must be one of"),
    (dict(nonfinite="warn"), ValueError, r"nonfinite must be one of"),
]
SPECIFIC_BAD = {
    so.Adam: [
        (dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be in \[0.0, 1.0\)"),
        (dict(betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be in"),
        (dict(betas=(-0.1, 0.999)), ValueError, r"betas\[0\] must be in"),
        (dict(betas=(0.9, 1.5)), ValueError, r"betas\[1\] must be in"),
        (dict(betas=(0.9,)), ValueError, r"betas must be a pair"),
        (dict(betas=0.9), ValueError, r"betas must be a pair"),
        (dict(eps=-1e-8), ValueError, r"eps must be in"),
        (dict(lazy="eager"), ValueError, r"lazy must be one of 'frozen', 'decay'"),
        (dict(lazy=True), ValueError, r"lazy must be one of"),
        (dict(bias_correction="local"), ValueError, r"bias_correction must be one of"),
    ],
    so.Adagrad: [
        (dict(lr_decay=-0.1), ValueError, r"lr_decay must be in"),
        (dict(eps=-1e-10), ValueError, r"eps must be in"),
        (dict(initial_accumulator_value=-1.0), ValueError,
         r"initial_accumulator_value must be in"),
    ],
    so.RMSprop: [
        (dict(alpha=1.0), ValueError, r"alpha must be in"),
        (dict(alpha=-0.5), ValueError, r"alpha must be in"),
        (dict(momentum=1.0), ValueError, r"momentum must be in"),
        (dict(momentum=-0.1), ValueError, r"momentum must be in"),
        (dict(eps=-1.0), ValueError, r"eps must be in"),
        (dict(lazy="eager"), ValueError, r"lazy must be one of"),
    ],
}
HYPER_CASES = [(cls, *c) for cls in (so.Adam, so.Adagrad, so.RMSprop)
               for c in COMMON_BAD + SPECIFIC_BAD[cls]]


@pytest.mark.parametrize("cls,kw,exc,pattern", HYPER_CASES,
                         ids=[f"{c[0].__name__}-{list(c[1].items())}" for c in HYPER_CASES])
def test_invalid_hyper_parameters_rejected_at_construction(cls, kw, exc, pattern):
    _raises_ours(exc, [pattern], lambda: cls([np.zeros((3, 2), np.float32)], **kw))


@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_invalid_lr_between_steps(opt_id):
    opt = _make(opt_id)
    _warm(opt, 2)
    snap = snapshot(opt)
    for bad in (-0.1, float("nan")):
        _raises_ours(ValueError, [r"lr must be in"], lambda: setattr(opt, "lr", bad))
    assert_unchanged(opt, snap)
    # a bad value written straight into param_groups is caught by the next step
    opt.param_groups[0]["lr"] = -1.0
    snap = snapshot(opt)
    _raises_ours(ValueError, [r"lr must be in"],
                 lambda: _good_step(opt, np.random.default_rng(0)))
    assert_unchanged(opt, snap)


@pytest.mark.parametrize("kw", [dict(lr=float("inf")), dict(lr=0.0, weight_decay=float("inf")),
                                dict(weight_decay=float("inf"))],
                         ids=["lr-inf", "lr0-wd-inf", "wd-inf"])
@pytest.mark.parametrize("cls", [so.Adam, so.Adagrad, so.RMSprop], ids=lambda c: c.__name__)
def test_infinite_lr_or_weight_decay_rejected(cls, kw):
    """An infinite lr or weight_decay can only produce inf/NaN parameters. Today they pass
    ``check_real`` (+inf is allowed when there is no upper bound), and lr=0 with
    weight_decay=inf also passes the ``lr * weight_decay < 1`` guard (0 * inf is NaN), so the
    first step silently turns every touched row into NaN."""
    E = np.ones((3, 2))
    try:
        opt = cls([E], **kw)
        opt.step([so.RowGrad([0], np.ones((1, 2)))])
    except ValueError as e:
        assert re.search(r"(lr|weight_decay)", str(e))
    else:
        pytest.fail(f"{kw} accepted; row 0 became {E[0]}")


# --------------------------------------------------------------------------- malformed sparse

# N: rows of the parameters above: "first" (8, 4) f32, "emb" (N, 4) f32, "bias" (N,) f64


def _raw_csr(indices, indptr, shape, cls=sp.csr_matrix):
    indices = np.asarray(indices)
    return cls((np.ones(indices.size, np.float32), indices, np.asarray(indptr)), shape=shape)


def _indptr(*counts):
    """indptr of N rows whose first rows hold ``counts`` entries (the rest none)."""
    c = list(counts) + [0] * (N - len(counts))
    return np.concatenate([[0], np.cumsum(c)])


def _edited(make, edit):
    m = make()
    edit(m)
    return m


def _set_item(attr, pos, value):
    def edit(m):
        getattr(m, attr)[pos] = value
    return edit


MALFORMED = {
    "csr-column-past-width": ("emb", lambda: _raw_csr([1, 4], _indptr(1, 1), (N, 4))),
    "csr-column-huge": ("emb", lambda: _raw_csr([1, 10**6], _indptr(2), (N, 4))),
    "csr-column-negative": ("emb", lambda: _raw_csr([-5, 1], _indptr(1, 1), (N, 4))),
    "csr-array-column-past-width": ("emb", lambda: _raw_csr([0, 7], _indptr(0, 2), (N, 4),
                                                           sp.csr_array)),
    "csr-indptr-decreasing": ("emb", lambda: _raw_csr([0, 1, 2], [0, 2, 1] + [3] * (N - 2),
                                                      (N, 4))),
    "csr-edited-indices": ("emb", lambda: _edited(lambda: sp.csr_matrix(np.eye(N, 4)),
                                                  _set_item("indices", 0, 9))),
    "csr-edited-indptr-end": ("emb", lambda: _edited(lambda: sp.csr_matrix(np.eye(N, 4)),
                                                     _set_item("indptr", -1, 10**6))),
    "csr-edited-indptr-middle": ("emb", lambda: _edited(lambda: sp.csr_matrix(np.eye(N, 4)),
                                                        _set_item("indptr", 2, 10**6))),
    "csc-row-past-height": ("emb", lambda: sp.csc_matrix(
        (np.ones(2, np.float32), np.array([0, N + 3]), np.array([0, 1, 2, 2, 2])),
        shape=(N, 4))),
    "csr-(1,n)-for-1d-param": ("bias", lambda: sp.csr_matrix(
        (np.ones(2), np.array([2, N]), np.array([0, 2])), shape=(1, N))),
    "coo-edited-row": ("emb", lambda: _edited(lambda: sp.coo_matrix(np.eye(N, 4)),
                                              _set_item("row", 0, N + 5))),
    "coo-edited-col-negative": ("bias", lambda: _edited(lambda: sp.coo_matrix(np.ones((N, 1))),
                                                        _set_item("col", 3, -1))),
}


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_malformed_sparse_gradient_is_refused(opt_id, case):
    """A sparse gradient whose indices contradict its shape raises our ValueError and changes
    nothing, also as the second of three gradients; the optimizer then goes on like a twin."""
    key, factory = MALFORMED[case]
    for form in ("dict", "list"):
        opt, twin = _make(opt_id, form), _make(opt_id, form)
        _warm(opt, 2)
        _warm(twin, 2)
        snap = snapshot(opt)
        rng = np.random.default_rng(0)
        grads = {n: (factory() if n == key else _good(n, rng)) for n in NAMES}
        _raises_ours(ValueError, [re.escape(_name(opt, key)), r"sparse gradient is malformed"],
                       lambda: _step(opt, grads))
        assert_unchanged(opt, snap)
        _good_step(opt, np.random.default_rng(9))
        _good_step(twin, np.random.default_rng(9))
        assert_same_optimizer(opt, twin)


def test_malformed_sparse_messages_name_the_problem():
    opt = so.Adam({"emb": np.zeros((N, 4), np.float32)})
    cases = {
        "csr-column-huge": r"column index 1000000 is out of range for 4 columns",
        "csr-column-negative": r"column index -5 is out of range",
        "csc-row-past-height": rf"row index {N + 3} is out of range for {N} rows",
        "csr-indptr-decreasing": r"indptr must start at 0 and never decrease",
        "csr-edited-indptr-end": r"indptr ends at 1000000 but only 4 indices",
        "coo-edited-row": rf"row index {N + 5} is out of range for {N} rows",
    }
    for case, pattern in cases.items():
        with pytest.raises(ValueError, match=pattern):
            opt.step({"emb": MALFORMED[case][1]()})
    assert opt.state["emb"] == {}


# --------------------------------------------------------------------------- other hostile input


@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_ragged_lists_get_our_message(opt_id):
    opt = _make(opt_id)
    _warm(opt, 1)
    snap = snapshot(opt)
    bad = {
        "values": so.RowGrad([0, 1], [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]]),
        "indices": so.RowGrad([[0], [1, 2]], np.ones((2, 4), np.float32)),
    }
    for what, grad in bad.items():
        _raises_ours(ValueError, [r"parameter 'emb'", rf"gradient {what} are not a "
                                                        r"rectangular array"],
                       lambda: opt.step({"first": _good("first", np.random.default_rng(0)),
                                         "emb": grad}))
    assert_unchanged(opt, snap)


@pytest.mark.usefixtures("force_parallel")
@pytest.mark.parametrize("opt_id", OPT_IDS)
def test_gradient_that_is_a_view_of_its_parameter(opt_id):
    """``RowGrad(idx, E[:k])`` and ``step([w])`` (the gradient of ``0.5 * ||w||**2``) mean the
    parameter's values *before* the step, as for any other array: read in place while other
    rows are written (on several threads), row 1 could be updated with row 0's new value."""
    a, b = _make(opt_id), _make(opt_id)
    _warm(a, 2)
    _warm(b, 2)
    emb_a, emb_b = a.params[1], b.params[1]
    bias_a, bias_b = a.params[2], b.params[2]
    idx = np.arange(N)[::-1].copy()  # row r gets row N-1-r's values: every row a neighbour's
    a.step({"emb": so.RowGrad(idx, emb_a), "bias": so.RowGrad(idx[:6], bias_a[3:9])})
    b.step({"emb": so.RowGrad(idx, emb_b.copy()),
            "bias": so.RowGrad(idx[:6], bias_b[3:9].copy())})
    assert_same_optimizer(a, b)
    a.step({"emb": emb_a, "bias": bias_a, "first": a.params[0]})
    b.step({"emb": emb_b.copy(), "bias": bias_b.copy(), "first": b.params[0].copy()})
    assert_same_optimizer(a, b)


def test_gradient_view_of_parameter_matches_reference():
    """The reference copies every gradient; the optimizer must agree with it."""
    for cls, rcls in ((so.Adam, ref.Adam), (so.Adagrad, ref.Adagrad), (so.RMSprop, ref.RMSprop)):
        p = np.arange(12, dtype=np.float64).reshape(6, 2) + 1
        q = p.copy()
        opt, oracle = cls([p], lr=0.5), rcls([q], lr=0.5)
        for _ in range(3):
            opt.step([so.RowGrad([1, 0, 3, 2], p[:4])])
            oracle.step([so.RowGrad([1, 0, 3, 2], q[:4].copy())])
        np.testing.assert_allclose(p, q, rtol=1e-12, err_msg=cls.__name__)


@pytest.mark.parametrize("cls", [so.Adam, so.Adagrad, so.RMSprop], ids=lambda c: c.__name__)
def test_parameters_sharing_memory_are_refused(cls):
    table = np.zeros((10, 4), np.float32)
    vec = np.zeros(10)
    cases = [
        ([table, table[:]], r"parameter 1 shares memory with parameter 0"),
        ({"a": table[:6], "b": table[4:]}, r"parameter 'b' shares memory with parameter 'a'"),
        ([vec, table, table.reshape(-1)], r"parameter 2 shares memory with parameter 1"),
        ({"late": table[9:], "early": table}, r"parameter 'late' shares memory with "
                                               r"parameter 'early'|parameter 'early' shares "
                                               r"memory with parameter 'late'"),
    ]
    for params, pattern in cases:
        _raises_ours(ValueError, [pattern, r"updated twice"], lambda: cls(params))
    # disjoint views of one table are separate parameters
    base = np.ones((10, 4), np.float32)
    opt = cls({"top": base[:6], "rest": base[6:], "empty": base[6:6]})
    opt.step({"top": so.RowGrad([5], np.ones((1, 4), np.float32)),
              "rest": so.RowGrad([0], np.ones((1, 4), np.float32))})
    assert np.all(base[[5, 6]] != 1) and np.all(np.delete(base, [5, 6], axis=0) == 1)
