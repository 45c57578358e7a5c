"""Every optimizer on a Zipf-distributed embedding model
=====================================================

Train a small embedding model with every optimizer: ``python examples/demo.py``.

``python -m sparseopt demo`` runs this same file from any install (distributions ship the
examples as ``sparseopt.examples``). ``--quick`` is a small problem for a smoke test.

The model is a biased matrix factorisation, the textbook recommender::

    rating(u, i) ~ mu + b_user[u] + b_item[i] + <P[u], Q[i]>

fitted by mini-batch gradient descent on the squared loss. Users and items are
drawn from a Zipf(1.1) law, as in real interaction logs: a handful of rows
appear in every batch (hundreds of times each), most rows are rare. That is the
regime sparseopt is built for: each batch touches a few thousand rows of the
tables, so the optimizer step must cost O(touched rows), not O(table).

The gradient is computed in vectorised NumPy as one row *per sample*, duplicate
indices included, and handed to the optimizer as ``RowGrad(indices, rows)``;
the optimizer merges the duplicates itself (summing them, as
``torch.Tensor.coalesce`` does). No ``np.unique``/``np.add.at`` in user code.

Everything printed is deterministic for a given ``--seed`` except the timings.
"""

import argparse
import contextlib
import io
import os
import platform
import sys
import time

import numpy as np

import sparseopt as so

# Full and --quick problem sizes. The full size is a realistic step workload (a million
# ratings, thousands of touched rows per batch); --quick runs every code path on a much
# smaller problem, for smoke tests. Much of the run time is NumPy (gathers, the per-sample
# gradient) and evaluation, not the optimizer: step time and total time are reported apart.
SIZES = {
    "full": dict(n_users=50_000, n_items=20_000, dim=32, n_train=1_000_000,
                 n_test=100_000, epochs=4),
    "quick": dict(n_users=5_000, n_items=2_000, dim=16, n_train=150_000,
                  n_test=20_000, epochs=3),
}
BATCH = 4_096
RANK = 8            # rank of the hidden model that generates the ratings
NOISE = 0.3         # irreducible noise: the best possible RMSE
ZIPF_S = 1.1
L2 = 0.02           # per-occurrence L2 penalty on the embedding rows
N_EVAL = 100_000    # training samples used to report the train RMSE

# (label, constructor, kwargs). Learning rates are each rule's sensible value
# for this problem, not the library defaults (Adam's 1e-3 would need many more
# epochs than a demo has).
OPTIMIZERS = [
    ("Adam", "Adam", dict(lr=2e-2)),
    ("Adam(decay)", "Adam", dict(lr=2e-2, lazy="decay")),
    ("Adagrad", "Adagrad", dict(lr=0.1)),
    ("RMSprop", "RMSprop", dict(lr=1e-2)),
]


def zipf_ids(rng, n_ids, size, s=ZIPF_S):
    """Draw ``size`` ids in [0, n_ids) with P(rank k) proportional to k**-s.

    The ranks are scattered over the id range by a random permutation, so the
    popular rows are not all at the start of the table.
    """
    p = np.arange(1, n_ids + 1, dtype=np.float64) ** -s
    p /= p.sum()
    ranks = rng.choice(n_ids, size=size, p=p)
    return rng.permutation(n_ids)[ranks].astype(np.int32)


def make_data(rng, n_users, n_items, n_train, n_test, **_):
    """Ratings from a hidden rank-8 biased factorisation plus Gaussian noise."""
    n = n_train + n_test
    users = zipf_ids(rng, n_users, n)
    items = zipf_ids(rng, n_items, n)
    # factor scale s chosen so that <p, q> has standard deviation ~0.8
    s = (0.8 ** 2 / RANK) ** 0.25
    p_true = rng.normal(0.0, s, size=(n_users, RANK))
    q_true = rng.normal(0.0, s, size=(n_items, RANK))
    bu_true = rng.normal(0.0, 0.5, size=n_users)
    bi_true = rng.normal(0.0, 0.5, size=n_items)
    ratings = (3.5 + bu_true[users] + bi_true[items]
               + np.einsum("ij,ij->i", p_true[users], q_true[items])
               + rng.normal(0.0, NOISE, size=n)).astype(np.float32)
    tr, te = slice(0, n_train), slice(n_train, n)
    return (users[tr], items[tr], ratings[tr]), (users[te], items[te], ratings[te])


def init_params(rng, n_users, n_items, dim, **_):
    """Small random factors (zero factors would have zero gradient), zero biases."""
    return {
        "user_emb": rng.normal(0.0, 0.1, size=(n_users, dim)).astype(np.float32),
        "item_emb": rng.normal(0.0, 0.1, size=(n_items, dim)).astype(np.float32),
        "user_bias": np.zeros(n_users, dtype=np.float32),
        "item_bias": np.zeros(n_items, dtype=np.float32),
    }


def predict(params, mu, users, items):
    P, Q = params["user_emb"], params["item_emb"]
    return (mu + params["user_bias"][users] + params["item_bias"][items]
            + np.einsum("ij,ij->i", P[users], Q[items]))


def rmse(params, mu, data, chunk=100_000):
    users, items, ratings = data
    sq = 0.0
    for s in range(0, len(ratings), chunk):
        e = predict(params, mu, users[s:s + chunk], items[s:s + chunk]) - ratings[s:s + chunk]
        sq += float(np.dot(e.astype(np.float64), e.astype(np.float64)))
    return (sq / len(ratings)) ** 0.5


def batch_grads(params, mu, users, items, ratings):
    """Per-sample gradient rows of 0.5 * mean squared error + per-occurrence L2.

    Returns one row per sample for each table: duplicates are left in on
    purpose, the optimizer merges them.
    """
    P, Q = params["user_emb"], params["item_emb"]
    pu, qi = P[users], Q[items]                        # (B, d) gathers
    err = (mu + params["user_bias"][users] + params["item_bias"][items]
           + np.einsum("ij,ij->i", pu, qi) - ratings)
    err *= np.float32(1.0 / len(ratings))              # d(loss)/d(prediction)
    l2 = np.float32(L2 / len(ratings))
    g_user = err[:, None] * qi + l2 * pu
    g_item = err[:, None] * pu + l2 * qi
    return {
        "user_emb": so.RowGrad(users, g_user),
        "item_emb": so.RowGrad(items, g_item),
        "user_bias": so.RowGrad(users, err),
        "item_bias": so.RowGrad(items, err),
    }


def count_unique_rows(batches):
    """Unique embedding rows (user + item) each batch touches; for rows/s."""
    return np.array([len(np.unique(u)) + len(np.unique(i)) for u, i, _ in batches])


def train_one(label, cls_name, kwargs, init, mu, batches, uniq, train_eval, test,
              epochs, seed, n_threads):
    params = {k: v.copy() for k, v in init.items()}
    opt = getattr(so, cls_name)(params, n_threads=n_threads, **kwargs)
    flush = kwargs.get("lazy") == "decay"
    order_rng = np.random.default_rng([seed, 2])       # same batch order for everyone
    hp = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    print(f"\n{label}: so.{cls_name}({hp})", flush=True)
    print(f"  start     train RMSE {rmse(params, mu, train_eval):.4f}   "
          f"held-out RMSE {rmse(params, mu, test):.4f}", flush=True)
    t_step = t_total = 0.0
    rows = 0
    for epoch in range(1, epochs + 1):
        e_step = 0.0
        t0 = time.perf_counter()
        for b in order_rng.permutation(len(batches)):
            users, items, ratings = batches[b]
            grads = batch_grads(params, mu, users, items, ratings)
            s0 = time.perf_counter()
            opt.step(grads)
            e_step += time.perf_counter() - s0
        if flush:
            # bring every row's pending moment decay up to date; part of the
            # optimizer's cost, so it is timed as step time
            s0 = time.perf_counter()
            opt.flush()
            e_step += time.perf_counter() - s0
        e_total = time.perf_counter() - t0
        t_step += e_step
        t_total += e_total
        rows += int(uniq.sum())
        print(f"  epoch {epoch}/{epochs} train RMSE {rmse(params, mu, train_eval):.4f}   "
              f"held-out RMSE {rmse(params, mu, test):.4f}   "
              f"step {e_step:5.2f} s of {e_total:5.2f} s   "
              f"{uniq.sum() / e_step / 1e6:6.2f} M rows/s", flush=True)
    return dict(label=label, lr=kwargs["lr"], train=rmse(params, mu, train_eval),
                test=rmse(params, mu, test), step=t_step, total=t_total,
                mrows=rows / t_step / 1e6)


def config_line():
    """``show_config()`` squeezed onto one line, if it prints little."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            so.show_config()
    except Exception as exc:  # the demo must not die on a diagnostics helper
        return f"show_config() failed: {exc!r}"
    lines = [" ".join(ln.split()) for ln in buf.getvalue().splitlines() if ln.strip()]
    text = " | ".join(lines)
    return text if len(text) <= 300 else text[:297] + "..."


def run(quick=False, seed=0, n_threads=None, epochs=None):
    cfg = dict(SIZES["quick" if quick else "full"])
    if epochs is not None:
        cfg["epochs"] = epochs
    t_start = time.perf_counter()
    print(f"sparseopt {so.__version__} demo  (python {platform.python_version()}, "
          f"numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"n_threads={'default' if n_threads is None else n_threads})")
    print(f"build: {config_line()}")
    print(f"model: biased matrix factorisation, user table {cfg['n_users']:,} x {cfg['dim']}, "
          f"item table {cfg['n_items']:,} x {cfg['dim']} float32, plus two bias vectors")
    print(f"data:  {cfg['n_train']:,} train / {cfg['n_test']:,} held-out ratings, users and "
          f"items ~ Zipf({ZIPF_S}), hidden rank-{RANK} model + N(0, {NOISE}^2) noise; "
          f"seed {seed}{'  [--quick]' if quick else ''}")
    print("generating data ...", end=" ", flush=True)
    t0 = time.perf_counter()
    data_rng = np.random.default_rng([seed, 0])
    train, test = make_data(data_rng, **cfg)
    init = init_params(np.random.default_rng([seed, 1]), **cfg)
    mu = np.float32(train[2].mean())
    users, items, ratings = train
    batches = [(users[s:s + BATCH], items[s:s + BATCH], ratings[s:s + BATCH])
               for s in range(0, len(ratings), BATCH)]
    uniq = count_unique_rows(batches)
    n_eval = min(N_EVAL, len(ratings))
    train_eval = (users[:n_eval], items[:n_eval], ratings[:n_eval])
    print(f"done ({time.perf_counter() - t0:.1f} s)")
    dups = 2 * len(ratings) / uniq.sum()
    top = int(np.bincount(batches[0][0]).max())
    print(f"batches: {len(batches)} x {BATCH} samples; each touches on average "
          f"{uniq.mean():,.0f} unique embedding rows (user + item): a touched row occurs "
          f"{dups:.1f}x per batch on average, the most popular user {top}x")
    baseline = float(np.sqrt(np.mean((test[2] - mu).astype(np.float64) ** 2)))
    print(f"baseline: predicting the global mean {mu:.3f} gives held-out RMSE {baseline:.4f}; "
          f"the noise floor is {NOISE}")

    results = [train_one(label, cls_name, kwargs, init, mu, batches, uniq, train_eval, test,
                         cfg["epochs"], seed, n_threads)
               for label, cls_name, kwargs in OPTIMIZERS]

    print(f"\nsummary after {cfg['epochs']} epochs "
          f"(train RMSE on {n_eval:,} training samples):")
    head = (f"  {'optimizer':<13}{'lr':>7}{'train RMSE':>12}{'held-out RMSE':>15}"
            f"{'step s':>9}{'total s':>9}{'step %':>8}{'M rows/s':>10}")
    print(head)
    print("  " + "-" * (len(head) - 2))
    print(f"  {'global mean':<13}{'':>7}{'':>12}{baseline:>15.4f}")
    for r in results:
        print(f"  {r['label']:<13}{r['lr']:>7g}{r['train']:>12.4f}{r['test']:>15.4f}"
              f"{r['step']:>9.2f}{r['total']:>9.2f}{100 * r['step'] / r['total']:>7.0f}%"
              f"{r['mrows']:>10.2f}")
    print("  step s: time inside opt.step (and opt.flush); total s: the whole training loop,\n"
          "  mostly the NumPy forward/backward. M rows/s: unique embedding rows updated per\n"
          "  second of step time (the bias vectors are stepped too, but not counted).")
    print(f"demo finished in {time.perf_counter() - t_start:.1f} s")
    return dict(baseline=baseline, results=results)


def main(argv=None, prog=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), run the demo and return the exit status.

    ``prog`` names the command in the usage message (default: this script's name).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a small Zipf-distributed embedding model with every optimizer.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    run(quick=args.quick, seed=args.seed, n_threads=args.threads, epochs=args.epochs)
    return 0


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="a small problem that runs in a few seconds")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="n_threads for the optimizers (default: OpenMP's default)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per optimizer (default 4, or 3 with --quick)")


if __name__ == "__main__":
    status = main()
    if status:
        sys.exit(status)
