import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MNIST = Path(os.environ.get("DEEPCOMPRESS_DATA", ROOT.parent / "shared" / "data" / "mnist"))

torch.set_num_threads(2)


@pytest.fixture
def mnist_dir() -> Path:
    if not (MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST not found at {MNIST}")
    return MNIST
