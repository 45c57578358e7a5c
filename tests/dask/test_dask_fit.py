"""``sparseopt.dask.fit``: iterative parameter mixing on a two-worker local cluster.

What must hold: with one partition the distributed fit is bitwise the single-process
sequence of ``partial_fit`` calls (the mixing adds no arithmetic to rows one worker changed);
with disjoint features every row is exactly the one worker's that trained it; the merge is
the dense rule of ``_mixing.reference_mix``; two partitions score close to one process; a
worker killed mid-fit changes nothing in the result; inputs that cannot be distributed are
refused before any task runs.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

import sparseopt.dask as sd  # noqa: E402
from sparseopt.dask import _mixing  # noqa: E402
from sparseopt.linear_model import SGDClassifier, SGDRegressor  # noqa: E402
from sparseopt.recommend import FMRegressor, MatrixFactorization  # noqa: E402

pytestmark = pytest.mark.dask


@pytest.fixture(scope="module")
def client():
    """One local cluster for every test here: two worker processes of one thread each,
    started once (a cluster takes seconds to start). The fixtures live in this module, not in
    a conftest.py, because the suites import helpers with ``from conftest import ...``."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    with distributed.Client(cluster) as c:
        c.run(_import_on_worker)  # both workers import at once, not each at its first task
        yield c
    cluster.close()


def _import_on_worker():
    import sparseopt.dask  # noqa: F401
    import sparseopt.linear_model  # noqa: F401
    import sparseopt.recommend  # noqa: F401


@pytest.fixture
def two_workers(client):
    """The client, with both workers up (a test may have killed one; the nanny restarts
    it)."""
    client.wait_for_workers(2, timeout=60)
    return client

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _problem(n=4000, d=300, seed=0, density=0.05):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=seed)
    w = rng.normal(size=d)
    return X, (X @ w > 0).astype(np.int64), X @ w + 0.1 * rng.normal(size=n)


def _parts(X, y, k):
    cuts = np.linspace(0, X.shape[0], k + 1).astype(int)
    return ([dask.delayed(X[a:b]) for a, b in zip(cuts[:-1], cuts[1:])],
            [dask.delayed(y[a:b]) for a, b in zip(cuts[:-1], cuts[1:])])


def test_import_sparseopt_does_not_import_dask():
    code = ("import sys, sparseopt, sparseopt.linear_model, sparseopt.recommend; "
            "print(any(m == 'dask' or m.startswith(('dask.', 'distributed')) "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("optimizer", ["adagrad", "adam", "rmsprop", "sgd"])
def test_one_partition_is_single_process(client, optimizer):
    X, yc, _ = _problem(n=1500)
    est = SGDClassifier(loss="log_loss", optimizer=optimizer, random_state=0, batch_size=64)
    got = sd.fit(est, [dask.delayed(X)], [dask.delayed(yc)], client, n_epochs=3)
    ref = SGDClassifier(loss="log_loss", optimizer=optimizer, random_state=0, batch_size=64)
    ref.partial_fit(X, yc, classes=[0, 1])
    ref.partial_fit(X, yc)
    ref.partial_fit(X, yc)
    assert np.array_equal(got.coef_, ref.coef_)
    assert np.array_equal(got.intercept_, ref.intercept_)
    assert got.t_ == ref.t_
    assert not hasattr(est, "coef_")  # the estimator passed in is not modified
    sg, sr = got.optimizer_.state_dict()["state"]["coef"], \
        ref.optimizer_.state_dict()["state"]["coef"]
    for name in sr:
        assert np.array_equal(np.asarray(sg[name]), np.asarray(sr[name])), name
    # training resumes from the mixed state as from the single-process one
    got.partial_fit(X, yc)
    ref.partial_fit(X, yc)
    assert np.array_equal(got.coef_, ref.coef_)


def test_one_partition_in_sync_slices_is_partial_fit_per_slice(client):
    X, _, yr = _problem(n=1000)
    est = SGDRegressor(random_state=0, batch_size=50)
    got = sd.fit(est, [dask.delayed(X)], [dask.delayed(yr)], client, n_epochs=1,
                 sync_every=4)
    ref = SGDRegressor(random_state=0, batch_size=50)
    for a in range(0, 1000, 200):
        ref.partial_fit(X[a:a + 200], yr[a:a + 200])
    assert np.array_equal(got.coef_, ref.coef_)
    assert got.t_ == ref.t_ == 20


def test_disjoint_features_keep_each_workers_rows(client):
    """Two partitions on disjoint columns, no penalty, no intercept: every row was changed by
    one worker only, so the mixed model is exactly each worker's own model on its rows."""
    X, yc, _ = _problem(n=2000, d=100)
    A = X[:1000].tolil()
    A[:, 50:] = 0
    B = X[1000:].tolil()
    B[:, :50] = 0
    A, B = A.tocsr(), B.tocsr()
    A.eliminate_zeros()
    B.eliminate_zeros()
    kw = dict(loss="log_loss", penalty=None, fit_intercept=False, random_state=0,
              batch_size=50)
    got = sd.fit(SGDClassifier(**kw), [dask.delayed(A), dask.delayed(B)],
                 [dask.delayed(yc[:1000]), dask.delayed(yc[1000:])], client, n_epochs=1)
    ma = SGDClassifier(**kw).partial_fit(A, yc[:1000], classes=[0, 1])
    mb = SGDClassifier(**kw).partial_fit(B, yc[1000:], classes=[0, 1])
    assert np.array_equal(got.coef_[:, :50], ma.coef_[:, :50])
    assert np.array_equal(got.coef_[:, 50:], mb.coef_[:, 50:])
    # Adagrad accumulators: each row's sum is the one worker's that saw the feature
    s = got.optimizer_.state_dict()["state"]["coef"]["sum"]
    assert np.array_equal(s[:50], ma.optimizer_.state_dict()["state"]["coef"]["sum"][:50])
    assert got.t_ == ma.t_ + mb.t_


def test_dask_sizes_deltas_and_skeletons_by_their_arrays():
    """The scheduler places a task where most of its input bytes are: it must see a delta's
    and a skeleton's bytes, not the few bytes of a Python object."""
    from dask.sizeof import sizeof
    from sparseopt.dask._fit import _Skeleton
    n = 100_000
    d = _mixing.RowDelta(np.arange(n), np.ones(n), {"W": np.ones((n, 2))},
                         {"W": np.zeros((n, 2))}, {"W": "mean"})
    assert d.nbytes == n * 8 * 6
    assert d.nbytes <= sizeof(d) <= d.nbytes + 1024
    assert sizeof((d, None, 0.5)) >= d.nbytes
    est = SGDClassifier().partial_fit(sp.random(20, 5, density=0.5, format="csr",
                                                random_state=0), np.arange(20) % 2,
                                      classes=[0, 1])
    sk = _Skeleton(est, {"W": est._W})
    assert sk.nbytes <= sizeof(sk) <= sk.nbytes + 1024


def test_merge_follows_the_dense_rule():
    rng = np.random.default_rng(1)
    n = 40
    old = {"W": rng.normal(size=(n, 2)), "sum": rng.random((n, 2))}
    news, counts = [], []
    for k in range(2):
        new = {key: v.copy() for key, v in old.items()}
        touched = rng.random(n) < 0.5
        decayed = (~touched) & (rng.random(n) < 0.5)
        new["W"][touched] += rng.normal(size=(touched.sum(), 2))
        new["W"][decayed] *= 0.9
        new["sum"][touched] += rng.random((touched.sum(), 2))
        c = np.where(touched, rng.integers(1, 5, n), 0).astype(float)
        news.append(new)
        counts.append(c)
    rules = {"W": "mean", "sum": "sum"}
    deltas = [_mixing.extract(old, news[k], counts[k], rules, 3, 10) for k in range(2)]
    merged = _mixing.tree_merge(deltas)
    got = {k: v.copy() for k, v in old.items()}
    _mixing.apply(merged, got)
    want = _mixing.reference_mix(old, news, counts, rules)
    for key in rules:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12)
    assert merged.steps == 6 and merged.samples == 20
    # only the changed rows travel
    assert np.array_equal(merged.rows, np.union1d(deltas[0].rows, deltas[1].rows))
    assert merged.rows.size < n


def test_two_partitions_score_close_to_single_process(client):
    from sklearn.metrics import roc_auc_score
    X, yc, _ = _problem(n=8000, d=500, seed=3)
    Xt, yt = X[6000:], yc[6000:]
    Xtr, ytr = X[:6000], yc[:6000]
    est = SGDClassifier(loss="log_loss", random_state=0)
    single = SGDClassifier(loss="log_loss", random_state=0, batch_size=est.batch_size)
    from sparseopt.linear_model._base import auto_batch_size
    single.batch_size = auto_batch_size(6000)
    single.partial_fit(Xtr, ytr, classes=[0, 1])
    for _ in range(4):
        single.partial_fit(Xtr, ytr)
    xs, ys = _parts(Xtr, ytr, 2)
    stats = []
    got = sd.fit(est, xs, ys, client, n_epochs=5, stats=stats)
    a_single = roc_auc_score(yt, single.decision_function(Xt))
    a_got = roc_auc_score(yt, got.decision_function(Xt))
    assert a_got > a_single - 0.01, (a_got, a_single)
    assert len(stats) == 5 and all(s["rows"] <= s["table_rows"] for s in stats)


def test_dask_array_input_and_no_persist(client):
    X, _, yr = _problem(n=3000, d=200, seed=5)
    blocks = [X[a:a + 1000] for a in range(0, 3000, 1000)]
    meta = sp.csr_matrix((0, 200))
    Xd = da.concatenate([da.from_delayed(dask.delayed(b), shape=b.shape, dtype=b.dtype,
                                         meta=meta) for b in blocks])
    yd = da.from_array(yr, chunks=500)  # rechunked to X's blocks
    a = sd.fit(SGDRegressor(random_state=0), Xd, yd, client, n_epochs=2)
    xs = [dask.delayed(b) for b in blocks]
    ys = [dask.delayed(yr[i:i + 1000]) for i in range(0, 3000, 1000)]
    b = sd.fit(SGDRegressor(random_state=0), xs, ys, client, n_epochs=2, persist=False)
    assert np.array_equal(a.coef_, b.coef_)
    assert a.score(X, yr) > 0.5


def test_refusals(client):
    X, yc, _ = _problem(n=200)
    xs, ys = _parts(X, yc, 2)
    from sklearn.linear_model import Ridge
    with pytest.raises(TypeError, match="cannot be distributed"):
        sd.fit(Ridge(), xs, ys, client, n_epochs=1)
    with pytest.raises(ValueError, match="early_stopping"):
        sd.fit(MatrixFactorization(early_stopping=True), [], None, client)
    with pytest.raises(TypeError, match="takes no y"):
        sd.fit(MatrixFactorization(), xs, ys, client)
    with pytest.raises(TypeError, match="dask DataFrame"):
        sd.fit(MatrixFactorization(), X, None, client)
    with pytest.raises(ValueError, match="needs y"):
        sd.fit(FMRegressor(), xs, None, client)
    with pytest.raises(ValueError, match="no mixing rule"):
        sd.fit(FMRegressor(optimizer="adam", optimizer_params={"amsgrad": True}), xs, ys,
               client, n_epochs=1)
    with pytest.raises(ValueError, match="average"):
        sd.fit(SGDClassifier(average=True), xs, ys, client, n_epochs=1)
    with pytest.raises(ValueError, match="early_stopping"):
        sd.fit(SGDClassifier(early_stopping=True), xs, ys, client, n_epochs=1)
    with pytest.raises(ValueError, match="balanced"):
        sd.fit(SGDClassifier(class_weight="balanced"), xs, ys, client, n_epochs=1)
    with pytest.raises(ValueError, match="n_epochs"):
        sd.fit(SGDClassifier(), xs, ys, client)
    with pytest.raises(TypeError, match="sync_every"):
        sd.fit(SGDClassifier(), xs, ys, client, n_epochs=1, sync_every=1.5)
    with pytest.raises(ValueError, match="partitions"):
        sd.fit(SGDClassifier(), xs, ys[:1], client, n_epochs=1)
    with pytest.raises(ValueError, match="rows"):
        sd.fit(SGDClassifier(), xs, ys[::-1] if False else [ys[0], dask.delayed(yc[:5])],
               client, n_epochs=1)
    with pytest.raises(TypeError, match="dask array"):
        sd.fit(SGDClassifier(), X, yc, client, n_epochs=1)


# ----------------------------------------------------------------------------- recommenders

def _ratings(n_users=200, n_items=100, n=15000, seed=0, k=2):
    """Low-rank ratings with string user ids: (train DataFrame, test DataFrame)."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(size=(n_users, k)), rng.normal(size=(n_items, k))
    df = pd.DataFrame({"user": rng.integers(0, n_users, n),
                       "item": rng.integers(0, n_items, n)}).drop_duplicates()
    df["rating"] = 3 + (P[df.user] * Q[df.item]).sum(1) + 0.1 * rng.normal(size=len(df))
    df["user"] = "u" + df.user.astype(str)
    cut = int(0.85 * len(df))
    tr, te = df.iloc[:cut], df.iloc[cut:]
    te = te[te.user.isin(set(tr.user)) & te.item.isin(set(tr.item))]
    return tr.reset_index(drop=True), te.reset_index(drop=True)


def test_mf_on_a_dask_dataframe_of_raw_ids(client):
    dd = pytest.importorskip("dask.dataframe")
    tr, te = _ratings()
    kw = dict(n_components=8, random_state=0, n_epochs=15, batch_size=64, learning_rate=0.1)
    single = MatrixFactorization(**kw).fit(tr)
    stats = []
    est = MatrixFactorization(**kw)
    got = sd.fit(est, dd.from_pandas(tr, npartitions=2), client=client, stats=stats)
    assert not hasattr(est, "user_table_")  # the estimator passed in is not modified
    # the encoders saw every id of every partition, as a single-process fit's
    assert np.array_equal(got.user_ids_, single.user_ids_)
    assert np.array_equal(got.item_ids_, single.item_ids_)
    assert got.global_mean_ == pytest.approx(single.global_mean_, rel=1e-12)
    assert got.rating_range_ == single.rating_range_
    assert got.n_epochs_ == 15 and len(got.history_) == 15
    assert all(s["rows"] <= s["table_rows"] for s in stats)
    # held-out RMSE close to the single-process fit's (and far better than the mean's)
    rmse_mean = float(np.sqrt(np.mean((te.rating - tr.rating.mean()) ** 2)))
    assert -got.score(te) < min(-single.score(te) + 0.1, 0.5 * rmse_mean), \
        (got.score(te), single.score(te), rmse_mean)
    # recommend takes raw ids and excludes the training items of both partitions
    users = tr.user.unique()[:5]
    rec, _ = got.recommend(users, n=20)
    for uid, row in zip(users, rec):
        assert not set(row) & set(tr.item[tr.user == uid])
    # training resumes single-process from the mixed model and its optimizer state
    got.partial_fit(tr)
    assert got.n_epochs_ == 16


@pytest.mark.parametrize("method", ["mixing", "dsgd"])
def test_no_large_argument_warnings(client, method):
    """The model, its blocks and the encoders go to the scheduler as task arguments on
    purpose (recomputable when a worker is lost): Dask's warnings against that are not
    passed on to the user, whatever its threshold."""
    import warnings
    tr, _ = _ratings(n=3000)
    # the partitions are on the workers already: only what the fit sends is left to warn
    parts = client.compute([dask.delayed(tr[:1500]), dask.delayed(tr[1500:])])
    # tables of 300 rows x 18 floats (43 kB) against a threshold above a task's own graph
    est = MatrixFactorization(n_components=16, random_state=0, n_epochs=2)
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": "8kB"}), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sd.fit(est, parts, client=client, method=method)
    large = [str(w.message) for w in caught if "arge graph" in str(w.message)
             or "arge object" in str(w.message)]
    assert not large, large


def test_mf_disjoint_partitions_keep_each_workers_rows(client):
    """Two partitions with no user and no item in common: every row of both tables (factors,
    biases and Adagrad accumulators) is exactly the one worker's that trained it, and that
    worker's pass is ``partial_fit`` of the initial model with the task's generator."""
    import copy
    from sparseopt.dask import _recommend as R
    tr, _ = _ratings(n=6000, seed=2)
    a = tr[tr.user.str[1:].astype(int) < 100]
    a = a[a.item < 50]
    b = tr[tr.user.str[1:].astype(int) >= 100]
    b = b[b.item >= 50]
    # an empty partition (as a filtered dask DataFrame has) is skipped
    parts = [dask.delayed(a), dask.delayed(b), dask.delayed(b.iloc[:0])]
    kw = dict(n_components=4, random_state=0, n_epochs=1)
    got = sd.fit(MatrixFactorization(**kw), parts, client=client, method="mixing")
    init, encs, _, _ = R.init_mf(MatrixFactorization(**kw), client, parts, True)
    seed = int(init._rng.integers(2 ** 63))
    steps = []
    for k, part in enumerate((a, b)):
        one = copy.deepcopy(init)
        one._rng = np.random.default_rng([seed, 0, 0, k])
        one.partial_fit(part)
        users = one.user_ids_.searchsorted(part.user.unique())
        items = np.unique(part.item.to_numpy())
        assert np.array_equal(got.user_table_[users], one.user_table_[users])
        assert np.array_equal(got.item_table_[items], one.item_table_[items])
        for key, rows in ((0, users), (1, items)):
            assert np.array_equal(got.optimizer_.state[key]["sum"][rows],
                                  one.optimizer_.state[key]["sum"][rows])
        steps.append(one.optimizer_.state[0]["step"])
    # the step counter is the sum of the workers' steps
    assert got.optimizer_.state[0]["step"] == sum(steps) == got.optimizer_.state[1]["step"]


@pytest.mark.parametrize("loss", ["bpr", "warp"])
def test_mf_implicit_samples_negatives_per_partition(client, loss):
    """BPR / WARP on two partitions: each task draws its negatives from the seen items of all
    the data (the broadcast model carries them); precision@10 close to the single process."""
    tr, te = _ratings(n=15000, seed=4)
    tr, te = tr[tr.rating > 3][["user", "item"]], te[te.rating > 3][["user", "item"]]
    kw = dict(loss=loss, n_components=8, random_state=0, n_epochs=10)
    single = MatrixFactorization(**kw).fit(tr)
    half = len(tr) // 2
    got = sd.fit(MatrixFactorization(**kw), [dask.delayed(tr.iloc[:half]),
                                             dask.delayed(tr.iloc[half:])], client=client)
    assert got.score(te) > single.score(te) - 0.03, (got.score(te), single.score(te))
    assert got._seen.pattern.nnz == single._seen.pattern.nnz


@pytest.mark.parametrize("kind", ["regressor", "classifier"])
def test_fm_on_a_dask_array_of_csr_blocks(client, kind):
    from sparseopt.recommend import FMClassifier
    X, yc, yr = _problem(n=6000, d=200, seed=9)
    y = yr if kind == "regressor" else yc
    cls = FMRegressor if kind == "regressor" else FMClassifier
    meta = sp.csr_matrix((0, 200))
    Xd = da.concatenate([da.from_delayed(dask.delayed(X[a:a + 2500]), shape=(2500, 200),
                                         dtype=X.dtype, meta=meta) for a in (0, 2500)])
    yd = da.from_array(y[:5000], chunks=2500)
    kw = dict(n_components=4, random_state=0, n_epochs=10, learning_rate=0.1)
    single = cls(**kw).fit(X[:5000], y[:5000])
    got = cls(**kw)
    got = sd.fit(got, Xd, yd, client)
    assert got.n_iter_ == 10 and got.t_ == 50000 and len(got.loss_curve_) == 10
    s_single, s_got = single.score(X[5000:], y[5000:]), got.score(X[5000:], y[5000:])
    assert s_got > s_single - 0.05, (s_got, s_single)
    if kind == "classifier":
        assert np.array_equal(got.classes_, [0, 1])
    got.partial_fit(X[:100], y[:100])  # an ordinary fitted model


def _load_npz(path, log):
    """A partition loaded where the task runs: records the process that loaded it."""
    import os as _os
    with open(log, "a") as f:
        f.write(f"{_os.getpid()}\n")
    d = np.load(path)
    return (d["user"], d["item"], d["rating"])


def test_out_of_core_partitions_load_on_the_workers(client, tmp_path):
    """Partitions given as dask.delayed loaders of .npz files, persist=False: each sync
    loads them inside the worker processes; the driver never does."""
    tr, te = _ratings(n=4000, seed=6)
    log = tmp_path / "loads.txt"
    paths = []
    for k, part in enumerate(np.array_split(np.arange(len(tr)), 3)):
        p = tmp_path / f"part{k}.npz"
        sub = tr.iloc[part]
        np.savez(p, user=sub.user.to_numpy().astype(str), item=sub.item.to_numpy(),
                 rating=sub.rating.to_numpy())
        paths.append(str(p))
    parts = [dask.delayed(_load_npz, pure=False)(p, str(log)) for p in paths]
    got = sd.fit(MatrixFactorization(n_components=4, random_state=0), parts, client=client,
                 n_epochs=2, persist=False)
    pids = [int(v) for v in log.read_text().split()]
    workers = set(client.run(os.getpid).values())
    assert os.getpid() not in pids
    assert set(pids) <= workers
    # loaded again at every sync (not kept): ids, encoding, and 2 epochs
    assert len(pids) >= 3 * 3
    assert np.isfinite(got.score(te))


def test_syncs_send_the_touched_rows_not_the_model(client):
    """No sync sends the model: the first sends the unfitted estimator, the second the
    skeleton of the fitted one (no table: the workers build its zeros) and the merged rows,
    later ones the merged rows of the last syncs; what is sent per sync scales with the rows
    the partitions touched, not with the table (2**18 rows here, of which at most 400 are
    touched)."""
    rng = np.random.default_rng(3)
    d, used = 1 << 18, rng.choice(1 << 18, 400, replace=False)
    X, yc, _ = _problem(n=2000, d=400, seed=3)
    X = sp.csr_matrix((X.data, used[X.indices], X.indptr), shape=(2000, d))
    xs, ys = _parts(X, yc, 2)
    stats = []
    est = SGDClassifier(loss="log_loss", random_state=0)
    got = sd.fit(est, xs, ys, client, n_epochs=4, stats=stats)
    assert stats[0]["sent_bytes"] < 1024  # the unfitted estimator
    # the skeleton (a few kB) and the first merged rows: id, weight and accumulator
    assert 0 < stats[1]["sent_bytes"] <= 8192 + 401 * 8 * 3, stats[1]
    for s in stats[1:]:
        assert s["rows"] <= 401
        # the previous sync's rows: id, weight and accumulator, 8 bytes each (the
        # counts stay on the workers: only the merge reads them)
        assert 0 < s["sent_bytes"] <= 401 * 8 * 3 + (8192 if s is stats[1] else 0), s
    # the replicas are the driver's model: the result is that of whole-model syncs
    clean = sd.fit(est, xs, ys, client, n_epochs=4, sync_every=10 ** 6)
    assert np.array_equal(got.coef_, clean.coef_)


# ----------------------------------------------------------------------------- DSGD

def _dsgd_cells(client, parts, kw, n_blocks):
    """The initial model, the seed and the grid of cells (global row indices) that a DSGD
    fit of ``parts`` starts from, computed as the fit computes them."""
    from sparseopt.dask import _dsgd
    init, reads, _ = _dsgd.init_model(MatrixFactorization(**kw), client, parts)
    seed = int(init._rng.integers(2 ** 63))
    users, items = init._id_encoders
    splits = [_dsgd.encode_split(r, users, items, n_blocks)[0] for r in client.gather(reads)]
    rows = [_dsgd.block_rows(n, n_blocks)[0] for n in (len(users), len(items))]
    # block-local rows back to the tables' rows
    cells = [[(np.concatenate([rows[0][bu][s[bu * n_blocks + bi][0]] for s in splits]),
               np.concatenate([rows[1][bi][s[bu * n_blocks + bi][1]] for s in splits]),
               np.concatenate([s[bu * n_blocks + bi][2] for s in splits]))
              for bi in range(n_blocks)] for bu in range(n_blocks)]
    return init, seed, cells


@pytest.mark.parametrize("n_blocks, rounds", [(1, 1), (3, 2)])
def test_dsgd_is_the_sequential_block_schedule(client, n_blocks, rounds, monkeypatch):
    """DSGD on two workers is bitwise one process running the same cells in the same order
    on the whole tables (each cell by the estimator's own pass): tables, Adagrad
    accumulators and step counters. Three blocks on two workers: a worker holds two user
    blocks and item blocks move between them; two rounds: each cell's pass in two runs."""
    from sparseopt.dask import _dsgd
    monkeypatch.setattr(_dsgd, "MIN_SUB_EPOCHS", n_blocks * rounds)  # read by the driver
    assert _dsgd.rounds_for(n_blocks) == rounds
    tr, _ = _ratings(n=6000, seed=3)
    parts = [dask.delayed(tr.iloc[:2500]), dask.delayed(tr.iloc[2500:]),
             dask.delayed(tr.iloc[:0])]
    kw = dict(n_components=4, random_state=0, n_epochs=2, batch_size=64)
    if n_blocks > 1:  # the first epoch's tasks start from their optimizer's start value
        kw["optimizer_params"] = {"initial_accumulator_value": 0.25}
    stats = []
    got = sd.fit(MatrixFactorization(**kw), parts, client=client, method="dsgd",
                 n_blocks=n_blocks, stats=stats)
    init, seed, cells = _dsgd_cells(client, parts, kw, n_blocks)
    ref = _dsgd.sequential_reference(init, cells, n_blocks, 2, seed, rounds)
    assert np.array_equal(got.user_table_, ref.user_table_)
    assert np.array_equal(got.item_table_, ref.item_table_)
    assert not np.array_equal(got.item_table_, init.item_table_)
    for key in (0, 1):
        assert np.array_equal(got.optimizer_.state[key]["sum"], ref.optimizer_.state[key]["sum"])
        assert got.optimizer_.state[key]["step"] == ref.optimizer_.state[key]["step"] > 0
    assert got.n_epochs_ == 2 and len(got.history_) == 2
    assert len(stats) == 2 * n_blocks * rounds
    assert sum(sum(s["ratings"]) for s in stats) == 2 * len(tr)
    # a user block stays on its worker: only item blocks travel, never more than the table
    n_items = got.item_table_.shape[0]
    assert all(s["rows"] <= n_items for s in stats)
    assert all(s["sent_bytes"] == 0 for s in stats[1:])
    got.partial_fit(tr)  # an ordinary fitted model
    assert got.n_epochs_ == 3


def test_dsgd_cell_permutation_is_the_seeds_draw_kept_for_the_next_runs(monkeypatch):
    from sparseopt.dask import _dsgd
    monkeypatch.setattr(_dsgd, "_PERMS", type(_dsgd._PERMS)())
    monkeypatch.setattr(_dsgd, "_PERM_KEEP", 3)
    seeds = [[7, e, 0, 1] for e in range(5)]
    for s_ in seeds:
        want = np.random.default_rng(s_).permutation(1000)
        got = _dsgd.cell_permutation(s_, 1000, True)
        assert np.array_equal(got, want) and not got.flags.writeable
        assert _dsgd.cell_permutation(s_, 1000, True) is got  # kept for the next run
        fresh = _dsgd.cell_permutation(s_, 1000, False)  # one run: nothing kept
        assert np.array_equal(fresh, want) and fresh is not got
    assert list(_dsgd._PERMS) == [(tuple(s_), 1000) for s_ in seeds[-3:]]
    monkeypatch.setattr(_dsgd, "_PERM_BYTES", 1000 * 8)  # a byte budget of one
    _dsgd.cell_permutation([1], 1000, True)
    assert list(_dsgd._PERMS) == [((1,), 1000)]


def test_dsgd_grid_is_each_partitions_matrix_cut_into_cells(client):
    """The workers encode their partitions by the model's encoders (the distinct ids of all
    the partitions, sorted: ``IdEncoder``'s map) and cut them into cells in the order of the
    partition's CSR matrix, the order a single-process fit reads; a pair given twice is
    refused."""
    from sparseopt.dask import _dsgd
    from sparseopt.recommend import IdEncoder
    from sparseopt.recommend._interactions import interactions_input
    tr, _ = _ratings(n=4000, seed=8)
    tr = tr.sample(frac=1.0, random_state=2).reset_index(drop=True)  # rows in no order
    parts = [tr.iloc[:1700], tr.iloc[1700:], tr.iloc[:0]]
    init, reads, sizes = _dsgd.init_model(MatrixFactorization(n_components=2), client,
                                          [dask.delayed(x) for x in parts])
    users, items = init._id_encoders
    assert np.array_equal(users.classes_, IdEncoder().fit(tr.user).classes_)
    assert np.array_equal(items.classes_, IdEncoder().fit(tr.item).classes_)
    assert sizes == [1700, len(tr) - 1700, 0]
    assert init.global_mean_ == pytest.approx(tr.rating.mean())
    B = 3
    rows = [_dsgd.block_rows(n, B)[0] for n in (len(users), len(items))]
    for part, read in zip(parts, client.gather(reads)):
        pieces, (su, si) = _dsgd.encode_split(read, users, items, B)
        if len(part) == 0:
            assert all(p_[0].size == 0 for p_ in pieces) and su.size == 0
            continue
        X = interactions_input("X", part, False, users, items).X.tocoo()
        assert np.array_equal(su, X.row) and np.array_equal(si, X.col)
        cell = _dsgd.block_of(X.row, B) * B + _dsgd.block_of(X.col, B)
        for c, (lu, li, v) in enumerate(pieces):
            keep = cell == c
            assert np.array_equal(rows[0][c // B][lu], X.row[keep])
            assert np.array_equal(rows[1][c % B][li], X.col[keep])
            assert np.array_equal(v, X.data[keep])
    assert _dsgd.merged_ids([np.array([1, 4, 9]), np.array([0, 4, 10]), np.array([], int)]
                            ).tolist() == [0, 1, 4, 9, 10]
    import pandas as pd
    twice = pd.concat([tr.iloc[:10], tr.iloc[3:4]])
    with pytest.raises(ValueError, match="1 duplicate .user, item. pair"):
        sd.fit(MatrixFactorization(), [dask.delayed(twice)], client=client, method="dsgd")


def test_dsgd_converges_like_the_single_process_fit(client):
    """DSGD is SGD over a reordered stream: its held-out RMSE is that of one process."""
    tr, te = _ratings(n_users=400, n_items=200, n=30000, seed=11)
    kw = dict(n_components=4, random_state=0, n_epochs=20, learning_rate=0.1)
    single = MatrixFactorization(**kw).fit(tr)
    half = len(tr) // 2
    parts = [dask.delayed(tr.iloc[:half]), dask.delayed(tr.iloc[half:])]
    stats = []
    got = sd.fit(MatrixFactorization(**kw), parts, client=client, stats=stats)
    assert "task_cpu" in stats[0]  # method="auto" trained by DSGD
    r_single, r_got = -single.score(te), -got.score(te)
    assert abs(r_got - r_single) < 0.005, (r_got, r_single)


def test_dsgd_refusals(client):
    parts = [dask.delayed(_ratings(n=500)[0])]
    for kw, match in ((dict(loss="bpr"), "negatives"), (dict(optimizer="adam"), "step"),
                      (dict(optimizer_params={"lr_decay": 0.1}), "lr_decay")):
        with pytest.raises(ValueError, match=match):
            sd.fit(MatrixFactorization(**kw), parts, client=client, method="dsgd")
    with pytest.raises(ValueError, match="sync_every"):
        sd.fit(MatrixFactorization(), parts, client=client, method="dsgd", sync_every=2)
    with pytest.raises(ValueError, match="persist"):
        sd.fit(MatrixFactorization(), parts, client=client, method="dsgd", persist=False)
    with pytest.raises(ValueError, match="n_blocks"):
        sd.fit(MatrixFactorization(loss="bpr"), parts, client=client, n_blocks=2)
    with pytest.raises(ValueError, match="n_blocks"):
        sd.fit(MatrixFactorization(), parts, client=client, n_blocks=0)
    with pytest.raises(ValueError, match="method"):
        sd.fit(MatrixFactorization(), parts, client=client, method="hogwild")
    X, yc, _ = _problem(n=200, d=20, seed=1)
    xs, ys = _parts(X, yc, 2)
    with pytest.raises(ValueError, match="MatrixFactorization"):
        sd.fit(SGDClassifier(), xs, ys, client, n_epochs=1, method="dsgd")


def test_a_worker_idle_since_the_first_sync_starts_from_the_skeleton():
    """A worker that ran no task since the first sync holds the unfitted estimator, to which
    no update applies: the skeleton sent while every update since it is in the chain gives
    it the driver's model, bit for bit (no cluster: the worker's side in this process)."""
    from sparseopt.dask import _fit as F
    X, yc, _ = _problem(n=600, d=50, seed=5)
    parts = [(X[:300], yc[:300]), (X[300:], yc[300:])]
    est, token, classes = SGDClassifier(loss="log_loss", random_state=0), "idle", np.unique(yc)
    try:
        ref0 = (token, 0, est, [], [], F._apply_linear_update)
        res = [F._with_replica(F._train_linear, ref0, x, y, 0, 300, classes, 50)
               for x, y in parts]
        skeleton = res[0][1]
        driver = skeleton.inflate()
        d1 = _mixing.strip_old(_mixing.tree_merge([r[0] for r in res]))
        F._apply_linear(driver, d1, 0, 0)
        # the driver's side, with the deltas in place of their futures
        replicas = F._Replicas(None, F._apply_linear_update)
        replicas.token = token
        replicas.advance(d1, d1.nbytes, driver, skeleton=skeleton)
        # the second sync runs on other workers
        res = [F._train_linear(driver, x, y, 0, 300, None, 50) for x, y in parts]
        d2 = _mixing.strip_old(_mixing.tree_merge([r[0] for r in res]))
        F._apply_linear(driver, d2, driver.t_, driver._samples_seen)
        replicas.advance(d2, d2.nbytes, driver)
        ref, chain = replicas.ref(driver)
        assert ref[2] is skeleton and list(chain) == [d1, d2]
        with pytest.raises(Exception):  # the unfitted estimator takes no update
            F._resolve(ref[:2] + (None,) + ref[3:], chain)
        F._drop_replica(token)
        F._resolve(ref0, [])
        got = F._resolve(ref, chain)
        for name, table in F._linear_tables(driver).items():
            assert np.array_equal(F._linear_tables(got)[name], table), name
        assert (got.t_, got._samples_seen) == (driver.t_, driver._samples_seen)
    finally:
        F._drop_replica(token)


def _kill_one_worker_after(client, stats, n_syncs):
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    deadline = time.monotonic() + 60
    while len(stats) < n_syncs:
        if time.monotonic() > deadline:  # the fit failed or ended early: the test says so
            return
        time.sleep(0.005)
    os.kill(victim, signal.SIGKILL)
    stats.append("killed")


# Last in the module: no later test waits for the nanny to restart the killed worker (the
# cluster is closed while it does).
def test_killed_worker_changes_nothing(two_workers):
    client = two_workers
    X, yc, _ = _problem(n=6000, d=300, seed=7)

    def parts():  # partitions rebuilt from their graph when a worker holding one dies
        return ([dask.delayed(lambda a, b: X[a:b])(a, a + 1500) for a in range(0, 6000, 1500)],
                [dask.delayed(lambda a, b: yc[a:b])(a, a + 1500) for a in range(0, 6000, 1500)])

    est = SGDClassifier(loss="log_loss", random_state=0, batch_size=50)
    clean = sd.fit(est, *parts(), client, n_epochs=1, sync_every=3)
    stats = []
    killer = threading.Thread(target=_kill_one_worker_after, args=(client, stats, 3),
                              daemon=True)
    killer.start()
    got = sd.fit(est, *parts(), client, n_epochs=1, sync_every=3, stats=stats)
    killer.join(timeout=60)
    assert "killed" in stats[:-1]  # the worker died mid-fit: syncs were recorded after it
    assert len([s for s in stats if s != "killed"]) == 10
    assert np.array_equal(got.coef_, clean.coef_)
    assert np.array_equal(got.intercept_, clean.intercept_)


def test_dsgd_killed_worker_changes_nothing(two_workers):
    """A worker killed mid-DSGD (with its user blocks, cells and item blocks in flight):
    the lost tasks re-run from their inputs, or the epoch from the gathered model, and the
    result is bitwise the clean fit's."""
    client = two_workers
    tr, _ = _ratings(n=15000, seed=5)
    parts = [dask.delayed(tr.iloc[:7000]), dask.delayed(tr.iloc[7000:])]
    kw = dict(n_components=8, random_state=0, n_epochs=4, batch_size=64)
    clean = sd.fit(MatrixFactorization(**kw), parts, client=client, n_blocks=2)
    stats = []
    killer = threading.Thread(target=_kill_one_worker_after, args=(client, stats, 2),
                              daemon=True)
    killer.start()
    got = sd.fit(MatrixFactorization(**kw), parts, client=client, n_blocks=2, stats=stats)
    killer.join(timeout=60)
    assert "killed" in stats[:-1]
    assert np.array_equal(got.user_table_, clean.user_table_)
    assert np.array_equal(got.item_table_, clean.item_table_)
    assert np.array_equal(got.optimizer_.state[1]["sum"], clean.optimizer_.state[1]["sum"])



def _whole_table_delta(model, X, y, classes):
    """The delta of one pass found by comparing the whole tables before and after it (the
    definition a task's delta must equal)."""
    from sparseopt.dask import _fit as F
    first = not hasattr(model, "_W")
    est = F.copy.deepcopy(model)
    est.partial_fit(X, y, **({"classes": classes} if first else {}))
    after = F._linear_tables(est)
    n_rows = est._W.shape[0]
    before = (F._zeros_like_tables(est, n_rows, est._W.shape[1], est._W.dtype) if first
              else F._linear_tables(model))
    counts = np.bincount(X.indices, minlength=n_rows)
    if est._intercept_row:
        counts[est._n_feat] = X.shape[0]
    rules = F._linear_rules(est)
    return _mixing.extract({k: before[k] for k in after}, after, counts,
                           {k: rules[k] for k in after}, est.t_ - getattr(model, "t_", 0),
                           X.shape[0])


def _same_delta(a, b):
    if not np.array_equal(a.rows, b.rows) or not np.array_equal(a.counts, b.counts):
        return False
    return all(a.new[k].dtype == b.new[k].dtype and a.old[k].dtype == b.old[k].dtype
               and np.array_equal(a.new[k], b.new[k]) and np.array_equal(a.old[k], b.old[k])
               for k in a.new) and (a.steps, a.samples) == (b.steps, b.samples)


@pytest.mark.parametrize("kw", [dict(loss="log_loss"), dict(penalty="l1", alpha=1e-3),
                                dict(optimizer="adam", penalty="elasticnet", alpha=1e-3),
                                dict(optimizer="sgd"), dict(fit_intercept=False)])
def test_a_task_compares_only_the_rows_it_can_change(kw):
    """A task compares the tables on the slice's columns (counted once per partition) and the
    replica's non-zero rows (the rows of the merged updates) only: its delta is, bit for bit,
    the whole tables' comparison, sync after sync, slices included. The parts have disjoint
    features, so each pass moves the other part's rows by the penalty alone; a support that
    leaves those rows out misses that move (no cluster: the worker's side in this process)."""
    from sparseopt.dask import _fit as F
    X, yc, _ = _problem(n=900, d=300, seed=2, density=0.04)
    X = X.tolil()
    X[:450, 150:] = 0
    X[450:, :150] = 0
    X = X.tocsr()
    X.eliminate_zeros()
    parts = [(X[:450], yc[:450], 0, 450), (X[450:], yc[450:], 0, 200),
             (X[450:], yc[450:], 200, 450)]
    classes = np.unique(yc)
    model, support = SGDClassifier(random_state=0, batch_size=16, **kw), None
    for sync in range(3):
        got = []
        for x, y, a, b in parts:
            delta, skeleton, cpu = F._train_linear(model, x, y, a, b, classes, 300,
                                                   support=support)
            assert _same_delta(delta, _whole_table_delta(model, x[a:b], y[a:b], classes))
            assert cpu >= 0.0
            if sync == 1:
                # the first pass set every row of both parts: without them the deltas differ
                short, _, _ = F._train_linear(model, x, y, a, b, None, 300,
                                              support=np.zeros(0, dtype=np.int64))
                assert not _same_delta(short, delta)
            got.append((delta, skeleton))
        merged = _mixing.strip_old(_mixing.tree_merge([d for d, _ in got]))
        if sync == 0:
            model, support = got[0][1].inflate(), merged.rows
            F._apply_linear(model, merged, 0, 0)
        else:
            F._apply_linear(model, merged, model.t_, model._samples_seen)
            support = _mixing.union_sorted(support, merged.rows)


def test_a_task_on_the_replicas_tables_leaves_them_as_they_were():
    """``in_place`` (a one-thread worker): the pass trains on the replica's own tables and
    writes the rows back, also after a pass that fails; the delta is the copy's, bit for bit."""
    from sparseopt.dask import _fit as F
    X, _, yr = _problem(n=600, d=80, seed=3)
    for est in (SGDClassifier(random_state=0, batch_size=16),
                SGDRegressor(optimizer="adam", penalty="elasticnet", random_state=0)):
        y = (yr > 0).astype(int) if isinstance(est, SGDClassifier) else yr
        classes = np.unique(y) if isinstance(est, SGDClassifier) else None
        d0, skeleton, _ = F._train_linear(est, X[:300], y[:300], 0, 300, classes, 80)
        model = skeleton.inflate()
        F._apply_linear(model, _mixing.strip_old(d0), 0, 0)
        tables = {k: v.copy() for k, v in F._linear_tables(model).items()}
        copied = F._train_linear(model, X[300:], y[300:], 0, 300, classes, 80)[0]
        shared = F._train_linear(model, X[300:], y[300:], 0, 300, classes, 80,
                                 in_place=True)[0]
        assert _same_delta(copied, shared) and shared.rows.size > 0
        for k, v in F._linear_tables(model).items():
            assert np.array_equal(v, tables[k]), k
    # a pass that diverges raises after writing rows: they are written back all the same
    model.set_params(optimizer="sgd", penalty=None, learning_rate="constant", eta0=1e300)
    with pytest.raises(ValueError, match="overflow"):
        F._train_linear(model, X[300:], yr[300:], 0, 300, None, 80, in_place=True)
    assert np.array_equal(model._W, tables["W"])


def test_partitions_held_by_one_worker_are_spread_over_both(two_workers):
    """Persisted partitions that all sit on one worker would leave the other idle at every
    sync: ``_balance`` copies half of them to it (X and y together), and leaves balanced ones
    where they are."""
    from sparseopt.dask import _fit as F
    client = two_workers
    X, yc, _ = _problem(n=800, d=40, seed=6)
    xs, ys = _parts(X, yc, 4)
    first = sorted(client.scheduler_info()["workers"])[0]
    xs = client.compute(xs, workers=[first])
    ys = client.compute(ys, workers=[first])
    client.gather(xs + ys)
    assert {w for ws in client.who_has(xs).values() for w in ws} == {first}
    bx, by = F._balance(client, list(xs), list(ys), [200] * 4)
    client.gather(bx + by)
    second = sorted(client.scheduler_info()["workers"])[1]
    where = [sorted(client.who_has([f])[f.key]) for f in bx]
    assert sorted(where) == [[first], [first], [second], [second]], where
    assert [sorted(client.who_has([f])[f.key]) for f in by] == where
    again = F._balance(client, list(bx), list(by), [200] * 4)
    assert [a.key for a in again[0]] == [b.key for b in bx]  # nothing moves twice
