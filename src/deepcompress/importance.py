"""Data-aware distortion: how much each weight's error moves a model's output, from a few batches.

Post-training compression minimises a weighted squared error, sum_i h_i (w_i - q_i)**2
(`ecsq`). With h_i = 1 (the default, data-free) every weight counts alike, while their effect
on the output differs by orders of magnitude: an LSTM's weights on a quiet input, a conv channel
that a BatchNorm scales down. `importance` estimates, for every floating-point parameter, the
diagonal of the Gauss-Newton matrix of the output,

    h_i = E_x sum_k (d y_k / d w_i)**2,

the second-order term of the output's squared change when w_i alone moves (Choi et al.'s
Hessian-weighted k-means, the diagonal of the Fisher information of SqueezeLLM, for the output
rather than a loss: no labels needed). It uses random projections: for r with independent
standard normal entries, E_r (r . dy/dw_i)**2 = sum_k (dy_k/dw_i)**2, so each backward pass of
sum(r * y) gives an unbiased estimate of h for the whole batch at the cost of one gradient.

    h = dc.importance(model, [x1, x2, x3])
    dc.encode_state_dict(model.state_dict(), "m.dcz", importance=h)

It sees only what the batches exercise: a weight they never reach (a classifier row of a class
absent from them) gets about zero and loses its precision. On the Resemblyzer encoder 64
inputs made files 12-21% smaller at equal fidelity; on CREPE they made them larger (RESULTS.md,
issue 20): check a calibrated file on inputs the batches did not include.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ._progress import bar


def importance(
    model: nn.Module,
    batches: Iterable,
    *,
    projections: int = 2,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-weight output sensitivity `{name: tensor}` (names and shapes of `model.state_dict()`'s
    floating-point parameters), averaged over `batches`.

    Args:
        model: any module; it is run in eval mode (its mode is restored) on each batch.
        batches: inputs as the model takes them: a tensor, or a tuple/list of positional
            arguments. The outputs may be a tensor or a tuple/list/dict of tensors (all count).
        projections: random projections of the output per batch (backward passes).
        seed: for the projections.
        progress: show a progress bar over the batches.

    Raises:
        ValueError: no batches, or an output with no floating-point tensor.
    """
    params = {n: p for n, p in model.named_parameters() if p.is_floating_point()}
    total = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    count = 0
    try:
        for batch in bar(batches, desc="importance", unit="batch", enabled=progress):
            args = batch if isinstance(batch, (tuple, list)) else (batch,)
            for _ in range(projections):
                outputs = _tensors(model(*args))
                if not outputs:
                    raise ValueError("the model's output holds no floating-point tensor")
                f = sum((torch.randn(y.shape, generator=gen).to(y) * y).sum() for y in outputs)
                names = [n for n, p in params.items() if p.requires_grad]
                grads = torch.autograd.grad(f, [params[n] for n in names], allow_unused=True)
                for n, g in zip(names, grads):
                    if g is not None:
                        total[n] += g.detach().double() ** 2
                count += 1
    finally:
        model.train(was_training)
    if not count:
        raise ValueError("importance needs at least one batch")
    return {n: (t / count).to(torch.float32).cpu() for n, t in total.items()}


def _tensors(out) -> list[torch.Tensor]:
    """The floating-point tensors of a model's output (nested tuples, lists and dicts)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []
