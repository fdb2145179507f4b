"""The entropy decoders in C (`_decoders.c`), called through ctypes.

`lib()` is the loaded library, or None where the extension was not built (no C compiler at
install) or `DEEPCOMPRESS_SIMD=0` asks for the numba loops everywhere; the coders then run
their numba kernels, of which these functions are ports (same arguments, same statuses). The
wrappers take arrays the coders have already validated and sized (see `_decoders.c`).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os

import numpy as np

_P, _I, _C = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_SIGNATURES = {
    "dc_rans_decode_into": [_P, _I, _I, _P, _I, _P, _C, _P],
    "dc_huffman_decode_into": [_P, _I, _I, _P, _I, _P, _C, _P],
    "dc_cabac_decode_tree_into": [_P, _I, _I, _I, _C, _P, _P, _P, _P, _C],
    "dc_cabac_decode_eg_into": [_P, _I, _I, _I, _C, _P, _P, _P, _P, _C],
    "dc_expand_shared": [_P, _I, _P, _I, _P, _I],
}
#: The symbol types the decoders write (by their width in bytes): a caller picks one that
#: holds its alphabet.
SYMBOL_DTYPES = (np.dtype(np.uint16), np.dtype(np.int32), np.dtype(np.int64))


@functools.cache
def _load() -> ctypes.CDLL | None:
    spec = importlib.util.find_spec("deepcompress.coding._decoders")
    if spec is None or spec.origin is None:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
        for name, args in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
    except (OSError, AttributeError):
        return None
    return lib


def lib() -> ctypes.CDLL | None:
    """The C decoders, or None: not built, or DEEPCOMPRESS_SIMD=0 (the numba loops)."""
    if os.environ.get("DEEPCOMPRESS_SIMD", "").strip() == "0":
        return None
    return _load()


def _addr(a: np.ndarray) -> int:
    return a.ctypes.data


def symbols_out(out: np.ndarray | None, count: int) -> np.ndarray:
    """Where a decoder writes `count` symbols: a new int64 array (`out` None), or `out`, which
    must be a C-contiguous, writable 1-D array of `count` elements of one of `SYMBOL_DTYPES`
    (uint16, int32, int64) wide enough for the alphabet (the caller's choice); ValueError if
    it is not such an array."""
    if out is None:
        return np.empty(count, np.int64)
    ok = isinstance(out, np.ndarray) and out.dtype in SYMBOL_DTYPES and out.shape == (count,)
    if not (ok and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"out must be a writable C-contiguous uint16/int32/int64 [{count}] array")
    return out


def _table_decode(name, data: np.ndarray, table: np.ndarray, param: int, out: np.ndarray):
    """The rANS or Huffman loop `name` into `out`: (out, status, the status's detail)."""
    detail = _I()
    table = np.ascontiguousarray(table, np.int64)
    fn = getattr(_load(), name)
    args = (_addr(data), data.size, out.size, _addr(table), param, _addr(out), out.itemsize)
    status = fn(*args, ctypes.byref(detail))
    return out, status, detail.value


def rans_decode(data: np.ndarray, table: np.ndarray, precision: int, out: np.ndarray):
    """As `rans._decode_kernel`, into `out` (`symbols_out`): (out, status, detail)."""
    return _table_decode("dc_rans_decode_into", data, table, precision, out)


def huffman_decode(data: np.ndarray, table: np.ndarray, tbits: int, out: np.ndarray):
    """As `huffman._decode_kernel`, into `out` (`symbols_out`): (out, status, where)."""
    return _table_decode("dc_huffman_decode_into", data, table, tbits, out)


def cabac_decode(
    kind: str,
    data: np.ndarray,
    n: int,
    use_ctx: bool,
    contexts: int,
    sha: np.ndarray,
    shb: np.ndarray,
    out: np.ndarray,
):
    """As `cabac._decode_tree` (kind "tree") or `_decode_eg` ("eg"), with `contexts` fresh
    contexts (p = 1/2, k = 0), into `out` (`symbols_out`): (out, status)."""
    st = np.zeros((contexts, 3), np.int32)
    st[:, :2] = 32768
    sha = np.ascontiguousarray(sha, np.int64)
    shb = np.ascontiguousarray(shb, np.int64)
    lib = _load()
    fn = lib.dc_cabac_decode_tree_into if kind == "tree" else lib.dc_cabac_decode_eg_into
    status = fn(
        _addr(data),
        data.size,
        n,
        out.size,
        int(use_ctx),
        _addr(st),
        _addr(sha),
        _addr(shb),
        _addr(out),
        out.itemsize,
    )
    return out, status


def expand_shared(gaps: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:
    """Turn `out` (float32, C-contiguous), whose last `len(gaps)` 4-byte slots hold a shared
    section's int32 cluster symbols, into the dense tensor, in place: entry i `gaps[i] + 1`
    elements after the one before, holding `table[symbol i]`, zeros elsewhere (inputs checked
    by the caller; ValueError if they are not consistent after all, `out` then undefined)."""
    table = np.ascontiguousarray(table, np.float32)
    ok = gaps.dtype == np.uint16 and gaps.flags.c_contiguous and gaps.size <= out.size
    if not (ok and out.dtype == np.float32 and out.flags.c_contiguous):
        raise ValueError("gaps must be C-contiguous uint16, out C-contiguous float32, no shorter")
    status = _load().dc_expand_shared(
        _addr(gaps), gaps.size, _addr(table), table.size, _addr(out), out.size
    )
    if status != 0:
        raise ValueError("entries out of range for the tensor or the codebook")
