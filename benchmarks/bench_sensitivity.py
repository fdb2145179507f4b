"""Pruning sensitivity of a trained LeNet-5, layer by layer (the paper's Figure 6, on MNIST).

Each layer alone is pruned by magnitude to each sparsity, without retraining, and the error on
the validation split (the last 5,000 training images) is measured; the model is restored after
each point. Prints the table (rows: fraction of the layer pruned; columns: layers; cells:
validation error in %), ranks the layers, writes the plot, then lets `auto_sparsity` choose
per-layer sparsities within an error budget and checks them by pruning a copy with `prune_`.

Sensitivity is ranked by *tolerated sparsity*: the largest fraction of a layer (on the grid)
that can be pruned alone, without retraining, with the validation error at most 1 point above
the unpruned model's at that fraction and at every smaller one. Lower tolerated sparsity = more
sensitive; ties are broken by the area between the layer's curve and the baseline (error points
x fraction pruned, trapezoids over the grid; larger = more sensitive). The paper (Figure 6,
AlexNet) finds the first convolution the most sensitive and the large fc layers the least;
the last lines say whether that holds here (conv1 most, ip1 least).

    python benchmarks/bench_sensitivity.py [--weights runs/lenet-5-s0/lenet-5-reference.safetensors]
        [--data ../shared/data/mnist] [--out docs/lenet-5-sensitivity.png] [--budget 0.5]

Only evaluation passes (about 1 s each on 2 CPU cores): a minute or two in all.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from _common import DEV_MNIST
from safetensors.torch import load_file

import deepcompress as dc
from deepcompress.analysis import (
    area_above_baseline,
    auto_sparsity,
    plot_sensitivity,
    sensitivity,
    tolerated_sparsity,
)
from deepcompress.pipeline.data import load_mnist
from deepcompress.pipeline.models import PAPER_KEPT, LeNet5
from deepcompress.pipeline.train import error_rate

SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
RISE = 1.0  # points of validation error that define "tolerated"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="runs/lenet-5-s0/lenet-5-reference.safetensors")
    ap.add_argument(
        "--data",
        default=DEV_MNIST,
        help="MNIST folder (default: $DEEPCOMPRESS_DATA, else ../shared/data/mnist)",
    )
    ap.add_argument("--out", default="docs/lenet-5-sensitivity.png")
    ap.add_argument("--budget", type=float, default=0.5, help="auto_sparsity's budget, points")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = LeNet5()
    model.load_state_dict(load_file(args.weights))
    model.eval()
    val = load_mnist(args.data).val

    def evaluate(m: torch.nn.Module) -> float:
        return error_rate(m, val)

    t0 = time.perf_counter()
    table = sensitivity(model, evaluate, SPARSITIES, progress=True)
    seconds = time.perf_counter() - t0
    layers = list(table["layers"])
    sizes = {n: m.weight.numel() for n, m in model.named_modules() if n in layers}

    print(f"LeNet-5 ({args.weights}), validation error (%) of {len(val)} images, one layer")
    print(f"pruned at a time by magnitude, no retraining; unpruned: {table['baseline']:.2f}%")
    print()
    print("pruned  " + "".join(f"{n:>9}" for n in layers))
    for s in table["sparsities"]:
        cells = "".join(f"{table['layers'][n][s]:9.2f}" for n in layers)
        print(f"{100 * s:5.0f}%  {cells}")
    print("weights " + "".join(f"{sizes[n]:9d}" for n in layers))

    tol = tolerated_sparsity(table, RISE)
    area = area_above_baseline(table)
    paper = {n: 1 - k for n, k in PAPER_KEPT["lenet-5"].items()}
    print()
    print(f"tolerated sparsity (error <= unpruned + {RISE:g} point), area above the baseline:")
    print("        " + "".join(f"{n:>9}" for n in layers))
    print("tol.    " + "".join(f"{100 * tol[n]:8.0f}%" for n in layers))
    print("area    " + "".join(f"{area[n]:9.2f}" for n in layers))
    print("paper   " + "".join(f"{100 * paper[n]:8.0f}%" for n in layers), end="")
    print("   (the paper's pruned fractions, after retraining)")

    ranked = sorted(layers, key=lambda n: (tol[n], -area[n]))  # most sensitive first
    by_area = sorted(layers, key=lambda n: -area[n])
    print()
    print("most to least sensitive: " + " > ".join(ranked), end="")
    print(f"   (by area alone: {' > '.join(by_area)})")
    finding = ranked[0] == "conv1" and ranked[-1] == "ip1"
    print(
        f"paper's finding (conv1 most sensitive, ip1 least): "
        f"{'confirmed' if finding else 'NOT confirmed'}: most {ranked[0]}, least {ranked[-1]}"
    )

    plot_sensitivity(table, args.out, ylabel="validation error (%)", title="LeNet-5 on MNIST")
    print(f"plot: {args.out}   ({len(layers) * len(SPARSITIES)} points in {seconds:.0f} s)")

    chosen = auto_sparsity(model, evaluate, args.budget, table=table)
    pruned = dc.prune_(copy.deepcopy(model), sparsity=chosen)
    kept = sum(round((1 - chosen[n]) * sizes[n]) for n in layers) / sum(sizes.values())
    print()
    print(
        f"auto_sparsity(budget={args.budget:g} point): "
        + ", ".join(f"{n} {100 * s:.0f}%" for n, s in chosen.items())
    )
    print(
        f"  all at once, no retraining: validation error {evaluate(pruned):.2f}% "
        f"(limit {table['baseline'] + args.budget:.2f}%), {100 * kept:.1f}% of the weights kept"
    )


if __name__ == "__main__":
    main()
