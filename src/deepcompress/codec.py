"""How one tensor becomes bytes and back: the codecs `raw`, `sparse` and `shared`.

This module joins the stages for a single tensor: the sparse index (`sparse_index`), the
codebook indices (`sharing`) and the entropy coders (`huffman`, `rans`, `cabac`). It knows
nothing about files: `fileformat` frames what it produces. Each encoder returns
`(params, parts)`: a small dict that goes into the file's header, and the list of byte strings
that form the tensor's data section; each decoder checks its input and raises `FormatError`.
The layouts are specified in docs/FORMAT.md.

- raw:    the tensor's bytes, little-endian, row-major.
- sparse: a pruned tensor kept in full precision: gap stream + float values.
- shared: a weight-shared tensor: codebook (float32) + cluster-index stream (symbol 0 = filler
          zero, 1..k = centroid) + gap stream.

Each stream is entropy-coded by Huffman, rANS or CABAC, whichever is smallest (or as asked).
"""

from __future__ import annotations

import numpy as np
import torch

from . import cabac, huffman, rans
from .errors import FormatError
from .sparse_index import decode_positions, encode_positions, max_gap, raw_gaps

#: dtype names allowed in a file, and what they decode to. Nothing else is ever looked up.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")


def dtype_name(dtype: torch.dtype) -> str:
    """The file's name for a torch dtype; ValueError for one the format cannot hold."""
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype {dtype} cannot be stored; supported: {sorted(DTYPES)}")
    return DTYPE_NAMES[dtype]


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw little-endian bytes of `t` in row-major order."""
    t = t.detach().cpu().contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def bytes_tensor(data: bytes, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `tensor_bytes` (the caller has checked the length)."""
    if len(data) == 0:
        return torch.zeros(shape, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)


# --- code-length tables: one 4-bit length per symbol, two per byte, high nibble first ------


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


def table_bytes(n_symbols: int) -> int:
    return (n_symbols + 1) // 2


# --- the stream pair shared by `sparse` and `shared`: gaps, and per-entry symbols ----------


def _stream_cost(hist: np.ndarray) -> int:
    """Bits of a Huffman-coded stream with histogram `hist`, its table included."""
    used = int(np.flatnonzero(hist).max()) + 1 if hist.any() else 0
    lens = huffman.code_lengths(hist[:used])
    return huffman.coded_bits(hist[:used], lens) + 8 * table_bytes(used)


def choose_index_bits(positions: np.ndarray, symbols: np.ndarray | None = None) -> int:
    """The gap width (1..12) that gives the fewest coded bits for these kept positions.

    Counts the gap stream, its table, and the cost of the filler entries in the symbol stream
    (`symbols`: each kept weight's cluster index, 1..k; None when values are stored raw, in
    which case a filler costs a raw value of 32 bits).
    """
    d = raw_gaps(positions)
    if len(d) == 0:
        return 1
    sym_hist = None if symbols is None else np.bincount(symbols)
    best, best_bits = 1, None
    for b in range(1, 13):  # wider gaps never pay: their tables alone cost more
        span = max_gap(b) + 1
        fillers = d // span
        n_fill = int(fillers.sum())
        gap_hist = np.bincount(d % span, minlength=span)
        gap_hist[span - 1] += n_fill
        bits = _stream_cost(gap_hist)
        if sym_hist is None:
            bits += 32 * n_fill
        else:
            h = sym_hist.copy()
            h[0] += n_fill
            bits += _stream_cost(h)
        if best_bits is None or bits < best_bits:
            best, best_bits = b, bits
        if d.max() < span:  # wider gaps only make the table larger
            break
    return best


#: Entropy coders of a stream. "huffman" is the paper's; "rans" codes within a fraction of a
#: percent of the order-0 entropy, with a table; "cabac" adapts its contexts as it goes (no
#: table, and below the order-0 entropy where neighbouring symbols are correlated). "auto"
#: (encoding only) keeps whichever gives the fewest bytes.
CODERS = ("huffman", "rans", "cabac")
ENTROPY_CHOICES = ("auto", *CODERS)


def _huffman_stream(symbols: np.ndarray, hist: np.ndarray) -> tuple[bytes, bytes]:
    lens = huffman.code_lengths(hist)
    return pack_lengths(lens), huffman.encode(symbols, lens)


def _rans_stream(symbols: np.ndarray, hist: np.ndarray) -> tuple[bytes, bytes]:
    precision, freqs = _rans_precision(hist)
    return rans.pack_table(freqs, precision), rans.encode(symbols, freqs, precision)


def _rans_precision(hist: np.ndarray) -> tuple[int, np.ndarray]:
    """The frequency precision with the fewest estimated bytes, table included."""
    present = int(np.count_nonzero(hist))
    if present == 0:
        return 0, np.zeros(len(hist), np.int64)
    best = None
    for p in range(max(1, (present - 1).bit_length()), rans.MAX_PRECISION + 1):
        freqs = rans.quantize_freqs(hist, p)
        cost = rans.estimate_bits(hist, freqs, p) + 8 * len(rans.pack_table(freqs, p))
        if best is None or cost < best[0]:
            best = (cost, p, freqs)
    return best[1], best[2]


def _cabac_stream(symbols: np.ndarray, hist: np.ndarray) -> tuple[bytes, bytes]:
    return b"", cabac.encode(symbols, len(hist))


def _encode_stream(symbols: np.ndarray, entropy: str = "auto") -> tuple[str, int, bytes, bytes]:
    """(coder, alphabet size, table, payload) of one symbol stream; with "auto", the coder
    whose table and payload together are smallest (Huffman on a tie)."""
    if entropy not in ENTROPY_CHOICES:
        raise ValueError(f"entropy must be one of {ENTROPY_CHOICES}, not {entropy!r}")
    n_sym = int(symbols.max()) + 1 if len(symbols) else 0
    hist = np.bincount(symbols, minlength=n_sym)
    best = None
    for coder, make in (
        ("huffman", _huffman_stream),
        ("rans", _rans_stream),
        ("cabac", _cabac_stream),
    ):
        if entropy in ("auto", coder):
            table, payload = make(symbols, hist)
            if best is None or len(table) + len(payload) < len(best[2]) + len(best[3]):
                best = (coder, n_sym, table, payload)
    return best


def _decode_stream(
    coder: str, table: bytes, n_sym: int, data: bytes, count: int, what: str
) -> np.ndarray:
    try:
        if coder == "rans":
            freqs, precision = rans.unpack_table(table, n_sym)
            return rans.decode(data, freqs, precision, count)
        if coder == "cabac":
            return cabac.decode(data, n_sym, count)
        return huffman.decode(data, unpack_lengths(table, n_sym), count)
    except FormatError as e:
        raise FormatError(f"{what} stream: {e}") from None


# --- encoders -------------------------------------------------------------------------------


def encode_raw(t: torch.Tensor) -> tuple[dict, list[bytes]]:
    return {}, [tensor_bytes(t)]


def encode_sparse(
    t: torch.Tensor, index_bits: int | None = None, entropy: str = "auto"
) -> tuple[dict, list[bytes]]:
    """A pruned tensor: positions of its non-zeros as coded gaps, their values raw."""
    flat = t.detach().cpu().reshape(-1)
    positions = torch.nonzero(flat, as_tuple=True)[0].numpy()
    return encode_sparse_entries(positions, flat[torch.from_numpy(positions)], index_bits, entropy)


def encode_sparse_entries(
    positions: np.ndarray, values: torch.Tensor, index_bits: int | None = None, entropy="auto"
) -> tuple[dict, list[bytes]]:
    """`sparse` given the kept flat `positions` (ascending) and their `values`."""
    ib = index_bits or choose_index_bits(positions)
    gaps, is_real = encode_positions(positions, ib)
    stored = torch.zeros(len(gaps), dtype=values.dtype)
    stored[torch.from_numpy(is_real)] = values.reshape(-1)
    g_coder, g_n, g_table, g_bits = _encode_stream(gaps, entropy)
    params = {"index_bits": ib, "entries": len(gaps), "gap_symbols": g_n}
    params.update(_coder_params(gap=g_coder))
    return params, [tensor_bytes(stored), g_table, g_bits]


def encode_shared(
    idx: torch.Tensor, codebook: torch.Tensor, index_bits: int | None = None, entropy="auto"
) -> tuple[dict, list[bytes]]:
    """A weight-shared tensor given as `idx` (0 = pruned, 1..k) and its k-entry codebook."""
    flat = idx.detach().cpu().reshape(-1).numpy().astype(np.int64)
    positions = np.flatnonzero(flat)
    return encode_shared_entries(positions, flat[positions], codebook, index_bits, entropy)


def encode_shared_entries(
    positions: np.ndarray,
    symbols: np.ndarray,
    codebook: torch.Tensor,
    index_bits: int | None = None,
    entropy: str = "auto",
) -> tuple[dict, list[bytes]]:
    """`shared` given the kept flat `positions` (ascending) and their cluster `symbols` (1..k).

    Memory and time grow with the number of kept weights only, not with the tensor's size.
    """
    k = int(codebook.numel())
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size and (symbols.min() < 1 or symbols.max() > k):
        raise ValueError(f"cluster indices of kept weights must be in 1..{k}")
    ib = index_bits or choose_index_bits(positions, symbols)
    gaps, is_real = encode_positions(positions, ib)
    wsym = np.zeros(len(gaps), dtype=np.int64)
    wsym[is_real] = symbols
    w_coder, w_n, w_table, w_bits = _encode_stream(wsym, entropy)
    g_coder, g_n, g_table, g_bits = _encode_stream(gaps, entropy)
    cb = codebook.detach().cpu().to(torch.float32)
    params = {
        "k": k,
        "index_bits": ib,
        "entries": len(gaps),
        "weight_symbols": w_n,
        "gap_symbols": g_n,
    }
    params.update(_coder_params(weight=w_coder, gap=g_coder))
    return params, [tensor_bytes(cb), w_table, w_bits, g_table, g_bits]


def recode_shared(params: dict, parts: list[bytes], numel: int, entropy: str = "auto"):
    """A `shared` section's `(params, parts)` with its streams coded again by `entropy`: the
    same codebook, gap width and entries, so the decoded tensor is bit-identical."""
    positions, symbols = shared_entries(params, parts, numel)
    real = symbols > 0
    codebook = bytes_tensor(parts[0], torch.float32, (params["k"],))
    return encode_shared_entries(
        positions[real], symbols[real], codebook, params["index_bits"], entropy
    )


def _coder_params(**coders: str) -> dict:
    """Header fields naming each stream's coder; Huffman, the default, is left out."""
    return {f"{s}_coder": c for s, c in coders.items() if c != "huffman"}


# --- decoders: params and parts have been checked for types and lengths by `fileformat` ------


def decode_raw(params: dict, parts: list[bytes], dtype: torch.dtype, shape) -> torch.Tensor:
    return bytes_tensor(parts[0], dtype, shape)


def _positions(params: dict, g_table: bytes, g_bits: bytes, numel: int) -> np.ndarray:
    entries = params["entries"]
    gaps = _decode_stream(
        params.get("gap_coder", "huffman"), g_table, params["gap_symbols"], g_bits, entries, "gap"
    )
    if len(gaps) and gaps.max() > max_gap(params["index_bits"]):
        raise FormatError("a gap exceeds the declared index_bits")
    positions = decode_positions(gaps)
    if len(positions) and positions[-1] >= numel:
        raise FormatError(f"sparse index runs past the end of the tensor ({numel} elements)")
    return positions


def decode_sparse(params: dict, parts: list[bytes], dtype: torch.dtype, shape) -> torch.Tensor:
    values, g_table, g_bits = parts
    numel = int(np.prod(shape, dtype=np.int64))
    positions = _positions(params, g_table, g_bits, numel)
    out = torch.zeros(numel, dtype=dtype)
    out[torch.from_numpy(positions)] = bytes_tensor(values, dtype, (len(positions),))
    return out.reshape(shape)


def shared_entries(params: dict, parts: list[bytes], numel: int) -> tuple[np.ndarray, np.ndarray]:
    """A `shared` section's entries, checked: their flat positions (all < numel) and their
    cluster symbols (0 = filler, 1..k; none above k)."""
    _, w_table, w_bits, g_table, g_bits = parts
    k = params["k"]
    if params["weight_symbols"] > k + 1:
        raise FormatError(f"cluster-index alphabet {params['weight_symbols']} exceeds k+1={k + 1}")
    positions = _positions(params, g_table, g_bits, numel)
    symbols = _decode_stream(
        params.get("weight_coder", "huffman"),
        w_table,
        params["weight_symbols"],
        w_bits,
        params["entries"],
        "cluster-index",
    )
    return positions, symbols


def decode_shared(params: dict, parts: list[bytes], dtype: torch.dtype, shape) -> torch.Tensor:
    numel = int(np.prod(shape, dtype=np.int64))
    positions, wsym = shared_entries(params, parts, numel)
    table = torch.cat([torch.zeros(1), bytes_tensor(parts[0], torch.float32, (params["k"],))])
    out = torch.zeros(numel, dtype=torch.float32)
    out[torch.from_numpy(positions)] = table[torch.from_numpy(wsym)]
    return out.reshape(shape).to(dtype)


#: codec name -> (number of parts, decoder)
DECODERS = {"raw": (1, decode_raw), "sparse": (3, decode_sparse), "shared": (5, decode_shared)}


def decode_record(rec) -> torch.Tensor:
    """The dense tensor of a checked `fileformat.Record`; FormatError names the tensor."""
    _, decoder = DECODERS[rec.codec]
    try:
        return decoder(rec.params, rec.parts, DTYPES[rec.dtype], rec.shape)
    except FormatError as e:
        raise FormatError(f"tensor {rec.name!r}: {e}") from None


def expected_part_sizes(codec: str, params: dict, dtype: torch.dtype, numel: int) -> list:
    """Sizes the fixed-size parts must have (None where the size is the coded stream's own)."""
    item = torch.empty(0, dtype=dtype).element_size()
    if codec == "raw":
        return [numel * item]
    gap_table = _table_size(params, "gap")
    if codec == "sparse":
        return [params["entries"] * item, gap_table, None]
    return [4 * params["k"], _table_size(params, "weight"), None, gap_table, None]


def _table_size(params: dict, stream: str) -> int | None:
    """A Huffman table's size follows from its alphabet; a rANS table checks its own; a CABAC
    stream has none."""
    coder = params.get(f"{stream}_coder", "huffman")
    if coder == "huffman":
        return table_bytes(params[f"{stream}_symbols"])
    return 0 if coder == "cabac" else None


def streams(codec_name: str, params: dict, parts: list[bytes]) -> dict[str, dict]:
    """The entropy-coded streams of one tensor's section, decoded, for statistics.

    Returns `{stream name: {"symbols": np.ndarray, "table_bytes": int, "payload_bytes": int}}`
    (`cluster` and `gap` for `shared`, `gap` for `sparse`, nothing for `raw`).
    """
    layout = {"sparse": {"gap": (1, 2)}, "shared": {"cluster": (1, 2), "gap": (3, 4)}}
    keys = {"cluster": "weight", "gap": "gap"}
    out = {}
    for name, (t, p) in layout.get(codec_name, {}).items():
        coder = params.get(f"{keys[name]}_coder", "huffman")
        n_sym = params[f"{keys[name]}_symbols"]
        symbols = _decode_stream(coder, parts[t], n_sym, parts[p], params["entries"], name)
        out[name] = {
            "coder": coder,
            "symbols": symbols,
            "table_bytes": len(parts[t]),
            "payload_bytes": len(parts[p]),
        }
    return out
