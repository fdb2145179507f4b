"""Peak memory and time of decoding one shared tensor, per entropy coder.

    python benchmarks/bench_decode_memory.py [--rows 4096 --cols 4096]

A ROWS x COLS float32 weight, shared through an 8-bit k-means codebook, unpruned and 90%
pruned, written with each coder (`save(..., entropy=...)`). Each file is decoded (`dc.load`)
in a fresh process, once to load every code path, then measured: the peak resident memory
that one decode adds (VmHWM after, reset by /proc/self/clear_refs, less the resident memory
just before: Linux), in bytes per element, and the fastest of 5 decodes in ms.
The output itself is 4 bytes an element.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch
from _common import cpu_name
from torch import nn

import deepcompress as dc

PROBE = """
import sys, time, deepcompress as dc
path, n = sys.argv[1], int(sys.argv[2])

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))

state = dc.load(path)  # every code path compiled and loaded once
del state
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) back to the current resident size (Linux)
rss = status("VmRSS")
state = dc.load(path)
peak = status("VmHWM")
times = []
for _ in range(5):
    del state
    t = time.perf_counter(); state = dc.load(path); times.append(time.perf_counter() - t)
print((peak - rss) * 1024 / n, 1e3 * min(times))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=4096)
    args = p.parse_args()
    n = args.rows * args.cols
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu_name()}, "
          f"{args.rows}x{args.cols}, deepcompress {dc.__version__}")  # fmt: skip
    print("| kept | coder | file bytes | peak added (B/element) | decode (ms) |")
    print("| --- | --- | --- | --- | --- |")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for sparsity in (0.0, 0.9):
            layer = nn.Linear(args.cols, args.rows, bias=False)
            if sparsity:
                dc.prune_(layer, sparsity=sparsity)
            dc.quantize_(layer, bits=8)
            for coder in ("huffman", "rans", "cabac"):
                path = os.path.join(tmp, f"{coder}.dcz")
                size = dc.save(layer, path, entropy=coder)
                out = subprocess.run(
                    [sys.executable, "-c", PROBE, path, str(n)],
                    capture_output=True, text=True, check=True,
                    env={**os.environ, "OMP_NUM_THREADS": "1"},
                )  # fmt: skip
                added, ms = map(float, out.stdout.split())
                print(f"| {1 - sparsity:.0%} | {coder} | {size:,} | {added:.1f} | {ms:.0f} |",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
