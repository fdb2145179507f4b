"""The `.dcz` container: a fixed preamble, a JSON header, then one data section per tensor.

Specified in docs/FORMAT.md; this module implements exactly that and nothing else. The reader
never executes or imports anything named in a file: the header is parsed by `json` and every
field is checked for its type and range, and every length against the file's size, before
anything is allocated or decoded. Every defect raises `FormatError` saying what and where.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..coding import codec
from ..coding._checks import MAX_NUMEL, field_int
from ..errors import FormatError

MAGIC = b"\x89DCZ"
VERSION = 1
PREAMBLE = struct.Struct("<4sHHII")  # magic, version, flags, header length, header CRC-32
FLAG_ZLIB_HEADER = 1  # the header is stored zlib-compressed
MAX_HEADER = 64 << 20
MAX_DIMS = 8


def _default_max_elements() -> int:
    """$DEEPCOMPRESS_MAX_ELEMENTS if it is a positive integer, else 2**32 (with a warning if it
    is set but not one)."""
    value = os.environ.get("DEEPCOMPRESS_MAX_ELEMENTS", "")
    try:
        if int(value) > 0:
            return int(value)
    except ValueError:
        pass
    if value:
        warnings.warn(
            f"DEEPCOMPRESS_MAX_ELEMENTS={value!r} is not a positive integer: ignored", stacklevel=2
        )
    return 1 << 32


#: Default cap on the elements of all tensors of a file together (2**32: 16 GiB of float32;
#: decoding may need up to about 5x that while it runs), checked before anything is decoded: a
#: tiny hostile file could otherwise ask for any amount of memory. $DEEPCOMPRESS_MAX_ELEMENTS,
#: read at import, sets it for every reader and the command line.
DEFAULT_MAX_ELEMENTS = _default_max_elements()


@dataclass
class Record:
    """One tensor in a file: its header entry fields and its data section's parts."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    codec: str
    params: dict = field(default_factory=dict)
    parts: list[bytes] = field(default_factory=list)

    @property
    def numel(self) -> int:
        """The tensor's number of elements (a Python int: no overflow on a hostile shape)."""
        return int(np.prod(self.shape, dtype=object)) if self.shape else 1


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def to_bytes(
    records: list[Record], meta: dict | None = None, *, compress_header: bool = True
) -> bytes:
    """Serialise records (and a free-form JSON-able `meta` dict) into a whole file.

    With `compress_header`, the JSON header is stored zlib-compressed when that is smaller
    (its keys repeat for every tensor: a LeNet header shrinks about 3x).
    """
    return b"".join(to_chunks(records, meta, compress_header=compress_header))


def to_chunks(
    records: list[Record], meta: dict | None = None, *, compress_header: bool = True
) -> list[bytes]:
    """`to_bytes` as the list of byte strings whose concatenation it is (preamble and header,
    then every record's parts as they are): a writer streams them, with no copy of the data."""
    entries, chunks, offset = [], [], 0
    for r in records:
        crc, size = 0, 0
        for part in r.parts:
            crc, size = zlib.crc32(part, crc), size + len(part)
        entries.append(
            {
                "name": r.name,
                "shape": list(r.shape),
                "dtype": r.dtype,
                "codec": r.codec,
                **r.params,
                "parts": [len(p) for p in r.parts],
                "offset": offset,
                "crc": crc & 0xFFFFFFFF,
            }
        )
        chunks.extend(r.parts)
        offset += size
    header = {"tensors": entries}
    if meta:
        header["meta"] = meta
    try:  # strict JSON, as a reader wants it: no NaN/Infinity, no key twice (1 and "1")
        hbytes = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
        if meta:
            json.loads(hbytes, object_pairs_hook=_unique)
    except ValueError as e:
        raise ValueError(f"meta cannot be stored as strict JSON: {e}") from None
    flags = 0
    if compress_header:
        packed = zlib.compress(hbytes, 9)
        if len(packed) < len(hbytes):
            hbytes, flags = packed, FLAG_ZLIB_HEADER
    pre = PREAMBLE.pack(MAGIC, VERSION, flags, len(hbytes), crc32(hbytes))
    return [pre + hbytes, *chunks]


def _unique(pairs: list) -> dict:
    """A JSON object whose keys are all distinct (another reader could take the first)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = [k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i])]
        raise ValueError(f"key {seen[0]!r} appears twice in one object")
    return out


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def from_bytes(buf: bytes, max_elements: int = DEFAULT_MAX_ELEMENTS) -> tuple[list[Record], dict]:
    """Parse a whole file held in memory into records and meta; every check is made here.

    Args:
        buf: the whole file.
        max_elements: refuse files whose tensors declare more elements than this in total.
    """
    if len(buf) < PREAMBLE.size:
        raise FormatError(
            f"file is {len(buf)} bytes, shorter than the {PREAMBLE.size}-byte preamble"
        )
    magic, version, flags, hlen, hcrc = PREAMBLE.unpack_from(buf)
    if magic != MAGIC:
        raise FormatError(f"not a deepcompress file (magic {magic!r} at offset 0)")
    if version != VERSION:
        raise FormatError(
            f"format version {version} is not supported (this reader reads {VERSION})"
        )
    if flags & ~FLAG_ZLIB_HEADER:
        raise FormatError(f"unknown flags {flags:#06x} in the preamble at offset 6")
    if hlen > min(MAX_HEADER, len(buf) - PREAMBLE.size):
        raise FormatError(f"header length {hlen} at offset 8 runs past the end of the file")
    hbytes = buf[PREAMBLE.size : PREAMBLE.size + hlen]
    if crc32(hbytes) != hcrc:
        raise FormatError("header checksum mismatch (the header is damaged)")
    if flags & FLAG_ZLIB_HEADER:
        hbytes = _inflate(hbytes)
    try:
        header = json.loads(
            hbytes.decode("utf-8"), object_pairs_hook=_unique, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise FormatError(f"header is not valid JSON: {e}") from None
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), list):
        raise FormatError("header must be an object with a 'tensors' list")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise FormatError("header 'meta' must be an object")
    data = memoryview(buf)[PREAMBLE.size + hlen :]
    records, offset, names, elements = [], 0, set(), 0
    for i, entry in enumerate(header["tensors"]):
        rec = _check_entry(entry, i)
        where = f"tensor {rec.name!r}"
        elements += rec.numel
        if elements > max_elements:
            raise FormatError(
                f"{where}: the file declares over {max_elements} elements in all (the "
                f"max_elements limit, or $DEEPCOMPRESS_MAX_ELEMENTS); raise the limit only for "
                "a file you trust"
            )
        if rec.name in names:
            raise FormatError(f"{where}: name appears twice")
        names.add(rec.name)
        if entry["offset"] != offset:
            raise FormatError(f"{where}: section offset {entry['offset']} != expected {offset}")
        size = sum(entry["parts"])
        if offset + size > len(data):
            raise FormatError(
                f"{where}: section [{offset}, {offset + size}) of the data runs past the end of "
                f"the file ({len(data)} data bytes)"
            )
        section = bytes(data[offset : offset + size])
        if crc32(section) != entry["crc"]:
            raise FormatError(
                f"{where}: checksum mismatch in its section at data offset {offset} (damaged)"
            )
        cuts = np.cumsum([0, *entry["parts"]])
        rec.parts = [section[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
        records.append(rec)
        offset += size
    if offset != len(data):
        raise FormatError(f"{len(data) - offset} unexpected bytes after the last section")
    return records, meta


def _inflate(data: bytes) -> bytes:
    """Decompress a zlib-compressed header, refusing more than MAX_HEADER bytes of output."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, MAX_HEADER)
    except zlib.error as e:
        raise FormatError(f"compressed header is damaged: {e}") from None
    if d.unconsumed_tail:
        raise FormatError(f"header inflates to more than {MAX_HEADER} bytes")
    if not d.eof or d.unused_data:
        raise FormatError("compressed header is truncated or has trailing bytes")
    return out


def _check_entry(entry, i: int) -> Record:
    where = f"tensor #{i}"
    if not isinstance(entry, dict):
        raise FormatError(f"{where}: entry is not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not name or len(name) > 1024:
        raise FormatError(f"{where}: 'name' must be a non-empty string")
    where = f"tensor {name!r}"
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise FormatError(f"{where}: 'shape' must be a list of at most {MAX_DIMS} sizes")
    for s in shape:
        if type(s) is not int or not 0 <= s <= MAX_NUMEL:
            raise FormatError(f"{where}: bad dimension {s!r} in shape")
    numel = int(np.prod(shape, dtype=object)) if shape else 1
    # the non-zero sizes' product bounds numel and, for a zero-size tensor, its other sizes
    # (whose strides torch would overflow)
    if int(np.prod([s for s in shape if s], dtype=object)) > MAX_NUMEL:
        raise FormatError(f"{where}: shape {shape} is over {MAX_NUMEL} elements")
    dtype = entry.get("dtype")
    if not isinstance(dtype, str) or dtype not in codec.DTYPES:
        raise FormatError(f"{where}: unknown dtype {dtype!r}")
    kind = entry.get("codec")
    if not isinstance(kind, str) or kind not in codec.DECODERS:
        raise FormatError(f"{where}: unknown codec {kind!r}")
    n_parts, _ = codec.DECODERS[kind]
    parts = entry.get("parts")
    if (
        not isinstance(parts, list)
        or len(parts) != n_parts
        or any(type(p) is not int or p < 0 for p in parts)
    ):
        raise FormatError(f"{where}: 'parts' must list {n_parts} non-negative lengths")
    field_int(entry, "offset", where, hi=1 << 62)
    field_int(entry, "crc", where, hi=0xFFFFFFFF)
    params = codec.check_params(kind, entry, dtype, numel, where)
    expected = codec.expected_part_sizes(kind, params, codec.DTYPES[dtype], numel)
    for j, (got, want) in enumerate(zip(parts, expected)):
        if want is not None and got != want:
            raise FormatError(f"{where}: part {j} is {got} bytes, expected {want}")
    return Record(name, tuple(shape), dtype, kind, params)
