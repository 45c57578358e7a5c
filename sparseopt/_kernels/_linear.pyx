"""Fused mini-batch kernels of ``sparseopt.linear_model``.

One call of ``minibatch_gradient`` does, for the samples ``order[start:stop]`` of a CSR matrix
and feature-major weights ``W`` of shape ``(n_rows, K)`` (row ``n_feat`` is the intercept when
``fit_intercept``):

1. collect the unique features of the batch in order of first appearance (an open-addressing
   hash table sized to the batch), the intercept row first;
2. catch those rows up on the lazy penalty and the running average they missed (see
   ``_catch_up``);
3. compute every sample's margins ``wscale * (X_i @ W + b)``, its loss and the loss
   derivative ``dloss``, scaled by ``sample_weight * scale`` (``scale`` = 1 / batch size);
4. scatter ``X_batch.T @ dloss`` into ``G[:m]`` next to ``rows[:m]``: a row gradient ready for
   ``sparseopt.RowGrad`` and the optimizer's ``step`` (``optimizer="sgd"`` included).

Preconditions (established by ``sparseopt.linear_model``, never checked here):

* ``indptr``/``indices`` have one integer type, ``data`` the dtype of ``W``; every index lies in
  ``[0, n_feat)``; ``order`` holds valid sample ids;
* ``W`` and ``G`` are C-contiguous ``(*, K)`` of one floating dtype; ``G``/``rows`` can hold
  every unique feature of the batch plus the intercept; ``dz`` is ``(>= stop - start, K)``;
* the hash table ``hkeys`` (all -1, restored before returning) / ``hvals`` has a power-of-two
  size ``2**(64 - hshift)`` larger than the batch's nonzeros; ``hpos`` can hold the unique rows;
* ``y`` is +1/-1 for binary losses, the class index for ``L_SOFTMAX`` and one-vs-rest
  (``K > 1``), the target for regression;
* the lazy-penalty tables (float64, built in Python for the current segment of steps):
  ``Q[s] = prod_{u<=s} 1/(1 + eta_u*l2)``, ``cum_a[s] = sum_{u<=s} eta_u*l1 / Q[u-1]``,
  ``cum_q[s] = sum_{u<=s} Q[u]``, ``cum_aq[s] = sum_{u<=s} cum_a[u]*Q[u]``; ``pen_step[j]`` is
  the step through which row j is current.
* ``wscale`` multiplies every row of ``W``: the weight-scaling trick of the L2-only penalty
  (see ``sparseopt/linear_model/_lazy.py``); 1 otherwise.

Per-sample work runs in ``prange`` over samples (each writes only its own ``dz`` row and
``sample_loss`` entry), the catch-up in ``prange`` over unique rows; the scatter and the loss
sum are serial, in sample order, so results are bitwise identical for any thread count.
"""
from libc.math cimport exp, log, fabs, copysign
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memset
from cython cimport floating
from cython.parallel cimport prange

ctypedef fused index_t:
    int32_t
    int64_t

cdef enum:
    L_LOG = 0                        # log(1 + exp(-y p)), y in {-1, +1}
    L_HINGE = 1                      # max(0, param - y p); the perceptron has param 0
    L_SQUARED_HINGE = 2              # max(0, param - y p)**2
    L_MODIFIED_HUBER = 3
    L_SOFTMAX = 4                    # multinomial log-loss, y = class index
    L_SQUARED = 5                    # (p - y)**2 / 2
    L_HUBER = 6                      # param = epsilon
    L_EPS_INSENSITIVE = 7            # param = epsilon
    L_SQUARED_EPS_INSENSITIVE = 8    # param = epsilon

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define so_lin_prefetch(p) __builtin_prefetch((const void*)(p), 1, 3)
    #else
    #define so_lin_prefetch(p) ((void)0)
    #endif
    """
    void _prefetch "so_lin_prefetch"(const void* p) noexcept nogil

cdef enum:
    # Nonzeros / rows looked up ahead of the one being processed (random accesses).
    PREFETCH_NNZ = 12
    PREFETCH_ROWS = 8
    PREFETCH_SAMPLES = 6   # samples whose CSR rows are prefetched ahead


cdef inline void _prefetch_span(const void* p, size_t nbytes) noexcept nogil:
    cdef size_t off = 0
    cdef const char* c = <const char*>p
    while off < nbytes:
        _prefetch(c + off)
        off += 64

cdef enum:
    P_L2 = 1
    P_L1 = 2
    P_AVG = 4

LOSSES = dict(log=L_LOG, hinge=L_HINGE, squared_hinge=L_SQUARED_HINGE,
              modified_huber=L_MODIFIED_HUBER, softmax=L_SOFTMAX, squared=L_SQUARED,
              huber=L_HUBER, epsilon_insensitive=L_EPS_INSENSITIVE,
              squared_epsilon_insensitive=L_SQUARED_EPS_INSENSITIVE)
PENALTY_FLAGS = dict(L2=P_L2, L1=P_L1, AVG=P_AVG)

# As scikit-learn's _sgd_fast: a derivative this large only comes from a diverging model.
cdef double MAX_DLOSS = 1e12


cdef inline double _loss(int loss, double p, double y, double c, double* dl) noexcept nogil:
    """Loss of one output; writes d loss / d p to ``dl`` (scikit-learn's formulas)."""
    cdef double z, r
    if loss == L_LOG:
        z = p * y
        if z > 18.0:
            r = exp(-z)
            dl[0] = -y * r
            return r
        if z < -18.0:
            dl[0] = -y
            return -z
        dl[0] = -y / (exp(z) + 1.0)
        return log(1.0 + exp(-z))
    if loss == L_HINGE:
        z = p * y
        if z <= c:
            dl[0] = -y
            return c - z
        dl[0] = 0.0
        return 0.0
    if loss == L_SQUARED_HINGE:
        z = c - p * y
        if z > 0:
            dl[0] = -2.0 * y * z
            return z * z
        dl[0] = 0.0
        return 0.0
    if loss == L_MODIFIED_HUBER:
        z = p * y
        if z >= 1.0:
            dl[0] = 0.0
            return 0.0
        if z >= -1.0:
            dl[0] = -2.0 * (1.0 - z) * y
            return (1.0 - z) * (1.0 - z)
        dl[0] = -4.0 * y
        return -4.0 * z
    if loss == L_SQUARED:
        r = p - y
        dl[0] = r
        return 0.5 * r * r
    if loss == L_HUBER:
        r = p - y
        if fabs(r) <= c:
            dl[0] = r
            return 0.5 * r * r
        dl[0] = c if r > 0 else -c
        return c * fabs(r) - 0.5 * c * c
    if loss == L_EPS_INSENSITIVE:
        r = y - p
        if r > c:
            dl[0] = -1.0
            return r - c
        if -r > c:
            dl[0] = 1.0
            return -r - c
        dl[0] = 0.0
        return 0.0
    # L_SQUARED_EPS_INSENSITIVE
    r = y - p
    if r > c:
        dl[0] = -2.0 * (r - c)
        return (r - c) * (r - c)
    if -r > c:
        dl[0] = 2.0 * (-r - c)
        return (-r - c) * (-r - c)
    dl[0] = 0.0
    return 0.0


cdef inline double _clip(double d) noexcept nogil:
    if d > MAX_DLOSS:
        return MAX_DLOSS
    if d < -MAX_DLOSS:
        return -MAX_DLOSS
    return d


cdef inline double _sample(const int32_t* ind, const floating* val, Py_ssize_t nnz,
                           const floating* W, Py_ssize_t K, const floating* bias, double wscale,
                           double* z, double yi, double wi, int loss, double c) noexcept nogil:
    """Margins ``wscale * (x @ W + bias)`` of one sample into ``z[:K]``, then
    ``z[k] <- dloss_k * wi``; returns the loss."""
    cdef Py_ssize_t e, k, cls
    cdef double acc, x, mx, s, lse, d, lossv, yk
    cdef const floating* w
    if K == 1:
        acc = bias[0] if bias != NULL else 0.0
        for e in range(nnz):
            acc = acc + <double>val[e] * <double>W[ind[e]]
        acc = acc * wscale
        lossv = _loss(loss, acc, yi, c, &d)
        z[0] = _clip(d) * wi
        return lossv
    for k in range(K):
        z[k] = bias[k] if bias != NULL else 0.0
    for e in range(nnz):
        w = W + ind[e] * K
        x = val[e]
        for k in range(K):
            z[k] += x * w[k]
    for k in range(K):
        z[k] = z[k] * wscale
    cls = <Py_ssize_t>yi
    if loss == L_SOFTMAX:
        mx = z[0]
        for k in range(1, K):
            if z[k] > mx:
                mx = z[k]
        s = 0.0
        for k in range(K):
            s = s + exp(z[k] - mx)
        lse = mx + log(s)
        lossv = lse - z[cls]
        for k in range(K):
            d = exp(z[k] - lse)
            if k == cls:
                d = d - 1.0
            z[k] = d * wi
        return lossv
    # one-vs-rest: output k is the binary problem "class k against the rest"
    lossv = 0.0
    for k in range(K):
        yk = 1.0 if k == cls else -1.0
        lossv = lossv + _loss(loss, z[k], yk, c, &d)
        z[k] = _clip(d) * wi
    return lossv


cdef inline int64_t _last_below(const double* cum_a, int64_t lo, int64_t hi,
                                double r) noexcept nogil:
    """Largest s in [lo, hi] with cum_a[s] < r (cum_a is non-decreasing), or lo - 1."""
    cdef int64_t mid
    if cum_a[lo] >= r:
        return lo - 1
    while lo < hi:
        mid = hi - (hi - lo) // 2
        if cum_a[mid] < r:
            lo = mid
        else:
            hi = mid - 1
    return lo


cdef inline void _catch_up(floating* w, double* avg, Py_ssize_t K, int64_t p, int64_t q,
                           bint penalized, const double* Q, const double* cum_a,
                           const double* cum_q, const double* cum_aq, int64_t avg_from,
                           int flags) noexcept nogil:
    """Bring one row from step ``p`` to step ``q``: apply the proximal penalty steps
    ``p+1..q`` and add the row's values at the end of each step ``s >= avg_from`` to ``avg``.

    One prox step is ``w <- sign(w) * max(|w| - eta*l1, 0) / (1 + eta*l2)``. Composed over
    steps ``p+1..s`` it is ``|w_s| = max(0, |w_p| - Q_p (A_s - A_p)) * Q_s / Q_p`` (``Q``, ``A``
    the tables above); the sum of ``w_s`` over a range of steps follows from the cumulative
    tables, with a binary search for the step where L1 reaches zero.
    """
    cdef bint l1 = flags & P_L1, l2 = flags & P_L2, av = (flags & P_AVG) and avg != NULL
    cdef int64_t s1, ss
    cdef Py_ssize_t k
    cdef double ratio, f, qp, shrink, wabs, r, tot, nw
    if q <= p:
        return
    s1 = p + 1 if p + 1 > avg_from else avg_from
    av = av and q >= s1
    if not penalized or not (l1 or l2):
        if av:
            for k in range(K):
                avg[k] += <double>w[k] * <double>(q - s1 + 1)
        return
    qp = Q[p]
    ratio = Q[q] / qp if l2 else 1.0
    if not l1:
        if av:
            f = (cum_q[q] - cum_q[s1 - 1]) / qp
            for k in range(K):
                avg[k] += <double>w[k] * f
        for k in range(K):
            w[k] = <floating>(<double>w[k] * ratio)
        return
    shrink = qp * (cum_a[q] - cum_a[p])
    for k in range(K):
        wabs = fabs(<double>w[k])
        if wabs == 0.0:
            continue
        if av:
            r = wabs / qp + cum_a[p]
            ss = _last_below(cum_a, s1, q, r)
            if ss >= s1:
                tot = r * (cum_q[ss] - cum_q[s1 - 1]) - (cum_aq[ss] - cum_aq[s1 - 1])
                if tot > 0.0:
                    avg[k] += copysign(tot, <double>w[k])
        nw = wabs - shrink
        if nw > 0.0:
            w[k] = <floating>copysign(nw * ratio, <double>w[k])
        else:
            w[k] = 0.0


def minibatch_gradient(const index_t[::1] indptr, const index_t[::1] indices,
                       const floating[::1] data, const int64_t[::1] order,
                       Py_ssize_t start, Py_ssize_t stop, const double[::1] y,
                       const double[::1] sw, floating[:, ::1] W, Py_ssize_t n_feat,
                       bint fit_intercept, int loss, double loss_param, double scale,
                       int64_t[::1] hkeys, int32_t[::1] hvals, int64_t[::1] hpos,
                       int hshift, int64_t[::1] rows, floating[:, ::1] G,
                       floating[:, ::1] Wc, int32_t[::1] pos2u, int64_t[::1] offsets,
                       double[:, ::1] dz, double[::1] sample_loss, int64_t[::1] pen_step,
                       double[:, ::1] avg, const double[::1] Q, const double[::1] cum_a,
                       const double[::1] cum_q, const double[::1] cum_aq, int64_t t,
                       int64_t avg_from, int flags, double wscale, int n_threads,
                       Py_ssize_t min_row_work):
    """Row gradient of one mini-batch; see the module docstring. In place: the hash table
    (restored), ``rows``, ``G``, the scratch ``Wc`` (touched rows of ``W``, compact),
    ``pos2u`` (unique id of each nonzero of the batch), ``offsets`` (where each sample's
    nonzeros start in ``pos2u``), ``dz``, ``sample_loss`` and, with lazy penalty or averaging
    (``flags``), the touched rows of ``W``, ``avg`` and ``pen_step`` (caught up to ``t - 1``).

    Only one pass reads a large array at random: the catch-up/gather of every unique row;
    margins and the scatter of ``X_batch.T @ dloss`` then work on the compact ``Wc``/``G``
    (cache-resident for batches of a few thousand features), and the CSR rows of the samples
    a few places ahead are prefetched.

    ``n_threads`` is the team size for the per-sample loop, chosen in Python; the catch-up and
    gather over unique rows uses it only when it has at least ``min_row_work`` elements
    (unique rows x outputs, known only here), else one thread.

    Returns ``(m, loss_sum)``: the number of gradient rows and the sample-weighted sum of the
    batch's losses (at the weights before the update).
    """
    cdef Py_ssize_t K = W.shape[1], nb = stop - start, b, k, u, m = 0, pos = 0
    cdef int64_t i, j, e, e0, e1, o0, o1
    cdef int32_t sl
    cdef double x, loss_sum = 0.0
    cdef const double* zb
    cdef floating* gu
    cdef bint lazy = (flags & (P_L1 | P_L2 | P_AVG)) != 0
    cdef double* avg_p = &avg[0, 0] if flags & P_AVG else NULL
    cdef int nt_rows
    cdef uint64_t h, hmask = hkeys.shape[0] - 1
    if nb <= 0:
        return 0, 0.0
    with nogil:
        # 1. unique rows (intercept first) and the unique id of every nonzero, through an
        #    open-addressing hash table sized to the batch (it stays in cache, where a
        #    per-feature slot array would miss on every lookup of a wide table)
        if fit_intercept:
            rows[0] = n_feat
            m = 1
        for b in range(nb):
            if b + PREFETCH_SAMPLES < nb:
                i = order[start + b + PREFETCH_SAMPLES]
                e0 = indptr[i]
                e1 = indptr[i + 1]
                _prefetch_span(&indices[e0], (e1 - e0) * sizeof(index_t))
                _prefetch_span(&data[e0], (e1 - e0) * sizeof(floating))
            i = order[start + b]
            e0 = indptr[i]
            e1 = indptr[i + 1]
            offsets[b] = pos
            for e in range(e0, e1):
                j = indices[e]
                h = (<uint64_t>j * 0x9E3779B97F4A7C15ULL) >> hshift
                while True:
                    if hkeys[h] == j:
                        sl = hvals[h]
                        break
                    if hkeys[h] < 0:
                        hkeys[h] = j
                        sl = <int32_t>m
                        hvals[h] = sl
                        hpos[m] = h
                        rows[m] = j
                        m += 1
                        break
                    h = (h + 1) & hmask
                pos2u[pos] = sl
                pos += 1
        offsets[nb] = pos
        for u in range(1 if fit_intercept else 0, m):
            hkeys[hpos[u]] = -1
        # 2. lazy penalty and average up to the end of the previous step; gather into Wc
        nt_rows = n_threads if m * K >= min_row_work else 1
        for u in prange(m, num_threads=nt_rows, schedule="static"):
            if u + PREFETCH_ROWS < m:
                _prefetch(&W[rows[u + PREFETCH_ROWS], 0])
            j = rows[u]
            if lazy:
                _catch_up(&W[j, 0], (avg_p + j * K) if avg_p != NULL else NULL, K,
                          pen_step[j], t - 1, j < n_feat, &Q[0], &cum_a[0], &cum_q[0],
                          &cum_aq[0], avg_from, flags)
                pen_step[j] = t - 1
            for k in range(K):
                Wc[u, k] = W[j, k]
        # 3. margins, losses and scaled loss derivatives, one sample per iteration
        for b in prange(nb, num_threads=n_threads, schedule="static"):
            i = order[start + b]
            o0 = offsets[b]
            o1 = offsets[b + 1]
            e0 = indptr[i]
            sample_loss[b] = sw[i] * _sample(&pos2u[o0] if o1 > o0 else NULL,
                                             &data[e0] if o1 > o0 else NULL, o1 - o0,
                                             &Wc[0, 0], K,
                                             &Wc[0, 0] if fit_intercept else NULL, wscale,
                                             &dz[b, 0], y[i], sw[i] * scale, loss,
                                             loss_param)
        # 4. G = X_batch.T @ dz (serial, in sample order: deterministic)
        memset(&G[0, 0], 0, m * K * sizeof(floating))
        for b in range(nb):
            i = order[start + b]
            zb = &dz[b, 0]
            loss_sum += sample_loss[b]
            if fit_intercept:
                for k in range(K):
                    G[0, k] += <floating>zb[k]
            o0 = offsets[b]
            o1 = offsets[b + 1]
            e0 = indptr[i] - o0
            if K == 1:
                for pos in range(o0, o1):
                    G[pos2u[pos], 0] += <floating>(<double>data[e0 + pos] * zb[0])
            else:
                for pos in range(o0, o1):
                    gu = &G[pos2u[pos], 0]
                    x = data[e0 + pos]
                    for k in range(K):
                        gu[k] += <floating>(x * zb[k])
    return m, loss_sum


def catch_up_rows(floating[:, ::1] W, Py_ssize_t n_feat, int64_t[::1] pen_step,
                  double[:, ::1] avg, const double[::1] Q, const double[::1] cum_a,
                  const double[::1] cum_q, const double[::1] cum_aq, int64_t q,
                  int64_t avg_from, int flags, int n_threads):
    """Bring every row of ``W`` (and ``avg``) up to step ``q``, then set ``pen_step`` to 0:
    the end of a segment of steps, after which the tables restart (in place)."""
    cdef Py_ssize_t n = W.shape[0], K = W.shape[1], j
    cdef double* avg_p = &avg[0, 0] if flags & P_AVG else NULL
    with nogil:
        for j in prange(n, num_threads=n_threads, schedule="static"):
            _catch_up(&W[j, 0], (avg_p + j * K) if avg_p != NULL else NULL, K, pen_step[j],
                      q, j < n_feat, &Q[0], &cum_a[0], &cum_q[0], &cum_aq[0], avg_from,
                      flags)
            pen_step[j] = 0
