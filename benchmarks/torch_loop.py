"""A DLRM-style PyTorch training loop, stepped by torch.optim and by sparseopt.torch.

The model: a few ``nn.EmbeddingBag(sparse=True)`` tables (1e5-1e6 rows by default) looked up
with Zipf-distributed ids, a bottom MLP over dense features, a top MLP over the concatenation,
binary cross-entropy. Labels come from a hidden model of the same shape, so the loss can fall.
One iteration = forward, backward, optimizer step(s), ``zero_grad``.

Contenders, each on its own copy of the model (same initial weights, same batches):

* ``torch SparseAdam+Adam``: ``torch.optim.SparseAdam`` on the tables, ``torch.optim.Adam``
  on the MLPs (the usual PyTorch recipe: Adam refuses sparse gradients);
* ``torch Adagrad``: ``torch.optim.Adagrad`` on everything (it takes both);
* ``sparseopt Adam`` (defaults), ``sparseopt Adam preset=torch``, ``sparseopt Adagrad``:
  one ``sparseopt.torch`` optimizer on everything.

They run interleaved in one process (iteration i of every contender, in a random order,
before iteration i + 1), so a load that comes and goes on a shared machine hits them all
alike. Reported: median iteration time and median optimizer time (the ``step`` calls alone),
their ratios to the torch contender of the same rule, and the mean training loss of the last
iterations.

    python benchmarks/torch_loop.py                 # the default sizes (a few minutes)
    python benchmarks/torch_loop.py --quick         # a tiny run (seconds)
"""
import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

try:
    import torch
    from torch import nn
except ImportError:  # pragma: no cover
    sys.exit("benchmarks/torch_loop.py needs PyTorch: pip install torch")

try:
    import sparseopt.torch as sot
except ImportError:  # run as a script from a checkout: the package next to this folder
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    import sparseopt.torch as sot


class DLRM(nn.Module):
    def __init__(self, rows, dim, n_dense, hidden):
        super().__init__()
        self.tables = nn.ModuleList(nn.EmbeddingBag(n, dim, mode="sum", sparse=True)
                                    for n in rows)
        for t in self.tables:
            nn.init.uniform_(t.weight, -0.05, 0.05)
        self.bottom = nn.Sequential(nn.Linear(n_dense, hidden), nn.ReLU(),
                                    nn.Linear(hidden, dim), nn.ReLU())
        self.top = nn.Sequential(nn.Linear(dim * (len(rows) + 1), hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, dense, ids, offsets):
        x = [self.bottom(dense)] + [t(i, o) for t, i, o in zip(self.tables, ids, offsets)]
        return self.top(torch.cat(x, 1)).squeeze(1)

    def sparse_parameters(self):
        return list(self.tables.parameters())

    def dense_parameters(self):
        return list(self.bottom.parameters()) + list(self.top.parameters())


def make_batches(args, rng):
    """Zipf ids (exponent ``args.zipf``, the popular ids spread over the table by a fixed
    permutation), ``args.pooling`` ids per bag, Gaussian dense features. Labels: Bernoulli of
    the sigmoid of a hidden logit, the sum over tables of each bag's mean per-id effect
    (N(0, 1) per row) plus the first dense feature, so the loss can fall below log 2."""
    perms = [rng.permutation(n) for n in args.rows]
    effects = [rng.normal(size=n) for n in args.rows]
    batches = []
    n_ids = args.batch * args.pooling
    offsets = torch.arange(0, n_ids, args.pooling)
    for _ in range(args.warmup + args.iters):
        ids, logit = [], 0.0
        for n, perm, eff in zip(args.rows, perms, effects):
            i = perm[(rng.zipf(args.zipf, size=n_ids) - 1) % n]
            logit = logit + eff[i].reshape(args.batch, args.pooling).mean(1)
            ids.append(torch.from_numpy(i))
        dense = rng.normal(size=(args.batch, args.n_dense))
        logit = logit + dense[:, 0]
        y = (rng.random(args.batch) < 1 / (1 + np.exp(-logit))).astype(np.float32)
        batches.append((torch.from_numpy(dense.astype(np.float32)), ids,
                        [offsets] * len(ids), torch.from_numpy(y)))
    return batches


CONTENDERS = {
    "torch SparseAdam+Adam": lambda m, lr: [
        torch.optim.SparseAdam(m.sparse_parameters(), lr=lr["adam"]),
        torch.optim.Adam(m.dense_parameters(), lr=lr["adam"])],
    "torch Adagrad": lambda m, lr: [torch.optim.Adagrad(m.parameters(), lr=lr["adagrad"])],
    "sparseopt Adam": lambda m, lr: [sot.Adam(m.parameters(), lr=lr["adam"])],
    "sparseopt Adam preset=torch": lambda m, lr: [
        sot.Adam(m.parameters(), lr=lr["adam"], preset="torch")],
    "sparseopt Adagrad": lambda m, lr: [sot.Adagrad(m.parameters(), lr=lr["adagrad"])],
}
# the torch contender each sparseopt one is compared with (the same update rule family)
BASELINE = {"sparseopt Adam": "torch SparseAdam+Adam",
            "sparseopt Adam preset=torch": "torch SparseAdam+Adam",
            "sparseopt Adagrad": "torch Adagrad"}


def iteration(model, opts, batch, loss_fn):
    dense, ids, offsets, y = batch
    t0 = time.perf_counter()
    for o in opts:
        o.zero_grad()
    loss = loss_fn(model(dense, ids, offsets), y)
    loss.backward()
    t1 = time.perf_counter()
    for o in opts:
        o.step()
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1, t1 - t0, loss.item()


def run(args):
    # torch.optim.Adagrad builds sparse tensors without choosing invariant checks
    warnings.filterwarnings("ignore", "Sparse invariant checks")
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(args.torch_threads)
    batches = make_batches(args, rng)
    names = [n for n in CONTENDERS if n in args.contenders]
    runs = {}
    for name in names:
        torch.manual_seed(args.seed)  # the same initial weights for every contender
        model = DLRM(args.rows, args.dim, args.n_dense, args.hidden)
        runs[name] = dict(model=model, opts=CONTENDERS[name](model, args.lr), it=[], opt=[],
                          fb=[], loss=[])
    loss_fn = nn.BCEWithLogitsLoss()
    order_rng = np.random.default_rng(args.seed + 1)
    for i, batch in enumerate(batches):
        # a new random order each iteration: no contender always follows the same other one
        # (whose memory traffic and idle threads it would inherit)
        order = [names[j] for j in order_rng.permutation(len(names))]
        for name in order:
            r = runs[name]
            t_it, t_opt, t_fb, loss = iteration(r["model"], r["opts"], batch, loss_fn)
            if i >= args.warmup:
                r["it"].append(t_it)
                r["opt"].append(t_opt)
                r["fb"].append(t_fb)
                r["loss"].append(loss)
    tail = max(1, args.iters // 5)
    rows = []
    for name in names:
        r = runs[name]
        rows.append(dict(name=name, it_ms=1e3 * statistics.median(r["it"]),
                         opt_ms=1e3 * statistics.median(r["opt"]),
                         fb_ms=1e3 * statistics.median(r["fb"]),
                         loss=float(np.mean(r["loss"][-tail:]))))
    by = {row["name"]: row for row in rows}
    for row in rows:
        base = by.get(BASELINE.get(row["name"]))
        row["it_ratio"] = base["it_ms"] / row["it_ms"] if base else None
        row["opt_ratio"] = base["opt_ms"] / row["opt_ms"] if base else None
    return rows, tail


def report(rows, tail, args):
    lines = [f"DLRM-style loop: tables {'+'.join(f'{n:,}' for n in args.rows)} rows x "
             f"{args.dim}, batch {args.batch} x {args.pooling} ids per table (Zipf "
             f"{args.zipf}), {args.iters} timed iterations after {args.warmup}, interleaved; "
             f"torch threads {args.torch_threads}",
             "",
             "| contender | iteration ms (median) | speed-up vs torch | optimizer ms (median) "
             f"| speed-up vs torch | rest of the iteration ms (median) | loss (last {tail}) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = (lambda x: f"{x:.2f}x" if x is not None else "")
        lines.append(f"| {r['name']} | {r['it_ms']:.1f} | {ratio(r['it_ratio'])} | "
                     f"{r['opt_ms']:.2f} | {ratio(r['opt_ratio'])} | {r['fb_ms']:.1f} | "
                     f"{r['loss']:.4f} |")
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1000000,300000,100000",
                   help="rows of each embedding table, comma-separated")
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--pooling", type=int, default=4, help="ids per bag")
    p.add_argument("--zipf", type=float, default=1.2, help="Zipf exponent of the ids")
    p.add_argument("--n-dense", type=int, default=13)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--torch-threads", type=int, default=torch.get_num_threads())
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help="comma-separated subset of: " + ", ".join(CONTENDERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.batch, args.iters, args.warmup = "2000,500", 64, 6, 1
    args.rows = [int(x) for x in str(args.rows).split(",")]
    args.contenders = [c.strip() for c in args.contenders.split(",")]
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        p.error(f"unknown contenders {sorted(unknown)}")
    # torch's defaults for each rule (SparseAdam/Adam 1e-3 is slow to move on this scale;
    # both sides get the same rate)
    args.lr = {"adam": 1e-2, "adagrad": 5e-2}
    return args


def main(argv=None):
    args = parse(argv)
    rows, tail = run(args)
    print(report(rows, tail, args))
    return rows


if __name__ == "__main__":
    main()
