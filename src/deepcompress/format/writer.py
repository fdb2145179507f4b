"""Writing files atomically: the one writer behind every file deepcompress writes.

A crash, a full disk or a kill never leaves a partial file under the target name, and a file
that was renamed into place is on disk: the data goes to a temporary file in the same
folder, is flushed and fsync'ed, renamed over the target, and the folder is fsync'ed so the
rename itself survives a power cut. `write_atomic` takes bytes, or a list of them written in
turn (a `.dcz` file is never joined in memory); `atomic_path` hands a temporary path to a
library that writes files by name (safetensors), then does the rest.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._version import __version__
from .container import Record, to_chunks


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write; on leaving the block without an error it is
    fsync'ed and renamed to `path` (and the folder fsync'ed); on an error it is removed.

    Raises:
        FileNotFoundError: the folder of `path` does not exist.
        IsADirectoryError: `path` is a folder.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder: give the name of the file to write")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp makes it private, and a writer may make the file anew: give it normal modes
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def write_atomic(path: str | os.PathLike, data: bytes | list[bytes]) -> None:
    """Write `data` (bytes, or a list of byte strings written one after another) to `path`
    atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
            f.write(chunk)


def file_chunks(records: list[Record], meta: dict, tied: dict[str, str]) -> list[bytes]:
    """A whole `.dcz` file as the byte strings it is made of (`container.to_chunks`):
    `records`, and a header `meta` made of the writer's version, `meta` and (when there are
    aliases) `tied`."""
    header = {"deepcompress": __version__, **meta}
    if tied:
        header["tied"] = tied
    return to_chunks(records, header)


def file_size(records: list[Record], meta: dict, tied: dict[str, str]) -> int:
    """The size in bytes of the file of `file_chunks`, with no copy of its data."""
    return sum(len(c) for c in file_chunks(records, meta, tied))


def write_records(records: list[Record], path, meta: dict, tied: dict[str, str]) -> int:
    """Write the file of `file_chunks(records, meta, tied)` atomically to `path`, chunk by
    chunk (no copy of the data in memory); returns its size."""
    chunks = file_chunks(records, meta, tied)
    write_atomic(path, chunks)
    return sum(len(c) for c in chunks)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform that cannot open folders (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
