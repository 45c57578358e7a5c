"""Row-update kernels for half-precision parameters (bfloat16 or float16 storage).

Each kernel is the float32 kernel of the same name in ``_rows.pyx`` with the parameter stored
as 16-bit words: a touched row is widened into a per-thread float32 scratch row (exact), the
float32 row rule of ``_rowops.h`` updates it together with the float32 state, and the row is
rounded back on store (``_halfops.h``: round to nearest even, or stochastic rounding for
bfloat16 from a counter-based hash of (stream, step, row, column)). Untouched rows are never
read or written.

Preconditions are those of ``_rows.pyx`` with ``param`` a ``(n_rows, d)`` uint16 view of the
half-precision table and every state, gradient and scratch array float32; ``kind`` is
``KIND["bfloat16"]`` or ``KIND["float16"]``; ``stochastic`` is set only with bfloat16;
``stream`` is the optimizer's seed with the parameter index in its upper 32 bits, and ``step``
the parameter's step (the key of that step's random bits). Rows are independent and a row's
random bits depend only on its key, so every thread count gives the same bits.
"""
from libc.math cimport sqrt, exp
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from cython.parallel cimport prange, parallel

from ._rowops cimport (
    _scale, so_adagrad_row_f, so_adam_row_f, so_axpby_row_f, so_prefetch_read_l2,
    so_prefetch_write_l2, so_rmsprop_row_f, so_row_sumsq_f,
)

cdef extern from "_halfops.h" nogil:
    int SO_HALF_BF16
    int SO_HALF_F16
    float so_bf16_to_f32(uint16_t h)
    float so_f16_to_f32(uint16_t h)
    uint32_t so_sr_row_key(uint64_t stream, int64_t step, int64_t row)
    void so_half_load(Py_ssize_t d, float* out, const uint16_t* h, int kind)
    void so_half_store(Py_ssize_t d, uint16_t* h, const float* x, int kind, int stochastic,
                       uint32_t k)

KIND = dict(bfloat16=SO_HALF_BF16, float16=SO_HALF_F16)

# Shared with _rows.pyx (keep in sync).
cdef enum:
    F_AMSGRAD = 1
    F_DECAY = 2
    F_ROW_BIAS = 4
    F_EPS_RAW = 8
    F_WEIGHT_DECAY = 16
    F_CENTERED = 32
    F_MOMENTUM = 64
    F_ROWWISE = 128

cdef enum:
    PREFETCH_AHEAD = 16
    WIDE_ROW_BYTES = 128
    POW_RADIX = 256
    POW_DIGIT_BITS = 8


cdef inline double _power(const double* tab, int64_t n) noexcept nogil:
    """``beta**n`` from a power table: ``_rows._power`` (the same rule, bit for bit)."""
    cdef uint64_t u = <uint64_t>n
    cdef double f = tab[u & (POW_RADIX - 1)]
    u >>= POW_DIGIT_BITS
    while u != 0:
        tab += POW_RADIX
        f *= tab[u & (POW_RADIX - 1)]
        u >>= POW_DIGIT_BITS
    return f


cdef inline int64_t _clamp(int64_t x, int64_t lo, int64_t hi) noexcept nogil:
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


cdef inline const float* _grad_row(const float[:, ::1] values, const float[:, ::1] scratch,
                                   int64_t s) noexcept nogil:
    if s >= 0:
        return &values[s, 0]
    return &scratch[-s - 1, 0]


cdef inline void _prefetch_grad(const float[:, ::1] values, const float[:, ::1] scratch,
                                int64_t s, size_t rb) noexcept nogil:
    if rb >= WIDE_ROW_BYTES:
        so_prefetch_read_l2(_grad_row(values, scratch, s), rb)


cdef inline void _store(Py_ssize_t d, uint16_t* h, const float* x, int kind, bint stochastic,
                        uint64_t stream, int64_t step, int64_t r) noexcept nogil:
    so_half_store(d, h, x, kind, stochastic,
                  so_sr_row_key(stream, step, r) if stochastic else 0)


cdef float* _scratch_row(Py_ssize_t d) noexcept nogil:
    """A float32 scratch row for one thread (at least one element, so never NULL for d=0)."""
    return <float*>malloc((d + 1) * sizeof(float))


def widen(const uint16_t[:, ::1] h, int kind):
    """The float32 values of a ``(n, d)`` table of 16-bit words (for tests and conversions)."""
    import numpy as np
    out = np.empty((h.shape[0], h.shape[1]), dtype=np.float32)
    cdef float[:, ::1] o = out
    cdef Py_ssize_t r
    for r in range(h.shape[0]):
        so_half_load(h.shape[1], &o[r, 0], &h[r, 0], kind)
    return out


def narrow(const float[:, ::1] x, uint16_t[:, ::1] h, int kind, bint stochastic,
           uint64_t stream, int64_t step):
    """``h <- x`` rounded as a kernel stores a row; row ``r`` uses the key of (stream, step,
    r). ``x`` and ``h`` have one shape."""
    if x.shape[0] != h.shape[0] or x.shape[1] != h.shape[1]:
        raise ValueError("narrow() needs arrays of one shape")
    cdef Py_ssize_t r
    for r in range(x.shape[0]):
        _store(x.shape[1], &h[r, 0], &x[r, 0], kind, stochastic, stream, step, r)


def adam_rows_update(uint16_t[:, ::1] param, float[:, :] m, float[:, :] v,
                     float[:, ::1] vmax, const float[:, ::1] values,
                     const float[:, ::1] scratch, const int64_t[::1] rows,
                     const int64_t[::1] src, int64_t[::1] row_step, int64_t[::1] last_step,
                     int64_t[::1] first_step, const double[:, ::1] pow1,
                     const double[:, ::1] pow2, double[::1] row_wd, int64_t t, double lr,
                     double beta1, double beta2, double eps, double pmul_now, double wd_prev,
                     double wd_now, int flags, int n_threads, int kind, bint stochastic,
                     uint64_t stream, int64_t step):
    """``_rows.adam_rows_update`` on a half-precision parameter."""
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja
    cdef int64_t r, ra, last, first, tau
    cdef double b1e, b2e, pm, bc1, bc2, a, c
    cdef bint ams = flags & F_AMSGRAD, decay = flags & F_DECAY, rowb = flags & F_ROW_BIAS
    cdef bint raw = flags & F_EPS_RAW, wd = flags & F_WEIGHT_DECAY
    cdef float* vm
    cdef float* w
    cdef const float* g
    cdef size_t rb = d * sizeof(float), hb = d * sizeof(uint16_t)
    cdef double omb1 = 1.0 - beta1, omb2 = 1.0 - beta2
    cdef const double* p1 = &pow1[0, 0]
    cdef const double* p2 = &pow2[0, 0]
    if nr == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        w = _scratch_row(d)
        for j in prange(nr, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_write_l2(&param[ra, 0], hb)
                so_prefetch_write_l2(&m[ra, 0], rb)
                so_prefetch_write_l2(&v[ra, 0], rb)
                _prefetch_grad(values, scratch, src[ja], rb)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            pm = pmul_now
            if decay:
                last = _clamp(last_step[r], 0, t - 1)
                b1e = beta1 * _power(p1, t - 1 - last)
                b2e = beta2 * _power(p2, t - 1 - last)
                if wd:
                    pm = pmul_now * exp(wd_prev - row_wd[r])
                    row_wd[r] = wd_now
                last_step[r] = t
                if rowb:
                    first = first_step[r]
                    if first < 1 or first > t:
                        first = t
                        first_step[r] = t
                    tau = t - first + 1
                else:
                    tau = t
            else:
                b1e = beta1
                b2e = beta2
                if rowb:
                    tau = _clamp(row_step[r], 0, t - 1) + 1
                    row_step[r] = tau
                else:
                    tau = t
            bc1 = 1.0 - _power(p1, tau)
            bc2 = 1.0 - _power(p2, tau)
            if raw:
                a = lr * sqrt(bc2) / bc1
                c = 1.0
            else:
                a = lr / bc1
                c = 1.0 / sqrt(bc2)
            vm = &vmax[r, 0] if ams else NULL
            so_half_load(d, w, &param[r, 0], kind)
            so_adam_row_f(d, w, &m[r, 0], &v[r, 0], vm, g, <float>b1e, <float>omb1,
                          <float>b2e, <float>omb2, <float>a, <float>c, <float>eps, <float>pm)
            _store(d, &param[r, 0], w, kind, stochastic, stream, step, r)
        free(w)


def adagrad_rows_update(uint16_t[:, ::1] param, float[:, ::1] state_sum,
                        const float[:, ::1] values, const float[:, ::1] scratch,
                        const int64_t[::1] rows, const int64_t[::1] src, double clr,
                        double eps, double pmul, int flags, int n_threads, int kind,
                        bint stochastic, uint64_t stream, int64_t step):
    """``_rows.adagrad_rows_update`` on a half-precision parameter."""
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja
    cdef int64_t r, ra
    cdef bint rowwise = flags & F_ROWWISE
    cdef const float* g
    cdef float* w
    cdef float gsum
    cdef double k
    cdef size_t rb = d * sizeof(float), hb = d * sizeof(uint16_t)
    if nr == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        w = _scratch_row(d)
        for j in prange(nr, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_write_l2(&param[ra, 0], hb)
                if not rowwise:
                    so_prefetch_write_l2(&state_sum[ra, 0], rb)
                _prefetch_grad(values, scratch, src[ja], rb)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            so_half_load(d, w, &param[r, 0], kind)
            if rowwise:
                gsum = state_sum[r, 0] + <float>(so_row_sumsq_f(d, g) / d)
                state_sum[r, 0] = gsum
                k = clr / (sqrt(<double>gsum) + eps)
                so_axpby_row_f(d, w, g, <float>k, <float>pmul)
            else:
                so_adagrad_row_f(d, w, &state_sum[r, 0], g, <float>clr, <float>eps,
                                 <float>pmul)
            _store(d, &param[r, 0], w, kind, stochastic, stream, step, r)
        free(w)


def rmsprop_rows_update(uint16_t[:, ::1] param, float[:, ::1] v, float[:, ::1] ga,
                        float[:, ::1] buf, const float[:, ::1] values,
                        const float[:, ::1] scratch, const int64_t[::1] rows,
                        const int64_t[::1] src, int64_t[::1] last_step,
                        const double[:, ::1] powa, const double[:, ::1] powmu,
                        double[::1] row_wd, int64_t t, double lr, double alpha,
                        double momentum, double eps_in, double eps, double pmul_now,
                        double wd_prev, double wd_now, int flags, int n_threads, int kind,
                        bint stochastic, uint64_t stream, int64_t step):
    """``_rows.rmsprop_rows_update`` on a half-precision parameter."""
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja
    cdef int64_t r, ra, skipped
    cdef double ale, mue, pm
    cdef bint decay = flags & F_DECAY, wd = flags & F_WEIGHT_DECAY
    cdef bint centered = flags & F_CENTERED, mom = flags & F_MOMENTUM
    cdef float* pga
    cdef float* pbuf
    cdef float* w
    cdef const float* g
    cdef size_t rb = d * sizeof(float), hb = d * sizeof(uint16_t)
    cdef double oma = 1.0 - alpha
    cdef const double* pa = &powa[0, 0]
    cdef const double* pmu = &powmu[0, 0]
    if nr == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        w = _scratch_row(d)
        for j in prange(nr, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_write_l2(&param[ra, 0], hb)
                so_prefetch_write_l2(&v[ra, 0], rb)
                if centered:
                    so_prefetch_write_l2(&ga[ra, 0], rb)
                if mom:
                    so_prefetch_write_l2(&buf[ra, 0], rb)
                _prefetch_grad(values, scratch, src[ja], rb)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            pm = pmul_now
            ale = alpha
            mue = momentum
            if decay:
                skipped = t - 1 - _clamp(last_step[r], 0, t - 1)
                ale = alpha * _power(pa, skipped)
                if mom:
                    mue = momentum * _power(pmu, skipped)
                if wd:
                    pm = pmul_now * exp(wd_prev - row_wd[r])
                    row_wd[r] = wd_now
                last_step[r] = t
            pga = &ga[r, 0] if centered else NULL
            pbuf = &buf[r, 0] if mom else NULL
            so_half_load(d, w, &param[r, 0], kind)
            so_rmsprop_row_f(d, w, &v[r, 0], pga, pbuf, g, <float>ale, <float>oma, <float>mue,
                             <float>lr, <float>eps_in, <float>eps, <float>pm)
            _store(d, &param[r, 0], w, kind, stochastic, stream, step, r)
        free(w)


def sgd_rows_update(uint16_t[:, ::1] param, const float[:, ::1] values,
                    const float[:, ::1] scratch, const int64_t[::1] rows,
                    const int64_t[::1] src, double lr, int n_threads, int kind,
                    bint stochastic, uint64_t stream, int64_t step):
    """``_rows.sgd_rows_update`` on a half-precision parameter."""
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja
    cdef int64_t r
    cdef const float* g
    cdef float* w
    cdef size_t rb = d * sizeof(float), hb = d * sizeof(uint16_t)
    if nr == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        w = _scratch_row(d)
        for j in prange(nr, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                so_prefetch_write_l2(&param[rows[ja], 0], hb)
                _prefetch_grad(values, scratch, src[ja], rb)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            so_half_load(d, w, &param[r, 0], kind)
            so_axpby_row_f(d, w, g, <float>lr, 1.0)
            _store(d, &param[r, 0], w, kind, stochastic, stream, step, r)
        free(w)


def flush_decay(uint16_t[:, ::1] param, float[:, :] s0, float[:, :] s1, float[:, :] s2,
                const double[:, ::1] pw0, const double[:, ::1] pw1, const double[:, ::1] pw2,
                int n_states, int64_t[::1] last_step, double[::1] row_wd, int64_t t,
                double wd_now, bint wd, int n_threads, int kind, bint stochastic,
                uint64_t stream, int64_t step):
    """``_rows.flush_decay`` on a half-precision parameter (a row whose weight is scaled is
    rounded back with the key of step ``step``)."""
    cdef Py_ssize_t n = param.shape[0], d = param.shape[1], r
    cdef int64_t sk
    cdef float* w
    cdef const double* q0 = &pw0[0, 0]
    cdef const double* q1 = &pw1[0, 0]
    cdef const double* q2 = &pw2[0, 0]
    if n == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        w = _scratch_row(d)
        for r in prange(n, schedule="static"):
            sk = t - _clamp(last_step[r], 0, t)
            if sk == 0:
                continue
            if n_states > 0:
                _scale(s0.shape[1], &s0[r, 0], _power(q0, sk))
            if n_states > 1:
                _scale(s1.shape[1], &s1[r, 0], _power(q1, sk))
            if n_states > 2:
                _scale(s2.shape[1], &s2[r, 0], _power(q2, sk))
            if wd:
                so_half_load(d, w, &param[r, 0], kind)
                _scale(d, w, exp(wd_now - row_wd[r]))
                _store(d, &param[r, 0], w, kind, stochastic, stream, step, r)
                row_wd[r] = wd_now
            last_step[r] = t
        free(w)


# Keys of the random bits of each bfloat16 state array of a row: the row's key xor one of these
# (the weight uses the row's key itself), so no two arrays of a row share their bits.
cdef enum:
    KEY_M = 0x68e31da4
    KEY_V = 0x5297a4d1
    KEY_VMAX = 0x1b56c4e9
    KEY_SUM = 0x3c6ef372
    KEY_SQ = 0x2f8b61d5
    KEY_GA = 0x7a3c09e1
    KEY_BUF = 0x4d2a8b17

STATE_KEYS = dict(exp_avg=KEY_M, exp_avg_sq=KEY_V, max_exp_avg_sq=KEY_VMAX, sum=KEY_SUM,
                  square_avg=KEY_SQ, grad_avg=KEY_GA, momentum_buffer=KEY_BUF)


def adam_rows_update_bf16_state(unsigned char[:, ::1] param, int pkind, uint16_t[:, :] m,
                                uint16_t[:, :] v, uint16_t[:, ::1] vmax,
                                const float[:, ::1] values, const float[:, ::1] scratch,
                                const int64_t[::1] rows, const int64_t[::1] src,
                                int64_t[::1] row_step, const double[:, ::1] pow1,
                                const double[:, ::1] pow2, int64_t t, double lr, double beta1,
                                double beta2, double eps, double pmul_now, int flags,
                                int n_threads, bint stochastic, uint64_t stream, int64_t step):
    """Adam (``lazy="frozen"``) with bfloat16 moments: ``m``, ``v`` (and ``vmax``) are uint16
    views of bfloat16 bits, widened per row into float32 scratch, updated by the float32 rule
    and rounded back (the weight's rounding; keys ``row key ^ KEY_*``). ``param`` is the byte
    view of the parameter: float32 (``pkind`` = -1, updated in place) or half precision
    (``pkind`` a ``KIND``, widened and rounded as in ``adam_rows_update``)."""
    cdef Py_ssize_t nr = rows.shape[0], j, ja
    cdef Py_ssize_t d = param.shape[1] // (4 if pkind < 0 else 2)
    cdef int64_t r, ra, tau
    cdef double bc1, bc2, a, c
    cdef bint ams = flags & F_AMSGRAD, rowb = flags & F_ROW_BIAS, raw = flags & F_EPS_RAW
    cdef float* w
    cdef float* pw
    cdef float* vm
    cdef const float* g
    cdef uint32_t key
    cdef size_t rb = d * sizeof(float), hb = d * sizeof(uint16_t)
    cdef size_t pb = rb if pkind < 0 else hb
    cdef double omb1 = 1.0 - beta1, omb2 = 1.0 - beta2
    cdef const double* p1 = &pow1[0, 0]
    cdef const double* p2 = &pow2[0, 0]
    if nr == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        w = _scratch_row(4 * d)  # weight, m, v, vmax
        for j in prange(nr, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_write_l2(&param[ra, 0], pb)
                so_prefetch_write_l2(&m[ra, 0], hb)
                so_prefetch_write_l2(&v[ra, 0], hb)
                _prefetch_grad(values, scratch, src[ja], rb)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            if rowb:
                tau = _clamp(row_step[r], 0, t - 1) + 1
                row_step[r] = tau
            else:
                tau = t
            bc1 = 1.0 - _power(p1, tau)
            bc2 = 1.0 - _power(p2, tau)
            if raw:
                a = lr * sqrt(bc2) / bc1
                c = 1.0
            else:
                a = lr / bc1
                c = 1.0 / sqrt(bc2)
            if pkind < 0:
                pw = <float*>&param[r, 0]
            else:
                pw = w
                so_half_load(d, pw, <uint16_t*>&param[r, 0], pkind)
            so_half_load(d, w + d, &m[r, 0], SO_HALF_BF16)
            so_half_load(d, w + 2 * d, &v[r, 0], SO_HALF_BF16)
            vm = NULL
            if ams:
                vm = w + 3 * d
                so_half_load(d, vm, &vmax[r, 0], SO_HALF_BF16)
            so_adam_row_f(d, pw, w + d, w + 2 * d, vm, g, <float>beta1, <float>omb1,
                          <float>beta2, <float>omb2, <float>a, <float>c, <float>eps,
                          <float>pmul_now)
            key = so_sr_row_key(stream, step, r) if stochastic else 0
            so_half_store(d, &m[r, 0], w + d, SO_HALF_BF16, stochastic, key ^ KEY_M)
            so_half_store(d, &v[r, 0], w + 2 * d, SO_HALF_BF16, stochastic, key ^ KEY_V)
            if ams:
                so_half_store(d, &vmax[r, 0], vm, SO_HALF_BF16, stochastic, key ^ KEY_VMAX)
            if pkind >= 0:
                so_half_store(d, <uint16_t*>&param[r, 0], pw, pkind, stochastic, key)
        free(w)


def adagrad_rows_update_bf16_state(unsigned char[:, ::1] param, int pkind,
                                   uint16_t[:, ::1] state_sum, const float[:, ::1] values,
                                   const float[:, ::1] scratch, const int64_t[::1] rows,
                                   const int64_t[::1] src, double clr, double eps, double pmul,
                                   int n_threads, bint stochastic, uint64_t stream,
                                   int64_t step):
    """Element-wise Adagrad with a bfloat16 accumulator: ``state_sum`` is a uint16 view of
    bfloat16 bits, widened per row, updated by the float32 rule and rounded back (key
    ``row key ^ KEY_SUM``). ``param`` as in ``adam_rows_update_bf16_state``."""
    cdef Py_ssize_t nr = rows.shape[0], j, ja
    cdef Py_ssize_t d = param.shape[1] // (4 if pkind < 0 else 2)
    cdef int64_t r, ra
    cdef float* w
    cdef float* pw
    cdef const float* g
    cdef uint32_t key
    cdef size_t rb = d * sizeof(float), hb = d * sizeof(uint16_t)
    cdef size_t pb = rb if pkind < 0 else hb
    if nr == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        w = _scratch_row(2 * d)  # weight, sum
        for j in prange(nr, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_write_l2(&param[ra, 0], pb)
                so_prefetch_write_l2(&state_sum[ra, 0], hb)
                _prefetch_grad(values, scratch, src[ja], rb)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            if pkind < 0:
                pw = <float*>&param[r, 0]
            else:
                pw = w
                so_half_load(d, pw, <uint16_t*>&param[r, 0], pkind)
            so_half_load(d, w + d, &state_sum[r, 0], SO_HALF_BF16)
            so_adagrad_row_f(d, pw, w + d, g, <float>clr, <float>eps, <float>pmul)
            key = so_sr_row_key(stream, step, r) if stochastic else 0
            so_half_store(d, &state_sum[r, 0], w + d, SO_HALF_BF16, stochastic, key ^ KEY_SUM)
            if pkind >= 0:
                so_half_store(d, <uint16_t*>&param[r, 0], pw, pkind, stochastic, key)
        free(w)


def rmsprop_rows_update_bf16_state(unsigned char[:, ::1] param, int pkind, uint16_t[:, ::1] v,
                                   uint16_t[:, ::1] ga, uint16_t[:, ::1] buf,
                                   const float[:, ::1] values, const float[:, ::1] scratch,
                                   const int64_t[::1] rows, const int64_t[::1] src, double lr,
                                   double alpha, double momentum, double eps_in, double eps,
                                   double pmul_now, int flags, int n_threads, bint stochastic,
                                   uint64_t stream, int64_t step):
    """RMSprop (``lazy="frozen"``) with bfloat16 state: ``v`` (and ``ga`` when centred,
    ``buf`` with momentum) are uint16 views of bfloat16 bits, widened per row, updated by the
    float32 rule and rounded back (keys ``row key ^ KEY_*``). ``param`` as in
    ``adam_rows_update_bf16_state``."""
    cdef Py_ssize_t nr = rows.shape[0], j, ja
    cdef Py_ssize_t d = param.shape[1] // (4 if pkind < 0 else 2)
    cdef int64_t r, ra
    cdef bint centered = flags & F_CENTERED, mom = flags & F_MOMENTUM
    cdef float* w
    cdef float* pw
    cdef float* pga
    cdef float* pbuf
    cdef const float* g
    cdef uint32_t key
    cdef size_t rb = d * sizeof(float), hb = d * sizeof(uint16_t)
    cdef size_t pb = rb if pkind < 0 else hb
    cdef double oma = 1.0 - alpha
    if nr == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        w = _scratch_row(4 * d)  # weight, v, grad_avg, momentum_buffer
        for j in prange(nr, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_write_l2(&param[ra, 0], pb)
                so_prefetch_write_l2(&v[ra, 0], hb)
                _prefetch_grad(values, scratch, src[ja], rb)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            if pkind < 0:
                pw = <float*>&param[r, 0]
            else:
                pw = w
                so_half_load(d, pw, <uint16_t*>&param[r, 0], pkind)
            so_half_load(d, w + d, &v[r, 0], SO_HALF_BF16)
            pga = NULL
            pbuf = NULL
            if centered:
                pga = w + 2 * d
                so_half_load(d, pga, &ga[r, 0], SO_HALF_BF16)
            if mom:
                pbuf = w + 3 * d
                so_half_load(d, pbuf, &buf[r, 0], SO_HALF_BF16)
            so_rmsprop_row_f(d, pw, w + d, pga, pbuf, g, <float>alpha, <float>oma,
                             <float>momentum, <float>lr, <float>eps_in, <float>eps,
                             <float>pmul_now)
            key = so_sr_row_key(stream, step, r) if stochastic else 0
            so_half_store(d, &v[r, 0], w + d, SO_HALF_BF16, stochastic, key ^ KEY_SQ)
            if centered:
                so_half_store(d, &ga[r, 0], pga, SO_HALF_BF16, stochastic, key ^ KEY_GA)
            if mom:
                so_half_store(d, &buf[r, 0], pbuf, SO_HALF_BF16, stochastic, key ^ KEY_BUF)
            if pkind >= 0:
                so_half_store(d, <uint16_t*>&param[r, 0], pw, pkind, stochastic, key)
        free(w)
