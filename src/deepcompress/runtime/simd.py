"""The AVX-512 kernels of `_simd.c`, run on every core.

The C functions live in the extension module that pip builds (setup.py). Its library is loaded
into the process once (llvmlite's `load_library_permanently`), and one numba function calls
them by symbol name from a `prange` loop, one contiguous block of rows per thread, split so
that each thread gets the same number of kept weights. Calling by name (not through a ctypes
pointer) lets numba cache that function on disk like the other kernels, so a new process does
not compile it again. `available()` is False where the extension was not built (no C
compiler), where the CPU lacks AVX-512 (F, BW, VL, DQ), or where the environment sets
DEEPCOMPRESS_SIMD=0; `layouts` then runs its numba kernels.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import njit, prange, types

SERIAL_WORK = 1 << 14  # kept weights x batch below which one thread runs the whole product

# (r0, r1, ptr, cols or masks, nb, codes, table, k, x, nbatch, out): see _simd.c
_i64, _ptr = types.int64, types.voidptr
_SIG = types.void(_i64, _i64, _ptr, _ptr, _i64, _ptr, _ptr, _i64, _ptr, _i64, _ptr)
_INDEX16_MV = types.ExternalFunction("dc_index16_mv", _SIG)
_INDEX32_MV = types.ExternalFunction("dc_index32_mv", _SIG)
_BITMAP_MV = types.ExternalFunction("dc_bitmap_mv", _SIG)
_INDEX16_MM = types.ExternalFunction("dc_index16_mm", _SIG)
_INDEX32_MM = types.ExternalFunction("dc_index32_mm", _SIG)
_BITMAP_MM = types.ExternalFunction("dc_bitmap_mm", _SIG)


@functools.cache
def _library() -> bool:
    """Load the extension's library into the process for good; whether its kernels can run."""
    spec = importlib.util.find_spec("deepcompress.runtime._simd")
    if spec is None or spec.origin is None:
        return False
    try:
        if ctypes.CDLL(spec.origin).dc_simd_level() <= 0:
            return False
        llvm.load_library_permanently(spec.origin)
    except (OSError, RuntimeError):
        return False
    return True


def available() -> bool:
    """Whether the AVX-512 kernels can run here."""
    return os.environ.get("DEEPCOMPRESS_SIMD", "1") != "0" and _library()


@njit(inline="always")
def _call(which, r0, r1, ptr, pos, nb, codes, table, x, nbatch, out):  # pragma: no cover
    q, p, c, t = ptr.ctypes.data, pos.ctypes.data, codes.ctypes.data, table.ctypes.data
    xp, o, k = x.ctypes.data, out.ctypes.data, table.size
    if which == 0:
        _INDEX16_MV(r0, r1, q, p, nb, c, t, k, xp, nbatch, o)
    elif which == 1:
        _INDEX32_MV(r0, r1, q, p, nb, c, t, k, xp, nbatch, o)
    elif which == 2:
        _BITMAP_MV(r0, r1, q, p, nb, c, t, k, xp, nbatch, o)
    elif which == 3:
        _INDEX16_MM(r0, r1, q, p, nb, c, t, k, xp, nbatch, o)
    elif which == 4:
        _INDEX32_MM(r0, r1, q, p, nb, c, t, k, xp, nbatch, o)
    else:
        _BITMAP_MM(r0, r1, q, p, nb, c, t, k, xp, nbatch, o)


@njit(parallel=True, cache=True)
def _run(which, nt, ptr, pos, nb, codes, table, x, nbatch, out):  # pragma: no cover
    # nt comes from the caller: numba.get_num_threads() in here would keep it from being cached
    rows = ptr.size - 1
    if nt == 1:
        _call(which, 0, rows, ptr, pos, nb, codes, table, x, nbatch, out)
        return
    nt = min(nt, max(1, rows))
    bounds = np.empty(nt + 1, dtype=np.int64)
    bounds[0], bounds[nt] = 0, rows
    for t in range(1, nt):
        bounds[t] = min(np.searchsorted(ptr, ptr[rows] * t // nt), rows)
    for t in prange(nt):
        _call(which, bounds[t], bounds[t + 1], ptr, pos, nb, codes, table, x, nbatch, out)


_WHICH = {("index", 2): 0, ("index", 4): 1, ("bitmap", 8): 2}  # (layout, position itemsize)


def run(layout, pos, ptr, codes, table, xt, out) -> None:
    """out (rows, B) = xt.T @ W.T for W in `layout` ("index" or "bitmap"); xt (cols, B)
    float32 C-contiguous, padded to whole 64-column blocks for "bitmap"; out float32.
    Call only where `available()`."""
    nbatch = xt.shape[1]
    nb = pos.shape[1] if pos.ndim == 2 else 0
    # (dtype.itemsize, not dtype.name: the name takes microseconds to build)
    which = _WHICH[layout, pos.itemsize] + (3 if nbatch > 1 else 0)
    # a product of a few microseconds is not worth waking the other threads for
    nt = 1 if int(ptr[-1]) * nbatch < SERIAL_WORK else numba.get_num_threads()
    _run(which, nt, ptr, pos, nb, codes, table, xt, nbatch, out)
