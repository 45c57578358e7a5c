"""Row-wise second moments (``Adam(rowwise="v")``, ``RMSprop(rowwise=True)``) and
``Optimizer.memory()``.

The trajectories against the reference (every mode, widths, dtypes, threads, duplicates,
empty batches) are in ``test_kernels_vs_reference.py`` and the save / load round trips in
``test_state_dict.py``; this file checks what is particular to row-wise state: its shapes and
size, the rule itself on hand-computed rows, refused settings and state, and the wrappers.
"""
import numpy as np
import pytest

import sparseopt as so
from sparseopt import _reference as ref
from sparseopt.optim import SGD, MemoryUsage

ROWWISE = {
    "Adam": (so.Adam, dict(lr=0.05, rowwise="v"), dict(lr=0.05)),
    "Adam-amsgrad-decay": (so.Adam, dict(lr=0.05, rowwise="v", amsgrad=True, lazy="decay"),
                           dict(lr=0.05, amsgrad=True, lazy="decay")),
    "RMSprop": (so.RMSprop, dict(lr=0.01, rowwise=True), dict(lr=0.01)),
    "RMSprop-centered-momentum-decay": (
        so.RMSprop, dict(lr=0.01, rowwise=True, centered=True, momentum=0.9, lazy="decay"),
        dict(lr=0.01, centered=True, momentum=0.9, lazy="decay")),
}
SCALAR_STATE = ("exp_avg_sq", "max_exp_avg_sq", "square_avg", "grad_avg")


def _grad(rows, d, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return so.RowGrad(np.asarray(rows), rng.normal(size=(len(rows), d)).astype(dtype))


@pytest.mark.parametrize("config", list(ROWWISE))
def test_second_moments_are_one_scalar_per_row(config):
    cls, kw, _ = ROWWISE[config]
    P = np.zeros((50, 16), np.float32)
    opt = cls([P], **kw)
    opt.step([_grad([1, 3, 3, 49], 16)])
    st = opt.state[0]
    for name, arr in st.items():
        if name in SCALAR_STATE:
            assert arr.shape == (50,) and arr.dtype == np.float32, name
        elif name in ("exp_avg", "momentum_buffer"):
            assert arr.shape == (50, 16), name
    assert any(name in st for name in SCALAR_STATE)


@pytest.mark.parametrize("config", list(ROWWISE))
def test_uniform_magnitude_rows_match_the_elementwise_optimizer(config):
    """When every entry of a row's gradient has the same magnitude, mean(g**2) is each g_j**2:
    the row-wise update is the element-wise one (up to rounding). Centred RMSprop is the
    exception (mean(g) is not g_j), so its sign pattern is kept constant per row."""
    cls, kw_row, kw_full = ROWWISE[config]
    rng = np.random.default_rng(1)
    P0 = rng.normal(size=(20, 8))
    a, b = P0.copy(), P0.copy()
    row_opt, full_opt = cls([a], **kw_row), cls([b], **kw_full)
    for t in range(12):
        rows = rng.choice(20, size=6, replace=False)
        mag = rng.uniform(0.1, 2.0, size=(6, 1))
        sign = rng.choice([-1.0, 1.0], size=(6, 1 if "centered" in config else 8))
        g = so.RowGrad(rows, mag * sign * np.ones((6, 8)))
        row_opt.step([g])
        full_opt.step([g])
    row_opt.flush(), full_opt.flush()
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_adam_rowwise_first_step_by_hand():
    """m = (1-b1) g; v = (1-b2) mean(g**2); a first step (row bias correction) moves the row by
    lr * g / sqrt(mean(g**2)) (eps aside)."""
    P = np.zeros((4, 3))
    opt = so.Adam([P], lr=0.1, rowwise="v", eps=1e-12)
    g = np.array([[1.0, 2.0, -2.0]])
    opt.step([so.RowGrad([2], g)])
    rms = np.sqrt(np.mean(g ** 2))
    np.testing.assert_allclose(P[2], -0.1 * g[0] / rms, rtol=1e-10)
    np.testing.assert_allclose(opt.state[0]["exp_avg_sq"][2], 0.001 * rms ** 2, rtol=1e-12)
    assert not P[[0, 1, 3]].any()


def test_rmsprop_rowwise_centered_by_hand():
    P = np.zeros((3, 2))
    opt = so.RMSprop([P], lr=0.01, alpha=0.9, rowwise=True, centered=True, eps=0.0 + 1e-12)
    g = np.array([[3.0, 1.0]])
    opt.step([so.RowGrad([1], g)])
    v, a = 0.1 * np.mean(g ** 2), 0.1 * np.mean(g)
    np.testing.assert_allclose(opt.state[0]["square_avg"][1], v, rtol=1e-12)
    np.testing.assert_allclose(opt.state[0]["grad_avg"][1], a, rtol=1e-12)
    np.testing.assert_allclose(P[1], -0.01 * g[0] / np.sqrt(v - a * a), rtol=1e-10)


@pytest.mark.parametrize("value", [True, "m", "V", 1, "row", None.__class__])
def test_adam_rowwise_refuses_anything_but_false_and_v(value):
    with pytest.raises(ValueError, match="rowwise must be False or 'v'"):
        so.Adam([np.zeros((3, 2))], rowwise=value)


@pytest.mark.parametrize("value", ["yes", 2, "v"])
def test_rmsprop_rowwise_refuses_non_bools(value):
    with pytest.raises(TypeError, match="rowwise must be True or False"):
        so.RMSprop([np.zeros((3, 2))], rowwise=value)


@pytest.mark.parametrize("cls,on", [(so.Adam, "v"), (so.RMSprop, True)])
def test_rowwise_cannot_change_after_construction(cls, on):
    P = np.zeros((5, 4))
    opt = cls([P], rowwise=on)
    opt.step([_grad([1], 4, dtype=np.float64)])
    before = P.copy()
    opt.param_groups[0]["rowwise"] = False
    with pytest.raises(ValueError, match="rowwise cannot change"):
        opt.step([_grad([1], 4, dtype=np.float64)])
    np.testing.assert_array_equal(P, before)


@pytest.mark.parametrize("cls,on", [(so.Adam, "v"), (so.RMSprop, True)])
def test_state_of_the_other_layout_is_refused_on_load(cls, on):
    P = np.zeros((6, 4), np.float32)
    full, row = cls([P.copy()]), cls([P.copy()], rowwise=on)
    for o in (full, row):
        o.step([_grad([0, 5], 4)])
    sd_full, sd_row = full.state_dict(), row.state_dict()
    with pytest.raises(ValueError, match="rowwise cannot change|has shape"):
        row.load_state_dict(sd_full)
    sd_full["param_groups"] = sd_row["param_groups"]
    with pytest.raises(ValueError, match=r"has shape \(6, 4\).*expected \(6,\)"):
        row.load_state_dict(sd_full)
    with pytest.raises(ValueError, match="rowwise cannot change|has shape"):
        full.load_state_dict(sd_row)


@pytest.mark.parametrize("cls,on,name", [(so.Adam, "v", "exp_avg_sq"),
                                         (so.RMSprop, True, "square_avg")])
def test_scalar_state_replaced_by_a_full_array_is_refused_before_anything_changes(cls, on,
                                                                                  name):
    P = np.zeros((6, 4), np.float32)
    opt = cls([P], rowwise=on)
    opt.step([_grad([0, 5], 4)])
    before = P.copy()
    opt.state[0][name] = np.zeros((6, 4), np.float32)
    with pytest.raises(ValueError):
        opt.step([_grad([0, 5], 4)])
    np.testing.assert_array_equal(P, before)


@pytest.mark.parametrize("config", list(ROWWISE))
def test_nonfinite_rows_raise_or_are_skipped(config):
    cls, kw, _ = ROWWISE[config]
    P = np.ones((5, 3))
    g = so.RowGrad([1, 2], np.array([[1.0, np.nan, 0.0], [1.0, 1.0, 1.0]]))
    with pytest.raises(FloatingPointError):
        cls([P], **kw).step([g])
    np.testing.assert_array_equal(P, 1.0)
    opt = cls([P], nonfinite="skip", **kw)
    opt.step([g])
    opt.flush()
    assert (P[1] == 1.0).all() and (P[2] != 1.0).all() and np.isfinite(P).all()


def test_rowwise_with_one_column_is_elementwise():
    """A 1-D parameter (one element per row): mean(g**2) is g**2."""
    rng = np.random.default_rng(3)
    a, b = np.zeros(30), np.zeros(30)
    ra, fa = so.Adam([a], rowwise="v", lr=0.1), so.Adam([b], lr=0.1)
    for _ in range(8):
        g = so.RowGrad(rng.integers(0, 30, 12), rng.normal(size=12))
        ra.step([g]), fa.step([g])
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_reference_keeps_scalar_state():
    P = np.zeros((4, 5))
    r = ref.Adam([P], rowwise="v")
    r.step([so.RowGrad([1], np.ones((1, 5)))])
    assert r.state[0]["exp_avg_sq"].shape == (4, 1)


# -- memory() ----------------------------------------------------------------------------------

def test_rowwise_adam_state_is_at_most_0_52_of_adam_at_width_64():
    P = np.zeros((1000, 64), np.float32)
    full, row = so.Adam([P]).memory(), so.Adam([P], rowwise="v").memory()
    assert full.state_per_row == 2 * 64 * 4 + 8  # m, v and the row counter
    assert row.state_per_row == 64 * 4 + 4 + 8
    assert row.state_total / full.state_total <= 0.52


@pytest.mark.parametrize("make", [
    lambda p: so.Adam(p, lazy="decay", amsgrad=True, weight_decay=0.01),
    lambda p: so.Adam(p, rowwise="v"),
    lambda p: so.RMSprop(p, rowwise=True, centered=True, momentum=0.5, lazy="decay"),
    lambda p: so.Adagrad(p, rowwise=True), lambda p: so.Ftrl(p), lambda p: SGD(p),
], ids=["Adam", "Adam-rowwise", "RMSprop-rowwise", "Adagrad-rowwise", "Ftrl", "SGD"])
def test_memory_before_the_first_step_equals_the_arrays_after_it(make):
    params = {"emb": np.zeros((40, 7), np.float32), "bias": np.zeros(40)}
    opt = make(params)
    before = opt.memory()
    opt.step({"emb": _grad([1, 2], 7), "bias": so.RowGrad([3], [1.0])})
    after = opt.memory()
    assert isinstance(after, MemoryUsage)
    assert before == after
    arrays = sum(a.nbytes for st in opt.state.values() for a in st.values()
                 if isinstance(a, np.ndarray))
    assert after.state_total == arrays
    assert after.params == 40 * 7 * 4 + 40 * 8
    assert after.n_rows == 80 and after.n_elements == 40 * 8
    assert set(after.per_param) == {"emb", "bias"}
    assert sum(sum(d.values()) for d in after.per_param.values()) == after.state_total


def test_memory_reads_the_arrays_dtype_and_shape():
    """Figures come from the state arrays themselves: a replaced array of another dtype shows
    its own size."""
    P = np.zeros((10, 4), np.float32)
    opt = so.Adagrad([P])
    opt.step([_grad([1], 4)])
    opt.state[0]["sum"] = np.zeros((10, 4), np.float64)
    assert opt.memory().state == {"sum": 320}


# -- wrappers ----------------------------------------------------------------------------------

def test_matrix_factorization_takes_rowwise_through_optimizer_params():
    import scipy.sparse as sp
    from sparseopt.recommend import MatrixFactorization
    rng = np.random.default_rng(0)
    X = sp.random(30, 20, density=0.3, random_state=0, format="csr")
    X.data = np.round(X.data * 4 + 1)
    m = MatrixFactorization(n_components=4, optimizer="adam", n_epochs=2, random_state=0,
                            optimizer_params={"rowwise": "v"}).fit(X)
    st = m.optimizer_.state[0]
    # the bias column keeps its own second moment (rowwise_tail): two per row
    assert st["exp_avg_sq"].shape == (m.user_table_.shape[0], 2)
    assert np.isfinite(m.predict(rng.integers(0, 30, 5), rng.integers(0, 20, 5))).all()


def test_torch_wrappers_pass_rowwise_through():
    torch = pytest.importorskip("torch")
    import sparseopt.torch as sot
    emb = torch.nn.Embedding(20, 6, sparse=True)
    w = torch.nn.Parameter(torch.zeros(6))
    for make, name in [(lambda p: sot.Adam(p, lr=0.01, rowwise="v"), "exp_avg_sq"),
                       (lambda p: sot.AdamW(p, lr=0.01, rowwise="v"), "exp_avg_sq"),
                       (lambda p: sot.RMSprop(p, lr=0.01, rowwise=True), "square_avg")]:
        opt = make([emb.weight, w])
        (emb(torch.tensor([1, 4, 4])).sum(0) * w).sum().backward()
        opt.step()
        opt.zero_grad()
        st = opt.state_dict()["state"]
        assert tuple(st[0][name].shape) == (20,)
        assert tuple(st[0]["exp_avg" if name == "exp_avg_sq" else name].shape)[0] == 20


def test_torch_sparseadam_state_is_refused_by_a_rowwise_adam():
    torch = pytest.importorskip("torch")
    import sparseopt.torch as sot
    emb = torch.nn.Embedding(10, 3, sparse=True)
    ta = torch.optim.SparseAdam([emb.weight], lr=0.01)
    emb(torch.tensor([1, 2])).sum().backward()
    ta.step()
    opt = sot.Adam([emb.weight], lr=0.01, preset="torch", rowwise="v")
    with pytest.raises(ValueError, match="rowwise=False"):
        opt.load_state_dict(ta.state_dict())


@pytest.mark.parametrize("make", [lambda W: so.Adam([W], rowwise="v"),
                                  lambda W: so.RMSprop([W], rowwise=True)],
                         ids=["Adam", "RMSprop"])
def test_a_rowwise_optimizer_swapped_into_a_linear_estimator_is_refused(make):
    """The linear estimators build their own optimizer (no row-wise option); their lazy
    penalty reads one second moment per coefficient, so a row-wise one put in its place is
    refused before a kernel reads it."""
    import warnings
    from sparseopt.linear_model import SGDClassifier
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 5)), rng.integers(0, 3, 60)
    m = SGDClassifier(optimizer="adam", random_state=0, alpha=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.partial_fit(X, y, classes=[0, 1, 2])
        m.optimizer_ = make(m.optimizer_.params[0])
        with pytest.raises(TypeError, match="S must be a 2-D ndarray"):
            m.partial_fit(X, y)


def test_the_guide_table_of_state_bytes_matches_memory():
    """docs/guide/optimizer_state.rst holds the output of ``rowwise_state.py memory --rst``,
    computed from ``opt.memory()``: regenerate it when state layouts change."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    page = root / "docs" / "guide" / "optimizer_state.rst"
    if not page.exists():
        pytest.skip("docs are not shipped with this copy")
    from benchmarks.rowwise_state import rst_memory_table
    assert rst_memory_table() in page.read_text()


@pytest.mark.parametrize("make", [
    lambda: so.Adam([np.zeros((10, 4), np.uint16)], rowwise="v", dtype="bfloat16"),
    lambda: so.Adam([np.zeros((10, 4), np.float16)], rowwise="v"),
    lambda: so.Adam([np.zeros((10, 4), np.float32)], rowwise="v", state_dtype="bfloat16"),
    lambda: so.RMSprop([np.zeros((10, 4), np.float16)], rowwise=True),
], ids=["adam-bf16", "adam-fp16", "adam-bf16-state", "rmsprop-fp16"])
def test_rowwise_refuses_half_precision_storage(make):
    # the half-precision kernels have no row-wise Adam / RMSprop twin: refused at construction
    with pytest.raises(ValueError, match="rowwise"):
        make()
