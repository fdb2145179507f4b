"""Latency of fc layers run from the compressed form, against dense PyTorch, torch.sparse_csr
and SciPy CSR, on the same weights, side by side in one run.

Run:  python benchmarks/bench_runtime.py [--repeats 50] [--cold] [--sweep]

Shapes: AlexNet fc6 9216->4096 (9% kept), fc7 4096->4096 (9%), fc8 4096->1000 (25%); VGG-16 fc6
25088->4096 (4%), fc7 4096->4096 (4%), fc8 4096->1000 (23%); 5-bit codebooks (32 shared values),
random positions. Prints, per shape and batch size (1 and 8), the median latency of each, the
layout ours picked (`deepcompress.runtime.layouts`) and the resident bytes of each
representation (dense float32 for the first). The first line names the CPU, the SIMD level ours
ran at and torch's. To time a lower level on a machine that has a higher one, force it for both:
for an AVX2 machine's figures on an AVX-512 one,


    DEEPCOMPRESS_SIMD=avx2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        python benchmarks/bench_runtime.py

(still this CPU's caches, memory and gather speed, not those of a real AVX2-only CPU).

All candidates of one shape and batch are timed in interleaved rounds (each called for a
block of 5 timed calls per round after an untimed one, the order rotating), so that a slow
spell of the machine slows them alike. Each
baseline gets its fastest call: at batch 1 dense is the faster of `F.linear` and
`torch.mv`, and torch.sparse_csr the faster of `csr @ x.T` (sparse-dense matmul) and
`torch.mv(csr, x)` (sparse matrix-vector, often 2-3x faster on one vector).

By default the weights stay in the caches between calls, as when one layer is called in a loop
(AlexNet's and VGG-16's 16 MB fc8 fits this machine's 32 MB L3). `--cold` reads a 128 MB
buffer before each timed call, as happens in a whole network's forward pass, whose fc weights
(234 MB dense for AlexNet) cannot all stay cached.

`--sweep` prints instead where each execution wins: one 4096x4096 5-bit layer at 2-50% kept,
batch 1, 8 and 64, timed dense, as torch.sparse_csr and in each of our layouts, with the
resident bytes of each layout; "index numba" is the "index" layout run by its plain numba
reference loop (parallel, float64 sums) instead of the AVX-512 kernel.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import scipy.sparse
import torch
from _common import cpu_name

from deepcompress.runtime import simd
from deepcompress.runtime.layouts import CompressedMatrix

SHAPES = [
    ("alexnet fc6", 4096, 9216, 0.09),
    ("alexnet fc7", 4096, 4096, 0.09),
    ("alexnet fc8", 1000, 4096, 0.25),
    ("vgg16 fc6", 4096, 25088, 0.04),
    ("vgg16 fc7", 4096, 4096, 0.04),
    ("vgg16 fc8", 1000, 4096, 0.23),
]


def weight(rows: int, cols: int, kept: float, bits: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    codebook = torch.randn(2**bits, generator=g)
    w = codebook[torch.randint(0, 2**bits, (rows, cols), generator=g)]
    w[torch.rand(rows, cols, generator=g) >= kept] = 0
    return w


def candidates(w, csr, x) -> dict:
    """The baselines' calls for `x @ w.T`: dense PyTorch and torch.sparse_csr, each in every
    form worth trying (at batch 1, also `torch.mv`; see the module notes)."""
    xt = x.T.contiguous()
    calls = {"dense": lambda: torch.nn.functional.linear(x, w), "csr": lambda: csr @ xt}
    if len(x) == 1:
        calls["dense mv"] = lambda: torch.mv(w, x[0])
        calls["csr mv"] = lambda: torch.mv(csr, x[0])
    return calls


def interleaved(calls: dict, repeats: int, before=None, block: int = 5) -> dict:
    """Median seconds of each call over `repeats` timed calls, taken in rounds: each round
    runs every candidate for one untimed call and then `block` timed ones (so the weights are
    as warm as in a loop of calls, unless `before` evicts them), in an order that rotates from
    round to round. A slow spell of the machine (another tenant, a frequency change) then
    slows every candidate alike instead of the one timed during it."""
    names = list(calls)
    times = {n: [] for n in names}
    with torch.no_grad():
        for r in range(max(1, -(-repeats // block))):
            for n in names[r % len(names) :] + names[: r % len(names)]:
                calls[n]()
                for _ in range(block):
                    if before is not None:
                        before()
                    t0 = time.perf_counter()
                    calls[n]()
                    times[n].append(time.perf_counter() - t0)
    return {n: float(np.median(v)) for n, v in times.items()}


def baselines(t: dict) -> tuple[float, float]:
    """(dense, torch.sparse_csr) seconds, each its fastest form."""
    return min(t["dense"], t.get("dense mv", np.inf)), min(t["csr"], t.get("csr mv", np.inf))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--cold", action="store_true", help="evict the caches before each call")
    p.add_argument("--sweep", action="store_true", help="kept fraction sweep, every layout")
    args = p.parse_args()
    evict = np.ones(32 * 2**20, dtype=np.float32)  # 128 MB, read (not written) to evict
    before = (lambda: float(evict.sum())) if args.cold else None

    def timed(calls: dict) -> dict:
        return interleaved(calls, args.repeats, before)

    print(
        f"# {time.strftime('%Y-%m-%d')}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} cores, {platform.machine()}, "
        f"{cpu_name()}, ours at SIMD level {simd.level() or 'none (numba)'} "
        f"(DEEPCOMPRESS_SIMD={os.environ.get('DEEPCOMPRESS_SIMD', 'unset')}; torch's ATen "
        f"{torch.backends.cpu.get_cpu_capability()}), "
        f"{'cold caches' if args.cold else 'warm caches'}"
    )
    if args.sweep:
        sweep(timed)
        return
    print(
        "| layer | batch | dense ms | torch.sparse_csr ms | scipy csr ms | ours ms | layout "
        "| ours vs dense | ours vs sparse_csr |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    sizes = []
    for name, rows, cols, kept in SHAPES:
        w = weight(rows, cols, kept, 5)
        csr = w.to_sparse_csr()
        sp = scipy.sparse.csr_matrix(w.numpy())
        ours = CompressedMatrix.from_dense(w)
        # the four must agree before they are timed
        x8 = torch.randn(8, cols)
        ref = x8 @ w.T
        for y in ((csr @ x8.T).T, torch.from_numpy((sp @ x8.numpy().T).T), ours.matmul_t(x8)):
            assert torch.allclose(y, ref, rtol=1e-4, atol=1e-4)
        for batch in (1, 8):
            x = torch.randn(batch, cols)
            xn = x.T.contiguous().numpy()
            calls = candidates(w, csr, x)
            calls["scipy"] = lambda s=sp, xn=xn: s @ xn
            calls["ours"] = lambda o=ours, x=x: o.matmul_t(x)
            t = timed(calls)
            t_dense, t_csr = baselines(t)
            t_sp, t_ours = t["scipy"], t["ours"]
            print(
                f"| {name} | {batch} | {1e3 * t_dense:.3f} | {1e3 * t_csr:.3f} | "
                f"{1e3 * t_sp:.3f} | {1e3 * t_ours:.3f} | {ours.layout} | "
                f"{t_dense / t_ours:.1f}x | {t_csr / t_ours:.2f}x |",
                flush=True,
            )
        csr_bytes = sum(
            t.numel() * t.element_size()
            for t in (csr.crow_indices(), csr.col_indices(), csr.values())
        )
        sp_bytes = sp.data.nbytes + sp.indices.nbytes + sp.indptr.nbytes
        sizes.append((name, 4 * rows * cols, csr_bytes, sp_bytes, ours.nbytes))
    print()
    print("| layer | dense bytes | torch.sparse_csr | scipy csr | ours | ours / dense |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, d, c, s, o in sizes:
        print(f"| {name} | {d} | {c} | {s} | {o} | {100 * o / d:.1f}% |")


def sweep(timed) -> None:
    layouts = ("index", "bitmap", "entries") if simd.available() else ("entries",)
    print(
        "| kept | batch | dense ms | torch.sparse_csr ms | "
        + " | ".join(f"{name} ms" for name in layouts)
        + (" | index numba ms" if simd.available() else "")
        + " | fastest | "
        + " | ".join(f"{name} / dense bytes" for name in layouts)
        + " |"
    )
    print("| --- " * (5 + 2 * len(layouts) + simd.available()) + "|")
    for kept in (0.02, 0.05, 0.1, 0.15, 0.25, 0.35, 0.5):
        w = weight(4096, 4096, kept, 5)
        csr = w.to_sparse_csr()
        ours = {name: CompressedMatrix.from_dense(w, name) for name in layouts}
        for batch in (1, 8, 64):
            x = torch.randn(batch, 4096)
            calls = candidates(w, csr, x)
            for name, m in ours.items():
                calls[name] = lambda m=m, x=x: m.matmul_t(x)
            if "index" in ours:
                m = ours["index"]
                calls["index numba"] = lambda m=m, x=x: m.matmul_t(x, use_simd=False)
            measured = timed(calls)
            t = dict(zip(("dense", "torch.sparse_csr"), baselines(measured)))
            t.update({name: measured[name] for name in calls if name in ours})
            if "index numba" in measured:
                t["index numba"] = measured["index numba"]
            print(
                f"| {100 * kept:.0f}% | {batch} | "
                + " | ".join(f"{1e3 * v:.3f}" for v in t.values())
                + f" | {min(t, key=t.get)} | "
                + " | ".join(f"{100 * m.nbytes / w.numel() / 4:.1f}%" for m in ours.values())
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
