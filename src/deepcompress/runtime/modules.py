"""Run Linear and Conv2d layers straight from their compressed form (the paper's section 6 wish,
and what the EIE accelerator did in hardware).

A weight-shared layer stays in memory as its codebook, a narrow cluster index per kept weight
and the positions of the kept weights, in one of the layouts of `layouts` ("index" or "bitmap"
with the C kernels at this CPU's SIMD level, "entries" without them): at most 10% of the dense
float32 size at the paper's 4-25% kept. The kernels look each weight up in the codebook as they
go, on every core, and never build the dense matrix.

    net = dc.load("model.dcz", model=MyNet(), runtime="compressed")

Modes, per layer and batch size (`CompressedLinear.plan`): "compressed" runs the kernel; "dense"
rebuilds the dense weight for that call only and uses torch's GEMM. Where each wins
(benchmarks/RESULTS.md, issues 5 and 18, `bench_runtime.py --sweep`): at batch 1 compressed, by
7-20x on the paper's 4-9%-kept fc layers and 1.8x at 25% kept (AVX-512, Zen 4); at batch 64
dense past about 50% kept (the paper saw its sparse kernels lose to dense at batch 64 too); on
layers of a few thousand weights dense, as a call of ours has a fixed cost of about 6 us (2 for
torch's). `autotune_` chooses by measured time, thread counts and layouts included, with the
kernels this machine runs.
"""

from __future__ import annotations

import time

import numba
import numpy as np
import torch
from torch import nn

from ..coding import codec
from ..errors import FormatError
from ..format.reader import read
from .layouts import CompressedMatrix


class CompressedLinear(nn.Module):
    """A Linear layer executed from its compressed weight (inference only)."""

    def __init__(self, weight: CompressedMatrix, bias: torch.Tensor | None):
        super().__init__()
        self.weight_c = weight
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.plan: dict[int, str] = {}  # batch size -> "compressed" | "dense"; default compressed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # each torch call costs about a microsecond: skip those a 2-D float32 input needs not
        x2 = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        y = _matmul(self.weight_c, x2, self.plan.get(x2.shape[0], "compressed"))
        if self.bias is not None:
            y.add_(self.bias)  # y is a new tensor
        if x.dim() != 2:
            y = y.reshape(*x.shape[:-1], self.out_features)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, compressed"


class CompressedConv2d(nn.Module):
    """A Conv2d (groups=1, zero padding) executed as im2col + the compressed kernel."""

    def __init__(self, conv: nn.Conv2d, weight: CompressedMatrix, bias: torch.Tensor | None):
        super().__init__()
        self.weight_c = weight
        self.out_channels, self.kernel_size = conv.out_channels, conv.kernel_size
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.plan: dict[int, str] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        b, _, h, w = x.shape
        cols = nn.functional.unfold(
            x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride
        )  # (B, C*kh*kw, L)
        oh, ow = (
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip(
                (h, w), self.padding, self.dilation, self.kernel_size, self.stride
            )
        )
        flat = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (B*L, C*kh*kw)
        y = _matmul(self.weight_c, flat, self.plan.get(b, "compressed"))  # (B*L, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(b, oh * ow, -1).transpose(1, 2).reshape(b, -1, oh, ow).to(x.dtype)


def _matmul(wc: CompressedMatrix, x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "dense":
        return x.to(torch.float32) @ wc.dense().T
    return wc.matmul_t(x)


def supports(module: nn.Module) -> bool:
    """Whether `module` can run from a compressed weight: Linear, or Conv2d with groups=1,
    zero padding given as numbers."""
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)
    )


def compressed_layer(module: nn.Module, weight: CompressedMatrix, bias) -> nn.Module:
    """The compressed replacement of a `supports`-ed `module`."""
    if isinstance(module, nn.Linear):
        return CompressedLinear(weight, bias)
    return CompressedConv2d(module, weight, bias)


def swap_compressed_(model: nn.Module, names: dict) -> set[str]:
    """Replace each layer of `model` that can run from its compressed weight (`supports`,
    a `shared` record of the layer's weight shape) by its compressed module, built from the
    file's records (`names`: every name of the file, aliases included, to its record).
    Returns the names of the layers replaced; their weight and bias are in the new modules."""
    swapped = set()
    for name, rec in names.items():
        layer, _, tname = name.rpartition(".")
        try:
            module = model.get_submodule(layer)
        except AttributeError:
            continue
        if (
            tname == "weight"
            and rec.codec == "shared"
            and tuple(module.weight.shape) == rec.shape
            and supports(module)
        ):
            bias = names.get(f"{layer}.bias")
            new = compressed_layer(
                module, matrix_from_record(rec), None if bias is None else codec.decode_record(bias)
            )
            parent, _, child = layer.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new)
            swapped.add(layer)
    return swapped


def matrix_from_record(rec) -> CompressedMatrix:
    """A `CompressedMatrix` straight from a `shared` record's streams (no dense weight).

    The entries pass the same checks as when decoding to dense (positions inside the tensor,
    symbols inside the codebook), so the unchecked kernel never reads out of bounds."""
    numel = rec.numel
    try:
        positions, symbols, codebook = codec.shared_entries(rec.params, rec.parts, numel)
    except FormatError as e:
        raise FormatError(f"tensor {rec.name!r}: {e}") from None
    rows = rec.shape[0]
    return CompressedMatrix.from_positions(
        (rows, numel // max(1, rows)), positions, symbols, codebook
    )


#: How much faster another layout must be for `autotune_` to convert a weight to it.
MARGIN = 0.05


def autotune_(
    model: nn.Module,
    example: torch.Tensor,
    batch_sizes=(1, 8, 64),
    repeats: int = 5,
    layouts=("index", "bitmap"),
) -> dict[str, dict[int, str]]:
    """Choose, per compressed layer and batch size, the fastest of "dense" and "compressed"
    (the latter on one thread and on all of numba's, where the C kernels run) by timing the
    layer on inputs like those it sees in `model(example)`, with the kernels of this machine's
    SIMD level. Where the C kernels run, each weight is also tried in every layout of
    `layouts` ("index", "bitmap") and converted to another one where its planned times,
    summed over the batch sizes, are at least `MARGIN` less: past 13% kept, "index" can run
    faster than the "bitmap" that `load` takes, at up to twice its bytes (`layouts=()` keeps
    the loaded layout). Returns the plans; the thread counts go to each weight's `.threads`."""
    inputs: dict[nn.Module, torch.Tensor] = {}
    layers = {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, (CompressedLinear, CompressedConv2d))
    }
    hooks = [
        m.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m, a[0][:1]))
        for m in layers.values()
    ]
    with torch.no_grad():
        model(example[:1])
    for h in hooks:
        h.remove()
    plans = {}
    for name, m in layers.items():
        wc = m.weight_c
        candidates = [wc]
        if wc.level is not None and wc.layout in ("index", "bitmap"):
            candidates += [wc.to_layout(lay) for lay in layouts if lay != wc.layout]
        tuned = []
        for cand in candidates:
            m.weight_c = cand
            with torch.no_grad():  # the kernel's rows per input: 1, or a conv's output positions
                rows = m(inputs[m]).numel() // max(1, cand.shape[0])
            tuned.append((_tune(m, inputs[m], rows, batch_sizes, repeats), dict(m.plan), cand))
        best = tuned[0]  # another layout only where it is clearly faster (timing noise)
        for t in tuned[1:]:
            if t[0] < (1 - MARGIN) * best[0]:
                best = t
        _, m.plan, m.weight_c = best
        plans[name] = dict(m.plan)
    return plans


def _tune(m: nn.Module, x1: torch.Tensor, rows: int, batch_sizes, repeats: int) -> float:
    """Plan layer `m`'s mode and its weight's thread count per batch size by timing each;
    returns the planned modes' median seconds a call, summed over the batch sizes."""
    wc = m.weight_c
    all_threads = numba.get_num_threads()
    threads = (1, all_threads) if wc.level is not None and all_threads > 1 else (None,)
    total = 0.0
    for bs in batch_sizes:
        x = x1.expand(bs, *x1.shape[1:]).contiguous()
        times = {}
        for mode, nt in [("dense", None)] + [("compressed", t) for t in threads]:
            m.plan[bs] = mode
            if nt is not None:
                wc.threads[bs * rows] = nt  # the kernel sees bs * rows inputs
            with torch.no_grad():  # the median call: a preempted one does not decide
                times[mode, nt] = median_seconds(lambda x=x: m(x), repeats)
        mode, nt = min(times, key=times.get)
        total += times[mode, nt]
        m.plan[bs] = mode
        if nt is None:
            wc.threads.pop(bs * rows, None)
        else:
            wc.threads[bs * rows] = nt
    return total


def median_seconds(fn, repeats: int, before=None) -> float:
    """Median wall time of `fn()` over `repeats` calls, after one warm-up call; `before()`, if
    given, runs untimed before each call (to evict the caches, say)."""
    fn()
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_file(path, batch_sizes=(1, 8), repeats: int = 20) -> list[dict]:
    """Per weight-shared layer of a file: the latency of `x @ W.T` dense (torch) and
    compressed (ours) at each batch size, and the resident bytes of each. Conv weights are
    timed as their (out, in*kh*kw) matrix, i.e. per output position."""
    rows = []
    for rec in read(path).records:
        if rec.codec != "shared" or len(rec.shape) < 2:
            continue
        m = matrix_from_record(rec)
        w = m.dense()
        row = {
            "tensor": rec.name,
            "shape": list(m.shape),
            "layout": m.layout,
            "dense_bytes": 4 * w.numel(),
            "compressed_bytes": m.nbytes,
            "kept": float((w != 0).float().mean()),
        }
        for b in batch_sizes:
            x = torch.randn(b, m.shape[1])
            with torch.no_grad():
                row[f"dense_ms_b{b}"] = 1e3 * median_seconds(
                    lambda x=x, w=w: nn.functional.linear(x, w), repeats
                )
            row[f"compressed_ms_b{b}"] = 1e3 * median_seconds(
                lambda x=x, m=m: m.matmul_t(x), repeats
            )
        rows.append(row)
    return rows
