"""Fused mini-batch kernels of ``sparseopt.recommend``.

Each training kernel makes one pass over a mini-batch: prediction, loss derivative and the
gradient of every embedding row the batch touches; the caller hands the rows to a sparseopt
optimizer as ``RowGrad``, which applies its lazy row update.

* ``mf_*_batch`` (matrix factorisation, two tables, a few thousand rows per batch) merge
  duplicates themselves: a serial scatter-add in sample order into one row per unique table row
  (a per-table ``slot`` scratch, as ``_coalesce.pyx`` does), so the per-sample rows are never
  written out and read back; the optimizer then sees unique rows. The sums are those the
  optimizer's own merge would form (same order, same precision).
* ``fm_grads`` (factorisation machines) writes one row per stored entry of each sample, in
  parallel over samples (``prange``, each sample writing only its own rows, so the result does
  not depend on the thread count), and leaves the duplicates to the optimizer's merge.

Preconditions (established by ``sparseopt.recommend``, never checked here):

* tables are C-contiguous, of one floating dtype, with the layout documented per kernel;
* every index is in range; every output buffer has the documented shape;
* scalars (``scale``, ``alpha``, ``mu``) are float64 computed in Python.

Dot products over the factor dimension are accumulated in float64 (eight fixed partial sums, so
they vectorise and give the same result on every ISA); gradient rows are formed in the table's
precision, the precision the optimizer keeps them in.

L2 (``alpha``) is the penalty ``alpha/2 * ||row||^2`` attached to every *occurrence* of a row
in the data (per-rating regularisation, as in Funk-SVD, Koren et al. 2009 and libFM's SGD). The
penalty of a row therefore lives in the terms of the samples that touch it, and the gradient a
kernel writes is the exact gradient of the mini-batch objective
``scale * sum_s w_s * (loss_s + alpha/2 * sum_{rows r of s} ||theta_r||^2)``:
rows a batch does not touch have zero gradient, so no deferred decay is ever owed.
"""
from libc.math cimport exp, log1p, INFINITY, isnan
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memcpy
from cython cimport floating
from cython.parallel cimport prange

ctypedef fused index_t:
    int32_t
    int64_t

cdef extern from *:
    """
    #include <stddef.h>
    /* Dot products with eight independent float64 accumulators, combined in a fixed order:
       vectorisable without -ffast-math (no reassociation is needed) and the same result on
       every ISA. */
    #define SO_REC_DOT(NAME, T)                                                           \
    static inline double NAME(ptrdiff_t d, const T *a, const T *b) {                      \
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, tail = 0.0;                            \
        ptrdiff_t f = 0;                                                                  \
        for (; f + 8 <= d; f += 8)                                                        \
            for (int j = 0; j < 8; j++) acc[j] += (double)a[f + j] * (double)b[f + j];    \
        for (; f < d; f++) tail += (double)a[f] * (double)b[f];                           \
        return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) \
               + tail;                                                                    \
    }                                                                                     \
    /* sum_f a[f] * (b[f] - c[f]) */                                                      \
    static inline double NAME##_diff(ptrdiff_t d, const T *a, const T *b, const T *c) {   \
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, tail = 0.0;                            \
        ptrdiff_t f = 0;                                                                  \
        for (; f + 8 <= d; f += 8)                                                        \
            for (int j = 0; j < 8; j++)                                                   \
                acc[j] += (double)a[f + j] * ((double)b[f + j] - (double)c[f + j]);       \
        for (; f < d; f++) tail += (double)a[f] * ((double)b[f] - (double)c[f]);          \
        return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) \
               + tail;                                                                    \
    }
    SO_REC_DOT(so_rec_dot_f, float)
    SO_REC_DOT(so_rec_dot_d, double)

    /* out[f] = x * a[f] + y * b[f] in the table's precision (vectorises). */
    #define SO_REC_AXPBY(NAME, T)                                                         \
    static inline void NAME(ptrdiff_t d, T *out, T x, const T *a, T y, const T *b) {      \
        for (ptrdiff_t f = 0; f < d; f++) out[f] = x * a[f] + y * b[f];                  \
    }
    SO_REC_AXPBY(so_rec_axpby_f, float)
    SO_REC_AXPBY(so_rec_axpby_d, double)

    /* out[f] = x * (a[f] - b[f]) + y * c[f] */
    #define SO_REC_AXMBPY(NAME, T)                                                        \
    static inline void NAME(ptrdiff_t d, T *out, T x, const T *a, const T *b, T y,        \
                            const T *c) {                                                 \
        for (ptrdiff_t f = 0; f < d; f++) out[f] = x * (a[f] - b[f]) + y * c[f];         \
    }
    SO_REC_AXMBPY(so_rec_axmbpy_f, float)
    SO_REC_AXMBPY(so_rec_axmbpy_d, double)

    /* Accumulating forms, for rows already in the batch: out[f] += (the same expression),
       the sum done in the table's precision, in sample order. */
    #define SO_REC_ACC(NAME, T)                                                           \
    static inline void NAME##_axpby_acc(ptrdiff_t d, T *out, T x, const T *a, T y,        \
                                        const T *b) {                                     \
        for (ptrdiff_t f = 0; f < d; f++) out[f] += x * a[f] + y * b[f];                 \
    }                                                                                     \
    static inline void NAME##_axmbpy_acc(ptrdiff_t d, T *out, T x, const T *a,            \
                                         const T *b, T y, const T *c) {                   \
        for (ptrdiff_t f = 0; f < d; f++) out[f] += x * (a[f] - b[f]) + y * c[f];        \
    }
    SO_REC_ACC(so_rec_f, float)
    SO_REC_ACC(so_rec_d, double)

    /* The rating stored in the second word of a packed record. */
    #include <string.h>
    #include <stdint.h>
    static inline double so_rec_bits_to_double(int64_t bits) {
        double v;
        memcpy(&v, &bits, sizeof v);
        return v;
    }

    /* Rows are random in the tables: fetch them a few samples ahead. */
    static inline void so_rec_prefetch(const void *p, size_t nbytes) {
        const char *c = (const char *)p;
        for (size_t o = 0; o < nbytes; o += 64) __builtin_prefetch(c + o, 0, 3);
    }
    """
    double so_rec_dot_f(Py_ssize_t d, const float* a, const float* b) noexcept nogil
    double so_rec_dot_d(Py_ssize_t d, const double* a, const double* b) noexcept nogil
    double so_rec_dot_f_diff(Py_ssize_t d, const float* a, const float* b,
                             const float* c) noexcept nogil
    double so_rec_dot_d_diff(Py_ssize_t d, const double* a, const double* b,
                             const double* c) noexcept nogil
    void so_rec_axpby_f(Py_ssize_t d, float* out, float x, const float* a, float y,
                        const float* b) noexcept nogil
    void so_rec_axpby_d(Py_ssize_t d, double* out, double x, const double* a, double y,
                        const double* b) noexcept nogil
    void so_rec_axmbpy_f(Py_ssize_t d, float* out, float x, const float* a, const float* b,
                         float y, const float* c) noexcept nogil
    void so_rec_axmbpy_d(Py_ssize_t d, double* out, double x, const double* a,
                         const double* b, double y, const double* c) noexcept nogil
    void so_rec_f_axpby_acc(Py_ssize_t d, float* out, float x, const float* a, float y,
                            const float* b) noexcept nogil
    void so_rec_d_axpby_acc(Py_ssize_t d, double* out, double x, const double* a, double y,
                            const double* b) noexcept nogil
    void so_rec_f_axmbpy_acc(Py_ssize_t d, float* out, float x, const float* a,
                             const float* b, float y, const float* c) noexcept nogil
    void so_rec_d_axmbpy_acc(Py_ssize_t d, double* out, double x, const double* a,
                             const double* b, double y, const double* c) noexcept nogil
    void so_rec_prefetch(const void* p, size_t nbytes) noexcept nogil
    double so_rec_bits_to_double(int64_t bits) noexcept nogil

# Samples ahead whose table rows are prefetched.
cdef enum:
    PREFETCH_AHEAD = 8


cdef inline double _dot(Py_ssize_t d, const floating* a, const floating* b) noexcept nogil:
    if floating is float:
        return so_rec_dot_f(d, a, b)
    else:
        return so_rec_dot_d(d, a, b)


cdef inline double _dot_diff(Py_ssize_t d, const floating* a, const floating* b,
                             const floating* c) noexcept nogil:
    if floating is float:
        return so_rec_dot_f_diff(d, a, b, c)
    else:
        return so_rec_dot_d_diff(d, a, b, c)


cdef inline void _axpby(Py_ssize_t d, floating* out, double x, const floating* a, double y,
                        const floating* b) noexcept nogil:
    if floating is float:
        so_rec_axpby_f(d, out, <float>x, a, <float>y, b)
    else:
        so_rec_axpby_d(d, out, x, a, y, b)


cdef inline void _axmbpy(Py_ssize_t d, floating* out, double x, const floating* a,
                         const floating* b, double y, const floating* c) noexcept nogil:
    if floating is float:
        so_rec_axmbpy_f(d, out, <float>x, a, b, <float>y, c)
    else:
        so_rec_axmbpy_d(d, out, x, a, b, y, c)

# loss codes shared with sparseopt/recommend/_fm.py
cdef enum:
    LOSS_SQUARED = 0
    LOSS_LOGISTIC = 1
    LOSS_SOFTMAX = 2

LOSSES = dict(squared=LOSS_SQUARED, logistic=LOSS_LOGISTIC, softmax=LOSS_SOFTMAX)


cdef inline void _axpby_into(bint fresh, Py_ssize_t d, floating* out, double x,
                             const floating* a, double y, const floating* b) noexcept nogil:
    """``out = x*a + y*b`` for a row new in the batch, else ``out += x*a + y*b``."""
    if fresh:
        _axpby(d, out, x, a, y, b)
    elif floating is float:
        so_rec_f_axpby_acc(d, out, <float>x, a, <float>y, b)
    else:
        so_rec_d_axpby_acc(d, out, x, a, y, b)


cdef inline void _axmbpy_into(bint fresh, Py_ssize_t d, floating* out, double x,
                              const floating* a, const floating* b, double y,
                              const floating* c) noexcept nogil:
    if fresh:
        _axmbpy(d, out, x, a, b, y, c)
    elif floating is float:
        so_rec_f_axmbpy_acc(d, out, <float>x, a, b, <float>y, c)
    else:
        so_rec_d_axmbpy_acc(d, out, x, a, b, y, c)


cdef inline void _set_or_add(bint fresh, floating* out, double v) noexcept nogil:
    if fresh:
        out[0] = <floating>v
    else:
        out[0] += <floating>v


cdef inline Py_ssize_t _claim(int32_t* slot, int64_t* rows, Py_ssize_t* m, int64_t r,
                              bint* fresh) noexcept nogil:
    """Position of row ``r`` among the batch's unique rows; a new row gets the next one and
    sets ``fresh`` (its gradient row must be written, not added to)."""
    cdef int32_t p = slot[r]
    fresh[0] = p < 0
    if p >= 0:
        return p
    p = <int32_t>m[0]
    slot[r] = p
    rows[p] = r
    m[0] += 1
    return p


cdef inline double _softplus(double z) noexcept nogil:
    """log(1 + exp(z)) without overflow."""
    if z > 0:
        return z + log1p(exp(-z))
    return log1p(exp(z))


cdef inline double _sigmoid(double z) noexcept nogil:
    cdef double e
    if z >= 0:
        return 1.0 / (1.0 + exp(-z))
    e = exp(z)
    return e / (1.0 + e)


# --------------------------------------------------------------------------- matrix factorisation


def mf_squared_batch(const floating[:, ::1] U, const floating[:, ::1] V,
                     const int64_t[::1] order, const int64_t[:, ::1] records, Py_ssize_t k,
                     bint user_bias, bint item_bias, double mu, double scale, double alpha,
                     int32_t[::1] uslot, int32_t[::1] islot, int64_t[::1] urows,
                     int64_t[::1] irows, floating[:, ::1] gu, floating[:, ::1] gi,
                     double[::1] err):
    """Biased MF, squared loss: the merged gradient rows of one mini-batch.

    The batch is the samples ``order[0..B)`` of the training ratings, each a 16-byte record
    ``records[p] = (user << 32 | item, float64 bits of the rating)`` (see ``pack_ratings``):
    one cache line per sample, gathered here, so a shuffled epoch costs one random read per
    sample and no separate gather pass. ``U`` is ``(n_users, k + user_bias)``: factors, then
    the user bias when ``user_bias``; ``V`` is ``(n_items, k + item_bias)`` likewise. For each
    sample ``(u, i, r)``::

        pred = mu + <U[u,:k], V[i,:k]> + U[u,k] + V[i,k]      (biases when present)
        e = pred - r ;  d = scale*e ;  a = scale*alpha
        grad U[u] += d*[V[i,:k], 1] + a*U[u] ;  grad V[i] += d*[U[u,:k], 1] + a*V[i]

    the gradient of ``scale*(e**2/2 + alpha/2*(||U[u]||^2 + ||V[i]||^2))``. Unique users are
    written to ``urows[:mu]`` in order of first appearance with their summed gradient in
    ``gu[:mu]`` (items likewise), duplicates summed in sample order in the table's precision
    -- exactly what the optimizer's own merge of one row per sample would compute. ``uslot``
    / ``islot`` (int32, one per table row) must be -1 everywhere and are restored to -1.
    ``err[s] = e``. Serial: the merge is a scatter-add in sample order. Returns ``(mu, mi)``.
    """
    cdef Py_ssize_t B = order.shape[0], s, sa, nu = 0, ni = 0, pu_pos, pi_pos, j
    cdef int64_t p, u, i, key, low = (<int64_t>1 << 32) - 1
    cdef const floating* pu
    cdef const floating* qi
    cdef bint fu, fi
    cdef double e, d, a = scale * alpha
    cdef size_t ub = U.shape[1] * sizeof(floating), vb = V.shape[1] * sizeof(floating)
    with nogil:
        for s in range(B):
            sa = s + 2 * PREFETCH_AHEAD
            if sa < B:
                so_rec_prefetch(&records[order[sa], 0], 16)
            sa = s + PREFETCH_AHEAD
            if sa < B:
                key = records[order[sa], 0]
                so_rec_prefetch(&U[key >> 32, 0], ub)
                so_rec_prefetch(&V[key & low, 0], vb)
            p = order[s]
            key = records[p, 0]
            u = key >> 32
            i = key & low
            pu = &U[u, 0]
            qi = &V[i, 0]
            e = mu + _dot(k, pu, qi) - so_rec_bits_to_double(records[p, 1])
            if user_bias:
                e = e + pu[k]
            if item_bias:
                e = e + qi[k]
            err[s] = e
            d = scale * e
            pu_pos = _claim(&uslot[0], &urows[0], &nu, u, &fu)
            pi_pos = _claim(&islot[0], &irows[0], &ni, i, &fi)
            _axpby_into(fu, k, &gu[pu_pos, 0], d, qi, a, pu)
            _axpby_into(fi, k, &gi[pi_pos, 0], d, pu, a, qi)
            if user_bias:
                _set_or_add(fu, &gu[pu_pos, k], d + a * pu[k])
            if item_bias:
                _set_or_add(fi, &gi[pi_pos, k], d + a * qi[k])
        for j in range(nu):
            uslot[urows[j]] = -1
        for j in range(ni):
            islot[irows[j]] = -1
    return nu, ni


def pack_ratings(const int64_t[::1] users, const int64_t[::1] items,
                 const double[::1] ratings, int64_t[:, ::1] records):
    """``records[p] = (users[p] << 32 | items[p], bits of ratings[p])`` for
    ``mf_squared_batch``; ids must lie in [0, 2**31)."""
    cdef Py_ssize_t n = users.shape[0], p
    cdef double r
    with nogil:
        for p in range(n):
            records[p, 0] = (users[p] << 32) | items[p]
            r = ratings[p]
            memcpy(&records[p, 1], &r, sizeof(double))


def mf_bpr_batch(const floating[:, ::1] U, const floating[:, ::1] V,
                 const index_t[::1] users, const index_t[::1] pos, const index_t[::1] neg,
                 Py_ssize_t k, bint item_bias, double scale, double alpha,
                 int32_t[::1] uslot, int32_t[::1] islot, int64_t[::1] urows,
                 int64_t[::1] irows, floating[:, ::1] gu, floating[:, ::1] gi,
                 double[::1] loss):
    """BPR (Rendle et al. 2009): the merged gradient rows of ``-log sigmoid(x_uij)``.

    ``x = <U[u,:k], V[i,:k] - V[j,:k]> + V[i,k] - V[j,k]`` (item biases when present; a user
    bias cancels in BPR, so ``U`` is ``(n_users, k)``), for the triples
    ``(users[s], pos[s], neg[s])``. Per sample, with ``d = -scale*sigmoid(-x)`` and
    ``a = scale*alpha``::

        grad U[u] += d*(V[i,:k] - V[j,:k]) + a*U[u]
        grad V[i] += d*[U[u,:k], 1] + a*V[i] ;  grad V[j] += -d*[U[u,:k], 1] + a*V[j]

    Unique rows and summed gradients as in ``mf_squared_batch`` (the positive item of a
    sample is claimed before its negative); ``irows`` / ``gi`` need room for ``2B`` rows.
    ``loss[s] = softplus(-x)``. Returns ``(mu, mi)``.
    """
    cdef Py_ssize_t B = users.shape[0], s, sa, nu = 0, ni = 0, pu_pos, pi_pos, pj_pos, j
    cdef int64_t u, i, jn
    cdef const floating* pu
    cdef const floating* qi
    cdef const floating* qj
    cdef bint fu, fi, fj
    cdef double x, d, a = scale * alpha
    cdef size_t ub = U.shape[1] * sizeof(floating), vb = V.shape[1] * sizeof(floating)
    with nogil:
        for s in range(B):
            sa = s + PREFETCH_AHEAD
            if sa < B:
                so_rec_prefetch(&U[users[sa], 0], ub)
                so_rec_prefetch(&V[pos[sa], 0], vb)
                so_rec_prefetch(&V[neg[sa], 0], vb)
            u = users[s]
            i = pos[s]
            jn = neg[s]
            pu = &U[u, 0]
            qi = &V[i, 0]
            qj = &V[jn, 0]
            x = _dot_diff(k, pu, qi, qj)
            if item_bias:
                x = x + (<double>qi[k] - <double>qj[k])
            loss[s] = _softplus(-x)
            d = -scale * _sigmoid(-x)          # d loss / d x, times scale
            pu_pos = _claim(&uslot[0], &urows[0], &nu, u, &fu)
            pi_pos = _claim(&islot[0], &irows[0], &ni, i, &fi)
            _axmbpy_into(fu, k, &gu[pu_pos, 0], d, qi, qj, a, pu)
            _axpby_into(fi, k, &gi[pi_pos, 0], d, pu, a, qi)
            if item_bias:
                _set_or_add(fi, &gi[pi_pos, k], d + a * qi[k])
            # claimed after the positive row is written: when j == i the two add up
            pj_pos = _claim(&islot[0], &irows[0], &ni, jn, &fj)
            _axpby_into(fj, k, &gi[pj_pos, 0], -d, pu, a, qj)
            if item_bias:
                _set_or_add(fj, &gi[pj_pos, k], -d + a * qj[k])
        for j in range(nu):
            uslot[urows[j]] = -1
        for j in range(ni):
            islot[irows[j]] = -1
    return nu, ni


def mf_predict(const floating[:, ::1] U, const floating[:, ::1] V, const index_t[::1] users,
               const index_t[::1] items, Py_ssize_t k, bint user_bias, bint item_bias,
               double mu, floating[::1] out, int n_threads):
    """``out[s] = mu + <U[u,:k], V[i,:k]> (+ U[u,k]) (+ V[i,k])`` (dot in float64)."""
    cdef Py_ssize_t B = users.shape[0], s
    cdef const floating* pu
    cdef const floating* qi
    cdef double acc
    with nogil:
        for s in prange(B, num_threads=n_threads, schedule="static"):
            pu = &U[users[s], 0]
            qi = &V[items[s], 0]
            acc = mu + _dot(k, pu, qi)
            if user_bias:
                acc = acc + pu[k]
            if item_bias:
                acc = acc + qi[k]
            out[s] = <floating>acc


def csr_contains(const index_t[::1] indptr, const index_t[::1] indices,
                 const index_t[::1] rows, const index_t[::1] cols, unsigned char[::1] out):
    """``out[s] = 1`` when ``cols[s]`` is stored in row ``rows[s]`` of a CSR matrix whose
    indices are sorted within each row (binary search); else 0. Returns the count of 1s."""
    cdef Py_ssize_t n = rows.shape[0], s, lo, hi, mid, hits = 0
    cdef index_t c
    with nogil:
        for s in range(n):
            lo = indptr[rows[s]]
            hi = indptr[rows[s] + 1]
            c = cols[s]
            while lo < hi:
                mid = (lo + hi) >> 1
                if indices[mid] < c:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < indptr[rows[s] + 1] and indices[lo] == c:
                out[s] = 1
                hits += 1
            else:
                out[s] = 0
    return hits


# --------------------------------------------------------------------------- top-n selection


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
    cdef Py_ssize_t r, c, p, cnt, pos, last
    cdef double sc, ts
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
            for c in range(n_cols):
                sc = scores[r, c]
                if isnan(sc) or sc == -INFINITY:
                    continue
                if cnt < n:
                    # sift up
                    pos = cnt
                    hs[pos] = sc
                    hi[pos] = c
                    cnt = cnt + 1
                    while pos > 0 and _worse(hs[pos], hi[pos], hs[(pos - 1) >> 1],
                                             hi[(pos - 1) >> 1]):
                        ts = hs[pos]; hs[pos] = hs[(pos - 1) >> 1]; hs[(pos - 1) >> 1] = ts
                        ti = hi[pos]; hi[pos] = hi[(pos - 1) >> 1]; hi[(pos - 1) >> 1] = ti
                        pos = (pos - 1) >> 1
                elif _worse(hs[0], hi[0], sc, c):
                    hs[0] = sc
                    hi[0] = c
                    _sift_down(hs, hi, n, 0)
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


# --------------------------------------------------------------------------- factorisation machines


def fm_grads(const floating[::1] data, const index_t[::1] indices, const index_t[::1] indptr,
             const int64_t[::1] samples, const int64_t[::1] offsets,
             const floating[:, ::1] W, const floating[::1] w0, const double[::1] y,
             const double[::1] sw, Py_ssize_t k, int loss_code, double scale, double alpha,
             double[:, ::1] sums, double[:, ::1] pred, floating[:, ::1] G,
             index_t[::1] gidx, double[:, ::1] g0, double[::1] loss, int n_threads):
    """Second-order FM (Rendle 2010), ``n_out = w0.shape[0]`` outputs: per-sample gradients.

    ``W`` is ``(n_features, n_out*(k+1))``; output ``c`` of feature ``j`` is
    ``W[j, c*(k+1) : c*(k+1)+k]`` (factors ``v``) followed by ``W[j, c*(k+1)+k]`` (linear weight
    ``w``). For sample ``x`` = CSR row ``samples[s]``::

        yhat_c = w0[c] + sum_j x_j w_jc + 1/2 sum_f ((sum_j x_j v_jcf)^2 - sum_j x_j^2 v_jcf^2)

    computed in O(k * nnz). ``loss_code``: squared (``(yhat - y)^2/2``, one output), logistic
    (``y`` in {-1, +1}, one output) or softmax (``y`` the class index, ``n_out`` classes).
    With ``d_c = scale*sw*dloss/dyhat_c`` and ``a = scale*sw*alpha``, the gradient row of the
    ``p``-th stored entry of the sample, written to ``G[offsets[s] + p]`` with its feature id in
    ``gidx``, is ``d_c*x_j*(sum_j' x_j' v_j'cf - v_jcf x_j) + a*v_jcf`` for the factors and
    ``d_c*x_j + a*w_jc`` for the linear weight. ``g0[s, c] = d_c``; ``loss[s]`` the unweighted
    loss. ``sums`` (``(B, 2*n_out*k)``: per output the sums of ``x v`` and of ``(x v)^2``) and
    ``pred`` (``(B, n_out)``) are scratch.
    """
    cdef Py_ssize_t B = samples.shape[0], n_out = w0.shape[0], width = k + 1
    cdef Py_ssize_t s, c, f, p, p0, p1, o, base
    cdef int64_t row
    cdef index_t j
    cdef double x, acc, lin, v, yv, z, mx, tot, d, a
    cdef double* S
    cdef double* S2
    cdef const floating* wr
    cdef floating* gr
    with nogil:
        for s in prange(B, num_threads=n_threads, schedule="static"):
            row = samples[s]
            p0 = indptr[row]
            p1 = indptr[row + 1]
            for c in range(n_out):
                base = c * width
                S = &sums[s, 2 * c * k]
                S2 = &sums[s, 2 * c * k + k]
                for f in range(k):
                    S[f] = 0.0
                    S2[f] = 0.0
                lin = 0.0
                for p in range(p0, p1):
                    x = data[p]
                    wr = &W[indices[p], base]
                    lin = lin + x * wr[k]
                    for f in range(k):
                        v = x * wr[f]
                        S[f] += v
                        S2[f] += v * v
                acc = 0.0
                for f in range(k):
                    acc = acc + (S[f] * S[f] - S2[f])
                pred[s, c] = w0[c] + lin + 0.5 * acc
            yv = y[row]
            if loss_code == LOSS_SQUARED:
                z = pred[s, 0] - yv
                loss[s] = 0.5 * z * z
                pred[s, 0] = z
            elif loss_code == LOSS_LOGISTIC:
                z = yv * pred[s, 0]
                loss[s] = _softplus(-z)
                pred[s, 0] = -yv * _sigmoid(-z)
            else:
                mx = pred[s, 0]
                for c in range(1, n_out):
                    if pred[s, c] > mx:
                        mx = pred[s, c]
                tot = 0.0
                for c in range(n_out):
                    tot = tot + exp(pred[s, c] - mx)
                loss[s] = log1p(tot - 1.0) + mx - pred[s, <Py_ssize_t>yv]
                for c in range(n_out):
                    pred[s, c] = exp(pred[s, c] - mx) / tot
                pred[s, <Py_ssize_t>yv] -= 1.0
            # pred[s, c] now holds dloss/dyhat_c
            a = scale * sw[row] * alpha
            for c in range(n_out):
                d = scale * sw[row] * pred[s, c]
                g0[s, c] = d
                base = c * width
                S = &sums[s, 2 * c * k]
                for p in range(p0, p1):
                    x = data[p]
                    j = indices[p]
                    o = offsets[s] + p - p0
                    wr = &W[j, base]
                    gr = &G[o, base]
                    if c == 0:
                        gidx[o] = j
                    for f in range(k):
                        gr[f] = <floating>(d * x * (S[f] - wr[f] * x) + a * wr[f])
                    gr[k] = <floating>(d * x + a * wr[k])


def fm_predict(const floating[::1] data, const index_t[::1] indices, const index_t[::1] indptr,
               const floating[:, ::1] W, const floating[::1] w0, Py_ssize_t k,
               double[:, ::1] out, int n_threads):
    """``out[r, c] = yhat_c`` of CSR row ``r`` (see ``fm_grads``), in O(k * nnz) per row, with
    no scratch: the factor loop is outside the loop over stored entries."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, n_out = w0.shape[0], width = k + 1
    cdef Py_ssize_t r, c, f, p, base
    cdef double x, v, sf, sq, lin, acc
    with nogil:
        for r in prange(n, num_threads=n_threads, schedule="static"):
            for c in range(n_out):
                base = c * width
                lin = 0.0
                for p in range(indptr[r], indptr[r + 1]):
                    lin = lin + data[p] * W[indices[p], base + k]
                acc = 0.0
                for f in range(k):
                    sf = 0.0
                    sq = 0.0
                    for p in range(indptr[r], indptr[r + 1]):
                        v = data[p] * W[indices[p], base + f]
                        sf = sf + v
                        sq = sq + v * v
                    acc = acc + sf * sf - sq
                out[r, c] = w0[c] + lin + 0.5 * acc
