"""Reproduce the paper's LeNet results and print one Markdown row per run.

Run:  python benchmarks/bench_reproduce.py lenet-300-100 lenet-5 --seeds 0 1 2 --out runs
      [--recipe paper|best|auto] [--budget 0.1 | --bound 1.54] [--schedule prune|qat]

Each row: model, seed, validation and test error of the reference and of the model decoded
from the compressed file, file size, ratio (4 bytes per parameter over the file's size on
disk), and the wall time of the whole `reproduce` run (reference training included, unless the
reference model was cached in OUT/<model>-s<seed>/).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from _common import DEV_MNIST

from deepcompress.pipeline.reproduce import run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", choices=["lenet-300-100", "lenet-5", "digits-mlp"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument(
        "--data",
        default=DEV_MNIST,
        help="MNIST folder (default: $DEEPCOMPRESS_DATA, else ../shared/data/mnist)",
    )
    p.add_argument("--out", default="runs")
    p.add_argument("--recipe", default="paper", choices=["paper", "best", "auto"])
    p.add_argument("--budget", type=float, default=0.1, help="--recipe auto's error budget")
    p.add_argument(
        "--bound", type=float, help="--recipe auto: the validation error (%%) the file may reach"
    )
    p.add_argument(
        "--schedule", choices=["prune", "qat"], help="--recipe auto: default dc.compress's"
    )
    args = p.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
        f"{os.cpu_count()} cores, {platform.machine()}"
    )
    print(
        "| model | seed | ref val / test err % | decoded val / test err % | bytes | ratio "
        "| seconds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model in args.models:
        for seed in args.seeds:
            r = run(
                model,
                os.path.join(args.out, f"{model}-s{seed}"),
                args.data,
                seed=seed,
                quiet=True,
                recipe=args.recipe,
                budget=args.budget,
                bound=args.bound,
                auto_schedule=args.schedule,
            )
            print(
                f"| {model} | {seed} | {r['reference_val_error']:.2f} / "
                f"{r['reference_test_error']:.2f} | {r['val_error']:.2f} / {r['test_error']:.2f} "
                f"| {r['compressed_bytes']} | {r['ratio']:.1f}x | {r['seconds']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
