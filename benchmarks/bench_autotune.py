"""What `autotune_` gains by choosing the layout: one 4096x4096 Linear layer pruned to 15, 25
and 35% kept with 5-bit codebooks, saved, loaded with `runtime="compressed"` (the layout rule
takes "bitmap" past 13% kept), then autotuned at batch 1; prints the layout and the median
latency of 200 calls before and after.

Run:  python benchmarks/bench_autotune.py
      (DEEPCOMPRESS_SIMD=avx2 ... for a lower SIMD level)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from _common import cpu_name
from torch import nn

import deepcompress as dc
from deepcompress.runtime import autotune_, simd
from deepcompress.runtime.modules import median_seconds


def median_ms(model: nn.Module, x: torch.Tensor, calls: int = 200) -> float:
    with torch.no_grad():
        return 1e3 * median_seconds(lambda: model(x), calls)


def main() -> None:
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_name()}, SIMD level {simd.level()}, batch 1")
    print("| kept | loaded layout | ms | after autotune_ | ms |")
    print("| --- | --- | --- | --- | --- |")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "layer.dcz"
        for kept in (0.15, 0.25, 0.35):
            m = nn.Sequential(nn.Linear(4096, 4096))
            dc.prune_(m, sparsity=1 - kept)
            dc.quantize_(m, bits=5)
            dc.save(m, path)
            fresh = nn.Sequential(nn.Linear(4096, 4096))
            comp = dc.load(path, model=fresh, runtime="compressed").eval()
            x = torch.randn(1, 4096)
            layout, before = comp[0].weight_c.layout, median_ms(comp, x)
            autotune_(comp, x, batch_sizes=(1,), repeats=20)
            after, now = median_ms(comp, x), comp[0].weight_c.layout
            print(f"| {kept:.0%} | {layout} | {before:.3f} | {now} | {after:.3f} |")


if __name__ == "__main__":
    main()
