"""Device requests: checked before any work, and the model's device found."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepcompress import devices


def test_resolve_gives_a_usable_device_or_a_clear_error():
    assert devices.resolve(None) is None
    assert devices.resolve("cpu") == torch.device("cpu")
    assert devices.resolve(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        devices.resolve("gpu0")
    missing = f"cuda:{torch.cuda.device_count() + 3}"  # past the GPUs there are (or no CUDA)
    with pytest.raises(ValueError, match=f"device '{missing}' is not available here"):
        devices.resolve(missing)


def test_of_is_the_device_of_the_parameters_or_buffers():
    assert devices.of(nn.Linear(2, 2)) == torch.device("cpu")
    assert devices.of(nn.Linear(2, 2).to("meta")).type == "meta"
    assert devices.of(nn.BatchNorm1d(3, affine=False).to("meta")).type == "meta"
    assert devices.of(nn.ReLU()) == torch.device("cpu")
