"""Tests for deepcompress.coding.huffman against slow, obviously-correct pure-Python references."""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepcompress.coding.huffman import (
    MAX_CODE_LEN,
    canonical_codes,
    code_lengths,
    coded_bits,
    decode,
    encode,
    validate_lengths,
)
from deepcompress.errors import FormatError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------


def ref_huffman_cost(freqs) -> int:
    """Total bits of an unlimited Huffman code: the sum of all merged weights."""
    heap = [int(f) for f in freqs if f > 0]
    if len(heap) <= 1:
        return 0
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        s = heapq.heappop(heap) + heapq.heappop(heap)
        total += s
        heapq.heappush(heap, s)
    return total


def ref_code_strings(lengths) -> dict[int, str]:
    """Canonical codes as '0'/'1' strings, straight from RFC 1951 3.2.2."""
    lengths = [int(x) for x in lengths]
    max_bits = max(lengths, default=0)
    bl_count = [0] * (max_bits + 1)
    for length in lengths:
        if length:
            bl_count[length] += 1
    next_code = [0] * (max_bits + 1)
    code = 0
    for bits in range(1, max_bits + 1):
        code = (code + bl_count[bits - 1]) << 1
        next_code[bits] = code
    out = {}
    for sym, length in enumerate(lengths):
        if length:
            out[sym] = format(next_code[length], f"0{length}b")
            next_code[length] += 1
    return out


def ref_encode(symbols, lengths) -> bytes:
    codes = ref_code_strings(lengths)
    if len(codes) == 1:
        return b""
    bits = "".join(codes[int(s)] for s in symbols)
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))


def ref_decode(data: bytes, lengths, count: int) -> list[int]:
    """Walk the bits one at a time against a dict of code strings. Raises FormatError."""
    codes = ref_code_strings(lengths)
    if len(codes) == 1:
        if data:
            raise FormatError("data for single symbol")
        return [next(iter(codes))] * count
    by_code = {c: s for s, c in codes.items()}
    bits = "".join(format(b, "08b") for b in data)
    out, cur, pos = [], "", 0
    while len(out) < count:
        if pos >= len(bits):
            raise FormatError("ran out")
        cur += bits[pos]
        pos += 1
        if cur in by_code:
            out.append(by_code[cur])
            cur = ""
    rest = bits[pos:]
    if len(rest) > 7 or "1" in rest:
        raise FormatError("bad padding")
    return out


def kraft_exact(lengths) -> bool:
    """Kraft sum over nonzero lengths == 1, in integers."""
    lens = [int(x) for x in lengths if x]
    m = max(lens)
    return sum(1 << (m - x) for x in lens) == 1 << m


def fibonacci(n: int) -> np.ndarray:
    fib = [1, 1]
    while len(fib) < n:
        fib.append(fib[-1] + fib[-2])
    return np.array(fib[:n], dtype=np.int64)


def check_round_trip(symbols: np.ndarray, alphabet: int, max_len: int = MAX_CODE_LEN) -> bytes:
    freqs = np.bincount(symbols, minlength=alphabet) if symbols.size else np.zeros(alphabet, int)
    lengths = code_lengths(freqs, max_len)
    assert lengths.dtype == np.uint8 and lengths.shape == (alphabet,)
    assert np.array_equal(lengths == 0, freqs == 0)
    validate_lengths(lengths, max_len)
    data = encode(symbols, lengths)
    assert data == ref_encode(symbols.tolist(), lengths)
    bits = coded_bits(freqs, lengths)
    assert len(data) == (bits + 7) // 8
    out = decode(data, lengths, symbols.size)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, symbols)
    if symbols.size <= 5000:
        assert ref_decode(data, lengths, symbols.size) == symbols.tolist()
    return data


# ---------------------------------------------------------------------------------------------
# code_lengths
# ---------------------------------------------------------------------------------------------


def test_code_lengths_conventions():
    assert code_lengths(np.zeros(0, np.int64)).shape == (0,)
    np.testing.assert_array_equal(code_lengths(np.zeros(5, np.int64)), [0] * 5)
    np.testing.assert_array_equal(code_lengths(np.array([0, 0, 7, 0])), [0, 0, 1, 0])
    np.testing.assert_array_equal(code_lengths(np.array([3, 0, 9])), [1, 0, 1])
    assert code_lengths(np.array([1, 2])).dtype == np.uint8


def test_code_lengths_tie_breaking_is_by_symbol_index():
    # Equal weights: the two lowest-index symbols are merged first, so the last one is short.
    np.testing.assert_array_equal(code_lengths(np.array([1, 1, 1])), [2, 2, 1])
    np.testing.assert_array_equal(code_lengths(np.array([5, 5, 5, 5])), [2, 2, 2, 2])


def test_code_lengths_rejects_bad_input():
    with pytest.raises(ValueError):
        code_lengths(np.array([1, -1, 2]))
    with pytest.raises(ValueError):
        code_lengths(np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        code_lengths(np.ones((2, 2), np.int64))
    with pytest.raises(ValueError):
        code_lengths(np.ones(5, np.int64), max_len=2)  # 5 symbols need 3 bits
    with pytest.raises(ValueError):
        code_lengths(np.ones(65536, np.int64))  # 2**16 symbols cannot fit 15 bits
    with pytest.raises(ValueError):
        code_lengths(np.ones(3, np.int64), max_len=0)


@FAST
@given(st.lists(st.integers(0, 10**9), min_size=0, max_size=300))
def test_code_lengths_kraft_and_optimal(freqs):
    freqs = np.array(freqs, dtype=np.int64)
    lengths = code_lengths(freqs)
    present = int(np.count_nonzero(freqs))
    assert np.array_equal(lengths == 0, freqs == 0)
    assert int(lengths.max(initial=0)) <= MAX_CODE_LEN
    validate_lengths(lengths)
    if present >= 2:
        assert kraft_exact(lengths)
        cost = int(np.dot(freqs, lengths.astype(np.int64)))
        ref = ref_huffman_cost(freqs)
        assert cost >= ref
        # Not binding (checked with an unlimited build): exactly optimal.
        unlimited = code_lengths(freqs, max_len=32)
        if unlimited.max() <= MAX_CODE_LEN:
            assert cost == ref
            np.testing.assert_array_equal(lengths, unlimited)
        assert int(np.dot(freqs, unlimited.astype(np.int64))) == ref
    # Deterministic.
    np.testing.assert_array_equal(code_lengths(freqs.copy()), lengths)


@pytest.mark.parametrize("n", [20, 30, 45, 60])
@pytest.mark.parametrize("max_len", [6, 8, 12, MAX_CODE_LEN])
def test_code_lengths_fibonacci_respects_limit(n, max_len):
    freqs = fibonacci(n)
    assert code_lengths(freqs, max_len=32).max() > max_len or n <= max_len
    lengths = code_lengths(freqs, max_len)
    assert lengths.max() <= max_len
    assert kraft_exact(lengths)
    validate_lengths(lengths, max_len)
    # Still sensible: heavier symbols never get longer codes.
    assert np.all(np.diff(lengths.astype(int)) <= 0)
    sym = np.repeat(np.arange(n), np.minimum(freqs, 50))
    np.random.default_rng(n).shuffle(sym)
    check_round_trip(sym, n, max_len)


def test_code_lengths_tight_limit():
    # 2**k symbols with max_len k: the only complete code is the flat one.
    lengths = code_lengths(fibonacci(16), max_len=4)
    np.testing.assert_array_equal(lengths, [4] * 16)


def test_code_lengths_65536_alphabet_sparse():
    rng = np.random.default_rng(1)
    freqs = np.zeros(65536, np.int64)
    idx = rng.choice(65536, 3000, replace=False)
    freqs[idx] = rng.geometric(0.01, size=3000)
    lengths = code_lengths(freqs)
    assert kraft_exact(lengths)
    assert lengths.max() <= MAX_CODE_LEN


# ---------------------------------------------------------------------------------------------
# validate_lengths / canonical_codes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lengths",
    [
        [],
        [0],
        [0, 0, 0],
        [1],
        [0, 1, 0],
        [1, 1],
        [1, 2, 2],
        [2, 2, 2, 2],
        [0, 3, 3, 2, 2, 2],
        list(range(1, 16)) + [15],
    ],  # fmt: skip
)
def test_validate_accepts(lengths):
    validate_lengths(np.array(lengths, dtype=np.uint8))


@pytest.mark.parametrize(
    "lengths, max_len",
    [
        ([2], MAX_CODE_LEN),  # single symbol must have length 1
        ([0, 3], MAX_CODE_LEN),
        ([1, 1, 1], MAX_CODE_LEN),  # over-subscribed
        ([1, 2, 2, 2], MAX_CODE_LEN),  # over-subscribed
        ([1, 2], MAX_CODE_LEN),  # incomplete
        ([2, 2, 2], MAX_CODE_LEN),  # incomplete
        ([16, 16] + [0] * 3, MAX_CODE_LEN),  # too long
        (list(range(1, 17)) + [16], MAX_CODE_LEN),  # complete but too long
        ([3, 3, 3, 3, 3, 3, 3, 3], 2),  # too long for the given limit
    ],
)
def test_validate_rejects(lengths, max_len):
    with pytest.raises(FormatError):
        validate_lengths(np.array(lengths, dtype=np.uint8), max_len)


def test_validate_rejects_bad_arrays():
    for bad in (np.array([-1, 1, 1]), np.array([1.0, 1.0]), np.ones((2, 2), np.uint8)):
        with pytest.raises(FormatError):
            validate_lengths(bad)


def test_canonical_codes_rfc1951_example():
    # RFC 1951 3.2.2: lengths (3, 3, 3, 3, 3, 2, 4, 4) for ABCDEFGH.
    codes = canonical_codes(np.array([3, 3, 3, 3, 3, 2, 4, 4], np.uint8))
    assert codes.dtype == np.uint32
    np.testing.assert_array_equal(codes, [0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111])
    np.testing.assert_array_equal(canonical_codes(np.array([0, 2, 0, 1, 2])), [0, 2, 0, 0, 3])


@FAST
@given(st.lists(st.integers(0, 10**6), min_size=2, max_size=400))
def test_canonical_codes_prefix_free_and_match_reference(freqs):
    lengths = code_lengths(np.array(freqs, dtype=np.int64))
    codes = canonical_codes(lengths)
    ref = ref_code_strings(lengths)
    strings = {}
    for sym, length in enumerate(lengths.tolist()):
        if length:
            strings[sym] = format(int(codes[sym]), f"0{length}b")
            assert len(strings[sym]) == length
        else:
            assert codes[sym] == 0
    assert strings == ref
    ordered = sorted(strings.values())
    for a, b in itertools.pairwise(ordered):
        assert not b.startswith(a)


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


def skewed(rng, alphabet: int, n: int) -> np.ndarray:
    p = 0.6 ** np.arange(alphabet) + 1e-3
    return rng.choice(alphabet, size=n, p=p / p.sum()).astype(np.int64)


@pytest.mark.parametrize("alphabet", [1, 2, 33, 257, 65536])
@pytest.mark.parametrize("kind", ["skewed", "uniform", "single", "two", "empty"])
def test_round_trip(alphabet, kind):
    rng = np.random.default_rng(alphabet)
    n = 3000
    if kind == "skewed":
        sym = skewed(rng, min(alphabet, 2000), n) * (alphabet // min(alphabet, 2000))
    elif kind == "uniform":
        sym = rng.integers(0, min(alphabet, 4096), n) * (alphabet // min(alphabet, 4096))
    elif kind == "single":
        sym = np.full(n, alphabet - 1, dtype=np.int64)
    elif kind == "two":
        sym = rng.choice([0, alphabet - 1], size=n, p=[0.9, 0.1])
    else:
        sym = np.zeros(0, dtype=np.int64)
    data = check_round_trip(sym, alphabet)
    if kind == "empty" or len(set(sym.tolist())) == 1:
        assert data == b""


def test_round_trip_large_skewed_33():
    rng = np.random.default_rng(5)
    sym = skewed(rng, 33, 200_000)
    check_round_trip(sym, 33)


def test_single_symbol_table():
    lengths = np.array([0, 0, 1, 0], np.uint8)
    assert encode(np.full(10, 2), lengths) == b""
    assert coded_bits(np.array([0, 0, 10, 0]), lengths) == 0
    np.testing.assert_array_equal(decode(b"", lengths, 4), [2, 2, 2, 2])
    assert decode(b"", lengths, 0).shape == (0,)
    with pytest.raises(ValueError):
        encode(np.array([2, 1]), lengths)
    with pytest.raises(FormatError):
        decode(b"\x00", lengths, 4)


def test_encode_accepts_integer_dtypes_and_bytes_like_decode():
    lengths = np.array([1, 2, 2], np.uint8)
    sym = np.array([0, 1, 2, 0, 0, 2, 1], np.int64)
    data = encode(sym, lengths)
    assert data == ref_encode(sym.tolist(), lengths)
    for dtype in (np.uint8, np.int16, np.uint32, np.int32, np.uint64):
        assert encode(sym.astype(dtype), lengths) == data
    assert encode(sym.reshape(1, 7), lengths) == data
    assert encode([0, 1, 2, 0, 0, 2, 1], lengths) == data
    for buf in (data, bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(decode(buf, lengths, 7), sym)
    np.testing.assert_array_equal(decode(data, lengths, np.int64(7)), sym)


def test_encode_errors():
    lengths = np.array([1, 0, 2, 2], np.uint8)
    for bad in ([1], [0, 4], [-1], [0, 2, 3, 1]):
        with pytest.raises(ValueError):
            encode(np.array(bad), lengths)
    with pytest.raises(ValueError):
        encode(np.array([2**63 + 5], np.uint64), lengths)
    with pytest.raises(ValueError):
        encode(np.array([0.0, 1.0]), lengths)
    with pytest.raises(ValueError):
        encode(np.array([0]), np.array([1, 1, 1], np.uint8))  # invalid table
    with pytest.raises(ValueError):
        encode(np.array([0]), np.zeros(3, np.uint8))  # nothing is codable
    assert encode(np.zeros(0, np.int64), np.zeros(3, np.uint8)) == b""


@FAST
@given(
    st.lists(st.integers(1, 1000), min_size=1, max_size=40),
    st.integers(0, 2**32 - 1),
    st.integers(0, 400),
)
def test_round_trip_random(weights, seed, n):
    rng = np.random.default_rng(seed)
    p = np.array(weights, float)
    sym = rng.choice(len(weights), size=n, p=p / p.sum()).astype(np.int64)
    check_round_trip(sym, len(weights))


@FAST
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=300), st.integers(1, MAX_CODE_LEN))
def test_coded_bits_matches_encode(freqs, max_len):
    freqs = np.array(freqs, dtype=np.int64)
    if np.count_nonzero(freqs) > 2**max_len:
        return
    lengths = code_lengths(freqs, max_len)
    sym = np.repeat(np.arange(freqs.size), freqs)
    np.random.default_rng(0).shuffle(sym)
    data = encode(sym, lengths)
    bits = coded_bits(freqs, lengths)
    assert 8 * len(data) - 7 <= bits <= 8 * len(data)
    assert len(data) == (bits + 7) // 8
    if np.count_nonzero(freqs) >= 2:
        assert bits == int(np.dot(freqs, lengths.astype(np.int64)))


def test_coded_bits_errors():
    with pytest.raises(ValueError):
        coded_bits(np.array([1, 1]), np.array([1, 1, 0]))
    with pytest.raises(ValueError):
        coded_bits(np.array([1, 1, 1]), np.array([1, 1, 0]))


# ---------------------------------------------------------------------------------------------
# Decode errors
# ---------------------------------------------------------------------------------------------


def _sample():
    rng = np.random.default_rng(7)
    sym = skewed(rng, 33, 1001)
    lengths = code_lengths(np.bincount(sym, minlength=33))
    data = encode(sym, lengths)
    return sym, lengths, data


def test_decode_truncated():
    sym, lengths, data = _sample()
    for cut in (1, 2, len(data) // 2, len(data)):
        with pytest.raises(FormatError):
            decode(data[:-cut], lengths, sym.size)
    with pytest.raises(FormatError):
        decode(data, lengths, sym.size + 50)


def test_decode_trailing_and_padding():
    sym, lengths, data = _sample()
    with pytest.raises(FormatError):
        decode(data + b"\x00", lengths, sym.size)
    with pytest.raises(FormatError):
        decode(data + b"\x80", lengths, sym.size)
    # Two symbols of 1 and 2 bits: 3 bits used, 5 padding bits; set each in turn.
    lengths2 = np.array([1, 2, 2], np.uint8)
    good = encode(np.array([0, 2]), lengths2)
    assert good == bytes([0b01100000])
    np.testing.assert_array_equal(decode(good, lengths2, 2), [0, 2])
    for bit in range(5):
        with pytest.raises(FormatError):
            decode(bytes([good[0] | (1 << bit)]), lengths2, 2)
    with pytest.raises(FormatError):
        decode(good, lengths2, 1)  # fewer symbols than coded: padding is nonzero
    with pytest.raises(FormatError):
        decode(b"\x00", lengths2, 0)  # 8 bits left over


def test_decode_exactly_full_bytes():
    lengths = np.array([1, 1], np.uint8)
    sym = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0])
    data = encode(sym, lengths)
    assert data == bytes([0b10110010, 0b11110000])
    np.testing.assert_array_equal(decode(data, lengths, 16), sym)
    with pytest.raises(FormatError):
        decode(data, lengths, 8)  # a whole byte left over


@pytest.mark.parametrize(
    "lengths",
    [[1, 1, 1], [1, 2, 2, 2], [1, 2], [2, 2, 2], [16, 16], [2], [0, 0, 3], [-1, 1, 1]],
)
def test_decode_invalid_tables(lengths):
    with pytest.raises(FormatError):
        decode(b"\x00\x00", np.array(lengths), 3)


def test_decode_bad_counts():
    sym, lengths, data = _sample()
    with pytest.raises(FormatError):
        decode(data, lengths, -1)
    with pytest.raises(FormatError):
        decode(b"", np.zeros(4, np.uint8), 1)
    with pytest.raises(FormatError):
        decode(b"", np.zeros(0, np.uint8), 1)
    with pytest.raises(FormatError):
        decode(b"\x00", np.zeros(4, np.uint8), 0)
    assert decode(b"", np.zeros(4, np.uint8), 0).shape == (0,)
    # A huge count with little data fails before allocating anything large.
    with pytest.raises(FormatError):
        decode(data, lengths, 10**15)
    with pytest.raises(FormatError):
        decode(data, lengths, "3")


def _ref_outcome(data, lengths, count):
    try:
        return ref_decode(data, lengths, count)
    except FormatError:
        return FormatError


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 2**20), min_size=1, max_size=40),
    st.binary(max_size=40),
    st.integers(-2, 400),
)
def test_decode_random_bytes_never_crash(freqs, data, count):
    freqs = np.array(freqs, dtype=np.int64)
    need = max(1, int(np.count_nonzero(freqs) - 1).bit_length())
    lengths = code_lengths(freqs, max_len=max(need, int(freqs[0] % 15) + 1))
    try:
        out = decode(data, lengths, count)
    except FormatError:
        out = FormatError
    # Compare with the bit-by-bit reference (which cannot check the count itself).
    if count < 0 or (np.count_nonzero(lengths) == 0 and (count > 0 or data)):
        assert out is FormatError
    else:
        ref = _ref_outcome(data, lengths, count)
        if ref is FormatError:
            assert out is FormatError
        else:
            assert out is not FormatError and out.tolist() == ref


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=24), st.binary(min_size=1, max_size=20), st.integers(-1, 200))
def test_decode_garbage_tables_only_format_error(table_bytes, data, count):
    lengths = np.frombuffer(table_bytes, np.uint8) % 17
    try:
        decode(data, lengths, count)
    except FormatError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 1000), min_size=2, max_size=40),
    st.integers(0, 2**32 - 1),
    st.integers(1, 200),
    st.sampled_from(["flip", "truncate", "append", "count"]),
    st.integers(0, 10**6),
)
def test_decode_mutated_streams_match_reference(weights, seed, n, mutation, where):
    rng = np.random.default_rng(seed)
    p = np.array(weights, float)
    sym = rng.choice(len(weights), size=n, p=p / p.sum())
    lengths = code_lengths(np.bincount(sym, minlength=len(weights)))
    data = bytearray(encode(sym, lengths))
    count = n
    if mutation == "flip" and data:
        data[where % len(data)] ^= 1 << (where % 8)
    elif mutation == "truncate":
        del data[where % (len(data) + 1) :]
    elif mutation == "append":
        data.append(where % 256)
    else:
        count = max(0, n + where % 7 - 3)
    data = bytes(data)
    try:
        out = decode(data, lengths, count).tolist()
    except FormatError:
        out = FormatError
    assert out == _ref_outcome(data, lengths, count)
