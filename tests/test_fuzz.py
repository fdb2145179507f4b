"""Damaged and hostile files: every mutation gives FormatError (or a valid decode), nothing else.

The long run (100,000+ inputs) is `python fuzz/fuzz_load.py`; this is the suite's short one.
"""

import pickle
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deepcompress as dc
from deepcompress.coding import coders
from deepcompress.testing import (
    FIELDS,
    NASTY_VALUES,
    OPS,
    join,
    mutate_bytes,
    mutate_field,
    mutate_section,
    sample_file,
    split,
)

SAMPLE = sample_file()
#: The sample with each entropy coder (the mutations must reach every decoder).
SAMPLES = [sample_file(c) for c in coders.CODERS]
LIMIT = 10**6  # elements: a mutated shape may not make the reader allocate more
# No per-example deadline: on a loaded CI machine it would only make the suite flaky. A hang
# would still stop the suite; the long atheris run checks time with libFuzzer's -timeout.
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decodes_or_format_error(buf: bytes) -> None:
    try:
        state = dc.load_bytes(buf, max_elements=LIMIT)
    except dc.FormatError:
        return
    assert sum(t.numel() for t in state.values()) <= LIMIT


def test_samples_are_valid_and_use_every_codec_and_coder():
    for coder, sample in zip(coders.CODERS, SAMPLES):
        header, _ = split(sample)
        assert {e["codec"] for e in header["tensors"]} == {"raw", "sparse", "shared"}
        coded = [e for e in header["tensors"] if e["codec"] != "raw"]
        used = {e.get("gap_coder", "huffman") for e in coded}
        used |= {e.get("weight_coder", "huffman") for e in coded if e["codec"] == "shared"}
        assert used == {coder}
        dc.load_bytes(sample)


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(OPS),
            st.integers(0, 10**6),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(SAMPLES),
)
def test_raw_mutations_are_caught(ops, sample):
    buf = sample
    for op, pos, arg in ops:
        buf = mutate_bytes(buf, op, pos, arg)
    if buf != sample:
        with pytest.raises(dc.FormatError):
            dc.load_bytes(buf, max_elements=LIMIT)


@SETTINGS
@given(
    st.integers(0, 20),
    st.sampled_from(FIELDS),
    st.sampled_from(NASTY_VALUES),
    st.sampled_from(SAMPLES),
)
def test_header_fields_with_valid_checksums(tensor, key, value, sample):
    decodes_or_format_error(mutate_field(sample, tensor, key, value))


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
    st.sampled_from(SAMPLES),
)
def test_section_bytes_with_valid_checksums(edits, sample):
    buf = sample
    for pos, byte in edits:
        buf = mutate_section(buf, pos, byte)
    decodes_or_format_error(buf)


def test_pickle_payloads_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))

    payload = pickle.dumps(Evil())
    for buf in (payload, b"\x89DCZ" + payload, SAMPLE[:16] + payload):
        with pytest.raises(dc.FormatError):
            dc.load_bytes(buf)
    # a pickle smuggled into a raw tensor's bytes is only ever read as numbers
    header, data = split(SAMPLE)
    with pytest.raises(dc.FormatError):
        dc.load_bytes(join(header, data + payload))


def test_header_pointing_outside_the_file_is_refused():
    header, data = split(SAMPLE)
    e = next(e for e in header["tensors"] if e["codec"] == "shared")
    e["parts"][2] += 10**9  # the coded payload, whose size only the file's end bounds
    with pytest.raises(dc.FormatError, match="runs past the end"):
        dc.load_bytes(join(header, data))
    header, data = split(SAMPLE)
    header["tensors"][1]["offset"] += 4
    with pytest.raises(dc.FormatError, match="offset"):
        dc.load_bytes(join(header, data))


def test_huge_declared_shapes_are_refused_before_allocation():
    header, data = split(SAMPLE)
    e = next(e for e in header["tensors"] if e["codec"] == "shared")
    e["shape"] = [2**20, 2**13]  # 8G elements from a file of a few hundred bytes
    with pytest.raises(dc.FormatError, match="max_elements"):
        dc.load_bytes(join(header, data))


def test_errors_say_where():
    header, _ = split(SAMPLE)
    i, e = next((i, e) for i, e in enumerate(header["tensors"]) if e["codec"] == "shared")
    with pytest.raises(dc.FormatError, match=f"tensor '{e['name']}'"):
        dc.load_bytes(mutate_field(SAMPLE, i, "entries", e["entries"] + 1))


def _raw_file(header_text: bytes) -> bytes:
    from deepcompress.format.container import PREAMBLE, crc32

    return PREAMBLE.pack(b"\x89DCZ", 1, 0, len(header_text), crc32(header_text)) + header_text


def test_strict_json_duplicate_keys_and_nan_are_refused():
    """Two readers must not see two files: a key twice in one object (one keeps the first,
    another the last) and NaN/Infinity (not JSON) are refused; a writer refuses NaN in meta."""
    entry = b'{"name":"x","shape":[],"dtype":"float32","codec":"raw","parts":[0],"offset":0,'
    for text in (
        b'{"tensors":[],"tensors":[]}',
        b'{"tensors":[],"meta":{"a":1,"a":2}}',
        b'{"tensors":[],"meta":{"a":NaN}}',
        b'{"tensors":[],"meta":{"a":-Infinity}}',
        b'{"tensors":[' + entry + b'"crc":0,"crc":0}]}',
    ):
        with pytest.raises(dc.FormatError, match="twice|not JSON"):
            dc.load_bytes(_raw_file(text))
    import torch

    for meta in ({"e": float("nan")}, {1: "a", "1": "b"}):  # 1 and "1": one JSON key twice
        with pytest.raises(ValueError, match="strict JSON"):
            dc.save(torch.nn.Linear(2, 2), "/nonexistent-never-written.dcz", meta=meta)


@pytest.mark.parametrize("shape", [[0, 2**34, 2**34, 2**34], [2**34, 2**34, 0], [0] + [2**20] * 7])
def test_a_zero_size_tensor_cannot_declare_overflowing_sizes(shape):
    """Zero elements pass the element cap, but torch's strides of the other sizes overflow
    (it raised RuntimeError, not FormatError)."""
    header, data = split(SAMPLE)
    for e in header["tensors"]:
        e["shape"] = shape
        with pytest.raises(dc.FormatError, match="over"):
            dc.load_bytes(join(header, data))
        break


def test_a_grid_codebook_whose_integers_overflow_is_refused():
    import numpy as np
    import torch

    from deepcompress.coding import codebook as cb
    from deepcompress.errors import FormatError

    part = zlib.compress(cb._varints(np.array([0, 2**63 - 1], dtype=np.uint64)), 9)
    with pytest.raises(FormatError, match="overflow"):
        cb.codebook({"k": 2, "grid": 1.0}, [part])
    ok = cb.encode_grid(np.array([-3, 0, 5]))
    assert torch.equal(
        torch.from_numpy(cb.codebook({"k": 3, "grid": 0.5}, [ok])), torch.tensor([-1.5, 0, 2.5])
    )
