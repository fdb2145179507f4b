"""CREPE tiny compressed WITH retraining through `dc.compress` (issue 17), next to the best
post-training file at the same fidelity (issue 20): what retraining buys.

The user's side is an ordinary loop: fresh synthetic tones every step (`realnets.crepe_frames`
with a new seed), CREPE's own training target (a Gaussian of 25 cents around the true pitch,
binary cross-entropy) unless the library passes a loss (distillation from the original), Adam,
BatchNorm kept in eval mode (CREPE's BatchNorm has momentum 0: its statistics are part of the
pretrained model). Validation: raw pitch accuracy on 400 frames of seed 2000 (`--val-frames`:
more, for a finer budget: 0.25 points a frame at 400); the reported
figure is on the held-out fidelity set (`realnets.Fidelity`, seed 1), from the decoded file.

    python benchmarks/bench_crepe_tiny.py --out /tmp/crepe-tiny [--budget 0.3] [--steps 40]
        [--val-frames 400] [--schedule prune|qat] [--sharing auto|kmeans|rd]
        [--trainable codebook|weights] [--no-prune] [--raw-float16] [--epochs 2] [--resume]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import deepcompress as dc
from deepcompress.phases import SCHEDULES, schedule_options

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402
from realnets import (  # noqa: E402
    CENTS_BIN0,
    CENTS_PER_BIN,
    Fidelity,
    build,
    crepe_cents,
    crepe_frames,
    load_state,
)


def targets(f0: np.ndarray) -> torch.Tensor:
    """CREPE's training target: a Gaussian (25 cents) over the 360 bins around the true pitch."""
    cents = 1200 * np.log2(f0 / 10)
    bins = CENTS_BIN0 + CENTS_PER_BIN * np.arange(360)
    return torch.from_numpy(np.exp(-((bins[None] - cents[:, None]) ** 2) / (2 * 25.0**2))).float()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the file")
    p.add_argument("--budget", type=float, default=0.3, help="validation rpa points allowed")
    p.add_argument("--steps", type=int, default=40, help="batches of 64 frames per epoch")
    p.add_argument("--epochs", type=int, default=2, help="dc.compress's epochs per phase")
    p.add_argument("--lr", type=float, default=2e-4, help="CREPE's training learning rate")
    p.add_argument("--schedule", choices=list(SCHEDULES), help="default: dc.compress's")
    p.add_argument("--sharing", choices=["auto", "kmeans", "rd"], help="overrides the schedule's")
    p.add_argument("--trainable", choices=["codebook", "weights"], help="as --sharing")
    p.add_argument("--no-prune", action="store_true", help="dc.compress(prune=False)")
    p.add_argument("--raw-float16", action="store_true", help="biases and norms in float16")
    p.add_argument("--resume", action="store_true", help="continue a killed run (dc.compress)")
    p.add_argument("--val-frames", type=int, default=400, help="validation frames (seed 2000)")
    args = p.parse_args(argv)
    options = schedule_options(
        args.schedule,
        sharing=args.sharing,
        trainable=args.trainable,
        prune=False if args.no_prune else None,
    )
    torch.manual_seed(0)
    state = load_state("crepe-tiny")
    model = build("crepe-tiny", state)
    val_x, val_f0 = crepe_frames(args.val_frames, seed=2000)
    val_true = 1200 * np.log2(val_f0 / 10)
    seeds = iter(range(10_000, 10**9))

    @torch.no_grad()
    def evaluate(m) -> float:
        m.eval()
        cents = crepe_cents(torch.cat([m(x) for x in val_x.split(100)]))
        return 100 * float(np.mean(np.abs(cents - val_true) > 50))  # error, in points

    def train(m, *, epochs, lr, loss=None):
        m.eval()  # BatchNorm frozen (momentum 0 in CREPE); no dropout in this model
        opt = torch.optim.Adam(m.parameters(), lr=lr)
        for _ in range(epochs * args.steps):
            x, f0 = crepe_frames(64, seed=next(seeds))
            y = targets(f0)
            out = m(x)
            value = loss(out, y, x) if loss else F.binary_cross_entropy(out, y)
            opt.zero_grad()
            value.backward()
            opt.step()

    t0 = time.perf_counter()
    path = Path(args.out) / "crepe-tiny.dcz"
    summary = dc.compress(
        model, train=train, evaluate=evaluate, out=path, budget=args.budget, lr=args.lr,
        **options, epochs=args.epochs, resume=args.resume,
        raw_dtype=torch.float16 if args.raw_float16 else None,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    fid = Fidelity("crepe-tiny", seed=1)
    decoded = dc.load(path)
    metrics = fid.measure({**state, **decoded})
    n = sum(v.numel() for v in state.values() if v.is_floating_point())
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_name()}, torch {torch.__version__}")
    print(
        f"CREPE tiny, dc.compress budget {args.budget} (validation rpa points), "
        f"{options or 'default schedule'} ({summary.quality=}, {summary.bits=}), "
        f"raw float16 {args.raw_float16}, {args.epochs} epochs of "
        f"{args.steps} batches of 64 per phase, {args.val_frames} validation frames, "
        f"{seconds:.0f} s"
    )
    print(f"validation error {summary.dense_error:.2f} -> {summary.error:.2f} points")
    print(
        f"file {path.stat().st_size} B, {4 * n / path.stat().st_size:.1f}x "
        f"(summary ratio {summary.ratio:.1f}x)"
    )
    print(
        f"held-out fidelity set (seed 1): original {fid.reference}, decoded {metrics}, "
        f"levels {fid.levels(metrics)}"
    )
    return {"summary": summary, "metrics": metrics, "reference": fid.reference}


if __name__ == "__main__":
    main()
