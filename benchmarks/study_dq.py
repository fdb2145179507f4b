"""Dependent (trellis-coded) quantization against rounding to one grid (issue 20, a study).

NNCodec's quantizer (and VVC's) is dependent quantization: two scalar quantizers, Q0 on the
even multiples of a step d and Q1 on the odd ones (and zero), and a 4-state machine driven by
the parity of each index choosing which one the next weight uses; the encoder picks the indices
with a Viterbi search over the states. The indices are those of a quantizer of step 2d while the
reconstructions reach a grid of step d: at equal squared error, fewer bits than rounding.

Before any change to the file, this study measures what that would give on the real networks:
for each tensor of two dimensions or more (the file's order, row-major), the indices of
(a) rounding to a grid of step s (what `encode --quality` does with rd 0) and (b) the trellis
at step d (its rate term priced by an ideal code of each index given its context: the previous
index's magnitude capped at 2 and the quantizer in use; 3 rounds refit the prices). Printed for
each: that estimate, the real file our coders write for the indices (`encode_state_dict` on the
indices themselves, a grid of step 1: the coders see exactly the index stream a DQ mode would
give them, without knowing the state), the same with each tensor's indices split into two
streams by the quantizer that chose them (a decoder can merge them back by running the state
machine, so this is what coding given the state would cost with our coders unchanged), the
squared error and the fidelity of the weights.

    python benchmarks/study_dq.py --net crepe-full --quality -1.5 -1 -0.75 -0.5 --dq 1 \
        --lam 0.05 0.1 0.2 0.4
    python benchmarks/study_dq.py --net resemblyzer --quality 7 7.5 8 --dq 1 1.25 --lam 0 0.5 1

`--same-values QP ...` instead codes the values NNCodec 2.1.3 decodes at each qp (its default
dependent quantization off and on) with our coders: what each spends on the same reconstruction.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import numba
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realnets import Fidelity, load_state, weight_names  # noqa: E402

import deepcompress as dc  # noqa: E402
from deepcompress import ecsq  # noqa: E402

K = 4096  # magnitudes 0..K-1 get their own code; K and above: K plus an Exp-Golomb remainder
TRANS = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], np.int64)


@numba.njit(cache=True)
def _escape_bits(m):
    if m < K:
        return 0.0
    r = m - K + 1
    return 2.0 * math.floor(math.log2(r)) + 1.0


@numba.njit(cache=True)
def _rec(q, k, d):
    if q == 0:
        return 2.0 * k * d
    if k == 0:
        return 0.0
    return (2.0 * k - (1.0 if k > 0 else -1.0)) * d


@numba.njit(cache=True)
def _trellis(x, d, lam, rate, trans):  # pragma: no cover - compiled
    """Indices minimising sum (x - rec)^2 + lam * bits over the 4-state trellis; `rate[q, ctx,
    m]` the bits of magnitude m (capped at K) in quantizer q after a magnitude ctx (capped 2)."""
    n = x.size
    inf = 1e300
    cost = np.full(4, inf)
    cost[0] = 0.0
    prevm = np.zeros(4, np.int64)
    back = np.empty((n, 4), np.int8)
    kk = np.empty((n, 4), np.int32)
    cand = np.empty(3, np.int64)
    for i in range(n):
        v = x[i]
        new = np.full(4, inf)
        newm = np.zeros(4, np.int64)
        for s in range(4):
            if cost[s] >= inf:
                continue
            q = s >> 1
            ctx = min(prevm[s], 2)
            if q == 0:
                f = math.floor(v / (2.0 * d))
                cand[0] = f
                cand[1] = f + 1
                cand[2] = 0
            else:
                a = abs(v) / d
                m1 = max(1, int(math.floor((a + 1.0) / 2.0)))
                sg = 1 if v >= 0 else -1
                cand[0] = sg * m1
                cand[1] = sg * (m1 + 1)
                cand[2] = 0
            for c in range(3):
                k = cand[c]
                if c == 2 and (cand[0] == 0 or cand[1] == 0):
                    continue
                m = abs(k)
                e = v - _rec(q, k, d)
                bits = rate[q, ctx, min(m, K)] + _escape_bits(m) + (1.0 if m else 0.0)
                j = cost[s] + e * e + lam * bits
                t = trans[s, m & 1]
                if j < new[t]:
                    new[t] = j
                    newm[t] = m
                    back[i, t] = s
                    kk[i, t] = k
        cost = new
        prevm = newm
    s = int(np.argmin(cost))
    ks = np.empty(n, np.int32)
    qs = np.empty(n, np.int8)
    for i in range(n - 1, -1, -1):
        ks[i] = kk[i, s]
        s = back[i, s]
        qs[i] = s >> 1
    return ks, qs


def _contexts(ks: np.ndarray) -> np.ndarray:
    m = np.minimum(np.abs(ks), 2)
    return np.concatenate([[0], m[:-1]])


def estimate_bits(ks: np.ndarray, qs: np.ndarray) -> tuple[float, np.ndarray]:
    """Ideal code length of `ks` under their counts given (quantizer, previous magnitude), plus
    sign and escape bits; and the table of -log2 p the counts give (with half a count added)."""
    m = np.minimum(np.abs(ks), K).astype(np.int64)
    ctx = _contexts(ks)
    counts = np.zeros((2, 3, K + 1))
    np.add.at(counts, (qs.astype(np.int64), ctx, m), 1)
    table = -np.log2((counts + 0.5) / (counts + 0.5).sum(2, keepdims=True))
    p = counts / np.maximum(counts.sum(2, keepdims=True), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ideal = -np.nansum(counts * np.where(p > 0, np.log2(p), 0.0))
    big = np.abs(ks[np.abs(ks) >= K]).astype(np.float64)
    esc = float((2 * np.floor(np.log2(big - K + 1)) + 1).sum()) if big.size else 0.0
    return ideal + np.count_nonzero(ks) + esc, table


def dq(x: np.ndarray, d: float, lam: float, rounds: int = 3):
    """The trellis's reconstruction of flat float64 `x`, its indices and estimated bits."""
    rate = np.tile((2.0 * np.log2(1.0 + np.arange(K + 1)) + 1.0)[None, None, :], (2, 3, 1))
    for _ in range(rounds if lam > 0 else 1):
        ks, qs = _trellis(x, d, lam, rate, TRANS)
        bits, rate = estimate_bits(ks, qs)
    rec = np.where(qs == 0, 2.0 * ks * d, (2.0 * ks - np.sign(ks)) * d)
    return rec, ks, bits, qs


def rounded(x: np.ndarray, s: float):
    """Rounding to the grid of step `s`: reconstruction, indices, estimated bits."""
    ks = np.rint(x / s).astype(np.int32)
    qs = np.zeros(ks.size, np.int8)
    bits, _ = estimate_bits(ks, qs)
    return ks * s, ks, bits, qs


def coded_size(tensors: dict[str, torch.Tensor], step: float) -> int:
    """Bytes of the file `encode_state_dict` writes for `tensors`, all on a grid of `step`
    (rounding reproduces them exactly: checked)."""
    q = -math.log2(step / ecsq.rms(list(tensors.values())))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.dcz")
        size = dc.encode_state_dict(tensors, path, quality=q)
        back = dc.load(path)
    if not all(torch.equal(back[k].float(), v.float()) for k, v in tensors.items()):
        raise AssertionError("the grid did not reproduce the values")
    return size


def run(state, fid, names, step, label, quantizer) -> None:
    """One row: estimated bits, the real file of the indices, squared error, fidelity."""
    out, idx, split, bits, err = dict(state), {}, {}, 0.0, 0.0
    for k in names:
        x = state[k].double().numpy().reshape(-1)
        rec, ks, b, qs = quantizer(x, step)
        for q in (0, 1):
            part = ks[qs == q]
            if part.size:
                split[f"{k}.q{q}"] = torch.from_numpy(part.astype(np.float32)).reshape(1, -1)
        bits += b
        err += float(((x - rec) ** 2).sum())
        out[k] = torch.from_numpy(rec.reshape(state[k].shape)).float()
        idx[k] = torch.from_numpy(ks.astype(np.float32)).reshape(state[k].shape)
    size = coded_size(idx, 1.0)
    size2 = coded_size(split, 1.0)
    m = fid.measure(out)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in m.items())
    print(f"| {label} | {bits / 8:,.0f} | {size:,} | {size2:,} | {err:.4g} | {shown} |", flush=True)


def same_values(state, fid, names, qps) -> None:
    """NNCodec's file (dependent quantization off and on) against ours for the very values
    NNCodec's decoder returns: what each coder spends on the same reconstruction; with the
    squared error and fidelity of those values."""
    from bench_posttrain import nncodec_decode, nncodec_encode
    from nncodec.nnc_core.common import get_stepsize_from_qp  # after nncodec_encode's stubs

    w = {k: state[k].float().contiguous() for k in names}
    print("| NNCodec | qp | its bytes | ours, same values | ratio | nonzero | sq. err | fidelity |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for use_dq in (False, True):
        for qp in qps:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "x.nnc")
                nncodec_encode(w, path, qp, use_dq=use_dq)
                dec = nncodec_decode(path)
                theirs = os.path.getsize(path)
            d = {k: dec[k].reshape(w[k].shape) for k in w}
            step = float(get_stepsize_from_qp(np.int32(qp), 2)) / (2 if use_dq else 1)
            ours = coded_size(d, step)
            nz = sum(int(v.count_nonzero()) for v in d.values())
            nz /= sum(v.numel() for v in d.values())
            err = sum(float((d[k].double() - w[k].double()).pow(2).sum()) for k in w)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in fid.measure({**state, **d}).items())
            label = "DQ on" if use_dq else "DQ off"
            print(
                f"| {label} | {qp} | {theirs:,} | {ours:,} | {ours / theirs:.3f} | {nz:.3f} "
                f"| {err:.4g} | {shown} |",
                flush=True,
            )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="crepe-full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=float, nargs="+", default=[-1, -0.75, -0.5])
    p.add_argument("--dq", type=float, nargs="*", default=[1.0], help="d = DQ x the grid step / 2")
    p.add_argument("--lam", type=float, nargs="*", default=[0.0], help="lam in units of d^2")
    p.add_argument("--same-values", type=int, nargs="*", metavar="QP", help="see same_values")
    args = p.parse_args(argv)
    state = load_state(args.net)
    names = weight_names(state)
    fid = Fidelity(args.net, seed=args.seed)
    if args.same_values:
        return same_values(state, fid, names, args.same_values)
    rms = ecsq.rms([state[k] for k in names])
    head = "quantizer | bytes (estimate) | file of the indices | split by quantizer | sq. error"
    print(f"| {head} | fidelity |")
    print("| --- | --- | --- | --- | --- | --- |")
    for q in args.quality:
        s = rms * 2.0**-q
        run(state, fid, names, s, f"round q {q:g}", rounded)
        for f in args.dq:
            for lam in args.lam:
                d = s * f / 2
                label = f"dq q {q:g} d={f:g}*s/2 lam {lam:g}"
                run(state, fid, names, d, label, lambda x, d, lam=lam: dq(x, d, lam * d * d))


if __name__ == "__main__":
    main()
