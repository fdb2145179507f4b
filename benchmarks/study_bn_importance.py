"""Data-free importance from CREPE's own BatchNorm statistics (issue 20, a study).

Each conv weight's error is weighed by a row factor from the BatchNorm after its conv ("abs":
gamma^2 / var, the scale an error reaches the normalised output with; "rel": 1 / var, the
error relative to the channel's spread) times a column factor from the BatchNorm before it
(beta^2 + gamma^2, the second moment of its input channel; 1 for the first conv, whose input
frames are normalised); the classifier's columns by the last BatchNorm's, its rows by 1 ("abs")
or 1 / the output's estimated second moment ("rel"). "-in" variants keep each tensor's mean
(only the spread inside a tensor moves); "-half" takes the square root of the "-in" weights.
Bytes and fidelity on the seed-0 set (the set choices are made on). Findings in RESULTS.md.

    python benchmarks/study_bn_importance.py none,rel,abs -1.5 -1 -0.5
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realnets import Fidelity, load_state  # noqa: E402
from study_importance_proxies import sweep  # noqa: E402

EPS = 1e-3  # CREPE's BatchNorm eps


def bn_importance(s: dict, mode: str) -> dict[str, torch.Tensor]:
    out, prev = {}, None  # prev: E[x^2] per input channel of the next conv
    for i in range(1, 7):
        g, b = s[f"conv{i}_BN.weight"].double(), s[f"conv{i}_BN.bias"].double()
        v = s[f"conv{i}_BN.running_var"].double()
        w = s[f"conv{i}.weight"]
        col = torch.ones(w.shape[1], dtype=torch.float64) if prev is None else prev
        row = g * g / (v + EPS) if mode == "abs" else 1 / (v + EPS)
        out[f"conv{i}.weight"] = (row[:, None] * col[None, :])[:, :, None, None].float()
        prev = b * b + g * g
    wc = s["classifier.weight"].double()
    col = prev.repeat(4)  # the flattened input: position * 512 + channel
    if mode == "rel":
        row = 1 / (wc.pow(2) * col[None, :]).sum(1)
    else:
        row = torch.ones(wc.shape[0], dtype=torch.float64)
    out["classifier.weight"] = (row[:, None] * col[None, :]).float()
    return out


def per_tensor(imp: dict, power: float = 1.0) -> dict[str, torch.Tensor]:
    return {k: (v.double() / v.double().mean()).pow(power).float() for k, v in imp.items()}


def weighting(state: dict, kind: str):
    if kind == "none":
        return None
    if kind.endswith("-in"):
        return per_tensor(bn_importance(state, kind[:-3]))
    if kind.endswith("-half"):
        return per_tensor(bn_importance(state, kind[:-5]), 0.5)
    return bn_importance(state, kind)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    kinds, qualities = argv[0].split(","), [float(q) for q in argv[1:]]
    state = load_state("crepe-full")
    fid = Fidelity("crepe-full", seed=0)
    sweep(state, fid, {kind: weighting(state, kind) for kind in kinds}, qualities)


if __name__ == "__main__":
    main()
