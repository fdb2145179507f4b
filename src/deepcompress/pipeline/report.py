"""Where the bytes went: per-layer statistics of a compressed file, and the paper-style table."""

from __future__ import annotations

import os

from ..encode import model_records
from ..format.inspect import describe
from ..format.writer import write_atomic
from ..runtime.energy import format_energy


def layer_stats(path: str | os.PathLike) -> tuple[list[dict], int]:
    """Per-layer statistics of a file, shaped like the paper's Tables 2 and 3.

    Returns:
        `(layers, total_bytes)`. Each layer (a `*.weight` and its sibling tensors, such as
        its bias) has: `layer`, `weights` (elements of the weight), `kept` (fraction
        non-zero), `weight_bits` (bits of a cluster index, None if not weight-shared),
        `weight_bits_huffman` (coded bits per entry of the cluster-index stream),
        `index_bits` (gap width), `index_bits_huffman` (coded bits per entry of the gap
        stream), `bytes` (the layer's data sections), `fixed_bytes` (the same before Huffman
        coding: cluster indices and gaps in fixed widths plus the codebook, the paper's "P+Q")
        and `ratio` (4 bytes per parameter of the layer over `bytes`).
    """
    d = describe(path)
    layers: dict[str, dict] = {}
    for t in d["tensors"]:
        layer, _, tname = t["name"].rpartition(".")
        row = layers.setdefault(layer, dict.fromkeys(LAYER_KEYS))
        row.update(layer=layer, params=(row["params"] or 0) + t["elements"])
        row["bytes"] = (row["bytes"] or 0) + t["bytes"]
        bits = max(1, (t["k"] - 1).bit_length()) if t["codec"] == "shared" else None
        fixed = t["bytes"]
        if bits is not None:
            fixed = -(-t["entries"] * (bits + t["index_bits"]) // 8) + 4 * t["k"]
        row["fixed_bytes"] = (row["fixed_bytes"] or 0) + fixed
        if tname != "weight" and t["codec"] == "raw":
            continue
        row.update(weights=t["elements"], kept=t["kept"], index_bits=t.get("index_bits"))
        if "gap" in t["streams"]:
            row["index_bits_huffman"] = t["streams"]["gap"]["bits_per_symbol"]
        if "cluster" in t["streams"]:
            row["weight_bits"] = bits
            row["weight_bits_huffman"] = t["streams"]["cluster"]["bits_per_symbol"]
    rows = [r for r in layers.values() if r["weights"]]
    for r in rows:
        r["ratio"] = 4 * r["params"] / max(1, r["bytes"])
    return rows, d["bytes"]


LAYER_KEYS = (
    "layer",
    "weights",
    "params",
    "kept",
    "weight_bits",
    "weight_bits_huffman",
    "index_bits",
    "index_bits_huffman",
    "bytes",
    "fixed_bytes",
)


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


def layer_bytes(model) -> dict[str, int]:
    """Bytes each layer (weight and its siblings) would take in a file saved now."""
    out: dict[str, int] = {}
    for rec in model_records(model)[0]:
        layer = rec.name.rpartition(".")[0]
        out[layer] = out.get(layer, 0) + sum(len(p) for p in rec.parts)
    return out


def write_markdown(report: dict, trace: dict, out_dir: str | os.PathLike) -> None:
    """Write OUT/report.md and its figures (weights.png, bytes.png, accuracy.png)."""
    from pathlib import Path

    from .. import figures

    out = Path(out_dir)
    figures.weight_distributions(trace["weights"], trace["centroids"], out / "weights.png")
    bars = [
        {
            "layer": r["layer"],
            "dense": 4 * r["params"],
            "pruned": trace["pruned_bytes"][r["layer"]],
            "quantized": r["fixed_bytes"],
            "final": r["bytes"],
        }
        for r in report["layers"]
    ]
    figures.bytes_per_layer(bars, out / "bytes.png")
    pruned = report.get("pruned", True)  # False: compress's default schedule, no rounds
    first = "pruned + retrained" if pruned else "before sharing (no pruning rounds)"
    tuned = "codebooks fine-tuned" if pruned else "fine-tuned (weights through the grid)"
    stages = [
        ("reference", report["reference_val_error"]),
        (first, report["pruned_val_error"]),
        ("weight shared", report["quantized_val_error"]),
        (tuned, report["finetuned_val_error"]),
        ("decoded file", report["val_error"]),
    ]
    figures.accuracy_per_stage(stages, out / "accuracy.png")
    total = {k: sum(b[k] for b in bars) for k in ("dense", "pruned", "quantized", "final")}
    lines = [
        f"# deepcompress report: {report['model']}",
        "",
        f"- test error: reference {report['reference_test_error']:.2f}% -> "
        f"{report['test_error']:.2f}% decoded from `{Path(report['file']).name}`",
        f"- file: {report['compressed_bytes']} bytes, {report['ratio']:.1f}x smaller than "
        f"{report['original_bytes']} bytes of float32",
        f"- seed {report['seed']}, {report['train_images']} training images, "
        f"{report['seconds']:.0f} s",
        "",
        "## Per layer",
        "",
        "```",
        report["table"],
        "```",
        "",
        "## Stage by stage (validation split)",
        "",
        "| stage | validation error | bytes of the weight layers |",
        "| --- | --- | --- |",
        f"| reference | {stages[0][1]:.2f}% | {total['dense']} (dense float32) |",
        f"| {first} | {stages[1][1]:.2f}% | {total['pruned']} (values float32, coded gaps) |",
        f"| weight shared | {stages[2][1]:.2f}% | {total['quantized']} (fixed-width indices "
        "and gaps) |",
        f"| {tuned}, entropy-coded | {stages[3][1]:.2f}% | {total['final']} |",
        f"| decoded from the file | {stages[4][1]:.2f}% | {report['compressed_bytes']} (whole "
        "file) |",
        "",
        "![error after each stage](accuracy.png)",
        "",
        "![bytes per layer and stage](bytes.png)",
        "",
        "## Weight distributions",
        "",
        "Non-zero weights of each layer before pruning, after pruning and retraining, and after "
        "weight sharing and fine-tuning (red: the shared values).",
        "",
        "![weight distributions](weights.png)",
        "",
    ]
    if "energy" in report:  # reports written before the energy view have none
        lines += ["## Energy (the paper's view)", "", format_energy(report["energy"]), ""]
    write_atomic(out / "report.md", "\n".join(lines).encode())
