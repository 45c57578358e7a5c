"""Matrix factorisation: sparseopt.recommend vs nn.Embedding(sparse=True) + SparseAdam.

One biased MF model, trained both ways on the same generated data, one
thread each::

    rating(u, i) ~ mu + b_u + c_i + <p_u, q_i>      (32 factors)
    loss = mean over the batch of 1/2 (pred - r)^2 + alpha/2 (|p_u|^2 + |q_i|^2 + b_u^2 + c_i^2)

* **sparseopt**: ``sparseopt.recommend.MatrixFactorization(optimizer="adam")``, i.e. the fused
  Cython batch kernel and lazy ``sparseopt.Adam`` (row-wise bias correction, the default).
* **torch**: the textbook PyTorch model, four ``nn.Embedding(..., sparse=True)`` tables (user
  factors, item factors, user bias, item bias), ``loss.backward()`` and
  ``torch.optim.SparseAdam`` -- and, with ``--torch-variants 4,2``, also a two-table variant
  whose rows hold ``[factors, bias]`` as sparseopt's do (fewer, wider sparse gradients), so
  the comparison does not rest on PyTorch's textbook layout alone.

Same data, test split, batch size, learning rate, alpha, initial distribution (factors
N(0, 0.1^2), biases 0), epochs; each model shuffles with its own seeded generator.
``torch.set_num_threads(1)`` and ``n_threads=1``. An epoch's time is training only (the
shuffle included); the test RMSE after each epoch is computed outside the timed region. The
models train in turn, one epoch each, so background load on a shared machine hits all alike.

Data: ``sparseopt.datasets.make_ratings`` -- 50,000 users, 20,000 items, Zipf(1.1) user and
item popularity, rank-8 signal, noise 0.3 (the RMSE floor); 1,000,000 training ratings and
100,000 held-out test ratings (a random split of 1,100,000).

Run::

    python benchmarks/bench_mf.py                 # full size, 10 epochs each
    python benchmarks/bench_mf.py --quick         # 100k ratings, 3 epochs

Prints a Markdown report (and writes it to ``--out`` when given).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

# run as a script (python benchmarks/bench_mf.py): make the benchmarks package importable
if not __package__:
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import sparseopt  # noqa: E402
from benchmarks.report import cpu_model  # noqa: E402
from sparseopt.datasets import holdout_split, make_ratings  # noqa: E402
from sparseopt.recommend import MatrixFactorization  # noqa: E402
from sparseopt.recommend.metrics import rmse  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--ratings", type=int, default=1_000_000, help="training ratings")
    ap.add_argument("--test", type=int, default=100_000, help="held-out ratings")
    ap.add_argument("--factors", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--alpha", type=float, default=0.02)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-variants", default="4,2",
                    help="torch models to run: 4 = four tables (textbook), 2 = two tables")
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--out", default=None, help="also write the report to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.users, args.items, args.ratings, args.test = 5_000, 2_000, 100_000, 10_000
        args.epochs = 3
    return args


def triples(X):
    users = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
    return users, X.indices.astype(np.int64), X.data.astype(np.float32)


# --------------------------------------------------------------------------- sparseopt


class SparseoptRunner:
    """``MatrixFactorization.partial_fit``, one epoch per call (its own timing: the epoch
    only, evaluation excluded)."""

    def __init__(self, train, test, args):
        self.train, self.test = train, test
        self.mf = MatrixFactorization(n_components=args.factors, optimizer="adam",
                                      learning_rate=args.lr, alpha=args.alpha,
                                      batch_size=args.batch_size, random_state=args.seed,
                                      n_threads=1)

    def epoch(self):
        self.mf.partial_fit(self.train, eval_set=self.test)
        h = self.mf.history_[-1]
        return h["seconds"], h["eval"]


# --------------------------------------------------------------------------- torch


class TorchRunner:
    """The same model in PyTorch: sparse embeddings, autograd, SparseAdam."""

    def __init__(self, train, test, args, n_tables):
        import torch
        from torch import nn

        self.torch = torch
        torch.set_num_threads(1)
        torch.manual_seed(args.seed)
        self.gen = torch.Generator().manual_seed(args.seed)
        n_users, n_items = train.shape
        k = args.factors
        self.u, self.i, self.r = (torch.from_numpy(a) for a in triples(train))
        self.tu, self.ti, self.tr = (torch.from_numpy(a) for a in triples(test))
        mu = float(train.data.mean())

        if n_tables == 4:
            P = nn.Embedding(n_users, k, sparse=True)
            Q = nn.Embedding(n_items, k, sparse=True)
            bu = nn.Embedding(n_users, 1, sparse=True)
            bi = nn.Embedding(n_items, 1, sparse=True)
            with torch.no_grad():
                nn.init.normal_(P.weight, std=0.1)
                nn.init.normal_(Q.weight, std=0.1)
                bu.weight.zero_()
                bi.weight.zero_()
            params = [P.weight, Q.weight, bu.weight, bi.weight]

            def forward(ub, ib):
                p, q, b1, b2 = P(ub), Q(ib), bu(ub).squeeze(1), bi(ib).squeeze(1)
                pred = mu + (p * q).sum(1) + b1 + b2
                reg = (p * p).sum(1) + (q * q).sum(1) + b1 * b1 + b2 * b2
                return pred, reg
        else:
            P = nn.Embedding(n_users, k + 1, sparse=True)
            Q = nn.Embedding(n_items, k + 1, sparse=True)
            with torch.no_grad():
                nn.init.normal_(P.weight, std=0.1)
                nn.init.normal_(Q.weight, std=0.1)
                P.weight[:, k] = 0.0
                Q.weight[:, k] = 0.0
            params = [P.weight, Q.weight]

            def forward(ub, ib):
                p, q = P(ub), Q(ib)
                pred = mu + (p[:, :k] * q[:, :k]).sum(1) + p[:, k] + q[:, k]
                return pred, (p * p).sum(1) + (q * q).sum(1)

        self.forward = forward
        self.opt = torch.optim.SparseAdam(params, lr=args.lr)
        self.alpha, self.B = args.alpha, args.batch_size

    def epoch(self):
        torch, forward, opt = self.torch, self.forward, self.opt
        n, B, alpha = self.r.shape[0], self.B, self.alpha
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=self.gen)
        ue, ie, re = self.u[perm], self.i[perm], self.r[perm]
        for s in range(0, n, B):
            ub, ib, rb = ue[s:s + B], ie[s:s + B], re[s:s + B]
            opt.zero_grad(set_to_none=True)
            pred, reg = forward(ub, ib)
            loss = 0.5 * ((pred - rb) ** 2).mean() + 0.5 * alpha * reg.mean()
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            pred = torch.cat([forward(self.tu[s:s + 100_000], self.ti[s:s + 100_000])[0]
                              for s in range(0, self.tu.shape[0], 100_000)])
        return seconds, rmse(self.tr.numpy(), pred.numpy())


# --------------------------------------------------------------------------- report


def summarise(curve):
    secs = np.array([c[0] for c in curve])
    errs = np.array([c[1] for c in curve])
    best = int(np.argmin(errs))
    return dict(epoch_s=float(np.median(secs)), total_s=float(secs.sum()),
                best=float(errs[best]), best_epoch=best + 1,
                best_time=float(secs[:best + 1].sum()), final=float(errs[-1]),
                cum=np.cumsum(secs), errs=errs)


def time_to_reach(summary, target):
    hit = np.flatnonzero(summary["errs"] <= target)
    if hit.shape[0] == 0:
        return None, None
    j = int(hit[0])
    return float(summary["cum"][j]), j + 1


def main(argv=None):
    args = parse_args(argv)
    lines = []

    def emit(s=""):
        lines.append(s)
        print(s, flush=True)

    t0 = time.perf_counter()
    X = make_ratings(args.users, args.items, args.ratings + args.test, rank=8, zipf=args.zipf,
                     noise=args.noise, random_state=args.seed)
    train, test = holdout_split(X, args.test / (args.ratings + args.test),
                                random_state=args.seed)
    print(f"data: {train.nnz:,} train / {test.nnz:,} test ratings in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    runners = {"sparseopt": SparseoptRunner(train, test, args)}
    try:
        import torch
        torch_version = torch.__version__
        for v in [int(x) for x in args.torch_variants.split(",") if x.strip()]:
            runners[f"torch ({v} tables)"] = TorchRunner(train, test, args, v)
    except ImportError:
        torch_version = None
    # Epochs are interleaved (one of each model in turn), so that a busy machine slows every
    # model alike instead of whichever happened to run during the busy minute.
    curves = {name: [] for name in runners}
    for e in range(args.epochs):
        for name, runner in runners.items():
            curves[name].append(runner.epoch())
            sec, err = curves[name][-1]
            print(f"epoch {e + 1:2d}  {name:18s} {sec:7.3f} s  test RMSE {err:.4f}",
                  file=sys.stderr, flush=True)
    results = {name: summarise(c) for name, c in curves.items()}

    emit("# Matrix factorisation: sparseopt vs nn.Embedding(sparse=True) + SparseAdam")
    emit()
    cli = sys.argv[1:] if argv is None else list(argv)
    emit(f"Command: `python benchmarks/bench_mf.py{''.join(' ' + a for a in cli)}`")
    emit()
    emit(f"Machine: {cpu_model()}, {os.cpu_count()} CPUs; "
         f"Python {platform.python_version()}, NumPy {np.__version__}, sparseopt "
         f"{sparseopt.__version__}, torch {torch_version}. One thread each.")
    emit()
    emit(f"Data: {args.users:,} users x {args.items:,} items, Zipf({args.zipf}) popularity, "
         f"rank-8 signal + N(0, {args.noise}^2) noise; {train.nnz:,} training and "
         f"{test.nnz:,} test ratings. Model: {args.factors} factors + biases, Adam "
         f"lr={args.lr}, alpha={args.alpha}, batch {args.batch_size}, {args.epochs} epochs.")
    emit()
    ref_key = next((k for k in results if k.startswith("torch (4")), None) or \
        next((k for k in results if k.startswith("torch")), None)
    emit("| model | time / epoch (median) | speed-up | best test RMSE (epoch) | "
         "final test RMSE | time to torch's best RMSE |")
    emit("|---|---:|---:|---:|---:|---:|")
    so_s = results["sparseopt"]
    for name, s in results.items():
        if name == "sparseopt":
            speed_txt = "1.0x"
        else:
            speed_txt = f"{s['epoch_s'] / so_s['epoch_s']:.1f}x slower"
        if name.startswith("torch"):
            reach = f"{s['best_time']:.2f} s (epoch {s['best_epoch']})"
        elif ref_key is not None:
            t, ep = time_to_reach(s, results[ref_key]["best"])
            reach = f"{t:.2f} s (epoch {ep})" if t is not None else "not reached"
        else:
            reach = "-"
        emit(f"| {name} | {s['epoch_s']:.3f} s | {speed_txt} | {s['best']:.4f} "
             f"({s['best_epoch']}) | {s['final']:.4f} | {reach} |")
    emit()
    if ref_key is not None:
        emit("Time to torch's best RMSE: for sparseopt, training time until its test RMSE is "
             f"at or below the best RMSE of {ref_key} ({results[ref_key]['best']:.4f}); for "
             "torch, until that best epoch.")
        emit()
        torch_keys = [k for k in results if k.startswith("torch")]
        emit("| epoch | sparseopt RMSE | sparseopt s | "
             + " | ".join(f"{k} RMSE | {k} s" for k in torch_keys) + " |")
        emit("|---:|---:|---:|" + "---:|---:|" * len(torch_keys))
        for e in range(args.epochs):
            row = [f"{e + 1}", f"{so_s['errs'][e]:.4f}",
                   f"{np.diff(so_s['cum'], prepend=0)[e]:.3f}"]
            for k in torch_keys:
                row += [f"{results[k]['errs'][e]:.4f}",
                        f"{np.diff(results[k]['cum'], prepend=0)[e]:.3f}"]
            emit("| " + " | ".join(row) + " |")
        emit()
        for k in torch_keys:
            ratio = results[k]["epoch_s"] / so_s["epoch_s"]
            ok_t = ratio >= 5.0
            ok_r = so_s["best"] <= results[k]["best"] + 1e-12
            emit(f"Target vs {k}: >= 5x less time per epoch: {'met' if ok_t else 'MISSED'} "
                 f"({ratio:.1f}x); equal or lower test RMSE: {'met' if ok_r else 'MISSED'} "
                 f"({so_s['best']:.4f} vs {results[k]['best']:.4f}).")
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return results


if __name__ == "__main__":
    main()
