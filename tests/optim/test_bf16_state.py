"""bfloat16 state for Adagrad and RMSprop (``state_dtype="bfloat16"``), as Adam has it.

Each kernel is compared bit for bit with ``HalfPrecision(<the float32 optimizer>)``: the same
float32 arithmetic with every state array (and a half-precision table) rounded to bfloat16 by
the reference's rule after each step, so untouched rows must keep their bits.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import sparseopt as so
from sparseopt import _reference as R
from sparseopt.optim import Adagrad, RMSprop

WIDTHS = [1, 7, 8, 64, 257]
CONFIGS = {
    "adagrad": (Adagrad, dict(lr=0.05, weight_decay=0.01, lr_decay=0.01)),
    "adagrad-start": (Adagrad, dict(lr=0.05, initial_accumulator_value=0.5, eps=0.0)),
    "rmsprop": (RMSprop, dict(lr=0.01, weight_decay=0.01)),
    "rmsprop-centered-momentum": (RMSprop, dict(lr=0.01, centered=True, momentum=0.5)),
    "rmsprop-tensorflow": (RMSprop, dict(lr=0.01, preset="tensorflow", momentum=0.9)),
}
STATES = ("sum", "square_avg", "grad_avg", "momentum_buffer")


def _weights(kind, x):
    if kind == "float32":
        return x.copy(), {}
    if kind == "float16":
        return x.astype(np.float16), {}
    return R.float32_to_bfloat16(x), dict(dtype="bfloat16")


def _batches(rng, n, d, steps=6, high=None):
    """RowGrad batches with duplicates, and one empty batch (indices below ``high``)."""
    out = []
    for s in range(steps):
        k = 0 if s == 2 else int(rng.integers(1, 2 * n))
        idx = rng.integers(0, n if high is None else high, k)
        out.append(so.RowGrad(idx, rng.standard_normal((k, d)).astype(np.float32)))
    return out


def _run(opt, batches):
    for b in batches:
        opt.step([b])


@pytest.mark.parametrize("weights", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("d", WIDTHS)
def test_bf16_state_is_the_float32_rule_then_rounding(weights, rounding, config, d):
    if weights == "float16" and rounding == "stochastic":
        pytest.skip("stochastic rounding is for bfloat16 storage")
    cls, hyper = CONFIGS[config]
    rng = np.random.default_rng(d)
    n = 40
    P, storage = _weights(weights, rng.standard_normal((n, d)).astype(np.float32))
    start, Q = P.copy(), P.copy()
    kw = dict(state_dtype="bfloat16", rounding=rounding, seed=4, **hyper, **storage)
    opt = cls([P], **kw)
    emu = R.HalfPrecision(cls, [Q], **kw)
    batches = _batches(rng, n, d, high=n - 5)
    _run(opt, batches)
    _run(emu, batches)
    np.testing.assert_array_equal(P.view(np.uint8), Q.view(np.uint8))
    kept = [s for s in STATES if s in opt.state[0]]
    assert kept and set(kept) == {s for s in STATES if s in emu.state[0]}
    for name in kept:
        arr = opt.state[0][name]
        assert arr.dtype == np.uint16 and arr.nbytes == P.size * 2
        np.testing.assert_array_equal(R.bfloat16_to_float32(arr), emu.state[0][name])
    touched = np.unique(np.concatenate([np.asarray(b.indices) for b in batches]))
    untouched = np.setdiff1d(np.arange(n), touched)
    assert untouched.size
    np.testing.assert_array_equal(P[untouched].view(np.uint8), start[untouched].view(np.uint8))
    fresh = cls([np.zeros_like(P)], **kw)
    fresh.step([so.RowGrad(np.zeros(0, np.int64), np.zeros((0, d), np.float32))])
    for name in kept:  # untouched rows keep the start value's bits
        np.testing.assert_array_equal(opt.state[0][name][untouched],
                                      fresh.state[0][name][untouched])


def test_bf16_state_is_close_to_the_numpy_reference():
    rng = np.random.default_rng(3)
    n, d = 50, 8
    for cls, ref_cls, hyper in ((Adagrad, R.Adagrad, dict(lr=0.05)),
                                (RMSprop, R.RMSprop, dict(lr=0.01, centered=True,
                                                          momentum=0.5))):
        x = rng.standard_normal((n, d)).astype(np.float32)
        P, Q = x.copy(), x.copy()
        batches = _batches(rng, n, d)
        _run(cls([P], state_dtype="bfloat16", **hyper), batches)
        _run(ref_cls([Q], **hyper), batches)
        np.testing.assert_allclose(P, Q, rtol=0.05, atol=2e-3)
        assert not np.array_equal(P, x)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_bf16_state_one_thread_equals_many_and_resume(config, force_parallel):
    cls, hyper = CONFIGS[config]
    rng = np.random.default_rng(8)
    n, d = 300, 17
    x = R.float32_to_bfloat16(rng.standard_normal((n, d)).astype(np.float32))
    batches = _batches(rng, n, d, steps=8)
    kw = dict(state_dtype="bfloat16", rounding="stochastic", seed=9, dtype="bfloat16", **hyper)
    out = []
    for threads in (1, 2, 4):
        P = x.copy()
        opt = cls([P], n_threads=threads, **kw)
        _run(opt, batches)
        out.append((P, {k: v.copy() for k, v in opt.state[0].items()
                        if isinstance(v, np.ndarray)}))
    for P, st in out[1:]:
        np.testing.assert_array_equal(P, out[0][0])
        for k, v in st.items():
            np.testing.assert_array_equal(v, out[0][1][k])
    first = x.copy()
    opt = cls([first], **kw)
    _run(opt, batches[:4])
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    for name in STATES:
        if name in saved["state"][0]:
            assert saved["state"][0][name].dtype == np.uint16
    opt2 = cls([first], **kw)
    opt2.load_state_dict(saved)
    _run(opt2, batches[4:])
    np.testing.assert_array_equal(first, out[0][0])


def test_bf16_state_stochastic_rounding_depends_on_the_seed():
    rng = np.random.default_rng(1)
    n, d = 64, 32
    batches = _batches(rng, n, d)
    runs = {}
    for seed in (1, 1, 2):
        P = np.zeros((n, d), np.float32)
        opt = RMSprop([P], lr=0.01, state_dtype="bfloat16", rounding="stochastic", seed=seed)
        _run(opt, batches)
        runs.setdefault(seed, []).append(opt.state[0]["square_avg"].copy())
    np.testing.assert_array_equal(runs[1][0], runs[1][1])
    assert not np.array_equal(runs[1][0], runs[2][0])


def test_bf16_state_bad_settings_and_state_are_refused():
    x = np.zeros((6, 4), np.float32)
    g = so.RowGrad(np.array([1]), np.ones((1, 4), np.float32))
    for cls in (Adagrad, RMSprop):
        with pytest.raises(ValueError, match="state_dtype"):
            cls([x], state_dtype="float16")
        with pytest.raises(ValueError, match="float64"):
            cls([np.zeros((6, 4))], state_dtype="bfloat16")
        with pytest.raises(ValueError, match="rowwise"):
            cls([x], state_dtype="bfloat16", rowwise=True)
    with pytest.raises(ValueError, match="lazy='frozen'"):
        RMSprop([x], state_dtype="bfloat16", lazy="decay")
    # a start that rounds to bfloat16 zero cannot go with eps=0 (0 / 0)
    with pytest.raises(ValueError, match="eps"):
        Adagrad([x], state_dtype="bfloat16", eps=0.0, initial_accumulator_value=1e-45)
    Adagrad([x.copy()], state_dtype="bfloat16", eps=0.0, initial_accumulator_value=1e-3)
    for cls, name, kw in ((Adagrad, "sum", {}),
                          (RMSprop, "square_avg", dict(centered=True, momentum=0.5))):
        opt = cls([x.copy()], state_dtype="bfloat16", **kw)
        opt.step([g])
        sd = opt.state_dict()
        f32 = {k: (R.bfloat16_to_float32(v) if k in STATES else v)
               for k, v in sd["state"][0].items()}
        with pytest.raises(ValueError, match="uint16"):
            cls([x.copy()], state_dtype="bfloat16", **kw).load_state_dict({"state": {0: f32}})
        bad = dict(sd["state"][0])
        bad[name] = R.float32_to_bfloat16(-np.ones((6, 4), np.float32))
        with pytest.raises(ValueError, match=name):
            cls([x.copy()], state_dtype="bfloat16", **kw).load_state_dict({"state": {0: bad}})
        bad[name] = R.float32_to_bfloat16(np.full((6, 4), np.nan, np.float32))
        with pytest.raises(ValueError, match=name):
            cls([x.copy()], state_dtype="bfloat16", **kw).load_state_dict({"state": {0: bad}})
        # a replaced state array of another dtype is refused before the kernel runs
        opt.state[0][name] = np.zeros((6, 4), np.float32)
        with pytest.raises(ValueError, match=name):
            opt.step([g])
    # centred: grad_avg**2 past square_avg is checked on the widened values
    opt = RMSprop([x.copy()], state_dtype="bfloat16", centered=True)
    opt.step([g])
    bad = dict(opt.state_dict()["state"][0])
    bad["grad_avg"] = R.float32_to_bfloat16(np.full((6, 4), 4.0, np.float32))
    with pytest.raises(ValueError, match="grad_avg"):
        RMSprop([x.copy()], state_dtype="bfloat16", centered=True).load_state_dict(
            {"state": {0: bad}})
    # eps=0: a negative bfloat16 accumulator (sign bit set) is refused
    opt = Adagrad([x.copy()], state_dtype="bfloat16", initial_accumulator_value=1.0)
    opt.step([g])
    opt.state[0]["sum"][...] = R.float32_to_bfloat16(-np.ones((6, 4), np.float32))
    opt.param_groups[0]["eps"] = 0.0
    with pytest.raises(ValueError, match="eps"):
        opt.step([g])


@pytest.mark.parametrize("name", ["Adagrad", "RMSprop"])
def test_torch_passes_state_dtype_through(name):
    torch = pytest.importorskip("torch")
    import io

    import sparseopt.torch as sot
    torch.manual_seed(0)
    emb = torch.nn.Embedding(100, 8, sparse=True).to(torch.bfloat16)
    twin = emb.weight.detach().clone()
    arr = twin.view(torch.int16).numpy().view(np.uint16)
    kw = dict(lr=0.01, rounding="stochastic", seed=3, state_dtype="bfloat16")
    opt = getattr(sot, name)(emb.parameters(), **kw)
    ref = getattr(so, name)({"e": arr}, dtype="bfloat16", **kw)
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        ids = torch.randint(0, 100, (30,), generator=gen)
        emb(ids).float().sum().backward()
        grad = emb.weight.grad.coalesce()
        ref.step({"e": so.RowGrad(grad.indices()[0].numpy(), grad.values().float().numpy())})
        opt.step()
        opt.zero_grad()
    assert torch.equal(emb.weight.detach().view(torch.int16), twin.view(torch.int16))
    sname = "sum" if name == "Adagrad" else "square_avg"
    st = opt.state[emb.weight]
    assert st[sname].dtype == torch.bfloat16
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt2 = getattr(sot, name)(emb.parameters(), **kw)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(opt2.state[emb.weight][sname].view(torch.int16),
                       st[sname].view(torch.int16))
    with pytest.raises(ValueError, match="rowwise"):
        getattr(sot, name)(emb.parameters(), rowwise=True, state_dtype="bfloat16")
