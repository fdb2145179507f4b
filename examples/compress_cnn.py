"""Your own CNN with BatchNorm, your own loop, and one call: `dc.compress`.

Run:  python examples/compress_cnn.py [--data MNIST_DIR | --digits] [--epochs 4] [--out DIR]

Trains a small CNN with BatchNorm on MNIST (or scikit-learn's bundled digits, offline), then
hands it to `dc.compress` with an ordinary training loop and a validation error: the library
shares the weights at the coarsest rate-distortion levels that keep within the budget (0.1
points), training the weights through them, and writes the file (`--schedule prune`: the
paper's order, per-layer sparsities and pruning rounds first, then weight sharing). The
validation split is cut in two: the library takes every decision on the first half
(`evaluate`) and only judges its file on the second (`check`), so that the model it ends with
is not chosen for one split's luck.
The test error is measured once, at the end, on the model decoded from the file.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

import deepcompress as dc
from deepcompress.phases import SCHEDULES, schedule_options
from deepcompress.pipeline.data import Split, load_digits, load_mnist


class Net(nn.Module):
    def __init__(self, side: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * (side // 4) ** 2, 256), nn.ReLU(),
                                  nn.Linear(256, 10))  # fmt: skip

    def forward(self, x):
        return self.head(self.features(x))


def fit(model, data, *, epochs, lr, loss=None, batch=128):
    """An ordinary SGD loop; `loss(outputs, targets, inputs)` replaces cross-entropy if given."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, lr, total_steps=epochs * -(-len(data.y) // batch)
    )
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(data.y)).split(batch):
            x, y = data.x[idx], data.y[idx]
            out = model(x)
            l = loss(out, y, x) if loss else nn.functional.cross_entropy(out, y)  # noqa: E741
            opt.zero_grad()
            l.backward()
            opt.step()
            sched.step()


@torch.no_grad()
def error(model, data) -> float:
    model.eval()
    return 100.0 * (model(data.x).argmax(1) != data.y).float().mean().item()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="MNIST folder (else $DEEPCOMPRESS_DATA)")
    p.add_argument("--digits", action="store_true", help="the bundled 8x8 digits instead")
    p.add_argument("--epochs", type=int, default=4, help="dense training epochs")
    p.add_argument("--retrain-epochs", type=int, default=2, help="dc.compress's epochs")
    p.add_argument("--budget", type=float, default=0.1, help="points of validation error")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", choices=list(SCHEDULES), help="default: dc.compress's")
    p.add_argument("--qat", action="store_true", help="--schedule qat (the default now)")
    p.add_argument("--sharing", choices=["auto", "kmeans", "rd"], help="overrides the schedule's")
    p.add_argument("--trainable", choices=["codebook", "weights"], help="as --sharing")
    p.add_argument("--out", default=tempfile.mkdtemp())
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    data = load_digits(args.seed) if args.digits else load_mnist(args.data, val_size=10_000)
    half = len(data.val.y) // 2
    decide, held = (Split(data.val.x[s], data.val.y[s]) for s in (slice(half), slice(half, None)))
    model, lr = Net(side=data.train.x.shape[-1]), 0.05
    fit(model, data.train, epochs=args.epochs, lr=lr)
    dense_test = error(model, data.test)  # reported at the end only
    schedule = "qat" if args.qat else args.schedule  # None: dc.compress's default
    options = schedule_options(schedule, sharing=args.sharing, trainable=args.trainable)

    summary = dc.compress(
        model,
        train=lambda m, *, epochs, lr, loss=None: fit(
            m, data.train, epochs=epochs, lr=lr, loss=loss
        ),
        evaluate=lambda m: error(m, decide),
        check=lambda m: error(m, held),
        out=Path(args.out) / "cnn.dcz",
        budget=args.budget,
        lr=lr,
        epochs=args.retrain_epochs,
        calibration=data.train.x[:2048].split(256),
        seed=args.seed,
        **options,
        report=Path(args.out),  # report.md and its figures, beside the file
    )
    result = {
        "ratio": summary.ratio,
        "bytes": summary.bytes,
        "val_error": summary.error,
        "dense_val_error": summary.dense_error,
        "check_error": summary.check_error,
        "dense_check_error": summary.dense_check_error,
        "test_error": error(summary.model, data.test),
        "dense_test_error": dense_test,
    }
    print(
        f"{summary.path}: {summary.bytes} bytes, {summary.ratio:.1f}x; validation error "
        f"{summary.dense_error:.2f}% -> {summary.error:.2f}% (held out: "
        f"{summary.dense_check_error:.2f}% -> {summary.check_error:.2f}%); test error "
        f"{dense_test:.2f}% -> {result['test_error']:.2f}% (decoded from the file)"
    )
    return result


if __name__ == "__main__":
    main()
