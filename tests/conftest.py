import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
#: MNIST for the tests: $DEEPCOMPRESS_DATA, else the development layout's ../shared/data/mnist.
MNIST = Path(os.environ.get("DEEPCOMPRESS_DATA") or ROOT.parent / "shared" / "data" / "mnist")
#: Set by .ci/run: a test that needs MNIST fails instead of skipping when it is missing.
REQUIRE_DATA = os.environ.get("DEEPCOMPRESS_REQUIRE_DATA") == "1"

torch.set_num_threads(2)

_skipped_for_data: list[str] = []


@pytest.fixture
def mnist_dir(request) -> Path:
    if not (MNIST / "train-images-idx3-ubyte.gz").exists():
        message = f"MNIST not found at {MNIST}"
        if REQUIRE_DATA:
            pytest.fail(f"{message} (DEEPCOMPRESS_REQUIRE_DATA=1: CI must run the MNIST tests)")
        _skipped_for_data.append(request.node.nodeid)
        pytest.skip(message)
    return MNIST


def pytest_terminal_summary(terminalreporter):
    if _skipped_for_data:
        terminalreporter.write_line(
            f"{len(_skipped_for_data)} tests skipped for want of MNIST (looked in {MNIST}): "
            + ", ".join(n.rpartition("::")[2] for n in _skipped_for_data)
            + "; point DEEPCOMPRESS_DATA at a folder holding the four standard IDX files "
            "to run them",
            yellow=True,
        )
