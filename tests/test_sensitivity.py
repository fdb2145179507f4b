import copy

import pytest
import torch
from plots import assert_plot_png
from torch import nn
from torch.nn.utils import parametrize

import deepcompress as dc
from deepcompress.analysis import (
    DEFAULT_SPARSITIES,
    area_above_baseline,
    auto_sparsity,
    plot_sensitivity,
    sensitivity,
    tolerated_sparsity,
)
from deepcompress.parametrizations import current_mask
from deepcompress.pipeline.data import load_digits
from deepcompress.pipeline.models import DigitsMLP
from deepcompress.pipeline.train import TrainConfig, error_rate, train
from deepcompress.targets import compressible_layers


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: on busy cores, one thread is 10x faster than two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def trained(digits):
    """The demo's MLP, trained for a couple of seconds on the digits (about 3% error)."""
    torch.manual_seed(0)
    model = DigitsMLP()
    train(model, digits.train, TrainConfig(epochs=10, lr=0.1, shift=0), progress=False)
    return model


@pytest.fixture
def model(trained):
    return copy.deepcopy(trained)


@pytest.fixture
def val_error(digits):
    return lambda m: error_rate(m, digits.val)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, as raw bits (so -0.0 and 0.0 differ)."""
    return {
        k: v.detach().clone().contiguous().view(torch.uint8)
        for k, v in model.state_dict(keep_vars=True).items()
    }


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = snapshot(model)
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k


def test_table_shape_and_baseline(model, val_error):
    table = sensitivity(model, val_error)
    names = [n for n, _ in compressible_layers(model)]
    assert list(table["layers"]) == names == ["ip1", "ip2", "ip3"]
    assert table["sparsities"] == sorted(DEFAULT_SPARSITIES)
    assert table["baseline"] == val_error(model)
    for row in table["layers"].values():
        assert list(row) == table["sparsities"]
        assert row[0.0] == table["baseline"]
    # pruning 99% of a layer without retraining does hurt
    assert all(row[0.99] > table["baseline"] + 10 for row in table["layers"].values())

    part = sensitivity(model, val_error, sparsities=[0.5, 0.0, 0.5], layers=["ip3"])
    assert part["sparsities"] == [0.0, 0.5] and list(part["layers"]) == ["ip3"]
    assert part["layers"]["ip3"][0.5] == table["layers"]["ip3"][0.5]


def test_model_restored_bit_identically(model, val_error):
    model.train()  # error_rate calls model.eval(): the flag must come back too
    with torch.no_grad():
        model.ip2.weight[0, :3] = -0.0  # signed zeros survive the round trip
    before = snapshot(model)
    sensitivity(model, val_error)
    assert_unchanged(model, before)
    assert model.training and all(m.training for m in model.modules())
    assert not any(parametrize.is_parametrized(m) for m in model.modules())

    auto_sparsity(model, val_error, budget=1.0)
    assert_unchanged(model, before)
    assert model.training
    assert not any(parametrize.is_parametrized(m) for m in model.modules())


@pytest.mark.parametrize("fail_at", [1, 5])
def test_model_restored_when_evaluate_raises(model, val_error, fail_at):
    before = snapshot(model)
    calls = []

    def evaluate(m):
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("evaluation failed")
        return val_error(m)

    with pytest.raises(RuntimeError, match="evaluation failed"):
        sensitivity(model, evaluate)
    assert_unchanged(model, before)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())

    table = sensitivity(model, val_error)

    def broken(m):
        raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError, match="evaluation failed"):
        auto_sparsity(model, broken, budget=2.0, table=table)  # fails in the combined pass
    assert_unchanged(model, before)


class TwoLayers(nn.Module):
    """`spread` has a few large weights and many near-zero ones: pruning it costs nothing until
    the large ones go. `dense` has only large weights: every pruned one costs."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.spread = nn.Linear(32, 32, bias=False)
        self.dense = nn.Linear(32, 32, bias=False)
        with torch.no_grad():
            self.spread.weight.copy_(torch.eye(32) + 1e-4 * torch.randn(32, 32, generator=g))
            signs = torch.randn(32, 32, generator=g).sign()
            self.dense.weight.copy_(signs * (1 + torch.rand(32, 32, generator=g)))

    def forward(self, x):
        return self.dense(self.spread(x))


def test_obviously_sensitive_layer_is_ranked_so():
    model = TwoLayers()
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = model(x)

    def mse(m):
        with torch.no_grad():
            return float(((m(x) - target) ** 2).mean())

    grid = [s for s in DEFAULT_SPARSITIES if s <= 0.95]  # at 99% spread loses its diagonal
    table = sensitivity(model, mse, sparsities=grid)
    spread, dense = table["layers"]["spread"], table["layers"]["dense"]
    assert table["baseline"] == 0.0
    assert spread[0.95] < 1e-3 < dense[0.1]  # 90% of spread costs less than 10% of dense
    area = area_above_baseline(table)
    assert area["dense"] > 1e4 * area["spread"]
    tol = tolerated_sparsity(table, 0.01)
    assert tol == {"spread": 0.95, "dense": 0.0}
    assert auto_sparsity(model, mse, budget=0.01, table=table) == tol


def test_auto_sparsity_meets_budget_and_grows_with_it(model, val_error):
    before = snapshot(model)
    table = sensitivity(model, val_error)
    pruned = []
    for budget in (0.0, 1.0, 5.0, 20.0):
        chosen = auto_sparsity(model, val_error, budget, table=table)
        assert list(chosen) == ["ip1", "ip2", "ip3"]
        assert all(s in table["sparsities"] for s in chosen.values())
        applied = dc.prune_(copy.deepcopy(model), sparsity=chosen)  # as a user would
        assert val_error(applied) <= table["baseline"] + budget
        pruned.append(sum(int((m.weight == 0).sum()) for _, m in compressible_layers(applied)))
    assert pruned == sorted(pruned) and pruned[-1] > pruned[1] > 0
    assert_unchanged(model, before)

    # computing the table itself gives the same answer
    assert auto_sparsity(model, val_error, 5.0) == auto_sparsity(model, val_error, 5.0, table=table)


def test_already_pruned_model_is_measured_on_its_effective_weights(model, val_error):
    dc.prune_(model, sparsity=0.5)
    mask = current_mask(model.ip1).clone()
    before = snapshot(model)  # includes parametrizations.weight.original and the masks
    calls = []

    def evaluate(m):
        calls.append(1)
        return val_error(m)

    table = sensitivity(model, evaluate, sparsities=[0.0, 0.3, 0.5, 0.8], layers=["ip1"])
    assert len(calls) == 2  # the baseline, and 0.8: up to 0.5 nothing changes
    row = table["layers"]["ip1"]
    assert row[0.0] == row[0.3] == row[0.5] == table["baseline"] == val_error(model)
    further = dc.prune_(copy.deepcopy(model), sparsity={"ip1": 0.8})
    assert row[0.8] == val_error(further)
    assert_unchanged(model, before)
    assert torch.equal(current_mask(model.ip1), mask)
    assert (model.ip1.weight == 0).float().mean().item() == pytest.approx(0.5, abs=1e-3)


def test_refusals(model, val_error):
    with pytest.raises(ValueError, match="no prunable layer"):
        sensitivity(model, val_error, layers=["nope"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sensitivity(model, val_error, sparsities=[0.5, 1.5])
    with pytest.raises(ValueError, match="budget"):
        auto_sparsity(model, val_error, budget=-1.0)
    dc.quantize_(model, bits={"ip3": 2})
    with pytest.raises(ValueError, match="quantize_"):
        sensitivity(model, val_error)
    sensitivity(model, val_error, sparsities=[0.0, 0.5], layers=["ip1"])  # other layers: fine


def test_plot_is_written_as_png(model, val_error, tmp_path):
    table = sensitivity(model, val_error, sparsities=[0.0, 0.5, 0.9, 0.99])
    out = tmp_path / "sensitivity.png"
    plot_sensitivity(table, out, ylabel="validation error (%)")
    assert_plot_png(out)
    assert [p.name for p in tmp_path.iterdir()] == ["sensitivity.png"]  # no temporary left
    with pytest.raises(FileNotFoundError):
        plot_sensitivity(table, tmp_path / "missing" / "x.png")


def test_a_nan_baseline_is_refused():
    import math

    import pytest
    import torch

    import deepcompress as dc

    with pytest.raises(ValueError, match="nan for the unpruned model"):
        dc.sensitivity(torch.nn.Sequential(torch.nn.Linear(4, 4)), lambda m: math.nan)
