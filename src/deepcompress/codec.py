"""How one tensor becomes bytes and back: the codecs `raw`, `sparse` and `shared`.

This module joins the stages for a single tensor: the sparse index (`sparse_index`), the
codebook indices (`sharing`) and the entropy coder (`huffman`). It knows nothing about files:
`fileformat` frames what it produces. Each encoder returns `(params, parts)`: a small dict that
goes into the file's header, and the list of byte strings that form the tensor's data section;
each decoder checks its input and raises `FormatError`. The layouts are specified in
docs/FORMAT.md.

- raw:    the tensor's bytes, little-endian, row-major.
- sparse: a pruned tensor kept in full precision: gap stream (Huffman) + float values.
- shared: a weight-shared tensor: codebook (float32) + cluster-index stream (Huffman, symbol
          0 = filler zero, 1..k = centroid) + gap stream (Huffman).
"""

from __future__ import annotations

import numpy as np
import torch

from . import huffman
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


def _encode_stream(symbols: np.ndarray) -> tuple[int, bytes, bytes]:
    """(alphabet size, packed code lengths, coded bits) of one symbol stream."""
    n_sym = int(symbols.max()) + 1 if len(symbols) else 0
    lens = huffman.code_lengths(np.bincount(symbols, minlength=n_sym))
    return n_sym, pack_lengths(lens), huffman.encode(symbols, lens)


def _decode_stream(table: bytes, n_sym: int, data: bytes, count: int, what: str) -> np.ndarray:
    lens = unpack_lengths(table, n_sym)
    try:
        return huffman.decode(data, lens, count)
    except FormatError as e:
        raise FormatError(f"{what} stream: {e}") from None


# --- encoders -------------------------------------------------------------------------------


def encode_raw(t: torch.Tensor) -> tuple[dict, list[bytes]]:
    return {}, [tensor_bytes(t)]


def encode_sparse(t: torch.Tensor, index_bits: int | None = None) -> tuple[dict, list[bytes]]:
    """A pruned tensor: positions of its non-zeros as coded gaps, their values raw."""
    flat = t.detach().cpu().reshape(-1)
    positions = torch.nonzero(flat, as_tuple=True)[0].numpy()
    ib = index_bits or choose_index_bits(positions)
    gaps, is_real = encode_positions(positions, ib)
    values = torch.zeros(len(gaps), dtype=flat.dtype)
    values[torch.from_numpy(is_real)] = flat[torch.from_numpy(positions)]
    g_n, g_table, g_bits = _encode_stream(gaps)
    params = {"index_bits": ib, "entries": len(gaps), "gap_symbols": g_n}
    return params, [tensor_bytes(values), g_table, g_bits]


def encode_shared(
    idx: torch.Tensor, codebook: torch.Tensor, index_bits: int | None = None
) -> tuple[dict, list[bytes]]:
    """A weight-shared tensor given as `idx` (0 = pruned, 1..k) and its k-entry codebook."""
    flat = idx.detach().cpu().reshape(-1).numpy().astype(np.int64)
    k = int(codebook.numel())
    if flat.size and (flat.min() < 0 or flat.max() > k):
        raise ValueError(f"cluster indices must be in 0..{k}")
    positions = np.flatnonzero(flat)
    symbols = flat[positions]
    ib = index_bits or choose_index_bits(positions, symbols)
    gaps, is_real = encode_positions(positions, ib)
    wsym = np.zeros(len(gaps), dtype=np.int64)
    wsym[is_real] = symbols
    w_n, w_table, w_bits = _encode_stream(wsym)
    g_n, g_table, g_bits = _encode_stream(gaps)
    cb = codebook.detach().cpu().to(torch.float32)
    params = {
        "k": k,
        "index_bits": ib,
        "entries": len(gaps),
        "weight_symbols": w_n,
        "gap_symbols": g_n,
    }
    return params, [tensor_bytes(cb), w_table, w_bits, g_table, g_bits]


# --- decoders: params and parts have been checked for types and lengths by `fileformat` ------


def decode_raw(params: dict, parts: list[bytes], dtype: torch.dtype, shape) -> torch.Tensor:
    return bytes_tensor(parts[0], dtype, shape)


def _positions(params: dict, g_table: bytes, g_bits: bytes, numel: int) -> np.ndarray:
    entries = params["entries"]
    gaps = _decode_stream(g_table, params["gap_symbols"], g_bits, entries, "gap")
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
        w_table, params["weight_symbols"], w_bits, params["entries"], "cluster-index"
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
    if codec == "sparse":
        return [params["entries"] * item, table_bytes(params["gap_symbols"]), None]
    return [
        4 * params["k"],
        table_bytes(params["weight_symbols"]),
        None,
        table_bytes(params["gap_symbols"]),
        None,
    ]


def streams(codec_name: str, params: dict, parts: list[bytes]) -> dict[str, dict]:
    """The entropy-coded streams of one tensor's section, decoded, for statistics.

    Returns `{stream name: {"symbols": np.ndarray, "table_bytes": int, "payload_bytes": int}}`
    (`cluster` and `gap` for `shared`, `gap` for `sparse`, nothing for `raw`).
    """
    layout = {"sparse": {"gap": (1, 2)}, "shared": {"cluster": (1, 2), "gap": (3, 4)}}
    sizes = {"cluster": "weight_symbols", "gap": "gap_symbols"}
    out = {}
    for name, (t, p) in layout.get(codec_name, {}).items():
        symbols = _decode_stream(parts[t], params[sizes[name]], parts[p], params["entries"], name)
        out[name] = {
            "symbols": symbols,
            "table_bytes": len(parts[t]),
            "payload_bytes": len(parts[p]),
        }
    return out
