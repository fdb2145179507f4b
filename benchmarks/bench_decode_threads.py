"""Decoding a file's tensors side by side (`File.decode(threads=)`, issue 20 item 5).

    python benchmarks/bench_decode_threads.py FILE.dcz [FILE.dcz ...] [--repeats 3]

For each file: the median wall time of decoding every tensor (checks and container parsing
excluded: the file is read once) on 1 thread and on each of `--threads`, in weights per
second, and whether the tensors are identical. Make CREPE full's files with
`deepcompress encode crepe.safetensors -o c8.dcz` (the default quality 8) and `--quality
-0.75`, from the state dict `benchmarks/realnets.py` reads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from _common import cpu_name

from deepcompress.format import reader


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--threads", type=int, nargs="+", default=[2])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu_name()}")
    for path in args.files:
        f = reader.read(path)
        n = sum(r.numel for r in f.records)
        ref, row = f.decode(threads=1), []
        for threads in [1, *args.threads]:
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                got = f.decode(threads=threads)
                times.append(time.perf_counter() - t0)
            same = all(torch.equal(got[k], ref[k]) for k in ref)
            dt = statistics.median(times)
            row.append(f"{threads} thread(s) {dt:.3f} s ({n / dt / 1e6:.0f}M weights/s"
                       f"{'' if same else ', DIFFERENT'})")  # fmt: skip
        print(f"{path} ({os.path.getsize(path):,} B, {n:,} weights): " + "; ".join(row))


if __name__ == "__main__":
    main()
