/* The "neon" level (aarch64 Advanced SIMD, 4 float lanes; part of the base ISA, so no run-time
 * check): see _kernels.h for the layouts and the signature.
 *
 * - "index": NEON has no gather; x and the weights are loaded lane by lane into 4-float
 *   vectors and multiplied with vfmaq in two sums, 8 kept weights per step.
 * - "bitmap": NEON has no compress either; each 4-bit nibble of a row's mask picks a byte
 *   shuffle from a 16-entry table that packs the kept x values of 4 columns to the front
 *   (vqtbl1q_u8); they are stored at the running count and multiplied by the codes 8 at a
 *   time, as the x86 kernels do.
 * - Batch B > 1: _batched.h, each kept weight broadcast once per 16 inputs (4 registers of 4).
 * Checked for correctness under qemu-user (tools/check_kernels.sh); not yet timed on an ARM CPU.
 */
#include "_kernels.h"

#if DC_ARM
#include <arm_neon.h>

static uint8_t pack_shuffle[16][16]; /* nibble mask -> bytes of its kept floats, in order */

__attribute__((constructor)) static void build_pack_shuffle(void) {
    for (int m = 0; m < 16; m++) {
        int n = 0;
        for (int i = 0; i < 4; i++)
            if (m >> i & 1) {
                for (int b = 0; b < 4; b++) pack_shuffle[m][4 * n + b] = (uint8_t)(4 * i + b);
                n++;
            }
        for (; n < 4; n++)
            for (int b = 0; b < 4; b++) pack_shuffle[m][4 * n + b] = (uint8_t)b;
    }
}

static inline float32x4_t gather4(const float *base, int64_t i0, int64_t i1, int64_t i2,
                                  int64_t i3) {
    float32x4_t v = vdupq_n_f32(base[i0]);
    v = vsetq_lane_f32(base[i1], v, 1);
    v = vsetq_lane_f32(base[i2], v, 2);
    return vsetq_lane_f32(base[i3], v, 3);
}

#define INDEX_MV(NAME, CT)                                                                     \
    static void NAME(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos, int64_t nb,  \
                     const uint8_t *codes, const float *table, int64_t k, const float *x,      \
                     int64_t nbatch, float *out) {                                             \
        const CT *c = (const CT *)pos;                                                         \
        (void)nb, (void)k, (void)nbatch;                                                       \
        for (int64_t r = r0; r < r1; r++) {                                                    \
            int64_t j = ptr[r], end = ptr[r + 1];                                              \
            const uint8_t *q = codes;                                                          \
            float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);                              \
            for (; j + 8 <= end; j += 8) {                                                     \
                a0 = vfmaq_f32(a0, gather4(table, q[j], q[j + 1], q[j + 2], q[j + 3]),         \
                               gather4(x, c[j], c[j + 1], c[j + 2], c[j + 3]));                \
                a1 = vfmaq_f32(a1, gather4(table, q[j + 4], q[j + 5], q[j + 6], q[j + 7]),     \
                               gather4(x, c[j + 4], c[j + 5], c[j + 6], c[j + 7]));            \
            }                                                                                  \
            float s = vaddvq_f32(vaddq_f32(a0, a1));                                           \
            for (; j < end; j++) s += table[q[j]] * x[c[j]];                                   \
            out[r] = s;                                                                        \
        }                                                                                      \
    }
INDEX_MV(index16_mv, uint16_t)
INDEX_MV(index32_mv, int32_t)

enum { SEGMENT = 16 }; /* 64-column blocks per pass: a 4 kB buffer that stays in L1 */

static void bitmap_mv(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos, int64_t nb,
                      const uint8_t *codes, const float *table, int64_t k, const float *x,
                      int64_t nbatch, float *out) {
    const uint64_t *masks = (const uint64_t *)pos;
    (void)k, (void)nbatch;
    float buf[SEGMENT * 64 + 4];
    for (int64_t r = r0; r < r1; r++) {
        const uint64_t *m = masks + r * nb;
        const uint8_t *p = codes + ptr[r];
        float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);
        float s = 0;
        for (int64_t seg = 0; seg < nb; seg += SEGMENT) {
            int64_t e = seg + SEGMENT < nb ? seg + SEGMENT : nb, n = 0, j = 0;
            for (int64_t b = seg; b < e; b++) {
                uint64_t w = m[b];
                if (!w) continue;
                for (int q = 0; q < 16; q++) {
                    unsigned nib = (unsigned)(w >> (4 * q)) & 0xF;
                    uint8x16_t xv = vreinterpretq_u8_f32(vld1q_f32(x + 64 * b + 4 * q));
                    uint8x16_t packed = vqtbl1q_u8(xv, vld1q_u8(pack_shuffle[nib]));
                    vst1q_f32(buf + n, vreinterpretq_f32_u8(packed));
                    n += DC_POPCOUNT(nib);
                }
            }
            for (; j + 8 <= n; j += 8) {
                a0 = vfmaq_f32(a0, gather4(table, p[j], p[j + 1], p[j + 2], p[j + 3]),
                               vld1q_f32(buf + j));
                a1 = vfmaq_f32(a1, gather4(table, p[j + 4], p[j + 5], p[j + 6], p[j + 7]),
                               vld1q_f32(buf + j + 4));
            }
            for (; j < n; j++) s += table[p[j]] * buf[j];
            p += n;
        }
        out[r] = s + vaddvq_f32(vaddq_f32(a0, a1));
    }
}

/* Batch B > 1: the shared drivers of _batched.h, on 4-lane registers (no masked loads). */
#define DC_TARGET
#define VL 4
#define DC_COUNT_MASKS
typedef float32x4_t dc_vec;
#define dc_vzero() vdupq_n_f32(0)
#define dc_vset1 vdupq_n_f32
#define dc_vfma(a, w, x) vfmaq_f32(a, w, x)
#define dc_vadd vaddq_f32
#define dc_vload vld1q_f32
#define dc_vstore vst1q_f32
#include "_batched.h"

const dc_kernel dc_neon_kernels[DC_KINDS] = {index16_mv, index32_mv, bitmap_mv,
                                             index16_mm, index32_mm, bitmap_mm};
#endif
