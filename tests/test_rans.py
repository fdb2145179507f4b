"""Tests for deepcompress.coding.rans against slow, obviously-correct pure-Python references."""

from __future__ import annotations

import bisect
import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepcompress.coding.rans import (
    MAX_PRECISION,
    decode,
    encode,
    estimate_bits,
    pack_table,
    quantize_freqs,
    unpack_table,
)
from deepcompress.errors import FormatError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
L = 2**23

# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------


def ref_encode(symbols, freqs, precision) -> bytes:
    """Two interleaved rANS states, plain Python ints, straight from the module docstring."""
    freqs = [int(f) for f in freqs]
    m = 2**precision
    if not symbols or max(freqs) == m:
        return b""
    starts = [0, *itertools.accumulate(freqs)][:-1]
    state = [L, L]
    emitted = []  # renormalisation bytes in the order the encoder outputs them
    for i in reversed(range(len(symbols))):
        s = int(symbols[i])
        f = freqs[s]
        x = state[i % 2]
        while x >= (L // m) * 256 * f:
            emitted.append(x % 256)
            x //= 256
        state[i % 2] = (x // f) * m + x % f + starts[s]
    head = state[0].to_bytes(4, "little") + state[1].to_bytes(4, "little")
    return head + bytes(reversed(emitted))


def ref_decode(data: bytes, freqs, precision, count) -> list[int]:
    """Decode with a bisect over the cumulative frequencies. Raises FormatError."""
    freqs = [int(f) for f in freqs]
    m = 2**precision
    present = [s for s, f in enumerate(freqs) if f]
    if count < 0:
        raise FormatError("negative count")
    if count == 0:
        if data:
            raise FormatError("data for an empty stream")
        return []
    if not present:
        raise FormatError("empty table")
    if len(present) == 1:
        if data:
            raise FormatError("data for a single symbol")
        return present * count
    if len(data) < 8:
        raise FormatError("short")
    state = [int.from_bytes(data[0:4], "little"), int.from_bytes(data[4:8], "little")]
    if not all(L <= x < 256 * L for x in state):
        raise FormatError("bad state")
    ends = list(itertools.accumulate(freqs))
    pos, out = 8, []
    for i in range(count):
        x = state[i % 2]
        slot = x % m
        s = bisect.bisect_right(ends, slot)
        x = freqs[s] * (x // m) + slot - (ends[s] - freqs[s])
        while x < L:
            if pos >= len(data):
                raise FormatError("ran out")
            x = x * 256 + data[pos]
            pos += 1
        state[i % 2] = x
        out.append(s)
    if pos != len(data) or state != [L, L]:
        raise FormatError("trailing bytes or final state")
    return out


def _bits(v: int, width: int) -> str:
    assert 0 <= v < 2**width or (v == 0 and width == 0)
    return format(v, f"0{width}b") if width else ""


def _to_bytes(bits: str) -> bytes:
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))


def ref_pack_table(freqs, precision) -> bytes:
    freqs = [int(f) for f in freqs]
    if not any(freqs):
        return b"\x00"
    n, w = len(freqs), max(freqs).bit_length()
    b = (n - 1).bit_length()
    present = [s for s in range(n) if freqs[s]]
    dense = "".join(_bits(f, w) for f in freqs)
    sparse = _bits(len(present) - 1, b) + "".join(_bits(s, b) + _bits(freqs[s], w) for s in present)
    if math.ceil(len(sparse) / 8) < math.ceil(len(dense) / 8):
        return bytes([precision, 0x80 | w]) + _to_bytes(sparse)
    return bytes([precision, w]) + _to_bytes(dense)


def cost(hist, freqs, precision) -> float:
    """Ideal coded bits of a histogram under a table."""
    h, f = np.asarray(hist, float), np.asarray(freqs, float)
    used = h > 0
    return float(np.sum(h[used] * (precision - np.log2(f[used]))))


def naive_cost(hist, precision) -> float:
    """Cost of proportional rounding (at least 1) with the sum fixed on the largest symbol."""
    h = np.asarray(hist, np.int64)
    m = 2**precision
    f = np.where(h > 0, np.maximum(1, np.rint(h * m / h.sum())), 0).astype(np.int64)
    f[int(np.argmax(h))] += m - int(f.sum())
    return cost(h, f, precision) if f.min() >= 0 and f[h > 0].min() >= 1 else math.inf


def entropy_bits(symbols: np.ndarray) -> float:
    p = np.bincount(symbols) / symbols.size
    p = p[p > 0]
    return float(-symbols.size * np.sum(p * np.log2(p)))


def skewed(rng, alphabet: int, n: int) -> np.ndarray:
    p = 0.6 ** np.arange(alphabet) + 1e-3
    return rng.choice(alphabet, size=n, p=p / p.sum()).astype(np.int64)


def check_round_trip(symbols: np.ndarray, alphabet: int, precision: int) -> bytes:
    hist = np.bincount(symbols, minlength=alphabet) if symbols.size else np.zeros(alphabet, int)
    freqs = quantize_freqs(hist, precision)
    table = pack_table(freqs, precision)
    assert table == ref_pack_table(freqs, precision)
    freqs2, p2 = unpack_table(table, alphabet)
    assert freqs2.dtype == np.int64
    np.testing.assert_array_equal(freqs2, freqs)
    assert p2 == (precision if hist.any() else 0)
    data = encode(symbols, freqs, precision)
    if symbols.size <= 20_000:
        assert data == ref_encode(symbols.tolist(), freqs, precision)
    out = decode(data, freqs2, p2, symbols.size)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, symbols)
    if symbols.size <= 5000:
        assert ref_decode(data, freqs, precision, symbols.size) == symbols.tolist()
    return data


# ---------------------------------------------------------------------------------------------
# Known vectors
# ---------------------------------------------------------------------------------------------


def test_hand_computed_payloads():
    freqs = np.array([1, 1])  # precision 1: x -> 2x + s, no renormalisation from L
    assert encode(np.array([0]), freqs, 1) == bytes.fromhex("00000001 00008000")
    assert encode(np.array([1]), freqs, 1) == bytes.fromhex("01000001 00008000")
    assert encode(np.array([1, 0]), freqs, 1) == bytes.fromhex("01000001 00000001")
    for sym in ([0], [1], [1, 0]):
        data = encode(np.array(sym), freqs, 1)
        np.testing.assert_array_equal(decode(data, freqs, 1, len(sym)), sym)
    # Rare symbol at precision 15 (freq 1): renormalises L = 2**23 by one byte first.
    freqs = np.array([2**15 - 1, 1])
    data = encode(np.array([1]), freqs, 15)
    x0 = (2**15 << 15) + 2**15 - 1  # x = L >> 8 = 2**15, then x * M + cum
    assert data == x0.to_bytes(4, "little") + L.to_bytes(4, "little") + b"\x00"
    np.testing.assert_array_equal(decode(data, freqs, 15, 1), [1])


def test_hand_computed_tables():
    # Dense: 3 symbols, w = 3, fields 011 100 001 + 0 padding.
    assert pack_table(np.array([3, 4, 1]), 3) == bytes([3, 3, 0b01110000, 0b10000000])
    assert unpack_table(bytes([3, 3, 0b01110000, 0b10000000]), 3)[1] == 3
    # Sparse: n = 16 (b = 4), k = 2: 0001, (0010, 10), (1111, 10) -> 16 bits.
    freqs = np.zeros(16, np.int64)
    freqs[[2, 15]] = 2
    assert pack_table(freqs, 2) == bytes([2, 0x82, 0b00010010, 0b10111110])
    f2, p2 = unpack_table(bytes([2, 0x82, 0b00010010, 0b10111110]), 16)
    np.testing.assert_array_equal(f2, freqs)
    assert p2 == 2
    # Empty tables, whatever the alphabet.
    assert pack_table(np.zeros(5, np.int64), 12) == b"\x00"
    assert pack_table(np.zeros(0, np.int64), 0) == b"\x00"
    f0, p0 = unpack_table(b"\x00", 5)
    assert p0 == 0 and f0.tolist() == [0] * 5
    # Single symbol: freq 2**p needs p + 1 bits.
    assert pack_table(np.array([8]), 3) == bytes([3, 4, 0b10000000])


# ---------------------------------------------------------------------------------------------
# quantize_freqs / estimate_bits
# ---------------------------------------------------------------------------------------------


def test_quantize_conventions():
    np.testing.assert_array_equal(quantize_freqs(np.zeros(4, np.int64), 10), [0] * 4)
    assert quantize_freqs(np.zeros(0, np.int64), 10).shape == (0,)
    np.testing.assert_array_equal(quantize_freqs(np.array([0, 7, 0]), 5), [0, 32, 0])
    f = quantize_freqs(np.array([1, 1, 1, 1], np.uint8), 2)
    assert f.dtype == np.int64 and f.tolist() == [1, 1, 1, 1]
    np.testing.assert_array_equal(quantize_freqs(np.array([1, 3]), 2), [1, 3])
    # Deterministic tie-breaking: the extra units go to the lower symbols.
    np.testing.assert_array_equal(quantize_freqs(np.array([5, 5, 5]), 2), [2, 1, 1])


def test_quantize_rejects_bad_input():
    for bad in (np.array([1, -1]), np.array([1.0, 2.0]), np.ones((2, 2), np.int64)):
        with pytest.raises(ValueError):
            quantize_freqs(bad, 8)
    for p in (0, -1, MAX_PRECISION + 1, 2.0):
        with pytest.raises(ValueError):
            quantize_freqs(np.array([1, 2]), p)
    with pytest.raises(ValueError):
        quantize_freqs(np.ones(5, np.int64), 2)  # 5 symbols, 4 slots
    with pytest.raises(ValueError):
        quantize_freqs(np.ones(2**15 + 1, np.int64), MAX_PRECISION)


def check_quantized(hist: np.ndarray, precision: int) -> np.ndarray:
    f = quantize_freqs(hist, precision)
    assert f.dtype == np.int64 and f.shape == hist.shape
    if not hist.any():
        assert not f.any()
        return f
    assert int(f.sum()) == 2**precision
    assert np.all(f[hist > 0] >= 1) and np.all(f[hist == 0] == 0)
    c = cost(hist, f, precision)
    assert c <= naive_cost(hist, precision) * (1 + 1e-12) + 1e-9
    # Optimal: no move of one unit from a symbol (freq > 1) to another lowers the cost.
    h, ff = hist[hist > 0].astype(float), f[hist > 0].astype(float)
    gain = h * (np.log2(ff + 1) - np.log2(ff))
    with np.errstate(divide="ignore"):
        loss = np.where(ff > 1, h * (np.log2(ff) - np.log2(np.maximum(ff - 1, 1))), np.inf)
    assert gain.max() <= loss.min() * (1 + 1e-9) + 1e-9
    return f


@FAST
@given(
    st.lists(st.integers(0, 10**7), min_size=1, max_size=300),
    st.integers(1, MAX_PRECISION),
)
def test_quantize_properties(hist, precision):
    hist = np.array(hist, dtype=np.int64)
    if np.count_nonzero(hist) > 2**precision:
        with pytest.raises(ValueError):
            quantize_freqs(hist, precision)
        return
    f = check_quantized(hist, precision)
    np.testing.assert_array_equal(quantize_freqs(hist.copy(), precision), f)


@pytest.mark.parametrize("precision", [8, 12, MAX_PRECISION])
def test_quantize_many_rare_symbols(precision):
    # Most symbols seen once next to one huge count: many units must come off the big one.
    hist = np.ones(2**precision - 3, np.int64)
    hist[7] = 10**7
    f = check_quantized(hist, precision)
    assert f[7] == 4 and np.all(np.delete(f, 7) == 1)


def test_quantize_65537_alphabet_sparse():
    rng = np.random.default_rng(1)
    hist = np.zeros(65537, np.int64)
    hist[rng.choice(65537, 3000, replace=False)] = rng.geometric(0.01, size=3000)
    hist[65536] = 123
    check_quantized(hist, MAX_PRECISION)


def test_within_one_percent_of_order0_entropy():
    rng = np.random.default_rng(2)
    sym = np.minimum(rng.geometric(0.25, 100_000) - 1, 31).astype(np.int64)
    hist = np.bincount(sym, minlength=32)
    f = quantize_freqs(hist, MAX_PRECISION)
    data = encode(sym, f, MAX_PRECISION)
    h = entropy_bits(sym)
    assert 8 * len(data) <= 1.01 * h
    assert 8 * len(data) <= 1.001 * h + 64  # in fact far closer
    np.testing.assert_array_equal(decode(data, f, MAX_PRECISION, sym.size), sym)


@FAST
@given(
    st.lists(st.integers(1, 1000), min_size=2, max_size=40),
    st.integers(0, 2**32 - 1),
    st.integers(1, 3000),
    st.integers(6, MAX_PRECISION),
)
def test_estimate_bits_matches_payload(weights, seed, n, precision):
    rng = np.random.default_rng(seed)
    p = np.array(weights, float)
    sym = rng.choice(len(weights), size=n, p=p / p.sum()).astype(np.int64)
    hist = np.bincount(sym, minlength=len(weights))
    f = quantize_freqs(hist, precision)
    est = estimate_bits(hist, f, precision)
    real = 8 * len(encode(sym, f, precision))
    if np.count_nonzero(f) == 1:
        assert est == 0 and real == 0
    else:
        ideal = cost(hist, f, precision)
        assert est == pytest.approx(ideal + 64)
        assert ideal + 47 <= real <= ideal + 64 + 0.001 * ideal + 1


def test_estimate_bits_conventions_and_errors():
    f = np.array([2, 0, 2])
    assert estimate_bits(np.zeros(3, np.int64), f, 2) == 0
    assert estimate_bits(np.array([0, 0, 5]), np.array([0, 0, 4]), 2) == 0
    assert estimate_bits(np.array([3, 0, 1]), f, 2) == pytest.approx(4 + 64)
    with pytest.raises(ValueError):
        estimate_bits(np.array([1, 1, 1]), f, 2)  # symbol 1 has frequency 0
    with pytest.raises(ValueError):
        estimate_bits(np.array([1, 1]), f, 2)
    with pytest.raises(ValueError):
        estimate_bits(np.array([1, 0, 1]), f, 3)  # table sums to 4, not 8
    with pytest.raises(ValueError):
        estimate_bits(np.array([1, 0, -1]), f, 2)


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


@st.composite
def tables(draw):
    n = draw(st.integers(1, 300))
    precision = draw(st.integers(1, MAX_PRECISION))
    k = draw(st.integers(1, min(n, 2**precision, 40)))
    idx = draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k, unique=True))
    hist = np.zeros(n, np.int64)
    hist[idx] = draw(st.lists(st.integers(1, 10**6), min_size=k, max_size=k))
    return quantize_freqs(hist, precision), precision


@FAST
@given(tables())
def test_table_round_trip_matches_reference(table):
    freqs, precision = table
    data = pack_table(freqs, precision)
    assert data == ref_pack_table(freqs, precision)
    f2, p2 = unpack_table(data, freqs.size)
    np.testing.assert_array_equal(f2, freqs)
    assert p2 == precision
    for bad_n in (freqs.size - 1, freqs.size + 1, freqs.size + 9):
        try:
            f3, p3 = unpack_table(data, bad_n)
        except FormatError:
            continue
        assert pack_table(f3, p3) == data


def test_table_modes():
    dense = pack_table(quantize_freqs(np.arange(1, 34), 12), 12)
    assert dense[1] & 0x80 == 0
    gaps = np.zeros(4096, np.int64)
    gaps[[0, 1, 2, 3, 4095]] = [500, 200, 80, 20, 9]
    sparse = pack_table(quantize_freqs(gaps, 12), 12)
    assert sparse[1] & 0x80 and len(sparse) == 2 + (12 + 5 * (12 + 12) + 7) // 8
    one = np.zeros(65537, np.int64)
    one[65536] = 2**15
    body = _bits(0, 17) + _bits(65536, 17) + _bits(2**15, 16)  # k - 1, symbol, freq
    assert pack_table(one, 15) == bytes([15, 0x80 | 16]) + _to_bytes(body)


def _table_samples() -> list[tuple[bytes, int]]:
    rng = np.random.default_rng(3)
    out = []
    for hist, n, precision in [
        (np.bincount(skewed(rng, 9, 500), minlength=9), 9, 10),
        (np.array([0, 4, 0, 0, 9] + [0] * 20 + [1]), 26, 6),
        (np.array([0, 5, 0]), 3, 15),
        (np.array([5]), 1, 4),
        (np.array([3, 1]), 2, 2),
        (np.zeros(4, np.int64), 4, 8),
    ]:
        out.append((pack_table(quantize_freqs(hist, precision), precision), n))
    return out


def _check_table_outcome(data: bytes, n: int) -> bool:
    """unpack_table either raises FormatError or returns a valid, canonical table."""
    try:
        freqs, precision = unpack_table(data, n)
    except FormatError:
        return False
    assert freqs.dtype == np.int64 and freqs.shape == (n,)
    assert 0 <= precision <= MAX_PRECISION
    if precision == 0:
        assert not freqs.any()
    else:
        assert int(freqs.min()) >= 0 and int(freqs.sum()) == 2**precision
    assert pack_table(freqs, precision) == data
    return True


@pytest.mark.parametrize("sample", range(6))
def test_table_every_byte_corruption(sample):
    data, n = _table_samples()[sample]
    assert _check_table_outcome(data, n)
    accepted = 0
    for i in range(len(data)):
        for v in range(256):
            if v != data[i]:
                accepted += _check_table_outcome(data[:i] + bytes([v]) + data[i + 1 :], n)
    for cut in range(len(data)):
        assert not _check_table_outcome(data[:cut], n)
    for v in range(256):
        assert not _check_table_outcome(data + bytes([v]), n)
    assert accepted < 0.5 * 255 * len(data)


def test_unpack_table_errors():
    good = pack_table(np.array([3, 4, 1]), 3)
    for bad in [
        b"",  # no precision byte
        b"\x00\x00",  # empty table with a trailing byte
        bytes([16, 3, 0x70, 0x80]),  # precision 16
        bytes([3]),  # truncated
        bytes([3, 0x23, 0x70, 0x80]),  # reserved bit 5
        bytes([3, 0x43, 0x70, 0x80]),  # reserved bit 6
        bytes([3, 0, 0x70, 0x80]),  # w = 0
        bytes([3, 5, 0x70, 0x80]),  # w = 5 > p + 1
        bytes([3, 4, 0x38, 0x40]),  # w = 4 not the bit length of the largest (4 = 0b100)
        bytes([3, 3, 0x70, 0x81]),  # nonzero padding
        bytes([3, 3, 0x70, 0xA0]),  # sum 9, not 8
        bytes([3, 3, 0x70]),  # truncated
        good + b"\x00",  # trailing
        bytes([3, 0x83]) + _to_bytes("10" + "00011" + "01100" + "10001"),  # sparse not shorter
    ]:
        with pytest.raises(FormatError):
            unpack_table(bad, 3)
    with pytest.raises(FormatError):
        unpack_table(good, -1)
    with pytest.raises(FormatError):
        unpack_table(good, "3")
    with pytest.raises(FormatError):
        unpack_table(good, 0)  # non-empty table for an empty alphabet
    np.testing.assert_array_equal(unpack_table(bytearray(good), np.int64(3))[0], [3, 4, 1])


def test_unpack_sparse_table_errors():
    n = 40  # b = 6
    freqs = np.zeros(n, np.int64)
    freqs[[3, 30]] = [1, 3]
    good = pack_table(freqs, 2)
    assert good == bytes([2, 0x82]) + _to_bytes("000001" + "000011" + "01" + "011110" + "11")

    def sparse(body: str) -> bytes:
        return bytes([2, 0x82]) + _to_bytes(body)

    assert unpack_table(good, n)[0].tolist() == freqs.tolist()
    for bad in [
        sparse("000001" + "011110" + "11" + "000011" + "01"),  # decreasing symbols
        sparse("000001" + "000011" + "01" + "000011" + "11"),  # repeated symbol
        sparse("000001" + "000011" + "01" + "101000" + "11"),  # symbol 40 out of range
        sparse("000001" + "000011" + "00" + "011110" + "11"),  # zero frequency (sum wrong too)
        sparse("000010" + "000011" + "01" + "011110" + "11" + "011111" + "00"),  # stored zero
        sparse("101000" + "000011" + "01"),  # k = 41 > n
    ]:
        with pytest.raises(FormatError):
            unpack_table(bad, n)


def test_pack_table_errors():
    for freqs, p in [
        (np.array([1, 2]), 2),  # sums to 3
        (np.array([4, 1]), 2),  # sums to 5
        (np.array([2, 2]), 0),
        (np.array([2**15, 2**15]), 16),
        (np.array([-1, 5]), 2),
        (np.array([1.0, 3.0]), 2),
        (np.ones((2, 2), np.int64), 2),
    ]:
        with pytest.raises(ValueError):
            pack_table(freqs, p)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=30), st.integers(0, 300))
def test_unpack_random_bytes(data, n):
    _check_table_outcome(data, n)


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alphabet", [1, 2, 33, 257, 4096, 65537])
@pytest.mark.parametrize("kind", ["skewed", "uniform", "single", "two", "empty"])
def test_round_trip(alphabet, kind):
    rng = np.random.default_rng(alphabet)
    n = 3000
    if kind == "skewed":
        step = alphabet // min(alphabet, 2000)
        sym = np.minimum(rng.geometric(0.3, n) - 1, min(alphabet, 2000) - 1) * step
    elif kind == "uniform":
        sym = rng.integers(0, min(alphabet, 1024), n) * (alphabet // min(alphabet, 1024))
    elif kind == "single":
        sym = np.full(n, alphabet - 1, dtype=np.int64)
    elif kind == "two":  # one very rare symbol
        sym = np.zeros(n, np.int64)
        sym[[17, 2000]] = alphabet - 1
    else:
        sym = np.zeros(0, dtype=np.int64)
    for precision in (MAX_PRECISION, 11):
        data = check_round_trip(sym.astype(np.int64), alphabet, precision)
        if kind == "empty" or len(set(sym.tolist())) == 1:
            assert data == b""


@FAST
@given(
    st.lists(st.integers(1, 1000), min_size=1, max_size=40),
    st.integers(0, 2**32 - 1),
    st.integers(0, 1500),
    st.integers(6, MAX_PRECISION),
)
def test_round_trip_random(weights, seed, n, precision):
    rng = np.random.default_rng(seed)
    p = np.array(weights, float) ** 2
    sym = rng.choice(len(weights), size=n, p=p / p.sum()).astype(np.int64)
    check_round_trip(sym, len(weights), precision)


@FAST
@given(
    st.lists(st.integers(0, 2**15), max_size=40),
    st.lists(st.integers(0, 10**6), max_size=300),
)
def test_round_trip_arbitrary_tables(cuts, picks):
    # Tables not made by quantize_freqs: any frequencies (zeros included) summing to 2**15.
    f = np.diff(np.array([0, *sorted(cuts), 2**15], np.int64))
    present = np.flatnonzero(f)
    sym = present[np.array(picks, np.int64) % present.size] if picks else np.zeros(0, np.int64)
    data = encode(sym, f, 15)
    assert data == ref_encode(sym.tolist(), f, 15)
    np.testing.assert_array_equal(decode(data, f, 15, sym.size), sym)
    assert pack_table(f, 15) == ref_pack_table(f, 15)
    np.testing.assert_array_equal(unpack_table(pack_table(f, 15), f.size)[0], f)


def test_round_trip_large_skewed():
    rng = np.random.default_rng(5)
    sym = skewed(rng, 33, 300_000)
    data = check_round_trip(sym, 33, 12)
    assert 8 * len(data) < 1.01 * entropy_bits(sym)


def test_encode_accepts_integer_dtypes_and_decode_bytes_like():
    f = np.array([4, 2, 2])
    sym = np.array([0, 1, 2, 0, 0, 2, 1], np.int64)
    data = encode(sym, f, 3)
    assert data == ref_encode(sym.tolist(), f, 3)
    for dtype in (np.uint8, np.int16, np.uint32, np.int32, np.uint64):
        assert encode(sym.astype(dtype), f.astype(dtype), 3) == data
    assert encode(sym.reshape(1, 7), f, np.int64(3)) == data
    assert encode([0, 1, 2, 0, 0, 2, 1], [4, 2, 2], 3) == data
    for buf in (data, bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(decode(buf, f, 3, 7), sym)
    np.testing.assert_array_equal(decode(data, f, np.int64(3), np.int64(7)), sym)


def test_single_symbol_and_empty_tables():
    f = np.array([0, 0, 16, 0])
    assert encode(np.full(10, 2), f, 4) == b""
    np.testing.assert_array_equal(decode(b"", f, 4, 4), [2, 2, 2, 2])
    assert decode(b"", f, 4, 0).shape == (0,)
    with pytest.raises(ValueError, match="position 1"):
        encode(np.array([2, 1]), f, 4)
    with pytest.raises(FormatError):
        decode(b"\x00", f, 4, 4)
    with pytest.raises(FormatError):
        decode(b"\x00", f, 4, 0)
    zeros = np.zeros(3, np.int64)
    for p in (0, 9):
        assert encode(np.zeros(0, np.int64), zeros, p) == b""
        assert decode(b"", zeros, p, 0).shape == (0,)
        with pytest.raises(FormatError, match="empty"):
            decode(b"", zeros, p, 1)
        with pytest.raises(FormatError):
            decode(b"\x00", zeros, p, 0)
        with pytest.raises(ValueError):
            encode(np.array([0]), zeros, p)
    assert decode(b"", np.zeros(0, np.int64), 0, 0).shape == (0,)


def test_encode_errors():
    f = np.array([2, 0, 1, 1])
    with pytest.raises(ValueError, match=r"symbol 1 \(at position 2\) has frequency 0"):
        encode(np.array([0, 3, 1]), f, 2)
    with pytest.raises(ValueError, match=r"symbol 4 \(at position 1\) out of range"):
        encode(np.array([0, 4]), f, 2)
    with pytest.raises(ValueError, match="position 0"):
        encode(np.array([-1]), f, 2)
    with pytest.raises(ValueError, match="position 1"):
        encode(np.array([0, 2**63 + 5], np.uint64), f, 2)
    with pytest.raises(ValueError):
        encode(np.array([0.0, 1.0]), f, 2)
    for p in (-1, 0, 1, 3, MAX_PRECISION + 1, 2.0, None):
        with pytest.raises(ValueError):
            encode(np.array([0]), f, p)
    with pytest.raises(ValueError):
        encode(np.array([0]), np.array([2, -1, 1, 2]), 2)
    with pytest.raises(ValueError):
        encode(np.array([0]), np.array([2**16, 2**16]), 17)


# ---------------------------------------------------------------------------------------------
# Decode errors and hostile input
# ---------------------------------------------------------------------------------------------


def _sample(n: int = 2000):
    rng = np.random.default_rng(7)
    sym = skewed(rng, 33, n)
    f = quantize_freqs(np.bincount(sym, minlength=33), 12)
    return sym, f, encode(sym, f, 12)


def test_decode_errors():
    sym, f, data = _sample(300)
    n = sym.size
    np.testing.assert_array_equal(decode(data, f, 12, n), sym)
    cases = {
        "negative symbol count": (data, f, 12, -1),
        "symbol count must be an integer": (data, f, 12, "3"),
        "too short": (data[:7], f, 12, n),
        "ran out": (data[:-1], f, 12, n),
        "trailing bytes": (data + b"\x00", f, 12, n),
        "initial rANS state": (b"\xff" * 4 + data[4:], f, 12, n),
        "sum to": (data, f, 13, n),
        "precision": (data, f, 16, n),
        "negative frequency": (data, -f, 12, n),
    }
    for msg, (d, ff, p, c) in cases.items():
        with pytest.raises(FormatError, match=msg):
            decode(d, ff, p, c)
    # A different count: runs out, or ends in a wrong state or with bytes left over.
    for c in (0, 1, n - 1, n + 1, n + 1000):
        with pytest.raises(FormatError):
            decode(data, f, 12, c)
    # Symbol 0 at precision 1 maps x0 = 2**24 + 2 to L + 1; an unused x1 must be L too.
    for bad in ("02000001 00008000", "00000001 01008000"):
        with pytest.raises(FormatError, match="final state mismatch"):
            decode(bytes.fromhex(bad), np.array([1, 1]), 1, 1)


def test_decode_initial_state_range():
    f = np.array([1, 1])
    good = bytes.fromhex("00000001 00008000")
    np.testing.assert_array_equal(decode(good, f, 1, 1), [0])
    for state in (0, L - 1, 256 * L, 2**32 - 1):
        for at in (0, 4):
            bad = bytearray(good)
            bad[at : at + 4] = state.to_bytes(4, "little")
            with pytest.raises(FormatError, match="initial rANS state"):
                decode(bytes(bad), f, 1, 1)


def _outcome(fn, *args):
    try:
        return list(fn(*args))
    except FormatError:
        return FormatError


def test_payload_truncations_and_bit_flips():
    sym, f, data = _sample(2000)
    for cut in range(len(data)):
        out = _outcome(decode, data[:cut], f, 12, sym.size)
        assert out is FormatError or len(out) == sym.size
    caught = 0
    flips = 0
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            out = _outcome(decode, bytes(bad), f, 12, sym.size)
            flips += 1
            if out is FormatError:
                caught += 1
            else:
                assert len(out) == sym.size and max(out) < 33
    assert caught >= 0.9 * flips
    # Exhaustive check against the reference on a short payload.
    sym, f, data = _sample(60)
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            bad = bytes(bad)
            assert _outcome(decode, bad, f, 12, 60) == _outcome(ref_decode, bad, f, 12, 60)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 2**20), min_size=1, max_size=40),
    st.integers(1, MAX_PRECISION),
    st.binary(max_size=40),
    st.integers(-2, 60),
)
def test_decode_random_bytes_match_reference(hist, precision, data, count):
    hist = np.array(hist, dtype=np.int64)
    if np.count_nonzero(hist) > 2**precision:
        return
    f = quantize_freqs(hist, precision)
    if data[:1] == b"\x01":  # often start with two valid states, to get further
        data = (3 * L).to_bytes(4, "little") + (L + 5).to_bytes(4, "little") + data
    if count < 0:
        assert _outcome(decode, data, f, precision, count) is FormatError
        return
    expect = _outcome(ref_decode, data, f, precision, count)
    assert _outcome(decode, data, f, precision, count) == expect


@FAST
@given(
    st.lists(st.integers(1, 1000), min_size=2, max_size=40),
    st.integers(0, 2**32 - 1),
    st.integers(1, 300),
    st.sampled_from(["flip", "truncate", "append", "count", "swap"]),
    st.integers(0, 10**6),
)
def test_decode_mutated_streams_match_reference(weights, seed, n, mutation, where):
    rng = np.random.default_rng(seed)
    p = np.array(weights, float)
    sym = rng.choice(len(weights), size=n, p=p / p.sum())
    f = quantize_freqs(np.bincount(sym, minlength=len(weights)), 12)
    data = bytearray(encode(sym, f, 12))
    count = n
    if mutation == "flip" and data:
        data[where % len(data)] ^= 1 << (where % 8)
    elif mutation == "truncate":
        del data[where % (len(data) + 1) :]
    elif mutation == "append":
        data.append(where % 256)
    elif mutation == "swap" and len(data) > 1:
        i = where % (len(data) - 1)
        data[i], data[i + 1] = data[i + 1], data[i]
    else:
        count = max(0, n + where % 7 - 3)
    data = bytes(data)
    assert _outcome(decode, data, f, 12, count) == _outcome(ref_decode, data, f, 12, count)


def test_auto_takes_cabac_on_a_long_stream_only_where_it_pays_for_its_time():
    """ "smallest" is the smallest coder per stream; "auto" the same, except that CABAC (bit by
    bit, several times slower to decode) must save SLOW_GAIN on a stream of LONG symbols."""
    from deepcompress.coding import coders

    rng = np.random.default_rng(0)
    n, p = coders.LONG, np.exp(-np.arange(64) / 6)
    some = rng.choice(64, n, p=p / p.sum())  # a fifth of the symbols repeat the previous one:
    again = np.flatnonzero(rng.random(n) < 0.2)  # CABAC's previous-symbol contexts gain ~1%
    for i in again[again > 0]:
        some[i] = some[i - 1]
    runs = np.repeat(rng.integers(0, 64, n // 8), 8)  # CABAC far smaller
    seen = set()
    for stream in (some, runs, some[: n // 4]):
        sizes = {}
        for name in coders.CODERS:
            _, _, table, payload = coders.encode_stream(stream, name)
            sizes[name] = len(table) + len(payload)
        smallest = min(sizes, key=sizes.get)
        assert smallest == "cabac"
        assert coders.encode_stream(stream, "smallest")[0] == "cabac"
        fast = min(("huffman", "rans"), key=sizes.get)
        pays = sizes["cabac"] <= (1 - coders.SLOW_GAIN) * sizes[fast]
        want = "cabac" if len(stream) < n or pays else fast
        assert coders.encode_stream(stream, "auto")[0] == want, sizes
        seen.add((len(stream) < n, want))
    assert seen == {(False, "rans"), (False, "cabac"), (True, "cabac")}  # every branch


@pytest.mark.parametrize("kind", ["one symbol", "two", "geometric", "uniform 4097"])
def test_huffman_size_is_the_bytes_it_codes(kind):
    """`encode_stream` codes Huffman only if it is chosen, from its size predicted on the
    histogram: the prediction must be its table and payload to the byte."""
    from deepcompress.coding import coders

    rng = np.random.default_rng(7)
    stream = {
        "one symbol": np.full(1000, 3),
        "two": rng.integers(0, 2, 999),
        "geometric": rng.geometric(0.3, 5001) - 1,
        "uniform 4097": rng.integers(0, 4097, 20000),
    }[kind]
    hist = coders.histogram(stream)
    table, payload = coders.CODERS["huffman"].encode(stream, hist)
    assert coders.CODERS["huffman"].size(hist) == len(table) + len(payload)
    assert coders.encode_stream(stream, "huffman")[2:] == (table, payload)
