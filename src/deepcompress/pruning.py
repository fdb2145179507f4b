"""Stage 1: magnitude pruning (Han et al. 2015, "Learning both weights and connections").

Pure functions on tensors at the bottom (`magnitude_mask`, `threshold_mask`), the model-level verb
`prune_` on top.

How masks survive training: `prune_` registers a `torch.nn.utils.parametrize` parametrization on
each pruned weight, so that `module.weight` is *computed* as `where(mask, original, 0)` on every
access. Whatever an optimizer does to `original` (momentum, weight decay, Adam moments built up
before pruning), the weight the network sees stays exactly zero where the mask is off, and the
gradient of the masked entries is zero. This is the life cycle:

    dc.prune_(model, sparsity=0.9)   # wrap: masks computed and held
    ... train as usual ...            # masks respected
    dc.quantize_(model) / dc.save(model, path)   # the mask goes on into weight sharing / the file

What is compressed: the `weight` of every Linear, Conv1d/2d/3d, Embedding and EmbeddingBag
layer (`SUPPORTED_LAYERS`, subclasses included), plus any other floating-point Parameter of two
or more dimensions that a settings key names by pattern (such as nn.MultiheadAttention's bare
`in_proj_weight`). How settings given as mappings are resolved, and how tied (shared)
Parameters are handled, is described in `prune_` and `weight_plan`.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .distributed import broadcast_

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


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask that keeps the largest-magnitude `1 - sparsity` fraction of `weight`.

    Args:
        weight: any tensor.
        sparsity: fraction in [0, 1] of entries to remove.

    Returns:
        A bool tensor of `weight`'s shape; exactly `round(sparsity * numel)` entries are False.
        Ties are broken by position (stable sort), so the result is deterministic.

    Raises:
        ValueError: sparsity outside [0, 1] or non-finite weights.
    """
    mask = torch.zeros(weight.numel(), dtype=torch.bool)
    mask[torch.from_numpy(kept_positions(weight, sparsity))] = True
    return mask.reshape(weight.shape).to(weight.device)


def kept_positions(weight: torch.Tensor, sparsity: float, chunk: int = 1 << 24) -> np.ndarray:
    """Flat (row-major) positions of the entries `magnitude_mask(weight, sparsity)` keeps.

    Linear time and about one float32 copy of `weight` in extra memory, for layers of hundreds
    of millions of weights: the threshold is the `round(sparsity * n)`-th smallest |w|
    (introselect, in place on that copy), then the weights are scanned in chunks. Among
    entries equal to the threshold the lowest positions are pruned first, as a stable sort
    would do.

    Returns:
        Ascending int64 positions.

    Raises:
        ValueError: sparsity outside [0, 1] or non-finite weights.
    """
    if not 0.0 <= float(sparsity) <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    _check_finite(weight)
    flat = weight.detach().reshape(-1).cpu()
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()  # exact, and numpy has no bfloat16
    n = flat.numel()
    n_prune = int(round(float(sparsity) * n))
    if n_prune == 0:
        return np.arange(n, dtype=np.int64)
    if n_prune == n:
        return np.zeros(0, dtype=np.int64)
    mags = flat.abs().numpy()  # a fresh copy: partitioned in place below
    mags.partition(n_prune - 1)
    cut = mags[n_prune - 1]
    below = int(np.count_nonzero(mags[:n_prune] < cut))  # |w| < cut lie left of the pivot
    del mags
    ties_to_prune = n_prune - below  # among |w| == cut, this many (lowest positions) go
    kept = []
    for lo in range(0, n, chunk):
        a = flat[lo : lo + chunk].abs().numpy()
        keep = a > cut
        if ties_to_prune:
            tie = np.flatnonzero(a == cut)
            keep[tie[ties_to_prune:]] = True
            ties_to_prune -= min(ties_to_prune, len(tie))
        else:
            keep |= a == cut
        kept.append(np.flatnonzero(keep) + lo)
    return np.concatenate(kept)


def threshold_mask(weight: torch.Tensor, quality: float) -> torch.Tensor:
    """Mask that keeps entries with `|w| >= quality * std(weight)` (Han et al. 2015).

    Args:
        weight: any tensor with at least two entries.
        quality: the quality parameter; larger prunes more.

    Returns:
        A bool tensor of `weight`'s shape.

    Raises:
        ValueError: a negative quality, or NaN/infinite weights.
    """
    if quality < 0:
        raise ValueError(f"quality must be >= 0, got {quality}")
    _check_finite(weight)
    w = weight.detach()
    std = w.float().std() if w.numel() > 1 else w.new_zeros(())
    return w.abs() >= quality * std


def _check_finite(weight: torch.Tensor) -> None:
    if not torch.isfinite(weight).all():
        raise ValueError("weights contain NaN or infinity; refusing to prune them")


class Masked(nn.Module):
    """Parametrization `weight = where(mask, original, 0)`; `mask` is a bool buffer."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, original, torch.zeros((), dtype=original.dtype))


def compressible_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Yield `(name, module)` for every layer whose weight deepcompress compresses by default
    (each module once, under its first name)."""
    for name, module in model.named_modules():
        if isinstance(module, SUPPORTED_LAYERS):
            yield name, module


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


def matches(pattern: str, name: str) -> bool:
    """Whether a tensor name (`features.0.weight`) or its layer (`features.0`) matches a glob
    pattern (`classifier.*`), or a regular expression written as `re:<expr>` (full match)."""
    layer = name.rpartition(".")[0]
    if pattern.startswith("re:"):
        rx = re.compile(pattern[3:])
        return bool(rx.fullmatch(name) or rx.fullmatch(layer))
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(layer, pattern)


_UNSET = object()


def lookup(setting, name: str, kind: str | None):
    """The value `setting` gives the tensor `name` (`layer.weight`) of kind `kind`, or `_UNSET`.

    A scalar applies to every tensor with a kind (the weights of `SUPPORTED_LAYERS`), not to
    other tensors. In a mapping, in this order: a key equal to the tensor's name or to its
    layer's name; else the first key, in the mapping's order, that is a pattern matching it
    (`matches`: a glob on the tensor or layer name, or `re:<regex>`); else the tensor's kind
    ("conv", "linear", "embedding"). Kind keys are never read as patterns. A value of None is
    returned like any other (it says "leave this alone").
    """
    if not isinstance(setting, Mapping):
        return setting if kind is not None else _UNSET
    layer = name.rpartition(".")[0]
    for key in (name, layer):
        if key in setting:
            return setting[key]
    for key, value in setting.items():
        if key not in KINDS and matches(key, name):
            return value
    if kind is not None and kind in setting:
        return setting[kind]
    return _UNSET


def per_layer(setting, name: str, module: nn.Module, tensor: str = "weight"):
    """Resolve a setting for `module`'s `tensor` (layer `name`), given as a scalar (which
    holds for any tensor), or a mapping by layer or tensor name, by pattern, or by kind
    ("conv"/"linear"/"embedding").

    An exact name wins over a pattern (the first matching one), a pattern over a kind (see
    `lookup`). Returns None when a mapping names nothing that applies.
    """
    if not isinstance(setting, Mapping):
        return setting
    full = f"{name}.{tensor}" if name else tensor
    kind = layer_kind(module) if tensor == "weight" else None
    value = lookup(setting, full, kind)
    return None if value is _UNSET else value


@dataclass
class Slot:
    """One weight tensor that `prune_`/`quantize_` may parametrize: `module`'s attribute
    `tname`, reachable under `names` (several when the module is registered twice)."""

    module: nn.Module
    tname: str
    kind: str | None
    names: list[str] = field(default_factory=list)


def _is_internal(prefix: str) -> bool:
    return ".parametrizations." in f".{prefix}."


def weight_groups(model: nn.Module) -> list[list[Slot]]:
    """Every tensor `prune_` and `quantize_` may touch, grouped by tie.

    Candidates are the `weight` of each `SUPPORTED_LAYERS` module (with a kind) and every
    other floating-point Parameter of 2+ dimensions (kind None: only a key naming it by name
    or pattern reaches it). Slots holding one and the same Parameter (the same tensor
    parametrized or not: `lm_head.weight = embed.weight`) form one group, in `state_dict()`
    order; its first slot is the owner.
    """
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
                slot = slots[(id(module), tname)] = Slot(module, tname, kind)
                groups.setdefault(id(underlying), []).append(slot)
            slot.names.append(f"{prefix}.{tname}" if prefix else tname)
    return list(groups.values())


def _eligible(t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.dim() >= 2


def weight_plan(
    model: nn.Module, setting, exclude: Iterable[str] = (), *, what: str = "prunable layer"
) -> list[tuple[list[Slot], object]]:
    """`(group, value)` for every tie group of `weight_groups(model)` that `setting` gives a
    value other than None, after checking the keys.

    Each name of a group is resolved by `lookup`; names it does not reach do not count. A
    group whose names resolve to different values is refused (they are one tensor), and a
    group any of whose names matches an `exclude` pattern is left alone.

    Raises:
        ValueError: a mapping key (other than a kind) or an exclude pattern that matches no
            candidate tensor; different values for the names of one tied tensor.
    """
    groups = weight_groups(model)
    names = [n for g in groups for slot in g for n in slot.names]
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    for label, keys in (
        ("key", [k for k in setting if k not in KINDS] if isinstance(setting, Mapping) else []),
        ("exclude pattern", exclude),
    ):
        unknown = [k for k in keys if not any(k == n or matches(k, n) for n in names)]
        if unknown:
            layers = sorted({n.rpartition(".")[0] for n in names})
            raise ValueError(
                f"no {what} or weight matches {label} {unknown}; the layers are {layers} "
                f"(kinds: {', '.join(KINDS)})"
            )
    plan = []
    for group in groups:
        group_names = [n for slot in group for n in slot.names]
        if any(matches(p, n) for p in exclude for n in group_names):
            continue
        found = {}
        for slot in group:
            for n in slot.names:
                value = lookup(setting, n, slot.kind)
                if value is not _UNSET:
                    found.setdefault(n, value)
        value = one_value(found, group_names, "the settings", _UNSET)
        if value is not _UNSET and value is not None:
            plan.append((group, value))
    return plan


def one_value(found: Mapping[str, object], names: list[str], what: str, default):
    """The single value `found` ({name: value}) gives the names of one tied tensor, or
    `default` if it gives none; ValueError if it gives them different values."""
    distinct = []
    for v in found.values():
        if v not in distinct:
            distinct.append(v)
    if len(distinct) > 1:
        raise ValueError(
            f"{' and '.join(names)} are one tied tensor but {what} give them different values "
            f"{dict(found)}; give them one value (or exclude one name)"
        )
    return distinct[0] if distinct else default


class _Placeholder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def tie_(owner: Slot, aliases: Iterable[Slot]) -> None:
    """Make each alias slot compute its tensor through the owner's parametrizations (the very
    same `ParametrizationList`: one original, one mask, one codebook), so a tied tensor stays
    tied once parametrized."""
    plist = owner.module.parametrizations[owner.tname]
    for alias in aliases:
        m, t = alias.module, alias.tname
        if parametrize.is_parametrized(m, t):
            own = m.parametrizations[t]
            if own is plist:
                continue
            if any(not isinstance(p, _ours()) for p in own):
                raise ValueError(
                    f"{alias.names[0]} is tied to {owner.names[0]} but has parametrizations of "
                    f"its own; remove them first"
                )
        else:
            # Let torch make the property, then hand it the owner's list.
            parametrize.register_parametrization(m, t, _Placeholder(), unsafe=True)
        m.parametrizations[t] = plist


def _ours() -> tuple[type[nn.Module], ...]:
    from .sharing import Shared  # sharing imports this module

    return (Masked, Shared)


def current_mask(module: nn.Module, tname: str = "weight") -> torch.Tensor | None:
    """The pruning mask held on `module.<tname>`, or None if it is not pruned."""
    if not parametrize.is_parametrized(module, tname):
        return None
    for p in module.parametrizations[tname]:
        if hasattr(p, "mask"):
            return p.mask
    return None


def prune_(
    model: nn.Module,
    sparsity: float | Mapping[str, float | None] | None = None,
    *,
    quality: float | Mapping[str, float | None] | None = None,
    exclude: Iterable[str] = (),
) -> nn.Module:
    """Prune the weights of `model`'s Linear, Conv and Embedding layers by magnitude, in place.

    Call it again after retraining to prune further (iterative pruning): the new mask is computed
    on the current weights and never revives a pruned entry.

    Args:
        model: any module; the weights of its Linear, Conv1d/2d/3d, Embedding and EmbeddingBag
            layers are pruned, and other floating-point Parameters of 2+ dimensions (such as
            nn.MultiheadAttention's `in_proj_weight`) when a mapping key names them.
        sparsity: fraction of each weight to remove: a float for every layer, or a mapping
            `{key: fraction}` whose keys are layer names (`"fc1"`) or tensor names
            (`"attn.in_proj_weight"`), patterns (globs such as `"encoder.*.linear?"` or
            `"re:<regex>"`, matched against tensor and layer names) or kinds ("conv", "linear",
            "embedding"). An exact name wins over a pattern, the first matching pattern over a
            kind; tensors no key reaches, or given None, are left alone.
        quality: instead of `sparsity`, the threshold rule `|w| < quality * std(w)`; a float or
            a mapping like `sparsity`.
        exclude: patterns (or names) of tensors never to touch, whatever the setting says.

    Tied weights (one Parameter held by two modules, e.g. `lm_head.weight = embed.weight`,
    or one module registered under two names) are pruned once: one mask, computed on the
    shared tensor, is registered on the first module (in `state_dict()` order) and the other
    modules compute their weight through that same parametrization, so the tie holds in
    training and in `save`. Every name of a tied tensor that a setting reaches must get the
    same value (names it does not reach do not count); excluding any of its names leaves it
    alone.

    An `nn.Embedding(sparse=True)` still runs and saves after `prune_`/`quantize_`, but cannot
    be trained: its sparse gradient does not pass through the mask or the codebook lookup
    (set `embedding.sparse = False` to fine-tune it).

    Returns:
        `model`, with a `Masked` parametrization on each pruned weight.

    Raises:
        ValueError: neither or both of sparsity and quality; a fraction outside [0, 1]; a key
            or exclude pattern that matches no prunable weight; different values for one tied
            tensor; a weight already weight-shared; NaN or infinite weights.

    Example:
        >>> dc.prune_(model, sparsity={"ip1": 0.92, "ip2": 0.91, "ip3": 0.74})
        >>> dc.prune_(net, sparsity={"*.self_attn.in_proj_weight": 0.5, "linear": 0.7},
        ...           exclude=["classifier"])
    """
    if (sparsity is None) == (quality is None):
        raise ValueError("give exactly one of sparsity= or quality=")
    setting = sparsity if sparsity is not None else quality
    plan = weight_plan(model, setting, exclude, what="prunable layer")
    for group, value in plan:
        value = float(value)
        if quality is None and not 0.0 <= value <= 1.0:
            raise ValueError(f"sparsity for {group[0].names[0]!r} must be in [0, 1], got {value}")
        if quality is not None and value < 0:
            raise ValueError(f"quality for {group[0].names[0]!r} must be >= 0, got {value}")
        _check_prunable(group[0])
    for group, value in plan:
        owner = group[0]
        _prune_layer(owner.module, float(value), by_quality=quality is not None, tname=owner.tname)
        tie_(owner, group[1:])
    return model


def _check_prunable(slot: Slot) -> None:
    """Refuse, before anything changes, a tensor `_prune_layer` would refuse."""
    if not parametrize.is_parametrized(slot.module, slot.tname):
        return
    plist = slot.module.parametrizations[slot.tname]
    if not any(isinstance(p, Masked) for p in plist):
        if any(isinstance(p, _ours()) for p in plist):
            raise ValueError(f"{slot.names[0]} is already weight-shared; prune before quantize_")
        raise ValueError(
            f"{slot.names[0]} has parametrizations of its own; remove them before prune_"
        )


def _prune_layer(module: nn.Module, value: float, by_quality: bool, tname: str = "weight") -> None:
    old = None
    if parametrize.is_parametrized(module, tname):
        held = [p for p in module.parametrizations[tname] if isinstance(p, Masked)]
        if not held:
            raise ValueError(
                f"{type(module).__name__}.{tname} is already weight-shared (or parametrized "
                f"otherwise); prune before quantize_"
            )
        old = held[0].mask
    weight = getattr(module, tname).detach()
    if by_quality:
        mask = threshold_mask(weight, value)
    else:
        # Already-pruned zeros are the smallest magnitudes, so they are pruned first.
        mask = magnitude_mask(weight, value)
    broadcast_(mask)  # under torch.distributed, every rank takes rank 0's mask
    if old is None:
        parametrize.register_parametrization(module, tname, Masked(mask))
    else:
        old.copy_(old & mask)
