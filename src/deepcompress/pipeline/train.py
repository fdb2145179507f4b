"""A plain training loop and evaluation, used by `reproduce` and the demo.

Nothing here is special to compression: masks and codebooks live in the model's
parametrizations (see `pruning` and `sharing`), so any ordinary loop such as this one respects
them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .. import devices, distributed
from .._progress import bar as progress_bar
from .data import Split


@dataclass
class TrainConfig:
    """One training phase."""

    epochs: int  # passes over the training split
    lr: float  # peak learning rate (SGD with Nesterov momentum), cosine-decayed to 0
    weight_decay: float = 5e-4  # L2 penalty (0 for codebook fine-tuning)
    momentum: float = 0.9
    batch_size: int = 128
    label_smoothing: float = 0.1  # the best single regulariser found here (PAPER.md)
    shift: int = 2  # random translations of up to +-shift pixels (0: no augmentation)
    warmup_steps: int = 0  # linear learning-rate warm-up
    distill: float = 0.0  # weight of the teacher's soft targets (needs `train(teacher=...)`)
    temperature: float = 4.0  # softening of both sides' logits for distillation


def random_shift(x: torch.Tensor, shift: int, fill: float, gen: torch.Generator) -> torch.Tensor:
    """Translate each image of `x` (B, C, H, W) by its own random integer offset in
    [-shift, shift]^2, filling uncovered pixels with `fill`."""
    if shift == 0:
        return x
    b, c, h, w = x.shape
    padded = nn.functional.pad(x, (shift,) * 4, value=fill)  # (B, C, H+2s, W+2s)
    oy, ox = torch.randint(0, 2 * shift + 1, (2, b), generator=gen)
    rows = (torch.arange(h)[None, :] + oy[:, None])[:, None, :, None]  # (B, 1, H, 1)
    cols = (torch.arange(w)[None, :] + ox[:, None])[:, None, None, :]  # (B, 1, 1, W)
    bi = torch.arange(b)[:, None, None, None]
    ci = torch.arange(c)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def train(
    model: nn.Module,
    data: Split,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    desc: str = "train",
    progress: bool = True,
    teacher: nn.Module | None = None,
    loss: Callable | None = None,
) -> None:
    """Train `model` on `data` for `cfg.epochs` epochs (in place).

    `loss(outputs, targets, inputs)`, if given, replaces the cross-entropy (as `dc.compress`
    passes one for distillation).

    With a `teacher` and `cfg.distill` = a > 0, the loss is (1 - a) x cross-entropy + a x T^2 x
    KL(teacher || model) on logits softened by T = `cfg.temperature` (Hinton et al. 2015): the
    dense model teaches its pruned or weight-shared self.

    Batches are drawn and augmented on the CPU and moved to the model's device.

    Inside a torch.distributed process group, the model is wrapped in DistributedDataParallel
    and each of the N ranks trains on its 1/N of every batch of `cfg.batch_size` (all ranks
    draw the same order and augmentation), so N processes take the same steps as one.
    """
    if cfg.distill > 0 and teacher is None:
        raise ValueError("TrainConfig.distill > 0 needs a teacher model")
    gen = torch.Generator().manual_seed(seed)
    world, rank = (dist.get_world_size(), dist.get_rank()) if distributed.active() else (1, 0)
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    params = [p for p in model.parameters() if p.requires_grad and p.numel() > 0]
    opt = torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = max(1, cfg.epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * step / total))

    device = devices.of(model)
    fill = float(data.x.min())  # the normalised background value
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    model.train()
    step = 0
    bar = progress_bar(total=total, desc=desc, unit="step", enabled=progress and rank == 0)
    for _ in range(cfg.epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            x, y = random_shift(data.x[idx], cfg.shift, fill, gen), data.y[idx]
            xs, ys = x[rank::world].to(device), y[rank::world].to(device)
            logits = net(xs)
            value = loss(logits, ys, xs) if loss is not None else loss_fn(logits, ys)
            if teacher is not None and cfg.distill > 0:
                t = cfg.temperature
                with torch.no_grad():
                    soft = torch.log_softmax(teacher(xs) / t, dim=1)
                kl = nn.functional.kl_div(
                    torch.log_softmax(logits / t, dim=1),
                    soft,
                    log_target=True,
                    reduction="batchmean",
                )
                value = (1 - cfg.distill) * value + cfg.distill * t * t * kl
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            step += 1
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{value.item():.3f}")
    bar.close()
    model.eval()


@torch.no_grad()
def error_rate(model: nn.Module, data: Split, batch_size: int = 2000) -> float:
    """Top-1 error of `model` on `data`, in percent (batches moved to the model's device)."""
    model.eval()
    device = devices.of(model)
    wrong = 0
    for i in range(0, len(data), batch_size):
        pred = model(data.x[i : i + batch_size].to(device)).argmax(1).cpu()
        wrong += int((pred != data.y[i : i + batch_size]).sum())
    return 100.0 * wrong / max(1, len(data))
