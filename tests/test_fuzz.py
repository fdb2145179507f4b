"""Damaged and hostile files: every mutation gives FormatError (or a valid decode), nothing else.

The long run (100,000+ inputs) is `python fuzz/fuzz_load.py`; this is the suite's short one.
"""

import pickle

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
