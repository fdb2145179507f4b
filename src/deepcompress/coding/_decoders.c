/* The entropy decoders' inner loops in C: rANS (rans.py), canonical Huffman (huffman.py) and
 * CABAC (cabac.py, both binarizations). Each is a line-by-line port of the numba kernel of the
 * same name in those modules, which stay the specification, the fallback where this file could
 * not be built, and the reference the tests hold these to (tests/test_native_decoders.py).
 *
 * Why C and not only numba: a `load` must not pay numba's start-up (importing it and setting up
 * its typing registries: about 0.6 s of a new process's first `load`, even with every kernel
 * cached on disk). The encoders stay in numba: encoding is not the path a deployed model takes.
 *
 * The shared codec's scatter of the decoded entries into the dense tensor is here too: numpy's
 * cumsum of the gaps and torch's index_put take three passes and three temporaries of the
 * tensor's size where one pass over the entries does.
 *
 * Python calls these through ctypes (coding/_native.py); the module object itself is empty.
 * Inputs come from the Python wrappers, which have validated the tables and sized every buffer:
 *   - data: nd bytes, read only at positions < nd;
 *   - out:  count symbols of `width` bytes each: 2 (uint16), 4 (int32) or 8 (int64), which
 *     the caller has chosen wide enough for the alphabet. Each loop is written once, inline,
 *     and instantiated per width by its exported function's switch: the width is a constant
 *     in each copy, so the store costs what a fixed type's does;
 *   - the lookup tables and contexts: sized so that every index formed below is in range (each
 *     function says why).
 * Each returns a status that the wrapper turns into the same FormatError as the numba kernel. */
#include <stdint.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

/* Symbol i of an output of `width` bytes a symbol (a constant where this is inlined). */
INLINE void put(void *out, int64_t i, int64_t v, int width) {
    if (width == 2)
        ((uint16_t *)out)[i] = (uint16_t)v;
    else if (width == 4)
        ((int32_t *)out)[i] = (int32_t)v;
    else
        ((int64_t *)out)[i] = v;
}

/* The exported function NAME(args..., width, ...) of the inline loop NAME_w: one copy per
 * width (2, 4, anything else 8). */
#define BY_WIDTH(call2, call4, call8) \
    switch (width) {                  \
    case 2: return call2;             \
    case 4: return call4;             \
    default: return call8;            \
    }

/* ---- rANS (rans.py: _decode_kernel) --------------------------------------------------------
 * table has 2**precision entries, indexed by x & (2**precision - 1). Status as rans._OK...:
 * 0 ok, 1 too short, 2 bad initial state, 3 ran out, 4 trailing bytes, 5 final state. */
#define RANS_L ((int64_t)1 << 23)

static int64_t read_state(const uint8_t *d) {
    return (int64_t)d[0] | (int64_t)d[1] << 8 | (int64_t)d[2] << 16 | (int64_t)d[3] << 24;
}

INLINE int rans_w(const uint8_t *data, int64_t n, int64_t count, const int64_t *table,
                  int64_t precision, void *out, int width, int64_t *detail) {
    if (n < 8) return *detail = 0, 1;
    int64_t x0 = read_state(data), x1 = read_state(data + 4);
    if (x0 < RANS_L || x0 >= (RANS_L << 8)) return *detail = x0, 2;
    if (x1 < RANS_L || x1 >= (RANS_L << 8)) return *detail = x1, 2;
    int64_t pos = 8, mask = ((int64_t)1 << precision) - 1;
    /* two symbols per step, one per state, as the numba kernel: their look-ups overlap */
    for (int64_t j = 0; j < count >> 1; j++) {
        int64_t e0 = table[x0 & mask], e1 = table[x1 & mask];
        put(out, 2 * j, e0 >> 31, width), put(out, 2 * j + 1, e1 >> 31, width);
        x0 = ((e0 >> 15) & 0xFFFF) * (x0 >> precision) + (e0 & 0x7FFF);
        x1 = ((e1 >> 15) & 0xFFFF) * (x1 >> precision) + (e1 & 0x7FFF);
        while (x0 < RANS_L) {
            if (pos >= n) return *detail = 2 * j, 3;
            x0 = (x0 << 8) | data[pos++];
        }
        while (x1 < RANS_L) {
            if (pos >= n) return *detail = 2 * j + 1, 3;
            x1 = (x1 << 8) | data[pos++];
        }
    }
    if (count & 1) {
        int64_t e0 = table[x0 & mask];
        put(out, count - 1, e0 >> 31, width);
        x0 = ((e0 >> 15) & 0xFFFF) * (x0 >> precision) + (e0 & 0x7FFF);
        while (x0 < RANS_L) {
            if (pos >= n) return *detail = count - 1, 3;
            x0 = (x0 << 8) | data[pos++];
        }
    }
    if (pos != n) return *detail = pos, 4;
    if (x0 != RANS_L) return *detail = x0, 5;
    if (x1 != RANS_L) return *detail = x1, 5;
    return *detail = count, 0;
}

int dc_rans_decode_into(const uint8_t *data, int64_t n, int64_t count, const int64_t *table,
                        int64_t precision, void *out, int width, int64_t *detail) {
    BY_WIDTH(rans_w(data, n, count, table, precision, out, 2, detail),
             rans_w(data, n, count, table, precision, out, 4, detail),
             rans_w(data, n, count, table, precision, out, 8, detail))
}

/* ---- Huffman (huffman.py: _decode_kernel) --------------------------------------------------
 * table has 2**tbits entries (symbol << 5 | length), tbits <= 15, indexed by the next tbits
 * bits. Status: 0 ok, 1 ran out (*where = the symbol), 2 too much padding, 3 nonzero padding. */
INLINE int huffman_w(const uint8_t *data, int64_t n, int64_t count, const int64_t *table,
                     int64_t tbits, void *out, int width, int64_t *where) {
    int64_t pos = 0, nbits = 0, mask = ((int64_t)1 << tbits) - 1;
    uint64_t acc = 0; /* stays below 2**56 */
    for (int64_t i = 0; i < count; i++) {
        int64_t peek;
        if (nbits < tbits) {
            while (nbits <= 48 && pos < n) acc = (acc << 8) | data[pos++], nbits += 8;
            peek = nbits < tbits ? (int64_t)(acc << (tbits - nbits)) & mask
                                 : (int64_t)(acc >> (nbits - tbits)) & mask;
        } else {
            peek = (int64_t)(acc >> (nbits - tbits)) & mask;
        }
        int64_t e = table[peek], len = e & 31;
        if (len > nbits) return *where = i, 1;
        put(out, i, e >> 5, width);
        nbits -= len;
        acc &= ((uint64_t)1 << nbits) - 1;
    }
    *where = count;
    if (nbits + 8 * (n - pos) > 7) return 2;
    return acc != 0 ? 3 : 0;
}

int dc_huffman_decode_into(const uint8_t *data, int64_t n, int64_t count, const int64_t *table,
                           int64_t tbits, void *out, int width, int64_t *where) {
    BY_WIDTH(huffman_w(data, n, count, table, tbits, out, 2, where),
             huffman_w(data, n, count, table, tbits, out, 4, where),
             huffman_w(data, n, count, table, tbits, out, 8, where))
}

/* ---- CABAC (cabac.py: _decode_tree, _decode_eg) --------------------------------------------
 * st: the contexts as (pa, pb, k) int32 triples, initialised by the caller (cabac.py:
 * _new_contexts) and sized as there; sha, shb: the COUNT_MAX + 1 = 128 shifts of the rate set.
 * Status: 0 ok, 1 bytes left over, 2 ran out, 3 final code out of range. */
#define CABAC_TOP ((uint64_t)1 << 24)
#define MASK32 0xFFFFFFFFull
#define COUNT_MAX 127
#define FLUSH_IMPLICIT 3

typedef struct {
    const uint8_t *data;
    int64_t nd, pos;
    uint64_t code, rng;
    int32_t *st;
    const int64_t *sha, *shb;
} cabac_dec;

static void dec_start(cabac_dec *d) {
    d->code = 0;
    for (int i = 0; i < 4; i++) d->code = (d->code << 8) | (i < d->nd ? d->data[i] : 0);
    d->pos = 4, d->rng = MASK32;
}

static int dec_check(const cabac_dec *d) {
    if (d->pos < d->nd + FLUSH_IMPLICIT) return 1;
    return d->code >= CABAC_TOP ? 3 : 0;
}

/* Read bytes into code while range < 2**24; 2 as soon as a byte beyond the implicit zeros is
 * needed. */
static inline int renorm(cabac_dec *d) {
    while (d->rng < CABAC_TOP) {
        d->rng <<= 8;
        if (d->pos < d->nd)
            d->code = ((d->code << 8) | d->data[d->pos]) & MASK32;
        else if (d->pos < d->nd + FLUSH_IMPLICIT)
            d->code = (d->code << 8) & MASK32;
        else
            return 2;
        d->pos++;
    }
    return 0;
}

static inline int bitlen(int64_t x) {
    int n = 0;
    for (; x > 0; x >>= 1) n++;
    return n;
}

/* One adaptive decision in the context at st[ci], averaged with the one at st[oi] when
 * use_ctx; the bit, or -2 when the data ran out. */
static inline int decision(cabac_dec *d, int64_t ci, int64_t oi, int use_ctx) {
    int32_t *st = d->st;
    int64_t pa = st[ci], pb = st[ci + 1], qa = 0, qb = 0, p;
    int32_t k = st[ci + 2], ko = k;
    int64_t sa = d->sha[k], sb = d->shb[k], ta = 0, tb = 0;
    if (use_ctx) {
        qa = st[oi], qb = st[oi + 1], ko = st[oi + 2];
        ta = d->sha[ko], tb = d->shb[ko];
        p = (pa + pb + qa + qb) >> 2;
    } else {
        p = (pa + pb) >> 1;
    }
    uint64_t bound = (d->rng >> 16) * (uint64_t)p;
    int bit;
    if (d->code >= bound) {
        bit = 1, d->code -= bound, d->rng -= bound;
        pa -= pa >> sa, pb -= pb >> sb, qa -= qa >> ta, qb -= qb >> tb;
    } else {
        bit = 0, d->rng = bound;
        pa += (65536 - pa) >> sa, pb += (65536 - pb) >> sb;
        qa += (65536 - qa) >> ta, qb += (65536 - qb) >> tb;
    }
    st[ci] = (int32_t)pa, st[ci + 1] = (int32_t)pb;
    if (k < COUNT_MAX) st[ci + 2] = k + 1;
    if (use_ctx) {
        st[oi] = (int32_t)qa, st[oi + 1] = (int32_t)qb;
        if (ko < COUNT_MAX) st[oi + 2] = ko + 1;
    }
    return renorm(d) ? -2 : bit;
}

/* Tree binarization, n <= 4096: st holds (8 << nb) contexts with use_ctx, else (1 << nb),
 * nb = bitlen(n - 1); base + node < that, as prev < n <= 2**nb. */
INLINE int tree_w(const uint8_t *data, int64_t nd, int64_t n, int64_t count, int use_ctx,
                  int32_t *st, const int64_t *sha, const int64_t *shb, void *out, int width) {
    cabac_dec d = {data, nd, 0, 0, 0, st, sha, shb};
    int nb = bitlen(n - 1), cshift = nb > 3 ? nb - 3 : 0;
    dec_start(&d);
    int64_t prev = 0;
    for (int64_t i = 0; i < count; i++) {
        int64_t base = use_ctx ? (prev >> cshift) << nb : 0, node = 1, val = 0;
        for (int j = nb - 1; j >= 0; j--) {
            if (val + ((int64_t)1 << j) >= n) {
                node = 2 * node;
                continue;
            }
            int bit = decision(&d, 3 * (base + node), 0, 0);
            if (bit < 0) return 2;
            node = 2 * node + bit;
            val += (int64_t)bit << j;
        }
        put(out, i, prev = val, width);
    }
    return dec_check(&d);
}

int dc_cabac_decode_tree_into(const uint8_t *data, int64_t nd, int64_t n, int64_t count,
                              int use_ctx, int32_t *st, const int64_t *sha, const int64_t *shb,
                              void *out, int width) {
    BY_WIDTH(tree_w(data, nd, n, count, use_ctx, st, sha, shb, out, 2),
             tree_w(data, nd, n, count, use_ctx, st, sha, shb, out, 4),
             tree_w(data, nd, n, count, use_ctx, st, sha, shb, out, 8))
}

/* Exp-Golomb binarization, n <= 65537: st holds 128 contexts per class, 8 classes with
 * use_ctx (the last the order-0 one), else 1. Prefix b < bmax <= 16 at 3 b; suffix (b, node
 * <= 3) at 3 (16 + 4 b + node) < 3 * 128. */
#define EG_STRIDE 128
#define EG_SUFFIX 16
#define EG_CLASSES 7
#define EG_SUFFIX_CTX_BITS 2

INLINE int eg_w(const uint8_t *data, int64_t nd, int64_t n, int64_t count, int use_ctx,
                int32_t *st, const int64_t *sha, const int64_t *shb, void *out, int width) {
    cabac_dec d = {data, nd, 0, 0, 0, st, sha, shb};
    int bmax = bitlen(n) - 1;
    int64_t order0 = 3 * EG_CLASSES * EG_STRIDE;
    dec_start(&d);
    int bprev = 0, bprev2 = 0;
    for (int64_t i = 0; i < count; i++) {
        int cls = bprev + bprev2 < EG_CLASSES - 1 ? bprev + bprev2 : EG_CLASSES - 1;
        int64_t base = use_ctx ? 3 * (int64_t)cls * EG_STRIDE : 0;
        int b = 0;
        while (b < bmax) { /* prefix: truncated unary bucket */
            int bit = decision(&d, base + 3 * b, order0 + 3 * b, use_ctx);
            if (bit < 0) return 2;
            if (bit == 0) break;
            b++;
        }
        int64_t val = (int64_t)1 << b, node = 1;
        for (int j = b - 1; j >= 0; j--) { /* suffix */
            int q = b - 1 - j, bit;
            if (val + ((int64_t)1 << j) > n) {
                if (q < EG_SUFFIX_CTX_BITS) node = 2 * node;
                continue;
            }
            if (q < EG_SUFFIX_CTX_BITS) {
                int64_t off = 3 * (EG_SUFFIX + 4 * b + node);
                bit = decision(&d, base + off, order0 + off, use_ctx);
                if (bit < 0) return 2;
                node = 2 * node + bit;
            } else { /* bypass */
                d.rng >>= 1;
                bit = 0;
                if (d.code >= d.rng) d.code -= d.rng, bit = 1;
                if (renorm(&d)) return 2;
            }
            val += (int64_t)bit << j;
        }
        put(out, i, val - 1, width);
        bprev2 = bprev, bprev = b;
    }
    return dec_check(&d);
}

int dc_cabac_decode_eg_into(const uint8_t *data, int64_t nd, int64_t n, int64_t count,
                            int use_ctx, int32_t *st, const int64_t *sha, const int64_t *shb,
                            void *out, int width) {
    BY_WIDTH(eg_w(data, nd, n, count, use_ctx, st, sha, shb, out, 2),
             eg_w(data, nd, n, count, use_ctx, st, sha, shb, out, 4),
             eg_w(data, nd, n, count, use_ctx, st, sha, shb, out, 8))
}

/* ---- a shared tensor's entries into its dense form (codec.py: decode_shared) ---------------
 * In place: out[0..numel) holds, in its last n 4-byte slots, the entries' int32 symbols (the
 * cluster-index stream was decoded there), and leaves with the dense tensor. Entry i sits
 * gaps[i] + 1 elements after entry i - 1 (the first at gaps[0]) and holds table[sym[i]]; every
 * other element is 0. One forward pass writes every element once: entry i's position is at
 * most numel - n + i (the n - 1 - i entries after it need a slot each), the slot of its own
 * symbol, so what is written for it (the zeros since entry i - 1, then its value) lands only on
 * symbols already read. A short run of zeros is written as a block of ZERO_BLOCK where that
 * stays below the symbols still to read: the zeros past entry i's position fall on elements
 * that later entries (or the tail's memset) write again. The symbols are read with memcpy,
 * which may alias the float stores (no strict-aliasing reordering). The caller has checked
 * that the gaps end inside the tensor and that every symbol indexes table; -1 (out partly
 * written, never past numel nor over a symbol still to read) if not, as a last guard. */
#define ZERO_BLOCK 16

int dc_expand_shared(const uint16_t *gaps, int64_t n, const float *table, int64_t k, float *out,
                     int64_t numel) {
    if (n > numel) return -1;
    const char *sym = (const char *)(out + (numel - n));
    int64_t at = 0; /* the next element to write */
    for (int64_t i = 0; i < n; i++) {
        int32_t s;
        memcpy(&s, sym + 4 * i, 4);
        int64_t g = gaps[i], pos = at + g, own = numel - n + i; /* symbol i's slot */
        if (s < 0 || s >= k || pos > own) return -1;
        if (g < ZERO_BLOCK && at + ZERO_BLOCK <= own + 1)
            memset(out + at, 0, sizeof(float) * ZERO_BLOCK); /* inlined: no call per entry */
        else
            for (int64_t j = at; j < pos; j++) out[j] = 0.0f;
        out[pos] = table[s];
        at = pos + 1;
    }
    memset(out + at, 0, sizeof(float) * (size_t)(numel - at));
    return 0;
}

#ifndef DC_STANDALONE
#include <Python.h>
/* Built as an extension module so that pip builds it; coding/_native.py loads its library
 * with ctypes and calls the functions above by name (the module itself is empty). */
static struct PyModuleDef dc_module = {PyModuleDef_HEAD_INIT, "_decoders", NULL, -1, NULL,
                                       NULL, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit__decoders(void) { return PyModule_Create(&dc_module); }
#endif
