"""Inputs users really pass to ``step``: ``np.memmap`` parameters (updated in place, flushed,
reopened), copy-on-write and read-only memmaps, tables with zero rows, unaligned parameters and
gradients, read-only memmapped gradients, the SciPy sparse classes the reference comparison does
not cover, and index/value containers (lists, tuples, ``array.array``, ranges)."""
from __future__ import annotations

import array
import copy
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

import sparseopt as so

import test_bad_input as E
import test_kernels_vs_reference as R
import test_state_dict as S
from conftest import assert_bitwise_equal

N = E.N  # rows of the shared test parameters
# --------------------------------------------------------------------------- memmap parameters


def _memmap_params(directory, mode="w+", offset=0):
    params = {}
    for key, p in S._params().items():
        mm = np.memmap(directory / f"{key}.bin", dtype=p.dtype, mode="w+", shape=p.shape,
                       offset=offset)
        mm[...] = p
        mm.flush()
        del mm
        params[key] = np.memmap(directory / f"{key}.bin", dtype=p.dtype, mode=mode,
                                shape=p.shape, offset=offset)
    return params


@pytest.mark.parametrize("config", S.CONFIG_IDS)
def test_memmap_parameters_are_updated_in_place_and_flushed(config, tmp_path):
    mm = _memmap_params(tmp_path, mode="r+")
    opt = S._make(config, mm)
    twin = S._make(config, S._params())
    S._run(opt, range(S.N_STEPS), 0.05)
    S._run(twin, range(S.N_STEPS), 0.05)
    opt.flush()
    twin.flush()
    S.assert_identical(opt, twin)
    for key, p in zip(opt._keys, opt.params):
        assert p is mm[key]
        p.flush()
    del opt, p
    mm.clear()
    for key, p in zip(twin._keys, twin.params):
        on_disk = np.fromfile(tmp_path / f"{key}.bin", dtype=p.dtype).reshape(p.shape)
        np.testing.assert_array_equal(on_disk, p)


def test_memmap_modes(tmp_path):
    params = S._params()
    ro = _memmap_params(tmp_path, mode="r")
    with pytest.raises(ValueError, match=r"parameter 'emb' is read-only"):
        so.Adam(ro)
    del ro
    cow = _memmap_params(tmp_path, mode="c")  # copy-on-write: updates stay in memory
    opt = so.Adam(cow, lr=0.05)
    S._run(opt, range(4), 0.05)
    assert not np.array_equal(cow["emb"], params["emb"])
    np.testing.assert_array_equal(
        np.fromfile(tmp_path / "emb.bin", dtype=np.float32).reshape(params["emb"].shape),
        params["emb"])


def test_pickled_or_copied_optimizer_over_memmap_leaves_the_file(tmp_path):
    """Pickling or deep-copying an optimizer copies its memmapped parameters into memory: the
    copy trains on its own and never writes the original file."""
    mm = _memmap_params(tmp_path, mode="r+")
    opt = so.Adam(mm, lr=0.05, lazy="decay")
    S._run(opt, range(3), 0.05)
    for p in mm.values():
        p.flush()
    on_disk = {k: np.fromfile(tmp_path / f"{k}.bin", dtype=p.dtype) for k, p in mm.items()}
    for clone in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        S._run(clone, range(3, 6), 0.05)
        clone.flush()
        for key, p in zip(clone._keys, clone.params):
            assert not np.may_share_memory(p, mm[key])
            assert not np.array_equal(p, mm[key])
    for key, p in mm.items():
        p.flush()
        np.testing.assert_array_equal(np.fromfile(tmp_path / f"{key}.bin", dtype=p.dtype),
                                      on_disk[key])


@pytest.mark.parametrize("cls", [so.Adam, so.Adagrad, so.RMSprop], ids=lambda c: c.__name__)
def test_parameters_with_zero_rows(cls):
    """An empty table (0 rows) takes empty gradients of every form, refuses any index, and
    still counts its steps."""
    opt = cls({"E": np.zeros((0, 4), np.float32), "b": np.zeros(0)}, lr=0.1)
    grads = [so.RowGrad([], np.zeros((0, 4), np.float32)), np.zeros((0, 4), np.float32),
             sp.csr_matrix((0, 4), dtype=np.float32), sp.coo_array((0, 4))]
    for g in grads:
        opt.step({"E": g, "b": sp.csr_matrix((1, 0))})
    with pytest.raises(IndexError, match=r"parameter 'E': gradient index 0 .* 0 rows"):
        opt.step({"E": so.RowGrad([0], np.zeros((1, 4), np.float32))})
    opt.flush()
    assert opt.state["E"]["step"] == opt.state["b"]["step"] == len(grads)


@pytest.mark.parametrize("dtype_", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("cls", [so.Adam, so.Adagrad, so.RMSprop], ids=lambda c: c.__name__)
def test_unaligned_parameters_and_gradients(cls, dtype_, tmp_path):
    """A memmap at an odd byte offset is a C-contiguous, writeable, *unaligned* array, and so is
    a gradient from ``np.frombuffer`` at an odd offset. Both are accepted (no vector loads that
    assume alignment) and give the bits of aligned copies."""
    n, d, k = 50, 37, 40
    itemsize = np.dtype(dtype_).itemsize
    mm = np.memmap(tmp_path / "p.bin", dtype=dtype_, mode="w+", shape=(n, d), offset=1)
    assert not mm.flags.aligned and mm.flags.c_contiguous
    kw = dict(lr=0.1, lazy="decay", weight_decay=0.1) if cls is not so.Adagrad else dict(lr=0.1)
    opt, twin = cls([mm], **kw), cls([np.zeros((n, d), dtype_)], **kw)
    rng = np.random.default_rng(0)
    for t in range(4):
        idx = rng.integers(0, n, size=k)
        vals = rng.normal(size=(k, d)).astype(dtype_)
        raw = b"\0" + vals.tobytes()
        unaligned = np.frombuffer(raw, dtype=dtype_, count=k * d, offset=1).reshape(k, d)
        assert not unaligned.flags.aligned and not unaligned.flags.writeable
        opt.step([so.RowGrad(idx, unaligned)])
        twin.step([so.RowGrad(idx, vals)])
    dense = rng.normal(size=(n, d)).astype(dtype_)
    opt.step([np.frombuffer(b"\0" + dense.tobytes(), dtype=dtype_, offset=1).reshape(n, d)])
    twin.step([dense])
    opt.flush()
    twin.flush()
    assert_bitwise_equal(opt, twin, "unaligned vs aligned")
    assert itemsize > 1


def test_read_only_memmapped_gradients(tmp_path):
    """Gradients loaded with ``np.load(mmap_mode="r")`` (indices, values, dense)."""
    rng = np.random.default_rng(1)
    idx = rng.integers(0, N, size=9).astype(np.int32)
    vals = rng.normal(size=(9, 4)).astype(np.float64)  # cast to float32 on the way
    dense = rng.normal(size=(8, 4)).astype(np.float32)
    for name, arr in (("idx", idx), ("vals", vals), ("dense", dense)):
        np.save(tmp_path / f"{name}.npy", arr)
    m = {name: np.load(tmp_path / f"{name}.npy", mmap_mode="r")
         for name in ("idx", "vals", "dense")}
    assert all(isinstance(a, np.memmap) and not a.flags.writeable for a in m.values())
    for opt_id in E.OPT_IDS:
        a, b = E._make(opt_id), E._make(opt_id)
        a.step({"emb": so.RowGrad(m["idx"], m["vals"]), "first": m["dense"]})
        b.step({"emb": so.RowGrad(idx.copy(), vals.copy()), "first": dense.copy()})
        E.assert_same_optimizer(a, b)


# --------------------------------------------------------------------------- sparse classes

def _blocks(shape, r, c):
    """A BSR block size that divides ``shape`` (1 along an axis it cannot divide)."""
    return (r if shape[0] % r == 0 else 1, c if shape[1] % c == 0 else 1)


EXTRA_SPARSE = {
    "lil_array": sp.lil_array, "dok_array": sp.dok_array, "bsr_array": sp.bsr_array,
    "dia_array": sp.dia_array, "csc_array": sp.csc_array,
    "bsr_matrix-2x2": lambda g: sp.bsr_matrix(g, blocksize=_blocks(g.shape, 2, 2)),
    "bsr_array-3x1": lambda g: sp.bsr_array(g, blocksize=_blocks(g.shape, 3, 1)),
    "csr_array-int64": lambda g: sp.csr_array(g, dtype=g.dtype).astype(g.dtype),
}


@pytest.mark.parametrize("fmt", list(EXTRA_SPARSE))
@pytest.mark.parametrize("opt_name,cfg,kwargs", R.GRADIENT_CONFIGS,
                         ids=[f"{o}-{c}" for o, c, _ in R.GRADIENT_CONFIGS])
def test_more_sparse_classes_match_reference(opt_name, cfg, kwargs, fmt, dtype):
    """The scipy sparse array classes test_reference does not list (and BSR with blocks), for a
    2-D parameter and for a 1-D one as (n, 1) and (1, n)."""
    rng = np.random.default_rng(5)
    n = 24
    params = {"emb": rng.normal(size=(n, 6)).astype(dtype),
              "bias": rng.normal(size=n).astype(dtype)}
    opt, oracle = R.build(opt_name, kwargs, params)
    make = EXTRA_SPARSE[fmt]
    for t in range(4):
        g = R.sparse_dense_pattern(rng, n, 6, dtype)
        gb = R.sparse_dense_pattern(rng, n, 1, dtype)
        grads = {"emb": make(g), "bias": make(gb if t % 2 else gb.T)}
        if fmt == "csr_array-int64":
            for m in grads.values():
                m.indices = m.indices.astype(np.int64)
                m.indptr = m.indptr.astype(np.int64)
        opt.step(grads)
        oracle.step(grads)
        R.compare(opt, oracle, dtype, f"{fmt} step {t}")


@pytest.mark.parametrize("opt_id", E.OPT_IDS)
def test_index_and_value_containers(opt_id):
    """Indices as a tuple, range, ``array.array``, a list of NumPy integers; values as nested
    lists or tuples: all mean the same as NumPy arrays."""
    idx = [2, 9, 2, 0, 11]
    vals = (np.arange(20, dtype=np.float32).reshape(5, 4) - 7) / 3
    expected = so.RowGrad(np.array(idx), vals)
    forms = [
        so.RowGrad(tuple(idx), vals), so.RowGrad(array.array("q", idx), vals),
        so.RowGrad(array.array("i", idx), vals), so.RowGrad([np.int32(i) for i in idx], vals),
        so.RowGrad(np.array(idx), vals.tolist()), so.RowGrad(idx, tuple(map(tuple, vals))),
        so.RowGrad(idx, [row for row in vals]),
    ]
    for grad in forms:
        a, b = E._make(opt_id), E._make(opt_id)
        a.step({"emb": grad})
        b.step({"emb": expected})
        E.assert_same_optimizer(a, b)
    a, b = E._make(opt_id), E._make(opt_id)
    a.step({"bias": so.RowGrad(range(3, 9), [0.5, -1, 2, 3, 4, 5])})
    b.step({"bias": so.RowGrad(np.arange(3, 9), np.array([0.5, -1, 2, 3, 4, 5]))})
    E.assert_same_optimizer(a, b)
