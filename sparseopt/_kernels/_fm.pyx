"""Fused mini-batch kernels of factorisation machines (``sparseopt.recommend.FMRegressor``,
``FMClassifier``).

``fm_grads`` makes one pass over a mini-batch: prediction, loss and its derivative, and the
gradient row of every stored entry of each sample; the caller hands the rows to a sparseopt
optimizer as ``RowGrad``, whose merge sums the duplicates (a feature in several samples) and
applies the lazy row update. It runs in parallel over samples (``prange``), each sample
writing only its own rows of the outputs, so the result does not depend on the thread count.
``fm_merge_rows`` then sums those rows into one row per feature, serially in sample order, so
the model can hand unique rows to the optimizer's trusted step (no validation or merge of its
own). ``fm_predict`` computes the same predictions, in parallel over rows.

Preconditions (established by ``sparseopt.recommend``, never checked here):

* ``data``, ``W`` and ``w0`` are of one floating dtype; ``W`` is C-contiguous
  ``(n_features, n_out*(k+1))`` with the layout documented in ``fm_grads``;
* ``(data, indices, indptr)`` is a CSR matrix whose indices lie in ``[0, n_features)``;
  ``samples`` holds valid row ids and ``offsets[s] - offsets[0]`` the stored entries of the
  samples before ``s`` (so sample ``s`` owns rows ``offsets[s] - offsets[0]`` up to
  ``offsets[s+1] - offsets[0]`` of ``G`` and ``gidx``; ``offsets`` may be a slice of the
  running totals of a whole epoch);
* ``loss_code`` is a value of ``LOSSES``; ``y`` is +1/-1 for the logistic loss and a class
  index in ``[0, n_out)`` for the softmax;
* every output and scratch buffer has the documented shape; scalars (``scale``, ``alpha``)
  are float64 computed in Python.

Sums over the stored entries and the factor dimension are taken in float64; gradient rows are
cast to the table's precision, the precision the optimizer keeps them in.

L2 (``alpha``) is the penalty ``alpha/2 * ||row||^2`` attached to every *occurrence* of a
feature row in the data (per-sample regularisation, as in libFM's SGD): the gradient written
is the exact gradient of the mini-batch objective
``scale * sum_s w_s * (loss_s + alpha/2 * sum_{rows r of s} ||theta_r||^2)``, so rows a batch
does not touch have zero gradient and no deferred decay is ever owed.
"""
from libc.math cimport exp, log1p
from libc.stdint cimport int32_t, int64_t
from cython cimport floating
from cython.parallel cimport prange

from ._rowops cimport _sigmoid, _softplus, index_t, so_prefetch_read

# loss codes shared with sparseopt/recommend/_fm.py
cdef enum:
    LOSS_SQUARED = 0
    LOSS_LOGISTIC = 1
    LOSS_SOFTMAX = 2

LOSSES = dict(squared=LOSS_SQUARED, logistic=LOSS_LOGISTIC, softmax=LOSS_SOFTMAX)

# A shuffled batch reads random CSR rows and random table rows: latency, not arithmetic, is
# what a sample costs. fm_grads asks for them ahead in three stages, each needing what the
# stage before fetched: the row's bounds (indptr) 3*AHEAD samples ahead, its indices and
# values 2*AHEAD ahead, its table rows AHEAD ahead. Hints only: no result changes.
cdef enum:
    AHEAD = 4


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
    ``p``-th stored entry of the sample, written to ``G[offsets[s] - offsets[0] + p]`` with
    its feature id in ``gidx``, is ``d_c*x_j*(sum_j' x_j' v_j'cf - v_jcf x_j) + a*v_jcf`` for the factors and
    ``d_c*x_j + a*w_jc`` for the linear weight. ``g0[s, c] = d_c``; ``loss[s]`` the unweighted
    loss. ``sums`` (``(B, 2*n_out*k)``: per output the sums of ``x v`` and of ``(x v)^2``) and
    ``pred`` (``(B, n_out)``) are scratch.
    """
    cdef Py_ssize_t B = samples.shape[0], n_out = w0.shape[0], width = k + 1
    cdef Py_ssize_t s, c, f, p, p0, p1, o, base, sa, q
    cdef int64_t row, ra
    cdef index_t j
    cdef double x, acc, lin, v, yv, z, mx, tot, d, a
    cdef double* S
    cdef double* S2
    cdef const floating* wr
    cdef floating* gr
    with nogil:
        for s in prange(B, num_threads=n_threads, schedule="static"):
            sa = s + 3 * AHEAD
            if sa < B:
                so_prefetch_read(&indptr[samples[sa]], 2 * sizeof(index_t))
            sa = s + 2 * AHEAD
            if sa < B:
                ra = samples[sa]
                if indptr[ra + 1] > indptr[ra]:
                    so_prefetch_read(&indices[indptr[ra]],
                                     (indptr[ra + 1] - indptr[ra]) * sizeof(index_t))
                    so_prefetch_read(&data[indptr[ra]],
                                     (indptr[ra + 1] - indptr[ra]) * sizeof(floating))
            sa = s + AHEAD
            if sa < B:
                ra = samples[sa]
                for q in range(indptr[ra], indptr[ra + 1]):
                    so_prefetch_read(&W[indices[q], 0], W.shape[1] * sizeof(floating))
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
                    o = offsets[s] - offsets[0] + p - p0
                    wr = &W[j, base]
                    gr = &G[o, base]
                    if c == 0:
                        gidx[o] = j
                    for f in range(k):
                        gr[f] = <floating>(d * x * (S[f] - wr[f] * x) + a * wr[f])
                    gr[k] = <floating>(d * x + a * wr[k])


def fm_merge_rows(floating[:, ::1] G, const index_t[::1] gidx, int32_t[::1] slot,
                  int64_t[::1] rows):
    """Sum the gradient rows of one feature: in place, the first ``m`` rows of ``G`` become
    the summed rows of the ``m`` distinct features of ``gidx`` (in order of first
    appearance), whose ids go to ``rows[:m]``; returns ``m``.

    Duplicates are added in entry order in the table's precision (``G``'s dtype), as the
    optimizer's own merge of ``RowGrad(gidx, G)`` adds them. Serial, so the result does not
    depend on the thread count. ``slot`` (one int32 per table row) must be -1 everywhere and
    is restored to -1; ``gidx`` holds valid row ids; ``rows`` has room for ``len(gidx)``.
    Row ``m`` is written only from row ``p >= m``, so the in-place compaction never reads a
    row it has overwritten.
    """
    cdef Py_ssize_t n = gidx.shape[0], width = G.shape[1], p, f, m = 0, t
    cdef index_t j
    cdef int32_t q
    with nogil:
        for p in range(n):
            j = gidx[p]
            q = slot[j]
            if q < 0:
                slot[j] = <int32_t>m
                rows[m] = j
                if m != p:
                    for f in range(width):
                        G[m, f] = G[p, f]
                m = m + 1
            else:
                for f in range(width):
                    G[q, f] = G[q, f] + G[p, f]
        for t in range(m):
            slot[rows[t]] = -1
    return m


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
