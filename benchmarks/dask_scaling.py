"""Scaling of ``sparseopt.dask.fit``: one worker against two on this machine.

A generated logistic problem with hashed features (default 2M rows x 2**22 columns, ~30
stored entries per row, feature ids drawn from a Zipf law so that most of the table is never
touched) is cut into ``--partitions`` row partitions, generated inside the workers (the
driver never holds the training data). Three fits run, interleaved ``--repeats`` times:

* ``single``: one process, the same estimator by ``partial_fit``, one call per epoch;
* ``dask-1``: ``sparseopt.dask.fit`` on a LocalCluster of one worker process;
* ``dask-2``: the same on two worker processes.

With the same partitions, dask-1 and dask-2 compute the same models (the mixing is
deterministic), so their difference is the parallelism alone. Reported per run: the
held-out ROC-AUC after every epoch, the total and the last epoch's seconds (evaluation
excluded; 4 epochs by default, so the last one shows the steady state, after the first
syncs' setup), the time to reach the single-process fit's final AUC minus ``--tolerance``,
CPU seconds of the driver (the scheduler runs in it) and of the workers (on a shared
machine the overhead shows there, not in wall time), and per sync the rows mixed, the bytes
the partitions' deltas carried and the bytes sent to the workers, against the table's rows,
with each training task's CPU seconds and worker. The training tasks' critical path (per sync
the busiest worker's task CPU seconds, summed) of dask-2 against dask-1 measures the
parallelism without the other load of a shared machine.

    python benchmarks/dask_scaling.py                     # a few minutes on 2 quiet cores
    python benchmarks/dask_scaling.py --rows 200000 --repeats 1   # smoke run

``--problem mf``: the same three runs for ``MatrixFactorization`` (squared loss) on generated
low-rank ratings (default 2M ratings of 200k users x 20k items, popularity-skewed items),
given to ``sparseopt.dask.fit`` as (user, item, rating) column partitions generated in the
workers; the held-out RMSE after every epoch, the time to the single-process fit's final RMSE
plus ``--rmse-tolerance``, and per sync the rows of both tables mixed. The callback copies
the tables after every epoch and the RMSEs are computed after the fit (``--eval-inline``:
in the callback, its wall time subtracted; on 2 cores it then takes a core from dask-2's
workers while they train the next epoch, and from none of dask-1's).

    python benchmarks/dask_scaling.py --problem mf --rows 2000000

``--method`` (default ``dsgd,mixing``) runs dask-1 and dask-2 once per listed method of
``sparseopt.dask.fit``, interleaved in one process, and prints the time-to-target table,
the dask-2 / dask-1 ratios and the final RMSE against the single process per method, then per
sync the rows and bytes that moved (DSGD: the item blocks that travel between the workers,
and each training task's CPU seconds). ``--blocks`` is DSGD's ``n_blocks`` (default 2, the
same for dask-1 and dask-2, so both compute the same model).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import scipy.sparse as sp


def make_partition(seed: int, n_rows: int, n_features: int, nnz: int, true_seed: int,
                   tail: float = 0.5):
    """One partition of the generated problem: CSR (float32) and 0/1 labels from a sparse
    true weight vector (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    # heavy-tailed feature popularity, P(rank > r) = r**-tail (tail 1: Zipf's law with
    # exponent 2), so most of the hashed table is never touched, as with hashed text
    u = 1.0 - rng.random(n_rows * nnz)
    ranks = np.minimum(u ** (-1.0 / tail), n_features).astype(np.int64) - 1
    perm_rng = np.random.default_rng(true_seed)
    mult, add = 2654435761, int(perm_rng.integers(1 << 30))
    cols = ((ranks.astype(np.int64) * mult + add) % n_features).astype(np.int32)
    indptr = np.arange(0, n_rows * nnz + 1, nnz, dtype=np.int64)
    X = sp.csr_matrix((np.ones(n_rows * nnz, dtype=np.float32) / np.sqrt(nnz), cols, indptr),
                      shape=(n_rows, n_features))
    X.sum_duplicates()
    # SciPy's own index type (int32 here), as a matrix built by SciPy has
    X = sp.csr_matrix((X.data, X.indices.astype(np.int32), X.indptr.astype(np.int32)),
                      shape=X.shape) if X.nnz < 2 ** 31 else X
    z = X @ _true_weights(n_features, true_seed)
    y = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    return X, y


def _true_weights(n_features: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=n_features) * 3.0).astype(np.float32)


def _part_x(args):
    return make_partition(*args)[0]


def _part_y(args):
    return make_partition(*args)[1]


def make_ratings(seed: int, n: int, n_users: int, n_items: int, part: int = 0,
                 n_parts: int = 1, rank: int = 8, true_seed: int = 7):
    """``n`` ratings ``(users, items, ratings)`` of a rank-``rank`` model plus noise (items
    drawn with a popularity skew) of the users ``u % n_parts == part`` (so that partitions
    never rate one pair twice); deterministic in ``seed``."""
    t = np.random.default_rng(true_seed)
    P = t.normal(size=(n_users, rank)).astype(np.float32) / rank ** 0.5
    Q = t.normal(size=(n_items, rank)).astype(np.float32)
    rng = np.random.default_rng(seed)
    u = rng.integers(0, n_users // n_parts, n) * n_parts + part
    i = np.minimum((rng.pareto(1.0, n) * n_items / 50).astype(np.int64), n_items - 1)
    r = 3.0 + np.einsum("ij,ij->i", P[u], Q[i]) + 0.3 * rng.normal(size=n)
    return u, i, r


def _ratings_part(args):
    u, i, r = make_ratings(*args)
    # one rating per (user, item) pair, as an explicit model requires
    _, keep = np.unique(u * args[3] + i, return_index=True)
    return u[keep], i[keep], r[keep]


def _mf_rmse(model, test):
    u, i, r = test
    keep = np.isin(u, model.user_ids_) & np.isin(i, model.item_ids_)
    return float(np.sqrt(np.mean((model.predict(u[keep], i[keep]) - r[keep]) ** 2)))


def main_mf(a):
    import dask
    from distributed import Client, LocalCluster

    import sparseopt.dask as sd
    from sparseopt.recommend import MatrixFactorization

    n_users, n_items = a.users, a.items
    per = a.rows // a.partitions
    specs = [(1000 + i, per, n_users, n_items, i, a.partitions) for i in range(a.partitions)]
    test = _ratings_part((1, a.test_rows, n_users, n_items))
    methods = a.method.split(",")

    def estimator():
        return MatrixFactorization(n_components=16, random_state=0, learning_rate=a.lr,
                                   batch_size=1024)

    def run_single():
        parts = [_ratings_part(s) for s in specs]
        cols = tuple(np.concatenate([p[k] for p in parts]) for k in range(3))
        est, secs, rmses = estimator(), [], []
        cpu = time.process_time()
        for e in range(a.epochs):
            tic = time.perf_counter()
            est.partial_fit(cols)
            secs.append(time.perf_counter() - tic)
            rmses.append(_mf_rmse(est, test))
        return dict(secs=secs, rmses=rmses, cpu=time.process_time() - cpu)

    def run_dask(n_workers, method):
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, \
                Client(cluster) as client:
            xs = client.compute([dask.delayed(_ratings_part)(s) for s in specs])
            client.gather(xs)
            client.run(_warm_up)
            stats, rmses, eval_time = [], [], [0.0]
            t_start = [None]

            def callback(model, info):
                if not info["last"]:
                    return
                tic = time.perf_counter()
                at = tic - t_start[0] - eval_time[0]
                if a.eval_inline:
                    rmses.append((at, _mf_rmse(model, test)))
                else:
                    # the tables copied (a few ms) and evaluated after the fit: on 2 cores
                    # an evaluation in the driver takes a core from the workers of dask-2
                    # (not from dask-1's), which subtracting its wall time does not undo
                    rmses.append((at, (model.user_table_.copy(), model.item_table_.copy())))
                eval_time[0] += time.perf_counter() - tic

            kw = dict(method=method)
            if method == "dsgd":
                kw["n_blocks"] = a.blocks
            else:
                kw["sync_every"] = a.sync_every
            t_start[0] = time.perf_counter()
            model = sd.fit(estimator(), xs, client=client, n_epochs=a.epochs, stats=stats,
                           callback=callback, **kw)
            if not a.eval_inline:
                for q, (at, (U, Q)) in enumerate(rmses):
                    model.user_table_[...] = U
                    model.item_table_[...] = Q
                    rmses[q] = (at, _mf_rmse(model, test))
            return dict(rmses=[x[1] for x in rmses], times=[x[0] for x in rmses],
                        stats=stats)

    runs = [("single", run_single)]
    for m in methods:
        runs += [(f"dask-1 {m}", lambda m=m: run_dask(1, m)),
                 (f"dask-2 {m}", lambda m=m: run_dask(2, m))]
    results = {name: [] for name, _ in runs}
    for rep in range(a.repeats):
        for name, fn in runs:
            r = fn()
            results[name].append(r)
            print(f"[rep {rep}] {name}: {r}"[:600], file=sys.stderr, flush=True)
    target = min(r["rmses"][-1] for r in results["single"]) + a.rmse_tolerance

    def time_to(r):
        times = r.get("times") or list(np.cumsum(r["secs"]))
        for t, v in zip(times, r["rmses"]):
            if v <= target:
                return t
        return float("nan")

    print(f"# sparseopt.dask scaling, MF: {a.rows} ratings, {n_users} users x {n_items} items, "
          f"{a.partitions} partitions, {a.epochs} epochs, lr {a.lr}, methods {methods}, "
          f"n_blocks={a.blocks} (dsgd), sync_every={a.sync_every} (mixing)\n")
    print(f"target: single-process final RMSE + {a.rmse_tolerance} = {target:.4f}\n")
    print("| run | rep | RMSE per epoch | epoch ends s | total s | time to target s |")
    print("|---|---|---|---|---|---|")
    for name, runs_ in results.items():
        for i, r in enumerate(runs_):
            ends = r.get("times") or list(np.cumsum(r["secs"]))
            print(f"| {name} | {i} | {', '.join(f'{x:.4f}' for x in r['rmses'])} | "
                  f"{', '.join(f'{x:.2f}' for x in ends)} | {ends[-1]:.2f} | "
                  f"{time_to(r):.2f} |")
    single_final = [r["rmses"][-1] for r in results["single"]]
    for m in methods:
        two, one = results[f"dask-2 {m}"], results[f"dask-1 {m}"]
        ratios = [time_to(b) / time_to(c) for b, c in zip(two, one)]
        tot = [b["times"][-1] / c["times"][-1] for b, c in zip(two, one)]
        print(f"\n{m}: dask-2 / dask-1 time to target, paired per rep: "
              f"{', '.join(f'{x:.3f}' for x in ratios)} (median {statistics.median(ratios):.3f})")
        print(f"{m}: dask-2 / dask-1 total time, paired per rep: "
              f"{', '.join(f'{x:.3f}' for x in tot)} (median {statistics.median(tot):.3f})")
        gaps = [b["rmses"][-1] - s for b, s in zip(two, single_final)]
        print(f"{m}: final RMSE dask-2 - single, paired per rep: "
              f"{', '.join(f'{x:+.4f}' for x in gaps)}")
    cpus = [r["cpu"] for r in results["single"]]
    print(f"\nsingle process: CPU seconds of the {a.epochs} epochs: "
          f"{', '.join(f'{x:.2f}' for x in cpus)}")
    for name, runs_ in results.items():
        if "dsgd" not in name:
            continue
        # the training tasks' CPU seconds (setup and driver excluded): all of them, and the
        # critical path (per sub-epoch the slowest task; its tasks run in parallel), a
        # measure of the parallelism that a loaded machine's wall clock hides
        tot = [sum(sum(s_["task_cpu"]) for s_ in r["stats"]) for r in runs_]
        crit = [sum(max(s_["task_cpu"]) for s_ in r["stats"]) for r in runs_]
        print(f"{name}: training task CPU s total {', '.join(f'{x:.2f}' for x in tot)}; "
              f"critical path {', '.join(f'{x:.2f}' for x in crit)}")
        # the driver's setup steps (the grid is built on the workers meanwhile) and the
        # first epoch's end: setup and the first epoch overlap
        setup = [r["stats"][0].get("setup", {}) for r in runs_]
        print(f"{name}: setup s per rep (driver): " + "; ".join(
            ", ".join(f"{k} {v:.2f}" for k, v in st_.items()) for st_ in setup) +
            "; first epoch ends at " + ", ".join(f"{r['times'][0]:.2f}" for r in runs_) + " s")
    for m in methods:
        st = results[f"dask-2 {m}"][-1]["stats"]
        print(f"\n{m}, dask-2, last rep, per sync:\n")
        print("| sync | rows moved | table rows | bytes between workers | bytes sent by the "
              "driver | seconds | task CPU s |")
        print("|---|---|---|---|---|---|---|")
        for s_ in st:
            cpu = ", ".join(f"{c:.2f}" for c in s_["task_cpu"]) if "task_cpu" in s_ else "-"
            print(f"| {s_['epoch']}.{s_['sync']} | {s_['rows']} | {s_['table_rows']} | "
                  f"{s_['bytes']} | {s_['sent_bytes']} | {s_['seconds']:.2f} | {cpu} |")


def _warm_up():
    import sklearn.metrics  # noqa: F401

    import sparseopt.dask  # noqa: F401
    import sparseopt.linear_model  # noqa: F401
    import sparseopt.recommend._mf  # noqa: F401


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--features", type=int, default=1 << 22)
    ap.add_argument("--nnz", type=int, default=30)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--test-rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sync-every", type=int, default=None)
    ap.add_argument("--tolerance", type=float, default=0.002)
    ap.add_argument("--tail", type=float, default=0.5,
                    help="feature popularity P(rank > r) = r**-tail (smaller: more rows touched)")
    ap.add_argument("--problem", choices=("linear", "mf"), default="linear")
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--rmse-tolerance", type=float, default=0.01)
    ap.add_argument("--method", default="dsgd,mixing",
                    help="mf: comma-separated methods of sparseopt.dask.fit to run")
    ap.add_argument("--blocks", type=int, default=2, help="mf: n_blocks of method 'dsgd'")
    ap.add_argument("--eval-inline", action="store_true",
                    help="mf: evaluate in the callback (default: copy the tables there and "
                         "evaluate after the fit, so that no evaluation competes with the "
                         "workers for the cores)")
    a = ap.parse_args(argv)
    if a.problem == "mf":
        return main_mf(a)

    import dask
    from distributed import Client, LocalCluster
    from sklearn.metrics import roc_auc_score

    import sparseopt.dask as sd
    from sparseopt.linear_model import SGDClassifier
    from sparseopt.linear_model._base import auto_batch_size

    per = a.rows // a.partitions
    specs = [(1000 + i, per, a.features, a.nnz, 7, a.tail) for i in range(a.partitions)]
    Xt, yt = make_partition(1, a.test_rows, a.features, a.nnz, 7, a.tail)
    batch = auto_batch_size(per * a.partitions)

    def estimator():
        return SGDClassifier(loss="log_loss", random_state=0, batch_size=batch)

    def run_single():
        parts = [make_partition(*s) for s in specs]
        X = sp.vstack([p[0] for p in parts], format="csr")
        y = np.concatenate([p[1] for p in parts])
        del parts
        est, secs, aucs, cpu = estimator(), [], [], 0.0
        for e in range(a.epochs):
            tic, c0 = time.perf_counter(), time.process_time()
            if e == 0:
                est.partial_fit(X, y, classes=[0, 1])
            else:
                est.partial_fit(X, y)
            secs.append(time.perf_counter() - tic)
            cpu += time.process_time() - c0
            aucs.append(roc_auc_score(yt, est.decision_function(Xt)))
        return dict(secs=secs, aucs=aucs, cpu=cpu, cpu_driver=cpu, cpu_workers=0.0)

    def run_dask(n_workers):
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, \
                Client(cluster) as client:
            xs = [dask.delayed(_part_x)(s) for s in specs]
            ys = [dask.delayed(_part_y)(s) for s in specs]
            # generate the partitions before timing (persisted in the workers)
            xs, ys = client.compute(xs), client.compute(ys)
            client.gather(xs)
            client.run(_warm_up)  # imports in the workers are not part of the fit's time
            stats, aucs, eval_time, eval_cpu = [], [], [0.0], [0.0]
            t_start = [None]

            def callback(model, info):
                if info["last"]:
                    tic, c0 = time.perf_counter(), time.process_time()
                    aucs.append((time.perf_counter() - t_start[0] - eval_time[0],
                                 roc_auc_score(yt, model.decision_function(Xt))))
                    eval_time[0] += time.perf_counter() - tic
                    eval_cpu[0] += time.process_time() - c0

            # CPU seconds (the machine may be shared: wall time alone says little): the
            # driver process (it runs the scheduler too), evaluation excluded, and the
            # workers' processes
            w0 = client.run(time.process_time)
            c0 = time.process_time()
            t_start[0] = time.perf_counter()
            sd.fit(estimator(), xs, ys, client, n_epochs=a.epochs, sync_every=a.sync_every,
                   stats=stats, callback=callback)
            cpu_driver = time.process_time() - c0 - eval_cpu[0]
            w1 = client.run(time.process_time)
            cpu_workers = sum(w1[k] - w0[k] for k in w0)
            return dict(aucs=[x[1] for x in aucs], times=[x[0] for x in aucs], stats=stats,
                        cpu=cpu_driver + cpu_workers, cpu_driver=cpu_driver,
                        cpu_workers=cpu_workers)

    results = {"single": [], "dask-1": [], "dask-2": []}
    for rep in range(a.repeats):
        for name, fn in (("single", run_single), ("dask-1", lambda: run_dask(1)),
                         ("dask-2", lambda: run_dask(2))):
            r = fn()
            results[name].append(r)
            print(f"[rep {rep}] {name}: {r}"[:600], file=sys.stderr, flush=True)

    target = max(r["aucs"][-1] for r in results["single"]) - a.tolerance

    def time_to(r):
        times = r.get("times") or list(np.cumsum(r["secs"]))
        for t, auc in zip(times, r["aucs"]):
            if auc >= target:
                return t
        return float("nan")

    print(f"# sparseopt.dask scaling: {a.rows} rows x {a.features} features, {a.nnz} nnz/row, "
          f"{a.partitions} partitions, {a.epochs} epochs, batch {batch}, "
          f"sync_every={a.sync_every}, tail={a.tail}\n")
    print(f"target: single-process final AUC - {a.tolerance} = {target:.4f}\n")
    def last_epoch(r):  # the steady state: the last epoch's seconds
        if "times" in r:
            return r["times"][-1] - (r["times"][-2] if len(r["times"]) > 1 else 0.0)
        return r["secs"][-1]

    print("| run | rep | AUC per epoch | total s | last epoch s | time to target s | CPU s "
          "(driver + workers) |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        for i, r in enumerate(runs):
            total = r["times"][-1] if "times" in r else sum(r["secs"])
            print(f"| {name} | {i} | {', '.join(f'{x:.4f}' for x in r['aucs'])} | "
                  f"{total:.2f} | {last_epoch(r):.2f} | {time_to(r):.2f} | {r['cpu']:.2f} "
                  f"({r['cpu_driver']:.2f} + {r['cpu_workers']:.2f}) |")
    steady = [last_epoch(b) / last_epoch(c) for b, c in zip(results["dask-2"],
                                                            results["dask-1"])]
    over = [d["cpu"] / s_["cpu"] for d, s_ in zip(results["dask-1"], results["single"])]
    print(f"\ndask-1 CPU / single CPU, paired per rep: {', '.join(f'{x:.2f}' for x in over)}")
    ratios = [time_to(b) / time_to(c) for b, c in zip(results["dask-2"], results["dask-1"])]
    tot = [b["times"][-1] / c["times"][-1] for b, c in zip(results["dask-2"],
                                                           results["dask-1"])]
    print(f"\ndask-2 / dask-1 time to target, paired per rep: "
          f"{', '.join(f'{x:.3f}' for x in ratios)} (median {statistics.median(ratios):.3f})")
    print(f"dask-2 / dask-1 total time, paired per rep: "
          f"{', '.join(f'{x:.3f}' for x in tot)} (median {statistics.median(tot):.3f})")
    print(f"dask-2 / dask-1 last epoch, paired per rep: "
          f"{', '.join(f'{x:.3f}' for x in steady)} (median {statistics.median(steady):.3f})")
    def busiest(s_):  # the CPU seconds of the sync's busiest worker (its tasks run in turn)
        per_worker = {}
        for c, w in zip(s_["task_cpu"], s_["task_worker"]):
            per_worker[w] = per_worker.get(w, 0.0) + c
        return max(per_worker.values())

    crits = {}
    for name in ("dask-1", "dask-2"):
        # the training tasks' CPU seconds (merges, driver and scheduler excluded): all of
        # them, and the critical path (per sync the busiest worker's tasks), per rep: a
        # measure of the parallelism that a shared machine's wall clock hides
        runs = results[name]
        tot = [sum(sum(s_["task_cpu"]) for s_ in r["stats"]) for r in runs]
        crits[name] = [sum(busiest(s_) for s_ in r["stats"]) for r in runs]
        per = [statistics.median(c for s_ in r["stats"] for c in s_["task_cpu"]) for r in runs]
        print(f"{name}: training task CPU s total {', '.join(f'{x:.2f}' for x in tot)}; "
              f"critical path {', '.join(f'{x:.2f}' for x in crits[name])}; median per task "
              f"{', '.join(f'{x:.3f}' for x in per)}")
    cr = [b / c for b, c in zip(crits["dask-2"], crits["dask-1"])]
    print(f"dask-2 / dask-1 training-task critical path (CPU s), paired per rep: "
          f"{', '.join(f'{x:.3f}' for x in cr)} (median {statistics.median(cr):.3f})")
    for name in ("dask-1", "dask-2"):
        st = results[name][-1]["stats"]
        print(f"\n{name}, last rep, per sync:\n")
        print("| sync | rows mixed | table rows | delta bytes (all partitions) | bytes sent to "
              "workers | seconds | task CPU s (worker) |")
        print("|---|---|---|---|---|---|---|")
        names = sorted({w for s in st for w in s["task_worker"]}, key=str)
        for s in st:
            cpu = ", ".join(f"{c:.2f} (w{names.index(w)})"
                            for c, w in zip(s["task_cpu"], s["task_worker"]))
            print(f"| {s['epoch']}.{s['sync']} | {s['rows']} | {s['table_rows']} | "
                  f"{s['bytes']} | {s['sent_bytes']} | {s['seconds']:.2f} | {cpu} |")
    fin = [r["aucs"][-1] for r in results["dask-2"]]
    sing = [r["aucs"][-1] for r in results["single"]]
    print(f"\nfinal AUC dask-2 {fin} vs single {sing}: differences "
          f"{[round(x - y, 4) for x, y in zip(fin, sing)]}")


if __name__ == "__main__":
    main()
