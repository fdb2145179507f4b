"""The one atomic writer behind every file deepcompress writes (issue 15: three writers used
to rename without fsync)."""

import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import deepcompress as dc
from deepcompress.checkpoint import save_checkpoint
from deepcompress.format import writer
from deepcompress.format.writer import atomic_path, write_atomic


@pytest.fixture
def synced(monkeypatch):
    """The paths fsync'ed before each rename, in order."""
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    pending: list[int] = []

    def fsync(fd):
        pending.append(fd)
        return real_fsync(fd)

    def replace(src, dst):
        assert pending, f"{dst} renamed into place without an fsync"
        pending.clear()
        calls.append(os.path.basename(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(writer.os, "fsync", fsync)
    monkeypatch.setattr(writer.os, "replace", replace)
    return calls


def test_every_writer_fsyncs_before_renaming(tmp_path, synced, monkeypatch):
    net = nn.Sequential(nn.Linear(6, 4))
    dc.prune_(net, sparsity=0.5)
    dc.save(net, tmp_path / "m.dcz")
    save_checkpoint(net, tmp_path / "m.ckpt", {"round": 0})
    dc.encode_state_dict({"w": torch.randn(4, 4)}, tmp_path / "e.dcz")
    src = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(3, 3)}, str(src))
    from deepcompress import cli

    assert cli.main(["decode", str(tmp_path / "m.dcz"), "-o", str(tmp_path / "d.safetensors")]) == 0
    from deepcompress.pipeline import reproduce
    from deepcompress.pipeline.data import Dataset, Split
    from deepcompress.pipeline.recipes import RECIPES

    split = Split(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    recipe = RECIPES["digits-mlp"].scaled(0.01)
    reproduce.reference_model("digits-mlp", Dataset(split, split, split), recipe,
                              tmp_path / "ref.safetensors", 0, True)  # fmt: skip
    assert synced == ["m.dcz", "m.ckpt", "e.dcz", "d.safetensors", "ref.safetensors"]


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_atomic(tmp_path / "no" / "such" / "x", b"")


def test_records_are_streamed_to_the_file_byte_for_byte(tmp_path):
    """`write_records` writes the file chunk by chunk (never joined in memory): the result
    must be exactly `to_bytes` of the same records and header, and `file_size` its size."""
    from deepcompress.format.container import from_bytes, to_bytes
    from deepcompress.format.reader import read
    from deepcompress.format.writer import file_size, write_records
    from deepcompress.testing import sample_file

    records = from_bytes(sample_file())[0]
    assert len(records) > 3 and all(len(r.parts) for r in records)
    meta = {"note": "x" * 50}
    tied = {"alias": records[0].name}
    size = write_records(records, tmp_path / "m.dcz", meta, tied)
    data = (tmp_path / "m.dcz").read_bytes()
    header = {"deepcompress": dc.__version__, **meta, "tied": tied}
    assert data == to_bytes(records, header)
    assert size == len(data) == file_size(records, meta, tied)
    assert read(tmp_path / "m.dcz").tied == tied


def test_a_folder_is_never_the_target(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        write_atomic(tmp_path / "d", b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and not list((tmp_path / "d").iterdir())
