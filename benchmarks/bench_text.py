"""Text-like benchmark of ``sparseopt.linear_model.SGDClassifier`` against scikit-learn.

    python benchmarks/bench_text.py            # 200,000 x 2**20
    python benchmarks/bench_text.py --quick    # 20,000 rows, a smoke test

The problem (generated, nothing downloaded) imitates hashed bag-of-words features:

* ``--n-features`` (2**20) hashed features whose frequencies follow a Zipf law: a token has
  rank r with probability proportional to 1/r**1.1, and ranks are mapped to columns by a random
  permutation (the hash);
* every row draws Poisson(66) tokens, so about 50 distinct features (nonzeros) per row; values
  are ``log1p(count)``, rows L2-normalised (as ``HashingVectorizer``/``TfidfTransformer``);
* labels follow a logistic model ``P(y=1) = sigmoid(x @ w_true - median)`` with
  ``w_true ~ N(0, 3**2)`` per feature, so every feature carries signal and the rare ones are
  hard to learn;
* ``--n-train`` (200,000) training rows, ``--n-test`` (50,000) held-out rows.

It reports, for ``loss="log_loss"`` and otherwise **default parameters** on both sides:

1. fit time (median of ``--repeats`` interleaved fits, wall clock), epochs, held-out ROC-AUC and
   log-loss of scikit-learn's ``SGDClassifier`` and of sparseopt's (every optimizer);
2. learning curves: held-out AUC after each epoch of ``partial_fit`` (same defaults), and the
   training time each needs to reach 99% of the best AUC seen in the run.

Targets: AUC at least scikit-learn's, fit time at most 1.5x scikit-learn's. The
machine's load average is printed with the results: other processes on a shared machine change
timings, so the two sides are always measured alternately.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

# run as a script (python benchmarks/bench_text.py): make the benchmarks package importable
if not __package__:
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from benchmarks.report import cpu_model  # noqa: E402


def make_text_data(n_samples, n_features=2**20, tokens=66, zipf=1.1, seed=0, sigma=3.0):
    """Hashed-bag-of-words-like CSR matrix X (float64) and binary labels y (see module doc)."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_features + 1, dtype=np.float64)
    cdf = np.cumsum(ranks ** -zipf)
    cdf /= cdf[-1]
    column_of_rank = rng.permutation(n_features)
    w_true = rng.normal(scale=sigma, size=n_features)
    counts = rng.poisson(tokens, size=n_samples)
    cols = column_of_rank[np.searchsorted(cdf, rng.random(int(counts.sum())))]
    rows = np.repeat(np.arange(n_samples), counts)
    X = sp.csr_matrix((np.ones(cols.shape[0]), (rows, cols)), shape=(n_samples, n_features))
    X.sum_duplicates()
    X.data = np.log1p(X.data)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    X = sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ X)
    X.sort_indices()
    logit = X @ w_true
    logit -= np.median(logit)
    y = (rng.random(n_samples) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return X, y


def _scores(clf, X, y):
    from sklearn.metrics import log_loss, roc_auc_score
    auc = roc_auc_score(y, clf.decision_function(X))
    ll = log_loss(y, clf.predict_proba(X)) if hasattr(clf, "predict_proba") else float("nan")
    return auc, ll


def _fit_timed(make, X, y):
    clf = make()
    t0 = time.perf_counter()
    c0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    return clf, time.perf_counter() - t0, time.process_time() - c0


def _curve(make, X, y, Xte, yte, epochs):
    """Held-out AUC after each epoch of partial_fit; cumulative training time (wall)."""
    from sklearn.metrics import roc_auc_score
    clf = make()
    elapsed, out = 0.0, []
    for _ in range(epochs):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.partial_fit(X, y, classes=[0, 1])
        elapsed += time.perf_counter() - t0
        out.append((elapsed, roc_auc_score(yte, clf.decision_function(Xte))))
    return out


def _time_to(curve, target):
    for t, auc in curve:
        if auc >= target:
            return t
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-train", type=int, default=200_000)
    ap.add_argument("--n-test", type=int, default=50_000)
    ap.add_argument("--n-features", type=int, default=2**20)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved default fits per side")
    ap.add_argument("--curve-epochs", type=int, default=8)
    ap.add_argument("--optimizers", default="adagrad,adam,rmsprop,sgd",
                    help="sparseopt optimizers to time besides the default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="20,000 training rows, 1 repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.repeats, args.curve_epochs = 20_000, 5_000, 1, 3

    import sklearn
    from sklearn.linear_model import SGDClassifier as SkSGD

    import sparseopt
    from sparseopt.linear_model import SGDClassifier

    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    X, y = make_text_data(args.n_train + args.n_test, args.n_features, seed=args.seed)
    Xtr, ytr, Xte, yte = X[: args.n_train], y[: args.n_train], X[args.n_train:], y[args.n_train:]
    log(f"data: {Xtr.shape[0]:,} x {Xtr.shape[1]:,}, {Xtr.nnz / Xtr.shape[0]:.1f} nnz/row, "
        f"generated in {time.perf_counter() - t0:.1f} s")
    load_before = os.getloadavg()

    default_name = SGDClassifier().optimizer
    contenders = {"scikit-learn SGDClassifier": lambda: SkSGD(loss="log_loss", random_state=0),
                  f"sparseopt SGDClassifier (default: {default_name})":
                      lambda: SGDClassifier(loss="log_loss", random_state=0)}
    for name in [o for o in args.optimizers.split(",") if o and o != default_name]:
        contenders[f"sparseopt SGDClassifier optimizer={name!r}"] = (
            lambda name=name: SGDClassifier(loss="log_loss", optimizer=name, random_state=0))
    # our default stopping patience is 2 epochs; show scikit-learn's 5 as well
    contenders["sparseopt SGDClassifier n_iter_no_change=5 (scikit-learn's patience)"] = (
        lambda: SGDClassifier(loss="log_loss", n_iter_no_change=5, random_state=0))

    results = {k: {"wall": [], "cpu": []} for k in contenders}
    for r in range(args.repeats):
        for name, make in contenders.items():
            clf, wall, cpu = _fit_timed(make, Xtr, ytr)
            res = results[name]
            res["wall"].append(wall)
            res["cpu"].append(cpu)
            res["epochs"] = clf.n_iter_
            res["auc"], res["logloss"] = _scores(clf, Xte, yte)
            log(f"repeat {r + 1}: {name}: {wall:.2f} s, {clf.n_iter_} epochs, "
                f"AUC {res['auc']:.4f}")

    names = list(contenders)[:2]
    curves = {}
    for name in names:
        curves[name] = _curve(contenders[name], Xtr, ytr, Xte, yte, args.curve_epochs)
        log(f"curve {name}: " + ", ".join(f"{t:.2f}s:{a:.4f}" for t, a in curves[name]))
    best = max([a for c in curves.values() for _, a in c] + [r["auc"] for r in results.values()])
    load_after = os.getloadavg()

    sk = names[0]
    sk_wall = float(np.median(results[sk]["wall"]))
    lines = [
        "# sparseopt.linear_model vs scikit-learn on hashed text-like data",
        "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Data: {args.n_train:,} training / {args.n_test:,} held-out rows x "
        f"{args.n_features:,} hashed features, {Xtr.nnz / Xtr.shape[0]:.1f} nonzeros per row, "
        "Zipf(1.1) feature frequencies, logistic labels.  ",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after.  ",
        f"Versions: sparseopt {sparseopt.__version__}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}, Python {platform.python_version()}.  ",
        f"Both sides: `loss=\"log_loss\"`, `random_state=0`, every other parameter default. "
        f"Times are wall-clock medians of {args.repeats} interleaved fits (CPU time beside).",
        "",
        "| estimator | fit time (s) | CPU (s) | vs scikit-learn | epochs | held-out ROC-AUC "
        "| held-out log-loss |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        wall = float(np.median(res["wall"]))
        cpu = float(np.median(res["cpu"]))
        lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {wall / sk_wall:.2f}x | "
                     f"{res['epochs']} | {res['auc']:.4f} | {res['logloss']:.4f} |")
    lines += [
        "",
        f"Learning curves (`partial_fit`, one epoch per call, default parameters); best held-out "
        f"AUC seen in this run: {best:.4f}, target 99% of it = {0.99 * best:.4f}.",
        "",
        "| estimator | AUC after epoch 1, 2, ... (cumulative training s) | time to 99% of best "
        "AUC |",
        "|---|---|---:|",
    ]
    for name in names:
        t99 = _time_to(curves[name], 0.99 * best)
        pts = ", ".join(f"{a:.4f} ({t:.2f})" for t, a in curves[name])
        reached = (f"not reached in {args.curve_epochs} epochs" if t99 is None
                   else f"{t99:.2f} s")
        lines.append(f"| {name} | {pts} | {reached} |")
    ours = results[names[1]]
    ratio = float(np.median(ours["wall"])) / sk_wall
    lines += [
        "",
        f"Targets: held-out AUC >= scikit-learn's: "
        f"{'met' if ours['auc'] >= results[sk]['auc'] else 'MISSED'} "
        f"({ours['auc']:.4f} vs {results[sk]['auc']:.4f}); fit time <= 1.5x: "
        f"{'met' if ratio <= 1.5 else 'MISSED'} ({ratio:.2f}x).",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
