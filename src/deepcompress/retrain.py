"""Two helpers for retraining a compressed model inside someone else's loop (`dc.compress`).

- `distillation_loss`: a `loss(outputs, targets, inputs)` that learns from a frozen copy of
  the dense model (Hinton et al. 2015) while the pruned or weight-shared model retrains.
- `recalibrate_batchnorm`: BatchNorm statistics recomputed after a structural change (pruning
  or weight sharing shifts every activation's mean and variance).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from . import devices


def distillation_loss(teacher: nn.Module, weight: float, temperature: float = 4.0):
    """`loss(outputs, targets, inputs)`: the dense model's soft targets mixed with the labels
    for a classifier, the mean squared error to its outputs otherwise (module notes)."""

    def loss(outputs: torch.Tensor, targets: torch.Tensor, inputs) -> torch.Tensor:
        with torch.no_grad():
            soft = teacher(inputs)
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


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable | None) -> None:
    """Recompute every BatchNorm's running statistics as a plain average over `batches`."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if batches is None or not norms:
        return
    device = devices.of(model)
    saved = [(m.momentum, m.training) for m in norms]
    was_training = model.training
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    for batch in batches:
        model((batch[0] if isinstance(batch, tuple | list) else batch).to(device))
    for m, (momentum, training) in zip(norms, saved):
        m.momentum = momentum
        m.train(training)
    model.train(was_training)
