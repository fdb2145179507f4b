"""The whole pipeline on a built-in model: train, prune and retrain, share weights and fine-tune
the codebooks, save, then measure the model *decoded from the file*.

Each recipe's hyperparameters were chosen on the validation split (the last 5,000 MNIST
training images, or 20% of the digits); the test split is only read for the final report.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .. import api
from ..checkpoint import read_meta as read_checkpoint_meta
from ..checkpoint import restore, save_checkpoint
from ..coding import codec
from ..devices import resolve as resolve_device
from ..distributed import barrier, broadcast_, is_main, launch
from ..format.writer import atomic_path, write_atomic
from ..parametrizations import shared_parts
from ..phases import SCHEDULES
from ..pruning import prune_
from ..runtime.energy import energy_view
from ..sharing import quantize_
from ..targets import compressible_layers
from .auto import AUTO_BUDGET, compress_auto, layer_weights
from .data import Dataset, Split, load_digits, load_mnist
from .models import build
from .recipes import Recipe, recipe_for, schedule
from .report import format_table, layer_bytes, layer_stats, write_markdown
from .train import TrainConfig, error_rate, train


def _log(msg: str, quiet: bool) -> None:
    """A finished stage's line, on stderr (stdout carries only the result)."""
    if not quiet:
        tqdm.write(msg, file=sys.stderr)


def prune_and_retrain(
    model: torch.nn.Module,
    data: Dataset,
    recipe: Recipe,
    *,
    seed: int = 0,
    quiet: bool = False,
    start: int = 0,
    after_round=None,
    teacher: torch.nn.Module | None = None,
) -> float:
    """Stage 1: iterative pruning, retraining after each round. Returns the validation error.

    `start` skips the rounds already done (when resuming); `after_round(r)` is called after
    round r's retraining (to checkpoint); `teacher` is the dense model, for phases that
    distill (`TrainConfig.distill`)."""
    rounds = schedule(recipe.kept, len(recipe.prune_rounds))
    for r, (sparsity, cfg) in enumerate(zip(rounds, recipe.prune_rounds)):
        if r < start:
            continue
        prune_(model, sparsity=sparsity)
        train(
            model,
            data.train,
            cfg,
            seed=seed + 100 + r,
            desc=f"prune round {r + 1}",
            progress=not quiet,
            teacher=teacher,
        )
        if after_round is not None:
            after_round(r)
    return error_rate(model, data.val)


def share_and_finetune(
    model: torch.nn.Module,
    data: Dataset,
    recipe: Recipe,
    *,
    bits: dict[str, int] | None = None,
    seed: int = 0,
    quiet: bool = False,
    teacher: torch.nn.Module | None = None,
) -> tuple[float, float]:
    """Stage 2: weight sharing, then codebook fine-tuning. Returns the validation errors
    before and after fine-tuning."""
    if recipe.quality is not None and bits is None:
        quantize_(model, quality=recipe.quality, trainable=recipe.trainable, progress=not quiet)
    else:
        quantize_(model, bits=bits or recipe.bits, init=recipe.init, progress=not quiet)
    before = error_rate(model, data.val)
    train(
        model,
        data.train,
        recipe.finetune,
        seed=seed + 200,
        desc="fine-tune codebooks",
        progress=not quiet,
        teacher=teacher,
    )
    return before, error_rate(model, data.val)


def compress(
    model: torch.nn.Module,
    data: Dataset,
    recipe: Recipe,
    out_file: str | os.PathLike,
    *,
    seed: int = 0,
    quiet: bool = False,
    checkpoint: Path | None = None,
    resume: bool = False,
    after_round=None,
) -> tuple[dict, dict]:
    """Prune + retrain, quantize + fine-tune, save `model` (already trained) to `out_file`.

    Args:
        checkpoint: if given, the model is written there after every pruning round, and the
            file is removed once `out_file` is written.
        resume: continue from `checkpoint` if it holds this same run (recipe, seed, data).
        after_round: called with the round number when a round's retraining is done, before
            its checkpoint is written (tests raise there to kill a run mid-round).

    Returns:
        `(stages, trace)`: the stage-by-stage validation errors (in %) and timings; and for the
        report's figures, each compressed layer's weights after each stage (`weights`), its
        codebook (`centroids`) and its bytes when stored pruned but not quantized
        (`pruned_bytes`).
    """
    t0 = time.time()
    trace = {"weights": {"dense": layer_weights(model)}}
    phases = [*recipe.prune_rounds, recipe.finetune]
    teacher = copy.deepcopy(model).eval() if any(c.distill > 0 for c in phases) else None
    tag = json.dumps({"recipe": asdict(recipe), "seed": seed, "n": len(data.train)})
    usable = (
        resume
        and checkpoint is not None
        and checkpoint.is_file()
        and read_checkpoint_meta(checkpoint).get("run") == tag
    )
    start = 0
    if int(broadcast_(torch.tensor([int(usable)]))):  # every rank follows rank 0's choice
        start = restore(model, checkpoint)["round"] + 1
        _log(f"resumed from {checkpoint} after pruning round {start}", quiet)

    def done(r: int) -> None:
        if after_round is not None:
            after_round(r)
        if checkpoint is not None and is_main():
            save_checkpoint(model, checkpoint, {"run": tag, "round": r})

    err = prune_and_retrain(
        model, data, recipe, seed=seed, quiet=quiet, start=start, after_round=done, teacher=teacher
    )
    stages = {"pruned_val_error": err}
    trace["weights"]["pruned + retrained"] = layer_weights(model)
    trace["pruned_bytes"] = layer_bytes(model)
    size = sum(trace["pruned_bytes"].values())
    _log(f"pruned and retrained: validation error {err:.2f}%, weight layers {size} bytes", quiet)
    before, after = share_and_finetune(model, data, recipe, seed=seed, quiet=quiet, teacher=teacher)
    stages["quantized_val_error"], stages["finetuned_val_error"] = before, after
    trace["weights"]["shared + fine-tuned"] = layer_weights(model)
    trace["centroids"] = {
        n: shared_parts(m).codebook.detach().cpu().numpy()
        for n, m in compressible_layers(model)
        if shared_parts(m) is not None
    }
    size = 0
    if is_main():
        raw = codec.DTYPES[recipe.raw_dtype] if recipe.raw_dtype else None
        size = api.save(model, out_file, entropy=recipe.entropy, raw_dtype=raw, progress=not quiet)
        if checkpoint is not None and checkpoint.exists():
            checkpoint.unlink()
    barrier()
    _log(
        f"weight shared: validation error {before:.2f}% -> {after:.2f}% after fine-tuning the "
        f"codebooks; file {size} bytes",
        quiet,
    )
    stages["compress_seconds"] = time.time() - t0
    return stages, trace


def _phase_tag(cfg: TrainConfig) -> dict:
    """A training phase's identity for the reference-model cache. The distillation fields
    came later: left out while off, so caches written before them stay valid."""
    d = asdict(cfg)
    if d["distill"] == 0:
        d.pop("distill")
        d.pop("temperature")
    return d


def reference_model(
    name: str,
    data: Dataset,
    recipe: Recipe,
    cache: Path | None,
    seed: int,
    quiet: bool,
    device: torch.device | None = None,
) -> tuple[torch.nn.Module, bool]:
    """The trained dense model on `device` (None: the CPU): read from `cache` if it is there
    (and matches), else trained and written there. Returns `(model, reused)`."""
    torch.manual_seed(seed)
    model = build(name).to(device)
    tag = json.dumps({"dense": _phase_tag(recipe.dense), "seed": seed, "n": len(data.train)})
    same = False
    if cache is not None and cache.is_file():
        from safetensors import safe_open

        with safe_open(str(cache), "pt") as f:
            same = (f.metadata() or {}).get("recipe") == tag
    if int(broadcast_(torch.tensor([int(same)]))):  # every rank follows rank 0's choice
        model.load_state_dict(load_file(str(cache)))
        return model.eval(), True
    train(model, data.train, recipe.dense, seed=seed, desc="train reference", progress=not quiet)
    if cache is not None and is_main():
        with atomic_path(cache) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(tmp), metadata={"recipe": tag})
    return model.eval(), False


def run(
    name: str,
    out_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    quiet: bool = False,
    epochs_scale: float = 1.0,
    train_limit: int | None = None,
    resume: bool = False,
    after_round=None,
    recipe: str = "paper",
    budget: float = AUTO_BUDGET,
    bound: float | None = None,
    device: str | torch.device | None = None,
    auto_schedule: str | None = None,
) -> dict:
    """`deepcompress reproduce` / `demo`: the whole pipeline; writes OUT/<name>.dcz and
    OUT/report.json and returns the report. A checkpoint is written to OUT/<name>.ckpt after
    every pruning round; with `resume`, a run killed mid-way continues from there (and the
    reference model is reused from OUT/<name>-reference.safetensors), losing at most a round.

    Args:
        name: "lenet-300-100", "lenet-5" or "digits-mlp" (the demo, on bundled data).
        out_dir: folder for the file, the report and the cached reference model.
        data_dir: MNIST folder (see `data.mnist_dir`); unused for digits-mlp.
        seed: seeds the initialisation, the data order and the augmentation.
        quiet: no progress bars or stage lines.
        epochs_scale: multiply every phase's epochs (for quick checks; 1 is the recipe).
        train_limit: train on only the first N training images (for quick checks).
        resume: continue from OUT/<name>.ckpt if it belongs to this same run.
        after_round: see `compress`.
        recipe: "paper" (the paper's sparsities, bits and Huffman coding), "best" (the
            smallest file at the paper's accuracy, chosen on the validation split) or "auto"
            (`dc.compress` chooses everything within `budget` points of validation error).
        budget: for "auto".
        bound: for "auto", instead of `budget`: the validation error (percent) the file may
            reach; the budget is then this bound less the reference's validation error.
        auto_schedule: for "auto", "prune" or "qat" (`phases.SCHEDULES`; None: `dc.compress`'s
            default).
        device: where the models train and run ("cuda", "cuda:1"; None: the CPU). Checked
            before any work; with `run_parallel`'s several processes, the CPU only.
    """
    device = resolve_device(device)
    if auto_schedule is not None and auto_schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, not {auto_schedule!r}")
    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    auto = recipe == "auto"
    chosen = recipe_for(name, "paper" if auto else recipe)
    recipe = chosen.scaled(epochs_scale) if epochs_scale != 1 else chosen
    data = load_digits(seed) if name == "digits-mlp" else load_mnist(data_dir)
    if train_limit is not None:
        data.train = Split(data.train.x[:train_limit], data.train.y[:train_limit])
    # The demo's reference trains in seconds: no cache file in the user's folder for it.
    cache = out / f"{name}-reference.safetensors" if name != "digits-mlp" else None
    model, reused = reference_model(name, data, recipe, cache, seed, quiet, device)
    ref_val, ref_test = error_rate(model, data.val), error_rate(model, data.test)
    _log(
        f"reference {name}: validation error {ref_val:.2f}%, test error {ref_test:.2f}%"
        + (" (reused from cache)" if reused else ""),
        quiet,
    )
    file = out / f"{'demo' if name == 'digits-mlp' else name}.dcz"
    if auto and bound is not None:
        budget = bound - ref_val
        if budget <= 0:
            raise ValueError(
                f"the reference's validation error ({ref_val:.2f}%) is already at the bound "
                f"({bound:g}%): nothing to spend on compression"
            )
        _log(f"budget {budget:.2f} points (bound {bound:g}% - reference {ref_val:.2f}%)", quiet)
    if auto:
        stages, trace = compress_auto(
            model, data, recipe, file, budget=budget, seed=seed, quiet=quiet, resume=resume,
            schedule=auto_schedule,
        )  # fmt: skip
    else:
        stages, trace = compress(
            model,
            data,
            recipe,
            file,
            seed=seed,
            quiet=quiet,
            checkpoint=out / f"{name}.ckpt",
            resume=resume,
            after_round=after_round,
        )

    if not is_main():
        return {}
    decoded = api.load(file, model=build(name).to(device))  # accuracy: of the decoded file
    test_error = error_rate(decoded, data.test)
    rows, size = layer_stats(file)
    original = 4 * sum(p.numel() for p in build(name).parameters())
    report = {
        "model": name,
        "reference_val_error": ref_val,
        "reference_test_error": ref_test,
        **stages,
        "val_error": error_rate(decoded, data.val),
        "test_error": test_error,
        "original_bytes": original,
        "compressed_bytes": size,
        "ratio": original / size,
        "file": str(file),
        "seed": seed,
        "epochs_scale": epochs_scale,
        "train_images": len(data.train),
        "seconds": time.time() - t0,
        "recipe": (
            {"auto": {"budget": budget, "bound": bound, "schedule": auto_schedule}}
            if auto
            else asdict(recipe)
        ),
        "layers": rows,
        "energy": energy_view(file),
    }
    write_atomic(out / "report.json", json.dumps(report, indent=2).encode())
    report["table"] = format_table(rows, size, original)
    write_markdown(report, trace, out)
    return report


def _run_rank(name, out_dir, data_dir, kwargs) -> None:
    run(name, out_dir, data_dir, **{**kwargs, "quiet": kwargs.get("quiet") or not is_main()})


def run_parallel(
    nproc: int, name: str, out_dir: str | os.PathLike, data_dir=None, **kwargs
) -> dict:
    """`run` on `nproc` local processes (torch.distributed, gloo on CPU): each trains on its
    share of every batch; rank 0 writes the files. Returns the report, as `run` does."""
    if nproc == 1:
        return run(name, out_dir, data_dir, **kwargs)
    device = resolve_device(kwargs.get("device"))
    if device is not None and device.type != "cpu":
        raise ValueError(f"--nproc {nproc} trains on the CPU (gloo); use --nproc 1 on {device}")
    launch(_run_rank, nproc, name, str(out_dir), data_dir, kwargs)
    report = json.loads((Path(out_dir) / "report.json").read_text())
    report["table"] = format_table(
        report["layers"], report["compressed_bytes"], report["original_bytes"]
    )
    return report
