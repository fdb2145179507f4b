"""Quantization-aware training of CREPE tiny, unpruned: the dense model shared at one
rate-distortion quality with its weights trained through the grid (`quantize_(quality=Q,
trainable="weights")`), distilled from the original (mean squared error to its outputs) on
fresh synthetic tones for EPOCHS x STEPS batches of 64 at Adam rate LR; the validation error
(raw pitch accuracy misses, points, 2,000 frames of seed 2000, as `bench_crepe_tiny.py`) after
each epoch and from the file; `--heldout` adds the fidelity set of seed 1 (issue 17).

    python benchmarks/study_qat_crepe_tiny.py --quality -1 --lr 1e-4 --epochs 10 --out /tmp/qat
"""

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import deepcompress as dc
from deepcompress.retrain import distillation_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_crepe_tiny import targets  # noqa: E402
from realnets import Fidelity, build, crepe_cents, crepe_frames, load_state  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--quality", type=float, required=True)
p.add_argument("--lr", type=float, default=2e-5)
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--steps", type=int, default=100)
p.add_argument("--trainable", default="weights")
p.add_argument("--out", required=True)
p.add_argument("--heldout", action="store_true")
a = p.parse_args()
Path(a.out).mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
state = load_state("crepe-tiny")
model = build("crepe-tiny", state)
teacher = copy.deepcopy(model).eval()
for q in teacher.parameters():
    q.requires_grad_(False)
val_x, val_f0 = crepe_frames(2000, seed=2000)
val_true = 1200 * np.log2(val_f0 / 10)


@torch.no_grad()
def evaluate(m):
    m.eval()
    cents = crepe_cents(torch.cat([m(x) for x in val_x.split(100)]))
    return 100 * float(np.mean(np.abs(cents - val_true) > 50))


dense = evaluate(model)
dc.quantize_(model, quality=a.quality, trainable=a.trainable)
pre = evaluate(model)
loss = distillation_loss(teacher, 0.5)
seeds = iter(range(10_000, 10**9))
opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=a.lr)
t0 = time.time()
hist = []
for _ in range(a.epochs):
    model.eval()
    for _step in range(a.steps):
        x, f0 = crepe_frames(64, seed=next(seeds))
        out = model(x)
        v = loss(out, targets(f0), x)
        opt.zero_grad()
        v.backward()
        opt.step()
    hist.append(evaluate(model))
path = f"{a.out}/q{a.quality}-lr{a.lr}-{a.trainable}.dcz"
dc.save(model, path)
dec = dc.load(path)
m2 = build("crepe-tiny", {**state, **dec})
ferr = evaluate(m2)
n = sum(v.numel() for v in state.values() if v.is_floating_point())
sz = os.path.getsize(path)
line = (
    f"q={a.quality} lr={a.lr} {a.trainable} ep={a.epochs}x{a.steps}: dense {dense:.2f} "
    f"pre {pre:.2f} hist {[round(h, 2) for h in hist]} file-err {ferr:.2f} bytes {sz} "
    f"{4 * n / sz:.1f}x {time.time() - t0:.0f}s"
)
if a.heldout:
    fid = Fidelity("crepe-tiny", seed=1)
    line += f" heldout {fid.measure({**state, **dec})}"
print(line, flush=True)
