"""Choose the weight-sharing bits of a recipe on the validation split (never the test set).

Run:  python benchmarks/sweep_bits.py lenet-5 --out runs/lenet-5 --configs 8/5 8/4 6/4 6/5 5/4

Prunes and retrains the cached reference model (OUT/<model>-reference.safetensors, written by
`deepcompress reproduce`) once with the recipe's schedule, then for each `conv/linear` bits
configuration: quantize, fine-tune the codebooks as the recipe does, save, and print the
validation error of the model decoded from the file with the file's size and ratio.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
from pathlib import Path

from _common import DEV_MNIST

import deepcompress as dc
from deepcompress.pipeline.data import load_mnist
from deepcompress.pipeline.models import build
from deepcompress.pipeline.recipes import RECIPES
from deepcompress.pipeline.reproduce import (
    prune_and_retrain,
    reference_model,
    share_and_finetune,
)
from deepcompress.pipeline.train import error_rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=["lenet-300-100", "lenet-5"])
    p.add_argument("--out", required=True, help="folder with the cached reference model")
    p.add_argument(
        "--data",
        default=DEV_MNIST,
        help="MNIST folder (default: $DEEPCOMPRESS_DATA, else ../shared/data/mnist)",
    )
    p.add_argument("--configs", nargs="+", default=["8/5", "8/4", "6/4"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    recipe = RECIPES[args.model]
    data = load_mnist(args.data)
    cache = Path(args.out) / f"{args.model}-reference.safetensors"
    model, _ = reference_model(args.model, data, recipe, cache, args.seed, quiet=True)
    original = 4 * sum(t.numel() for t in build(args.model).parameters())
    err = prune_and_retrain(model, data, recipe, seed=args.seed, quiet=True)
    print(f"pruned and retrained: val error {err:.2f}%", flush=True)
    print("| conv/linear bits | val error % (decoded) | bytes | ratio |")
    print("| --- | --- | --- | --- |")
    for conf in args.configs:
        conv, lin = (int(b) for b in conf.split("/"))
        m = copy.deepcopy(model)
        bits = {"conv": conv, "linear": lin}
        share_and_finetune(m, data, recipe, bits=bits, seed=args.seed, quiet=True)
        with tempfile.TemporaryDirectory() as tmp:
            size = dc.save(m, os.path.join(tmp, "m.dcz"))
            decoded = dc.load(os.path.join(tmp, "m.dcz"), model=build(args.model))
        err = error_rate(decoded, data.val)
        print(f"| {conf} | {err:.2f} | {size} | {original / size:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
