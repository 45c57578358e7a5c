"""The sparseopt benchmark suite: lazy row updates against torch and the NumPy reference.

Run it with ``python benchmarks/run.py`` from a source tree or ``python -m sparseopt.benchmarks``
(``--help`` lists the options). Everything is measured side by side in one process:

* sparseopt's :class:`~sparseopt.Adam`, :class:`~sparseopt.Adagrad` and
  :class:`~sparseopt.RMSprop` at each thread count of ``--threads`` (``n_threads=``);
* ``torch.optim.SparseAdam`` and ``torch.optim.Adagrad`` on an *uncoalesced*
  ``torch.sparse_coo_tensor`` gradient, which is what ``nn.Embedding(sparse=True)`` produces,
  at the same thread counts (``torch.set_num_threads``); skipped when torch is not installed;
* the plain-NumPy oracle :mod:`sparseopt._reference`, on the small table only (it is slow);
* the machine's in-place update bandwidth (``a *= c`` and ``a += b`` over a large float32
  array), the yardstick for "% of bandwidth".

Method (the README explains the reasoning):

* One batch of indices and gradient values is drawn per case and reused by every contender and
  every repeat; a timed step is a complete ``opt.step([so.RowGrad(idx, vals)])``, duplicate
  merging and validation included. For torch it is ``p.grad = g; opt.step()`` (torch coalesces
  the gradient inside ``step``).
* All contenders of a table update the same parameter array in place (a fair share: each is
  preceded by a contender that touched the same rows), each with its own optimizer state, created
  once per table and kept across its cases.
* Each contender first steps for ``--warm-up-ms`` (state is allocated on the first step; the next
  few steps are still slow), then the contenders are interleaved, A B C A B C ..., so machine
  noise hits all of them. A sample times ``number`` consecutive steps, with ``number`` chosen so a
  sample lasts at least ``--min-sample-ms``; the table reports the median and the min-max over
  the samples, per step. Garbage collection is off while timing, and the load that other
  processes put on the machine meanwhile is recorded (``/proc/stat``).
"""

import argparse
import contextlib
import gc
import io
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

#: bytes moved per touched element: Adam reads and writes param, m and v (3 x 8) and reads the
#: gradient (4); Adagrad and RMSprop read and write param and one state array (2 x 8) plus 4.
BYTES_PER_ELEMENT = {"Adam": 28, "Adagrad": 20, "RMSprop": 20}
LEARNING_RATES = {"Adam": 1e-3, "Adagrad": 1e-2, "RMSprop": 1e-2}
TORCH_COUNTERPART = {"Adam": "SparseAdam", "Adagrad": "Adagrad", "RMSprop": None}
OPTIMIZERS = ("Adam", "Adagrad", "RMSprop")

DEFAULT_TABLES = ((100_000, 16), (1_000_000, 64), (10_000_000, 16))
DEFAULT_BATCHES = (4096, 65536)
DISTRIBUTIONS = ("zipf", "uniform")
ZIPF_EXPONENT = 1.1
TINY_BATCH = 16
#: fast contenders keep stepping this long before timing starts
WARM_UP_S = 0.03
#: the NumPy reference runs on tables of at most this many elements (with --reference small)
REFERENCE_MAX_ELEMENTS = 2_000_000
REFERENCE_MAX_REPEATS = 3
#: the speed targets of the project, one thread
TARGET_SPEEDUP = {65536: 10.0, 4096: 8.0}
TARGET_MROWS = {"width64": 5.0, "10M_width16": 12.0}
TARGET_OVERHEAD_US = 20.0
TARGET_SCALING = 1.6
#: batches at least this large must scale with threads
LARGE_BATCH = 65536
NEVER_SLOWER_TOLERANCE = 0.03

COLUMNS = ("table", "batch", "dist", "unique rows", "optimizer", "impl", "threads",
           "ms/step", "min-max ms", "M rows/s", "GB/s", "% BW", "x torch")

_T0 = time.perf_counter()


def _log(msg):
    print(f"[{time.perf_counter() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# workload


def table_label(n_rows, width):
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n_rows >= div and n_rows % div == 0:
            return f"{n_rows // div}{suffix} x {width}"
    return f"{n_rows} x {width}"


def make_table(n_rows, width):
    """A float32 table whose pages are all mapped now.

    ``np.zeros`` would hand back lazily mapped zero pages, and the first step to touch a row
    would then pay a page fault inside the timed region; ``np.empty`` + ``fill`` touches every
    page once, which is also much cheaper than drawing random values for 10 M rows. The values
    do not matter for the speed of the update.
    """
    table = np.empty((n_rows, width), dtype=np.float32)
    table.fill(0.0)
    return table


class IndexSampler:
    """Draws row indices for one table: Zipf(1.1) bounded to the rows, or uniform.

    ``zipf="bounded"`` samples ranks from p(r) proportional to 1/r**1.1 over r = 1..n_rows (by
    inverse CDF) and maps rank to row through a random permutation, so hot rows are scattered
    over the table as in a real vocabulary. ``zipf="folded"`` draws unbounded
    ``numpy.random.Generator.zipf(1.1)`` values and folds them into the table with ``% n_rows``
    (about a quarter of the draws land in the far tail and behave almost uniformly, so a batch
    has more unique rows). "folded" is the default: it is how the project's speed targets define
    their Zipf cases (about 29,000 unique rows for 65,536 indices on 1M rows).
    """

    def __init__(self, n_rows, rng, zipf="folded"):
        self.n_rows = n_rows
        self.rng = rng
        self.zipf = zipf
        self._cdf = None
        self._perm = None

    def _zipf_tables(self):
        if self._perm is None:
            self._perm = self.rng.permutation(self.n_rows)
            if self.zipf == "bounded":
                cdf = np.arange(1, self.n_rows + 1, dtype=np.float64)
                np.power(cdf, -ZIPF_EXPONENT, out=cdf)
                np.cumsum(cdf, out=cdf)
                cdf /= cdf[-1]
                self._cdf = cdf
        return self._cdf, self._perm

    def draw(self, k, dist, index_dtype):
        if dist == "uniform":
            idx = self.rng.integers(0, self.n_rows, size=k)
        elif dist == "zipf":
            cdf, perm = self._zipf_tables()
            if self.zipf == "bounded":
                rank = np.searchsorted(cdf, self.rng.random(k), side="right")
                np.minimum(rank, self.n_rows - 1, out=rank)
            else:
                rank = (self.rng.zipf(ZIPF_EXPONENT, size=k) - 1) % self.n_rows
            idx = perm[rank]
        else:
            raise ValueError(f"unknown distribution {dist!r}")
        return np.ascontiguousarray(idx, dtype=index_dtype)


# --------------------------------------------------------------------------------------------
# contenders


class Contender:
    """One thing being timed: an optimizer, an implementation and a thread count."""

    def __init__(self, optimizer, impl, threads, step, setup=None, max_repeats=None,
                 fixed_number=None, label=None):
        self.optimizer = optimizer
        self.impl = impl
        self.threads = threads
        self.step = step
        self.setup = setup
        self.max_repeats = max_repeats
        self.fixed_number = fixed_number
        self.label = label or impl
        self.number = 1
        self.samples = []

    def warm_up(self, n_batches, min_sample_s, warm_s=WARM_UP_S):
        """Allocate state and fault in the batch's rows, warm up, then choose ``number``.

        The first step allocates state; the next few are still slow (caches, branch predictors,
        clock ramp-up), so fast contenders keep stepping for ``warm_s`` (at least two rounds of
        the batches). Slow ones stop after two rounds: their warm-up is a small share of a step.
        """
        if self.setup is not None:
            self.setup()
        t0 = time.perf_counter()
        for _ in range(n_batches):
            self.step()
        rounds = 1
        while rounds < 2 or (time.perf_counter() - t0 < warm_s and self.fixed_number is None):
            for _ in range(n_batches):
                self.step()
            rounds += 1
        if self.fixed_number is not None:
            self.number = self.fixed_number
            return
        n = 3
        t0 = time.perf_counter()
        for _ in range(n):
            self.step()
        per_step = max((time.perf_counter() - t0) / n, 1e-8)
        self.number = int(min(100_000, max(1, math.ceil(min_sample_s / per_step))))

    def sample(self):
        if self.setup is not None:
            self.setup()
        step = self.step
        t0 = time.perf_counter()
        for _ in range(self.number):
            step()
        self.samples.append((time.perf_counter() - t0) / self.number)


def interleave(contenders, repeats, n_batches, min_sample_s, warm_s=WARM_UP_S, pause_s=1e-3,
               order="round-robin"):
    """Warm every contender up, then time them round-robin: A B C A B C ...

    The short pause between samples lets the previous contender's OpenMP workers stop spinning
    before the next one starts, so a contender is never charged for another's idle threads.
    With ``order="blocked"`` each contender's samples run back to back instead (A A A B B B):
    a step then finds in cache what its own previous step left there (steady-state training
    on one batch), where round-robin leaves it what the previous contender left (cold rows).
    """
    for c in contenders:
        c.warm_up(n_batches, min_sample_s, warm_s)
    gc_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        if order == "blocked":
            schedule = [(r, c) for c in contenders for r in range(repeats)]
        else:
            schedule = [(r, c) for r in range(repeats) for c in contenders]
        for r, c in schedule:
            if c.max_repeats is None or r < c.max_repeats:
                time.sleep(pause_s)
                c.sample()
    finally:
        if gc_enabled:
            gc.enable()


class BackgroundLoad:
    """CPUs used by *other* processes (and the hypervisor) while a block runs, from /proc/stat.

    Busy time of the whole machine minus this process's CPU time (all its threads), divided by
    the wall time. Two-thread figures are only meaningful when this is near zero: a busy core
    stalls every statically partitioned parallel region. ``None`` where /proc/stat is missing.
    """

    def __init__(self):
        self.value = None

    @staticmethod
    def _machine_busy_s():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + fields[4]  # idle + iowait; steal counts as busy
        return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")

    def __enter__(self):
        self._t = (time.perf_counter(), time.process_time(), self._machine_busy_s())
        return self

    def __exit__(self, *exc):
        wall0, own0, busy0 = self._t
        busy1 = self._machine_busy_s()
        wall = time.perf_counter() - wall0
        if busy0 is not None and busy1 is not None and wall > 0:
            own = time.process_time() - own0
            self.value = max(0.0, (busy1 - busy0 - own) / wall)
        return False


#: background load (CPUs) above which a case is flagged as measured on a busy machine
BUSY_THRESHOLD = 0.2


def _cycle_batches(batches):
    it = itertools.cycle(batches)
    return lambda: next(it)


def row_grad_contender(opt, RowGrad, optimizer, impl, threads, batches, **kw):
    """A sparseopt (or reference) optimizer stepping through ``batches`` of (idx, vals)."""
    nxt = _cycle_batches(batches)

    def step():
        idx, vals = nxt()
        opt.step([RowGrad(idx, vals)])

    return Contender(optimizer, impl, threads, step, **kw)


class TorchSide:
    """torch.optim contenders sharing one parameter (a zero-copy view of the NumPy table)."""

    def __init__(self, torch, table):
        self.torch = torch
        self.table = table
        self.param = torch.nn.Parameter(torch.from_numpy(table))
        self._grads = {}

    def grads(self, key, batches):
        """Uncoalesced sparse COO gradients, built once per case (as nn.Embedding builds them)."""
        if key not in self._grads:
            torch = self.torch
            shape = tuple(self.table.shape)
            self._grads = {key: [
                torch.sparse_coo_tensor(torch.from_numpy(idx.astype(np.int64, copy=False))[None, :],
                                        torch.from_numpy(vals), shape, check_invariants=False)
                for idx, vals in batches]}
        return self._grads[key]

    def optimizer(self, name):
        torch = self.torch
        if name == "SparseAdam":
            return torch.optim.SparseAdam([self.param], lr=LEARNING_RATES["Adam"])
        if name == "Adagrad":
            return torch.optim.Adagrad([self.param], lr=LEARNING_RATES["Adagrad"])
        raise ValueError(name)

    def contender(self, optimizer, name, opt, threads, grads):
        torch = self.torch
        param = self.param
        nxt = _cycle_batches(grads)

        def setup():
            torch.set_num_threads(threads)

        def step():
            param.grad = nxt()
            opt.step()

        return Contender(optimizer, "torch", threads, step, setup=setup,
                         label=f"torch.optim.{name}")


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


# --------------------------------------------------------------------------------------------
# bandwidth


def measure_bandwidth(threads_list, megabytes, repeats=7):
    """In-place update bandwidth (GB/s, bytes read + written per second) at each thread count.

    Two NumPy kernels over a float32 array of ``megabytes`` (larger than the caches): ``a *= c``
    moves 8 bytes per element, ``a += b`` 12. With several threads the array is split into
    contiguous chunks processed by Python threads (NumPy releases the GIL in these loops). The
    reference for "% of bandwidth" is the faster of the two medians.
    """
    n = max(1, megabytes * 2**20 // 4)
    a = np.empty(n, dtype=np.float32)
    a.fill(1.0)
    b = np.empty(n, dtype=np.float32)
    b.fill(1e-7)
    out = {}
    pools = {t: ThreadPoolExecutor(t) for t in threads_list if t > 1}
    rates = {(t, k): [] for t in threads_list for k in ("scale", "add")}
    try:
        for _ in range(repeats):
            for t in threads_list:
                bounds = np.linspace(0, n, t + 1).astype(np.int64)
                chunks = [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
                for kernel, nbytes in (("scale", 8 * n), ("add", 12 * n)):
                    if kernel == "scale":
                        def work(s):
                            a[s] *= 1.0000001
                    else:
                        def work(s):
                            a[s] += b[s]
                    t0 = time.perf_counter()
                    if t == 1:
                        work(chunks[0])
                    else:
                        list(pools[t].map(work, chunks))
                    rates[(t, kernel)].append(nbytes / (time.perf_counter() - t0) / 1e9)
    finally:
        for pool in pools.values():
            pool.shutdown()
    for t in threads_list:
        scale = statistics.median(rates[(t, "scale")])
        add = statistics.median(rates[(t, "add")])
        out[t] = {"scale_gbs": scale, "add_gbs": add, "gbs": max(scale, add)}
    return out


# --------------------------------------------------------------------------------------------
# the run


def _result(case, c, bandwidth):
    samples = sorted(c.samples)
    med = statistics.median(samples)
    unique = case["unique"]
    bytes_moved = unique * case["width"] * BYTES_PER_ELEMENT[c.optimizer]
    gbs = bytes_moved / med / 1e9
    bw = bandwidth.get(c.threads, {}).get("gbs")
    return {
        **{k: case[k] for k in ("table", "n_rows", "width", "batch", "dist", "unique", "tiny")},
        "optimizer": c.optimizer,
        "impl": c.impl,
        "label": c.label,
        "threads": c.threads,
        "number": c.number,
        "repeats": len(samples),
        "median_ms": med * 1e3,
        "min_ms": samples[0] * 1e3,
        "max_ms": samples[-1] * 1e3,
        "samples_ms": [x * 1e3 for x in c.samples],
        "mrows_s": unique / med / 1e6,
        "gbs": gbs,
        "pct_bw": 100.0 * gbs / bw if bw else None,
        "speedup_vs_torch": None,
    }


def _fill_speedups(results):
    torch_ms = {(r["table"], r["batch"], r["dist"], r["optimizer"], r["threads"]): r["median_ms"]
                for r in results if r["impl"] == "torch"}
    for r in results:
        # the reference runs single-threaded: compare it with torch on one thread
        key = (r["table"], r["batch"], r["dist"], r["optimizer"], r["threads"])
        if key in torch_ms:
            r["speedup_vs_torch"] = torch_ms[key] / r["median_ms"]


def run_suite(tables=DEFAULT_TABLES, batches=DEFAULT_BATCHES, dists=DISTRIBUTIONS,
              threads=(1, 2), optimizers=OPTIMIZERS, repeats=9, reference="small",
              use_torch=True, tiny=True, bw_megabytes=256, seed=0, index_dtype=np.int64,
              distinct_batches=1, min_sample_ms=2.0, zipf="folded", warm_up_ms=WARM_UP_S * 1e3,
              order="round-robin"):
    """Run the benchmarks and return ``{"bandwidth": ..., "results": [...], "meta": ...}``.

    ``results`` holds one dict per (case, optimizer, implementation, thread count); the tiny
    case (``TINY_BATCH`` Zipf indices on the first table, per-call overhead) has ``tiny=True``.
    """
    import sparseopt as so

    ref = None
    if reference != "none":
        try:
            from sparseopt import _reference as ref
        except ImportError:
            _log("sparseopt._reference is not importable; skipping the reference")
    torch = _import_torch() if use_torch else None
    if use_torch and torch is None:
        _log("torch is not installed; the torch columns are skipped")
    torch_threads = torch.get_num_threads() if torch is not None else None
    threads = tuple(threads)
    if max(threads) > (os.cpu_count() or 1):
        _log(f"warning: {max(threads)} threads requested on {os.cpu_count()} CPUs")
    min_sample_s = min_sample_ms / 1e3
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load_avg is not None and load_avg > 0.5:
        _log(f"warning: load average {load_avg:.2f} before the run; is the machine quiet?")

    _log(f"measuring in-place bandwidth ({bw_megabytes} MB float32, threads {threads})")
    bandwidth = measure_bandwidth(threads, bw_megabytes)
    for t, bw in bandwidth.items():
        _log(f"  {t} thread(s): a *= c {bw['scale_gbs']:.1f} GB/s, a += b {bw['add_gbs']:.1f} GB/s")

    rng = np.random.default_rng(seed)
    results = []
    try:
        for ti, (n_rows, width) in enumerate(tables):
            label = table_label(n_rows, width)
            _log(f"table {label}: allocating {n_rows * width * 4 / 2**20:.0f} MB")
            table = make_table(n_rows, width)
            sampler = IndexSampler(n_rows, rng, zipf=zipf)
            cases = [(b, d, False) for b in batches for d in dists]
            if tiny and ti == 0:
                cases.append((TINY_BATCH, "zipf", True))
            case_data = []
            for batch, dist, is_tiny in cases:
                pool = []
                for _ in range(distinct_batches):
                    idx = sampler.draw(batch, dist, index_dtype)
                    vals = rng.standard_normal((batch, width), dtype=np.float32)
                    pool.append((idx, vals))
                unique = int(round(np.mean([np.unique(i).size for i, _ in pool])))
                case_data.append(({"table": label, "n_rows": n_rows, "width": width,
                                   "batch": batch, "dist": dist, "unique": unique,
                                   "tiny": is_tiny}, pool))
            run_reference = ref is not None and (
                reference == "all" or n_rows * width <= REFERENCE_MAX_ELEMENTS)
            torch_side = TorchSide(torch, table) if torch is not None else None
            for name in optimizers:
                # one optimizer per contender, kept across the cases of this table: its state
                # is allocated (and its pages faulted in) once, outside the timed region
                lr = LEARNING_RATES[name]
                so_opts = {t: getattr(so, name)([table], lr=lr, n_threads=t) for t in threads}
                ref_opt = getattr(ref, name)([table], lr=lr) if run_reference else None
                ref_row_grad = getattr(ref, "RowGrad", so.RowGrad)
                torch_name = TORCH_COUNTERPART[name] if torch_side is not None else None
                torch_opt = torch_side.optimizer(torch_name) if torch_name else None
                for case, pool in case_data:
                    contenders = []
                    for t in threads:
                        contenders.append(row_grad_contender(so_opts[t], so.RowGrad, name,
                                                             "sparseopt", t, pool))
                        if torch_opt is not None:
                            grads = torch_side.grads((case["batch"], case["dist"]), pool)
                            contenders.append(torch_side.contender(name, torch_name, torch_opt,
                                                                   t, grads))
                    if ref_opt is not None:
                        contenders.append(row_grad_contender(
                            ref_opt, ref_row_grad, name, "reference", 1, pool,
                            max_repeats=min(repeats, REFERENCE_MAX_REPEATS), fixed_number=1))
                    _log(f"{label} {name}: {case['dist']} {case['batch']} "
                         f"({case['unique']:,} unique rows), "
                         + ", ".join(f"{c.label}@{c.threads}" for c in contenders))
                    with BackgroundLoad() as load:
                        interleave(contenders, repeats, len(pool), min_sample_s, warm_up_ms / 1e3,
                                   order=order)
                    line = []
                    for c in contenders:
                        res = _result(case, c, bandwidth)
                        res["background_cpus"] = load.value
                        results.append(res)
                        line.append(f"{c.label}@{c.threads} {res['median_ms']:.3f} ms")
                    _log("  " + ", ".join(line))
                    if load.value is not None and load.value > BUSY_THRESHOLD:
                        _log(f"  warning: other processes used {load.value:.2f} CPUs meanwhile; "
                             "multi-thread figures of this case are unreliable")
                    del contenders
                del so_opts, ref_opt, torch_opt
                gc.collect()
            del torch_side, table, sampler, case_data
            gc.collect()
    finally:
        if torch is not None:
            torch.set_num_threads(torch_threads)
    _fill_speedups(results)
    _sort_results(results)
    meta = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None),
        "sparseopt": getattr(so, "__version__", None),
        "git": _git_revision(so),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "config": _show_config(so),
        "repeats": repeats,
        "min_sample_ms": min_sample_ms,
        "distinct_batches": distinct_batches,
        "index_dtype": np.dtype(index_dtype).name,
        "zipf": zipf,
        "order": order,
        "seed": seed,
        "load_average_before": load_avg,
    }
    return {"bandwidth": bandwidth, "results": results, "meta": meta}


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision(so):
    """``<short hash>[+dirty]`` of the source tree sparseopt was imported from, or None."""
    import subprocess

    where = Path(getattr(so, "__file__", ".")).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _show_config(so):
    show = getattr(so, "show_config", None)
    if show is None:
        return None
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            show()
    except Exception as exc:  # a report must not die on a diagnostics call
        return f"show_config() failed: {exc!r}"
    return buf.getvalue().rstrip()


# --------------------------------------------------------------------------------------------
# reporting


def _fmt_ms(x):
    if x is None:
        return "-"
    if x < 0.1:
        return f"{x:.4f}"
    if x < 10:
        return f"{x:.3f}"
    return f"{x:.1f}"


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


_TEXT_COLUMNS = {"table", "dist", "optimizer", "impl", "target", "case", "required", "met"}


def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if h in _TEXT_COLUMNS else "--:" for h in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(results):
    """The main Markdown table: one row per (case, optimizer, implementation, threads)."""
    rows = []
    for r in results:
        impl = r["label"] if r["impl"] == "torch" else r["impl"]
        rows.append([
            r["table"], f"{r['batch']:,}", r["dist"] + (" (tiny)" if r["tiny"] else ""),
            f"{r['unique']:,}", r["optimizer"], impl, r["threads"],
            _fmt_ms(r["median_ms"]), f"{_fmt_ms(r['min_ms'])}-{_fmt_ms(r['max_ms'])}",
            _fmt(r["mrows_s"], ".2f"), _fmt(r["gbs"], ".1f"), _fmt(r["pct_bw"], ".0f"),
            _fmt(r["speedup_vs_torch"], ".1f"),
        ])
    return _md_table(COLUMNS, rows)


def bandwidth_table(bandwidth):
    rows = [[t, f"{bw['scale_gbs']:.1f}", f"{bw['add_gbs']:.1f}", f"{bw['gbs']:.1f}"]
            for t, bw in sorted(bandwidth.items())]
    return _md_table(("threads", "a *= c GB/s", "a += b GB/s", "reference GB/s"), rows)


def overhead_table(results):
    rows = [[r["optimizer"], r["label"] if r["impl"] == "torch" else r["impl"], r["threads"],
             f"{r['median_ms'] * 1e3:.1f}", f"{r['min_ms'] * 1e3:.1f}-{r['max_ms'] * 1e3:.1f}"]
            for r in results if r["tiny"]]
    if not rows:
        return ""
    return _md_table(("optimizer", "impl", "threads", "us/step", "min-max us"), rows)


def background_note(results):
    """One paragraph on the load other processes put on the machine while cases were timed."""
    loads = {}
    for r in results:
        if r.get("background_cpus") is not None:
            key = (r["table"], r["batch"], r["dist"] + (" (tiny)" if r["tiny"] else ""))
            loads.setdefault(key, []).append(r["background_cpus"])
    if not loads:
        return "Background load: not measured (no /proc/stat)."
    per_block = [max(v) for v in loads.values()]
    text = (f"Background load: other processes used {statistics.mean(per_block):.2f} CPUs on "
            f"average while cases were timed (at most {max(per_block):.2f}).")
    busy = [f"{t}, {d} {b:,} ({max(v):.2f})" for (t, b, d), v in loads.items()
            if max(v) > BUSY_THRESHOLD]
    if busy:
        text += (f" Measured on a busy machine (> {BUSY_THRESHOLD:g} CPUs), so their "
                 "multi-thread figures are unreliable: " + "; ".join(busy) + ".")
    return text


def check_targets(results):
    """The speed targets, one row per check: (target, case, measured, required, ok)."""
    by = {(r["table"], r["batch"], r["dist"], r["optimizer"], r["impl"], r["threads"]): r
          for r in results}
    checks = []
    for r in results:
        if r["impl"] != "sparseopt":
            continue
        case = f"{r['table']}, {r['dist']} {r['batch']:,}"
        if r["threads"] == 1 and r["optimizer"] == "Adam" and not r["tiny"]:
            need = TARGET_SPEEDUP.get(r["batch"])
            if need is not None and r["speedup_vs_torch"] is not None:
                checks.append(("Adam x SparseAdam, 1 thread", case,
                               f"{r['speedup_vs_torch']:.1f}x", f">= {need:g}x",
                               r["speedup_vs_torch"] >= need))
            need = None
            if r["width"] == 64:
                need = TARGET_MROWS["width64"]
            elif r["width"] == 16 and r["n_rows"] >= 10_000_000:
                need = TARGET_MROWS["10M_width16"]
            if need is not None:
                checks.append(("Adam M unique rows/s, 1 thread", case, f"{r['mrows_s']:.2f}",
                               f">= {need:g}", r["mrows_s"] >= need))
        if r["tiny"] and r["threads"] == 1:
            us = r["median_ms"] * 1e3
            checks.append((f"{r['optimizer']} per-call overhead ({r['batch']} indices)", case,
                           f"{us:.1f} us", f"< {TARGET_OVERHEAD_US:g} us",
                           us < TARGET_OVERHEAD_US))
        if r["threads"] > 1 and not r["tiny"]:
            one = by.get((r["table"], r["batch"], r["dist"], r["optimizer"], "sparseopt", 1))
            if one is None:
                continue
            ratio = one["median_ms"] / r["median_ms"]
            if r["batch"] >= LARGE_BATCH:  # scaling implies "never slower"
                checks.append((f"{r['optimizer']} {r['threads']} threads scaling", case,
                               f"{ratio:.2f}x", f">= {TARGET_SCALING:g}x", ratio >= TARGET_SCALING))
            else:
                checks.append((f"{r['optimizer']} {r['threads']} threads never slower", case,
                               f"{ratio:.2f}x", f">= {1 - NEVER_SLOWER_TOLERANCE:.2f}x (noise)",
                               ratio >= 1 - NEVER_SLOWER_TOLERANCE))
    order = ("x SparseAdam", "rows/s", "overhead", "scaling", "never slower")
    checks.sort(key=lambda c: next(i for i, word in enumerate(order) if word in c[0]))
    return checks


def targets_table(checks):
    if not checks:
        return ""
    rows = [[t, c, m, req, "yes" if ok else "**no**"] for t, c, m, req, ok in checks]
    met = sum(1 for *_, ok in checks if ok)
    return (_md_table(("target", "case", "measured", "required", "met"), rows)
            + f"\n\n{met} of {len(checks)} checks met.")


def render_markdown(report, command=None):
    meta = report["meta"]
    parts = ["# sparseopt benchmark results", ""]
    if command:
        parts += [f"Command: `{command}`", ""]
    version = str(meta["sparseopt"]) + (f" (git {meta['git']})" if meta.get("git") else "")
    parts += [
        f"Machine: {meta['cpu']}, {meta['cpus']} CPUs; Python {meta['python']}, NumPy "
        f"{meta['numpy']}, torch {meta['torch'] or 'not installed'}, sparseopt {version}. "
        f"float32, {meta['index_dtype']} indices, Zipf({ZIPF_EXPONENT}) {meta['zipf']}; "
        f"{meta['repeats']} repeats ({meta.get('order', 'round-robin')}), samples of at least "
        f"{meta['min_sample_ms']:g} ms, {meta['distinct_batches']} distinct batch(es) per case.",
        "",
    ]
    if meta.get("config"):
        parts += ["```", meta["config"], "```", ""]
    parts += ["## In-place update bandwidth", "", bandwidth_table(report["bandwidth"]), "",
              "## Results", "", results_table(report["results"]), ""]
    parts += [background_note(report["results"]), ""]
    overhead = overhead_table(report["results"])
    if overhead:
        parts += [f"## Per-call overhead ({TINY_BATCH} indices)", "", overhead, ""]
    targets = targets_table(check_targets(report["results"]))
    if targets:
        parts += ["## Speed targets", "", targets, ""]
    if report.get("plots"):
        parts += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})"
                                     for p in report["plots"]] + [""]
    return "\n".join(parts)


def _case_key(r):
    return (r["n_rows"] * r["width"], r["table"], r["batch"], DISTRIBUTIONS.index(r["dist"]))


def _sort_results(results):
    """Case-major order: table, batch, distribution (tiny last), then optimizer, impl, threads."""
    tables = {}
    for r in results:
        tables.setdefault(r["table"], len(tables))
    impls = ("sparseopt", "torch", "reference")
    results.sort(key=lambda r: (tables[r["table"]], r["tiny"], r["batch"],
                                DISTRIBUTIONS.index(r["dist"]), OPTIMIZERS.index(r["optimizer"]),
                                impls.index(r["impl"]), r["threads"]))
    return results


def make_plots(results, out_dir):
    """Speed-up over torch and % of bandwidth per case, one panel per thread count (PNG).

    Returns the paths written; without matplotlib, none.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log("matplotlib is not installed (pip install 'sparseopt[bench]'); no plots")
        return []
    rows = [r for r in results if not r["tiny"]]
    cases = sorted({_case_key(r) for r in rows})
    threads = sorted({r["threads"] for r in rows})
    if not cases:
        return []
    labels = [f"{c[1]}\n{DISTRIBUTIONS[c[3]]} {c[2]:,}" for c in cases]
    index = {c: i for i, c in enumerate(cases)}
    paths = []

    def grouped(series_by_threads, ylabel, title, fname, hlines, log=False):
        if not any(series_by_threads.values()):
            return
        fig, axes = plt.subplots(len(threads), 1, squeeze=False, sharex=True,
                                 figsize=(max(7.0, 1.1 * len(cases) + 2), 3.4 * len(threads)))
        for ax, t in zip(axes[:, 0], threads):
            series = series_by_threads.get(t, {})
            width = 0.8 / max(1, len(series))
            for j, (name, values) in enumerate(series.items()):
                xs = [index[c] + (j - (len(series) - 1) / 2) * width for c in values]
                ax.bar(xs, list(values.values()), width, label=name)
            for y, text in hlines:
                ax.axhline(y, color="k", linestyle="--", linewidth=0.8)
                ax.text(len(cases) - 0.5, y, text, ha="right", va="bottom", fontsize=8)
            if log:
                ax.set_yscale("log")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{title}, {t} thread{'s' if t > 1 else ''}", fontsize=10)
            if series:
                ax.legend(fontsize=8)
        axes[-1, 0].set_xticks(range(len(cases)))
        axes[-1, 0].set_xticklabels(labels, fontsize=8)
        fig.tight_layout()
        path = Path(out_dir) / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))

    speed, pct = {}, {}
    for r in rows:
        t = r["threads"]
        if r["impl"] == "sparseopt" and r["speedup_vs_torch"] is not None:
            name = f"sparseopt {r['optimizer']} vs torch.optim.{TORCH_COUNTERPART[r['optimizer']]}"
            speed.setdefault(t, {}).setdefault(name, {})[_case_key(r)] = r["speedup_vs_torch"]
        if r["impl"] in ("sparseopt", "torch") and r["pct_bw"] is not None:
            name = r["label"] if r["impl"] == "torch" else f"sparseopt {r['optimizer']}"
            pct.setdefault(t, {}).setdefault(name, {})[_case_key(r)] = r["pct_bw"]
    values = [v for s in speed.values() for d in s.values() for v in d.values()]
    grouped(speed, "x torch (same threads)", "speed-up of a complete step over torch.optim",
            "speedup.png", [(10, "10x"), (8, "8x"), (1, "1x")],
            log=bool(values) and max(values) / max(min(values), 1e-9) > 20)
    grouped(pct, "% of in-place bandwidth", "effective bandwidth of a complete step",
            "bandwidth.png", [(100, "in-place bandwidth"), (100 / 1.3, "1/1.3")])
    return paths


# --------------------------------------------------------------------------------------------
# command line


def _parse_tables(text):
    out = []
    for item in text.split(","):
        n, _, d = item.strip().lower().partition("x")
        out.append((int(n.replace("_", "")), int(d)))
    return tuple(out)


def _parse_ints(text):
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())


def build_parser(prog=None, default_out="benchmarks/results"):
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


def main(argv=None, prog=None, default_out="benchmarks/results"):
    """Command-line entry point; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
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
    command = " ".join([prog or "python -m sparseopt.benchmarks", *argv])
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
    _log(f"wrote {out_dir / 'results.md'}, results.json"
         + "".join(f", {Path(p).name}" for p in report["plots"]))
    return 0
