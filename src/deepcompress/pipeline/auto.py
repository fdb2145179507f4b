"""`reproduce --recipe auto`: the built-in models through `dc.compress`, with this harness's
training loop and validation error and no per-layer setting written by hand."""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np
import torch

from ..distributed import active as distributed_active
from ..parametrizations import shared_parts
from ..phases import sparsities
from ..targets import compressible_layers
from .data import Dataset
from .recipes import Recipe
from .report import layer_bytes
from .train import error_rate, train


def layer_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Each compressible layer's weights, as a CPU array (for the report's figures)."""
    return {n: m.weight.detach().cpu().numpy().copy() for n, m in compressible_layers(model)}


#: `--recipe auto`: the allowed rise of the validation error (points) over the reference;
#: the only number `dc.compress` is given besides the reference's training rate and length.
AUTO_BUDGET = 0.1


def compress_auto(
    model: torch.nn.Module,
    data: Dataset,
    recipe: Recipe,
    out_file: str | os.PathLike,
    *,
    budget: float = AUTO_BUDGET,
    seed: int = 0,
    quiet: bool = False,
    resume: bool = False,
    schedule: str | None = None,
) -> tuple[dict, dict]:
    """`--recipe auto`: `dc.compress` with this harness's loop and validation error, and no
    per-layer setting written by hand (only the reference's learning rate, the retraining
    length of the recipe's first pruning round and its number of rounds). `schedule`: one of
    `phases.SCHEDULES` (None: `compress`'s defaults). Returns `(stages, trace)` as `compress`
    does."""
    from ..phases import schedule_options
    from ..schedule import compress as schedule_compress

    if distributed_active():
        raise ValueError("--recipe auto runs on one process (--nproc 1)")
    t0 = time.time()
    template = replace(recipe.prune_rounds[0], distill=0.0)
    trace: dict = {"weights": {"dense": layer_weights(model)}}
    stages: dict = {}

    def fit(m, *, epochs, lr, loss=None):
        cfg = replace(template, epochs=epochs, lr=lr)
        seed_ = int(torch.randint(1 << 30, ()))  # compress seeds each phase
        train(m, data.train, cfg, seed=seed_, desc="retrain", progress=not quiet, loss=loss)

    def on_phase(stage: str, m: torch.nn.Module, err: float) -> None:
        if stage == "pruned":
            stages["pruned_val_error"] = err
            stages["pruned"] = max(sparsities(m).values(), default=0.0) > 0  # "qat": none
            key = "pruned + retrained" if stages["pruned"] else "before sharing"
            trace["weights"][key] = layer_weights(m)
            trace["pruned_bytes"] = layer_bytes(m)
        elif stage == "shared":
            tried.append({"quantized_val_error": err})
        else:
            tried[-1]["finetuned_val_error"] = err
            tried[-1]["weights"] = layer_weights(m)
            tried[-1]["centroids"] = {
                n: shared_parts(x).codebook.detach().cpu().numpy()
                for n, x in compressible_layers(m)
                if shared_parts(x) is not None
            }

    tried: list[dict] = []  # every sharing attempt, in the order of the summary's history
    summary = schedule_compress(
        model,
        train=fit,
        evaluate=lambda m: error_rate(m, data.val),
        out=out_file,
        budget=budget,
        lr=recipe.dense.lr,
        rounds=len(recipe.prune_rounds),
        epochs=recipe.prune_rounds[0].epochs,
        seed=seed,
        resume=resume,
        progress=not quiet,
        on_phase=on_phase,
        **schedule_options(schedule),
    )
    # the report shows the attempt whose file was kept (the last one tried may be refused)
    shares = [h for h in summary.history if h["phase"] == "quantize"]
    kept = [
        i
        for i, h in enumerate(shares)
        if (h["bytes"], h["error"]) == (summary.bytes, summary.error)
    ]
    pick = tried[kept[-1]] if kept and len(tried) == len(shares) else (tried or [None])[-1]
    if pick is None:  # resumed with no sharing left to try: the file's own figures
        pick = {"quantized_val_error": summary.error, "finetuned_val_error": summary.error,
                "weights": layer_weights(summary.model), "centroids": {}}  # fmt: skip
    stages.update({k: pick[k] for k in ("quantized_val_error", "finetuned_val_error")})
    trace["weights"]["shared + fine-tuned"], trace["centroids"] = pick["weights"], pick["centroids"]
    stages["compress_seconds"] = time.time() - t0
    return stages, trace
