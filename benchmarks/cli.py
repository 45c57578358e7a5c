"""Command line of the suite: ``python -m benchmarks [--quick] [--out DIR] [--threads 1,2] ...``.

Parses the options, runs :func:`.suite.run_suite` and writes the report (``results.md``,
``results.json`` and, with matplotlib, ``speedup.png`` and ``bandwidth.png``).
"""

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from .report import make_plots, render_markdown
from .suite import REFERENCE_MAX_ELEMENTS, run_suite
from .timing import WARM_UP_S, log
from .workloads import DEFAULT_BATCHES, DEFAULT_TABLES, DISTRIBUTIONS, OPTIMIZERS, TINY_BATCH

#: where the report goes without ``--out``: ``results/`` next to the suite, whatever the
#: working directory (the directory is git-ignored)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _display(path):
    """``path`` relative to the working directory when it lies below it (for the help text)."""
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


def _parse_tables(text):
    out = []
    for item in text.split(","):
        n, _, d = item.strip().lower().partition("x")
        out.append((int(n.replace("_", "")), int(d)))
    return tuple(out)


def _parse_ints(text):
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())


def build_parser(prog=None, default_out=None):
    default_out = _display(default_out or DEFAULT_OUT)
    p = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark sparseopt's lazy Adam, Adagrad and RMSprop against torch.optim "
                    "and the NumPy reference; print a Markdown table, save it and PNG plots.")
    p.add_argument("--quick", action="store_true",
                   help="small subset for a smoke test (< 30 s): the 100k x 16 table, 4,096 "
                        "indices, 3 repeats")
    p.add_argument("--repeats", type=int, default=None,
                   help="interleaved samples per contender (default 9, quick 3)")
    p.add_argument("--out", default=default_out, help=f"output directory (default {default_out})")
    p.add_argument("--threads", type=_parse_ints, default=(1, 2),
                   help="comma-separated thread counts (default 1,2)")
    p.add_argument("--tables", type=_parse_tables, default=None,
                   help="comma-separated ROWSxWIDTH (default 100000x16,1000000x64,10000000x16)")
    p.add_argument("--batches", type=_parse_ints, default=None,
                   help="comma-separated batch sizes in indices (default 4096,65536)")
    p.add_argument("--dists", default=",".join(DISTRIBUTIONS),
                   help="comma-separated index distributions: zipf, uniform")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                   help="comma-separated subset of Adam,Adagrad,RMSprop")
    p.add_argument("--reference", choices=("small", "all", "none"), default="small",
                   help="where to time the NumPy reference (default: tables of at most "
                        f"{REFERENCE_MAX_ELEMENTS:,} elements)")
    p.add_argument("--no-torch", action="store_true", help="do not time torch.optim")
    p.add_argument("--no-tiny", action="store_true",
                   help=f"skip the {TINY_BATCH}-index per-call overhead case")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.add_argument("--bw-mb", type=int, default=256,
                   help="array size for the bandwidth measurement in MB (default 256)")
    p.add_argument("--index-dtype", choices=("int64", "int32"), default="int64",
                   help="dtype of the indices given to sparseopt (torch always gets int64)")
    p.add_argument("--distinct-batches", type=int, default=1,
                   help="batches drawn per case and cycled through (default 1: the same batch "
                        "every step)")
    p.add_argument("--zipf", choices=("bounded", "folded"), default="folded",
                   help="Zipf sampler: unbounded Zipf(1.1) draws folded with %% n_rows (default; "
                        "the target workload: ~29,000 unique rows of 65,536 on 1M rows) "
                        "or ranks bounded to the table (~17,000 unique rows)")
    p.add_argument("--min-sample-ms", type=float, default=2.0,
                   help="fast steps are repeated so one timed sample lasts at least this long")
    p.add_argument("--warm-up-ms", type=float, default=WARM_UP_S * 1e3,
                   help="fast contenders step this long before timing (default %(default)g)")
    p.add_argument("--order", choices=("round-robin", "blocked"), default="round-robin",
                   help="round-robin (default): contenders alternate sample by sample, so each "
                        "step finds the rows cold that the previous contender evicted; blocked: "
                        "each contender's samples run back to back (warm caches, steady-state "
                        "training on one batch)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None, prog=None, default_out=None):
    """Command-line entry point; returns the process exit status.

    ``prog`` is the command shown in the usage and the report (default ``python -m benchmarks``);
    ``default_out`` the output directory when ``--out`` is not given (default :data:`DEFAULT_OUT`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or "python -m benchmarks"
    args = build_parser(prog, default_out).parse_args(argv)
    tables = args.tables or (DEFAULT_TABLES[:1] if args.quick else DEFAULT_TABLES)
    batches = args.batches or ((DEFAULT_BATCHES[0],) if args.quick else DEFAULT_BATCHES)
    repeats = args.repeats or (3 if args.quick else 9)
    dists = tuple(d.strip().lower() for d in args.dists.split(",") if d.strip())
    names = {n.lower(): n for n in OPTIMIZERS}
    try:
        optimizers = tuple(names[o.strip().lower()] for o in args.optimizers.split(",")
                           if o.strip())
    except KeyError as exc:
        raise SystemExit(f"unknown optimizer {exc.args[0]!r}; choose from {', '.join(OPTIMIZERS)}")
    for d in dists:
        if d not in DISTRIBUTIONS:
            raise SystemExit(f"unknown distribution {d!r}; choose from zipf, uniform")
    if repeats < 1 or args.distinct_batches < 1 or min(args.threads) < 1:
        raise SystemExit("--repeats, --distinct-batches and --threads must be positive")

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = " ".join([prog, *argv])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's sparse-invariant notice
        report = run_suite(tables=tables, batches=batches, dists=dists, threads=args.threads,
                           optimizers=optimizers, repeats=repeats, reference=args.reference,
                           use_torch=not args.no_torch, tiny=not args.no_tiny,
                           bw_megabytes=args.bw_mb, seed=args.seed,
                           index_dtype=np.dtype(args.index_dtype),
                           distinct_batches=args.distinct_batches,
                           min_sample_ms=args.min_sample_ms, zipf=args.zipf,
                           warm_up_ms=args.warm_up_ms, order=args.order)
    report["command"] = command
    report["plots"] = [] if args.no_plots else make_plots(report["results"], out_dir)
    text = render_markdown(report, command)
    (out_dir / "results.md").write_text(text + "\n")
    with open(out_dir / "results.json", "w") as f:
        json.dump(report, f, indent=1, default=str)
    print(text)
    log(f"wrote {out_dir / 'results.md'}, results.json"
         + "".join(f", {Path(p).name}" for p in report["plots"]))
    return 0
