"""From samples to the report: derived figures, Markdown tables, speed targets and plots.

Also describes the run itself (CPU model, git revision, ``sparseopt.show_config()``), which the
other benchmark scripts reuse.
"""

import contextlib
import io
import platform
import statistics
from pathlib import Path

from .baselines import TORCH_COUNTERPART
from .timing import BUSY_THRESHOLD, log
from .workloads import DISTRIBUTIONS, OPTIMIZERS, TINY_BATCH, ZIPF_EXPONENT

#: bytes moved per touched element: Adam reads and writes param, m and v (3 x 8) and reads the
#: gradient (4); Adagrad and RMSprop read and write param and one state array (2 x 8) plus 4.
BYTES_PER_ELEMENT = {"Adam": 28, "Adagrad": 20, "RMSprop": 20}

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

# --------------------------------------------------------------------------------------------
# the run itself


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision(so):
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


def show_config_text(so):
    """What ``so.show_config()`` prints, as a string (None where there is no such function)."""
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
# result rows


def summarise(case, c, bandwidth):
    """One result row: a contender's samples on a case, with the figures derived from them."""
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


def fill_speedups(results):
    """Set each result's ``speedup_vs_torch``: torch's median over its own (same case and
    thread count)."""
    torch_ms = {(r["table"], r["batch"], r["dist"], r["optimizer"], r["threads"]): r["median_ms"]
                for r in results if r["impl"] == "torch"}
    for r in results:
        # the reference runs single-threaded: compare it with torch on one thread
        key = (r["table"], r["batch"], r["dist"], r["optimizer"], r["threads"])
        if key in torch_ms:
            r["speedup_vs_torch"] = torch_ms[key] / r["median_ms"]


def fmt_ms(x):
    """Milliseconds with three or four significant digits, as the results table shows them."""
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
            fmt_ms(r["median_ms"]), f"{fmt_ms(r['min_ms'])}-{fmt_ms(r['max_ms'])}",
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


def sort_results(results):
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
        log("matplotlib is not installed (pip install 'sparseopt[bench]'); no plots")
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

