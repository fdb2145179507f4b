"""How many bits could a better context model save on a network's quantized weights? (issue 20)

Rounds every tensor of two dimensions or more to the grid of `--quality` (step = RMS of all of
them x 2**-quality, what `encode --quality` does with rd 0) and prints, per tensor and in all,
the ideal code length (bits a weight) of its integers under:

- "order0": their own histogram (what a static coder reaches, less its table);
- "order1": the histogram given the previous integer's magnitude (capped at 15);
- "lap-tensor", "lap-row", "lap-col": a two-sided geometric (discrete Laplace) law whose
  scale is the mean magnitude of the whole tensor, of the weight's row, or of its column (plus
  16 bits for each row's or column's scale): what a coder that knew each row's or column's
  spread would spend;
- "lap-adaptive": the same law with the scale of the previous 16 integers (backward-adaptive,
  nothing sent).

If the per-row or per-column laws came well below order-0, the spread varies across rows or
columns and a scale-adaptive context would pay; within a few tenths of a percent, it would not.

    python benchmarks/study_context_headroom.py --net resemblyzer --quality 7.5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realnets import load_state, weight_names  # noqa: E402

from deepcompress import ecsq  # noqa: E402

MODELS = ("order0", "order1", "lap-tensor", "lap-row", "lap-col", "lap-adaptive")


def entropy_bits(m: np.ndarray) -> float:
    """Total ideal code length of `m` under its own histogram."""
    _, c = np.unique(m, return_counts=True)
    return float(-(c * np.log2(c / c.sum())).sum())


def laplace_bits(m: np.ndarray, scale: np.ndarray) -> float:
    """Total code length of integers `m` under p(m) = (1 - t) / (1 + t) t**|m|, t = e**(-1 /
    scale), one scale per integer (floored at 0.05)."""
    t = np.exp(-1.0 / np.maximum(scale, 0.05))
    return float(-(np.log2((1 - t) / (1 + t)) + np.abs(m) * np.log2(t)).sum())


def bits(m: np.ndarray) -> dict[str, float]:
    """Total bits of the integers `m` (rows x columns) under each of `MODELS`."""
    flat = m.reshape(-1)
    mag = np.abs(flat)
    prev = np.concatenate([[0], np.minimum(mag[:-1], 15)])
    order1 = sum(entropy_bits(flat[prev == c]) for c in np.unique(prev))
    a = np.abs(m).astype(np.float64)
    cum = np.concatenate([[0.0], np.cumsum(mag, dtype=np.float64)])
    i = np.arange(flat.size)
    lo = np.maximum(i - 16, 0)
    adaptive = np.maximum((cum[i] - cum[lo]) / np.maximum(i - lo, 1), 0.3)
    return {
        "order0": entropy_bits(flat),
        "order1": order1,
        "lap-tensor": laplace_bits(flat, np.full(flat.size, a.mean())),
        "lap-row": laplace_bits(m, np.broadcast_to(a.mean(1, keepdims=True), m.shape))
        + 16 * m.shape[0],
        "lap-col": laplace_bits(m, np.broadcast_to(a.mean(0, keepdims=True), m.shape))
        + 16 * m.shape[1],
        "lap-adaptive": laplace_bits(flat, adaptive),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="resemblyzer")
    p.add_argument("--quality", type=float, default=7.5)
    args = p.parse_args(argv)
    state = load_state(args.net)
    names = weight_names(state)
    step = ecsq.rms([state[k] for k in names]) * 2.0**-args.quality
    print(f"{args.net}, quality {args.quality:g}: bits a weight (last row: bytes in all)\n")
    print("| tensor | weights | " + " | ".join(MODELS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in MODELS) + " |")
    total = dict.fromkeys(MODELS, 0.0)
    for name in names:
        w = state[name].double().numpy()
        m = np.rint(w.reshape(w.shape[0], -1) / step).astype(np.int64)
        b = bits(m)
        total = {k: total[k] + b[k] for k in MODELS}
        print(f"| {name} | {m.size} | " + " | ".join(f"{b[k] / m.size:.3f}" for k in MODELS) + " |")
    print("| all (bytes) | | " + " | ".join(f"{total[k] / 8:,.0f}" for k in MODELS) + " |")


if __name__ == "__main__":
    main()
