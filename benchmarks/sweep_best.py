"""Choose the `--recipe best` settings on the validation split (issue 9).

Starts every variant from the same trained reference model (OUT/<model>-reference.safetensors,
written by `deepcompress reproduce MODEL --out OUT`, or trained here), runs the compression
stages (prune + retrain, share + fine-tune, save) and prints the validation error of the model
*decoded from the file* and the file's size. The test split is never read.

    python benchmarks/sweep_best.py lenet-300-100 --out runs/sweep --variants a b
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import replace
from pathlib import Path

import torch
from _common import DEV_MNIST

from deepcompress import api
from deepcompress.pipeline.data import load_mnist
from deepcompress.pipeline.models import build
from deepcompress.pipeline.recipes import RECIPES
from deepcompress.pipeline.reproduce import compress, reference_model
from deepcompress.pipeline.train import error_rate

LEAN = {"entropy": "auto", "raw_dtype": "float16"}


def _distilled(recipe, alpha: float = 0.7) -> dict:
    """Every compression phase of `recipe` taught by the dense model (soft targets)."""
    return {
        "prune_rounds": [replace(c, distill=alpha) for c in recipe.prune_rounds],
        "finetune": replace(recipe.finetune, distill=alpha),
    }


KD5 = _distilled(RECIPES["lenet-5"])

VARIANTS = {
    "lenet-300-100": {
        "paper": {},
        "lean": {**LEAN},
        "k543-b4": {"kept": {"ip1": 0.05, "ip2": 0.04, "ip3": 0.3}, "bits": {"linear": 4}, **LEAN},
        "k5-b4": {"kept": {"ip1": 0.05, "ip2": 0.08, "ip3": 0.25}, "bits": {"linear": 4}, **LEAN},
        "k4-b4": {"kept": {"ip1": 0.04, "ip2": 0.06, "ip3": 0.25}, "bits": {"linear": 4}, **LEAN},
        "k5-b3": {"kept": {"ip1": 0.05, "ip2": 0.08, "ip3": 0.25}, "bits": {"linear": 3}, **LEAN},
        "k3-b4": {"kept": {"ip1": 0.03, "ip2": 0.06, "ip3": 0.25}, "bits": {"linear": 4}, **LEAN},
    },
    "lenet-5": {
        "paper": {},
        "lean": {**LEAN},
        "k3": {
            "kept": {"conv1": 0.6, "conv2": 0.08, "ip1": 0.03, "ip2": 0.15},
            "bits": {"conv": 5, "linear": 3},
            **LEAN,
        },
        "k4": {
            "kept": {"conv1": 0.6, "conv2": 0.1, "ip1": 0.04, "ip2": 0.15},
            "bits": {"conv": 5, "linear": 3},
            **LEAN,
        },
        "k3-ip1b2": {
            "kept": {"conv1": 0.6, "conv2": 0.08, "ip1": 0.03, "ip2": 0.15},
            "bits": {"conv": 5, "linear": 3, "ip1": 2},
            **LEAN,
        },
        "k27-kd": {
            "kept": {"conv1": 0.6, "conv2": 0.08, "ip1": 0.027, "ip2": 0.12},
            "bits": {"conv": 5, "linear": 3},
            **LEAN,
            **KD5,
        },
        "k2": {
            "kept": {"conv1": 0.6, "conv2": 0.08, "ip1": 0.02, "ip2": 0.15},
            "bits": {"conv": 5, "linear": 3},
            **LEAN,
        },
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=sorted(VARIANTS))
    ap.add_argument("--out", default="runs/sweep")
    ap.add_argument(
        "--data",
        default=DEV_MNIST,
        help="MNIST folder (default: $DEEPCOMPRESS_DATA, else ../shared/data/mnist)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", nargs="+", help="default: all")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_mnist(args.data)
    base = RECIPES[args.model]
    cache = out / f"{args.model}-reference.safetensors"
    ref, _ = reference_model(args.model, data, base, cache, args.seed, quiet=True)
    original = 4 * sum(p.numel() for p in build(args.model).parameters())
    for name in args.variants or VARIANTS[args.model]:
        recipe = replace(base, **VARIANTS[args.model][name])
        file = out / f"{args.model}-{name}.dcz"
        stages, _ = compress(copy.deepcopy(ref), data, recipe, file, seed=args.seed, quiet=True)
        decoded = api.load(file, model=build(args.model))
        row = {
            "variant": name,
            "val_error": round(error_rate(decoded, data.val), 2),
            "bytes": file.stat().st_size,
            "ratio": round(original / file.stat().st_size, 1),
            "pruned_val_error": round(stages["pruned_val_error"], 2),
            "seconds": round(stages["compress_seconds"]),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    main()
