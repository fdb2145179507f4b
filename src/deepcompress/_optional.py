"""Optional dependencies: imported only by the features that need them, with a one-line error
naming the extra to install (`pip install 'deepcompress[plot]'`) where one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

#: extra -> what it is for; the extras are declared in pyproject.toml.
EXTRAS = {
    "plot": "figures and plots (matplotlib)",
    "config": "YAML settings files (pyyaml)",
    "demo": "the offline demo's bundled digits (scikit-learn)",
}


class MissingExtra(ImportError):
    """A feature needs a package of an optional extra that is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise `MissingExtra` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(
            f"{EXTRAS[extra]} need the '{extra}' extra: pip install 'deepcompress[{extra}]'"
        ) from None


def pyplot():
    """matplotlib's pyplot, drawing off-screen (Agg)."""
    matplotlib = require("matplotlib", "plot")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")
