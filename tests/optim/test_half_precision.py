"""Half-precision tables: float16 parameters, and bfloat16 bits in uint16 arrays.

The rule (``sparseopt._reference``, "half precision"): a touched row is widened to float32,
updated by the optimizer's float32 rule with float32 state, and rounded back. So each
half-precision optimizer is compared

* bit for bit with ``HalfPrecision(<the float32 sparseopt optimizer>)``: the same float32
  arithmetic, then the reference's rounding rule applied to every row (untouched rows round to
  themselves). This pins the conversions, the rounding, the stochastic hash and that untouched
  rows are never written;
* with ``HalfPrecision(<the NumPy reference>)`` within a few half-precision ulps (the float32
  kernels agree with the reference to rtol 1e-5, not to the bit, and one float32 ulp can move a
  rounding).
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import sparseopt as so
from sparseopt import _reference as R
from sparseopt._kernels import _halfrows as H
from sparseopt.optim import SGD, Adagrad, Adam, RMSprop

KINDS = ["bfloat16", "bfloat16-sr", "float16"]
WIDTHS = [1, 7, 8, 64, 257]
CONFIGS = {
    "adam": (Adam, R.Adam, dict(lr=0.01)),
    "adamw-decay-amsgrad": (Adam, R.Adam, dict(lr=0.01, weight_decay=0.05, lazy="decay",
                                               amsgrad=True)),
    "adam-torch": (Adam, R.Adam, dict(lr=0.01, preset="torch")),
    "adagrad": (Adagrad, R.Adagrad, dict(lr=0.05, weight_decay=0.01)),
    "adagrad-rowwise": (Adagrad, R.Adagrad, dict(lr=0.05, rowwise=True)),
    "rmsprop": (RMSprop, R.RMSprop, dict(lr=0.01, centered=True, momentum=0.5)),
    "rmsprop-decay": (RMSprop, R.RMSprop, dict(lr=0.01, lazy="decay", weight_decay=0.05)),
    "sgd": (SGD, R.SGD, dict(lr=0.1)),
}


def _table(kind, n, d, rng):
    x = rng.standard_normal((n, d)).astype(np.float32)
    if kind == "float16":
        return x.astype(np.float16), {}
    storage = dict(dtype="bfloat16", seed=11,
                   rounding="stochastic" if kind == "bfloat16-sr" else "nearest")
    return R.float32_to_bfloat16(x), storage


def _batches(rng, n, d, steps=6):
    """RowGrad batches with duplicates, and one empty batch."""
    out = []
    for s in range(steps):
        k = 0 if s == 2 else int(rng.integers(1, 2 * n))
        idx = rng.integers(0, n, k)
        out.append(so.RowGrad(idx, rng.standard_normal((k, d)).astype(np.float32)))
    return out


def _bits(a):
    return a.view(np.uint16)


def _run(opt, batches, lazy):
    for b in batches:
        opt.step([b])
    if lazy:
        opt.flush()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("d", WIDTHS)
def test_kernel_is_the_float32_rule_then_rounding(kind, config, d):
    cls, ref_cls, kw = CONFIGS[config]
    rng = np.random.default_rng(d)
    n = 40
    P, storage = _table(kind, n, d, rng)
    start = P.copy()
    Q = P.copy()
    batches = _batches(rng, n, d)
    opt = cls([P], **kw, **storage)
    emu = R.HalfPrecision(cls, [Q], **storage, **kw)
    lazy = kw.get("lazy") == "decay"
    _run(opt, batches, lazy)
    _run(emu, batches, lazy)
    np.testing.assert_array_equal(_bits(P), _bits(Q))
    # the float32 state is the float32 optimizer's, bit for bit
    for name, arr in opt.state[0].items():
        if isinstance(arr, np.ndarray):
            assert arr.dtype in (np.float32, np.int64, np.float64), name
            np.testing.assert_array_equal(arr, emu.state[0][name], err_msg=name)
    # untouched rows are bitwise unchanged (with lazy="decay" flush() may scale them)
    if not (lazy and kw.get("weight_decay")):
        touched = np.unique(np.concatenate([np.asarray(b.indices) for b in batches]))
        untouched = np.setdiff1d(np.arange(n), touched)
        np.testing.assert_array_equal(_bits(P[untouched]), _bits(start[untouched]))
    # and the NumPy reference agrees up to the rounding of the last float32 bit
    S = start.copy()
    spec = R.HalfPrecision(ref_cls, [S], **storage, **{k: v for k, v in kw.items()})
    _run(spec, batches, lazy)
    wide = R.HalfPrecision._widen
    tol = 2.0 ** -6 if kind != "float16" else 2.0 ** -9
    np.testing.assert_allclose(wide(P), wide(S), rtol=tol, atol=tol * np.abs(wide(S)).max())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", ["adam", "adamw-decay-amsgrad", "adagrad-rowwise",
                                    "rmsprop", "sgd"])
def test_one_thread_equals_many(kind, config, force_parallel):
    cls, _, kw = CONFIGS[config]
    rng = np.random.default_rng(3)
    n, d = 300, 17
    P, storage = _table(kind, n, d, rng)
    batches = _batches(rng, n, d)
    results = []
    for threads in (1, 2, 4):
        A = P.copy()
        _run(cls([A], n_threads=threads, **kw, **storage), batches, kw.get("lazy") == "decay")
        results.append(_bits(A))
    for r in results[1:]:
        np.testing.assert_array_equal(results[0], r)


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip_resumes_bit_exact(kind):
    rng = np.random.default_rng(5)
    n, d = 60, 9
    P, storage = _table(kind, n, d, rng)
    batches = _batches(rng, n, d, steps=8)
    kw = dict(lr=0.01, weight_decay=0.01)
    whole = P.copy()
    _run(Adam([whole], **kw, **storage), batches, False)
    first = P.copy()
    opt = Adam([first], **kw, **storage)
    _run(opt, batches[:4], False)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    for arr in saved["state"][0].values():
        if isinstance(arr, np.ndarray) and arr.dtype.kind == "f":
            assert arr.dtype == np.float32
    resumed = first.copy()
    opt2 = Adam([resumed], **kw, **storage)
    opt2.load_state_dict(saved)
    _run(opt2, batches[4:], False)
    np.testing.assert_array_equal(_bits(resumed), _bits(whole))
    # and a pickled optimizer goes on the same way
    third = P.copy()
    opt3 = Adam([third], **kw, **storage)
    _run(opt3, batches[:4], False)
    opt4 = pickle.loads(pickle.dumps(opt3))
    _run(opt4, batches[4:], False)
    np.testing.assert_array_equal(_bits(opt4.params[0]), _bits(whole))


def test_stochastic_rounding_depends_on_seed_and_is_unbiased():
    x = np.full((200, 257), 1.0 + 2.0 ** -10, dtype=np.float32)  # 1/8 of a bfloat16 ulp up
    h = np.empty(x.shape, np.uint16)
    H.narrow(x, h, H.KIND["bfloat16"], True, 7, 3)
    expect = R.float32_to_bfloat16(x, R.rounding_noise(7, 3, np.arange(200), 257))
    np.testing.assert_array_equal(h, expect)
    up = float(np.mean(h == R.float32_to_bfloat16(np.float32(1.0 + 2.0 ** -7))))
    assert abs(up - 0.125) < 0.01, up
    h2 = np.empty_like(h)
    H.narrow(x, h2, H.KIND["bfloat16"], True, 8, 3)
    assert np.mean(h2 != h) > 0.1
    H.narrow(x, h2, H.KIND["bfloat16"], True, 7, 4)
    assert np.mean(h2 != h) > 0.1


def test_conversions_match_numpy_and_the_reference():
    every = np.arange(65536, dtype=np.uint32).astype(np.uint16).reshape(256, 256)
    f16 = H.widen(every, H.KIND["float16"])
    want = every.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(f16), nan)
    np.testing.assert_array_equal(f16[~nan].view(np.uint32), want[~nan].view(np.uint32))
    np.testing.assert_array_equal(H.widen(every, H.KIND["bfloat16"]),
                                  R.bfloat16_to_float32(every))
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=(300, 1000), dtype=np.uint64).astype(np.uint32)
    scaled = (rng.standard_normal((300, 1000))
              * 10.0 ** rng.integers(-9, 6, (300, 1000))).astype(np.float32)
    specials = np.array([[0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65520.0, 65519.996,
                          3.4e38, -3.4e38, 6e-8, 2.9e-8, 3.0e-8, 1e-45]], dtype=np.float32)
    for x in (bits.view(np.float32), scaled, specials):
        x = np.ascontiguousarray(x)
        nan = np.isnan(x)
        h = np.empty(x.shape, np.uint16)
        H.narrow(x, h, H.KIND["float16"], False, 0, 1)
        with np.errstate(over="ignore"):
            want = x.astype(np.float16)
        np.testing.assert_array_equal(h[~nan], want.view(np.uint16)[~nan])
        assert np.isnan(h.view(np.float16)[nan]).all()
        H.narrow(x, h, H.KIND["bfloat16"], False, 0, 1)
        np.testing.assert_array_equal(h, R.float32_to_bfloat16(x))
        assert np.isnan(R.bfloat16_to_float32(h)[nan]).all()
        H.narrow(x, h, H.KIND["bfloat16"], True, 5, 9)
        noise = R.rounding_noise(5, 9, np.arange(x.shape[0]), x.shape[1])
        np.testing.assert_array_equal(h, R.float32_to_bfloat16(x, noise))
        assert np.isnan(R.bfloat16_to_float32(h)[nan]).all()
        inf = np.isinf(x)
        np.testing.assert_array_equal(R.bfloat16_to_float32(h)[inf], x[inf])


def test_state_is_float32_and_half_the_table_memory():
    E = np.zeros((1000, 16), np.float16)
    opt = Adam([E], lr=0.01)
    opt.step([so.RowGrad(np.array([1, 2]), np.ones((2, 16), np.float32))])
    assert opt.state[0]["exp_avg"].dtype == np.float32
    assert E.nbytes == np.zeros((1000, 16), np.float32).nbytes // 2
    assert E[1, 0] != 0 and E[0, 0] == 0


def test_gradient_aliasing_the_table_is_read_before_the_update():
    """Gradient values that are float32 words of the table's own memory are read as they were
    before the step (copied), as for float32 tables."""
    rng = np.random.default_rng(2)
    P = R.float32_to_bfloat16(rng.standard_normal((4, 4)).astype(np.float32) * 1e-3)
    Q = P.copy()
    alias = P.view(np.float32).reshape(2, 4)  # rows 0-3 of P seen as 2 float32 rows
    SGD([P], lr=0.5, dtype="bfloat16").step([so.RowGrad(np.array([2, 3]), alias)])
    copied = Q.view(np.float32).reshape(2, 4).copy()
    SGD([Q], lr=0.5, dtype="bfloat16").step([so.RowGrad(np.array([2, 3]), copied)])
    np.testing.assert_array_equal(P, Q)


@pytest.mark.parametrize("make, exc, match", [
    (lambda: Adam([np.zeros((4, 2), np.float32)], dtype="bfloat16"), TypeError, "uint16"),
    (lambda: Adam([np.zeros((4, 2), np.uint16)]), TypeError, "dtype='bfloat16'"),
    (lambda: Adam([np.zeros((4, 2), np.float16)], rounding="stochastic"), ValueError,
     "bfloat16"),
    (lambda: Adam([np.zeros((4, 2), np.uint16)], dtype="float16"), ValueError, "dtype"),
    (lambda: Adam([np.zeros((4, 2), np.uint16)], dtype=np.float16), ValueError, "dtype"),
    (lambda: Adam([np.zeros((4, 2), np.uint16)], dtype="bfloat16", rounding="up"),
     ValueError, "rounding"),
    (lambda: Adam([np.zeros((4, 2), np.uint16)], dtype="bfloat16", seed=-1), ValueError,
     "seed"),
    (lambda: Adam([np.zeros((4, 2), np.uint16)], dtype="bfloat16", seed=2**32), ValueError,
     "seed"),
    (lambda: Adam([np.zeros((4, 2), np.uint16)], dtype="bfloat16", seed=1.5), TypeError,
     "seed"),
    (lambda: Adam([np.zeros((4, 2), np.int16)], dtype="bfloat16"), TypeError, "uint16"),
    (lambda: Adam([np.zeros((4, 2), np.float16), np.zeros(3, np.uint16)]), TypeError,
     "bfloat16"),
    (lambda: so.Ftrl([np.zeros((4, 2), np.float16)]), TypeError, "float32 or float64"),
    (lambda: so.Ftrl([np.zeros((4, 2), np.uint16)], dtype="bfloat16"), TypeError, "dtype"),
])
def test_bad_storage_is_refused_at_construction(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("grad, exc", [
    (so.RowGrad(np.array([0]), np.ones((1, 3), np.float32)), ValueError),   # wrong width
    (so.RowGrad(np.array([9]), np.ones((1, 2), np.float32)), IndexError),   # out of range
    (so.RowGrad(np.array([0]), np.array([["a", "b"]])), TypeError),         # not numbers
    (np.ones((4, 3), np.float32), ValueError),                               # dense, wrong shape
])
def test_bad_gradients_change_nothing(grad, exc):
    P = R.float32_to_bfloat16(np.ones((4, 2), np.float32))
    before = P.copy()
    opt = Adam([P], dtype="bfloat16")
    with pytest.raises(exc):
        opt.step([grad])
    np.testing.assert_array_equal(P, before)
    assert not opt.state[0]


def test_table_changed_after_construction_is_refused():
    P = np.zeros((4, 2), np.float16)
    opt = Adam([P])
    opt.step([so.RowGrad(np.array([0]), np.ones((1, 2), np.float32))])
    P.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        opt.step([so.RowGrad(np.array([0]), np.ones((1, 2), np.float32))])
    Q = np.zeros((4, 2), np.uint16)
    opt = Adam({"e": Q}, dtype="bfloat16")
    opt._params[0] = np.zeros((4, 2), np.float32)
    with pytest.raises((TypeError, ValueError)):
        opt.step({"e": so.RowGrad(np.array([0]), np.ones((1, 2), np.float32))})


def test_state_dict_of_another_dtype_is_refused():
    P = np.zeros((4, 2), np.float16)
    opt = Adam([P])
    opt.step([so.RowGrad(np.array([0]), np.ones((1, 2), np.float32))])
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].astype(np.float16)
    with pytest.raises(ValueError, match="float32"):
        Adam([np.zeros((4, 2), np.float16)]).load_state_dict(sd)


# ------------------------------------------------------------------ bfloat16 moments (Adam)

MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _weights(kind, x):
    if kind == "float32":
        return x.copy(), {}
    if kind == "float16":
        return x.astype(np.float16), {}
    return R.float32_to_bfloat16(x), dict(dtype="bfloat16")


@pytest.mark.parametrize("weights", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("d", WIDTHS)
def test_bf16_moments_are_the_float32_rule_then_rounding(weights, rounding, amsgrad, d):
    if weights == "float16" and rounding == "stochastic":
        pytest.skip("stochastic rounding is for bfloat16 storage")
    rng = np.random.default_rng(d)
    n = 40
    P, storage = _weights(weights, rng.standard_normal((n, d)).astype(np.float32))
    start, Q = P.copy(), P.copy()
    kw = dict(lr=0.01, amsgrad=amsgrad, weight_decay=0.01, state_dtype="bfloat16",
              rounding=rounding, seed=4, **storage)
    opt = Adam([P], **kw)
    emu = R.HalfPrecision(Adam, [Q], **kw)
    batches = _batches(rng, n, d)
    _run(opt, batches, False)
    _run(emu, batches, False)
    np.testing.assert_array_equal(P.view(np.uint8), Q.view(np.uint8))
    for name in MOMENTS[:3 if amsgrad else 2]:
        arr = opt.state[0][name]
        assert arr.dtype == np.uint16 and arr.nbytes == P.size * 2
        np.testing.assert_array_equal(R.bfloat16_to_float32(arr), emu.state[0][name])
    touched = np.unique(np.concatenate([np.asarray(b.indices) for b in batches]))
    untouched = np.setdiff1d(np.arange(n), touched)
    np.testing.assert_array_equal(P[untouched].view(np.uint8), start[untouched].view(np.uint8))
    assert not opt.state[0]["exp_avg"][untouched].any()


def test_bf16_moments_one_thread_equals_many_and_resume(force_parallel):
    rng = np.random.default_rng(8)
    n, d = 300, 17
    x = rng.standard_normal((n, d)).astype(np.float32)
    batches = _batches(rng, n, d, steps=8)
    kw = dict(lr=0.01, state_dtype="bfloat16", rounding="stochastic", seed=9)
    out = []
    for threads in (1, 2, 4):
        P = x.copy()
        _run(Adam([P], n_threads=threads, **kw), batches, False)
        out.append(P)
    for P in out[1:]:
        np.testing.assert_array_equal(P, out[0])
    first = x.copy()
    opt = Adam([first], **kw)
    _run(opt, batches[:4], False)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    opt2 = Adam([first], **kw)
    opt2.load_state_dict(saved)
    _run(opt2, batches[4:], False)
    np.testing.assert_array_equal(first, out[0])


def test_bf16_moments_bad_settings_and_state_are_refused():
    x = np.zeros((6, 4), np.float32)
    with pytest.raises(ValueError, match="state_dtype"):
        Adam([x], state_dtype="float16")
    with pytest.raises(ValueError, match="lazy='frozen'"):
        Adam([x], state_dtype="bfloat16", lazy="decay")
    with pytest.raises(ValueError, match="float64"):
        Adam([np.zeros((6, 4))], state_dtype="bfloat16")
    opt = Adam([x], state_dtype="bfloat16")
    opt.step([so.RowGrad(np.array([1]), np.ones((1, 4), np.float32))])
    sd = opt.state_dict()
    f32 = {k: (R.bfloat16_to_float32(v) if k in MOMENTS else v)
           for k, v in sd["state"][0].items()}
    with pytest.raises(ValueError, match="uint16"):
        Adam([x.copy()], state_dtype="bfloat16").load_state_dict({"state": {0: f32}})
    bad = dict(sd["state"][0])
    bad["exp_avg_sq"] = R.float32_to_bfloat16(-np.ones((6, 4), np.float32))
    with pytest.raises(ValueError, match="exp_avg_sq"):
        Adam([x.copy()], state_dtype="bfloat16").load_state_dict({"state": {0: bad}})
    bad["exp_avg_sq"] = R.float32_to_bfloat16(np.full((6, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="exp_avg_sq"):
        Adam([x.copy()], state_dtype="bfloat16").load_state_dict({"state": {0: bad}})
    # a replaced moment array of another dtype is refused before the kernel runs
    opt.state[0]["exp_avg"] = np.zeros((6, 4), np.float32)
    with pytest.raises(ValueError, match="exp_avg"):
        opt.step([so.RowGrad(np.array([1]), np.ones((1, 4), np.float32))])


# ------------------------------------------------------------------ sparseopt.torch


@pytest.mark.parametrize("dtype, rounding, state_dtype", [
    ("bfloat16", "nearest", None), ("bfloat16", "stochastic", None),
    ("float16", "nearest", None), ("bfloat16", "stochastic", "bfloat16"),
    ("float32", "stochastic", "bfloat16")])
def test_torch_half_tables_match_the_numpy_optimizer(dtype, rounding, state_dtype):
    torch = pytest.importorskip("torch")
    import io

    import sparseopt.torch as sot
    tdt = getattr(torch, dtype)
    torch.manual_seed(0)
    emb = torch.nn.Embedding(100, 8, sparse=True).to(tdt)
    head = torch.nn.Linear(8, 1)
    twin = emb.weight.detach().clone()
    if dtype == "bfloat16":
        arr, storage = twin.view(torch.int16).numpy().view(np.uint16), dict(dtype="bfloat16")
    else:
        arr, storage = twin.numpy(), {}
    kw = dict(lr=0.01, rounding=rounding, seed=3, state_dtype=state_dtype)
    opt = sot.Adam(list(emb.parameters()) + list(head.parameters()), **kw)
    ref = Adam({"e": arr}, **kw, **storage)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        ids = torch.randint(0, 100, (30,), generator=gen)
        head(emb(ids).float()).sum().backward()
        grad = emb.weight.grad.coalesce()
        assert grad.dtype == tdt  # gradients arrive in the parameter's dtype
        ref.step({"e": so.RowGrad(grad.indices()[0].numpy(), grad.values().float().numpy())})
        opt.step()
        opt.zero_grad()
    w = emb.weight.detach()
    assert torch.equal(w.view(torch.int16) if w.element_size() == 2 else w,
                       twin.view(torch.int16) if w.element_size() == 2 else twin)
    st = opt.state[emb.weight]
    assert st["exp_avg"].dtype == (torch.bfloat16 if state_dtype else torch.float32)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt2 = sot.Adam(list(emb.parameters()) + list(head.parameters()), **kw)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    a, b = opt2.state[emb.weight]["exp_avg"], st["exp_avg"]
    assert torch.equal(a.view(torch.int16), b.view(torch.int16)) if state_dtype else \
        torch.equal(a, b)


def test_half_precision_benchmark_runs():
    pytest.importorskip("torch")
    import sys
    from pathlib import Path
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import half_precision
    rows = half_precision.main(["--quick", "--iters", "6", "--held-out", "2"])
    by = {r["name"]: r for r in rows}
    assert by["bfloat16"]["table_mb"] == pytest.approx(by["float32"]["table_mb"] / 2)
    assert by["float32 + bfloat16 moments (stochastic)"]["state_mb"] == \
        pytest.approx(by["float32"]["state_mb"] / 2, rel=0.05)
    assert all(np.isfinite(r["train"]) for r in rows)
    assert "| float16 |" in half_precision.step_only(
        half_precision.parse(["--rows", "500", "--dim", "8", "--batch", "64", "--iters", "2"]))
