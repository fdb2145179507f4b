"""The parametrizations that hold a model's compression while it trains, and their life cycle.

`prune_` registers `Masked` on a weight, `quantize_` replaces it by `Shared` (or, to train the
weights themselves through their rounding to a grid, by `Snapped`); all are
`torch.nn.utils.parametrize` parametrizations, so `module.weight` is *computed* from them on
every access and any ordinary training loop respects them. `tie_` makes the other holders of a
tied weight compute it through the owner's very same parametrizations, and `strip_` removes
them all, leaving plain dense weights. Nothing here knows how masks or codebooks are chosen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize


class Masked(nn.Module):
    """Parametrization `weight = where(mask, original, 0)`; `mask` is a bool buffer."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, original, torch.zeros((), dtype=original.dtype))


def index_dtype(k: int) -> torch.dtype:
    """The narrowest integer dtype holding cluster indices 0..k (0: pruned)."""
    if k <= 255:
        return torch.uint8
    if k <= 32767:
        return torch.int16
    return torch.int32


class _Lookup(torch.autograd.Function):
    """`table[idx]` for a narrow `idx`, keeping only that narrow tensor for the backward
    pass (autograd's own gather would keep an int64 copy: 8 bytes per weight)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(idx)
        ctx.k1 = table.numel()
        return table[idx.long()]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (idx,) = ctx.saved_tensors
        # dL/dC_j = sum of dL/dW over the weights of cluster j (the paper's rule)
        g = grad.new_zeros(ctx.k1).index_add_(0, idx.reshape(-1).long(), grad.reshape(-1))
        return g, None


class Shared(nn.Module):
    """Parametrization `weight = [0, *codebook][idx]`: a trainable codebook, fixed indices.

    `codebook` is a Parameter of k values; `idx` a buffer of the weight's shape holding 0 for
    pruned weights and 1..k for the cluster of every other weight, in the narrowest integer
    dtype that holds k (`index_dtype`: one byte a weight up to 255 clusters).
    """

    def __init__(self, codebook: torch.Tensor, idx: torch.Tensor):
        super().__init__()
        self.codebook = nn.Parameter(codebook)
        self.register_buffer("idx", idx.to(index_dtype(codebook.numel())))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        table = torch.cat([self.codebook.new_zeros(1), self.codebook])
        return _Lookup.apply(table, self.idx)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        # Nothing but the codebook is learnt: keep no dense copy of the weight.
        return weight.new_empty(0)

    @property
    def mask(self) -> torch.Tensor:
        return self.idx != 0


class Snapped(nn.Module):
    """Parametrization `weight = where(mask, float32(round(original / step) * step), 0)` whose
    backward skips the rounding (the straight-through estimator of Bengio et al. 2013): the
    float weights stay trainable and an ordinary loop trains them *through* their rounding to
    the uniform grid of `step`, so a weight may move to another level (or to zero and back)
    where centroid fine-tuning (`Shared`) only moves the levels. The forward computes exactly
    what a file's grid codebook decodes to (`float32(m * step)`, m an integer), so the model
    trained is the model saved (in a float16, bfloat16 or float64 model, that float32 value cast
    to the model's dtype, as the file decodes it). `mask` holds the pruned weights at zero;
    `step` is a Python float (not a buffer: it must not follow a `.half()` of the model).
    """

    def __init__(self, step: float, mask: torch.Tensor):
        super().__init__()
        if not step > 0 or not math.isfinite(step):
            raise ValueError(f"the grid's step must be a positive number, got {step}")
        self.step = float(step)
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        wide = torch.float32 if original.device.type == "mps" else torch.float64  # no f64 there
        grid = torch.round(original.to(wide) / self.step) * self.step
        grid = grid.to(torch.float32).to(original.dtype)  # what the file decodes to
        snapped = original + (grid - original).detach()
        return torch.where(self.mask, snapped, torch.zeros((), dtype=original.dtype))

    def extra_repr(self) -> str:
        return f"step={self.step:.6g}"

    def frozen(self, weight: torch.Tensor, dtype: torch.dtype | None = None) -> Shared:
        """The `Shared` equal to `weight` (what this parametrization computed): the grid's
        levels in use as the codebook, ascending, each weight's level as its index (0: zero).
        The codebook is in `dtype` (None: the weight's; the file's is float32, exact)."""
        m = torch.round(weight.detach().cpu().to(torch.float64) / self.step).to(torch.int64)
        levels, inverse = torch.unique(m, return_inverse=True)  # sorted: zero among them
        nonzero = levels != 0
        symbol = torch.cumsum(nonzero.to(torch.int64), 0) * nonzero  # level -> 0 or 1..k
        codebook = (levels[nonzero].to(torch.float64) * self.step).to(torch.float32)
        idx = symbol[inverse].reshape(weight.shape)
        dtype = weight.dtype if dtype is None else dtype
        return Shared(codebook.to(weight.device, dtype), idx.to(weight.device))


OURS: tuple[type[nn.Module], ...] = (Masked, Shared, Snapped)


def current_mask(module: nn.Module, tname: str = "weight") -> torch.Tensor | None:
    """The pruning mask held on `module.<tname>`, or None if it is not pruned."""
    if not parametrize.is_parametrized(module, tname):
        return None
    for p in module.parametrizations[tname]:
        if hasattr(p, "mask"):
            return p.mask
    return None


def snapped(module: nn.Module, tname: str = "weight") -> Snapped | None:
    """The `Snapped` parametrization on `module.<tname>`, or None."""
    if parametrize.is_parametrized(module, tname):
        for p in module.parametrizations[tname]:
            if isinstance(p, Snapped):
                return p
    return None


def shared_parts(module: nn.Module, tname: str = "weight") -> Shared | None:
    """The `Shared` parametrization on `module.<tname>` (for a `Snapped` one, the `Shared`
    it equals now: a copy, to read), or None."""
    if parametrize.is_parametrized(module, tname):
        for p in module.parametrizations[tname]:
            if isinstance(p, Shared):
                return p
            if isinstance(p, Snapped):
                return p.frozen(getattr(module, tname))
    return None


def holder(plist) -> nn.Module | None:
    """The last `Masked`/`Shared`/`Snapped` of a parametrization list (what holds the
    tensor's codes)."""
    ours = [p for p in plist if isinstance(p, OURS)]
    return ours[-1] if ours else None


class _Placeholder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def tie_(owner, aliases: Iterable) -> None:
    """Make each alias compute its tensor through the owner's parametrizations (the very same
    `ParametrizationList`: one original, one mask, one codebook), so a tied tensor stays tied
    once parametrized. `owner` and `aliases` have `.module`, `.tname` and `.names` (a
    `targets.Slot`)."""
    plist = owner.module.parametrizations[owner.tname]
    for alias in aliases:
        m, t = alias.module, alias.tname
        if parametrize.is_parametrized(m, t):
            own = m.parametrizations[t]
            if own is plist:
                continue
            if any(not isinstance(p, OURS) for p in own):
                raise ValueError(
                    f"{alias.names[0]} is tied to {owner.names[0]} but has parametrizations of "
                    f"its own; remove them first"
                )
        else:
            # Let torch make the property, then hand it the owner's list.
            parametrize.register_parametrization(m, t, _Placeholder(), unsafe=True)
        m.parametrizations[t] = plist


def register_shared_(module: nn.Module, tname: str, shared: Shared | Snapped) -> None:
    """Put `shared` (a `Shared` or a `Snapped`) on `module.<tname>`: as its only
    parametrization, or in place of the `Masked` it holds (torch's remove_parametrizations
    edits the module's generated class, which copy.deepcopy shares: it would break every
    copy). A `Snapped` keeps the float weights as its trainable original. A weight the user
    froze (`requires_grad=False`) keeps frozen: its codebook too."""
    if not parametrize.is_parametrized(module, tname):
        trainable = getattr(module, tname).requires_grad
        parametrize.register_parametrization(module, tname, shared, unsafe=True)
        if isinstance(shared, Shared):
            module.parametrizations[tname].original.requires_grad_(False)  # empty, never used
            shared.codebook.requires_grad_(trainable)
        return
    plist = module.parametrizations[tname]
    if len(plist) != 1:
        raise ValueError(
            f"{type(module).__name__}.{tname} has parametrizations of its own; remove them first"
        )
    trainable = plist.original.requires_grad
    plist[0] = shared
    if isinstance(shared, Shared):
        plist.original = nn.Parameter(plist.original.new_empty(0), requires_grad=False)
        shared.codebook.requires_grad_(trainable)
    plist.unsafe = True


def strip_(model: nn.Module) -> nn.Module:
    """Remove deepcompress's masks and codebooks, leaving plain dense weights (in place).

    Args:
        model: a module after `prune_` and/or `quantize_`.

    Returns:
        `model`, whose `state_dict()` has its original keys again (`ip1.weight`, ...). Modules
        that computed their weight through one shared parametrization (a tied weight, see
        `prune_`) get one and the same Parameter again. A weight the user froze (its float
        weights or codebook not requiring grad) comes back frozen.
    """
    # id(parametrization list) -> (the list, kept alive so that its id stays unique, and the
    # Parameter made from it)
    made: dict[int, tuple[nn.Module, nn.Parameter]] = {}
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        for tname in list(module.parametrizations.keys()):
            plist = module.parametrizations[tname]
            if holder(plist) is None:
                continue
            trainable = any(p.requires_grad for p in plist.parameters())
            if len(module.parametrizations) > 1:
                parametrize.remove_parametrizations(module, tname, leave_parametrized=True)
                getattr(module, tname).requires_grad_(trainable)
                continue
            # The common case, undone by hand: torch's remove_parametrizations deletes the
            # property from the module's generated class, which copy.deepcopy shares, and
            # so would break every deep copy of this model.
            if id(plist) not in made:
                value = getattr(module, tname).detach().clone()
                made[id(plist)] = (plist, nn.Parameter(value, requires_grad=trainable))
            del module.parametrizations
            module.__class__ = module.__class__.__bases__[0]
            module.register_parameter(tname, made[id(plist)][1])
    return model
