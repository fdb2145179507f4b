"""Running from the compressed form: the same outputs as the decoded dense model."""

import pytest
import torch
from torch import nn

import deepcompress as dc
from deepcompress import simd
from deepcompress.models import LeNet5, LeNet300100
from deepcompress.runtime import (
    CompressedConv2d,
    CompressedLinear,
    CompressedMatrix,
    autotune_,
)


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


@pytest.mark.skipif(not simd.available(), reason="no AVX-512 kernels on this machine")
@pytest.mark.parametrize("layout", ["index", "bitmap"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 63), (9, 64), (40, 1000), (3, 70000)])
@pytest.mark.parametrize("kept", [0.01, 0.3, 0.9])
def test_avx512_kernels_match_the_reference_loops(layout, shape, kept):
    """The AVX-512 kernels against the plain numba loops over the same layout, on odd sizes:
    rows shorter than a vector, ragged 64-column blocks, int32 columns past 65,536 inputs."""
    w = shared_weight(*shape, kept, bits=5, seed=shape[1])
    m = CompressedMatrix.from_dense(w, layout)
    for batch in (1, 3, 16, 33):
        x = torch.randn(batch, shape[1])
        fast, slow = m.matmul_t(x), m.matmul_t(x, use_simd=False)
        assert rel_err(fast, slow) < 1e-5 if slow.abs().max() > 0 else torch.equal(fast, slow)


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
    plans = autotune_(comp, torch.randn(2, 1, 28, 28), batch_sizes=(1, 64), repeats=1)
    assert all(set(p.values()) <= {"compressed", "dense"} for p in plans.values())
    x = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        assert rel_err(comp(x), dense(x)) < 1e-5  # whatever the plan chose


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


def test_damaged_sections_give_format_error_in_the_compressed_runtime(tmp_path):
    from deepcompress.testing import mutate_section

    good = lenet_file(tmp_path, LeNet300100).read_bytes()
    bad = tmp_path / "bad.dcz"
    errors = 0
    for pos in range(0, 20000, 397):  # data bytes changed behind valid checksums
        bad.write_bytes(mutate_section(good, pos, 0xA5))
        try:
            dc.load(bad, model=LeNet300100(), runtime="compressed")
        except dc.FormatError as e:
            assert "tensor '" in str(e)
            errors += 1
    assert errors > 0  # some damage is caught by the stream checks, none crashes
