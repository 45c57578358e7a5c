"""Benchmarks of sparseopt against torch.optim and the NumPy reference.

``python -m sparseopt.benchmarks --help`` lists the options; ``benchmarks/README.md`` in the
source tree explains the columns and the roofline. NumPy is the only hard requirement: torch
columns are skipped without torch and plots without matplotlib (``pip install sparseopt[bench]``).
"""

from sparseopt.benchmarks._suite import main, run_suite

__all__ = ["main", "run_suite"]
