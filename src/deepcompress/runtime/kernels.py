"""The numba kernels of the layouts in `layouts`: the "entries" layout's product and
expansion (the portable path), and the obvious reference loops of "index" and "bitmap" that
the tests check the AVX-512 kernels (`simd`) against."""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _entries_mm(row_ptr, ent, shift, mask, table, xt, out):  # pragma: no cover - compiled
    """out[r, b] = sum over row r's entries of table[code] * xt[col, b].

    Each entry packs (gap << shift) | code: `gap` columns skipped since the previous entry of
    the row, `code` an index into `table` (0: a filler, whose table value is 0).
    xt: (in, B) float32, C-contiguous; out: (rows, B) float64, zeroed. The batch-1 loop keeps
    four partial sums so that the additions do not wait on each other."""
    n_rows = row_ptr.size - 1
    nb = xt.shape[1]
    for r in prange(n_rows):
        col = -1
        j, end = row_ptr[r], row_ptr[r + 1]
        if nb == 1:
            x = xt[:, 0]
            a0 = a1 = a2 = a3 = 0.0
            while j + 4 <= end:
                e0, e1, e2, e3 = (
                    np.int64(ent[j]),
                    np.int64(ent[j + 1]),
                    np.int64(ent[j + 2]),
                    np.int64(ent[j + 3]),
                )
                c0 = col + (e0 >> shift) + 1
                c1 = c0 + (e1 >> shift) + 1
                c2 = c1 + (e2 >> shift) + 1
                c3 = c2 + (e3 >> shift) + 1
                a0 += np.float64(table[e0 & mask]) * x[c0]
                a1 += np.float64(table[e1 & mask]) * x[c1]
                a2 += np.float64(table[e2 & mask]) * x[c2]
                a3 += np.float64(table[e3 & mask]) * x[c3]
                col = c3
                j += 4
            while j < end:
                e = np.int64(ent[j])
                col += (e >> shift) + 1
                a0 += np.float64(table[e & mask]) * x[col]
                j += 1
            out[r, 0] = (a0 + a1) + (a2 + a3)
        else:
            for jj in range(j, end):
                e = np.int64(ent[jj])
                col += (e >> shift) + 1
                w = np.float64(table[e & mask])
                for b in range(nb):
                    out[r, b] += w * xt[col, b]


@njit(parallel=True, cache=True)
def _entries_dense(row_ptr, ent, shift, mask, table, out):  # pragma: no cover - compiled
    for r in prange(row_ptr.size - 1):
        col = -1
        for j in range(row_ptr[r], row_ptr[r + 1]):
            e = np.int64(ent[j])
            col += (e >> shift) + 1
            out[r, col] = table[e & mask]


@njit(parallel=True, cache=True)
def _index_mm_ref(ptr, cols, codes, table, xt, out):  # pragma: no cover - compiled
    """The obvious loop for the "index" layout: out (rows, B) float64, zeroed."""
    for r in prange(out.shape[0]):
        for j in range(ptr[r], ptr[r + 1]):
            w = np.float64(table[codes[j]])
            for b in range(xt.shape[1]):
                out[r, b] += w * xt[cols[j], b]


@njit(parallel=True, cache=True)
def _bitmap_mm_ref(masks, ptr, codes, table, xt, out):  # pragma: no cover - compiled
    """The obvious loop for the "bitmap" layout: out (rows, B) float64, zeroed."""
    for r in prange(out.shape[0]):
        j = ptr[r]
        for blk in range(masks.shape[1]):
            word = masks[r, blk]
            for i in range(64):
                if (word >> np.uint64(i)) & np.uint64(1):
                    w = np.float64(table[codes[j]])
                    j += 1
                    for b in range(xt.shape[1]):
                        out[r, b] += w * xt[64 * blk + i, b]
