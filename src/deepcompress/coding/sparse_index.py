"""Stage 3: the sparse index (Deep Compression, section 2, Figure 2).

The kept weights of a layer, in row-major (PyTorch) order, are stored as *entries*: for each
entry, the number of pruned positions skipped since the previous entry (its *gap*), in a fixed
width of `index_bits` bits. A gap larger than `2**index_bits - 1` is bridged by *filler*
entries: a filler skips the largest gap the width allows and stands on a zero weight.

    positions 0..13, kept at 1, 2, 13; index_bits = 2 (largest gap 3):
    entry gaps  1, 0, 3(filler at 6), 3(filler at 10), 2
    weights     w1, w2, 0, 0, w13

Decoding is a cumulative sum: `position = cumsum(gap + 1) - 1`.
"""

from __future__ import annotations

import numpy as np


def max_gap(index_bits: int) -> int:
    """The largest gap a width of `index_bits` bits can store."""
    if not 1 <= index_bits <= 16:
        raise ValueError(f"index_bits must be in 1..16, got {index_bits}")
    return (1 << index_bits) - 1


def raw_gaps(positions: np.ndarray) -> np.ndarray:
    """Zeros skipped before each of the ascending `positions` (int64)."""
    positions = np.asarray(positions, dtype=np.int64)
    return np.diff(positions, prepend=-1) - 1


def encode_positions(positions: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Entries for the kept `positions` (ascending flat indices).

    Args:
        positions: ascending, distinct, non-negative flat indices of the kept weights.
        index_bits: the width of a stored gap.

    Returns:
        `(gaps, is_real)`: per entry, its gap (int64 in `[0, 2**index_bits - 1]`) and whether it
        is a real weight (False for fillers). Every real weight's entry comes right after the
        fillers that lead to it.
    """
    return encode_gaps(raw_gaps(positions), index_bits)


def encode_gaps(d: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """`encode_positions` given each kept weight's raw gap `d` (zeros skipped before it)."""
    span = max_gap(index_bits) + 1
    if (d < 0).any():
        raise ValueError("positions must be ascending, distinct and non-negative")
    per_weight = d // span + 1
    n = int(per_weight.sum())
    gaps = np.full(n, span - 1, dtype=np.int64)
    is_real = np.zeros(n, dtype=bool)
    last = np.cumsum(per_weight) - 1  # entry index of each real weight
    gaps[last] = d % span
    is_real[last] = True
    return gaps, is_real


def decode_positions(gaps: np.ndarray) -> np.ndarray:
    """Flat positions of the entries whose gaps are `gaps` (int64)."""
    return np.cumsum(np.asarray(gaps, dtype=np.int64) + 1) - 1


def filler_count(positions: np.ndarray, index_bits: int) -> int:
    """How many filler entries `encode_positions` would add."""
    return int((raw_gaps(positions) // (max_gap(index_bits) + 1)).sum())
