"""The Ftrl step against Adagrad's on the speed suite's tables, paired in one process.

    python benchmarks/bench_ftrl_step.py [--repeats 15] [--threads 1]

For each case both optimizers step on their own copy of one float32 table with the same index
batches (Zipf "folded", from ``workloads.IndexSampler``) and gradient values; the steps
alternate (Adagrad, Ftrl, Adagrad, ...), and the report gives each one's median step time and
the median of the per-pair ratios Ftrl / Adagrad. Ftrl reads and writes three arrays per row
(weights, z, n) against Adagrad's two, and does two square roots and a division per element.
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

import sparseopt as so  # noqa: E402
from benchmarks.workloads import IndexSampler, make_table, table_label  # noqa: E402

CASES = (((100_000, 16), 4096), ((100_000, 16), 65536), ((1_000_000, 64), 4096),
         ((1_000_000, 64), 65536))


def run_case(n_rows, width, batch, repeats, n_threads, seed=0):
    rng = np.random.default_rng(seed)
    sampler = IndexSampler(n_rows, rng)
    batches = [so.RowGrad(sampler.draw(batch, "zipf", np.int64),
                          rng.standard_normal((batch, width), dtype=np.float32))
               for _ in range(4)]
    opts = {"Adagrad": so.Adagrad([make_table(n_rows, width)], lr=1e-2, n_threads=n_threads),
            "Ftrl": so.Ftrl([make_table(n_rows, width)], lr=1e-2, l1=1e-3,
                            n_threads=n_threads)}
    for o in opts.values():  # allocate state, warm the caches
        for g in batches:
            o.step([g])
    times = {k: [] for k in opts}
    for r in range(repeats):
        g = batches[r % len(batches)]
        for name, o in opts.items():
            t = time.perf_counter()
            o.step([g])
            times[name].append(time.perf_counter() - t)
    ratios = [f / a for f, a in zip(times["Ftrl"], times["Adagrad"])]
    return (statistics.median(times["Adagrad"]), statistics.median(times["Ftrl"]),
            statistics.median(ratios))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    print("| table | batch | Adagrad ms (median) | Ftrl ms (median) | Ftrl / Adagrad |")
    print("|---|---|---|---|---|")
    for (n_rows, width), batch in CASES:
        a, f, ratio = run_case(n_rows, width, batch, args.repeats, args.threads)
        print(f"| {table_label(n_rows, width)} | {batch} | {a * 1e3:.3f} | {f * 1e3:.3f} | "
              f"{ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
