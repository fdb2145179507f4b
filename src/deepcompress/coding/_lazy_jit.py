"""`njit`, deferred: numba is imported when a kernel is first called, not when its module is.

A `load` decodes with the C decoders (`_native`) and never calls a numba kernel, so importing
numba there (about 0.2 s) and setting it up (about 0.4 s more on its first call) would be pure
cost. The coder modules define their kernels with this `njit` instead of numba's: on the first
call of any of them, every deferred kernel of that module is handed to numba's `njit` with the
same options and put back into the module under its name, so that kernels calling each other
see real numba dispatchers when numba compiles them (or loads them from its cache).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any


class _Deferred:
    __slots__ = ("fn", "options", "compiled", "__doc__")

    def __init__(self, fn: Callable, options: dict[str, Any]):
        self.fn, self.options, self.compiled = fn, options, None
        self.__doc__ = fn.__doc__

    def __call__(self, *args):
        if self.compiled is None:
            _bind(self.fn.__module__)
        return self.compiled(*args)


def njit(**options) -> Callable[[Callable], _Deferred]:
    """numba's `njit(**options)`, applied at the first call of a kernel of the module."""
    return lambda fn: _Deferred(fn, options)


_LOCK = threading.Lock()  # a file's tensors may be decoded on several threads at once


def _bind(module_name: str) -> None:
    from numba import njit as numba_njit

    module = sys.modules[module_name]
    with _LOCK:
        for name, obj in list(vars(module).items()):
            if isinstance(obj, _Deferred) and obj.compiled is None:
                obj.compiled = numba_njit(**obj.options)(obj.fn)
                setattr(module, name, obj.compiled)
