"""Row-wise state split into column groups (``rowwise_tail``): the last columns of a row (a
bias beside factors) keep their own row-wise scalars.

Kernels against the reference over widths, dtypes, lazy modes and duplicate indices; one
thread against several bit for bit; the split against two separately optimised tables bit for
bit; refused settings; ``memory()``; MatrixFactorization's automatic split for its bias column.
"""
import zlib

import numpy as np
import pytest

import sparseopt as so
from sparseopt import _reference as ref

from conftest import assert_bitwise_equal, assert_close, assert_state_matches

CONFIGS = {
    "Adam": (so.Adam, ref.Adam, dict(lr=0.05, rowwise="v")),
    "Adam-amsgrad-decay-wd": (so.Adam, ref.Adam, dict(lr=0.05, rowwise="v", amsgrad=True,
                                                      lazy="decay", weight_decay=0.5)),
    "Adam-torch": (so.Adam, ref.Adam, dict(lr=0.05, rowwise="v", preset="torch")),
    "RMSprop": (so.RMSprop, ref.RMSprop, dict(lr=0.01, rowwise=True)),
    "RMSprop-centered-momentum-decay": (
        so.RMSprop, ref.RMSprop, dict(lr=0.01, rowwise=True, centered=True, momentum=0.9,
                                      lazy="decay", weight_decay=0.5)),
    "Adagrad": (so.Adagrad, ref.Adagrad, dict(lr=0.1, rowwise=True)),
    "Adagrad-wd": (so.Adagrad, ref.Adagrad, dict(lr=0.1, rowwise=True, weight_decay=0.5)),
}
WIDTHS = [2, 7, 8, 64, 257]
N_ROWS = 30


def _params(rng, width, dtype):
    # a table and a 1-D vector (whose tail is 0: one column cannot be split)
    return {"table": rng.normal(size=(N_ROWS, width)).astype(dtype),
            "vector": rng.normal(size=N_ROWS).astype(dtype)}


def _grads(rng, params, dtype, t, tail):
    grads = {}
    for key, p in params.items():
        if t == 3:
            grads[key] = so.RowGrad(np.zeros(0, np.int64),
                                    np.zeros((0,) + p.shape[1:], dtype))
            continue
        idx = rng.integers(0, N_ROWS, size=int(rng.integers(3, 2 * N_ROWS)))
        idx = np.concatenate([idx, idx[:3], [0, N_ROWS - 1]])  # duplicates, edge rows
        g = rng.normal(size=(idx.shape[0],) + p.shape[1:]).astype(dtype)
        if p.ndim == 2:
            g[:, p.shape[1] - tail:] *= 40  # a tail on another scale, as a bias is
        grads[key] = so.RowGrad(idx, g)
    return grads


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("width", WIDTHS, ids=lambda w: f"d{w}")
@pytest.mark.parametrize("duplicates", ["sum", "mean"])
def test_trajectory_matches_reference(config, width, duplicates, dtype):
    cls, oracle_cls, kw = CONFIGS[config]
    tail = 1 if width < 4 else 3
    rng = np.random.default_rng([zlib.crc32(config.encode()), width])
    params = _params(rng, width, dtype)
    mine = {k: v.copy() for k, v in params.items()}
    theirs = {k: v.copy() for k, v in params.items()}
    opt = cls(mine, rowwise_tail=[tail, 0], duplicates=duplicates, **kw)
    oracle = oracle_cls(theirs, rowwise_tail=[tail, 0], duplicates=duplicates, **kw)
    for t in range(1, 13):
        lr = kw["lr"] * (0.3 if t > 6 else 1.0)
        opt.lr = oracle.lr = lr
        grads = _grads(rng, params, dtype, t, tail)
        opt.step(grads)
        oracle.step(grads)
        for key in params:
            assert_close(mine[key], theirs[key], dtype, err_msg=f"step {t} {key}")
            assert_state_matches(opt.state[key], oracle.state[key], dtype,
                                 where=f"step {t} {key}")
    opt.flush()
    oracle.flush()
    for key in params:
        assert_close(mine[key], theirs[key], dtype, err_msg=f"flush {key}")
    scalars = {"Adam": "exp_avg_sq", "RMSprop": "square_avg", "Adagrad": "sum"}
    assert opt.state["table"][scalars[cls.__name__]].shape == (N_ROWS, 2)
    assert opt.state["vector"][scalars[cls.__name__]].shape == (N_ROWS,)


def _run(config, width, dtype, n_threads):
    cls, _, kw = CONFIGS[config]
    rng = np.random.default_rng(7)
    params = _params(np.random.default_rng(1), width, dtype)
    opt = cls(params, rowwise_tail=[1, 0], n_threads=n_threads, **kw)
    for t in range(1, 7):
        opt.step(_grads(rng, params, dtype, t, 1))
    opt.flush()
    return opt


@pytest.mark.usefixtures("force_parallel")
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("width", [2, 17, 64], ids=lambda w: f"d{w}")
def test_thread_counts_bitwise_equal(config, width, dtype):
    one = _run(config, width, dtype, 1)
    for n in (2, 4):
        assert_bitwise_equal(one, _run(config, width, dtype, n), f"1 vs {n} threads")


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("tail", [1, 5])
def test_split_row_is_two_separately_optimised_tables(config, tail, dtype):
    """Each group follows exactly the row-wise rule over its own columns: a (n, d) table
    with tail k updates bit for bit as a (n, d - k) and a (n, k) table with one group each."""
    cls, _, kw = CONFIGS[config]
    rng = np.random.default_rng(3)
    d = 12
    P = rng.normal(size=(N_ROWS, d)).astype(dtype)
    head, tail_tab = P[:, :d - tail].copy(), P[:, d - tail:].copy()
    split = cls([P], rowwise_tail=tail, **kw)
    apart = cls([head, tail_tab], **kw)
    for t in range(1, 9):
        idx = rng.integers(0, N_ROWS, size=20)
        g = rng.normal(size=(20, d)).astype(dtype)
        g[:, d - tail:] *= 50
        split.step([so.RowGrad(idx, g)])
        apart.step([so.RowGrad(idx, np.ascontiguousarray(g[:, :d - tail])),
                    so.RowGrad(idx, np.ascontiguousarray(g[:, d - tail:]))])
    split.flush()
    apart.flush()
    assert np.array_equal(P[:, :d - tail], head)
    assert np.array_equal(P[:, d - tail:], tail_tab)
    name = {"Adam": "exp_avg_sq", "RMSprop": "square_avg", "Adagrad": "sum"}[cls.__name__]
    both = split.state[0][name]
    assert np.array_equal(both[:, 0], apart.state[0][name])
    assert np.array_equal(both[:, 1], apart.state[1][name])


def test_the_split_keeps_the_factor_steps_that_a_shared_scalar_shrinks():
    """A bias gradient 100x the factors' sets a shared row-wise scalar: the factors then move
    about 100x less than with their own scalar."""
    P0 = np.zeros((4, 9), np.float64)
    g = np.full((1, 9), 0.01)
    g[0, -1] = 1.0
    shared, own = P0.copy(), P0.copy()
    so.Adam([shared], lr=0.1, rowwise="v").step([so.RowGrad([2], g)])
    so.Adam([own], lr=0.1, rowwise="v", rowwise_tail=1).step([so.RowGrad([2], g)])
    assert abs(own[2, 0]) == pytest.approx(0.1, rel=1e-6)  # a first Adam step is ~lr
    assert abs(shared[2, 0]) < 0.1 / 30


# -- refused settings --------------------------------------------------------------------------

@pytest.mark.parametrize("cls,on", [(so.Adam, "v"), (so.RMSprop, True), (so.Adagrad, True)])
def test_bad_tails_are_refused_at_construction(cls, on):
    P, b = np.zeros((10, 4), np.float32), np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="needs row-wise state"):
        cls([P], rowwise_tail=1)
    with pytest.raises(ValueError, match="at least one leading column"):
        cls([P], rowwise=on, rowwise_tail=4)
    with pytest.raises(ValueError, match="at least one leading column"):
        cls([P, b], rowwise=on, rowwise_tail=1)  # the 1-D parameter
    with pytest.raises(ValueError, match="one per parameter"):
        cls([P, b], rowwise=on, rowwise_tail=[1])
    for bad in (-1, 1.5, True, "1", [1, None]):
        with pytest.raises(ValueError, match="rowwise_tail"):
            cls([P, b], rowwise=on, rowwise_tail=bad)
    opt = cls([P, b], rowwise=on, rowwise_tail=(1, 0))
    assert opt.param_groups[0]["rowwise_tail"] == (1, 0)


def test_half_precision_tables_are_refused_with_a_tail():
    with pytest.raises(ValueError, match="float32 or float64"):
        so.Adagrad([np.zeros((10, 4), np.float16)], rowwise=True, rowwise_tail=1)
    so.Adagrad([np.zeros((10, 4), np.float16)], rowwise=True)  # one group: allowed


@pytest.mark.parametrize("cls,on,name", [(so.Adam, "v", "exp_avg_sq"),
                                         (so.RMSprop, True, "square_avg"),
                                         (so.Adagrad, True, "sum")])
def test_tail_is_fixed_and_state_round_trips(cls, on, name):
    P = np.zeros((10, 4), np.float32)
    opt = cls([P], rowwise=on, rowwise_tail=1, lr=0.1)
    opt.step([so.RowGrad([1, 2], np.ones((2, 4), np.float32))])
    opt.param_groups[0]["rowwise_tail"] = 0
    before = P.copy()
    with pytest.raises(ValueError, match="rowwise_tail cannot change"):
        opt.step([so.RowGrad([1], np.ones((1, 4), np.float32))])
    assert np.array_equal(P, before)
    opt.param_groups[0]["rowwise_tail"] = 1  # the same setting, written as an int
    opt.step([so.RowGrad([1], np.ones((1, 4), np.float32))])
    sd = opt.state_dict()
    Q = P.copy()
    again = cls([Q], rowwise=on, rowwise_tail=[1], lr=0.1)
    again.load_state_dict(sd)
    assert np.array_equal(again.state[0][name], opt.state[0][name])
    other = cls([P.copy()], rowwise=on, lr=0.1)
    with pytest.raises(ValueError, match="rowwise_tail"):
        other.load_state_dict(sd)


def test_memory_counts_two_scalars_per_split_row():
    P = np.zeros((1000, 65), np.float32)
    opt = so.Adam([P], rowwise="v", rowwise_tail=1)
    before = opt.memory()
    assert before.state == {"exp_avg": 260000, "exp_avg_sq": 8000, "row_step": 8000}
    opt.step([so.RowGrad([3], np.ones((1, 65), np.float32))])
    assert opt.memory() == before


# -- the models --------------------------------------------------------------------------------

def _ratings():
    import scipy.sparse as sp
    X = sp.random(30, 20, density=0.3, random_state=0, format="csr")
    X.data = np.round(X.data * 4 + 1)
    return X


@pytest.mark.parametrize("optimizer,on,name", [("adam", "v", "exp_avg_sq"),
                                               ("rmsprop", True, "square_avg"),
                                               ("adagrad", True, "sum")])
def test_matrix_factorization_splits_off_its_bias_columns(optimizer, on, name):
    from sparseopt.recommend import MatrixFactorization
    kw = dict(n_components=4, optimizer=optimizer, n_epochs=2, random_state=0)
    m = MatrixFactorization(optimizer_params={"rowwise": on}, **kw).fit(_ratings())
    assert m.optimizer_.param_groups[0]["rowwise_tail"] == (1, 1)
    assert m.optimizer_.state[0][name].shape == (30, 2)
    assert m.get_params()["optimizer_params"] == {"rowwise": on}  # the user's dict untouched
    shared = MatrixFactorization(optimizer_params={"rowwise": on, "rowwise_tail": 0},
                                 **kw).fit(_ratings())
    assert shared.optimizer_.state[0][name].shape == (30,)
    plain = MatrixFactorization(optimizer_params={"rowwise": on}, use_biases=False,
                                **kw).fit(_ratings())
    assert plain.optimizer_.param_groups[0]["rowwise_tail"] == (0, 0)


def test_bpr_splits_only_the_item_table():
    from sparseopt.recommend import MatrixFactorization
    X = _ratings()
    X.data[:] = 1.0
    m = MatrixFactorization(n_components=4, loss="bpr", n_epochs=1, random_state=0,
                            optimizer_params={"rowwise": "v"}).fit(X)
    assert m.optimizer_.param_groups[0]["rowwise_tail"] == (0, 1)
    assert m.optimizer_.state[0]["exp_avg_sq"].shape == (30,)
    assert m.optimizer_.state[1]["exp_avg_sq"].shape == (20, 2)


def test_torch_param_group_takes_a_tail():
    torch = pytest.importorskip("torch")
    import sparseopt.torch as sot
    emb = torch.nn.Embedding(20, 6, sparse=True)
    opt = sot.Adam([{"params": [emb.weight], "rowwise_tail": 1}], lr=0.01, rowwise="v")
    emb(torch.tensor([1, 4, 4])).sum().backward()
    opt.step()
    assert tuple(opt.state_dict()["state"][0]["exp_avg_sq"].shape) == (20, 2)
    with pytest.raises(ValueError, match="rowwise_tail"):
        sot.Adam([{"params": [torch.nn.Parameter(torch.zeros(5))], "rowwise_tail": 1}],
                 lr=0.01, rowwise="v")


def test_factorization_machines_split_off_the_linear_weight():
    import scipy.sparse as sp
    from sparseopt.recommend import FMClassifier, FMRegressor
    rng = np.random.default_rng(0)
    X = sp.random(60, 12, density=0.3, random_state=0, format="csr")
    m = FMRegressor(n_components=4, n_epochs=2, random_state=0,
                    optimizer_params={"rowwise": True}).fit(X, rng.normal(size=60))
    assert m.optimizer_.param_groups[0]["rowwise_tail"] == (1, 0)
    assert m.optimizer_.state[0]["sum"].shape == (12, 2)
    shared = FMRegressor(n_components=4, n_epochs=2, random_state=0,
                         optimizer_params={"rowwise": True, "rowwise_tail": 0})
    shared.fit(X, rng.normal(size=60))
    assert shared.optimizer_.state[0]["sum"].shape == (12,)
    # several outputs: a row is one [v, w] block per class, no trailing group to split
    c = FMClassifier(n_components=4, n_epochs=2, random_state=0,
                     optimizer_params={"rowwise": True}).fit(X, rng.integers(0, 3, 60))
    assert c.optimizer_.param_groups[0]["rowwise_tail"] == (0, 0)


def test_a_pickled_optimizer_keeps_its_split():
    import pickle
    P = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    opt = so.RMSprop([P], rowwise=True, rowwise_tail=2, lr=0.1)
    g = so.RowGrad([1, 3], np.ones((2, 5), np.float32))
    opt.step([g])
    again = pickle.loads(pickle.dumps(opt))
    opt.step([g])
    again.step([g])
    assert np.array_equal(opt.params[0], again.params[0])
    assert again.state[0]["square_avg"].shape == (20, 2)
