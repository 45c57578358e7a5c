"""The timing harness: contenders, their warm-up, interleaved samples and the background load.

A :class:`Contender` is one thing being timed (an optimizer, an implementation, a thread
count). :func:`interleave` warms every contender of a case up and then takes its samples in
round-robin order (A B C A B C ...) or blocked order (A A A B B B); a sample times ``number``
consecutive steps and is stored per step. :class:`BackgroundLoad` records the CPUs other
processes used meanwhile. The statistics (median, min-max) are taken in :mod:`.report`.
"""

import gc
import itertools
import math
import os
import sys
import time

#: fast contenders keep stepping this long before timing starts
WARM_UP_S = 0.03
#: background load (CPUs) above which a case is flagged as measured on a busy machine
BUSY_THRESHOLD = 0.2

_T0 = time.perf_counter()


def log(msg):
    """A progress line on stderr, stamped with the seconds since the suite was imported."""
    print(f"[{time.perf_counter() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


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


def cycle_batches(batches):
    """A function returning the next of ``batches`` at each call, round and round."""
    it = itertools.cycle(batches)
    return lambda: next(it)


def row_grad_contender(opt, RowGrad, optimizer, impl, threads, batches, **kw):
    """A sparseopt (or reference) optimizer stepping through ``batches`` of (idx, vals)."""
    nxt = cycle_batches(batches)

    def step():
        idx, vals = nxt()
        opt.step([RowGrad(idx, vals)])

    return Contender(optimizer, impl, threads, step, **kw)

