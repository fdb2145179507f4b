"""What the benchmark scripts share (they run as `python benchmarks/NAME.py`)."""

import os
import platform
from pathlib import Path

#: A development default for --data: $DEEPCOMPRESS_DATA, else the ../shared/data/mnist beside
#: the repository (the library itself has no default: users point at their copy).
DEV_MNIST = os.environ.get("DEEPCOMPRESS_DATA") or str(
    Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
)


def cpu_name() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (the platform's processor elsewhere)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
