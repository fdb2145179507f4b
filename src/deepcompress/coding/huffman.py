"""Length-limited canonical Huffman coding of integer symbol streams.

A stream of symbols ``0 .. n-1`` is coded with a table of *code lengths*, one per symbol
(``0`` = symbol absent). Only the lengths are stored; the codes themselves are derived from
them canonically, exactly as in DEFLATE (RFC 1951, section 3.2.2).

Bit conventions
---------------
* **Code lengths.** At most ``MAX_CODE_LEN`` = 15 bits, so a length fits in 4 bits. A table is
  valid when either (a) every length is 0 (empty table, only an empty stream can be coded),
  (b) exactly one length is nonzero and it equals 1 (single-symbol table), or (c) the lengths
  form a *complete* prefix code: the Kraft sum of ``2**-L`` over the nonzero lengths is exactly
  1. Incomplete and over-subscribed tables are rejected.
* **Canonical codes.** Symbols are sorted by (length, symbol index); the first gets the code of
  all zero bits, and each next code is the previous one plus 1, shifted left by the difference
  in lengths. Shorter codes are therefore numerically smaller prefixes, and within one length
  codes increase with the symbol index.
* **Bit packing.** Codes are written one after another, each code most significant bit first,
  into bytes filled from their most significant bit (bit 7) down to bit 0. The last byte is
  padded with 0 bits; there are between 0 and 7 padding bits and no further bytes. The symbol
  count is not stored in the payload (the container stores it), so decoding needs it.
* **Single-symbol table.** When exactly one symbol is present its length is 1 by convention,
  but every occurrence costs 0 bits: the payload is empty (``b""``) and the decoder repeats the
  symbol ``count`` times.
* **Length limiting.** ``code_lengths`` builds an ordinary Huffman code; if its longest code
  exceeds ``max_len`` it halves every nonzero frequency (rounding down but keeping it >= 1) and
  rebuilds, until the longest code fits. This is a heuristic, not the optimal package-merge; it
  gives exactly the Huffman code whenever the limit is not binding.
"""

from __future__ import annotations

import heapq
import operator

import numpy as np

from ..errors import FormatError
from . import _native
from ._checks import as_int_vector as _as_int_vector
from ._checks import symbol_array, symbol_count
from ._lazy_jit import njit

__all__ = [
    "MAX_CODE_LEN",
    "code_lengths",
    "validate_lengths",
    "canonical_codes",
    "encode",
    "decode",
    "coded_bits",
]

MAX_CODE_LEN = 15

# Largest code length the helpers accept at all (codes are np.uint32).
_ABS_MAX_LEN = 32


# --------------------------------------------------------------------------------------------
# Code lengths
# --------------------------------------------------------------------------------------------


def _huffman_depths(freqs: list[int]) -> list[int]:
    """Unlimited Huffman code lengths for ``len(freqs) >= 2`` positive frequencies.

    Ties are broken by node id: leaves have ids ``0..n-1`` in symbol order, merged nodes get
    ``n, n+1, ...`` in creation order, so equal weights pop leaves first, lowest index first.
    """
    n = len(freqs)
    heap = [(f, i) for i, f in enumerate(freqs)]
    heapq.heapify(heap)
    parent = [0] * (2 * n - 1)
    nxt = n
    pop, push = heapq.heappop, heapq.heappush
    while len(heap) > 1:
        f1, a = pop(heap)
        f2, b = pop(heap)
        parent[a] = nxt
        parent[b] = nxt
        push(heap, (f1 + f2, nxt))
        nxt += 1
    depth = [0] * (2 * n - 1)
    # Parents are created after their children, so walk ids downwards from the root.
    for k in range(2 * n - 3, -1, -1):
        depth[k] = depth[parent[k]] + 1
    return depth[:n]


def code_lengths(freqs: np.ndarray, max_len: int = MAX_CODE_LEN) -> np.ndarray:
    """Length-limited Huffman code lengths for a histogram.

    Deterministic: ties are broken by symbol index. Length limiting uses the halving heuristic
    (see the module docstring): while the longest code exceeds ``max_len``, every nonzero
    frequency ``f`` becomes ``max(f // 2, 1)`` and the code is rebuilt. When the limit is not
    binding the result is an optimal (plain Huffman) code.

    Args:
        freqs: 1-D array of non-negative integer frequencies, one per symbol.
        max_len: Longest allowed code, 1..32.

    Returns:
        ``np.uint8`` array of code lengths, same size as ``freqs``: 0 for absent symbols; all
        zeros if no symbol is present; ``1`` for the only symbol if exactly one is present;
        otherwise a complete prefix code (Kraft sum exactly 1).

    Raises:
        ValueError: if ``freqs`` is not a 1-D integer array, has negative entries, if
            ``max_len`` is out of range, or if more than ``2**max_len`` symbols are present.
    """
    f = _as_int_vector(freqs, "freqs", ValueError)
    max_len = operator.index(max_len)
    if not 1 <= max_len <= _ABS_MAX_LEN:
        raise ValueError(f"max_len must be in 1..{_ABS_MAX_LEN}, got {max_len}")
    if f.size and int(f.min()) < 0:
        raise ValueError("freqs must be non-negative")
    lengths = np.zeros(f.size, dtype=np.uint8)
    present = np.flatnonzero(f)
    if present.size == 0:
        return lengths
    if present.size == 1:
        lengths[present[0]] = 1
        return lengths
    if present.size > (1 << max_len):
        raise ValueError(
            f"{present.size} symbols present, more than 2**{max_len} codes of <= {max_len} bits"
        )
    w = f[present]
    while True:
        depths = _huffman_depths(w.tolist())
        if max(depths) <= max_len:
            break
        w = np.maximum(w >> 1, 1)
    lengths[present] = depths
    return lengths


def validate_lengths(lengths: np.ndarray, max_len: int = MAX_CODE_LEN) -> None:
    """Check that a code-length table describes a usable code.

    Args:
        lengths: 1-D integer array of code lengths, one per symbol.
        max_len: Longest allowed code.

    Returns:
        None.

    Raises:
        FormatError: unless ``lengths`` is a 1-D integer array with entries in ``0..max_len``
            that is all zero, or has exactly one nonzero entry equal to 1, or is a complete
            prefix code (Kraft sum exactly 1, checked in integer arithmetic).
    """
    lens = _as_int_vector(lengths, "code lengths", FormatError)
    if lens.size == 0:
        return
    lo, hi = int(lens.min()), int(lens.max())
    if lo < 0:
        raise FormatError(f"negative code length {lo}")
    if hi > max_len:
        raise FormatError(f"code length {hi} exceeds the maximum of {max_len}")
    if hi == 0:
        return
    counts = np.bincount(lens, minlength=hi + 1).tolist()
    present = sum(counts[1:])
    if present == 1:
        if hi != 1:
            raise FormatError(f"single-symbol table must use length 1, got {hi}")
        return
    kraft = sum(c << (hi - b) for b, c in enumerate(counts) if b > 0)
    if kraft > (1 << hi):
        raise FormatError("code lengths are over-subscribed (Kraft sum > 1)")
    if kraft < (1 << hi):
        raise FormatError("code lengths are incomplete (Kraft sum < 1)")


def _canonical_order(lens: np.ndarray) -> np.ndarray:
    """Indices of present symbols sorted by (length, symbol index)."""
    present = np.flatnonzero(lens)
    return present[np.argsort(lens[present], kind="stable")]


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical Huffman codes for a code-length table (RFC 1951, section 3.2.2).

    The table is not validated; for an over-subscribed table the codes are meaningless.

    Args:
        lengths: 1-D integer array of code lengths (0..32), one per symbol.

    Returns:
        ``np.uint32`` array of codes, one per symbol; a code's value is meant to be read in
        its length's low bits, most significant first. Absent symbols get 0.

    Raises:
        ValueError: if ``lengths`` is not a 1-D integer array with entries in 0..32.
    """
    lens = _as_int_vector(lengths, "code lengths", ValueError)
    codes = np.zeros(lens.size, dtype=np.uint32)
    if lens.size == 0:
        return codes
    lo, hi = int(lens.min()), int(lens.max())
    if lo < 0 or hi > _ABS_MAX_LEN:
        raise ValueError(f"code lengths must be in 0..{_ABS_MAX_LEN}")
    if hi == 0:
        return codes
    order = _canonical_order(lens)
    sorted_lens = lens[order]
    bl_count = np.bincount(sorted_lens, minlength=hi + 1).tolist()
    bl_count[0] = 0
    next_code = [0] * (hi + 1)
    group_start = [0] * (hi + 1)
    code = 0
    start = 0
    for bits in range(1, hi + 1):
        code = (code + bl_count[bits - 1]) << 1
        next_code[bits] = code
        group_start[bits] = start
        start += bl_count[bits]
    rank = np.arange(order.size, dtype=np.int64) - np.asarray(group_start, np.int64)[sorted_lens]
    vals = np.asarray(next_code, dtype=np.int64)[sorted_lens] + rank
    codes[order] = (vals & 0xFFFFFFFF).astype(np.uint32)
    return codes


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


@njit(cache=True)
def _encode_kernel(symbols, lens, codes, present):  # pragma: no cover - compiled
    """Pack codes MSB first. Returns (bytes, -1) or (empty, index of the first bad symbol)."""
    nsym = lens.size
    total = 0
    for i in range(symbols.size):
        s = symbols[i]
        if s < 0 or s >= nsym or present[s] == 0:
            return np.empty(0, np.uint8), i
        total += lens[s]
    out = np.empty((total + 7) // 8, np.uint8)
    acc = 0
    nbits = 0
    p = 0
    for i in range(symbols.size):
        s = symbols[i]
        acc = (acc << lens[s]) | codes[s]
        nbits += lens[s]
        if nbits >= 32:  # nbits < 32 + 15, acc < 2**47: no overflow
            nbits -= 32
            w = acc >> nbits
            out[p] = (w >> 24) & 255
            out[p + 1] = (w >> 16) & 255
            out[p + 2] = (w >> 8) & 255
            out[p + 3] = w & 255
            p += 4
            acc &= (1 << nbits) - 1
    while nbits >= 8:
        nbits -= 8
        out[p] = (acc >> nbits) & 255
        p += 1
    if nbits > 0:
        out[p] = (acc << (8 - nbits)) & 255
    return out, -1


def _present_count(lens: np.ndarray) -> int:
    return int(np.count_nonzero(lens))


def encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    """Huffman-code a symbol stream with the canonical code of ``lengths``.

    Args:
        symbols: Integer array of symbols in ``[0, len(lengths))`` (flattened in C order).
        lengths: Valid code-length table (see ``validate_lengths``).

    Returns:
        The packed codes, MSB first, zero-padded to a whole byte; ``b""`` for an empty stream
        or a single-symbol table.

    Raises:
        FormatError: if ``lengths`` is not a valid table (FormatError is a ValueError).
        ValueError: if ``symbols`` is not an integer array, or a symbol is out of range or has
            code length 0.
    """
    validate_lengths(lengths)
    lens = _as_int_vector(lengths, "code lengths", FormatError)
    sym = symbol_array(symbols, lens.size)
    if sym.size == 0:
        return b""
    present = (lens > 0).view(np.uint8)
    if _present_count(lens) == 1:
        eff_lens = np.zeros_like(lens)
        codes = np.zeros(lens.size, dtype=np.int64)
    else:
        eff_lens = lens
        codes = canonical_codes(lens).astype(np.int64)
    out, bad = _encode_kernel(sym, eff_lens, codes, present)
    if bad >= 0:  # in range (checked above), so absent from the table
        raise ValueError(f"symbol {int(sym[bad])} (at position {bad}) has code length 0")
    return out.tobytes()


def coded_bits(freqs: np.ndarray, lengths: np.ndarray) -> int:
    """Number of payload bits ``encode`` uses for a stream with these symbol frequencies.

    Args:
        freqs: 1-D non-negative integer histogram, same size as ``lengths``.
        lengths: Code-length table.

    Returns:
        ``sum(freqs * lengths)``, or 0 for a single-symbol table. The payload takes
        ``ceil(bits / 8)`` bytes.

    Raises:
        ValueError: if the arrays differ in size, or a symbol with nonzero frequency has code
            length 0.
    """
    f = _as_int_vector(freqs, "freqs", ValueError)
    lens = _as_int_vector(lengths, "code lengths", ValueError)
    if f.size != lens.size:
        raise ValueError(f"freqs has {f.size} entries but lengths has {lens.size}")
    if np.any((f != 0) & (lens == 0)):
        raise ValueError("a symbol with nonzero frequency has code length 0")
    if _present_count(lens) <= 1:
        return 0
    return int(np.dot(f, lens))


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------

_LEN_BITS = 5  # a decode-table entry is (symbol << 5) | length
_OK, _RAN_OUT, _TOO_MUCH_PADDING, _NONZERO_PADDING = 0, 1, 2, 3


@njit(cache=True)
def _decode_kernel(data, table, tbits, out):  # pragma: no cover - compiled
    """Table-driven decode into `out` (its size: the count). Returns (out, status, index
    where decoding stopped)."""
    count = out.size
    n = data.size
    pos = 0
    acc = 0
    nbits = 0
    mask = (1 << tbits) - 1
    for i in range(count):
        if nbits < tbits:
            while nbits <= 48 and pos < n:  # acc stays below 2**56
                acc = (acc << 8) | data[pos]
                pos += 1
                nbits += 8
            if nbits < tbits:  # end of data: look up with zero bits appended
                peek = (acc << (tbits - nbits)) & mask
            else:
                peek = (acc >> (nbits - tbits)) & mask
        else:
            peek = (acc >> (nbits - tbits)) & mask
        e = table[peek]
        ln = e & 31
        if ln > nbits:
            return out, 1, i
        out[i] = e >> 5
        nbits -= ln
        acc &= (1 << nbits) - 1
    if nbits + 8 * (n - pos) > 7:
        return out, 2, count
    if acc != 0:
        return out, 3, count
    return out, 0, count


def _decode_table(lens: np.ndarray) -> tuple[np.ndarray, int]:
    """Single-level lookup table indexed by the next ``max(lens)`` bits (complete code)."""
    order = _canonical_order(lens)
    sorted_lens = lens[order]
    tbits = int(sorted_lens[-1])
    entries = (order.astype(np.int64) << _LEN_BITS) | sorted_lens
    table = np.repeat(entries, 1 << (tbits - sorted_lens))
    return table, tbits


def decode(data: bytes, lengths: np.ndarray, count: int, *, out=None) -> np.ndarray:
    """Decode ``count`` symbols coded by ``encode`` with the same ``lengths``.

    Runs in O(count + len(data) + 2**max(lengths)) time and memory whatever the input.

    Args:
        data: The payload (bytes-like).
        lengths: Code-length table; validated first.
        count: Number of symbols to decode.
        out: None, or where to write the symbols: a C-contiguous uint16, int32 or int64
            array of ``count`` elements wide enough for the alphabet (``ValueError`` if it is
            not such an array); a decoder that must not hold an int64 array per symbol.

    Returns:
        ``np.int64`` array of ``count`` symbols, or ``out`` holding them.

    Raises:
        FormatError: if the table is invalid; ``count`` is negative; ``count > 0`` with an
            empty table; a single-symbol table comes with non-empty data; the data runs out
            before ``count`` symbols; or more than 7 padding bits, or nonzero padding bits,
            remain at the end.
    """
    validate_lengths(lengths)
    lens = _as_int_vector(lengths, "code lengths", FormatError)
    count = symbol_count(count)
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    npresent = _present_count(lens)
    if npresent == 0:
        if count > 0:
            raise FormatError(f"{count} symbols expected but the code table is empty")
        if buf.size:
            raise FormatError(f"{buf.size} bytes of data for an empty stream")
        return _native.symbols_out(out, 0)
    if npresent == 1:
        if buf.size:
            raise FormatError(f"{buf.size} bytes of data for a single-symbol stream")
        out = _native.symbols_out(out, count)
        out[:] = int(np.flatnonzero(lens)[0])
        return out
    if count > 8 * buf.size:
        raise FormatError(f"{count} symbols cannot fit in {buf.size} bytes")
    table, tbits = _decode_table(lens)
    out = _native.symbols_out(out, count)
    if _native.lib() is not None:
        out, status, where = _native.huffman_decode(buf, table, tbits, out)
    else:
        out, status, where = _decode_kernel(buf, table, tbits, out)
    if status == _RAN_OUT:
        raise FormatError(f"data ran out after {where} of {count} symbols ({buf.size} bytes)")
    if status == _TOO_MUCH_PADDING:
        raise FormatError(f"more than 7 bits left after {count} symbols ({buf.size} bytes)")
    if status == _NONZERO_PADDING:
        raise FormatError("nonzero padding bits at the end of the data")
    return out
