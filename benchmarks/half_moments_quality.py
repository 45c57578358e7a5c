"""Compact optimizer state on the real-data sets of ``benchmarks/quality.py``: held-out ROC-AUC
of ``SGDClassifier`` with Adam, Adagrad and RMSprop, each with its float32 state, with bfloat16
state (``state_dtype="bfloat16"``, stochastic rounding and round-to-nearest) and with row-wise
state (``rowwise``), float32 features and weights, the same seed and epochs; and the bytes of
the optimizer's state arrays.

The options go through the estimator's ``optimizer_params``. ``penalty=None``: the estimators'
lazy penalty reads the optimizer's float32 per-element state, so a penalised fit refuses them.
Binary tasks train a weight table of width 1, where a row-wise second moment is the
element-wise one (the mean of one square); the 3-class ``reviews3`` has width 3 (its AUC is
the one-vs-rest macro average of the softmax of the decision function).

    python -W ignore benchmarks/half_moments_quality.py --datasets tweets,reviews_hashed,flights_delay
    python -W ignore benchmarks/half_moments_quality.py --optimizers adagrad,rmsprop --datasets reviews3
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import quality_data  # noqa: E402
from sparseopt.linear_model import SGDClassifier  # noqa: E402

ROWWISE = {"adam": "v", "adagrad": True, "rmsprop": True}
STATE = {"adam": ("exp_avg", "exp_avg_sq"), "adagrad": ("sum",),
         "rmsprop": ("square_avg",)}


def variants(optimizer):
    """(label, optimizer_params) of one optimizer: float32 first (the baseline)."""
    return [("float32", None),
            ("bfloat16, stochastic", {"state_dtype": "bfloat16", "rounding": "stochastic"}),
            ("bfloat16, nearest", {"state_dtype": "bfloat16", "rounding": "nearest"}),
            ("row-wise", {"rowwise": ROWWISE[optimizer]})]


def fit_auc(data, optimizer, params, args):
    est = SGDClassifier(loss="log_loss", optimizer=optimizer, max_iter=args.epochs,
                        penalty=None, random_state=args.seed, n_threads=1, warm_start=True,
                        optimizer_params=params)
    est.fit(data.X_train.astype(np.float32), data.y_train)
    scores = est.decision_function(data.X_test.astype(np.float32))
    if scores.ndim == 1:
        auc = roc_auc_score(data.y_test, scores)
    else:
        z = np.exp(scores - scores.max(axis=1, keepdims=True))
        auc = roc_auc_score(data.y_test, z / z.sum(axis=1, keepdims=True), multi_class="ovr")
    st = est.optimizer_.state["coef"]
    nbytes = sum(st[k].nbytes for k in STATE[optimizer] if k in st)
    return auc, nbytes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="tweets,reviews_hashed,flights_delay")
    p.add_argument("--optimizers", default="adam,adagrad,rmsprop")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows", type=int, default=None)
    args = p.parse_args(argv)
    print(f"SGDClassifier(loss='log_loss', optimizer=..., max_iter={args.epochs}, "
          f"penalty=None, random_state={args.seed}, optimizer_params=...), float32 X\n")
    print("| data set | optimizer | state | held-out ROC-AUC | AUC - float32 | state bytes |")
    print("|---|---|---|---:|---:|---:|")
    for name in args.datasets.split(","):
        data = quality_data.load(name, max_rows=args.max_rows)
        for optimizer in args.optimizers.split(","):
            base = None
            for label, params in variants(optimizer):
                auc, nbytes = fit_auc(data, optimizer, params, args)
                base = auc if base is None else base
                print(f"| {name} | {optimizer} | {label} | {auc:.4f} | {auc - base:+.4f} | "
                      f"{nbytes:,} |", flush=True)


if __name__ == "__main__":
    main()
