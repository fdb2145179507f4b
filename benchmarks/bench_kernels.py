"""Throughput of the "index" kernels of each SIMD level, one thread, alone.

Run:  python benchmarks/bench_kernels.py [--calls 400] [--batch 1]

One 4096-column layer at 9% kept with 5-bit codes (AlexNet fc7's shape and kept fraction), cut
to 64, 256, 1,024 and 4,096 rows (its weights from L1-resident to 4.5 MB), timed through
`deepcompress.runtime.simd.run(..., threads=1)` at every level this CPU runs; prints the
fastest of `--calls` calls as G kept weights (times the batch) per second. At batch 1 the same
rate at every size says the kernel is bound by its instructions, not by memory. Each product
is checked against torch's before it is timed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import cpu_name
from bench_runtime import weight

from deepcompress.runtime import simd
from deepcompress.runtime.layouts import CompressedMatrix


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=400)
    p.add_argument("--batch", type=int, default=1, help="inputs per call (1: the _mv kernels)")
    args = p.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')}, {cpu_name()}, one thread, batch {args.batch}")
    print("| level | rows | kept weights | G kept weights/s (x batch) |")
    print("| --- | --- | --- | --- |")
    for lvl in simd.supported():
        for rows in (64, 256, 1024, 4096):
            w = weight(rows, 4096, 0.09, 5)
            m = CompressedMatrix.from_dense(w, "index")
            xt = np.random.default_rng(0).standard_normal((4096, args.batch), dtype=np.float32)
            out = np.empty((rows, args.batch), np.float32)
            best = np.inf
            for _ in range(args.calls):
                t0 = time.perf_counter()
                simd.run("index", m.pos, m.ptr, m.codes, m.table, xt, out, lvl, threads=1)
                best = min(best, time.perf_counter() - t0)
            ref = (w @ torch.from_numpy(xt)).numpy()
            assert np.allclose(out, ref, rtol=1e-4, atol=1e-3), lvl
            nnz = int(m.ptr[-1]) * args.batch
            print(f"| {lvl} | {rows} | {nnz} | {nnz / best / 1e9:.2f} |", flush=True)


if __name__ == "__main__":
    main()
