"""Run the sparseopt benchmark suite: ``python benchmarks/run.py [--quick] [--out DIR] ...``.

The code lives in ``sparseopt/benchmarks/_suite.py`` (also runnable as
``python -m sparseopt.benchmarks``); this script only sets the default output directory to
``benchmarks/results/`` next to it. See ``benchmarks/README.md``.
"""

import sys
from pathlib import Path

from sparseopt.benchmarks._suite import main

if __name__ == "__main__":
    sys.exit(main(prog="python benchmarks/run.py",
                  default_out=str(Path(__file__).resolve().parent / "results")))
