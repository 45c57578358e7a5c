/*
 * Per-row inner loops of the optimizer kernels, written in C so that
 *   - the loops vectorise predictably (restrict pointers, sqrtf for float, no reductions), and
 *   - GCC can build AVX2/AVX-512 clones with runtime dispatch (target_clones) while the
 *     default build stays portable (no -march=native, no -ffast-math).
 *
 * Every function updates ONE row of width d in place. All scalars are computed by the caller in
 * float64 (bias corrections, decay factors, weight-decay multipliers) and only cast to the
 * parameter's type here; nothing is recomputed in float32.
 *
 * Preconditions (checked in Python, never here): pointers address d valid elements; parameter,
 * state and gradient rows do not overlap.
 */
#ifndef SPARSEOPT_SIMD_H
#define SPARSEOPT_SIMD_H

#include <math.h>
#include <float.h>
#include <stddef.h>

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
#define SO_PREFETCH_W(ptr) __builtin_prefetch((ptr), 1, 2)
#else
#define SO_RESTRICT
#define SO_PREFETCH_W(ptr) ((void)0)
#endif

/* Prefetch (for writing, into L2) every cache line of a row that will be updated soon. */
SO_UNUSED static inline void so_prefetch_row(const void *ptr, size_t nbytes)
{
    const char *c = (const char *)ptr;
    size_t off;
    for (off = 0; off < nbytes; off += 64) SO_PREFETCH_W(c + off);
}

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

#endif /* SPARSEOPT_SIMD_H */
