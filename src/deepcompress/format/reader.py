"""The one reader: a `.dcz` file (a path or its bytes) to checked records, meta and ties.

Every check of the container (`container.from_bytes`) and of the header's `meta["tied"]` is
made here, before anything is decoded; `load`, `load_bytes`, `inspect`, `bench` and the
compressed runtime all read through `read`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..coding import codec
from ..errors import FormatError
from .container import DEFAULT_MAX_ELEMENTS, Record, from_bytes

#: A file is decoded on several threads when it holds two tensors or more of this many elements.
PARALLEL_MIN = 1 << 16


@dataclass
class File:
    """A checked file: its records in the file's order, its header meta, and its tied names
    (`{alias: stored name}`, checked)."""

    records: list[Record]
    meta: dict
    tied: dict[str, str]

    def names(self) -> dict[str, Record]:
        """Every name of the file, stored tensors first, then the aliases, to its record."""
        by_name = {r.name: r for r in self.records}
        return {**by_name, **{a: by_name[t] for a, t in self.tied.items()}}

    def decode(self, threads: int | None = None) -> dict[str, torch.Tensor]:
        """`{name: dense tensor}`: the stored tensors, then each alias as its own copy (so
        that the dict can go anywhere a state dict goes: safetensors refuses shared memory).

        Tensors are decoded side by side on `threads` threads (None: torch's thread count,
        which OMP_NUM_THREADS sets; 1: one after the other), the largest first: the decoders
        are C loops called through ctypes and numpy/torch passes, all of which release the
        GIL, and each tensor's stream is independent of the others'."""
        threads = torch.get_num_threads() if threads is None else max(1, int(threads))
        big = [r for r in self.records if r.numel >= PARALLEL_MIN]
        if threads > 1 and len(big) > 1:
            with ThreadPoolExecutor(min(threads, len(big))) as pool:
                order = sorted(self.records, key=lambda r: r.numel, reverse=True)
                futures = {r.name: pool.submit(codec.decode_record, r) for r in order}
                state = {r.name: futures[r.name].result() for r in self.records}
        else:
            state = {rec.name: codec.decode_record(rec) for rec in self.records}
        for alias, target in self.tied.items():
            state[alias] = state[target].clone()
        return state


def read(source: str | os.PathLike | bytes, max_elements: int = DEFAULT_MAX_ELEMENTS) -> File:
    """Read and check a whole file, given by path or as its bytes.

    Raises:
        FileNotFoundError: no such file.
        FormatError: the file is damaged or not a deepcompress file.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {str(path)!r}")
        data = path.read_bytes()
    records, meta = from_bytes(data, max_elements)
    return File(records, meta, tied_names(meta, records, max_elements))


def tied_names(meta: dict, records: list[Record], max_elements: int = DEFAULT_MAX_ELEMENTS):
    """The checked `meta["tied"]` of a file: `{alias: stored name}` ({} when absent).

    The header is untrusted: `tied` must be an object whose every key is a name (a non-empty
    string of at most 1024 characters) that no stored tensor has, and whose every value is the
    name of a stored tensor (never another alias); an alias takes that tensor's shape and
    dtype. The elements of the stored tensors plus those of every alias count against
    `max_elements` (a decoded alias is a copy).

    Raises:
        FormatError: any of these does not hold.
    """
    tied = meta.get("tied", {})
    if not isinstance(tied, dict):
        raise FormatError("header meta 'tied' must be an object {alias: stored tensor name}")
    shapes = {r.name: r.shape for r in records}
    elements = sum(r.numel for r in records)
    for alias, target in tied.items():
        if not alias or len(alias) > 1024:
            raise FormatError("header meta 'tied': an alias must be a name of 1..1024 chars")
        if alias in shapes:
            raise FormatError(f"header meta 'tied': {alias!r} is also a stored tensor")
        if not isinstance(target, str) or target not in shapes:
            raise FormatError(
                f"header meta 'tied': {alias!r} is tied to {target!r}, which is not a stored tensor"
            )
        elements += int(np.prod(shapes[target], dtype=object))
        if elements > max_elements:
            raise FormatError(
                f"tied tensor {alias!r}: the file declares over {max_elements} elements in "
                f"all, its aliases included (the max_elements limit)"
            )
    return tied
