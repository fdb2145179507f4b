"""deepcompress: Deep Compression (Han, Mao, Dally, ICLR 2016) for PyTorch.

import deepcompress as dc
dc.prune_(model, sparsity=0.9)        # stage 1: magnitude pruning, masks held in training
dc.quantize_(model)                   # stage 2: k-means weight sharing, trainable codebooks
dc.save(model, "model.dcz")           # stage 3: sparse index + entropy coding, one file
state = dc.load("model.dcz")          # {name: dense tensor}
dc.encode_state_dict(sd, "m.dcz", sparsity=0.5, bits=6)  # post-training, no retraining
dc.compress(model, train=fit, evaluate=err, out="m.dcz", budget=0.1, lr=0.05)  # all, chosen

The names below are loaded on first use (PEP 562), so `import deepcompress` stays cheap: it
imports neither torch nor numba until a verb needs them.
"""

from __future__ import annotations

import importlib
import importlib.util

from ._version import __version__
from .errors import FormatError

#: public name -> the module that defines it
_EXPORTS = {
    "auto_sparsity": "analysis",
    "compress": "schedule",
    "encode_state_dict": "api",
    "energy_view": "runtime.energy",
    "importance": "importance",
    "kmeans_1d": "sharing",
    "load": "api",
    "load_bytes": "api",
    "magnitude_mask": "pruning",
    "plan": "schedule",
    "plot_sensitivity": "analysis",
    "prune_": "pruning",
    "quantize_": "sharing",
    "save": "api",
    "sensitivity": "analysis",
    "strip_": "parametrizations",
    "threshold_mask": "pruning",
    "warmup": "api",
}

__all__ = ["FormatError", "__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)  # dc.phases.SCHEDULES, as docs say
    raise AttributeError(f"module 'deepcompress' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
