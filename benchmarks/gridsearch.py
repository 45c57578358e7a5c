"""A grid search written for ``sklearn.linear_model.SGDClassifier``, run unchanged on
sparseopt's ``SGDClassifier``: the drop-in check on real data.

    python benchmarks/gridsearch.py                         # tweets and flights_cancelled
    python benchmarks/gridsearch.py --datasets tweets --max-rows 20000

The search itself (``search`` below) is the kind of code a scikit-learn user already has:
``GridSearchCV`` over ``alpha``, ``learning_rate``, ``eta0``, ``penalty`` and
``class_weight``, scored by ROC-AUC with 3-fold cross-validation. It receives the estimator
class and nothing else, so both libraries run the very same lines. For every candidate the
table gives both mean cross-validated AUCs and their difference (sparseopt minus
scikit-learn), then the wall-clock time of each whole search, one thread each (``n_jobs``
left at its default, OMP/BLAS threads 1).

The data sets are the quality suite's (``benchmarks/quality_data.py``, cached offline); the
flights sets are subsampled (``--max-rows``, default 60,000) to keep the run to minutes.
Writes ``results.md`` and ``results.json`` to ``--out`` (default
``benchmarks/results/gridsearch/``). Progress goes to stderr.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads: one thread everywhere

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.append(ROOT)

from benchmarks import quality_data  # noqa: E402

# A grid as a scikit-learn user writes it: every schedule, its eta0, every penalty, both
# class weightings. 8 + 16 = 24 candidates.
PARAM_GRID = [
    {"alpha": [1e-5, 1e-4], "learning_rate": ["optimal"], "penalty": ["l2", "l1"],
     "class_weight": [None, "balanced"]},
    {"alpha": [1e-5, 1e-4], "learning_rate": ["constant", "invscaling", "adaptive"],
     "eta0": [0.01, 0.1], "penalty": ["l2"], "class_weight": [None]},
    {"alpha": [1e-5, 1e-4], "learning_rate": ["adaptive"], "eta0": [0.1],
     "penalty": ["elasticnet"], "class_weight": [None, "balanced"]},
]


def search(estimator_class, X, y, seed=0):
    """The user's code: nothing in it knows which library ``estimator_class`` comes from."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    grid = GridSearchCV(estimator_class(loss="log_loss", random_state=seed), PARAM_GRID,
                        scoring="roc_auc", cv=StratifiedKFold(3, shuffle=True,
                                                              random_state=seed))
    grid.fit(X, y)
    return grid


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _describe(params) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def run(names, max_rows, out):
    import sklearn
    import sklearn.linear_model
    import sparseopt
    import sparseopt.linear_model
    contenders = [("sklearn", sklearn.linear_model.SGDClassifier),
                  ("sparseopt", sparseopt.linear_model.SGDClassifier)]
    results = []
    for name in names:
        rows = max_rows if name.startswith("flights") else None
        data = quality_data.load(name, max_rows=rows)
        _log(data.describe())
        scores, seconds = {}, {}
        for label, cls in contenders:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning of short schedules
                t = time.perf_counter()
                grid = search(cls, data.X_train, data.y_train)
                seconds[label] = time.perf_counter() - t
            cv = grid.cv_results_
            scores[label] = {_describe(p): float(s)
                             for p, s in zip(cv["params"], cv["mean_test_score"])}
            _log(f"  {label}: {seconds[label]:.1f}s, best {grid.best_score_:.4f} "
                 f"({_describe(grid.best_params_)})")
        cands = [{"params": k, "sklearn": scores["sklearn"][k],
                  "sparseopt": scores["sparseopt"][k],
                  "diff": scores["sparseopt"][k] - scores["sklearn"][k]}
                 for k in scores["sklearn"]]
        results.append({"dataset": name, "rows": data.X_train.shape[0],
                        "columns": data.X_train.shape[1], "seconds": seconds,
                        "candidates": cands})
    _write(results, out, names, max_rows, sklearn.__version__, sparseopt.__version__)
    return results


def _write(results, out, names, max_rows, sk_version, so_version):
    os.makedirs(out, exist_ok=True)
    lines = [f"Command: `python benchmarks/gridsearch.py --datasets {','.join(names)} "
             f"--max-rows {max_rows}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}, scikit-learn {sk_version}, sparseopt {so_version}",
             ""]
    for res in results:
        c = res["candidates"]
        worst = min(x["diff"] for x in c)
        lines += [f"### {res['dataset']} ({res['rows']:,} training rows x "
                  f"{res['columns']:,} columns)", "",
                  f"Search time: scikit-learn {res['seconds']['sklearn']:.1f} s, sparseopt "
                  f"{res['seconds']['sparseopt']:.1f} s (ratio "
                  f"{res['seconds']['sparseopt'] / res['seconds']['sklearn']:.2f}). "
                  f"Worst candidate difference: {worst:+.4f} AUC; "
                  f"{sum(x['diff'] >= -0.01 for x in c)} of {len(c)} candidates within "
                  "0.01 or better.", "",
                  "| candidate | scikit-learn AUC | sparseopt AUC | difference |",
                  "|---|---|---|---|"]
        lines += [f"| {x['params']} | {x['sklearn']:.4f} | {x['sparseopt']:.4f} | "
                  f"{x['diff']:+.4f} |" for x in c]
        lines.append("")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    _log(f"wrote {out}/results.md and results.json")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="tweets,flights_cancelled")
    parser.add_argument("--max-rows", type=int, default=60_000)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "gridsearch"))
    args = parser.parse_args(argv)
    run(args.datasets.split(","), args.max_rows, args.out)


if __name__ == "__main__":
    main()
