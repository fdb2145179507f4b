"""Stage 3: the sparse index (Deep Compression, section 2, Figure 2).

The kept weights of a layer, in row-major (PyTorch) order, are stored as *entries*: for each
entry, the number of pruned positions skipped since the previous entry (its *gap*), in a fixed
width of `index_bits` bits. A gap larger than `2**index_bits - 1` is bridged by *filler*
entries: a filler skips the largest gap the width allows and stands on a zero weight.

    positions 0..13, kept at 1, 2, 13; index_bits = 2 (largest gap 3):
    entry gaps  1, 0, 3(filler at 6), 3(filler at 10), 2
    weights     w1, w2, 0, 0, w13

Decoding is a cumulative sum: `position = cumsum(gap + 1) - 1`.
"""

from __future__ import annotations

import numpy as np

from . import _native


def check_index_bits(index_bits) -> None:
    """None (the width is chosen by size) or an integer in 1..16; else ValueError."""
    if index_bits is None:
        return
    ok = isinstance(index_bits, (int, np.integer)) and not isinstance(index_bits, bool)
    if not ok or not 1 <= index_bits <= 16:
        raise ValueError(
            f"index_bits must be an integer in 1..16 (or None: chosen by size), got {index_bits!r}"
        )


def max_gap(index_bits: int) -> int:
    """The largest gap a width of `index_bits` bits can store."""
    if not 1 <= index_bits <= 16:
        raise ValueError(f"index_bits must be in 1..16, got {index_bits}")
    return (1 << index_bits) - 1


_CHUNK = 1 << 16  # elements a slice: where a whole-array temporary would be as long as the data


def position_dtype(numel: int) -> type:
    """The integer type of flat positions (and gaps) in a tensor of `numel` elements: int32
    when they fit, which halves the encoder's largest arrays."""
    return np.int32 if numel < 2**31 else np.int64


def nonzero_gaps(flat: np.ndarray, chunk: int = _CHUNK) -> np.ndarray:
    """`raw_gaps(np.flatnonzero(flat))` by slices, with no int64 array as long as `flat`: as
    uint16 if they all fit (a tensor with no long run of zeros), else `position_dtype`."""
    starts = range(0, flat.size, chunk)
    counts = [int(np.count_nonzero(flat[i : i + chunk])) for i in starts]
    out = np.empty(sum(counts), position_dtype(flat.size))
    at, previous = 0, -1  # position of the last non-zero so far
    for i, c in zip(starts, counts):
        if c:
            p = np.flatnonzero(flat[i : i + chunk]) + i
            out[at] = p[0] - previous - 1
            np.subtract(p[1:], p[:-1], out=out[at + 1 : at + c])
            out[at + 1 : at + c] -= 1
            at, previous = at + c, int(p[-1])
    return out.astype(np.uint16) if out.max(initial=0) <= 0xFFFF else out


def raw_gaps(positions: np.ndarray) -> np.ndarray:
    """Zeros skipped before each of the ascending `positions` (int32 if they are, else
    int64), with no temporary array."""
    p = np.asarray(positions).reshape(-1)
    if p.dtype != np.int32:
        p = p.astype(np.int64, copy=False)
    d = np.empty_like(p)
    if len(p):
        d[0] = p[0]
        np.subtract(p[1:], p[:-1], out=d[1:])
        d[1:] -= 1
    return d


def encode_positions(positions: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Entries for the kept `positions` (ascending flat indices).

    Args:
        positions: ascending, distinct, non-negative flat indices of the kept weights.
        index_bits: the width of a stored gap.

    Returns:
        `(gaps, is_real)`: per entry, its gap (uint16 in `[0, 2**index_bits - 1]`) and whether it
        is a real weight (False for fillers). Every real weight's entry comes right after the
        fillers that lead to it.
    """
    return encode_gaps(raw_gaps(positions), index_bits)


def encode_gaps(d: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """`encode_positions` given each kept weight's raw gap `d` (zeros skipped before it)."""
    return encode_entries(d, index_bits, np.ones(len(d), dtype=bool))


def encode_entries(
    d: np.ndarray, index_bits: int, symbols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The gap and symbol streams of the kept weights whose raw gaps are `d` and whose
    symbols (any integer or bool array as long as `d`) are `symbols`: a filler (gap
    2**index_bits - 1, symbol 0) goes before a weight for each full span its gap holds.

    Returns `(gaps, entry_symbols)`: the gaps as uint16 (a width is at most 16 bits), the
    symbols in their own dtype (`symbols` itself when no filler is needed). The work goes by
    slices of `d`: no temporary array as long as the streams (the encoder's memory peak is
    in them).
    """
    span = max_gap(index_bits) + 1
    if len(d) and d.min() < 0:
        raise ValueError("positions must be ascending, distinct and non-negative")
    chunks = range(0, len(d), _CHUNK)
    fillers = sum(int((d[i : i + _CHUNK] >> index_bits).sum()) for i in chunks)
    if fillers == 0:
        return d.astype(np.uint16, copy=False), symbols
    gaps = np.full(len(d) + fillers, span - 1, dtype=np.uint16)
    out = np.zeros(len(gaps), dtype=symbols.dtype)
    at = 0  # entries written so far
    for i in chunks:
        part = d[i : i + _CHUNK]
        last = np.cumsum((part >> index_bits).astype(np.int64) + 1) + (at - 1)  # entry index
        gaps[last] = part & (span - 1)
        out[last] = symbols[i : i + _CHUNK]
        at = int(last[-1]) + 1
    return gaps, out


def decode_positions(gaps: np.ndarray) -> np.ndarray:
    """Flat positions of the entries whose gaps are `gaps` (int64: the one array made)."""
    p = np.add(np.asarray(gaps), 1, dtype=np.int64)
    np.cumsum(p, out=p)
    p -= 1
    return p


def expand(gaps: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:
    """A `shared` tensor made dense in place: `out` (float32, C-contiguous, the tensor's
    elements) comes with its entries' symbols as int32 in its last `len(gaps)` 4-byte slots
    and leaves with `table[symbol i]` at entry i's position (`decode_positions(gaps)`), zeros
    elsewhere; `gaps` is uint16. So the gaps are the only array besides the output.

    One pass from the first entry to the last: entry i's position is at most the slot of its
    own symbol (each entry after it needs a position of its own), so what is written for it
    (the zeros since entry i - 1, then its value) overwrites only symbols already read. The C
    loop where built, else numpy by slices of entries. The caller has checked that the gaps
    end inside `out` and that every symbol indexes `table`.
    """
    if _native.lib() is not None:
        return _native.expand_shared(gaps, table, out)
    sym, chunk = out.view(np.int32)[out.size - len(gaps) :], _CHUNK >> 2
    at = 0  # the next element to write
    for a in range(0, len(gaps), chunk):
        pos = np.add(gaps[a : a + chunk], 1, dtype=np.int64)
        np.cumsum(pos, out=pos)
        pos += at - 1
        values = table[sym[a : a + chunk]]  # read before the writes below
        out[at : pos[-1]] = 0
        out[pos] = values
        at = int(pos[-1]) + 1
    out[at:] = 0


def filler_count(positions: np.ndarray, index_bits: int) -> int:
    """How many filler entries `encode_positions` would add."""
    return int((raw_gaps(positions) // (max_gap(index_bits) + 1)).sum())
