/* The batched ("_mm") kernels that every SIMD level shares: out[r, :] = sum_j w_j xt[col_j, :]
 * over row r's kept weights, xt being (cols, nbatch), in column blocks of 4 vectors of the
 * batch (V = 1, 2 or 4 vectors; the last block masked when the batch is not a whole number of
 * vectors). Each kept weight is looked up once per block, broadcast, and multiplied into the V
 * vectors of its x row; CH interleaved sums (4 for one vector, 2 above) keep the FMA latency
 * chain from bounding the loop, which is otherwise bound by its loads (code, weight, column,
 * x: 4 per kept weight and vector block).
 *
 * Include it inside the level's #if block after defining:
 *   DC_TARGET                 the level's function attribute (may be empty)
 *   VL, dc_vec, dc_mask       lanes per vector, the vector type, a "first n lanes" type
 *   dc_vzero(), dc_vset1(f), dc_vfma(a, w, x) = a + w x, dc_vadd(a, b)
 *   dc_vmask(n)               the first n lanes (all for n >= VL, none for n <= 0)
 *   dc_vload(p), dc_vload_m(p, m), dc_vstore(p, v), dc_vstore_m(p, v, m)
 * A masked load reads no lane outside its mask (x's last row ends the buffer).
 *
 * A level without masked loads (NEON, portable C) defines DC_COUNT_MASKS instead of dc_mask,
 * dc_vmask and the masked load and store: its "mask" is then the number of lanes in use, and the
 * masked load and store go lane by lane through a buffer (only the last, partial block of a
 * batch that is not a multiple of VL takes them). */

#ifdef DC_COUNT_MASKS
typedef int dc_mask;
static inline dc_mask dc_vmask(int64_t n) { return n >= VL ? VL : n <= 0 ? 0 : (int)n; }
DC_TARGET static inline dc_vec dc_vload_m(const float *p, dc_mask m) {
    float t[VL] = {0};
    for (int i = 0; i < m; i++) t[i] = p[i];
    return dc_vload(t);
}
DC_TARGET static inline void dc_vstore_m(float *p, dc_vec v, dc_mask m) {
    float t[VL];
    dc_vstore(t, v);
    for (int i = 0; i < m; i++) p[i] = t[i];
}
#endif

#define DC_BLOCK_SUMS(V, CH, MASKED)                                                           \
    dc_mask m[V];                                                                              \
    dc_vec a[CH][V];                                                                           \
    for (int v = 0; v < V; v++) {                                                              \
        m[v] = dc_vmask(left - VL * v);                                                        \
        for (int c = 0; c < CH; c++) a[c][v] = dc_vzero();                                     \
    }
#define DC_BLOCK_FMA(C, V, MASKED, WEIGHT, XROW)                                               \
    do {                                                                                       \
        dc_vec w_ = dc_vset1(WEIGHT);                                                          \
        const float *x_ = (XROW);                                                              \
        for (int v = 0; v < V; v++)                                                            \
            a[C][v] = dc_vfma(a[C][v], w_, MASKED ? dc_vload_m(x_ + VL * v, m[v])              \
                                                  : dc_vload(x_ + VL * v));                    \
    } while (0)
#define DC_BLOCK_STORE(V, CH, MASKED)                                                          \
    for (int v = 0; v < V; v++) {                                                              \
        dc_vec s = a[0][v];                                                                    \
        for (int c = 1; c < CH; c++) s = dc_vadd(s, a[c][v]);                                  \
        if (MASKED)                                                                            \
            dc_vstore_m(o + VL * v, s, m[v]);                                                  \
        else                                                                                   \
            dc_vstore(o + VL * v, s);                                                          \
    }

/* "index": kept weights j..end of one row, by column. */
#define DC_INDEX_BLOCK(NAME, CT, V, CH, MASKED)                                                \
    DC_TARGET static inline void NAME(const CT *cols, const uint8_t *codes, int64_t j,         \
                                      int64_t end, const float *table, const float *xb,        \
                                      int64_t nbatch, int64_t left, float *o) {                \
        DC_BLOCK_SUMS(V, CH, MASKED)                                                           \
        for (; j + CH <= end; j += CH)                                                         \
            for (int c = 0; c < CH; c++)                                                       \
                DC_BLOCK_FMA(c, V, MASKED, table[codes[j + c]],                                \
                             xb + (int64_t)cols[j + c] * nbatch);                              \
        for (; j < end; j++)                                                                   \
            DC_BLOCK_FMA(0, V, MASKED, table[codes[j]], xb + (int64_t)cols[j] * nbatch);       \
        DC_BLOCK_STORE(V, CH, MASKED)                                                          \
    }

/* "bitmap": one row's mask words, its codes from p on. */
#define DC_BITMAP_BLOCK(NAME, V, CH, MASKED)                                                   \
    DC_TARGET static inline void NAME(const uint64_t *words, int64_t nb, const uint8_t *p,    \
                                      const float *table, const float *xb, int64_t nbatch,     \
                                      int64_t left, float *o) {                                \
        DC_BLOCK_SUMS(V, CH, MASKED)                                                           \
        for (int64_t blk = 0; blk < nb; blk++) {                                               \
            const float *xc = xb + 64 * blk * nbatch;                                          \
            uint64_t w = words[blk];                                                           \
            while (w)                                                                          \
                for (int c = 0; c < CH && w; c++, w &= w - 1)                                  \
                    DC_BLOCK_FMA(c, V, MASKED, table[*p++], xc + DC_CTZ64(w) * nbatch);        \
        }                                                                                      \
        DC_BLOCK_STORE(V, CH, MASKED)                                                          \
    }

/* The block for `left` batch columns from this one on: whole vectors unmasked. */
#define DC_PICK_BLOCK(NAME, ...)                                                               \
    if (left >= 4 * VL)                                                                        \
        NAME##_4(__VA_ARGS__);                                                                 \
    else if (left == 2 * VL)                                                                   \
        NAME##_2(__VA_ARGS__);                                                                 \
    else if (left == VL)                                                                       \
        NAME##_1(__VA_ARGS__);                                                                 \
    else if (left > 2 * VL)                                                                    \
        NAME##_4m(__VA_ARGS__);                                                                \
    else if (left > VL)                                                                        \
        NAME##_2m(__VA_ARGS__);                                                                \
    else                                                                                       \
        NAME##_1m(__VA_ARGS__);

#define DC_INDEX_MM(NAME, CT)                                                                  \
    DC_INDEX_BLOCK(NAME##_1, CT, 1, 4, 0)                                                      \
    DC_INDEX_BLOCK(NAME##_2, CT, 2, 2, 0)                                                      \
    DC_INDEX_BLOCK(NAME##_4, CT, 4, 2, 0)                                                      \
    DC_INDEX_BLOCK(NAME##_1m, CT, 1, 4, 1)                                                     \
    DC_INDEX_BLOCK(NAME##_2m, CT, 2, 2, 1)                                                     \
    DC_INDEX_BLOCK(NAME##_4m, CT, 4, 2, 1)                                                     \
    DC_TARGET static void NAME(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos,    \
                               int64_t nb, const uint8_t *codes, const float *table,           \
                               int64_t k, const float *xt, int64_t nbatch, float *out) {       \
        const CT *cols = (const CT *)pos;                                                      \
        (void)nb, (void)k;                                                                     \
        for (int64_t r = r0; r < r1; r++)                                                      \
            for (int64_t b = 0; b < nbatch; b += 4 * VL) {                                     \
                int64_t left = nbatch - b;                                                     \
                DC_PICK_BLOCK(NAME, cols, codes, ptr[r], ptr[r + 1], table, xt + b, nbatch,    \
                              left, out + r * nbatch + b)                                      \
            }                                                                                  \
    }

DC_INDEX_MM(index16_mm, uint16_t)
DC_INDEX_MM(index32_mm, int32_t)

DC_BITMAP_BLOCK(bitmap_mm_1, 1, 4, 0)
DC_BITMAP_BLOCK(bitmap_mm_2, 2, 2, 0)
DC_BITMAP_BLOCK(bitmap_mm_4, 4, 2, 0)
DC_BITMAP_BLOCK(bitmap_mm_1m, 1, 4, 1)
DC_BITMAP_BLOCK(bitmap_mm_2m, 2, 2, 1)
DC_BITMAP_BLOCK(bitmap_mm_4m, 4, 2, 1)

DC_TARGET static void bitmap_mm(int64_t r0, int64_t r1, const int64_t *ptr, const void *pos,
                                int64_t nb, const uint8_t *codes, const float *table, int64_t k,
                                const float *xt, int64_t nbatch, float *out) {
    const uint64_t *masks = (const uint64_t *)pos;
    (void)k;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t b = 0; b < nbatch; b += 4 * VL) {
            int64_t left = nbatch - b;
            DC_PICK_BLOCK(bitmap_mm, masks + r * nb, nb, codes + ptr[r], table, xt + b, nbatch,
                          left, out + r * nbatch + b)
        }
}
