"""Helpers shared by the fuzz tests (`tests/test_fuzz.py`) and the atheris target (`fuzz/`).

`sample_file()` builds a small valid file that uses every codec; the `mutate_*` functions
damage a file the ways the format must survive: raw bit flips, truncations and insertions
(caught by the checksums), and header fields or section bytes changed *with the checksums
recomputed*, which reach the deeper checks and the decoders.
"""

from __future__ import annotations

import json
import struct
import zlib

import torch
from torch import nn

from .coding.coders import CODERS
from .encode import model_records
from .format.container import PREAMBLE, crc32, to_bytes
from .pruning import prune_
from .sharing import quantize_

#: Header fields a mutation may change.
FIELDS = (
    "name",
    "shape",
    "dtype",
    "codec",
    "parts",
    "offset",
    "crc",
    "k",
    "index_bits",
    "entries",
    "weight_symbols",
    "gap_symbols",
    "weight_coder",
    "gap_coder",
)
#: Raw mutations (see `mutate_bytes`).
OPS = ("flip", "truncate", "insert", "delete", "u32")
#: Values a mutated header field is set to.
NASTY_VALUES = (
    -1,
    0,
    1,
    3,
    255,
    2**16,
    2**31,
    2**32 + 1,
    2**40,
    2**63,
    2**70,
    1.5,
    "x",
    None,
    [],
    {},
    [2**40],
    [1, -1],
    [[1]],
    True,
    *CODERS,
)


def sample_file(entropy: str = "huffman") -> bytes:
    """A small valid file with `shared` (conv and linear), `sparse` and `raw` tensors, its
    streams coded by `entropy`."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 8), nn.Linear(8, 4)
    )
    prune_(net, sparsity={"0": 0.3, "3": 0.7, "4": 0.5})
    quantize_(net, bits={"0": 3, "3": 2})
    return to_bytes(model_records(net, entropy=entropy)[0])


def split(buf: bytes) -> tuple[dict, bytes]:
    """(header object, data bytes) of a valid file."""
    _, _, flags, hlen, _ = PREAMBLE.unpack_from(buf)
    h = buf[PREAMBLE.size : PREAMBLE.size + hlen]
    return json.loads(zlib.decompress(h) if flags else h), buf[PREAMBLE.size + hlen :]


def join(header: dict, data: bytes) -> bytes:
    """A file from a header object and data, with a correct preamble and header CRC (the
    header stored uncompressed)."""
    h = json.dumps(header, separators=(",", ":")).encode()
    return PREAMBLE.pack(b"\x89DCZ", 1, 0, len(h), crc32(h)) + h + data


def mutate_field(buf: bytes, tensor: int, key: str, value) -> bytes:
    """Set one header field of one tensor (checksums recomputed)."""
    header, data = split(buf)
    entry = header["tensors"][tensor % len(header["tensors"])]
    entry[key] = value
    return join(header, data)


def mutate_section(buf: bytes, pos: int, byte: int) -> bytes:
    """XOR one data byte with `byte` and recompute that section's CRC (and the header's)."""
    header, data = split(buf)
    if not data:
        return buf
    pos %= len(data)
    data = bytearray(data)
    data[pos] ^= byte or 1
    for e in header["tensors"]:
        start, size = e["offset"], sum(e["parts"])
        if start <= pos < start + size:
            e["crc"] = crc32(bytes(data[start : start + size]))
    return join(header, bytes(data))


def mutate_bytes(buf: bytes, op: str, pos: int, arg: int) -> bytes:
    """A raw mutation: `flip` bit `arg`, `truncate`, `insert` `arg` bytes, `delete` `arg` bytes,
    or `u32` (write 0xFFFFFFFF) at byte `pos`."""
    pos %= max(1, len(buf))
    if not buf and op in ("flip", "u32"):
        return buf
    if op == "flip":
        b = bytearray(buf)
        b[pos] ^= 1 << (arg % 8)
        return bytes(b)
    if op == "truncate":
        return buf[:pos]
    if op == "insert":
        return buf[:pos] + bytes([arg % 256]) * (1 + arg % 9) + buf[pos:]
    if op == "delete":
        return buf[:pos] + buf[pos + 1 + arg % 9 :]
    return buf[:pos] + struct.pack("<I", 0xFFFFFFFF) + buf[pos + 4 :]
