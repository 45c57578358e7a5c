"""Fused mini-batch kernels of ``sparseopt.linear_model``.

One call of the gradient kernel does, for the samples ``order[start:stop]`` of a CSR matrix
and feature-major weights ``W`` of shape ``(n_rows, K)`` (row ``n_feat`` is the intercept when
the table has it):

1. collect the unique features of the batch in order of first appearance (a slot per row of
   a narrow table, else an open-addressing hash table sized to the batch), the intercept row
   first;
2. catch those rows up on the lazy penalty and the running average they missed (see
   ``_catch_up``);
3. compute every sample's margins ``wscale * (X_i @ W + b)``, its loss and the loss
   derivative ``dloss``, scaled by ``sample_weight / (stop - start)``: the gradient is that of
   the batch's sample-weighted mean loss;
4. scatter ``X_batch.T @ dloss`` into ``G[:m]`` next to ``rows[:m]``: a row gradient ready for
   ``sparseopt.RowGrad`` and the optimizer's ``step`` (``optimizer="sgd"`` included).

Its arguments are four bundles, bound once per training call (declared in ``_linear.pxd``):

* ``CSRSamples``   X as CSR, targets, sample weights and the visiting order;
* ``LinearModel``  the weight table, its number of feature rows and the loss;
* ``BatchScratch`` work arrays sized for the call's batches, the thread plan, and the output
  ``rows``/``G``;
* ``LazyPenalty``  flags, per-row steps, running sum and segment tables of the lazy penalty
  and averaging, plus the per-step scalars ``step``, ``avg_from`` and ``wscale``;

and the batch ``start, stop``. ``gradient_kernel(dtype, index_dtype)`` returns the
specialisation for float32/float64 values and int32/int64 indices; it checks in O(1) that the
bundles it is given agree with it and with each other, so a mismatch is a TypeError or a
ValueError, never a read of an unbound view.

Preconditions (established by ``sparseopt.linear_model``, never checked here):

* every index of X lies in ``[0, n_feat)`` and ``indptr`` is non-decreasing; ``order`` holds
  valid sample ids;
* ``y`` is +1/-1 for binary losses, the class index for ``L_SOFTMAX`` and one-vs-rest
  (``K > 1``), the target for regression;
* ``BatchScratch.reserve`` was given at least the largest number of stored entries of a batch;
* the lazy-penalty tables (float64, built in Python for the current segment of steps, whose
  rates are ``eta_1, eta_2, ...``): ``E[s] = sum_{u<=s} eta_u``, ``Q[s] = prod_{u<=s} c_u``
  with ``c_u = 1 - eta_u*l2``, ``cum_a[s] = sum_{u<=s} eta_u*l1 / Q[u]``,
  ``cum_q[s] = sum_{u<=s} Q[u]``, ``cum_aq[s] = sum_{u<=s} cum_a[u]*Q[u]``; ``pen_step[j]`` is
  the step through which row j is current, at most ``step - 1``. Plain SGD's penalty step
  scales by ``c_u`` and soft-thresholds by ``eta_u*l1``; with the ``PRE`` flag (adaptive
  optimizers) it moves a coefficient along the flow ``dw/dtau = -(l1*sign(w) + l2*w)`` for
  ``tau`` in ``[0, h*eta_u]`` instead, ``h`` the optimizer's step multiplier of that
  coefficient, read from the bound optimizer state (constant between two updates of the row,
  because the optimizer leaves untouched rows and their state unchanged), and only ``E`` is
  read. Either way L1 is scikit-learn's cumulative penalty (``_pay_debt``);
* ``wscale`` multiplies every row of ``W``: the weight-scaling trick of the L2-only penalty
  (see ``sparseopt/linear_model/_lazy.py``); 1 otherwise.

Per-sample work runs in ``prange`` over samples (each writes only its own ``dz`` row and
``sample_loss`` entry), the catch-up in ``prange`` over unique rows; the scatter and the loss
sum are serial, in sample order, so results are bitwise identical for any thread count.

``py_loss`` and ``py_softmax_loss`` expose the loss functions themselves, so that each can be
compared with its formula without running the whole kernel.
"""
import numpy as np

from libc.math cimport exp, expm1, log, log1p, fabs, copysign, sqrt, pow
from libc.stdint cimport int32_t, int64_t, uint64_t, INT64_MAX
from libc.string cimport memset
from cython cimport floating
from cython.parallel cimport prange

from ._rowops cimport index_t, so_prefetch_line_write, so_prefetch_read

cdef enum:
    L_LOG = 0                        # log(1 + exp(-y p)), y in {-1, +1} (as scikit-learn)
    L_HINGE = 1                      # max(0, param - y p); the perceptron has param 0
    L_SQUARED_HINGE = 2              # max(0, param - y p)**2
    L_MODIFIED_HUBER = 3
    L_SOFTMAX = 4                    # multinomial log-loss, y = class index
    L_SQUARED = 5                    # (p - y)**2 / 2
    L_HUBER = 6                      # param = epsilon
    L_EPS_INSENSITIVE = 7            # param = epsilon
    L_SQUARED_EPS_INSENSITIVE = 8    # param = epsilon

cdef enum:
    # Rows / samples looked up ahead of the one being processed (random accesses).
    PREFETCH_ROWS = 8
    PREFETCH_SAMPLES = 6   # samples whose CSR rows are prefetched ahead

cdef enum:
    P_L2 = 1
    P_L1 = 2
    P_AVG = 4
    P_PRE = 8        # the penalty's step carries the optimizer's per-coefficient multiplier

cdef enum:
    PRE_NONE = 0
    PRE_SQRT = 1     # h = 1 / (sqrt(S) + eps): Adagrad's sum, RMSprop's square_avg
    PRE_ADAM = 2     # h = 1 / (sqrt(S / (1 - beta2**row_step)) + eps): Adam's exp_avg_sq

LOSSES = dict(log=L_LOG, hinge=L_HINGE, squared_hinge=L_SQUARED_HINGE,
              modified_huber=L_MODIFIED_HUBER, softmax=L_SOFTMAX, squared=L_SQUARED,
              huber=L_HUBER, epsilon_insensitive=L_EPS_INSENSITIVE,
              squared_epsilon_insensitive=L_SQUARED_EPS_INSENSITIVE)
PENALTY_FLAGS = dict(L2=P_L2, L1=P_L1, AVG=P_AVG, PRE=P_PRE)
PRECONDITIONERS = dict(sqrt=PRE_SQRT, adam=PRE_ADAM)
# ``LazyPenalty.avg_from`` while averaging has not started: later than any step of a segment
AVERAGE_NOT_STARTED = INT64_MAX // 4

# Tables of at most this many rows find a batch's unique rows through a slot per row (an int32
# array of at most 256 KiB, which stays in cache): one load per stored entry, where the hash
# table costs a multiply, a probe loop and a key table twice the batch's entries.
DIRECT_MAX_ROWS = 1 << 16

# As scikit-learn's _sgd_fast: a derivative this large only comes from a diverging model.
cdef double MAX_DLOSS = 1e12


# --------------------------------------------------------------------------- losses

cdef inline double _log1pexp(double x) noexcept nogil:
    """``log(1 + exp(x))``, piecewise as scikit-learn computes it."""
    if x <= -37.0:
        return exp(x)
    if x <= -2.0:
        return log1p(exp(x))
    if x <= 18.0:
        return log(1.0 + exp(x))
    if x <= 33.3:
        return x + exp(-x)
    return x


cdef inline double _loss(int loss, double p, double y, double c, double* dl) noexcept nogil:
    """Loss of one output; writes d loss / d p to ``dl`` (scikit-learn's formulas)."""
    cdef double z, r
    if loss == L_LOG:
        # scikit-learn's half binomial loss of y_true = (y + 1) / 2, term for term, so that
        # plain SGD with batch_size=1 retraces scikit-learn's steps
        z = 0.5 * (y + 1.0)
        if p > -37.0:
            r = exp(-p)
            dl[0] = ((1.0 - z) - z * r) / (1.0 + r)
        else:
            dl[0] = exp(p) - z
        return _log1pexp(p) - z * p
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


cdef inline double _softmax(double* z, Py_ssize_t K, Py_ssize_t cls,
                            double wi) noexcept nogil:
    """Multinomial log-loss of the margins ``z[:K]`` for class ``cls``; then
    ``z[k] <- dloss_k * wi``. The derivative is bounded by 1, so it is not clipped."""
    cdef Py_ssize_t k
    cdef double mx, s, lse, d, lossv
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


# What the margins of a sample need besides its entries: constant over a kernel call.
cdef struct _Margins:
    Py_ssize_t K            # outputs
    bint intercept          # row 0 of the compact table is the intercept
    double wscale           # the weight-scaling trick's factor
    int loss
    double loss_param


cdef inline double _sample(const int32_t* ind, const floating* val, Py_ssize_t nnz,
                           const floating* W, const _Margins* mg, double yi, double wi,
                           double* z) noexcept nogil:
    """Margins ``wscale * (x @ W + bias)`` of one sample into ``z[:K]`` (``ind`` indexes rows
    of the compact table ``W``), then ``z[k] <- dloss_k * wi``; returns the loss."""
    cdef Py_ssize_t K = mg.K, e, k, cls
    cdef const floating* bias = W if mg.intercept else NULL
    cdef double wscale = mg.wscale, c = mg.loss_param
    cdef int loss = mg.loss
    cdef double acc, x, d, lossv, yk
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
        return _softmax(z, K, cls, wi)
    # one-vs-rest: output k is the binary problem "class k against the rest"
    lossv = 0.0
    for k in range(K):
        yk = 1.0 if k == cls else -1.0
        lossv = lossv + _loss(loss, z[k], yk, c, &d)
        z[k] = _clip(d) * wi
    return lossv


# --------------------------------------------------------------------------- lazy catch-up

# The current segment's tables and flags, as the per-row catch-up reads them.
cdef struct _Segment:
    const double* E         # E[s]: the sum of the step rates of steps 1..s of the segment
    double* debt            # L1 debts, row j at debt + j * 2K: K owed by positive values,
                            # then K by negative ones (with P_L1)
    const double* Q
    const double* cum_a
    const double* cum_q
    const double* cum_aq
    int64_t avg_from
    int flags
    # the optimizer's step multipliers (flag P_PRE): h = 1 / (sqrt(S[j, k] * bias_j) + eps)
    int precond             # PRE_SQRT or PRE_ADAM (bias_j = 1 / (1 - beta2**row_step[j]))
    const char* S           # row j of S starts at S + j * s_stride (bytes); unit inner stride
    Py_ssize_t s_stride
    const int64_t* row_step
    double eps, beta2
    double l1, l2


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


cdef inline double _flow(double a, double T, double l1, double l2) noexcept nogil:
    """``|w|`` after the penalty's flow ``dw/dtau = -(l1 sign(w) + l2 w)`` for a time ``T``
    from ``|w| = a`` (0 once it reaches 0): ``a e^-x - (l1/l2)(1 - e^-x)`` with
    ``x = l2 T`` (``expm1`` keeps small ``x`` exact), or ``a - l1 T`` without L2. NaN -> 0."""
    cdef double x, r
    if l2 > 0.0:
        x = l2 * T
        r = a * exp(-x)
        if l1 > 0.0:
            r = r + (l1 / l2) * expm1(-x)
    else:
        r = a - l1 * T
    return r if r > 0.0 else 0.0


cdef inline double _row_bias(const _Segment* seg, int64_t j) noexcept nogil:
    """Adam's ``1 / (1 - beta2**tau)`` of row ``j`` (0 before its first update, whose second
    moment is 0); 1 for the accumulators that need no correction."""
    cdef int64_t tau
    if seg.precond != PRE_ADAM:
        return 1.0
    tau = seg.row_step[j]
    if tau <= 0:
        return 0.0
    return 1.0 / (1.0 - pow(seg.beta2, <double>tau))


cdef inline double _zero_time(double a, double l1, double l2) noexcept nogil:
    """The time the penalty's flow takes to bring ``|w| = a`` to 0 (L1 needed)."""
    if l2 > 0.0:
        return log1p(a * l2 / l1) / l2
    return a / l1


cdef inline void _charge(double* debt, double sign, double paid, Py_ssize_t K) noexcept nogil:
    """A coefficient of ``sign`` took ``paid`` of L1: its side owes that much less, the other
    side that much more (scikit-learn's signed record of the penalty received)."""
    if sign > 0.0:
        debt[0] -= paid
        debt[K] += paid
    else:
        debt[K] -= paid
        debt[0] += paid


cdef inline double _pay_debt(double wabs, double sign, double* debt,
                             Py_ssize_t K) noexcept nogil:
    """``|w|`` after paying the L1 debt of its sign, as far as it goes: ``debt[0]`` is what a
    positive value owes, ``debt[K]`` what a negative one owes (scikit-learn's cumulative L1
    penalty, Tsuruoka, Tsujii & Ananiadou 2009)."""
    cdef double pay, d
    if wabs == 0.0:
        return 0.0
    d = debt[0] if sign > 0.0 else debt[K]
    if not d > 0.0:
        return wabs
    pay = wabs if wabs < d else d
    _charge(debt, sign, pay, K)
    return wabs - pay


cdef inline void _accrue(double* debt, double wabs, double sign, double T, double l1,
                         double l2, Py_ssize_t K) noexcept nogil:
    """L1 time ``T`` passes: both sides owe ``l1 * T`` more, and the flow from ``wabs`` pays
    what it applies (until it reaches 0)."""
    cdef double applied
    debt[0] += l1 * T
    debt[K] += l1 * T
    if wabs > 0.0:
        applied = T
        if T > _zero_time(wabs, l1, l2):
            applied = _zero_time(wabs, l1, l2)
        _charge(debt, sign, l1 * applied, K)


cdef inline void _catch_up_preconditioned(floating* w, double* avg, double* debt,
                                          Py_ssize_t K, int64_t j, int64_t p, int64_t q,
                                          int64_t s1, const _Segment* seg) noexcept nogil:
    """``_catch_up`` with a step multiplier ``h`` per coefficient (flag ``P_PRE``): the
    coefficient pays its debt, then follows the penalty's flow for ``h * (E[q] - E[p])``.
    With the average, the value at the end of each step ``s1..q`` is added, one step at a time
    (``h`` differs per coefficient, so no table sums the exponentials)."""
    cdef const floating* srow = <const floating*>(seg.S + j * seg.s_stride)
    cdef double bias = _row_bias(seg, j)
    cdef double l1 = seg.l1, l2 = seg.l2, dE = seg.E[q] - seg.E[p], ep = seg.E[p]
    cdef double h, wabs, v, sign, T
    cdef Py_ssize_t k
    cdef int64_t s
    for k in range(K):
        wabs = fabs(<double>w[k])
        sign = copysign(1.0, <double>w[k])
        if debt != NULL:
            wabs = _pay_debt(wabs, sign, &debt[k], K)
        elif wabs == 0.0:
            continue
        # h is 0 while the second moment is 0: no step size yet, no penalty (nor debt)
        v = <double>srow[k] * bias
        h = 1.0 / (sqrt(v) + seg.eps) if v > 0.0 else 0.0
        T = h * dE
        if debt != NULL:
            _accrue(&debt[k], wabs, sign, T, l1, l2, K)
        if wabs == 0.0:
            w[k] = 0.0
            continue
        if avg != NULL:
            for s in range(s1, q + 1):
                v = _flow(wabs, h * (seg.E[s] - ep), l1, l2)
                if v == 0.0:
                    break
                avg[k] += sign * v
        v = _flow(wabs, T, l1, l2)
        w[k] = <floating>(sign * v) if v > 0.0 else 0.0


cdef inline void _catch_up(floating* w, double* avg, Py_ssize_t K, int64_t j, int64_t p,
                           int64_t q, bint penalized, const _Segment* seg) noexcept nogil:
    """Bring row ``j`` (``w``) from step ``p`` to step ``q``: apply the penalty of steps
    ``p+1..q`` and add the row's values at the end of each step ``s >= avg_from`` to ``avg``
    (NULL: no average).

    The penalty of a step first takes the L1 debt a coefficient owes (``_pay_debt``); both
    debts then grow by the step's L1 and its sign's side pays the L1 the step applies
    (``_charge``). Only the first of the steps can find debt to pay (after it the coefficient
    is 0 or owes nothing). Plain SGD's steps (this function; ``h = 1``) scale by
    ``c_s = 1 - eta_s*l2`` and then soft-threshold by ``eta_s*l1``, so that over steps
    ``p+1..s`` ``|w_s| = max(0, |w_p| - Q_p (A_s - A_p)) * Q_s / Q_p`` with
    ``Q_s = prod c_u`` and ``A_s = sum eta_u*l1 / Q_u``; the sum of ``w_s`` over a range of
    steps follows from the cumulative tables, with a binary search for the step where L1
    reaches zero. With a multiplier per coefficient (``P_PRE``) the step is the penalty's
    flow instead: see ``_catch_up_preconditioned``.
    """
    cdef const double* Q = seg.Q
    cdef const double* cum_a = seg.cum_a
    cdef const double* cum_q = seg.cum_q
    cdef const double* cum_aq = seg.cum_aq
    cdef int64_t avg_from = seg.avg_from
    cdef int flags = seg.flags
    cdef bint l1 = flags & P_L1, l2 = flags & P_L2, av = (flags & P_AVG) and avg != NULL
    cdef double* debt = (seg.debt + j * 2 * K) if (l1 and seg.debt != NULL) else NULL
    cdef int64_t s1, ss
    cdef Py_ssize_t k
    cdef double ratio, f, qp, shrink, wabs, r, tot, nw, dE, sign, applied
    if q <= p:
        return
    s1 = p + 1 if p + 1 > avg_from else avg_from
    av = av and q >= s1
    if not penalized or not (l1 or l2):
        if av:
            for k in range(K):
                avg[k] += <double>w[k] * <double>(q - s1 + 1)
        return
    if flags & P_PRE:
        _catch_up_preconditioned(w, avg if av else NULL, debt, K, j, p, q, s1, seg)
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
    dE = seg.E[q] - seg.E[p]
    for k in range(K):
        wabs = fabs(<double>w[k])
        sign = copysign(1.0, <double>w[k])
        if debt != NULL:
            wabs = _pay_debt(wabs, sign, &debt[k], K)
            debt[k] += seg.l1 * dE
            debt[k + K] += seg.l1 * dE
        if wabs == 0.0:
            w[k] = 0.0
            continue
        r = wabs / qp + cum_a[p]
        if av:
            ss = _last_below(cum_a, s1, q, r)
            if ss >= s1:
                tot = r * (cum_q[ss] - cum_q[s1 - 1]) - (cum_aq[ss] - cum_aq[s1 - 1])
                if tot > 0.0:
                    avg[k] += sign * tot
        nw = wabs - shrink
        if nw > 0.0:
            w[k] = <floating>(sign * nw * ratio)
            applied = seg.l1 * dE
        else:
            w[k] = 0.0
            # steps p+1..ss keep it positive; step ss+1 takes what its shrink left of it
            ss = _last_below(cum_a, p + 1, q, r)
            applied = seg.l1 * (seg.E[ss] - seg.E[p]) + Q[ss + 1] * (r - cum_a[ss])
        if debt != NULL:
            _charge(&debt[k], sign, applied, K)


cdef inline _Segment _segment(LazyPenalty penalty) noexcept:
    """The tables of ``penalty`` as raw pointers (NULL when none are bound)."""
    cdef _Segment seg
    seg.flags = penalty.flags
    seg.avg_from = penalty.avg_from
    seg.l1 = penalty.l1
    seg.l2 = penalty.l2
    if penalty.segment_length > 0:
        seg.E = &penalty.E[0]
        seg.Q = &penalty.Q[0]
        seg.cum_a = &penalty.cum_a[0]
        seg.cum_q = &penalty.cum_q[0]
        seg.cum_aq = &penalty.cum_aq[0]
    else:
        seg.E = seg.Q = seg.cum_a = seg.cum_q = seg.cum_aq = NULL
    seg.debt = &penalty.debt[0, 0] if penalty.flags & P_L1 else NULL
    seg.precond = penalty.precond
    seg.S = NULL
    seg.s_stride = 0
    seg.row_step = NULL
    seg.eps = penalty.eps
    seg.beta2 = penalty.beta2
    if penalty.precond != PRE_NONE:
        if penalty.s_bits == 32:
            seg.S = <const char*>&penalty.S32[0, 0]
            seg.s_stride = penalty.S32.strides[0]
        else:
            seg.S = <const char*>&penalty.S64[0, 0]
            seg.s_stride = penalty.S64.strides[0]
        if penalty.precond == PRE_ADAM:
            seg.row_step = &penalty.row_step[0]
    return seg


# --------------------------------------------------------------------------- the kernels

cdef object _gradient(const index_t[::1] indptr, const index_t[::1] indices,
                      const floating[::1] data, floating[:, ::1] W, floating[:, ::1] G,
                      floating[:, ::1] Wc, CSRSamples samples, LinearModel model,
                      BatchScratch scratch, LazyPenalty penalty, Py_ssize_t start,
                      Py_ssize_t stop):
    """The gradient kernel (module docstring). The first six arguments are the typed views
    of the bundles that follow, the ones whose type is the specialisation's."""
    cdef const int64_t[::1] order = samples.order
    cdef const double[::1] y = samples.y
    cdef const double[::1] sw = samples.sample_weight
    cdef int64_t[::1] hkeys = scratch.hkeys
    cdef int32_t[::1] hvals = scratch.hvals
    cdef int64_t[::1] hpos = scratch.hpos
    cdef bint direct = scratch.direct
    cdef int32_t* dslot = &scratch.dslot[0] if direct else NULL
    cdef int64_t[::1] rows = scratch.rows_mv
    cdef int32_t[::1] pos2u = scratch.pos2u
    cdef int64_t[::1] offsets = scratch.offsets
    cdef double[:, ::1] dz = scratch.dz
    cdef double[::1] sample_loss = scratch.sample_loss
    cdef int64_t[::1] pen_step = penalty.pen_step
    cdef int hshift = scratch.hshift, n_threads = scratch.n_threads
    cdef Py_ssize_t min_row_work = scratch.min_row_work
    cdef Py_ssize_t n_feat = model.n_feat
    cdef bint fit_intercept = model.fit_intercept
    cdef int64_t t = penalty.step
    cdef _Segment seg = _segment(penalty)
    cdef _Margins mg
    cdef Py_ssize_t K = W.shape[1], nb = stop - start, b, k, u, m = 0, pos = 0
    cdef int64_t i, j, e, e0, e1, o0, o1
    cdef int32_t sl
    cdef double x, scale, loss_sum = 0.0
    cdef const double* zb
    cdef floating* gu
    cdef bint lazy = (seg.flags & (P_L1 | P_L2 | P_AVG)) != 0
    cdef double* avg_p = &penalty.avg[0, 0] if seg.flags & P_AVG else NULL
    cdef int nt_rows
    cdef uint64_t h, hmask = hkeys.shape[0] - 1
    if nb <= 0:
        return 0, 0.0
    scale = 1.0 / <double>nb
    mg.K = K
    mg.intercept = fit_intercept
    mg.wscale = penalty.wscale
    mg.loss = model.loss
    mg.loss_param = model.loss_param
    with nogil:
        # 1. unique rows (intercept first) and the unique id of every nonzero, through a
        #    slot per row on narrow tables (DIRECT_MAX_ROWS) and otherwise an open-addressing
        #    hash table sized to the batch (it stays in cache, where a per-feature slot array
        #    would miss on every lookup of a wide table); either leaves the rows in order of
        #    first appearance
        if fit_intercept:
            rows[0] = n_feat
            m = 1
        for b in range(nb):
            # two stages, as the samples are read at random: first the sample's indptr
            # entries and the target and weight that step 3 reads, then, once its indptr is
            # in cache, its stored entries
            if b + 2 * PREFETCH_SAMPLES < nb:
                i = order[start + b + 2 * PREFETCH_SAMPLES]
                so_prefetch_read(&indptr[i], 2 * sizeof(index_t))
                so_prefetch_read(&y[i], sizeof(double))
                so_prefetch_read(&sw[i], sizeof(double))
            if b + PREFETCH_SAMPLES < nb:
                i = order[start + b + PREFETCH_SAMPLES]
                e0 = indptr[i]
                e1 = indptr[i + 1]
                so_prefetch_read(&indices[e0], (e1 - e0) * sizeof(index_t))
                so_prefetch_read(&data[e0], (e1 - e0) * sizeof(floating))
            i = order[start + b]
            e0 = indptr[i]
            e1 = indptr[i + 1]
            offsets[b] = pos
            if direct:
                for e in range(e0, e1):
                    j = indices[e]
                    sl = dslot[j]
                    if sl < 0:
                        sl = <int32_t>m
                        dslot[j] = sl
                        rows[m] = j
                        m += 1
                    pos2u[pos] = sl
                    pos += 1
                continue
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
        if direct:
            for u in range(1 if fit_intercept else 0, m):
                dslot[rows[u]] = -1
        else:
            for u in range(1 if fit_intercept else 0, m):
                hkeys[hpos[u]] = -1
        # 2. lazy penalty and average up to the end of the previous step; gather into Wc
        nt_rows = n_threads if m * K >= min_row_work else 1
        for u in prange(m, num_threads=nt_rows, schedule="static"):
            if u + PREFETCH_ROWS < m:
                so_prefetch_line_write(&W[rows[u + PREFETCH_ROWS], 0])
                if lazy:  # what the penalty's catch-up reads: the row's step and state
                    so_prefetch_line_write(&pen_step[rows[u + PREFETCH_ROWS]])
                    if seg.S != NULL:
                        so_prefetch_line_write(seg.S + rows[u + PREFETCH_ROWS] * seg.s_stride)
                    if seg.debt != NULL:
                        so_prefetch_line_write(seg.debt + rows[u + PREFETCH_ROWS] * 2 * K)
            j = rows[u]
            if lazy:
                _catch_up(&W[j, 0], (avg_p + j * K) if avg_p != NULL else NULL, K, j,
                          pen_step[j], t - 1, j < n_feat, &seg)
                pen_step[j] = t - 1
            for k in range(K):
                Wc[u, k] = W[j, k]
        # 3. margins, losses and scaled loss derivatives, one sample per iteration
        for b in prange(nb, num_threads=n_threads, schedule="static"):
            if b + PREFETCH_SAMPLES < nb:  # the batch's entries left the cache in step 2
                i = order[start + b + PREFETCH_SAMPLES]
                e0 = indptr[i]
                so_prefetch_read(&data[e0], (offsets[b + PREFETCH_SAMPLES + 1]
                                             - offsets[b + PREFETCH_SAMPLES]) * sizeof(floating))
            i = order[start + b]
            o0 = offsets[b]
            o1 = offsets[b + 1]
            e0 = indptr[i]
            sample_loss[b] = sw[i] * _sample(&pos2u[o0] if o1 > o0 else NULL,
                                             &data[e0] if o1 > o0 else NULL, o1 - o0,
                                             &Wc[0, 0], &mg, y[i], sw[i] * scale,
                                             &dz[b, 0])
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


cdef void _catch_up_rows(floating[:, ::1] W, Py_ssize_t n_feat, LazyPenalty penalty,
                         int64_t q, int n_threads) noexcept:
    """Every row of ``W`` (and of the running sum) up to step ``q``, then ``pen_step`` to 0."""
    cdef int64_t[::1] pen_step = penalty.pen_step
    cdef Py_ssize_t n = W.shape[0], K = W.shape[1], j
    cdef _Segment seg = _segment(penalty)
    cdef double* avg_p = &penalty.avg[0, 0] if seg.flags & P_AVG else NULL
    # the flow of an adaptive optimizer's penalty leaves a zero coefficient without L1 debt
    # as it is, and adds nothing to its average (_catch_up_preconditioned): such rows, most
    # rows of a wide table, are skipped
    cdef bint skip_zero = (seg.flags & P_PRE) != 0 and seg.debt == NULL
    with nogil:
        for j in prange(n, num_threads=n_threads, schedule="static"):
            if not (skip_zero and j < n_feat and _row_is_zero(&W[j, 0], K)):
                _catch_up(&W[j, 0], (avg_p + j * K) if avg_p != NULL else NULL, K, j,
                          pen_step[j], q, j < n_feat, &seg)
            if pen_step[j] != 0:  # the rows never touched keep their pages clean
                pen_step[j] = 0


cdef void _catch_up_listed_rows(floating[:, ::1] W, Py_ssize_t n_feat, LazyPenalty penalty,
                                int64_t q, const int64_t[::1] rows,
                                int n_threads) noexcept:
    """``_catch_up_rows`` for the listed rows only (unique and in range: checked by the
    caller)."""
    cdef int64_t[::1] pen_step = penalty.pen_step
    cdef Py_ssize_t m = rows.shape[0], K = W.shape[1], i, j
    cdef _Segment seg = _segment(penalty)
    cdef double* avg_p = &penalty.avg[0, 0] if seg.flags & P_AVG else NULL
    cdef bint skip_zero = (seg.flags & P_PRE) != 0 and seg.debt == NULL
    with nogil:
        for i in prange(m, num_threads=n_threads, schedule="static"):
            j = rows[i]
            if not (skip_zero and j < n_feat and _row_is_zero(&W[j, 0], K)):
                _catch_up(&W[j, 0], (avg_p + j * K) if avg_p != NULL else NULL, K, j,
                          pen_step[j], q, j < n_feat, &seg)
            if pen_step[j] != 0:
                pen_step[j] = 0


cdef inline bint _row_is_zero(const floating* w, Py_ssize_t K) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(K):
        if w[k] != 0:
            return False
    return True


# --------------------------------------------------------------------------- bundles

cdef int _float_bits(object dtype, str name) except -1:
    """32 or 64 for a float32/float64 dtype; TypeError naming ``name`` otherwise."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt == np.float32:
        return 32
    if dt == np.float64:
        return 64
    raise TypeError(f"{name} must be float32 or float64, got {dtype!r}")


cdef int _index_bits(object dtype, str name) except -1:
    """32 or 64 for an int32/int64 dtype; TypeError naming ``name`` otherwise."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt == np.int32:
        return 32
    if dt == np.int64:
        return 64
    raise TypeError(f"{name} must be int32 or int64, got {dtype!r}")


cdef object _array(object value, object dtype, int ndim, str name):
    """``value`` itself when it is a C-contiguous ndarray of ``dtype`` and ``ndim``
    dimensions (the bundles bind the caller's buffers, never a copy); TypeError otherwise."""
    if not (isinstance(value, np.ndarray) and value.dtype == dtype and value.ndim == ndim
            and value.flags.c_contiguous):
        raise TypeError(f"{name} must be a C-contiguous {ndim}-D ndarray of "
                        f"{np.dtype(dtype).name}, got {type(value).__name__} "
                        f"{getattr(value, 'dtype', '')} {getattr(value, 'shape', '')}")
    return value


cdef class CSRSamples:
    """The training samples as the gradient kernel reads them.

    Parameters
    ----------
    indptr, indices : ndarray of int32 or int64 (one type for both)
        A CSR structure whose column indices are valid for the model (checked in Python).
    data : ndarray of float32 or float64
        The stored values, of the weights' dtype.
    y, sample_weight : ndarray of float64, one per row
        Kernel targets (see the module docstring) and per-sample weights.
    order : ndarray of int64
        Sample ids in visiting order; a batch is ``order[start:stop]``. The bundle binds the
        caller's array, so permuting it in place between calls (shuffling) needs no rebinding.
    """

    def __init__(self, indptr, indices, data, y, sample_weight, order):
        self.index_bits = _index_bits(getattr(indices, "dtype", None), "indices")
        self.float_bits = _float_bits(getattr(data, "dtype", None), "data")
        self.index_dtype = np.dtype(np.int32 if self.index_bits == 32 else np.int64)
        self.dtype = np.dtype(np.float32 if self.float_bits == 32 else np.float64)
        if self.index_bits == 32:
            self.indptr32 = _array(indptr, self.index_dtype, 1, "indptr")
            self.indices32 = _array(indices, self.index_dtype, 1, "indices")
        else:
            self.indptr64 = _array(indptr, self.index_dtype, 1, "indptr")
            self.indices64 = _array(indices, self.index_dtype, 1, "indices")
        if self.float_bits == 32:
            self.data32 = _array(data, self.dtype, 1, "data")
        else:
            self.data64 = _array(data, self.dtype, 1, "data")
        self.n_samples = indptr.shape[0] - 1
        if self.n_samples < 0 or indices.shape[0] != data.shape[0]:
            raise ValueError("indptr must hold at least one entry and indices and data the "
                             "same number")
        self.y = _array(y, np.float64, 1, "y")
        self.sample_weight = _array(sample_weight, np.float64, 1, "sample_weight")
        if y.shape[0] != self.n_samples or sample_weight.shape[0] != self.n_samples:
            raise ValueError(f"y and sample_weight must hold one value per row of X "
                             f"({self.n_samples}), got {y.shape[0]} and "
                             f"{sample_weight.shape[0]}")
        self.order = _array(order, np.int64, 1, "order")
        self.n_order = order.shape[0]


cdef class LinearModel:
    """The weight table a kernel trains and the loss it is trained for.

    Parameters
    ----------
    W : ndarray of float32 or float64, shape (n_feat or n_feat + 1, K), C-contiguous
        Feature-major weights, updated in place; a row ``n_feat`` is the intercept.
    n_feat : int
        Rows of features (the lazy penalty applies to them, never to the intercept).
    loss : int
        A value of ``LOSSES``.
    loss_param : float
        The hinge margin (``L_HINGE``, ``L_SQUARED_HINGE``) or epsilon (``L_HUBER`` and the
        epsilon-insensitive losses); unused by the others.
    """

    def __init__(self, W, Py_ssize_t n_feat, int loss, double loss_param):
        self.float_bits = _float_bits(getattr(W, "dtype", None), "W")
        self.dtype = W.dtype
        if self.float_bits == 32:
            self.W32 = _array(W, self.dtype, 2, "W")
        else:
            self.W64 = _array(W, self.dtype, 2, "W")
        if not (n_feat >= 0 and W.shape[0] in (n_feat, n_feat + 1)):
            raise ValueError(f"W must have n_feat ({n_feat}) rows, or one more for the "
                             f"intercept; got {W.shape[0]}")
        if loss not in _LOSS_CODES:
            raise ValueError(f"loss must be one of {sorted(_LOSS_CODES)}, got {loss}")
        self.W = W
        self.n_feat = n_feat
        self.fit_intercept = W.shape[0] == n_feat + 1
        self.loss = loss
        self.loss_param = loss_param


cdef int _bit_length(Py_ssize_t v) noexcept:
    cdef int n = 0
    while v > 0:
        v >>= 1
        n += 1
    return n


cdef class BatchScratch:
    """Work arrays of the gradient kernel for one training call, and its thread plan.

    Parameters
    ----------
    n_rows, n_outputs : int
        Shape of the weight table.
    max_batch : int
        Samples per kernel call at most.
    dtype : float32 or float64
        The weights' dtype (of the gradient rows ``G`` and the compact copy of the touched
        weights).
    n_threads : int
        Team of the per-sample loop (chosen in Python from the batch's work); the catch-up
        and gather over unique rows uses it only when it has at least ``min_row_work``
        elements (unique rows x outputs, known only inside the kernel), else one thread.
    min_row_work : int

    After a kernel call returning ``m``, ``rows[:m]`` are the unique rows of the batch
    (intercept first, then features in order of first appearance) and ``G[:m]`` their
    gradient rows. ``reserve`` sizes the arrays that grow with a batch's stored entries.
    """

    def __init__(self, Py_ssize_t n_rows, Py_ssize_t n_outputs, Py_ssize_t max_batch, dtype,
                 int n_threads, Py_ssize_t min_row_work):
        self.float_bits = _float_bits(dtype, "dtype")
        self.dtype = np.dtype(dtype)
        if n_rows < 1 or n_outputs < 1 or max_batch < 0 or n_threads < 1:
            raise ValueError("BatchScratch needs n_rows, n_outputs, n_threads >= 1 and "
                             "max_batch >= 0")
        self.n_rows, self.n_outputs, self.max_batch = n_rows, n_outputs, max_batch
        self.n_threads, self.min_row_work = n_threads, min_row_work
        self.offsets = np.empty(max_batch + 1, dtype=np.int64)
        self.dz = np.empty((max_batch, n_outputs), dtype=np.float64)
        self.sample_loss = np.empty(max_batch, dtype=np.float64)
        self.nnz_capacity = -1
        self.direct = n_rows <= DIRECT_MAX_ROWS
        if self.direct:
            self.dslot = np.full(n_rows, -1, dtype=np.int32)
        self.reserve(0)

    def reserve(self, Py_ssize_t max_batch_nnz):
        """Make room for batches of up to ``max_batch_nnz`` stored entries. Growth is by at
        least a quarter, so a later epoch whose largest batch is a little larger does not
        reallocate every time.

        The hash table has a power-of-two size at least twice the entries (plus the
        intercept), so probe sequences stay short; the row arrays hold every row a batch can
        touch: its entries plus the intercept, at most the table's rows.
        """
        cdef Py_ssize_t grown, cap
        cdef int bits
        if max_batch_nnz <= self.nnz_capacity:
            return
        grown = <Py_ssize_t>(1.25 * self.nnz_capacity)
        self.nnz_capacity = max_batch_nnz if max_batch_nnz > grown else grown
        cap = min(self.n_rows, self.nnz_capacity + 1)
        self.pos2u = np.empty(max(self.nnz_capacity, 1), dtype=np.int32)
        bits = max(4, _bit_length(2 * (self.nnz_capacity + 1)))
        self.hkeys = np.full(1 << bits, -1, dtype=np.int64)
        self.hvals = np.empty(1 << bits, dtype=np.int32)
        self.hshift = 64 - bits
        self.hpos = np.empty(cap, dtype=np.int64)
        self.rows = np.empty(cap, dtype=np.int64)
        self.rows_mv = self.rows
        self.G = np.empty((cap, self.n_outputs), dtype=self.dtype)
        Wc = np.empty((cap, self.n_outputs), dtype=self.dtype)
        if self.float_bits == 32:
            self.G32, self.Wc32 = self.G, Wc
        else:
            self.G64, self.Wc64 = self.G, Wc

    def hash_table_is_clear(self):
        """True when every slot of the hash table (and of the per-row slots of a narrow
        table) is empty, as every kernel call leaves it."""
        clear = bool(np.all(np.asarray(self.hkeys) == -1))
        if self.direct:
            clear = clear and bool(np.all(np.asarray(self.dslot) == -1))
        return clear


cdef class LazyPenalty:
    """The lazy penalty and averaging state the kernels read and update in place.

    Parameters
    ----------
    flags : int
        ``PENALTY_FLAGS`` bits: ``L1``/``L2`` for a lazy penalty, ``AVG`` for the running sum
        of the average, ``PRE`` when each coefficient's penalty step carries the optimizer's
        step multiplier (``set_preconditioner``). 0: nothing is lazy, and no array is needed.
    pen_step : ndarray of int64, one per weight row, or None
        The step through which each row is current; required when ``flags`` is not 0.
    avg : ndarray of float64 shaped like the weights, or None
        The running sum of the average; required with ``AVG``.
    debt : ndarray of float64 of shape (n_rows, 2 * K), or None
        The L1 penalty each coefficient owes if positive (first K columns) and if negative
        (last K): scikit-learn's cumulative penalty (``_pay_debt``); required with ``L1``.
    l1, l2 : float
        ``alpha * l1_ratio`` and ``alpha * (1 - l1_ratio)``; the ``PRE`` path reads them (the
        others read the tables, built from them).

    ``set_segment`` binds the tables of the current segment of steps; the per-step scalars
    ``step`` (this step's index in the segment, from 1), ``avg_from`` (first averaged step of
    the segment, ``AVERAGE_NOT_STARTED`` before averaging starts) and ``wscale`` are plain
    attributes, set in Python before every kernel call.
    """

    def __init__(self, int flags, pen_step=None, avg=None, double l1=0.0, double l2=0.0,
                 debt=None):
        if flags & ~(P_L1 | P_L2 | P_AVG | P_PRE):
            raise ValueError(f"flags must combine {PENALTY_FLAGS}, got {flags}")
        if not (l1 >= 0.0 and l2 >= 0.0):
            raise ValueError(f"l1 and l2 must be >= 0, got {l1} and {l2}")
        self.flags = flags
        if flags:
            if pen_step is None:
                raise ValueError("pen_step is required when flags is not 0")
            self.pen_step = _array(pen_step, np.int64, 1, "pen_step")
        if flags & P_AVG:
            if avg is None:
                raise ValueError("avg is required with the AVG flag")
            self.avg = _array(avg, np.float64, 2, "avg")
        if flags & P_L1:
            if debt is None:
                raise ValueError("debt is required with the L1 flag")
            self.debt = _array(debt, np.float64, 2, "debt")
        self.l1, self.l2 = l1, l2
        self.segment_length = 0
        self.step = 0
        self.avg_from = AVERAGE_NOT_STARTED
        self.wscale = 1.0
        self.precond = PRE_NONE
        self.eps = 0.0
        self.beta2 = 0.0

    def set_segment(self, Q, cum_a, cum_q, cum_aq, E=None):
        """Bind the float64 tables of a segment of ``len(Q) - 1`` steps (module docstring);
        ``E``, the cumulative step rates, is required with the ``PRE`` flag."""
        n = len(Q)
        if E is None:
            if self.flags & P_PRE:
                raise ValueError("the PRE flag needs E, the cumulative step rates")
            E = np.zeros(n)
        self.segment_length = 0
        self.E = _array(E, np.float64, 1, "E")
        self.Q = _array(Q, np.float64, 1, "Q")
        self.cum_a = _array(cum_a, np.float64, 1, "cum_a")
        self.cum_q = _array(cum_q, np.float64, 1, "cum_q")
        self.cum_aq = _array(cum_aq, np.float64, 1, "cum_aq")
        if n < 2 or len(cum_a) < n or len(cum_q) < n or len(cum_aq) < n or len(E) < n:
            raise ValueError("the segment tables must have one entry per step plus one, and "
                             "cover at least one step")
        self.segment_length = n - 1

    def set_preconditioner(self, str kind, S, row_step=None, double eps=0.0,
                           double beta2=0.0):
        """Bind the optimizer state that gives each coefficient's step multiplier ``h``
        (``PRE`` flag): ``kind='sqrt'``: ``h = 1 / (sqrt(S) + eps)`` (Adagrad's ``sum``,
        RMSprop's ``square_avg``); ``kind='adam'``: ``h = 1 / (sqrt(S / (1 - beta2**tau)) +
        eps)`` with ``tau = row_step[j]`` (``exp_avg_sq`` and ``row_step`` of Adam with
        per-row bias correction; ``h = 1 / eps`` while ``tau`` is 0).

        ``S`` is the optimizer's array itself (float32 or float64, 2-D, rows of unit stride:
        a row-interleaved view is fine), never a copy, so the kernels read the state as the
        optimizer left it. Its shape is checked against the weight table at every call."""
        if kind not in PRECONDITIONERS:
            raise ValueError(f"kind must be one of {sorted(PRECONDITIONERS)}, got {kind!r}")
        if not (eps >= 0.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"eps must be >= 0 and beta2 in [0, 1), got {eps} and {beta2}")
        bits = _float_bits(getattr(S, "dtype", None), "S")
        if not (isinstance(S, np.ndarray) and S.ndim == 2 and S.shape[0] >= 1
                and S.shape[1] >= 1 and S.strides[1] == S.itemsize
                and S.strides[0] >= S.shape[1] * S.itemsize):
            raise TypeError("S must be a 2-D ndarray with at least one row and column, whose "
                            "rows are contiguous and do not overlap")
        code = PRECONDITIONERS[kind]
        if code == PRE_ADAM:
            if row_step is None:
                raise ValueError("kind='adam' needs row_step")
            self.row_step = _array(row_step, np.int64, 1, "row_step")
            if row_step.shape[0] != S.shape[0]:
                raise ValueError(f"row_step must hold one counter per row of S "
                                 f"({S.shape[0]}), got {row_step.shape[0]}")
        self.precond = PRE_NONE
        if bits == 32:
            self.S32 = S
        else:
            self.S64 = S
        self.s_bits, self.s_rows, self.s_cols = bits, S.shape[0], S.shape[1]
        self.eps, self.beta2 = eps, beta2
        self.precond = code


# --------------------------------------------------------------------------- entry points

cdef int _check_penalty(LazyPenalty penalty, Py_ssize_t n_rows, Py_ssize_t K,
                        int float_bits, int64_t q) except -1:
    """O(1): the penalty's arrays fit the table and its tables cover step ``q``."""
    if not penalty.flags:
        return 0
    if penalty.pen_step.shape[0] != n_rows or (
            penalty.flags & P_AVG and (penalty.avg.shape[0] != n_rows
                                       or penalty.avg.shape[1] != K)) or (
            penalty.flags & P_L1 and (penalty.debt.shape[0] != n_rows
                                      or penalty.debt.shape[1] != 2 * K)):
        raise ValueError("the LazyPenalty arrays do not match the weight table's shape")
    if not 0 <= q <= penalty.segment_length or penalty.segment_length == 0:
        raise ValueError(f"the segment tables ({penalty.segment_length} steps) do not cover "
                         f"step {q}")
    if penalty.avg_from < 1:
        raise ValueError(f"avg_from must be >= 1, got {penalty.avg_from}")
    if penalty.flags & P_PRE:
        if penalty.precond == PRE_NONE:
            if q > 0:  # a row may have steps to catch up: it needs its multipliers
                raise ValueError("the PRE flag is set but no optimizer state is bound "
                                 "(set_preconditioner)")
        elif (penalty.s_rows != n_rows or penalty.s_cols != K
              or penalty.s_bits != float_bits):
            raise ValueError(f"the optimizer state bound for the penalty "
                             f"({penalty.s_rows}, {penalty.s_cols}) of float"
                             f"{penalty.s_bits} does not match the weight table "
                             f"({n_rows}, {K}) of float{float_bits}")
    elif penalty.precond != PRE_NONE:
        raise ValueError("optimizer state is bound for the penalty but the PRE flag is off")
    return 0


cdef int _check_call(CSRSamples samples, LinearModel model, BatchScratch scratch,
                     LazyPenalty penalty, Py_ssize_t start, Py_ssize_t stop, int float_bits,
                     int index_bits) except -1:
    """O(1): the bundles suit this specialisation and each other, and the batch fits."""
    if not (samples.float_bits == model.float_bits == scratch.float_bits == float_bits
            and samples.index_bits == index_bits):
        raise TypeError(
            f"this kernel is for float{float_bits} values and int{index_bits} indices; got "
            f"samples of {samples.dtype} with {samples.index_dtype} indices, weights of "
            f"{model.dtype} and scratch of {scratch.dtype} (pick the kernel with "
            "gradient_kernel(dtype, index_dtype))")
    W = model.W
    if scratch.n_rows != W.shape[0] or scratch.n_outputs != W.shape[1]:
        raise ValueError(f"the scratch is for a ({scratch.n_rows}, {scratch.n_outputs}) "
                         f"table, the model's is {W.shape}")
    if not (0 <= start <= stop <= samples.n_order and stop - start <= scratch.max_batch):
        raise ValueError(f"batch [{start}, {stop}) is outside order (length "
                         f"{samples.n_order}) or larger than the scratch "
                         f"({scratch.max_batch} samples)")
    # the kernel catches rows up to step - 1
    _check_penalty(penalty, W.shape[0], W.shape[1], float_bits, penalty.step - 1)
    if penalty.flags and penalty.step < 1:
        raise ValueError(f"step must be >= 1, got {penalty.step}")
    return 0


# The four specialisations of the gradient kernel: one line each binds the typed views.
def _gradient_f32_i32(CSRSamples samples not None, LinearModel model not None,
                      BatchScratch scratch not None, LazyPenalty penalty not None,
                      Py_ssize_t start, Py_ssize_t stop):
    _check_call(samples, model, scratch, penalty, start, stop, 32, 32)
    return _gradient(samples.indptr32, samples.indices32, samples.data32, model.W32,
                     scratch.G32, scratch.Wc32, samples, model, scratch, penalty, start, stop)


def _gradient_f32_i64(CSRSamples samples not None, LinearModel model not None,
                      BatchScratch scratch not None, LazyPenalty penalty not None,
                      Py_ssize_t start, Py_ssize_t stop):
    _check_call(samples, model, scratch, penalty, start, stop, 32, 64)
    return _gradient(samples.indptr64, samples.indices64, samples.data32, model.W32,
                     scratch.G32, scratch.Wc32, samples, model, scratch, penalty, start, stop)


def _gradient_f64_i32(CSRSamples samples not None, LinearModel model not None,
                      BatchScratch scratch not None, LazyPenalty penalty not None,
                      Py_ssize_t start, Py_ssize_t stop):
    _check_call(samples, model, scratch, penalty, start, stop, 64, 32)
    return _gradient(samples.indptr32, samples.indices32, samples.data64, model.W64,
                     scratch.G64, scratch.Wc64, samples, model, scratch, penalty, start, stop)


def _gradient_f64_i64(CSRSamples samples not None, LinearModel model not None,
                      BatchScratch scratch not None, LazyPenalty penalty not None,
                      Py_ssize_t start, Py_ssize_t stop):
    _check_call(samples, model, scratch, penalty, start, stop, 64, 64)
    return _gradient(samples.indptr64, samples.indices64, samples.data64, model.W64,
                     scratch.G64, scratch.Wc64, samples, model, scratch, penalty, start, stop)


_GRADIENT_KERNELS = {(32, 32): _gradient_f32_i32, (32, 64): _gradient_f32_i64,
                     (64, 32): _gradient_f64_i32, (64, 64): _gradient_f64_i64}


def gradient_kernel(dtype, index_dtype):
    """The gradient kernel for weights and values of ``dtype`` (float32 or float64) and CSR
    indices of ``index_dtype`` (int32 or int64); TypeError for any other combination.

    The kernel is called as ``kernel(samples, model, scratch, penalty, start, stop)`` with the
    bundles ``CSRSamples``, ``LinearModel``, ``BatchScratch`` and ``LazyPenalty`` and returns
    ``(m, loss_sum)``: the number of gradient rows (``scratch.rows[:m]``, ``scratch.G[:m]``)
    and the sample-weighted sum of the losses of ``order[start:stop]`` at the weights before
    the update (module docstring). In place: the scratch (its hash table restored) and, with
    lazy penalty or averaging, the touched rows of ``W``, the running sum and ``pen_step``
    (caught up to ``step - 1``).
    """
    return _GRADIENT_KERNELS[_float_bits(dtype, "dtype"), _index_bits(index_dtype,
                                                                       "index_dtype")]


def catch_up_rows(LinearModel model not None, LazyPenalty penalty not None, int64_t q,
                  int n_threads, rows=None):
    """Bring every row of ``model.W`` (and the running sum) up to step ``q`` of the current
    segment, then mark every row current at step 0: the end of a segment, after which the
    tables restart (in place). Nothing to do when ``penalty.flags`` is 0.

    ``rows`` (int64, strictly increasing, in range): only these rows; the caller knows that
    every other row is zero, was not touched in the segment and has no running sum, so that
    its catch-up would leave it as it is (the penalty keeps 0 at 0)."""
    cdef const int64_t[::1] r
    cdef Py_ssize_t i
    if not penalty.flags:
        return
    W = model.W
    _check_penalty(penalty, W.shape[0], W.shape[1], model.float_bits, q)
    if rows is not None:
        r = _array(rows, np.int64, 1, "rows")
        for i in range(r.shape[0]):
            if r[i] < 0 or r[i] >= W.shape[0] or (i > 0 and r[i] <= r[i - 1]):
                raise ValueError("rows must be strictly increasing row indices of the "
                                 "weight table")
        if model.float_bits == 32:
            _catch_up_listed_rows(model.W32, model.n_feat, penalty, q, r, n_threads)
        else:
            _catch_up_listed_rows(model.W64, model.n_feat, penalty, q, r, n_threads)
        return
    if model.float_bits == 32:
        _catch_up_rows(model.W32, model.n_feat, penalty, q, n_threads)
    else:
        _catch_up_rows(model.W64, model.n_feat, penalty, q, n_threads)


# --------------------------------------------------------------------------- test hooks

_LOSS_CODES = frozenset(LOSSES.values())


def py_loss(int loss, double p, double y, double param):
    """``(loss, dloss)`` of one output as the kernels compute them: ``p`` the margin, ``y``
    the target (+1/-1 for the classification losses), ``param`` the hinge margin or
    epsilon; ``dloss`` (d loss / d p) clipped to +-1e12, as the kernels clip it before
    weighting. ``L_SOFTMAX`` needs every output: see ``py_softmax_loss``."""
    cdef double d, value
    if loss not in _LOSS_CODES or loss == L_SOFTMAX:
        raise ValueError(f"loss must be a value of LOSSES other than softmax, got {loss}")
    value = _loss(loss, p, y, param, &d)
    return value, _clip(d)


def py_softmax_loss(z, Py_ssize_t cls):
    """``(loss, dloss)`` of the multinomial log-loss of margins ``z`` (1-D) for class
    ``cls``, as the kernels compute them; ``dloss`` is a new float64 array."""
    out = np.array(z, dtype=np.float64, copy=True)
    if out.ndim != 1 or out.shape[0] < 1 or not 0 <= cls < out.shape[0]:
        raise ValueError(f"z must be 1-D with an entry for class {cls}, got shape {out.shape}")
    cdef double[::1] zv = out
    value = _softmax(&zv[0], zv.shape[0], cls, 1.0)
    return value, out
