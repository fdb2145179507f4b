/* Every compressed-runtime kernel this CPU can run, against a plain double-precision reference
 * built from the dense matrix: odd shapes (rows shorter than a vector, ragged 64-column
 * blocks), int32 columns past 65,536 inputs, empty rows, every look-up path of the codebook
 * (k of 1, 8, 9, 16, 17, 32, 33 and 256 values), batch 1 to 65.
 *
 *   cc -O2 -DDC_STANDALONE -Isrc/deepcompress/runtime tools/check_kernels.c \
 *      src/deepcompress/runtime/{_simd,kernels_*}.c -o check && ./check
 *
 * tools/check_kernels.sh builds it natively and for aarch64 (run under qemu-user). Prints one
 * line per mismatch and a count per level; exits 1 on any mismatch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_kernels.h"

static const char *NAMES[DC_LEVELS] = {"portable", "avx2", "avx512", "neon"};
static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) { rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17; return rng; }
static double uniform(void) { return (next() >> 11) * (1.0 / 9007199254740992.0); }

typedef struct {
    int64_t rows, cols, nb, nnz;
    int64_t *ptr;
    uint16_t *c16;
    int32_t *c32;
    uint64_t *masks;
    uint8_t *codes;
    float *table, *dense;
} matrix;

static matrix build(int64_t rows, int64_t cols, double kept, int64_t k) {
    matrix m = {rows, cols, (cols + 63) / 64, 0, 0, 0, 0, 0, 0, 0, 0};
    m.ptr = calloc(rows + 1, sizeof *m.ptr);
    m.table = malloc(k * sizeof *m.table);
    for (int64_t i = 0; i < k; i++) m.table[i] = (float)(2 * uniform() - 1);
    m.dense = calloc(rows * cols + 1, sizeof *m.dense);
    int64_t cap = rows * cols + 1;
    m.c16 = malloc(cap * sizeof *m.c16), m.c32 = malloc(cap * sizeof *m.c32);
    m.codes = calloc(cap + 64, 1);
    m.masks = calloc(rows * m.nb + 1, sizeof *m.masks);
    for (int64_t r = 0; r < rows; r++) {
        double row_kept = r % 7 == 3 ? 0 : kept; /* some empty rows */
        for (int64_t c = 0; c < cols; c++)
            if (uniform() < row_kept) {
                uint8_t code = (uint8_t)(next() % k);
                m.c16[m.nnz] = (uint16_t)c, m.c32[m.nnz] = (int32_t)c, m.codes[m.nnz] = code;
                m.masks[r * m.nb + c / 64] |= 1ull << (c % 64);
                m.dense[r * cols + c] = m.table[code];
                m.nnz++;
            }
        m.ptr[r + 1] = m.nnz;
    }
    return m;
}

static void release(matrix *m) {
    free(m->ptr), free(m->c16), free(m->c32), free(m->masks), free(m->codes), free(m->table);
    free(m->dense);
}

/* x (64 nb, nbatch), random, zero past the columns; the reference out (rows, nbatch). */
static double *reference(const matrix *m, int64_t nbatch, float **xp, double **scalep) {
    int64_t xrows = 64 * m->nb;
    float *x = calloc(xrows * nbatch + 1, sizeof *x);
    double *want = calloc(m->rows * nbatch + 1, sizeof *want);
    double *scale = calloc(m->rows * nbatch + 1, sizeof *scale);
    for (int64_t c = 0; c < m->cols; c++)
        for (int64_t b = 0; b < nbatch; b++) x[c * nbatch + b] = (float)(2 * uniform() - 1);
    for (int64_t r = 0; r < m->rows; r++)
        for (int64_t c = 0; c < m->cols; c++) {
            double w = m->dense[r * m->cols + c];
            if (w == 0) continue;
            for (int64_t b = 0; b < nbatch; b++) {
                double p = w * x[c * nbatch + b];
                want[r * nbatch + b] += p, scale[r * nbatch + b] += fabs(p);
            }
        }
    *xp = x, *scalep = scale;
    return want;
}

/* Run kind `kind` of `level` over all rows in three row blocks; compare with the reference. */
static int check(int level, int kind, const matrix *m, int64_t k, int64_t nbatch,
                 const float *x, const double *want, const double *scale) {
    float *out = malloc((m->rows * nbatch + 1) * sizeof *out);
    const void *pos = kind % 3 == 0 ? (const void *)m->c16
                      : kind % 3 == 1 ? (const void *)m->c32 : (const void *)m->masks;
    int64_t cut = m->rows / 3;
    int64_t bounds[4] = {0, cut, 2 * cut, m->rows};
    int bad = 0;
    for (int t = 0; t < 3; t++)
        if (dc_run(level, kind, bounds[t], bounds[t + 1], m->ptr, pos, m->nb, m->codes,
                   m->table, k, x, nbatch, out) != 0) {
            printf("  %s kind %d refused\n", NAMES[level], kind);
            bad = 1;
        }
    for (int64_t i = 0; i < m->rows * nbatch && !bad; i++)
        if (fabs(out[i] - want[i]) > 1e-5 * scale[i] + 1e-30) {
            printf("  %s kind %d: shape %lldx%lld k %lld batch %lld, output %lld: %.9g, "
                   "want %.9g\n", NAMES[level], kind, (long long)m->rows, (long long)m->cols,
                   (long long)k, (long long)nbatch, (long long)i, out[i], want[i]);
            bad = 1;
        }
    free(out);
    return bad;
}

int main(void) {
    static const int64_t shapes[][2] = {{1, 1}, {5, 63}, {9, 64}, {3, 129}, {40, 1000},
                                        {17, 3001}, {3, 70000}};
    static const double kepts[] = {0.01, 0.3, 0.9, 1.0};
    static const int64_t ks[] = {1, 8, 9, 16, 17, 32, 33, 256};
    static const int64_t batches[] = {1, 2, 3, 8, 9, 16, 17, 24, 32, 33, 64, 65};
    int levels = dc_levels(), failed = 0;
    long checks[DC_LEVELS] = {0};
    for (int level = 0; level < DC_LEVELS; level++)
        if (!(levels >> level & 1)) {
            int refused = dc_run(level, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0) == -1;
            printf("%-8s not on this CPU or build%s\n", NAMES[level],
                   refused ? " (dc_run refuses it)" : ": DC_RUN RAN IT");
            failed |= !refused;
        }
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (size_t f = 0; f < sizeof kepts / sizeof *kepts; f++)
            for (size_t q = 0; q < sizeof ks / sizeof *ks; q++) {
                if (shapes[s][1] > 5000 && (ks[q] % 8 != 1 || kepts[f] > 0.3)) continue;
                matrix m = build(shapes[s][0], shapes[s][1], kepts[f], ks[q]);
                for (size_t b = 0; b < sizeof batches / sizeof *batches; b++) {
                    float *x;
                    double *scale, *want = reference(&m, batches[b], &x, &scale);
                    for (int level = 0; level < DC_LEVELS; level++)
                        for (int kind = 0; kind < DC_KINDS && levels >> level & 1; kind++) {
                            if (kind % 3 == 0 && m.cols > 65536) continue; /* uint16 columns */
                            if ((kind < 3) != (batches[b] == 1)) continue;
                            failed |= check(level, kind, &m, ks[q], batches[b], x, want, scale);
                            checks[level]++;
                        }
                    free(x), free(want), free(scale);
                }
                release(&m);
            }
    for (int level = 0; level < DC_LEVELS; level++)
        if (levels >> level & 1)
            printf("%-8s %ld products checked\n", NAMES[level], checks[level]);
    printf(failed ? "FAILED\n" : "all agree with the reference\n");
    return failed;
}
