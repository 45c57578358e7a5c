"""Side-feature kernels of matrix factorisation (``sparseopt.recommend.MatrixFactorization``
with ``user_features`` / ``item_features``): the per-batch work around the loss kernels.

* ``remap_ids``: the unique ids of a batch in order of first appearance and each sample's
  position among them (the loss kernels then run on a table of those rows only);
* ``gather_rows``: the representations of those rows, ``out[j] = F[rows[j]] @ table``;
* ``scatter_rows``: the chain rule back to the feature rows, ``F[rows].T @ G`` kept to the
  features the rows use, one merged row each, in order of first appearance.

All three are serial (a scatter-add in a fixed order), so the result does not depend on the
thread count. Preconditions (established by ``sparseopt.recommend``, never checked here): ``F``
is a checked CSR structure (``indptr`` / ``indices`` of one integer type, ``data`` of the
table's dtype, column ids below the table's rows), ids are in range, slot scratch is -1
everywhere (and left so), output buffers have room for every unique id / feature.
Sums run in the table's precision over a row's stored entries in storage order, as SciPy's
``csr @ dense`` does; a row with one entry of value 1 copies its table row exactly.
"""
from libc.stdint cimport int32_t, int64_t
from cython cimport floating

from ._rowops cimport index_t


def remap_ids(const int64_t[::1] ids, int32_t[::1] slot, int64_t[::1] uniq,
              int64_t[::1] local):
    """``uniq[:m]`` = the distinct ``ids`` in order of first appearance, ``local[s]`` =
    the position of ``ids[s]`` in it; returns ``m``. ``slot`` (int32, one per possible id)
    must be -1 everywhere and is restored to -1."""
    cdef Py_ssize_t n = ids.shape[0], s, m = 0, j
    cdef int64_t r
    cdef int32_t p
    with nogil:
        for s in range(n):
            r = ids[s]
            p = slot[r]
            if p < 0:
                p = <int32_t>m
                slot[r] = p
                uniq[m] = r
                m += 1
            local[s] = p
        for j in range(m):
            slot[uniq[j]] = -1
    return m


def gather_rows(const index_t[::1] indptr, const index_t[::1] indices,
                const floating[::1] data, const int64_t[::1] rows,
                const floating[:, ::1] table, floating[:, ::1] out):
    """``out[j] = sum_p data[p] * table[indices[p]]`` over the entries ``p`` of row
    ``rows[j]`` of ``F``, in storage order (zero for a row without entries)."""
    cdef Py_ssize_t m = rows.shape[0], d = table.shape[1], j, c
    cdef index_t p
    cdef floating v
    with nogil:
        for j in range(m):
            for c in range(d):
                out[j, c] = 0
            for p in range(indptr[rows[j]], indptr[rows[j] + 1]):
                v = data[p]
                for c in range(d):
                    out[j, c] += v * table[indices[p], c]


def scatter_rows(const index_t[::1] indptr, const index_t[::1] indices,
                 const floating[::1] data, const int64_t[::1] rows,
                 const floating[:, ::1] G, int32_t[::1] fslot, int64_t[::1] frows,
                 floating[:, ::1] out):
    """The gradient of the feature table from the gradient rows ``G`` of the rows ``rows``
    of ``F``: ``frows[:m]`` the features used, in order of first appearance, and
    ``out[q] = sum over (j, p) with indices[p] == frows[q] of data[p] * G[j]``, summed in
    the order of ``j`` then ``p``. ``fslot`` (one per feature) must be -1 everywhere and is
    restored to -1. Returns ``m``."""
    cdef Py_ssize_t n = rows.shape[0], d = G.shape[1], j, c, m = 0, q
    cdef index_t p
    cdef int64_t f
    cdef int32_t s
    cdef floating v
    with nogil:
        for j in range(n):
            for p in range(indptr[rows[j]], indptr[rows[j] + 1]):
                f = indices[p]
                v = data[p]
                s = fslot[f]
                if s < 0:
                    s = <int32_t>m
                    fslot[f] = s
                    frows[m] = f
                    m += 1
                    for c in range(d):
                        out[s, c] = v * G[j, c]
                else:
                    for c in range(d):
                        out[s, c] += v * G[j, c]
        for q in range(m):
            fslot[frows[q]] = -1
    return m
