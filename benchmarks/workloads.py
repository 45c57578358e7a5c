"""The workload: tables, index batches and hyper-parameters every contender is timed on.

A case is a table (rows x width, float32, updated in place), a batch size and an index
distribution; gradient values are standard normal. ``benchmarks/README.md`` explains the choices.
"""

import numpy as np

#: the optimizer families timed, in report order
OPTIMIZERS = ("Adam", "Adagrad", "RMSprop")
#: every contender uses the default hyper-parameters except these learning rates
LEARNING_RATES = {"Adam": 1e-3, "Adagrad": 1e-2, "RMSprop": 1e-2}

DEFAULT_TABLES = ((100_000, 16), (1_000_000, 64), (10_000_000, 16))
DEFAULT_BATCHES = (4096, 65536)
DISTRIBUTIONS = ("zipf", "uniform")
ZIPF_EXPONENT = 1.1
#: indices of the per-call overhead case (Zipf, on the first table)
TINY_BATCH = 16


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
    has more unique rows). "folded" is the default because the project's speed targets define
    their Zipf cases by it; ``benchmarks/README.md`` gives the unique rows each sampler yields.
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
