"""`dc.compress` on a recurrent model with attention, a user's own loop: the bare weights
(an LSTM's, attention's `in_proj_weight`) are shared since 2026-12-04 (they were left float32).

    python benchmarks/bench_compress_rnn.py [--seeds 0 1 2] [--budget 1.0]

The model reads scikit-learn's bundled 8x8 digits (offline) row by row: a 2-layer LSTM (8 ->
64), self-attention over its 8 outputs (nn.MultiheadAttention, 4 heads) and a Linear head; about
60k parameters, 90% of them outside Linear/Conv/Embedding layers. Per seed: the dense model is
trained for 40 epochs (Adam, lr 3e-3), then compressed with `dc.compress`'s defaults within
`--budget` points of validation error (the 20% validation split of `load_digits`); the test
split is read only for this report. Printed: validation and test error of the dense model
and of the model decoded from the file, the file's bytes and ratio (4 bytes per parameter /
file size), which weights are shared, and the wall time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from _common import cpu_name
from torch import nn

import deepcompress as dc
from deepcompress.format.inspect import describe
from deepcompress.pipeline.data import load_digits


class RowReader(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 64, num_layers=2, batch_first=True)
        self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        h, _ = self.lstm(x.reshape(len(x), 8, 8))  # the image's 8 rows as a sequence
        a, _ = self.attn(h, h, h)
        return self.head((h + a).mean(1))


def fit(model, split, *, epochs, lr, loss=None):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(split.y)).split(64):
            x, y = split.x[idx], split.y[idx]
            out = model(x)
            value = loss(out, y, x) if loss else nn.functional.cross_entropy(out, y)
            opt.zero_grad()
            value.backward()
            opt.step()


@torch.no_grad()
def error(model, split) -> float:
    model.eval()
    return 100.0 * (model(split.x).argmax(1) != split.y).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=float, default=1.0, help="points of validation error")
    args = p.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu_name()}, "
          f"budget {args.budget:g}, deepcompress {dc.__version__}")  # fmt: skip
    print("| seed | val error dense -> file | test error dense -> file | bytes | ratio "
          "| shared | s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for seed in args.seeds:
        t0 = time.time()
        data = load_digits(seed)
        torch.manual_seed(seed)
        model = RowReader()
        fit(model, data.train, epochs=40, lr=3e-3)
        dense = (error(model, data.val), error(model, data.test))
        with tempfile.TemporaryDirectory() as tmp:
            s = dc.compress(
                model, train=lambda m, d=data, **kw: fit(m, d.train, **kw),
                evaluate=lambda m, d=data: error(m, d.val), out=os.path.join(tmp, "rnn.dcz"),
                budget=args.budget, lr=3e-3, seed=seed, progress=False,
            )  # fmt: skip
            shared = sum(t["codec"] == "shared" for t in describe(s.path)["tensors"])
        print(
            f"| {seed} | {dense[0]:.2f}% -> {s.error:.2f}% | {dense[1]:.2f}% -> "
            f"{error(s.model, data.test):.2f}% | {s.bytes} | {s.ratio:.1f}x | {shared} tensors "
            f"| {time.time() - t0:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
