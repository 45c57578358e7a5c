"""The yardstick for "% BW": the machine's in-place update bandwidth, measured in the same run.

An update reads every cache line it writes, so an in-place NumPy kernel (``a *= c``,
``a += b``) over an array larger than the caches is the memory traffic a row update cannot
beat; ``benchmarks/README.md`` explains the roofline.
"""

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


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
