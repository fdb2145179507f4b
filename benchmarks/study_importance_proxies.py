"""Data-free stand-ins for `dc.importance`: can a weight's RMS scale tell its sensitivity?

Each proxy weighs a weight's error by 1 / (mean square of its tensor, row or column), the
scale-invariant view (a layer followed by a normalisation cares about relative error only).
For each, the file's bytes and the fidelity of its decoded weights over a quality sweep, beside
no weighting and the calibrated importance (64 inputs drawn with seed 1000), on the fidelity
set of `--seed` (0: the set choices are made on). Findings in RESULTS.md, issue 20.

    python benchmarks/study_importance_proxies.py --net resemblyzer --quality 6 7 7.5 8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_posttrain import calibrate  # noqa: E402
from realnets import Fidelity, load_state, weight_names  # noqa: E402

import deepcompress as dc  # noqa: E402


def proxy(weights: dict[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """1 / mean square over each weight's tensor, row (output) or column (input)."""
    out = {}
    for name, w in weights.items():
        m = w.reshape(w.shape[0], -1).float().pow(2)
        ms = {"tensor": m.mean(), "row": m.mean(1, keepdim=True), "col": m.mean(0, keepdim=True)}
        out[name] = (1 / ms[kind].clamp_min(1e-12)).expand_as(m).reshape(w.shape).contiguous()
    return out


def sweep(state: dict, fidelity: Fidelity, kinds: dict, qualities: list[float], **options) -> None:
    """Print one Markdown row per weighting (`{name: importance or None}`) and quality: the
    file's bytes and the fidelity of the weights decoded from it (`options`: more arguments of
    `encode_state_dict`, such as `rd`)."""
    print("| weighting | quality | bytes | fidelity |\n| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.dcz")
        for kind, importance in kinds.items():
            for q in qualities:
                size = dc.encode_state_dict(
                    state, path, quality=q, importance=importance, **options
                )
                m = fidelity.measure(dc.load(path))
                shown = ", ".join(f"{k} {v:.4f}" for k, v in m.items())
                print(f"| {kind} | {q:g} | {size} | {shown} |", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="resemblyzer")
    p.add_argument("--quality", type=float, nargs="+", default=[6, 7, 7.5, 8])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    state = load_state(args.net)
    weights = {k: state[k] for k in weight_names(state)}
    fidelity = Fidelity(args.net, seed=args.seed)
    calibrated = calibrate(args.net, 64, 1000)
    kinds = {
        "none": None,
        **{k: proxy(weights, k) for k in ("tensor", "row", "col")},
        "calibrated": {k: v for k, v in calibrated.items() if k in weights},
    }
    sweep(state, fidelity, kinds, args.quality)


if __name__ == "__main__":
    main()
