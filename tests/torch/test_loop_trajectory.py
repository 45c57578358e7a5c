"""preset="torch" follows torch.optim's trajectory on the DLRM-style model of
benchmarks/torch_loop.py: 100 steps, sparse tables and dense MLPs, the parameters after every
step within float32 rounding of torch's."""
import numpy as np
import pytest

pytest.importorskip("torch.optim")
import torch  # noqa: E402

import sparseopt.torch as sot  # noqa: E402
from benchmarks import torch_loop  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")

STEPS = 100
# Both sides run in float32 and order its operations differently: torch coalesces a sparse
# gradient (its own summation order for repeated ids) and updates with whole-tensor ops,
# sparseopt merges repeats in batch order and fuses each row's update. A repeated id whose
# gradients nearly cancel keeps a sum made mostly of rounding, and Adam normalises it to a
# step of up to lr, so Adam's bound is a fraction of lr (measured on this model: at most
# 7e-5 by step 100, lr 1e-2); Adagrad does not normalise (measured: at most 2e-6).
TOL = {"adam": dict(rtol=1e-4, atol=2e-4), "adagrad": dict(rtol=1e-4, atol=1e-5)}


@pytest.fixture(scope="module")
def setup():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    args = torch_loop.parse(["--rows", "3000,500", "--batch", "64", "--iters", str(STEPS),
                             "--warmup", "0", "--threads", "1"])
    batches = torch_loop.make_batches(args, np.random.default_rng(0))
    yield args, batches
    torch.set_num_threads(before)


def trajectories(args, batches, make):
    torch.manual_seed(args.seed)
    model = torch_loop.DLRM(args.rows, args.dim, args.n_dense, args.hidden)
    start = [p.detach().clone() for p in model.parameters()]
    opts = make(model)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    out = []
    for batch in batches:
        torch_loop.iteration(model, opts, batch, loss_fn)
        out.append([p.detach().clone() for p in model.parameters()])
    return start, out


@pytest.mark.parametrize("rule", ["adam", "adagrad"])
def test_preset_torch_follows_torch_for_100_steps(setup, rule):
    args, batches = setup
    if rule == "adam":
        ref = torch_loop.CONTENDERS["torch SparseAdam+Adam"]
        ours = torch_loop.CONTENDERS["sparseopt Adam preset=torch"]
    else:
        ref = torch_loop.CONTENDERS["torch Adagrad"]
        ours = lambda m, lr, t: [sot.Adagrad(m.parameters(), lr=lr["adagrad"],  # noqa: E731
                                             preset="torch", n_threads=t)]
    start, a = trajectories(args, batches, lambda m: ref(m, args.lr, 1))
    _, b = trajectories(args, batches, lambda m: ours(m, args.lr, 1))
    for step, (pa, pb) in enumerate(zip(a, b)):
        for j, (x, y) in enumerate(zip(pa, pb)):
            np.testing.assert_allclose(y.numpy(), x.numpy(), **TOL[rule],
                                       err_msg=f"step {step + 1}, parameter {j}")
    # every parameter moved far beyond the tolerance, so the comparison can fail
    for x0, x in zip(start, a[-1]):
        assert float((x - x0).abs().max()) > 20 * TOL[rule]["atol"]


def test_the_default_rule_departs_from_torch(setup):
    """The comparison above tells rules apart: the default per-row bias correction leaves
    SparseAdam's trajectory by far more than the tolerance."""
    args, batches = setup
    _, a = trajectories(args, batches,
                        lambda m: torch_loop.CONTENDERS["torch SparseAdam+Adam"](m, args.lr, 1))
    _, b = trajectories(args, batches,
                        lambda m: torch_loop.CONTENDERS["sparseopt Adam"](m, args.lr, 1))
    worst = max(float((x - y).abs().max()) for x, y in zip(a[-1], b[-1]))
    assert worst > 20 * TOL["adam"]["atol"]
