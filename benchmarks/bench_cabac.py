"""Run: python benchmarks/bench_cabac.py [--symbols 2000000] [--runs 5] [--against OLD.py]

Throughput of the CABAC coder's Exp-Golomb kernels (`cabac.encode_mode` / `cabac.decode`).
Streams of geometric-ish symbols (the shape of cluster indices and gaps) over 33 and over
4097 symbols are coded in the Exp-Golomb modes 2 (order-0) and 3 (previous-buckets classes
averaged with order-0), forced with `cabac.encode_mode`. Each is encoded and decoded once as
a warm-up (numba compilation, a round-trip check), then timed: the best of `--runs` runs,
printed as Msymbols/s, with the payload's bits per symbol. Times are the calling thread's
CPU time (the kernels run in it), and best-of-N, because on a shared machine other processes
only ever make a run slower; wall-clock time there mostly measures the scheduler.

`--against OLD.py` also loads another version of `cabac.py` (say, a copy saved before a
change) and times the two alternately, run for run, so that both see the same load; it checks
that both write the same bytes.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from functools import partial

import numpy as np

from deepcompress.coding import cabac

# (n_symbols, geometric p): mean about 1/p - 1 before clipping to n_symbols - 1.
STREAMS = ((33, 0.25), (4097, 0.01))
MODES = (2, 3)


def stream(n: int, p: float, size: int, seed: int) -> np.ndarray:
    """Geometric symbols, clipped to the alphabet, with slowly varying scale and runs of
    neighbours (so the previous-bucket contexts of mode 3 have something to find)."""
    rng = np.random.default_rng(seed)
    scale = np.exp(np.sin(np.arange(size) * (2 * np.pi / 50_000)))  # non-stationary
    prob = np.clip(p / scale, 1e-4, 0.9)
    sym = rng.geometric(prob) - 1
    hold = rng.random(size) < 0.2  # repeat the previous symbol's bucket now and then
    idx = np.arange(size)
    idx[hold] = 0
    np.maximum.accumulate(idx, out=idx)
    sym = np.where(hold, sym[idx] // 2 + sym // 2, sym)
    return np.minimum(sym, n - 1).astype(np.int64)


def load_other(path: str):
    """`path` imported as a module of the `deepcompress.coding` package (relative imports)."""
    name = "deepcompress.coding._cabac_other"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # numba's cache finds the module by name
    spec.loader.exec_module(mod)
    return mod


def best_of(runs: int, fns: list) -> list[float]:
    """Best CPU time of each function over `runs` rounds, the functions alternating."""
    best = [float("inf")] * len(fns)
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t0 = time.thread_time()
            fn()
            best[i] = min(best[i], time.thread_time() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].splitlines()[0])
    ap.add_argument("--symbols", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--against", metavar="OLD.py", help="another cabac.py to time alongside")
    args = ap.parse_args()

    coders = [("this", cabac)]
    if args.against:
        coders.insert(0, ("other", load_other(args.against)))
    print(f"{args.symbols} symbols, best of {args.runs} runs after a warm-up")
    head = f"{'n_symbols':>9} {'mode':>4} {'bits/sym':>8}"
    for name, _ in coders:
        head += f" {'enc ' + name:>11} {'dec ' + name:>11}"
    print(head + "   (Msymbols/s)")
    for n, p in STREAMS:
        sym = stream(n, p, args.symbols, args.seed)
        for mode in MODES:
            datas = [c.encode_mode(sym, n, mode) for _, c in coders]
            if any(d != datas[0] for d in datas):
                raise SystemExit(f"the versions write different bytes: n={n} mode={mode}")
            data = datas[0]
            for _, c in coders:
                if not np.array_equal(c.decode(data, n, sym.size), sym):
                    raise SystemExit(f"round trip failed: n={n} mode={mode}")
            t_enc = best_of(args.runs, [partial(c.encode_mode, sym, n, mode) for _, c in coders])
            t_dec = best_of(args.runs, [partial(c.decode, data, n, sym.size) for _, c in coders])
            mb = sym.size / 1e6
            line = f"{n:>9} {mode:>4} {8 * len(data) / sym.size:>8.3f}"
            for te, td in zip(t_enc, t_dec):
                line += f" {mb / te:>11.2f} {mb / td:>11.2f}"
            print(line)


if __name__ == "__main__":
    main()
