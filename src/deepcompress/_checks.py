"""Argument checks shared by the entropy coders (`huffman`, `rans`, `cabac`)."""

from __future__ import annotations

import operator

import numpy as np

from .errors import FormatError


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


def symbol_count(count) -> int:
    """A stream's symbol count as a non-negative int; FormatError otherwise (bools too)."""
    if isinstance(count, bool):
        raise FormatError(f"symbol count must be an integer, got {count!r}")
    try:
        count = operator.index(count)
    except TypeError:
        raise FormatError(f"symbol count must be an integer, got {count!r}") from None
    if count < 0:
        raise FormatError(f"negative symbol count {count}")
    return count
