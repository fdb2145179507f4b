"""The paper's energy view of a file: bytes read per batch-1 inference, SRAM or DRAM."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deepcompress as dc
from deepcompress.runtime.energy import DRAM_PJ, SRAM_PJ


def arch():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 36, 300),
        nn.Linear(300, 10),
    )  # fmt: skip


def saved(tmp_path):
    torch.manual_seed(0)
    net = arch()
    dc.prune_(net, sparsity={"3": 0.9, "0": 0.5})
    dc.quantize_(net, bits={"3": 4, "0": 5})  # layer 4 stays dense (stored raw)
    path = tmp_path / "m.dcz"
    dc.save(net, path)
    return net, path


def test_bytes_are_what_the_compressed_runtime_holds_and_the_dense_floats(tmp_path):
    net, path = saved(tmp_path)
    view = dc.energy_view(path)
    plain = arch().state_dict()
    floats = sum(t.numel() for t in plain.values() if t.is_floating_point())
    assert view["dense"]["bytes"] == 4 * floats  # num_batches_tracked (int64) not counted
    run = dc.load(path, model=arch(), runtime="compressed")
    held = {f"{i}.weight": run[i].weight_c.nbytes for i in (0, 3)}
    by_name = {t["tensor"]: t["compressed_bytes"] for t in view["layers"]}
    for name, nbytes in held.items():
        assert by_name[name] == nbytes
    assert by_name["3.weight"] < plain["3.weight"].numel()  # < 1 byte a weight at 10% kept
    assert by_name["4.weight"] == 4 * 3000 and by_name["1.running_var"] == 4 * 8
    assert view["compressed"]["bytes"] == sum(by_name.values())


def test_energy_follows_where_each_model_fits(tmp_path):
    _, path = saved(tmp_path)
    both = dc.energy_view(path)
    d, c = both["dense"]["bytes"], both["compressed"]["bytes"]
    assert both["dense"]["on_chip"] and both["compressed"]["on_chip"]  # 8 MiB holds both
    assert both["dense"]["energy_uj"] == pytest.approx(d / 4 * SRAM_PJ / 1e6)
    split = dc.energy_view(path, on_chip_bytes=(c + d) // 2)  # only the compressed one fits
    assert not split["dense"]["on_chip"] and split["compressed"]["on_chip"]
    assert split["dense"]["energy_uj"] == pytest.approx(d / 4 * DRAM_PJ / 1e6)
    assert split["saving"] == pytest.approx((d / 4 * DRAM_PJ) / (-(-c // 4) * SRAM_PJ))
    assert split["saving"] > 128  # 128x cheaper reads, and fewer of them
    neither = dc.energy_view(path, on_chip_bytes=0)
    assert neither["saving"] == pytest.approx(split["saving"] * SRAM_PJ / DRAM_PJ)
    with pytest.raises(ValueError, match="on_chip_bytes"):
        dc.energy_view(path, on_chip_bytes=-1)


def test_a_file_of_no_weights_and_bad_on_chip_sizes(tmp_path):
    import pytest

    dc.encode_state_dict({}, tmp_path / "none.dcz")
    assert dc.energy_view(tmp_path / "none.dcz")["saving"] == 1.0  # it was inf
    for bad in ("8", 1.5, True):
        with pytest.raises(ValueError, match="on_chip_bytes"):
            dc.energy_view(tmp_path / "none.dcz", on_chip_bytes=bad)
