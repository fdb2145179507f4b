import gzip
import struct

import numpy as np
import pytest
import torch

from deepcompress.pipeline import data
from deepcompress.pipeline.train import random_shift


def write_idx(path, arr, gz=False):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def fake_mnist(folder, n_train=12, n_test=5, gz=True):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n_train, 28, 28)), gz)
    write_idx(folder / f"train-labels-idx1-ubyte{sfx}", np.arange(n_train) % 10, gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n_test, 28, 28)), gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{sfx}", np.arange(n_test) % 10, gz)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_and_normalisation(tmp_path, gz):
    fake_mnist(tmp_path, gz=gz)
    ds = data.load_mnist(tmp_path, val_size=4)
    assert ds.train.x.shape == (8, 1, 28, 28) and len(ds.val) == 4 and len(ds.test) == 5
    raw = data.read_idx(tmp_path / f"train-images-idx3-ubyte{'.gz' if gz else ''}")
    expected = (torch.from_numpy(raw[:8].astype(np.float32)) / 255 - 0.1307) / 0.3081
    assert torch.allclose(ds.train.x[:, 0], expected)
    assert ds.val.y.tolist() == [8, 9, 0, 1]


def test_missing_file_is_named(tmp_path, monkeypatch):
    fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_mnist(tmp_path / "nowhere")
    monkeypatch.setenv("DEEPCOMPRESS_DATA", str(tmp_path / "env"))
    assert data.mnist_dir() == tmp_path / "env"
    assert data.mnist_dir(tmp_path) == tmp_path


def test_truncated_idx_is_refused(tmp_path):
    p = tmp_path / "x"
    write_idx(p, np.zeros((3, 4, 4)))
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(ValueError, match="expected 48 bytes"):
        data.read_idx(p)


def test_real_mnist_is_canonical(mnist_dir):
    ds = data.load_mnist(mnist_dir)
    assert len(ds.train) == 55000 and len(ds.val) == 5000 and len(ds.test) == 10000
    assert ds.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert ds.test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_digits_splits_are_disjoint_and_offline():
    ds = data.load_digits()
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert ds.train.x.shape[1:] == (1, 8, 8)


def test_random_shift_against_roll():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    gen = torch.Generator().manual_seed(3)
    out = random_shift(x, 2, -1.0, gen)
    gen = torch.Generator().manual_seed(3)
    oy, ox = torch.randint(0, 5, (2, 2), generator=gen)
    for b in range(2):
        dy, dx = int(oy[b]) - 2, int(ox[b]) - 2  # output[i, j] = input[i + dy, j + dx]
        for i in range(6):
            for j in range(6):
                si, sj = i + dy, j + dx
                want = x[b, 0, si, sj] if 0 <= si < 6 and 0 <= sj < 6 else -1.0
                assert out[b, 0, i, j] == want
