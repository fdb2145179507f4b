"""A compressed Conv2d against torch's conv, before and after `autotune_`, on one thread.

    python benchmarks/bench_conv_autotune.py

A 3x3 64->64 conv, 96% pruned, 5-bit k-means, on 56x56 maps: the dense model decoded from the
file against `runtime="compressed"` (im2col + the C kernel), at batch 1 and 8, then after
`autotune_` (whose "dense" mode for a conv is torch's conv on the weight built for the call);
the fastest of 10 calls in ms, with `torch.set_num_threads(1)`.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch
from _common import cpu_name
from torch import nn

import deepcompress as dc
from deepcompress.runtime import autotune_, simd


def fastest(fn, calls: int = 10) -> float:
    fn()
    best = float("inf")
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return 1e3 * best


def main() -> None:
    torch.set_num_threads(1)
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_name()}, SIMD {simd.level()}, one thread")

    def build() -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(64, 64, 3, padding=1))

    torch.manual_seed(0)
    net = build()
    dc.prune_(net, sparsity=0.96)
    dc.quantize_(net, bits=5)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "c.dcz")
        dc.save(net, path)
        dense = dc.load(path, model=build()).eval()
        comp = dc.load(path, model=build(), runtime="compressed").eval()
    xs = {b: torch.randn(b, 64, 56, 56) for b in (1, 8)}
    print("| batch | torch conv (ms) | compressed (ms) | after autotune_ (ms) | plan |")
    print("| --- | --- | --- | --- | --- |")
    with torch.no_grad():
        before = {b: fastest(lambda x=x: comp(x)) for b, x in xs.items()}
        autotune_(comp, xs[1], batch_sizes=tuple(xs))
        for b, x in xs.items():
            print(f"| {b} | {fastest(lambda x=x: dense(x)):.2f} | {before[b]:.2f} | "
                  f"{fastest(lambda x=x: comp(x)):.2f} | {comp[0].plan.get(b)} |")  # fmt: skip


if __name__ == "__main__":
    main()
