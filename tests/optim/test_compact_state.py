"""Adam's compact first-touch state (``state_layout="compact"``): the moments of a table in
slots given in the order rows are first touched. Every result must be bitwise that of the
direct layout (moments indexed by row), for any thread count, across saves and resumes, and
no slot map a user writes may make a kernel reach outside the slot buffers."""
import copy
import pickle

import numpy as np
import pytest

import sparseopt as so
from sparseopt import _utils
from sparseopt.optim import make_optimizer

MODES = {
    "frozen-row": dict(),
    "frozen-global": dict(bias_correction="global"),
    "torch": dict(preset="torch"),
    "amsgrad-wd": dict(amsgrad=True, weight_decay=0.05),
    "decay-row-wd": dict(lazy="decay", weight_decay=0.05),
    "decay-global": dict(lazy="decay", bias_correction="global"),
    "decay-amsgrad": dict(lazy="decay", amsgrad=True),
}


def _batches(n, d, dtype, index_dtype=np.int64, steps=25, seed=0, max_rows=120):
    rng = np.random.default_rng(seed)
    out = []
    for t in range(steps):
        k = 0 if t % 7 == 3 else int(rng.integers(1, max_rows))  # some empty steps
        rows = (rng.zipf(1.3, k) % n).astype(index_dtype)  # duplicates, new rows every step
        out.append(so.RowGrad(rows, rng.standard_normal((k, d)).astype(dtype)))
    return out


def _pair(n, d, dtype, kw, seed=1, **extra):
    base = np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)
    A, B = base.copy(), base.copy()
    return (A, so.Adam([A], lr=0.01, state_layout="direct", **kw, **extra),
            B, so.Adam([B], lr=0.01, state_layout="compact", **kw, **extra))


def _same(a, b):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and \
        np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


def _assert_same_state(oa, ob):
    sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sorted(sa[key]) == sorted(sb[key])
        for name in sa[key]:
            assert _same(sa[key][name], sb[key][name]), (key, name)


@pytest.mark.parametrize("mode", list(MODES))
def test_compact_equals_direct_in_every_mode(mode, dtype):
    A, oa, B, ob = _pair(400, 7, dtype, MODES[mode])
    for g in _batches(400, 7, dtype):
        oa.step([g])
        ob.step([g])
        assert _same(A, B)
    _assert_same_state(oa, ob)
    st = ob.state[0]
    assert st["exp_avg"].shape[0] == st["row_of_slot"].shape[0] == 400 > st["n_slots"] > 4
    oa.flush()
    ob.flush()
    assert _same(A, B)
    _assert_same_state(oa, ob)


@pytest.mark.parametrize("d", [1, 7, 8, 64, 257])
def test_widths_and_index_dtypes(d, index_dtype):
    A, oa, B, ob = _pair(300, d, np.float32, dict(amsgrad=True))
    for g in _batches(300, d, np.float32, index_dtype, steps=12, max_rows=60):
        oa.step([g])
        ob.step([g])
    assert _same(A, B)
    _assert_same_state(oa, ob)


def test_untouched_rows_are_bitwise_unchanged():
    A, oa, B, ob = _pair(1000, 8, np.float32, {})
    before = B.copy()
    batches = _batches(1000, 8, np.float32)
    for g in batches:
        ob.step([g])
    touched = np.unique(np.concatenate([np.asarray(g.indices) for g in batches]))
    untouched = np.setdiff1d(np.arange(1000), touched)
    assert untouched.size > 100
    assert _same(B[untouched], before[untouched])
    st = ob.state[0]
    assert st["n_slots"] == touched.size
    assert np.array_equal(np.sort(st["row_of_slot"][:st["n_slots"]]), touched)
    assert not st["slot_of_row"][untouched].any()
    dense = ob.state_dict()["state"][0]
    assert not dense["exp_avg"][untouched].any() and not dense["exp_avg_sq"][untouched].any()


def test_slots_follow_first_touch_order():
    E = np.zeros((50, 2), dtype=np.float64)
    opt = so.Adam([E], state_layout="compact")
    opt.step([so.RowGrad(np.array([9, 3, 9, 40]), np.ones((4, 2)))])
    opt.step([so.RowGrad(np.array([3, 7]), np.ones((2, 2)))])
    st = opt.state[0]
    assert st["n_slots"] == 4
    assert st["row_of_slot"][:4].tolist() == [9, 3, 40, 7]
    assert st["slot_of_row"][[9, 3, 40, 7, 0]].tolist() == [1, 2, 3, 4, 0]


@pytest.mark.parametrize("threads", [2, 4])
@pytest.mark.parametrize("mode", ["frozen-row", "decay-row-wd", "amsgrad-wd"])
def test_threads_bitwise(threads, mode, force_parallel):
    base = np.random.default_rng(3).standard_normal((600, 9)).astype(np.float32)
    out = []
    for n_threads in (1, threads):
        W = base.copy()
        opt = so.Adam([W], lr=0.02, state_layout="compact", n_threads=n_threads,
                      **MODES[mode])
        for g in _batches(600, 9, np.float32, steps=15, max_rows=400):
            opt.step([g])
        opt.flush()
        out.append((W, opt))
    assert _same(out[0][0], out[1][0])
    _assert_same_state(out[0][1], out[1][1])
    assert _same(out[0][1].state[0]["row_of_slot"], out[1][1].state[0]["row_of_slot"])


@pytest.mark.parametrize("mode", ["frozen-row", "decay-row-wd", "amsgrad-wd"])
@pytest.mark.parametrize("into", ["compact", "direct"])
def test_save_load_resume_is_exact(mode, into):
    batches = _batches(500, 6, np.float64, steps=30)
    A, oa, B, ob = _pair(500, 6, np.float64, MODES[mode])
    for g in batches[:15]:
        oa.step([g])
        ob.step([g])
    saved = copy.deepcopy(ob.state_dict())
    assert "slot_of_row" not in saved["state"][0]
    assert saved["state"][0]["exp_avg"].shape == (500, 6)
    C = B.copy()
    oc = so.Adam([C], lr=0.01, state_layout=into, **MODES[mode])
    oc.load_state_dict(saved)
    if into == "compact":  # loaded moments go back in slots, in row order
        st = oc.state[0]
        rows = st["row_of_slot"][:st["n_slots"]]
        assert np.all(np.diff(rows) > 0)
    for g in batches[15:]:
        oa.step([g])
        ob.step([g])
        oc.step([g])
    assert _same(A, B) and _same(B, C)
    _assert_same_state(oa, oc)
    _assert_same_state(ob, oc)


def test_pickle_and_copy_keep_slots():
    A, oa, B, ob = _pair(300, 5, np.float32, dict(lazy="decay"))
    batches = _batches(300, 5, np.float32, steps=20)
    for g in batches[:10]:
        oa.step([g])
        ob.step([g])
    oc = pickle.loads(pickle.dumps(ob))
    od = copy.deepcopy(ob)
    for o in (oc, od):
        st = o.state[0]
        assert "slot_of_row" in st and st["exp_avg"].ctypes.data % 64 == 0
        assert st["exp_avg"].strides[0] == 2 * 5 * 4  # m and v still share rows
    C, D = oc.params[0], od.params[0]
    for g in batches[10:]:
        oa.step([g])
        oc.step([g])
        od.step([g])
    assert _same(A, C) and _same(A, D)
    _assert_same_state(oa, oc)


def test_amsgrad_switched_on_later():
    A, oa, B, ob = _pair(200, 4, np.float32, {})
    batches = _batches(200, 4, np.float32, steps=20)
    for t, g in enumerate(batches):
        if t == 8:
            oa.param_groups[0]["amsgrad"] = ob.param_groups[0]["amsgrad"] = True
        oa.step([g])
        ob.step([g])
    assert _same(A, B)
    _assert_same_state(oa, ob)


def test_auto_follows_the_state_size():
    n_big = _utils.LAZY_ZEROS_MIN_BYTES // (2 * 4 * 4) + 1  # float32 m and v of width 4
    small, big = np.zeros((100, 4), np.float32), np.zeros((n_big, 4), np.float32)
    bias = np.zeros(n_big, np.float32)
    opt = so.Adam({"small": small, "big": big, "bias": bias})
    assert opt.state_layout == "auto"
    g = so.RowGrad(np.array([1, 5]), np.ones((2, 4), np.float32))
    opt.step({"small": g, "big": g, "bias": so.RowGrad(np.array([1]), np.ones(1, np.float32))})
    assert "slot_of_row" not in opt.state["small"] and "slot_of_row" not in opt.state["bias"]
    assert opt.state["big"]["exp_avg"].shape == (n_big, 4) and opt.state["big"]["n_slots"] == 2
    mem = opt.memory().per_param["big"]  # the slots in use
    assert mem["exp_avg"] == mem["exp_avg_sq"] == 2 * 4 * 4
    assert mem["slot_of_row"] == 8 * n_big and mem["row_of_slot"] == 8 * 2
    assert opt.memory().per_param["small"]["exp_avg"] == 100 * 4 * 4


def test_unsupported_tables_keep_the_direct_layout():
    H = np.zeros((100, 4), np.float16)
    W = np.zeros((100, 4), np.float32)
    g = so.RowGrad(np.array([1]), np.ones((1, 4), np.float32))
    for opt in (so.Adam([H], state_layout="compact"),
                so.Adam([W], state_layout="compact", rowwise="v"),
                so.Adam([W.copy()], state_layout="compact", state_dtype="bfloat16")):
        opt.step([g])
        assert "slot_of_row" not in opt.state[0]
        assert opt.state[0]["exp_avg"].shape == (100, 4)
    with pytest.raises(ValueError, match="state_layout"):
        so.Adam([W], state_layout="slots")


def test_models_keep_the_direct_layout():
    W = np.zeros((_utils.LAZY_ZEROS_MIN_BYTES, 2), np.float32)
    opt = make_optimizer("adam", [W], 0.1, None)
    assert opt.state_layout == "direct"
    with pytest.raises(ValueError, match="state_layout"):
        make_optimizer("adam", [W], 0.1, None, {"state_layout": "compact"})


# -- hostile state -------------------------------------------------------------------------

def _stepped(n=100, d=3):
    W = np.random.default_rng(0).standard_normal((n, d))
    opt = so.Adam([W], state_layout="compact", lazy="decay")
    opt.step([so.RowGrad(np.array([5, 9, 2]), np.ones((3, d)))])
    return W, opt


HOSTILE = {
    "slot past n_slots": lambda st: st["slot_of_row"].__setitem__(9, 3),
    "slot far out": lambda st: st["slot_of_row"].__setitem__(9, 1 << 40),
    "negative slot": lambda st: st["slot_of_row"].__setitem__(9, -5),
    "two rows, one slot": lambda st: st["slot_of_row"].__setitem__(9, 1),
    "inverse map broken": lambda st: st["row_of_slot"].__setitem__(1, 77),
    "n_slots too big": lambda st: st.__setitem__("n_slots", 10**6),
    "n_slots negative": lambda st: st.__setitem__("n_slots", -1),
    "n_slots a float": lambda st: st.__setitem__("n_slots", 2.0),
    "row_of_slot shorter": lambda st: st.__setitem__("row_of_slot", st["row_of_slot"][:2].copy()),
    "row_of_slot int32": lambda st: st.__setitem__("row_of_slot",
                                                   st["row_of_slot"].astype(np.int32)),
    "slot_of_row shorter": lambda st: st.__setitem__("slot_of_row", st["slot_of_row"][:50].copy()),
    "slot_of_row read-only": lambda st: st["slot_of_row"].setflags(write=False),
    "moments too short": lambda st: st.__setitem__("exp_avg", st["exp_avg"][:2].copy()),
    "moments longer": lambda st: st.__setitem__("exp_avg", np.zeros((101, 3))),
    "moments float32": lambda st: st.__setitem__("exp_avg", st["exp_avg"].astype(np.float32)),
}


@pytest.mark.parametrize("what", list(HOSTILE))
def test_hostile_slot_state_is_refused_before_anything_changes(what):
    W, opt = _stepped()
    HOSTILE[what](opt.state[0])
    before_w = W.copy()
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v)
              for k, v in opt.state[0].items()}
    with pytest.raises(ValueError, match="parameter 0"):
        opt.step([so.RowGrad(np.array([9, 5, 60]), np.ones((3, 3)))])
    assert _same(W, before_w)
    for k, v in opt.state[0].items():
        assert (_same(v, before[k]) if isinstance(v, np.ndarray) else v == before[k]), k


@pytest.mark.parametrize("what", ["slot past n_slots", "negative slot", "two rows, one slot",
                                  "inverse map broken", "slot far out"])
def test_hostile_maps_are_refused_by_flush_and_state_dict(what):
    W, opt = _stepped()
    opt.step([so.RowGrad(np.array([1]), np.ones((1, 3)))])
    HOSTILE[what](opt.state[0])
    before_w = W.copy()
    with pytest.raises(ValueError, match="slot"):
        opt.flush()
    with pytest.raises(ValueError, match="slot"):
        opt.state_dict()
    assert _same(W, before_w)


def test_an_untouched_rows_stray_slot_is_refused_by_flush():
    W, opt = _stepped()
    opt.state[0]["slot_of_row"][40] = 2  # a row no step touches claims a used slot
    opt.step([so.RowGrad(np.array([5]), np.ones((1, 3)))])  # rows 5: its own slot is fine
    with pytest.raises(ValueError, match="inverse maps"):
        opt.flush()


def test_a_smaller_capacity_that_runs_out_is_refused():
    W, opt = _stepped()
    st = opt.state[0]
    for name in ("exp_avg", "exp_avg_sq"):  # 4 slots: the 3 used and one free
        st[name] = np.ascontiguousarray(st[name][:4])
    st["row_of_slot"] = st["row_of_slot"][:4].copy()
    opt.step([so.RowGrad(np.array([9, 70]), np.ones((2, 3)))])  # one new row: fits
    assert st["n_slots"] == 4
    before = W.copy()
    with pytest.raises(ValueError, match="slot of row 71"):
        opt.step([so.RowGrad(np.array([71]), np.ones((1, 3)))])
    assert _same(W, before)


def test_slot_kernels_refuse_short_buffers():
    from sparseopt._kernels import _rows
    rows = np.array([3, 4], np.int64)
    smap, rmap = np.zeros(10, np.int64), np.zeros(1, np.int64)
    srows = np.zeros(2, np.int64)
    # one free slot for two new rows: refused at the second, and the slot given to the
    # first is taken back, so the maps are as they were
    assert _rows.assign_slots(rows, smap, rmap, 0, srows) == -2
    assert not smap.any() and not rmap.any()
    with pytest.raises(ValueError):
        _rows.assign_slots(rows, smap, rmap, 5, srows)
    with pytest.raises(ValueError):
        _rows.release_slots(smap, rmap, 0, 2)
    with pytest.raises(ValueError):
        _rows.release_slots(smap, rmap, 1, 0)


def test_a_corrupt_slot_leaves_the_maps_unchanged():
    from sparseopt._kernels import _rows
    smap, rmap = np.zeros(10, np.int64), np.zeros(10, np.int64)
    srows = np.zeros(3, np.int64)
    assert _rows.assign_slots(np.array([7], np.int64), smap, rmap, 0, srows) == 1
    smap[5] = 9  # corrupt: beyond n_slots
    s0, r0 = smap.copy(), rmap.copy()
    # two new rows get slots before the corrupt one is reached: both are taken back
    assert _rows.assign_slots(np.array([1, 2, 5], np.int64), smap, rmap, 1, srows) == -3
    assert np.array_equal(smap, s0) and np.array_equal(rmap, r0)


def test_release_takes_back_the_new_slots():
    from sparseopt._kernels import _rows
    smap, rmap = np.zeros(10, np.int64), np.zeros(10, np.int64)
    srows = np.zeros(3, np.int64)
    assert _rows.assign_slots(np.array([4, 8], np.int64), smap, rmap, 0, srows) == 2
    s0, r0 = smap.copy(), rmap.copy()
    assert _rows.assign_slots(np.array([8, 1, 6], np.int64), smap, rmap, 2, srows) == 4
    assert list(srows) == [1, 2, 3]
    _rows.release_slots(smap, rmap, 2, 4)
    assert np.array_equal(smap, s0) and np.array_equal(rmap, r0)


# -- sparseopt.torch -----------------------------------------------------------------------

def _torch_run(layout, steps, state=None, seed=0):
    torch = pytest.importorskip("torch")
    import sparseopt.torch as sot
    torch.manual_seed(seed)
    emb = torch.nn.EmbeddingBag(2000, 6, mode="sum", sparse=True)
    opt = sot.Adam(emb.parameters(), lr=0.05, state_layout=layout)
    if state is not None:
        emb.load_state_dict(state[0])
        opt.load_state_dict(state[1])
    rng = np.random.default_rng(seed + 1)
    for t in range(steps):
        ids = torch.from_numpy(rng.zipf(1.3, 64) % 2000)
        opt.zero_grad()
        emb(ids, torch.arange(0, 64, 4)).pow(2).sum().backward()
        opt.step()
    return emb, opt


def test_torch_compact_equals_direct_and_saves_by_row(tmp_path):
    torch = pytest.importorskip("torch")
    ea, oa = _torch_run("direct", 12)
    eb, ob = _torch_run("compact", 12)
    assert torch.equal(ea.weight, eb.weight)
    shown = ob.state[eb.weight]
    assert 0 < shown["n_slots"] < 2000 and shown["row_of_slot"].shape[0] == 2000
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sorted(sa["state"][0]) == sorted(sb["state"][0])
    for name, v in sa["state"][0].items():
        w = sb["state"][0][name]
        assert (torch.equal(v, w) if isinstance(v, torch.Tensor) else v == w), name
    assert sb["state"][0]["exp_avg"].shape == (2000, 6)
    # torch.save / torch.load(weights_only=True) and a resume: the same as not stopping
    path = tmp_path / "opt.pt"
    torch.save((eb.state_dict(), sb), path)
    saved = torch.load(path, weights_only=True)
    ec, oc = _torch_run("compact", 0, state=saved)
    assert "slot_of_row" in oc.state[ec.weight]
    ed = copy.deepcopy(ec), copy.deepcopy(oc)
    assert torch.equal(ec.weight, eb.weight)
    rng = np.random.default_rng(99)
    for t in range(6):
        ids = torch.from_numpy(rng.zipf(1.3, 64) % 2000)
        for e, o in ((eb, ob), (ec, oc)):
            o.zero_grad()
            e(ids, torch.arange(0, 64, 4)).pow(2).sum().backward()
            o.step()
    assert torch.equal(eb.weight, ec.weight)
    assert "slot_of_row" not in pickle.loads(pickle.dumps(ed[1])).state_dict()["state"][0]


def test_state_by_row_assigned_to_a_compact_table_is_refused():
    W, opt = _stepped()
    opt.state[0] = {"step": 1, "exp_avg": np.zeros((100, 3)), "exp_avg_sq": np.zeros((100, 3)),
                    "last_step": np.zeros(100, np.int64), "row_wd_log": np.zeros(100),
                    "first_step": np.zeros(100, np.int64), "wd_log_sum": 0.0}
    with pytest.raises(ValueError, match="keeps its moments in slots"):
        opt.step([so.RowGrad(np.array([1]), np.ones((1, 3)))])


def test_slot_assignment_matches_the_reference():
    from sparseopt import _reference as ref
    from sparseopt._kernels import _rows
    rng = np.random.default_rng(5)
    n = 500
    maps = [(np.zeros(n, np.int64), np.zeros(n, np.int64), 0) for _ in range(2)]
    for _ in range(20):
        rows = np.unique(rng.zipf(1.2, 80) % n)
        rng.shuffle(rows)
        (sa, ra, ua), (sb, rb, ub) = maps
        want, ua = ref.first_touch_slots(rows, sa, ra, ua)
        got = np.empty(rows.size, np.int64)
        ub = _rows.assign_slots(rows, sb, rb, ub, got)
        assert ub == ua and np.array_equal(got, want)
        assert np.array_equal(sa, sb) and np.array_equal(ra, rb)
        maps = [(sa, ra, ua), (sb, rb, ub)]


def _maps(st):
    return (st["slot_of_row"].copy(), st["row_of_slot"].copy(), st["n_slots"])


def _same_maps(a, b):
    return _same(a[0], b[0]) and _same(a[1], b[1]) and a[2] == b[2]


def test_a_step_refused_after_slots_were_given_takes_them_back():
    # phase 1 gives the new rows of table 0 their slots, then parameter 1's gradient is
    # refused: table 0's maps must be as they were
    rng = np.random.default_rng(3)
    A, B = rng.normal(size=(100, 3)), rng.normal(size=(50, 2))
    opt = so.Adam([A, B], lr=0.1, state_layout="compact")
    opt.step([so.RowGrad(np.array([4, 2]), np.ones((2, 3))),
              so.RowGrad(np.array([1]), np.ones((1, 2)))])
    before, a0 = _maps(opt.state[0]), A.copy()
    bad = [(IndexError, so.RowGrad(np.array([77]), np.ones((1, 2)))),
           (FloatingPointError, so.RowGrad(np.array([3]), np.full((1, 2), np.nan)))]
    for err, g in bad:
        with pytest.raises(err):
            opt.step([so.RowGrad(np.array([9, 4, 60]), np.ones((3, 3))), g])
        assert _same_maps(_maps(opt.state[0]), before)
        assert _same(A, a0)
    # and the next accepted step gives the same slots as if nothing had been refused
    opt.step([so.RowGrad(np.array([9, 4, 60]), np.ones((3, 3))), None])
    assert list(opt.state[0]["row_of_slot"][:4]) == [4, 2, 9, 60]


def test_torch_step_refused_after_slots_were_given_takes_them_back():
    torch = pytest.importorskip("torch")
    import sparseopt.torch as sot
    torch.manual_seed(0)
    e1 = torch.nn.EmbeddingBag(3000, 4, mode="sum", sparse=True)
    e2 = torch.nn.EmbeddingBag(3000, 4, mode="sum", sparse=True)
    opt = sot.Adam(list(e1.parameters()) + list(e2.parameters()), lr=0.1,
                   state_layout="compact")
    off = torch.tensor([0])
    for e, ids in ((e1, [5, 6]), (e2, [7])):
        e(torch.tensor(ids), off).sum().backward()
    opt.step()
    def maps():
        return [_maps({k: (v.numpy() if isinstance(v, torch.Tensor) else v)
                       for k, v in opt.state[p].items()}) for p in (e1.weight, e2.weight)]
    before = maps()
    w1 = e1.weight.detach().clone()
    opt.zero_grad()
    e1(torch.tensor([100, 5, 200]), off).sum().backward()
    (e2(torch.tensor([8]), off).sum() * float("nan")).backward()
    with pytest.raises(FloatingPointError):
        opt.step()
    assert all(_same_maps(a, b) for a, b in zip(maps(), before))
    assert torch.equal(e1.weight, w1)


def _frozen_row_stepped(n=100, d=3):
    W = np.random.default_rng(0).standard_normal((n, d))
    opt = so.Adam([W], state_layout="compact")  # lazy="frozen", bias_correction="row"
    opt.step([so.RowGrad(np.array([5, 9, 2]), np.ones((3, d)))])
    return W, opt


def test_row_step_is_kept_by_slot_and_saved_by_row():
    W, opt = _frozen_row_stepped()
    opt.step([so.RowGrad(np.array([9, 40]), np.zeros((2, 3)))])  # a zero gradient still counts
    st = opt.state[0]
    assert st["row_step"].shape == st["row_of_slot"].shape  # one per slot
    assert list(st["row_step"][:4]) == [1, 2, 1, 1]  # slots of rows 5, 9, 2, 40
    saved = opt.state_dict()["state"][0]["row_step"]
    assert saved.shape == (100,) and saved[9] == 2 and saved[40] == 1 and saved.sum() == 5
    # row 40 has all-zero moments: its count alone gives it a slot when loaded
    W2 = W.copy()
    o2 = so.Adam([W2], state_layout="compact")
    o2.load_state_dict(opt.state_dict())
    assert o2.state[0]["n_slots"] == 4 and o2.memory().state["row_step"] == 4 * 8
    for o, w in ((opt, W), (o2, W2)):
        o.step([so.RowGrad(np.array([40, 3]), np.ones((2, 3)))])
    assert _same(W, W2)


@pytest.mark.parametrize("what", ["shorter", "int32", "read-only", "2-D"])
def test_hostile_slotted_row_step_is_refused(what):
    W, opt = _frozen_row_stepped()
    st = opt.state[0]
    st["row_step"] = {"shorter": lambda a: a[:3].copy(),
                      "int32": lambda a: a.astype(np.int32),
                      "read-only": lambda a: np.frombuffer(a.tobytes(), np.int64),
                      "2-D": lambda a: a.reshape(-1, 1)}[what](st["row_step"])
    before = W.copy()
    with pytest.raises(ValueError, match="row_step"):
        opt.step([so.RowGrad(np.array([9, 60]), np.ones((2, 3)))])
    assert _same(W, before)
