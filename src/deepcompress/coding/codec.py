"""How one tensor becomes bytes and back: the codecs `raw`, `sparse` and `shared`.

This module joins the stages for a single tensor: the sparse index (`sparse_index`), the
codebook indices (`sharing`) and the entropy coders (`huffman`, `rans`, `cabac`). It knows
nothing about files: `format.container` frames what it produces. Each encoder returns
`(params, parts)`: a small dict that goes into the file's header, and the list of byte strings
that form the tensor's data section; each decoder checks its input and raises `FormatError`.
The layouts are specified in docs/FORMAT.md.

- raw:    the tensor's bytes, little-endian, row-major.
- sparse: a pruned tensor kept in full precision: gap stream + float values.
- shared: a weight-shared tensor: codebook (float32, or on a grid: `step` times integers, coded
          compactly) + cluster-index stream (symbol 0 = filler zero, 1..k = centroid) + gap
          stream.

Each stream is entropy-coded by Huffman, rANS or CABAC, whichever is smallest (or as asked).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import FormatError
from . import huffman, sparse_index
from ._checks import field_int
from .codebook import codebook, encode_grid, grid_values
from .coders import CODERS, DEFAULT, decode_stream, encode_stream, histogram
from .coders import huffman_table_bytes as table_bytes
from .sparse_index import decode_positions, encode_entries, encode_positions, max_gap, raw_gaps

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


# --- the stream pair shared by `sparse` and `shared`: gaps, and per-entry symbols ----------


def _stream_cost(hist: np.ndarray) -> int:
    """Bits of a Huffman-coded stream with histogram `hist`, its table included; past what
    Huffman can code (more than 2**15 symbols present), the order-0 entropy and 2 bytes a
    symbol of table (what CABAC and a table would roughly cost)."""
    used = int(np.flatnonzero(hist).max()) + 1 if hist.any() else 0
    try:
        lens = huffman.code_lengths(hist[:used])
    except ValueError:
        h = hist[hist > 0].astype(np.float64)
        return int(np.ceil(-(h * np.log2(h / h.sum())).sum())) + 16 * used
    return huffman.coded_bits(hist[:used], lens) + 8 * table_bytes(used)


def choose_index_bits(positions: np.ndarray, symbols: np.ndarray | None = None) -> int:
    """The gap width (1..12) that gives the fewest coded bits for these kept positions.

    Counts the gap stream, its table, and the cost of the filler entries in the symbol stream
    (`symbols`: each kept weight's cluster index, 1..k; None when values are stored raw, in
    which case a filler costs a raw value of 32 bits).
    """
    return _gap_width(raw_gaps(positions), symbols)


def _gap_width(d: np.ndarray, symbols: np.ndarray | None) -> int:
    """`choose_index_bits` given the raw gaps `d`."""
    if len(d) == 0:
        return 1
    sym_hist = None if symbols is None else histogram(symbols)
    d_max = int(d.max())
    best, best_bits = 1, None
    for b in range(1, 13):  # wider gaps never pay: their tables alone cost more
        span = max_gap(b) + 1
        if d_max < span:
            n_fill, gap_hist = 0, histogram(d, span)
        else:  # by slices: no temporary as long as d
            n_fill, gap_hist = 0, np.zeros(span, dtype=np.int64)
            for i in range(0, len(d), 1 << 16):
                part = d[i : i + (1 << 16)]
                n_fill += int((part >> b).sum())  # part // span
                gap_hist += np.bincount(part & (span - 1), minlength=span)
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
        if d_max < span:  # wider gaps only make the table larger
            break
    return best


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
    ib = choose_index_bits(positions) if index_bits is None else int(index_bits)
    gaps, is_real = encode_positions(positions, ib)
    stored = torch.zeros(len(gaps), dtype=values.dtype)
    stored[torch.from_numpy(is_real)] = values.reshape(-1)
    g_coder, g_n, g_table, g_bits = encode_stream(gaps, entropy)
    params = {"index_bits": ib, "entries": len(gaps), "gap_symbols": g_n}
    params.update(_coder_params(gap=g_coder))
    return params, [tensor_bytes(stored), g_table, g_bits]


def encode_shared(
    idx: torch.Tensor, codebook: torch.Tensor, index_bits=None, entropy="auto", grid=None
) -> tuple[dict, list[bytes]]:
    """A weight-shared tensor given as `idx` (0 = pruned, 1..k) and its k-entry codebook (on
    the grid of step `grid`, if given: `encode_shared_entries`)."""
    flat = idx.detach().cpu().reshape(-1).numpy()  # as the quality path: no int64 copies
    gaps = sparse_index.nonzero_gaps(flat)
    streams = entry_streams(gaps, flat[flat != 0], int(codebook.numel()), index_bits)
    return encode_shared_streams(*streams, codebook, entropy, grid)


def encode_shared_entries(
    positions: np.ndarray,
    symbols: np.ndarray,
    codebook: torch.Tensor,
    index_bits: int | None = None,
    entropy: str = "auto",
    grid: float | None = None,
) -> tuple[dict, list[bytes]]:
    """`shared` given the kept flat `positions` (ascending) and their cluster `symbols` (1..k).

    With `grid` (a step), the codebook is stored as integers m with codebook = float32(m *
    grid) (`grid_values`; ValueError if it is not). Memory and time grow with the number of
    kept weights only, not with the tensor's size.
    """
    streams = entry_streams(raw_gaps(positions), symbols, int(codebook.numel()), index_bits)
    return encode_shared_streams(*streams, codebook, entropy, grid)


def entry_streams(d: np.ndarray, symbols: np.ndarray, k: int, index_bits: int | None = None):
    """`(index_bits, gaps, weight symbols)` of the kept weights whose raw gaps are `d`
    (`raw_gaps`, or `nonzero_gaps` of a dense symbol array) and cluster indices `symbols`
    (1..k). uint16 or int32 `symbols` keep their type through to the coders: the encoder's
    peak memory is in these arrays, so a caller that drops `d` and `symbols` before
    `encode_shared_streams` codes with half of them in memory."""
    symbols = np.asarray(symbols).reshape(-1)
    if symbols.dtype not in (np.uint16, np.int32):  # kept so: no int64 copy of a long array
        symbols = symbols.astype(np.int64)
    if symbols.size and (symbols.min() < 1 or symbols.max() > k):
        raise ValueError(f"cluster indices of kept weights must be in 1..{k}")
    if len(d) != len(symbols):
        raise ValueError(f"{len(d)} gaps for {len(symbols)} kept weights")
    ib = _gap_width(d, symbols) if index_bits is None else int(index_bits)
    return (ib, *encode_entries(d, ib, symbols))


def encode_shared_streams(
    ib: int, gaps: np.ndarray, wsym: np.ndarray, codebook: torch.Tensor, entropy="auto", grid=None
) -> tuple[dict, list[bytes]]:
    """The `shared` section of `entry_streams`' result and the k-entry `codebook`."""
    k = int(codebook.numel())
    w_coder, w_n, w_table, w_bits = encode_stream(wsym, entropy)
    g_coder, g_n, g_table, g_bits = encode_stream(gaps, entropy)
    cb = codebook.detach().cpu().to(torch.float32)
    if grid is not None:
        if not (math.isfinite(grid) and grid > 0):
            raise ValueError(f"a grid step must be a positive number, got {grid}")
        m = np.rint(cb.numpy().astype(np.float64) / grid).astype(np.int64)
        if not np.array_equal(grid_values(m, grid), cb.numpy()):
            raise ValueError("the codebook is not on the grid")
        cb_part = encode_grid(m)
    else:
        cb_part = tensor_bytes(cb)
    params = {
        "k": k,
        "index_bits": ib,
        "entries": len(gaps),
        "weight_symbols": w_n,
        "gap_symbols": g_n,
    }
    params.update(_coder_params(weight=w_coder, gap=g_coder))
    if grid is not None:
        params["grid"] = float(grid)
    return params, [cb_part, w_table, w_bits, g_table, g_bits]


def recode_shared(params: dict, parts: list[bytes], numel: int, entropy: str = "auto"):
    """A `shared` section's `(params, parts)` with its streams coded again by `entropy`: the
    same codebook, gap width and entries, so the decoded tensor is bit-identical."""
    positions, symbols, values = shared_entries(params, parts, numel)
    real = symbols > 0
    return encode_shared_entries(
        positions[real],
        symbols[real],
        torch.from_numpy(values.copy()),
        params["index_bits"],
        entropy,
        params.get("grid"),
    )


def _coder_params(**coders: str) -> dict:
    """Header fields naming each stream's coder; Huffman, the default, is left out."""
    return {f"{s}_coder": c for s, c in coders.items() if c != DEFAULT}


# --- decoders: params and parts have been checked for types and lengths by `format` ----------


def decode_raw(params: dict, parts: list[bytes], dtype: torch.dtype, shape) -> torch.Tensor:
    return bytes_tensor(parts[0], dtype, shape)


def _gaps(params: dict, g_table: bytes, g_bits: bytes, numel: int) -> np.ndarray:
    """The gap stream (uint16: at most 2**16 symbols), checked: no gap above the declared
    width, and the entries it places end inside the tensor (the last at sum(gaps + 1) - 1 <
    numel)."""
    entries, coder = params["entries"], params.get("gap_coder", DEFAULT)
    out = np.empty(entries, np.uint16)
    gaps = decode_stream(coder, g_table, params["gap_symbols"], g_bits, entries, "gap", out)
    if len(gaps) and gaps.max() > max_gap(params["index_bits"]):
        raise FormatError("a gap exceeds the declared index_bits")
    if len(gaps) and int(gaps.sum()) + len(gaps) > numel:
        raise FormatError(f"sparse index runs past the end of the tensor ({numel} elements)")
    return gaps


def _positions(params: dict, g_table: bytes, g_bits: bytes, numel: int) -> np.ndarray:
    return decode_positions(_gaps(params, g_table, g_bits, numel))


def decode_sparse(params: dict, parts: list[bytes], dtype: torch.dtype, shape) -> torch.Tensor:
    values, g_table, g_bits = parts
    numel = int(np.prod(shape, dtype=np.int64))
    positions = _positions(params, g_table, g_bits, numel)
    out = torch.zeros(numel, dtype=dtype)
    out[torch.from_numpy(positions)] = bytes_tensor(values, dtype, (len(positions),))
    return out.reshape(shape)


def _shared_streams(params: dict, parts: list[bytes], numel: int, out=None):
    """A `shared` section's codebook (`codebook`: refused when not finite; a writer never
    stores one, `save` refuses NaN weights), gaps (checked by `_gaps`) and cluster symbols
    (0 = filler, 1..k; none above k; int64, or into `out`, an int32 array of `entries`): one
    check, so that the dense decoder and the compressed runtime refuse the same files."""
    _, w_table, w_bits, g_table, g_bits = parts
    values = codebook(params, parts)
    k = params["k"]
    if params["weight_symbols"] > k + 1:
        raise FormatError(f"cluster-index alphabet {params['weight_symbols']} exceeds k+1={k + 1}")
    gaps = _gaps(params, g_table, g_bits, numel)
    symbols = decode_stream(
        params.get("weight_coder", DEFAULT),
        w_table,
        params["weight_symbols"],
        w_bits,
        params["entries"],
        "cluster-index",
        out,
    )
    return values, gaps, symbols


def shared_entries(params: dict, parts: list[bytes], numel: int):
    """A `shared` section's entries, checked (`_shared_streams`): their flat positions (all <
    numel), their cluster symbols (0 = filler, 1..k), and the k codebook values (float32)."""
    values, gaps, symbols = _shared_streams(params, parts, numel)
    return decode_positions(gaps), symbols, values


def decode_shared(params: dict, parts: list[bytes], dtype: torch.dtype, shape) -> torch.Tensor:
    """The cluster symbols are decoded as int32 into the output's own memory and made dense
    there (`sparse_index.expand`): besides the output, only the uint16 gaps are held."""
    numel = int(np.prod(shape, dtype=np.int64))
    # torch's, not numpy's: numpy asks for transparent huge pages, which made a new process's
    # first load 3x slower
    out, e = torch.empty(numel, dtype=torch.float32), params["entries"]
    o = out.numpy()
    values, gaps, _ = _shared_streams(params, parts, numel, o.view(np.int32)[numel - e :])
    sparse_index.expand(gaps, np.concatenate([np.zeros(1, np.float32), values]), o)
    return out.reshape(shape).to(dtype)


def _coder_field(entry: dict, key: str, where: str, params: dict) -> None:
    """An optional stream-coder field: absent means `DEFAULT` (and is how it is written)."""
    if key in entry:
        v = entry[key]
        if not isinstance(v, str) or v not in CODERS or v == DEFAULT:
            others = tuple(c for c in CODERS if c != DEFAULT)
            raise FormatError(f"{where}: {key!r} must be one of {others}, got {v!r}")
        params[key] = v


def check_params(codec: str, entry: dict, dtype: str, numel: int, where: str) -> dict:
    """The codec parameters of a header entry, each checked for its type and range (the
    container has checked the name, shape, dtype and codec); FormatError otherwise."""
    params = {}
    if codec in ("sparse", "shared"):
        if dtype not in FLOAT_DTYPES:
            raise FormatError(f"{where}: codec {codec!r} needs a float dtype, not {dtype}")
        params["index_bits"] = field_int(entry, "index_bits", where, 1, 16)
        params["entries"] = field_int(entry, "entries", where, 0, numel)
        params["gap_symbols"] = field_int(entry, "gap_symbols", where, 0, 1 << params["index_bits"])
        _coder_field(entry, "gap_coder", where, params)
    if codec == "shared":
        params["k"] = field_int(entry, "k", where, 0, 1 << 16)
        params["weight_symbols"] = field_int(entry, "weight_symbols", where, 0, params["k"] + 1)
        _coder_field(entry, "weight_coder", where, params)
        if "grid" in entry:
            step = entry["grid"]
            if isinstance(step, bool) or not isinstance(step, (int, float)):
                raise FormatError(f"{where}: 'grid' must be a number, got {step!r}")
            if not (math.isfinite(step) and step > 0):
                raise FormatError(f"{where}: 'grid' must be positive and finite, got {step!r}")
            params["grid"] = float(step)
    return params


#: codec name -> (number of parts, decoder)
DECODERS = {"raw": (1, decode_raw), "sparse": (3, decode_sparse), "shared": (5, decode_shared)}


def decode_record(rec) -> torch.Tensor:
    """The dense tensor of a checked `format.container.Record`; FormatError names the tensor."""
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
    cb = None if "grid" in params else 4 * params["k"]
    return [cb, _table_size(params, "weight"), None, gap_table, None]


def _table_size(params: dict, stream: str) -> int | None:
    """The size a stream's table must have (None: the coder's table checks its own)."""
    coder = params.get(f"{stream}_coder", DEFAULT)
    return CODERS[coder].table_bytes(params[f"{stream}_symbols"])


def streams(codec_name: str, params: dict, parts: list[bytes]) -> dict[str, dict]:
    """The entropy-coded streams of one tensor's section, decoded, for statistics.

    Returns `{stream name: {"symbols": np.ndarray, "table_bytes": int, "payload_bytes": int}}`
    (`cluster` and `gap` for `shared`, `gap` for `sparse`, nothing for `raw`).
    """
    layout = {"sparse": {"gap": (1, 2)}, "shared": {"cluster": (1, 2), "gap": (3, 4)}}
    keys = {"cluster": "weight", "gap": "gap"}
    out = {}
    for name, (t, p) in layout.get(codec_name, {}).items():
        coder = params.get(f"{keys[name]}_coder", DEFAULT)
        n_sym = params[f"{keys[name]}_symbols"]
        symbols = decode_stream(coder, parts[t], n_sym, parts[p], params["entries"], name)
        out[name] = {
            "coder": coder,
            "symbols": symbols,
            "table_bytes": len(parts[t]),
            "payload_bytes": len(parts[p]),
        }
    return out
