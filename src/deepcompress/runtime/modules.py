"""Run Linear and Conv2d layers straight from their compressed form (the paper's section 6 wish,
and what the EIE accelerator did in hardware).

A weight-shared layer stays in memory as its codebook, a narrow cluster index per kept weight
and the positions of the kept weights, in one of the layouts of `layouts` ("index" or "bitmap"
with the C kernels at this CPU's SIMD level, "entries" without them): at most 10% of the dense
float32 size at the paper's 4-25% kept. The kernels look each weight up in the codebook as they
go, on every core, and never build the dense matrix.

    net = dc.load("model.dcz", model=MyNet(), runtime="compressed")

Only layers that compute exactly what nn.Linear's or nn.Conv2d's forward does, and whose parent
calls them rather than reading their weight (MultiheadAttention reads out_proj's), are swapped
(`supports`, `calls_its_children`); the others load dense, as does a model that is one layer.

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

import math
import time
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..coding import codec
from ..errors import FormatError
from ..format.reader import read
from ..parametrizations import holder
from . import simd
from .layers import CompressedConv2d, CompressedLinear
from .layouts import CompressedMatrix


def supports(module: nn.Module) -> bool:
    """Whether `module` can run from a compressed weight, i.e. computes exactly what our
    layers do: a Linear, or a Conv2d with groups=1 and zero padding given as numbers, whose
    class keeps nn.Linear's / nn.Conv2d's `forward` (and `_conv_forward`; a subclass with its
    own, a LoRA linear or timm's Conv2dSame, would lose it), with no forward of its own on the
    instance, no forward hooks (they would be lost), no parametrization but deepcompress's
    (`load` strips those), and a weight of at least one element (an empty layer stays dense,
    so it fails or not as torch's does)."""
    cls = type(module)
    if isinstance(module, nn.Linear):
        same = cls.forward is nn.Linear.forward
    elif isinstance(module, nn.Conv2d):
        same = (
            cls.forward is nn.Conv2d.forward
            and cls._conv_forward is nn.Conv2d._conv_forward
            and module.groups == 1
            and module.padding_mode == "zeros"
            and isinstance(module.padding, tuple)
        )
    else:
        return False
    return (
        same
        and "forward" not in vars(module)
        and not module._forward_hooks
        and not module._forward_pre_hooks
        and all(holder(p) is not None for p in _plists(module))
        and module.weight.numel() > 0
    )


def _plists(module: nn.Module) -> list:
    """The parametrization lists on `module`'s tensors (none if it has none)."""
    return list(module.parametrizations.values()) if parametrize.is_parametrized(module) else []


#: torch modules that read their Linear children's weights instead of calling them
#: (`self.out_proj.weight`; the encoder layer's fast path reads linear1/linear2's too).
READS_CHILD_WEIGHTS = (
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)


def calls_its_children(parent: nn.Module) -> bool:
    """Whether `parent`'s Linear and Conv2d children may be swapped, i.e. `parent` only calls
    them: a container (Sequential, ModuleList, ModuleDict, a bare Module), a torch.fx
    GraphModule, or a module whose `forward` is defined outside torch (the user's own,
    torchvision's), unless it is one of `READS_CHILD_WEIGHTS`. torch's other modules with
    such children are left dense: any of them may read a child's `.weight`, which a
    compressed layer does not have."""
    if isinstance(parent, READS_CHILD_WEIGHTS):
        return False
    if isinstance(parent, torch.fx.GraphModule):  # its generated forward calls its children
        return True
    owner = next(c for c in type(parent).__mro__ if "forward" in vars(c))
    return owner in (nn.Module, nn.Sequential) or owner.__module__.split(".")[0] != "torch"


def compressed_layer(module: nn.Module, weight: CompressedMatrix, bias) -> nn.Module:
    """The compressed replacement of a `supports`-ed `module`."""
    if isinstance(module, nn.Linear):
        return CompressedLinear(weight, bias)
    return CompressedConv2d(module, weight, bias)


def compressed_swaps(model: nn.Module, names: dict) -> dict[str, tuple[nn.Module, str, nn.Module]]:
    """For each layer of `model` that can run from its compressed weight (`supports`, a
    `shared` record of the layer's weight shape, a parent that `calls_its_children`), its
    compressed module, built (decoded) from the file's records (`names`: every name of the
    file, aliases included, to its record), as `{layer name: (parent, child name, module)}`.
    `model` is not changed (`swap_compressed_` applies them): a damaged stream raises
    FormatError here, before anything is replaced. `model` itself is never one of them (it
    cannot be replaced in place). deepcompress's own masks and codebooks on a layer do not
    stop it (`load` strips them first); another parametrization does. A module registered
    under two names gets one compressed module (decoded once, still one module)."""
    swaps, made = {}, {}
    for name, rec in names.items():
        layer, _, tname = name.rpartition(".")
        if tname != "weight" or rec.codec != "shared" or not layer:
            continue
        parent_name, _, child = layer.rpartition(".")
        try:
            parent, module = model.get_submodule(parent_name), model.get_submodule(layer)
        except AttributeError:
            continue
        weight = getattr(module, "weight", None)
        if (
            isinstance(weight, torch.Tensor)
            and tuple(weight.shape) == rec.shape
            and supports(module)
            and calls_its_children(parent)
        ):
            if id(module) not in made:
                bias = names.get(f"{layer}.bias")
                bias = None if bias is None else codec.decode_record(bias)
                made[id(module)] = compressed_layer(module, matrix_from_record(rec), bias)
            swaps[layer] = (parent, child, made[id(module)].train(module.training))
    _warn_portable(swaps)
    return swaps


def _warn_portable(swaps: dict) -> None:
    """One UserWarning naming the layers whose codebooks hold more than 256 values where the C
    kernels run: those kernels take one-byte codes, so such a layer runs the portable numba
    loop of the "entries" layout, several times slower than dense torch."""
    if simd.level() is None:  # no C kernels here (or DEEPCOMPRESS_SIMD=0): all run the loops
        return
    slow = {n: len(m.weight_c.table) - 1 for n, (_, _, m) in swaps.items()}
    slow = {n: k for n, k in slow.items() if swaps[n][2].weight_c.layout == "entries"}
    if slow:
        names = ", ".join(f"{n} ({k} values)" for n, k in slow.items())
        warnings.warn(
            f"runtime='compressed': {names}: the C kernels take codebooks of at most 256 "
            "values, so these layers run on the portable numba loop, several times slower "
            "than dense torch. Encode them with at most 256 levels (quantize_ or encode with "
            "bits <= 8, or a lower quality), load them with the default runtime, or let "
            "autotune_ run them dense",
            UserWarning,
            stacklevel=3,
        )


def swap_compressed_(swaps: dict[str, tuple[nn.Module, str, nn.Module]]) -> set[str]:
    """Put each of `compressed_swaps`' modules in its parent; the names of the layers
    replaced (their weight and bias are in the new modules)."""
    for parent, child, new in swaps.values():
        setattr(parent, child, new)
    return set(swaps)


def matrix_from_record(rec) -> CompressedMatrix:
    """A `CompressedMatrix` straight from a `shared` record's streams (no dense weight).

    The entries pass the same checks as when decoding to dense (positions inside the tensor,
    symbols inside the codebook), so the unchecked kernel never reads out of bounds."""
    numel = rec.numel
    try:
        positions, symbols, codebook = codec.shared_entries(rec.params, rec.parts, numel)
    except FormatError as e:
        raise FormatError(f"tensor {rec.name!r}: {e}") from None
    # the columns from the shape: numel // rows would make a (0, n) weight (0, 0)
    shape = (rec.shape[0], math.prod(rec.shape[1:]))
    return CompressedMatrix.from_positions(shape, positions, symbols, codebook)


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
    (the latter on one thread and on torch's thread count, `torch.get_num_threads()`, where the
    C kernels run; a layer never runs on more than torch's count at the time) by timing the
    layer on inputs like those it sees in `model(example)`, with the kernels of this machine's
    SIMD level. Where the C kernels run, each weight is also tried in every layout of
    `layouts` ("index", "bitmap") and converted to another one where its planned times,
    summed over the batch sizes, are at least `MARGIN` less: past 13% kept, "index" can run
    faster than the "bitmap" that `load` takes, at up to twice its bytes (`layouts=()` keeps
    the loaded layout). Returns the plans; the thread counts go to each weight's `.threads`.

    Raises:
        ValueError: a batch size or `repeats` below 1, or an empty `example`.
    """
    batch_sizes = tuple(batch_sizes)
    _check_counts(batch_sizes, repeats)
    if len(example) == 0:
        raise ValueError("autotune_ needs an example of at least one input, got an empty batch")
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
    all_threads = torch.get_num_threads()
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


def _check_counts(batch_sizes, repeats: int) -> None:
    """Raises ValueError (one line) unless every batch size and `repeats` is at least 1."""
    bad = [b for b in batch_sizes if b < 1]
    if bad:
        raise ValueError(f"batch sizes must be at least 1, got {bad[0]}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")


def bench_file(path, batch_sizes=(1, 8), repeats: int = 20) -> list[dict]:
    """Per weight-shared layer of a file (`path`): the latency of `x @ W.T` dense (torch) and
    compressed (ours) at each of `batch_sizes`, the median of `repeats` calls, and the resident
    bytes of each. Conv weights are timed as their (out, in*kh*kw) matrix, i.e. per output
    position. Weights of no elements are left out (nothing to time). Returns one dict a layer.

    Raises:
        ValueError: a batch size or `repeats` below 1.
        FormatError: the file is damaged.
    """
    batch_sizes = tuple(batch_sizes)
    _check_counts(batch_sizes, repeats)
    rows = []
    for rec in read(path).records:
        if rec.codec != "shared" or len(rec.shape) < 2 or rec.numel == 0:
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
