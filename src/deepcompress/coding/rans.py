"""Static (two-pass, order-0) rANS entropy coding of integer symbol streams.

A stream of symbols ``0 .. n-1`` is coded with a table of *frequencies*, one per symbol, that
sum to exactly ``M = 2**precision`` (``0`` = symbol absent). The coder is the byte-wise rANS
of Fabian Giesen's ``ryg_rans`` (``rans_byte.h``) with two interleaved 32-bit states sharing
one byte stream (as in its ``main.cpp`` interleaved example); a symbol of frequency ``f``
costs about ``precision - log2(f)`` bits.

Frequency tables
----------------
* **Precision.** ``1 <= precision <= MAX_PRECISION`` = 15. A table is valid when either every
  frequency is 0 (*empty table*: only an empty stream can be coded; any precision is accepted
  by the API, and ``pack_table`` stores it as precision 0), or the frequencies are
  non-negative and sum to exactly ``2**precision``. A table whose only nonzero frequency is
  ``2**precision`` is a *single-symbol table*.
* **Cumulative frequencies.** ``cum[s] = freq[0] + ... + freq[s-1]``; symbol ``s`` owns the
  slots ``cum[s] .. cum[s] + freq[s] - 1`` of ``0 .. M-1``.

Payload (``encode`` / ``decode``)
---------------------------------
* **States.** ``L = 2**23``. There are two states, ``x0`` and ``x1``; symbol number ``i``
  (counting from 0) is coded with ``x0`` when ``i`` is even and with ``x1`` when ``i`` is odd.
  Between symbols each state is in ``[L, 256 * L)``.
* **Encoding** starts with ``x0 = x1 = L`` and runs over the symbols *in reverse order*
  (``i = count-1`` down to 0). For symbol ``s`` with ``f = freq[s]`` and its state ``x``:
  while ``x >= ((L >> precision) << 8) * f``, output the byte ``x & 255`` and set
  ``x = x >> 8``; then ``x = (x // f) * M + (x % f) + cum[s]``. At the end ``x1`` and then
  ``x0`` are output as 4 bytes each.
* **Byte order.** The payload is the output read backwards, so the decoder reads it strictly
  forward: ``x0`` as a u32 **little-endian** (bytes 0..3), ``x1`` as a u32 little-endian
  (bytes 4..7), then the renormalisation bytes, last output first.
* **Decoding.** Read ``x0`` and ``x1``; both MUST be in ``[L, 256 * L)``. Then for
  ``i = 0 .. count-1``, with ``x`` the state of symbol ``i``: ``slot = x % M``; ``s`` is the
  symbol that owns ``slot``; ``x = freq[s] * (x // M) + slot - cum[s]``; while ``x < L``:
  ``x = (x << 8) | next byte`` (the data MUST NOT run out here). After ``count`` symbols every
  byte of the payload MUST have been read and both states MUST equal ``L`` (the encoder's
  initial states); otherwise the payload is rejected ("trailing bytes" / "final state
  mismatch"). This check catches nearly all corruption of the payload.
* **Conventions.** An empty stream is coded as ``b""`` (whatever the table). With a
  single-symbol table every symbol costs nothing: the payload is ``b""`` and the decoder
  repeats the symbol ``count`` times. Otherwise a non-empty stream takes at least 8 bytes
  (even a single symbol: ``x1`` is then flushed unused, as ``L``). The symbol count is not
  stored in the payload (the container stores it).

Table layout (``pack_table`` / ``unpack_table``)
-------------------------------------------------
The number of symbols ``n`` is not stored (the container stores it). Bit fields are written
most significant bit first, packed from bit 7 of each byte down to bit 0, one after another;
the last byte is padded with 0 bits (between 0 and 7; padding bits MUST be 0).

* **Empty table** (all frequencies 0, and the only valid table when ``n == 0``): the single
  byte ``00``; nothing follows.
* Otherwise:

  - byte 0: ``precision``, 1..15;
  - byte 1: bits 0..4 = ``w``, the width in bits of a stored frequency, which MUST equal the
    bit length of the largest frequency (so ``1 <= w <= precision + 1``); bit 7 = the mode
    (0 = dense, 1 = sparse); bits 5 and 6 MUST be 0;
  - from byte 2, a bit-packed body:

    - **dense** mode: ``n`` fields of ``w`` bits, ``freq[0] .. freq[n-1]``;
      ``ceil(n * w / 8)`` bytes.
    - **sparse** mode, with ``b`` = the bit length of ``n - 1`` (0 when ``n == 1``) and ``k`` =
      the number of nonzero frequencies: a field of ``b`` bits holding ``k - 1``, then for each
      present symbol, in increasing symbol order, its index ``s`` in ``b`` bits followed by
      ``freq[s]`` in ``w`` bits; ``ceil((b + k * (b + w)) / 8)`` bytes. Indices MUST be
      strictly increasing and below ``n``, and each stored frequency MUST be nonzero.

  The writer uses sparse mode exactly when it makes the whole table strictly shorter (in
  bytes) than dense mode, and a reader MUST reject the other mode. The frequencies MUST sum to
  exactly ``2**precision``, and the table MUST have exactly the length the layout implies
  (no trailing bytes). Every valid table therefore has exactly one encoding.

Quantisation (``quantize_freqs``)
---------------------------------
Frequencies start from proportional rounding (``max(1, round(M * hist / total))`` for present
symbols); the sum is corrected one unit at a time by the change that costs least, and then
units are moved between symbols while that lowers the coded size
``sum(hist * (precision - log2(freq)))``. As that cost is a convex separable function of the
frequencies, the result is the exact minimum (up to floating-point ties).
"""

from __future__ import annotations

import heapq
import math
import operator

import numpy as np

from ..errors import FormatError
from . import _native
from ._checks import as_int_vector as _as_int_vector
from ._checks import nonneg_int, symbol_array, symbol_count
from ._lazy_jit import njit

__all__ = [
    "MAX_PRECISION",
    "quantize_freqs",
    "estimate_bits",
    "pack_table",
    "unpack_table",
    "encode",
    "decode",
]

MAX_PRECISION = 15

_L = 1 << 23  # lower bound of the state; the state lives in [_L, 256 * _L)
_STATE_BYTES = 4
_MODE_SPARSE = 0x80
_WIDTH_MASK = 0x1F


# --------------------------------------------------------------------------------------------
# Argument checking
# --------------------------------------------------------------------------------------------


def _as_precision(precision, exc: type[Exception], allow_zero: bool = False) -> int:
    try:
        p = operator.index(precision)
    except TypeError:
        raise exc(f"precision must be an integer, got {precision!r}") from None
    lo = 0 if allow_zero else 1
    if not lo <= p <= MAX_PRECISION:
        raise exc(f"precision must be in {lo}..{MAX_PRECISION}, got {p}")
    return p


def _check_table(freqs, precision, exc: type[Exception]) -> tuple[np.ndarray, int, int]:
    """Validate a frequency table. Returns (freqs as int64, precision, number present)."""
    f = _as_int_vector(freqs, "freqs", exc)
    p = _as_precision(precision, exc, allow_zero=True)
    if f.size and int(f.min()) < 0:
        raise exc(f"negative frequency {int(f.min())}")
    present = int(np.count_nonzero(f))
    if present == 0:
        return f, p, 0
    if p == 0:
        raise exc("precision 0 is only allowed for an all-zero table")
    if int(f.max()) > (1 << p):  # also keeps the sum below from overflowing
        raise exc(f"frequency {int(f.max())} exceeds 2**{p}")
    total = int(f.sum())
    if total != 1 << p:
        raise exc(f"frequencies sum to {total}, not 2**{p} = {1 << p}")
    return f, p, present


def _cumulative(f: np.ndarray) -> np.ndarray:
    cum = np.zeros(f.size, dtype=np.int64)
    np.cumsum(f[:-1], out=cum[1:])
    return cum


# --------------------------------------------------------------------------------------------
# Quantisation and cost
# --------------------------------------------------------------------------------------------


def quantize_freqs(hist: np.ndarray, precision: int) -> np.ndarray:
    """Frequencies summing to ``2**precision`` that minimise the coded size of ``hist``.

    Args:
        hist: 1-D non-negative integer histogram, one count per symbol.
        precision: 1..MAX_PRECISION.

    Returns:
        ``np.int64`` array, same size as ``hist``: ``freq >= 1`` where ``hist > 0``,
        ``freq == 0`` where ``hist == 0``, summing to exactly ``2**precision``; all zeros if
        ``hist`` is all zero. Among such tables it minimises
        ``sum(hist * (precision - log2(freq)))``. Deterministic (ties go to the lower symbol).

    Raises:
        ValueError: if ``hist`` is not a 1-D non-negative integer array, ``precision`` is out of
            range, or more than ``2**precision`` symbols are present.
    """
    h = _as_int_vector(hist, "hist", ValueError)
    p = _as_precision(precision, ValueError)
    if h.size and int(h.min()) < 0:
        raise ValueError("hist must be non-negative")
    out = np.zeros(h.size, dtype=np.int64)
    present = np.flatnonzero(h)
    k = present.size
    m = 1 << p
    if k == 0:
        return out
    if k > m:
        raise ValueError(f"{k} symbols present, more than 2**{p} = {m} frequency slots")
    w = h[present].astype(np.float64)
    f = np.maximum(1, np.rint(w * (m / w.sum()))).astype(np.int64)
    out[present] = _fix_and_improve(w.tolist(), f.tolist(), m)
    return out


def _fix_and_improve(w: list[float], f: list[int], m: int) -> list[int]:
    """Greedy: correct ``sum(f)`` to ``m``, then move units while the cost drops.

    The cost ``-sum(w * log2(f))`` is convex and separable, so when no single move of one
    unit from a symbol to another lowers it the table is optimal.
    """
    k = len(f)
    log2 = math.log2

    def gain(i: int) -> float:  # cost saved by f[i] += 1
        return w[i] * (log2(f[i] + 1) - log2(f[i]))

    def loss(i: int) -> float:  # cost added by f[i] -= 1 (only for f[i] > 1)
        return w[i] * (log2(f[i]) - log2(f[i] - 1))

    # Heaps with lazy deletion: an entry is current only while f[i] still equals its stamp.
    inc = [(-gain(i), i, f[i]) for i in range(k)]
    dec = [(loss(i), i, f[i]) for i in range(k) if f[i] > 1]
    heapq.heapify(inc)
    heapq.heapify(dec)

    def top(heap):
        while heap[0][2] != f[heap[0][1]]:
            heapq.heappop(heap)
        return heap[0]

    def change(i: int, d: int) -> None:
        f[i] += d
        heapq.heappush(inc, (-gain(i), i, f[i]))
        if f[i] > 1:
            heapq.heappush(dec, (loss(i), i, f[i]))

    total = sum(f)
    while total > m:  # dec is non-empty: sum(f) > m >= k means some f[i] > 1
        change(top(dec)[1], -1)
        total -= 1
    while total < m:
        change(top(inc)[1], +1)
        total += 1
    while True:
        while dec and dec[0][2] != f[dec[0][1]]:
            heapq.heappop(dec)
        if not dec:
            break
        g, i, _ = top(inc)
        lo, j, _ = dec[0]
        if -g <= lo * (1 + 1e-12) or i == j:
            break
        change(j, -1)
        change(i, +1)
    return f


def estimate_bits(hist: np.ndarray, freqs: np.ndarray, precision: int) -> float:
    """Estimated payload size in bits of a stream with histogram ``hist``.

    An *estimate*, not the exact size: ``sum(hist * (precision - log2(freq)))`` (the ideal
    cost) plus 64 bits for the two flushed states; 0 for an empty stream or a single-symbol
    table (their payload is empty). The real payload of a non-empty stream,
    ``8 * len(encode(...))`` bits, lies between about ``ideal + 48`` and ``ideal + 64`` bits
    plus a tiny rANS approximation loss (well below 0.1% at ``L = 2**23``).

    Raises:
        ValueError: if the table is invalid, the sizes differ, ``hist`` is negative, or a
            symbol with ``hist > 0`` has frequency 0.
    """
    f, p, npresent = _check_table(freqs, precision, ValueError)
    h = _as_int_vector(hist, "hist", ValueError)
    if h.size != f.size:
        raise ValueError(f"hist has {h.size} entries but freqs has {f.size}")
    if h.size and int(h.min()) < 0:
        raise ValueError("hist must be non-negative")
    if np.any((h > 0) & (f == 0)):
        raise ValueError("a symbol with a nonzero count has frequency 0")
    if not h.any() or npresent == 1:
        return 0.0
    used = h > 0
    ideal = float(np.dot(h[used], p - np.log2(f[used])))
    return ideal + 16 * _STATE_BYTES


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _pack_fields(values: np.ndarray, widths: np.ndarray) -> bytes:
    """Bit-pack ``values[i]`` in ``widths[i]`` bits each, MSB first, zero-padded."""
    total = int(widths.sum())
    if total == 0:
        return b""
    ends = np.cumsum(widths)
    bits = np.zeros(total, dtype=np.uint8)
    # Bit j of a field (counting from its least significant bit) sits at end - 1 - j.
    for j in range(int(widths.max())):
        sel = widths > j
        bits[ends[sel] - 1 - j] = (values[sel] >> j) & 1
    return np.packbits(bits).tobytes()


def _read_fields(bits: np.ndarray, start: int, n: int, w: int) -> np.ndarray:
    """``n`` consecutive ``w``-bit fields from an array of bits, starting at ``start``."""
    if w == 0 or n == 0:
        return np.zeros(n, dtype=np.int64)
    chunk = bits[start : start + n * w].reshape(n, w).astype(np.int64)
    return chunk @ (np.int64(1) << np.arange(w - 1, -1, -1, dtype=np.int64))


def _dense_len(n: int, w: int) -> int:
    return 2 + (n * w + 7) // 8


def _sparse_len(n: int, k: int, w: int) -> int:
    b = (n - 1).bit_length()
    return 2 + (b + k * (b + w) + 7) // 8


def pack_table(freqs: np.ndarray, precision: int) -> bytes:
    """Serialise a frequency table (layout in the module docstring).

    Args:
        freqs: Valid table: all zero, or non-negative and summing to ``2**precision``.
        precision: 1..MAX_PRECISION (any value 0..MAX_PRECISION for an all-zero table).

    Returns:
        The canonical encoding; ``b"\\x00"`` for an all-zero (or zero-length) table.

    Raises:
        ValueError: if the table or precision is invalid.
    """
    f, p, k = _check_table(freqs, precision, ValueError)
    if k == 0:
        return b"\x00"
    n = f.size
    w = int(f.max()).bit_length()
    dense, sparse = _dense_len(n, w), _sparse_len(n, k, w)
    if sparse < dense:
        b = (n - 1).bit_length()
        idx = np.flatnonzero(f)
        values = np.empty(1 + 2 * k, dtype=np.int64)
        widths = np.empty(1 + 2 * k, dtype=np.int64)
        values[0], widths[0] = k - 1, b
        values[1::2], widths[1::2] = idx, b
        values[2::2], widths[2::2] = f[idx], w
        body = _pack_fields(values, widths)
        head = bytes([p, w | _MODE_SPARSE])
    else:
        body = _pack_fields(f, np.full(n, w, dtype=np.int64))
        head = bytes([p, w])
    return head + body


def unpack_table(data: bytes, n_symbols: int) -> tuple[np.ndarray, int]:
    """Parse and fully validate a table written by ``pack_table``.

    Runs in O(len(data) + n_symbols) time and memory.

    Args:
        data: The table bytes (bytes-like); the table must fill them exactly.
        n_symbols: Number of symbols ``n`` (from the container), >= 0.

    Returns:
        ``(freqs, precision)``: ``np.int64`` frequencies of length ``n_symbols``, and the
        precision (0 for the empty table, whose frequencies are all zero).

    Raises:
        FormatError: if ``n_symbols`` is not a non-negative integer, or the bytes are not the
            canonical encoding of a valid table (bad precision, width, mode or reserved bits,
            wrong length, nonzero padding, bad sparse indices or frequencies, or frequencies
            not summing to ``2**precision``).
    """
    n = nonneg_int(n_symbols, "number of symbols")
    buf = bytes(data)
    if not buf:
        raise FormatError("frequency table is empty (0 bytes)")
    p = buf[0]
    if p == 0:
        if len(buf) != 1:
            raise FormatError(f"empty frequency table followed by {len(buf) - 1} trailing bytes")
        return np.zeros(n, dtype=np.int64), 0
    if p > MAX_PRECISION:
        raise FormatError(f"table precision {p} out of range 1..{MAX_PRECISION}")
    if n == 0:
        raise FormatError("non-empty frequency table for an alphabet of 0 symbols")
    if len(buf) < 2:
        raise FormatError("frequency table truncated after the precision byte")
    mode = buf[1] & _MODE_SPARSE
    w = buf[1] & _WIDTH_MASK
    if buf[1] & ~(_MODE_SPARSE | _WIDTH_MASK):
        raise FormatError(f"reserved bits set in table byte 1 ({buf[1]:#04x})")
    if not 1 <= w <= p + 1:
        raise FormatError(f"table field width {w} out of range 1..{p + 1} for precision {p}")
    bits = np.unpackbits(np.frombuffer(buf, dtype=np.uint8, offset=2))
    if mode:
        b = (n - 1).bit_length()
        if bits.size < b:
            raise FormatError("sparse frequency table truncated before its symbol count")
        k = int(_read_fields(bits, 0, 1, b)[0]) + 1
        if k > n:
            raise FormatError(f"sparse table lists {k} symbols, more than the alphabet's {n}")
        expect = _sparse_len(n, k, w)
        used = b + k * (b + w)
    else:
        expect = _dense_len(n, w)
        used = n * w
    if len(buf) != expect:
        what = "sparse" if mode else "dense"
        raise FormatError(f"{what} frequency table has {len(buf)} bytes, expected {expect}")
    if bits[used:].any():
        raise FormatError("nonzero padding bits at the end of the frequency table")
    if mode:
        pairs = _read_fields(bits, b, k, b + w)
        idx, vals = pairs >> w, pairs & ((1 << w) - 1)
        if int(idx[-1]) >= n:
            raise FormatError(f"sparse table symbol {int(idx[-1])} out of range for {n}")
        if k > 1 and np.any(np.diff(idx) <= 0):
            raise FormatError("sparse table symbols are not strictly increasing")
        if int(vals.min()) == 0:
            raise FormatError("sparse table stores a zero frequency")
        freqs = np.zeros(n, dtype=np.int64)
        freqs[idx] = vals
    else:
        freqs = _read_fields(bits, 0, n, w)
        k = int(np.count_nonzero(freqs))
    total = int(freqs.sum())
    if total != 1 << p:
        raise FormatError(f"table frequencies sum to {total}, not 2**{p} = {1 << p}")
    if int(freqs.max()).bit_length() != w:
        raise FormatError(f"table field width {w} is not the bit length of the largest frequency")
    if bool(mode) != (_sparse_len(n, k, w) < _dense_len(n, w)):
        raise FormatError("frequency table does not use the shorter (canonical) mode")
    return freqs, p


# --------------------------------------------------------------------------------------------
# Coding kernels
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _encode_step(out, pos, x, f, c, xmax_unit, precision):  # pragma: no cover - compiled
    """Push one symbol (frequency ``f``, start ``c``) onto state ``x``; returns (x, pos)."""
    x_max = xmax_unit * f
    while x >= x_max:
        pos -= 1
        out[pos] = x & 255
        x >>= 8
    q = x // f
    return (q << precision) + (x - q * f) + c, pos


@njit(cache=True, nogil=True)
def _encode_kernel(symbols, freqs, cum, precision):  # pragma: no cover - compiled
    """rANS-encode. Returns (payload, -1) or (empty, index of the first bad symbol)."""
    n = symbols.size
    nsym = freqs.size
    for i in range(n):
        s = symbols[i]
        if s < 0 or s >= nsym or freqs[s] == 0:
            return np.empty(0, np.uint8), i
    # Each symbol outputs at most 2 bytes: x < 2**31 and x_max >= 2**(31 - precision) >= 2**16.
    out = np.empty(2 * n + 2 * _STATE_BYTES, np.uint8)
    pos = out.size
    u = (_L >> precision) << 8
    x0 = _L
    x1 = _L
    i = n - 1
    if n & 1:  # the last symbol has an even index: state 0
        s = symbols[i]
        x0, pos = _encode_step(out, pos, x0, freqs[s], cum[s], u, precision)
        i -= 1
    while i > 0:  # symbols i (odd: state 1) and i - 1 (even: state 0)
        s = symbols[i]
        x1, pos = _encode_step(out, pos, x1, freqs[s], cum[s], u, precision)
        s = symbols[i - 1]
        x0, pos = _encode_step(out, pos, x0, freqs[s], cum[s], u, precision)
        i -= 2
    for x in (x1, x0):
        pos -= 4
        out[pos] = x & 255
        out[pos + 1] = (x >> 8) & 255
        out[pos + 2] = (x >> 16) & 255
        out[pos + 3] = (x >> 24) & 255
    return out[pos:], -1


_OK, _SHORT, _BAD_STATE, _RAN_OUT, _TRAILING, _FINAL_STATE = 0, 1, 2, 3, 4, 5
_SYM_SHIFT, _FREQ_SHIFT = 31, 15  # decode-table entry: sym << 31 | freq << 15 | bias


@njit(cache=True, nogil=True)
def _read_state(data, pos):  # pragma: no cover - compiled
    x = np.int64(data[pos]) | (np.int64(data[pos + 1]) << 8)
    return x | (np.int64(data[pos + 2]) << 16) | (np.int64(data[pos + 3]) << 24)


@njit(cache=True, nogil=True)
def _decode_kernel(data, table, precision, out):  # pragma: no cover - compiled
    """rANS-decode into `out` (its size: the count). Returns (out, status, detail: a position
    or a state).

    ``table[slot] = sym << 31 | freq[sym] << 15 | (slot - cum[sym])`` for the slot's symbol.
    """
    count = out.size
    n = data.size
    if n < 2 * _STATE_BYTES:
        return out, _SHORT, 0
    x0 = _read_state(data, 0)
    x1 = _read_state(data, _STATE_BYTES)
    for x in (x0, x1):
        if x < _L or x >= (_L << 8):
            return out, _BAD_STATE, x
    pos = 2 * _STATE_BYTES
    mask = (1 << precision) - 1
    fmask = (1 << 16) - 1
    bmask = (1 << _FREQ_SHIFT) - 1
    for j in range(count >> 1):
        e0 = table[x0 & mask]
        e1 = table[x1 & mask]
        out[2 * j] = e0 >> _SYM_SHIFT
        out[2 * j + 1] = e1 >> _SYM_SHIFT
        x0 = ((e0 >> _FREQ_SHIFT) & fmask) * (x0 >> precision) + (e0 & bmask)
        x1 = ((e1 >> _FREQ_SHIFT) & fmask) * (x1 >> precision) + (e1 & bmask)
        while x0 < _L:
            if pos >= n:
                return out, _RAN_OUT, 2 * j
            x0 = (x0 << 8) | data[pos]
            pos += 1
        while x1 < _L:
            if pos >= n:
                return out, _RAN_OUT, 2 * j + 1
            x1 = (x1 << 8) | data[pos]
            pos += 1
    if count & 1:
        e0 = table[x0 & mask]
        out[count - 1] = e0 >> _SYM_SHIFT
        x0 = ((e0 >> _FREQ_SHIFT) & fmask) * (x0 >> precision) + (e0 & bmask)
        while x0 < _L:
            if pos >= n:
                return out, _RAN_OUT, count - 1
            x0 = (x0 << 8) | data[pos]
            pos += 1
    if pos != n:
        return out, _TRAILING, pos
    if x0 != _L:
        return out, _FINAL_STATE, x0
    if x1 != _L:
        return out, _FINAL_STATE, x1
    return out, _OK, count


# --------------------------------------------------------------------------------------------
# Public coder
# --------------------------------------------------------------------------------------------


def encode(symbols: np.ndarray, freqs: np.ndarray, precision: int) -> bytes:
    """rANS-code a symbol stream with a frequency table (layout in the module docstring).

    Args:
        symbols: Integer array of symbols in ``[0, len(freqs))`` (flattened in C order).
        freqs: Valid frequency table for ``precision`` (e.g. from ``quantize_freqs``).
        precision: 1..MAX_PRECISION (any value 0..MAX_PRECISION for an all-zero table).

    Returns:
        The payload; ``b""`` for an empty stream or a single-symbol table.

    Raises:
        ValueError: if the table or precision is invalid, ``symbols`` is not an integer
            array, or a symbol is out of range or has frequency 0 (the message names its
            position).
    """
    f, p, npresent = _check_table(freqs, precision, ValueError)
    sym = symbol_array(symbols, f.size)
    if sym.size == 0:
        return b""
    out, bad = _encode_kernel(sym, f, _cumulative(f), p)
    if bad >= 0:  # in range (checked above), so absent from the table
        raise ValueError(f"symbol {int(sym[bad])} (at position {bad}) has frequency 0")
    if npresent == 1:
        return b""
    return out.tobytes()


def decode(data: bytes, freqs: np.ndarray, precision: int, count: int, *, out=None) -> np.ndarray:
    """Decode ``count`` symbols coded by ``encode`` with the same table.

    Runs in O(count + len(data) + len(freqs) + 2**precision) time and memory whatever the
    input; allocates nothing sized by the data's contents.

    Args:
        data: The payload (bytes-like).
        freqs: Frequency table; validated first.
        precision: Its precision.
        count: Number of symbols to decode (the caller bounds it).
        out: None, or where to write the symbols: a C-contiguous uint16, int32 or int64
            array of ``count`` elements wide enough for the alphabet (``ValueError`` if it is
            not such an array).

    Returns:
        ``np.int64`` array of ``count`` symbols, or ``out`` holding them.

    Raises:
        FormatError: if the table or precision is invalid; ``count`` is not a non-negative
            integer; ``count > 0`` with an empty table; data comes with an empty stream or a
            single-symbol table; the data is too short for the two initial states, a state is
            out of range, or the data runs out before ``count`` symbols; or after ``count``
            symbols bytes are left over or a state is not the initial ``L``.
    """
    f, p, npresent = _check_table(freqs, precision, FormatError)
    count = symbol_count(count)
    buf = np.frombuffer(data, dtype=np.uint8)
    if npresent == 0 and count > 0:
        raise FormatError(f"{count} symbols expected but the frequency table is empty")
    if count == 0 or npresent == 1:
        if buf.size:
            what = "an empty stream" if count == 0 else "a single-symbol table"
            raise FormatError(f"{buf.size} trailing bytes of data for {what}")
        out = _native.symbols_out(out, count)
        if count:
            out[:] = int(np.flatnonzero(f)[0])
        return out
    slot_sym = np.repeat(np.arange(f.size, dtype=np.int64), f)
    bias = np.arange(1 << p, dtype=np.int64) - _cumulative(f)[slot_sym]
    table = (slot_sym << _SYM_SHIFT) | (f[slot_sym] << _FREQ_SHIFT) | bias
    out = _native.symbols_out(out, count)
    if _native.lib() is not None:
        out, status, where = _native.rans_decode(buf, table, p, out)
    else:
        out, status, where = _decode_kernel(buf, table, p, out)
    if status == _SHORT:
        raise FormatError(f"{buf.size} bytes of data, too short for the two 4-byte rANS states")
    if status == _BAD_STATE:
        raise FormatError(f"initial rANS state {where:#x} out of range [2**23, 2**31)")
    if status == _RAN_OUT:
        raise FormatError(f"data ({buf.size} bytes) ran out at symbol {where} of {count}")
    if status == _TRAILING:
        left = buf.size - where
        raise FormatError(f"trailing bytes: {left} of {buf.size} left after {count} symbols")
    if status == _FINAL_STATE:
        raise FormatError(f"final state mismatch: {where:#x} instead of {_L:#x} (corrupt data)")
    return out
