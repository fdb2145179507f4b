"""A new process's first `dc.load`, at every SIMD level, and the decode throughput (issue 18).

Writes two files with random He-scaled weights (as bench_scale.py): VGG-16's shapes at the
paper's kept fractions (conv 8 / fc 5 bits, entropy auto), and an unpruned 8-bit file of
`--unpruned` million weights (a 4096-wide MLP). Then, for each level this machine runs
(`DEEPCOMPRESS_SIMD=avx512|avx2|neon|portable`, and `0`: the numba decoders), it starts fresh
processes that time `import torch` and then the first and second `dc.load` of each file, with
numba's cache empty (as right after `pip install`; `--warm` runs `deepcompress warmup` into
it first). Medians and ranges over `--runs` processes; the first line names the CPU.

    python benchmarks/bench_first_load.py [--runs 3] [--warm] [--unpruned 25]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402
from bench_scale import random_state  # noqa: E402

CHILD = """
import json, sys, time
t = time.perf_counter(); import torch; t_torch = time.perf_counter() - t
import deepcompress as dc
out = {"import torch": t_torch}
for path in sys.argv[1:]:
    t = time.perf_counter(); state = dc.load(path); first = time.perf_counter() - t
    del state  # the second load's figure: decoding, not holding two copies
    t = time.perf_counter(); state = dc.load(path); second = time.perf_counter() - t
    out[path] = (first, second, sum(v.numel() for v in state.values()))
out["numba imported"] = "numba" in sys.modules
print(json.dumps(out))
"""


def make_files(tmp: Path, unpruned_m: int) -> tuple[Path, Path]:
    import deepcompress as dc
    from deepcompress.pipeline.models import PAPER_KEPT

    vgg = tmp / "vgg16.dcz"
    state = random_state("vgg-16")
    kept = PAPER_KEPT["vgg-16"]
    dc.encode_state_dict(
        state,
        vgg,
        sparsity={f"{ly}.weight": 1.0 - f for ly, f in kept.items()},
        bits={f"{ly}.weight": (8 if state[f"{ly}.weight"].dim() == 4 else 5) for ly in kept},
    )
    g = torch.Generator().manual_seed(1)
    dense, left, i = {}, unpruned_m * 1_000_000, 0
    while left >= 4096:  # 4096x4096 layers, the last one narrower
        rows = min(4096, left // 4096)
        dense[f"fc{i}.weight"] = torch.randn(rows, 4096, generator=g) / 64
        left, i = left - rows * 4096, i + 1
    flat = tmp / "unpruned8.dcz"
    dc.encode_state_dict(dense, flat, bits=8)
    return vgg, flat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warm", action="store_true", help="deepcompress warmup into the cache first")
    ap.add_argument("--unpruned", type=int, default=25, help="million weights of the 8-bit file")
    args = ap.parse_args()
    from deepcompress.runtime import simd

    levels = [*simd.supported(), "0"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = make_files(tmp, args.unpruned)
        cache = "warm (deepcompress warmup)" if args.warm else "empty"
        print(f"# {cpu_name()}, {os.cpu_count()} cores, {platform.machine()}, numba cache {cache}")
        print(
            "| level | file | weights | import torch s | 1st load s | 2nd load s "
            "| M weights/s (2nd) | numba imported |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for level in levels:
            rows = []
            for run in range(args.runs):
                env = dict(os.environ, DEEPCOMPRESS_SIMD=level)
                env["NUMBA_CACHE_DIR"] = str(tmp / f"numba-{level}-{run}")
                if args.warm:
                    subprocess.run(
                        [sys.executable, "-m", "deepcompress.cli", "warmup", "--quiet"],
                        env=env,
                        check=True,
                        capture_output=True,
                    )
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, *map(str, files)],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            t_torch = [r["import torch"] for r in rows]
            for i, f in enumerate(files):
                first = [r[str(f)][0] for r in rows]
                second = [r[str(f)][1] for r in rows]
                n = rows[0][str(f)][2]

                def span(v):
                    return f"{statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})"

                print(
                    f"| {level} | {f.stem} ({f.stat().st_size:,} B) | {n / 1e6:.1f}M | "
                    f"{span(t_torch) if i == 0 else ''} | {span(first)} | {span(second)} | "
                    f"{n / statistics.median(second) / 1e6:.0f} | "
                    f"{any(r['numba imported'] for r in rows)} |"
                )


if __name__ == "__main__":
    main()
