"""One conformance suite that every optimizer in ``sparseopt`` passes.

Optimizers are discovered from the package namespace (every public subclass of
``sparseopt.optim.Optimizer``), so a new optimizer is tested the moment it is exported; it only
has to document its state names in ``DOCUMENTED_STATE`` below.
"""
from __future__ import annotations

import inspect
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

import sparseopt as so
from sparseopt.optim import Optimizer


def discover():
    found = {}
    for name in so.__all__:
        obj = getattr(so, name)
        if inspect.isclass(obj) and issubclass(obj, Optimizer) and obj is not Optimizer:
            found[name] = obj
    return found


OPTIMIZER_CLASSES = discover()

# State each optimizer documents, with default settings and with the settings that add state.
DOCUMENTED_STATE = {
    "Adam": [({}, {"exp_avg", "exp_avg_sq", "row_step"}),
             (dict(amsgrad=True), {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "row_step"}),
             (dict(bias_correction="global"), {"exp_avg", "exp_avg_sq"}),
             (dict(lazy="decay"), {"exp_avg", "exp_avg_sq", "last_step", "first_step",
                                   "wd_log_sum", "row_wd_log"})],
    "Adagrad": [({}, {"sum"}), (dict(rowwise=True), {"sum"})],
    "Ftrl": [({}, {"z", "n"}), (dict(preset="vw", l1=0.1, l2_shrinkage=0.2), {"z", "n"})],
    "RMSprop": [({}, {"square_avg"}),
                (dict(centered=True, momentum=0.9),
                 {"square_avg", "grad_avg", "momentum_buffer"}),
                (dict(lazy="decay"), {"square_avg", "last_step", "wd_log_sum", "row_wd_log"})],
}

# Per-row state: one entry per row rather than per element (int64 counters; float64 sums).
ROW_STATE = {"row_step", "last_step", "first_step"}
ROW_F64_STATE = {"row_wd_log"}
# Per-parameter scalars (Python floats).
SCALAR_STATE = {"wd_log_sum"}


def test_discovery_finds_every_optimizer():
    assert {"Adam", "Adagrad", "RMSprop"} <= set(OPTIMIZER_CLASSES)
    assert set(OPTIMIZER_CLASSES) <= set(DOCUMENTED_STATE), "document the new optimizer's state"


def gradient_forms(param, rng):
    """One gradient of ``param`` in every accepted form (name -> gradient)."""
    n = param.shape[0]
    d = param.shape[1:] if param.ndim == 2 else ()
    dt = param.dtype
    idx = np.array([0, 3, n - 1, 3], dtype=np.int64)
    vals = rng.normal(size=(4,) + d).astype(dt)
    dense2d = np.zeros((n, 1) if param.ndim == 1 else param.shape, dtype=dt)
    dense2d[[0, 3, n - 1]] = rng.normal(size=(3,) + dense2d.shape[1:])
    forms = {
        "RowGrad-int64": so.RowGrad(idx, vals),
        "RowGrad-int32": so.RowGrad(idx.astype(np.int32), vals),
        "RowGrad-list": so.RowGrad(idx.tolist(), vals.tolist()),
        "csr_matrix": sp.csr_matrix(dense2d),
        "csc_matrix": sp.csc_matrix(dense2d),
        "coo_matrix": sp.coo_matrix(dense2d),
        "csr_array": sp.csr_array(dense2d),
        "coo_array": sp.coo_array(dense2d),
        "dense": rng.normal(size=param.shape).astype(dt),
        "None": None,
    }
    if param.ndim == 1:
        forms["csr_matrix-(1,n)"] = sp.csr_matrix(dense2d.T)
        forms["csr_array-(1,n)"] = sp.csr_array(dense2d.T)
    return forms


def touched_rows(name, param):
    n = param.shape[0]
    if name == "None":
        return []
    if name == "dense":
        return list(range(n))
    return [0, 3, n - 1]


@pytest.mark.parametrize("cls", list(OPTIMIZER_CLASSES.values()), ids=list(OPTIMIZER_CLASSES))
class TestOptimizerConformance:

    def test_construct_with_defaults(self, cls):
        p = np.zeros((5, 2), dtype=np.float32)
        opt = cls([p])
        sig = inspect.signature(cls)
        assert opt.lr == sig.parameters["lr"].default
        assert opt.defaults["lr"] == opt.lr
        assert opt.params[0] is p
        assert opt.state[0] == {}  # nothing allocated before the first step
        for name, param in sig.parameters.items():
            # options of the whole optimizer, not hyper-parameters of its group (the storage
            # options decide the state's layout and the rounding streams)
            if name in ("params", "preset", "n_threads", "duplicates", "nonfinite", "dtype",
                        "rounding", "seed", "state_dtype", "state_layout"):
                continue
            if name == "rowwise_tail":  # kept as one entry per parameter
                assert opt.defaults[name] == (param.default,) * len(opt.params), name
                continue
            if param.default is not None:  # None means "the preset's default"
                value = opt.defaults[name]
                expected = param.default
                assert value == (tuple(expected) if isinstance(expected, tuple) else expected), name

    def test_construct_from_list_dict_and_single_array(self, cls, dtype):
        rng = np.random.default_rng(0)
        a = rng.normal(size=(6, 3)).astype(dtype)
        b = rng.normal(size=6).astype(dtype)
        results = []
        for build in ("list", "dict", "single"):
            pa, pb = a.copy(), b.copy()
            if build == "list":
                opt = cls([pa, pb])
                grads = [so.RowGrad([1, 2], np.ones((2, 3), dtype=dtype)), None]
            elif build == "dict":
                opt = cls({"a": pa, "b": pb})
                grads = {"a": so.RowGrad([1, 2], np.ones((2, 3), dtype=dtype))}
            else:
                opt = cls(pa)
                grads = so.RowGrad([1, 2], np.ones((2, 3), dtype=dtype))
            opt.step(grads)
            results.append(pa)
            np.testing.assert_array_equal(pb, b)
            assert len(opt.params) == (1 if build == "single" else 2)
            assert opt.params[0] is pa
            keys = list(opt.state)
            assert keys == ([0] if build == "single" else [0, 1] if build == "list" else ["a", "b"])
            assert opt.param_groups[0]["params"] == keys
        np.testing.assert_array_equal(results[0], results[1])
        np.testing.assert_array_equal(results[0], results[2])
        assert not np.array_equal(results[0], a)

    @pytest.mark.parametrize("shape", [(9, 4), (9,)], ids=["2d", "1d"])
    def test_step_with_each_gradient_form(self, cls, shape, dtype):
        rng = np.random.default_rng(1)
        base = rng.normal(size=shape).astype(dtype)
        for name, grad in gradient_forms(base, rng).items():
            p = base.copy()
            opt = cls([p], n_threads=1)
            opt.step([grad])
            rows = touched_rows(name, p)
            untouched = np.setdiff1d(np.arange(shape[0]), rows)
            np.testing.assert_array_equal(p[untouched], base[untouched], err_msg=name)
            assert np.all(p[rows] != base[rows]), name
            assert p.dtype == dtype and p.shape == shape
            if name == "None":
                assert opt.state[0] == {}, name
            else:
                assert opt.state[0]["step"] == 1, name

    def test_contiguous_view_param_updates_its_base(self, cls, dtype):
        """A parameter may be a C-contiguous view (rows of a larger table): updated in place,
        the rest of the base untouched."""
        base = np.ones((20, 3), dtype=dtype)
        view = base[5:12]
        opt = cls([view])
        opt.step([so.RowGrad([0, 6], np.ones((2, 3), dtype=dtype))])
        assert np.all(base[[5, 11]] != 1)
        np.testing.assert_array_equal(np.delete(base, [5, 11], axis=0), 1)

    def test_state_allocated_on_first_step_with_documented_names(self, cls, dtype):
        for kwargs, names in DOCUMENTED_STATE[cls.__name__]:
            p = np.zeros((7, 3), dtype=dtype)
            opt = cls({"w": p}, **kwargs)
            assert opt.state == {"w": {}}
            opt.step({"w": so.RowGrad([2], np.ones((1, 3), dtype=dtype))})
            st = opt.state["w"]
            assert set(st) == names | {"step"}, kwargs
            assert st["step"] == 1
            for sname in names:
                arr = st[sname]
                if sname in SCALAR_STATE:
                    assert type(arr) is float and arr == 0.0, sname
                    continue
                assert isinstance(arr, np.ndarray)
                if sname in ROW_STATE:
                    assert arr.shape == (7,) and arr.dtype == np.int64, sname
                elif sname in ROW_F64_STATE:
                    assert arr.shape == (7,) and arr.dtype == np.float64, sname
                elif kwargs.get("rowwise"):
                    assert arr.shape == (7,) and arr.dtype == dtype, sname
                else:
                    assert arr.shape == p.shape and arr.dtype == dtype, sname
                    # rows are contiguous (Adam's m and v may be views that share rows)
                    assert arr.strides[-1] == arr.itemsize

    def test_lr_setter(self, cls):
        p1 = np.ones((4, 2))
        p2 = np.ones((4, 2))
        p3 = np.ones((4, 2))
        a = cls([p1], lr=0.05)
        b = cls([p2], lr=0.7)
        c = cls([p3], lr=0.7)
        b.lr = 0.05
        c.param_groups[0]["lr"] = 0.05
        assert b.lr == 0.05 and b.param_groups[0]["lr"] == 0.05 and c.lr == 0.05
        g = so.RowGrad([1, 3], np.array([[1.0, -2.0], [0.5, 0.25]]))
        for opt in (a, b, c):
            opt.step([g])
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(p1, p3)
        # a schedule: the new lr is used from the next step on
        a.lr = 0.01
        a.step([g])
        b.step([g])
        assert not np.array_equal(p1, p2)
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="lr"):
                a.lr = bad
        with pytest.raises(TypeError, match="lr"):
            a.lr = "0.1"
        assert a.lr == 0.01

    def test_repr(self, cls):
        opt = cls({"emb": np.zeros((10, 4), dtype=np.float32), "bias": np.zeros(10)}, lr=0.125)
        r = repr(opt)
        assert r.startswith(cls.__name__ + "(")
        assert "lr=0.125" in r
        assert "'emb'" in r and "(10, 4)" in r and "(10,)" in r
        for name in inspect.signature(cls).parameters:
            if name in opt.defaults:
                assert f"{name}=" in r, name

    def test_param_groups(self, cls):
        opt = cls({"emb": np.zeros((10, 4)), "bias": np.zeros(10)}, lr=0.25)
        assert isinstance(opt.param_groups, list) and len(opt.param_groups) == 1
        group = opt.param_groups[0]
        assert group["params"] == ["emb", "bias"]
        assert group["lr"] == 0.25
        hyper = [n for n in inspect.signature(cls).parameters
                 if n not in ("params", "preset", "n_threads", "duplicates", "nonfinite",
                              "dtype", "rounding", "seed", "state_dtype", "state_layout")]
        for name in hyper:
            assert name in group, name
        assert {k: v for k, v in group.items() if k != "params"} == opt.defaults

    def test_preset_overridden_by_explicit_argument(self, cls):
        # eps where the optimizer has one (every preset sets it), else FTRL's beta
        name = "eps" if "eps" in cls._DEFAULTS else "beta"
        for preset in cls._PRESETS:
            opt = cls([np.zeros(3)], preset=preset, **{name: 0.5})
            assert opt.param_groups[0][name] == 0.5
            assert opt.preset == preset

    def test_state_dict_and_pickle_round_trip(self, cls, dtype):
        rng = np.random.default_rng(2)
        P = rng.normal(size=(8, 3)).astype(dtype)
        opt = cls({"w": P}, lr=0.05)
        grads = [{"w": so.RowGrad(rng.integers(0, 8, size=5),
                                  rng.normal(size=(5, 3)).astype(dtype))} for _ in range(6)]
        for g in grads[:3]:
            opt.step(g)
        clone = pickle.loads(pickle.dumps(opt))
        P2 = P.copy()
        fresh = cls({"w": P2}, lr=0.05)
        fresh.load_state_dict(pickle.loads(pickle.dumps(opt.state_dict())))
        for g in grads[3:]:
            opt.step(g)
            clone.step(g)
            fresh.step(g)
        np.testing.assert_array_equal(clone.params[0], P)
        np.testing.assert_array_equal(P2, P)
        for sname, arr in opt.state["w"].items():
            if isinstance(arr, np.ndarray):
                np.testing.assert_array_equal(fresh.state["w"][sname], arr)
                np.testing.assert_array_equal(clone.state["w"][sname], arr)

    def test_n_threads_argument(self, cls):
        assert cls([np.zeros(3)], n_threads=2).n_threads == 2
        assert cls([np.zeros(3)]).n_threads is None
        with pytest.raises(ValueError):
            cls([np.zeros(3)], n_threads=0)
