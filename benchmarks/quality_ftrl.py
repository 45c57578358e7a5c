"""FTRL-Proximal with L1 against the default estimator on the quality suite's classification
sets: held-out ROC-AUC, non-zero coefficients and fit time, paired (the two fits alternate,
``--repeats`` times, medians of the times and their ratio).

    python benchmarks/quality_ftrl.py [--quick] [--datasets a,b] [--repeats 3] [--lr 0.3]
    python benchmarks/quality_ftrl.py --sweep [1e-4,3e-4,...] [--datasets a,b]
    python benchmarks/quality_ftrl.py --path [--datasets a,b] [--path-tol 0.003]

``--datasets`` also takes ``movies_high`` (not run by default), a check set: the suite's
movies regression set with the target "rating above the training median".

Target: ``SGDClassifier(optimizer="ftrl", penalty="l1")`` within 0.003 AUC of the default
``SGDClassifier()`` with at most a quarter of its non-zero coefficients. The row
``adagrad l1`` (the default optimizer with the same penalty) shows how sparse the objective's
solution is at that ``alpha``, whatever the optimizer. ``ratio`` is the median of the paired
FTRL / default fit-time ratios.

``--sweep``: the FTRL L1 model at ``alpha = c * l1_alpha_max(X_train, y_train)`` for each
``c`` (one fit each, default estimator first): how sparsity and held-out AUC trade on each set,
with the target's verdict per point. ``--path``: an automatic choice of ``alpha`` on held-out
training rows (``validation_fraction`` 0.1, stratified, seeded): the same multiples from the
densest, each fitted on the other rows and scored by validation ROC-AUC, stopping at the
first more than ``--path-tol`` below the best so far; the last kept is refitted on all the
training rows and scored on the test set. Its ``ratio`` is the whole choice (path and refit)
over the default fit.
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
# a check set outside the suite's classification sets: the movies regression set (one-hot
# and TF-IDF title features) with the target "rating above the training median"
DERIVED = {"movies_high": "movies"}


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


PATH = (2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3)


def _alpha_max(data):
    from sparseopt.linear_model import l1_alpha_max
    return l1_alpha_max(data.X_train, data.y_train)


def _verdict(auc, share, base_auc):
    return "MET" if auc - base_auc >= -0.003 and share <= 0.25 else "not met"


def sweep(name, data, cs):
    """FTRL L1 at multiples of alpha_max against the default estimator."""
    base = _model()
    t = time.perf_counter()
    base.fit(data.X_train, data.y_train)
    base_s = time.perf_counter() - t
    b = _scores(data.task, data.y_test, base.predict_proba(data.X_test))["auc"]
    bn = max(int(np.count_nonzero(base.coef_)), 1)
    amax = _alpha_max(data)
    print(f"| {name} | default (alpha_max {amax:.3g}) | {b:.4f} | {bn} | 1.000 | "
          f"{base_s:.2f} | |", flush=True)
    for c in cs:
        m = _model(optimizer="ftrl", penalty="l1", alpha=c * amax)
        t = time.perf_counter()
        m.fit(data.X_train, data.y_train)
        fit_s = time.perf_counter() - t
        auc = _scores(data.task, data.y_test, m.predict_proba(data.X_test))["auc"]
        share = np.count_nonzero(m.coef_) / bn
        print(f"| {name} | ftrl l1, c={c:g} | {auc:.4f} ({auc - b:+.4f}) | "
              f"{np.count_nonzero(m.coef_)} | {share:.3f} | {fit_s:.2f} | "
              f"{_verdict(auc, share, b)} |", flush=True)


def path_choice(name, data, tol, cs=PATH, fraction=0.1, seed=SEED):
    """The held-out choice of alpha (see the module docstring), against the default."""
    from sklearn.model_selection import train_test_split
    base = _model()
    t = time.perf_counter()
    base.fit(data.X_train, data.y_train)
    base_s = time.perf_counter() - t
    b = _scores(data.task, data.y_test, base.predict_proba(data.X_test))["auc"]
    bn = max(int(np.count_nonzero(base.coef_)), 1)
    t = time.perf_counter()
    amax = _alpha_max(data)
    Xa, Xv, ya, yv = train_test_split(data.X_train, data.y_train, test_size=fraction,
                                      stratify=data.y_train, random_state=seed)
    best, chosen, vals = -np.inf, None, []
    for c in cs:
        m = _model(optimizer="ftrl", penalty="l1", alpha=c * amax).fit(Xa, ya)
        v = _scores(data.task, yv, m.predict_proba(Xv))["auc"]
        vals.append(f"{c:g}: {v:.4f}")
        if v < best - tol:
            break
        best, chosen = max(best, v), c
    m = _model(optimizer="ftrl", penalty="l1", alpha=chosen * amax)
    m.fit(data.X_train, data.y_train)
    total = time.perf_counter() - t
    auc = _scores(data.task, data.y_test, m.predict_proba(data.X_test))["auc"]
    share = np.count_nonzero(m.coef_) / bn
    print(f"| {name} | {'; '.join(vals)} | c={chosen:g} | {auc:.4f} ({auc - b:+.4f}) | "
          f"{share:.3f} | ratio {total / base_s:.1f} | {_verdict(auc, share, b)} |",
          flush=True)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="flights sets at 30,000 rows")
    p.add_argument("--datasets", default=",".join(CLASSIFICATION))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--eta0", type=float, default=None, help="eta0 of the FTRL fit")
    p.add_argument("--alpha", type=float, default=None, help="alpha of the FTRL fit")
    p.add_argument("--cache", default=quality_data.DEFAULT_CACHE)
    p.add_argument("--sweep", nargs="?", const="1e-4,3e-4,5e-4,1e-3,2e-3,3e-3,1e-2",
                   default=None, help="multiples c of l1_alpha_max to fit FTRL L1 at")
    p.add_argument("--path", action="store_true", help="the held-out choice of alpha")
    p.add_argument("--path-tol", type=float, default=0.003)
    p.add_argument("--path-seed", type=int, default=SEED, help="seed of the held-out split")
    args = p.parse_args(argv)

    def load(name):
        source = DERIVED.get(name, name)
        spec = quality_data.SPECS[source]
        data = quality_data.load(source, args.cache,
                                 30_000 if (args.quick and spec.large) else None,
                                 lambda m: None)
        if name in DERIVED:
            cut = float(np.median(data.y_train))
            data = quality_data.Data(name, "binary", data.X_train, data.X_test,
                                     (data.y_train > cut).astype(np.int64),
                                     (data.y_test > cut).astype(np.int64),
                                     dict(data.info, positive=f"rating > {cut:g}"))
        return data

    if args.sweep:
        print("| data set | model | ROC-AUC (vs default) | nnz coef | nnz share | fit s | target |")
        print("|---|---|---|---|---|---|---|")
        for name in args.datasets.split(","):
            sweep(name, load(name), [float(c) for c in args.sweep.split(",")])
        return
    if args.path:
        print("| data set | validation ROC-AUC by c | chosen | ROC-AUC (vs default) | "
              "nnz share | fit time | target |")
        print("|---|---|---|---|---|---|---|")
        for name in args.datasets.split(","):
            path_choice(name, load(name), args.path_tol, seed=args.path_seed)
        return
    kinds = contenders(args.eta0, args.alpha)
    print("| data set | model | ROC-AUC | nnz coef | nnz share | fit s (median) | epochs |")
    print("|---|---|---|---|---|---|---|")
    for name in args.datasets.split(","):
        data = load(name)
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
