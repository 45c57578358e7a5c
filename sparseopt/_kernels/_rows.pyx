"""Row-update kernels: ``<algorithm>_rows_update`` (Adam, Adagrad, RMSprop, SGD) and
``flush_decay``.

Preconditions (established by ``sparseopt.optim``, never checked here):

* ``param`` and every state array are of one floating dtype, viewed as ``(n_rows, d)`` (1-D
  parameters as ``(n, 1)``; row-wise accumulators as ``(n, 1)``), with contiguous rows; Adam's
  ``m`` and ``v`` (and the arrays ``flush_decay`` scales) may be row-strided views, e.g. the two
  halves of one ``(n, 2d)`` buffer that keeps a row's moments in 512 adjacent bytes;
* ``rows`` holds unique, in-range row ids; ``src`` locates each row's merged gradient in
  ``values`` (``src >= 0``) or ``scratch`` (row ``-src - 1``), see ``_coalesce.pyx``;
* unused optional arrays are passed as 1-row dummies and the matching flag is off;
* every scalar is float64, computed in Python; per-row factors come from float64 tables
  (``pow*[i] = beta**i``, ``wdlog[s] = sum_{i<=s} log1p(-lr_i * weight_decay)``).

The loop is ``prange`` over unique rows with a static schedule. Rows are independent, so the
result is bitwise identical for any thread count. Each iteration prefetches the rows a few
iterations ahead (random rows are latency-bound) and does one fused read-modify-write pass.
"""
from libc.math cimport sqrt, exp
from libc.stdint cimport int64_t
from cython cimport floating
from cython.parallel cimport prange

cdef extern from "_simd.h" nogil:
    void so_prefetch_row(const void* ptr, size_t nbytes)
    void so_adam_row_f(Py_ssize_t d, float* p, float* m, float* v, float* vmax, const float* g,
                       float b1, float omb1, float b2, float omb2, float a, float c, float eps,
                       float pmul)
    void so_adam_row_d(Py_ssize_t d, double* p, double* m, double* v, double* vmax,
                       const double* g, double b1, double omb1, double b2, double omb2,
                       double a, double c, double eps, double pmul)
    void so_adagrad_row_f(Py_ssize_t d, float* p, float* s, const float* g, float a, float eps,
                          float pmul)
    void so_adagrad_row_d(Py_ssize_t d, double* p, double* s, const double* g, double a,
                          double eps, double pmul)
    void so_axpby_row_f(Py_ssize_t d, float* p, const float* g, float k, float pmul)
    void so_axpby_row_d(Py_ssize_t d, double* p, const double* g, double k, double pmul)
    void so_rmsprop_row_f(Py_ssize_t d, float* p, float* v, float* ga, float* buf, const float* g,
                          float al, float oma, float mu, float lr, float eps_in, float eps,
                          float pmul)
    void so_rmsprop_row_d(Py_ssize_t d, double* p, double* v, double* ga, double* buf,
                          const double* g, double al, double oma, double mu, double lr,
                          double eps_in, double eps, double pmul)
    void so_scale_row_f(Py_ssize_t d, float* x, float f)
    void so_scale_row_d(Py_ssize_t d, double* x, double f)
    double so_row_sumsq_f(Py_ssize_t d, const float* x)
    double so_row_sumsq_d(Py_ssize_t d, const double* x)

# Flags shared with sparseopt/optim (keep in sync with optim/_base.py).
cdef enum:
    F_AMSGRAD = 1
    F_DECAY = 2          # lazy="decay": catch up beta**skipped (and weight decay) on touch
    F_ROW_BIAS = 4       # bias_correction="row"
    F_EPS_RAW = 8        # preset torch/tensorflow: eps added to the uncorrected sqrt(v)
    F_WEIGHT_DECAY = 16
    F_CENTERED = 32
    F_MOMENTUM = 64
    F_ROWWISE = 128

# Rows fetched ahead of the one being updated; gradient rows of at least WIDE_ROW_BYTES are
# prefetched as well.
cdef enum:
    PREFETCH_AHEAD = 16
    WIDE_ROW_BYTES = 128

FLAGS = dict(AMSGRAD=F_AMSGRAD, DECAY=F_DECAY, ROW_BIAS=F_ROW_BIAS, EPS_RAW=F_EPS_RAW,
             WEIGHT_DECAY=F_WEIGHT_DECAY, CENTERED=F_CENTERED, MOMENTUM=F_MOMENTUM,
             ROWWISE=F_ROWWISE)


cdef inline const floating* _grad_row(const floating[:, ::1] values,
                                      const floating[:, ::1] scratch, int64_t s) noexcept nogil:
    if s >= 0:
        return &values[s, 0]
    return &scratch[-s - 1, 0]


cdef inline void _prefetch_grad(const floating[:, ::1] values, const floating[:, ::1] scratch,
                                int64_t s, size_t rb) noexcept nogil:
    """Prefetch the merged gradient row ``s`` when it spans two cache lines or more (1M x 64,
    cold rows: 7.6 vs 8.3 ms a step); one-line rows are read nearly in order and the hardware
    prefetcher has them (no measurable gain at width 16)."""
    if rb >= WIDE_ROW_BYTES:
        so_prefetch_row(_grad_row(values, scratch, s), rb)


cdef inline void _scale(Py_ssize_t d, floating* x, double f) noexcept nogil:
    if floating is float:
        so_scale_row_f(d, x, <float>f)
    else:
        so_scale_row_d(d, x, f)


def adam_rows_update(floating[:, ::1] param, floating[:, :] m, floating[:, :] v,
                     floating[:, ::1] vmax, const floating[:, ::1] values,
                     const floating[:, ::1] scratch, const int64_t[::1] rows,
                     const int64_t[::1] src, int64_t[::1] row_step, int64_t[::1] last_step,
                     int64_t[::1] first_step, const double[::1] pow1, const double[::1] pow2,
                     const double[::1] wdlog, int64_t t, double lr, double beta1, double beta2,
                     double eps, double pmul_now, int flags, int n_threads):
    """Adam / AdamW / AMSGrad on the unique rows ``rows`` at step ``t`` (in place).

    ``row_step`` (frozen, row bias): steps that touched each row. ``last_step`` and
    ``first_step`` (decay mode): the step through which a row's state is current and its first
    touch (0 = never). ``pmul_now`` = 1 - lr * weight_decay for this step.
    """
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja
    cdef int64_t r, ra, last, skipped, tau
    cdef double b1e, b2e, pm, bc1, bc2, a, c
    cdef bint ams = flags & F_AMSGRAD, decay = flags & F_DECAY, rowb = flags & F_ROW_BIAS
    cdef bint raw = flags & F_EPS_RAW, wd = flags & F_WEIGHT_DECAY
    cdef floating* vm
    cdef const floating* g
    cdef size_t rb = d * sizeof(floating)
    cdef double omb1 = 1.0 - beta1, omb2 = 1.0 - beta2
    with nogil:
        for j in prange(nr, num_threads=n_threads, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_row(&param[ra, 0], rb)
                so_prefetch_row(&m[ra, 0], rb)
                so_prefetch_row(&v[ra, 0], rb)
                _prefetch_grad(values, scratch, src[ja], rb)
                # the per-row counters are one more random access per row
                if decay:
                    so_prefetch_row(&last_step[ra], 8)
                    if rowb:
                        so_prefetch_row(&first_step[ra], 8)
                elif rowb:
                    so_prefetch_row(&row_step[ra], 8)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            pm = pmul_now
            if decay:
                last = last_step[r]
                skipped = t - last - 1
                if rowb and first_step[r] == 0:
                    first_step[r] = t
                b1e = beta1 * pow1[skipped]
                b2e = beta2 * pow2[skipped]
                if wd:
                    pm = pmul_now * exp(wdlog[t - 1] - wdlog[last])
                last_step[r] = t
                tau = t - first_step[r] + 1 if rowb else t
            else:
                b1e = beta1
                b2e = beta2
                if rowb:
                    tau = row_step[r] + 1
                    row_step[r] = tau
                else:
                    tau = t
            bc1 = 1.0 - pow1[tau]
            bc2 = 1.0 - pow2[tau]
            if raw:
                a = lr * sqrt(bc2) / bc1
                c = 1.0
            else:
                a = lr / bc1
                c = 1.0 / sqrt(bc2)
            vm = &vmax[r, 0] if ams else NULL
            if floating is float:
                so_adam_row_f(d, &param[r, 0], &m[r, 0], &v[r, 0], vm, g, <float>b1e,
                              <float>omb1, <float>b2e, <float>omb2, <float>a, <float>c,
                              <float>eps, <float>pm)
            else:
                so_adam_row_d(d, &param[r, 0], &m[r, 0], &v[r, 0], vm, g, b1e, omb1, b2e,
                              omb2, a, c, eps, pm)


def adagrad_rows_update(floating[:, ::1] param, floating[:, ::1] state_sum,
                        const floating[:, ::1] values, const floating[:, ::1] scratch,
                        const int64_t[::1] rows, const int64_t[::1] src, double clr,
                        double eps, double pmul, int flags, int n_threads):
    """Adagrad on the unique rows ``rows`` (in place) with effective rate ``clr``.

    With ``F_ROWWISE`` the accumulator has one column: ``G_r += mean(g^2)`` (sum taken in
    float64), then ``p <- pmul*p - clr*g/(sqrt(G_r) + eps)``.
    """
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja
    cdef int64_t r, ra
    cdef bint rowwise = flags & F_ROWWISE
    cdef const floating* g
    cdef floating gsum
    cdef double k
    cdef size_t rb = d * sizeof(floating)
    with nogil:
        for j in prange(nr, num_threads=n_threads, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_row(&param[ra, 0], rb)
                if not rowwise:
                    so_prefetch_row(&state_sum[ra, 0], rb)
                _prefetch_grad(values, scratch, src[ja], rb)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            if rowwise:
                if floating is float:
                    gsum = state_sum[r, 0] + <float>(so_row_sumsq_f(d, g) / d)
                else:
                    gsum = state_sum[r, 0] + so_row_sumsq_d(d, g) / d
                state_sum[r, 0] = gsum
                k = clr / (sqrt(<double>gsum) + eps)
                if floating is float:
                    so_axpby_row_f(d, &param[r, 0], g, <float>k, <float>pmul)
                else:
                    so_axpby_row_d(d, &param[r, 0], g, k, pmul)
            elif floating is float:
                so_adagrad_row_f(d, &param[r, 0], &state_sum[r, 0], g, <float>clr, <float>eps,
                                 <float>pmul)
            else:
                so_adagrad_row_d(d, &param[r, 0], &state_sum[r, 0], g, clr, eps, pmul)


def rmsprop_rows_update(floating[:, ::1] param, floating[:, ::1] v, floating[:, ::1] ga,
                        floating[:, ::1] buf, const floating[:, ::1] values,
                        const floating[:, ::1] scratch, const int64_t[::1] rows,
                        const int64_t[::1] src, int64_t[::1] last_step,
                        const double[::1] powa, const double[::1] powmu,
                        const double[::1] wdlog, int64_t t, double lr, double alpha,
                        double momentum, double eps_in, double eps, double pmul_now, int flags,
                        int n_threads):
    """RMSprop (centred and/or with momentum) on the unique rows ``rows`` (in place)."""
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja
    cdef int64_t r, ra, last, skipped
    cdef double ale, mue, pm
    cdef bint decay = flags & F_DECAY, wd = flags & F_WEIGHT_DECAY
    cdef bint centered = flags & F_CENTERED, mom = flags & F_MOMENTUM
    cdef floating* pga
    cdef floating* pbuf
    cdef const floating* g
    cdef size_t rb = d * sizeof(floating)
    cdef double oma = 1.0 - alpha
    with nogil:
        for j in prange(nr, num_threads=n_threads, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_row(&param[ra, 0], rb)
                so_prefetch_row(&v[ra, 0], rb)
                if centered:
                    so_prefetch_row(&ga[ra, 0], rb)
                if mom:
                    so_prefetch_row(&buf[ra, 0], rb)
                if decay:
                    so_prefetch_row(&last_step[ra], 8)
                _prefetch_grad(values, scratch, src[ja], rb)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            pm = pmul_now
            ale = alpha
            mue = momentum
            if decay:
                last = last_step[r]
                skipped = t - last - 1
                ale = alpha * powa[skipped]
                if mom:  # powmu is a 1-element dummy without momentum
                    mue = momentum * powmu[skipped]
                if wd:
                    pm = pmul_now * exp(wdlog[t - 1] - wdlog[last])
                last_step[r] = t
            pga = &ga[r, 0] if centered else NULL
            pbuf = &buf[r, 0] if mom else NULL
            if floating is float:
                so_rmsprop_row_f(d, &param[r, 0], &v[r, 0], pga, pbuf, g, <float>ale,
                                 <float>oma, <float>mue, <float>lr, <float>eps_in, <float>eps,
                                 <float>pm)
            else:
                so_rmsprop_row_d(d, &param[r, 0], &v[r, 0], pga, pbuf, g, ale, oma, mue, lr,
                                 eps_in, eps, pm)


def sgd_rows_update(floating[:, ::1] param, const floating[:, ::1] values,
                    const floating[:, ::1] scratch, const int64_t[::1] rows,
                    const int64_t[::1] src, double lr, int n_threads):
    """Plain SGD on the unique rows ``rows``: ``p <- p - lr * g`` (in place; no state)."""
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja
    cdef int64_t r
    cdef const floating* g
    cdef size_t rb = d * sizeof(floating)
    with nogil:
        for j in prange(nr, num_threads=n_threads, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                so_prefetch_row(&param[rows[ja], 0], rb)
                _prefetch_grad(values, scratch, src[ja], rb)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            # pmul = 1: 1 * p is p exactly, so this is p - lr * g
            if floating is float:
                so_axpby_row_f(d, &param[r, 0], g, <float>lr, 1.0)
            else:
                so_axpby_row_d(d, &param[r, 0], g, lr, 1.0)


def flush_decay(floating[:, ::1] param, floating[:, :] s0, floating[:, :] s1,
                floating[:, :] s2, const double[::1] pw0, const double[::1] pw1,
                const double[::1] pw2, int n_states, int64_t[::1] last_step,
                const double[::1] wdlog, int64_t t, bint wd, int n_threads):
    """Bring every row's pending decay up to step ``t``: ``s_i *= pw_i[t - last]`` for the
    first ``n_states`` state arrays, ``param *= exp(wdlog[t] - wdlog[last])`` when ``wd``,
    then ``last = t``."""
    cdef Py_ssize_t n = param.shape[0], d = param.shape[1], r
    cdef int64_t last, sk
    with nogil:
        for r in prange(n, num_threads=n_threads, schedule="static"):
            last = last_step[r]
            sk = t - last
            if sk <= 0:
                continue
            if n_states > 0:
                _scale(s0.shape[1], &s0[r, 0], pw0[sk])
            if n_states > 1:
                _scale(s1.shape[1], &s1[r, 0], pw1[sk])
            if n_states > 2:
                _scale(s2.shape[1], &s2[r, 0], pw2[sk])
            if wd:
                _scale(d, &param[r, 0], exp(wdlog[t] - wdlog[last]))
            last_step[r] = t
