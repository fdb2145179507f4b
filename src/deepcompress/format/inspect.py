"""What a `.dcz` file holds (`deepcompress inspect`): its header, tensors and streams, the
coded bits per symbol of each stream next to its order-0 entropy; reading it verifies every
checksum."""

from __future__ import annotations

import os

import numpy as np

from ..coding import codec
from .container import PREAMBLE
from .reader import read


def entropy_bits(symbols: np.ndarray) -> float:
    """Empirical order-0 entropy of a symbol stream, in bits per symbol."""
    if len(symbols) == 0:
        return 0.0
    p = np.bincount(symbols) / len(symbols)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def describe(path: str | os.PathLike) -> dict:
    """Everything `deepcompress inspect` shows: the preamble, meta, and per tensor its shape,
    codec, parameters, kept fraction, bytes, and per stream the coded bits per symbol next to
    the stream's order-0 entropy. Reading the file verifies every checksum (a damaged file
    raises FormatError)."""
    file = read(path)
    records, meta = file.records, file.meta
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        _, version, _, hlen, hcrc = PREAMBLE.unpack(f.read(PREAMBLE.size))
    tensors = []
    for rec in records:
        numel = rec.numel
        dense = codec.decode_record(rec)
        row = {
            "name": rec.name,
            "shape": list(rec.shape),
            "dtype": rec.dtype,
            "codec": rec.codec,
            **rec.params,
            "elements": numel,
            "kept": float((dense != 0).sum()) / max(1, numel),
            "bytes": sum(len(p) for p in rec.parts),
            "streams": {},
        }
        for name, s in codec.streams(rec.codec, rec.params, rec.parts).items():
            n = len(s["symbols"])
            row["streams"][name] = {
                "coder": s["coder"],
                "symbols": n,
                "table_bytes": s["table_bytes"],
                "payload_bytes": s["payload_bytes"],
                "bits_per_symbol": 8 * s["payload_bytes"] / n if n else 0.0,
                "bits_per_symbol_with_table": (
                    8 * (s["payload_bytes"] + s["table_bytes"]) / n if n else 0.0
                ),
                "entropy_bits_per_symbol": entropy_bits(s["symbols"]),
            }
        tensors.append(row)
    return {
        "file": str(path),
        "bytes": size,
        "format_version": version,
        "header_bytes": hlen,
        "header_crc32": f"{hcrc:08x}",
        "checksums": "verified",
        "meta": meta,
        "tensors": tensors,
    }


def printable(text: str) -> str:
    """`text` with every character a terminal would act on (ANSI escapes, control codes,
    but not newlines) written as its Python escape: names and meta come from the file, which
    may be hostile (an escape sequence can rewrite the screen or the clipboard)."""
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


def format_description(d: dict) -> str:
    """`describe`'s result as text (names and meta made `printable`)."""
    lines = [
        f"{d['file']}: {d['bytes']} bytes, format version {d['format_version']}, header "
        f"{d['header_bytes']} bytes, checksums {d['checksums']}",
    ]
    if d["meta"]:
        lines.append(
            "meta: "
            + ", ".join(f"{k}={v}" for k, v in d["meta"].items() if not isinstance(v, (dict, list)))
        )
    tied = d["meta"].get("tied")
    if isinstance(tied, dict) and tied:
        lines.append("tied: " + ", ".join(f"{a} -> {t}" for a, t in tied.items()))
    head = (
        f"{'tensor':<24}{'shape':<18}{'codec':<8}{'kept':>7}{'k':>6}{'idx':>5}"
        f"{'bytes':>9}  streams: coder, coded (with table) / order-0 entropy, bits per symbol"
    )
    lines += [head, "-" * len(head)]
    for t in d["tensors"]:
        streams = "  ".join(
            f"{n} {s['coder']} {s['bits_per_symbol']:.2f} ({s['bits_per_symbol_with_table']:.2f})"
            f"/{s['entropy_bits_per_symbol'] + 0.0:.2f}"  # + 0.0: no -0.00
            for n, s in t["streams"].items()
        )
        lines.append(
            f"{t['name'][:23]:<24}{'x'.join(map(str, t['shape'])) or 'scalar':<18}"
            f"{t['codec']:<8}{100 * t['kept']:>6.1f}%{t.get('k', '-'):>6}"
            f"{t.get('index_bits', '-'):>5}{t['bytes']:>9}  {streams}"
        )
    all_streams = [s for t in d["tensors"] for s in t["streams"].values()]
    if all_streams:
        payload = sum(s["payload_bytes"] for s in all_streams)
        tables = sum(s["table_bytes"] for s in all_streams)
        bound = sum(s["symbols"] * s["entropy_bits_per_symbol"] for s in all_streams) / 8
        lines.append(
            f"streams: {payload} bytes coded + {tables} bytes of tables; order-0 entropy "
            f"{bound:.0f} bytes ({100 * (payload + tables) / max(bound, 1) - 100:+.2f}% with "
            "tables)"
        )
    return printable("\n".join(lines))


def format_bench(rows: list[dict], batch_sizes) -> str:
    """`runtime.modules.bench_file`'s rows as the text table `deepcompress bench` prints
    (names made `printable`)."""
    cols = "".join(f"{'b' + str(b) + ' dense/ours ms':>22}" for b in batch_sizes)
    lines = [f"{'tensor':<20}{'shape':>12}{'kept':>7}{'layout':>9}{'resident':>10}{cols}"]
    for r in rows:
        times = "".join(
            f"{r[f'dense_ms_b{b}']:>9.3f} /{r[f'compressed_ms_b{b}']:>7.3f}"
            f" {r[f'dense_ms_b{b}'] / r[f'compressed_ms_b{b}']:>3.1f}x"
            for b in batch_sizes
        )
        shape = "x".join(map(str, r["shape"]))
        share = 100 * r["compressed_bytes"] / r["dense_bytes"]
        lines.append(
            f"{printable(r['tensor'])[:19]:<20}{shape:>12}{100 * r['kept']:>6.1f}%"
            f"{r['layout']:>9}{share:>9.1f}%{times}"
        )
    return "\n".join(lines)
