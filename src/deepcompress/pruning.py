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
Parameters are handled, is described in `prune_` (targets: `targets`, settings: `settings`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .distributed import broadcast_
from .parametrizations import OURS, Masked, tie_
from .settings import plan
from .targets import Slot, weight_groups


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
    plan_ = plan(weight_groups(model), setting, exclude, what="prunable layer")
    for group, value in plan_:
        value = float(value)
        if quality is None and not 0.0 <= value <= 1.0:
            raise ValueError(f"sparsity for {group[0].names[0]!r} must be in [0, 1], got {value}")
        if quality is not None and value < 0:
            raise ValueError(f"quality for {group[0].names[0]!r} must be >= 0, got {value}")
        _check_prunable(group[0])
    for group, value in plan_:
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
        if any(isinstance(p, OURS) for p in plist):
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
