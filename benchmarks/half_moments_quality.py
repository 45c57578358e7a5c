"""bfloat16 Adam moments on the real-data sets of ``benchmarks/quality.py``: held-out ROC-AUC of
``SGDClassifier(optimizer="adam")`` with float32 moments and with ``state_dtype="bfloat16"``
moments (stochastic rounding, and round-to-nearest), float32 features and weights, the same
seed and epochs; and the bytes of the optimizer's moment arrays.

The estimators build their optimizer internally; this script passes the moment storage by
wrapping ``sparseopt.optim.make_optimizer`` (the estimators take no ``state_dtype`` option).
``penalty=None``: the estimators' lazy penalty reads Adam's second moment as a float array, so
a penalised fit cannot use bfloat16 moments.

    python benchmarks/half_moments_quality.py --datasets tweets,reviews_hashed,flights_delay
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sparseopt.linear_model._base as lm_base  # noqa: E402
from benchmarks import quality_data  # noqa: E402
from sparseopt.linear_model import SGDClassifier  # noqa: E402

VARIANTS = {"float32 moments": None,
            "bfloat16 moments, stochastic": "stochastic",
            "bfloat16 moments, nearest": "nearest"}


def fit_auc(data, rounding, args):
    original = lm_base.make_optimizer
    made = []

    def make(name, params, lr, n_threads, optimizer_params=None, **fixed):
        if rounding is not None:
            fixed.update(state_dtype="bfloat16", rounding=rounding, seed=args.seed)
        made.append(original(name, params, lr, n_threads, optimizer_params, **fixed))
        return made[-1]

    lm_base.make_optimizer = make
    try:
        est = SGDClassifier(loss="log_loss", optimizer="adam", max_iter=args.epochs,
                            penalty=None, random_state=args.seed, n_threads=1)
        est.fit(data.X_train.astype(np.float32), data.y_train)
    finally:
        lm_base.make_optimizer = original
    auc = roc_auc_score(data.y_test, est.decision_function(data.X_test.astype(np.float32)))
    st = next(iter(made[-1].state.values()))
    moments = sum(st[k].nbytes for k in ("exp_avg", "exp_avg_sq") if k in st)
    return auc, moments, st["exp_avg"].dtype


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="tweets,reviews_hashed,flights_delay")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows", type=int, default=None)
    args = p.parse_args(argv)
    print(f"SGDClassifier(loss='log_loss', optimizer='adam', max_iter={args.epochs}, "
          f"penalty=None, random_state={args.seed}), float32 X\n")
    print("| data set | moments | held-out ROC-AUC | AUC - float32 | moment bytes |")
    print("|---|---|---:|---:|---:|")
    for name in args.datasets.split(","):
        data = quality_data.load(name, max_rows=args.max_rows)
        base = None
        for label, rounding in VARIANTS.items():
            auc, nbytes, dt = fit_auc(data, rounding, args)
            base = auc if base is None else base
            print(f"| {name} | {label} ({dt}) | {auc:.4f} | {auc - base:+.4f} | "
                  f"{nbytes:,} |", flush=True)


if __name__ == "__main__":
    main()
