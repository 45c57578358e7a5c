"""The run: every contender of every case, measured side by side in one process.

:func:`run_suite` measures the bandwidth, then for each table builds the cases
(:mod:`.workloads`), the contenders (sparseopt at each thread count, :mod:`.baselines` for
torch, the NumPy reference) and times them (:mod:`.timing`); :mod:`.report` turns the samples
into result rows.
"""

import gc
import os
import platform

import numpy as np

from .bandwidth import measure_bandwidth
from .baselines import TORCH_COUNTERPART, TorchSide, import_torch
from .report import (cpu_model, fill_speedups, git_revision, show_config_text, sort_results,
                     summarise)
from .timing import BUSY_THRESHOLD, WARM_UP_S, BackgroundLoad, interleave, log, row_grad_contender
from .workloads import (DEFAULT_BATCHES, DEFAULT_TABLES, DISTRIBUTIONS, LEARNING_RATES,
                        OPTIMIZERS, TINY_BATCH, IndexSampler, make_table, table_label)

#: the NumPy reference runs on tables of at most this many elements (with --reference small)
REFERENCE_MAX_ELEMENTS = 2_000_000
REFERENCE_MAX_REPEATS = 3


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
            log("sparseopt._reference is not importable; skipping the reference")
    torch = import_torch() if use_torch else None
    if use_torch and torch is None:
        log("torch is not installed; the torch columns are skipped")
    torch_threads = torch.get_num_threads() if torch is not None else None
    threads = tuple(threads)
    if max(threads) > (os.cpu_count() or 1):
        log(f"warning: {max(threads)} threads requested on {os.cpu_count()} CPUs")
    min_sample_s = min_sample_ms / 1e3
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load_avg is not None and load_avg > 0.5:
        log(f"warning: load average {load_avg:.2f} before the run; is the machine quiet?")

    log(f"measuring in-place bandwidth ({bw_megabytes} MB float32, threads {threads})")
    bandwidth = measure_bandwidth(threads, bw_megabytes)
    for t, bw in bandwidth.items():
        log(f"  {t} thread(s): a *= c {bw['scale_gbs']:.1f} GB/s, a += b {bw['add_gbs']:.1f} GB/s")

    rng = np.random.default_rng(seed)
    results = []
    try:
        for ti, (n_rows, width) in enumerate(tables):
            label = table_label(n_rows, width)
            log(f"table {label}: allocating {n_rows * width * 4 / 2**20:.0f} MB")
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
                    log(f"{label} {name}: {case['dist']} {case['batch']} "
                         f"({case['unique']:,} unique rows), "
                         + ", ".join(f"{c.label}@{c.threads}" for c in contenders))
                    with BackgroundLoad() as load:
                        interleave(contenders, repeats, len(pool), min_sample_s, warm_up_ms / 1e3,
                                   order=order)
                    line = []
                    for c in contenders:
                        res = summarise(case, c, bandwidth)
                        res["background_cpus"] = load.value
                        results.append(res)
                        line.append(f"{c.label}@{c.threads} {res['median_ms']:.3f} ms")
                    log("  " + ", ".join(line))
                    if load.value is not None and load.value > BUSY_THRESHOLD:
                        log(f"  warning: other processes used {load.value:.2f} CPUs meanwhile; "
                             "multi-thread figures of this case are unreliable")
                    del contenders
                del so_opts, ref_opt, torch_opt
                gc.collect()
            del torch_side, table, sampler, case_data
            gc.collect()
    finally:
        if torch is not None:
            torch.set_num_threads(torch_threads)
    fill_speedups(results)
    sort_results(results)
    meta = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None),
        "sparseopt": getattr(so, "__version__", None),
        "git": git_revision(so),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "config": show_config_text(so),
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
