"""Entropy coders on real files: Huffman, rANS, CABAC and the per-stream choice, against zlib,
xz and zstd.

For each .dcz file (by default the LeNet files of the pipeline issue, `benchmarks/files/`,
written by `deepcompress reproduce`), every weight-shared tensor's entries are coded again with
each coder (same codebooks, same gap widths), and the whole file's size is printed. Next to
them: `zlib -9` (Python's zlib), `xz -9` and `zstd -19` of the same cluster indices and gaps
stored one byte each (two where a symbol exceeds 255), both as one blob and stream by stream
(the better is shown), and the streams' order-0 entropy. Per stream, it checks the issue's
bounds: Huffman within 1 bit per symbol of the entropy (tables included), and the other coders'
excess in percent.

    python benchmarks/bench_entropy.py [FILE.dcz ...]
"""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

from deepcompress import load_bytes
from deepcompress.coding import codec, coders
from deepcompress.format.container import Record, from_bytes, to_bytes

HERE = Path(__file__).parent
CODERS = [*coders.CODERS, "auto"]


def entropy_bytes(symbols: np.ndarray) -> float:
    if len(symbols) == 0:
        return 0.0
    p = np.bincount(symbols) / len(symbols)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum() * len(symbols) / 8)


def recode(records: list[Record], entropy: str) -> tuple[list[Record], list[dict]]:
    """The records with every shared tensor's streams coded by `entropy`, and per stream its
    coder, symbols, table and payload bytes."""
    out, streams = [], []
    for r in records:
        if r.codec != "shared":
            out.append(r)
            continue
        params, parts = codec.recode_shared(r.params, r.parts, int(np.prod(r.shape)), entropy)
        rec = Record(r.name, r.shape, r.dtype, "shared", params, parts)
        out.append(rec)
        for name, s in codec.streams("shared", params, parts).items():
            streams.append({"tensor": r.name, "stream": name, **s})
    return out, streams


def as_bytes(symbols: np.ndarray) -> bytes:
    return symbols.astype(np.uint8 if symbols.max(initial=0) < 256 else "<u2").tobytes()


def external(cmd: list[str], blobs: list[bytes]) -> int:
    """Bytes `cmd` (reading stdin, writing stdout) makes of the blobs, each compressed alone."""
    return sum(
        len(subprocess.run(cmd, input=b, capture_output=True, check=True).stdout) for b in blobs
    )


def main(paths: list[str]) -> None:
    paths = paths or sorted(str(p) for p in (HERE / "files").glob("*.dcz"))
    for path in paths:
        records, meta = from_bytes(Path(path).read_bytes())
        sizes, per_coder = {}, {}
        original = load_bytes(Path(path).read_bytes())
        for entropy in CODERS:
            recs, streams = recode(records, entropy)
            data = to_bytes(recs, meta)
            decoded = load_bytes(data)  # recoding is lossless: the same weights, bit for bit
            assert all(torch.equal(decoded[k], original[k]) for k in original), entropy
            sizes[entropy] = len(data)
            per_coder[entropy] = streams
        streams = per_coder["huffman"]
        raw = [as_bytes(s["symbols"]) for s in streams]
        other = sizes["huffman"] - sum(s["table_bytes"] + s["payload_bytes"] for s in streams)
        ext = {
            "zlib -9": min(
                sum(len(zlib.compress(b, 9)) for b in raw), len(zlib.compress(b"".join(raw), 9))
            ),
            "xz -9": min(
                external(["xz", "-9", "-c"], raw), external(["xz", "-9", "-c"], [b"".join(raw)])
            ),
            "zstd -19": min(
                external(["zstd", "-19", "-c", "-q"], raw),
                external(["zstd", "-19", "-c", "-q"], [b"".join(raw)]),
            ),
        }
        bound = sum(entropy_bytes(s["symbols"]) for s in streams)
        print(f"\n{Path(path).name}: {Path(path).stat().st_size} bytes as written")
        print(f"  everything but the streams (header, codebooks, biases): {other} bytes")
        print(f"  {'coder':<28}{'streams':>9}{'file':>9}{'vs entropy':>12}")
        for entropy in CODERS:
            st = per_coder[entropy]
            coded = sum(s["table_bytes"] + s["payload_bytes"] for s in st)
            print(
                f"  {entropy:<28}{coded:>9}{sizes[entropy]:>9}{100 * coded / bound - 100:>+11.2f}%"
            )
        for name, b in ext.items():
            excess = 100 * b / bound - 100
            print(f"  {name + ' of index+gap bytes':<28}{b:>9}{b + other:>9}{excess:>+11.2f}%")
        print(f"  {'order-0 entropy':<28}{bound:>9.0f}")
        print("  per stream (bits per symbol, tables included):")
        heads = "".join(f"{e:>9}" for e in CODERS)
        print(f"  {'tensor':<14}{'stream':<9}{'symbols':>8}{'entropy':>9}{heads}")
        for i, s in enumerate(streams):
            n = len(s["symbols"])
            h = 8 * entropy_bytes(s["symbols"]) / max(n, 1)
            coded = {
                e: per_coder[e][i]["table_bytes"] + per_coder[e][i]["payload_bytes"] for e in CODERS
            }
            cells = "".join(f"{8 * coded[e] / max(n, 1):>9.3f}" for e in CODERS)
            print(f"  {s['tensor']:<14}{s['stream']:<9}{n:>8}{h:>9.3f}{cells}")


if __name__ == "__main__":
    main(sys.argv[1:])
