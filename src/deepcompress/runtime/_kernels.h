/* The interface every SIMD level's kernels share (see _simd.c for the dispatch).
 *
 * A weight-shared (rows, cols) matrix with k <= 256 shared values in `table`:
 *   codes[ptr[r] .. ptr[r+1])  the cluster index (0..k-1) of row r's kept weights, in column
 *                              order, uint8, followed by 64 bytes of padding;
 *   "index":  pos = cols16 or cols32, the column of each kept weight (uint16 when
 *             cols <= 65536, else int32);
 *   "bitmap": pos = masks, masks[r * nb + b] bit i set when column 64 b + i of row r is kept
 *             (uint64), x padded with zeros to 64 nb floats.
 *
 * A kernel computes rows r0..r1 of out = x W^T: the "_mv" kinds for one input x (cols floats),
 * the "_mm" kinds for nbatch inputs stored as xt (cols, nbatch), out (rows, nbatch). Inputs are
 * trusted: layouts.py builds them from range-checked positions and symbols. Sums are float32.
 */
#ifndef DC_KERNELS_H
#define DC_KERNELS_H
#include <stdint.h>

typedef void (*dc_kernel)(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos, int64_t nb,
                          const uint8_t *codes, const float *table, int64_t k, const float *x,
                          int64_t nbatch, float *out);

/* The kinds, in the order of each level's table (simd.py uses the same numbers). */
enum { DC_INDEX16_MV, DC_INDEX32_MV, DC_BITMAP_MV, DC_INDEX16_MM, DC_INDEX32_MM, DC_BITMAP_MM,
       DC_KINDS };
/* The levels (simd.py: LEVELS). */
enum { DC_PORTABLE, DC_AVX2, DC_AVX512, DC_NEON, DC_LEVELS };

#if defined(__GNUC__) || defined(__clang__)
#define DC_CTZ64(w) __builtin_ctzll(w)
#define DC_POPCOUNT(w) __builtin_popcountll(w)
#else
static inline int DC_CTZ64(uint64_t w) { int i = 0; while (!(w & 1)) w >>= 1, i++; return i; }
static inline int DC_POPCOUNT(uint64_t w) { int n = 0; for (; w; w &= w - 1) n++; return n; }
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DC_X86 1
extern const dc_kernel dc_avx2_kernels[DC_KINDS];
extern const dc_kernel dc_avx512_kernels[DC_KINDS];
/* x at the 8 columns c[0..7] by scalar loads, as an __m256 (for <immintrin.h> users): the
 * avx2 and avx512 "index" kernels pick x so rather than with vgatherdps (kernels_avx2.c). */
#define DC_PICK8(x, c)                                                                         \
    _mm256_setr_ps(x[(c)[0]], x[(c)[1]], x[(c)[2]], x[(c)[3]], x[(c)[4]], x[(c)[5]], x[(c)[6]], \
                   x[(c)[7]])
#endif
#if defined(__aarch64__)
#define DC_ARM 1
extern const dc_kernel dc_neon_kernels[DC_KINDS];
#endif
extern const dc_kernel dc_portable_kernels[DC_KINDS];

/* Bit L set when level L can run here: built in, and the CPU (and OS) support it. */
int dc_levels(void);
/* Run kind `kind` of level `level`; -1 (nothing run) where either is not here. */
int dc_run(int64_t level, int64_t kind, int64_t r0, int64_t r1, const int64_t *ptr,
           const void *pos, int64_t nb, const uint8_t *codes, const float *table, int64_t k,
           const float *x, int64_t nbatch, float *out);
#endif
