"""Data: MNIST from its standard IDX files, and scikit-learn's bundled 8x8 digits.

MNIST is looked for in the folder given by `--data`, else `$DEEPCOMPRESS_DATA`; files may be
gzip-compressed (`*.gz`) or not.
Nothing is downloaded: `download_mnist` is there for users with a network.
"""

from __future__ import annotations

import gzip
import os
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._optional import require

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
#: Images held out from the end of the training set to choose hyperparameters on.
VALIDATION_SIZE = 5000


@dataclass
class Split:
    """Inputs (float32, normalised, (N, 1, H, W)) and int64 labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split


def mnist_dir(data: str | os.PathLike | None = None) -> Path:
    """Where to read MNIST from: `data`, else $DEEPCOMPRESS_DATA.

    Raises:
        FileNotFoundError: neither is given (saying how to give one).
    """
    if data is not None:
        return Path(data)
    if os.environ.get("DEEPCOMPRESS_DATA"):
        return Path(os.environ["DEEPCOMPRESS_DATA"])
    raise FileNotFoundError(
        "no MNIST folder given: pass --data DIR (or data=...) or set DEEPCOMPRESS_DATA to a "
        "folder holding the four standard IDX files"
    )


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"MNIST file {stem}[.gz] not found in {str(folder)!r}; point --data or "
        f"DEEPCOMPRESS_DATA at a folder holding the four standard IDX files"
    )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into a numpy array.

    Raises:
        ValueError: the file is not an IDX file of unsigned bytes, or is truncated.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} bytes of data, got {body.size}")
    return body.reshape(dims)


def _normalise(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    return ((x - MNIST_MEAN) / MNIST_STD).unsqueeze(1)  # (N, 1, 28, 28)


def load_mnist(data: str | os.PathLike | None = None, val_size: int = VALIDATION_SIZE) -> Dataset:
    """MNIST as train (first 60000 - val_size), validation (last val_size training images)
    and test splits, normalised as pixel/255 then (x - 0.1307) / 0.3081.

    Raises:
        FileNotFoundError: naming the missing file and how to point at a copy.
    """
    folder = mnist_dir(data)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"MNIST folder {str(folder)!r} does not exist; point --data or DEEPCOMPRESS_DATA "
            f"at a folder holding the four standard IDX files"
        )
    arrays = {k: read_idx(_find(folder, stem)) for k, stem in MNIST_FILES.items()}
    xtr, ytr = (
        _normalise(arrays["train_images"]),
        torch.from_numpy(arrays["train_labels"].astype(np.int64)),
    )
    n = len(ytr) - val_size
    return Dataset(
        train=Split(xtr[:n], ytr[:n]),
        val=Split(xtr[n:], ytr[n:]),
        test=Split(
            _normalise(arrays["test_images"]),
            torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        ),
    )


def download_mnist(folder: str | os.PathLike, base_url: str = MNIST_URL) -> Path:
    """Download the four MNIST files (for users with a network; tests never call this)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stem in MNIST_FILES.values():
        target = folder / f"{stem}.gz"
        if not target.exists():
            tmp = target.with_suffix(".part")
            urllib.request.urlretrieve(base_url + f"{stem}.gz", tmp)  # noqa: S310
            tmp.replace(target)
    return folder


def load_digits(seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, offline): a 60/20/20 split, stratified,
    pixels scaled to [0, 1] and standardised with the training split's mean and std."""
    sk_digits = require("sklearn.datasets", "demo").load_digits
    train_test_split = require("sklearn.model_selection", "demo").train_test_split

    d = sk_digits()
    x, y = d.images.astype(np.float32) / 16.0, d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    xtr, xva, ytr, yva = train_test_split(xtr, ytr, test_size=0.25, random_state=seed, stratify=ytr)
    mean, std = xtr.mean(), xtr.std()

    def split(a, b):
        return Split(torch.from_numpy((a - mean) / std).unsqueeze(1), torch.from_numpy(b))

    return Dataset(split(xtr, ytr), split(xva, yva), split(xte, yte))
