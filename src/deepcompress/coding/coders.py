"""The entropy coders of a symbol stream, behind one registry.

Each coder turns a stream of integer symbols (and its histogram) into `(table, payload)` and
back; `codec` keeps, per stream, whichever gives the fewest bytes (or the one asked for), and
the file names it in the stream's `<stream>_coder` header field (absent for Huffman, the
paper's coder and the format's first). Everything the rest of the library knows about the
coders comes from `CODERS`: their names, how large a table is, how to code and decode.

- "huffman": canonical, length-limited Huffman; its table is one 4-bit code length per
  symbol (`pack_lengths`).
- "rans": static rANS, within a fraction of a percent of the order-0 entropy, plus its table.
- "cabac": context-adaptive binary arithmetic coding; no table, and below the order-0
  entropy where neighbouring symbols are correlated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError
from . import cabac, huffman, rans
from ._checks import histogram


def pack_lengths(lengths: np.ndarray) -> bytes:
    """Pack Huffman code lengths (each 0..15) two per byte, high nibble first."""
    lens = np.asarray(lengths, dtype=np.uint8)
    if len(lens) % 2:
        lens = np.append(lens, np.uint8(0))
    return ((lens[0::2] << 4) | lens[1::2]).astype(np.uint8).tobytes()


def unpack_lengths(data: bytes, n: int) -> np.ndarray:
    """The first `n` code lengths of a table packed by `pack_lengths`."""
    b = np.frombuffer(data, dtype=np.uint8)
    lens = np.empty(2 * len(b), dtype=np.uint8)
    lens[0::2] = b >> 4
    lens[1::2] = b & 15
    if (lens[n:] != 0).any():
        raise FormatError("code-length table has non-zero padding")
    return lens[:n]


def huffman_table_bytes(n_symbols: int) -> int:
    return (n_symbols + 1) // 2


def _huffman_encode(symbols: np.ndarray, hist: np.ndarray) -> tuple[bytes, bytes]:
    lens = huffman.code_lengths(hist)
    return pack_lengths(lens), huffman.encode(symbols, lens)


def _huffman_size(hist: np.ndarray) -> int:
    lens = huffman.code_lengths(hist)
    return len(pack_lengths(lens)) + (huffman.coded_bits(hist, lens) + 7) // 8


def _huffman_decode(table: bytes, n_sym: int, data: bytes, count: int, out=None) -> np.ndarray:
    return huffman.decode(data, unpack_lengths(table, n_sym), count, out=out)


def rans_precision(hist: np.ndarray) -> tuple[int, np.ndarray]:
    """The frequency precision with the fewest estimated bytes, table included; ValueError
    for more symbols present than the largest precision has slots."""
    present = int(np.count_nonzero(hist))
    if present == 0:
        return 0, np.zeros(len(hist), np.int64)
    best = None
    for p in range(max(1, (present - 1).bit_length()), rans.MAX_PRECISION + 1):
        freqs = rans.quantize_freqs(hist, p)
        cost = rans.estimate_bits(hist, freqs, p) + 8 * len(rans.pack_table(freqs, p))
        if best is None or cost < best[0]:
            best = (cost, p, freqs)
    if best is None:
        raise ValueError(f"{present} symbols present, more than rANS's 2**{rans.MAX_PRECISION}")
    return best[1], best[2]


def _rans_encode(symbols: np.ndarray, hist: np.ndarray) -> tuple[bytes, bytes]:
    precision, freqs = rans_precision(hist)
    return rans.pack_table(freqs, precision), rans.encode(symbols, freqs, precision)


def _rans_decode(table: bytes, n_sym: int, data: bytes, count: int, out=None) -> np.ndarray:
    freqs, precision = rans.unpack_table(table, n_sym)
    return rans.decode(data, freqs, precision, count, out=out)


@dataclass(frozen=True)
class Coder:
    """One entropy coder: `encode(symbols, hist) -> (table, payload)`, `decode(table,
    n_symbols, payload, count, out=None) -> symbols` (int64, or into `out`: a uint16, int32
    or int64 array of `count` elements that holds the alphabet), and `table_bytes(n_symbols)`,
    the size its table must have (None: the table checks its own size); `size(hist)`, where
    known, is the exact bytes of `encode`'s table and payload, so that a stream is coded only
    if it is chosen."""

    encode: Callable[[np.ndarray, np.ndarray], tuple[bytes, bytes]]
    decode: Callable[..., np.ndarray]
    table_bytes: Callable[[int], int | None]
    size: Callable[[np.ndarray], int] | None = None


#: The registry, in the order "auto" tries them (the first wins a tie).
CODERS: dict[str, Coder] = {
    "huffman": Coder(_huffman_encode, _huffman_decode, huffman_table_bytes, _huffman_size),
    "rans": Coder(_rans_encode, _rans_decode, lambda n: None),
    "cabac": Coder(
        lambda symbols, hist: (b"", cabac.encode(symbols, len(hist), hist)),
        lambda table, n, data, count, out=None: cabac.decode(data, n, count, out=out),
        lambda n: 0,
    ),
}
#: The coder a stream has when its header names none.
DEFAULT = "huffman"
#: What `entropy=` accepts: a coder's name, "smallest" (per stream, the smallest), or "auto"
#: (the smallest, except that a slow coder must pay for its time on a long stream, below).
ENTROPY_CHOICES = ("auto", "smallest", *CODERS)
#: CABAC decodes bit by bit: CREPE full's default file (quality 8, 22.2M weights) decodes at
#: 14M weights/s with CABAC's streams and 134M with rANS's, 2.2% larger (2 threads, RESULTS.md,
#: issue 20). So "auto" takes a SLOW coder on a stream of LONG symbols or more only where it
#: saves SLOW_GAIN of the best fast coder's bytes; on shorter streams (a LeNet's, whose decode
#: takes microseconds whichever coder) the smallest wins.
SLOW, LONG, SLOW_GAIN = frozenset({"cabac"}), 1 << 20, 0.03


def check_entropy(entropy: str) -> str:
    """`entropy` if it is one of `ENTROPY_CHOICES`; ValueError otherwise."""
    if entropy not in ENTROPY_CHOICES:
        raise ValueError(f"entropy must be one of {ENTROPY_CHOICES}, not {entropy!r}")
    return entropy


def encode_stream(symbols: np.ndarray, entropy: str = "auto") -> tuple[str, int, bytes, bytes]:
    """(coder, alphabet size, table, payload) of one symbol stream; with "smallest", the coder
    whose table and payload together are smallest (the first in `CODERS` on a tie) among those
    that can code it: Huffman and rANS take at most 2**15 distinct symbols, CABAC 65,537 (a
    16-bit codebook's indices and the filler); with "auto", the same but for a slow coder on a
    long stream, which must save `SLOW_GAIN` of the best fast coder's bytes (see `SLOW`).

    Raises:
        ValueError: a coder forced by `entropy` cannot code this stream (the message says
            which can).
    """
    check_entropy(entropy)
    hist = histogram(symbols)
    n_sym = len(hist)
    # the smallest fast and the smallest slow coding: (bytes, name, (table, payload) or None
    # while only its size is known: a long stream's payload is not held while others code it)
    best, refused = {}, None
    for name, coder in CODERS.items():
        if entropy in ("auto", "smallest", name):
            try:
                if coder.size is not None:
                    size, coded = coder.size(hist), None
                else:
                    coded = coder.encode(symbols, hist)
                    size = len(coded[0]) + len(coded[1])
            except ValueError as e:  # beyond what this coder can code
                refused = f"entropy={name!r} cannot code this stream ({e}); 'cabac' or 'auto' can"
                continue
            kind = name in SLOW
            if kind not in best or size < best[kind][0]:
                best[kind] = (size, name, coded)
            del coded
    if not best:
        raise ValueError(refused)
    if len(best) == 1:
        chosen = next(iter(best.values()))
    else:
        fast, slow = best[False], best[True]
        if entropy == "auto" and len(symbols) >= LONG:
            chosen = slow if slow[0] <= (1 - SLOW_GAIN) * fast[0] else fast
        else:
            chosen = slow if slow[0] < fast[0] else fast
    best.clear()  # the loser's payload
    _, name, coded = chosen
    return (name, n_sym, *(coded or CODERS[name].encode(symbols, hist)))


def decode_stream(
    coder: str, table: bytes, n_sym: int, data: bytes, count: int, what: str, out=None
) -> np.ndarray:
    """Decode one stream, as int64 or into `out` (see `Coder`); FormatError names the stream
    (`what`)."""
    try:
        return CODERS[coder].decode(table, n_sym, data, count, out)
    except FormatError as e:
        raise FormatError(f"{what} stream: {e}") from None
