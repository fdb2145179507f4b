"""The transient memory of decoding a `shared` tensor (issue: int64 temporaries, 5x the output).

`codec.decode_shared` decodes the cluster symbols as int32 into the output's own memory and
makes it dense there (`sparse_index.expand`), so that besides the float32 output and the
compressed bytes it holds only the uint16 gap stream. Measured two ways: tracemalloc, which
sees numpy's arrays (the decoders' temporaries) but not torch's (the output), for every coder,
dense and pruned, on the C path and on the numba/numpy fallback; and, on Linux, the peak
resident memory of a fresh process (everything, the output included). Both paths are checked
against a slow reference: positions by cumsum, values by the codebook.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from deepcompress.coding import _native, codec

SHAPE = (512, 1024)
CODEBOOK = torch.linspace(-1.0, 1.0, 256)  # 8 bits: 257 symbols with the filler


@functools.cache
def shared(sparsity: float, coder: str, index_bits=None, shape=SHAPE, seed=0):
    """An 8-bit shared tensor's `(params, parts)` and its dense reference (slow path)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    idx = np.clip(np.rint(rng.standard_normal(n) * 40 + 128), 1, 256).astype(np.int64)
    idx[rng.random(n) < sparsity] = 0
    params, parts = codec.encode_shared(
        torch.from_numpy(idx).reshape(shape), CODEBOOK, index_bits, coder
    )
    assert params.get("weight_coder", "huffman") == coder
    table = np.concatenate([[0.0], CODEBOOK.numpy()]).astype(np.float32)
    return params, parts, torch.from_numpy(table[idx]).reshape(shape)


def reference(params, parts, shape) -> torch.Tensor:
    """The slow reference decoder: int64 positions by cumsum, values by fancy indexing."""
    positions, symbols, values = codec.shared_entries(params, parts, int(np.prod(shape)))
    out = np.zeros(int(np.prod(shape)), np.float32)
    out[positions] = np.concatenate([[0.0], values]).astype(np.float32)[symbols]
    return torch.from_numpy(out).reshape(shape)


def transient_peak(params, parts, shape) -> tuple[int, torch.Tensor]:
    """tracemalloc's peak (numpy's allocations, not the torch output) over one decode."""
    tracemalloc.start()
    try:
        out = codec.decode_shared(params, parts, torch.float32, shape)
        return tracemalloc.get_traced_memory()[1], out
    finally:
        tracemalloc.stop()


@pytest.fixture(params=[False, True], ids=["C", "fallback"])
def path(request, monkeypatch):
    if request.param:
        monkeypatch.setenv("DEEPCOMPRESS_SIMD", "0")
    elif _native._load() is None:
        pytest.skip("the C decoders were not built")
    return request.param


@pytest.mark.parametrize("sparsity", [0.0, 0.6])
@pytest.mark.parametrize("coder", ["huffman", "rans", "cabac"])
def test_decoding_holds_no_temporary_as_large_as_the_output(coder, sparsity, path):
    params, parts, want = shared(sparsity, coder)
    out_bytes = 4 * want.numel()
    compressed = sum(len(p) for p in parts)
    codec.decode_shared(params, parts, torch.float32, SHAPE)  # numba compiles outside the count
    peak, got = transient_peak(params, parts, SHAPE)
    assert torch.equal(got, want)
    # was 16 bytes an entry (int64 gaps and symbols): 4x the output when unpruned; now the
    # uint16 gaps (0.5x) and the tables
    assert peak <= out_bytes + compressed, (
        f"{coder}, sparsity {sparsity}: {peak / want.numel():.2f} B/element of temporaries"
    )


@pytest.mark.parametrize("coder", ["huffman", "rans", "cabac"])
def test_in_place_decode_matches_the_reference(coder, path):
    """Fillers (narrow gaps), a run of zeros at either end, sizes off the fallback's slices,
    an empty tensor, and all-pruned: bit for bit the slow reference."""
    cases = [(0.0, 1, (3, 5)), (0.97, 2, (70_001,)), (0.5, None, (300, 437)), (1.0, 3, (9, 9))]
    for sparsity, ib, shape in cases:
        params, parts, want = shared(sparsity, coder, ib, shape, seed=len(shape))
        got = codec.decode_shared(params, parts, torch.float32, shape)
        assert torch.equal(got, want) and torch.equal(reference(params, parts, shape), want)
    idx = torch.zeros(50, dtype=torch.int64)
    idx[[0, 49]] = torch.tensor([3, 4])  # entries at both ends, a long run between
    params, parts = codec.encode_shared(idx, CODEBOOK, 2, coder)
    got = codec.decode_shared(params, parts, torch.float16, (5, 10))
    assert got.dtype == torch.float16 and got.flatten().nonzero().flatten().tolist() == [0, 49]
    params, parts = codec.encode_shared(torch.zeros(0, dtype=torch.int64), CODEBOOK, 2, coder)
    assert codec.decode_shared(params, parts, torch.float32, (0, 4)).shape == (0, 4)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")
def test_peak_resident_memory_of_a_decode(tmp_path):
    """The whole peak in a fresh process (VmHWM, reset before the decode): at most twice the
    float32 output plus the compressed bytes (was about 5x the output)."""
    params, parts, want = shared(0.0, "huffman")
    small = shared(0.0, "huffman", shape=(3, 5))[:2]  # a first decode loads the decoders
    torch.save({"big": (params, parts), "small": small}, tmp_path / "sections.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from deepcompress.coding import codec
        sections = torch.load({str(tmp_path / "sections.pt")!r}, weights_only=False)
        codec.decode_shared(*sections["small"], torch.float32, (3, 5))
        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        before = status("VmRSS")
        out = codec.decode_shared(*sections["big"], torch.float32, {SHAPE})
        print(status("VmHWM") - before)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    peak = int(run.stdout.split()[-1])
    compressed = sum(len(p) for p in parts)
    assert peak <= 2 * 4 * want.numel() + compressed, f"{peak / want.numel():.2f} B/element"
