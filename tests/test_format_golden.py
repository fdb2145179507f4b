"""Golden bytes: the exact bytes of a tiny file (docs/FORMAT.md, section 6)."""

import zlib

import torch

from deepcompress.coding import codec
from deepcompress.format.container import Record, from_bytes, to_bytes

GOLDEN = (
    bytes.fromhex("89444 35a 0100 0000 6d000000 0e4117ee".replace(" ", ""))
    + b'{"tensors":[{"name":"x","shape":[],"dtype":"float32","codec":"raw","parts":[4],'
    b'"offset":0,"crc":2896259690}]}' + bytes.fromhex("0000803f")
)


def test_scalar_file_bytes_are_pinned():
    rec = Record("x", (), "float32", "raw", *codec.encode_raw(torch.tensor(1.0)))
    assert to_bytes([rec], compress_header=False) == GOLDEN
    (back,), meta = from_bytes(GOLDEN)
    assert back.name == "x" and back.shape == () and back.parts == [bytes.fromhex("0000803f")]
    assert meta == {}


def test_shared_tensor_bytes_are_pinned():
    # idx [[0, 1, 2, 1]] over codebook [-0.5, 0.5]: 3 entries, gaps 1, 0, 0; symbols 1, 2, 1
    idx, codebook = torch.tensor([[0, 1, 2, 1]]), torch.tensor([-0.5, 0.5])
    params, parts = codec.encode_shared(idx, codebook, 1, entropy="huffman")
    assert params == {"k": 2, "index_bits": 1, "entries": 3, "weight_symbols": 3, "gap_symbols": 2}
    assert parts == [
        bytes.fromhex("000000bf0000003f"),  # codebook: -0.5f, 0.5f
        bytes([0x01, 0x10]),  # lengths: symbol 0 absent, 1 -> 1 bit, 2 -> 1 bit
        bytes([0b01000000]),  # codes 0 1 0, then 5 zero padding bits
        bytes([0x11]),  # gap lengths: 0 -> 1 bit, 1 -> 1 bit
        bytes([0b10000000]),  # gaps 1 0 0
    ]


def test_compressed_header_bytes_are_pinned():
    rec = Record("x", (), "float32", "raw", *codec.encode_raw(torch.tensor(1.0)))
    buf = to_bytes([rec])
    header = GOLDEN[16:-4]
    packed = zlib.compress(header, 9)
    assert len(packed) < len(header)  # so the writer compresses it
    assert buf[:8] == bytes.fromhex("8944435a01000100")  # flags = 1: zlib header
    assert buf[8:12] == len(packed).to_bytes(4, "little")
    assert buf[12:16] == zlib.crc32(packed).to_bytes(4, "little")
    assert buf[16:] == packed + bytes.fromhex("0000803f")
    assert from_bytes(buf)[0][0].parts == from_bytes(GOLDEN)[0][0].parts


def test_header_bombs_and_bad_flags_are_refused():
    import pytest

    from deepcompress.errors import FormatError
    from deepcompress.format.container import PREAMBLE, crc32

    bomb = zlib.compress(b" " * (65 << 20), 9)  # 65 MiB of spaces in about 64 KB
    for flags, h in ((1, bomb), (1, b"not zlib"), (1, zlib.compress(b"{}")[:-2]), (2, b"{}")):
        buf = PREAMBLE.pack(b"\x89DCZ", 1, flags, len(h), crc32(h)) + h
        with pytest.raises(FormatError):
            from_bytes(buf)
