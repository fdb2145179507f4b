/* The "portable" level: plain C for any compiler and CPU, written so that an auto-vectoriser
 * has what it needs (restrict pointers, unit-stride inner loops over the batch, independent
 * partial sums) and nothing else. On x86-64's baseline (SSE2) the batch-1 loops stay scalar,
 * as SSE2 has no gather. See _kernels.h for the layouts and the signature. */
#include "_kernels.h"

#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define DC_RESTRICT __restrict__
#else
#define DC_RESTRICT
#endif

/* Byte i (0 = first in memory) of 8 bytes read as one uint64_t, on either byte order. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define CODE(c, i) ((c) >> (56 - 8 * (i)) & 0xFF)
#else
#define CODE(c, i) ((c) >> (8 * (i)) & 0xFF)
#endif

/* out[r] = sum_j table[codes[j]] * x[cols[j]]: four partial sums, so that the additions do not
 * wait on each other, and eight codes read in one 8-byte load (memcpy), which takes a load per
 * weight off the ports that bound this loop: 1.15x on Zen 4 (benchmarks/bench_kernels.py). */
#define INDEX_MV(NAME, CT)                                                                     \
    static void NAME(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos, int64_t nb,  \
                     const uint8_t *codes, const float *table, int64_t k, const float *x,      \
                     int64_t nbatch, float *out) {                                             \
        const CT *cols = (const CT *)pos;                                                      \
        (void)nb, (void)k, (void)nbatch;                                                       \
        for (int64_t r = r0; r < r1; r++) {                                                    \
            int64_t j = ptr[r], end = ptr[r + 1];                                              \
            float a0 = 0, a1 = 0, a2 = 0, a3 = 0;                                              \
            for (; j + 8 <= end; j += 8) {                                                     \
                uint64_t c;                                                                    \
                const CT *p = cols + j;                                                        \
                memcpy(&c, codes + j, 8);                                                      \
                a0 += table[CODE(c, 0)] * x[p[0]];                                             \
                a1 += table[CODE(c, 1)] * x[p[1]];                                             \
                a2 += table[CODE(c, 2)] * x[p[2]];                                             \
                a3 += table[CODE(c, 3)] * x[p[3]];                                             \
                a0 += table[CODE(c, 4)] * x[p[4]];                                             \
                a1 += table[CODE(c, 5)] * x[p[5]];                                             \
                a2 += table[CODE(c, 6)] * x[p[6]];                                             \
                a3 += table[CODE(c, 7)] * x[p[7]];                                             \
            }                                                                                  \
            for (; j < end; j++) a0 += table[codes[j]] * x[cols[j]];                           \
            out[r] = (a0 + a1) + (a2 + a3);                                                    \
        }                                                                                      \
    }
INDEX_MV(index16_mv, uint16_t)
INDEX_MV(index32_mv, int32_t)

/* The same over the set bits of each row's mask words, two partial sums. */
static void bitmap_mv(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos, int64_t nb,
                      const uint8_t *codes, const float *table, int64_t k, const float *x,
                      int64_t nbatch, float *out) {
    const uint64_t *masks = (const uint64_t *)pos;
    (void)k, (void)nbatch;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = codes + ptr[r];
        float a0 = 0, a1 = 0;
        for (int64_t b = 0; b < nb; b++) {
            const float *xb = x + 64 * b;
            uint64_t w = masks[r * nb + b];
            while (w) {
                a0 += table[*p++] * xb[DC_CTZ64(w)];
                w &= w - 1;
                if (!w) break;
                a1 += table[*p++] * xb[DC_CTZ64(w)];
                w &= w - 1;
            }
        }
        out[r] = a0 + a1;
    }
}

#if defined(__GNUC__) || defined(__clang__)
/* Batch B > 1: the shared drivers of _batched.h, on the compilers' generic 4-float vectors
 * (SSE2 on x86-64's baseline, NEON or whatever the target has elsewhere). */
#include <string.h>
#define DC_TARGET
#define VL 4
#define DC_COUNT_MASKS
typedef float dc_vec __attribute__((vector_size(16)));
static inline dc_vec dc_vzero(void) { return (dc_vec){0, 0, 0, 0}; }
static inline dc_vec dc_vset1(float f) { return (dc_vec){f, f, f, f}; }
#define dc_vfma(a, w, x) ((a) + (w) * (x))
#define dc_vadd(a, b) ((a) + (b))
static inline dc_vec dc_vload(const float *p) { dc_vec v; memcpy(&v, p, sizeof v); return v; }
static inline void dc_vstore(float *p, dc_vec v) { memcpy(p, &v, sizeof v); }
#include "_batched.h"
#else
/* Batch B > 1 for other compilers: out[r, :] += table[code] * xt[col, :] per kept weight, a
 * loop over the batch that the compiler may vectorise. */
static inline void axpy(float *DC_RESTRICT o, const float *DC_RESTRICT xr, float w, int64_t n) {
    for (int64_t b = 0; b < n; b++) o[b] += w * xr[b];
}

#define INDEX_MM(NAME, CT)                                                                     \
    static void NAME(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos, int64_t nb,  \
                     const uint8_t *codes, const float *table, int64_t k, const float *xt,     \
                     int64_t nbatch, float *out) {                                             \
        const CT *cols = (const CT *)pos;                                                      \
        (void)nb, (void)k;                                                                     \
        for (int64_t r = r0; r < r1; r++) {                                                    \
            float *o = out + r * nbatch;                                                       \
            for (int64_t b = 0; b < nbatch; b++) o[b] = 0;                                     \
            for (int64_t j = ptr[r]; j < ptr[r + 1]; j++)                                      \
                axpy(o, xt + (int64_t)cols[j] * nbatch, table[codes[j]], nbatch);              \
        }                                                                                      \
    }
INDEX_MM(index16_mm, uint16_t)
INDEX_MM(index32_mm, int32_t)

static void bitmap_mm(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos, int64_t nb,
                      const uint8_t *codes, const float *table, int64_t k, const float *xt,
                      int64_t nbatch, float *out) {
    const uint64_t *masks = (const uint64_t *)pos;
    (void)k;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = codes + ptr[r];
        float *o = out + r * nbatch;
        for (int64_t b = 0; b < nbatch; b++) o[b] = 0;
        for (int64_t blk = 0; blk < nb; blk++)
            for (uint64_t w = masks[r * nb + blk]; w; w &= w - 1)
                axpy(o, xt + (64 * blk + DC_CTZ64(w)) * nbatch, table[*p++], nbatch);
    }
}

#endif

const dc_kernel dc_portable_kernels[DC_KINDS] = {index16_mv, index32_mv, bitmap_mv,
                                                 index16_mm, index32_mm, bitmap_mm};
