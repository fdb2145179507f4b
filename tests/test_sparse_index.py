import numpy as np
import pytest

from deepcompress.coding.sparse_index import (
    decode_positions,
    encode_positions,
    filler_count,
    max_gap,
)


def reference_encode(positions, index_bits):
    """Paper Figure 2, one entry at a time."""
    limit = 2**index_bits - 1
    gaps, real, last = [], [], -1
    for p in positions:
        gap = p - last - 1
        while gap > limit:
            gaps.append(limit)
            real.append(False)
            gap -= limit + 1
        gaps.append(gap)
        real.append(True)
        last = p
    return gaps, real


CASES = [
    [],  # empty (fully pruned) layer
    [0],
    [5],
    list(range(20)),  # fully dense
    [1, 2, 13],  # the module docstring's example
    [0, 100, 101, 5000],  # long gaps
    [2**16 + 3],
]


@pytest.mark.parametrize("positions", CASES)
@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8, 16])
def test_round_trip_against_reference(positions, bits):
    gaps, real = encode_positions(np.array(positions, dtype=np.int64), bits)
    ref_gaps, ref_real = reference_encode(positions, bits)
    assert gaps.tolist() == ref_gaps
    assert real.tolist() == ref_real
    assert gaps.max(initial=0) <= max_gap(bits)
    assert decode_positions(gaps)[real].tolist() == positions
    assert filler_count(np.array(positions, dtype=np.int64), bits) == len(gaps) - len(positions)


def test_docstring_example():
    gaps, real = encode_positions(np.array([1, 2, 13]), 2)
    assert gaps.tolist() == [1, 0, 3, 3, 2]
    assert decode_positions(gaps).tolist() == [1, 2, 6, 10, 13]


def test_random_masks():
    rng = np.random.default_rng(0)
    for density in (0.01, 0.1, 0.9):
        pos = np.flatnonzero(rng.random(10000) < density)
        for bits in (2, 5, 8):
            gaps, real = encode_positions(pos, bits)
            assert np.array_equal(decode_positions(gaps)[real], pos)


def test_bad_positions():
    with pytest.raises(ValueError):
        encode_positions(np.array([3, 3]), 4)
    with pytest.raises(ValueError):
        max_gap(0)


def test_entries_and_gaps_by_slices_match_the_reference(monkeypatch):
    """`encode_entries` and `nonzero_gaps` work by slices (to bound the encoder's memory):
    with slices of 3, every boundary case (a filler run or a gap across a slice edge) is
    hit, and the streams must still be the one-entry-at-a-time reference's."""
    from deepcompress.coding import sparse_index as si

    monkeypatch.setattr(si, "_CHUNK", 3)
    rng = np.random.default_rng(1)
    for positions in CASES + [np.flatnonzero(rng.random(200) < p).tolist() for p in (0.05, 0.6)]:
        d = si.raw_gaps(np.array(positions, dtype=np.int64))
        symbols = np.arange(1, len(positions) + 1, dtype=np.uint16)
        for bits in (1, 2, 5, 16):
            gaps, entry_symbols = si.encode_entries(d, bits, symbols)
            ref_gaps, ref_real = reference_encode(positions, bits)
            assert gaps.dtype == np.uint16 and gaps.tolist() == ref_gaps
            assert entry_symbols.dtype == symbols.dtype
            assert entry_symbols[np.array(ref_real, dtype=bool)].tolist() == symbols.tolist()
            assert not entry_symbols[~np.array(ref_real, dtype=bool)].any()  # fillers: 0
        flat = np.zeros(max(positions, default=-1) + 4, dtype=np.uint16)
        flat[positions] = 7
        for chunk in (1, 3, 1 << 20):
            got = si.nonzero_gaps(flat, chunk=chunk)
            assert got.tolist() == d.tolist()
            assert got.dtype == (np.uint16 if d.max(initial=0) <= 0xFFFF else np.int32)
    with pytest.raises(ValueError, match="ascending"):
        si.encode_entries(np.array([2, -1]), 4, np.ones(2, bool))
