"""In-memory layouts of a weight-shared sparse matrix, and the kernels that multiply by it.

A layer run from its compressed form (`runtime`) keeps its weight as one of three layouts, each
holding the float32 codebook and, per kept weight, a narrow cluster index and its position:

- "entries" (EIE's encoding): per row, packed (gap, code) entries of 8, 16 or 32 bits, a gap
  being the zeros skipped since the previous entry, fillers where a gap overflows. The smallest
  in memory; its kernel is portable numba.
- "index": per kept weight its column (uint16, or int32 past 65,536 inputs) and its code (uint8).
  3 bytes a weight; the SIMD kernels gather x and look the codes up in registers.
- "bitmap": per row, one bit per column (uint64 words) and the codes of the kept weights
  (uint8). cols/8 + nnz bytes a row, so smaller than "index" past 6.25% kept; the SIMD
  kernels pack the kept x values under the mask (vcompressps, or a permute from a table on
  AVX2 and NEON) and multiply them by the codes. Its time grows with cols as well as with the
  kept weights.

"index" and "bitmap" run the C kernels of `simd` at the level it picks for this CPU (AVX-512,
AVX2, NEON or portable C; each matrix keeps the level it was built at, in `.level`).
`CompressedMatrix.from_positions(..., layout="auto")` takes "index" while it stays within 10%
of the dense size (up to 13% kept), else "bitmap"; without the C extension (or with
DEEPCOMPRESS_SIMD=0), "entries". Memory decides, not speed: "index" runs faster than "bitmap"
up to about 35-50% kept (`python benchmarks/bench_runtime.py --sweep`), but past 13% it holds
more than a tenth of the dense bytes; pass layout="index" to trade memory for that speed, or
let `modules.autotune_` time both (`CompressedMatrix.to_layout` converts between them). Every
layout has a numba reference kernel; the tests check every C level against them.
"""

from __future__ import annotations

import numpy as np
import torch

from ..coding.sparse_index import encode_gaps
from . import simd
from .kernels import _bitmap_mm_ref, _entries_dense, _entries_mm, _index_mm_ref

LAYOUTS = ("auto", "entries", "index", "bitmap")


class CompressedMatrix:
    """A (rows, cols) weight-shared sparse matrix in one of `LAYOUTS`; see the module notes."""

    layout = "?"

    def __init__(self, shape, table: np.ndarray):
        self.shape = tuple(int(s) for s in shape)
        self.table = table  # float32 codebook
        self.level = simd.level()  # the C kernels' SIMD level; None: the numba loops
        self.threads: dict[int, int] = {}  # batch size -> threads (autotune_); else simd's rule

    @classmethod
    def from_positions(
        cls, shape, positions: np.ndarray, symbols: np.ndarray, codebook, layout: str = "auto"
    ) -> CompressedMatrix:
        """From flat row-major positions of the kept weights and their cluster symbols (1..k;
        symbol-0 fillers are dropped), as the `shared` codec stores them.

        The kernels index the codebook and x without bounds checks, so the inputs are checked
        here (vectorised, O(n)): `shape` two non-negative ints; `positions` and `symbols`
        1-D integer arrays of one length; positions ascending, distinct, in [0, rows*cols);
        symbols in [0, len(codebook)]; the codebook 1-D, finite, at most 65,536 values.

        Raises:
            ValueError: any of those broken (the message names which), or an unknown layout.
        """
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
        (rows, ncols), positions, symbols, codebook = _checked(shape, positions, symbols, codebook)
        keep = symbols > 0
        positions, symbols = positions[keep], symbols[keep]
        if layout == "auto":
            layout = choose_layout(rows, ncols, len(positions), len(codebook))
        if layout == "entries":
            return EntryMatrix.build((rows, ncols), positions, symbols, codebook)
        if len(codebook) > 256:
            raise ValueError(f"layout {layout!r} holds at most 256 shared values")
        kind = IndexMatrix if layout == "index" else BitmapMatrix
        return kind.build((rows, ncols), positions, symbols, codebook)

    @classmethod
    def from_dense(cls, w: torch.Tensor, layout: str = "auto") -> CompressedMatrix:
        """From a dense 2-D weight whose non-zeros take at most 65,536 distinct values."""
        flat = w.detach().cpu().reshape(-1).numpy()
        positions = np.flatnonzero(flat)
        codebook, symbols = np.unique(flat[positions], return_inverse=True)
        if len(codebook) > 1 << 16:
            raise ValueError(f"{len(codebook)} distinct values: not a weight-shared matrix")
        return cls.from_positions(
            tuple(w.shape), positions, symbols.astype(np.int64) + 1, codebook, layout
        )

    @property
    def nbytes(self) -> int:
        """Resident bytes of the compressed representation."""
        return sum(a.nbytes for a in self._arrays())

    def _arrays(self) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def dense(self) -> torch.Tensor:
        raise NotImplementedError

    def matmul_t(self, x: torch.Tensor) -> torch.Tensor:
        """`x @ W.T` for x of shape (B, cols): (B, rows), float32. Where B, rows or cols is 0,
        zeros of that shape, no kernel called (the kernels assume at least one of each).

        Raises:
            ValueError: x is not (B, cols).
        """
        raise NotImplementedError


MAX_SHARED = 1 << 16  # codebook values a matrix may hold (as many as a `shared` record)


def _int_array(a, what: str) -> np.ndarray:
    """`a` as a 1-D int64 array; ValueError unless it is 1-D and integer (or empty)."""
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integers, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{what} must be below 2**63, got {a.max()}")
    return a.astype(np.int64, copy=False)


def _checked(shape, positions, symbols, codebook):
    """`from_positions`' inputs checked (see there): ((rows, cols), positions, symbols as
    int64, codebook as float32)."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be two non-negative ints, got {shape!r}") from None
    if len(dims) != 2 or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) and d >= 0
        for d in dims
    ):
        raise ValueError(f"shape must be two non-negative ints, got {shape!r}")
    rows, ncols = int(dims[0]), int(dims[1])
    numel = rows * ncols
    positions = _int_array(positions, "positions")
    symbols = _int_array(symbols, "symbols")
    if len(positions) != len(symbols):
        raise ValueError(
            f"{len(positions)} positions but {len(symbols)} symbols: one symbol per position"
        )
    codebook = np.asarray(codebook)
    if codebook.ndim != 1:
        raise ValueError(f"codebook must be a 1-D array, got shape {codebook.shape}")
    if codebook.size and codebook.dtype.kind not in "iuf":
        raise ValueError(f"codebook must be real numbers, got dtype {codebook.dtype}")
    with np.errstate(over="ignore"):  # a value past float32's range: inf, refused below
        codebook = codebook.astype(np.float32)
    k = len(codebook)
    if k > MAX_SHARED:
        raise ValueError(f"codebook holds {k} values, more than {MAX_SHARED}")
    if not np.isfinite(codebook).all():
        bad = codebook[~np.isfinite(codebook)][0]
        raise ValueError(f"codebook values must be finite (as float32), got {bad}")
    if len(positions):
        lo, hi = int(positions.min()), int(positions.max())
        if lo < 0 or hi >= numel:
            raise ValueError(
                f"positions must lie in [0, {numel}) for shape {(rows, ncols)}, "
                f"got {lo if lo < 0 else hi}"
            )
        steps = np.diff(positions)
        if len(steps) and steps.min() <= 0:
            i = int(np.argmax(steps <= 0))
            raise ValueError(
                "positions must be ascending and distinct, got "
                f"{positions[i]} then {positions[i + 1]} (at {i})"
            )
        lo, hi = int(symbols.min()), int(symbols.max())
        if lo < 0 or hi > k:
            raise ValueError(
                f"symbols must lie in [0, {k}] (1..{k} index the codebook of {k} values, "
                f"0 is a filler), got {lo if lo < 0 else hi}"
            )
    return (rows, ncols), positions, symbols, codebook


def choose_layout(rows: int, cols: int, nnz: int, k: int) -> str:
    """The layout `from_positions(layout="auto")` takes; see the module notes."""
    if simd.level() is None or k > 256:
        return "entries"
    index_bytes = nnz * (3 if cols <= 1 << 16 else 5)
    bitmap_bytes = rows * 8 * -(-cols // 64) + nnz
    return "index" if index_bytes <= max(0.10 * 4 * rows * cols, bitmap_bytes) else "bitmap"


class EntryMatrix(CompressedMatrix):
    """The "entries" layout: rows of packed (gap, code) entries in 8, 16 or 32 bits, the width
    chosen per matrix to take the fewest bytes (EIE's encoding: a relative column index and a
    codebook index per kept weight, fillers where a gap overflows)."""

    layout = "entries"

    def __init__(self, shape, row_ptr, ent, code_bits, table):
        super().__init__(shape, table)
        self.row_ptr, self.ent, self.code_bits = row_ptr, ent, code_bits
        self.mask = (1 << code_bits) - 1

    @classmethod
    def build(cls, shape, positions, symbols, codebook) -> EntryMatrix:
        rows, ncols = shape
        row, col = positions // ncols, positions % ncols
        prev = np.empty_like(col)
        prev[1:] = col[:-1]
        new_row = np.ones(len(col), dtype=bool)
        new_row[1:] = row[1:] != row[:-1]
        prev[new_row] = -1
        d = col - prev - 1  # zeros skipped within the row
        code_bits = max(1, int(len(codebook)).bit_length())  # codes 1..k, 0 = filler
        best = None
        for width, dtype in ((8, np.uint8), (16, np.uint16), (32, np.uint32)):
            gap_bits = width - code_bits
            if gap_bits < 1:
                continue
            span = 1 << min(gap_bits, 16)
            n = len(d) + int((d // span).sum())
            if best is None or n * width < best[0]:
                best = (n * width, min(gap_bits, 16), dtype)
        _, gap_bits, dtype = best
        gaps, is_real = encode_gaps(d, gap_bits)
        codes = np.zeros(len(gaps), dtype=np.int64)
        codes[is_real] = symbols
        row_ptr = _row_ptr(np.repeat(row, d // (1 << gap_bits) + 1), rows)
        ent = ((gaps.astype(np.int64) << code_bits) | codes).astype(dtype)
        table = np.concatenate([[0.0], codebook.astype(np.float64)]).astype(np.float32)
        return cls(shape, row_ptr.astype(np.int32), ent, code_bits, table)

    def _arrays(self):
        return self.row_ptr, self.ent, self.table

    def dense(self) -> torch.Tensor:
        out = np.zeros(self.shape, dtype=np.float32)
        _entries_dense(self.row_ptr, self.ent, self.code_bits, self.mask, self.table, out)
        return torch.from_numpy(out)

    def matmul_t(self, x: torch.Tensor) -> torch.Tensor:
        if _nothing_to_run(x, self.shape):
            return torch.zeros(x.shape[0], self.shape[0])
        xt = _xt(x, self.shape[1])
        out = np.zeros((self.shape[0], xt.shape[1]), dtype=np.float64)
        _entries_mm(self.row_ptr, self.ent, self.code_bits, self.mask, self.table, xt, out)
        return torch.from_numpy(out.T.astype(np.float32))


class _CodedMatrix(CompressedMatrix):
    """What "index" and "bitmap" share: row pointers into uint8 codes (0..k-1), 64 bytes of
    padding after them (the AVX-512 kernels load up to 64 codes at a time), and kernel dispatch."""

    def __init__(self, shape, ptr, pos, codes, table):
        super().__init__(shape, table)
        self.ptr, self.pos, self.codes = ptr, pos, codes

    @classmethod
    def build(cls, shape, positions, symbols, codebook):
        ptr = _row_ptr(positions // shape[1], shape[0])
        codes = np.zeros(len(symbols) + 64, dtype=np.uint8)
        codes[: len(symbols)] = symbols - 1
        return cls(shape, ptr, cls._positions(shape, positions), codes, codebook.copy())

    def _arrays(self):
        return self.ptr, self.pos, self.codes, self.table

    def dense(self) -> torch.Tensor:
        out = np.zeros(self.shape[0] * self.shape[1], dtype=np.float32)
        out[self._flat_positions()] = self.table[self.codes[: self.ptr[-1]]]
        return torch.from_numpy(out.reshape(self.shape))

    def _flat_positions(self) -> np.ndarray:
        """Row-major flat positions of the kept weights, ascending (int64)."""
        raise NotImplementedError

    def to_layout(self, layout: str) -> CompressedMatrix:
        """The same matrix in `layout` (its positions, codes and codebook, rebuilt)."""
        nnz = int(self.ptr[-1])
        symbols = self.codes[:nnz].astype(np.int64) + 1
        return CompressedMatrix.from_positions(
            self.shape, self._flat_positions(), symbols, self.table, layout
        )

    def matmul_t(
        self, x: torch.Tensor, use_simd: bool | None = None, level: str | None = None
    ) -> torch.Tensor:
        """`x @ W.T` with the C kernels of `level` (default: the matrix's `.level`);
        `use_simd` False forces the numba reference kernel (for tests).

        Raises:
            ValueError: x is not (B, cols).
        """
        if _nothing_to_run(x, self.shape):
            return torch.zeros(x.shape[0], self.shape[0])
        level = level or self.level
        use_simd = level is not None and use_simd is not False
        xt = _xt(x, self._x_rows() if use_simd else self.shape[1])
        if not use_simd:
            out = np.zeros((self.shape[0], xt.shape[1]), dtype=np.float64)
            self._reference(xt, out)
            return torch.from_numpy(out.T.astype(np.float32))
        out = np.empty((self.shape[0], xt.shape[1]), dtype=np.float32)  # the kernels fill it
        threads = self.threads.get(xt.shape[1]) if self.threads else None
        simd.run(self.layout, self.pos, self.ptr, self.codes, self.table, xt, out, level, threads)
        return torch.from_numpy(out.T)

    def _x_rows(self) -> int:
        return self.shape[1]


class IndexMatrix(_CodedMatrix):
    """The "index" layout: each kept weight's column and code."""

    layout = "index"

    @staticmethod
    def _positions(shape, positions):
        col = positions % shape[1]
        return col.astype(np.uint16 if shape[1] <= 1 << 16 else np.int32)

    def _flat_positions(self) -> np.ndarray:
        row = np.repeat(np.arange(self.shape[0], dtype=np.int64), np.diff(self.ptr))
        return row * self.shape[1] + self.pos

    def _reference(self, xt, out):
        _index_mm_ref(self.ptr, self.pos, self.codes, self.table, xt, out)


class BitmapMatrix(_CodedMatrix):
    """The "bitmap" layout: a bit per column of each row, and the codes of the kept weights."""

    layout = "bitmap"

    @staticmethod
    def _positions(shape, positions):
        rows, ncols = shape
        nb = -(-ncols // 64)
        row, col = positions // ncols, positions % ncols
        words = np.zeros((rows, nb), dtype=np.uint64)
        # distinct bits of a word: adding them is OR-ing them
        bit = np.left_shift(np.uint64(1), (col % 64).astype(np.uint64))
        np.add.at(words, (row, col // 64), bit)
        return words

    def _flat_positions(self) -> np.ndarray:
        rows, nb = self.pos.shape
        bits = np.unpackbits(self.pos.view(np.uint8), bitorder="little").reshape(rows, nb * 64)
        row, col = np.nonzero(bits)  # row-major: ascending positions
        return row.astype(np.int64) * self.shape[1] + col

    def _x_rows(self) -> int:
        return 64 * self.pos.shape[1]  # the kernel reads whole 64-column blocks

    def _reference(self, xt, out):
        _bitmap_mm_ref(self.pos, self.ptr, self.codes, self.table, xt, out)


def _row_ptr(row: np.ndarray, rows: int) -> np.ndarray:
    """Start of each row's entries and the end of the last (int64, rows + 1), given the
    ascending row of every entry."""
    ptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=rows), out=ptr[1:])
    return ptr


def _nothing_to_run(x: torch.Tensor, shape: tuple[int, int]) -> bool:
    """Whether `x @ W.T` for W of `shape` is all zeros with nothing to compute: no inputs, no
    rows or no columns (a kernel must not be called then: those for a single input would
    write a value per row into an output of no columns).

    Raises:
        ValueError: x is not 2-D with `shape[1]` columns (fewer would be read as zero-padded).
    """
    if x.dim() != 2 or x.shape[1] != shape[1]:
        raise ValueError(
            f"x must be (batch, {shape[1]}) for a {shape} matrix, got {tuple(x.shape)}"
        )
    return x.shape[0] == 0 or shape[0] == 0 or shape[1] == 0


def _xt(x: torch.Tensor, n_rows: int) -> np.ndarray:
    """x (B, cols) as a C-contiguous float32 (n_rows, B) array, zero rows past cols."""
    if x.dtype != torch.float32 or not x.is_cpu:
        x = x.to(device="cpu", dtype=torch.float32)
    xn = x.detach().numpy()
    if xn.shape[0] == 1 and xn.shape[1] == n_rows:
        return np.ascontiguousarray(xn.reshape(n_rows, 1))
    xt = np.zeros((n_rows, xn.shape[0]), dtype=np.float32)
    xt[: xn.shape[1]] = xn.T
    return xt
