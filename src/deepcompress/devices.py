"""Which device a model runs on, and a user's device request checked before any work.

Every stage works on the model's own device: masks, codebooks and recalibration batches are
created there or moved there, and the file writer and the coders copy to the CPU what they
read. `compress(device=...)`, `reproduce --device` and the built-in loop only need a request
turned into a `torch.device` that can hold a tensor here, or a clear error.
"""

from __future__ import annotations

import torch
from torch import nn


def resolve(device: str | torch.device | None) -> torch.device | None:
    """`device` as a `torch.device` that this machine can use, or None for None.

    Raises:
        ValueError: an unknown device name, or one this machine does not have (no CUDA build
            or no GPU for "cuda", an index past the devices there are).
    """
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}: {e}") from None
    try:
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError) as e:  # torch raises AssertionError without CUDA
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"device {str(dev)!r} is not available here ({first})") from None
    return dev


def of(model: nn.Module) -> torch.device:
    """The device of `model`'s first parameter or buffer (the CPU for an empty module)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")
