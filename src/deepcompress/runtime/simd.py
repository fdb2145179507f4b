"""The C kernels of `_simd.c`, one table per SIMD level, run on every core.

Levels, best first: "avx512" (F, BW, VL, DQ), "avx2" (AVX2 + FMA), "neon" (aarch64), and
"portable" (plain C, every build). The extension that pip builds (setup.py) holds all the
levels of its architecture; `supported()` asks the C library which this CPU can run, and
`level()` picks the best of them, or the one the environment forces:

    DEEPCOMPRESS_SIMD=avx512|avx2|neon|portable   that level (ValueError if it cannot run here)
    DEEPCOMPRESS_SIMD=0                           no C at all: the numba loops of `layouts`,
                                                  and the entropy decoders' (coding/_native.py)
    unset, "1" or "auto"                          the best level here

so every path can be tested and timed on a machine that has a higher one. The library is
loaded into the process once (llvmlite's `load_library_permanently`), and a numba function
compiled with `nogil=True` calls its `dc_run_pool` by symbol name, which splits the rows over
the C library's own threads (a pthread pool, not numba's OpenMP: see `pool` for why, and for
the thread count, torch's), so that each thread gets the same number of kept weights. Calling
by name (not through a ctypes pointer) lets numba cache that function on disk like the other
kernels, so a new process does not compile it again.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os

import llvmlite.binding as llvm
from numba import njit, types

from .pool import threads_for

LEVELS = ("portable", "avx2", "avx512", "neon")  # the C enum's order (_kernels.h)
BEST_FIRST = ("avx512", "avx2", "neon", "portable")
NEEDS = {  # what a level needs, for the messages
    "avx512": "an x86-64 CPU with AVX-512 F, BW, VL and DQ",
    "avx2": "an x86-64 CPU with AVX2 and FMA",
    "neon": "an aarch64 CPU",
    "portable": "the C extension (built by pip where a C compiler is found)",
}

# (threads, level, kind, rows, ptr, cols or masks, nb, codes, table, k, x, nbatch, out): _simd.c
_i64, _ptr = types.int64, types.voidptr
_RUN_POOL = types.ExternalFunction(
    "dc_run_pool",
    types.int32(_i64, _i64, _i64, _i64, _ptr, _ptr, _i64, _ptr, _ptr, _i64, _ptr, _i64, _ptr),
)


@functools.cache
def supported() -> tuple[str, ...]:
    """The levels the built extension and this CPU can run, best first; () without it."""
    spec = importlib.util.find_spec("deepcompress.runtime._simd")
    if spec is None or spec.origin is None:
        return ()
    try:
        mask = ctypes.CDLL(spec.origin).dc_levels()
        llvm.load_library_permanently(spec.origin)
    except (OSError, RuntimeError, AttributeError):
        return ()
    return tuple(name for name in BEST_FIRST if mask >> LEVELS.index(name) & 1)


def level() -> str | None:
    """The level the runtime uses now (see the module notes); None for the numba loops.

    Raises:
        ValueError: DEEPCOMPRESS_SIMD names an unknown level, or one this CPU cannot run.
    """
    want = os.environ.get("DEEPCOMPRESS_SIMD", "auto").strip().lower()
    if want == "0":
        return None
    here = supported()
    if want in ("", "1", "auto"):
        return here[0] if here else None
    if want not in LEVELS:
        raise ValueError(
            f"DEEPCOMPRESS_SIMD={want!r}: expected one of {', '.join(BEST_FIRST)}, 0 or auto"
        )
    if want not in here:
        have = ", ".join(here) or "none (no C extension)"
        raise ValueError(
            f"DEEPCOMPRESS_SIMD={want}: that level needs {NEEDS[want]}; this machine runs {have}"
        )
    return want


def available() -> bool:
    """Whether C kernels run here (at the level `level()` picks)."""
    return level() is not None


@njit(nogil=True, cache=True)
def _run(lvl, kind, nt, ptr, pos, nb, codes, table, x, nbatch, out):  # pragma: no cover
    """The product on up to `nt` threads: the C library's pool (`dc_run_pool`, _simd.c)."""
    q, p, c, t = ptr.ctypes.data, pos.ctypes.data, codes.ctypes.data, table.ctypes.data
    rows, k, xp, o = ptr.size - 1, table.size, x.ctypes.data, out.ctypes.data
    _RUN_POOL(nt, lvl, kind, rows, q, p, nb, c, t, k, xp, nbatch, o)


_KIND = {("index", 2): 0, ("index", 4): 1, ("bitmap", 8): 2}  # (layout, position itemsize)


def run(layout, pos, ptr, codes, table, xt, out, lvl: str, threads: int | None = None) -> None:
    """out (rows, B) = xt.T @ W.T for W in `layout` ("index" or "bitmap") with the kernels of
    level `lvl` (one of `supported()`); xt (cols, B) float32 C-contiguous, padded to whole
    64-column blocks for "bitmap"; out float32. `threads`: that many threads (autotune's
    count), at most torch's; None: `pool.threads_for`'s rule (torch's thread count, or one for
    a product below SERIAL_WORK kept weights x batch). With no inputs, rows or columns,
    `out` is zeroed and no kernel runs (the batch-1 kernels would write into a 0-column out)."""
    nbatch = xt.shape[1]
    if nbatch == 0 or out.size == 0 or xt.shape[0] == 0:
        out.fill(0)
        return
    nb = pos.shape[1] if pos.ndim == 2 else 0
    # (dtype.itemsize, not dtype.name: the name takes microseconds to build)
    kind = _KIND[layout, pos.itemsize] + (3 if nbatch > 1 else 0)
    threads = threads_for(int(ptr[-1]) * nbatch, threads)
    _run(LEVELS.index(lvl), kind, threads, ptr, pos, nb, codes, table, xt, nbatch, out)
