"""Where the bytes went: per-layer statistics of a compressed file, and the paper-style table."""

from __future__ import annotations

import os

from . import codec
from .fileformat import read_file


def layer_stats(path: str | os.PathLike) -> tuple[list[dict], int]:
    """Per-layer statistics of a file, shaped like the paper's Tables 2 and 3.

    Returns:
        `(layers, total_bytes)`. Each layer (a `*.weight` and its sibling tensors, such as
        its bias) has: `layer`, `weights` (elements of the weight), `kept` (fraction
        non-zero), `weight_bits` (bits of a cluster index, None if not weight-shared),
        `weight_bits_huffman` (coded bits per entry of the cluster-index stream),
        `index_bits` (gap width), `index_bits_huffman` (coded bits per entry of the gap
        stream), `bytes` (the layer's data sections) and `ratio` (4 bytes per parameter of
        the layer over `bytes`).
    """
    records, _ = read_file(path)
    total = os.path.getsize(path)
    layers: dict[str, dict] = {}
    for rec in records:
        layer, _, tname = rec.name.rpartition(".")
        numel = 1
        for s in rec.shape:
            numel *= s
        row = layers.setdefault(
            layer,
            {
                "layer": layer,
                "weights": 0,
                "params": 0,
                "kept": None,
                "weight_bits": None,
                "weight_bits_huffman": None,
                "index_bits": None,
                "index_bits_huffman": None,
                "bytes": 0,
            },
        )
        row["params"] += numel
        row["bytes"] += sum(len(p) for p in rec.parts)
        if rec.codec == "raw" and tname != "weight":
            continue
        if tname == "weight" or rec.codec != "raw":
            row["weights"] = numel
            if rec.codec == "raw":
                row["kept"] = 1.0
                continue
            entries = max(1, rec.params["entries"])
            g_bits = len(rec.parts[-1]) * 8
            row["index_bits"] = rec.params["index_bits"]
            row["index_bits_huffman"] = g_bits / entries
            if rec.codec == "shared":
                row["weight_bits"] = max(1, (rec.params["k"] - 1).bit_length())
                row["weight_bits_huffman"] = len(rec.parts[2]) * 8 / entries
            row["kept"] = _kept(rec, numel)
    rows = [r for r in layers.values() if r["weights"]]
    for r in rows:
        r["ratio"] = 4 * r["params"] / max(1, r["bytes"])
    return rows, total


def _kept(rec, numel: int) -> float:
    _, decoder = codec.DECODERS[rec.codec]
    t = decoder(rec.params, rec.parts, codec.DTYPES[rec.dtype], rec.shape)
    return float((t != 0).sum()) / max(1, numel)


def format_table(rows: list[dict], total_bytes: int, original_bytes: int) -> str:
    """The per-layer table as text (the paper's Table 2/3 columns)."""

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    head = (
        f"{'layer':<10}{'weights':>9}{'kept':>8}{'w bits':>8}{'w bits H':>10}"
        f"{'idx bits':>10}{'idx bits H':>12}{'bytes':>9}{'rate':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['layer']:<10}{r['weights']:>9}{f(100 * r['kept'], '.1f') + '%':>8}"
            f"{f(r['weight_bits'], 'd'):>8}{f(r['weight_bits_huffman'], '.2f'):>10}"
            f"{f(r['index_bits'], 'd'):>10}{f(r['index_bits_huffman'], '.2f'):>12}"
            f"{r['bytes']:>9}{r['ratio']:>7.1f}x"
        )
    lines.append("-" * len(head))
    weights = sum(r["weights"] for r in rows)
    kept = sum(r["kept"] * r["weights"] for r in rows) / max(1, weights)
    lines.append(
        f"{'total':<10}{weights:>9}{100 * kept:>7.1f}%{'':>48}{total_bytes:>9}"
        f"{original_bytes / total_bytes:>7.1f}x"
    )
    lines.append(
        f"file {total_bytes} bytes (header and framing {total_bytes - _data_bytes(rows)} bytes) "
        f"vs {original_bytes} bytes of float32: {original_bytes / total_bytes:.1f}x"
    )
    return "\n".join(lines)


def _data_bytes(rows: list[dict]) -> int:
    return sum(r["bytes"] for r in rows)
