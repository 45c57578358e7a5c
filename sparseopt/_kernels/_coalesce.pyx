"""Turning a gradient into unique rows: duplicate merging and CSR densification.

A merged gradient is described by three arrays (see ``_kernels/_rows.pyx``):

``rows[j]``  the j-th unique row, in order of first appearance;
``src[j]``   ``>= 0``: row ``src[j]`` of the caller's ``values`` holds row j's gradient (it was
             seen once, so it is used in place, without a copy); ``< 0``: row ``-src[j] - 1`` of
             ``scratch`` holds the sum of its duplicates.

Merging uses a per-table-row ``slot`` array (int32, 0 everywhere between calls, unique id + 1
while a call runs) instead of a sort. Zero as the resting value lets the array come from
``np.zeros`` (calloc): only the pages of rows ever touched become resident. Then: one pass
over the indices assigns slots, a second pass sums repeated rows in position order, so the
result does not depend on threads or on any sort's stability. On one thread the two passes are
one walk (``coalesce_sum``), with the same result.
"""
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memset
from cython cimport floating
from cython.parallel cimport prange
import numpy as np

from ._rowops cimport _add_row, _any_nonfinite, index_t, so_prefetch_read_l2, so_prefetch_write_l2

# Positions looked ahead when prefetching the per-row slot of a future index.
cdef enum:
    SLOT_AHEAD = 24
    VALUES_AHEAD = 8


cdef inline Py_ssize_t _block_start(Py_ssize_t k, Py_ssize_t b, Py_ssize_t nb) noexcept nogil:
    """First position of block ``b`` when ``k`` positions are cut into ``nb`` blocks."""
    return <Py_ssize_t>((<long long>k * b) // nb)


def coalesce_index(const index_t[::1] idx, int32_t[::1] slot, int64_t[::1] rows,
                   int64_t[::1] src, int32_t[::1] count, int32_t[::1] pos2u, int64_t n_rows,
                   int32_t[::1] mstart=None):
    """First pass of duplicate merging.

    Fills ``rows[:m]``, ``src[:m]`` (position of a row's single occurrence, or ``-(dup id + 1)``),
    ``count[:m]`` (occurrences per unique row) and ``pos2u[:k]`` (unique id of each position).
    ``slot`` holds unique id + 1 while the pass runs and is restored to 0 before returning.
    ``mstart[b]`` (optional) receives the number of unique rows met before position
    ``block_start(k, b, len(mstart))``, for a parallel ``sum_duplicates`` over that many blocks.

    Returns ``(m, n_dup)``: unique rows and repeated rows. When an index lies outside
    ``[0, n_rows)``, returns ``(-1, position)`` of the first such index and changes nothing else
    that the caller keeps.
    """
    cdef Py_ssize_t k = idx.shape[0], i, j
    cdef int64_t r
    cdef int32_t s
    cdef Py_ssize_t m = 0, ndup = 0, bad = -1
    cdef Py_ssize_t nb = 0 if mstart is None else mstart.shape[0], b = 0, next_start = 0
    with nogil:
        for i in range(k):
            while b < nb and i == next_start:
                mstart[b] = <int32_t>m
                b += 1
                next_start = _block_start(k, b, nb)
            # the slot of an index a few positions ahead: a random access into a table-sized
            # array, latency-bound without it
            if i + SLOT_AHEAD < k:
                r = idx[i + SLOT_AHEAD]
                if r >= 0 and r < n_rows:
                    so_prefetch_write_l2(&slot[r], 4)
            r = idx[i]
            if r < 0 or r >= n_rows:
                bad = i
                break
            s = slot[r] - 1
            if s < 0:
                slot[r] = <int32_t>(m + 1)
                rows[m] = r
                src[m] = i
                count[m] = 1
                pos2u[i] = <int32_t>m
                m += 1
            else:
                if count[s] == 1:
                    src[s] = -(ndup + 1)
                    ndup += 1
                count[s] += 1
                pos2u[i] = s
        for j in range(m):
            if j + SLOT_AHEAD < m:
                so_prefetch_write_l2(&slot[rows[j + SLOT_AHEAD]], 4)
            slot[rows[j]] = 0
    if bad >= 0:
        return -1, bad
    return m, ndup


def coalesce_sum(const index_t[::1] idx, const floating[:, ::1] values, int32_t[::1] slot,
                 int32_t[::1] table, int64_t[::1] rows, int64_t[::1] src, int32_t[::1] count,
                 floating[:, ::1] scratch, int64_t n_rows, bint mean, bint check,
                 Py_ssize_t max_probes=0):
    """Both passes of a one-thread merge in one walk over the positions.

    The result is that of ``coalesce_index`` followed by a one-thread ``sum_duplicates``, bit
    for bit: ``rows[:m]``, ``src[:m]``, ``count[:m]`` as there, and ``scratch[dup id]`` the sum
    of the row's gradients in position order (``0 + g1 + g2 + ...``: the sum starts from zero,
    as a zeroed scratch row would, so the sign of a zero sum is the same). A row's sum is
    started when its second occurrence is met, from the first occurrence (still at
    ``values[src]``), so the batch's values are read once. ``scratch`` needs ``k // 2`` rows
    (at most that many rows can repeat). With ``mean`` the sums are divided by their counts.

    Rows are found either through ``slot`` (one int32 per table row, as in ``coalesce_index``)
    or, when ``table`` is not empty, through ``table``: an open-addressing hash of the batch's
    rows (a power of two of at least ``2 k`` int32 entries, zeroed here), which stays in cache
    where a large table's ``slot`` costs a cache miss per index. Linear probing is bounded:
    past ``max_probes`` probes in all (ids that collide) the call gives up and returns
    ``(-2, 0, False)``, keeping nothing; the caller then merges through ``slot``.

    With ``check``, the third result says whether any merged gradient may hold NaN or
    infinity: every position's values are tested as the walk passes them (a repeated row with
    a non-finite value makes a non-finite sum, so nothing is flagged that a check of the merged
    rows would not find) and the sums once complete (finite repeats that overflow).

    Returns ``(m, n_dup, bad)``; for an index outside ``[0, n_rows)``, ``(-1, position,
    False)`` of the first such index, with ``slot`` restored and nothing else kept.
    """
    cdef Py_ssize_t k = idx.shape[0], d = values.shape[1], i, j, c, first
    cdef int64_t r, s
    cdef int32_t u, e
    cdef Py_ssize_t m = 0, ndup = 0, bad_pos = -1
    cdef int bad = 0
    cdef floating* dst
    cdef const floating* g
    cdef floating cnt
    cdef size_t rb = d * sizeof(floating)
    cdef bint wide = rb >= 128
    cdef Py_ssize_t cap = table.shape[0]
    cdef bint hashed = cap > 0
    cdef uint64_t mask = <uint64_t>(cap - 1), h
    cdef int shift = 64
    cdef Py_ssize_t probes = 0
    if values.shape[0] != k or scratch.shape[1] != d or scratch.shape[0] < k // 2 or \
            rows.shape[0] < k or src.shape[0] < k or count.shape[0] < k:
        raise ValueError("coalesce_sum: arrays of mismatched sizes")
    if hashed:
        if cap < 2 * k or cap & (cap - 1):
            raise ValueError("coalesce_sum: the hash table needs a power of two >= 2 k entries")
        while (<Py_ssize_t>1 << (64 - shift)) < cap:
            shift -= 1
    elif slot.shape[0] < n_rows:
        raise ValueError("coalesce_sum: slot is shorter than the table")
    with nogil:
        if hashed:
            memset(&table[0], 0, cap * sizeof(int32_t))
        for i in range(k):
            if not hashed and i + SLOT_AHEAD < k:
                r = idx[i + SLOT_AHEAD]
                if r >= 0 and r < n_rows:
                    so_prefetch_write_l2(&slot[r], 4)
            if wide and i + VALUES_AHEAD < k:
                so_prefetch_read_l2(&values[i + VALUES_AHEAD, 0], rb)
            r = idx[i]
            if r < 0 or r >= n_rows:
                bad_pos = i
                break
            g = &values[i, 0]
            if check:
                bad |= _any_nonfinite(d, g)
            if hashed:
                # Fibonacci hashing: the top bits of r * 2**64 / golden ratio
                h = (<uint64_t>r * <uint64_t>0x9E3779B97F4A7C15ULL) >> shift if shift < 64 else 0
                u = -1
                while True:
                    e = table[h]
                    if e == 0:
                        break
                    if rows[e - 1] == r:
                        u = e - 1
                        break
                    h = (h + 1) & mask
                    probes += 1
                if probes > max_probes:
                    bad_pos = -2
                    break
                if u < 0:
                    table[h] = <int32_t>(m + 1)
            else:
                u = slot[r] - 1
                if u < 0:
                    slot[r] = <int32_t>(m + 1)
            if u < 0:
                rows[m] = r
                src[m] = i
                count[m] = 1
                m += 1
                continue
            s = src[u]
            if s >= 0:  # second occurrence: start the sum from zero and the first one
                first = <Py_ssize_t>s
                src[u] = -(ndup + 1)
                dst = &scratch[ndup, 0]
                ndup += 1
                for c in range(d):
                    dst[c] = <floating>0 + values[first, c]
            else:
                dst = &scratch[-s - 1, 0]
            _add_row(d, dst, g)
            count[u] += 1
        if not hashed:
            for j in range(m):
                if j + SLOT_AHEAD < m:
                    so_prefetch_write_l2(&slot[rows[j + SLOT_AHEAD]], 4)
                slot[rows[j]] = 0
        if bad_pos == -1:
            if mean and ndup:
                for j in range(m):
                    s = src[j]
                    if s < 0:
                        dst = &scratch[-s - 1, 0]
                        cnt = <floating>count[j]
                        for c in range(d):
                            dst[c] = dst[c] / cnt
            if check and ndup:
                bad |= _any_nonfinite(ndup * d, &scratch[0, 0])
    if bad_pos == -2:
        return -2, 0, False
    if bad_pos >= 0:
        return -1, bad_pos, False
    return m, ndup, bool(bad)


def sum_duplicates(const floating[:, ::1] values, floating[:, ::1] scratch,
                   const int32_t[::1] pos2u, const int64_t[::1] src, const int32_t[::1] count,
                   Py_ssize_t m, bint mean, bint check, const int32_t[::1] mstart=None,
                   int32_t[::1] deferred=None):
    """Second pass: ``scratch[dup id] = sum of the row's gradients in position order``.

    With ``mean`` the sums are divided by their counts. Single rows are left in ``values``.
    With ``check``, returns whether any merged gradient holds NaN or infinity: rows seen once
    are tested as the pass walks past them, repeated rows through their sums (NaN and
    infinities propagate into a sum, and finite duplicates that overflow are caught too), so
    the batch is read once instead of twice.

    Without ``mstart``, one thread. With it, parallel over ``nb = len(mstart)`` threads
    (``mstart`` from ``coalesce_index`` with the same ``nb``), with the same additions in the
    same order as one thread, so the sums are bitwise the same for any thread count. The
    positions are cut into ``nb`` blocks; in a first parallel region a thread adds the rows of
    its block whose first occurrence lies in the block (unique id >= ``mstart[b]``) and sets
    aside, in ``deferred`` (int32, ``k`` entries), the positions of rows that began in an
    earlier block. In a second region, once every block is done, the set-aside positions are
    added block by block, each row by one thread (unique id modulo ``nb``), so every row still
    receives its gradients in position order.
    """
    cdef Py_ssize_t k = values.shape[0], d = values.shape[1], i, j, c, lo, hi, nd
    cdef Py_ssize_t nb = 1 if mstart is None else mstart.shape[0], b, t, bb, lo2, i2, j2
    cdef int64_t s
    cdef int32_t u, u2, first
    cdef floating* dst
    cdef floating cnt
    cdef int bad = 0
    cdef Py_ssize_t ndup = scratch.shape[0]
    cdef size_t rb = d * sizeof(floating)
    # rows of two lines or more are prefetched a few positions ahead; one-line rows are read
    # in order and the hardware prefetcher streams them in
    cdef bint wide = rb >= 128
    if ndup == 0:
        return bool(check and k and _any_nonfinite(k * d, &values[0, 0]))
    cdef int32_t[::1] ndef, flags
    if nb > 1:  # allocated only here, so a serial (small) call allocates nothing
        ndef = np.zeros(nb, dtype=np.int32)
        flags = np.zeros(nb, dtype=np.int32)
    with nogil:
        memset(&scratch[0, 0], 0, ndup * d * sizeof(floating))
        if nb == 1:
            for i in range(k):
                if wide and i + VALUES_AHEAD < k:
                    so_prefetch_read_l2(&values[i + VALUES_AHEAD, 0], rb)
                s = src[pos2u[i]]
                if s < 0:
                    _add_row(d, &scratch[-s - 1, 0], &values[i, 0])
                elif check:
                    bad |= _any_nonfinite(d, &values[i, 0])
        else:
            # Two parallel regions, not two loops in one: Cython emits a prange inside
            # `with parallel()` as `omp for nowait`, so nothing would make the second loop
            # wait for the first.
            # The second loop also uses its own variables, so no variable is shared by both.
            for b in prange(nb, num_threads=nb, schedule="static", chunksize=1):
                lo = _block_start(k, b, nb)
                hi = _block_start(k, b + 1, nb)
                first = mstart[b]
                nd = 0
                for i in range(lo, hi):
                    if wide and i + VALUES_AHEAD < hi:
                        so_prefetch_read_l2(&values[i + VALUES_AHEAD, 0], rb)
                    u = pos2u[i]
                    s = src[u]
                    if s < 0:
                        if u >= first:
                            _add_row(d, &scratch[-s - 1, 0], &values[i, 0])
                        else:
                            deferred[lo + nd] = <int32_t>i
                            nd = nd + 1
                    elif check:
                        flags[b] |= _any_nonfinite(d, &values[i, 0])
                ndef[b] = <int32_t>nd
            # the region has joined: every block's own rows are summed
            for t in prange(nb, num_threads=nb, schedule="static", chunksize=1):
                for bb in range(1, nb):
                    lo2 = _block_start(k, bb, nb)
                    for j2 in range(lo2, lo2 + ndef[bb]):
                        i2 = deferred[j2]
                        u2 = pos2u[i2]
                        if u2 % nb == t:
                            _add_row(d, &scratch[-src[u2] - 1, 0], &values[i2, 0])
            for b in range(nb):
                bad |= flags[b]
        if mean:
            for j in range(m):
                s = src[j]
                if s < 0:
                    dst = &scratch[-s - 1, 0]
                    cnt = <floating>count[j]
                    for c in range(d):
                        dst[c] = dst[c] / cnt
        if check:
            bad |= _any_nonfinite(ndup * d, &scratch[0, 0])
    return bool(bad)


def nonfinite_rows(const floating[:, ::1] values, const floating[:, ::1] scratch,
                   const int64_t[::1] src, unsigned char[::1] flags):
    """Flag merged rows holding NaN or infinity; return how many there are.

    Checked after merging, so a sum of finite duplicates that overflows is caught as well.
    """
    cdef Py_ssize_t m = src.shape[0], d = values.shape[1], j, c, nbad = 0
    cdef int64_t s
    cdef const floating* g
    cdef bint bad
    with nogil:
        for j in range(m):
            s = src[j]
            g = &values[s, 0] if s >= 0 else &scratch[-s - 1, 0]
            bad = _any_nonfinite(d, g)
            flags[j] = bad
            nbad += bad
    return nbad


def any_nonfinite(const floating[:, ::1] x):
    """True when any value of ``x`` is NaN or infinite (one vectorised pass).

    One read of ``x`` and no temporary, where ``np.isfinite(x).all()`` writes a boolean array
    as large as ``x`` first; the pass is bandwidth-bound.
    """
    cdef int bad = 0
    if x.shape[0] == 0:
        return False
    with nogil:
        bad = _any_nonfinite(x.shape[0] * x.shape[1], &x[0, 0])
    return bool(bad)


def csr_rows_dense(const index_t[::1] indptr, const index_t[::1] indices,
                   const floating[::1] data, const int64_t[::1] rows, floating[:, ::1] out):
    """``out[j] = dense(row rows[j] of a CSR matrix)``; duplicate column entries are summed."""
    cdef Py_ssize_t m = rows.shape[0], d = out.shape[1], j
    cdef int64_t r, e
    with nogil:
        for j in range(m):
            r = rows[j]
            memset(&out[j, 0], 0, d * sizeof(floating))
            for e in range(indptr[r], indptr[r + 1]):
                out[j, indices[e]] += data[e]

