"""The model-level verbs that touch files: `save`, `encode_state_dict`, `load`, `load_bytes`
(and `warmup`, which compiles the kernels they use).

They are thin: encoding is `encode` (the one encode path), writing `format.writer`, reading
`format.reader` (the one reader), and running from the compressed form `runtime`.

Tied tensors (one tensor under several `state_dict()` names: a Parameter shared by two
modules, a module registered twice) are stored once, under their first name; the header's
`meta["tied"]` maps each other name to the stored one, and `load` gives every name back.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from ._version import __version__
from .encode import POSTTRAIN_INIT, POSTTRAIN_RD, model_records, state_records
from .format import reader
from .format.container import DEFAULT_MAX_ELEMENTS
from .format.writer import file_size, write_records
from .parametrizations import strip_
from .settings import UNSET
from .targets import model_state, unwrap

__all__ = ["__version__", "encode_state_dict", "load", "load_bytes", "save", "strip_", "warmup"]

Spec = float | int | None | Mapping[str, float | int | None]


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
        model: a module, usually after `prune_` and/or `quantize_`; a `torch.compile`d or
            DDP/DataParallel-wrapped one is saved under the plain model's names.
        path: the file to write (conventionally `*.dcz`); its folder must exist.
        index_bits: width of a stored gap, an int or a mapping by tensor or layer name or
            pattern (as `prune_`'s settings) over the pruned or weight-shared tensors; None
            (the default, or a tensor the mapping does not reach) picks, per tensor, the
            width that gives the smallest file.
        entropy: the coder of each stream: "auto" (the smallest of those available, except
            that CABAC, which decodes bit by bit, must save 3% on a stream of 2**20 symbols or
            more: `coding.coders.SLOW`), "smallest" (always the smallest), "huffman" (the
            paper's), "rans" or "cabac".
        raw_dtype: store the tensors kept as they are (biases, norms, unpruned layers) in this
            float dtype, e.g. `torch.float16` (lossy: on request only); None keeps theirs. A
            tensor with a value past that dtype's range keeps its own dtype.
        meta: optional JSON-serialisable dict stored in the header (e.g. a training report);
            its keys "tied" and "deepcompress" are reserved.
        progress: show progress over the tensors being encoded.

    Returns:
        The size of the written file in bytes.

    Raises:
        ValueError: non-finite weights, a dtype the format cannot hold, an `index_bits` key
            that reaches no compressed tensor, or a reserved `meta` key.
        FileNotFoundError: the folder of `path` does not exist.
    """
    _check_meta(meta)
    model = unwrap(model)  # a compiled or DDP-wrapped model: the plain model's names
    records, tied = model_records(
        model, index_bits=index_bits, entropy=entropy, raw_dtype=raw_dtype, progress=progress
    )
    return write_records(records, path, dict(meta or {}), tied)


def encode_state_dict(
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    sparsity: Spec = UNSET,
    bits: Spec = UNSET,
    quality: Spec = UNSET,
    size: int | None = None,
    importance: Mapping[str, torch.Tensor] | None = None,
    rd: float = POSTTRAIN_RD,
    index_bits: int | None = None,
    entropy: str = "auto",
    init: str = POSTTRAIN_INIT,
    exclude: Iterable[str] = (),
    meta: dict | None = None,
    progress: bool = False,
) -> int:
    """Compress a state dict's weights without retraining and write one file, atomically.

    Every floating-point tensor of two or more dimensions (the weights of Linear, Conv and
    Embedding layers) that `exclude` does not name is compressed; everything else (biases,
    norms, buffers, integer tensors) is stored losslessly, so `load(path)` returns every key of
    `state`. By default each weight tensor gets rate-distortion weight sharing (`ecsq`) at one
    common slope, near-lossless (`encode.POSTTRAIN_QUALITY`); `quality` moves that slope and
    `size` picks the best quality that fits. A tensor that `sparsity` or `bits` reaches is
    instead pruned by magnitude and its kept weights shared through a `2**bits`-entry k-means
    codebook, as in the paper. A tensor that would get a quality but holds at most 16 distinct
    values (a 0/1 attention mask in the state dict, a table of a few levels) is stored exactly,
    through a codebook of its own values, and left out of the quality's scale. The header's
    `meta["encode"]` records the settings each weight got.

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
            or `re:<regex>`; every key must reach a weight tensor.
        bits: codebook bits (1..16), an int or `{pattern: int}` (8 where only `sparsity`
            reaches a tensor); None keeps the kept weights at full precision (no sharing).
        quality: rate-distortion quality (-8..24) of the tensors that neither `sparsity` nor
            `bits` reaches, a number or `{pattern: number}` (unmatched: the default or the
            `size`'s; None: stored as is). About the bits of precision below the model's RMS
            weight: each +1 halves the error, costs about a bit a weight (`encode.py`).
        size: the most bytes the file may take: the highest common quality that fits.
        importance: data-aware distortion, `{weight name: tensor}` broadcastable to it, e.g.
            `dc.importance(model, batches)`: each weight's error in the rate-distortion sharing
            counts this much (relative to the others). None: all alike (data-free). Its mean
            over a tensor sets that tensor's step; with `rd` > 0 it also moves each weight's
            choice of level (the measured gains in RESULTS.md, issue 20, are with rd=1).
            Entries of tensors stored as they are (biases, norms) are ignored, so the whole
            dict `dc.importance` returns can be passed; a name the state lacks is refused.
        rd: how much the rate counts when a weight picks its level, 0..1: 0 (the default,
            `encode.POSTTRAIN_RD`) rounds to the nearest level of the quality's grid, 1 is
            entropy-constrained quantization (`ecsq`: fewer bytes at equal squared error, with
            a dead zone around zero).
        index_bits: width of a stored gap; None picks the smallest per tensor.
        entropy: "auto" (per stream, the smallest of the coders, CABAC on a long stream only
            where it saves 3%), "smallest", "huffman", "rans" or "cabac" (see `save`).
        init: k-means initialisation; "best" by default (see `encode.POSTTRAIN_INIT`).
        exclude: patterns of weight tensors to store losslessly as they are.
        meta: optional JSON-serialisable dict stored in the header; its keys "tied",
            "deepcompress" and "encode" are reserved.
        progress: show progress over the tensors.

    Returns:
        The size of the written file in bytes.

    Raises:
        ValueError: NaN or infinite values, a setting out of range, a key or exclude pattern
            that reaches no weight tensor (or a kind key: a state dict has no layer kinds),
            different settings for one tied tensor, a reserved `meta` key, an unknown
            init/entropy, or a `size` that even the lowest quality cannot meet.
        TypeError: a value of `state` that is not a tensor.
    """
    _check_meta(meta, reserved=("tied", "deepcompress", "encode"))
    extra = meta or {}

    def measure(records, settings, tied) -> int:
        return file_size(records, {"encode": settings, **extra}, tied)

    records, tied, settings = state_records(
        state,
        sparsity=sparsity,
        bits=bits,
        quality=quality,
        size=size,
        importance=importance,
        rd=rd,
        measure=measure,
        index_bits=index_bits,
        entropy=entropy,
        init=init,
        exclude=exclude,
        progress=progress,
    )
    return write_records(records, path, {"encode": settings, **extra}, tied)


def _check_meta(meta: dict | None, reserved: tuple[str, ...] = ("tied", "deepcompress")) -> None:
    """ValueError if a caller's `meta` uses a key the writer sets itself."""
    used = [k for k in reserved if meta and k in meta]
    if used:
        raise ValueError(f"meta keys {used} are reserved: the writer sets them")


def load(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    runtime: str = "dense",
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> dict[str, torch.Tensor] | nn.Module:
    """Decode a compressed file.

    Args:
        path: a file written by `save` or `encode_state_dict`.
        model: optional module to load the weights into (strictly: every key and shape must
            match; that is checked and every tensor decoded before the model is touched, so a
            file that fails leaves it as it was). Any deepcompress masks or codebooks
            on it are removed first, so it becomes a plain dense model holding the decoded
            weights (a compiled or DDP-wrapped model: the model it wraps, under its
            names). Weights tied in `model` stay tied (every name of a tied tensor receives
            the same values). A weight computed by another parametrization (`weight_norm`, a
            user's) is stored as the weight it computes and set back through its
            `right_inverse`.
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
            included).
        ValueError: the file's tensors do not match `model`'s (names or shapes), a
            parametrization of `model` without `right_inverse`, or an unknown runtime.
    """
    if runtime not in ("dense", "compressed"):
        raise ValueError(f"runtime must be 'dense' or 'compressed', not {runtime!r}")
    if runtime == "compressed" and model is None:
        raise ValueError("runtime='compressed' needs a model to put the layers in")
    file = reader.read(path, max_elements)
    if model is None:
        return file.decode()
    given, model = model, unwrap(model)  # a compiled or DDP-wrapped model: the plain one's names
    names = file.names()
    _check_fits(model, names, Path(path).name)
    # Everything is decoded before the model is touched: a damaged stream (FormatError) or a
    # failed allocation leaves it as it was.
    swaps = {}
    if runtime == "compressed":
        from .runtime.modules import compressed_swaps, swap_compressed_  # loaded on demand

        swaps = compressed_swaps(model, names)
    from .coding.codec import decode_record

    decoded: dict[str, torch.Tensor] = {}
    state = {}
    for name, rec in names.items():
        layer, _, tname = name.rpartition(".")
        if layer in swaps and tname in ("weight", "bias"):
            continue
        if rec.name not in decoded:
            decoded[rec.name] = decode_record(rec)
        state[name] = decoded[rec.name]
    computed = _parametrized(model, users_only=True)  # those strip_ leaves
    through = {name: state.pop(name) for name in list(state) if name in computed}
    for name, value in through.items():  # tried on a copy first: the model is not touched yet
        _set_through(copy.deepcopy(computed[name][0]), computed[name][1], value, name)
    strip_(model)
    if swaps:
        swap_compressed_(swaps)
    # Tied names carry the same tensor, so a tied model stays tied (load_state_dict copies
    # into the one Parameter, once per name). Names and shapes were checked above.
    model.load_state_dict(state, strict=False)
    for name, value in through.items():
        _set_through(*computed[name], value, name)
    return given


def _set_through(module: nn.Module, tname: str, value: torch.Tensor, name: str) -> None:
    """Set the parametrized `module.<tname>` to `value` through its parametrizations'
    `right_inverse`; ValueError if the weight it then computes is not `value` (weight_norm of
    an all-zero row gives NaN, `orthogonal` cannot hold a weight that is not)."""
    current = getattr(module, tname)
    value = value.to(device=current.device, dtype=current.dtype)
    with torch.no_grad():
        setattr(module, tname, value)
        got = getattr(module, tname)
    scale = float(value.abs().max()) if value.numel() else 0.0
    if not torch.allclose(got, value, rtol=1e-4, atol=1e-6 * scale):
        raise ValueError(
            f"{name}: its parametrization cannot hold the file's weight (set through its "
            "right_inverse, it computes another); remove it first "
            "(torch.nn.utils.parametrize.remove_parametrizations)"
        )


def _parametrized(model: nn.Module, users_only: bool = False) -> dict:
    """`{plain name: (module, tensor name)}` of every parametrized tensor of `model` (with
    `users_only`, of those no deepcompress mask or codebook is on: `strip_` leaves them)."""
    from torch.nn.utils import parametrize

    from .parametrizations import holder

    out = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        if parametrize.is_parametrized(module):
            for tname, plist in module.parametrizations.items():
                if not users_only or holder(plist) is None:
                    out[f"{prefix}.{tname}" if prefix else tname] = (module, tname)
    return out


def _check_fits(model: nn.Module, names: dict, fname: str) -> None:
    """ValueError, before `model` is touched, unless the file holds exactly the tensors (names
    and shapes) that `model_state(model)` names and each of the model's own parametrizations
    (not deepcompress's: `strip_` removes those) can be set through `right_inverse`. A lazy
    module's uninitialized tensor takes the file's shape (as `load_state_dict` does)."""
    from torch.nn.parameter import is_lazy

    state = model_state(model)
    on_meta = [n for n, t, _, _ in state if not is_lazy(t) and t.is_meta]
    if on_meta:
        raise ValueError(
            f"{on_meta[0]} is on the meta device (no storage to load into): build the model "
            "on a real device, or call model.to_empty(device='cpu') first"
        )
    shapes = {n: None if is_lazy(t) else tuple(t.shape) for n, t, _, _ in state}
    missing = [k for k in shapes if k not in names]
    unexpected = [k for k in names if k not in shapes]
    if missing or unexpected:
        raise ValueError(
            f"{fname} does not match the model: missing {missing}, unexpected {unexpected}"
        )
    wrong = [
        f"{k} {tuple(r.shape)} (the model's {shapes[k]})"
        for k, r in names.items()
        if shapes[k] is not None and tuple(r.shape) != shapes[k]
    ]
    if wrong:
        raise ValueError(f"{fname} does not fit the model: shapes differ: {'; '.join(wrong)}")
    for name, (module, tname) in _parametrized(model, users_only=True).items():
        plist = module.parametrizations[tname]
        lacking = [type(p).__name__ for p in plist if not hasattr(p, "right_inverse")]
        if lacking:
            raise ValueError(
                f"{name} is computed by the parametrization {lacking[0]}, which has no "
                "right_inverse to set it from the file; remove it first "
                "(torch.nn.utils.parametrize.remove_parametrizations)"
            )


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
    return reader.read(bytes(data), max_elements).decode()


def warmup() -> float:
    """Compile every numba kernel that saving and running a compressed file use (and loading,
    where the C decoders were not built or DEEPCOMPRESS_SIMD=0), or load it from numba's
    on-disk cache, so that no later call pays for JIT compilation.

    Run once after installing (`deepcompress warmup`), it fills the cache, and a new process
    then only reads the compiled kernels from disk. It saves and loads a small
    model with every entropy coder, and runs its weight-shared layers in every in-memory
    layout at batch 1 and 3. Returns the seconds it took."""
    import tempfile
    import time

    from .coding.coders import ENTROPY_CHOICES
    from .pruning import prune_
    from .runtime.layouts import CompressedMatrix
    from .sharing import quantize_

    def build():
        return nn.Sequential(
            nn.Conv2d(2, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 300), nn.Linear(300, 10)
        )

    t0 = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net, x = build(), torch.randn(3, 2, 6, 6)
    prune_(net, sparsity={"0": 0.3, "2": 0.9, "3": 0.7})
    quantize_(net, bits={"conv": 8, "linear": 5})
    with tempfile.TemporaryDirectory() as tmp:
        for entropy in ENTROPY_CHOICES:
            path = Path(tmp) / f"{entropy}.dcz"
            save(net, path, entropy=entropy)
            load(path)
            run = load(path, model=build(), runtime="compressed")
            with torch.no_grad():
                run(x[:1]), run(x)
    strip_(net)
    for layer in (net[2], net[3]):
        for layout in ("entries", "index", "bitmap"):
            m = CompressedMatrix.from_dense(layer.weight.detach(), layout)
            m.dense()
            for batch in (1, 3):
                m.matmul_t(torch.randn(batch, m.shape[1]))
    return time.perf_counter() - t0
