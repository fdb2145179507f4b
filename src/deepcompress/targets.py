"""Which tensors of a model (or a state dict) are compressed, and which are one tied tensor.

What is compressed by default: the `weight` of every Linear, Conv1d/2d/3d, Embedding and
EmbeddingBag layer (`SUPPORTED_LAYERS`, subclasses included); any other floating-point
Parameter of two or more dimensions (such as nn.MultiheadAttention's bare `in_proj_weight`)
only where a settings key names it. `weight_groups` lists them grouped by tie; `model_state`
walks every tensor `state_dict()` would hold, with the parametrization that holds its codes;
`bare_weights` lists the Parameters outside the layers that `compress` shares too;
`dedup` is the one tie de-duplication that `save`, `encode_state_dict` and checkpoints share.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.nn.utils import parametrize

from .parametrizations import holder

#: Layer types whose `weight` is compressed by default (subclasses included, e.g. the
#: `out_proj` of nn.MultiheadAttention, a Linear).
SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Embedding,
    nn.EmbeddingBag,
)

#: The kinds a settings mapping may name instead of layers (see `layer_kind`).
KINDS: tuple[str, ...] = ("conv", "linear", "embedding")


def layer_kind(module: nn.Module) -> str | None:
    """The key used by per-kind settings such as `bits={"conv": 8}`: "linear" for nn.Linear,
    "embedding" for nn.Embedding and nn.EmbeddingBag, "conv" for nn.Conv1d/2d/3d; None for
    any other module."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return "conv"
    return None


def refuse_script(model: nn.Module) -> None:
    """TypeError for a TorchScript module: its layers are not torch.nn's (nothing would be
    compressed) and its parameters cannot take a parametrization."""
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            "a TorchScript module cannot be pruned, shared or analysed: compress the eager "
            "model, then script the result (torch.jit.script(dc.load(path, model=...)))"
        )


def unwrap(model: nn.Module) -> nn.Module:
    """The model a wrapper runs: torch.compile's module (`_orig_mod`), DistributedDataParallel's
    and DataParallel's (`module`), unwrapped as often as they nest; any other module as it is.
    A file holds the plain model's names, so a compiled or wrapped model's file loads into the
    plain model and the other way round."""
    while True:
        dynamo = sys.modules.get("torch._dynamo.eval_frame")  # loaded by torch.compile
        if dynamo is not None and isinstance(model, dynamo.OptimizedModule):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def compressible_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Yield `(name, module)` for every layer whose weight deepcompress compresses by default
    (each module once, under its first name)."""
    refuse_script(model)
    for name, module in model.named_modules():
        if isinstance(module, SUPPORTED_LAYERS):
            yield name, module


@dataclass
class Slot:
    """One tensor a verb may touch: `module`'s attribute `tname` (module None for a tensor of
    a state dict), reachable under `names` (several when it is tied). `kind` is its layer's
    kind ("conv", "linear", "embedding") or None; `default` says whether a plain value (not
    a mapping) reaches it: True for the weights of `SUPPORTED_LAYERS` and for every weight of
    a state dict, False for a model's other Parameters (only a key naming them does)."""

    module: nn.Module | None
    tname: str
    kind: str | None
    names: list[str] = field(default_factory=list)
    default: bool = True


def _is_internal(prefix: str) -> bool:
    return ".parametrizations." in f".{prefix}."


def _eligible(t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.dim() >= 2


def weight_groups(model: nn.Module) -> list[list[Slot]]:
    """Every tensor `prune_` and `quantize_` may touch, grouped by tie.

    Candidates are the `weight` of each `SUPPORTED_LAYERS` module (with a kind) and every
    other floating-point Parameter of 2+ dimensions (kind None: only a key naming it by name
    or pattern reaches it). Slots holding one and the same Parameter (the same tensor
    parametrized or not: `lm_head.weight = embed.weight`) form one group, in `state_dict()`
    order; its first slot is the owner.
    """
    refuse_script(model)
    groups: dict[int, list[Slot]] = {}
    slots: dict[tuple[int, str], Slot] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, parametrize.ParametrizationList) or _is_internal(prefix):
            continue
        supported = isinstance(module, SUPPORTED_LAYERS)
        found: list[tuple[str, torch.Tensor]] = []
        if parametrize.is_parametrized(module):
            for tname, plist in module.parametrizations.items():
                if not hasattr(plist, "original"):  # a multi-tensor parametrization
                    continue
                if supported and tname == "weight" or _eligible(getattr(module, tname)):
                    found.append((tname, plist.original))
        for tname, p in module._parameters.items():
            if p is None or isinstance(p, nn.parameter.UninitializedParameter):
                continue
            if supported and tname == "weight" or _eligible(p):
                found.append((tname, p))
        for tname, underlying in found:
            slot = slots.get((id(module), tname))
            if slot is None:
                kind = layer_kind(module) if supported and tname == "weight" else None
                slot = slots[(id(module), tname)] = Slot(module, tname, kind, default=bool(kind))
                groups.setdefault(id(underlying), []).append(slot)
            slot.names.append(f"{prefix}.{tname}" if prefix else tname)
    return list(groups.values())


def bare_weights(model: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """`(name, module, tname, kind)` for each weight that `compress` and `plan` share besides
    the layers' (`compressible_layers`): the floating-point Parameters of 2+ dimensions
    outside a `SUPPORTED_LAYERS` weight, such as an LSTM's `weight_ih_l0` or attention's
    `in_proj_weight`, each tie once under its first name (a tensor tied to a layer's weight is
    that layer's). `kind` stands in for a layer's: "linear" for 2 dimensions (a matrix
    product), "conv" for more."""
    out = []
    for group in weight_groups(model):
        if any(slot.default for slot in group):
            continue
        slot = group[0]
        dims = getattr(slot.module, slot.tname).dim()
        out.append((slot.names[0], slot.module, slot.tname, "linear" if dims == 2 else "conv"))
    return out


def named_weights(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """`(name, module, tname)` for every weight `compress` reports on: each layer's weight
    (`compressible_layers`, under the layer's name) and each bare weight (`bare_weights`,
    under its tensor name)."""
    layers = [(name, module, "weight") for name, module in compressible_layers(model)]
    return layers + [(name, module, tname) for name, module, tname, _ in bare_weights(model)]


def storage_key(t: torch.Tensor):
    """A key equal for two tensors exactly when they view the same memory the same way (same
    device, data pointer, shape, strides and dtype), so storing one stores both; None for an
    empty tensor (they may all share a null pointer)."""
    if t.numel() == 0:
        return None
    return ("storage", str(t.device), t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)


def model_state(model: nn.Module) -> list[tuple[str, torch.Tensor, nn.Module | None, object]]:
    """`(name, tensor, holder, key)` for every tensor `model.state_dict()` would hold, under its
    plain name (`ip1.weight`, not `ip1.parametrizations.weight.original`). `holder` is the
    `Masked`/`Shared` parametrization holding that tensor's codes, or None; equal `key`s mean
    one and the same tensor (the same parametrization list, or the same memory, see
    `storage_key`); None for an empty tensor, which is never de-duplicated."""
    out = []
    for prefix, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, parametrize.ParametrizationList) or _is_internal(prefix):
            continue
        dot = prefix + "." if prefix else ""
        if parametrize.is_parametrized(module):
            for tname, plist in module.parametrizations.items():
                tensor = getattr(module, tname).detach()
                out.append((dot + tname, tensor, holder(plist), ("parametrized", id(plist))))
        for tname, p in module._parameters.items():
            if p is not None:
                out.append((dot + tname, *_plain(p)))
        for tname, b in module._buffers.items():
            if b is not None and tname not in module._non_persistent_buffers_set:
                out.append((dot + tname, *_plain(b)))
    return out


def _plain(t: torch.Tensor) -> tuple:
    """`(tensor, None, key)` for `model_state`; a lazy module's uninitialized tensor as it is,
    never tied (it has no storage yet)."""
    if is_lazy(t):
        return t, None, None
    return t.detach(), None, storage_key(t)


def dedup(keys: Iterable[tuple[str, object]]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The one tie de-duplication: given `(name, key)` pairs in order (None: never tied),
    `(groups, tied)` where `groups` maps each first name of a tensor to all its names and
    `tied` maps every other name to that first one (the header's `meta["tied"]`)."""
    first: dict[object, str] = {}
    groups: dict[str, list[str]] = {}
    tied: dict[str, str] = {}
    for name, key in keys:
        if key is not None and key in first:
            tied[name] = first[key]
            groups[first[key]].append(name)
            continue
        if key is not None:
            first[key] = name
        groups[name] = [name]
    return groups, tied
