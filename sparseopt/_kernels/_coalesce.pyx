"""Turning a gradient into unique rows: duplicate merging and CSR densification.

A merged gradient is described by three arrays (see ``_kernels/_rows.pyx``):

``rows[j]``  the j-th unique row, in order of first appearance;
``src[j]``   ``>= 0``: row ``src[j]`` of the caller's ``values`` holds row j's gradient (it was
             seen once, so it is used in place, without a copy); ``< 0``: row ``-src[j] - 1`` of
             ``scratch`` holds the sum of its duplicates.

Merging uses a per-table-row ``slot`` array (int32, 0 everywhere between calls, unique id + 1
while a call runs) instead of a sort. Zero as the resting value lets the array come from
``np.zeros`` (calloc): only the pages of rows ever touched become resident. Then: one pass over the indices assigns slots, a second pass sums repeated rows in position
order, so the result does not depend on threads or on any sort's stability.
"""
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memset
from cython cimport floating

ctypedef fused index_t:
    int32_t
    int64_t

cdef extern from "_simd.h" nogil:
    void so_add_row_f(Py_ssize_t d, float* dst, const float* src)
    void so_add_row_d(Py_ssize_t d, double* dst, const double* src)
    int so_any_nonfinite_f(Py_ssize_t n, const float* x)
    int so_any_nonfinite_d(Py_ssize_t n, const double* x)


cdef inline int _any_nonfinite(Py_ssize_t n, const floating* x) noexcept nogil:
    if floating is float:
        return so_any_nonfinite_f(n, x)
    else:
        return so_any_nonfinite_d(n, x)


def coalesce_index(const index_t[::1] idx, int32_t[::1] slot, int64_t[::1] rows,
                   int64_t[::1] src, int32_t[::1] count, int32_t[::1] pos2u, int64_t n_rows):
    """First pass of duplicate merging.

    Fills ``rows[:m]``, ``src[:m]`` (position of a row's single occurrence, or ``-(dup id + 1)``),
    ``count[:m]`` (occurrences per unique row) and ``pos2u[:k]`` (unique id of each position).
    ``slot`` holds unique id + 1 while the pass runs and is restored to 0 before returning.

    Returns ``(m, n_dup)``: unique rows and repeated rows. When an index lies outside
    ``[0, n_rows)``, returns ``(-1, position)`` of the first such index and changes nothing else
    that the caller keeps.
    """
    cdef Py_ssize_t k = idx.shape[0], i, j
    cdef int64_t r
    cdef int32_t s
    cdef Py_ssize_t m = 0, ndup = 0, bad = -1
    with nogil:
        for i in range(k):
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
            slot[rows[j]] = 0
    if bad >= 0:
        return -1, bad
    return m, ndup


def sum_duplicates(const floating[:, ::1] values, floating[:, ::1] scratch,
                   const int32_t[::1] pos2u, const int64_t[::1] src, const int32_t[::1] count,
                   Py_ssize_t m, bint mean, bint check):
    """Second pass: ``scratch[dup id] = sum of the row's gradients in position order``.

    With ``mean`` the sums are divided by their counts. Single rows are left in ``values``.
    With ``check``, returns whether any merged gradient holds NaN or infinity: rows seen once
    are tested as the pass walks past them, repeated rows through their sums (NaN and
    infinities propagate into a sum, and finite duplicates that overflow are caught too), so
    the batch is read once instead of twice.
    """
    cdef Py_ssize_t k = values.shape[0], d = values.shape[1], i, j, c
    cdef int64_t s
    cdef floating* dst
    cdef floating cnt
    cdef int bad = 0
    if scratch.shape[0] == 0:
        return False
    with nogil:
        memset(&scratch[0, 0], 0, scratch.shape[0] * d * sizeof(floating))
        for i in range(k):
            s = src[pos2u[i]]
            if s < 0:
                if floating is float:
                    so_add_row_f(d, &scratch[-s - 1, 0], &values[i, 0])
                else:
                    so_add_row_d(d, &scratch[-s - 1, 0], &values[i, 0])
            elif check:
                bad |= _any_nonfinite(d, &values[i, 0])
        if mean:
            for j in range(m):
                s = src[j]
                if s < 0:
                    dst = &scratch[-s - 1, 0]
                    cnt = <floating>count[j]
                    for c in range(d):
                        dst[c] = dst[c] / cnt
        if check:
            bad |= _any_nonfinite(scratch.shape[0] * d, &scratch[0, 0])
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

    Measured on 65,536 x 64 float32: 0.57 ms, against 0.86 ms for ``np.isfinite(x).all()`` and
    more when fused into the index pass (the read is bandwidth-bound either way).
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
