"""`quantize_(quality=..., trainable="weights")`: the weights train through their rounding to the
quality's grid (`Snapped`, straight-through), and the file holds exactly the model trained."""

import copy

import pytest
import torch
from torch import nn

import deepcompress as dc
from deepcompress.checkpoint import restore, save_checkpoint
from deepcompress.format.reader import read
from deepcompress.parametrizations import Snapped


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 6))


def _snapped(quality: float = 2.0, sparsity: float = 0.5) -> nn.Sequential:
    net = _net()
    dc.prune_(net, sparsity=sparsity)
    return dc.quantize_(net, quality=quality, trainable="weights")


def _train(net: nn.Module, steps: int = 30, lr: float = 0.2) -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(128, 24, generator=gen), torch.randn(128, 6, generator=gen)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = (net(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_the_weight_is_each_float_rounded_to_the_nearest_level_of_the_grid():
    """Against a brute-force reference: every kept weight is the grid level nearest to its float
    (searched over all levels), every pruned one zero."""
    net = _snapped()
    _train(net, steps=5)
    plist = net[0].parametrizations.weight
    snap, original = plist[0], plist.original.detach().double()
    assert isinstance(snap, Snapped)
    m = torch.arange(-400, 401, dtype=torch.float64)
    levels = (m * snap.step).float().double()
    nearest = levels[(original.reshape(-1, 1) - m * snap.step).abs().argmin(1)].reshape(
        original.shape
    )
    want = torch.where(snap.mask, nearest, torch.zeros(()))
    assert torch.equal(net[0].weight.detach().double(), want)
    assert not net[0].weight[~snap.mask].any()


def test_the_gradient_passes_straight_through_to_the_kept_floats():
    net = _snapped()
    x = torch.randn(8, 24)
    net(x).sum().backward()
    plist = net[0].parametrizations.weight
    mask = plist[0].mask
    dense = _net()  # the same floats, no rounding: the gradient the rounding is skipped for
    with torch.no_grad():
        dense[0].weight.copy_(net[0].weight)
        dense[2].weight.copy_(net[2].weight)
    dense(x).sum().backward()
    assert torch.allclose(plist.original.grad, torch.where(mask, dense[0].weight.grad, 0.0))
    assert not plist.original.grad[~mask].any()


def test_training_moves_weights_between_levels_and_the_file_holds_the_model_trained(tmp_path):
    net = _snapped()
    before = dc.sharing.shared_parts(net[0]).idx.clone()
    _train(net)
    after = dc.sharing.shared_parts(net[0]).idx
    mask = net[0].parametrizations.weight[0].mask
    assert (before != after)[mask].any()  # centroid fine-tuning can never move a weight
    path = tmp_path / "m.dcz"
    dc.save(net, path)
    records = read(path).names()
    assert records["0.weight"].codec == "shared" and "grid" in records["0.weight"].params
    state = dc.load(path)
    for name in ("0.weight", "2.weight"):
        layer = net[int(name[0])]
        assert torch.equal(state[name], layer.weight.detach())
    x = torch.randn(5, 24)
    assert torch.equal(dc.load(path, model=_net(3))(x), net(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("quality", [2.0, 12.0])  # 12: a grid finer than float16's spacing
def test_a_half_bfloat16_or_double_model_is_saved_as_trained(dtype, quality, tmp_path):
    """The file decodes float32(m * step) cast to the tensor's dtype: what the model computes."""
    net = _net().to(dtype)
    dc.prune_(net, sparsity=0.5)
    dc.quantize_(net, quality=quality, trainable="weights")
    dc.save(net, tmp_path / "m.dcz")
    state = dc.load(tmp_path / "m.dcz")
    for i in (0, 2):
        assert state[f"{i}.weight"].dtype == dtype
        assert torch.equal(state[f"{i}.weight"], net[i].weight.detach())
    shared = _net().to(dtype)
    dc.quantize_(shared, bits=5)  # k-means of bfloat16 values too
    dc.save(shared, tmp_path / "k.dcz")
    assert torch.equal(dc.load(tmp_path / "k.dcz")["0.weight"], shared[0].weight.detach())


def test_a_checkpoint_keeps_the_floats_and_the_grid(tmp_path):
    net = _snapped()
    _train(net, steps=3)
    save_checkpoint(net, tmp_path / "c.ckpt", {})
    back = _net(5)
    restore(back, tmp_path / "c.ckpt")
    for a, b in ((net[0], back[0]), (net[2], back[2])):
        pa, pb = a.parametrizations.weight, b.parametrizations.weight
        assert isinstance(pb[0], Snapped) and pb[0].step == pa[0].step
        assert torch.equal(pb.original, pa.original) and torch.equal(pb[0].mask, pa[0].mask)
    twin = copy.deepcopy(net)
    _train(twin, steps=4)
    _train(back, steps=4)
    assert torch.equal(back[0].weight, twin[0].weight)  # training resumes where it stood


def test_trainable_weights_is_refused_without_a_quality_and_a_snapped_layer_is_final():
    net = _net()
    with pytest.raises(ValueError, match="trainable"):
        dc.quantize_(net, bits=4, trainable="weights")
    with pytest.raises(ValueError, match="trainable"):
        dc.quantize_(net, quality=1, trainable="levels")
    assert not dc.sharing.parametrize.is_parametrized(net[0])  # nothing changed
    dc.quantize_(net, quality=1, trainable="weights")
    with pytest.raises(ValueError, match="already quantized"):
        dc.quantize_(net, quality=1)
    with pytest.raises(ValueError, match="already weight-shared"):
        dc.prune_(net, sparsity=0.5)
    stripped = dc.strip_(copy.deepcopy(net))  # plain weights: the rounded ones
    assert torch.equal(stripped[0].weight, net[0].weight)
