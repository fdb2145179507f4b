"""Post-training compression of a real pretrained network, side by side with NNCodec (issue 20).

    python benchmarks/bench_posttrain.py --net crepe-full|crepe-tiny|resemblyzer
        [--codecs float16 int8zstd nncodec ours] [--qp -8 -6 -4 ...]
        [--ours 'bits=8' 'bits=4,init="linear"' 'quality=12' ...] [--json OUT] [--plot OUT.png]

Every codec gets the same tensors: all floating-point tensors of the network's state dict
(weights, biases, BatchNorm parameters and running statistics), as float32. Integer buffers
(CREPE's six int64 `num_batches_tracked`, 48 bytes) are left out of every file alike and put
back from the original before measuring. Per point: the file is written to a temporary
folder, its size on disk taken, the weights decoded FROM THE FILE and measured with
`realnets.Fidelity` (see there). Ratio = 4 bytes x float parameters / file bytes.

Codecs:
- float16: every float tensor as float16 in a safetensors file (setting "all"); "keep-fp32"
  keeps the tensors beyond float16's range (|x| > 65504) in float32.
- int8zstd: 2-D+ tensors int8 per output row (symmetric, float32 scale per row), 1-D tensors
  float32, the whole serialised together and compressed by zstandard level 19.
- nncodec: NNCodec 2.1.3 `nnc.compress` at its defaults (dependent quantization on) at each
  `--qp`; decoded by `nnc.decompress`. It quantizes tensors of 2+ dimensions at `qp` and
  every 1-D tensor at its `nonweight_qp=-75` (step 2.4e-6, clipped per tensor so that the
  levels fit in int32); the step is absolute: (4 + qp % 4) / 4 * 2 ** (qp // 4) (with
  `--qp-density D`: (2**D + qp % 2**D) / 2**D * 2 ** (qp // 2**D), and the 1-D tensors'
  qp -75 * 2**(D - 2), the same step).
- ours: `deepcompress.encode_state_dict(state, path, **kwargs)` then `deepcompress.load`;
  each `--ours` string is `key=value,...` (values by `ast.literal_eval`, a bare word is a
  string; "" or "defaults" = no arguments).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from _common import cpu_name
from realnets import LEVELS, NAMES, Fidelity

FP16_MAX = 65504.0
DEFAULT_QP = {
    "crepe-full": [-10, -8, -6, -5, -4, -2, 0],
    "crepe-tiny": [-12, -8, -6, -4],
    "resemblyzer": [-44, -42, -40, -38, -36, -34, -32, -30],
}
DEFAULT_OURS = {"resemblyzer": ["bits=8", "bits=10", "bits=12", "bits=14", "defaults"]}
DEFAULT_OURS_ANY = ["bits=8", "bits=6", "bits=5", "bits=4", "bits=3", "bits=2"]


def parse_kwargs(spec: str) -> dict:
    """'bits=4,init="linear"' -> {"bits": 4, "init": "linear"}; any key passes through."""
    if spec.strip() in ("", "defaults"):
        return {}
    call = ast.parse(f"f({spec})", mode="eval").body
    if not isinstance(call, ast.Call) or call.args:
        raise ValueError(f"not key=value pairs: {spec!r}")
    return {
        kw.arg: kw.value.id if isinstance(kw.value, ast.Name) else ast.literal_eval(kw.value)
        for kw in call.keywords
    }


# ---- the codecs: encode(state, path, setting) writes a file, decode(path) -> state ---------


def float16_encode(state, path, setting):
    from safetensors.torch import save_file

    keep = setting == "keep-fp32"
    save_file(
        {k: v if keep and v.abs().max() > FP16_MAX else v.half() for k, v in state.items()}, path
    )


def float16_decode(path):
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(path).items()}


def int8zstd_encode(state, path, setting):
    import zstandard

    header, blobs = [], []
    for name, v in state.items():
        if v.dim() >= 2:
            rows = v.reshape(v.shape[0], -1)
            scale = rows.abs().amax(dim=1) / 127
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            q = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
            blobs += [scale.numpy().tobytes(), q.numpy().tobytes()]
        else:
            blobs.append(v.numpy().astype(np.float32).tobytes())
        header.append([name, list(v.shape)])
    head = json.dumps(header).encode()
    raw = struct.pack("<I", len(head)) + head + b"".join(blobs)
    Path(path).write_bytes(zstandard.ZstdCompressor(level=19).compress(raw))


def int8zstd_decode(path):
    import zstandard

    raw = zstandard.ZstdDecompressor().decompress(Path(path).read_bytes())
    (n,) = struct.unpack_from("<I", raw)
    pos, out = 4 + n, {}
    for name, shape in json.loads(raw[4:pos]):
        if len(shape) >= 2:
            rows, cols = shape[0], int(np.prod(shape[1:]))
            scale = np.frombuffer(raw, np.float32, rows, pos)
            q = np.frombuffer(raw, np.int8, rows * cols, pos + 4 * rows).reshape(rows, cols)
            out[name] = torch.from_numpy(q * scale[:, None]).reshape(shape)
            pos += 4 * rows + rows * cols
        else:
            size = int(np.prod(shape))
            out[name] = torch.from_numpy(np.frombuffer(raw, np.float32, size, pos).copy())
            out[name] = out[name].reshape(shape)
            pos += 4 * size
    return out


class _Stub(types.ModuleType):
    """Stands in for a package NNCodec imports only for its image datasets and HDF5 logging
    (torchvision, pandas, cv2, h5py): every attribute is a stub, callable and subclassable."""

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Stub(f"{self.__name__}.{attr}")

    def __call__(self, *args, **kwargs):
        return self

    def __mro_entries__(self, bases):
        return (object,)


def _nnc():
    for mod in ("torchvision", "pandas", "cv2", "h5py"):
        try:
            __import__(mod)
        except ImportError:
            sys.modules[mod] = _Stub(mod)
    from nncodec import nnc

    return nnc


#: NNCodec's qp_density (its default 2: a qp step is 2**(1/4)); `--qp-density` sets it, and
#: the non-weight qp follows so that 1-D tensors keep the default's step (-75 at density 2).
QP_DENSITY = {"value": 2}


def nncodec_encode(state, path, qp, use_dq=True):
    """NNCodec's file of `state` at `qp` (its defaults: dependent quantization on)."""
    params = {k: v.numpy().astype(np.float32, copy=True) for k, v in state.items()}
    out = io.StringIO()  # it prints an INFO line per clipped QP: keep them for the report
    stdout, sys.stdout = sys.stdout, out
    d = QP_DENSITY["value"]
    try:
        _nnc().compress(
            params,
            bitstream_path=str(path),
            qp=int(qp),
            qp_density=d,
            nonweight_qp=-75 << (d - 2),
            use_dq=use_dq,
            verbose=False,
        )
    finally:
        sys.stdout = stdout
    nncodec_encode.notes = out.getvalue().strip().splitlines()


def nncodec_decode(path):
    dec = _nnc().decompress(bytearray(Path(path).read_bytes()))
    return {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in dec.items()}


def ours_encode(state, path, setting):
    import deepcompress as dc

    dc.encode_state_dict(state, path, **parse_kwargs(setting))


def ours_data_encode(state, path, setting):
    """Ours with data-aware distortion: `dc.importance` on the calibration inputs (a set
    disjoint from the fidelity set), computed once per run."""
    import deepcompress as dc

    dc.encode_state_dict(state, path, importance=CALIBRATION["importance"], **parse_kwargs(setting))


#: filled by main() with --calibration: the importance of the original weights
CALIBRATION: dict = {}


def calibrate(net: str, n: int, seed: int) -> dict:
    """`dc.importance` of the original model on n inputs drawn with a seed of their own."""
    from realnets import build, crepe_frames, load_state, resemblyzer_mels

    import deepcompress as dc

    inputs = crepe_frames(n, seed)[0] if net.startswith("crepe") else resemblyzer_mels(n, seed)
    model = build(net, load_state(net))
    t0 = time.perf_counter()
    h = dc.importance(model, [x for x in inputs.split(32)])
    CALIBRATION["seconds"] = time.perf_counter() - t0
    return {k: v for k, v in h.items() if v.dim() >= 2}


def ours_decode(path):
    import deepcompress as dc

    return dc.load(path)


CODECS = {
    "float16": (float16_encode, float16_decode, ".safetensors"),
    "int8zstd": (int8zstd_encode, int8zstd_decode, ".bin.zst"),
    "nncodec": (nncodec_encode, nncodec_decode, ".nnc"),
    "ours": (ours_encode, ours_decode, ".dcz"),
    "ours-data": (ours_data_encode, ours_decode, ".dcz"),
}


def run_point(fid, floats, codec, setting, tmp):
    encode, decode, ext = CODECS[codec]
    path = Path(tmp) / f"{codec}{ext}"
    t0 = time.perf_counter()
    encode(floats, path, setting)
    t_enc = time.perf_counter() - t0
    size = os.path.getsize(path)
    t0 = time.perf_counter()
    dec = decode(path)
    t_dec = time.perf_counter() - t0
    path.unlink()
    if set(dec) != set(floats) or any(dec[k].shape != v.shape for k, v in floats.items()):
        raise RuntimeError(f"{codec} {setting}: decoded tensors differ in names or shapes")
    state = {**fid.original, **{k: dec[k] for k in floats}}
    metrics = fid.measure(state)
    return {
        "codec": codec,
        "setting": str(setting),
        "bytes": size,
        "encode_s": t_enc,
        "decode_s": t_dec,
        "eval_s": fid.seconds,
        **metrics,
        **fid.levels(metrics),
    }


def plot(rows, net, path):
    """Bytes (log) against the primary fidelity metric, one series per codec (per setting for
    float16 and int8zstd); points below the zoomed range sit on its lower edge as triangles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crepe = net.startswith("crepe")
    metric, near, bottom = ("within10", 0.995, 0.9) if crepe else ("cosine", 0.9995, 0.98)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, series in enumerate(dict.fromkeys(_series(r) for r in rows)):
        pts = sorted((r["bytes"], r[metric]) for r in rows if _series(r) == series)
        x, y = np.array(pts).T
        (line,) = ax.plot(
            x,
            np.maximum(y, bottom),
            "-" if len(x) > 1 else "",
            label=series,
            marker="osDP^X*"[i % 7],
            markevery=list(np.flatnonzero(y >= bottom)),
        )
        ax.plot(x[y < bottom], np.full((y < bottom).sum(), bottom), "v", c=line.get_color())
    ax.axhline(near, ls="--", c="grey", lw=0.8, label="near-lossless")
    if not crepe:
        ax.axhline(0.995, ls=":", c="grey", lw=0.8, label="small loss")
    ax.set_xscale("log")
    ax.set_ylim(bottom - 0.02 * (1 - bottom), 1 + 0.02 * (1 - bottom))
    ax.set_xlabel("file bytes")
    ax.set_ylabel(
        "share of frames within 10 cents of the original"
        if crepe
        else "mean cosine to the original embeddings"
    )
    ax.set_title(f"{net}: post-training compression, weights decoded from the file")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _series(row):
    """One line per codec swept over one knob: NNCodec's qp; ours and ours-data over quality,
    a line per other setting (such as rd=1); float16 and int8zstd a point per setting."""
    if row["codec"] == "nncodec":
        return "nncodec"
    if row["codec"].startswith("ours"):
        rest = [kv for kv in row["setting"].split(",") if not kv.startswith("quality=")]
        return " ".join([row["codec"], *rest])
    return f"{row['codec']} {row['setting']}"


def source_state() -> str:
    """The commit run from, and a digest of uncommitted src/ edits (untracked files included)."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, capture_output=True).stdout

    head = git("rev-parse", "--short", "HEAD").decode().strip() or "unknown"
    diff = git("diff", "HEAD", "--", "src")
    for f in git("ls-files", "--others", "--exclude-standard", "src").decode().split():
        diff += f.encode() + (repo / f).read_bytes()
    return head + (
        f" + uncommitted src/ edits (diff sha1 {hashlib.sha1(diff).hexdigest()[:10]})"
        if diff
        else ""
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", choices=NAMES, default="crepe-full")
    p.add_argument("--codecs", nargs="+", choices=list(CODECS), default=list(CODECS))
    p.add_argument("--qp", type=int, nargs="+", help="NNCodec qp values (default per net)")
    p.add_argument(
        "--qp-density", type=int, default=2, choices=(2, 3, 4), help="NNCodec's qp_density"
    )
    p.add_argument("--ours", nargs="+", help="deepcompress settings, e.g. 'bits=6'")
    p.add_argument(
        "--float16", nargs="+", default=["all", "keep-fp32"], choices=["all", "keep-fp32"]
    )
    p.add_argument("--ours-data", nargs="+", help="settings of ours-data (default: --ours)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the fidelity set (0: the one settings are chosen on)",
    )
    p.add_argument(
        "--calibration",
        type=int,
        default=64,
        help="inputs for ours-data's importance (drawn with seed 1000 + --seed)",
    )
    p.add_argument("--json", help="write the rows and the reference here")
    p.add_argument("--plot", help="write a PNG of bytes against fidelity here")
    p.add_argument(
        "--replot",
        nargs="+",
        metavar="JSON",
        help="only draw --plot from the rows of these --json files (no run)",
    )
    args = p.parse_args(argv)
    if args.replot:
        runs = [json.loads(Path(f).read_text()) for f in args.replot]
        plot([r for run in runs for r in run["rows"]], runs[0]["net"], args.plot)
        return
    settings = {
        "float16": args.float16,
        "int8zstd": ["row"],
        "nncodec": args.qp or DEFAULT_QP[args.net],
        "ours": args.ours or DEFAULT_OURS.get(args.net, DEFAULT_OURS_ANY),
    }
    settings["ours-data"] = args.ours_data or settings["ours"]
    QP_DENSITY["value"] = args.qp_density
    torch.manual_seed(0)
    t0 = time.perf_counter()
    fid = Fidelity(args.net, seed=args.seed)
    if "ours-data" in args.codecs:
        CALIBRATION["importance"] = calibrate(args.net, args.calibration, 1000 + args.seed)
    floats = {k: v.float() for k, v in fid.original.items() if v.is_floating_point()}
    others = sorted(k for k in fid.original if k not in floats)
    n_params = sum(v.numel() for v in floats.values())
    metric_names = list(fid.reference)
    print(
        f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu_name()}, torch "
        f"{torch.__version__}; {args.net}: {len(floats)} float tensors, {n_params} params "
        f"({4 * n_params} bytes as float32); left out of every file: {others or 'nothing'}"
    )
    print(f"# deepcompress from {source_state()}")
    print(
        f"# {len(fid.inputs)} inputs; original: {fid.reference}; one evaluation "
        f"{fid.seconds:.1f} s (setup {time.perf_counter() - t0:.1f} s); fidelity seed "
        f"{args.seed}; NNCodec qp_density {args.qp_density}"
        + (
            f"; ours-data: importance on {args.calibration} inputs of seed "
            f"{1000 + args.seed}, {CALIBRATION['seconds']:.1f} s"
            if CALIBRATION
            else ""
        )
    )
    print(
        f"| codec | setting | bytes | ratio | enc s | dec s | {' | '.join(metric_names)} "
        "| levels met |"
    )
    print("| --- " * (7 + len(metric_names)) + "|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for codec in args.codecs:
            for setting in settings[codec]:
                r = run_point(fid, floats, codec, setting, tmp)
                if codec == "nncodec" and nncodec_encode.notes:
                    r["notes"] = nncodec_encode.notes
                rows.append(r)
                met = ", ".join(lv for lv in LEVELS if r[lv]) or "-"
                ratio = 4 * n_params / r["bytes"]
                print(
                    f"| {codec} | {r['setting']} | {r['bytes']} | {ratio:.2f}x | "
                    f"{r['encode_s']:.1f} | {r['decode_s']:.2f} | "
                    + " | ".join(f"{r[m]:.4f}" for m in metric_names)
                    + f" | {met} |",
                    flush=True,
                )
    print("\n| level | " + " | ".join(args.codecs) + " | ours / nncodec |")
    print("| --- " * (len(args.codecs) + 2) + "|")
    for lv in LEVELS:
        best = {
            c: min(
                (r for r in rows if r["codec"] == c and r[lv]),
                key=lambda r: r["bytes"],
                default=None,
            )
            for c in args.codecs
        }
        cells = [f"{b['bytes']} ({b['setting']})" if b else "none" for b in best.values()]
        ours, nnc = best.get("ours"), best.get("nncodec")
        ratio = f"{ours['bytes'] / nnc['bytes']:.2f}x" if ours and nnc else "-"
        print(f"| {lv} | " + " | ".join(cells) + f" | {ratio} |")
    notes = sorted({n for r in rows for n in r.get("notes", [])})
    if notes:
        print("\nNNCodec said:\n" + "\n".join(f"  {n}" for n in notes))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "net": args.net,
                    "params": n_params,
                    "inputs": len(fid.inputs),
                    "reference": fid.reference,
                    "rows": rows,
                },
                indent=1,
            )
        )
    if args.plot:
        plot(rows, args.net, args.plot)


if __name__ == "__main__":
    main()
