"""A DLRM-style PyTorch training loop, stepped by torch.optim and by sparseopt.torch.

The model: a few ``nn.EmbeddingBag(sparse=True)`` tables (1e7, 1e6 and 1e5 rows by default)
looked up with Zipf-distributed ids, a bottom MLP over dense features, a top MLP over the
concatenation, binary cross-entropy. Labels come from a hidden model of the same shape, so the
loss can fall. One iteration = ``zero_grad``, forward, backward, optimizer step(s).

Contenders, each on its own copy of the model (same initial weights, same batches):

* ``torch SparseAdam+Adam``: ``torch.optim.SparseAdam`` on the tables, ``torch.optim.Adam``
  on the MLPs (the usual PyTorch recipe: Adam refuses sparse gradients);
* ``torch Adagrad``: ``torch.optim.Adagrad`` on everything (it takes both);
* ``sparseopt Adam`` (defaults: per-row bias correction), ``sparseopt Adam preset=torch``
  (SparseAdam's rule on the tables, Adam's on the MLPs: the torch contender's trajectory),
  ``sparseopt Adagrad``, ``sparseopt RMSprop``: one ``sparseopt.torch`` optimizer each;
* ``sparseopt Adam direct``: the default Adam with its big tables' moments indexed by row
  (``state_layout="direct"``) instead of in first-touch slots.

For each thread count (``--threads``, ``torch.set_num_threads`` and sparseopt's ``n_threads``
together) the contenders run interleaved in one process: iteration i of every contender, in a
new random order, before iteration i + 1, so a load that comes and goes on a shared machine
hits them all alike. Reported per contender: median and min-max of the iteration time and of
the optimizer time (the ``step`` calls alone) over the timed iterations, the median CPU time
of the steps, the first step's time (with the optimizer's construction: state allocation
happens in one or the other), the ratios to the torch contender of the same
rule, the mean training loss of the last iterations and the peak memory.

Peak memory is measured in a child process per contender (``tracemalloc`` does not see torch's
allocations): after the model, the batches and one forward/backward exist, the process's peak
resident set is reset (``/proc/self/clear_refs``) and its resident size noted; the optimizer is
built and ``--memory-iters`` iterations run, and the peak (``VmHWM``) minus that size is the
memory the optimizer state and the steps added. Memory that is reserved but never touched
(lazily mapped state of rows no batch reached) is not resident and is not counted: that is the
honest cost on Linux. Without ``clear_refs`` the child falls back to ``ru_maxrss`` (a peak
since the process started, which may be the set-up's, so the delta can only be over-stated;
the table says which was used).

    python benchmarks/torch_loop.py                 # the default sizes (several minutes)
    python benchmarks/torch_loop.py --quick         # a tiny run (seconds)
"""
import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
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

HERE = Path(__file__).resolve().parent


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


def make_batches(args, rng, n=None):
    """Zipf ids (exponent ``args.zipf``, the popular ids spread over the table by a fixed
    permutation), ``args.pooling`` ids per bag, Gaussian dense features. Labels: Bernoulli of
    the sigmoid of a hidden logit, the sum over tables of each bag's mean per-id effect
    (N(0, 1) per row) plus the first dense feature, so the loss can fall below log 2."""
    perms = [rng.permutation(n_rows) for n_rows in args.rows]
    effects = [rng.normal(size=n_rows).astype(np.float32) for n_rows in args.rows]
    batches = []
    n_ids = args.batch * args.pooling
    offsets = torch.arange(0, n_ids, args.pooling)
    for _ in range(args.warmup + args.iters if n is None else n):
        ids, logit = [], 0.0
        for n_rows, perm, eff in zip(args.rows, perms, effects):
            i = perm[(rng.zipf(args.zipf, size=n_ids) - 1) % n_rows]
            logit = logit + eff[i].reshape(args.batch, args.pooling).mean(1)
            ids.append(torch.from_numpy(i))
        dense = rng.normal(size=(args.batch, args.n_dense))
        logit = logit + dense[:, 0]
        y = (rng.random(args.batch) < 1 / (1 + np.exp(-logit))).astype(np.float32)
        batches.append((torch.from_numpy(dense.astype(np.float32)), ids,
                        [offsets] * len(ids), torch.from_numpy(y)))
    return batches


def _sot_adam_torch(m, lr, t):
    # SparseAdam's rule on the tables; torch.optim.Adam's (eps added to the corrected root)
    # on the MLPs, whose rows are all touched at every step: the torch contender's trajectory
    return [sot.Adam([{"params": m.sparse_parameters()},
                      {"params": m.dense_parameters(), "eps_mode": "corrected"}],
                     lr=lr["adam"], preset="torch", n_threads=t)]


CONTENDERS = {
    "torch SparseAdam+Adam": lambda m, lr, t: [
        torch.optim.SparseAdam(m.sparse_parameters(), lr=lr["adam"]),
        torch.optim.Adam(m.dense_parameters(), lr=lr["adam"])],
    "torch Adagrad": lambda m, lr, t: [torch.optim.Adagrad(m.parameters(), lr=lr["adagrad"])],
    "sparseopt Adam": lambda m, lr, t: [sot.Adam(m.parameters(), lr=lr["adam"], n_threads=t)],
    "sparseopt Adam preset=torch": _sot_adam_torch,
    # the moments of the big tables by row instead of in first-touch slots (state_layout)
    "sparseopt Adam direct": lambda m, lr, t: [
        sot.Adam(m.parameters(), lr=lr["adam"], n_threads=t, state_layout="direct")],
    "sparseopt Adagrad": lambda m, lr, t: [
        sot.Adagrad(m.parameters(), lr=lr["adagrad"], n_threads=t)],
    "sparseopt RMSprop": lambda m, lr, t: [
        sot.RMSprop(m.parameters(), lr=lr["rmsprop"], n_threads=t)],
}
# the torch contender each sparseopt one is compared with (the same update rule family;
# torch's RMSprop refuses sparse gradients, so RMSprop has none)
BASELINE = {"sparseopt Adam": "torch SparseAdam+Adam",
            "sparseopt Adam preset=torch": "torch SparseAdam+Adam",
            "sparseopt Adam direct": "torch SparseAdam+Adam",
            "sparseopt Adagrad": "torch Adagrad"}


def iteration(model, opts, batch, loss_fn):
    """One training iteration: (wall time, optimizer wall time, optimizer CPU time of the
    process, loss)."""
    dense, ids, offsets, y = batch
    t0 = time.perf_counter()
    for o in opts:
        o.zero_grad()
    loss = loss_fn(model(dense, ids, offsets), y)
    loss.backward()
    t1 = time.perf_counter()
    c1 = time.process_time()
    for o in opts:
        o.step()
    c2 = time.process_time()
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1, c2 - c1, loss.item()


def _model(args):
    torch.manual_seed(args.seed)  # the same initial weights for every contender
    return DLRM(args.rows, args.dim, args.n_dense, args.hidden)


def warm_up_code(args, threads):
    """One step of every contender on a tiny model: the first use of an optimizer class runs
    one-time imports and set-up (seconds for torch.optim.Adagrad) that no step should be
    charged with."""
    tiny = argparse.Namespace(**dict(vars(args), rows=[50] * len(args.rows), batch=8,
                                     iters=1, warmup=0))
    batch = make_batches(tiny, np.random.default_rng(0))[0]
    for name in args.contenders:
        model = _model(tiny)
        iteration(model, CONTENDERS[name](model, args.lr, threads), batch,
                  nn.BCEWithLogitsLoss())


def run_threads(args, batches, threads):
    """The interleaved loop at one thread count: per contender, the lists of times."""
    torch.set_num_threads(threads)
    warm_up_code(args, threads)
    names = args.contenders
    runs = {}
    for name in names:
        model = _model(args)
        t0 = time.perf_counter()
        opts = CONTENDERS[name](model, args.lr, threads)
        # torch.optim.Adagrad fills its state here, the others at their first step: the
        # first step is reported with the construction
        built = time.perf_counter() - t0
        runs[name] = dict(model=model, opts=opts, it=[], opt=[], cpu=[], loss=[], first=None,
                          built=built)
    loss_fn = nn.BCEWithLogitsLoss()
    order_rng = np.random.default_rng(args.seed + threads)
    for i, batch in enumerate(batches):
        # a new random order each iteration: no contender always follows the same other one
        # (whose memory traffic and idle threads it would inherit)
        for j in order_rng.permutation(len(names)):
            r = runs[names[j]]
            t_it, t_opt, c_opt, loss = iteration(r["model"], r["opts"], batch, loss_fn)
            if i == 0:
                r["first"] = (t_it, t_opt + r["built"])
            if i >= args.warmup:
                r["it"].append(t_it)
                r["opt"].append(t_opt)
                r["cpu"].append(c_opt)
                r["loss"].append(loss)
    for r in runs.values():  # free the models before the next thread count
        del r["model"], r["opts"]
    gc.collect()
    return runs


def _stats(xs):
    return 1e3 * statistics.median(xs), 1e3 * min(xs), 1e3 * max(xs)


def run(args):
    # torch.optim.Adagrad builds sparse tensors without choosing invariant checks
    warnings.filterwarnings("ignore", "Sparse invariant checks")
    batches = make_batches(args, np.random.default_rng(args.seed))
    tail = max(1, args.iters // 5)
    rows = []
    for threads in args.threads:
        runs = run_threads(args, batches, threads)
        for name in args.contenders:
            r = runs[name]
            it, opt = _stats(r["it"]), _stats(r["opt"])
            rows.append(dict(name=name, threads=threads, it_ms=it[0], it_range=it[1:],
                             opt_ms=opt[0], opt_range=opt[1:],
                             cpu_ms=1e3 * statistics.median(r["cpu"]),
                             first_it_ms=1e3 * r["first"][0],
                             first_opt_ms=1e3 * r["first"][1],
                             loss=float(np.mean(r["loss"][-tail:]))))
    by = {(row["name"], row["threads"]): row for row in rows}
    for row in rows:
        base = by.get((BASELINE.get(row["name"]), row["threads"]))
        row["it_ratio"] = base["it_ms"] / row["it_ms"] if base else None
        row["opt_ratio"] = base["opt_ms"] / row["opt_ms"] if base else None
        row["cpu_ratio"] = base["cpu_ms"] / row["cpu_ms"] if base else None
        row["first_ratio"] = row["first_opt_ms"] / base["first_opt_ms"] if base else None
        one = by.get((row["name"], min(args.threads)))
        row["vs_fewest_threads"] = row["opt_ms"] / one["opt_ms"] if one else None
    if args.memory:
        for row in rows:
            if row["threads"] == min(args.threads):
                row.update(memory_in_child(row["name"], args))
    return rows, tail


# -- peak memory, in a child process per contender -------------------------------------------

def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM")


def _reset_hwm():
    """Reset the peak resident set to the current one (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_probe(name, args):
    """In this process: the resident memory ``name``'s optimizer adds over the model and the
    forward/backward (see the module docstring). Run it in a fresh process."""
    warnings.filterwarnings("ignore", "Sparse invariant checks")
    torch.set_num_threads(min(args.threads))
    batches = make_batches(args, np.random.default_rng(args.seed), n=args.memory_iters)
    warm_up_code(argparse.Namespace(**dict(vars(args), contenders=[name])), min(args.threads))
    model = _model(args)
    loss_fn = nn.BCEWithLogitsLoss()
    dense, ids, offsets, y = batches[0]
    loss_fn(model(dense, ids, offsets), y).backward()  # autograd's buffers exist from here
    model.zero_grad()
    gc.collect()
    how = "VmHWM" if _reset_hwm() else "ru_maxrss"
    base = _rss_bytes()
    opts = CONTENDERS[name](model, args.lr, min(args.threads))  # torch's Adagrad fills here
    for batch in batches:
        iteration(model, opts, batch, loss_fn)
    peak = _hwm_bytes() if how == "VmHWM" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(peak_mb=(peak - base) / 2**20, rss_mb=(_rss_bytes() - base) / 2**20,
                memory_how=how)


def memory_in_child(name, args):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", name] + args.argv
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- output ----------------------------------------------------------------------------------

def report(rows, tail, args):
    lines = [f"DLRM-style loop: tables {'+'.join(f'{n:,}' for n in args.rows)} rows x "
             f"{args.dim} (float32), batch {args.batch} x {args.pooling} ids per table (Zipf "
             f"{args.zipf}), {args.iters} timed iterations after {args.warmup}, interleaved "
             f"per thread count; medians [min-max] in ms",
             "",
             "| contender | threads | iteration | vs torch | optimizer | vs torch "
             "| optimizer CPU | vs torch | first step | vs torch's first "
             f"| opt vs fewest threads | peak MB | loss (last {tail}) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ratio = (lambda x: f"{x:.2f}x" if x is not None else "")
    for r in rows:
        mem = f"{r['peak_mb']:.0f}" if "peak_mb" in r else ""
        lines.append(
            f"| {r['name']} | {r['threads']} | {r['it_ms']:.1f} [{r['it_range'][0]:.1f}-"
            f"{r['it_range'][1]:.1f}] | {ratio(r['it_ratio'])} | {r['opt_ms']:.2f} "
            f"[{r['opt_range'][0]:.2f}-{r['opt_range'][1]:.2f}] | {ratio(r['opt_ratio'])} | "
            f"{r['cpu_ms']:.2f} | {ratio(r['cpu_ratio'])} | {r['first_opt_ms']:.1f} | "
            f"{ratio(r['first_ratio'])} | "
            f"{ratio(r['vs_fewest_threads'])} | {mem} | {r['loss']:.4f} |")
    lines += ["", "optimizer: wall time of the step() calls; optimizer CPU: the process's CPU "
                  "time over them (all threads; at 1 thread the figure a load from other "
                  "processes barely moves); first step: optimizer construction + the first "
                  "step() (state allocation)"]
    how = {r.get("memory_how") for r in rows} - {None}
    if how:
        lines += ["", f"peak MB: resident memory added by the optimizer and the steps over "
                      f"construction and {args.memory_iters} iterations, one child process "
                      "per contender "
                      f"({', '.join(sorted(how))}), {min(args.threads)} thread(s)"]
    return "\n".join(lines)


def plot(rows, args, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = args.contenders
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    width = 0.8 / len(args.threads)
    x = np.arange(len(names))
    by = {(r["name"], r["threads"]): r for r in rows}
    for k, t in enumerate(args.threads):
        sel = [by[(n, t)] for n in names]
        for ax, key, rng in ((axes[0], "opt_ms", "opt_range"), (axes[1], "it_ms", "it_range")):
            med = np.array([r[key] for r in sel])
            lo = med - np.array([r[rng][0] for r in sel])
            hi = np.array([r[rng][1] for r in sel]) - med
            ax.bar(x + k * width, med, width, yerr=[lo, hi], capsize=2, label=f"{t} thread(s)")
        axes[2].bar(x + k * width, [r["first_opt_ms"] for r in sel], width,
                    label=f"{t} thread(s)")
    titles = ("optimizer step, ms (median, min-max)", "whole iteration, ms (median, min-max)",
              "first step + construction, ms (state allocation)")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xticks(x + width * (len(args.threads) - 1) / 2)
        ax.set_xticklabels([n.replace("sparseopt ", "so ").replace(" preset=", "\npreset=")
                            .replace("+", "+\n") for n in names], fontsize=7, rotation=30)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle(f"DLRM-style loop: tables {'+'.join(f'{n:.0e}' for n in args.rows)} rows x "
                 f"{args.dim}, batch {args.batch} x {args.pooling} (Zipf {args.zipf})",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="10000000,1000000,100000",
                   help="rows of each embedding table, comma-separated")
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--pooling", type=int, default=4, help="ids per bag")
    p.add_argument("--zipf", type=float, default=1.2, help="Zipf exponent of the ids")
    p.add_argument("--n-dense", type=int, default=13)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed iterations (the first step is reported on its own)")
    p.add_argument("--threads", default="1,2",
                   help="thread counts, comma-separated (torch's and sparseopt's together)")
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help="comma-separated subset of: " + ", ".join(CONTENDERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                   help="measure peak memory in a child process per contender (default: on, "
                        "off with --quick)")
    p.add_argument("--memory-iters", type=int, default=10)
    p.add_argument("--plot", default=str(HERE / "img" / "torch_loop.png"),
                   help="where the PNG goes ('' for none; --quick: none unless given)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    if p.parse_known_args(argv)[0].quick:  # tiny defaults; explicit options still win
        p.set_defaults(rows="2000,500", batch=64, iters=6, warmup=1, memory_iters=3, plot="")
    args = p.parse_args(argv)
    args.argv = [a for a in argv if not a.startswith("--memory-probe")]
    if args.memory_probe and args.memory_probe in args.argv:
        args.argv.remove(args.memory_probe)
    if args.memory is None:
        args.memory = not args.quick
    args.rows = [int(x) for x in str(args.rows).split(",")]
    args.threads = [int(x) for x in str(args.threads).split(",")]
    args.contenders = [c.strip() for c in args.contenders.split(",")]
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        p.error(f"unknown contenders {sorted(unknown)}")
    args.contenders = [c for c in CONTENDERS if c in args.contenders]
    # torch's defaults are 1e-3 (Adam) and 1e-2 (Adagrad, RMSprop), slow to move on this
    # scale; both sides of a comparison get the same rate
    args.lr = {"adam": 1e-2, "adagrad": 5e-2, "rmsprop": 1e-3}
    return args


def main(argv=None):
    args = parse(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args)))
        return None
    rows, tail = run(args)
    print(report(rows, tail, args))
    if args.plot:
        plot(rows, args, Path(args.plot))
        print(f"\nplot: {args.plot}")
    return rows


if __name__ == "__main__":
    main()
