/* The batched ("_mm") kernels' drivers that the AVX2 and NEON levels share: per row, the x row
 * and the weight of up to CHUNK kept weights are collected ("index": by column, "bitmap": by the
 * set bits of the mask words), then handed to the level's `row_mm(xs, ws, n, nbatch, o, first)`,
 * which adds sum_j ws[j] * xs[j][0..nbatch) into o (or stores it, when `first`).
 *
 * Include it inside the level's #if block, after defining DC_TARGET (the level's function
 * attribute) and row_mm. */
enum { CHUNK = 256 }; /* kept weights whose x rows and values are gathered per pass */

#define INDEX_MM(NAME, CT)                                                                     \
    DC_TARGET static void NAME(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos,      \
                             int64_t nb, const uint8_t *codes, const float *table, int64_t k,  \
                             const float *xt, int64_t nbatch, float *out) {                    \
        const CT *cols = (const CT *)pos;                                                      \
        (void)nb, (void)k;                                                                     \
        const float *xs[CHUNK];                                                                \
        float ws[CHUNK];                                                                       \
        for (int64_t r = r0; r < r1; r++) {                                                    \
            int64_t j = ptr[r], end = ptr[r + 1];                                              \
            int first = 1;                                                                     \
            do {                                                                               \
                int64_t n = end - j < CHUNK ? end - j : CHUNK;                                 \
                for (int64_t i = 0; i < n; i++)                                                \
                    xs[i] = xt + (int64_t)cols[j + i] * nbatch, ws[i] = table[codes[j + i]];   \
                row_mm(xs, ws, n, nbatch, out + r * nbatch, first);                            \
                first = 0, j += n;                                                             \
            } while (j < end);                                                                 \
        }                                                                                      \
    }
INDEX_MM(index16_mm, uint16_t)
INDEX_MM(index32_mm, int32_t)

DC_TARGET static void bitmap_mm(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos,
                              int64_t nb, const uint8_t *codes, const float *table, int64_t k,
                              const float *xt, int64_t nbatch, float *out) {
    const uint64_t *masks = (const uint64_t *)pos;
    (void)k;
    const float *xs[CHUNK];
    float ws[CHUNK];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = codes + ptr[r];
        int64_t n = 0;
        int first = 1;
        for (int64_t blk = 0; blk < nb; blk++)
            for (uint64_t w = masks[r * nb + blk]; w; w &= w - 1) {
                xs[n] = xt + (64 * blk + DC_CTZ64(w)) * nbatch, ws[n] = table[*p++];
                if (++n == CHUNK) row_mm(xs, ws, n, nbatch, out + r * nbatch, first), first = 0, n = 0;
            }
        if (n || first) row_mm(xs, ws, n, nbatch, out + r * nbatch, first);
    }
}

