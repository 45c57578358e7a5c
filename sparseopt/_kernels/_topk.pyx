"""Top-n selection of ``sparseopt.recommend`` (``recommend`` and ``similar_items``).

``topn_rows`` picks, per row of a block of scores, the ``n`` best columns, best first, leaving
out the columns a CSR structure lists for that row. The order is total (higher score first,
then lower column id), so the selection is unique; a bounded heap per row, held in the output
row itself, keeps it at O(n_cols log n) and allocation-free. Parallel over rows (``prange``,
each row written only by its own iteration), so the result does not depend on the thread count.

Preconditions (established by ``sparseopt.recommend``, never checked here):

* ``scores`` is C-contiguous ``(m, n_cols)`` and scratch (excluded entries are overwritten);
* ``(excl_indptr, excl_indices)`` is a CSR structure of ``m`` rows whose indices lie in
  ``[0, n_cols)`` (``excl_indices`` holds at least one entry, a dummy when nothing is excluded);
* ``out_ids`` and ``out_scores`` are C-contiguous ``(m, n)``.
"""
from libc.math cimport INFINITY, isnan
from libc.stdint cimport int64_t
from cython cimport floating
from cython.parallel cimport prange

from ._rowops cimport index_t


cdef inline bint _worse(double sa, int64_t ia, double sb, int64_t ib) noexcept nogil:
    """Ranking order: higher score first, then lower id."""
    return sa < sb or (sa == sb and ia > ib)


cdef inline void _sift_down(double* hs, int64_t* hi, Py_ssize_t n, Py_ssize_t pos) noexcept nogil:
    """Min-heap on ``_worse`` (the worst kept candidate at the root)."""
    cdef Py_ssize_t child
    cdef double ts
    cdef int64_t ti
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        if child + 1 < n and _worse(hs[child + 1], hi[child + 1], hs[child], hi[child]):
            child = child + 1
        if _worse(hs[child], hi[child], hs[pos], hi[pos]):
            ts = hs[pos]; hs[pos] = hs[child]; hs[child] = ts
            ti = hi[pos]; hi[pos] = hi[child]; hi[child] = ti
            pos = child
        else:
            break


def topn_rows(floating[:, ::1] scores, const index_t[::1] excl_indptr,
              const index_t[::1] excl_indices, int64_t[:, ::1] out_ids,
              double[:, ::1] out_scores, int n_threads):
    """Per row of ``scores``, the ``n = out_ids.shape[1]`` best columns, best first.

    Columns listed in row ``r`` of the CSR structure ``(excl_indptr, excl_indices)`` are
    excluded (their score is overwritten with -inf in ``scores``, which is scratch), as are NaN
    scores. Ties are broken by the lower column id. Rows with fewer than ``n`` candidates are
    padded with id -1 and score -inf. Parallel over rows; a bounded heap per row, held in the
    output row itself, so nothing is allocated.
    """
    cdef Py_ssize_t m = scores.shape[0], n_cols = scores.shape[1], n = out_ids.shape[1]
    cdef Py_ssize_t r, c, c2, p, cnt, pos, last
    cdef double sc, ts, worst
    cdef int64_t ti
    cdef double* hs
    cdef int64_t* hi
    if n == 0:
        return
    with nogil:
        for r in prange(m, num_threads=n_threads, schedule="dynamic"):
            for p in range(excl_indptr[r], excl_indptr[r + 1]):
                scores[r, excl_indices[p]] = -INFINITY
            hs = &out_scores[r, 0]
            hi = &out_ids[r, 0]
            cnt = 0
            c = 0
            # the first n candidates fill the heap
            while c < n_cols and cnt < n:
                sc = scores[r, c]
                if not (isnan(sc) or sc == -INFINITY):
                    pos = cnt
                    hs[pos] = sc
                    hi[pos] = c
                    cnt = cnt + 1
                    while pos > 0 and _worse(hs[pos], hi[pos], hs[(pos - 1) >> 1],
                                             hi[(pos - 1) >> 1]):
                        ts = hs[pos]; hs[pos] = hs[(pos - 1) >> 1]; hs[(pos - 1) >> 1] = ts
                        ti = hi[pos]; hi[pos] = hi[(pos - 1) >> 1]; hi[(pos - 1) >> 1] = ti
                        pos = (pos - 1) >> 1
                c = c + 1
            # Then a column replaces the root (the worst kept) only with a higher score: every
            # kept id is lower than the column's, so a tie keeps the root, and neither NaN nor
            # -inf compares higher than a root (the heap holds neither). One compare per column.
            if cnt == n:
                worst = hs[0]
                for c2 in range(c, n_cols):
                    sc = scores[r, c2]
                    if sc > worst:
                        hs[0] = sc
                        hi[0] = c2
                        _sift_down(hs, hi, n, 0)
                        worst = hs[0]
            # heap sort: repeatedly move the worst to the end -> best first
            last = cnt - 1
            while last > 0:
                ts = hs[0]; hs[0] = hs[last]; hs[last] = ts
                ti = hi[0]; hi[0] = hi[last]; hi[last] = ti
                _sift_down(hs, hi, last, 0)
                last = last - 1
            for p in range(cnt, n):
                hs[p] = -INFINITY
                hi[p] = -1

