"""Running from the compressed form: the same outputs as the decoded dense model."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import deepcompress as dc
from deepcompress.pipeline.models import LeNet5, LeNet300100
from deepcompress.runtime import (
    CompressedConv2d,
    CompressedLinear,
    autotune_,
    layouts,
    modules,
    simd,
)
from deepcompress.runtime.layouts import CompressedMatrix


def rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def shared_weight(rows, cols, kept, bits=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(2**bits, generator=g)[torch.randint(0, 2**bits, (rows, cols), generator=g)]
    w[torch.rand(rows, cols, generator=g) >= kept] = 0
    return w


@pytest.mark.parametrize("layout", ["entries", "index", "bitmap"])
@pytest.mark.parametrize("kept", [0.0, 0.001, 0.04, 0.25, 1.0])
@pytest.mark.parametrize("bits", [1, 4, 5, 8])  # the kernels' table look-ups: k <= 16, <= 32, more
def test_matrix_round_trip_and_product(layout, kept, bits):
    w = shared_weight(37, 3001, kept, bits)
    m = CompressedMatrix.from_dense(w, layout)
    assert m.layout == layout
    assert torch.equal(m.dense(), w)  # the layout holds exactly the weight
    for batch in (1, 2, 8, 17, 64):
        x = torch.randn(batch, 3001)
        y = m.matmul_t(x)
        if kept:
            assert rel_err(y, x.double() @ w.double().T) < 1e-5
        else:
            assert torch.equal(y, torch.zeros(batch, 37))


def need_level(level):
    if level not in simd.supported():
        pytest.skip(f"level {level!r} needs {simd.NEEDS[level]}: not this machine")


@pytest.mark.parametrize("level", simd.LEVELS)
@pytest.mark.parametrize("layout", ["index", "bitmap"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 63), (9, 64), (40, 1000), (3, 70000)])
@pytest.mark.parametrize("kept", [0.01, 0.3, 0.9])
@pytest.mark.parametrize("bits", [3, 5, 8])  # look-ups: k <= 8 and 32, a gather (C check: all)
def test_every_simd_level_matches_the_reference_loops(level, layout, shape, kept, bits):
    """Each C level's kernels against the plain numba loops over the same layout, on odd sizes:
    rows shorter than a vector, ragged 64-column blocks, int32 columns past 65,536 inputs,
    batches that fill no whole register."""
    need_level(level)
    w = shared_weight(*shape, kept, bits=bits, seed=shape[1])
    m = CompressedMatrix.from_dense(w, layout)
    g = torch.Generator().manual_seed(shape[0] * shape[1])  # inputs fixed: not order-dependent
    for batch in (1, 3, 8, 33):
        x = torch.randn(batch, shape[1], generator=g)
        fast, slow = m.matmul_t(x, level=level), m.matmul_t(x, use_simd=False)
        assert rel_err(fast, slow) < 1e-5 if slow.abs().max() > 0 else torch.equal(fast, slow)


def test_simd_level_from_the_environment(monkeypatch):
    here = simd.supported()
    monkeypatch.delenv("DEEPCOMPRESS_SIMD", raising=False)
    assert simd.level() == (here[0] if here else None)
    for value in ("auto", "1", ""):
        monkeypatch.setenv("DEEPCOMPRESS_SIMD", value)
        assert simd.level() == (here[0] if here else None)
    monkeypatch.setenv("DEEPCOMPRESS_SIMD", "0")
    assert simd.level() is None and not simd.available()
    for name in simd.LEVELS:
        monkeypatch.setenv("DEEPCOMPRESS_SIMD", name.upper())
        if name in here:
            assert simd.level() == name
            m = CompressedMatrix.from_dense(shared_weight(20, 300, 0.1))
            assert m.level == name and m.layout == "index"
        else:
            with pytest.raises(ValueError, match=f"DEEPCOMPRESS_SIMD={name}: that level needs"):
                simd.level()
    monkeypatch.setenv("DEEPCOMPRESS_SIMD", "sse9")
    with pytest.raises(ValueError, match="expected one of avx512, avx2, neon, portable"):
        simd.level()


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on this machine")
def test_c_kernels_against_the_c_reference():
    """tools/check_kernels.c: every level this CPU runs, straight from C, against a
    double-precision product of the dense matrix (the aarch64 half runs where qemu is)."""
    root = Path(__file__).resolve().parents[1]
    r = root / "src/deepcompress/runtime"
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "check"
        sources = [root / "tools/check_kernels.c", r / "_simd.c", *sorted(r.glob("kernels_*.c"))]
        cmd = ["cc", "-O2", "-DDC_STANDALONE", f"-I{r}", *map(str, sources), "-o", str(exe), "-lm"]
        subprocess.run(cmd, check=True, capture_output=True)
        out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all agree with the reference" in out.stdout
    for name in simd.supported():
        assert f"{name:<8} " in out.stdout and "products checked" in out.stdout


def test_layout_choice_and_fallback(monkeypatch):
    w = shared_weight(100, 640, 0.04)
    monkeypatch.setenv("DEEPCOMPRESS_SIMD", "0")
    assert not simd.available()
    assert CompressedMatrix.from_dense(w).layout == "entries"
    m = CompressedMatrix.from_dense(w, "index")  # a forced layout runs its numba loop
    x = torch.randn(3, 640)
    assert rel_err(m.matmul_t(x), x @ w.T) < 1e-5
    monkeypatch.delenv("DEEPCOMPRESS_SIMD")
    if simd.available():
        assert CompressedMatrix.from_dense(w).layout == "index"
        assert CompressedMatrix.from_dense(shared_weight(100, 640, 0.25)).layout == "bitmap"
    with pytest.raises(ValueError, match="layout"):
        CompressedMatrix.from_dense(w, "csr")
    wide = torch.arange(1, 301, dtype=torch.float32).reshape(3, 100)  # 300 shared values
    with pytest.raises(ValueError, match="256"):
        CompressedMatrix.from_dense(wide, "bitmap")
    assert CompressedMatrix.from_dense(wide).layout == "entries"


@pytest.mark.parametrize("kept", [0.04, 0.09, 0.25])
@pytest.mark.parametrize("layout", ["auto", "entries"])
def test_resident_memory_of_fc_layers(kept, layout):
    w = shared_weight(1000, 4096, kept)
    assert CompressedMatrix.from_dense(w, layout).nbytes <= 0.10 * 4 * w.numel()


def lenet_file(tmp_path, cls, seed=0):
    torch.manual_seed(seed)
    net = cls()
    sparsity = (
        {"ip1": 0.92, "ip2": 0.91, "ip3": 0.74}
        if cls is LeNet300100
        else {"conv1": 0.34, "conv2": 0.88, "ip1": 0.92, "ip2": 0.81}
    )
    dc.prune_(net, sparsity=sparsity)
    dc.quantize_(net, bits={"conv": 8, "linear": 5})
    path = tmp_path / "net.dcz"
    dc.save(net, path)
    return path


@pytest.mark.parametrize("cls", [LeNet300100, LeNet5])
def test_lenet_files_run_compressed(tmp_path, cls):
    path = lenet_file(tmp_path, cls)
    dense = dc.load(path, model=cls()).eval()
    comp = dc.load(path, model=cls(), runtime="compressed").eval()
    kinds = {type(m) for m in comp.modules()}
    assert CompressedLinear in kinds
    assert (CompressedConv2d in kinds) == (cls is LeNet5)
    assert not any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in comp.modules())
    for batch in (1, 2, 8, 64):
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            assert rel_err(comp(x), dense(x)) < 1e-5


@pytest.mark.parametrize("slow", ["compressed", "dense"])
def test_autotune_picks_the_faster_mode_and_keeps_the_outputs(tmp_path, monkeypatch, slow):
    """One mode made clearly slower: autotune's clock is one that only the layers' work
    advances, by 50 ms a call of the slow mode's step (the compressed kernel, `matmul_t`, or
    the dense path's weight rebuild, `dense`) and 1 ms a call of the other's, so the choice
    cannot depend on how busy the machine is. Autotune must plan the fast mode for every
    layer and batch size, the layers must then run it, and the outputs must not change."""
    path = lenet_file(tmp_path, LeNet5)
    dense = dc.load(path, model=LeNet5()).eval()
    comp = dc.load(path, model=LeNet5(), runtime="compressed").eval()
    layers = {
        n: m for n, m in comp.named_modules() if isinstance(m, (CompressedLinear, CompressedConv2d))
    }
    assert set(layers) == {"conv1", "conv2", "ip1", "ip2"}
    xs = {bs: torch.randn(bs, 1, 28, 28) for bs in (1, 64)}
    with torch.no_grad():
        before = {bs: comp(x) for bs, x in xs.items()}  # the default plan: compressed

    calls = {"compressed": 0, "dense": 0}
    clock = [0.0]
    monkeypatch.setattr(modules, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def timed(fn, mode):
        def wrapper(self, *args, **kwargs):
            calls[mode] += 1
            clock[0] += 0.05 if mode == slow else 0.001
            return fn(self, *args, **kwargs)

        return wrapper

    for kind in {type(m.weight_c) for m in layers.values()} | {
        layouts.IndexMatrix,  # the layouts autotune_ converts to take the same time
        layouts.BitmapMatrix,
    }:
        monkeypatch.setattr(kind, "matmul_t", timed(kind.matmul_t, "compressed"))
        monkeypatch.setattr(kind, "dense", timed(kind.dense, "dense"))
    plans = autotune_(comp, torch.randn(2, 1, 28, 28), batch_sizes=(1, 64), repeats=2)
    fast = "dense" if slow == "compressed" else "compressed"
    assert plans == {name: {1: fast, 64: fast} for name in layers}
    assert all(m.plan == plans[name] for name, m in layers.items())
    assert calls["compressed"] > 0 and calls["dense"] > 0  # both modes were timed

    for bs, x in xs.items():
        calls.update(compressed=0, dense=0)
        with torch.no_grad():
            y = comp(x)
            assert calls == {slow: 0, fast: len(layers)}  # each layer ran the planned mode
            assert rel_err(y, dense(x)) < 1e-5
        if fast == "compressed":
            assert torch.equal(y, before[bs])  # the default plan, the same kernels
        else:
            assert rel_err(y, before[bs]) < 1e-5


@pytest.mark.skipif(not simd.available(), reason="needs the C kernels")
@pytest.mark.parametrize("fast_threads", ["one", "all"])
def test_autotune_chooses_the_faster_thread_count(tmp_path, monkeypatch, request, fast_threads):
    """The same clock trick on the thread count the C kernels are called with (one, or torch's
    count, set to 2 here): autotune must keep the faster count per layer and batch size, and
    the layers must run with it."""
    path = lenet_file(tmp_path, LeNet300100)
    comp = dc.load(path, model=LeNet300100(), runtime="compressed").eval()
    old = torch.get_num_threads()
    request.addfinalizer(lambda: torch.set_num_threads(old))
    torch.set_num_threads(2)
    n = torch.get_num_threads()
    want = 1 if fast_threads == "one" else n
    clock, seen = [0.0], []
    monkeypatch.setattr(modules, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    real_run = simd.run

    def run(*args):
        seen.append(args[-1])
        clock[0] += 0.001 if args[-1] == want else 0.05
        return real_run(*args)

    monkeypatch.setattr(simd, "run", run)
    for kind in (layouts.IndexMatrix, layouts.BitmapMatrix):  # dense: slowest of all

        def slow_dense(self, real=kind.dense):
            clock[0] += 1.0
            return real(self)

        monkeypatch.setattr(kind, "dense", slow_dense)
    autotune_(comp, torch.randn(2, 1, 28, 28), batch_sizes=(1, 8), repeats=2)
    layers = [m for m in comp.modules() if isinstance(m, CompressedLinear)]
    assert all(m.plan == {1: "compressed", 8: "compressed"} for m in layers)
    assert all(m.weight_c.threads == {1: want, 8: want} for m in layers)
    assert {1, n} <= set(seen)  # both counts were timed
    seen.clear()
    with torch.no_grad():
        comp(torch.randn(8, 1, 28, 28))
    assert seen == [want] * len(layers)


@pytest.mark.skipif(not simd.available(), reason="needs the C kernels")
@pytest.mark.parametrize("fast", ["index", "bitmap"])
def test_autotune_keeps_each_weight_in_the_faster_layout(tmp_path, monkeypatch, fast):
    """The same clock trick on the layouts: one layout's kernel made 50x slower than the
    other's, the dense path slower still. Whatever layout load chose, autotune must leave every
    weight in the fast one, run it, and the outputs must stay those of the dense model."""
    path = lenet_file(tmp_path, LeNet5)
    dense = dc.load(path, model=LeNet5()).eval()
    comp = dc.load(path, model=LeNet5(), runtime="compressed").eval()
    clock = [0.0]
    monkeypatch.setattr(modules, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    for kind in (layouts.IndexMatrix, layouts.BitmapMatrix):

        def matmul_t(self, *args, real=kind.matmul_t, **kwargs):
            clock[0] += 0.001 if self.layout == fast else 0.05
            return real(self, *args, **kwargs)

        def slow_dense(self, real=kind.dense):
            clock[0] += 1.0
            return real(self)

        monkeypatch.setattr(kind, "matmul_t", matmul_t)
        monkeypatch.setattr(kind, "dense", slow_dense)
    plans = autotune_(comp, torch.randn(2, 1, 28, 28), batch_sizes=(1, 8), repeats=2)
    layers = [m for m in comp.modules() if isinstance(m, (CompressedLinear, CompressedConv2d))]
    assert len(layers) == 4 and all(p == {1: "compressed", 8: "compressed"} for p in plans.values())
    assert {m.weight_c.layout for m in layers} == {fast}
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert rel_err(comp(x), dense(x)) < 1e-5
    kept = {id(m.weight_c) for m in layers}
    autotune_(comp, torch.randn(2, 1, 28, 28), batch_sizes=(1,), repeats=1, layouts=())
    assert {id(m.weight_c) for m in layers} == kept  # layouts=(): the loaded layout stays


@pytest.mark.parametrize("kept", [0.0, 0.03, 0.3, 1.0])
def test_to_layout_keeps_the_matrix(kept):
    """Converting between "index" and "bitmap" (and to "entries") keeps every weight: the
    same dense matrix and the same products, at kept fractions from none to all, on a shape
    whose columns are not a whole number of 64-bit words."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(37, 150, generator=g).round(decimals=1)
    w[torch.rand(37, 150, generator=g) >= kept] = 0
    x = torch.randn(5, 150, generator=g)
    for start in ("index", "bitmap"):
        m = CompressedMatrix.from_dense(w, start)
        for target in ("index", "bitmap", "entries"):
            t = m.to_layout(target)
            assert t.layout == target and t.shape == m.shape
            assert torch.equal(t.dense(), w)
            assert torch.allclose(t.matmul_t(x), x @ w.T, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(stride=2), dict(padding=2), dict(dilation=2, padding=1), dict(bias=False)],
)
def test_conv_variants(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, **kwargs)
    dc.prune_(conv, sparsity=0.5)
    dc.quantize_(conv, bits=4)
    dc.strip_(conv)
    wc = CompressedMatrix.from_dense(conv.weight.reshape(6, -1))
    comp = CompressedConv2d(conv, wc, conv.bias)
    x = torch.randn(2, 3, 11, 9)
    with torch.no_grad():
        assert rel_err(comp(x), conv(x)) < 1e-5


def test_linear_keeps_leading_dims():
    lin = nn.Linear(20, 7)
    with torch.no_grad():
        lin.weight[lin.weight.abs() < 0.1] = 0
    comp = CompressedLinear(CompressedMatrix.from_dense(lin.weight), lin.bias)
    x = torch.randn(2, 3, 20)
    with torch.no_grad():
        assert rel_err(comp(x), lin(x)) < 1e-5 and comp(x).shape == (2, 3, 7)


def test_bad_runtime_arguments(tmp_path):
    path = lenet_file(tmp_path, LeNet300100)
    with pytest.raises(ValueError, match="runtime"):
        dc.load(path, model=LeNet300100(), runtime="fast")
    with pytest.raises(ValueError, match="needs a model"):
        dc.load(path, runtime="compressed")


@pytest.mark.parametrize("cls", [LeNet300100, LeNet5])
def test_compressed_runtime_agrees_with_the_dense_decoder_on_damaged_files(tmp_path, cls):
    """Data bytes changed behind valid checksums (48 spread over the data, and the first byte
    of every stream of every tensor: codebooks, code tables, payloads, biases): on each, the
    compressed runtime raises the FormatError the dense decoder raises, or holds exactly the
    weights the dense decoder gives for the same bytes. Never anything else."""
    from deepcompress.testing import mutate_section, split

    good = lenet_file(tmp_path, cls).read_bytes()
    header, data = split(good)
    where = set(np.linspace(0, len(data) - 1, 48).astype(int).tolist())
    for e in header["tensors"]:
        where |= set((e["offset"] + np.cumsum([0, *e["parts"][:-1]])).tolist())
    where = sorted(p for p in where if p < len(data))
    assert len(where) >= 50
    bad = tmp_path / "bad.dcz"
    x = torch.randn(4, 1, 28, 28)
    outcomes = {"decoded": 0, "FormatError": 0}
    for pos in where:
        buf = mutate_section(good, pos, 0xA5)
        bad.write_bytes(buf)
        try:
            want = dc.load_bytes(buf)
        except dc.FormatError as e:
            with pytest.raises(dc.FormatError) as got:
                dc.load(bad, model=cls(), runtime="compressed")
            assert str(got.value) == str(e) and "tensor '" in str(e), pos
            outcomes["FormatError"] += 1
            continue
        comp = dc.load(bad, model=cls(), runtime="compressed").eval()  # must not raise
        seen = set()
        for name, m in comp.named_modules():
            if isinstance(m, (CompressedLinear, CompressedConv2d)):
                w = want[f"{name}.weight"]
                assert torch.equal(m.weight_c.dense(), w.reshape(m.weight_c.shape)), (pos, name)
                seen.add(f"{name}.weight")
        assert len(seen) == (3 if cls is LeNet300100 else 4), pos
        state = comp.state_dict()  # the biases and anything the runtime did not take over
        assert set(state) | seen == set(want), pos
        assert all(torch.equal(v, want[k]) for k, v in state.items()), pos
        ref = dc.load(bad, model=cls()).eval()
        with torch.no_grad():
            y, y_ref = comp(x), ref(x)
        if torch.isfinite(y_ref).all():
            assert rel_err(y, y_ref) < 1e-5, pos
        outcomes["decoded"] += 1
    # the damage reaches both the stream checks and values no check can tell from good ones
    assert outcomes["FormatError"] > 0 and outcomes["decoded"] > 0, outcomes


K40 = np.linspace(-1, 1, 40, dtype=np.float32)  # k > 32: the AVX-512 kernels gather from it
BAD_MATRICES = {
    "position past the end": ((4, 5), [0, 20], [1, 2], K40, r"positions must lie in \[0, 20\)"),
    "negative position": ((4, 5), [-1, 3], [1, 2], K40, r"positions must lie in \[0, 20\).*-1"),
    "descending positions": ((4, 5), [7, 3], [1, 2], K40, "ascending and distinct"),
    "duplicate positions": ((4, 5), [3, 3], [1, 2], K40, "ascending and distinct"),
    "symbol past the codebook": ((4, 5), [0, 3], [1, 41], K40, r"symbols must lie in \[0, 40\]"),
    "symbol far past it": ((4, 5), [0, 3], [300, 1], K40[:33], r"\[0, 33\].*300"),
    "negative symbol": ((4, 5), [0, 3], [1, -1], K40, r"symbols must lie in \[0, 40\].*-1"),
    "symbol with an empty codebook": ((4, 5), [0], [1], [], r"symbols must lie in \[0, 0\]"),
    "lengths differ": ((4, 5), [0, 3, 4], [1, 2], K40, "3 positions but 2 symbols"),
    "float positions": ((4, 5), [0.0, 3.5], [1, 2], K40, "positions must be integers"),
    "float symbols": ((4, 5), [0, 3], [1.0, 2.0], K40, "symbols must be integers"),
    "2-D positions": ((4, 5), [[0, 3]], [1, 2], K40, "positions must be a 1-D array"),
    "huge uint64 position": ((4, 5), np.array([2**63], np.uint64), [1], K40, r"2\*\*63"),
    "negative shape": ((4, -5), [], [], K40, "shape must be two non-negative ints"),
    "three dims": ((4, 5, 1), [0], [1], K40, "shape must be two non-negative ints"),
    "one dim": ((20,), [0], [1], K40, "shape must be two non-negative ints"),
    "float dim": ((4.0, 5), [0], [1], K40, "shape must be two non-negative ints"),
    "bool dim": ((True, 5), [0], [1], K40, "shape must be two non-negative ints"),
    "shape not a sequence": (20, [0], [1], K40, "shape must be two non-negative ints"),
    "NaN in the codebook": ((4, 5), [0, 3], [1, 2], [0.5, np.nan], "finite"),
    "inf in the codebook": ((4, 5), [0, 3], [1, 2], [np.inf, 0.5], "finite"),
    "overflows float32": ((4, 5), [0, 3], [1, 2], [1e39, 0.5], "finite"),
    "2-D codebook": ((4, 5), [0, 3], [1, 2], [[0.5, 1.0]], "codebook must be a 1-D array"),
    "too many shared values": ((4, 5), [0], [1], np.ones(65537, np.float32), "65536"),
}


@pytest.mark.parametrize("layout", ["auto", "entries", "index", "bitmap"])
@pytest.mark.parametrize("case", list(BAD_MATRICES))
def test_from_positions_refuses_bad_input_before_any_kernel(monkeypatch, case, layout):
    def reached(*args, **kwargs):
        raise AssertionError("an unchecked input reached a layout's build or a kernel")

    for kind in (layouts.EntryMatrix, layouts.IndexMatrix, layouts.BitmapMatrix):
        monkeypatch.setattr(kind, "build", classmethod(reached))
    for kernel in ("_entries_mm", "_entries_dense", "_index_mm_ref", "_bitmap_mm_ref"):
        monkeypatch.setattr(layouts, kernel, reached)
    monkeypatch.setattr(simd, "run", reached)
    shape, positions, symbols, codebook, message = BAD_MATRICES[case]
    with pytest.raises(ValueError, match=message):
        CompressedMatrix.from_positions(shape, positions, symbols, codebook, layout)


@pytest.mark.parametrize("layout", ["entries", "index", "bitmap"])
def test_from_positions_takes_good_input_at_the_limits(layout):
    # fillers (symbol 0) dropped, the first and last element, every symbol 1..k of k = 40
    positions = np.array([0, 1, 5, 6, 7, *range(8, 48), 59], dtype=np.int32)
    symbols = np.array([0, 40, 0, 1, 0, *range(1, 41), 2], dtype=np.uint8)
    m = CompressedMatrix.from_positions((4, 15), positions, symbols, K40, layout)
    want = torch.zeros(60)
    real = symbols > 0
    want[torch.from_numpy(positions[real].astype(np.int64))] = torch.from_numpy(
        K40[symbols[real].astype(np.int64) - 1]
    )
    want = want.reshape(4, 15)
    assert m.layout == layout and torch.equal(m.dense(), want)
    x = torch.randn(3, 15)
    assert rel_err(m.matmul_t(x), x.double() @ want.double().T) < 1e-5
    # torch.Size and numpy ints as the shape, lists as the arrays, an integer codebook
    m = CompressedMatrix.from_positions(torch.Size([2, np.int64(3)]), [0, 5], [1, 2], [3, -1])
    assert torch.equal(m.dense(), torch.tensor([[3.0, 0, 0], [0, 0, -1.0]]))
    for shape in ((3, 0), (0, 5), (0, 0)):  # nothing kept, nowhere to keep it
        m = CompressedMatrix.from_positions(shape, [], [], [], layout)
        assert torch.equal(m.matmul_t(torch.randn(2, shape[1])), torch.zeros(2, shape[0]))
        assert torch.equal(m.dense(), torch.zeros(shape))


def test_from_dense_goes_through_the_checks():
    w = shared_weight(6, 10, 0.5)
    w[2, 3] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        CompressedMatrix.from_dense(w)
    w[2, 3] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        CompressedMatrix.from_dense(w)
    with pytest.raises(ValueError, match="shape must be two"):
        CompressedMatrix.from_dense(shared_weight(6, 10, 0.5).reshape(2, 3, 10))


def test_from_positions_checks_cost_little():
    """The checks are vectorised: on 1.7M kept weights they take a small part of the whole
    build (about 5 of 65 ms here; the best of three runs each, against a busy machine)."""
    rng = np.random.default_rng(0)
    positions = np.flatnonzero(rng.random(4096 * 4096) < 0.1)
    symbols = rng.integers(1, 33, len(positions))
    codebook = rng.standard_normal(32).astype(np.float32)

    def best_of_3(fn):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    shape = (4096, 4096)
    checks = best_of_3(lambda: layouts._checked(shape, positions, symbols, codebook))
    whole = best_of_3(
        lambda: CompressedMatrix.from_positions(shape, positions, symbols, codebook, "entries")
    )
    assert checks < 0.5 * whole, (checks, whole)


@pytest.mark.parametrize("layout", ["entries", "index", "bitmap"])
def test_products_near_the_float32_limit_are_formed_in_float64(layout):
    """Every numba kernel forms each product in float64, as it sums: a weight near float32's
    limit times an x above 1 must not overflow on its way into a finite sum (the batch-1
    "entries" loop once multiplied in float32, giving inf - inf = nan here)."""
    m = CompressedMatrix.from_positions((1, 2), [0, 1], [1, 2], [3e38, -3e38], layout)
    for batch in (1, 3):
        x = torch.tensor([[1.5, 1.4]]).repeat(batch, 1)
        y = m.matmul_t(x) if layout == "entries" else m.matmul_t(x, use_simd=False)
        want = x.double() @ torch.tensor([[3e38, -3e38]], dtype=torch.float64).T
        assert torch.isfinite(y).all() and rel_err(y.double(), want) < 1e-6, y


def test_warmup_leaves_nothing_to_compile_for_a_new_process(tmp_path):
    """`deepcompress warmup` into an empty numba cache; a new process then loads and runs a
    LeNet-5 file (every coder chosen by size, the compressed runtime) compiling nothing: numba
    reports no kernel saved to the cache."""
    path = lenet_file(tmp_path, LeNet5)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_DEBUG_CACHE": "1"}
    warm = subprocess.run(
        [sys.executable, "-c", "from deepcompress.cli import main; main(['warmup'])"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert warm.returncode == 0 and "kernels ready in" in warm.stdout, warm.stderr[-2000:]
    assert "data saved" in warm.stdout + warm.stderr  # it did fill the empty cache
    code = (
        "import sys, torch, deepcompress as dc\n"
        "from deepcompress.pipeline.models import LeNet5\n"
        "dc.load(sys.argv[1])\n"
        "net = dc.load(sys.argv[1], model=LeNet5(), runtime='compressed').eval()\n"
        "with torch.no_grad():\n"
        "    net(torch.randn(1, 1, 28, 28)), net(torch.randn(8, 1, 28, 28))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "data saved" not in run.stdout + run.stderr, "compiled after warmup"
