/* Half-precision storage of parameter rows: bfloat16 and IEEE float16 <-> float32.
 *
 * Half-precision tables are updated with float32 arithmetic: a touched row is widened into a
 * float32 scratch row (exact), the float32 row rule of _rowops.h runs on it, and the result is
 * rounded back on store. The rules (the reference: sparseopt._reference, "Half-precision
 * weights"):
 *
 * - bfloat16 is the upper 16 bits of a float32. Widening shifts them up. Rounding to nearest
 *   even adds 0x7fff plus the lowest kept bit and truncates; NaN stays NaN (quiet bit set),
 *   infinities stay infinite, a finite value past the largest bfloat16 becomes infinite.
 * - float16: IEEE binary16, converted with integer operations and one float add for
 *   subnormals (branch-free enough to vectorise; no F16C needed, so every x86-64 build runs
 *   it). Rounding to nearest even; NaN becomes the quiet NaN 0x7e00 with the sign kept.
 * - stochastic rounding (bfloat16 only): add a 16-bit random integer to the low half of the
 *   float32 bits, then truncate: the value is rounded away from zero with probability equal
 *   to the dropped fraction of an ulp. NaN and infinities are rounded to nearest instead (the
 *   noise would turn an infinity into a NaN). The random bits come from a counter-based hash
 *   of (stream, step, row, column) -- no shared generator state -- so the result does not
 *   depend on the thread count or on the order rows are visited, and a run resumed from saved
 *   state reproduces the same bits.
 */
#ifndef SPARSEOPT_HALFOPS_H
#define SPARSEOPT_HALFOPS_H

#include "_rowops.h"

#define SO_HALF_BF16 0
#define SO_HALF_F16 1

static inline uint32_t so_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float so_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float so_bf16_to_f32(uint16_t h) { return so_bits_f32((uint32_t)h << 16); }

static inline uint16_t so_f32_to_bf16(float f)
{
    uint32_t u = so_f32_bits(f);
    uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)(nan ? ((u >> 16) | 0x0040u) : r);
}

static inline uint16_t so_f32_to_bf16_sr(float f, uint32_t noise)
{
    uint32_t u = so_f32_bits(f);
    uint32_t special = (u & 0x7f800000u) == 0x7f800000u;
    uint32_t r = (u + (noise & 0xffffu)) >> 16;
    return special ? so_f32_to_bf16(f) : (uint16_t)r;
}

static inline float so_f16_to_f32(uint16_t h)
{
    uint32_t o = (uint32_t)(h & 0x7fffu) << 13;
    uint32_t e = o & 0x0f800000u;
    o += (uint32_t)(127 - 15) << 23;
    if (e == 0x0f800000u) {
        o += (uint32_t)(128 - 16) << 23;              /* infinity or NaN */
    } else if (e == 0) {                               /* zero or subnormal: renormalise */
        o += 1u << 23;
        o = so_f32_bits(so_bits_f32(o) - so_bits_f32(113u << 23));
    }
    return so_bits_f32(o | ((uint32_t)(h & 0x8000u) << 16));
}

static inline uint16_t so_f32_to_f16(float f)
{
    uint32_t u = so_f32_bits(f);
    uint32_t sign = u & 0x80000000u, o;
    u ^= sign;
    if (u >= (143u << 23)) {                           /* >= 65536, infinity or NaN */
        o = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
    } else if (u < (113u << 23)) {                     /* float16 subnormal or zero */
        /* adding 0.5 aligns the value's bits with float16's subnormal ulp (2**-24); the
         * float add rounds to nearest even */
        o = so_f32_bits(so_bits_f32(u) + so_bits_f32(126u << 23)) - (126u << 23);
    } else {                                           /* normal: round the mantissa */
        uint32_t odd = (u >> 13) & 1u;
        u += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;
        o = u >> 13;
    }
    return (uint16_t)(o | (sign >> 16));
}

/* splitmix64's finaliser (Steele, Lea & Flood 2014). */
static inline uint64_t so_mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Key of a row's random bits: stream (seed | parameter index << 32), step, row. */
static inline uint32_t so_sr_row_key(uint64_t stream, int64_t step, int64_t row)
{
    return (uint32_t)so_mix64(so_mix64(stream ^ so_mix64((uint64_t)step)) ^ (uint64_t)row);
}

/* 32 random bits of column j of a row with key k (lowbias32, a 32-bit integer hash: it
 * vectorises where a 64-bit multiply would not). */
static inline uint32_t so_sr_noise(uint32_t k, uint32_t j)
{
    uint32_t x = k + j * 0x9e3779b9u;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* out <- the row h widened to float32 (exact). */
SO_CLONES static void so_half_load(ptrdiff_t d, float *SO_RESTRICT out,
        const uint16_t *SO_RESTRICT h, int kind)
{
    ptrdiff_t i;
    if (kind == SO_HALF_BF16) {
        for (i = 0; i < d; i++) out[i] = so_bf16_to_f32(h[i]);
    } else {
        for (i = 0; i < d; i++) out[i] = so_f16_to_f32(h[i]);
    }
}

/* h <- the float32 row x rounded to the storage format (stochastic: bfloat16 only, with the
 * row key k). */
SO_CLONES static void so_half_store(ptrdiff_t d, uint16_t *SO_RESTRICT h,
        const float *SO_RESTRICT x, int kind, int stochastic, uint32_t k)
{
    ptrdiff_t i;
    if (kind == SO_HALF_BF16) {
        if (stochastic) {
            for (i = 0; i < d; i++) h[i] = so_f32_to_bf16_sr(x[i], so_sr_noise(k, (uint32_t)i));
        } else {
            for (i = 0; i < d; i++) h[i] = so_f32_to_bf16(x[i]);
        }
    } else {
        for (i = 0; i < d; i++) h[i] = so_f32_to_f16(x[i]);
    }
}

#endif /* SPARSEOPT_HALFOPS_H */
