/* Where the batch-1 "index" kernel's time goes on this CPU: x read at random columns by a
 * gather or by scalar loads, with and without the codebook look-up (benchmarks/RESULTS.md,
 * issue 18). One thread, 2^20 kept weights over 4096 columns, 32-entry codebook; prints the
 * fastest of 200 runs of each loop in G kept weights per second.
 *
 *   gcc -O3 benchmarks/gather_vs_loads.c -o /tmp/gather_vs_loads && /tmp/gather_vs_loads
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"), noinline))
#define PICK8(x, c)                                                                            \
    _mm256_setr_ps(x[(c)[0]], x[(c)[1]], x[(c)[2]], x[(c)[3]], x[(c)[4]], x[(c)[5]], x[(c)[6]], \
                   x[(c)[7]])
#define CODES8(p) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p)))
#define COLS8(p) _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p)))

enum { GATHER, LOOKUP_ONLY, GATHER_ONLY, LOADS, LOADS_ONLY, MODES };
static const char *names[MODES] = {"gather + look-up", "look-up only (x contiguous)",
                                   "gather only (no look-up)", "scalar loads + look-up",
                                   "scalar loads only"};

static inline AVX2 __m256 lookup32(__m256i idx, const __m256 t[4]) {
    __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
    __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t[0], idx),
                                 _mm256_permutevar8x32_ps(t[1], idx), bit3);
    __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(t[2], idx),
                                 _mm256_permutevar8x32_ps(t[3], idx), bit3);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 27)));
}

static inline AVX2 __m256 term(int mode, int64_t j, const uint16_t *cols, const uint8_t *codes,
                        const __m256 t[4], const float *x) {
    __m256 xv = mode == LOOKUP_ONLY                   ? _mm256_loadu_ps(x + (j & 4095))
                : mode == LOADS || mode == LOADS_ONLY ? PICK8(x, cols + j)
                                                      : _mm256_i32gather_ps(x, COLS8(cols + j), 4);
    if (mode == GATHER_ONLY || mode == LOADS_ONLY) return xv;
    return _mm256_mul_ps(lookup32(CODES8(codes + j), t), xv);
}

/* 16 kept weights per step in two sums, as the kernel. */
__attribute__((noinline)) AVX2 static float avx2(int mode, int64_t n, const uint16_t *cols,
                                                  const uint8_t *codes, const float *table,
                                                  const float *x) {
    __m256 t[4], a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int q = 0; q < 4; q++) t[q] = _mm256_loadu_ps(table + 8 * q);
    for (int64_t j = 0; j + 16 <= n; j += 16) {
        a0 = _mm256_add_ps(a0, term(mode, j, cols, codes, t, x));
        a1 = _mm256_add_ps(a1, term(mode, j + 8, cols, codes, t, x));
    }
    float o[8];
    _mm256_storeu_ps(o, _mm256_add_ps(a0, a1));
    return o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
}

AVX512 static float avx512(int mode, int64_t n, const uint16_t *cols, const uint8_t *codes,
                           const float *table, const float *x) {
    __m512 lo = _mm512_loadu_ps(table), hi = _mm512_loadu_ps(table + 16);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t j = 0; j + 16 <= n; j += 16) {
        __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const void *)(codes + j)));
        __m512i i = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const void *)(cols + j)));
        __m512 xv = mode == LOADS ? _mm512_insertf32x8(_mm512_castps256_ps512(PICK8(x, cols + j)),
                                                       PICK8(x, cols + j + 8), 1)
                                  : _mm512_i32gather_ps(i, x, 4);
        acc[j >> 4 & 1] = _mm512_fmadd_ps(_mm512_permutex2var_ps(lo, c, hi), xv, acc[j >> 4 & 1]);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]));
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(void) {
    int64_t n = 1 << 20;
    uint16_t *cols = malloc(2 * n);
    uint8_t *codes = malloc(n + 64);
    float table[32], *x = malloc(4 * 4096 + 64);
    for (int64_t i = 0; i < n; i++) cols[i] = rand() % 4096, codes[i] = rand() % 32;
    for (int i = 0; i < 32; i++) table[i] = 0.1f * i;
    for (int i = 0; i < 4096; i++) x[i] = 1.0f / (i + 1);
    __builtin_cpu_init();
    for (int level = 0; level < 2; level++) {
        if (level ? !__builtin_cpu_supports("avx512f") : !__builtin_cpu_supports("avx2")) continue;
        for (int mode = 0; mode < MODES; mode++) {
            if (level && mode != GATHER && mode != LOADS) continue;
            double best = 1e9;
            volatile float sink = 0;
            for (int r = 0; r < 200; r++) {
                double t0 = now();
                sink += level ? avx512(mode, n, cols, codes, table, x)
                              : avx2(mode, n, cols, codes, table, x);
                double t = now() - t0;
                if (t < best) best = t;
            }
            printf("%-7s %-28s %.2f G/s\n", level ? "avx512" : "avx2", names[mode], n / best / 1e9);
        }
    }
    return 0;
}
