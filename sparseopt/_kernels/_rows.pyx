"""Row-update kernels: ``<algorithm>_rows_update`` (Adam, Adagrad, RMSprop, FTRL, SGD) and
``flush_decay``.

Preconditions (established by ``sparseopt.optim``, never checked here):

* ``param`` and every state array are of one floating dtype, viewed as ``(n_rows, d)`` (1-D
  parameters as ``(n, 1)``; row-wise accumulators as ``(n, 1)``), with contiguous rows; Adam's
  ``m`` and ``v`` (and the arrays ``flush_decay`` scales) may be row-strided views, e.g. the two
  halves of one ``(n, 2d)`` buffer that keeps a row's moments in 512 adjacent bytes;
* ``rows`` holds unique, in-range row ids; ``src`` locates each row's merged gradient in
  ``values`` (``src >= 0``) or ``scratch`` (row ``-src - 1``), see ``_coalesce.pyx``;
* unused optional arrays are passed as 1-row dummies and the matching flag is off (unused
  power tables as a full-size table of ones, so a table is never too short);
* every scalar is float64, computed in Python; per-row powers ``beta**n`` come from a
  ``(POW_LEVELS, POW_RADIX)`` float64 table per base, ``pow[k, b] = beta**(b * 256**k)``
  (see ``_power``), and weight-decay catch-up from running sums of ``log1p(-lr_s * wd_s)``:
  ``wd_prev`` / ``wd_now`` for the parameter, ``row_wd[r]`` for the step a row was last brought
  up to date.

Counters are *not* trusted: ``state_dict()`` hands them out by reference, so any int64 may be
written into them between steps. Every counter read is clamped to the range a real run could
produce (``[0, t - 1]`` for the step a row was last current, ``[1, t]`` for a first touch) and
every power is looked up digit by digit with masked indices, so no counter value can make a
kernel read or write outside an array; a corrupt counter only gives that row a wrong (finite)
factor. ``t`` itself is checked in Python (``1 <= t < 2**63``).

The loop is ``prange`` over unique rows with a static schedule. Rows are independent, so the
result is bitwise identical for any thread count. Each iteration prefetches the rows a few
iterations ahead (random rows are latency-bound) and does one fused read-modify-write pass.
"""
from libc.math cimport sqrt, exp
from libc.stdint cimport int64_t, uint64_t
from cython cimport floating
from cython.parallel cimport prange

from ._rowops cimport (
    _scale, so_adagrad_row_d, so_adagrad_row_f, so_adam_row_d, so_adam_row_f, so_axpby_row_d,
    so_axpby_row_f, so_ftrl_row_d, so_ftrl_row_f, so_prefetch_read_l2, so_prefetch_write_l2, so_rmsprop_row_d,
    so_rmsprop_row_f, so_row_sumsq_d, so_row_sumsq_f, so_rw_adam_d, so_rw_adam_f,
    so_rw_momentum_d, so_rw_momentum_f, so_rw_sum_d, so_rw_sum_f, so_rw_sumsq_d, so_rw_sumsq_f,
)

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

# Power tables: one level per byte of a 64-bit counter, so every uint64 has a digit in every
# level and the lookups of ``_power`` stay inside a (POW_LEVELS, POW_RADIX) table for any n.
cdef enum:
    POW_LEVELS = 8
    POW_RADIX = 256
    POW_DIGIT_BITS = 8

POW_SHAPE = (POW_LEVELS, POW_RADIX)


cdef inline double _power(const double* tab, int64_t n) noexcept nogil:
    """``beta**n`` (``n >= 0``) from the table ``tab[k * 256 + b] = beta**(b * 256**k)``: the
    entry of the lowest byte of ``n``, multiplied in float64 by the entry of each higher byte
    in turn, up to the highest non-zero byte (entries for a zero byte are exactly 1.0, so
    stopping there changes no bit). ``sparseopt._reference.power`` is the same rule."""
    cdef uint64_t u = <uint64_t>n
    cdef double f = tab[u & (POW_RADIX - 1)]
    u >>= POW_DIGIT_BITS
    while u != 0:  # at most POW_LEVELS - 1 more bytes
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


def power(const double[:, ::1] tab, int64_t n):
    """``beta**n`` exactly as the kernels compute it (for tests); ``tab`` must have
    ``POW_SHAPE`` and ``n`` must be >= 0."""
    if tab.shape[0] != POW_LEVELS or tab.shape[1] != POW_RADIX or n < 0:
        raise ValueError(f"power() needs a table of shape {POW_SHAPE} and n >= 0")
    return _power(&tab[0, 0], n)


cdef inline const floating* _grad_row(const floating[:, ::1] values,
                                      const floating[:, ::1] scratch, int64_t s) noexcept nogil:
    if s >= 0:
        return &values[s, 0]
    return &scratch[-s - 1, 0]


cdef inline void _prefetch_grad(const floating[:, ::1] values, const floating[:, ::1] scratch,
                                int64_t s, size_t rb) noexcept nogil:
    """Prefetch the merged gradient row ``s`` when it spans two cache lines or more; one-line
    rows are read nearly in order and the hardware prefetcher already has them."""
    if rb >= WIDE_ROW_BYTES:
        so_prefetch_read_l2(_grad_row(values, scratch, s), rb)


cdef void _adam_rows(floating[:, ::1] param, floating[:, :] m, floating[:, :] v,
                     floating[:, ::1] vmax, const floating[:, ::1] values,
                     const floating[:, ::1] scratch, const int64_t[::1] rows,
                     const int64_t[::1] srows,
                     const int64_t[::1] src, int64_t[::1] row_step, int64_t[::1] last_step,
                     int64_t[::1] first_step, const double[:, ::1] pow1,
                     const double[:, ::1] pow2, double[::1] row_wd, int64_t t, double lr,
                     double beta1, double beta2, double eps, double pmul_now, double wd_prev,
                     double wd_now, int flags, int n_threads) noexcept:
    """The loop of ``adam_rows_update`` / ``adam_slots_update``: parameter row and lazy-decay
    counters ``rows[j]``, moment rows and ``row_step`` entry ``srows[j]``."""
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja
    cdef int64_t r, ra, s, sa, last, first, tau
    cdef double b1e, b2e, pm, bc1, bc2, a, c
    cdef bint ams = flags & F_AMSGRAD, decay = flags & F_DECAY, rowb = flags & F_ROW_BIAS
    cdef bint raw = flags & F_EPS_RAW, wd = flags & F_WEIGHT_DECAY
    cdef floating* vm
    cdef const floating* g
    cdef size_t rb = d * sizeof(floating)
    cdef double omb1 = 1.0 - beta1, omb2 = 1.0 - beta2
    cdef const double* p1 = &pow1[0, 0]
    cdef const double* p2 = &pow2[0, 0]
    with nogil:
        for j in prange(nr, num_threads=n_threads, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                sa = srows[ja]
                so_prefetch_write_l2(&param[ra, 0], rb)
                so_prefetch_write_l2(&m[sa, 0], rb)
                so_prefetch_write_l2(&v[sa, 0], rb)
                _prefetch_grad(values, scratch, src[ja], rb)
                # the per-row counters are one more random access per row
                if decay:
                    so_prefetch_write_l2(&last_step[ra], 8)
                    if rowb:
                        so_prefetch_write_l2(&first_step[ra], 8)
                    if wd:
                        so_prefetch_write_l2(&row_wd[ra], 8)
                elif rowb:
                    so_prefetch_write_l2(&row_step[sa], 8)
            r = rows[j]
            s = srows[j]
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
                    if first < 1 or first > t:  # 0: first touch now (other values: corrupt)
                        first = t
                        first_step[r] = t
                    tau = t - first + 1
                else:
                    tau = t
            else:
                b1e = beta1
                b2e = beta2
                if rowb:  # row_step is kept with the moments (by slot in compact state)
                    tau = _clamp(row_step[s], 0, t - 1) + 1
                    row_step[s] = tau
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
            vm = &vmax[s, 0] if ams else NULL
            if floating is float:
                so_adam_row_f(d, &param[r, 0], &m[s, 0], &v[s, 0], vm, g, <float>b1e,
                              <float>omb1, <float>b2e, <float>omb2, <float>a, <float>c,
                              <float>eps, <float>pm)
            else:
                so_adam_row_d(d, &param[r, 0], &m[s, 0], &v[s, 0], vm, g, b1e, omb1, b2e,
                              omb2, a, c, eps, pm)


def adam_rows_update(floating[:, ::1] param, floating[:, :] m, floating[:, :] v,
                     floating[:, ::1] vmax, const floating[:, ::1] values,
                     const floating[:, ::1] scratch, const int64_t[::1] rows,
                     const int64_t[::1] src, int64_t[::1] row_step, int64_t[::1] last_step,
                     int64_t[::1] first_step, const double[:, ::1] pow1,
                     const double[:, ::1] pow2, double[::1] row_wd, int64_t t, double lr,
                     double beta1, double beta2, double eps, double pmul_now, double wd_prev,
                     double wd_now, int flags, int n_threads):
    """Adam / AdamW / AMSGrad on the unique rows ``rows`` at step ``t >= 1`` (in place).

    ``row_step`` (frozen, row bias): steps that touched each row. ``last_step`` and
    ``first_step`` (decay mode): the step through which a row's state is current and its first
    touch (0 = never). ``pow1`` / ``pow2``: power tables of ``beta1`` / ``beta2``.
    ``pmul_now`` = 1 - lr * weight_decay for this step. With ``F_WEIGHT_DECAY`` (decay mode) a
    row also receives ``exp(wd_prev - row_wd[r])``, the factors of the steps it missed, and
    ``row_wd[r]`` becomes ``wd_now``.
    """
    _adam_rows(param, m, v, vmax, values, scratch, rows, rows, src, row_step, last_step,
               first_step, pow1, pow2, row_wd, t, lr, beta1, beta2, eps, pmul_now, wd_prev,
               wd_now, flags, n_threads)


def adam_slots_update(floating[:, ::1] param, floating[:, :] m, floating[:, :] v,
                      floating[:, ::1] vmax, const floating[:, ::1] values,
                      const floating[:, ::1] scratch, const int64_t[::1] rows,
                      const int64_t[::1] srows,
                      const int64_t[::1] src, int64_t[::1] row_step, int64_t[::1] last_step,
                      int64_t[::1] first_step, const double[:, ::1] pow1,
                      const double[:, ::1] pow2, double[::1] row_wd, int64_t t, double lr,
                      double beta1, double beta2, double eps, double pmul_now, double wd_prev,
                      double wd_now, int flags, int n_threads):
    """``adam_rows_update`` with the moments in compact slots: row ``rows[j]`` of ``param``
    (and of the lazy-decay counters ``last_step``, ``first_step``, ``row_wd``) is updated with
    moment rows ``srows[j]`` of ``m``, ``v`` and ``vmax`` and entry ``srows[j]`` of
    ``row_step`` (unique, each below their row count: ``assign_slots`` makes them)."""
    if srows.shape[0] != rows.shape[0]:
        raise ValueError("adam_slots_update needs one state row per row")
    _adam_rows(param, m, v, vmax, values, scratch, rows, srows, src, row_step, last_step,
               first_step, pow1, pow2, row_wd, t, lr, beta1, beta2, eps, pmul_now, wd_prev,
               wd_now, flags, n_threads)


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
                so_prefetch_write_l2(&param[ra, 0], rb)
                if not rowwise:
                    so_prefetch_write_l2(&state_sum[ra, 0], rb)
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
                        const double[:, ::1] powa, const double[:, ::1] powmu,
                        double[::1] row_wd, int64_t t, double lr, double alpha,
                        double momentum, double eps_in, double eps, double pmul_now,
                        double wd_prev, double wd_now, int flags, int n_threads):
    """RMSprop (centred and/or with momentum) on the unique rows ``rows`` at step ``t >= 1``
    (in place). Decay mode: ``last_step``, the power tables ``powa`` / ``powmu`` of ``alpha``
    / ``momentum`` and the weight-decay catch-up as in ``adam_rows_update``."""
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja
    cdef int64_t r, ra, skipped
    cdef double ale, mue, pm
    cdef bint decay = flags & F_DECAY, wd = flags & F_WEIGHT_DECAY
    cdef bint centered = flags & F_CENTERED, mom = flags & F_MOMENTUM
    cdef floating* pga
    cdef floating* pbuf
    cdef const floating* g
    cdef size_t rb = d * sizeof(floating)
    cdef double oma = 1.0 - alpha
    cdef const double* pa = &powa[0, 0]
    cdef const double* pmu = &powmu[0, 0]
    with nogil:
        for j in prange(nr, num_threads=n_threads, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_write_l2(&param[ra, 0], rb)
                so_prefetch_write_l2(&v[ra, 0], rb)
                if centered:
                    so_prefetch_write_l2(&ga[ra, 0], rb)
                if mom:
                    so_prefetch_write_l2(&buf[ra, 0], rb)
                if decay:
                    so_prefetch_write_l2(&last_step[ra], 8)
                    if wd:
                        so_prefetch_write_l2(&row_wd[ra], 8)
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
            if floating is float:
                so_rmsprop_row_f(d, &param[r, 0], &v[r, 0], pga, pbuf, g, <float>ale,
                                 <float>oma, <float>mue, <float>lr, <float>eps_in, <float>eps,
                                 <float>pm)
            else:
                so_rmsprop_row_d(d, &param[r, 0], &v[r, 0], pga, pbuf, g, ale, oma, mue, lr,
                                 eps_in, eps, pm)


def ftrl_rows_update(floating[:, ::1] param, floating[:, ::1] z, floating[:, ::1] n,
                     const floating[:, ::1] values, const floating[:, ::1] scratch,
                     const int64_t[::1] rows, const int64_t[::1] src, double lr, double b0,
                     double l1, double l2, double shr, double pw, int64_t free_row,
                     int n_threads):
    """FTRL-Proximal on the unique rows ``rows`` (in place): ``z``, ``n`` and the weights of
    each touched row from its merged gradient (the rule: ``so_ftrl_row`` in ``_rowops.h``).
    Row ``free_row`` (-1: none; a linear model's intercept) takes no penalty: ``l1``, ``l2``
    and ``shr`` are 0 for it.
    FTRL owes an untouched row nothing (its weights are a function of its own ``z`` and
    ``n``), so there is no lazy mode. ``b0``, ``l2`` and ``shr`` carry the preset's
    convention (``sparseopt.optim.Ftrl._kernel_scalars``)."""
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja
    cdef int64_t r, ra
    cdef const floating* g
    cdef size_t rb = d * sizeof(floating)
    with nogil:
        for j in prange(nr, num_threads=n_threads, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_write_l2(&param[ra, 0], rb)
                so_prefetch_write_l2(&z[ra, 0], rb)
                so_prefetch_write_l2(&n[ra, 0], rb)
                _prefetch_grad(values, scratch, src[ja], rb)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            if r == free_row:
                if floating is float:
                    so_ftrl_row_f(d, &param[r, 0], &z[r, 0], &n[r, 0], g, <float>lr,
                                  <float>b0, 0.0, 0.0, 0.0, <float>pw)
                else:
                    so_ftrl_row_d(d, &param[r, 0], &z[r, 0], &n[r, 0], g, lr, b0, 0.0, 0.0, 0.0,
                                  pw)
            elif floating is float:
                so_ftrl_row_f(d, &param[r, 0], &z[r, 0], &n[r, 0], g, <float>lr, <float>b0,
                              <float>l1, <float>l2, <float>shr, <float>pw)
            else:
                so_ftrl_row_d(d, &param[r, 0], &z[r, 0], &n[r, 0], g, lr, b0, l1, l2, shr, pw)


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
                so_prefetch_write_l2(&param[rows[ja], 0], rb)
                _prefetch_grad(values, scratch, src[ja], rb)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            # pmul = 1: 1 * p is p exactly, so this is p - lr * g
            if floating is float:
                so_axpby_row_f(d, &param[r, 0], g, <float>lr, 1.0)
            else:
                so_axpby_row_d(d, &param[r, 0], g, lr, 1.0)


def flush_decay(floating[:, ::1] param, floating[:, :] s0, floating[:, :] s1,
                floating[:, :] s2, const double[:, ::1] pw0, const double[:, ::1] pw1,
                const double[:, ::1] pw2, int n_states, int64_t[::1] last_step,
                double[::1] row_wd, int64_t t, double wd_now, bint wd, int n_threads):
    """Bring every row's pending decay up to step ``t``: ``s_i *= beta_i**(t - last)`` for the
    first ``n_states`` state arrays (``pw_i``: power tables), and when ``wd``
    ``param *= exp(wd_now - row_wd[r])``, ``row_wd[r] = wd_now``; then ``last = t``."""
    cdef Py_ssize_t n = param.shape[0], d = param.shape[1], r
    cdef int64_t sk
    cdef const double* q0 = &pw0[0, 0]
    cdef const double* q1 = &pw1[0, 0]
    cdef const double* q2 = &pw2[0, 0]
    with nogil:
        for r in prange(n, num_threads=n_threads, schedule="static"):
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
                _scale(d, &param[r, 0], exp(wd_now - row_wd[r]))
                row_wd[r] = wd_now
            last_step[r] = t


# --------------------------------------------------------------------------- compact slots
# A compact table keeps the state rows of the rows it has touched in *slots*, handed out in the
# order rows are first touched: ``slot_of_row[r]`` is 0 for a row without one, else its slot + 1,
# and ``row_of_slot[s]`` the row slot ``s`` belongs to (the first ``n_used`` entries). Both maps
# are state a user can overwrite, so every slot read from them is checked against the other map
# before a kernel uses it.


def assign_slots(const int64_t[::1] rows, int64_t[::1] slot_of_row, int64_t[::1] row_of_slot,
                 int64_t n_used, int64_t[::1] srows):
    """The state row of each of the unique in-range ``rows`` in ``srows``, giving the rows
    without a slot the next free ones in their order (one thread, so the slots do not depend on
    the thread count). Returns the new ``n_used``, or ``-1 - j`` when the slot of ``rows[j]``
    is corrupt (outside ``[1, n_used]`` or not mapped back to ``rows[j]``) or no slot is free
    for it; a refusal takes back the slots given to the rows before ``j``, so the maps are as
    they were. Every ``srows`` written is a row below ``row_of_slot.shape[0]``."""
    cdef Py_ssize_t nr = rows.shape[0], j, k, cap = row_of_slot.shape[0]
    cdef int64_t r, s, start = n_used
    if srows.shape[0] < nr or n_used < 0 or n_used > cap:
        raise ValueError("assign_slots: srows is too short or n_used is outside the capacity")
    cdef int64_t bad = 0
    with nogil:
        for j in range(nr):
            r = rows[j]
            s = slot_of_row[r]
            if s == 0:
                if n_used >= cap:
                    bad = -1 - j
                    break
                row_of_slot[n_used] = r
                n_used += 1
                s = n_used
                slot_of_row[r] = s
            elif s < 0 or s > n_used or row_of_slot[s - 1] != r:
                bad = -1 - j
                break
            srows[j] = s - 1
        if bad:
            # the slots given before row j are the ones at or above start, each still mapped
            # to its row (a corrupt slot is refused before anything is written for it)
            for k in range(j):
                if srows[k] >= start:
                    slot_of_row[rows[k]] = 0
                    row_of_slot[srows[k]] = 0
    return bad if bad else n_used


def release_slots(int64_t[::1] slot_of_row, int64_t[::1] row_of_slot, int64_t start,
                  int64_t n_used):
    """Take back the slots ``[start, n_used)`` given by ``assign_slots`` (a step refused after
    its slots were assigned): their rows get no slot and their entries of ``row_of_slot`` are
    zero again. Bounds are checked: an entry that does not map back is left as it is."""
    cdef Py_ssize_t n = slot_of_row.shape[0]
    cdef int64_t s, r
    if start < 0 or n_used > row_of_slot.shape[0] or start > n_used:
        raise ValueError("release_slots: the range is outside the capacity")
    with nogil:
        for s in range(start, n_used):
            r = row_of_slot[s]
            if 0 <= r < n and slot_of_row[r] == s + 1:
                slot_of_row[r] = 0
            row_of_slot[s] = 0


def flush_decay_slots(floating[:, ::1] param, floating[:, :] s0, floating[:, :] s1,
                      floating[:, :] s2, const double[:, ::1] pw0, const double[:, ::1] pw1,
                      const double[:, ::1] pw2, int n_states, int64_t[::1] last_step,
                      double[::1] row_wd, const int64_t[::1] slot_of_row, int64_t t,
                      double wd_now, bint wd, int n_threads):
    """``flush_decay`` with the state arrays in compact slots: row ``r``'s state is row
    ``slot_of_row[r] - 1`` of ``s_i``; a row without a slot (or with one outside the arrays)
    has no state to scale."""
    cdef Py_ssize_t n = param.shape[0], d = param.shape[1], r
    cdef int64_t sk, s, cap = s0.shape[0]
    cdef const double* q0 = &pw0[0, 0]
    cdef const double* q1 = &pw1[0, 0]
    cdef const double* q2 = &pw2[0, 0]
    if n_states > 1 and s1.shape[0] < cap:
        cap = s1.shape[0]
    if n_states > 2 and s2.shape[0] < cap:
        cap = s2.shape[0]
    if slot_of_row.shape[0] != n:
        raise ValueError("flush_decay_slots needs one slot entry per row")
    with nogil:
        for r in prange(n, num_threads=n_threads, schedule="static"):
            sk = t - _clamp(last_step[r], 0, t)
            if sk == 0:
                continue
            s = slot_of_row[r] - 1
            if n_states > 0 and 0 <= s < cap:
                _scale(s0.shape[1], &s0[s, 0], _power(q0, sk))
                if n_states > 1:
                    _scale(s1.shape[1], &s1[s, 0], _power(q1, sk))
                if n_states > 2:
                    _scale(s2.shape[1], &s2[s, 0], _power(q2, sk))
            if wd:
                _scale(d, &param[r, 0], exp(wd_now - row_wd[r]))
                row_wd[r] = wd_now
            last_step[r] = t


# --------------------------------------------------------------------------- row-wise moments
cdef inline double _rw_sumsq(Py_ssize_t d, const floating* g) noexcept nogil:
    if floating is float:
        return so_rw_sumsq_f(d, g)
    else:
        return so_rw_sumsq_d(d, g)


cdef inline double _rw_sum(Py_ssize_t d, const floating* g) noexcept nogil:
    if floating is float:
        return so_rw_sum_f(d, g)
    else:
        return so_rw_sum_d(d, g)

# Adam and RMSprop with one second moment per row (FBGEMM's row-wise state): the per-element
# square g_j**2 is replaced by the row mean mean_j(g_j**2), summed in float64 (``so_rw_sumsq``,
# ``_rowops.h``) and rounded once to the state dtype, so the step divides a whole row by one scalar.
# The lazy bookkeeping (counters, power tables, weight-decay catch-up) is that of the
# element-wise kernels above; the scalar state arrays are (n, 1) views.
#
# Column groups (``*_split_update``, ``0 < tail < d``): a row is two groups, its leading
# ``d - tail`` columns and its last ``tail`` (e.g. a bias kept beside factors, whose gradient is
# on another scale), each with its own scalars: the state arrays are (n, 2), column 0 for the
# head, 1 for the tail, and each group is updated by the one-group rule over its own columns.
# They are kernels of their own: a group loop in the one-group kernels cost them 5-20% of
# compute on cache-resident rows.


cdef inline void _group(Py_ssize_t d, Py_ssize_t tail, Py_ssize_t grp, Py_ssize_t* lo,
                        Py_ssize_t* w) noexcept nogil:
    """Columns ``[lo, lo + w)`` of group ``grp`` (0: the head, 1: the tail)."""
    if grp == 0:
        lo[0] = 0
        w[0] = d - tail
    else:
        lo[0] = d - tail
        w[0] = tail


def adam_rowwise_update(floating[:, ::1] param, floating[:, ::1] m, floating[:, ::1] v,
                        floating[:, ::1] vmax, const floating[:, ::1] values,
                        const floating[:, ::1] scratch, const int64_t[::1] rows,
                        const int64_t[::1] src, int64_t[::1] row_step, int64_t[::1] last_step,
                        int64_t[::1] first_step, const double[:, ::1] pow1,
                        const double[:, ::1] pow2, double[::1] row_wd, int64_t t, double lr,
                        double beta1, double beta2, double eps, double pmul_now,
                        double wd_prev, double wd_now, int flags, int n_threads):
    """Partial row-wise Adam on the unique rows ``rows`` at step ``t >= 1`` (in place): ``m``
    is ``(n, d)``, ``v`` (and ``vmax`` with ``F_AMSGRAD``) ``(n, 1)``. Per row::

        m <- b1e*m + (1-b1)*g ;  v <- b2e*v + (1-b2)*mean(g**2) ;  vm = max(vmax, v) or v
        k = a / (sqrt(vm)*c + eps)   (float64, rounded once) ;  p <- pm*p - k*m

    with ``a``, ``c`` the bias-correction scalars of ``adam_rows_update`` and the same counter,
    decay and weight-decay rules."""
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja
    cdef int64_t r, ra, last, first, tau
    cdef double b1e, b2e, pm, bc1, bc2, a, c, k
    cdef bint ams = flags & F_AMSGRAD, decay = flags & F_DECAY, rowb = flags & F_ROW_BIAS
    cdef bint raw = flags & F_EPS_RAW, wd = flags & F_WEIGHT_DECAY
    cdef const floating* g
    cdef floating vs
    cdef size_t rb = d * sizeof(floating)
    cdef double omb1 = 1.0 - beta1, omb2 = 1.0 - beta2
    cdef const double* p1 = &pow1[0, 0]
    cdef const double* p2 = &pow2[0, 0]
    with nogil:
        for j in prange(nr, num_threads=n_threads, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_write_l2(&param[ra, 0], rb)
                so_prefetch_write_l2(&m[ra, 0], rb)
                so_prefetch_write_l2(&v[ra, 0], sizeof(floating))
                if ams:
                    so_prefetch_write_l2(&vmax[ra, 0], sizeof(floating))
                _prefetch_grad(values, scratch, src[ja], rb)
                # the per-row counters are one more random access per row
                if decay:
                    so_prefetch_write_l2(&last_step[ra], 8)
                    if rowb:
                        so_prefetch_write_l2(&first_step[ra], 8)
                    if wd:
                        so_prefetch_write_l2(&row_wd[ra], 8)
                elif rowb:
                    so_prefetch_write_l2(&row_step[ra], 8)
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
                    if first < 1 or first > t:  # 0: first touch now (other values: corrupt)
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
            vs = <floating>b2e * v[r, 0] + <floating>omb2 * <floating>(_rw_sumsq(d, g) / d)
            v[r, 0] = vs
            if ams:
                if vmax[r, 0] > vs:
                    vs = vmax[r, 0]
                vmax[r, 0] = vs
            k = a / (sqrt(<double>vs) * c + eps)
            if floating is float:
                so_rw_adam_f(d, &param[r, 0], &m[r, 0], g, <float>b1e, <float>omb1, <float>k,
                             <float>pm)
            else:
                so_rw_adam_d(d, &param[r, 0], &m[r, 0], g, b1e, omb1, k, pm)


def rmsprop_rowwise_update(floating[:, ::1] param, floating[:, ::1] v, floating[:, ::1] ga,
                           floating[:, ::1] buf, const floating[:, ::1] values,
                           const floating[:, ::1] scratch, const int64_t[::1] rows,
                           const int64_t[::1] src, int64_t[::1] last_step,
                           const double[:, ::1] powa, const double[:, ::1] powmu,
                           double[::1] row_wd, int64_t t, double lr, double alpha,
                           double momentum, double eps_in, double eps, double pmul_now,
                           double wd_prev, double wd_now, int flags, int n_threads):
    """Row-wise RMSprop on the unique rows ``rows`` at step ``t >= 1`` (in place): ``v`` and
    (``F_CENTERED``) ``ga`` are ``(n, 1)``, ``buf`` (``F_MOMENTUM``) ``(n, d)``. Per row::

        v <- ale*v + (1-alpha)*mean(g**2) ;  centred: ga <- ale*ga + (1-alpha)*mean(g)
        den = sqrt(v - ga**2 + eps_in) + eps   (float64; ga = 0 when not centred)
        momentum: buf <- mue*buf + (1/den)*g ; p <- pm*p - lr*buf
        otherwise:                             p <- pm*p - (lr/den)*g

    (the scalars ``1/den`` and ``lr/den`` rounded once to the state dtype), with the counter,
    decay and weight-decay rules of ``rmsprop_rows_update``."""
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja
    cdef int64_t r, ra, skipped
    cdef double ale, mue, pm, den, s1, s2
    cdef bint decay = flags & F_DECAY, wd = flags & F_WEIGHT_DECAY
    cdef bint centered = flags & F_CENTERED, mom = flags & F_MOMENTUM
    cdef const floating* g
    cdef floating vs, gs
    cdef size_t rb = d * sizeof(floating)
    cdef double oma = 1.0 - alpha
    cdef const double* pa = &powa[0, 0]
    cdef const double* pmu = &powmu[0, 0]
    with nogil:
        for j in prange(nr, num_threads=n_threads, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_write_l2(&param[ra, 0], rb)
                so_prefetch_write_l2(&v[ra, 0], sizeof(floating))
                if centered:
                    so_prefetch_write_l2(&ga[ra, 0], sizeof(floating))
                if mom:
                    so_prefetch_write_l2(&buf[ra, 0], rb)
                if decay:
                    so_prefetch_write_l2(&last_step[ra], 8)
                    if wd:
                        so_prefetch_write_l2(&row_wd[ra], 8)
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
            s2 = _rw_sumsq(d, g)
            vs = <floating>ale * v[r, 0] + <floating>oma * <floating>(s2 / d)
            v[r, 0] = vs
            if centered:
                s1 = _rw_sum(d, g)
                gs = <floating>ale * ga[r, 0] + <floating>oma * <floating>(s1 / d)
                ga[r, 0] = gs
                den = sqrt(<double>(vs - gs * gs) + eps_in) + eps
            else:
                den = sqrt(<double>vs + eps_in) + eps
            if floating is float:
                if mom:
                    so_rw_momentum_f(d, &param[r, 0], &buf[r, 0], g, <float>mue,
                                     <float>(1.0 / den), <float>lr, <float>pm)
                else:
                    so_axpby_row_f(d, &param[r, 0], g, <float>(lr / den), <float>pm)
            else:
                if mom:
                    so_rw_momentum_d(d, &param[r, 0], &buf[r, 0], g, mue, 1.0 / den, lr, pm)
                else:
                    so_axpby_row_d(d, &param[r, 0], g, lr / den, pm)


def adam_rowwise_split_update(floating[:, ::1] param, floating[:, ::1] m,
                              floating[:, ::1] v, floating[:, ::1] vmax,
                              const floating[:, ::1] values, const floating[:, ::1] scratch,
                              const int64_t[::1] rows, const int64_t[::1] src,
                              int64_t[::1] row_step, int64_t[::1] last_step,
                              int64_t[::1] first_step, const double[:, ::1] pow1,
                              const double[:, ::1] pow2, double[::1] row_wd, int64_t t,
                              double lr, double beta1, double beta2, double eps,
                              double pmul_now, double wd_prev, double wd_now, int flags,
                              int n_threads, Py_ssize_t tail):
    """``adam_rowwise_update`` with two column groups (``0 < tail < d``): ``v`` (and ``vmax``)
    are ``(n, 2)`` and each group runs the one-group rule over its own columns, with the row's
    shared counters, bias correction, decay and weight decay."""
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja, grp, lo, w
    cdef Py_ssize_t ng = 2
    cdef int64_t r, ra, last, first, tau
    cdef double b1e, b2e, pm, bc1, bc2, a, c, k
    cdef bint ams = flags & F_AMSGRAD, decay = flags & F_DECAY, rowb = flags & F_ROW_BIAS
    cdef bint raw = flags & F_EPS_RAW, wd = flags & F_WEIGHT_DECAY
    cdef const floating* g
    cdef floating vs
    cdef size_t rb = d * sizeof(floating)
    cdef double omb1 = 1.0 - beta1, omb2 = 1.0 - beta2
    cdef const double* p1 = &pow1[0, 0]
    cdef const double* p2 = &pow2[0, 0]
    with nogil:
        for j in prange(nr, num_threads=n_threads, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_write_l2(&param[ra, 0], rb)
                so_prefetch_write_l2(&m[ra, 0], rb)
                so_prefetch_write_l2(&v[ra, 0], ng * sizeof(floating))
                if ams:
                    so_prefetch_write_l2(&vmax[ra, 0], ng * sizeof(floating))
                _prefetch_grad(values, scratch, src[ja], rb)
                # the per-row counters are one more random access per row
                if decay:
                    so_prefetch_write_l2(&last_step[ra], 8)
                    if rowb:
                        so_prefetch_write_l2(&first_step[ra], 8)
                    if wd:
                        so_prefetch_write_l2(&row_wd[ra], 8)
                elif rowb:
                    so_prefetch_write_l2(&row_step[ra], 8)
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
                    if first < 1 or first > t:  # 0: first touch now (other values: corrupt)
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
            for grp in range(ng):
                _group(d, tail, grp, &lo, &w)
                vs = (<floating>b2e * v[r, grp]
                      + <floating>omb2 * <floating>(_rw_sumsq(w, g + lo) / w))
                v[r, grp] = vs
                if ams:
                    if vmax[r, grp] > vs:
                        vs = vmax[r, grp]
                    vmax[r, grp] = vs
                k = a / (sqrt(<double>vs) * c + eps)
                if floating is float:
                    so_rw_adam_f(w, &param[r, lo], &m[r, lo], g + lo, <float>b1e, <float>omb1,
                                 <float>k, <float>pm)
                else:
                    so_rw_adam_d(w, &param[r, lo], &m[r, lo], g + lo, b1e, omb1, k, pm)


def rmsprop_rowwise_split_update(floating[:, ::1] param, floating[:, ::1] v,
                                 floating[:, ::1] ga, floating[:, ::1] buf,
                                 const floating[:, ::1] values, const floating[:, ::1] scratch,
                                 const int64_t[::1] rows, const int64_t[::1] src,
                                 int64_t[::1] last_step, const double[:, ::1] powa,
                                 const double[:, ::1] powmu, double[::1] row_wd, int64_t t,
                                 double lr, double alpha, double momentum, double eps_in,
                                 double eps, double pmul_now, double wd_prev, double wd_now,
                                 int flags, int n_threads, Py_ssize_t tail):
    """``rmsprop_rowwise_update`` with two column groups (``0 < tail < d``): ``v`` (and ``ga``)
    are ``(n, 2)`` and each group runs the one-group rule over its own columns, with the row's
    shared decay and weight decay; ``buf`` stays ``(n, d)``."""
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja, grp, lo, w
    cdef Py_ssize_t ng = 2
    cdef int64_t r, ra, skipped
    cdef double ale, mue, pm, den, s1, s2
    cdef bint decay = flags & F_DECAY, wd = flags & F_WEIGHT_DECAY
    cdef bint centered = flags & F_CENTERED, mom = flags & F_MOMENTUM
    cdef const floating* g
    cdef floating vs, gs
    cdef size_t rb = d * sizeof(floating)
    cdef double oma = 1.0 - alpha
    cdef const double* pa = &powa[0, 0]
    cdef const double* pmu = &powmu[0, 0]
    with nogil:
        for j in prange(nr, num_threads=n_threads, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_write_l2(&param[ra, 0], rb)
                so_prefetch_write_l2(&v[ra, 0], ng * sizeof(floating))
                if centered:
                    so_prefetch_write_l2(&ga[ra, 0], ng * sizeof(floating))
                if mom:
                    so_prefetch_write_l2(&buf[ra, 0], rb)
                if decay:
                    so_prefetch_write_l2(&last_step[ra], 8)
                    if wd:
                        so_prefetch_write_l2(&row_wd[ra], 8)
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
            for grp in range(ng):
                _group(d, tail, grp, &lo, &w)
                s2 = _rw_sumsq(w, g + lo)
                vs = <floating>ale * v[r, grp] + <floating>oma * <floating>(s2 / w)
                v[r, grp] = vs
                if centered:
                    s1 = _rw_sum(w, g + lo)
                    gs = <floating>ale * ga[r, grp] + <floating>oma * <floating>(s1 / w)
                    ga[r, grp] = gs
                    den = sqrt(<double>(vs - gs * gs) + eps_in) + eps
                else:
                    den = sqrt(<double>vs + eps_in) + eps
                if floating is float:
                    if mom:
                        so_rw_momentum_f(w, &param[r, lo], &buf[r, lo], g + lo, <float>mue,
                                         <float>(1.0 / den), <float>lr, <float>pm)
                    else:
                        so_axpby_row_f(w, &param[r, lo], g + lo, <float>(lr / den), <float>pm)
                else:
                    if mom:
                        so_rw_momentum_d(w, &param[r, lo], &buf[r, lo], g + lo, mue, 1.0 / den,
                                         lr, pm)
                    else:
                        so_axpby_row_d(w, &param[r, lo], g + lo, lr / den, pm)


def adagrad_rowwise_update(floating[:, ::1] param, floating[:, ::1] state_sum,
                           const floating[:, ::1] values, const floating[:, ::1] scratch,
                           const int64_t[::1] rows, const int64_t[::1] src, double clr,
                           double eps, double pmul, Py_ssize_t tail, int n_threads):
    """Row-wise Adagrad with column groups (``0 < tail < d``): ``state_sum`` is ``(n, 2)`` and
    each group runs the row-wise rule of ``adagrad_rows_update`` over its own columns,
    ``G_r,k += mean_k(g**2)`` (float64 sum), ``p_k <- pmul*p_k - clr*g_k/(sqrt(G_r,k) + eps)``.
    """
    cdef Py_ssize_t nr = rows.shape[0], d = param.shape[1], j, ja, grp, lo, w
    cdef int64_t r, ra
    cdef const floating* g
    cdef floating gsum
    cdef double k
    cdef size_t rb = d * sizeof(floating)
    with nogil:
        for j in prange(nr, num_threads=n_threads, schedule="static"):
            ja = j + PREFETCH_AHEAD
            if ja < nr:
                ra = rows[ja]
                so_prefetch_write_l2(&param[ra, 0], rb)
                so_prefetch_write_l2(&state_sum[ra, 0], 2 * sizeof(floating))
                _prefetch_grad(values, scratch, src[ja], rb)
            r = rows[j]
            g = _grad_row(values, scratch, src[j])
            for grp in range(2):
                _group(d, tail, grp, &lo, &w)
                if floating is float:
                    gsum = state_sum[r, grp] + <float>(so_row_sumsq_f(w, g + lo) / w)
                else:
                    gsum = state_sum[r, grp] + so_row_sumsq_d(w, g + lo) / w
                state_sum[r, grp] = gsum
                k = clr / (sqrt(<double>gsum) + eps)
                if floating is float:
                    so_axpby_row_f(w, &param[r, lo], g + lo, <float>k, <float>pmul)
                else:
                    so_axpby_row_d(w, &param[r, lo], g + lo, k, pmul)
