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

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import codec
from .api import check_meta, storage_key, write_records
from .fileformat import Record
from .pruning import _UNSET, kept_positions, lookup, matches, one_value
from .sharing import INITS, kmeans_1d

__all__ = ["encode_state_dict", "matches", "resolve"]

Spec = float | int | None | Mapping[str, float | int | None]


def resolve(spec: Spec, name: str, default):
    """A per-tensor setting: `spec` itself (None included), or what a mapping gives `name`
    as in `prune_` (a key equal to the tensor's or its layer's name, else the first pattern
    that matches it, see `matches`), or `default` when no key reaches it."""
    said, value = _named(spec, name)
    return value if said else default


def _named(spec: Spec, name: str) -> tuple[bool, object]:
    """(whether `spec` says something for `name`, and what): a scalar says it for every name,
    a mapping through `pruning.lookup` (state dicts have no layer kinds)."""
    if isinstance(spec, Mapping):
        value = lookup(spec, name, None)
        return (False, None) if value is _UNSET else (True, value)
    return True, spec


def _group_setting(spec: Spec, names: list[str], default, what: str):
    """The one value `spec` gives a tied tensor known by `names`: names that no pattern
    reaches do not count; different values for the names are refused."""
    said = {}
    for n in names:
        ok, value = _named(spec, n)
        if ok:
            said[n] = value
    return one_value(said, names, what, default)


#: Keys a configuration file may hold (each as for `encode_state_dict`).
CONFIG_KEYS = ("sparsity", "bits", "index_bits", "exclude", "entropy", "init")


def load_config(path: str | os.PathLike) -> dict:
    """Settings for `encode_state_dict` from a JSON (`.json`) or YAML (`.yaml`, `.yml`) file.

    Example (YAML)::

        sparsity: {"classifier.*": 0.9, "features.*": 0.5}
        bits: {"classifier.*": 5, "*": 8}
        exclude: ["features.0"]
        entropy: auto

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON/YAML, not a mapping, or an unknown key.
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            cfg = yaml.safe_load(text)
        else:
            cfg = json.loads(text)
    except Exception as e:  # json's and yaml's own errors
        raise ValueError(f"{str(path)!r} is not a valid configuration file: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{str(path)!r} must hold a mapping of settings")
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"{str(path)!r}: unknown settings {unknown}; known: {list(CONFIG_KEYS)}")
    return cfg


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

    Tensors of `state` that are one and the same memory (same storage pointer, shape, strides
    and dtype: the tied weights of `model.state_dict()`, e.g. an LM's input embedding and
    output projection) are stored once, under their first name, and the header's
    `meta["tied"]` maps each other name to it; `load` returns every name. Equal tensors in
    different memory are stored twice. The names of a tied tensor must not get different
    settings (names no pattern reaches do not count), and excluding any of them stores it raw.

    Args:
        state: `{name: tensor}`, e.g. `model.state_dict()` or a safetensors file's contents.
        path: the file to write; its folder must exist.
        sparsity: fraction of each weight tensor to prune, a float or `{pattern: float}`
            (a tensor's or layer's exact name wins, else the first matching pattern;
            unmatched tensors are not pruned). Patterns are globs on the tensor or layer name,
            or `re:<regex>`.
        bits: codebook bits (1..16), an int or `{pattern: int}` (unmatched: 8); None keeps the
            kept weights at full precision (no weight sharing).
        index_bits: width of a stored gap; None picks the smallest per tensor.
        entropy: "auto" (per stream, the smallest of the coders), "huffman", "rans" or "cabac".
        init: k-means initialisation; "density" by default, which, unlike "linear", holds up
            on pretrained weights with far outliers.
        exclude: patterns of weight tensors to store losslessly as they are.
        meta: optional JSON-serialisable dict stored in the header; its key "tied" is reserved.
        progress: show a progress bar over the tensors.

    Returns:
        The size of the written file in bytes.

    Raises:
        ValueError: NaN or infinite values, a setting out of range, different settings for one
            tied tensor, `meta["tied"]`, or an unknown init/entropy.
        TypeError: a value of `state` that is not a tensor.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
    if entropy not in codec.ENTROPY_CHOICES:
        raise ValueError(f"entropy must be one of {codec.ENTROPY_CHOICES}, not {entropy!r}")
    check_meta(meta)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    groups: dict[object, list[str]] = {}  # storage key -> names, the first one stored
    for name, t in state.items():
        key = storage_key(t) if isinstance(t, torch.Tensor) else None
        if key is not None:
            groups.setdefault(key, []).append(name)
    records, settings, tied = [], {}, {}
    for name, t in tqdm(state.items(), desc="encode", unit="tensor", disable=not progress):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name!r} is a {type(t).__name__}, not a tensor")
        names = groups.get(storage_key(t), [name])
        if names[0] != name:
            tied[name] = names[0]
            continue
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"tensor {name!r} contains NaN or infinity; refusing to encode it")
        s = float(_group_setting(sparsity, names, 0.0, "sparsity") or 0.0)
        b = _group_setting(bits, names, 8, "bits")
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"sparsity for {name!r} must be in [0, 1], got {s}")
        if b is not None and not 1 <= int(b) <= 16:
            raise ValueError(f"bits for {name!r} must be in 1..16 or None, got {b}")
        eligible = (
            t.is_floating_point()
            and t.dim() >= 2
            and t.numel() > 0
            and not any(matches(p, n) for p in exclude for n in names)
        )
        if eligible and (s > 0 or b is not None):
            records.append(_encode_weight(name, t, s, b, index_bits, entropy, init))
            settings[name] = {"sparsity": s, "bits": b}
        else:
            params, parts = codec.encode_raw(t)
            dtype = codec.dtype_name(t.dtype)
            records.append(Record(name, tuple(t.shape), dtype, "raw", params, parts))
    return write_records(records, path, {"encode": settings}, meta, tied)


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
