"""The paper's energy view: the bytes one batch-1 inference reads, and what reading them costs.

Deep Compression's case for small models is energy (Han, Mao, Dally, ICLR 2016, Figure 1 and
section 1, and the EIE paper after it): at 45 nm a 32-bit read from on-chip SRAM costs 5 pJ and
one from off-chip DRAM 640 pJ (M. Horowitz, "Computing's energy problem (and what we can do
about it)", ISSCC 2014), so a model that fits on chip reads its weights about 128x more
cheaply per byte, on top of reading fewer bytes.

`energy_view` applies those figures to a file. Per batch-1 inference every weight is read
once: the dense model reads 4 bytes per floating-point element; the compressed model reads
what `runtime="compressed"` holds for each weight-shared matrix (cluster codes, column
indices or masks, row pointers and the codebook: `CompressedMatrix.nbytes`) and the decoded
float32 tensor for everything else (biases, BatchNorm statistics, tensors stored raw or
pruned without sharing). Each side is on chip when its total fits in `on_chip_bytes`. Not
counted: activations, arithmetic, and conv weights read again per output position. These
are estimates from published per-access energies, not measurements.
"""

from __future__ import annotations

import numbers
import os

import torch

from ..format.reader import read
from .modules import matrix_from_record

#: pJ per 32-bit read at 45 nm (Horowitz, ISSCC 2014; the paper's Figure 1)
SRAM_PJ = 5.0
DRAM_PJ = 640.0
#: the default on-chip memory: 8 MiB, a large on-chip SRAM or last-level cache; give yours
ON_CHIP_BYTES = 8 << 20


def read_energy_pj(nbytes: int, on_chip: bool) -> float:
    """Energy (pJ) to read `nbytes` once in 32-bit words, from SRAM if `on_chip` else DRAM."""
    return -(-int(nbytes) // 4) * (SRAM_PJ if on_chip else DRAM_PJ)


def energy_view(path: str | os.PathLike, on_chip_bytes: int = ON_CHIP_BYTES) -> dict:
    """The bytes a batch-1 inference reads from the dense and the compressed model of the file
    at `path`, whether each fits in `on_chip_bytes`, and the energy of those reads (module
    notes). Returns `{"on_chip_bytes", "dense": {...}, "compressed": {...}, "saving",
    "layers"}`: each side `{"bytes", "on_chip", "energy_uj"}`; `saving` = dense energy over
    compressed; `layers` = per tensor `{"tensor", "dense_bytes", "compressed_bytes"}`.

    Raises:
        ValueError: `on_chip_bytes` < 0.
        FormatError / FileNotFoundError: as `dc.load` for a damaged or missing file.
    """
    if (
        isinstance(on_chip_bytes, bool)
        or not isinstance(on_chip_bytes, numbers.Integral)
        or (on_chip_bytes < 0)
    ):
        raise ValueError(f"on_chip_bytes must be an integer >= 0, got {on_chip_bytes!r}")
    layers = []
    for rec in read(path).records:
        dtype = getattr(torch, rec.dtype, None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            continue  # integer buffers (BatchNorm's batch count) are not read by inference
        n = rec.numel
        dense = 4 * n
        if rec.codec == "shared" and len(rec.shape) >= 2:
            compressed = matrix_from_record(rec).nbytes
        else:
            compressed = n * max(4, dtype.itemsize)  # decoded to float32 to run
        layers.append({"tensor": rec.name, "dense_bytes": dense, "compressed_bytes": compressed})
    out: dict = {"on_chip_bytes": int(on_chip_bytes)}
    for side in ("dense", "compressed"):
        total = sum(t[f"{side}_bytes"] for t in layers)
        fits = total <= on_chip_bytes
        out[side] = {
            "bytes": total,
            "on_chip": fits,
            "energy_uj": read_energy_pj(total, fits) / 1e6,
        }
    c = out["compressed"]["energy_uj"]
    d = out["dense"]["energy_uj"]
    out["saving"] = d / c if c > 0 else (1.0 if d == 0 else float("inf"))  # no weights: 1
    out["layers"] = layers
    return out


def format_energy(view: dict) -> str:
    """`energy_view` as a Markdown table."""
    where = {True: "on chip (SRAM, 5 pJ / 32 bits)", False: "off chip (DRAM, 640 pJ / 32 bits)"}
    lines = [
        f"| per batch-1 inference (on-chip memory {view['on_chip_bytes']:,} bytes) | bytes read "
        "| read from | energy |",
        "| --- | --- | --- | --- |",
    ]
    for side in ("dense", "compressed"):
        v = view[side]
        lines.append(
            f"| {side} | {v['bytes']:,} | {where[v['on_chip']]} | {v['energy_uj']:.3g} uJ |"
        )
    lines.append(f"\nweight reads {view['saving']:.1f}x less energy (45 nm estimates, Horowitz "
                 "ISSCC 2014; activations and arithmetic not counted)")  # fmt: skip
    return "\n".join(lines)
