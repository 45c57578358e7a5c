/*
 * C row helpers of the row-wise Adam and RMSprop updates (``adam_rowwise_update``,
 * ``rmsprop_rowwise_update`` in _rows.pyx), on the conventions of _rowops.h: one row of width d
 * in place, scalars from the caller already rounded to the row's type, AVX2/AVX-512 clones
 * that round exactly as the baseline (the build sets -ffp-contract=off).
 *
 * so_rw_sumsq / so_rw_sum: a row's sum of squares / sum, accumulated in float64 over eight
 * interleaved partial sums (the last d % 8 values in a ninth) combined in a fixed tree. The
 * order is fixed, so every clone and every thread count gives the same bits; eight
 * independent chains let the reduction vectorise where one running sum would wait on each
 * addition.
 */
#ifndef SPARSEOPT_ROWWISE_H
#define SPARSEOPT_ROWWISE_H

#include "_rowops.h"

#define SO_DEFINE_ROWWISE(T, SUF)                                                               \
SO_CLONES static double so_rw_sumsq_##SUF(ptrdiff_t d, const T *SO_RESTRICT x)               \
{                                                                                               \
    double q[8] = {0, 0, 0, 0, 0, 0, 0, 0}, tail = 0.0;                                        \
    ptrdiff_t i, j, n8 = d - d % 8;                                                             \
    for (i = 0; i < n8; i += 8)                                                                 \
        for (j = 0; j < 8; j++) q[j] += (double)x[i + j] * (double)x[i + j];                    \
    for (i = n8; i < d; i++) tail += (double)x[i] * (double)x[i];                               \
    return (((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7]))) + tail;          \
}                                                                                               \
                                                                                                \
SO_CLONES static double so_rw_sum_##SUF(ptrdiff_t d, const T *SO_RESTRICT x)                   \
{                                                                                               \
    double q[8] = {0, 0, 0, 0, 0, 0, 0, 0}, tail = 0.0;                                        \
    ptrdiff_t i, j, n8 = d - d % 8;                                                             \
    for (i = 0; i < n8; i += 8)                                                                 \
        for (j = 0; j < 8; j++) q[j] += (double)x[i + j];                                       \
    for (i = n8; i < d; i++) tail += (double)x[i];                                              \
    return (((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7]))) + tail;          \
}                                                                                               \
                                                                                                \
/* Row-wise Adam after its scalar second moment: m <- b1*m + omb1*g; p <- pmul*p - k*m. */      \
SO_CLONES static void so_rw_adam_##SUF(ptrdiff_t d, T *SO_RESTRICT p, T *SO_RESTRICT m,        \
        const T *SO_RESTRICT g, T b1, T omb1, T k, T pmul)                                      \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    for (i = 0; i < d; i++) {                                                                   \
        T mi = b1 * m[i] + omb1 * g[i];                                                         \
        m[i] = mi;                                                                              \
        p[i] = pmul * p[i] - k * mi;                                                            \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* Row-wise RMSprop with momentum: buf <- mu*buf + k*g; p <- pmul*p - lr*buf. */                \
SO_CLONES static void so_rw_momentum_##SUF(ptrdiff_t d, T *SO_RESTRICT p, T *SO_RESTRICT buf,  \
        const T *SO_RESTRICT g, T mu, T k, T lr, T pmul)                                        \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    for (i = 0; i < d; i++) {                                                                   \
        T bi = mu * buf[i] + k * g[i];                                                          \
        buf[i] = bi;                                                                            \
        p[i] = pmul * p[i] - lr * bi;                                                           \
    }                                                                                           \
}

SO_DEFINE_ROWWISE(float, f)
SO_DEFINE_ROWWISE(double, d)

#endif
