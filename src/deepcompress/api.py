"""Model-level verbs that touch files: `save` and `load`.

`save` walks a model the way `state_dict()` names it, picks a codec per tensor (`shared` for
weight-shared layers, `sparse` for pruned ones, `raw` for everything else) and writes one file
atomically. `load` reads it back into plain dense tensors, or into a model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from . import codec
from . import runtime as rt
from .fileformat import (
    DEFAULT_MAX_ELEMENTS,
    Record,
    from_bytes,
    to_bytes,
    write_atomic,
)
from .pruning import Masked, per_layer
from .sharing import Shared

__version__ = "0.1.0"


def compressed_state(model: nn.Module) -> list[tuple[str, torch.Tensor, nn.Module | None]]:
    """`(name, tensor, parametrization)` for every tensor `model.state_dict()` would hold,
    under its plain name (`ip1.weight`, not `ip1.parametrizations.weight.original`); the
    parametrization is the `Shared`/`Masked` module holding that tensor's codes, or None."""
    out = []
    for prefix, module in model.named_modules():
        if isinstance(module, parametrize.ParametrizationList) or ".parametrizations." in (
            prefix + "."
        ):
            continue
        dot = prefix + "." if prefix else ""
        if parametrize.is_parametrized(module):
            for tname, plist in module.parametrizations.items():
                ours = [p for p in plist if isinstance(p, (Shared, Masked))]
                out.append(
                    (dot + tname, getattr(module, tname).detach(), ours[-1] if ours else None)
                )
        for tname, p in module._parameters.items():
            if p is not None:
                out.append((dot + tname, p.detach(), None))
        for tname, b in module._buffers.items():
            if b is not None and tname not in module._non_persistent_buffers_set:
                out.append((dot + tname, b.detach(), None))
    return out


def encode_tensor(
    name: str,
    t: torch.Tensor,
    holder: nn.Module | None,
    index_bits: int | None = None,
    entropy: str = "auto",
    raw_dtype: torch.dtype | None = None,
) -> Record:
    """A `Record` for one tensor: `shared` if it is weight-shared, `sparse` if pruned, else raw
    (a floating-point raw tensor cast to `raw_dtype` if one is given)."""
    if holder is None and raw_dtype is not None and t.is_floating_point():
        t = t.to(raw_dtype)
    dtype = codec.dtype_name(t.dtype)
    if isinstance(holder, Shared):
        params, parts = codec.encode_shared(
            holder.idx, holder.codebook.detach(), index_bits, entropy
        )
        kind = "shared"
    elif isinstance(holder, Masked):
        params, parts = codec.encode_sparse(t, index_bits, entropy)
        kind = "sparse"
    else:
        params, parts = codec.encode_raw(t)
        kind = "raw"
    return Record(name, tuple(t.shape), dtype, kind, params, parts)


def save(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    index_bits: int | Mapping[str, int] | None = None,
    entropy: str = "auto",
    raw_dtype: torch.dtype | None = None,
    meta: dict | None = None,
    progress: bool = False,
) -> int:
    """Write `model`'s weights to one compressed file, atomically.

    Weight-shared layers are stored as codebook + entropy-coded cluster indices and gaps,
    pruned-only layers as entropy-coded gaps + raw values, everything else (biases, buffers,
    untouched layers) as raw little-endian bytes.

    Args:
        model: a module, usually after `prune_` and/or `quantize_`.
        path: the file to write (conventionally `*.dcz`); its folder must exist.
        index_bits: width of a stored gap, an int or a mapping by layer name or kind; None
            (the default) picks, per layer, the width that gives the smallest file.
        entropy: the coder of each stream: "auto" (the smallest of those available),
            "huffman" (the paper's), "rans" or "cabac".
        raw_dtype: store the tensors kept as they are (biases, norms, unpruned layers) in this
            float dtype, e.g. `torch.float16` (lossy: on request only); None keeps theirs.
        meta: optional JSON-serialisable dict stored in the header (e.g. a training report).
        progress: show a progress bar over the tensors being encoded.

    Returns:
        The size of the written file in bytes.

    Raises:
        ValueError: non-finite weights, or a dtype the format cannot hold.
        FileNotFoundError: the folder of `path` does not exist.
    """
    records = []
    modules = dict(model.named_modules())
    for name, tensor, holder in tqdm(
        compressed_state(model), desc="encode", unit="tensor", disable=not progress, leave=False
    ):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"tensor {name!r} contains NaN or infinity; refusing to save it")
        layer = name.rpartition(".")[0]
        ib = per_layer(index_bits, layer, modules[layer]) if holder is not None else None
        records.append(encode_tensor(name, tensor, holder, ib, entropy, raw_dtype))
    info = {"deepcompress": __version__}
    if meta:
        info.update(meta)
    data = to_bytes(records, info)
    write_atomic(path, data)
    return len(data)


def load(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    runtime: str = "dense",
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> dict[str, torch.Tensor] | nn.Module:
    """Decode a compressed file.

    Args:
        path: a file written by `save`.
        model: optional module to load the weights into (strictly: every key must match). Any
            deepcompress masks or codebooks on it are removed first, so it becomes a plain
            dense model holding the decoded weights.
        runtime: with a model, "dense" (decode every weight) or "compressed": weight-shared
            Linear and Conv2d (groups=1) layers are replaced by modules that run from the
            compressed form without building the dense weight (see `runtime`); inference only.
        max_elements: refuse a file that declares more elements than this in all (by
            default 2**32, 16 GiB of float32), before allocating anything for it.

    Returns:
        `{name: dense tensor}` named as in `state_dict()`, or `model` if one was given.

    Raises:
        FileNotFoundError: no such file.
        FormatError: the file is damaged or not a deepcompress file.
        ValueError: the file's tensors do not match `model`'s, or an unknown runtime.
    """
    if runtime not in ("dense", "compressed"):
        raise ValueError(f"runtime must be 'dense' or 'compressed', not {runtime!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    records, _ = from_bytes(path.read_bytes(), max_elements)
    keep = _runnable_compressed(records, model) if runtime == "compressed" else {}
    state = _decode(
        r
        for r in records
        if r.name.rpartition(".")[0] not in keep
        or r.name.rpartition(".")[2] not in ("weight", "bias")
    )
    if model is None:
        return state
    strip_(model)
    for layer, (rec, bias) in keep.items():
        _replace(
            model,
            layer,
            rt.compressed_layer(
                model.get_submodule(layer),
                rt.matrix_from_record(rec),
                None if bias is None else _decode([bias])[bias.name],
            ),
        )
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{path.name} does not fit the model: {e}") from None
    missing = [k for k in result.missing_keys if k.rpartition(".")[0] not in keep]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path.name} does not match the model: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    return model


def _runnable_compressed(records: list[Record], model: nn.Module | None) -> dict:
    """{layer: (weight record, bias record or None)} for the layers that can run compressed."""
    if model is None:
        raise ValueError("runtime='compressed' needs a model to put the layers in")
    by_name = {r.name: r for r in records}
    out = {}
    for rec in records:
        layer, _, tname = rec.name.rpartition(".")
        try:
            module = model.get_submodule(layer)
        except AttributeError:
            continue
        if (
            tname == "weight"
            and rec.codec == "shared"
            and tuple(module.weight.shape) == rec.shape
            and rt.supports(module)
        ):
            out[layer] = (rec, by_name.get(f"{layer}.bias"))
    return out


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _decode(records) -> dict[str, torch.Tensor]:
    return {rec.name: codec.decode_record(rec) for rec in records}


def load_bytes(data: bytes, *, max_elements: int = DEFAULT_MAX_ELEMENTS) -> dict[str, torch.Tensor]:
    """Decode a whole file held in memory.

    Args:
        data: the bytes of a `.dcz` file.
        max_elements: as for `load`.

    Returns:
        `{name: dense tensor}` in the file's order.

    Raises:
        FormatError: the bytes are damaged, truncated or not a deepcompress file.
    """
    return _decode(from_bytes(data, max_elements)[0])


def strip_(model: nn.Module) -> nn.Module:
    """Remove deepcompress's masks and codebooks, leaving plain dense weights (in place).

    Args:
        model: a module after `prune_` and/or `quantize_`.

    Returns:
        `model`, whose `state_dict()` has its original keys again (`ip1.weight`, ...).
    """
    for module in model.modules():
        if not parametrize.is_parametrized(module):
            continue
        for tname in list(module.parametrizations.keys()):
            plist = module.parametrizations[tname]
            if not any(isinstance(p, (Shared, Masked)) for p in plist):
                continue
            if len(module.parametrizations) > 1:
                parametrize.remove_parametrizations(module, tname, leave_parametrized=True)
                continue
            # The common case, undone by hand: torch's remove_parametrizations deletes the
            # property from the module's generated class, which copy.deepcopy shares, and
            # so would break every deep copy of this model.
            value = getattr(module, tname).detach().clone()
            del module.parametrizations
            module.__class__ = module.__class__.__bases__[0]
            module.register_parameter(tname, nn.Parameter(value))
    return model
