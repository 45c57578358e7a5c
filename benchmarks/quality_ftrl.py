"""FTRL-Proximal with L1 against the default estimator on the quality suite's classification
sets: held-out ROC-AUC, non-zero coefficients and fit time, paired (the two fits alternate,
``--repeats`` times, medians of the times and their ratio).

    python benchmarks/quality_ftrl.py [--quick] [--datasets a,b] [--repeats 3] [--lr 0.3]

Target: ``SGDClassifier(optimizer="ftrl", penalty="l1")`` within 0.003 AUC of the default
``SGDClassifier()`` with at most a quarter of its non-zero coefficients. The row
``adagrad l1`` (the default optimizer with the same penalty) shows how sparse the objective's
solution is at that ``alpha``, whatever the optimizer. ``ratio`` is the median of the paired
FTRL / default fit-time ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks import quality_data  # noqa: E402
from benchmarks.quality import SEED, _scores  # noqa: E402

CLASSIFICATION = ("tweets", "reviews3", "reviews_hashed", "flights_delay", "flights_cancelled")


def _model(**kw):
    from sparseopt.linear_model import SGDClassifier
    return SGDClassifier(loss="log_loss", random_state=SEED, n_threads=1, **kw)


def contenders(lr_eta0=None, alpha=None):
    extra = {} if alpha is None else dict(alpha=alpha)
    ftrl = dict(optimizer="ftrl", penalty="l1", **extra)
    if lr_eta0 is not None:
        ftrl.update(eta0=lr_eta0)
    # the default optimizer (Adagrad) with the same L1: its cumulative penalty gives exact
    # zeros too, so this row tells the sparsity of the objective from the optimizer's
    return {"default": {}, "ftrl l1": ftrl, "adagrad l1": dict(penalty="l1", **extra)}


def run(data, repeats, kinds):
    out = {}
    times = {k: [] for k in kinds}
    for _ in range(repeats):
        for name, kw in kinds.items():
            m = _model(**kw)
            t = time.perf_counter()
            m.fit(data.X_train, data.y_train)
            times[name].append(time.perf_counter() - t)
            sc = _scores(data.task, data.y_test, m.predict_proba(data.X_test))
            out[name] = dict(auc=sc["auc"], nnz=int(np.count_nonzero(m.coef_)),
                             size=int(m.coef_.size), epochs=int(np.max(m.n_iter_)))
    for name in kinds:
        out[name]["fit_s"] = statistics.median(times[name])
    out["ratio"] = statistics.median(a / b for a, b in zip(times["ftrl l1"], times["default"]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="flights sets at 30,000 rows")
    p.add_argument("--datasets", default=",".join(CLASSIFICATION))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--eta0", type=float, default=None, help="eta0 of the FTRL fit")
    p.add_argument("--alpha", type=float, default=None, help="alpha of the FTRL fit")
    p.add_argument("--cache", default=quality_data.DEFAULT_CACHE)
    args = p.parse_args(argv)
    kinds = contenders(args.eta0, args.alpha)
    print("| data set | model | ROC-AUC | nnz coef | nnz share | fit s (median) | epochs |")
    print("|---|---|---|---|---|---|---|")
    for name in args.datasets.split(","):
        spec = quality_data.SPECS[name]
        data = quality_data.load(name, args.cache,
                                 30_000 if (args.quick and spec.large) else None,
                                 lambda m: None)
        r = run(data, args.repeats, kinds)
        base = r["default"]
        for k in kinds:
            x = r[k]
            print(f"| {name} | {k} | {x['auc']:.4f} | {x['nnz']} | "
                  f"{x['nnz'] / max(base['nnz'], 1):.3f} | {x['fit_s']:.2f} | {x['epochs']} |",
                  flush=True)
        d = r["ftrl l1"]["auc"] - base["auc"]
        share = r["ftrl l1"]["nnz"] / max(base["nnz"], 1)
        print(f"| {name} | ftrl - default | {d:+.4f} | | {share:.3f} | ratio "
              f"{r['ratio']:.2f} | {'MET' if d >= -0.003 and share <= 0.25 else 'not met'} |",
              flush=True)


if __name__ == "__main__":
    main()
