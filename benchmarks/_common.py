"""What the benchmark scripts share (they run as `python benchmarks/NAME.py`)."""

import os
from pathlib import Path

#: A development default for --data: $DEEPCOMPRESS_DATA, else the ../shared/data/mnist beside
#: the repository (the library itself has no default: users point at their copy).
DEV_MNIST = os.environ.get("DEEPCOMPRESS_DATA") or str(
    Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
)
