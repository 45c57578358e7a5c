"""Plain SGD (``sparseopt.optim.SGD``, the optimizer of the estimators' ``optimizer="sgd"``)
against its NumPy reference over the usual grid: dtypes, index dtypes, row widths 1, 7,
8, 64, 257, thread counts (bitwise), duplicates, empty batches, every gradient form; untouched
rows bitwise unchanged; bad input changes nothing."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from sparseopt import _reference as ref
from sparseopt.optim import SGD, RowGrad

from conftest import assert_bitwise_equal, assert_close

SGD_WIDTHS = [1, 7, 8, 64, 257]


def _trajectory(opt_cls, dtype, index_dtype, width, n_threads=None, duplicates="sum", seed=0):
    rng = np.random.default_rng(seed)
    n_rows = 90
    table = rng.normal(size=(n_rows, width)).astype(dtype)
    vector = rng.normal(size=n_rows).astype(dtype)
    kw = {} if n_threads is None else {"n_threads": n_threads}
    opt = opt_cls({"table": table, "vector": vector}, lr=0.05, duplicates=duplicates, **kw)
    for t in range(1, 8):
        opt.lr = 0.05 / t
        grads = {}
        for name, p in (("table", table), ("vector", vector)):
            shape = p.shape[1:]
            if t == 3:
                grads[name] = RowGrad(np.array([], dtype=index_dtype),
                                      np.zeros((0,) + shape, dtype=dtype))
            elif t == 5:
                dense = np.zeros((n_rows,) + shape, dtype=dtype)
                dense[rng.integers(0, n_rows, 7)] = rng.normal(size=(7,) + shape)
                g = sp.csr_matrix(dense.reshape(n_rows, -1))
                grads[name] = g if p.ndim == 2 else sp.csr_matrix(dense.reshape(1, -1))
            elif t == 6:
                grads[name] = rng.normal(size=p.shape).astype(dtype)
            else:
                k = 3 * n_rows
                idx = (rng.zipf(1.3, size=k) % (n_rows // 2)).astype(index_dtype)
                grads[name] = RowGrad(idx, rng.normal(size=(k,) + shape).astype(dtype))
        opt.step(grads)
    return opt, table, vector


@pytest.mark.parametrize("duplicates", ["sum", "mean"])
@pytest.mark.parametrize("width", SGD_WIDTHS, ids=lambda w: f"d{w}")
def test_sgd_matches_reference(dtype, index_dtype, width, duplicates):
    opt, table, vector = _trajectory(SGD, dtype, index_dtype, width, duplicates=duplicates)
    r, rtable, rvector = _trajectory(ref.SGD, dtype, index_dtype, width, duplicates=duplicates)
    assert_close(table, rtable, dtype)
    assert_close(vector, rvector, dtype)
    assert opt.state["table"]["step"] == r.state["table"]["step"] == 7


@pytest.mark.usefixtures("force_parallel")
@pytest.mark.parametrize("width", SGD_WIDTHS, ids=lambda w: f"d{w}")
def test_sgd_thread_counts_bitwise_equal(dtype, width):
    runs = [_trajectory(SGD, dtype, np.int64, width, n_threads=n)[0] for n in (1, 2, 4)]
    assert_bitwise_equal(runs[0], runs[1], "1 vs 2 threads")
    assert_bitwise_equal(runs[0], runs[2], "1 vs 4 threads")


def test_sgd_rows_untouched_and_exact(dtype):
    rng = np.random.default_rng(1)
    E = rng.normal(size=(50, 8)).astype(dtype)
    before = E.copy()
    idx = np.array([4, 9, 4, 30])
    vals = rng.normal(size=(4, 8)).astype(dtype)
    SGD([E], lr=0.25).step([RowGrad(idx, vals)])
    touched = np.zeros(50, bool)
    touched[idx] = True
    assert E[~touched].tobytes() == before[~touched].tobytes()
    lr = dtype.type(0.25)
    np.testing.assert_array_equal(E[4], before[4] - lr * (vals[0] + vals[2]))
    np.testing.assert_array_equal(E[30], before[30] - lr * vals[3])


def test_sgd_bad_input_changes_nothing():
    E = np.ones((10, 3))
    b = np.ones(10)
    opt = SGD([E, b], lr=0.1)
    with pytest.raises(IndexError, match="out of range"):
        opt.step([RowGrad([1, 10], np.ones((2, 3))), RowGrad([0], np.ones(1))])
    bad = np.ones((2, 3))
    bad[1, 2] = np.nan
    with pytest.raises(FloatingPointError):
        opt.step([RowGrad([1, 2], bad), RowGrad([0], np.ones(1))])
    with pytest.raises(FloatingPointError):
        opt.step([RowGrad([0], np.ones((1, 3))), RowGrad([1, 2], np.array([1.0, np.inf]))])
    with pytest.raises(ValueError):
        SGD([E], lr=-1.0)
    assert (E == 1).all() and (b == 1).all() and opt.state[0] == {} and opt.state[1] == {}
    skip = SGD([E], lr=0.1, nonfinite="skip")
    skip.step([RowGrad([1, 2], bad)])
    assert (E[2] == 1).all() and np.allclose(E[1], 0.9)


def test_sgd_state_dict_and_pickle():
    E = np.zeros((6, 2), dtype=np.float32)
    opt = SGD([E], lr=0.5)
    opt.step([RowGrad([1], np.ones((1, 2), np.float32))])
    sd = opt.state_dict()
    assert sd["optimizer"] == "SGD" and sd["state"] == {0: {"step": 1}}
    other = SGD([E.copy()], lr=0.1)
    other.load_state_dict(sd)
    assert other.lr == 0.5 and other.state[0]["step"] == 1
    clone = pickle.loads(pickle.dumps(opt))
    clone.step([RowGrad([2], np.ones((1, 2), np.float32))])
    assert clone.params[0][2, 0] == -0.5 and E[2, 0] == 0.0
