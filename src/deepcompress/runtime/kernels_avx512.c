/* The "avx512" level (F, BW, VL, DQ): see _kernels.h for the layouts and the signature.
 *
 * Codebooks of k <= 32 values are looked up in registers (vpermps / vpermi2ps over one or two
 * 16-float halves), larger ones gathered from `table`; x is picked by column ("index") or its
 * kept values packed under the row's bit mask with vcompressps ("bitmap").
 *
 * "index" picks x with scalar loads (16 per vector, in two 8-float halves), not vgatherdps,
 * except in a row's last, partial vector: 1.5x the kernel's speed on Zen 4, whose gathers issue
 * as long uop sequences, as do Intel's since the 2023 GDS microcode fix (the AVX2 kernel does
 * the same; benchmarks/RESULTS.md, issue 18).
 */
#include "_kernels.h"

#if DC_X86
#include <immintrin.h>
#define DC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,popcnt")))

/* 16 weights from 16 codes: a register permute for k <= 32, a gather from `table` above. */
DC_AVX512 static inline __m512 lookup(__m512i idx, __m512 lo, __m512 hi, const float *table,
                                      int64_t k) {
    if (k <= 16) return _mm512_permutexvar_ps(idx, lo);
    if (k <= 32) return _mm512_permutex2var_ps(lo, idx, hi);
    return _mm512_i32gather_ps(idx, table, 4);
}

/* x at the 16 columns c[0..15], by scalar loads. */
#define PICK16(x, c)                                                                           \
    _mm512_insertf32x8(_mm512_castps256_ps512(DC_PICK8(x, c)), DC_PICK8(x, (c) + 8), 1)

/* The first n of 16 lanes (none for n <= 0). */
DC_AVX512 static inline __mmask16 lanes(int64_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
}

DC_AVX512 static inline void load_table(const float *table, int64_t k, __m512 *lo, __m512 *hi) {
    *lo = _mm512_maskz_loadu_ps(lanes(k), table);
    *hi = _mm512_maskz_loadu_ps(lanes(k - 16), table + 16);
}

/* out[r] = sum_j table[codes[j]] * x[cols[j]] for rows r0..r1, batch 1 ("index" layout). */
#define INDEX_MV(NAME, CT, LOADCOLS)                                                           \
    DC_AVX512 static void NAME(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos,     \
                               int64_t nb,                                                 \
                        const uint8_t *codes, const float *table, int64_t k, const float *x,   \
                        int64_t nbatch, float *out) {                                          \
        const CT *cols = (const CT *)pos;                                                      \
        (void)nb, (void)nbatch;                                                                \
        __m512 lo, hi;                                                                         \
        load_table(table, k, &lo, &hi);                                                        \
        for (int64_t r = r0; r < r1; r++) {                                                    \
            int64_t j = ptr[r], end = ptr[r + 1];                                              \
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();                         \
            for (; j + 32 <= end; j += 32) {                                                   \
                __m512i c0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const void *)(codes + j))); \
                __m512i c1 =                                                                   \
                    _mm512_cvtepu8_epi32(_mm_loadu_si128((const void *)(codes + j + 16)));     \
                a0 = _mm512_fmadd_ps(lookup(c0, lo, hi, table, k), PICK16(x, cols + j), a0);    \
                a1 = _mm512_fmadd_ps(lookup(c1, lo, hi, table, k), PICK16(x, cols + j + 16),    \
                                     a1);                                                      \
            }                                                                                  \
            for (; j < end; j += 16) {                                                         \
                __mmask16 m = lanes(end - j);                                                  \
                __m512i c0 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, codes + j));         \
                __m512 xv = m == 0xFFFF ? PICK16(x, cols + j)                                  \
                                        : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m,     \
                                                                   LOADCOLS(m, cols + j), x, 4); \
                a0 = _mm512_fmadd_ps(_mm512_maskz_mov_ps(m, lookup(c0, lo, hi, table, k)), xv, \
                                     a0);                                                      \
            }                                                                                  \
            out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));                              \
        }                                                                                      \
    }

#define LOAD16(m, p) _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16((m), (const void *)(p)))
#define LOAD32(m, p) _mm512_maskz_loadu_epi32((m), (const void *)(p))
INDEX_MV(index16_mv, uint16_t, LOAD16)
INDEX_MV(index32_mv, int32_t, LOAD32)

/* The same for the "bitmap" layout, in two passes over each segment of up to 1024 columns:
 * the kept x values are packed into a buffer, 16 columns at a time (vcompressps, then a store
 * at the running count), and the buffer is then multiplied by the row's codes 16 at a time as
 * in the "index" kernel. Packing first keeps the look-ups and FMAs at 16 kept weights each,
 * where working on each 16-column block alone spent them on 4 kept weights at 25% kept: 1.4x
 * faster on Zen 4 (benchmarks/RESULTS.md, issue 5). Padding lanes past the packed count are
 * masked off, so no stale buffer value meets a code. */
enum { SEGMENT = 16 }; /* 64-column blocks per pass: a 4 kB buffer that stays in L1 */

DC_AVX512 static void bitmap_mv(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos,
                          int64_t nb, const uint8_t *codes, const float *table, int64_t k,
                          const float *x, int64_t nbatch, float *out) {
    const uint64_t *masks = (const uint64_t *)pos;
    (void)nbatch;
    __m512 lo, hi;
    float buf[SEGMENT * 64 + 16];
    load_table(table, k, &lo, &hi);
    for (int64_t r = r0; r < r1; r++) {
        const uint64_t *m = masks + r * nb;
        const uint8_t *p = codes + ptr[r];
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        for (int64_t s = 0; s < nb; s += SEGMENT) {
            int64_t e = s + SEGMENT < nb ? s + SEGMENT : nb, n = 0, j = 0;
            for (int64_t b = s; b < e; b++)
                for (int q = 0; q < 4; q++) {
                    __mmask16 kq = (__mmask16)(m[b] >> (16 * q));
                    __m512 xv = _mm512_loadu_ps(x + 64 * b + 16 * q);
                    _mm512_storeu_ps(buf + n, _mm512_maskz_compress_ps(kq, xv));
                    n += __builtin_popcount(kq);
                }
            for (; j + 32 <= n; j += 32) {
                __m512i c0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const void *)(p + j)));
                __m512i c1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const void *)(p + j + 16)));
                a0 = _mm512_fmadd_ps(lookup(c0, lo, hi, table, k), _mm512_loadu_ps(buf + j), a0);
                a1 = _mm512_fmadd_ps(lookup(c1, lo, hi, table, k), _mm512_loadu_ps(buf + j + 16),
                                     a1);
            }
            for (; j < n; j += 16) {
                __mmask16 t = lanes(n - j);
                __m512i c0 = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(t, p + j));
                a0 = _mm512_fmadd_ps(lookup(c0, lo, hi, table, k), _mm512_maskz_loadu_ps(t, buf + j),
                                     a0);
            }
            p += n;
        }
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    }
}

/* Batch B > 1: the shared drivers of _batched.h, on 16-lane registers. */
#define DC_TARGET DC_AVX512
#define VL 16
typedef __m512 dc_vec;
typedef __mmask16 dc_mask;
#define dc_vzero _mm512_setzero_ps
#define dc_vset1 _mm512_set1_ps
#define dc_vfma(a, w, x) _mm512_fmadd_ps(w, x, a)
#define dc_vadd _mm512_add_ps
#define dc_vmask lanes
#define dc_vload _mm512_loadu_ps
#define dc_vload_m(p, m) _mm512_maskz_loadu_ps(m, p)
#define dc_vstore _mm512_storeu_ps
#define dc_vstore_m(p, v, m) _mm512_mask_storeu_ps(p, m, v)
#include "_batched.h"

/* Below 16 inputs a 16-lane register would be partly masked off on every load: the AVX2
 * level's 8-lane kernels (which every AVX-512 CPU runs) waste nothing at batch 8 and less
 * below it (measured: 1.2-1.4x faster at batch 8 on the AlexNet and VGG-16 fc6/fc7 layers). */
#define NARROW_FIRST(NAME, KIND)                                                                \
    DC_AVX512 static void NAME##_any(int64_t r0, int64_t r1, const int64_t *ptr,              \
                                     const void *pos, int64_t nb, const uint8_t *codes,       \
                                     const float *table, int64_t k, const float *xt,          \
                                     int64_t nbatch, float *out) {                             \
        dc_kernel f = nbatch < 16 ? dc_avx2_kernels[KIND] : NAME;                              \
        f(r0, r1, ptr, pos, nb, codes, table, k, xt, nbatch, out);                             \
    }
NARROW_FIRST(index16_mm, DC_INDEX16_MM)
NARROW_FIRST(index32_mm, DC_INDEX32_MM)
NARROW_FIRST(bitmap_mm, DC_BITMAP_MM)

const dc_kernel dc_avx512_kernels[DC_KINDS] = {index16_mv,     index32_mv,     bitmap_mv,
                                               index16_mm_any, index32_mm_any, bitmap_mm_any};
#endif
