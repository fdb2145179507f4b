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

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    "dc_rans_decode": [_P, _I, _I, _P, _I, _P, _P],
    "dc_huffman_decode": [_P, _I, _I, _P, _I, _P, _P],
    "dc_cabac_decode_tree": [_P, _I, _I, _I, ctypes.c_int, _P, _P, _P, _P],
    "dc_cabac_decode_eg": [_P, _I, _I, _I, ctypes.c_int, _P, _P, _P, _P],
    "dc_scatter_shared": [_P, _P, _I, _P, _I, _P, _I],
}


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


def _table_decode(name: str, data: np.ndarray, count: int, table: np.ndarray, param: int):
    """The rANS or Huffman loop `name`: (symbols, status, the status's detail)."""
    out, detail = np.empty(count, np.int64), _I()
    table = np.ascontiguousarray(table, np.int64)
    fn = getattr(_load(), name)
    args = (_addr(data), data.size, count, _addr(table), param, _addr(out), ctypes.byref(detail))
    status = fn(*args)
    return out, status, detail.value


def rans_decode(data: np.ndarray, count: int, table: np.ndarray, precision: int):
    """As `rans._decode_kernel`: (symbols, status, detail)."""
    return _table_decode("dc_rans_decode", data, count, table, precision)


def huffman_decode(data: np.ndarray, count: int, table: np.ndarray, tbits: int):
    """As `huffman._decode_kernel`: (symbols, status, where)."""
    return _table_decode("dc_huffman_decode", data, count, table, tbits)


def cabac_decode(
    kind: str,
    data: np.ndarray,
    n: int,
    count: int,
    use_ctx: bool,
    contexts: int,
    sha: np.ndarray,
    shb: np.ndarray,
):
    """As `cabac._decode_tree` (kind "tree") or `_decode_eg` ("eg"), with `contexts` fresh
    contexts (p = 1/2, k = 0): (symbols, status)."""
    st = np.zeros((contexts, 3), np.int32)
    st[:, :2] = 32768
    sha = np.ascontiguousarray(sha, np.int64)
    shb = np.ascontiguousarray(shb, np.int64)
    out = np.empty(count, np.int64)
    fn = _load().dc_cabac_decode_tree if kind == "tree" else _load().dc_cabac_decode_eg
    status = fn(
        _addr(data),
        data.size,
        n,
        count,
        int(use_ctx),
        _addr(st),
        _addr(sha),
        _addr(shb),
        _addr(out),
    )
    return out, status


def scatter_shared(gaps: np.ndarray, symbols: np.ndarray, table: np.ndarray, out: np.ndarray):
    """Write a shared section's entries into `out` (zeroed): entry i `gaps[i] + 1` elements
    after the one before, holding `table[symbols[i]]` (inputs checked by the caller;
    ValueError if they are not consistent after all)."""
    gaps = np.ascontiguousarray(gaps, np.int64)
    symbols = np.ascontiguousarray(symbols, np.int64)
    table = np.ascontiguousarray(table, np.float32)
    if gaps.shape != symbols.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError("gaps and symbols must match, out be C-contiguous float32")
    status = _load().dc_scatter_shared(
        _addr(gaps), _addr(symbols), gaps.size, _addr(table), table.size, _addr(out), out.size
    )
    if status != 0:
        raise ValueError("entries out of range for the tensor or the codebook")
