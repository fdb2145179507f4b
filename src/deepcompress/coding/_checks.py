"""Argument checks shared by the entropy coders (`huffman`, `rans`, `cabac`)."""

from __future__ import annotations

import operator

import numpy as np

from ..errors import FormatError


def as_int_vector(a, what: str, exc: type[Exception]) -> np.ndarray:
    """`a` as a 1-D int64 array; `exc` if it is not a 1-D integer array that fits in int64."""
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise exc(f"{what} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iub":
        raise exc(f"{what} must have an integer dtype, got {arr.dtype}")
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise exc(f"{what} has values too large for int64")
    return arr.astype(np.int64, copy=False)


def nonneg_int(value, what: str, exc: type[Exception] = FormatError) -> int:
    """`value` as a non-negative int (bools refused); `exc` naming `what` otherwise."""
    if isinstance(value, bool):
        raise exc(f"{what} must be an integer, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise exc(f"{what} must be an integer, got {value!r}") from None
    if n < 0:
        raise exc(f"negative {what} {n}")
    return n


def symbol_count(count) -> int:
    """A stream's symbol count as a non-negative int; FormatError otherwise (bools too)."""
    return nonneg_int(count, "symbol count")


def symbol_array(symbols, n: int) -> np.ndarray:
    """A stream's symbols, flattened, as contiguous uint16, int32 or int64; ValueError if
    they are not integers or one is outside [0, n) (the message names the first such
    position)."""
    sym = np.asarray(symbols)
    if sym.size == 0:
        return np.zeros(0, dtype=np.int64)
    if sym.dtype.kind not in "iu":
        raise ValueError(f"symbols must have an integer dtype, got {sym.dtype}")
    sym = sym.ravel()
    if sym.min() < 0 or sym.max() >= n:
        i = int(np.flatnonzero((sym < 0) | (sym >= n))[0])
        raise ValueError(f"symbol {int(sym[i])} (at position {i}) out of range for {n} symbols")
    # uint16 and int32 are kept (the coders' kernels take them): no int64 copy of a long stream
    kept = sym.dtype if sym.dtype in (np.uint16, np.int32) else np.int64
    return np.ascontiguousarray(sym, dtype=kept)


def histogram(symbols: np.ndarray, minlength: int = 0) -> np.ndarray:
    """`np.bincount(symbols, minlength)` (int64 counts, length max + 1 at least) by slices:
    bincount copies an int32 input to int64 whole, and the encoder's streams are long."""
    n = max(minlength, int(symbols.max()) + 1 if len(symbols) else 0)
    hist = np.zeros(n, dtype=np.int64)
    for i in range(0, len(symbols), 1 << 16):
        hist += np.bincount(symbols[i : i + (1 << 16)], minlength=n)
    return hist


#: Largest tensor (elements) a file may declare at all.
MAX_NUMEL = 1 << 34


def field_int(entry: dict, key: str, where: str, lo: int = 0, hi: int = MAX_NUMEL) -> int:
    """Header field `key` of `entry`, which must be an int (not a bool) in [lo, hi];
    FormatError naming the field and `where` otherwise."""
    v = entry.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise FormatError(f"{where}: field {key!r} must be an integer in [{lo}, {hi}], got {v!r}")
    return v
