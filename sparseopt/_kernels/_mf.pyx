"""Fused mini-batch kernels of matrix factorisation (``sparseopt.recommend.MatrixFactorization``).

``mf_squared_batch`` (explicit ratings, squared loss), ``mf_bpr_batch`` and ``mf_warp_batch``
(implicit feedback, BPR and WARP) each make one pass over a mini-batch: prediction, loss
derivative and the gradient of every embedding row the batch touches; the caller hands the
rows to a sparseopt optimizer as ``RowGrad``, which applies its lazy row update. Around them: ``pack_ratings`` (the sample
records ``mf_squared_batch`` reads), ``mf_predict`` and ``csr_contains`` (the membership test
of BPR's negative sampling).

The batch kernels (two tables, a few thousand rows per batch) merge duplicates themselves: a
serial scatter-add in sample order into one row per unique table row (a per-table ``slot``
scratch, as ``_coalesce.pyx`` does), so the per-sample rows are never written out and read
back; the optimizer then sees unique rows. The sums are those the optimizer's own merge would
form (same order, same precision). ``mf_predict`` runs in parallel over samples, each writing
only its own output, so its result does not depend on the thread count.

Preconditions (established by ``sparseopt.recommend``, never checked here):

* ``U`` and ``V`` are C-contiguous, of one floating dtype, with the layout documented per
  kernel; gradient buffers are of the same dtype;
* every user, item, sample and row id is in range of the array it indexes; ids packed by
  ``pack_ratings`` lie in [0, 2**31);
* every output buffer has the documented shape; ``uslot`` / ``islot`` are -1 everywhere;
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
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.math cimport floor, fmax, log
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cython cimport floating
from cython.parallel cimport prange

from ._rowops cimport (
    _axmbpy, _axmbpy_add, _axpby, _axpby_add, _dot, _dot_diff, _sigmoid, _softplus, index_t,
    so_bits_to_double, so_dot_df, so_prefetch_read,
)

# Samples ahead whose table rows are prefetched; WARP candidates ahead within a scan.
cdef enum:
    PREFETCH_AHEAD = 8
    CAND_AHEAD = 3


cdef inline void _axpby_into(bint fresh, Py_ssize_t d, floating* out, double x,
                             const floating* a, double y, const floating* b) noexcept nogil:
    """``out = x*a + y*b`` for a row new in the batch, else ``out += x*a + y*b``."""
    if fresh:
        _axpby(d, out, x, a, y, b)
    else:
        _axpby_add(d, out, x, a, y, b)


cdef inline void _axmbpy_into(bint fresh, Py_ssize_t d, floating* out, double x,
                              const floating* a, const floating* b, double y,
                              const floating* c) noexcept nogil:
    """``out = x*(a - b) + y*c`` for a row new in the batch, else ``out += ...``."""
    if fresh:
        _axmbpy(d, out, x, a, b, y, c)
    else:
        _axmbpy_add(d, out, x, a, b, y, c)


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


cdef inline void _release(int32_t* slot, const int64_t* rows, Py_ssize_t m) noexcept nogil:
    """Reset the slots of a batch's ``m`` unique rows to -1, ready for the next batch."""
    cdef Py_ssize_t j
    for j in range(m):
        slot[rows[j]] = -1


cdef inline void _prefetch_triple(const floating* pu, size_t ub, const floating* qi,
                                  const floating* qj, size_t vb) noexcept nogil:
    """Prefetch a later sample's user row and two item rows (BPR and WARP read three)."""
    so_prefetch_read(pu, ub)
    so_prefetch_read(qi, vb)
    so_prefetch_read(qj, vb)


cdef inline void _pair_grads(Py_ssize_t k, bint item_bias, double d, double a,
                             int64_t u, int64_t i, int64_t jn, const floating* pu,
                             const floating* qi, const floating* qj,
                             int32_t* uslot, int32_t* islot, int64_t* urows, int64_t* irows,
                             Py_ssize_t* nu, Py_ssize_t* ni, floating* gu, Py_ssize_t gw,
                             floating* gi, Py_ssize_t vw) noexcept nogil:
    """Merge one pairwise sample into the batch's unique rows: with ``d`` the derivative of
    the sample's (scaled, weighted) loss by ``x_ui - x_uj`` and ``a`` its L2 weight::

        grad U[u] += d*(V[i,:k] - V[j,:k]) + a*U[u]
        grad V[i] += d*[U[u,:k], 1] + a*V[i] ;  grad V[j] += -d*[U[u,:k], 1] + a*V[j]

    Rows are claimed user, positive, negative; ``gw`` / ``vw`` are the row widths of
    ``gu`` / ``gi``. BPR passes its ``d``; WARP, whose loss grows with ``x_uj - x_ui``, its
    ``-d`` (exact: negating both factors of a product does not change its bits)."""
    cdef bint fu, fi, fj
    cdef Py_ssize_t pu_pos, pi_pos, pj_pos
    cdef floating* g
    pu_pos = _claim(uslot, urows, nu, u, &fu)
    pi_pos = _claim(islot, irows, ni, i, &fi)
    _axmbpy_into(fu, k, gu + pu_pos * gw, d, qi, qj, a, pu)
    g = gi + pi_pos * vw
    _axpby_into(fi, k, g, d, pu, a, qi)
    if item_bias:
        _set_or_add(fi, g + k, d + a * qi[k])
    # claimed after the positive row is written: when j == i the two add up
    pj_pos = _claim(islot, irows, ni, jn, &fj)
    g = gi + pj_pos * vw
    _axpby_into(fj, k, g, -d, pu, a, qj)
    if item_bias:
        _set_or_add(fj, g + k, -d + a * qj[k])


cdef inline int64_t _draw(uint64_t seed, uint64_t c, uint64_t n) noexcept nogil:
    """Draw ``c`` of the stream ``seed``: an item in [0, n), n < 2**32, from the splitmix64
    finaliser of ``seed + (c + 1) * golden``, scaled by multiply-shift. A pure function of
    ``(seed, c)``, so a scan draws only the candidates it reads and the draws do not depend on
    the order or the number of reads (``sparseopt.recommend._sampling.warp_candidates`` is
    the same map in NumPy). Its bias, under ``n / 2**32`` per item, is far below sampling
    noise."""
    cdef uint64_t z = seed + (c + 1) * <uint64_t>0x9E3779B97F4A7C15ULL
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    z = z ^ (z >> 31)
    return <int64_t>(((z >> 32) * n) >> 32)


cdef inline double _dot_scan(Py_ssize_t k, const double* pud, const floating* pu,
                             const floating* q) noexcept nogil:
    """``<pu, q>`` as ``_dot`` computes it (the same bits); for float tables from ``pud``,
    ``pu`` converted to float64 once per scan."""
    if floating is float:
        return so_dot_df(k, pud, q)
    else:
        return _dot(k, pu, q)


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
    cdef Py_ssize_t B = order.shape[0], s, sa, nu = 0, ni = 0, pu_pos, pi_pos
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
                so_prefetch_read(&records[order[sa], 0], 16)
            sa = s + PREFETCH_AHEAD
            if sa < B:
                key = records[order[sa], 0]
                so_prefetch_read(&U[key >> 32, 0], ub)
                so_prefetch_read(&V[key & low, 0], vb)
            p = order[s]
            key = records[p, 0]
            u = key >> 32
            i = key & low
            pu = &U[u, 0]
            qi = &V[i, 0]
            e = mu + _dot(k, pu, qi) - so_bits_to_double(records[p, 1])
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
        _release(&uslot[0], &urows[0], nu)
        _release(&islot[0], &irows[0], ni)
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
                 const double[::1] weight, Py_ssize_t k, bint item_bias, double scale,
                 double alpha, int32_t[::1] uslot, int32_t[::1] islot, int64_t[::1] urows,
                 int64_t[::1] irows, floating[:, ::1] gu, floating[:, ::1] gi,
                 double[::1] loss):
    """BPR (Rendle et al. 2009): the merged gradient rows of ``-log sigmoid(x_uij)``.

    ``x = <U[u,:k], V[i,:k] - V[j,:k]> + V[i,k] - V[j,k]`` (item biases when present; a user
    bias cancels in BPR, so ``U`` is ``(n_users, k)``), for the triples
    ``(users[s], pos[s], neg[s])``, each weighted by ``w = weight[s]`` (``w = 1`` when
    ``weight`` is empty). Per sample, with ``d = -scale*w*sigmoid(-x)`` and
    ``a = scale*w*alpha``::

        grad U[u] += d*(V[i,:k] - V[j,:k]) + a*U[u]
        grad V[i] += d*[U[u,:k], 1] + a*V[i] ;  grad V[j] += -d*[U[u,:k], 1] + a*V[j]

    Unique rows and summed gradients as in ``mf_squared_batch`` (the positive item of a
    sample is claimed before its negative); ``irows`` / ``gi`` need room for ``2B`` rows.
    ``loss[s] = w*softplus(-x)``. Returns ``(mu, mi)``.
    """
    cdef Py_ssize_t B = users.shape[0], s, sa, nu = 0, ni = 0
    cdef Py_ssize_t gw = gu.shape[1], vw = gi.shape[1]
    cdef int64_t u, i, jn
    cdef const floating* pu
    cdef const floating* qi
    cdef const floating* qj
    cdef bint weighted = weight.shape[0] > 0
    cdef double x, d, w = 1.0, a = scale * alpha
    cdef size_t ub = U.shape[1] * sizeof(floating), vb = V.shape[1] * sizeof(floating)
    with nogil:
        for s in range(B):
            sa = s + PREFETCH_AHEAD
            if sa < B:
                _prefetch_triple(&U[users[sa], 0], ub, &V[pos[sa], 0], &V[neg[sa], 0], vb)
            u = users[s]
            i = pos[s]
            jn = neg[s]
            pu = &U[u, 0]
            qi = &V[i, 0]
            qj = &V[jn, 0]
            x = _dot_diff(k, pu, qi, qj)
            if item_bias:
                x = x + (<double>qi[k] - <double>qj[k])
            if weighted:
                w = weight[s]
                a = scale * w * alpha
            loss[s] = w * _softplus(-x)
            d = -(scale * w) * _sigmoid(-x)     # d loss / d x, times scale and weight
            _pair_grads(k, item_bias, d, a, u, i, jn, pu, qi, qj, &uslot[0], &islot[0],
                        &urows[0], &irows[0], &nu, &ni, &gu[0, 0], gw, &gi[0, 0], vw)
        _release(&uslot[0], &urows[0], nu)
        _release(&islot[0], &irows[0], ni)
    return nu, ni


cdef inline bint _stored(const index_t* indptr, const index_t* indices, index_t row,
                         index_t col) noexcept nogil:
    """Whether ``col`` is stored in row ``row`` of a CSR pattern with sorted indices."""
    cdef index_t lo = indptr[row], end = indptr[row + 1], hi = end, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < col:
            lo = mid + 1
        else:
            hi = mid
    return lo < end and indices[lo] == col


def mf_warp_batch(const floating[:, ::1] U, const floating[:, ::1] V,
                  const index_t[::1] users, const index_t[::1] pos,
                  const index_t[:, ::1] cand, const index_t[::1] seen_indptr,
                  const index_t[::1] seen_indices, const double[::1] weight, Py_ssize_t k,
                  bint item_bias, double scale, double alpha, double n_items,
                  int32_t[::1] uslot, int32_t[::1] islot, int64_t[::1] urows,
                  int64_t[::1] irows, floating[:, ::1] gu, floating[:, ::1] gi,
                  double[::1] loss, int64_t[::1] drawn, uint64_t seed=0,
                  Py_ssize_t n_draws=0):
    """WARP (Weston et al. 2011, as LightFM defines it): the merged gradient rows of one
    mini-batch.

    Scores are ``x_ui = <U[u,:k], V[i,:k]> + V[i,k]`` (item bias when present; ``U`` is
    ``(n_users, k)``). For sample ``s`` = ``(u, i) = (users[s], pos[s])`` the candidates
    ``cand[s, 0..S)`` (items drawn uniformly by the caller) are scanned in order until the
    first ``j`` with ``x_uj > x_ui - 1`` (a margin violation) that is not one of ``u``'s
    positives (row ``u`` of the pattern ``seen_indptr`` / ``seen_indices``, indices sorted;
    as in LightFM, a violating positive is skipped but counts as a draw, and only violating
    candidates are looked up); ``N`` is its 1-based position. With no such candidate the
    sample changes nothing (``drawn[s] = 0``, ``loss[s] = 0``, no row is
    claimed). Otherwise, with ``w = weight[s]`` (1 when ``weight`` is empty), the rank
    weight ``L = log(max(1, floor((n_items - 1) / N)))``, ``d = scale*w*L`` and
    ``a = scale*w*alpha``, the sample adds the gradient of
    ``scale*w*(L*(1 - x_ui + x_uj) + alpha/2*(|U[u]|^2 + |V[i]|^2 + |V[j]|^2))``::

        grad U[u] += d*(V[j,:k] - V[i,:k]) + a*U[u]
        grad V[i] += -d*[U[u,:k], 1] + a*V[i] ;  grad V[j] += d*[U[u,:k], 1] + a*V[j]

    and ``drawn[s] = N``, ``loss[s] = w*L*(1 - x_ui + x_uj)``. Unique rows and summed
    gradients as in ``mf_bpr_batch`` (user, then positive, then negative; only samples with
    a violation claim rows); ``irows`` / ``gi`` need room for ``2B`` rows. Returns
    ``(mu, mi)``.

    When ``cand`` has no rows (shape ``(0, S)``), the candidates are drawn in the scan
    instead: ``n_draws`` per sample, candidate ``t`` of sample ``s`` being draw
    ``s * n_draws + t`` of the stream ``seed`` over the rows of ``V`` (``_draw``). A scan stops at its first violation, so only the candidates
    it reads are ever drawn, and the result is that of ``cand =
    warp_candidates(seed, B, n_draws, n_items)``, bit for bit.
    """
    cdef Py_ssize_t B = users.shape[0], S = cand.shape[1], s, sa, t, nu = 0, ni = 0
    cdef Py_ssize_t gw = gu.shape[1], vw = gi.shape[1]
    cdef bint lazy = cand.shape[0] == 0
    cdef uint64_t ni_draw = <uint64_t>V.shape[0], base
    cdef double* pud = NULL
    cdef int64_t u, i, jn = 0, N
    cdef const floating* pu
    cdef const floating* qi
    cdef const floating* qj = NULL
    cdef bint weighted = weight.shape[0] > 0
    cdef double xi, xj = 0.0, d, rank, w = 1.0, a
    cdef size_t ub = U.shape[1] * sizeof(floating), vb = V.shape[1] * sizeof(floating)
    if lazy:
        S = n_draws
    if floating is float:
        pud = <double*>malloc((k if k > 0 else 1) * sizeof(double))
        if pud == NULL:
            raise MemoryError()
    with nogil:
        for s in range(B):
            sa = s + PREFETCH_AHEAD
            if sa < B and S > 0:
                jn = _draw(seed, <uint64_t>(sa * S), ni_draw) if lazy else cand[sa, 0]
                _prefetch_triple(&U[users[sa], 0], ub, &V[pos[sa], 0], &V[jn, 0], vb)
            u = users[s]
            i = pos[s]
            pu = &U[u, 0]
            qi = &V[i, 0]
            xi = _dot(k, pu, qi)
            if item_bias:
                xi = xi + qi[k]
            N = 0
            base = <uint64_t>(s * S)
            if floating is float:
                for t in range(k):
                    pud[t] = pu[t]
            for t in range(S):
                # the scan's rows are random: fetch a few draws ahead of the dot products
                if t + CAND_AHEAD < S:
                    jn = _draw(seed, base + (t + CAND_AHEAD), ni_draw) if lazy \
                        else cand[s, t + CAND_AHEAD]
                    so_prefetch_read(&V[jn, 0], vb)
                jn = _draw(seed, base + t, ni_draw) if lazy else cand[s, t]
                qj = &V[jn, 0]
                xj = _dot_scan(k, pud, pu, qj)
                if item_bias:
                    xj = xj + qj[k]
                if xj > xi - 1.0 and not _stored(&seen_indptr[0], &seen_indices[0], u, jn):
                    N = t + 1
                    break
            drawn[s] = N
            if N == 0:
                loss[s] = 0.0
                continue
            if weighted:
                w = weight[s]
            rank = log(fmax(1.0, floor((n_items - 1.0) / <double>N)))
            loss[s] = w * rank * (1.0 - xi + xj)
            d = (scale * w) * rank
            a = (scale * w) * alpha
            _pair_grads(k, item_bias, -d, a, u, i, jn, pu, qi, qj, &uslot[0], &islot[0],
                        &urows[0], &irows[0], &nu, &ni, &gu[0, 0], gw, &gi[0, 0], vw)
        _release(&uslot[0], &urows[0], nu)
        _release(&islot[0], &irows[0], ni)
    free(pud)
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

