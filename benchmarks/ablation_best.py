"""Ablation for `--recipe best` (issue 9): size and error after each added technique.

Starts from a file of the paper recipe (default: the pipeline issue's files in
`benchmarks/files/`), then adds, one at a time, what needs no retraining: the smallest entropy
coder per stream (lossless: same weights) and float16 biases (lossy: measured). Further files
given with `--more LABEL=FILE` (e.g. the sweep's or `reproduce --recipe best`'s outputs) are
measured the same way. Errors are those of the model decoded from each file, on the validation
and the test split.

    python benchmarks/ablation_best.py lenet-5 --more "best=runs/best/lenet-5-s0/lenet-5.dcz"
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _common import DEV_MNIST

import deepcompress as dc
from deepcompress.coding import codec
from deepcompress.format.container import Record, from_bytes, to_bytes
from deepcompress.pipeline.data import load_mnist
from deepcompress.pipeline.models import build
from deepcompress.pipeline.train import error_rate

HERE = Path(__file__).parent


def recode(data: bytes, entropy: str, half_raw: bool) -> bytes:
    """The same file with every shared tensor's streams coded by `entropy`, and with float
    `raw` tensors (biases) stored as float16 if `half_raw`."""
    records, meta = from_bytes(data)
    out = []
    for r in records:
        if r.codec == "shared":
            numel = int(torch.tensor(r.shape).prod()) if r.shape else 1
            params, parts = codec.recode_shared(r.params, r.parts, numel, entropy)
            r = Record(r.name, r.shape, r.dtype, "shared", params, parts)
        elif r.codec == "raw" and half_raw and r.dtype == "float32":
            t = codec.decode_record(r).to(torch.float16)
            r = Record(r.name, r.shape, "float16", "raw", *codec.encode_raw(t))
        out.append(r)
    return to_bytes(out, meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=["lenet-300-100", "lenet-5"])
    ap.add_argument("--paper", help="a paper-recipe file (default: benchmarks/files/MODEL.dcz)")
    ap.add_argument("--more", nargs="*", default=[], metavar="LABEL=FILE")
    ap.add_argument(
        "--data",
        default=DEV_MNIST,
        help="MNIST folder (default: $DEEPCOMPRESS_DATA, else ../shared/data/mnist)",
    )
    args = ap.parse_args()
    data = load_mnist(args.data)
    original = 4 * sum(p.numel() for p in build(args.model).parameters())
    paper = Path(args.paper or HERE / "files" / f"{args.model}.dcz").read_bytes()
    rows = [
        ("paper recipe (Huffman)", paper),
        ("+ smallest coder per stream", recode(paper, "auto", False)),
        ("+ float16 biases", recode(paper, "auto", True)),
    ]
    for item in args.more:
        label, _, file = item.rpartition("=")
        rows.append((label, Path(file).read_bytes()))
    print(f"| {args.model} | bytes | ratio | val err % | test err % |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for label, blob in rows:
            path = Path(tmp) / "m.dcz"
            path.write_bytes(blob)
            net = dc.load(path, model=build(args.model))
            val, test = error_rate(net, data.val), error_rate(net, data.test)
            print(
                f"| {label} | {len(blob)} | {original / len(blob):.1f}x | {val:.2f} | {test:.2f} |"
            )


if __name__ == "__main__":
    main()
