import numpy as np
import pytest
import torch
from torch import nn

import deepcompress as dc
from deepcompress.parametrizations import current_mask


def reference_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Slow reference: remove the n smallest |w| one by one (first position wins a tie)."""
    flat = [abs(float(v)) for v in w.reshape(-1)]
    n_prune = round(sparsity * len(flat))
    order = sorted(range(len(flat)), key=lambda i: (flat[i], i))
    keep = [True] * len(flat)
    for i in order[:n_prune]:
        keep[i] = False
    return torch.tensor(keep).reshape(w.shape)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.92, 1.0])
def test_magnitude_mask_matches_reference(sparsity):
    w = torch.randn(17, 23)
    w[0, :5] = 0.5  # ties
    assert torch.equal(dc.magnitude_mask(w, sparsity), reference_mask(w, sparsity))


def test_threshold_mask_is_quality_times_std():
    w = torch.randn(50, 40)
    m = dc.threshold_mask(w, 1.5)
    assert torch.equal(m, w.abs() >= 1.5 * w.std())


def test_bad_input_is_refused():
    w = torch.randn(4, 4)
    with pytest.raises(ValueError, match="sparsity"):
        dc.magnitude_mask(w, 1.5)
    w[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dc.magnitude_mask(w, 0.5)
    net = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="no prunable layer"):
        dc.prune_(net, sparsity={"nope": 0.5})
    with pytest.raises(ValueError, match="exactly one"):
        dc.prune_(net)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=1e-1),
    ],
)
def test_masks_hold_through_optimizer_state_built_before_pruning(make_opt):
    net = _net()
    opt = make_opt(net.parameters())
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))

    def step():
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()  # momentum / Adam moments are non-zero everywhere now
    # The optimizer keeps training the same tensors (parametrize keeps them as `original`).
    dc.prune_(net, sparsity={"0": 0.5, "3": 0.9})
    masks = {i: current_mask(net[i]).clone() for i in (0, 3)}
    before = net[3].weight.detach().clone()
    for _ in range(5):
        step()
    for i, m in masks.items():
        assert (net[i].weight[~m] == 0).all()
        assert (net[i].parametrizations.weight.original.grad[~m] == 0).all()
    assert not torch.equal(net[3].weight.detach()[masks[3]], before[masks[3]])  # it did train
    assert (net[3].weight != 0).sum() <= int(masks[3].sum())


def test_iterative_pruning_never_revives_and_reaches_target():
    net = _net()
    dc.prune_(net, sparsity=0.5)
    m1 = current_mask(net[3]).clone()
    with torch.no_grad():  # "retraining" that would like to revive pruned weights
        net[3].parametrizations.weight.original.add_(1.0)
    dc.prune_(net, sparsity=0.8)
    m2 = current_mask(net[3])
    assert not (m2 & ~m1).any()
    assert abs(float((~m2).float().mean()) - 0.8) < 0.01
    assert (net[3].weight[~m2] == 0).all()


def test_quality_threshold_and_per_kind_mapping():
    net = _net()
    dc.prune_(net, quality={"linear": 1.0})
    assert current_mask(net[0]) is None  # conv untouched
    w = net[3].weight.detach()
    assert 0.5 < float((w == 0).float().mean()) < 0.8  # |w| < 1 std: about 68% of a Gaussian


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.75, 0.96, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_kept_positions_chunked_with_ties_matches_reference(sparsity, dtype):
    from deepcompress.pruning import kept_positions

    g = torch.Generator().manual_seed(3)
    w = torch.randn(40, 31, generator=g).round(decimals=1).to(dtype)  # many ties
    expected = torch.nonzero(reference_mask(w, sparsity).reshape(-1)).reshape(-1).numpy()
    for chunk in (7, 64, 1 << 24):
        got = kept_positions(w, sparsity, chunk=chunk)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)
