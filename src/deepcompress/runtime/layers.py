"""The compressed layers themselves: `CompressedLinear` and `CompressedConv2d`, which compute
what nn.Linear and nn.Conv2d do from a `CompressedMatrix` (see `modules` for how they are made,
planned and timed). Inference only: a backward through one raises (`_NoBackward`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .layouts import CompressedMatrix


class _NoDenseWeight:
    """A clear error for code that reads `.weight` of a compressed layer (a parent module
    calling `F.linear(x, self.fc.weight)`), instead of nn.Module's bare AttributeError."""

    def __getattr__(self, name: str):
        if name == "weight":
            raise AttributeError(
                f"{type(self).__name__} keeps its weight compressed (.weight_c; .weight_c.dense() "
                "builds it): a module that reads a layer's .weight cannot run it compressed; "
                "load with runtime='dense'"
            )
        return super().__getattr__(name)


class _NoBackward(torch.autograd.Function):
    """Passes a compressed layer's output on, and refuses to carry a gradient back through it:
    the layers are inference-only, and a silently cut graph would leave the layers before them
    untrained (their .grad None) with no word."""

    @staticmethod
    def forward(ctx, x, y, kind):
        ctx.kind = kind
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError(
            f"{ctx.kind} runs from its compressed weight and is inference-only: no gradient "
            "flows back through it to its input. Run it under torch.no_grad() or "
            "torch.inference_mode(), freeze what comes before it (requires_grad_(False)), or "
            "load the model with the default runtime to train it"
        )


def _inference_only(x: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """y, tied to x's graph by `_NoBackward` where x needs a gradient (so that a backward
    through the layer fails loudly), else y as it is."""
    if x.requires_grad and torch.is_grad_enabled():
        return _NoBackward.apply(x, y, kind)
    return y


def _check_input(x: torch.Tensor, kind: str, least: int) -> None:
    """Raises RuntimeError, as torch's layers do, for an input of fewer than `least`
    dimensions, or not floating-point (integers, bool and complex: torch's layers refuse them
    against a float weight; here they would be rounded back to the input's dtype)."""
    if not x.is_floating_point():
        raise RuntimeError(
            f"{kind} takes floating-point inputs (as torch's layer with a float weight), "
            f"got {x.dtype}"
        )
    if x.dim() < least:
        raise RuntimeError(
            f"{kind} needs an input of at least {least} dimension(s), got a {x.dim()}-D one"
        )


class CompressedLinear(_NoDenseWeight, nn.Module):
    """A Linear layer executed from its compressed weight (inference only)."""

    def __init__(self, weight: CompressedMatrix, bias: torch.Tensor | None):
        super().__init__()
        self.weight_c = weight
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        # batch size (x's first dimension; 1 for a 1-D x) -> "compressed" | "dense", as
        # autotune_ plans it; default compressed
        self.plan: dict[int, str] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in_features), as nn.Linear takes it (an empty batch too) -> (..., out_features)
        in x's dtype (computed in float32). Inference only: a backward through it raises.

        Raises:
            RuntimeError: x is 0-D or not floating-point (as nn.Linear).
            ValueError: the last dimension is not in_features (RuntimeError in "dense" mode).
        """
        # each torch call costs about a microsecond: skip those a 2-D float32 input needs not
        # (the sizes spelled out: reshape(-1, 0) cannot tell how many rows an empty x has)
        dim = x.dim()
        if dim != 2 or x.dtype != torch.float32:
            _check_input(x, "CompressedLinear", 1)
        x2 = x if dim == 2 else x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
        y = _matmul(self.weight_c, x2, self.plan.get(x.shape[0] if dim > 1 else 1, "compressed"))
        if self.bias is not None:
            y.add_(self.bias)  # y is a new tensor
        if dim != 2:
            y = y.reshape(*x.shape[:-1], self.out_features)
        y = y if y.dtype == x.dtype else y.to(x.dtype)
        return _inference_only(x, y, "CompressedLinear")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, compressed"


class CompressedConv2d(_NoDenseWeight, nn.Module):
    """A Conv2d (groups=1, zero padding) executed as im2col + the compressed kernel, or, where
    `plan` says "dense" for a batch size (`autotune_`), as torch's conv on the weight built from
    the codes for that call."""

    def __init__(self, conv: nn.Conv2d, weight: CompressedMatrix, bias: torch.Tensor | None):
        super().__init__()
        self.weight_c = weight
        self.out_channels, self.kernel_size = conv.out_channels, conv.kernel_size
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.plan: dict[int, str] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), or (C, H, W) unbatched, as nn.Conv2d takes it (B = 0 too) ->
        (B, out_channels, OH, OW), or (out_channels, OH, OW), in x's dtype.

        Inference only: a backward through it raises.

        Raises:
            RuntimeError: x is neither 3-D nor 4-D, not floating-point, or smaller than the
                kernel (as nn.Conv2d).
            ValueError: x's channels do not fit the weight.
        """
        _check_input(x, "CompressedConv2d", 3)
        if x.dim() == 3:
            return self.forward(x.unsqueeze(0)).squeeze(0)
        if x.dim() != 4:
            raise RuntimeError(
                f"expected 3-D (unbatched) or 4-D (batched) input to conv2d, got {tuple(x.shape)}"
            )
        b, _, h, w = x.shape
        if self.plan.get(b) == "dense":  # torch's own conv on the weight the codes make
            weight = self.weight_c.dense().reshape(self.out_channels, -1, *self.kernel_size)
            y = nn.functional.conv2d(
                x.float(), weight, self.bias, self.stride, self.padding, self.dilation
            )
            return _inference_only(x, y.to(x.dtype), "CompressedConv2d")
        cols = nn.functional.unfold(
            x, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride
        )  # (B, C*kh*kw, L)
        oh, ow = (
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip(
                (h, w), self.padding, self.dilation, self.kernel_size, self.stride
            )
        )
        # every size spelled out: a -1 cannot be inferred when B = 0
        flat = cols.transpose(1, 2).reshape(b * oh * ow, cols.shape[1])  # (B*L, C*kh*kw)
        y = _matmul(self.weight_c, flat, self.plan.get(b, "compressed"))  # (B*L, out)
        if self.bias is not None:
            y = y + self.bias
        out = self.out_channels
        y = y.reshape(b, oh * ow, out).transpose(1, 2).reshape(b, out, oh, ow).to(x.dtype)
        return _inference_only(x, y, "CompressedConv2d")


def _matmul(wc: CompressedMatrix, x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "dense":
        return x.to(torch.float32) @ wc.dense().T
    return wc.matmul_t(x)
