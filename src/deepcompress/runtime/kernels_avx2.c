/* The "avx2" level (AVX2 + FMA, 8 float lanes, no masks, no compress): see _kernels.h for the
 * layouts and the signature.
 *
 * - Codebook look-up in registers for k <= 32: vpermps picks from one 8-float quarter by the
 *   low 3 bits of the code, and blends on bits 3 and 4 choose the quarter (1, 2 or 4 permutes
 *   for k <= 8, 16, 32); larger codebooks are gathered from `table`.
 * - "index": x picked by column with eight scalar loads per vector rather than vgatherdps,
 *   16 kept weights per step in two sums. On Zen 4 the kernel runs 1.5x faster so (a gather
 *   issues as a long uop sequence there, as on Zen 2/3 and on Intel cores since the 2023 GDS
 *   microcode fix): benchmarks/bench_kernels.py and gather_vs_loads.c, RESULTS.md issue 18.
 * - "bitmap": AVX2 has no vcompressps, so each byte of a row's mask picks a permutation from a
 *   256-entry table (8 kB, built once at load) that packs the kept x values of 8 columns to the
 *   front; they are stored at the running count (as the AVX-512 kernel does with vcompressps)
 *   and multiplied by the codes 16 at a time. No pdep/pext, which AMD before Zen 3 runs in
 *   microcode.
 * - Batch B > 1: _batched.h, each kept weight broadcast once per 32 inputs (4 registers of 8).
 */
#include "_kernels.h"

#if DC_X86
#include <immintrin.h>
#define DC_AVX2 __attribute__((target("avx2,fma,popcnt")))

static int32_t pack_perm[256][8]; /* byte mask -> the lanes of its set bits, ascending */

__attribute__((constructor)) static void build_pack_perm(void) {
    for (int m = 0; m < 256; m++) {
        int n = 0;
        for (int i = 0; i < 8; i++)
            if (m >> i & 1) pack_perm[m][n++] = i;
        while (n < 8) pack_perm[m][n++] = 0;
    }
}

/* The first n of 8 lanes (none for n <= 0), as a maskload/maskstore mask. */
DC_AVX2 static inline __m256i lanes(int64_t n) {
    int32_t c = n >= 8 ? 8 : n <= 0 ? 0 : (int32_t)n;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

DC_AVX2 static inline void load_table(const float *table, int64_t k, __m256 t[4]) {
    for (int q = 0; q < 4; q++) t[q] = _mm256_maskload_ps(table + 8 * q, lanes(k - 8 * q));
}

/* 8 weights from 8 codes. */
DC_AVX2 static inline __m256 lookup(__m256i idx, const __m256 t[4], const float *table,
                                    int64_t k) {
    if (k <= 8) return _mm256_permutevar8x32_ps(t[0], idx);
    if (k > 32) return _mm256_i32gather_ps(table, idx, 4);
    __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)); /* blendv reads the sign */
    __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t[0], idx),
                                 _mm256_permutevar8x32_ps(t[1], idx), bit3);
    if (k <= 16) return lo;
    __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t[2], idx),
                                 _mm256_permutevar8x32_ps(t[3], idx), bit3);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 27)));
}

DC_AVX2 static inline __m256i codes8(const uint8_t *p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
}

DC_AVX2 static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

#define INDEX_MV(NAME, CT)                                                                     \
    DC_AVX2 static void NAME(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos,      \
                             int64_t nb, const uint8_t *codes, const float *table, int64_t k,  \
                             const float *x, int64_t nbatch, float *out) {                     \
        const CT *cols = (const CT *)pos;                                                      \
        (void)nb, (void)nbatch;                                                                \
        __m256 t[4];                                                                           \
        load_table(table, k, t);                                                               \
        for (int64_t r = r0; r < r1; r++) {                                                    \
            int64_t j = ptr[r], end = ptr[r + 1];                                              \
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                         \
            for (; j + 16 <= end; j += 16) {                                                   \
                __m256 x0 = DC_PICK8(x, cols + j), x1 = DC_PICK8(x, cols + j + 8);             \
                a0 = _mm256_fmadd_ps(lookup(codes8(codes + j), t, table, k), x0, a0);          \
                a1 = _mm256_fmadd_ps(lookup(codes8(codes + j + 8), t, table, k), x1, a1);      \
            }                                                                                  \
            if (j + 8 <= end) {                                                                \
                __m256 x0 = DC_PICK8(x, cols + j);                                             \
                a0 = _mm256_fmadd_ps(lookup(codes8(codes + j), t, table, k), x0, a0);          \
                j += 8;                                                                        \
            }                                                                                  \
            float s = hsum(_mm256_add_ps(a0, a1));                                             \
            for (; j < end; j++) s += table[codes[j]] * x[cols[j]];                            \
            out[r] = s;                                                                        \
        }                                                                                      \
    }
INDEX_MV(index16_mv, uint16_t)
INDEX_MV(index32_mv, int32_t)

enum { SEGMENT = 16 }; /* 64-column blocks per pass: a 4 kB buffer that stays in L1 */

DC_AVX2 static void bitmap_mv(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos,
                              int64_t nb, const uint8_t *codes, const float *table, int64_t k,
                              const float *x, int64_t nbatch, float *out) {
    const uint64_t *masks = (const uint64_t *)pos;
    (void)nbatch;
    __m256 t[4];
    float buf[SEGMENT * 64 + 8];
    load_table(table, k, t);
    for (int64_t r = r0; r < r1; r++) {
        const uint64_t *m = masks + r * nb;
        const uint8_t *p = codes + ptr[r];
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        float s = 0;
        for (int64_t seg = 0; seg < nb; seg += SEGMENT) {
            int64_t e = seg + SEGMENT < nb ? seg + SEGMENT : nb, n = 0, j = 0;
            for (int64_t b = seg; b < e; b++) {
                uint64_t w = m[b];
                if (!w) continue;
                for (int q = 0; q < 8; q++) {
                    unsigned byte = (unsigned)(w >> (8 * q)) & 0xFF;
                    __m256i perm = _mm256_loadu_si256((const __m256i *)pack_perm[byte]);
                    __m256 xv = _mm256_loadu_ps(x + 64 * b + 8 * q);
                    _mm256_storeu_ps(buf + n, _mm256_permutevar8x32_ps(xv, perm));
                    n += __builtin_popcount(byte);
                }
            }
            for (; j + 16 <= n; j += 16) {
                a0 = _mm256_fmadd_ps(lookup(codes8(p + j), t, table, k),
                                     _mm256_loadu_ps(buf + j), a0);
                a1 = _mm256_fmadd_ps(lookup(codes8(p + j + 8), t, table, k),
                                     _mm256_loadu_ps(buf + j + 8), a1);
            }
            for (; j < n; j++) s += table[p[j]] * buf[j];
            p += n;
        }
        out[r] = s + hsum(_mm256_add_ps(a0, a1));
    }
}

/* Batch B > 1: the shared drivers of _batched.h, on 8-lane registers. */
#define DC_TARGET DC_AVX2
#define VL 8
typedef __m256 dc_vec;
typedef __m256i dc_mask;
#define dc_vzero _mm256_setzero_ps
#define dc_vset1 _mm256_set1_ps
#define dc_vfma(a, w, x) _mm256_fmadd_ps(w, x, a)
#define dc_vadd _mm256_add_ps
#define dc_vmask lanes
#define dc_vload _mm256_loadu_ps
#define dc_vload_m _mm256_maskload_ps
#define dc_vstore _mm256_storeu_ps
#define dc_vstore_m(p, v, m) _mm256_maskstore_ps(p, m, v)
#include "_batched.h"

const dc_kernel dc_avx2_kernels[DC_KINDS] = {index16_mv, index32_mv, bitmap_mv,
                                             index16_mm, index32_mm, bitmap_mm};
#endif
