"""The compressed runtime at its edges: empty batches and zero-size layers (no kernel may see
them), layers whose class or parent does more than call nn.Linear / nn.Conv2d's forward, and
the inputs nn.Conv2d and nn.Linear take besides a plain batch. Dense PyTorch is the reference."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepcompress as dc
from deepcompress.cli import main
from deepcompress.runtime import (
    CompressedConv2d,
    CompressedLinear,
    autotune_,
    bench_file,
    layouts,
    simd,
)
from deepcompress.runtime.layouts import CompressedMatrix

COMPRESSED = (CompressedLinear, CompressedConv2d)


@pytest.fixture
def kernels_refuse_empty(monkeypatch):
    """Every kernel (C at any level, and the numba loops) wrapped to fail the test, instead of
    corrupting the heap, when called with no inputs, no rows or no columns."""

    def guard(real, xt_at, out_at):
        def kernel(*args):
            xt, out = args[xt_at], args[out_at]
            assert xt.shape[0] and xt.shape[1] and out.size, "a kernel ran on an empty product"
            return real(*args)

        return kernel

    monkeypatch.setattr(simd, "_run", guard(simd._run, 8, 10))
    monkeypatch.setattr(layouts, "_entries_mm", guard(layouts._entries_mm, 5, 6))
    monkeypatch.setattr(layouts, "_index_mm_ref", guard(layouts._index_mm_ref, 4, 5))
    monkeypatch.setattr(layouts, "_bitmap_mm_ref", guard(layouts._bitmap_mm_ref, 4, 5))


def shared_weight(rows, cols, kept=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g).round(decimals=1)
    w[torch.rand(rows, cols, generator=g) >= kept] = 0
    return w


# every layout, and "index" / "bitmap" at every C level this CPU runs and in numba
PATHS = [("entries", None), ("index", "numba"), ("bitmap", "numba")] + [
    (layout, level) for layout in ("index", "bitmap") for level in simd.supported()
]


@pytest.mark.parametrize("layout,level", PATHS)
@pytest.mark.parametrize("shape", [(16, 72), (0, 72), (16, 0), (0, 0), (3, 130)])
def test_empty_products_are_zeros_without_a_kernel(kernels_refuse_empty, layout, level, shape):
    w = shared_weight(*shape)
    m = CompressedMatrix.from_dense(w, layout)
    for batch in (0, 1, 0, 3, 0, 1):  # the non-empty ones after empty ones: the heap is whole
        x = torch.randn(batch, shape[1])
        if level is None:
            y = m.matmul_t(x)
        else:
            y = m.matmul_t(x, use_simd=level != "numba", level=None if level == "numba" else level)
        assert y.shape == (batch, shape[0]) and y.dtype == torch.float32
        assert torch.allclose(y, x @ w.T, atol=1e-5)


@pytest.mark.parametrize("level", simd.supported() or ["none"])
def test_simd_run_returns_before_the_kernel_on_an_empty_product(kernels_refuse_empty, level):
    if level == "none":
        pytest.skip("no C kernels here")
    m = CompressedMatrix.from_dense(shared_weight(16, 72), "index")
    for xt, out in (
        (np.zeros((72, 0), np.float32), np.ones((16, 0), np.float32)),  # no inputs
        (np.zeros((0, 2), np.float32), np.ones((16, 2), np.float32)),  # no columns
    ):
        simd.run("index", m.pos, m.ptr, m.codes, m.table, xt, out, level)
        assert not out.any()


def test_matmul_refuses_inputs_of_the_wrong_width():
    """Fewer columns than the weight were read as zero-padded (a silently wrong product)."""
    w = shared_weight(7, 20, kept=0.5)
    lin = CompressedLinear(CompressedMatrix.from_dense(w, "bitmap"), None)
    with pytest.raises(RuntimeError):
        F.linear(torch.randn(3, 19), w)  # the dense layer refuses it too
    for x in (torch.randn(3, 19), torch.randn(1, 64), torch.randn(2, 21)):
        with pytest.raises(ValueError, match=r"x must be \(batch, 20\)"):
            lin(x)


def save(tmp_path, build, bits=5):
    m = build()
    dc.prune_(m, sparsity=0.5)
    dc.quantize_(m, bits=bits)
    path = tmp_path / "m.dcz"
    dc.save(m, path)
    return path


def both(path, build):
    """The file loaded dense and run compressed, each into a fresh `build()`, in eval mode."""
    dense = dc.load(path, model=build()).eval()
    return dense, dc.load(path, model=build(), runtime="compressed").eval()


def conv_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10), nn.ReLU(),
        nn.Linear(10, 5),
    )  # fmt: skip


def test_empty_batches_through_a_compressed_model(tmp_path, kernels_refuse_empty):
    path = save(tmp_path, conv_net)
    dense, comp = both(path, conv_net)
    assert sum(isinstance(m, COMPRESSED) for m in comp.modules()) == 3
    with torch.no_grad():
        for batch in (0, 0, 2, 0, 1):
            x = torch.randn(batch, 3, 8, 8)
            y, want = comp(x), dense(x)
            assert y.shape == want.shape == (batch, 5)
            assert torch.allclose(y, want, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs", [dict(), dict(stride=2, padding=1), dict(dilation=2, padding=2), dict(bias=False)]
)
def test_conv_takes_what_nn_conv2d_takes(kernels_refuse_empty, kwargs):
    """Unbatched (C, H, W) input and empty batches, as nn.Conv2d."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, **kwargs)
    with torch.no_grad():
        conv.weight[conv.weight.abs() < 0.1] = 0
    wc = CompressedMatrix.from_dense(conv.weight.detach().reshape(6, -1))
    comp = CompressedConv2d(conv, wc, conv.bias)
    with torch.no_grad():
        for x in (torch.randn(3, 11, 9), torch.randn(0, 3, 11, 9), torch.randn(2, 3, 11, 9)):
            y, want = comp(x), conv(x)
            assert y.shape == want.shape
            assert torch.allclose(y, want, atol=1e-5)
        for bad in (torch.randn(11, 9), torch.randn(1, 1, 3, 11, 9)):
            with pytest.raises(RuntimeError):
                conv(bad)
            with pytest.raises(RuntimeError):
                comp(bad)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("layout", ["entries", "index", "bitmap"])
@pytest.mark.parametrize("shape", [(8, 0), (0, 8), (0, 0)])
def test_zero_size_linear_layers(tmp_path, kernels_refuse_empty, layout, shape):
    """A Linear with no outputs gives (..., 0), one with no inputs its bias, as nn.Linear:
    built straight from a zero-size matrix, and loaded from a file."""
    torch.manual_seed(0)
    lin = nn.Linear(shape[1], shape[0])
    comp = CompressedLinear(CompressedMatrix.from_dense(lin.weight.detach(), layout), lin.bias)

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(shape[1], shape[0]))

    path = save(tmp_path, build)
    dense, loaded = both(path, build)
    with torch.no_grad():
        for lead in ((3,), (0,), (2, 0), (0, 4), ()):
            x = torch.randn(*lead, shape[1])
            for a, b in ((comp, lin), (loaded, dense)):
                y, want = a(x), b(x)
                assert y.shape == want.shape == (*lead, shape[0])
                assert torch.allclose(y, want)


class ScaledLinear(nn.Linear):  # a LoRA-style linear: its own forward
    def forward(self, x):
        return F.linear(x, self.weight, self.bias) * 0.5 + 1.0


class SameConv(nn.Conv2d):  # timm's Conv2dSame: pads, then nn.Conv2d's _conv_forward
    def forward(self, x):
        return self._conv_forward(F.pad(x, (1, 1, 1, 1), value=0.5), self.weight, self.bias)


class ScaledConv(nn.Conv2d):  # keeps nn.Conv2d's forward, changes what it calls
    def _conv_forward(self, x, weight, bias):
        return super()._conv_forward(x, weight * 2.0, bias)


def subclass_net():
    torch.manual_seed(0)
    return nn.Sequential(
        SameConv(3, 4, 3), nn.ReLU(), ScaledConv(4, 4, 3), nn.Conv2d(4, 4, 3), nn.Flatten(),
        ScaledLinear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2),
    )  # fmt: skip


def hooked_net():
    m = subclass_net()  # a forward hook on a plain Linear: swapping it would drop the hook
    m[7].register_forward_hook(lambda mod, args, out: out * 3.0 - 1.0)
    return m


def test_layers_with_their_own_forward_or_hooks_stay_dense(tmp_path):
    path = save(tmp_path, subclass_net, bits=4)
    dense, comp = both(path, hooked_net)
    kinds = [type(m) for m in comp]
    assert kinds[0] is SameConv and kinds[2] is ScaledConv and kinds[5] is ScaledLinear
    assert kinds[3] is CompressedConv2d and kinds[8] is CompressedLinear
    assert kinds[7] is nn.Linear
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(comp(x), dense(x), atol=1e-5)


def test_a_bare_layer_as_the_model_keeps_its_weights(tmp_path):
    """The model itself cannot be replaced in place: it must load dense (it used to keep its
    random initial weights, with a bogus submodule named "")."""
    for build, x in (
        (lambda: nn.Linear(16, 8), torch.randn(3, 16)),
        (lambda: nn.Conv2d(3, 4, 3), torch.randn(2, 3, 7, 7)),
    ):
        path = save(tmp_path, build, bits=4)
        dense, comp = both(path, build)
        assert type(comp) is type(dense) and list(comp.children()) == []
        with torch.no_grad():
            assert torch.allclose(comp(x), dense(x))


class Block(nn.Module):  # a user module: calls its own Linear, holds torch's attention
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.heads = nn.ModuleList([nn.Linear(16, 16), nn.Linear(16, 16)])
        self.by_name = nn.ModuleDict({"out": nn.Sequential(nn.Linear(16, 16), nn.Tanh())})

    def forward(self, x):
        x = self.attn(x, x, x, need_weights=False)[0]
        return self.by_name["out"](self.heads[1](self.heads[0](x)))


def attention_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16), nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0),
        Block(),
    )  # fmt: skip


def test_attention_models_run_and_ordinary_nesting_still_swaps(tmp_path):
    """nn.MultiheadAttention reads out_proj.weight, and the encoder layer's fast path (eval,
    no grad) its linear1/linear2's: those stay dense. The user's own nesting is swapped."""
    path = save(tmp_path, attention_net)
    dense, comp = both(path, attention_net)
    swapped = {n for n, m in comp.named_modules() if isinstance(m, COMPRESSED)}
    assert swapped == {"0", "2.heads.0", "2.heads.1", "2.by_name.out.0"}
    x = torch.randn(2, 5, 8)
    with torch.no_grad():  # the fast paths
        assert torch.allclose(comp(x), dense(x), atol=1e-5)
    assert torch.allclose(comp(x), dense(x), atol=1e-5)  # grad enabled: the Python paths

    def bare():
        torch.manual_seed(0)
        return nn.MultiheadAttention(16, 2, batch_first=True)

    dense, comp = both(save(tmp_path, bare), bare)
    q = torch.randn(2, 5, 16)
    with torch.no_grad():
        assert torch.allclose(comp(q, q, q)[0], dense(q, q, q)[0], atol=1e-5)


def zero_layer_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 5), nn.Linear(5, 0))


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_bench_refuses_bad_counts_and_skips_empty_weights(tmp_path, kernels_refuse_empty, capsys):
    path = save(tmp_path, zero_layer_net)
    for batches, repeats, what in (((0,), 5, "batch"), ((1, -2), 5, "batch"), ((1,), 0, "repeats")):
        with pytest.raises(ValueError, match=f"{what}.* must be at least 1"):
            bench_file(path, batches, repeats)
    rows = bench_file(path, (1, 2), 2)
    assert [r["tensor"] for r in rows] == ["0.weight"]  # the (0, 5) weight: nothing to time
    assert all(rows[0][f"{k}_ms_b{b}"] > 0 for k in ("dense", "compressed") for b in (1, 2))
    assert main(["bench", str(path), "--batch", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch sizes must be at least 1, got 0" in err
    assert main(["bench", str(path), "--batch", "1", "--repeats", "1"]) == 0

    _, comp = both(path, zero_layer_net)
    with pytest.raises(ValueError, match="batch sizes must be at least 1"):
        autotune_(comp, torch.randn(2, 8), batch_sizes=(1, 0))
    with pytest.raises(ValueError, match="at least one input"):
        autotune_(comp, torch.randn(0, 8))


def test_reading_a_compressed_layers_weight_says_what_to_do(tmp_path):
    """A user module that reads `self.fc.weight` (its layer swapped: its parent is the user's)
    gets an AttributeError that names the way out, not nn.Module's bare one."""

    class Reads(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return F.linear(x, self.fc.weight, self.fc.bias)

    net = Reads()
    dc.quantize_(net, bits=4)
    dc.save(net, tmp_path / "r.dcz")
    run = dc.load(tmp_path / "r.dcz", model=Reads(), runtime="compressed")
    with pytest.raises(AttributeError, match="runtime='dense'"):
        run(torch.randn(2, 8))
    assert not hasattr(run.fc, "weight") and run.fc.in_features == 8
    dense = dc.load(tmp_path / "r.dcz", model=Reads())
    x = torch.randn(2, 8)
    torch.testing.assert_close(dense(x), F.linear(x, run.fc.weight_c.dense(), run.fc.bias))


def test_a_torch_fx_graph_module_runs_compressed(tmp_path):
    """A GraphModule (torch.fx) only calls its children: they are swapped (its forward is
    defined in torch, which alone would have kept them dense)."""
    torch.manual_seed(0)
    net = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)))
    dc.prune_(net, sparsity=0.5)
    dc.quantize_(net, bits=4)
    dc.save(net, tmp_path / "g.dcz")
    fresh = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)))
    run = dc.load(tmp_path / "g.dcz", model=fresh, runtime="compressed")
    assert [type(m).__name__ for m in run.children()] == [
        "CompressedLinear",
        "ReLU",
        "CompressedLinear",
    ]
    x = torch.randn(4, 6)
    torch.testing.assert_close(run(x), net(x), rtol=0, atol=1e-5)


def test_a_module_registered_twice_stays_one_compressed_module(tmp_path):
    torch.manual_seed(0)
    shared = nn.Linear(6, 6)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    dc.quantize_(net, bits=4)
    dc.save(net, tmp_path / "t.dcz")
    fresh_layer = nn.Linear(6, 6)
    run = dc.load(tmp_path / "t.dcz", model=nn.Sequential(fresh_layer, nn.ReLU(), fresh_layer),
                  runtime="compressed")  # fmt: skip
    assert type(run[0]).__name__ == "CompressedLinear" and run[0] is run[2]
    x = torch.randn(3, 6)
    torch.testing.assert_close(run(x), net(x), rtol=0, atol=1e-5)


def test_a_conv_planned_dense_runs_torchs_conv_not_the_im2col_product(tmp_path, monkeypatch):
    """autotune_'s "dense" mode for a conv was a GEMM on the im2col matrix (3-8x slower than
    torch's conv), so planning it could not win the speed back; it is torch's conv now."""

    def conv() -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, stride=2))

    torch.manual_seed(0)
    net = conv()
    dc.quantize_(net, bits=4)
    dc.save(net, tmp_path / "c.dcz")
    plain = dc.load(tmp_path / "c.dcz", model=conv()).eval()
    comp = dc.load(tmp_path / "c.dcz", model=conv(), runtime="compressed").eval()
    x = torch.randn(2, 3, 11, 9)
    comp[0].plan = {2: "dense"}

    def no_unfold(*args, **kwargs):
        raise AssertionError("im2col used in the dense mode")

    monkeypatch.setattr(F, "unfold", no_unfold)
    with torch.no_grad():
        assert torch.allclose(comp(x), plain(x), atol=1e-5)
