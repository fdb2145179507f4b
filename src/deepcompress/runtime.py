"""Run Linear and Conv2d layers straight from their compressed form (the paper's section 6 wish,
and what the EIE accelerator did in hardware).

A weight-shared layer stays in memory as CSR of cluster indices: for each output row, the
columns of its kept weights (uint16, or int32 past 65,535 inputs) and their cluster codes
(uint8, or uint16 past 256 clusters), plus the float32 codebook. That is 3 bytes per kept
weight where dense float32 takes 4 bytes per weight: at the paper's 4-9% kept, under 7% of
the dense size. The kernel (numba, both cores) looks each weight up in the codebook as it
goes, never building the dense matrix.

    net = dc.load("model.dcz", model=MyNet(), runtime="compressed")

Modes, per layer and batch size (`CompressedLinear.plan`): "compressed" runs the kernel;
"dense" rebuilds the dense weight for that call only and uses torch's GEMM, which wins at
large batches (the paper saw sparse kernels lose to dense at batch 64 too). `autotune_`
chooses by measured time.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from numba import njit, prange
from torch import nn

from . import codec
from .errors import FormatError
from .sparse_index import encode_gaps


def _spmm(row_ptr, ent, shift, mask, table, xt, out):  # pragma: no cover - compiled
    """out[r, b] = sum over row r's entries of table[code] * xt[col, b].

    Each entry packs (gap << shift) | code: `gap` columns skipped since the previous entry of
    the row, `code` an index into `table` (0: a filler, whose table value is 0).
    xt: (in, B) float32, C-contiguous; out: (rows, B) float64, zeroed. The batch-1 loop keeps
    four partial sums so that the additions do not wait on each other."""
    n_rows = row_ptr.size - 1
    nb = xt.shape[1]
    for r in prange(n_rows):
        col = -1
        j, end = row_ptr[r], row_ptr[r + 1]
        if nb == 1:
            x = xt[:, 0]
            a0 = a1 = a2 = a3 = 0.0
            while j + 4 <= end:
                e0, e1, e2, e3 = (
                    np.int64(ent[j]),
                    np.int64(ent[j + 1]),
                    np.int64(ent[j + 2]),
                    np.int64(ent[j + 3]),
                )
                c0 = col + (e0 >> shift) + 1
                c1 = c0 + (e1 >> shift) + 1
                c2 = c1 + (e2 >> shift) + 1
                c3 = c2 + (e3 >> shift) + 1
                a0 += table[e0 & mask] * x[c0]
                a1 += table[e1 & mask] * x[c1]
                a2 += table[e2 & mask] * x[c2]
                a3 += table[e3 & mask] * x[c3]
                col = c3
                j += 4
            while j < end:
                e = np.int64(ent[j])
                col += (e >> shift) + 1
                a0 += table[e & mask] * x[col]
                j += 1
            out[r, 0] = (a0 + a1) + (a2 + a3)
        else:
            for jj in range(j, end):
                e = np.int64(ent[jj])
                col += (e >> shift) + 1
                w = np.float64(table[e & mask])
                for b in range(nb):
                    out[r, b] += w * xt[col, b]


_spmm_kernel = njit(parallel=True, cache=True)(_spmm)


@njit(parallel=True, cache=True)
def _densify_kernel(row_ptr, ent, shift, mask, table, out):  # pragma: no cover - compiled
    for r in prange(row_ptr.size - 1):
        col = -1
        for j in range(row_ptr[r], row_ptr[r + 1]):
            e = np.int64(ent[j])
            col += (e >> shift) + 1
            out[r, col] = table[e & mask]


class CompressedMatrix:
    """A (rows, cols) matrix as rows of packed entries: each a (gap, code) pair in 8, 16 or 32
    bits, the width chosen per matrix to take the fewest bytes (EIE's encoding: a relative
    column index and a codebook index per kept weight, fillers where a gap overflows)."""

    def __init__(self, shape, row_ptr, ent, code_bits, table):
        self.shape = tuple(shape)
        self.row_ptr, self.ent, self.code_bits, self.table = row_ptr, ent, code_bits, table
        self.mask = (1 << code_bits) - 1

    @classmethod
    def from_positions(
        cls, shape: tuple[int, int], positions: np.ndarray, symbols: np.ndarray, codebook
    ) -> CompressedMatrix:
        """From flat row-major positions of the kept weights and their cluster symbols (1..k;
        symbol-0 fillers are dropped), as the `shared` codec stores them."""
        rows, ncols = shape
        keep = symbols > 0
        positions, symbols = positions[keep], symbols[keep]
        row, col = positions // ncols, positions % ncols
        prev = np.empty_like(col)
        prev[1:] = col[:-1]
        new_row = np.ones(len(col), dtype=bool)
        new_row[1:] = row[1:] != row[:-1]
        prev[new_row] = -1
        d = col - prev - 1  # zeros skipped within the row
        code_bits = max(1, int(len(codebook)).bit_length())  # codes 1..k, 0 = filler
        best = None
        for width, dtype in ((8, np.uint8), (16, np.uint16), (32, np.uint32)):
            gap_bits = width - code_bits
            if gap_bits < 1:
                continue
            span = 1 << min(gap_bits, 16)
            n = len(d) + int((d // span).sum())
            if best is None or n * width < best[0]:
                best = (n * width, min(gap_bits, 16), dtype)
        _, gap_bits, dtype = best
        gaps, is_real = encode_gaps(d, gap_bits)
        codes = np.zeros(len(gaps), dtype=np.int64)
        codes[is_real] = symbols
        entry_row = np.repeat(row, d // (1 << gap_bits) + 1)
        row_ptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(entry_row, minlength=rows), out=row_ptr[1:])
        ent = ((gaps << code_bits) | codes).astype(dtype)
        table = np.concatenate([[0.0], np.asarray(codebook, dtype=np.float64)]).astype(np.float32)
        return cls(shape, row_ptr.astype(np.int32), ent, code_bits, table)

    @classmethod
    def from_dense(cls, w: torch.Tensor) -> CompressedMatrix:
        """From a dense 2-D weight whose non-zeros take at most 65,536 distinct values."""
        flat = w.detach().cpu().reshape(-1).numpy()
        positions = np.flatnonzero(flat)
        codebook, symbols = np.unique(flat[positions], return_inverse=True)
        if len(codebook) > 1 << 16:
            raise ValueError(f"{len(codebook)} distinct values: not a weight-shared matrix")
        return cls.from_positions(tuple(w.shape), positions, symbols.astype(np.int64) + 1, codebook)

    @property
    def nbytes(self) -> int:
        """Resident bytes of the compressed representation."""
        return self.row_ptr.nbytes + self.ent.nbytes + self.table.nbytes

    def dense(self) -> torch.Tensor:
        out = np.zeros(self.shape, dtype=np.float32)
        _densify_kernel(self.row_ptr, self.ent, self.code_bits, self.mask, self.table, out)
        return torch.from_numpy(out)

    def matmul_t(self, x: torch.Tensor) -> torch.Tensor:
        """`x @ W.T` for x of shape (B, cols): (B, rows), float32."""
        xt = np.ascontiguousarray(x.detach().to(torch.float32).cpu().numpy().T)  # (cols, B)
        out = np.zeros((self.shape[0], xt.shape[1]), dtype=np.float64)
        _spmm_kernel(self.row_ptr, self.ent, self.code_bits, self.mask, self.table, xt, out)
        return torch.from_numpy(out.T.astype(np.float32))


class CompressedLinear(nn.Module):
    """A Linear layer executed from its compressed weight (inference only)."""

    def __init__(self, weight: CompressedMatrix, bias: torch.Tensor | None):
        super().__init__()
        self.weight_c = weight
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.plan: dict[int, str] = {}  # batch size -> "compressed" | "dense"; default compressed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        y = _matmul(self.weight_c, x2, self.plan.get(x2.shape[0], "compressed"))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, compressed"


class CompressedConv2d(nn.Module):
    """A Conv2d (groups=1, zero padding) executed as im2col + the compressed kernel."""

    def __init__(self, conv: nn.Conv2d, weight: CompressedMatrix, bias: torch.Tensor | None):
        super().__init__()
        self.weight_c = weight
        self.out_channels, self.kernel_size = conv.out_channels, conv.kernel_size
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.plan: dict[int, str] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        b, _, h, w = x.shape
        cols = nn.functional.unfold(
            x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride
        )  # (B, C*kh*kw, L)
        oh, ow = (
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip(
                (h, w), self.padding, self.dilation, self.kernel_size, self.stride
            )
        )
        flat = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (B*L, C*kh*kw)
        y = _matmul(self.weight_c, flat, self.plan.get(b, "compressed"))  # (B*L, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(b, oh * ow, -1).transpose(1, 2).reshape(b, -1, oh, ow).to(x.dtype)


def _matmul(wc: CompressedMatrix, x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "dense":
        return x.to(torch.float32) @ wc.dense().T
    return wc.matmul_t(x)


def supports(module: nn.Module) -> bool:
    """Whether `module` can run from a compressed weight: Linear, or Conv2d with groups=1,
    zero padding given as numbers."""
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)
    )


def compressed_layer(module: nn.Module, weight: CompressedMatrix, bias) -> nn.Module:
    """The compressed replacement of a `supports`-ed `module`."""
    if isinstance(module, nn.Linear):
        return CompressedLinear(weight, bias)
    return CompressedConv2d(module, weight, bias)


def matrix_from_record(rec) -> CompressedMatrix:
    """A `CompressedMatrix` straight from a `shared` record's streams (no dense weight).

    The entries pass the same checks as when decoding to dense (positions inside the tensor,
    symbols inside the codebook), so the unchecked kernel never reads out of bounds."""
    numel = int(np.prod(rec.shape))
    try:
        positions, symbols = codec.shared_entries(rec.params, rec.parts, numel)
    except FormatError as e:
        raise FormatError(f"tensor {rec.name!r}: {e}") from None
    codebook = np.frombuffer(rec.parts[0], dtype="<f4")
    rows = rec.shape[0]
    return CompressedMatrix.from_positions(
        (rows, numel // max(1, rows)), positions, symbols, codebook
    )


def autotune_(
    model: nn.Module, example: torch.Tensor, batch_sizes=(1, 8, 64), repeats: int = 5
) -> dict[str, dict[int, str]]:
    """Choose, per compressed layer and batch size, the faster of "compressed" and "dense"
    by timing the layer on inputs like those it sees in `model(example)`. Returns the plans."""
    inputs: dict[nn.Module, torch.Tensor] = {}
    layers = {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, (CompressedLinear, CompressedConv2d))
    }
    hooks = [
        m.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m, a[0][:1]))
        for m in layers.values()
    ]
    with torch.no_grad():
        model(example[:1])
    for h in hooks:
        h.remove()
    plans = {}
    for name, m in layers.items():
        for bs in batch_sizes:
            x = inputs[m].expand(bs, *inputs[m].shape[1:]).contiguous()
            times = {}
            for mode in ("compressed", "dense"):
                m.plan[bs] = mode
                with torch.no_grad():
                    m(x)
                    t0 = time.perf_counter()
                    for _ in range(repeats):
                        m(x)
                times[mode] = time.perf_counter() - t0
            m.plan[bs] = min(times, key=times.get)
        plans[name] = dict(m.plan)
    return plans


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_file(path, batch_sizes=(1, 8), repeats: int = 20) -> list[dict]:
    """Per weight-shared layer of a file: the latency of `x @ W.T` dense (torch) and
    compressed (ours) at each batch size, and the resident bytes of each. Conv weights are
    timed as their (out, in*kh*kw) matrix, i.e. per output position."""
    from .fileformat import read_file

    rows = []
    for rec in read_file(path)[0]:
        if rec.codec != "shared" or len(rec.shape) < 2:
            continue
        m = matrix_from_record(rec)
        w = m.dense()
        row = {
            "tensor": rec.name,
            "shape": list(m.shape),
            "dense_bytes": 4 * w.numel(),
            "compressed_bytes": m.nbytes,
            "kept": float((w != 0).float().mean()),
        }
        for b in batch_sizes:
            x = torch.randn(b, m.shape[1])
            with torch.no_grad():
                row[f"dense_ms_b{b}"] = 1e3 * median_seconds(
                    lambda x=x, w=w: nn.functional.linear(x, w), repeats
                )
            row[f"compressed_ms_b{b}"] = 1e3 * median_seconds(
                lambda x=x, m=m: m.matmul_t(x), repeats
            )
        rows.append(row)
    return rows
