"""Which part of the calibrated importance helps, and which hurts? (issue 20, a study)

`dc.importance` gives one number per weight from a few batches: it moves rate between tensors
(their mean importance) and inside each tensor (the spread around it). With calibration the
Resemblyzer encoder gets 12-21% smaller at equal cosine, while CREPE full gets worse than
data-free at every point (RESULTS.md, issue 20). This study splits the importance:

- "none": no importance (data-free, at the same `rd`);
- "full": as `dc.importance` gives it (what `encode_state_dict(importance=...)` uses today);
- "tensor": each tensor's mean only (rate moves between tensors, not inside them);
- "within": each tensor scaled to mean 1 (rate moves inside tensors only);
- "rank1": the separable fit mean_row x mean_col / mean per tensor (rows and columns, the
  structure an output channel's gain or an input's scale gives, without the per-weight noise
  of a few random projections);
- "sqrt": the square root of "full" (a tempered version);
- "clipA" (A a number): "full" clipped to [m / A, A m], m its mean over all the weights: no
  weight counts more than A times, or less than 1/A times, the average one;
- "dampA" (A a number): "full" plus A times its tensor's mean: a floor for the weights the
  calibration batches do not exercise (CREPE's classifier rows of the pitches they miss).

Bytes and fidelity of the decoded weights over a quality sweep, on the fidelity set of
`--seed` (0: the set choices are made on), the importance from 64 inputs drawn with seed 1000,
`rd` 1 (with rounding, rd 0, only a tensor's mean importance would count).

    python benchmarks/study_importance_shape.py --net resemblyzer --quality 7 8 9
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_posttrain import calibrate  # noqa: E402
from realnets import Fidelity, load_state, weight_names  # noqa: E402
from study_importance_proxies import sweep  # noqa: E402

KINDS = ("none", "full", "tensor", "within", "rank1", "sqrt", "damp0.1", "damp0.3", "damp1")
KINDS += ("clip4", "clip16", "clip64")


def shaped(h: torch.Tensor, kind: str, overall: float) -> torch.Tensor:
    """One tensor's importance `h` reshaped as `kind` says (see the module's docstring);
    `overall`: the mean importance of all the weights."""
    h = h.double()
    mean = h.mean().clamp_min(1e-30)
    if kind == "full":
        out = h
    elif kind == "tensor":
        out = torch.full_like(h, float(mean))
    elif kind == "within":
        out = h / mean
    elif kind == "rank1":
        m = h.reshape(h.shape[0], -1)
        out = (m.mean(1, keepdim=True) * m.mean(0, keepdim=True) / mean).reshape(h.shape)
    elif kind == "sqrt":
        out = h.sqrt()
    elif kind.startswith("clip"):
        a = float(kind[4:])
        out = h.clamp(overall / a, overall * a)
    elif kind.startswith("damp"):
        out = h + float(kind[4:]) * mean
    else:
        raise ValueError(kind)
    return out.float().contiguous()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="resemblyzer")
    p.add_argument("--quality", type=float, nargs="+", default=[7, 8, 9])
    p.add_argument("--kinds", nargs="+", default=list(KINDS[1:6]), choices=KINDS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rd", type=float, default=1.0, help="encode's rd (1: per-weight importance)")
    args = p.parse_args(argv)
    state = load_state(args.net)
    weights = weight_names(state)
    fidelity = Fidelity(args.net, seed=args.seed)
    h = calibrate(args.net, 64, 1000)
    overall = sum(float(h[k].double().sum()) for k in weights)
    overall /= sum(h[k].numel() for k in weights)
    kinds = {
        kind: None if kind == "none" else {k: shaped(h[k], kind, overall) for k in weights}
        for kind in args.kinds
    }
    sweep(state, fidelity, kinds, args.quality, rd=args.rd)


if __name__ == "__main__":
    main()
