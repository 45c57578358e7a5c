/*
 * The C row helpers of every sparseopt kernel, in one place (declared for Cython, with typed
 * fronts, in _rowops.pxd):
 *
 *   1. portability: restrict, unused, and the AVX2/AVX-512 clones of the optimizer row updates
 *      (target_clones, GCC >= 12 on x86-64 Linux) with the name of the ISA they dispatch to;
 *   2. prefetch: one guarded macro, and helpers that prefetch every cache line of a span for
 *      reading or for writing;
 *   3. optimizer row updates (SO_DEFINE_ROWOPS, SO_DEFINE_FTRL): Adam, Adagrad, RMSprop, FTRL,
 *      axpby, scale, add,
 *      the non-finite test and the sum of squares, each on ONE row of width d in place;
 *   4. embedding-row algebra of the fused batch kernels (SO_DEFINE_EMBOPS): dot products
 *      accumulated in float64, out = x*a + y*b and its variants, and the bit cast of a packed
 *      rating.
 *
 * The loops are written in C so that they vectorise predictably (restrict pointers, sqrtf for
 * float, reductions only in a fixed order) while the default build stays portable (no
 * -march=native, no -ffast-math): wider ISAs are reached by the clones, and every clone
 * computes the same bits (the build sets -ffp-contract=off, so no clone fuses a*b+c).
 *
 * The optimizer row updates get all scalars from the caller in float64 (bias corrections,
 * decay factors, weight-decay multipliers), cast here to the parameter's type; nothing is
 * recomputed in float32. The embedding-row helpers are static inline at the baseline ISA, so
 * they inline into the batch loops that call them once or twice per sample (a clone is always an
 * out-of-line call through its dispatcher).
 *
 * Preconditions (checked in Python, never here): pointers address d valid elements; the rows
 * an optimizer update writes do not overlap its other rows.
 */
#ifndef SPARSEOPT_ROWOPS_H
#define SPARSEOPT_ROWOPS_H

#include <math.h>
#include <float.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define SO_UNUSED __attribute__((unused))
#else
#define SO_UNUSED
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && (__GNUC__ >= 12) && !defined(SPARSEOPT_NO_CLONES)
#define SO_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), unused))
#define SO_HAVE_CLONES 1
#else
#define SO_CLONES SO_UNUSED
#define SO_HAVE_CLONES 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SO_RESTRICT __restrict__
#else
#define SO_RESTRICT
#endif

/* ---------------------------------------------------------------------------------- prefetch
 * SO_PREFETCH(ptr, rw, locality): rw 0 = the line will be read, 1 = written; locality 3 = into
 * every cache level (data needed a few iterations ahead), 2 = into L2 and beyond (needed
 * further ahead: it should not push the current rows out of L1). A hint only: it never faults
 * and never changes a result, and compilers without __builtin_prefetch get a no-op. */
#define SO_CACHE_LINE 64
#if defined(__GNUC__) || defined(__clang__)
#define SO_PREFETCH(ptr, rw, locality) __builtin_prefetch((const void *)(ptr), (rw), (locality))
#else
#define SO_PREFETCH(ptr, rw, locality) ((void)(ptr))
#endif

/* Prefetch every cache line of the nbytes at ptr. Random rows are latency-bound: the kernels
 * ask for them a few samples or rows ahead. */
#define SO_DEFINE_PREFETCH(NAME, RW, LOCALITY)                                                  \
SO_UNUSED static inline void NAME(const void *ptr, size_t nbytes)                               \
{                                                                                               \
    const char *c = (const char *)ptr;                                                          \
    size_t off;                                                                                 \
    for (off = 0; off < nbytes; off += SO_CACHE_LINE) SO_PREFETCH(c + off, RW, LOCALITY);       \
}

SO_DEFINE_PREFETCH(so_prefetch_read, 0, 3)
SO_DEFINE_PREFETCH(so_prefetch_read_l2, 0, 2)
SO_DEFINE_PREFETCH(so_prefetch_write_l2, 1, 2)

/* The one line holding ptr, for writing: straight-line code where the span loop's single
 * iteration would be a branch of its own. */
SO_UNUSED static inline void so_prefetch_line_write(const void *ptr) { SO_PREFETCH(ptr, 1, 3); }

/* -------------------------------------------------------------------------------- ISA dispatch */
/* Name of the instruction set the clones dispatch to on this CPU (for show_config). */
SO_UNUSED static const char *so_simd_dispatch(void)
{
#if SO_HAVE_CLONES
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4 (AVX-512)";
    if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3 (AVX2+FMA)";
    return "default (SSE2)";
#else
    return "default (no runtime dispatch in this build)";
#endif
}

SO_UNUSED static int so_simd_has_clones(void) { return SO_HAVE_CLONES; }

/* ------------------------------------------------------------------- optimizer row updates */
#define SO_DEFINE_ROWOPS(T, SUF, SQRT, FABS, TMAX)                                              \
/* Adam: m <- b1*m + omb1*g; v <- b2*v + omb2*g^2; p <- pmul*p - a*m/(sqrt(v')*c + eps)      \
 * with v' = v, or v' = vmax <- max(vmax, v) when vmax != NULL (AMSGrad). */                   \
SO_CLONES static void so_adam_row_##SUF(ptrdiff_t d, T *SO_RESTRICT p, T *SO_RESTRICT m,      \
        T *SO_RESTRICT v, T *SO_RESTRICT vmax, const T *SO_RESTRICT g, T b1, T omb1, T b2,      \
        T omb2, T a, T c, T eps, T pmul)                                                        \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    if (vmax == NULL) {                                                                         \
        for (i = 0; i < d; i++) {                                                               \
            T gi = g[i];                                                                        \
            T mi = b1 * m[i] + omb1 * gi;                                                       \
            T vi = b2 * v[i] + omb2 * (gi * gi);                                                \
            m[i] = mi;                                                                          \
            v[i] = vi;                                                                          \
            p[i] = pmul * p[i] - a * mi / (SQRT(vi) * c + eps);                                 \
        }                                                                                       \
    } else {                                                                                    \
        for (i = 0; i < d; i++) {                                                               \
            T gi = g[i];                                                                        \
            T mi = b1 * m[i] + omb1 * gi;                                                       \
            T vi = b2 * v[i] + omb2 * (gi * gi);                                                \
            T vm = vmax[i] > vi ? vmax[i] : vi;                                                 \
            m[i] = mi;                                                                          \
            v[i] = vi;                                                                          \
            vmax[i] = vm;                                                                       \
            p[i] = pmul * p[i] - a * mi / (SQRT(vm) * c + eps);                                 \
        }                                                                                       \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* Adagrad: G <- G + g^2; p <- pmul*p - a*g/(sqrt(G) + eps). */                                 \
SO_CLONES static void so_adagrad_row_##SUF(ptrdiff_t d, T *SO_RESTRICT p, T *SO_RESTRICT s,    \
        const T *SO_RESTRICT g, T a, T eps, T pmul)                                             \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    for (i = 0; i < d; i++) {                                                                   \
        T gi = g[i];                                                                            \
        T si = s[i] + gi * gi;                                                                  \
        s[i] = si;                                                                              \
        p[i] = pmul * p[i] - a * gi / (SQRT(si) + eps);                                         \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* p <- pmul*p - k*g  (row-wise Adagrad after its scalar accumulator is updated). */            \
SO_CLONES static void so_axpby_row_##SUF(ptrdiff_t d, T *SO_RESTRICT p,                         \
        const T *SO_RESTRICT g, T k, T pmul)                                                    \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    for (i = 0; i < d; i++) p[i] = pmul * p[i] - k * g[i];                                      \
}                                                                                               \
                                                                                                \
/* RMSprop: v <- al*v + oma*g^2; centred: a <- al*a + oma*g, den = sqrt(v - a^2) + eps,        \
 * else den = sqrt(v) + eps (eps_in, added inside the root, is TF1's form; 0 otherwise); momentum: buf <- mu*buf + g/den, p <- pmul*p - lr*buf;             \
 * plain: p <- pmul*p - lr*g/den.  ga / buf may be NULL when unused. */                         \
SO_CLONES static void so_rmsprop_row_##SUF(ptrdiff_t d, T *SO_RESTRICT p, T *SO_RESTRICT v,    \
        T *SO_RESTRICT ga, T *SO_RESTRICT buf, const T *SO_RESTRICT g, T al, T oma, T mu,       \
        T lr, T eps_in, T eps, T pmul)                                                          \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    if (ga == NULL && buf == NULL) {                                                            \
        for (i = 0; i < d; i++) {                                                               \
            T gi = g[i];                                                                        \
            T vi = al * v[i] + oma * (gi * gi);                                                 \
            v[i] = vi;                                                                          \
            p[i] = pmul * p[i] - lr * gi / (SQRT(vi + eps_in) + eps);                                    \
        }                                                                                       \
    } else if (ga == NULL) {                                                                    \
        for (i = 0; i < d; i++) {                                                               \
            T gi = g[i];                                                                        \
            T vi = al * v[i] + oma * (gi * gi);                                                 \
            T bi = mu * buf[i] + gi / (SQRT(vi + eps_in) + eps);                                         \
            v[i] = vi;                                                                          \
            buf[i] = bi;                                                                        \
            p[i] = pmul * p[i] - lr * bi;                                                       \
        }                                                                                       \
    } else if (buf == NULL) {                                                                   \
        for (i = 0; i < d; i++) {                                                               \
            T gi = g[i];                                                                        \
            T vi = al * v[i] + oma * (gi * gi);                                                 \
            T ai = al * ga[i] + oma * gi;                                                       \
            v[i] = vi;                                                                          \
            ga[i] = ai;                                                                         \
            p[i] = pmul * p[i] - lr * gi / (SQRT(vi - ai * ai + eps_in) + eps);                          \
        }                                                                                       \
    } else {                                                                                    \
        for (i = 0; i < d; i++) {                                                               \
            T gi = g[i];                                                                        \
            T vi = al * v[i] + oma * (gi * gi);                                                 \
            T ai = al * ga[i] + oma * gi;                                                       \
            T bi = mu * buf[i] + gi / (SQRT(vi - ai * ai + eps_in) + eps);                               \
            v[i] = vi;                                                                          \
            ga[i] = ai;                                                                         \
            buf[i] = bi;                                                                        \
            p[i] = pmul * p[i] - lr * bi;                                                       \
        }                                                                                       \
    }                                                                                           \
}                                                                                               \
                                                                                                \
/* x <- f*x (pending decay of lazily updated state). */                                         \
SO_UNUSED static void so_scale_row_##SUF(ptrdiff_t d, T *SO_RESTRICT x, T f)                             \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    for (i = 0; i < d; i++) x[i] *= f;                                                          \
}                                                                                               \
                                                                                                \
/* dst <- dst + src (duplicate merging, in position order). */                                  \
SO_UNUSED static void so_add_row_##SUF(ptrdiff_t d, T *SO_RESTRICT dst,                         \
        const T *SO_RESTRICT src)                                                               \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    for (i = 0; i < d; i++) dst[i] += src[i];                                                   \
}                                                                                               \
                                                                                                \
/* 1 when any of n values is NaN or infinite: x - x is NaN exactly then. An OR over           \
 * comparisons vectorises; a float sum would not (not associative without -ffast-math). */     \
SO_UNUSED static int so_any_nonfinite_##SUF(ptrdiff_t n, const T *SO_RESTRICT x)               \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    int bad = 0;                                                                                \
    for (i = 0; i < n; i++) bad |= !(x[i] - x[i] == 0);                                         \
    return bad;                                                                                 \
}                                                                                               \
                                                                                                \
/* sum of squares of a row, accumulated in double (row-wise Adagrad). */                        \
SO_UNUSED static double so_row_sumsq_##SUF(ptrdiff_t d, const T *SO_RESTRICT x)                          \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    double s = 0.0;                                                                             \
    for (i = 0; i < d; i++) s += (double)x[i] * (double)x[i];                                   \
    return s;                                                                                   \
}

SO_DEFINE_ROWOPS(float, f, sqrtf, fabsf, FLT_MAX)
SO_DEFINE_ROWOPS(double, d, sqrt, fabs, DBL_MAX)

/* FTRL-Proximal on one row (McMahan et al. 2013), per coordinate, with q(x) = x^pw:
 *     n' = n + g^2;  sigma = (q(n') - q(n)) / lr
 *     z <- z + ((g + shr*w) - sigma*w);  n <- n'
 *     den = (q(n') + b0) / lr + l2
 *     w <- 0 if |z| <= l1 or den == 0, else (sign(z)*l1 - z) / den
 * b0 is the paper's beta (0 with TensorFlow's convention, which folds beta into l2); l2 and shr
 * already carry the convention's factor. pw = 0.5 takes sqrt (correctly rounded, vectorises);
 * other powers call libm's double pow. den is 0 only for a coordinate that has seen no gradient with
 * b0 = l2 = 0: its weight is 0 (the minimiser of the proximal objective is unbounded there,
 * and 0 keeps the row finite). Written so that a NaN z or den (a non-finite gradient applied
 * with nonfinite="ignore") gives a NaN weight, as the other optimizers do. */
#define SO_DEFINE_FTRL(T, SUF, SQRT, POW, FABS)                                                  \
SO_CLONES static void so_ftrl_row_##SUF(ptrdiff_t d, T *SO_RESTRICT p, T *SO_RESTRICT z,       \
        T *SO_RESTRICT n, const T *SO_RESTRICT g, T lr, T b0, T l1, T l2, T shr, T pw)          \
{                                                                                               \
    ptrdiff_t i;                                                                                \
    if (pw == (T)0.5) {                                                                         \
        for (i = 0; i < d; i++) {                                                               \
            T gi = g[i], wi = p[i], ni = n[i];                                                  \
            T nn = ni + gi * gi;                                                                \
            T qn = SQRT(nn);                                                                    \
            T sigma = (qn - SQRT(ni)) / lr;                                                     \
            T zi = z[i] + ((gi + shr * wi) - sigma * wi);                                       \
            T den = (qn + b0) / lr + l2;                                                        \
            T num = zi > 0 ? l1 - zi : -l1 - zi;                                                \
            n[i] = nn;                                                                          \
            z[i] = zi;                                                                          \
            p[i] = (FABS(zi) <= l1 || den == 0) ? (T)0 : num / den;                               \
        }                                                                                       \
    } else {                                                                                    \
        for (i = 0; i < d; i++) {                                                               \
            T gi = g[i], wi = p[i], ni = n[i];                                                  \
            T nn = ni + gi * gi;                                                                \
            T qn = POW(nn, pw);                                                                 \
            T sigma = (qn - POW(ni, pw)) / lr;                                                  \
            T zi = z[i] + ((gi + shr * wi) - sigma * wi);                                       \
            T den = (qn + b0) / lr + l2;                                                        \
            T num = zi > 0 ? l1 - zi : -l1 - zi;                                                \
            n[i] = nn;                                                                          \
            z[i] = zi;                                                                          \
            p[i] = (FABS(zi) <= l1 || den == 0) ? (T)0 : num / den;                               \
        }                                                                                       \
    }                                                                                           \
}

/* float powers through libm's double pow, rounded once to float: the reference computes the
 * same with Python's math.pow (NumPy's own pow differs from libm's in the last bit, and FTRL's
 * sigma, a difference of two close powers, magnifies that). */
#define SO_POW_VIA_DOUBLE(x, y) ((float)pow((double)(x), (double)(y)))
SO_DEFINE_FTRL(float, f, sqrtf, SO_POW_VIA_DOUBLE, fabsf)
SO_DEFINE_FTRL(double, d, sqrt, pow, fabs)

/* ---------------------------------------------------------------- embedding-row algebra
 * Dot products with eight independent float64 accumulators, combined in a fixed order: they
 * vectorise without -ffast-math (no reassociation is needed) and give the same result on every
 * ISA. The linear combinations run in the table's precision (the precision the optimizer keeps
 * gradient rows in); the "add" forms accumulate into a row already in the batch, in sample
 * order. */
#define SO_DEFINE_EMBOPS(T, SUF)                                                                \
/* sum_f a[f] * b[f] */                                                                         \
SO_UNUSED static inline double so_dot_##SUF(ptrdiff_t d, const T *a, const T *b)              \
{                                                                                               \
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, tail = 0.0;                                      \
    ptrdiff_t f = 0;                                                                            \
    for (; f + 8 <= d; f += 8)                                                                  \
        for (int j = 0; j < 8; j++) acc[j] += (double)a[f + j] * (double)b[f + j];              \
    for (; f < d; f++) tail += (double)a[f] * (double)b[f];                                     \
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))   \
           + tail;                                                                              \
}                                                                                               \
                                                                                                \
/* sum_f a[f] * (b[f] - c[f]) */                                                                \
SO_UNUSED static inline double so_dot_diff_##SUF(ptrdiff_t d, const T *a, const T *b,          \
        const T *c)                                                                             \
{                                                                                               \
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, tail = 0.0;                                      \
    ptrdiff_t f = 0;                                                                            \
    for (; f + 8 <= d; f += 8)                                                                  \
        for (int j = 0; j < 8; j++)                                                             \
            acc[j] += (double)a[f + j] * ((double)b[f + j] - (double)c[f + j]);                 \
    for (; f < d; f++) tail += (double)a[f] * ((double)b[f] - (double)c[f]);                    \
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))   \
           + tail;                                                                              \
}                                                                                               \
                                                                                                \
/* out[f] = x * a[f] + y * b[f] */                                                              \
SO_UNUSED static inline void so_set_axpby_##SUF(ptrdiff_t d, T *out, T x, const T *a, T y,     \
        const T *b)                                                                             \
{                                                                                               \
    for (ptrdiff_t f = 0; f < d; f++) out[f] = x * a[f] + y * b[f];                             \
}                                                                                               \
                                                                                                \
/* out[f] += x * a[f] + y * b[f] */                                                             \
SO_UNUSED static inline void so_add_axpby_##SUF(ptrdiff_t d, T *out, T x, const T *a, T y,     \
        const T *b)                                                                             \
{                                                                                               \
    for (ptrdiff_t f = 0; f < d; f++) out[f] += x * a[f] + y * b[f];                            \
}                                                                                               \
                                                                                                \
/* out[f] = x * (a[f] - b[f]) + y * c[f] */                                                     \
SO_UNUSED static inline void so_set_axmbpy_##SUF(ptrdiff_t d, T *out, T x, const T *a,         \
        const T *b, T y, const T *c)                                                            \
{                                                                                               \
    for (ptrdiff_t f = 0; f < d; f++) out[f] = x * (a[f] - b[f]) + y * c[f];                    \
}                                                                                               \
                                                                                                \
/* out[f] += x * (a[f] - b[f]) + y * c[f] */                                                    \
SO_UNUSED static inline void so_add_axmbpy_##SUF(ptrdiff_t d, T *out, T x, const T *a,         \
        const T *b, T y, const T *c)                                                            \
{                                                                                               \
    for (ptrdiff_t f = 0; f < d; f++) out[f] += x * (a[f] - b[f]) + y * c[f];                   \
}

SO_DEFINE_EMBOPS(float, f)
SO_DEFINE_EMBOPS(double, d)

/* so_dot_f with the first operand already in float64: the same products and the same eight
 * accumulators in the same order, hence the same bits, without converting a row that every
 * candidate of a WARP scan is scored against. */
SO_UNUSED static inline double so_dot_df(ptrdiff_t d, const double *a, const float *b)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, tail = 0.0;
    ptrdiff_t f = 0;
    for (; f + 8 <= d; f += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[f + j] * (double)b[f + j];
    for (; f < d; f++) tail += a[f] * (double)b[f];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
           + tail;
}

/* The float64 whose bits are stored in an int64 (the rating word of a packed record). */
SO_UNUSED static inline double so_bits_to_double(int64_t bits)
{
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* ------------------------------------------------------------ row-wise Adam / RMSprop rows
 * The rows of adam_rowwise_update / rmsprop_rowwise_update (_rows.pyx): one second moment
 * per row, so the row's sums come first and one scalar scales the whole row.
 * so_rw_sumsq / so_rw_sum: a row's sum of squares / sum, accumulated in float64 over eight
 * interleaved partial sums (the last d % 8 values in a ninth) combined in a fixed tree. The
 * order is fixed, so every clone and every thread count gives the same bits; eight
 * independent chains let the reduction vectorise where one running sum would wait on each
 * addition.
 */
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


#endif /* SPARSEOPT_ROWOPS_H */
