"""sparseopt.torch against torch.optim, in real training loops (docs/architecture.md, "PyTorch").

Models mix a sparse ``nn.Embedding``, a sparse ``nn.EmbeddingBag`` with ``per_sample_weights``
and ``padding_idx``, one without either (mode="mean"), and dense layers, so every step holds
uncoalesced sparse COO gradients (duplicates included) and dense ones. Tolerances, not bit equality, against torch: torch and
sparseopt order the float operations differently (see tests/optim/test_torch_presets.py).
Between sparseopt runs (save/load, threads, replaced memory) results must be bitwise equal.
"""
import io

import numpy as np
import pytest

# "torch.optim", not "torch": without PyTorch, tests/ on sys.path would make this folder an
# importable (empty) namespace package named torch
pytest.importorskip("torch.optim")
import torch  # noqa: E402

import sparseopt.torch as sot  # noqa: E402
from sparseopt.optim import _base  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")

N_ROWS, DIM, BATCH = 50, 6, 16
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-11, atol=1e-13)}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Net(torch.nn.Module):
    def __init__(self, dtype=torch.float32, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = torch.nn.Embedding(N_ROWS, DIM, sparse=True)
        self.bag = torch.nn.EmbeddingBag(N_ROWS, DIM, mode="sum", sparse=True, padding_idx=0)
        self.bag2 = torch.nn.EmbeddingBag(N_ROWS, DIM, mode="mean", sparse=True)
        self.lin = torch.nn.Linear(3 * DIM, 1)
        self.to(dtype)

    def sparse_params(self):
        return [self.emb.weight, self.bag.weight, self.bag2.weight]

    def dense_params(self):
        return list(self.lin.parameters())

    def forward(self, ids, bag_ids, offsets, psw):
        x = torch.cat([self.emb(ids), self.bag(bag_ids, offsets, per_sample_weights=psw),
                       self.bag2(bag_ids.flip(0), offsets)], 1)
        return self.lin(x).squeeze(1)


def batches(n_steps, dtype=torch.float32, seed=1):
    """Zipf-like ids (rows first touched late, many duplicates), one bag of 3 ids per sample,
    padding index 0 among them; an empty-ish step is not needed, every step has lookups."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in range(n_steps):
        hi = min(N_ROWS, 10 + 3 * s)
        ids = (torch.rand(BATCH, generator=g) ** 3 * hi).long()
        bag = (torch.rand(3 * BATCH, generator=g) ** 2 * hi).long()
        offsets = torch.arange(0, 3 * BATCH, 3)
        psw = torch.rand(3 * BATCH, generator=g, dtype=dtype)
        y = torch.rand(BATCH, generator=g, dtype=dtype)
        out.append((ids, bag, offsets, psw, y))
    return out


def train(model, opts, data, scheduler=None):
    for ids, bag, offsets, psw, y in data:
        for o in opts:
            o.zero_grad()
        loss = ((model(ids, bag, offsets, psw) - y) ** 2).mean()
        loss.backward()
        assert model.emb.weight.grad.is_sparse and not model.emb.weight.grad.is_coalesced()
        for o in opts:
            o.step()
        if scheduler is not None:
            for s in scheduler:
                s.step()
    return model


def assert_close(a, b, dtype):
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(x.detach().numpy(), y.detach().numpy(), **TOL[dtype],
                                   err_msg=name)


def assert_equal(a, b):
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(x, y), name


def moved(model, seed=0):
    return any(not torch.equal(p, q) for p, q in
               zip(model.parameters(), Net(model.emb.weight.dtype, seed).parameters()))


DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_adam_preset_torch_matches_sparse_adam_and_adam(dtype):
    """Sparse tables under preset="torch" = SparseAdam; a dense group with eps_mode="corrected"
    (every row touched every step, global correction) = torch.optim.Adam."""
    data = batches(12, dtype)
    ref = Net(dtype)
    train(ref, [torch.optim.SparseAdam(ref.sparse_params(), lr=0.05),
                torch.optim.Adam(ref.dense_params(), lr=0.05)], data)
    ours = Net(dtype)
    opt = sot.Adam([{"params": ours.sparse_params()},
                    {"params": ours.dense_params(), "eps_mode": "corrected"}],
                   lr=0.05, preset="torch")
    train(ours, [opt], data)
    assert moved(ours)
    assert_close(ours, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_adam_default_dense_matches_torch_adam(dtype):
    """The default rules (per-row correction) on dense gradients are torch.optim.Adam's."""
    data = batches(8, dtype)
    ref, ours = Net(dtype), Net(dtype)
    train(ref, [torch.optim.Adam(ref.dense_params(), lr=0.02)], data)
    train(ours, [sot.Adam(ours.dense_params(), lr=0.02)], data)
    assert_close(ours, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_adamw_matches_torch_adamw(dtype):
    data = batches(8, dtype)
    ref, ours = Net(dtype), Net(dtype)
    train(ref, [torch.optim.AdamW(ref.dense_params(), lr=0.02, weight_decay=0.1)], data)
    train(ours, [sot.AdamW(ours.dense_params(), lr=0.02, weight_decay=0.1)], data)
    assert_close(ours, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_adagrad_matches_torch_adagrad(dtype):
    """Sparse and dense parameters in one optimizer each; lr_decay and an initial
    accumulator exercise every hyper-parameter torch's sparse path has."""
    data = batches(12, dtype)
    kw = dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)
    ref, ours = Net(dtype), Net(dtype)
    train(ref, [torch.optim.Adagrad(ref.parameters(), **kw)], data)
    train(ours, [sot.Adagrad(ours.parameters(), preset="torch", **kw)], data)
    assert moved(ours)
    assert_close(ours, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sgd_matches_torch_sgd(dtype):
    data = batches(10, dtype)
    ref, ours = Net(dtype), Net(dtype)
    train(ref, [torch.optim.SGD(ref.parameters(), lr=0.1)], data)
    train(ours, [sot.SGD(ours.parameters(), lr=0.1)], data)
    assert_close(ours, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rmsprop_matches_torch_rmsprop_dense(dtype):
    data = batches(10, dtype)
    kw = dict(lr=0.01, momentum=0.5, centered=True)
    ref, ours = Net(dtype), Net(dtype)
    train(ref, [torch.optim.RMSprop(ref.dense_params(), **kw)], data)
    train(ours, [sot.RMSprop(ours.dense_params(), preset="torch", **kw)], data)
    assert_close(ours, ref, dtype)


# ------------------------------------------------------------------------- lr schedulers

SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0 / (1 + e)),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1,
                                                                total_steps=20),
    "CyclicLR": lambda o: torch.optim.lr_scheduler.CyclicLR(o, 0.01, 0.1, step_size_up=3),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_lr_schedulers_drive_the_step(name):
    """Every scheduler writes param_groups[i]["lr"] (OneCycleLR and CyclicLR also the
    momentum / betas): sparseopt must follow it as torch's optimizer does."""
    data = batches(10)
    ref, ours = Net(), Net()
    if name in ("OneCycleLR", "CyclicLR"):  # they cycle the momentum: SGD has none here
        ref_opts = [torch.optim.SparseAdam(ref.sparse_params(), lr=0.05),
                    torch.optim.Adam(ref.dense_params(), lr=0.05)]
        opt = sot.Adam([{"params": ours.sparse_params()},
                        {"params": ours.dense_params(), "eps_mode": "corrected"}],
                       lr=0.05, preset="torch")
    else:
        ref_opts = [torch.optim.SGD(ref.parameters(), lr=0.05)]
        opt = sot.SGD(ours.parameters(), lr=0.05)
    train(ref, ref_opts, data, [SCHEDULERS[name](o) for o in ref_opts])
    sched = SCHEDULERS[name](opt)
    train(ours, [opt], data, [sched])
    assert [g["lr"] for g in opt.param_groups] == [ref_opts[0].param_groups[0]["lr"]] * \
        len(opt.param_groups)
    assert_close(ours, ref, torch.float32)


def test_lr_is_read_at_every_step():
    w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = sot.SGD([w], lr=1.0)
    for lr in (1.0, 0.5, 0.0, 2.0):
        opt.param_groups[0]["lr"] = lr
        before = w.detach().clone()
        w.grad = torch.ones(3, dtype=torch.float64)
        opt.step()
        assert torch.equal(w.detach(), before - lr)


# --------------------------------------------------------------------- save / load

CONFIGS = {
    "Adam": (sot.Adam, dict(lr=0.05)),
    "Adam-torch": (sot.Adam, dict(lr=0.05, preset="torch")),
    "Adam-decay-amsgrad": (sot.Adam, dict(lr=0.05, lazy="decay", amsgrad=True,
                                          weight_decay=0.01)),
    "AdamW": (sot.AdamW, dict(lr=0.05)),
    "Adagrad": (sot.Adagrad, dict(lr=0.1)),
    "Adagrad-rowwise": (sot.Adagrad, dict(lr=0.1, rowwise=True)),
    "RMSprop-decay": (sot.RMSprop, dict(lr=0.01, momentum=0.9, centered=True, lazy="decay")),
    "Adam-rowwise-decay": (sot.Adam, dict(lr=0.05, rowwise="v", lazy="decay", amsgrad=True)),
    "RMSprop-rowwise-centered": (sot.RMSprop, dict(lr=0.01, rowwise=True, centered=True,
                                                   momentum=0.9)),
    "SGD": (sot.SGD, dict(lr=0.1)),
}


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_save_load_resume_is_bit_exact(config):
    cls, kw = CONFIGS[config]
    data = batches(14)
    a = Net()
    opt_a = cls(a.parameters(), **kw)
    sched_a = torch.optim.lr_scheduler.StepLR(opt_a, step_size=4, gamma=0.5)
    train(a, [opt_a], data[:6], [sched_a])
    saved = _roundtrip({"model": a.state_dict(), "opt": opt_a.state_dict(),
                        "sched": sched_a.state_dict()})
    train(a, [opt_a], data[6:], [sched_a])

    b = Net(seed=123)  # other weights and no state until loaded
    opt_b = cls(b.parameters(), **kw)
    sched_b = torch.optim.lr_scheduler.StepLR(opt_b, step_size=4, gamma=0.5)
    b.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    sched_b.load_state_dict(saved["sched"])
    train(b, [opt_b], data[6:], [sched_b])
    assert_equal(a, b)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i in sa["state"]:
        for k, v in sa["state"][i].items():
            w = sb["state"][i][k]
            assert (torch.equal(v, w) if isinstance(v, torch.Tensor) else v == w), (i, k)


def test_state_dict_tensors_share_the_optimizer_state():
    m = Net()
    opt = sot.Adam(m.parameters(), lr=0.05)
    train(m, [opt], batches(2))
    sd = opt.state_dict()
    exp_avg = sd["state"][0]["exp_avg"]
    assert isinstance(exp_avg, torch.Tensor) and exp_avg.shape == m.emb.weight.shape
    before = exp_avg.clone()
    train(m, [opt], batches(1, seed=5))
    assert not torch.equal(before, exp_avg)  # by reference, as torch.optim does
    assert opt.state[m.emb.weight]["exp_avg"] is exp_avg


def test_load_state_dict_is_checked_before_anything_changes():
    m = Net()
    opt = sot.Adam(m.parameters(), lr=0.05)
    train(m, [opt], batches(3))
    good = _roundtrip(opt.state_dict())
    bad = _roundtrip(opt.state_dict())
    bad["state"][4]["exp_avg_sq"] = -bad["state"][4]["exp_avg_sq"].abs() - 1
    bad["param_groups"][0]["lr"] = 0.5
    before = {k: {n: (v.clone() if isinstance(v, torch.Tensor) else v) for n, v in s.items()}
              for k, s in opt.state_dict()["state"].items()}
    with pytest.raises(ValueError, match="exp_avg_sq"):
        opt.load_state_dict(bad)
    assert opt.param_groups[0]["lr"] == 0.05
    after = opt.state_dict()["state"]
    for k, s in before.items():
        for n, v in s.items():
            assert torch.equal(v, after[k][n]) if isinstance(v, torch.Tensor) else v == after[k][n]
    wrong = _roundtrip(good)
    wrong["state"][0]["exp_avg"] = wrong["state"][0]["exp_avg"][:-1]
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(wrong)
    with pytest.raises(ValueError, match="param groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    with pytest.raises(TypeError):
        opt.load_state_dict([1, 2])
    opt.load_state_dict(good)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_continue_a_sparse_adam_run(dtype):
    data = batches(12, dtype)
    ref = Net(dtype)
    sparse = torch.optim.SparseAdam(ref.sparse_params(), lr=0.05)
    train(ref, [sparse], data[:5])
    model_sd = _roundtrip(ref.state_dict())
    opt_sd = _roundtrip(sparse.state_dict())
    train(ref, [sparse], data[5:])

    ours = Net(dtype, seed=9)
    ours.load_state_dict(model_sd)
    opt = sot.Adam(ours.sparse_params(), lr=0.001, preset="torch")
    opt.load_state_dict(opt_sd)
    assert opt.param_groups[0]["lr"] == 0.05
    train(ours, [opt], data[5:])
    assert_close(ours, ref, dtype)

    with pytest.raises(ValueError, match="preset='torch'"):
        sot.Adam(Net(dtype).sparse_params()).load_state_dict(opt_sd)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_continue_a_torch_adagrad_run(dtype):
    data = batches(12, dtype)
    ref = Net(dtype)
    ada = torch.optim.Adagrad(ref.parameters(), lr=0.1, lr_decay=0.01)
    train(ref, [ada], data[:5])
    model_sd, opt_sd = _roundtrip(ref.state_dict()), _roundtrip(ada.state_dict())
    train(ref, [ada], data[5:])
    ours = Net(dtype, seed=9)
    ours.load_state_dict(model_sd)
    opt = sot.Adagrad(ours.parameters())
    opt.load_state_dict(opt_sd)
    train(ours, [opt], data[5:])
    assert_close(ours, ref, dtype)

    wd = _roundtrip(opt_sd)
    wd["param_groups"][0]["weight_decay"] = 0.1
    with pytest.raises(ValueError, match="weight_decay"):
        sot.Adagrad(Net(dtype).parameters()).load_state_dict(wd)


def test_torch_adam_state_is_refused_clearly():
    m = Net()
    adam = torch.optim.Adam(m.dense_params())
    train(m, [adam], batches(1))
    with pytest.raises(ValueError, match="torch.optim.Adam"):
        sot.Adam(m.dense_params()).load_state_dict(adam.state_dict())


# ------------------------------------------------------- parameters whose memory changes

def _step(opt, p, rows=(1, 3, 1)):
    p.grad = torch.sparse_coo_tensor(torch.tensor([list(rows)]),
                                     torch.ones(len(rows), p.shape[1], dtype=p.dtype), p.shape)
    opt.step()


def test_replaced_data_is_followed():
    """``p.data = t`` and ``torch.utils.swap_tensors`` give the parameter other memory: the
    next step must update that memory, with the state it had."""
    ref = torch.nn.Parameter(torch.randn(8, 3, dtype=torch.float64))
    p = torch.nn.Parameter(ref.detach().clone())
    opt_ref, opt = sot.Adam([ref], lr=0.1), sot.Adam([p], lr=0.1)
    _step(opt_ref, ref), _step(opt, p)
    old = p.data
    p.data = p.data.clone()
    _step(opt_ref, ref), _step(opt, p)
    assert torch.equal(p, ref) and not torch.equal(old, p.data)
    if hasattr(torch.utils, "swap_tensors"):
        other = torch.nn.Parameter(p.detach().clone())
        torch.utils.swap_tensors(p, other)
        _step(opt_ref, ref), _step(opt, p)
        assert torch.equal(p, ref)


def test_module_load_state_dict_assign_with_swap_is_followed():
    if not hasattr(torch.__future__, "set_swap_module_params_on_conversion"):
        pytest.skip("this torch has no swap_module_params_on_conversion")
    m, ref = Net(dtype=torch.float64), Net(dtype=torch.float64)
    opt, opt_ref = sot.Adam(m.parameters(), lr=0.05), sot.Adam(ref.parameters(), lr=0.05)
    data = batches(4, torch.float64)
    train(m, [opt], data[:2]), train(ref, [opt_ref], data[:2])
    weight = m.emb.weight
    before = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        m.load_state_dict({k: v.clone() for k, v in m.state_dict().items()}, assign=True)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(before)
    assert m.emb.weight is weight  # the same Parameter object, new memory
    train(m, [opt], data[2:]), train(ref, [opt_ref], data[2:])
    assert_equal(m, ref)


def test_module_load_state_dict_assign_without_swap_is_not_silent():
    """Plain assign=True puts new Parameter objects in the module: the optimizer (any torch
    optimizer) holds the old ones, which get no gradient. The first such step warns."""
    m = Net(dtype=torch.float64)
    opt = sot.Adam(m.parameters(), lr=0.05)
    data = batches(3, torch.float64)
    train(m, [opt], data[:1])
    m.load_state_dict({k: v.clone() for k, v in m.state_dict().items()}, assign=True)
    with pytest.warns(RuntimeWarning, match="assign=True"):
        train(m, [opt], data[1:2])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(m, [opt], data[2:])  # once per optimizer
    fresh = sot.Adam(m.parameters(), lr=0.05)
    before = m.emb.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(m, [fresh], data[2:])
    assert not torch.equal(before, m.emb.weight)


def test_replaced_data_of_another_shape_or_kind_is_refused():
    p = torch.nn.Parameter(torch.zeros(8, 3))
    opt = sot.Adam([p], lr=0.1)
    _step(opt, p)
    p.data = torch.zeros(9, 3)
    with pytest.raises(ValueError, match="changed from shape"):
        _step(opt, p)
    p.data = torch.zeros(3, 8).t()
    with pytest.raises(ValueError, match="not contiguous"):
        _step(opt, p)
    p.data = torch.zeros(8, 3)
    _step(opt, p)


# ------------------------------------------------------------------------------ errors

def test_bad_parameters_are_refused_clearly():
    with pytest.raises(ValueError, match="stochastic.*bfloat16"):
        sot.Adam([torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))],
                 rounding="stochastic")
    with pytest.raises(ValueError, match="rounding"):
        sot.Adagrad([torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))], rounding="up")
    with pytest.raises(TypeError, match="float32 or float64"):
        sot.Adam([torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))])
    with pytest.raises(ValueError, match="requires_grad=False"):
        sot.Adam([torch.zeros(3)])
    with pytest.raises(ValueError, match="not contiguous"):
        sot.Adam([torch.nn.Parameter(torch.zeros(4, 3).t())])
    with pytest.raises(ValueError, match="device meta"):
        sot.Adam([torch.nn.Parameter(torch.zeros(4, 3, device="meta"))])
    with pytest.raises(ValueError, match="lr"):
        sot.Adam([torch.nn.Parameter(torch.zeros(3))], lr=-1.0)
    with pytest.raises(ValueError, match="preset"):
        sot.Adam([torch.nn.Parameter(torch.zeros(3))], preset="keras")
    with pytest.raises(ValueError, match="empty"):
        sot.SGD([])
    table = torch.zeros(10, 2)
    a, b = torch.nn.Parameter(table), torch.nn.Parameter(table[:5])
    with pytest.raises(ValueError, match="shares memory"):
        sot.Adam([a, b])  # each would be updated twice per step
    opt = sot.Adam([a])
    with pytest.raises(ValueError, match="shares memory"):
        opt.add_param_group({"params": [b]})
    assert len(opt.param_groups) == 1
    sot.Adam([torch.nn.Parameter(table[:5]), torch.nn.Parameter(table[5:])])  # disjoint: fine


def test_cuda_parameters_are_refused():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (the device check is tested with device='meta')")
    with pytest.raises(ValueError, match="device cuda"):
        sot.Adam([torch.nn.Parameter(torch.zeros(3, device="cuda"))])


def test_a_bad_group_is_not_added():
    m = Net()
    opt = sot.Adam(m.sparse_params())
    with pytest.raises(ValueError, match="lazy"):
        opt.add_param_group({"params": m.dense_params(), "lazy": "sometimes"})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": m.dense_params(), "lr": 0.5})
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["lr"] == 0.5
    train(m, [opt], batches(2))
    assert moved(m)


def test_a_refused_step_changes_nothing():
    """The first parameter's gradient is fine, the second's has a NaN: nothing moves."""
    a = torch.nn.Parameter(torch.zeros(5, 2))
    b = torch.nn.Parameter(torch.zeros(5, 2))
    opt = sot.Adam([a, b], lr=0.1)
    a.grad = torch.ones(5, 2)
    b.grad = torch.sparse_coo_tensor(torch.tensor([[1, 2]]),
                                     torch.tensor([[1.0, float("nan")], [1.0, 1.0]]), (5, 2))
    with pytest.raises(FloatingPointError):
        opt.step()
    assert not a.any() and not b.any() and not opt.state_dict()["state"]
    opt.param_groups[0]["lazy"] = "decay"  # it decides which state is kept: fixed
    b.grad = torch.ones(5, 2)
    with pytest.raises(ValueError, match="lazy cannot change"):
        opt.step()
    assert not a.any() and not b.any()
    opt.param_groups[0]["lazy"] = "frozen"
    opt.step()
    assert a.all() and b.all()


# --------------------------------------------------------- shapes, hooks, threads, zero_grad

def test_parameters_of_any_shape():
    """0-d and 3-d parameters are viewed as (1,) and (n, rest); their state is shown in the
    parameter's shape."""
    s = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
    c = torch.nn.Parameter(torch.ones(2, 3, 4, dtype=torch.float64))
    v = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = sot.Adam([s, c, v], lr=0.1)
    s.grad, c.grad = torch.tensor(2.0, dtype=torch.float64), torch.ones(2, 3, 4,
                                                                        dtype=torch.float64)
    v.grad = torch.sparse_coo_tensor(torch.tensor([[4, 1, 4]]),
                                     torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64), (6,))
    opt.step()
    sd, cd, vd = s.detach(), c.detach(), v.detach()
    assert abs(float(sd) - 0.9) < 1e-9 and torch.allclose(cd, torch.full_like(cd, 0.9))
    assert float(vd[4]) == pytest.approx(-0.1) and float(vd[1]) == pytest.approx(-0.1)
    assert vd[0] == 0
    assert opt.state[c]["exp_avg"].shape == c.shape and opt.state[s]["exp_avg"].shape == ()
    assert opt.state[v]["row_step"].tolist() == [0, 1, 0, 0, 1, 0]


def test_fully_sparse_2d_gradient():
    p = torch.nn.Parameter(torch.zeros(4, 3, dtype=torch.float64))
    q = torch.nn.Parameter(torch.zeros(4, 3, dtype=torch.float64))
    opt_p, opt_q = sot.Adagrad([p], lr=0.5), sot.Adagrad([q], lr=0.5)
    g = torch.sparse_coo_tensor(torch.tensor([[1, 1, 3], [0, 0, 2]]),
                                torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64), (4, 3))
    p.grad, q.grad = g, g.to_dense()
    opt_p.step()
    opt_q.step()
    # a fully sparse gradient touches its rows (the whole row), the dense one every row
    assert torch.equal(p[1], q[1]) and torch.equal(p[3], q[3])


def test_step_hooks_closure_and_zero_grad():
    m = Net()
    opt = sot.Adam(m.parameters(), lr=0.05)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    ids, bag, offsets, psw, y = batches(1)[0]

    def closure():
        opt.zero_grad()
        loss = ((m(ids, bag, offsets, psw) - y) ** 2).mean()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == ["pre", "post"] and loss.requires_grad
    opt.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    closure()
    opt.zero_grad(set_to_none=False)  # a sparse gradient zeroed in place: an empty step
    before = [p.detach().clone() for p in m.parameters()]
    opt.step()
    assert opt.state[m.emb.weight]["step"] == 2
    assert torch.equal(before[0], m.emb.weight)


def test_one_and_two_threads_are_bitwise_equal(monkeypatch):
    monkeypatch.setattr(_base, "PARALLEL_MIN_ELEMENTS", 0)
    data = batches(8)
    runs = []
    for n in (1, 2):
        m = Net()
        train(m, [sot.Adam(m.parameters(), lr=0.05, lazy="decay", n_threads=n)], data)
        runs.append(m)
    assert_equal(*runs)


@pytest.mark.parametrize("config", ["Adam-decay-amsgrad", "Adagrad-rowwise", "RMSprop-decay"])
def test_deepcopy_and_pickle_continue_bit_exactly(config):
    """copy.deepcopy / pickle of a model with its optimizer (torch.save of whole objects):
    the copy trains on exactly as the original does, and independently of it."""
    import copy
    import pickle
    cls, kw = CONFIGS[config]
    data = batches(10)
    a = Net()
    opt_a = cls(a.parameters(), **kw)
    train(a, [opt_a], data[:4])
    b, opt_b = copy.deepcopy((a, opt_a))
    c, opt_c = pickle.loads(pickle.dumps((a, opt_a)))
    assert opt_b.param_groups[0]["params"][0] is b.emb.weight
    train(a, [opt_a], data[4:])
    assert not torch.equal(a.emb.weight, b.emb.weight)  # independent copies
    train(b, [opt_b], data[4:])
    train(c, [opt_c], data[4:])
    assert_equal(a, b)
    assert_equal(a, c)
