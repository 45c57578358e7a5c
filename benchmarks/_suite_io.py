"""What the real-data suites (``quality.py``, ``quality_rec.py``) share: the machine line of a
report, table cells, and the three output files (Markdown, CSV, JSON)."""
from __future__ import annotations

import csv
import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from typing import Iterable, Sequence, Tuple


def versions(packages: Iterable[Tuple[str, str]]) -> str:
    """``"dist 1.2, other not installed"`` for (module, distribution) pairs; a package built in
    place without distribution metadata reports its ``__version__``."""
    out = []
    for module, dist in packages:
        if find_spec(module) is None:
            out.append(f"{dist} not installed")
            continue
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} {getattr(__import__(module), '__version__', '?')}")
    return ", ".join(out)


def machine(packages: Iterable[Tuple[str, str]]) -> str:
    """The report's machine line: processor, CPUs, Python and the contenders' versions."""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, {versions(packages)}")


def cell(value, col: str, short_cols: Sequence[str] = ("fit_s",)) -> str:
    """A table cell: blank for missing values, 3 significant digits for ``short_cols``
    (times), 4 decimals for other floats; ``alpha`` as ``%g``."""
    if value is None or value == "":
        return ""
    if col in short_cols:
        return f"{value:.3g}"
    if col == "alpha":
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def write(out_dir: str, md: str, results, columns: Sequence[str], command: str,
          machine_line: str) -> None:
    """``results.md`` (``md``), ``results.csv`` (every row of every data set, ``columns``)
    and ``results.json`` (command, machine and the results as they are) in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for res in results:
            for r in res["rows"]:
                w.writerow(r)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"command": command, "machine": machine_line, "results": results}, f,
                  indent=1, default=str)
