"""A `shared` tensor's codebook in the file: k float32 values, or a grid's integers.

Rate-distortion sharing (`ecsq`) puts its levels on a uniform grid, `float32(m * step)` for
integers m, often thousands of them at high quality: stored as float32 they would cost 32 bits
each. On a grid the file stores the integers instead, as zlib-compressed LEB128 varints of the
first one (zigzag) and then the gaps between neighbours less one, which are mostly 0: about a
bit a level. zlib (the standard library's) rather than one of our entropy coders because the
part is small and its reader must be easy to bound: the inflated size is capped at 9 bytes a
level before a byte of it is read. The layout is in docs/FORMAT.md (`shared`).
"""

from __future__ import annotations

import zlib

import numpy as np

from ..errors import FormatError

_VARINT_MAX = 9  # bytes of one varint: 63 bits


def _varints(u: np.ndarray) -> bytes:
    """LEB128 bytes of non-negative integers < 2**63 (7 bits a byte, low first)."""
    u = u.astype(np.uint64)
    groups = np.stack([(u >> np.uint64(7 * i)) & np.uint64(0x7F) for i in range(_VARINT_MAX)])
    nbytes = np.maximum(1, (np.floor(np.log2(np.maximum(u, 1).astype(np.float64))) // 7 + 1))
    nbytes = nbytes.astype(np.int64)
    nbytes[u >= (np.uint64(1) << np.uint64(7 * 8))] = _VARINT_MAX  # log2 rounding near 2**56
    more = np.arange(_VARINT_MAX)[:, None] < (nbytes - 1)[None, :]
    keep = np.arange(_VARINT_MAX)[:, None] < nbytes[None, :]
    out = (groups | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
    return out.T[keep.T].tobytes()


def _unvarints(raw: bytes, count: int) -> np.ndarray:
    """Inverse of `_varints`: exactly `count` integers using every byte; FormatError else."""
    b = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(b < 0x80)
    if len(ends) != count or (count and ends[-1] != len(b) - 1) or (not count and len(b)):
        raise FormatError("the grid codebook does not hold k integers")
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    lengths = ends - starts + 1
    if count and lengths.max() > _VARINT_MAX:
        raise FormatError("a grid codebook integer is longer than 63 bits")
    out = np.zeros(count, dtype=np.uint64)
    for i in range(int(lengths.max()) if count else 0):
        has = lengths > i
        out[has] |= (b[starts[has] + i] & 0x7F).astype(np.uint64) << np.uint64(7 * i)
    return out


def grid_values(multiples: np.ndarray, step: float) -> np.ndarray:
    """A grid codebook's float32 values: float32(m * step), m computed in float64."""
    with np.errstate(over="ignore"):  # beyond float32: inf, which `codebook` refuses
        return (multiples.astype(np.float64) * step).astype(np.float32)


def encode_grid(multiples: np.ndarray) -> bytes:
    """A grid codebook's part: the ascending distinct integers m as zlib-compressed LEB128 of
    zigzag(m[0]) and then the gaps m[j] - m[j-1] - 1 (mostly 0: a byte each before zlib)."""
    m = np.asarray(multiples, dtype=np.int64)
    if len(m) and (np.diff(m) <= 0).any():
        raise ValueError("grid codebook integers must be ascending and distinct")
    head = (m[:1] << 1) ^ (m[:1] >> 63)  # zigzag
    return zlib.compress(_varints(np.concatenate([head, np.diff(m) - 1])), 9)


def codebook(params: dict, parts: list[bytes]) -> np.ndarray:
    """A `shared` section's k codebook values (float32), checked: all finite, and a grid's
    integers ascending, within 63 bits, and no more bytes than k of them need."""
    k = params["k"]
    if "grid" not in params:
        values = np.frombuffer(parts[0], dtype="<f4")
    else:
        inflate = zlib.decompressobj()
        try:
            raw = inflate.decompress(parts[0], k * _VARINT_MAX + 1)
        except zlib.error as e:
            raise FormatError(f"the grid codebook is not valid zlib data: {e}") from None
        if not inflate.eof or inflate.unused_data or len(raw) > k * _VARINT_MAX:
            raise FormatError("the grid codebook's zlib stream is truncated or too long")
        u = _unvarints(raw, k).astype(np.int64)  # < 2**63: fits
        with np.errstate(over="ignore"):  # a wrap past 2**63 shows as a step down: refused
            m = np.cumsum(np.concatenate([[(u[0] >> 1) ^ -(u[0] & 1)], u[1:] + 1])) if k else u
        if (np.diff(m) <= 0).any():
            raise FormatError("the grid codebook's integers overflow 64 bits")
        values = grid_values(m, params["grid"])
    if not np.isfinite(values).all():
        raise FormatError("the codebook holds NaN or infinity")
    return values
