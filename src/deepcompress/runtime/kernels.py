"""The numba kernels of the layouts in `layouts`: the "entries" layout's product and
expansion (the portable path), and the obvious reference loops of "index" and "bitmap" that
the tests check the C kernels (`simd`) against, and that run them without the C extension.

Each loop is compiled with `nogil=True` over a block of rows (r0..r1) and run on
`pool.run_rows`'s threads (torch's thread count; see `pool` for why not numba's `prange`)."""

import numpy as np
from numba import njit

from .pool import run_rows, threads_for


def _entries_mm(row_ptr, ent, shift, mask, table, xt, out) -> None:
    """out (rows, B) float64, zeroed, += the product of the "entries" matrix by xt (see
    `_entries_mm_rows`), on `pool`'s threads."""
    nt = threads_for(int(row_ptr[-1]) * xt.shape[1])
    run_rows(_entries_mm_rows, (row_ptr, ent, shift, mask, table, xt, out), row_ptr, nt)


def _entries_dense(row_ptr, ent, shift, mask, table, out) -> None:
    """The "entries" matrix written into out (rows, cols), zeroed."""
    nt = threads_for(int(row_ptr[-1]))
    run_rows(_entries_dense_rows, (row_ptr, ent, shift, mask, table, out), row_ptr, nt)


def _index_mm_ref(ptr, cols, codes, table, xt, out) -> None:
    """The obvious loop for the "index" layout: out (rows, B) float64, zeroed."""
    nt = threads_for(int(ptr[-1]) * xt.shape[1])
    run_rows(_index_mm_rows, (ptr, cols, codes, table, xt, out), ptr, nt)


def _bitmap_mm_ref(masks, ptr, codes, table, xt, out) -> None:
    """The obvious loop for the "bitmap" layout: out (rows, B) float64, zeroed."""
    nt = threads_for(int(ptr[-1]) * xt.shape[1])
    run_rows(_bitmap_mm_rows, (masks, ptr, codes, table, xt, out), ptr, nt)


@njit(nogil=True, cache=True)
def _entries_mm_rows(row_ptr, ent, shift, mask, table, xt, out, r0, r1):  # pragma: no cover
    """out[r, b] = sum over row r's entries of table[code] * xt[col, b].

    Each entry packs (gap << shift) | code: `gap` columns skipped since the previous entry of
    the row, `code` an index into `table` (0: a filler, whose table value is 0).
    xt: (in, B) float32, C-contiguous; out: (rows, B) float64, zeroed. The batch-1 loop keeps
    four partial sums so that the additions do not wait on each other."""
    nb = xt.shape[1]
    for r in range(r0, r1):
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


@njit(nogil=True, cache=True)
def _entries_dense_rows(row_ptr, ent, shift, mask, table, out, r0, r1):  # pragma: no cover
    for r in range(r0, r1):
        col = -1
        for j in range(row_ptr[r], row_ptr[r + 1]):
            e = np.int64(ent[j])
            col += (e >> shift) + 1
            out[r, col] = table[e & mask]


@njit(nogil=True, cache=True)
def _index_mm_rows(ptr, cols, codes, table, xt, out, r0, r1):  # pragma: no cover - compiled
    for r in range(r0, r1):
        for j in range(ptr[r], ptr[r + 1]):
            w = np.float64(table[codes[j]])
            for b in range(xt.shape[1]):
                out[r, b] += w * xt[cols[j], b]


@njit(nogil=True, cache=True)
def _bitmap_mm_rows(masks, ptr, codes, table, xt, out, r0, r1):  # pragma: no cover - compiled
    for r in range(r0, r1):
        j = ptr[r]
        for blk in range(masks.shape[1]):
            word = masks[r, blk]
            for i in range(64):
                if (word >> np.uint64(i)) & np.uint64(1):
                    w = np.float64(table[codes[j]])
                    j += 1
                    for b in range(xt.shape[1]):
                        out[r, b] += w * xt[64 * blk + i, b]
