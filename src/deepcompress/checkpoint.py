"""Checkpoints of a model in the middle of compression: weights, masks and codebooks.

A checkpoint is a safetensors file (no pickle) holding every tensor of the model under its plain
name, plus, for a pruned layer, `<name>.__mask`, and for a weight-shared one `<name>.__codebook`
and `<name>.__idx`; its metadata holds the caller's JSON (which phase was finished, the run's
identity). `restore` rebuilds the same parametrizations on a fresh model, so training resumes
exactly where it stopped: the optimizer is created afresh in each phase and the data order
and augmentation are seeded per phase, so nothing else needs saving.
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from .format.writer import atomic_path
from .parametrizations import Masked, Shared, Snapped, register_shared_, tie_
from .targets import Slot, dedup, model_state


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict) -> None:
    """Write `model` and `meta` (JSON-serialisable) to `path` atomically. A tied tensor is
    written once; the metadata's `tied` maps its other names to the stored one."""
    state = model_state(model)
    groups, tied = dedup((name, key) for name, _, _, key in state)
    tensors = {}
    for name, t, holder, _ in state:
        if name not in groups:
            continue
        # a Snapped tensor's float weights train on: keep them, not their rounding to the grid
        value = _plist(model, name).original.detach() if isinstance(holder, Snapped) else t
        tensors[name] = value.contiguous().clone()
        if isinstance(holder, (Masked, Snapped)):
            tensors[f"{name}.__mask"] = holder.mask.to(torch.uint8).contiguous()
        if isinstance(holder, Snapped):
            tensors[f"{name}.__step"] = torch.tensor(holder.step, dtype=torch.float64)
        elif isinstance(holder, Shared):
            tensors[f"{name}.__codebook"] = holder.codebook.detach().contiguous().clone()
            tensors[f"{name}.__idx"] = holder.idx.contiguous()
    # the parametrizations' order: `restore` registers them so (safetensors sorts its keys), so
    # that the restored model lists its tensors, and `save` writes them, as this one does
    meta_ = {"meta": json.dumps(meta), "tied": json.dumps(tied), "order": json.dumps(list(groups))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta_)


def _plist(model: nn.Module, name: str):
    """The parametrization list of tensor `name` of `model`."""
    layer, _, tname = name.rpartition(".")
    return model.get_submodule(layer).parametrizations[tname]


def read_meta(path: str | os.PathLike) -> dict:
    """The `meta` dict of a checkpoint."""
    return json.loads(_metadata(path).get("meta", "{}"))


def _metadata(path: str | os.PathLike) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def restore(model: nn.Module, path: str | os.PathLike) -> dict:
    """Load a checkpoint into a fresh `model` (same architecture, no parametrizations),
    re-creating its masks and codebooks. Returns the checkpoint's meta."""
    metadata = _metadata(path)
    tied = json.loads(metadata.get("tied", "{}"))
    tensors = load_file(str(path))
    for key, codebook in tensors.items():  # checked before the model is touched
        if key.endswith(".__codebook"):
            idx = tensors.get(key.replace(".__codebook", ".__idx"))
            if idx is None or idx.numel() and not 0 <= idx.min() <= idx.max() <= len(codebook):
                raise ValueError(f"{path}: the cluster indices of {key} do not fit its codebook")
    plain = {k: v for k, v in tensors.items() if ".__" not in k}
    plain.update({alias: plain[target] for alias, target in tied.items()})
    order = json.loads(metadata.get("order", "null")) or [n for n, *_ in model_state(model)]
    rank = {name: i for i, name in enumerate(order)}  # older checkpoints: the model's order
    model.load_state_dict(plain, strict=True)
    held = [k.rpartition(".__")[0] for k in tensors if k.endswith((".__mask", ".__codebook"))]
    for name in sorted(held, key=lambda n: rank.get(n, len(rank))):  # as they were registered
        layer, _, tname = name.rpartition(".")
        module = model.get_submodule(layer)
        on = getattr(module, tname).device  # the model's device, wherever it is
        if f"{name}.__codebook" in tensors:
            idx = tensors[f"{name}.__idx"].to(on)
            register_shared_(module, tname, Shared(tensors[f"{name}.__codebook"].to(on), idx))
            continue
        mask = tensors[f"{name}.__mask"].bool().to(on)
        step = tensors.get(f"{name}.__step")
        if step is None:
            parametrize.register_parametrization(module, tname, Masked(mask))
        else:
            register_shared_(module, tname, Snapped(float(step), mask))
    for alias, target in tied.items():  # parametrized tied tensors: one list for all names
        layer, _, tname = target.rpartition(".")
        owner = model.get_submodule(layer)
        if parametrize.is_parametrized(owner, tname):
            a_layer, _, a_tname = alias.rpartition(".")
            tie_(
                Slot(owner, tname, None, [target]),
                [Slot(model.get_submodule(a_layer), a_tname, None, [alias])],
            )
    return json.loads(metadata.get("meta", "{}"))
