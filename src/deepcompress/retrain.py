"""Two helpers for retraining a compressed model inside someone else's loop (`dc.compress`).

- `distillation_loss`: a `loss(outputs, targets, inputs)` that learns from a frozen copy of
  the dense model (Hinton et al. 2015) while the pruned or weight-shared model retrains.
- `recalibrate_batchnorm`: BatchNorm statistics recomputed after a structural change (pruning
  or weight sharing shifts every activation's mean and variance).
- `trainable_copy`: a copy of the dense model to retrain, with the user's frozen parameters
  still frozen.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Iterator, Sized

import torch
from torch import nn

from . import devices


def distillation_loss(teacher: nn.Module, weight: float, temperature: float = 4.0):
    """`loss(outputs, targets, inputs)`: the dense model's soft targets mixed with the labels
    for a classifier, the mean squared error to its outputs otherwise (module notes).
    `inputs` as the model takes them (a tuple or list: its positional arguments; a dict: its
    keyword arguments); `outputs` as it returns them, or their main tensor: of a dict, tuple or
    list output, the first floating-point tensor (a classifier's logits), the teacher's alike."""

    def loss(outputs, targets: torch.Tensor, inputs) -> torch.Tensor:
        with torch.no_grad():
            if isinstance(inputs, dict):
                soft = teacher(**inputs)
            else:
                soft = teacher(*inputs) if isinstance(inputs, (tuple, list)) else teacher(inputs)
        outputs, soft = _main(outputs, "outputs"), _main(soft, "the dense model's output")
        if soft.shape != outputs.shape:
            raise ValueError(
                f"distillation: the dense model's output for these inputs is "
                f"{tuple(soft.shape)} but the outputs given to loss are {tuple(outputs.shape)}; "
                "call loss(model(x), y, x) on the output unreshaped, or pass distill=0"
            )
        classifier = (
            outputs.dim() == 2 and targets is not None and not targets.is_floating_point()
            and targets.dim() == 1
        )  # fmt: skip
        if not classifier:
            return nn.functional.mse_loss(outputs, soft)
        t = temperature
        kl = nn.functional.kl_div(
            torch.log_softmax(outputs / t, dim=1), torch.log_softmax(soft / t, dim=1),
            log_target=True, reduction="batchmean",
        )  # fmt: skip
        return (1 - weight) * nn.functional.cross_entropy(outputs, targets) + weight * t * t * kl

    return loss


def _main(out, what: str) -> torch.Tensor:
    """The first floating-point tensor of a model's output (itself, or in a dict, tuple or
    list, depth first); ValueError if there is none."""
    if isinstance(out, torch.Tensor) and out.is_floating_point():
        return out
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    for item in items:
        try:
            return _main(item, what)
        except ValueError:
            continue
    raise ValueError(f"distillation: {what} holds no floating-point tensor; pass distill=0")


def train_checked(train, model: nn.Module, **kw) -> None:
    """`train(model, **kw)` (the user's loop, as `compress` calls it), with a UserWarning if it
    computed gradients but changed none of the model's trainable parameters: an optimizer made
    once, outside `train`, holds another copy's parameters (each phase hands `train` a model
    whose parameters may be new objects: sharing adds codebooks, an undone round restores a
    copy). A `train` that does nothing (no retraining wanted) is not warned of. The model
    comes in training mode (`evaluate` may have left it in eval mode), as a loop that never
    calls `model.train()` expects; a loop that sets a mode of its own still does."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def sums() -> list[float]:
        return [float(p.detach().double().sum()) for p in params]

    was = sums()
    train(model, **kw)
    graded = any(p.grad is not None and bool(p.grad.any()) for p in params)
    if graded and sums() == was:
        warnings.warn(
            "compress: train() changed no trainable parameter of the model it was given; "
            "create the optimizer inside train, from that model's parameters",
            stacklevel=3,
        )


def calibration_batches(calibration: Iterable | None) -> Iterable | None:
    """`compress`'s `calibration`, ready to be read after every change: an iterator read into
    a list once; ValueError if it holds no batches."""
    if isinstance(calibration, Iterator):
        calibration = list(calibration)
    if isinstance(calibration, Sized) and not len(calibration):
        raise ValueError("calibration holds no batches")
    return calibration


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable | None) -> None:
    """Recompute every BatchNorm's running statistics as a plain average over `batches`.

    Raises:
        ValueError: `batches` gave none (an iterator already used up); the statistics are
            left as they were, not reset to their defaults.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if batches is None or not norms:
        return
    device = devices.of(model)
    saved = [(m.momentum, m.training, copy.deepcopy(m.state_dict())) for m in norms]
    was_training = model.training
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    seen = 0
    for batch in batches:
        model((batch[0] if isinstance(batch, tuple | list) else batch).to(device))
        seen += 1
    for m, (momentum, training, state) in zip(norms, saved):
        m.momentum = momentum
        m.train(training)
        if not seen:
            m.load_state_dict(state)
    model.train(was_training)
    if not seen:
        raise ValueError(
            "calibration gave no batches (an iterator already used up?): pass a list of "
            "batches or a DataLoader, which can be read again after each change"
        )


def trainable_copy(dense: nn.Module, frozen: set[str]) -> nn.Module:
    """A copy of `dense` (frozen for distillation) to retrain: every parameter trainable
    except those named in `frozen` (the ones the user froze, kept so through resumes)."""
    model = copy.deepcopy(dense)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    return model
