"""The report of a `compress` run (`compress(..., report=FOLDER)`), as `reproduce` writes one.

FOLDER/report.md holds the run (the dense model's error and the file's, the held-out check),
every phase tried in order (pruning rounds with their sparsities, sharing steps with their
quality or bits, the error of each and the bytes of each file written), the file's layers
(kept fraction, cluster-index bits, bytes), and the paper's energy view of the file. With matplotlib
(`pip install 'deepcompress[plot]'`) it also draws, beside it, `weights.png` (each layer's
weights, dense and decoded from the file, the decoded ones' levels marked) and `errors.png`
(the error after each phase, against the budget's edge); without it the report says so.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from torch import nn

from . import figures
from ._optional import MissingExtra, pyplot
from .format.inspect import describe
from .phases import Summary, fmt
from .runtime.energy import format_energy
from .targets import named_weights


def _setting(h: dict) -> str:
    if h["phase"] == "prune":
        return f"round {h['round']}: {fmt(h['sparsity'])}"
    if h["phase"] == "quantize":
        return f"quality {h['quality']:g}" if "quality" in h else f"{fmt(h['bits'])} bits"
    return "held-out check"


def markdown(summary: Summary, budget: float) -> str:
    """The report's text."""
    s = summary
    lines = [
        f"# deepcompress: {Path(s.path).name}",
        "",
        f"{s.bytes:,} bytes, {s.ratio:.1f}x smaller than float32. Error (`evaluate`, of the "
        f"model decoded from the file): {s.dense_error:.4g} dense -> {s.error:.4g} (budget "
        f"{budget:g}).",
    ]
    if s.check_error is not None:
        lines.append(f"Held-out check: {s.dense_check_error:.4g} dense -> {s.check_error:.4g}.")
    lines += ["", "## Every phase tried", "", "| # | phase | setting | error | file bytes |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for i, h in enumerate(s.history, 1):
        size = f"{h['bytes']:,}" if "bytes" in h else ""
        lines.append(f"| {i} | {h['phase']} | {_setting(h)} | {h['error']:.4g} | {size} |")
    per_layer: dict[str, int] = defaultdict(int)
    per_tensor = {}  # for the bare weights (an LSTM's), named as tensors
    for t in describe(s.path)["tensors"]:
        per_layer[t["name"].rpartition(".")[0]] += t["bytes"]
        per_tensor[t["name"]] = t["bytes"]
    lines += [
        "",
        "## The file's layers",
        "",
        "| layer | kept | cluster-index bits (levels + zero) | bytes |",
    ]
    lines.append("| --- | --- | --- | --- |")
    for name, sparsity in s.sparsity.items():
        bits = s.bits.get(name, "")
        size = per_tensor[name] if name in per_tensor else per_layer.get(name, 0)
        lines.append(f"| {name} | {1 - sparsity:.1%} | {bits} | {size:,} |")
    lines += ["", "## Energy (the paper's view, 45 nm estimates)", "", format_energy(s.energy), ""]
    return "\n".join(lines)


def write(summary: Summary, dense: nn.Module, folder: str | os.PathLike, budget: float) -> Path:
    """Write FOLDER/report.md (and its figures, with matplotlib); returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(summary, budget)
    try:
        _figures(summary, dense, folder, budget)
        text += "\n![weights](weights.png)\n\n![errors](errors.png)\n"
    except MissingExtra:
        text += "\n(no figures: matplotlib is missing; `pip install 'deepcompress[plot]'`)\n"
    path = folder / "report.md"
    path.write_text(text)
    return path


def _figures(summary: Summary, dense: nn.Module, folder: Path, budget: float) -> None:
    def tensors(model: nn.Module) -> dict:  # each layer's weight, and each bare weight
        return {n: getattr(m, t) for n, m, t in named_weights(model)}

    before, after = tensors(dense), tensors(summary.model)
    names = [n for n in after if n in before]

    def weights(layers: dict) -> dict[str, np.ndarray]:
        return {n: layers[n].detach().float().cpu().numpy() for n in names}

    decoded = weights(after)
    levels = {n: np.unique(w) for n, w in decoded.items()}  # a shared layer's levels
    figures.weight_distributions(
        {"dense": weights(before), "decoded": decoded},
        {n: v for n, v in levels.items() if len(v) <= 64},
        folder / "weights.png",
    )
    plt = pyplot()
    errors = [h["error"] for h in summary.history]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(range(1, len(errors) + 1), errors, "o-", label="after the phase")
    ax.axhline(summary.dense_error, color="g", linestyle=":", label="dense")
    ax.axhline(summary.dense_error + budget, color="r", linestyle="--", label="budget's edge")
    ax.set_xlabel("phase tried (report.md's table)")
    ax.set_ylabel("error")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "errors.png", dpi=100)
    plt.close(fig)
