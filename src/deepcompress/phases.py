"""The steps of `schedule`: a `Phase` (prune or share, then retrain) and the pure pieces the
schedule is made of (the pruning rounds' kept fractions, backing a round off, measuring a
model's sparsities). `plan` lists them for a user's loop; `schedule.compress` runs them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .analysis import sensitivity, tolerated_sparsity
from .coding.coders import check_entropy
from .pruning import prune_
from .selection import every_weight, per_layer, shared_layers
from .settings import check_keys, check_raw_dtype
from .sharing import TRAINABLE, quantize_
from .targets import compressible_layers, named_weights, weight_groups

PRUNE_LR = 0.4  # retraining after pruning, as a fraction of the dense model's rate
#: A layer's target: the largest sparsity it tolerates alone within TOLERANCE x budget.
TOLERANCE = 4.0
#: The sensitivity grid: finer at the high sparsities where the big layers end up.
GRID = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98)
FINETUNE_LR = 0.01  # codebook fine-tuning
#: What rate-distortion sharing's fine-tuning trains by default in `quantize_` and `plan`
#: (`compress`'s default schedule trains the weights: SCHEDULES below).
RD_TRAINABLE = "codebook"
#: Fine-tuning the weights through the grid retrains them as after pruning: at the centroids'
#: rate (FINETUNE_LR) they barely move (CREPE tiny, Adam: 0.1 x lr left the error 10 points
#: above 0.5 x lr after 500 steps at quality -1, RESULTS.md, issue 17).
QAT_LR = PRUNE_LR
#: `compress`'s two schedules, as its (prune, sharing, trainable) arguments: "prune" is the
#: paper's order (prune iteratively, share, fine-tune the codebooks); "qat" shares at once at
#: rate-distortion levels whose zero level prunes, training the weights through the grid.
SCHEDULES = {
    "prune": {"prune": True, "sharing": "auto", "trainable": "codebook"},
    "qat": {"prune": False, "sharing": "rd", "trainable": "weights"},
}


def schedule_options(schedule: str | None = None, **overrides) -> dict:
    """`compress`'s keyword arguments for the named schedule (None: its defaults), with each
    override that is not None in place of the schedule's (e.g. `sharing="kmeans"`)."""
    if schedule is not None and schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, not {schedule!r}")
    options = dict(SCHEDULES[schedule]) if schedule else {}
    options.update({k: v for k, v in overrides.items() if v is not None})
    return options


@dataclass
class Summary:
    """What `compress` did: the file, its ratio and the errors of the model decoded from it."""

    path: Path
    bytes: int
    ratio: float  # 4 bytes per floating-point parameter of the model / file size
    error: float  # evaluate() of the model decoded from the file
    dense_error: float
    model: nn.Module  # the decoded model, ready to run
    sparsity: dict[str, float]  # per layer, and per bare weight (an LSTM's) by tensor name
    bits: dict[str, int]  # the same, the bits of its codebook's index (levels + zero)
    history: list[dict]  # one entry per phase tried: its kind, settings and error
    quality: float | None = None  # the rate-distortion sharing's quality (None: k-means)
    check_error: float | None = None  # check() of the decoded model (None: no check given)
    dense_check_error: float | None = None
    energy: dict = field(default_factory=dict)  # `dc.energy_view` of the file (the paper's)


@dataclass
class Phase:
    """One step of the schedule: apply it, then train `epochs` epochs at peak rate `lr`."""

    kind: str  # "prune" or "quantize"
    epochs: int
    lr: float
    sparsity: dict[str, float] = field(default_factory=dict)  # layer -> total sparsity
    bits: dict[str, int] = field(default_factory=dict)  # layer -> bits per cluster index
    quality: float | None = None  # rate-distortion sharing at this quality instead of bits
    trainable: str = "codebook"  # with `quality`, "weights": quantization-aware (`quantize_`)
    exclude: tuple[str, ...] = ()  # patterns of weights the sharing leaves alone

    def apply(self, model: nn.Module) -> nn.Module:
        """`prune_` to this phase's sparsities (only where they rise) or `quantize_`."""
        if self.kind == "prune":
            now = sparsities(model)
            rise = {n: s for n, s in self.sparsity.items() if s > now.get(n, 0.0) + 1e-9}
            return prune_(model, sparsity=rise) if rise else model
        if self.quality is not None:
            quality = every_weight(model, self.quality, self.exclude)
            return quantize_(model, quality=quality, trainable=self.trainable)
        return quantize_(model, bits=self.bits)


def share_settings(
    model: nn.Module, setting, rd: bool, trainable: str = RD_TRAINABLE, exclude=()
) -> dict:
    """A sharing phase's settings: rate-distortion at quality `setting` (fine-tuning
    `trainable`), or k-means bits; none for the weights an `exclude` pattern reaches."""
    if rd:
        return {"quality": setting, "trainable": trainable, "exclude": tuple(exclude)}
    return {"bits": per_layer(model, setting, exclude)}


def share_rate(rd: bool, trainable: str, lr: float) -> float:
    """A sharing phase's fine-tuning rate: `QAT_LR x lr` for weights trained through the
    rate-distortion grid, else the centroids' `FINETUNE_LR x lr`."""
    return (QAT_LR if rd and trainable == "weights" else FINETUNE_LR) * lr


#: `compress`'s weight sharing: "kmeans", "rd" (rate-distortion) or "auto" (both, the smaller)
SHARING = ("auto", "kmeans", "rd")


def check_sharing(sharing: str, trainable: str | None) -> str:
    """`compress`'s `trainable` (None: "weights", or "codebook" with k-means, which has no
    grid to train the weights through), checked with `sharing`; ValueError otherwise."""
    if sharing not in SHARING:
        raise ValueError(f"sharing must be one of {SHARING}, not {sharing!r}")
    if trainable is None:
        trainable = "codebook" if sharing == "kmeans" else "weights"
    if trainable not in TRAINABLE or (trainable, sharing) == ("weights", "kmeans"):
        raise ValueError(f"trainable: 'codebook', or 'weights' without kmeans; not {trainable!r}")
    return trainable


def check_exclude(model: nn.Module, exclude) -> tuple[str, ...]:
    """`exclude` as a tuple of patterns, each checked to reach a weight (ValueError naming it
    and the candidates otherwise, as the verbs' settings do)."""
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    layers = [f"{n}.weight" if n else "weight" for n, _ in compressible_layers(model)]
    check_keys(weight_groups(model), None, exclude, others=layers)  # weight_norm'd ones too
    return exclude


def check_arguments(
    budget, lr, rounds, epochs, distill=0.0, extra=0, entropy="auto", raw_dtype=None
) -> None:
    """ValueError (one line) for any argument of `compress`/`plan` out of its range."""
    check_entropy(entropy)
    check_raw_dtype(raw_dtype)
    if not budget >= 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if rounds < 1 or epochs < 1:
        raise ValueError(f"rounds and epochs must be >= 1, got {rounds} and {epochs}")
    if not 0 <= distill <= 1:
        raise ValueError(f"distill must be in [0, 1] (the soft targets' share), got {distill}")
    if extra < 0:
        raise ValueError(f"extra must be >= 0, got {extra}")


def edge(base: float, allowance: float) -> float:
    """The largest error within `allowance` of `base`, with room for rounding: 0.7 + 0.1 is
    0.7999999999999999 in floats, and an error rate summed in float32 (46 / 5,000 as 0.92000002
    against 0.82 + 0.1) is off by a few parts in 10^8 of its size."""
    return base + allowance + 1e-6 * max(1.0, abs(base) + abs(allowance))


def prune_phases(target: dict[str, float], rounds: int, epochs: int, lr: float) -> list[Phase]:
    """Kept fractions falling geometrically to the targets over `rounds` rounds."""
    return [
        Phase(
            "prune",
            2 * epochs if r == rounds - 1 else epochs,
            PRUNE_LR * lr,
            sparsity={n: 1.0 - (1.0 - s) ** ((r + 1) / rounds) for n, s in target.items()},
        )
        for r in range(rounds)
    ]


def back_off(target: dict[str, float], phase: Phase, was: dict[str, float]) -> list[str]:
    """Set the target of every layer that `phase` pruned further than it stood (`was`)
    halfway back, in log kept fraction, to where it stood; the layers moved (none: nothing
    left to back off)."""
    moved = []
    for name, s in phase.sparsity.items():
        if s > was.get(name, 0.0) + 1e-3:
            kept_was, kept_target = 1.0 - was.get(name, 0.0), 1.0 - target[name]
            target[name] = 1.0 - math.sqrt(kept_was * kept_target)
            moved.append(name)
    return moved


def sparsities(model: nn.Module) -> dict[str, float]:
    """Each compressible layer's fraction of zero weights, and each bare weight's
    (`targets.bare_weights`, under its tensor name)."""
    out = {}
    for name, module, tname in named_weights(model):
        w = getattr(module, tname).detach()
        out[name] = float((w == 0).sum()) / max(1, w.numel())
    return out


def fmt(d: dict[str, float]) -> str:
    return json.dumps({k: round(v, 3) for k, v in d.items()})


def plan(
    model: nn.Module,
    *,
    evaluate: Callable[[nn.Module], float],
    budget: float,
    lr: float,
    rounds: int = 3,
    epochs: int = 2,
    bits: dict[str, int] | None = None,
    quality: float | None = None,
    trainable: str = RD_TRAINABLE,
    table: dict | None = None,
    progress: bool = False,
    exclude: Iterable[str] = (),
) -> list[Phase]:
    """The schedule for `model` (trained, not yet pruned): `rounds` pruning phases towards the
    per-layer targets that the sensitivity table gives (module notes), then one weight-sharing
    phase. `epochs` is the retraining length per pruning round (the last round and the
    fine-tuning get twice as many); `bits` fixes the bits per layer or kind instead of the
    default `{"conv": 6, "linear": 4, "embedding": 4}`, or `quality` makes it rate-distortion
    sharing (`compress` chooses either by measured error instead), fine-tuning `trainable`
    ("weights": through the grid, at QAT_LR x lr). Measures the sensitivity unless `table` is
    given; leaves `model` as it was. `exclude`: patterns of weights (layer or tensor names,
    globs) never pruned or shared.
    """
    check_arguments(budget, lr, rounds, epochs)
    exclude = check_exclude(model, exclude)
    layers = shared_layers(model, exclude)
    if table is None:
        table = sensitivity(model, evaluate, GRID, layers=layers, progress=progress)
    target = tolerated_sparsity(table, TOLERANCE * budget)
    target = {n: s for n, s in target.items() if n in layers}  # a given table's too
    phases = prune_phases(target, rounds, epochs, lr)
    if quality is not None and bits is not None:
        raise ValueError("give bits or quality, not both")
    chosen = bits if bits is not None else {"conv": 6, "linear": 4, "embedding": 4}
    rd = quality is not None
    share = share_settings(model, quality if rd else chosen, rd, trainable, exclude)
    phases.append(Phase("quantize", 2 * epochs, share_rate(rd, trainable, lr), **share))
    return phases


def rounds_file(out: Path, r: int) -> Path:
    """Where the model after accepted pruning round `r` is kept (for the held-out check)."""
    return Path(f"{out}.round{r}.ckpt")


def earlier_file(out: Path, i: int) -> Path:
    """Where the file of kept quantization-aware step `i` waits, once a later one is kept, for
    the held-out check to step back to."""
    return Path(f"{out}.rd.{i}.tmp")


def qat_file(out: Path, i: int) -> Path:
    """Where the model of kept quantization-aware step `i` is kept (for resume)."""
    return Path(f"{out}.qat{i}.ckpt")
