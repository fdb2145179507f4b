"""Compress your own model with your own training loop, through the Python API.

Run:  python examples/compress_own_model.py [--out DIR]

A small CNN on scikit-learn's bundled 8x8 digits (offline): train, prune (two rounds, each
followed by retraining), share weights and fine-tune the codebooks, save, load into a fresh
model, and compare accuracy. Nothing here is deepcompress-specific but the five `dc.` calls.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

import deepcompress as dc
from deepcompress.pipeline.data import load_digits


class MyNet(nn.Module):
    """Any nn.Module: its Conv and Linear layers get compressed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 8, 8)
        x = torch.relu(self.conv(x)).flatten(1)  # (B, 512)
        return self.fc2(torch.relu(self.fc1(x)))


def train(model: nn.Module, data, epochs: int, lr: float) -> None:
    """Your ordinary training loop: masks and codebooks need nothing from it."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(data), generator=g).split(64):
            loss = nn.functional.cross_entropy(model(data.x[idx]), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


@torch.no_grad()
def accuracy(model: nn.Module, data) -> float:
    return float((model(data.x).argmax(1) == data.y).float().mean())


def main(out_dir: str | Path, epochs: int = 15) -> dict:
    """Run the example; returns the figures it prints."""
    torch.manual_seed(0)
    ds = load_digits()
    model = MyNet()
    train(model, ds.train, epochs, lr=0.05)
    dense = accuracy(model, ds.val)

    dc.prune_(model, sparsity=0.7)  # round 1: 70% of every layer
    train(model, ds.train, epochs, lr=0.05)
    dc.prune_(model, sparsity={"fc1": 0.9, "conv": 0.5})  # round 2: by name and by kind
    train(model, ds.train, epochs, lr=0.05)

    dc.quantize_(model, bits={"conv": 8, "linear": 5})  # the paper's default bits
    train(model, ds.train, max(1, epochs // 5), lr=0.002)  # fine-tunes the centroids
    shared = accuracy(model, ds.val)

    path = Path(out_dir) / "mynet.dcz"
    size = dc.save(model, path)
    net = dc.load(path, model=MyNet())  # a plain dense model again
    original = 4 * sum(p.numel() for p in MyNet().parameters())
    result = {
        "dense_val_accuracy": dense,
        "shared_val_accuracy": shared,
        "decoded_val_accuracy": accuracy(net, ds.val),
        "decoded_test_accuracy": accuracy(net, ds.test),
        "bytes": size,
        "ratio": original / size,
        "fc1_sparsity": float((net.fc1.weight == 0).float().mean()),
    }
    print(
        f"val accuracy: dense {dense:.4f}, compressed {result['decoded_val_accuracy']:.4f} "
        f"(decoded from {path}); test {result['decoded_test_accuracy']:.4f}; "
        f"{size} bytes, {result['ratio']:.1f}x"
    )
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="folder for mynet.dcz (default: a temporary one)")
    args = p.parse_args()
    if args.out:
        main(args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
