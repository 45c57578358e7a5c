"""``preset="torch"`` against the installed PyTorch optimizers (docs/semantics.md, "Presets").

The gradients are what ``nn.Embedding(sparse=True)`` hands to an optimizer: *uncoalesced*
sparse COO tensors whose indices repeat. They are built two ways: directly with
``torch.sparse_coo_tensor(idx[None], vals, size)`` (never coalesced), and from a real embedding
forward/backward. sparseopt sees the same indices and values as a ``RowGrad`` (duplicates
included) and must end where torch ends after 20+ steps in which rows are first touched at
different times, with an empty gradient in between.

Tolerances, not bit equality: torch and sparseopt order the float operations differently
(torch's SparseAdam forms ``m + (1-b1)*(g-m)``, sparseopt ``b1*m + (1-b1)*g``).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

# torch's own Adagrad builds sparse tensors without choosing invariant checks.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The tensors here are tiny: torch's thread team only spins (and fights sparseopt's)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

import sparseopt as so  # noqa: E402

N_ROWS = 40
N_STEPS = 24
EMPTY_STEP = 6  # a step whose gradient holds no rows: t advances, nothing moves
# float32 trajectories: torch and our kernels may contract a*b+c differently (FMA) on some CPUs,
# so 20+ steps of momentum drift by a few ulps of the largest entries.
TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
# Moments are sums with cancellation: an absolute floor of a few ulps of O(1) terms.
STATE_TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-11, atol=1e-14)}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def _batch_indices(rng, step):
    """Indices of one step: rows become eligible over time (row r from step r // 2), Zipf-like
    popularity, drawn with replacement so duplicates are common."""
    if step == EMPTY_STEP:
        return np.empty(0, dtype=np.int64)
    eligible = min(N_ROWS, 8 + 2 * step)
    weights = 1.0 / np.arange(1, eligible + 1)
    idx = rng.choice(eligible, size=12, p=weights / weights.sum())
    idx[0] = idx[-1] = idx[1]  # at least one index three times, including far apart
    return idx.astype(np.int64)


class _CooSource:
    """Gradients built with ``torch.sparse_coo_tensor`` and never coalesced."""

    def __init__(self, weight, seed):
        self.weight = weight
        self.rng = np.random.default_rng(seed)

    def grad(self, step):
        idx = _batch_indices(self.rng, step)
        shape = (idx.shape[0],) + tuple(self.weight.shape[1:])
        vals = self.rng.normal(size=shape).astype(self.weight.detach().numpy().dtype)
        g = torch.sparse_coo_tensor(torch.from_numpy(idx)[None], torch.from_numpy(vals),
                                    tuple(self.weight.shape), check_invariants=True)
        assert idx.shape[0] == 0 or not g.is_coalesced()
        self.weight.grad = g
        return idx, vals


class _EmbeddingSource:
    """Gradients from ``nn.Embedding(sparse=True)`` forward/backward (the real thing)."""

    def __init__(self, weight, seed):
        self.rng = np.random.default_rng(seed)
        self.emb = torch.nn.Embedding(N_ROWS, weight.shape[1], sparse=True,
                                      dtype=weight.dtype)
        with torch.no_grad():
            self.emb.weight.copy_(weight)
        self.weight = self.emb.weight
        self.target = torch.from_numpy(
            self.rng.normal(size=(12, weight.shape[1]))).to(weight.dtype)

    def grad(self, step):
        idx = _batch_indices(self.rng, step)
        self.weight.grad = None
        out = self.emb(torch.from_numpy(idx))
        loss = 0.5 * ((out - self.target[: idx.shape[0]]) ** 2).sum()
        loss.backward()
        g = self.weight.grad
        assert g.is_sparse and (idx.shape[0] == 0 or not g.is_coalesced())
        gi = g._indices()[0].numpy().copy()
        gv = g._values().detach().numpy().copy()
        np.testing.assert_array_equal(gi, idx)  # uncoalesced: one value per lookup, in order
        return gi, gv


def _run_pair(torch_cls, torch_kw, so_cls, so_kw, dtype, width, source, seed=0):
    """Run a torch optimizer and a sparseopt one side by side; return both tables."""
    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(N_ROWS, width, generator=gen, dtype=TORCH_DTYPE[dtype])
    weight = torch.nn.Parameter(w0.clone())
    src = (_CooSource if source == "coo" else _EmbeddingSource)(weight, seed)
    weight = src.weight
    topt = torch_cls([weight], **torch_kw)
    # Width 1 runs sparseopt on a 1-D parameter (the (k,) values path); torch keeps (n, 1).
    mine = w0.numpy().copy()
    if width == 1:
        mine = mine.reshape(-1).copy()
    opt = so_cls([mine], preset="torch", **so_kw)
    saw_duplicates = False
    for step in range(N_STEPS):
        idx, vals = src.grad(step)
        saw_duplicates |= np.unique(idx).shape[0] < idx.shape[0]
        if width == 1:
            vals = vals.reshape(-1)
        opt.step([so.RowGrad(idx, vals)])
        topt.step()
    assert saw_duplicates
    return topt, weight.detach().numpy().reshape(mine.shape), opt, mine


ADAM_CONFIGS = [dict(), dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)]
ADAGRAD_CONFIGS = [dict(lr=0.1), dict(lr=0.05, lr_decay=0.05, initial_accumulator_value=0.1,
                                      eps=1e-6)]


@pytest.mark.parametrize("source", ["coo", "embedding"])
@pytest.mark.parametrize("width", [1, 7, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hyper", ADAM_CONFIGS, ids=["default", "custom"])
def test_adam_preset_torch_matches_sparse_adam(hyper, dtype, width, source):
    topt, expected, opt, got = _run_pair(torch.optim.SparseAdam, hyper, so.Adam, hyper, dtype,
                                         width, source)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, expected, **TOL[dtype])
    tstate = topt.state[topt.param_groups[0]["params"][0]]
    st = opt.state[0]
    assert st["step"] == int(tstate["step"]) == N_STEPS
    for name in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_allclose(st[name].reshape(-1), tstate[name].numpy().reshape(-1),
                                   **STATE_TOL[dtype], err_msg=name)


@pytest.mark.parametrize("source", ["coo", "embedding"])
@pytest.mark.parametrize("width", [1, 7, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hyper", ADAGRAD_CONFIGS, ids=["default", "decay-init-eps"])
def test_adagrad_preset_torch_matches_torch_adagrad(hyper, dtype, width, source):
    topt, expected, opt, got = _run_pair(torch.optim.Adagrad, dict(hyper, foreach=False),
                                         so.Adagrad, hyper, dtype, width, source)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, expected, **TOL[dtype])
    tstate = topt.state[topt.param_groups[0]["params"][0]]
    st = opt.state[0]
    assert st["step"] == int(tstate["step"]) == N_STEPS
    np.testing.assert_allclose(st["sum"].reshape(-1), tstate["sum"].numpy().reshape(-1),
                               **STATE_TOL[dtype])


def test_adam_row_step_count_matches_torch_with_skipped_parameter():
    """A parameter given no gradient (``None``) does not advance its step, as in torch where
    ``p.grad is None`` skips it; the other parameter's t keeps counting."""
    gen = torch.Generator().manual_seed(3)
    a0 = torch.randn(10, 4, generator=gen)
    b0 = torch.randn(10, 4, generator=gen)
    ta, tb = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())
    topt = torch.optim.SparseAdam([ta, tb], lr=0.01)
    a, b = a0.numpy().copy(), b0.numpy().copy()
    opt = so.Adam([a, b], lr=0.01, preset="torch")
    rng = np.random.default_rng(3)
    for step in range(20):
        idx = rng.integers(0, 10, size=5)
        vals = rng.normal(size=(5, 4)).astype(np.float32)
        ta.grad = torch.sparse_coo_tensor(torch.from_numpy(idx)[None], torch.from_numpy(vals),
                                          (10, 4), check_invariants=True)
        tb.grad = None if step % 3 else torch.sparse_coo_tensor(
            torch.from_numpy(idx)[None], torch.from_numpy(vals), (10, 4),
            check_invariants=True)
        opt.step([so.RowGrad(idx, vals), None if step % 3 else so.RowGrad(idx, vals)])
        topt.step()
    assert opt.state[0]["step"] == 20 and opt.state[1]["step"] == 7
    np.testing.assert_allclose(a, ta.detach().numpy(), **TOL[np.float32])
    np.testing.assert_allclose(b, tb.detach().numpy(), **TOL[np.float32])


# --------------------------------------------------------------------------- RMSprop


def _rowgrad_steps(rng, n_rows, width, dtype, n_steps, *, dense_every=None):
    """RowGrad batches touching few rows, rows first touched late; duplicates included."""
    out = []
    for step in range(n_steps):
        if dense_every is not None and step % dense_every == 0:
            idx = np.arange(n_rows)
        else:
            eligible = min(n_rows, 4 + step)
            idx = rng.integers(0, eligible, size=6)
            idx[-1] = idx[0]
        shape = (idx.shape[0],) if width == 1 else (idx.shape[0], width)
        out.append(so.RowGrad(idx, rng.normal(size=shape).astype(dtype)))
    return out


def _dense(g, shape, dtype):
    d = np.zeros(shape, dtype=dtype)
    np.add.at(d, g.indices, g.values)
    return d


@pytest.mark.parametrize("width", [1, 7, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", [
    dict(), dict(centered=True), dict(centered=True, alpha=0.9, eps=1e-6, lr=0.003),
    dict(weight_decay=0.1),
], ids=["plain", "centered", "centered-custom", "decoupled-wd"])
def test_rmsprop_decay_flush_equals_dense_torch(variant, dtype, width):
    """``lazy="decay"`` + ``flush()`` is a dense RMSprop that saw zero gradients on untouched
    rows (docs/semantics.md, "Lazy modes"). Decoupled weight decay is emulated on the torch
    side by multiplying the whole table by (1 - lr*wd) before each step."""
    rng = np.random.default_rng(11)
    n = 30
    shape = (n,) if width == 1 else (n, width)
    p0 = rng.normal(size=shape).astype(dtype)
    wd = variant.get("weight_decay", 0.0)
    torch_kw = {k: v for k, v in variant.items() if k != "weight_decay"}
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = torch.optim.RMSprop([tp], foreach=False, **torch_kw)
    mine = p0.copy()
    opt = so.RMSprop([mine], preset="torch", lazy="decay", **variant)
    grads = _rowgrad_steps(rng, n, width, dtype, 25)
    for step, g in enumerate(grads):
        opt.step([g])
        with torch.no_grad():
            if wd:
                tp.mul_(1.0 - topt.param_groups[0]["lr"] * wd)
        tp.grad = torch.from_numpy(_dense(g, shape, dtype))
        topt.step()
        if step == 12:
            opt.flush()  # a flush in the middle changes nothing about the trajectory
            np.testing.assert_allclose(mine, tp.detach().numpy(), **TOL[dtype])
    opt.flush()
    np.testing.assert_allclose(mine, tp.detach().numpy(), **TOL[dtype])
    tstate = topt.state[tp]
    np.testing.assert_allclose(opt.state[0]["square_avg"], tstate["square_avg"].numpy(),
                               **STATE_TOL[dtype])
    if variant.get("centered"):
        np.testing.assert_allclose(opt.state[0]["grad_avg"], tstate["grad_avg"].numpy(),
                                   **STATE_TOL[dtype])


def test_rmsprop_decay_without_flush_differs_from_dense_only_in_state():
    """Before ``flush()`` untouched rows' state is stale (by design); params already agree
    when there is no weight decay."""
    rng = np.random.default_rng(5)
    p0 = rng.normal(size=(20, 3))
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = torch.optim.RMSprop([tp], foreach=False)
    mine = p0.copy()
    opt = so.RMSprop([mine], preset="torch", lazy="decay")
    for g in _rowgrad_steps(rng, 20, 3, np.float64, 10):
        opt.step([g])
        tp.grad = torch.from_numpy(_dense(g, (20, 3), np.float64))
        topt.step()
    np.testing.assert_allclose(mine, tp.detach().numpy(), **TOL[np.float64])
    assert not np.allclose(opt.state[0]["square_avg"], topt.state[tp]["square_avg"].numpy(),
                           rtol=1e-12, atol=0)
    opt.flush()
    np.testing.assert_allclose(opt.state[0]["square_avg"], topt.state[tp]["square_avg"].numpy(),
                               **STATE_TOL[np.float64])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("grad_form", ["dense", "rowgrad-all-rows"])
@pytest.mark.parametrize("variant", [
    dict(momentum=0.9), dict(momentum=0.5, centered=True, alpha=0.95, lr=0.003),
], ids=["momentum", "momentum-centered"])
@pytest.mark.parametrize("lazy", ["frozen", "decay"])
def test_rmsprop_momentum_dense_gradients_equal_torch(lazy, variant, grad_form, dtype):
    rng = np.random.default_rng(21)
    shape = (16, 7)
    p0 = rng.normal(size=shape).astype(dtype)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = torch.optim.RMSprop([tp], foreach=False, **variant)
    mine = p0.copy()
    opt = so.RMSprop([mine], preset="torch", lazy=lazy, **variant)
    for _ in range(22):
        g = rng.normal(size=shape).astype(dtype)
        if grad_form == "dense":
            opt.step([g])
        else:
            perm = rng.permutation(shape[0])
            opt.step([so.RowGrad(perm, g[perm])])
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
    opt.flush()
    np.testing.assert_allclose(mine, tp.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(opt.state[0]["momentum_buffer"],
                               topt.state[tp]["momentum_buffer"].numpy(), **STATE_TOL[dtype])


# --------------------------------------------------------------------------- eps placement


def test_adam_global_frozen_without_preset_differs_from_sparse_adam_only_by_eps():
    """``bias_correction="global", lazy="frozen"`` without the preset adds eps to the
    *corrected* sqrt(v_hat) (Kingma & Ba), torch adds it to the raw sqrt(v): the tables differ,
    by an eps-sized amount, while ``preset="torch"`` (same run) agrees to rounding."""
    gen = torch.Generator().manual_seed(1)
    w0 = torch.randn(N_ROWS, 7, generator=gen, dtype=torch.float64)
    weight = torch.nn.Parameter(w0.clone())
    src = _CooSource(weight, 1)
    topt = torch.optim.SparseAdam([weight], lr=0.01)
    kernel_form = w0.numpy().copy()
    torch_form = w0.numpy().copy()
    opt = so.Adam([kernel_form], lr=0.01, bias_correction="global", lazy="frozen")
    opt_torch = so.Adam([torch_form], lr=0.01, preset="torch")
    for step in range(N_STEPS):
        idx, vals = src.grad(step)
        opt.step([so.RowGrad(idx, vals)])
        opt_torch.step([so.RowGrad(idx, vals)])
        topt.step()
    theirs = weight.detach().numpy()
    np.testing.assert_allclose(torch_form, theirs, **TOL[np.float64])
    diff = np.abs(kernel_form - theirs).max()
    assert 1e-11 < diff < 1e-2 * 0.01, diff  # present, and below 1% of one lr-sized step
