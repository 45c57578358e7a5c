"""Half-precision embedding tables on the DLRM-style loop of ``benchmarks/torch_loop.py``.

The same model, initial weights and batches are trained with ``sparseopt.torch.Adam`` six
ways: float32 tables, bfloat16 tables (round to nearest, and stochastic rounding), float16
tables, and bfloat16 moments (``state_dtype="bfloat16"``, stochastic rounding) with float32
or bfloat16 tables. The dense layers stay float32 (their moments follow ``state_dtype``). The
contenders run interleaved in one process (iteration i of each, in a random order, before
iteration i + 1). Reported: table and state bytes, the mean training loss of the last
iterations and the loss on held-out batches, and the median optimizer time (``step`` alone)
with its ratio to the float32 run.

    python benchmarks/half_precision.py             # default sizes (a few minutes)
    python benchmarks/half_precision.py --quick     # a smoke run
"""
import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sparseopt.torch as sot  # noqa: E402
from benchmarks.torch_loop import DLRM, make_batches  # noqa: E402

# name: (table dtype, rounding, state dtype)
CONTENDERS = {
    "float32": (torch.float32, "nearest", None),
    "bfloat16": (torch.bfloat16, "nearest", None),
    "bfloat16 stochastic": (torch.bfloat16, "stochastic", None),
    "float16": (torch.float16, "nearest", None),
    "float32 + bfloat16 moments (stochastic)": (torch.float32, "stochastic", "bfloat16"),
    "bfloat16 stochastic + bfloat16 moments": (torch.bfloat16, "stochastic", "bfloat16"),
}


def build(args, dtype, rounding, state_dtype):
    torch.manual_seed(args.seed)
    model = DLRM(args.rows, args.dim, args.n_dense, args.hidden)
    for t in model.tables:
        t.weight.data = t.weight.data.to(dtype)
    opt = sot.Adam(model.parameters(), lr=args.lr, rounding=rounding, seed=args.seed,
                   state_dtype=state_dtype)
    return model, opt


def nbytes(tensors):
    return sum(t.element_size() * t.nelement() for t in tensors)


def run(args):
    warnings.filterwarnings("ignore", "Sparse invariant checks")
    torch.set_num_threads(args.torch_threads)
    rng = np.random.default_rng(args.seed)
    args.warmup = 0
    batches = make_batches(args, rng)
    held = batches[args.iters - args.held_out:]
    train = batches[:args.iters - args.held_out]
    loss_fn = nn.BCEWithLogitsLoss()
    runs = {name: dict(zip(("model", "opt"), build(args, *spec)), loss=[], opt_s=[])
            for name, spec in CONTENDERS.items() if name in args.contenders}
    names = list(runs)
    order_rng = np.random.default_rng(args.seed + 1)
    for it, (dense, ids, offsets, y) in enumerate(train):
        if it % 50 == 0:
            print(f"iteration {it}", file=sys.stderr, flush=True)
        for name in [names[j] for j in order_rng.permutation(len(names))]:
            r = runs[name]
            r["opt"].zero_grad()
            loss = loss_fn(r["model"](dense, ids, offsets).float(), y)
            loss.backward()
            t0 = time.perf_counter()
            r["opt"].step()
            r["opt_s"].append(time.perf_counter() - t0)
            r["loss"].append(loss.item())
    tail = max(1, len(train) // 5)
    rows = []
    for name in names:
        r = runs[name]
        with torch.no_grad():
            ev = float(np.mean([loss_fn(r["model"](d, i, o).float(), y).item()
                                for d, i, o, y in held]))
        tables = [t.weight for t in r["model"].tables]
        state = [v for p in tables for v in r["opt"].state[p].values()
                 if isinstance(v, torch.Tensor) and v.dtype.is_floating_point]
        rows.append(dict(name=name, table_mb=nbytes(tables) / 2**20,
                         state_mb=nbytes(state) / 2**20,
                         train=float(np.mean(r["loss"][-tail:])), held=ev,
                         opt_ms=1e3 * statistics.median(r["opt_s"]), opt_s=r["opt_s"]))
    base = rows[0]
    for row in rows:
        # paired: the ratio of each iteration's step time to float32's in the same iteration
        row["ratio"] = statistics.median(a / b for a, b in zip(row["opt_s"], base["opt_s"]))
    return rows, tail


def report(rows, tail, args):
    lines = [f"tables {'+'.join(f'{n:,}' for n in args.rows)} rows x {args.dim}, batch "
             f"{args.batch} x {args.pooling} ids (Zipf {args.zipf}), Adam lr {args.lr}, "
             f"{args.iters - args.held_out} training iterations, {args.held_out} held-out "
             f"batches, seed {args.seed}, torch threads {args.torch_threads}",
             "",
             f"| tables | table MiB | table state MiB | train loss (last {tail}) | held-out "
             "loss | optimizer ms (median) | step time / float32 (paired median) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['table_mb']:.1f} | {r['state_mb']:.1f} | "
                     f"{r['train']:.4f} | {r['held']:.4f} | {r['opt_ms']:.2f} | "
                     f"{r['ratio']:.2f} |")
    return "\n".join(lines)


def step_only(args):
    """Paired optimizer-step times of the NumPy ``Adam`` on one table (``args.rows[0]`` x
    ``args.dim``), ``args.batch`` distinct random rows per step: float32 against each
    half-precision variant, interleaved, ``args.iters`` rounds; the median of the per-round
    ratios."""
    import sparseopt as so
    n, d, k = args.rows[0], args.dim, args.batch
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(-0.05, 0.05, (n, d)).astype(np.float32)
    h = (x.view(np.uint32) >> 16).astype(np.uint16)
    variants = {
        "float32": (x.copy(), {}),
        "bfloat16": (h.copy(), dict(dtype="bfloat16")),
        "bfloat16 stochastic": (h.copy(), dict(dtype="bfloat16", rounding="stochastic")),
        "float16": (x.astype(np.float16), {}),
        "float32 + bfloat16 moments (stochastic)":
            (x.copy(), dict(state_dtype="bfloat16", rounding="stochastic")),
        "bfloat16 stochastic + bfloat16 moments":
            (h.copy(), dict(dtype="bfloat16", rounding="stochastic", state_dtype="bfloat16")),
    }
    opts = {name: so.Adam([p], lr=1e-3, **kw) for name, (p, kw) in variants.items()}
    times = {name: [] for name in opts}
    names = list(opts)
    order_rng = np.random.default_rng(args.seed + 1)
    for it in range(args.iters + 3):
        rows = rng.choice(n, k, replace=False)
        g = so.RowGrad(rows, rng.standard_normal((k, d)).astype(np.float32))
        for name in [names[j] for j in order_rng.permutation(len(names))]:
            t0 = time.perf_counter()
            opts[name].step([g])
            if it >= 3:
                times[name].append(time.perf_counter() - t0)
    lines = [f"NumPy Adam step, table {n:,} x {d}, {k} distinct rows per step, "
             f"{args.iters} interleaved rounds", "",
             "| variant | step ms (median) | time / float32 (paired median) |", "|---|---:|---:|"]
    base = times["float32"]
    for name in names:
        ratio = statistics.median(a / b for a, b in zip(times[name], base))
        lines.append(f"| {name} | {1e3 * statistics.median(times[name]):.2f} | "
                     f"{ratio:.2f} |")
    return "\n".join(lines)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="1000000,300000,100000")
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--pooling", type=int, default=4)
    p.add_argument("--zipf", type=float, default=1.2)
    p.add_argument("--n-dense", type=int, default=13)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--held-out", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--torch-threads", type=int, default=torch.get_num_threads())
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--step-only", action="store_true",
                   help="time the NumPy optimizer's step alone (see step_only)")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.batch, args.iters, args.held_out = "2000,500", 64, 12, 2
    args.rows = [int(x) for x in str(args.rows).split(",")]
    args.contenders = [c.strip() for c in args.contenders.split(",")]
    return args


def main(argv=None):
    args = parse(argv)
    if args.step_only:
        print(step_only(args))
        return None
    rows, tail = run(args)
    print(report(rows, tail, args))
    return rows


if __name__ == "__main__":
    main()
