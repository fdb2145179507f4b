import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import deepcompress as dc
from deepcompress.sharing import CENTROID_INITS, INITS, shared_parts


def brute_force_assign(x, c):
    return np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("k", [1, 2, 4, 32])
def test_kmeans_is_a_lloyd_fixed_point(init, k):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, 3000), rng.normal(4, 0.3, 500)]).astype(np.float32)
    c, labels = dc.kmeans_1d(x, k, init=init)
    assert c.dtype == np.float32 and len(c) == k
    assert np.all(np.diff(c) > 0)
    # every value sits in its nearest cluster (brute force over the n x k distances)
    d = np.abs(x[:, None].astype(np.float64) - c[None, :].astype(np.float64))
    assert np.allclose(d[np.arange(len(x)), labels], d.min(1))
    assert np.array_equal(labels, brute_force_assign(x.astype(np.float64), c.astype(np.float64)))
    # every centroid is the mean of its members (up to float32 rounding)
    for j in range(k):
        assert np.isclose(c[j], x[labels == j].astype(np.float64).mean(), rtol=1e-4, atol=1e-5)


def test_fewer_distinct_values_than_clusters_are_exact():
    x = np.array([0.5, -1.0, 0.5, 2.0, -1.0])
    c, labels = dc.kmeans_1d(x, 32)
    assert c.tolist() == [-1.0, 0.5, 2.0]
    assert np.array_equal(c[labels], x.astype(np.float32))


def test_outlier_does_not_collapse_the_codebook():
    # PAPER.md: one weight 175 std from the mean; linear init must still give a useful codebook.
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 20000)
    x[123] = 175.0
    c, labels = dc.kmeans_1d(x, 16, init="linear")
    assert np.isclose(c[labels][123], 175.0)
    rest = np.delete(np.arange(len(x)), 123)
    err = np.sqrt(np.mean((c[labels][rest] - x[rest]) ** 2))
    assert err < 0.2  # a collapsed codebook would give about 1.0
    assert len(np.unique(labels)) == 16


def test_bad_kmeans_input():
    with pytest.raises(ValueError):
        dc.kmeans_1d(np.array([1.0, np.nan]), 2)
    with pytest.raises(ValueError):
        dc.kmeans_1d(np.arange(10.0), 2, init="nope")


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5))
    dc.prune_(net, sparsity=0.5)
    dc.quantize_(net, bits=3)
    x, y = torch.randn(8, 30), torch.randint(0, 5, (8,))

    # Reference: the same network with plain dense weights, gradient per weight, summed by hand.
    dense = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5))
    with torch.no_grad():
        for i in (0, 2):
            dense[i].weight.copy_(net[i].weight)
            dense[i].bias.copy_(net[i].bias)
    nn.functional.cross_entropy(dense(x), y).backward()
    nn.functional.cross_entropy(net(x), y).backward()
    for i in (0, 2):
        p = shared_parts(net[i])
        expected = torch.zeros_like(p.codebook)
        g, idx = dense[i].weight.grad.reshape(-1), p.idx.reshape(-1).long()
        for j in range(len(g)):
            if idx[j] > 0:
                expected[idx[j] - 1] += g[j]
        assert torch.allclose(p.codebook.grad, expected, atol=1e-6)


def test_fine_tuning_keeps_sharing_and_zeros():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3), nn.Flatten(), nn.Linear(6 * 6 * 6, 10))
    dc.prune_(net, sparsity={"0": 0.3, "2": 0.8})
    zeros = [net[i].weight.detach() == 0 for i in (0, 2)]
    dc.quantize_(net)  # conv 8 bits, linear 5 bits
    assert len(shared_parts(net[0]).codebook) <= 256 and len(shared_parts(net[2]).codebook) == 32
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    before = shared_parts(net[2]).codebook.detach().clone()
    for _ in range(5):
        loss = net(torch.randn(4, 1, 8, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(before, shared_parts(net[2]).codebook.detach())
    for z, i in zip(zeros, (0, 2)):
        w = net[i].weight.detach()
        assert torch.equal(w == 0, z)  # exactly the pruned weights are zero
        assert len(torch.unique(w[~z])) <= len(shared_parts(net[i]).codebook)


def test_quantize_settings_errors():
    net = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="1..16"):
        dc.quantize_(net, bits=0)
    with pytest.raises(ValueError, match="no layer"):
        dc.quantize_(net, bits={"x": 4})
    dc.quantize_(net, bits=2)
    with pytest.raises(ValueError, match="already"):
        dc.quantize_(net, bits=2)
    with pytest.raises(ValueError, match="weight-shared"):
        dc.prune_(net, sparsity=0.5)


def test_deep_copies_stay_independent():

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(12, 4))
    dc.prune_(net, sparsity=0.5)
    x = torch.randn(2, 1, 4, 4)
    y = net(x)
    twin = copy.deepcopy(net)
    dc.quantize_(twin, bits=2)
    dc.strip_(twin)
    assert torch.equal(net(x), y)  # the original still has its masks and works
    assert len(torch.unique(twin[2].weight)) <= 5
    dc.quantize_(net, bits=2)
    dc.strip_(net)
    assert torch.equal(net[2].weight, twin[2].weight)
    assert set(net.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def reference_lloyd(xs, c, max_iter=300):
    """Slow reference: Lloyd's algorithm with a full assignment of every value per iteration."""
    from deepcompress.sharing import assign

    k = len(c)
    labels = None
    for _ in range(max_iter):
        c = np.sort(c)
        new = assign(xs, c)
        counts = np.bincount(new, minlength=k)
        while (counts == 0).any():
            err = (xs - c[new]) ** 2
            err[counts[new] == 1] = -1.0
            c[np.flatnonzero(counts == 0)[0]] = xs[int(np.argmax(err))]
            c = np.sort(c)
            new = assign(xs, c)
            counts = np.bincount(new, minlength=k)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        c = np.bincount(labels, weights=xs, minlength=k) / counts
    return np.sort(c)


@pytest.mark.parametrize("init", CENTROID_INITS)
@pytest.mark.parametrize("k", [3, 16, 256])
def test_prefix_sum_lloyd_matches_full_assignment_lloyd(init, k):
    from deepcompress.sharing import _lloyd, init_centroids

    rng = np.random.default_rng(k)
    x = np.concatenate([rng.laplace(0, 0.05, 5000), [3.0, -2.5], np.full(50, 0.01)])
    xs = np.sort(x)
    c0 = init_centroids(xs, k, init, seed=2)
    got = _lloyd(xs, c0.copy(), 300)
    np.testing.assert_allclose(got, reference_lloyd(xs, c0.copy()), atol=1e-9)


def test_indices_take_the_narrowest_dtype_and_gradients_match_int64_indexing():
    """Issue 15: `Shared` held an int64 index per weight (8 bytes) while fine-tuning; it holds
    the narrowest integer type for its codebook, and trains exactly like int64 indexing."""
    from deepcompress.parametrizations import Shared, index_dtype

    assert [index_dtype(k) for k in (1, 255, 256, 32767, 32768, 65536)] == [
        torch.uint8, torch.uint8, torch.int16, torch.int16, torch.int32, torch.int32,
    ]  # fmt: skip
    net = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 40))
    dc.prune_(net, sparsity=0.3)
    dc.quantize_(net, bits={"0": 5, "2": 9})  # 840 kept weights in 512 clusters
    assert shared_parts(net[0]).idx.dtype == torch.uint8  # one byte a weight
    assert shared_parts(net[2]).idx.dtype == torch.int16
    x = torch.randn(7, 40)
    for i in (0, 2):  # the weight is the plain int64 gather of the table
        p = shared_parts(net[i])
        table = torch.cat([torch.zeros(1), p.codebook.detach()])
        assert torch.equal(net[i].weight.detach(), table[p.idx.long()])
    assert net(x).shape == (7, 40)
    big = Shared(torch.randn(300), torch.randint(0, 301, (4, 4)))
    assert big.idx.dtype == torch.int16
    out = big(torch.empty(0))
    out.sum().backward()
    expected = torch.bincount(big.idx.reshape(-1).long(), minlength=301)[1:].float()
    assert torch.equal(big.codebook.grad, expected)


def test_best_init_keeps_the_lower_squared_error():
    """init="best" is Lloyd from "linear" and from "density", whichever gives the lower
    squared error: on heavy-tailed data "linear" wins (outliers get levels), on a bimodal
    mixture of unequal spread "density" may; "best" is never worse than either."""
    rng = np.random.default_rng(3)
    for x in (rng.standard_t(1.5, 20000), np.concatenate([rng.normal(0, 0.01, 9000),
                                                         rng.normal(1, 0.5, 1000)])):  # fmt: skip
        sse = {}
        for init in ("linear", "density", "best"):
            c, labels = dc.kmeans_1d(x, 16, init=init)
            sse[init] = float(((x - c[labels].astype(np.float64)) ** 2).sum())
        assert sse["best"] <= min(sse["linear"], sse["density"]) * (1 + 1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize(
    "kw", [dict(bits=4), dict(quality=4), dict(quality=4, trainable="weights")]
)
def test_nan_or_infinite_weights_are_refused_by_name_and_nothing_changes(bad, kw):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        net[2].weight[1, 2] = bad
    with pytest.raises(ValueError, match=r"^2\.weight contains NaN or infinity"):
        dc.quantize_(net, **kw)
    assert not any(parametrize.is_parametrized(m) for m in net.modules())


def test_strip_keeps_a_frozen_weight_frozen():
    """A layer the user froze stays frozen through prune_, quantize_ (its codebook too) and
    strip_ (which used to make every weight it rebuilt trainable)."""
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    net[0].weight.requires_grad_(False)
    dc.prune_(net, sparsity=0.5)
    dc.quantize_(net, bits=2)
    assert not shared_parts(net[0]).codebook.requires_grad
    assert shared_parts(net[1]).codebook.requires_grad
    dc.strip_(net)
    assert not net[0].weight.requires_grad and net[1].weight.requires_grad
