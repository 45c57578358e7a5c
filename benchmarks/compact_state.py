"""Adam's compact first-touch state against the direct layout, in the DLRM-style loop.

Two copies of ``benchmarks/torch_loop.py``'s model (same initial weights, same batches) are
stepped by ``sparseopt.torch.Adam`` with ``state_layout="direct"`` (moments indexed by row)
and ``state_layout="compact"`` (moments in slots given in first-touch order), interleaved:
iteration i of both, in a random order, before iteration i + 1. Per layout, over the timed
iterations: the median wall time of ``step()``, its mean user and system CPU time and minor
page faults (``getrusage``), at one thread (so the process figures are the step's own); the
first step; the bytes of the moment arrays at the end (``memory()``: the slot buffers of a
compact table, the whole ``(n, d)`` arrays of a direct one, of which only the touched pages
are resident). The two runs must end with bitwise equal parameters (checked).

    python benchmarks/compact_state.py                       # the loop's default tables
    python benchmarks/compact_state.py --warmup 300 --iters 40
"""
import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import sparseopt.torch as sot  # noqa: E402
from benchmarks import torch_loop  # noqa: E402

LAYOUTS = ("direct", "compact")


def _step(opt):
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    opt.step()
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return (t1 - t0, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime,
            r1.ru_minflt - r0.ru_minflt)


def run(args):
    torch.set_num_threads(1)
    loop_args = torch_loop.parse(["--rows", args.rows, "--warmup", str(args.warmup),
                                  "--iters", str(args.iters), "--no-memory", "--plot", ""])
    batches = torch_loop.make_batches(loop_args, np.random.default_rng(args.seed))
    runs = {}
    for layout in LAYOUTS:
        model = torch_loop._model(loop_args)
        opt = sot.Adam(model.parameters(), lr=1e-2, n_threads=1, state_layout=layout)
        runs[layout] = dict(model=model, opt=opt, t=[], user=[], sys=[], faults=[])
    loss_fn = nn.BCEWithLogitsLoss()
    order = np.random.default_rng(args.seed + 1)
    for i, batch in enumerate(batches):
        for j in order.permutation(len(LAYOUTS)):
            r = runs[LAYOUTS[j]]
            dense, ids, offsets, y = batch
            r["opt"].zero_grad()
            loss_fn(r["model"](dense, ids, offsets), y).backward()
            t, u, s, f = _step(r["opt"])
            if i == 0:
                r["first"] = t
            elif i >= args.warmup:
                for k, v in zip(("t", "user", "sys", "faults"), (t, u, s, f)):
                    r[k].append(v)
    pa = [p.detach().numpy() for p in runs["direct"]["model"].parameters()]
    pb = [p.detach().numpy() for p in runs["compact"]["model"].parameters()]
    same = all(np.array_equal(a.view(np.uint8), b.view(np.uint8)) for a, b in zip(pa, pb))
    print(f"tables {args.rows} x 16, batch 2048 x 4 Zipf ids per table, 1 thread, "
          f"{args.iters} timed steps after {args.warmup}, interleaved; per step: median wall, "
          "mean user / system CPU, mean minor faults")
    print("| layout | step ms | user ms | sys ms | faults | first step ms | moment arrays MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    med = {}
    for layout in LAYOUTS:
        r = runs[layout]
        inner = [s.inner for s in r["opt"]._slots.values()]
        mb = sum(inner_opt.memory().state.get(k, 0) for inner_opt in inner
                 for k in ("exp_avg", "exp_avg_sq")) / 2**20
        med[layout] = statistics.median(r["t"])
        print(f"| {layout} | {1e3 * med[layout]:.2f} | {1e3 * np.mean(r['user']):.2f} | "
              f"{1e3 * np.mean(r['sys']):.2f} | {np.mean(r['faults']):.0f} | "
              f"{1e3 * r['first']:.1f} | {mb:.0f} |")
    print(f"\ncompact / direct step time: {med['compact'] / med['direct']:.2f}x; parameters "
          f"bitwise equal: {same}")
    return same


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="10000000,1000000,100000")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    main()
