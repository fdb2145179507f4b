"""Model-level verbs that touch files: `save` and `load`.

`save` walks a model the way `state_dict()` names it, picks a codec per tensor (`shared` for
weight-shared layers, `sparse` for pruned ones, `raw` for everything else) and writes one file
atomically. `load` reads it back into plain dense tensors, or into a model.

Tied tensors (one tensor under several `state_dict()` names: a Parameter shared by two
modules, a module registered twice) are stored once, under their first name; the header's
`meta["tied"]` maps each other name to the stored one, and `load` gives every name back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from . import codec
from . import runtime as rt
from .errors import FormatError
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
    parametrization is the `Shared`/`Masked` module holding that tensor's codes, or None.
    A tied tensor comes once per name (see `tied_state`)."""
    return [(name, t, holder) for name, t, holder, _ in tied_state(model)]


def tied_state(model: nn.Module) -> list[tuple[str, torch.Tensor, nn.Module | None, object]]:
    """`compressed_state` with a fourth field per tensor, its tie key: equal keys mean one and
    the same tensor (the same parametrization list, or the same storage, shape, strides and
    dtype); None for an empty tensor, which is never deduplicated."""
    out = []
    for prefix, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, parametrize.ParametrizationList) or ".parametrizations." in (
            f".{prefix}."
        ):
            continue
        dot = prefix + "." if prefix else ""
        if parametrize.is_parametrized(module):
            for tname, plist in module.parametrizations.items():
                ours = [p for p in plist if isinstance(p, (Shared, Masked))]
                out.append(
                    (
                        dot + tname,
                        getattr(module, tname).detach(),
                        ours[-1] if ours else None,
                        ("parametrized", id(plist)),
                    )
                )
        for tname, p in module._parameters.items():
            if p is not None:
                out.append((dot + tname, p.detach(), None, storage_key(p)))
        for tname, b in module._buffers.items():
            if b is not None and tname not in module._non_persistent_buffers_set:
                out.append((dot + tname, b.detach(), None, storage_key(b)))
    return out


def storage_key(t: torch.Tensor):
    """A key equal for two tensors exactly when they view the same memory the same way (same
    device, data pointer, shape, strides and dtype), so storing one stores both; None for an
    empty tensor (they may all share a null pointer)."""
    if t.numel() == 0:
        return None
    return ("storage", str(t.device), t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)


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
    untouched layers) as raw little-endian bytes: every key of `model.state_dict()` is in the
    file. A tied tensor (one Parameter under several names, or a module registered twice) is
    written once, under its first name; the header's `meta["tied"]` maps each other name to
    it. Without ties the file is exactly what it was before ties were recorded.

    Args:
        model: a module, usually after `prune_` and/or `quantize_`.
        path: the file to write (conventionally `*.dcz`); its folder must exist.
        index_bits: width of a stored gap, an int or a mapping by layer or tensor name,
            pattern or kind (as `prune_`'s settings); None (the default, or a tensor the
            mapping does not reach) picks, per tensor, the width that gives the smallest file.
        entropy: the coder of each stream: "auto" (the smallest of those available),
            "huffman" (the paper's), "rans" or "cabac".
        raw_dtype: store the tensors kept as they are (biases, norms, unpruned layers) in this
            float dtype, e.g. `torch.float16` (lossy: on request only); None keeps theirs.
        meta: optional JSON-serialisable dict stored in the header (e.g. a training report);
            its key "tied" is reserved.
        progress: show a progress bar over the tensors being encoded.

    Returns:
        The size of the written file in bytes.

    Raises:
        ValueError: non-finite weights, a dtype the format cannot hold, or `meta["tied"]`.
        FileNotFoundError: the folder of `path` does not exist.
    """
    check_meta(meta)
    records, stored, tied = [], {}, {}
    modules = dict(model.named_modules(remove_duplicate=False))
    for name, tensor, holder, key in tqdm(
        tied_state(model), desc="encode", unit="tensor", disable=not progress, leave=False
    ):
        if key is not None and key in stored:
            tied[name] = stored[key]  # the same tensor as one already written
            continue
        if key is not None:
            stored[key] = name
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"tensor {name!r} contains NaN or infinity; refusing to save it")
        layer, _, tname = name.rpartition(".")
        ib = per_layer(index_bits, layer, modules[layer], tname) if holder is not None else None
        records.append(encode_tensor(name, tensor, holder, ib, entropy, raw_dtype))
    return write_records(records, path, {}, meta, tied)


def check_meta(meta: dict | None) -> None:
    """ValueError if a caller's `meta` uses the reserved key "tied"."""
    if meta and "tied" in meta:
        raise ValueError("meta key 'tied' is reserved: it lists the file's tied tensors")


def write_records(records: list[Record], path, info: dict, meta: dict | None, tied: dict) -> int:
    """Write a whole file atomically: `records`, and a header `meta` made of the writer's
    version, `info`, the caller's `meta` and (when there are aliases) `tied`. Returns its size."""
    header = {"deepcompress": __version__, **info, **(meta or {})}
    if tied:
        header["tied"] = tied
    data = to_bytes(records, header)
    write_atomic(path, data)
    return len(data)


def tied_names(meta: dict, records: list[Record], max_elements: int = DEFAULT_MAX_ELEMENTS):
    """The checked `meta["tied"]` of a file: `{alias: stored name}` ({} when absent).

    The header is untrusted: `tied` must be an object whose every key is a name (a non-empty
    string of at most 1024 characters) that no stored tensor has, and whose every value is the
    name of a stored tensor (never another alias); an alias takes that tensor's shape and
    dtype. The elements of the stored tensors plus those of every alias count against
    `max_elements` (a decoded alias is a copy).

    Raises:
        FormatError: any of these does not hold.
    """
    tied = meta.get("tied", {})
    if not isinstance(tied, dict):
        raise FormatError("header meta 'tied' must be an object {alias: stored tensor name}")
    shapes = {r.name: r.shape for r in records}
    elements = sum(int(np.prod(r.shape, dtype=object)) for r in records)
    for alias, target in tied.items():
        if not alias or len(alias) > 1024:
            raise FormatError("header meta 'tied': an alias must be a name of 1..1024 chars")
        if alias in shapes:
            raise FormatError(f"header meta 'tied': {alias!r} is also a stored tensor")
        if not isinstance(target, str) or target not in shapes:
            raise FormatError(
                f"header meta 'tied': {alias!r} is tied to {target!r}, which is not a stored tensor"
            )
        elements += int(np.prod(shapes[target], dtype=object))
        if elements > max_elements:
            raise FormatError(
                f"tied tensor {alias!r}: the file declares over {max_elements} elements in "
                f"all, its aliases included (the max_elements limit)"
            )
    return tied


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
            dense model holding the decoded weights. Weights tied in `model` stay tied (every
            name of a tied tensor receives the same values).
        runtime: with a model, "dense" (decode every weight) or "compressed": weight-shared
            Linear and Conv2d (groups=1) layers are replaced by modules that run from the
            compressed form without building the dense weight (see `runtime`); inference only.
        max_elements: refuse a file that declares more elements than this in all (by
            default 2**32, 16 GiB of float32), before allocating anything for it.

    Returns:
        `{name: dense tensor}` named as in `state_dict()`, the stored tensors in the file's
        order, then the tied names (each an equal copy of the tensor it is tied to); or
        `model` if one was given.

    Raises:
        FileNotFoundError: no such file.
        FormatError: the file is damaged or not a deepcompress file (a bad `meta["tied"]`
            included, see `tied_names`).
        ValueError: the file's tensors do not match `model`'s, or an unknown runtime.
    """
    if runtime not in ("dense", "compressed"):
        raise ValueError(f"runtime must be 'dense' or 'compressed', not {runtime!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    records, meta = from_bytes(path.read_bytes(), max_elements)
    tied = tied_names(meta, records, max_elements)
    by_name = {r.name: r for r in records}
    names = {**by_name, **{alias: by_name[target] for alias, target in tied.items()}}
    keep = _runnable_compressed(names, model) if runtime == "compressed" else {}
    decoded: dict[str, torch.Tensor] = {}
    state = {}
    for name, rec in names.items():
        layer, _, tname = name.rpartition(".")
        if layer in keep and tname in ("weight", "bias"):
            continue
        if rec.name not in decoded:
            decoded[rec.name] = codec.decode_record(rec)
        state[name] = decoded[rec.name]
    if model is None:
        # An alias gets its own copy, so that the dict can go anywhere a state dict goes
        # (safetensors refuses tensors that share memory).
        return {k: v if k in by_name else v.clone() for k, v in state.items()}
    strip_(model)
    for layer, (rec, bias) in keep.items():
        _replace(
            model,
            layer,
            rt.compressed_layer(
                model.get_submodule(layer),
                rt.matrix_from_record(rec),
                None if bias is None else codec.decode_record(bias),
            ),
        )
    try:
        # Tied names carry the same tensor, so a tied model stays tied (load_state_dict
        # copies into the one Parameter, once per name).
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


def _runnable_compressed(names: dict[str, Record], model: nn.Module | None) -> dict:
    """{layer: (weight record, bias record or None)} for the layers that can run compressed;
    `names` maps every name of the file (aliases included) to its record."""
    if model is None:
        raise ValueError("runtime='compressed' needs a model to put the layers in")
    out = {}
    for name, rec in names.items():
        layer, _, tname = name.rpartition(".")
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
            out[layer] = (rec, names.get(f"{layer}.bias"))
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
        `{name: dense tensor}` in the file's order, then the tied names (each a copy of the
        tensor it is tied to).

    Raises:
        FormatError: the bytes are damaged, truncated or not a deepcompress file.
    """
    records, meta = from_bytes(data, max_elements)
    tied = tied_names(meta, records, max_elements)
    state = _decode(records)
    for alias, target in tied.items():
        state[alias] = state[target].clone()
    return state


def strip_(model: nn.Module) -> nn.Module:
    """Remove deepcompress's masks and codebooks, leaving plain dense weights (in place).

    Args:
        model: a module after `prune_` and/or `quantize_`.

    Returns:
        `model`, whose `state_dict()` has its original keys again (`ip1.weight`, ...). Modules
        that computed their weight through one shared parametrization (a tied weight, see
        `prune_`) get one and the same Parameter again.
    """
    # id(parametrization list) -> (the list, kept alive so that its id stays unique, and the
    # Parameter made from it)
    made: dict[int, tuple[nn.Module, nn.Parameter]] = {}
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
            if id(plist) not in made:
                value = getattr(module, tname).detach().clone()
                made[id(plist)] = (plist, nn.Parameter(value))
            del module.parametrizations
            module.__class__ = module.__class__.__bases__[0]
            module.register_parameter(tname, made[id(plist)][1])
    return model
