"""Per-layer pruning sensitivity (the paper's Figure 6), and per-layer sparsities chosen from it.

`sensitivity` prunes one layer at a time, by magnitude and without retraining, to each of a grid
of sparsities, and calls your `evaluate(model) -> float` (an error or a loss: lower is better)
on the result. The table it returns says which layers tolerate pruning and which do not;
`plot_sensitivity` draws it, one curve per layer; `auto_sparsity` turns it into a per-layer
sparsity for `dc.prune_` that keeps the *combined* model within an error budget:

    table = sensitivity(model, lambda m: error_rate(m, data.val))
    plot_sensitivity(table, "sensitivity.png")
    s = auto_sparsity(model, lambda m: error_rate(m, data.val), budget=0.5, table=table)
    dc.prune_(model, sparsity=s)     # then retrain: retraining wins back more than this

How a layer is pruned here: `magnitude_mask` on the layer's current (effective) weight, applied
by zeroing the stored weight in place under `torch.no_grad`, after saving a copy that is written
back afterwards. No parametrization is registered, and the model is left bit-identical to how
it was (weights, and every module's train/eval flag), also when `evaluate` raises.

Already pruned models (`dc.prune_`): the layer's *effective* weight is pruned, and a sparsity is
the fraction of the layer's weights that are zero in total, counting those already pruned (the
same meaning `prune_` gives it when called again). Sparsities at or below a layer's current one
leave it unchanged. Layers already weight-shared (`dc.quantize_`) are refused.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

from ._optional import pyplot
from ._progress import bar as progress_bar
from .distributed import broadcast_object
from .format.writer import write_atomic
from .parametrizations import Masked
from .pruning import magnitude_mask
from .targets import compressible_layers

#: The default grid of per-layer sparsities (fractions of the layer's weights pruned).
DEFAULT_SPARSITIES: tuple[float, ...] = (
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99,
)  # fmt: skip

Evaluate = Callable[[nn.Module], float]


def sensitivity(
    model: nn.Module,
    evaluate: Evaluate,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    layers: Sequence[str] | None = None,
    progress: bool = False,
) -> dict:
    """How much `evaluate` worsens when each layer alone is pruned, without retraining.

    For each compressible layer (as `pruning.compressible_layers` yields them) and each
    sparsity, the layer's weight is pruned by magnitude (`magnitude_mask`, as `prune_` would),
    `evaluate(model)` is called, and the weight is restored exactly. Where a sparsity would
    change no weight (0, or at most the fraction already pruned), `evaluate` is not called and
    the baseline is recorded.

    Args:
        model: any module; left exactly as it was (weights bit-identical, no parametrizations
            added, train/eval flags restored), also when `evaluate` raises.
        evaluate: `evaluate(model) -> float`, lower is better (e.g. validation error in %);
            called once for the baseline, then once per (layer, sparsity) that changes weights.
        sparsities: fractions in [0, 1]; sorted and deduplicated.
        layers: names of the layers to measure (default: every compressible layer).
        progress: a progress bar over the evaluations, on stderr.

    Returns:
        `{"baseline": float, "sparsities": [s, ...], "layers": {layer: {s: value}}}`, layers in
        the model's order.

    Raises:
        ValueError: a sparsity outside [0, 1], an empty grid, an unknown layer name, a layer
            that is weight-shared (or parametrized otherwise than by `prune_`), NaN weights.
    """
    grid = _grid(sparsities)
    chosen = _select(model, layers)
    bar = progress_bar(
        total=len(chosen) * len(grid), desc="sensitivity", unit="eval", enabled=progress
    )
    try:
        with _modes_kept(model):
            baseline = float(evaluate(model))
            if not math.isfinite(baseline):  # every comparison with it would be False
                raise ValueError(f"evaluate gave {baseline} for the unpruned model")
            rows: dict[str, dict[float, float]] = {}
            for name in chosen:
                row = {}
                for s in grid:
                    with _pruned(chosen, {name: s}) as changed:
                        row[s] = float(evaluate(model)) if changed else baseline
                    bar.update(1)
                rows[name] = row
    finally:
        bar.close()
    # rank 0's table on every rank under DDP: each rank's evaluate may see its own shard, and
    # ranks that planned different sparsities would broadcast masks that do not line up
    return broadcast_object({"baseline": baseline, "sparsities": list(grid), "layers": rows})


def tolerated_sparsity(table: Mapping, increase: float) -> dict[str, float]:
    """Per layer, the largest sparsity of the table's grid up to which (that one and every
    smaller one) the layer, pruned alone, stays within `baseline + increase`; 0.0 where none.

    A measure of sensitivity: the smaller, the more sensitive the layer. NaN counts as failing.
    (Sparsity keys may also be strings, as in a table read back from JSON.)
    """
    out = {}
    for name, row in table["layers"].items():
        best, worst = 0.0, -math.inf
        for s in sorted(row, key=float):
            worst = max(worst, _increase(row[s], table["baseline"]))
            if worst > increase:
                break
            best = float(s)
        out[name] = best
    return out


def area_above_baseline(table: Mapping) -> dict[str, float]:
    """Per layer, the area between its curve and the baseline (trapezoids over the table's
    grid, x = fraction pruned): the mean increase times the span of sparsities. Larger is more
    sensitive. Increases are clipped at 0 below; a NaN or infinite value gives inf."""
    out = {}
    for name, row in table["layers"].items():
        keys = sorted(row, key=float)
        xs = [float(s) for s in keys]
        ys = [max(0.0, _increase(row[s], table["baseline"])) for s in keys]
        out[name] = sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:]))
    return out


def auto_sparsity(
    model: nn.Module,
    evaluate: Evaluate,
    budget: float,
    *,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    table: Mapping | None = None,
    layers: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Per-layer sparsities whose combined application keeps `evaluate(model) <= baseline +
    budget`, without retraining.

    From the sensitivity table, each layer gets `tolerated_sparsity(table, t)`: the largest
    sparsity at which that layer alone worsens `evaluate` by at most `t`. The threshold `t` is
    then binary-searched over the table's distinct increases so that the model with *all*
    layers pruned at once, evaluated for real, meets the budget: about log2(layers x grid)
    evaluations. The result is always one that was evaluated and met the budget (at worst all
    0.0: the model as it is). It is the largest such threshold when the combined error grows
    with `t`, as it does in practice; it is not otherwise guaranteed to be.

    This is without retraining: pruning and then retraining (`prune_`, train, `prune_` again,
    ...) reaches much higher sparsities at the same error. Use the result as a starting point:
    its ratios between layers say where the redundancy is.

    Args:
        model: as in `sensitivity`; left exactly as it was.
        evaluate: as in `sensitivity`.
        budget: how much worse than the baseline the combined model may be (>= 0, in the
            units of `evaluate`, e.g. 0.5 points of error).
        sparsities: the grid, if the table is computed here.
        table: a table from `sensitivity(model, evaluate, ...)` to reuse (its grid, layers and
            baseline are used).
        layers: the layers to prune, if the table is computed here (default: all).
        progress: passed to `sensitivity`.

    Returns:
        `{layer: sparsity}` for every layer of the table, usable as
        `dc.prune_(model, sparsity=result)` (which prunes to exactly the masks evaluated here).

    Raises:
        ValueError: a negative or NaN budget, or as `sensitivity`.
    """
    if not budget >= 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if table is None:
        table = sensitivity(model, evaluate, sparsities, layers, progress)
    chosen = _select(model, list(table["layers"]))
    baseline = float(table["baseline"])
    limit = baseline + float(budget)
    thresholds = sorted(
        {
            v
            for row in table["layers"].values()
            for v in _running_max([_increase(row[s], baseline) for s in sorted(row, key=float)])
            if math.isfinite(v)
        }
    )
    none = dict.fromkeys(chosen, 0.0)
    configs: list[dict[str, float]] = []
    for t in thresholds:
        c = tolerated_sparsity(table, t)
        if c != (configs[-1] if configs else none):
            configs.append(c)

    with _modes_kept(model):

        def meets(config: dict[str, float]) -> bool:
            with _pruned(chosen, config) as changed:
                value = float(evaluate(model)) if changed else baseline
            return value <= limit  # False for NaN

        lo, hi = -1, len(configs)  # configs[lo] meets the budget (-1: none); configs[hi] not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if meets(configs[mid]):
                lo = mid
            else:
                hi = mid
    return dict(configs[lo]) if lo >= 0 else none


def plot_sensitivity(
    table: Mapping,
    path: str | os.PathLike,
    *,
    ylabel: str = "evaluate(model), lower is better",
    title: str = "Pruning sensitivity, one layer at a time, no retraining",
) -> None:
    """Draw the table as the paper's Figure 6: one curve per layer, x = fraction of that
    layer's weights pruned, y = the evaluated value; the baseline dashed. Written as a PNG,
    atomically (a temporary file in the same folder, then a rename)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        for name, row in table["layers"].items():
            keys = sorted(row, key=float)
            ax.plot(
                [100 * float(s) for s in keys],
                [float(row[s]) for s in keys],
                marker="o",
                ms=3.5,
                label=name,
            )
        ax.axhline(table["baseline"], color="gray", linestyle="--", linewidth=1, label="unpruned")
        ax.set_xlabel("parameters pruned away (% of the layer)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
    finally:
        plt.close(fig)
    write_atomic(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------


def _grid(sparsities: Sequence[float]) -> list[float]:
    grid = sorted({float(s) for s in sparsities})
    if not grid:
        raise ValueError("no sparsities given")
    bad = [s for s in grid if not 0.0 <= s <= 1.0]
    if bad:
        raise ValueError(f"sparsities must be in [0, 1], got {bad}")
    return grid


def _select(model: nn.Module, names: Sequence[str] | None) -> dict[str, nn.Module]:
    """The layers to prune, in the model's order, each checked to be prunable here."""
    available = dict(compressible_layers(model))
    if isinstance(names, str):
        names = [names]
    if names is not None:
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ValueError(
                f"no prunable layer named {unknown}; prunable layers are {sorted(available)}"
            )
        available = {n: m for n, m in available.items() if n in set(names)}
    for name, module in available.items():
        _stored_weight(name, module)
    return available


def _stored_weight(name: str, module: nn.Module) -> torch.Tensor:
    """The tensor to zero in place so that `module.weight` loses the pruned entries."""
    if not parametrize.is_parametrized(module, "weight"):
        return module.weight
    plist = module.parametrizations.weight
    if len(plist) == 1 and isinstance(plist[0], Masked):
        return plist.original  # weight = where(mask, original, 0)
    raise ValueError(
        f"layer {name!r}: its weight is weight-shared (or has parametrizations other than "
        f"prune_'s mask); measure sensitivity before quantize_"
    )


@contextmanager
def _pruned(layers: Mapping[str, nn.Module], sparsity: Mapping[str, float]) -> Iterator[bool]:
    """Within the block, each named layer is pruned by magnitude to its sparsity (computed on
    its current effective weight, layer after layer, as `prune_` does); afterwards every
    stored weight is written back from a copy. Yields whether any weight changed."""
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for name, s in sparsity.items():
                module = layers[name]
                weight = module.weight.detach()
                drop = ~magnitude_mask(weight, s)
                if not bool(weight[drop].ne(0).any()):
                    continue  # prunes only zeros: nothing changes
                stored = _stored_weight(name, module)
                saved.append((stored, stored.detach().clone()))
                stored.masked_fill_(drop, 0)
        yield bool(saved)
    finally:
        with torch.no_grad():
            for stored, copy in reversed(saved):
                stored.copy_(copy)


@contextmanager
def _modes_kept(model: nn.Module) -> Iterator[None]:
    """Restore every module's train/eval flag afterwards (`evaluate` may call `model.eval()`)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _increase(value: float, baseline: float) -> float:
    v = float(value)
    return math.inf if math.isnan(v) else v - float(baseline)


def _running_max(xs: list[float]) -> list[float]:
    out, m = [], -math.inf
    for x in xs:
        m = max(m, x)
        out.append(m)
    return out
