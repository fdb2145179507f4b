"""The report's pictures (matplotlib, drawn off-screen): weight distributions per stage, bytes
per layer per stage, and accuracy per stage. Modelled on the paper's Figures 5 and 7."""

from __future__ import annotations

import os

import numpy as np

from ._optional import pyplot as _pyplot


def weight_distributions(
    stages: dict[str, dict[str, np.ndarray]],
    centroids: dict[str, np.ndarray],
    path: str | os.PathLike,
) -> None:
    """A grid: one row per layer, one column per stage (e.g. "dense", "pruned + retrained",
    "weight shared"); histograms of the non-zero weights, the shared values (centroids) marked
    in red on the last stage's column."""
    plt = _pyplot()
    names = list(stages)
    layers = list(stages[names[0]])
    fig, axes = plt.subplots(
        len(layers), len(names), figsize=(4 * len(names), 2.4 * len(layers)), squeeze=False
    )
    for i, layer in enumerate(layers):
        lim = float(np.abs(stages[names[0]][layer]).max()) or 1.0
        for j, stage in enumerate(names):
            ax = axes[i][j]
            w = stages[stage][layer].ravel()
            nz = w[w != 0]
            ax.hist(nz, bins=100, range=(-lim, lim), color="tab:blue")
            if j == len(names) - 1 and layer in centroids:
                for c in centroids[layer]:
                    ax.axvline(float(c), color="tab:red", linewidth=0.6, alpha=0.8)
            ax.set_title(
                f"{layer}: {stage} ({100 * len(nz) / max(1, len(w)):.1f}% kept)", fontsize=9
            )
            ax.set_xlabel("weight value", fontsize=8)
            ax.set_ylabel("count", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def bytes_per_layer(rows: list[dict], path: str | os.PathLike) -> None:
    """Grouped bars per layer: bytes when dense, pruned (values float32, coded gaps), pruned
    and quantized (fixed-width indices and gaps, before Huffman), and in the final file.
    `rows`: dicts with `layer`, `dense`, `pruned`, `quantized`, `final`."""
    plt = _pyplot()
    keys = [
        ("dense", "dense float32"),
        ("pruned", "pruned"),
        ("quantized", "pruned + quantized"),
        ("final", "final file (Huffman)"),
    ]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rows) + 2), 4))
    for j, (key, label) in enumerate(keys):
        ax.bar(x + (j - 1.5) * 0.2, [r[key] for r in rows], 0.2, label=label)
    ax.set_yscale("log")
    ax.set_xticks(x, [r["layer"] for r in rows])
    ax.set_ylabel("bytes (log scale)")
    ax.set_xlabel("layer")
    ax.set_title("Where the bytes go, stage by stage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def accuracy_per_stage(stages: list[tuple[str, float]], path: str | os.PathLike) -> None:
    """Bars of the error (in %) after each stage: `[(stage name, error), ...]`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [s for s, _ in stages]
    errs = [e for _, e in stages]
    bars = ax.bar(range(len(stages)), errs, color="tab:green")
    for b, e in zip(bars, errs):
        ax.annotate(
            f"{e:.2f}%", (b.get_x() + b.get_width() / 2, e), ha="center", va="bottom", fontsize=8
        )
    ax.set_xticks(range(len(stages)), names, fontsize=8, rotation=15)
    ax.set_ylim(0, 1.15 * max(errs + [0.1]))
    ax.set_ylabel("error (%)")
    ax.set_title("Error after each stage")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
