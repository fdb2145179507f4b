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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .distributed import broadcast_

#: Layer types whose `weight` is compressed by default.
SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


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
    """Yield `(name, module)` for every layer whose weight deepcompress compresses."""
    for name, module in model.named_modules():
        if isinstance(module, SUPPORTED_LAYERS):
            yield name, module


def layer_kind(module: nn.Module) -> str:
    """ "conv" or "linear": the key used by per-kind settings such as `bits={"conv": 8}`."""
    return "linear" if isinstance(module, nn.Linear) else "conv"


def per_layer(setting, name: str, module: nn.Module):
    """Resolve a setting given as a scalar, or a mapping by layer name or by kind ("conv"/"linear").

    A layer name wins over its kind; returns None when a mapping names neither.
    """
    if isinstance(setting, Mapping):
        if name in setting:
            return setting[name]
        return setting.get(layer_kind(module))
    return setting


def current_mask(module: nn.Module) -> torch.Tensor | None:
    """The pruning mask held on `module.weight`, or None if it is not pruned."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations.weight:
        if hasattr(p, "mask"):
            return p.mask
    return None


def prune_(
    model: nn.Module,
    sparsity: float | Mapping[str, float] | None = None,
    *,
    quality: float | Mapping[str, float] | None = None,
) -> nn.Module:
    """Prune the weights of `model`'s Linear and Conv layers by magnitude, in place.

    Call it again after retraining to prune further (iterative pruning): the new mask is computed
    on the current weights and never revives a pruned entry.

    Args:
        model: any module; its Linear/Conv1d/Conv2d/Conv3d layers are pruned.
        sparsity: fraction of each layer's weights to remove, as a float for every layer or a
            mapping `{layer_name or "conv"/"linear": fraction}` (layers it names neither way
            are left alone).
        quality: instead of `sparsity`, the threshold rule `|w| < quality * std(w)`; a float or
            a mapping like `sparsity`.

    Returns:
        `model`, with a `Masked` parametrization on each pruned weight.

    Raises:
        ValueError: neither or both of sparsity and quality; a fraction outside [0, 1]; a name
            in the mapping that is not a supported layer; NaN or infinite weights.

    Example:
        >>> dc.prune_(model, sparsity={"ip1": 0.92, "ip2": 0.91, "ip3": 0.74})
    """
    if (sparsity is None) == (quality is None):
        raise ValueError("give exactly one of sparsity= or quality=")
    setting = sparsity if sparsity is not None else quality
    layers = dict(compressible_layers(model))
    if isinstance(setting, Mapping):
        unknown = [k for k in setting if k not in layers and k not in ("conv", "linear")]
        if unknown:
            raise ValueError(
                f"no prunable layer named {unknown}; prunable layers are {sorted(layers)}"
            )
    for name, module in layers.items():
        value = per_layer(setting, name, module)
        if value is None:
            continue
        _prune_layer(module, float(value), by_quality=quality is not None)
    return model


def _prune_layer(module: nn.Module, value: float, by_quality: bool) -> None:
    old = None
    if parametrize.is_parametrized(module, "weight"):
        held = [p for p in module.parametrizations.weight if isinstance(p, Masked)]
        if not held:
            raise ValueError(
                f"{type(module).__name__}.weight is already weight-shared; prune before quantize_"
            )
        old = held[0].mask
    weight = module.weight.detach()
    if by_quality:
        mask = threshold_mask(weight, value)
    else:
        # Already-pruned zeros are the smallest magnitudes, so they are pruned first.
        mask = magnitude_mask(weight, value)
    broadcast_(mask)  # under torch.distributed, every rank takes rank 0's mask
    if old is None:
        parametrize.register_parametrization(module, "weight", Masked(mask))
    else:
        old.copy_(old & mask)
