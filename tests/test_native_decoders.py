"""The C entropy decoders (coding/_decoders.c) against the numba kernels they port.

Each coder's `decode` runs the C loop where the extension is built and the numba kernel under
DEEPCOMPRESS_SIMD=0; both must give the same symbols on good streams and the same FormatError
on damaged ones (every truncation, single-bit flips, appended bytes). The numba kernels are
themselves checked against pure-Python references in test_rans.py, test_huffman.py and
test_cabac.py, which run whichever path is active.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from deepcompress.coding import _native, cabac, huffman, rans
from deepcompress.coding.coders import pack_lengths, rans_precision
from deepcompress.errors import FormatError

pytestmark = pytest.mark.skipif(
    _native._load() is None, reason="the C decoders were not built (no C compiler at install)"
)


def outcome(monkeypatch, numba: bool, decode, *args):
    if numba:
        monkeypatch.setenv("DEEPCOMPRESS_SIMD", "0")
    else:
        monkeypatch.delenv("DEEPCOMPRESS_SIMD", raising=False)
    assert (_native.lib() is None) == numba
    try:
        return decode(*args)
    except FormatError as e:
        return f"FormatError: {e}"


def same_both_ways(monkeypatch, decode, *args):
    """`decode(*args)` by the C loop and by the numba kernel: the same symbols or error."""
    c = outcome(monkeypatch, False, decode, *args)
    ref = outcome(monkeypatch, True, decode, *args)
    if isinstance(ref, str):
        assert c == ref
    else:
        assert not isinstance(c, str), c
        assert c.dtype == ref.dtype == np.int64
        np.testing.assert_array_equal(c, ref)
    return ref


def streams(seed: int):
    """Skewed, uniform, single-symbol-heavy and odd-length streams over several alphabets."""
    rng = np.random.default_rng(seed)
    for n, count in ((2, 1), (3, 2), (17, 1001), (256, 5000), (4096, 3000), (40000, 2000)):
        p = rng.dirichlet(np.full(n, 0.3))
        yield n, rng.choice(n, size=count, p=p)
    yield 5, np.zeros(999, dtype=np.int64)  # one symbol present


def damaged(payload: bytes, seed: int):
    """Every truncation of the first and last 16 bytes, 40 single-bit flips, bytes appended."""
    rng = np.random.default_rng(seed)
    cuts = set(range(min(16, len(payload)))) | set(range(max(0, len(payload) - 16), len(payload)))
    for cut in sorted(cuts):
        yield payload[:cut]
    for _ in range(40 if payload else 0):
        b = bytearray(payload)
        i = int(rng.integers(len(b)))
        b[i] ^= 1 << int(rng.integers(8))
        yield bytes(b)
    yield payload + b"\x00"
    yield payload + b"\x5a\xa5"


@pytest.mark.parametrize("seed", [0, 1])
def test_rans(seed, monkeypatch):
    for n, sym in streams(seed):
        if n > 4096:
            continue
        hist = np.bincount(sym, minlength=n)
        precision, freqs = rans_precision(hist)
        payload = rans.encode(sym, freqs, precision)
        ok = same_both_ways(monkeypatch, rans.decode, payload, freqs, precision, sym.size)
        np.testing.assert_array_equal(ok, sym)
        for bad in damaged(payload, seed):
            same_both_ways(monkeypatch, rans.decode, bad, freqs, precision, sym.size)


@pytest.mark.parametrize("seed", [0, 1])
def test_huffman(seed, monkeypatch):
    for n, sym in streams(seed):
        if n > 4096:
            continue
        lengths = huffman.code_lengths(np.bincount(sym, minlength=n))
        pack_lengths(lengths)  # a table the file format can hold
        payload = huffman.encode(sym, lengths)
        ok = same_both_ways(monkeypatch, huffman.decode, payload, lengths, sym.size)
        np.testing.assert_array_equal(ok, sym)
        for bad in damaged(payload, seed):
            same_both_ways(monkeypatch, huffman.decode, bad, lengths, sym.size)


@pytest.mark.parametrize("seed", [0, 1])
def test_cabac_every_mode(seed, monkeypatch):
    for n, sym in streams(seed):
        for mode in cabac._valid_modes(n):
            payload = cabac.encode_mode(sym, n, mode)
            ok = same_both_ways(monkeypatch, cabac.decode, payload, n, sym.size)
            np.testing.assert_array_equal(ok, sym)
            for bad in damaged(payload, seed + mode):
                same_both_ways(monkeypatch, cabac.decode, bad, n, sym.size)


def test_a_load_imports_no_numba(tmp_path):
    """A new process saves nothing and loads a file of every coder without importing numba: the
    C decoders are the whole load path (numba's import and set-up cost a first `load` 0.6 s)."""
    import deepcompress as dc

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.Linear(300, 10))
    dc.prune_(net, sparsity=0.8)
    dc.quantize_(net, bits=5)
    paths = []
    for entropy in ("huffman", "rans", "cabac"):
        paths.append(tmp_path / f"{entropy}.dcz")
        dc.save(net, paths[-1], entropy=entropy)
    want = {k: v.clone() for k, v in dc.load(paths[0]).items()}
    script = textwrap.dedent(
        f"""
        import sys, torch
        import deepcompress as dc
        for p in {[str(p) for p in paths]!r}:
            state = dc.load(p)
            torch.save(state, p + ".pt")
        print("numba" in sys.modules)
        """
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "DEEPCOMPRESS_SIMD"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False"]
    for p in paths:
        got = torch.load(str(p) + ".pt", weights_only=True)
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), (p, k)


@pytest.mark.parametrize("entropy", ["huffman", "rans", "cabac"])
def test_whole_files_and_damaged_sections(entropy, monkeypatch):
    """`load_bytes` of a file (shared, sparse and raw tensors) and of 300 mutations of its data
    sections with their checksums recomputed, so that the damage reaches the decoders and the
    shared codec's scatter: the same tensors or the same error, C and numba."""
    import deepcompress as dc
    from deepcompress import testing

    def load(buf):
        return dc.load_bytes(buf)

    buf = testing.sample_file(entropy)
    rng = np.random.default_rng(7)
    for i in range(301):
        bad = buf if i == 0 else testing.mutate_section(buf, int(rng.integers(1 << 30)), i % 255)
        got = [outcome(monkeypatch, numba, load, bad) for numba in (False, True)]
        if isinstance(got[1], str):
            assert got[0] == got[1]
        else:
            assert got[0].keys() == got[1].keys()
            for k in got[1]:
                assert torch.equal(got[0][k], got[1][k]), k


@pytest.mark.parametrize("index_bits", [2, 8])
@pytest.mark.parametrize("kept", [0.0, 0.03, 0.5, 1.0])
def test_scatter_of_shared_tensors(kept, index_bits, monkeypatch, tmp_path):
    """A weight-shared tensor at every density (fillers where index_bits is narrow, none kept,
    all kept) decodes to the same tensor through the C scatter as through torch's index_put,
    and that tensor is the one quantized in memory."""
    import deepcompress as dc

    torch.manual_seed(int(kept * 100) + index_bits)
    net = torch.nn.Linear(301, 97)
    if kept < 1.0:
        dc.prune_(net, sparsity=1.0 - kept)
    dc.quantize_(net, bits=4)
    want = net.weight.detach().clone()
    path = tmp_path / "net.dcz"
    dc.save(net, path, index_bits=index_bits)
    got = [outcome(monkeypatch, numba, dc.load, path) for numba in (False, True)]
    for state in got:
        assert torch.equal(state["weight"], want)
