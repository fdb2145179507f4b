"""The AVX-512 kernels of `_simd.c`, run on every core.

The C functions are loaded with ctypes from the extension module that pip builds (setup.py) and
called from numba `prange` loops, one contiguous block of rows per thread, split so that each
thread gets the same number of kept weights. `available()` is False where the extension was not
built (no C compiler), where the CPU lacks AVX-512 (F, BW, VL, DQ), or where the
environment sets DEEPCOMPRESS_SIMD=0; `layouts` then runs its numba kernels.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os

import numba
import numpy as np
from numba import njit, prange

_SIGNATURE = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
_SIGNATURE += [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
_SIGNATURE += [ctypes.c_int64, ctypes.c_void_p]
SERIAL_WORK = 1 << 14  # kept weights x batch below which one thread runs the whole product


@functools.cache
def _library() -> ctypes.CDLL | None:
    spec = importlib.util.find_spec("deepcompress._simd")
    if spec is None or spec.origin is None:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError:
        return None
    return lib if lib.dc_simd_level() > 0 else None


def available() -> bool:
    """Whether the AVX-512 kernels can run here."""
    return os.environ.get("DEEPCOMPRESS_SIMD", "1") != "0" and _library() is not None


def _parallel(cfunc):
    """A numba function that runs `cfunc` over the rows, split by kept weights per thread."""

    @njit(parallel=True)
    def call(ptr, pos, nb, codes, table, x, nbatch, out):  # pragma: no cover - compiled
        rows = ptr.size - 1
        if ptr[rows] * nbatch < SERIAL_WORK:  # a few microseconds: not worth waking threads
            cfunc(
                0, rows, ptr.ctypes.data, pos.ctypes.data, nb, codes.ctypes.data,
                table.ctypes.data, table.size, x.ctypes.data, nbatch, out.ctypes.data,
            )  # fmt: skip
            return
        nt = min(numba.get_num_threads(), max(1, rows))
        bounds = np.empty(nt + 1, dtype=np.int64)
        bounds[0], bounds[nt] = 0, rows
        for t in range(1, nt):
            bounds[t] = min(np.searchsorted(ptr, ptr[rows] * t // nt), rows)
        for t in prange(nt):
            cfunc(
                bounds[t], bounds[t + 1], ptr.ctypes.data, pos.ctypes.data, nb,
                codes.ctypes.data, table.ctypes.data, table.size, x.ctypes.data, nbatch,
                out.ctypes.data,
            )  # fmt: skip

    return call


@functools.cache
def _kernel(layout: str, pos_itemsize: int, batched: bool):
    lib = _library()
    name = {2: "index16", 4: "index32", 8: "bitmap"}[pos_itemsize]  # uint16, int32, uint64
    assert name.startswith(layout)
    cfunc = getattr(lib, f"dc_{name}_{'mm' if batched else 'mv'}")
    cfunc.argtypes, cfunc.restype = _SIGNATURE, None
    return _parallel(cfunc)


def run(layout, pos, ptr, codes, table, xt, out) -> None:
    """out (rows, B) = xt.T @ W.T for W in `layout` ("index" or "bitmap"); xt (cols, B)
    float32 C-contiguous, padded to whole 64-column blocks for "bitmap"; out float32."""
    nbatch = xt.shape[1]
    nb = pos.shape[1] if pos.ndim == 2 else 0
    # (dtype.itemsize, not dtype.name: the name takes microseconds to build)
    _kernel(layout, pos.itemsize, nbatch > 1)(ptr, pos, nb, codes, table, xt, nbatch, out)
