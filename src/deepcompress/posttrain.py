"""Post-training compression of a state dict: no model, no data, no retraining.

`encode_state_dict` runs the three stages on plain tensors, one tensor at a time: magnitude
pruning (`pruning.kept_positions`), weight sharing by 1-D k-means on the kept weights
(`sharing.kmeans_1d`), and the sparse index plus entropy coding (`codec`). Its time and memory
grow linearly with the number of weights (apart from sorting the kept ones): a VGG-16-sized
state dict encodes in seconds (see benchmarks/bench_scale.py).

Without retraining, pruning and coarse codebooks cost accuracy that nothing wins back, so the
defaults are gentle: no pruning and 8-bit codebooks. Ask for more per layer, and measure.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping

import torch
from tqdm.auto import tqdm

from . import codec
from .api import __version__
from .fileformat import Record, to_bytes, write_atomic
from .pruning import kept_positions
from .sharing import INITS, kmeans_1d

Spec = float | int | None | Mapping[str, float | int | None]


def matches(pattern: str, name: str) -> bool:
    """Whether a tensor name (`features.0.weight`) or its layer (`features.0`) matches a glob
    pattern (`classifier.*`), or a regular expression written as `re:<expr>` (full match)."""
    layer = name.rpartition(".")[0]
    if pattern.startswith("re:"):
        rx = re.compile(pattern[3:])
        return bool(rx.fullmatch(name) or rx.fullmatch(layer))
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(layer, pattern)


def resolve(spec: Spec, name: str, default):
    """A per-tensor setting: `spec` itself (None included), or the value of the first pattern
    of a mapping that matches `name` (see `matches`), or `default` when none does."""
    if isinstance(spec, Mapping):
        for pattern, value in spec.items():
            if matches(pattern, name):
                return value
        return default
    return spec


def encode_state_dict(
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    sparsity: Spec = 0.0,
    bits: Spec = 8,
    index_bits: int | None = None,
    entropy: str = "auto",
    init: str = "density",
    exclude: Iterable[str] = (),
    meta: dict | None = None,
    progress: bool = False,
) -> int:
    """Compress a state dict's weights without retraining and write one file, atomically.

    Every floating-point tensor of two or more dimensions (the weights of Linear, Conv and
    Embedding layers) that `exclude` does not name is pruned to `sparsity` by magnitude and
    its kept weights are shared through a `2**bits`-entry k-means codebook. Everything else
    (biases, norms, buffers, integer tensors) is stored losslessly, so `load(path)` returns
    every key of `state`.

    Args:
        state: `{name: tensor}`, e.g. `model.state_dict()` or a safetensors file's contents.
        path: the file to write; its folder must exist.
        sparsity: fraction of each weight tensor to prune, a float or `{pattern: float}`
            (first matching pattern wins; unmatched tensors are not pruned). Patterns are
            globs on the tensor or layer name, or `re:<regex>`.
        bits: codebook bits (1..16), an int or `{pattern: int}` (unmatched: 8); None keeps the
            kept weights at full precision (no weight sharing).
        index_bits: width of a stored gap; None picks the smallest per tensor.
        entropy: "auto" (per stream, the smallest of the coders), "huffman", "rans" or "cabac".
        init: k-means initialisation; "density" by default, which, unlike "linear", holds up
            on pretrained weights with far outliers.
        exclude: patterns of weight tensors to store losslessly as they are.
        meta: optional JSON-serialisable dict stored in the header.
        progress: show a progress bar over the tensors.

    Returns:
        The size of the written file in bytes.

    Raises:
        ValueError: NaN or infinite values, a setting out of range, or an unknown init/entropy.
        TypeError: a value of `state` that is not a tensor.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
    if entropy not in codec.ENTROPY_CHOICES:
        raise ValueError(f"entropy must be one of {codec.ENTROPY_CHOICES}, not {entropy!r}")
    exclude = list(exclude)
    records, settings = [], {}
    for name, t in tqdm(state.items(), desc="encode", unit="tensor", disable=not progress):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name!r} is a {type(t).__name__}, not a tensor")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"tensor {name!r} contains NaN or infinity; refusing to encode it")
        s = float(resolve(sparsity, name, 0.0) or 0.0)
        b = resolve(bits, name, 8)
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"sparsity for {name!r} must be in [0, 1], got {s}")
        if b is not None and not 1 <= int(b) <= 16:
            raise ValueError(f"bits for {name!r} must be in 1..16 or None, got {b}")
        eligible = (
            t.is_floating_point()
            and t.dim() >= 2
            and t.numel() > 0
            and not any(matches(p, name) for p in exclude)
        )
        if eligible and (s > 0 or b is not None):
            records.append(_encode_weight(name, t, s, b, index_bits, entropy, init))
            settings[name] = {"sparsity": s, "bits": b}
        else:
            params, parts = codec.encode_raw(t)
            dtype = codec.dtype_name(t.dtype)
            records.append(Record(name, tuple(t.shape), dtype, "raw", params, parts))
    info = {"deepcompress": __version__, "encode": settings}
    if meta:
        info.update(meta)
    data = to_bytes(records, info)
    write_atomic(path, data)
    return len(data)


def _encode_weight(
    name: str, t: torch.Tensor, sparsity: float, bits, index_bits, entropy: str, init: str
) -> Record:
    positions = kept_positions(t, sparsity)
    flat = t.detach().reshape(-1).cpu()
    values = flat[torch.from_numpy(positions)] if sparsity > 0 else flat
    if bits is None:
        params, parts = codec.encode_sparse_entries(positions, values, index_bits, entropy)
        kind = "sparse"
    else:
        centroids, labels = kmeans_1d(values.float(), 2 ** int(bits), init=init)
        params, parts = codec.encode_shared_entries(
            positions, labels + 1, torch.from_numpy(centroids), index_bits, entropy
        )
        kind = "shared"
    return Record(name, tuple(t.shape), codec.dtype_name(t.dtype), kind, params, parts)
