"""Rate-distortion weight sharing: entropy-constrained scalar quantization of one tensor.

`sharing.kmeans_1d` minimises squared error for a fixed number of levels, which puts levels of
nearly equal probability where the weights are: the best use of a fixed-length index, a poor
one once the indices are entropy-coded. This module minimises the quantity that matters when
they are (Chou, Lookabaugh & Gray 1989, "Entropy-constrained vector quantization"; Choi,
El-Khamy & Lee, ICLR 2017, "Towards the limit of network quantization"):

    J = sum_i w_i (x_i - c[l_i])**2  +  lam * (sum_i len(l_i)  +  CODEBOOK_BITS * k)

the (weighted) squared error plus `lam` times the bits: each index's ideal code length
`len(l) = -log2 p(l)` (what the adaptive coders reach within a few percent) and the float32
codebook entry of each of the k non-zero levels. Zero is an ordinary level with a fixed value
that has no codebook entry (the file's symbol 0), so whether a weight is pruned is decided by
the same rate-distortion trade as every other level, not by a fixed sparsity.

The algorithm is Lloyd's with the Lagrangian in place of the distance: start from a uniform
grid of the step that is optimal at high rate for `lam` (`step`), then repeat
    assign    every value to the level of least w (x - c)**2 + lam len (exactly: `_assign`
              scans outward from the nearest levels and stops when distance alone exceeds the
              best cost found, so it never misses a far, cheap level such as zero);
    drop      levels whose members would cost less than a codebook entry more elsewhere;
    update    lengths from the counts, each non-zero level to its members' weighted mean;
until J stops falling. Assignment and update never raise J; a drop prices its members' moves
exactly (their second-best costs) but not the change of the other code lengths, so the loop
keeps the best J it has seen. `tests/test_ecsq.py` checks it against an exhaustive search.

The levels either stay on the starting grid (`grid=True`: the file stores them as integers,
about a bit a level) or move to their members' means (32 bits a level); `quantize` keeps the
better. Its `rd` scales the rate's price in the assignment only: 0 rounds every value to the
nearest grid level (what `encode` does by default: on the benchmark networks the dead zone of
the full Lagrangian cost more output fidelity than the bytes it saved, RESULTS.md, issue 20).

`lam` is in units of weighted squared error per bit: one `lam` for all tensors of a model is
the allocation of bits that minimises the total (weighted) error for the total size (equal
slopes), which is what `encode`'s `quality` uses.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from .coding._lazy_jit import njit

#: Bits charged for each non-zero level: its float32 codebook entry, or on a grid about what
#: its integer costs in the file (`coding.codec.encode_grid`: most are the last one plus 1).
CODEBOOK_BITS = 32
GRID_LEVEL_BITS = 2
#: The most non-zero levels a file's codebook may hold (`docs/FORMAT.md`, `shared`).
MAX_LEVELS = (1 << 16) - 1


def step(lam: float, weight: float = 1.0) -> float:
    """The uniform quantizer's step that minimises D + lam R at high rate for values of
    weight `weight`: D = w step^2 / 12 and R = h - log2(step) give step^2 = 6 lam / (w ln 2)."""
    return math.sqrt(6.0 * lam / (weight * math.log(2.0)))


def lam_for_step(s: float, weight: float = 1.0) -> float:
    """Inverse of `step`."""
    return s * s * weight * math.log(2.0) / 6.0


#: What a `quality` may be (see `lam_for_quality`).
QUALITY_RANGE = (-8.0, 24.0)


def lam_for_quality(quality: float, scale: float) -> float:
    """The slope of a quality: the one whose high-rate step is `scale * 2**-quality`, `scale`
    the RMS of all the weights being compressed together (`rms`). So quality is about the bits
    of precision below a typical weight: each +1 halves the error and costs about a bit a
    weight, and one quality for all tensors is one slope (the equal-slope allocation)."""
    return lam_for_step(scale * 2.0**-quality)


def check_quality(q, name: str) -> float:
    """`q` as a float; ValueError naming `name` unless it is a number in QUALITY_RANGE."""
    lo, hi = QUALITY_RANGE
    if isinstance(q, bool) or not isinstance(q, numbers.Real) or not lo <= q <= hi:  # numpy too
        raise ValueError(f"quality for {name} must be a number in [{lo:g}, {hi:g}], got {q!r}")
    return float(q)


def rms(tensors: list[torch.Tensor]) -> float:
    """Root mean square of all the values of `tensors` together (1.0 if they are all zero)."""
    norms = (torch.linalg.vector_norm(t.detach(), dtype=torch.float64) for t in tensors)
    total = sum(float(n) ** 2 for n in norms)  # no float64 copy of a tensor
    count = sum(t.numel() for t in tensors)
    return (total / count) ** 0.5 if count and total > 0 else 1.0


@njit(cache=True, nogil=True)
def _scan(xi, wi, c, cost, cmin, j, direction, best, second, bj):  # pragma: no cover - compiled
    """`_assign`'s walk from level j in `direction` (-1 down, +1 up) while a level can still
    beat the second best; returns the updated (best, second, index of best)."""
    while 0 <= j < len(c):
        d = wi * (xi - c[j]) ** 2
        if d + cmin >= second:
            break
        v = d + cost[j]
        if v < best:
            second, best, bj = best, v, j
        elif v < second:
            second = v
        j += direction
    return best, second, bj


@njit(cache=True, nogil=True)
def _assign(x, w, c, cost, labels, regret):  # pragma: no cover - compiled
    """For each x[i]: the level j (of ascending values c) of least w[i] (x[i] - c[j])**2 +
    cost[j] into labels[i], and what the second-best level would cost more into regret[i].

    w has one entry (used for every value) or one per value. Levels farther than the nearest
    ones are visited while their distance alone, plus the cheapest cost, can still beat the
    second best: the answer is exact for any costs."""
    k = len(c)
    cmin = cost.min()
    per_value = len(w) > 1
    for i in range(len(x)):
        xi = x[i]
        wi = w[i] if per_value else w[0]
        lo, hi = 0, k
        while lo < hi:  # first level >= xi
            mid = (lo + hi) // 2
            if c[mid] < xi:
                lo = mid + 1
            else:
                hi = mid
        best, second, bj = _scan(xi, wi, c, cost, cmin, lo - 1, -1, np.inf, np.inf, -1)
        best, second, bj = _scan(xi, wi, c, cost, cmin, lo, 1, best, second, bj)
        labels[i] = bj
        regret[i] = second - best


def assign(x: np.ndarray, w: np.ndarray, levels: np.ndarray, cost: np.ndarray):
    """`(labels, regret)`: each value's level of least `w (x - level)**2 + cost` (exact), and
    how much more its second-best level costs (inf when there is none)."""
    labels = np.empty(len(x), np.int64)
    regret = np.empty(len(x), np.float64)
    _assign(x, w, levels, cost, labels, regret)
    return labels, regret


def lagrangian(
    x: np.ndarray,
    w: np.ndarray,
    levels: np.ndarray,
    labels: np.ndarray,
    lam: float,
    level_bits: float = CODEBOOK_BITS,
):
    """`(distortion, bits, J)` of a quantization: levels[labels] for x, ideal code lengths from
    the labels' counts, `level_bits` for each non-zero level that is used."""
    d = float((w * (x - levels[labels]) ** 2).sum())
    counts = np.bincount(labels, minlength=len(levels))
    used = counts[counts > 0]
    bits = float(-(used * np.log2(used / len(x))).sum())
    bits += level_bits * int(np.count_nonzero(counts[levels != 0]))
    return d, bits, d + lam * bits


@dataclass(frozen=True)
class Quantized:
    """A tensor's rate-distortion sharing: `codebook` (the non-zero levels, ascending float32),
    each value's `symbols` (0: zero, j + 1: codebook[j]; the file's `shared` symbols), the
    grid `step` when codebook == float32(integers * step) (None for free levels), and `cost`,
    the Lagrangian J it reached."""

    codebook: np.ndarray
    symbols: np.ndarray
    step: float | None
    cost: float


def quantize(values, lam: float, weights=None, rd: float = 1.0, limit=None) -> Quantized:
    """Quantization on the grid of `lam`'s step (`step`, for the mean weight), with the rate
    priced at `rd * lam` in the assignment: `rd` = 1 is `ecsq` proper (the better, lower J,
    of grid and free levels: a grid codebook costs a few bits a level, free levels 32 but sit
    at their members' means, which pays at few levels), `rd` = 0 rounds each value to its
    nearest grid level (uniform reconstruction, no dead zone), values between move the dead
    zone and the levels part of the way. `limit`: no grid level above it (the largest value
    of the tensor's own dtype, such as float16's 65504; None: float32's)."""
    if not 0.0 <= rd <= 1.0:
        raise ValueError(f"rd must be in [0, 1], got {rd}")
    _check_lam(lam)
    x = _flat(values)  # each is converted once, for every run below
    w = _weights(weights, np.shape(values) if weights is not None else None, x.size)
    s = step(lam, float(w.mean()) or 1.0)
    if rd == 0:
        return _rounded(x, w, lam, s, limit)
    x = x.astype(np.float64)
    on_grid = _ecsq(x, w, lam, grid=True, step_=s, rate=rd, limit=limit)
    if rd < 1:
        return on_grid
    free = _ecsq(x, w, lam)
    return on_grid if on_grid.cost <= free.cost else free


def _rounded(x: np.ndarray, w: np.ndarray, lam: float, s: float, limit=None) -> Quantized:
    """Each value of flat `x` rounded to the nearest multiple of the grid's step (`ecsq` with
    `rate=0`), in two passes over slices of `x`: no sort, no per-value costs, and no array as
    large as `x` but the symbols, in 16 bits where they fit (what keeps `encode`'s peak
    memory near the tensor's size). Its `cost` is the Lagrangian at `lam`, the error weighted
    by `w` (one entry or one per value)."""
    if x.size == 0:
        return Quantized(np.zeros(0, np.float32), np.zeros(0, np.int32), s, 0.0)
    s = grid_step(x, s, limit)

    def mult(part: slice) -> np.ndarray:  # the grid integer of each value of a slice
        return np.rint(x[part].astype(np.float64) / s).astype(np.int64)

    # rint(v / s) rises with v, so the extreme values give the extreme integers
    low = int(np.rint(float(x.min()) / s))
    counts = np.zeros(int(np.rint(float(x.max()) / s)) - low + 1, np.int64)
    for part in _slices(x.size):
        counts += np.bincount(mult(part) - low, minlength=len(counts))
    used = np.flatnonzero(counts)
    levels_m = used + low  # ascending integers of the levels in use
    nonzero = levels_m != 0
    k = int(nonzero.sum())  # offset -> symbol (0: zero, 1..k: codebook), in 16 bits if it can
    symbol_of = np.zeros(len(counts), np.uint16 if k <= MAX_LEVELS else np.int32)
    symbol_of[used[nonzero]] = np.arange(1, k + 1)
    codebook = _grid_values(levels_m[nonzero], s).astype(np.float32)
    levels = np.concatenate([[0.0], codebook.astype(np.float64)])
    symbols = np.empty(x.size, symbol_of.dtype)
    d = 0.0
    for part in _slices(x.size):
        symbols[part] = symbol_of[mult(part) - low]
        err = x[part].astype(np.float64) - levels[symbols[part]]
        d += float(((w[part] if len(w) > 1 else w[0]) * err * err).sum())
    c = counts[used].astype(np.float64)
    bits = float(-(c * np.log2(c / x.size)).sum()) + GRID_LEVEL_BITS * int(nonzero.sum())
    return Quantized(codebook, symbols, s, d + lam * bits)


def _slices(n: int, size: int = 1 << 16):
    """Consecutive slices of at most `size` covering range(n)."""
    return (slice(i, min(i + size, n)) for i in range(0, n, size))


def _check_lam(lam: float) -> None:
    if not lam > 0 or not math.isfinite(lam):
        raise ValueError(f"lam must be a positive number, got {lam}")


def _flat(values) -> np.ndarray:
    """`values` (array or tensor) flattened, in its own dtype; ValueError on NaN or infinity."""
    x = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)
    x = x.reshape(-1)
    if not np.isfinite(x).all():
        raise ValueError("values contain NaN or infinity")
    return x


def grid_step(x: np.ndarray, s: float, limit: float | None = None) -> float:
    """The grid's step: `s`, but no finer than 2**-22 of the largest value, so that the
    integers stay below 2**22 and float32(m * s) are distinct for distinct m; and, for values
    near `limit` (the largest of the tensor's dtype; None: float32's), a little finer where
    the top level would pass it (be infinite once decoded in that dtype)."""
    top = max(-float(x.min()), float(x.max()))
    s = max(s, top * 2.0**-22, 1e-37)
    limit = float(np.finfo(np.float32).max) if limit is None else float(limit)
    m_top = np.rint(top / s)
    return limit / m_top * (1 - 2.0**-40) if m_top * s > limit else s


def ecsq(
    values: np.ndarray | torch.Tensor,
    lam: float,
    weights: np.ndarray | torch.Tensor | None = None,
    *,
    grid: bool = False,
    step_: float | None = None,
    rate: float = 1.0,
    max_iter: int = 30,
    tol: float = 1e-4,
) -> Quantized:
    """Entropy-constrained quantization of `values` at slope `lam` (see the module's doc).

    Args:
        values: the data, any shape (flattened).
        lam: bits' price in weighted squared error (> 0); larger gives fewer bytes.
        weights: each value's weight in the error (broadcastable to `values`, >= 0), e.g. a
            diagonal second-order estimate of its effect on the output; None weighs all alike.
        grid: keep the levels on the uniform grid they start from (a level then costs
            GRID_LEVEL_BITS, not CODEBOOK_BITS); else each moves to its members' mean.
        step_: the grid's step; None: `step(lam)` for the mean weight.
        rate: the share of the rate's price in the assignment (and in dropping levels): 1 is
            the Lagrangian; 0 assigns each value to its nearest level and drops none (the
            uniform quantizer of that step; `quantize(rd=0)` does it in one pass).
        max_iter: iterations at most; it stops earlier when J falls by less than `tol` of it.

    Returns:
        `Quantized`, at most MAX_LEVELS non-zero levels, its labels computed with exactly the
        float32 values of its codebook.

    Raises:
        ValueError: lam <= 0, NaN or infinite values, negative or non-finite weights.
    """
    _check_lam(lam)
    x = _flat(values).astype(np.float64)
    w = _weights(weights, np.shape(values) if weights is not None else None, x.size)
    return _ecsq(x, w, lam, grid=grid, step_=step_, rate=rate, max_iter=max_iter, tol=tol)


def _ecsq(x, w, lam, *, grid=False, step_=None, rate=1.0, max_iter=30, tol=1e-4, limit=None):
    """`ecsq` on flat float64 `x` and its checked weights `w` (`_weights`)."""
    level_bits = GRID_LEVEL_BITS if grid else CODEBOOK_BITS
    if x.size == 0:
        return Quantized(np.zeros(0, np.float32), np.zeros(0, np.int64), None, 0.0)
    # A uniform grid through zero at the high-rate step for the mean weight, only the levels
    # some value is nearest to (at most one per value).
    s = grid_step(x, step(lam, float(w.mean()) or 1.0) if step_ is None else step_, limit)
    mult = np.union1d(np.rint(x / s), [0.0]).astype(np.int64)
    levels = _grid_values(mult, s)
    cost = np.zeros(len(levels))
    best, previous = None, np.inf
    for _ in range(max_iter):
        labels, regret = assign(x, w, levels, cost)
        keep = _keep(levels, labels, regret, rate * lam * level_bits)
        levels, labels, mult = _subset(levels, labels, mult, keep)
        counts = np.bincount(labels, minlength=len(levels))
        cost = rate * lam * _lengths(counts)
        if not grid:
            levels, labels = _means(x, w, levels, labels, counts)
            mult = None  # off the grid
            counts = np.bincount(labels, minlength=len(levels))
            cost = rate * lam * _lengths(counts)
        j = lagrangian(x, w, levels, labels, lam, level_bits)[2]
        if best is None or j < best[2]:
            best = (levels, labels, j, mult, cost)
        if previous - j <= tol * abs(j):
            break
        previous = j
    levels, labels, j, mult, cost = best
    again, _ = assign(x, w, levels, cost)  # the labels of the levels' own costs, if better
    j2 = lagrangian(x, w, levels, again, lam, level_bits)[2]
    if j2 < j:
        labels, j = again, j2
    zero = int(np.flatnonzero(levels == 0)[0])
    symbols = np.where(labels < zero, labels + 1, labels)
    symbols[labels == zero] = 0
    return Quantized(np.delete(levels, zero).astype(np.float32), symbols, s if grid else None, j)


def _lengths(counts: np.ndarray) -> np.ndarray:
    """Ideal code lengths from counts; an empty level (zero can be) as if half a value had it."""
    return -np.log2(np.maximum(counts, 0.5) / counts.sum())


def _grid_values(mult: np.ndarray, s: float) -> np.ndarray:
    """float32(m * s) as float64: the values a file's grid codebook decodes to."""
    return (mult.astype(np.float64) * s).astype(np.float32).astype(np.float64)


def _means(x, w, levels, labels, counts):
    """Each non-zero level moved to its members' weighted mean (rounded to float32), zero
    kept; ascending, levels that land on one value merged. Returns (levels, labels)."""
    nz = levels != 0
    sw = np.bincount(labels, weights=w * x if len(w) > 1 else x, minlength=len(levels))
    ws = np.bincount(labels, weights=w, minlength=len(levels)) if len(w) > 1 else counts
    upd = np.divide(sw, ws, out=levels.copy(), where=(ws > 0) & nz)
    moved = np.where(nz, upd, 0.0).astype(np.float32).astype(np.float64)
    merged, inverse = np.unique(moved, return_inverse=True)
    return merged, inverse[labels]


def _keep(levels, labels, regret, level_price) -> np.ndarray:
    """Which levels to keep: zero, and each used non-zero level unless its members would cost
    less than its codebook price (`level_price`) more at their second-best levels; never two
    neighbours dropped at once (each move was priced with the neighbours in place)."""
    n = len(levels)
    used = np.bincount(labels, minlength=n) > 0
    move = np.bincount(labels, weights=regret, minlength=n)
    cheap = used & (levels != 0) & (move < level_price)
    cheap[1:] &= ~cheap[:-1]
    return (used & ~cheap) | (levels == 0)


def _subset(levels, labels, mult, keep):
    """The kept levels (at most MAX_LEVELS non-zero ones: the least used go), with the members
    of the others moved to the nearest kept level until the next assignment."""
    counts = np.bincount(labels, minlength=len(levels))
    excess = int(np.count_nonzero(keep & (levels != 0))) - MAX_LEVELS
    if excess > 0:
        order = np.argsort(np.where(keep & (levels != 0), counts, np.iinfo(np.int64).max))
        keep = keep.copy()
        keep[order[:excess]] = False
    if keep.all():
        return levels, labels, mult
    kept = levels[keep]
    new_index = np.cumsum(keep) - 1
    out = new_index[labels]
    moved = ~keep[labels]
    if moved.any():
        out[moved] = nearest(levels[labels[moved]], kept)
    return kept, out, None if mult is None else mult[keep]


def nearest(x: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest of the ascending `levels` for each value of `x` (ties go low)."""
    mids = (levels[1:] + levels[:-1]) / 2
    return np.searchsorted(mids, x, side="left")


def _weights(weights, shape, n: int) -> np.ndarray:
    """The error weights as a float64 array of 1 (all alike) or n entries."""
    if weights is None:
        return np.ones(1)
    w = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights)
    w = np.broadcast_to(w.astype(np.float64), shape).reshape(-1)
    if w.size != n or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite, >= 0 and broadcastable to the values")
    return np.ascontiguousarray(w)
