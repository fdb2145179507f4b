"""Stage 2: trained quantization by weight sharing (Deep Compression, section 3).

Each layer's surviving weights are clustered by 1-D k-means into `k = 2**bits` shared values (the
codebook); every weight then stores only its cluster index. `quantize_` makes the codebook the
layer's only trainable tensor:

    weight = table[idx],   table = [0, c_1, ..., c_k],   idx = 0 where pruned, else 1..k

so autograd's backward of the gather sums the gradients of all weights in a cluster into their
centroid, which is exactly the paper's rule dL/dC_k = sum_ij dL/dW_ij * 1[I_ij = k]. Pruned
weights (index 0) read a constant zero and are never in the codebook.

k-means sorts the values once (O(n log n)); each Lloyd iteration then costs O(k log n): on
sorted data a cluster is a contiguous run, found by binary search on the midpoints between
centroids, and its mean comes from prefix sums. No n x k distance matrix is ever built. Empty
clusters are re-seeded at the worst-fitted value, so a single far outlier cannot collapse the
codebook even with the linear initialisation (see `../shared/PAPER.md`, "facts to design for").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ._progress import bar
from .distributed import broadcast_
from .ecsq import check_quality, ecsq, grid_step, lam_for_quality, rms, step
from .ecsq import nearest as assign
from .parametrizations import (
    Shared,
    Snapped,
    current_mask,
    index_dtype,
    register_shared_,
    shared_parts,
    snapped,
    tie_,
)
from .settings import plan
from .targets import weight_groups

#: Centroid initialisations (the paper's three, plus k-means++).
CENTROID_INITS = ("linear", "density", "random", "kmeans++")
#: What `init=` takes: one of those, or "best" (Lloyd from both "linear" and "density",
#: keeping the lower squared error).
INITS = (*CENTROID_INITS, "best")
BEST_MAX_K = 4096  # "best" tries "linear" up to this many levels (12 bits)
#: What fine-tuning after `quantize_` may train (its `trainable`).
TRAINABLE = ("codebook", "weights")

#: The paper's default bits: 8 for conv layers, 5 for fully connected ones. Embedding tables
#: (which the paper does not have) get 5 like fully connected layers: an embedding is the
#: weight of a linear map applied to one-hot inputs, and an LM's output layer is often tied to
#: it, which needs one setting for both.
DEFAULT_BITS: dict[str, int] = {"conv": 8, "linear": 5, "embedding": 5}
#: A tensor of at most this many distinct values (a 0/1 attention mask in a state dict, a table
#: of a few levels) is shared exactly, through a codebook of its own values (`few_values`).
EXACT_LEVELS = 16


def init_centroids(x: np.ndarray, k: int, init: str, seed: int = 0) -> np.ndarray:
    """Initial centroids for sorted 1-D data `x` (float64, ascending, len >= k).

    linear: evenly spaced over [min, max]. density: evenly spaced on the empirical CDF.
    random (Forgy): k distinct data values. kmeans++: D^2 sampling (Arthur & Vassilvitskii).
    """
    if init == "linear":
        return np.linspace(x[0], x[-1], k)
    if init == "best":
        raise ValueError('"best" runs two initialisations: see kmeans_1d')
    if init == "density":
        return np.quantile(x, (np.arange(k) + 0.5) / k)
    rng = np.random.default_rng(seed)
    if init == "random":
        return np.sort(x[rng.choice(len(x), size=k, replace=False)])
    if init == "kmeans++":
        c = [x[rng.integers(len(x))]]
        d2 = (x - c[0]) ** 2
        for _ in range(1, k):
            total = d2.sum()
            i = rng.integers(len(x)) if total <= 0 else rng.choice(len(x), p=d2 / total)
            c.append(x[i])
            d2 = np.minimum(d2, (x - x[i]) ** 2)
        return np.sort(np.asarray(c))
    raise ValueError(f"unknown init {init!r}; choose one of {CENTROID_INITS}")


def kmeans_1d(
    values: np.ndarray | torch.Tensor,
    k: int,
    init: str = "linear",
    max_iter: int = 300,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """1-D k-means (Lloyd's algorithm on sorted data).

    Args:
        values: the data, any shape (flattened).
        k: the number of clusters wanted; fewer are returned if there are fewer distinct values.
        init: "linear" (the paper's default), "density", "random", "kmeans++", or "best":
            both "linear" and "density", keeping the lower squared error. "density" puts the
            levels where the values are and gives far outliers none of their own; Lloyd from
            "linear" (a uniform grid over [min, max]) never does worse than that grid; "best"
            is never worse than either up to BEST_MAX_K levels, and is "density" above
            (what post-training encoding uses).
        max_iter: Lloyd iterations at most (it stops when the assignment no longer changes).
        seed: for the random initialisations.

    Returns:
        `(centroids, labels)`: ascending float32 centroids (at most k, no duplicates), and for
        each value the index (int64) of its nearest centroid (a Lloyd fixed point: each
        centroid is, up to float32 rounding, the mean of its members).

    Raises:
        ValueError: k < 1, an unknown init, or NaN/infinite values.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if isinstance(values, torch.Tensor):  # via float64: numpy has no bfloat16
        values = values.detach().cpu().to(torch.float64)
    x = np.asarray(values).astype(np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise ValueError("values contain NaN or infinity")
    if x.size == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    xs = np.sort(x)
    n_distinct = 1 + int(np.count_nonzero(xs[1:] != xs[:-1]))
    if n_distinct <= k:
        centroids = np.unique(xs)
    elif init == "best":
        # Above BEST_MAX_K levels only "density": from a uniform grid that fine, Lloyd
        # re-seeds thousands of empty clusters one by one (minutes on a large tensor).
        starts = ("linear", "density") if k <= BEST_MAX_K else ("density",)
        tries = [_lloyd(xs, init_centroids(xs, k, i, seed), max_iter) for i in starts]
        centroids = min(tries, key=lambda c: _sse(xs, c))
    else:
        centroids = _lloyd(xs, init_centroids(xs, k, init, seed), max_iter)
    # Round to float32 *before* the last assignment so labels match the stored codebook.
    c32 = np.unique(centroids.astype(np.float32))
    return c32, assign(x, c32.astype(np.float64))


def _lloyd(xs: np.ndarray, c: np.ndarray, max_iter: int) -> np.ndarray:
    """Lloyd's iterations on ascending `xs` from centroids `c`; returns the final centroids.

    On sorted data every cluster is a contiguous run, so an iteration needs only the k-1 run
    boundaries (a binary search per midpoint) and prefix sums: O(k log n), not O(n log k).
    A value equal to a midpoint goes to the lower cluster, as in `assign`.
    """
    k = len(c)
    prefix = np.concatenate([[0.0], np.cumsum(xs)])
    bounds = None
    for _ in range(max_iter):
        c, b = _runs(xs, np.sort(c))
        counts = np.diff(b)
        while (counts == 0).any():
            # Re-seed an empty cluster at the value farthest from its own centroid.
            labels = np.repeat(np.arange(k), counts)
            err = (xs - c[labels]) ** 2
            err[counts[labels] == 1] = -1.0  # never steal a cluster's only member
            c[np.flatnonzero(counts == 0)[0]] = xs[int(np.argmax(err))]
            c, b = _runs(xs, np.sort(c))
            counts = np.diff(b)
        if bounds is not None and np.array_equal(b, bounds):
            break
        bounds = b
        c = (prefix[b[1:]] - prefix[b[:-1]]) / counts
    return np.sort(c)


def _sse(xs: np.ndarray, c: np.ndarray) -> float:
    """Squared error of ascending `xs` assigned to the nearest of centroids `c`."""
    c, b = _runs(xs, np.sort(c))
    return float(sum(((xs[b[j] : b[j + 1]] - c[j]) ** 2).sum() for j in range(len(c))))


def _runs(xs: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(c, boundaries): cluster j of ascending centroids `c` is `xs[b[j]:b[j + 1]]`."""
    mids = (c[1:] + c[:-1]) / 2
    b = np.concatenate([[0], np.searchsorted(xs, mids, side="right"), [len(xs)]])
    return c, b


def few_values(t: torch.Tensor, most: int = EXACT_LEVELS) -> torch.Tensor | None:
    """The distinct values of floating-point `t` (ascending, as float32) if there are at most
    `most` and float32 holds each exactly; else None. A strided sample of about 4,096 values
    is looked at first, then slices of 2**20, each for the values not seen yet, stopping at
    the first slice that brings the count past `most`: an ordinary weight, or a pruned one,
    costs next to nothing."""
    flat = t.detach().reshape(-1)
    if not t.is_floating_point() or not flat.numel():
        return None
    values = torch.unique(flat[:: max(1, flat.numel() // 4096)])
    if values.numel() > most:
        return None
    for part in flat.split(1 << 20):
        new = part[~torch.isin(part, values)]
        if new.numel():
            values = torch.unique(torch.cat([values, new[: 16 * most]]))  # more: it fails
        if values.numel() > most:
            return None
    if not torch.equal(values.float().to(values.dtype), values):
        return None
    return values.float()


def quantize_(
    model: nn.Module,
    bits: int | Mapping[str, int | None] | None = None,
    *,
    quality: float | Mapping[str, float | None] | None = None,
    init: str = "linear",
    max_iter: int = 300,
    seed: int = 0,
    progress: bool = False,
    exclude: Iterable[str] = (),
    trainable: str = "codebook",
) -> nn.Module:
    """Share each layer's surviving weights through a k-means codebook, in place.

    Works on pruned layers (the mask is kept: pruned weights stay zero and out of the codebook)
    and on unpruned ones. Afterwards the codebooks are the layers' trainable parameters:
    fine-tune with any ordinary loop to train the centroids.

    Args:
        model: any module; the weights of its Linear, Conv1d/2d/3d, Embedding and EmbeddingBag
            layers are quantized, and other floating-point Parameters of 2+ dimensions (such
            as nn.MultiheadAttention's `in_proj_weight`) when a mapping key names them.
        bits: bits per cluster index: an int for every layer, or a mapping whose keys are
            layer or tensor names, patterns (globs or `re:<regex>`) or kinds; the default is
            `DEFAULT_BITS`, `{"conv": 8, "linear": 5, "embedding": 5}`. An exact name wins over
            a pattern, the first matching pattern over a kind; tensors no key reaches, or given
            None, are left alone (see `prune_`).
        quality: instead of `bits`, rate-distortion sharing (`ecsq`): each layer's weights
            quantized at one common slope for the whole model (that of `encode`'s quality:
            a step of 2**-quality times the RMS of all the layers' weights), as many levels as
            pay for themselves once entropy-coded, and zero one of them: the weights it takes
            are pruned (they stay zero through fine-tuning). A number or a mapping as `bits`.
        init: centroid initialisation, one of `INITS` ("linear" by default, as in the paper).
        max_iter: k-means iterations at most.
        seed: for the random initialisations.
        progress: show a progress bar over the layers being clustered.
        exclude: patterns (or names) of tensors never to touch.
        trainable: what fine-tuning trains: "codebook" (the paper's: each weight keeps its
            level, the levels move) or, with `quality` only, "weights": each weight stays a
            trainable float computed as its rounding to the quality's grid (`Snapped`, a
            straight-through gradient), so fine-tuning may move it to another level, zero
            included (quantization-aware training). `save` stores the grid's levels. A layer
            already `Snapped` moves to the new quality's grid, keeping its floats and mask:
            training continues from them (`compress` steps the quality down so).

    A tied weight (one Parameter held by several modules) gets one codebook and one index
    tensor, clustered once; every module holding it computes its weight through them, so the
    tie holds through fine-tuning and `save` stores the tensor once (see `prune_`).

    Returns:
        `model`, with a `Shared` (or `Snapped`) parametrization on each quantized weight.

    Raises:
        ValueError: bits outside 1..16, an unknown init, a key or exclude pattern that matches
            no weight, different bits for one tied tensor, a layer already quantized, or NaN
            or infinite weights (naming the tensor).
            Nothing is changed when one of these is raised.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
    if quality is not None and bits is not None:
        raise ValueError("give bits or quality, not both")
    if trainable not in TRAINABLE or (trainable == "weights" and quality is None):
        raise ValueError(
            f"trainable must be one of {TRAINABLE}, 'weights' with a quality only; "
            f"got {trainable!r}"
        )
    setting = bits if quality is None else quality
    if quality is not None and not isinstance(quality, Mapping):
        setting = dict.fromkeys(DEFAULT_BITS, quality)
    plan_ = plan(
        weight_groups(model),
        DEFAULT_BITS if setting is None else setting,
        exclude,
        what="layer",
        strict=quality is not None and isinstance(quality, Mapping) or bits is not None,
    )
    for group, b in plan_:
        owner = group[0]
        if quality is None and not 1 <= int(b) <= 16:
            raise ValueError(f"bits for {owner.names[0]!r} must be in 1..16, got {b}")
        if quality is not None:
            check_quality(b, repr(owner.names[0]))
        if not torch.isfinite(_floats(owner.module, owner.tname)).all():
            raise ValueError(f"{owner.names[0]} contains NaN or infinity; refusing to quantize it")
        regrid = trainable == "weights" and snapped(owner.module, owner.tname) is not None
        if not regrid and shared_parts(owner.module, owner.tname) is not None:
            raise ValueError(f"layer {owner.names[0].rpartition('.')[0]!r} is already quantized")
        if not regrid and parametrize.is_parametrized(owner.module, owner.tname):
            if (
                len(owner.module.parametrizations[owner.tname]) != 1
                or current_mask(owner.module, owner.tname) is None
            ):
                raise ValueError(
                    f"{owner.names[0]} has parametrizations of its own; remove them first"
                )
    scale = rms([_kept(g[0].module, g[0].tname) for g, _ in plan_]) if quality is not None else 0
    for group, b in bar(plan_, desc="k-means", unit="layer", enabled=progress):
        owner = group[0]
        if quality is None:
            _quantize_layer(owner.module, int(b), init, max_iter, seed, tname=owner.tname)
        else:
            lam = lam_for_quality(float(b), scale)
            if trainable == "weights":
                _snap_layer(owner.module, owner.tname, lam)
            else:
                _quantize_layer(owner.module, 0, init, max_iter, seed, owner.tname, lam=lam)
        tie_(owner, group[1:])
    return model


def _floats(module: nn.Module, tname: str) -> torch.Tensor:
    """A layer's float weights: those a `Snapped` rounds (its trainable original), else the
    layer's weight."""
    if snapped(module, tname) is not None:
        return module.parametrizations[tname].original.detach()
    return getattr(module, tname).detach()


def _kept(module: nn.Module, tname: str) -> torch.Tensor:
    """A layer's float weights that its mask keeps (all of them when it has none)."""
    weight = _floats(module, tname)
    mask = current_mask(module, tname)
    return weight if mask is None else weight[mask]


def _snap_layer(module: nn.Module, tname: str, lam: float) -> None:
    """`Snapped` on the grid of `lam`'s step: each kept weight rounded to its nearest level
    (`ecsq.quantize(rd=0)`'s grid), the weights themselves left trainable; a layer already
    `Snapped` only gets the new step (its floats, mask and ties stay)."""
    mask = current_mask(module, tname)
    kept = _kept(module, tname)
    s = grid_step(kept, step(lam)) if kept.numel() else step(lam)
    s = float(broadcast_(torch.tensor([s], dtype=torch.float64))[0])  # rank 0's, under DDP
    held = snapped(module, tname)
    if held is not None:
        held.step = s
        return
    weight = getattr(module, tname).detach()
    if mask is None:
        mask = torch.ones_like(weight, dtype=torch.bool)
    register_shared_(module, tname, Snapped(s, mask.clone()))


def _quantize_layer(
    module: nn.Module,
    bits: int,
    init: str,
    max_iter: int,
    seed: int,
    tname: str = "weight",
    lam: float | None = None,
) -> None:
    """k-means with 2**bits levels, or with `lam` rate-distortion sharing (symbol 0: pruned)."""
    weight = getattr(module, tname).detach()
    mask = current_mask(module, tname)
    if mask is None:
        mask = torch.ones_like(weight, dtype=torch.bool)
    mask = mask.clone()
    if lam is None:
        centroids, labels = kmeans_1d(
            weight[mask], 2**bits, init=init, max_iter=max_iter, seed=seed
        )
        symbols = labels + 1
    else:
        q = ecsq(weight[mask].float(), lam)
        centroids, symbols = q.codebook, q.symbols
    idx = torch.zeros(weight.shape, dtype=index_dtype(len(centroids)))
    idx[mask.cpu()] = torch.from_numpy(symbols).to(idx.dtype)
    codebook = torch.from_numpy(centroids).to(dtype=weight.dtype, device=weight.device)
    # Under torch.distributed every rank takes rank 0's clustering (sizes first: k may differ).
    k = broadcast_(torch.tensor([len(codebook)]))
    codebook = broadcast_(codebook if len(codebook) == k else codebook.new_zeros(int(k)))
    idx = broadcast_(idx.to(index_dtype(int(k))))
    register_shared_(module, tname, Shared(codebook, idx.to(weight.device)))
