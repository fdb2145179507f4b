"""The one encode path: tensors and their settings to the records of a file.

`encode_tensor` turns one tensor into a `Record`, whatever produced it: a weight that `prune_`
or `quantize_` holds in a parametrization (its mask, or its codebook and indices, are coded
as they are), or a plain tensor with post-training settings (pruned by magnitude with
`pruning.kept_positions`, shared through `sharing.kmeans_1d`), or a tensor stored as it is.
`model_records` (for `save`) and `state_records` (for `encode_state_dict` and `deepcompress
encode`) walk their tensors, resolve each one's settings through the one strict resolver
(`settings.plan`) and store a tied tensor once (`targets.dedup`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from ._progress import bar
from .coding import codec
from .coding.coders import check_entropy
from .coding.sparse_index import check_index_bits, nonzero_gaps
from .ecsq import QUALITY_RANGE, check_quality, lam_for_quality, quantize, rms
from .format.container import Record
from .parametrizations import Masked, Shared, Snapped
from .pruning import kept_positions
from .selection import fit_size
from .settings import UNSET, assign, check_raw_dtype, is_number, item, plan
from .sharing import EXACT_LEVELS, INITS, few_values, kmeans_1d
from .targets import Slot, dedup, layer_kind, model_state, storage_key

#: Post-training defaults (`encode_state_dict`): without retraining, pruning and coarse
#: codebooks cost accuracy that nothing wins back, so nothing is pruned and codebooks have 8
#: bits, from k-means started both on the data's quantiles ("density": levels where the
#: weights are) and on a uniform grid ("linear": levels for far outliers too), whichever
#: gives the lower squared error ("best"): never worse than a uniform grid of as many levels
#: (up to 12 bits; above, the quantiles alone).
POSTTRAIN_SPARSITY = 0.0
POSTTRAIN_BITS = 8
POSTTRAIN_INIT = "best"
#: Rate-distortion sharing (`ecsq`): a tensor that no `bits` or `sparsity` reaches gets a
#: quality (`ecsq.lam_for_quality`, `scale` the RMS of all the state's weight tensors). The
#: default is near-lossless (chosen on the fidelity sets of `benchmarks/bench_posttrain.py`).
POSTTRAIN_QUALITY = 8.0
#: How much the rate counts when a weight picks its level (`ecsq.quantize`'s `rd`): 0 rounds to
#: the nearest level of the quality's grid. On the benchmark networks' fidelity sets (CREPE's
#: pitch, Resemblyzer's embeddings) the entropy-constrained assignment (1) saved bytes at equal
#: squared error but lost more fidelity than it saved: its dead zone pulls the many small
#: weights to zero, a bias that a deep network accumulates (benchmarks/RESULTS.md, issue 20).
POSTTRAIN_RD = 0.0
#: A tensor whose RMS is this many times below the RMS of all the weights gets that many times
#: their relative error at one common quality; `state_records` warns when that error is large.
SMALL_SCALE = 16


def encode_tensor(
    name: str,
    t: torch.Tensor,
    *,
    held: nn.Module | None = None,
    sparsity: float = 0.0,
    bits: int | None = None,
    init: str = POSTTRAIN_INIT,
    lam: float | None = None,
    weights: torch.Tensor | None = None,
    rd: float = POSTTRAIN_RD,
    exact: bool = False,
    index_bits: int | None = None,
    entropy: str = "auto",
    raw_dtype: torch.dtype | None = None,
) -> Record:
    """The record of one tensor.

    - `held` a `Shared` parametrization: codec `shared`, its codebook and indices as they are.
    - `held` a `Snapped` one: codec `shared`, the grid's levels that `t` uses (as integers).
    - `held` a `Masked` one: codec `sparse`, the non-zeros of `t` in full precision.
    - else, with `exact`: `shared` through a codebook of `t`'s own distinct values (few:
      `sharing.few_values`), the zeros as pruned entries: lossless.
    - else, with `lam`: rate-distortion sharing at that slope (`ecsq.quantize`), each value's
      error weighted by `weights` (broadcastable to `t`; None: all alike), zero one of the
      levels (`shared`, the zeros as pruned entries).
    - else, with `sparsity > 0` or `bits`: `kept_positions(t, sparsity)`, then the kept
      values shared through a `2**bits` k-means codebook (`shared`) or kept as they are
      (`sparse`, when `bits` is None).
    - else `raw`, a floating-point tensor cast to `raw_dtype` if one is given and all its values
      fit that dtype's range (else kept in its own).

    `index_bits` None picks the gap width that gives the fewest bytes; `entropy` is "auto",
    "smallest" or a coder's name (`coding.coders.ENTROPY_CHOICES`).

    Raises:
        ValueError: NaN values, infinite ones in a tensor to compress (a tensor stored as it
            is may hold them: an attention mask of -inf), a dtype the format cannot hold.
    """
    if t.is_floating_point() and not torch.isfinite(t).all():
        stored_raw = held is None and lam is None and not sparsity and bits is None
        if not stored_raw or torch.isnan(t).any():
            raise ValueError(f"tensor {name!r} contains NaN or infinity; refusing to encode it")
    if held is None and raw_dtype is not None and t.is_floating_point():
        cast = t.to(raw_dtype)
        fits = (torch.isfinite(cast) | ~torch.isfinite(t)).all()  # no new infinity
        t = cast if fits else t  # past its range (a BatchNorm's variance of 5e5 in float16):
        # kept as it is, not stored as infinity
    dtype = codec.dtype_name(t.dtype)
    if isinstance(held, Shared):
        params, parts = codec.encode_shared(held.idx, held.codebook.detach(), index_bits, entropy)
        kind = "shared"
    elif isinstance(held, Snapped):  # its grid's levels in use, stored as integers
        shared = held.frozen(t, torch.float32)  # the grid's exact levels, whatever t's dtype
        params, parts = codec.encode_shared(
            shared.idx, shared.codebook.detach(), index_bits, entropy, grid=held.step
        )
        kind = "shared"
    elif isinstance(held, Masked):
        params, parts = codec.encode_sparse(t, index_bits, entropy)
        kind = "sparse"
    elif exact:
        flat = t.detach().reshape(-1).cpu()
        positions = torch.nonzero(flat).reshape(-1)
        values, labels = torch.unique(flat[positions], return_inverse=True)
        symbols = (labels + 1).to(torch.int32).numpy()
        params, parts = codec.encode_shared_entries(
            positions.numpy(), symbols, values.float(), index_bits, entropy
        )
        kind = "shared"
    elif lam is not None:
        top = min(torch.finfo(t.dtype).max, torch.finfo(torch.float32).max)  # float16: 65504
        q = quantize(t.detach().cpu().float(), lam, weights, rd, top)
        gaps, kept = nonzero_gaps(q.symbols), q.symbols[q.symbols != 0]
        codebook, grid = torch.from_numpy(q.codebook), q.step
        del q  # the dense symbols: what is left is as long as the kept weights, mostly uint16
        streams = codec.entry_streams(gaps, kept, len(codebook), index_bits)
        del gaps, kept  # the streams alone in memory while they are coded (RESULTS, issue 20)
        params, parts = codec.encode_shared_streams(*streams, codebook, entropy, grid)
        kind = "shared"
    elif sparsity > 0 or bits is not None:
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
    else:
        params, parts = codec.encode_raw(t)
        kind = "raw"
    return Record(name, tuple(t.shape), dtype, kind, params, parts)


def model_records(
    model: nn.Module,
    *,
    index_bits=None,
    entropy: str = "auto",
    raw_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> tuple[list[Record], dict[str, str]]:
    """The records of every tensor `model.state_dict()` would hold (a tied tensor once, under
    its first name), and the tied names `{alias: stored name}`.

    `index_bits` is a value or a mapping (as `prune_`'s settings) over the compressed tensors.
    """
    check_entropy(entropy)
    check_raw_dtype(raw_dtype)
    state = model_state(model)
    groups, tied = dedup((name, key) for name, _, _, key in state)
    held = [(n, t, h) for n, t, h, _ in state if n in groups]
    widths = {}
    if index_bits is not None:
        modules = dict(model.named_modules(remove_duplicate=False))

        def kind(name: str) -> str | None:
            layer, _, tname = name.rpartition(".")
            return layer_kind(modules[layer]) if tname == "weight" else None

        slots = [[Slot(None, n, kind(n), groups[n])] for n, _, h in held if h is not None]
        widths = {g[0].tname: v for g, v in plan(slots, index_bits, what="compressed tensor")}
        for v in widths.values():
            check_index_bits(v)
    records = [
        encode_tensor(
            name, t, held=h, index_bits=widths.get(name), entropy=entropy, raw_dtype=raw_dtype
        )
        for name, t, h in bar(held, desc="encode", unit="tensor", enabled=progress)
    ]
    return records, tied


def state_records(
    state: Mapping[str, torch.Tensor],
    *,
    sparsity=UNSET,
    bits=UNSET,
    quality=UNSET,
    size: int | None = None,
    importance: Mapping[str, torch.Tensor] | None = None,
    rd: float = POSTTRAIN_RD,
    measure: Callable[[list[Record], dict, dict], int] | None = None,
    index_bits: int | None = None,
    entropy: str = "auto",
    init: str = POSTTRAIN_INIT,
    exclude: Iterable[str] = (),
    raw_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> tuple[list[Record], dict[str, str], dict[str, dict]]:
    """The records of a state dict compressed post-training (see `encode_state_dict`), its
    tied names, and the settings each compressed tensor got (`{name: {"sparsity", "bits"}}`
    or `{name: {"quality", "lam", "rd"}}`). Everything is checked before any tensor is encoded.

    A weight tensor that `bits` or `sparsity` reaches is pruned and k-means-shared as they say
    (bits 8 where only `sparsity` reaches it); every other one gets rate-distortion sharing at
    its `quality` (a value or mapping; unmatched: `POSTTRAIN_QUALITY`; None: stored as is).
    With `size`, the common quality of those is the highest whose file, as `measure(records,
    settings, tied)` counts it, is at most `size` bytes. `importance` weighs each value's error
    in the rate-distortion sharing (`importance.importance`), scaled so that its mean over all
    the weights it covers is 1 (so a quality means about the same with it as without).
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
    if isinstance(rd, bool) or not isinstance(rd, (int, float)) or not 0 <= rd <= 1:
        raise ValueError(f"rd must be a number in [0, 1], got {rd!r}")
    check_entropy(entropy)
    check_raw_dtype(raw_dtype)
    check_index_bits(index_bits)
    if not isinstance(state, Mapping):
        raise TypeError(f"state must map names to tensors (model.state_dict()), not a "
                        f"{type(state).__name__}")  # fmt: skip
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            hint = f" (a checkpoint? pass ckpt[{name!r}])" if isinstance(t, Mapping) else ""
            raise TypeError(f"{name!r} is a {type(t).__name__}, not a tensor{hint}")
        try:  # before any arithmetic on it: float8 has no isfinite
            codec.dtype_name(t.dtype)
        except ValueError as e:
            raise ValueError(f"{name!r}: {e}") from None
    if size is not None and (quality is not UNSET and not isinstance(quality, Mapping)):
        raise ValueError("give a size or a quality for all tensors, not both")
    groups, tied = dedup((n, storage_key(t)) for n, t in state.items())
    weights = [
        [Slot(None, name, None, names)]
        for name, names in groups.items()
        if state[name].is_floating_point() and state[name].dim() >= 2 and state[name].numel()
    ]
    kw = {"exclude": exclude, "what": "weight tensor", "others": list(state)}
    given = {}
    for key, setting in (("sparsity", sparsity), ("bits", bits), ("quality", quality)):
        pairs = assign(weights, None if setting is UNSET else setting, default=UNSET, **kw)
        given[key] = {g[0].tname: (UNSET if setting is UNSET else v) for g, v in pairs}
    settings, qualities = {}, {}
    for name in given["bits"]:
        s, b, q = (given[k][name] for k in ("sparsity", "bits", "quality"))
        if s is not UNSET or b is not UNSET:
            s = 0.0 if s is UNSET or s is None else item(s)
            b = POSTTRAIN_BITS if b is UNSET else item(b)
            if not is_number(s) or not 0.0 <= s <= 1.0:
                raise ValueError(f"sparsity for {name!r} must be a number in [0, 1], got {s!r}")
            if b is not None and not (is_number(b) and b == int(b) and 1 <= b <= 16):
                raise ValueError(
                    f"bits for {name!r} must be an integer in 1..16 or None, got {b!r}"
                )
            s, b = float(s), None if b is None else int(b)  # plain numbers for the header
            if s > 0 or b is not None:
                settings[name] = {"sparsity": s, "bits": b}
        elif q is not None:
            if q is not UNSET:
                check_quality(q, name)
            qualities[name] = q  # UNSET: the common quality
    for name in [*settings, *qualities]:  # before the scale that would carry the infinity
        if not torch.isfinite(state[name]).all():
            raise ValueError(
                f"tensor {name!r} contains NaN or infinity; refusing to quantize it (a mask "
                "of -inf can be stored as it is: exclude it)"
            )
    few = {g[0].tname for g in weights if few_values(state[g[0].tname]) is not None}  # masks
    for name in few & set(qualities):  # stored exactly: lossless
        del qualities[name]
        settings[name] = {"exact": True}
    scale = rms([state[n] for n in _scaled(weights, {*settings, *qualities}, state, few)])
    errw = _error_weights(importance, state, [g[0].tname for g in weights], tied)

    def encode_at(common: float) -> tuple[list[Record], dict[str, dict]]:
        chosen = dict(settings)
        for name, q in qualities.items():
            q = common if q is UNSET else float(q)
            chosen[name] = {"quality": q, "lam": lam_for_quality(q, scale), "rd": rd}
        out = []
        for name in bar(list(groups), desc="encode", unit="tensor", enabled=progress):
            st = chosen.get(name, {})
            out.append(
                encode_tensor(
                    name,
                    state[name],
                    sparsity=st.get("sparsity", 0.0),
                    bits=st.get("bits"),
                    lam=st.get("lam"),
                    weights=errw.get(name) if "lam" in st else None,
                    rd=rd,
                    exact="exact" in st,
                    init=init,
                    index_bits=index_bits,
                    entropy=entropy,
                    raw_dtype=raw_dtype,
                )
            )
        return out, chosen

    if size is None:
        records, chosen = encode_at(POSTTRAIN_QUALITY if quality is UNSET else _common(quality))
        _warn_lost(records, state, chosen, scale)
        return records, tied, chosen
    if measure is None:
        raise ValueError("a size target needs a way to measure the file (measure=)")
    if not any(q is UNSET for q in qualities.values()):
        raise ValueError(
            "a size target needs weight tensors that no bits, sparsity or quality reaches "
            f"(and of more than {EXACT_LEVELS} distinct values: those are stored exactly)"
        )
    common = POSTTRAIN_QUALITY if quality is UNSET else _common(quality)
    records, chosen = fit_size(
        encode_at, lambda r, c: measure(r, c, tied), int(size), *QUALITY_RANGE, common
    )
    _warn_lost(records, state, chosen, scale)
    return records, tied, chosen


def _warn_lost(records: list[Record], state, chosen: dict, scale: float) -> None:
    """Warn (UserWarning, naming them) of the tensors one common quality leaves mostly lost:
    every value rounded to zero, or a scale `SMALL_SCALE` times below the model's and so an
    estimated relative error (sqrt(density) x step / sqrt(12) / RMS, at most 1; free levels:
    the quality's step) of 0.1 or more. One slope is optimal for the squared error as a whole;
    a layer of a far smaller scale pays for it, and a per-tensor quality fixes it."""
    lost = []
    for rec in records:
        if "quality" not in chosen.get(rec.name, {}) or rec.codec != "shared":
            continue
        nonzero = int(state[rec.name].count_nonzero())
        if not nonzero:
            continue
        own = rms([state[rec.name]])
        density = nonzero / state[rec.name].numel()  # zeros stay zeros: no error there
        step = rec.params.get("grid") or scale * 2.0 ** -chosen[rec.name]["quality"]
        err = min(1.0, density**0.5 * step / 12**0.5 / own)
        if rec.params["k"] == 0 or (own * SMALL_SCALE < scale and err >= 0.1):
            lost.append(f"{rec.name} (RMS {own:.3g}, relative error about {err:.2g})")
    if lost:
        warnings.warn(
            f"the common quality leaves {', '.join(lost)} mostly lost (the model's weights have "
            f"RMS {scale:.3g}); give them a quality of their own, or None to store them as "
            "they are: quality={name: value, ...}",
            stacklevel=4,
        )


def _scaled(weights: list, coded: set, state, few: set) -> list[str]:
    """The weights the quality's scale is the RMS of: the `coded` ones, and others if finite;
    not those of a few distinct values (`few`: a 0/1 mask's RMS is far above a model's
    weights'), unless there are only those."""
    names = [g[0].tname for g in weights]
    names = [n for n in names if n in coded or torch.isfinite(state[n]).all()]
    return [n for n in names if n not in few] or names


def _error_weights(importance, state, names: list[str], tied: dict[str, str]) -> dict:
    """`importance` checked for `encode_state_dict` (a tensor broadcastable to each named
    weight's shape, finite, >= 0) and scaled to mean 1 over all the weights it gives, for
    the state dict `state` whose coded weights are `names`. It may hold every parameter of a
    model, as `importance.importance` gives them: entries for tensors of the state that are not
    shared (biases, norms: stored as they are) are ignored, a tied name counts for its first
    name, and `P.parametrizations.N.original` (a parametrized model's name) for `P.N` when the
    state holds that one instead. A name the state does not hold is refused."""
    if not importance:
        return {}
    coded, out, unknown = set(names), {}, []
    for name, h in importance.items():
        if name not in state:
            alias = re.fullmatch(r"(?:(.*)\.)?parametrizations\.([^.]+)\.original", name)
            plain = alias and (f"{alias[1]}.{alias[2]}" if alias[1] else alias[2])
            if plain not in state:
                unknown.append(name)
                continue
            name = plain
        name = tied.get(name, name)
        if name not in coded:
            continue
        h = torch.as_tensor(h).detach().cpu().double()
        try:
            h = torch.broadcast_to(h, state[name].shape)
        except RuntimeError:
            raise ValueError(
                f"importance of {name!r} has shape {tuple(h.shape)}, not "
                f"broadcastable to {tuple(state[name].shape)}"
            ) from None
        if not torch.isfinite(h).all() or (h < 0).any():
            raise ValueError(f"importance of {name!r} must be finite and >= 0")
        out[name] = h
    if unknown:
        raise ValueError(f"importance for {sorted(unknown)}, which the state does not hold")
    total = sum(float(h.sum()) for h in out.values())
    count = sum(h.numel() for h in out.values())
    mean = total / count if total > 0 else 1.0
    return {n: h / mean for n, h in out.items()}


def _common(quality) -> float:
    """The quality of tensors no key reaches: a plain value, else the default."""
    if isinstance(quality, Mapping) or quality is None:  # None: every tensor stored as is
        return POSTTRAIN_QUALITY
    check_quality(quality, "every tensor")
    return float(quality)
