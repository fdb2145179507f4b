"""Bias correction after post-training quantization (Nagel et al., "Data-Free Quantization
Through Weight Equalization and Bias Correction", 2019): does moving each layer's bias by the
mean shift its quantized weights cause buy fidelity on the real networks (issue 20)? The
development fidelity sets (seed 0); encode as `deepcompress encode --quality Q` (rd 0).

- crepe-full, data-free: the mean input of conv2..conv6 and of the classifier is taken from the
  BatchNorm before it ("beta": BN's output has mean beta; "beta+pool": plus |gamma| / sqrt(pi),
  what a max-pool of two independent Gaussians adds); bias -= (W' - W) @ mean input.
- resemblyzer, with calibration (64 inputs of seed 1001; the LSTM's inputs have no data-free
  mean): each LSTM layer's bias_ih and the Linear's bias moved so that the mean pre-activations
  over the calibration inputs match the original's, layer by layer.

    python benchmarks/study_bias_correction.py crepe-full -0.75 -1.5 -2.25
    python benchmarks/study_bias_correction.py resemblyzer 5.5 6 7 7.5
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import realnets
import torch
from torch import nn

import deepcompress as dc


def crepe_corrected(orig: dict, dec: dict, pool: bool) -> dict:
    out = dict(dec)
    for i in range(2, 8):
        bn = f"conv{i - 1}_BN"
        beta, gamma = orig[bn + ".bias"].double(), orig[bn + ".weight"].double()
        mean = beta + (gamma.abs() / math.sqrt(math.pi) if pool else 0)
        name = f"conv{i}" if i < 7 else "classifier"
        dw = dec[name + ".weight"].double() - orig[name + ".weight"].double()
        if i < 7:
            shift = (dw.sum(dim=(2, 3)) * mean).sum(1)
        else:  # the classifier's input is (time, channel) flattened
            shift = dw @ mean.repeat(dw.shape[1] // mean.numel())
        out[name + ".bias"] = (dec[name + ".bias"].double() - shift).float()
    return out


@torch.no_grad()
def lstm_means(state: dict, inputs: torch.Tensor) -> list:
    """Per LSTM layer: the mean input and mean previous hidden state; then the last layer's
    mean final hidden state (the Linear's input)."""
    x, out = inputs, []
    for layer in range(3):
        lstm = nn.LSTM(x.shape[-1], 256, 1, batch_first=True)
        keys = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        lstm.load_state_dict({f"{k}_l0": state[f"lstm.{k}_l{layer}"] for k in keys})
        y, (h, _) = lstm(x)
        previous = torch.cat([torch.zeros_like(y[:, :1]), y[:, :-1]], 1)
        out.append((x.double().mean((0, 1)), previous.double().mean((0, 1))))
        x = y
    out.append((h[-1].double().mean(0), None))
    return out


def resemblyzer_corrected(orig: dict, dec: dict, inputs: torch.Tensor) -> dict:
    dec = {k: v.clone() for k, v in dec.items()}
    want_means = lstm_means(orig, inputs)
    for layer in range(4):
        (mx, mh), (qx, qh) = want_means[layer], lstm_means(dec, inputs)[layer]
        if layer < 3:
            w, u = f"lstm.weight_ih_l{layer}", f"lstm.weight_hh_l{layer}"
            want = orig[w].double() @ mx + orig[u].double() @ mh
            got = dec[w].double() @ qx + dec[u].double() @ qh
            dec[f"lstm.bias_ih_l{layer}"] += (want - got).float()
        else:
            shift = orig["linear.weight"].double() @ mx - dec["linear.weight"].double() @ qx
            dec["linear.bias"] += shift.float()
    return dec


def main() -> None:
    net, qualities = sys.argv[1], [float(q) for q in sys.argv[2:]]
    fid = realnets.Fidelity(net, seed=0)
    orig = fid.original
    calibration = realnets.resemblyzer_mels(64, 1001) if net == "resemblyzer" else None
    print(f"# {net}, development set (seed 0); original {fid.reference}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q.dcz"
        for q in qualities:
            size = dc.encode_state_dict(orig, path, quality=q, progress=False)
            dec = dc.load(path)
            row = {"plain": fid.measure(dec)}
            if net == "resemblyzer":
                row["corrected"] = fid.measure(resemblyzer_corrected(orig, dec, calibration))
            else:
                row["beta"] = fid.measure(crepe_corrected(orig, dec, pool=False))
                row["beta+pool"] = fid.measure(crepe_corrected(orig, dec, pool=True))
            print(f"quality {q:g}: {size:,} B  {row}", flush=True)


if __name__ == "__main__":
    main()
