"""Rate-distortion weight sharing (`quantize_(quality=...)`) in `--recipe best`, chosen on the
validation split across seeds (issue 20).

Per seed: the reference model (OUT/<model>-s<seed>-reference.safetensors, trained here if
absent), pruned and retrained once with `--recipe best`'s sparsities and training (kept in
OUT/<model>-s<seed>-pruned.ckpt), then shared and fine-tuned once per variant: "kmeans" (the
recipe's k-means bits, as `--recipe best` is today) and each `--qualities` value; every file is
written with the recipe's coders and biases and decoded, and its validation error measured.
The test split is never read. One JSON line per (seed, variant).

The rule, written before the first run: the lowest quality whose decoded validation error,
averaged over the seeds, is no higher than that of the k-means files (plus 0.02 points: one
image in 5,000); if none is, `--recipe best` keeps k-means. The same rule for the variants of
`--trainable weights --finetune-lr 0.02` (2026-12-04, before their run: the weights trained
through the grid at the recipe's retraining rate, 0.4x the dense rate as `compress`'s QAT_LR,
rather than at the centroids' fine-tuning rate 0.0005, at which they barely move).
LeNet-5 (2026-12-04, tenth session, before its first run): the same rule, over `--qualities 0 1
2 --trainable weights --finetune-lr 0.02` (LeNet-5's retraining rate too) against the k-means
variant, three seeds; the test split is read only afterwards, once, from the chosen variant's
files (`--test VARIANT`, which trains nothing).

    python benchmarks/sweep_rd.py lenet-300-100 --seeds 0 1 2 --out runs/rd \
        --qualities -1 0 1 2 3
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

from _common import DEV_MNIST
from safetensors.torch import load_file

from deepcompress import api
from deepcompress.checkpoint import restore, save_checkpoint
from deepcompress.coding import codec
from deepcompress.pipeline.data import load_mnist
from deepcompress.pipeline.models import build
from deepcompress.pipeline.recipes import BEST, RECIPES
from deepcompress.pipeline.reproduce import prune_and_retrain, reference_model, share_and_finetune
from deepcompress.pipeline.train import error_rate


def pruned_model(name, data, recipe, out: Path, seed: int):
    """The seed's reference model and its pruned + retrained copy (cached in `out`)."""
    ref, _ = reference_model(
        name, data, recipe, out / f"{name}-s{seed}-reference.safetensors", seed, quiet=True
    )
    teacher = copy.deepcopy(ref).eval() if recipe.finetune.distill > 0 else None
    path = out / f"{name}-s{seed}-pruned.ckpt"
    model = copy.deepcopy(ref)
    if path.is_file():
        restore(model, path)
    else:
        prune_and_retrain(model, data, recipe, seed=seed, quiet=True, teacher=teacher)
        save_checkpoint(model, path, {"seed": seed})
    return ref, model, teacher


def report_test(name: str, data, out: Path, seeds: list[int], variant: str) -> None:
    """One JSON line per seed: the file of `variant` decoded, its validation and test errors,
    and the reference's (the test split's only reader here)."""
    original = 4 * sum(p.numel() for p in build(name).parameters())
    for seed in seeds:
        file = out / f"{name}-s{seed}-{variant}.dcz"
        reference = out / f"{name}-s{seed}-reference.safetensors"
        if not file.is_file() or not reference.is_file():
            raise SystemExit(f"no {file} or {reference}: run the sweep for seed {seed} first")
        ref = build(name)
        ref.load_state_dict(load_file(str(reference)))
        decoded = api.load(file, model=build(name))
        row = {
            "seed": seed,
            "variant": variant,
            "reference_val_error": round(error_rate(ref.eval(), data.val), 2),
            "reference_test_error": round(error_rate(ref, data.test), 2),
            "val_error": round(error_rate(decoded, data.val), 2),
            "test_error": round(error_rate(decoded, data.test), 2),
            "bytes": file.stat().st_size,
            "ratio": round(original / file.stat().st_size, 1),
        }
        print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=sorted(BEST))
    ap.add_argument("--out", default="runs/rd")
    ap.add_argument("--data", default=DEV_MNIST, help="MNIST folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--qualities", type=float, nargs="+", default=[-1, 0, 1, 2, 3])
    ap.add_argument("--no-kmeans", action="store_true", help="skip the k-means variant")
    ap.add_argument(
        "--trainable", choices=["codebook", "weights"], default="codebook",
        help="what the quality variants' fine-tuning trains (quantize_'s `trainable`)",
    )  # fmt: skip
    ap.add_argument("--finetune-lr", type=float, help="the quality variants' fine-tuning lr")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="for a quick trial only")
    ap.add_argument(
        "--test", metavar="VARIANT",
        help="train nothing: the decoded validation and test errors of the files of VARIANT "
        "(a tag of an earlier run, e.g. q0-w-lr0.02), once the rule has chosen it",
    )  # fmt: skip
    args = ap.parse_args()
    out = Path(args.out)
    data = load_mnist(args.data)
    if args.test:
        report_test(args.model, data, out, args.seeds, args.test)
        return
    out.mkdir(parents=True, exist_ok=True)
    best = (
        BEST[args.model] if args.epochs_scale == 1 else BEST[args.model].scaled(args.epochs_scale)
    )
    original = 4 * sum(p.numel() for p in build(args.model).parameters())
    variants = ([] if args.no_kmeans else [None]) + list(args.qualities)
    for seed in args.seeds:
        t0 = time.time()
        _, pruned, teacher = pruned_model(args.model, data, best, out, seed)
        pruned_val = error_rate(pruned, data.val)
        for q in variants:
            tag = "kmeans" if q is None else f"q{q:g}"
            if q is not None and args.trainable == "weights":
                tag += "-w"
            recipe = replace(
                best, quality=q, trainable=args.trainable if q is not None else "codebook"
            )
            if q is None:  # k-means: the centroids' fine-tuning rate, whatever `best` holds
                paper_lr = RECIPES[args.model].finetune.lr
                recipe = replace(recipe, finetune=replace(best.finetune, lr=paper_lr))
            if q is not None and args.finetune_lr is not None:
                recipe = replace(recipe, finetune=replace(best.finetune, lr=args.finetune_lr))
                tag += f"-lr{args.finetune_lr:g}"
            model = copy.deepcopy(pruned)
            t1 = time.time()
            share_and_finetune(model, data, recipe, seed=seed, quiet=True, teacher=teacher)
            file = out / f"{args.model}-s{seed}-{tag}.dcz"
            raw = codec.DTYPES[recipe.raw_dtype] if recipe.raw_dtype else None
            size = api.save(model, file, entropy=recipe.entropy, raw_dtype=raw, progress=False)
            decoded = api.load(file, model=build(args.model))
            row = {
                "seed": seed,
                "variant": tag,
                "pruned_val_error": round(pruned_val, 2),
                "val_error": round(error_rate(decoded, data.val), 2),
                "bytes": size,
                "ratio": round(original / size, 1),
                "seconds": round(time.time() - t1),
                "seed_seconds": round(time.time() - t0),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
