"""Row-wise optimizer state: its memory (from ``opt.memory()``) and its quality beside the full
versions, on the recommender suite's real data and on the DLRM-style training loop.

    python benchmarks/rowwise_state.py memory                 # the bytes table (seconds)
    python benchmarks/rowwise_state.py rec [--datasets a,b]   # MF RMSE / precision@10
    python benchmarks/rowwise_state.py fm [--datasets a,b]    # FM AUC / RMSE
    python benchmarks/rowwise_state.py loop [torch_loop args] # final training loss
    python benchmarks/rowwise_state.py speed [--rows N]        # step time, row-wise / full

``memory`` builds each optimizer over a float32 table of width 64 and prints, from
``opt.memory()``, the state bytes per row and the ratio to Adam's. ``rec`` fits
``MatrixFactorization`` with each optimizer through ``optimizer_params`` (one thread, seed 0,
the suite's split and scoring, ``benchmarks/quality_rec.py``): squared loss on the rating
sets (RMSE), BPR on the implicit sets (precision@10). ``fm`` fits ``FMClassifier`` (click
sets, AUC) / ``FMRegressor`` (rating sets, RMSE) at their defaults (Adagrad) with full,
row-wise (the linear weight split off), row-wise with one scalar per row and bfloat16 state
(``benchmarks/quality_fm.py``'s data, split and scoring; float32 features, so float32 tables,
as bfloat16 state needs). ``loop`` runs
``benchmarks/torch_loop.py`` with row-wise contenders added beside its own. ``speed`` times
``opt.step`` of each optimizer, its row-wise version and that version with the last column
split off (``rowwise_tail=1``) on one thread (a float32 table of
width 64, batches of 16,384 unique random rows), interleaved in a random order per round, and
prints medians and the row-wise / full ratio.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import sparseopt as so  # noqa: E402
from sparseopt.optim import SGD  # noqa: E402

WIDTH = 64
N_ROWS = 10_000


def _adam(P, **kw):
    # every row's moments, as when all rows have been touched (the direct layout; compact
    # slots hold the touched rows' moments only, plus 16 bytes of maps per touched row)
    return so.Adam([P], state_layout="direct", **kw)


# (label, constructor) over one float32 (N_ROWS, WIDTH) table
MEMORY_ROWS = [
    ("Adam", lambda P: _adam(P)),
    ("Adam rowwise='v'", lambda P: _adam(P, rowwise="v")),
    ("Adam rowwise='v' rowwise_tail=1", lambda P: _adam(P, rowwise="v", rowwise_tail=1)),
    ("Adam amsgrad", lambda P: _adam(P, amsgrad=True)),
    ("Adam amsgrad rowwise='v'", lambda P: _adam(P, amsgrad=True, rowwise="v")),
    ("Adam lazy='decay'", lambda P: _adam(P, lazy="decay")),
    ("Adam lazy='decay' rowwise='v'", lambda P: _adam(P, lazy="decay", rowwise="v")),
    ("Adam preset='torch'", lambda P: _adam(P, preset="torch")),
    ("Adam preset='torch' rowwise='v'", lambda P: _adam(P, preset="torch", rowwise="v")),
    ("Adam state_dtype='bfloat16'", lambda P: _adam(P, state_dtype="bfloat16")),
    ("RMSprop", lambda P: so.RMSprop([P])),
    ("RMSprop rowwise", lambda P: so.RMSprop([P], rowwise=True)),
    ("RMSprop rowwise rowwise_tail=1", lambda P: so.RMSprop([P], rowwise=True, rowwise_tail=1)),
    ("RMSprop centered", lambda P: so.RMSprop([P], centered=True)),
    ("RMSprop centered rowwise", lambda P: so.RMSprop([P], centered=True, rowwise=True)),
    ("RMSprop momentum=0.9", lambda P: so.RMSprop([P], momentum=0.9)),
    ("RMSprop momentum=0.9 rowwise", lambda P: so.RMSprop([P], momentum=0.9, rowwise=True)),
    ("Adagrad", lambda P: so.Adagrad([P])),
    ("Adagrad rowwise", lambda P: so.Adagrad([P], rowwise=True)),
    ("Adagrad rowwise rowwise_tail=1", lambda P: so.Adagrad([P], rowwise=True, rowwise_tail=1)),
    ("Ftrl", lambda P: so.Ftrl([P])),
    ("SGD", lambda P: SGD([P])),
]


def memory_table(width=WIDTH, n_rows=N_ROWS):
    """[(label, state bytes per row, ratio to Adam, state names)] from ``opt.memory()``."""
    P = np.zeros((n_rows, width), dtype=np.float32)
    out = []
    adam = None
    for label, make in MEMORY_ROWS:
        mem = make(P).memory()
        if adam is None:
            adam = mem.state_per_row
        out.append((label, mem.state_per_row, mem.state_per_row / adam,
                    ", ".join(f"{k} {v // n_rows}" for k, v in mem.state.items())))
    return out


def rst_memory_table(width=WIDTH):
    """The bytes table as an RST list-table (docs/guide/optimizer_state.rst holds this output)."""
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 34 12 10 44", "",
             "   * - optimizer", "     - state bytes per row", "     - x Adam",
             "     - bytes per row, by state array"]
    for label, per_row, ratio, detail in memory_table(width):
        lines += [f"   * - ``{label}``", f"     - {per_row:.0f}", f"     - {ratio:.3f}",
                  f"     - {detail or '(none)'}"]
    return "\n".join(lines)


def cmd_memory(args):
    if args.rst:
        print(rst_memory_table(args.width))
        return
    print(f"float32 table of width {args.width}: parameter bytes per row "
          f"{4 * args.width}")
    print(f"{'optimizer':<34} {'state B/row':>11} {'x Adam':>7}  per-row bytes by state")
    for label, per_row, ratio, detail in memory_table(args.width):
        print(f"{label:<34} {per_row:>11.0f} {ratio:>7.3f}  {detail}")


# -- recommender suite -----------------------------------------------------------------------

def _mf_contender(loss, optimizer, lr, extra, n_components=32, **kw):
    def fit(d):
        from sparseopt.recommend import MatrixFactorization
        import quality_rec as qr
        m = MatrixFactorization(loss=loss, optimizer=optimizer, learning_rate=lr,
                                n_components=n_components, random_state=0, n_threads=1,
                                optimizer_params=extra or None, **kw)
        X = d.X_train if loss == "squared" else qr._binary(d)
        t = time.perf_counter()
        m.fit(X)
        fit_s = time.perf_counter() - t
        model = m.predict if loss == "squared" else ("recommend", m)
        return fit_s, model, m.n_epochs_, repr(extra) if extra else ""
    return fit


# squared loss: Adam at 0.005 (the rate MatrixFactorization's docstring reports as Adam's best on
# these sets) for 10 epochs, RMSprop at 0.005 for 10, the defaults (Adagrad at 0.03, 20 epochs).
# Row-wise contenders keep the model's split (the bias column's own scalar, rowwise_tail) and,
# beside it, one shared scalar per row (rowwise_tail=0); bfloat16 moments round stochastically.
_BF16 = {"state_dtype": "bfloat16", "rounding": "stochastic"}
RATING_CONTENDERS = [
    ("MF Adam", _mf_contender("squared", "adam", 0.005, {}, n_epochs=10)),
    ("MF Adam rowwise='v'", _mf_contender("squared", "adam", 0.005, {"rowwise": "v"},
                                          n_epochs=10)),
    ("MF Adam rowwise='v', tail 0", _mf_contender("squared", "adam", 0.005,
                                                  {"rowwise": "v", "rowwise_tail": 0},
                                                  n_epochs=10)),
    ("MF Adam bf16 moments", _mf_contender("squared", "adam", 0.005, _BF16, n_epochs=10)),
    ("MF RMSprop", _mf_contender("squared", "rmsprop", 0.005, {}, n_epochs=10)),
    ("MF RMSprop rowwise", _mf_contender("squared", "rmsprop", 0.005, {"rowwise": True},
                                         n_epochs=10)),
    ("MF RMSprop rowwise, tail 0", _mf_contender("squared", "rmsprop", 0.005,
                                                 {"rowwise": True, "rowwise_tail": 0},
                                                 n_epochs=10)),
    ("MF RMSprop bf16 state", _mf_contender("squared", "rmsprop", 0.005, _BF16, n_epochs=10)),
    ("MF Adagrad (default)", _mf_contender("squared", "adagrad", 0.03, {})),
    ("MF Adagrad rowwise", _mf_contender("squared", "adagrad", 0.03, {"rowwise": True})),
    ("MF Adagrad rowwise, tail 0", _mf_contender("squared", "adagrad", 0.03,
                                                 {"rowwise": True, "rowwise_tail": 0})),
    ("MF Adagrad bf16 state", _mf_contender("squared", "adagrad", 0.03, _BF16)),
]
# without the bias column a row holds factors only: one scale per row (``--no-biases``)
NO_BIAS_CONTENDERS = [
    ("MF Adam, no biases", _mf_contender("squared", "adam", 0.005, {}, n_epochs=10,
                                         use_biases=False)),
    ("MF Adam rowwise='v', no biases", _mf_contender("squared", "adam", 0.005, {"rowwise": "v"},
                                                     n_epochs=10, use_biases=False)),
    ("MF RMSprop, no biases", _mf_contender("squared", "rmsprop", 0.005, {}, n_epochs=10,
                                            use_biases=False)),
    ("MF RMSprop rowwise, no biases", _mf_contender("squared", "rmsprop", 0.005,
                                                    {"rowwise": True}, n_epochs=10,
                                                    use_biases=False)),
]
# BPR: the model's defaults (Adam at 0.01, 10 epochs, batches of 4,096)
IMPLICIT_CONTENDERS = [
    ("MF BPR Adam (default)", _mf_contender("bpr", "adam", 0.01, {})),
    ("MF BPR Adam rowwise='v'", _mf_contender("bpr", "adam", 0.01, {"rowwise": "v"})),
    ("MF BPR Adam rowwise='v', tail 0", _mf_contender("bpr", "adam", 0.01,
                                                      {"rowwise": "v", "rowwise_tail": 0})),
    ("MF BPR Adam bf16 moments", _mf_contender("bpr", "adam", 0.01, _BF16)),
]


def cmd_rec(args):
    import quality_rec as qr
    import quality_rec_data as qd
    for name in args.datasets.split(","):
        data = qd.load(name, cache_dir=args.cache)
        table = RATING_CONTENDERS if data.task == "rating" else IMPLICIT_CONTENDERS
        if data.task == "rating" and args.no_biases:
            table = table + NO_BIAS_CONTENDERS
        if args.only:
            table = [c for c in table if any(w in c[0] for w in args.only.split(","))]
        res = qr.run_dataset(data, contenders=table, log=lambda s: None)
        for row in res["rows"]:
            metric = (f"RMSE {row['rmse']:.4f}" if "rmse" in row
                      else f"P@10 {row['precision']:.4f} NDCG@10 {row['ndcg']:.4f}")
            print(f"{name:<20} {row['model']:<32} {metric}  fit {row['fit_s']:.2f}s",
                  flush=True)


# -- factorisation machines ------------------------------------------------------------------

FM_VARIANTS = [("FM Adagrad (default)", None),
               ("FM Adagrad rowwise", {"rowwise": True}),
               ("FM Adagrad rowwise, tail 0", {"rowwise": True, "rowwise_tail": 0}),
               ("FM Adagrad bf16 state", _BF16)]


def _fm_contender(params):
    def fit(d):
        import quality_fm as qf
        from sparseopt.recommend import FMClassifier, FMRegressor
        if hasattr(d, "y_train"):
            m = FMClassifier(random_state=qf.SEED, n_threads=1, optimizer_params=params)
            s = qf._timed(m, d.X_train.astype(np.float32), d.y_train)
            return s, m.decision_function(d.X_test.astype(np.float32)), m.n_iter_
        m = FMRegressor(random_state=qf.SEED, n_threads=1, optimizer_params=params)
        X = qf.one_hot(d.n_users, d.n_items, d.train_u, d.train_i).astype(np.float32)
        s = qf._timed(m, X, d.train_r)
        X_test = qf.one_hot(d.n_users, d.n_items, d.test_u, d.test_i).astype(np.float32)
        return s, m.predict(X_test), m.n_iter_
    return fit


def cmd_fm(args):
    import quality_fm as qf
    table = [(label, _fm_contender(params)) for label, params in FM_VARIANTS]
    for name in args.datasets.split(","):
        d = qf.load(name, args.cache, None)
        res = qf.run_dataset(d, contenders=table, log=lambda s: None)
        for row in res["rows"]:
            metric = f"RMSE {row['rmse']:.4f}" if "rmse" in row else f"AUC {row['auc']:.4f}"
            print(f"{name:<18} {row['model']:<30} {metric}  fit {row['fit_s']:.2f}s",
                  flush=True)


# -- training loop ---------------------------------------------------------------------------

def cmd_loop(argv):
    import torch_loop as tl
    sot = tl.sot
    tl.CONTENDERS.clear()
    tl.CONTENDERS.update({
        "sparseopt Adam": lambda m, lr: [sot.Adam(m.parameters(), lr=lr["adam"])],
        "sparseopt Adam rowwise='v'": lambda m, lr: [
            sot.Adam(m.parameters(), lr=lr["adam"], rowwise="v")],
        "sparseopt RMSprop": lambda m, lr: [sot.RMSprop(m.parameters(), lr=lr["adam"])],
        "sparseopt RMSprop rowwise": lambda m, lr: [
            sot.RMSprop(m.parameters(), lr=lr["adam"], rowwise=True)],
        "sparseopt Adagrad": lambda m, lr: [sot.Adagrad(m.parameters(), lr=lr["adagrad"])],
        "sparseopt Adagrad rowwise": lambda m, lr: [
            sot.Adagrad(m.parameters(), lr=lr["adagrad"], rowwise=True)],
    })
    tl.BASELINE.clear()
    tl.BASELINE.update({"sparseopt Adam rowwise='v'": "sparseopt Adam",
                        "sparseopt RMSprop rowwise": "sparseopt RMSprop",
                        "sparseopt Adagrad rowwise": "sparseopt Adagrad"})
    tl.main(argv)


def cmd_speed(args):
    import statistics
    rng = np.random.default_rng(0)
    n, k, d = args.rows, 16_384, args.width
    makers = {
        "Adam": lambda P: _adam(P, n_threads=1),
        "Adam rowwise='v'": lambda P: _adam(P, rowwise="v", n_threads=1),
        "Adam rowwise='v' tail 1": lambda P: _adam(P, rowwise="v", rowwise_tail=1,
                                                     n_threads=1),
        "RMSprop": lambda P: so.RMSprop([P], n_threads=1),
        "RMSprop rowwise": lambda P: so.RMSprop([P], rowwise=True, n_threads=1),
        "RMSprop rowwise tail 1": lambda P: so.RMSprop([P], rowwise=True, rowwise_tail=1,
                                                      n_threads=1),
        "Adagrad": lambda P: so.Adagrad([P], n_threads=1),
        "Adagrad rowwise": lambda P: so.Adagrad([P], rowwise=True, n_threads=1),
        "Adagrad rowwise tail 1": lambda P: so.Adagrad([P], rowwise=True, rowwise_tail=1,
                                                      n_threads=1),
    }
    opts = {name: make(np.zeros((n, d), np.float32)) for name, make in makers.items()}
    batches = [so.RowGrad(rng.choice(n, k, replace=False),
                          rng.normal(size=(k, d)).astype(np.float32)) for _ in range(5)]
    times = {name: [] for name in opts}
    for it in range(args.rounds):
        for name in rng.permutation(list(opts)):
            t = time.perf_counter()
            opts[name].step([batches[it % len(batches)]])
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(v[5:]) for name, v in times.items()}
    print(f"step of {k:,} unique rows of a {n:,} x {d} float32 table, one thread, "
          f"median of {args.rounds - 5} interleaved rounds")
    for name, m in med.items():
        full = med[name.split(" rowwise")[0]]
        print(f"{name:<24} {1e3 * m:8.2f} ms   x full {m / full:.2f}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "loop":
        return cmd_loop(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--width", type=int, default=WIDTH)
    m.add_argument("--rst", action="store_true", help="print the table as reStructuredText")
    r = sub.add_parser("rec")
    r.add_argument("--datasets", default="movielens,insteval,movielens_implicit,"
                                         "flights_planes,pizza_orders")
    r.add_argument("--cache", default=str(HERE / ".quality_cache"))
    r.add_argument("--no-biases", action="store_true",
                   help="also fit Adam / RMSprop without the bias column")
    r.add_argument("--only", default="",
                   help="comma-separated substrings: fit only the contenders named so")
    f = sub.add_parser("fm")
    f.add_argument("--datasets", default="flights_delay,movielens_clicks,movielens,insteval")
    f.add_argument("--cache", default=str(HERE / ".quality_cache"))
    s = sub.add_parser("speed")
    s.add_argument("--rows", type=int, default=1_000_000)
    s.add_argument("--width", type=int, default=WIDTH)
    s.add_argument("--rounds", type=int, default=40)
    args = p.parse_args(argv)
    {"memory": cmd_memory, "rec": cmd_rec, "fm": cmd_fm, "speed": cmd_speed}[args.cmd](args)


if __name__ == "__main__":
    main()
