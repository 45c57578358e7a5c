"""Policies shared by the optimizers and the models built on them: how many threads a kernel
call gets, how random state is made, and how the distinct ids of an array are found.

Each rule lives here once; callers import it rather than keep a local copy.
"""
from __future__ import annotations

import mmap
import numbers
from typing import Any, Optional

import numpy as np

from ._kernels import _info
from ._validation import max_n_threads

__all__ = ["PARALLEL_MIN_ELEMENTS", "MERGE_PARALLEL_SCALE", "REPEATS_SERIAL_DIVISOR",
           "PARALLEL_MIN_MODEL_WORK", "LAZY_ZEROS_MIN_BYTES", "threads_for", "lazy_zeros",
           "check_random_state", "sorted_unique"]

# Below this many updated elements (rows x width) an optimizer's row kernel runs on one thread:
# waking a team costs more than a small update, and on a loaded machine a parallel region can
# wait for a descheduled thread. The measurements: benchmarks/README.md, "Thread thresholds".
PARALLEL_MIN_ELEMENTS = 3 << 17
# Summing the duplicate rows of a batch costs less per element than an update, so the merge
# goes parallel only from MERGE_PARALLEL_SCALE times PARALLEL_MIN_ELEMENTS (batch positions x
# width), and only while at most 1 / REPEATS_SERIAL_DIVISOR of the positions repeat an earlier
# row: sums stay in position order, so a row first seen in an earlier thread's block makes its
# later repeats wait for that block (benchmarks/README.md, "Thread thresholds").
MERGE_PARALLEL_SCALE = 8
REPEATS_SERIAL_DIVISOR = 4
# The models' fused kernels (margins, loss derivatives, gradient rows, top-n) do several times
# more arithmetic per element than an optimizer row update, so they go parallel earlier.
PARALLEL_MIN_MODEL_WORK = 1 << 15


def threads_for(n_threads: Optional[int], work: int,
                min_work: int = PARALLEL_MIN_ELEMENTS) -> int:
    """Threads for one kernel call doing ``work`` elements of work.

    One thread below ``min_work``; otherwise ``n_threads`` (``None``: OpenMP's default team
    size, which follows ``OMP_NUM_THREADS`` and threadpoolctl), at most :func:`max_n_threads`
    and at most ``work``. Results never depend on the count: kernels partition rows, never
    reduce across them.
    """
    if work < min_work:
        return 1
    n = _info.max_threads() if n_threads is None else int(n_threads)
    return max(1, min(n, max_n_threads(), work))


# Zero-filled arrays at least this large that are written one random row at a time (optimizer
# state, merge scratch indexed by row id) get 4 KiB pages: see ``lazy_zeros``. LAZY_ZEROS =
# False gives them np.zeros' memory instead (transparent huge pages where the kernel allows
# them), to measure the other side of the trade.
LAZY_ZEROS_MIN_BYTES = 4 << 20
LAZY_ZEROS = True


def lazy_zeros(nbytes: int) -> np.ndarray:
    """``nbytes`` zero bytes (uint8, page-aligned when large) that become resident one 4 KiB
    page at a time, when a row on that page is first written.

    From ``LAZY_ZEROS_MIN_BYTES`` on, the memory is a private anonymous mapping advised
    ``MADV_NOHUGEPAGE``. ``np.zeros`` of a large array asks the kernel for transparent huge
    pages, so the first write to any row zero-fills the 2 MiB around it: the first step of an
    optimizer on a 1e7-row table touches a few thousand random rows and with huge pages
    makes the whole state resident (1.3 GB for Adam on 1e7 x 16 float32) and spends
    seconds zero-filling it. With 4 KiB pages the cost and the memory follow the rows
    touched. Below the threshold, or where ``mmap`` cannot do this, ``np.zeros``.

    Examples
    --------
    >>> a = lazy_zeros(8 << 20)
    >>> a.shape, a.dtype, int(a.max()), a.flags.writeable
    ((8388608,), dtype('uint8'), 0, True)
    """
    if nbytes >= LAZY_ZEROS_MIN_BYTES and LAZY_ZEROS and hasattr(mmap, "MADV_NOHUGEPAGE"):
        try:
            buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            buf.madvise(mmap.MADV_NOHUGEPAGE)
        except (OSError, ValueError):
            pass
        else:
            return np.frombuffer(buf, dtype=np.uint8)
    return np.zeros(nbytes, dtype=np.uint8)


def check_random_state(random_state: Any) -> np.random.Generator:
    """A ``numpy.random.Generator`` from None, an int seed in [0, 2**32), a Generator (used
    as is) or a legacy ``RandomState`` (a Generator seeded from it).

    Raises
    ------
    TypeError, ValueError
        Naming ``random_state``.

    Examples
    --------
    >>> int(check_random_state(0).integers(10)) == int(check_random_state(0).integers(10))
    True
    """
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31 - 1))
    if isinstance(random_state, (bool, np.bool_)) or \
            not isinstance(random_state, numbers.Integral):
        raise TypeError("random_state must be None, an int, a numpy Generator or a "
                        f"RandomState, got {random_state!r}")
    if not 0 <= int(random_state) < 2**32:
        raise ValueError(f"random_state must be an int in [0, 2**32), got {random_state!r}")
    return np.random.default_rng(int(random_state))


def sorted_unique(a: Any, runs: bool = False, return_inverse: bool = False):
    """The distinct values of the 1-D array ``a`` of integers or strings, sorted, as
    ``np.unique(a)`` gives them: by one sort and one comparison of neighbours.

    NumPy 2.3 and later find the distinct values by hashing and then sort them, which on
    arrays of many distinct ids costs several times a sort (random access per element):
    2M int64 ids drawn from 4M values took 2.1 s against 0.17 s by sorting, 500k ids from
    200k values 0.24 s against 0.03 s. ``runs``: ``a`` is a concatenation of sorted runs
    (a stable sort merges them in linear time). ``return_inverse``: also the int64 index of
    every element of ``a`` in the result (a stable argsort).

    Examples
    --------
    >>> import numpy as np
    >>> from sparseopt._utils import sorted_unique
    >>> sorted_unique(np.array([5, 1, 5, 3])).tolist()
    [1, 3, 5]
    >>> values, inverse = sorted_unique(np.array(["b", "a", "b"]), return_inverse=True)
    >>> values.tolist(), inverse.tolist()
    (['a', 'b'], [1, 0, 1])
    """
    a = np.asarray(a).reshape(-1)
    if return_inverse:
        order = np.argsort(a, kind="stable")
        s = a[order]
    else:
        s = np.sort(a, kind="stable" if runs else None)
    keep = np.empty(s.shape[0], dtype=bool)
    if s.shape[0]:
        keep[0] = True
        np.not_equal(s[1:], s[:-1], out=keep[1:])
    values = s[keep]
    if not return_inverse:
        return values
    inverse = np.empty(a.shape[0], dtype=np.int64)
    inverse[order] = np.cumsum(keep) - 1
    return values, inverse
