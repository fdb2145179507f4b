"""Encode and decode at the scale of real models (issue 4).

Builds a state dict with VGG-16's (or AlexNet's) shapes and random weights (He-scaled normal;
the paper's trained weights are not available offline), writes it as .safetensors, then in
fresh processes times `deepcompress encode`'s Python API (`dc.encode_state_dict`: magnitude
pruning to the paper's per-layer kept fractions, k-means with conv 8 / fc 5 bits, entropy
coding) and `dc.load`, and reads each process's peak resident memory.

    python benchmarks/bench_scale.py                      # VGG-16, entropy auto
    python benchmarks/bench_scale.py --model alexnet --entropy huffman
    python benchmarks/bench_scale.py --model alexnet --energy 8388608 33554432

Targets (issue 4): VGG-16 encodes in < 60 s, decodes in < 2 s, peak memory < 3x dense size.

`--stages` also prints the paper's three sizes for the same weights (issue 7): pruned only
(kept weights as float32 plus coded gaps), pruned + quantized at fixed widths (cluster index and
gap bits per entry plus the codebooks, the paper's "P+Q"), and the final file, next to the
paper's figures for its trained networks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# Peak resident memory of this process: VmHWM (ru_maxrss would carry the parent's peak
# across fork and exec).
PEAK = """
def peak_rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
"""

ENCODE = (
    PEAK
    + """
import json, sys, time
import torch
from safetensors.torch import load_file
import deepcompress as dc
from deepcompress.pipeline.models import PAPER_KEPT
src, dst, model, entropy = sys.argv[1:5]
kept = PAPER_KEPT[model]
state = load_file(src)
t0 = time.perf_counter()
size = dc.encode_state_dict(
    state, dst, entropy=entropy,
    sparsity={f"{layer}.weight": 1.0 - f for layer, f in kept.items()},
    bits={f"{layer}.weight": (8 if state[f"{layer}.weight"].dim() == 4 else 5) for layer in kept},
)
seconds = time.perf_counter() - t0
rss = peak_rss()
print(json.dumps({"seconds": seconds, "bytes": size, "peak_rss": rss}))
"""
)

DECODE = (
    PEAK
    + """
import json, sys, time
import deepcompress as dc
t0 = time.perf_counter()
state = dc.load(sys.argv[1])
seconds = time.perf_counter() - t0
rss = peak_rss()
print(json.dumps({"seconds": seconds, "tensors": len(state), "peak_rss": rss}))
"""
)

BASELINE = (
    PEAK
    + """
import json
import torch, numpy, numba, deepcompress
from safetensors.torch import load_file
print(json.dumps({"peak_rss": peak_rss()}))
"""
)


#: The paper's sizes (Tables 4 and 5 of Han et al. 2016): pruned, pruned + quantized, final.
PAPER_MB = {"alexnet": (27.0, 8.9, 6.9), "vgg-16": (552 / 13, 552 / 31, 552 / 49)}


def stage_sizes(state: dict, model: str, tmp: Path, entropy: str) -> tuple[int, int, int]:
    """(pruned-only bytes, P+Q fixed-width bytes, final file bytes) at the paper's settings."""
    import deepcompress as dc
    from deepcompress.pipeline.models import PAPER_KEPT
    from deepcompress.pipeline.report import layer_stats

    kept = PAPER_KEPT[model]
    sparsity = {f"{layer}.weight": 1.0 - f for layer, f in kept.items()}
    bits = {f"{ly}.weight": (8 if state[f"{ly}.weight"].dim() == 4 else 5) for ly in kept}
    pruned = dc.encode_state_dict(state, tmp / "p.dcz", sparsity=sparsity, bits=None)
    final = dc.encode_state_dict(
        state, tmp / "pq.dcz", sparsity=sparsity, bits=bits, entropy=entropy
    )
    rows, _ = layer_stats(tmp / "pq.dcz")
    return pruned, sum(r["fixed_bytes"] for r in rows), final


def random_state(model: str, seed: int = 0) -> dict[str, torch.Tensor]:
    from deepcompress.pipeline.models import build

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build(model).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
        std = (2.0 / fan_in) ** 0.5 if len(shape) > 1 else 0.01
        state[name] = torch.randn(shape, generator=g) * std
    return state


def child(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="vgg-16", choices=["vgg-16", "alexnet"])
    ap.add_argument("--entropy", default="auto", choices=["auto", "huffman", "rans"])
    ap.add_argument("--repeat", type=int, default=3, help="decode runs (the median is shown)")
    ap.add_argument("--stages", action="store_true", help="also the paper's three sizes")
    ap.add_argument(
        "--energy",
        type=int,
        nargs="*",
        metavar="ON_CHIP_BYTES",
        help="also the paper's energy view (dc.energy_view) at these on-chip sizes (8 MiB)",
    )
    args = ap.parse_args()
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "dense.safetensors", Path(tmp) / "model.dcz"
        t0 = time.perf_counter()
        state = random_state(args.model)
        save_file(state, str(src))
        n = sum(t.numel() for t in state.values())
        dense = 4 * n
        print(f"built {args.model}: {n:,} parameters in {time.perf_counter() - t0:.1f} s")
        if args.stages:
            sizes = stage_sizes(state, args.model, Path(tmp), args.entropy)
            print(f"{'stage':<26}{'ours MB':>9}{'ratio':>8}{'paper MB':>10}{'ratio':>8}")
            names = ("pruned", "pruned + quantized (P+Q)", "+ entropy coding (file)")
            for what, b, p in zip(names, sizes, PAPER_MB[args.model]):
                print(
                    f"{what:<26}{b / 1e6:>9.2f}{dense / b:>7.1f}x{p:>10.1f}{dense / 1e6 / p:>7.1f}x"
                )
        del state
        base = child(BASELINE)["peak_rss"]
        enc = child(ENCODE, str(src), str(dst), args.model, args.entropy)
        decs = sorted(
            (child(DECODE, str(dst)) for _ in range(args.repeat)), key=lambda d: d["seconds"]
        )
        dec = decs[len(decs) // 2]
        if args.energy is not None:
            import deepcompress as dc
            from deepcompress.runtime.energy import format_energy

            for on_chip in args.energy or [8 << 20]:
                print(format_energy(dc.energy_view(dst, on_chip_bytes=on_chip)) + "\n")
    print(f"entropy coder      {args.entropy}")
    print(f"dense size         {dense / 1e6:,.1f} MB")
    print(f"file size          {enc['bytes'] / 1e6:,.2f} MB ({dense / enc['bytes']:.1f}x)")
    print(f"encode             {enc['seconds']:.1f} s (target < 60 s)")
    print(f"decode (median/{args.repeat})  {dec['seconds']:.2f} s (target < 2 s)")
    for what, r in (("encode", enc), ("decode", dec)):
        print(
            f"peak RSS {what}    {r['peak_rss'] / 1e9:.2f} GB = {r['peak_rss'] / dense:.2f}x "
            f"dense (target < 3x); imports alone {base / 1e9:.2f} GB"
        )


if __name__ == "__main__":
    main()
