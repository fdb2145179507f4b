"""The searches `schedule.compress` runs to share weights within an error budget: the fewest
k-means bits per kind of layer, or the lowest rate-distortion quality, whose quantized model
(before any fine-tuning) keeps the user's `evaluate` within a limit; and the one that
`encode_state_dict(size=)` runs, the highest quality whose file fits (`fit_size`)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

from torch import nn

from .parametrizations import shared_parts
from .settings import matches
from .sharing import quantize_
from .targets import (
    bare_weights,
    compressible_layers,
    dedup,
    model_state,
    named_weights,
    weight_groups,
)

#: The k-means bits tried per kind of layer, fewest first (also the fewest `step` goes to), and
#: the most any may get.
BITS = {"conv": (4, 5, 6, 8), "linear": (3, 4, 5, 6), "embedding": (3, 4, 5, 6)}
MAX_BITS = 8
#: The rate-distortion qualities tried (`sharing.quantize_`), lowest (fewest bytes) first, and
#: the range `step` moves in.
QUALITIES = (0, 1, 2, 3, 4, 5, 6, 7, 8)
MIN_QUALITY, MAX_QUALITY = -4, 8

Evaluate = Callable[[nn.Module], float]


def kind_of(module: nn.Module) -> str:
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    return "embedding" if isinstance(module, nn.Embedding | nn.EmbeddingBag) else "linear"


def reachable(model: nn.Module, exclude: Iterable[str] = ()) -> set[str]:
    """The tensor names `compress` may prune and share: every name of `targets.weight_groups`
    (a weight split by `weight_norm` has none) whose tie no `exclude` pattern reaches through
    any of its names (one tensor: excluding the embedding excludes the head tied to it)."""
    out = set()
    for group in weight_groups(model):
        names = [n for slot in group for n in slot.names]
        if not any(matches(p, n) for p in exclude for n in names):
            out.update(names)
    return out


def shared_layers(model: nn.Module, exclude: Iterable[str] = ()) -> list[str]:
    """The layers (`compressible_layers`) whose weight `compress` measures, prunes and shares."""
    return _layers_in(model, reachable(model, exclude))


def _layers_in(model: nn.Module, ok: set[str]) -> list[str]:
    """The layers whose weight's name is in `ok` (a `reachable` set)."""
    return [n for n, _ in compressible_layers(model) if (f"{n}.weight" if n else "weight") in ok]


def every_weight(model: nn.Module, value, exclude: Iterable[str] = ()) -> dict[str, object]:
    """`value` for each weight `compress` shares, by name: every layer's (`shared_layers`) and
    every bare weight's (`targets.bare_weights`, such as an LSTM's) that `reachable` gives; a
    setting for `quantize_` that reaches them all."""
    ok = reachable(model, exclude)
    bare = [n for n, *_ in bare_weights(model) if n in ok]
    return dict.fromkeys(_layers_in(model, ok) + bare, value)


def per_layer(model: nn.Module, bits: dict[str, int], exclude: Iterable[str] = ()) -> dict:
    """Bits per layer from bits per layer name or per kind, for the layers `bits` reaches, and
    for the bare weights (`targets.bare_weights`, under their tensor names) by the kind they
    stand in for; none that an `exclude` pattern reaches. The layers of one tied weight (an
    embedding shared with the output layer) all get the most bits any of them would: one
    tensor, one codebook."""
    out = {}
    for name, module in compressible_layers(model):
        b = bits.get(name, bits.get(kind_of(module)))
        if b is not None:
            out[name] = int(b)
    for name, _, _, kind in bare_weights(model):
        if (b := bits.get(name, bits.get(kind))) is not None:
            out[name] = int(b)
    ok = reachable(model, exclude)
    ok |= set(_layers_in(model, ok))
    out = {n: b for n, b in out.items() if n in ok}
    keys = {name: key for name, _, _, key in model_state(model)}
    groups, _ = dedup((n, keys.get(f"{n}.weight" if n else "weight")) for n in out)
    for names in groups.values():
        most = max(out[n] for n in names)
        out.update(dict.fromkeys(names, most))
    return out


def choose_bits(model: nn.Module, evaluate: Evaluate, limit: float, exclude=()) -> dict:
    """Per kind, the fewest bits (of BITS) whose quantized model, before fine-tuning and with
    the other kinds at their most bits, keeps `evaluate` within `limit`; leaves `model` as it
    was."""
    kinds = {kind_of(m) for _, m in compressible_layers(model)}
    kinds = sorted(kinds | {kind for *_, kind in bare_weights(model)})
    chosen = {k: BITS[k][-1] for k in kinds}
    for kind in kinds:
        for b in BITS[kind]:
            trial = copy.deepcopy(model)
            quantize_(trial, bits=per_layer(trial, {**chosen, kind: b}, exclude))
            if float(evaluate(trial)) <= limit:
                chosen[kind] = b
                break
    return chosen


def choose_quality(
    model: nn.Module, evaluate: Evaluate, limit: float, trainable: str = "codebook", exclude=()
) -> float:
    """The lowest of QUALITIES whose rate-distortion shared model (`quantize_`'s `trainable`),
    before fine-tuning, keeps `evaluate` within `limit` (the highest if none does); leaves
    `model` as it was."""
    for q in QUALITIES:
        trial = copy.deepcopy(model)
        quality = every_weight(trial, q, exclude)
        shared = quantize_(trial, quality=quality, trainable=trainable)
        if float(evaluate(shared)) <= limit:
            return q
    return QUALITIES[-1]


def step(setting, rd: bool, by: int):
    """The sharing setting one step up (`by` = 1) or down (-1) from `setting`: a quality
    (`rd`), or every kind's bits (k-means); None where none moves (at the range's end)."""
    if rd:
        moved = min(MAX_QUALITY, max(MIN_QUALITY, setting + by))
        return moved if moved != setting else None
    moved = {k: min(MAX_BITS, max(BITS[k][0], b + by)) for k, b in setting.items()}
    return moved if moved != setting else None


def index_bits(model: nn.Module) -> dict[str, int]:
    """Per shared layer (and bare weight, under its tensor name), the bits of an index into
    its codebook and zero."""
    out = {}
    for name, module, tname in named_weights(model):
        shared = shared_parts(module, tname)
        if shared is not None:
            out[name] = max(1, int(shared.codebook.numel()).bit_length())
    return out


def fit_size(encode_at, measure, size: int, lo: float, hi: float, start: float, probes: int = 6):
    """For `encode_state_dict(size=)`: `encode_at`'s result at the highest common quality in
    [lo, hi] whose file is at most `size` bytes, to 2**-probes of a quality step of 2: steps
    of 2 from `start` until the size is bracketed (the file's size falls with the quality),
    then bisection."""

    def fits(q: float):
        found = encode_at(q)
        return found if measure(*found) <= size else None

    q = start
    best = fits(q)
    if best is not None:  # climb while it fits
        while q < hi and (above := fits(min(q + 2, hi))) is not None:
            q, best = min(q + 2, hi), above
        if q >= hi:
            return best
        low, high = q, min(q + 2, hi)
    else:  # descend until it fits
        while best is None:
            if q <= lo:
                smallest = measure(*encode_at(lo))
                raise ValueError(f"no file of at most {size} bytes: {smallest} at quality {lo:g}")
            q = max(q - 2, lo)
            best = fits(q)
        low, high = q, min(q + 2, hi)
    for _ in range(probes):
        mid = (low + high) / 2
        found = fits(mid)
        if found is not None:
            low, best = mid, found
        else:
            high = mid
    return best
