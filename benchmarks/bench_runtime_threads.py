"""The compressed runtime's Linear at batch 1 and 64 on one and two of torch's threads.

    python benchmarks/bench_runtime_threads.py

A 3072x768 and a 768x3072 Linear, 90% pruned, 5-bit k-means (the "index" layout, C kernels at
the best SIMD level here), loaded with `runtime="compressed"`; per shape, thread count
(`torch.set_num_threads`) and batch, the fastest of 2,000 calls (batch 1) or 200 (batch 64),
in microseconds. Before 2026-12-04 the kernels ran on numba's OpenMP threads whatever torch's
count was; since, on a pool of the library's own on torch's count (`runtime/pool.py`).
"""

from __future__ import annotations

import os
import tempfile
import time

import torch
from _common import cpu_name
from torch import nn

import deepcompress as dc
from deepcompress.runtime import simd


def main() -> None:
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu_name()}, "
          f"SIMD {simd.level()}")  # fmt: skip
    print("| layer | threads | batch | fastest call (us) |")
    print("| --- | --- | --- | --- |")
    torch.manual_seed(0)
    for fan_in, fan_out in ((3072, 768), (768, 3072)):
        model = nn.Sequential(nn.Linear(fan_in, fan_out))
        dc.prune_(model, sparsity=0.9)
        dc.quantize_(model, bits=5)
        with tempfile.TemporaryDirectory() as tmp:
            dc.save(model, os.path.join(tmp, "m.dcz"))
            fresh = nn.Sequential(nn.Linear(fan_in, fan_out))
            run = dc.load(os.path.join(tmp, "m.dcz"), model=fresh, runtime="compressed").eval()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for batch, calls in ((1, 2000), (64, 200)):
                x = torch.randn(batch, fan_in)
                best = float("inf")
                with torch.no_grad():
                    for _ in range(20):
                        run(x)
                    for _ in range(calls):
                        t = time.perf_counter()
                        run(x)
                        best = min(best, time.perf_counter() - t)
                print(f"| {fan_in}x{fan_out} | {threads} | {batch} | {best * 1e6:.1f} |")


if __name__ == "__main__":
    main()
