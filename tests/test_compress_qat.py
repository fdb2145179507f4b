"""Quantization-aware `compress` (its default schedule, `phases.SCHEDULES["qat"]`: no pruning
rounds, rate-distortion sharing whose fine-tuning trains the weights through the grid, each
lower quality continuing from the last one kept), and `quantize_` moving a `Snapped` layer to
another grid."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from test_schedule import error, fit, trained
from torch import nn

import deepcompress as dc
from deepcompress import phases
from deepcompress.parametrizations import snapped
from deepcompress.pipeline.data import load_digits
from deepcompress.selection import step


def _floats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: m.parametrizations["weight"].original.detach().clone()
        for n, m in model.named_modules()
        if snapped(m) is not None
    }


def test_a_snapped_layer_moves_to_a_coarser_grid_keeping_its_floats_and_mask():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 6))
    dc.prune_(net, sparsity=0.5)
    dc.quantize_(net, quality=2, trainable="weights")
    with torch.no_grad():  # floats off the grid, as training leaves them
        net[0].parametrizations["weight"].original.add_(0.01 * torch.randn(40, 24))
    before, mask, fine = _floats(net), snapped(net[0]).mask.clone(), snapped(net[0]).step
    dc.quantize_(net, quality=0, trainable="weights")
    held = snapped(net[0])
    assert held.step > 3 * fine  # two qualities lower: about 4x the step
    assert all(torch.equal(before[n], f) for n, f in _floats(net).items())
    assert torch.equal(held.mask, mask)
    # brute force: each kept float's nearest level of the new grid (levels -200..200)
    levels = torch.arange(-200, 201, dtype=torch.float64) * held.step
    floats = before["0"].to(torch.float64)
    nearest = levels[(floats[..., None] - levels).abs().argmin(-1)].float()
    assert torch.equal(net[0].weight, torch.where(mask, nearest, torch.zeros(())))
    with pytest.raises(ValueError, match="already quantized"):
        dc.quantize_(net, quality=-1)  # the codebook's way needs a layer not yet shared


@pytest.fixture(scope="module")
def digits():
    return load_digits(0)


def test_compress_without_pruning_steps_the_quality_down_from_the_last_kept_model(digits, tmp_path):
    """No sensitivity, no pruning round; each sharing step one quality lower, trained from the
    previous step's floats at QAT_LR x lr, kept while the decoded model keeps within the
    budget and the file shrinks; the file is the last step kept, zero is a level, and the raw
    tensors are stored at `raw_dtype`."""
    seen, rates = [], []

    def watch(stage, model, err):
        seen.append((stage, _floats(model)))

    def train(m, *, epochs, lr, loss=None):
        rates.append(lr)
        fit(m, digits.train, epochs=epochs, lr=lr, loss=loss)

    budget = 1.0
    summary = dc.compress(
        trained(digits), train=train, evaluate=lambda m: error(m, digits.val), lr=0.05,
        out=tmp_path / "q.dcz", budget=budget, epochs=1, progress=False, on_phase=watch,
        raw_dtype=torch.float16, report=tmp_path / "report",
    )  # fmt: skip
    assert not [h for h in summary.history if h["phase"] == "prune"]
    assert rates and all(r == pytest.approx(phases.QAT_LR * 0.05) for r in rates)
    limit = phases.edge(summary.dense_error, budget)
    steps = [h for h in summary.history if h["phase"] == "quantize"]
    assert len(steps) >= 2 and steps[0]["error"] <= limit
    for a, b in zip(steps, steps[1:]):
        assert b["quality"] == step(a["quality"], True, -1)
    accepted = [steps[0]]
    for s in steps[1:]:
        if s["error"] > limit or s["bytes"] >= accepted[-1]["bytes"]:
            break
        accepted.append(s)
    assert len(steps) - len(accepted) <= 1  # at most one trial refused, the last
    kept = accepted[-1]
    assert summary.quality == kept["quality"] and summary.bytes == kept["bytes"]
    assert summary.error == kept["error"] <= limit
    assert summary.bytes == (tmp_path / "q.dcz").stat().st_size
    # each step after the first starts from the floats the step before it ended with
    tuned = [f for stage, f in seen if stage == "fine-tuned"]
    shared = [f for stage, f in seen if stage == "shared"]
    for i in range(1, len(steps)):
        assert tuned[i - 1].keys() == shared[i].keys()
        assert all(torch.equal(tuned[i - 1][n], shared[i][n]) for n in shared[i])
        assert not all(torch.equal(shared[i][n], tuned[i][n]) for n in shared[i])  # trained
    assert max(summary.sparsity.values()) > 0  # the zero level pruned some weights
    decoded = dc.load(tmp_path / "q.dcz", model=copy.deepcopy(trained(digits)))
    assert error(decoded, digits.val) == summary.error
    state = dc.load(tmp_path / "q.dcz")
    assert state["fc1.bias"].dtype == state["bn.running_var"].dtype == torch.float16
    assert torch.equal(summary.model.fc1.bias, state["fc1.bias"].float())
    # the report: every phase tried, with its error and bytes, the layers and the energy view
    text = (tmp_path / "report" / "report.md").read_text()
    for i, h in enumerate(summary.history, 1):
        assert (
            f"| {i} | quantize | quality {h['quality']:g} | {h['error']:.4g} | {h['bytes']:,} |"
            in text
        )
    assert f"{summary.bytes:,} bytes" in text and "| fc1 |" in text and "less energy" in text
    assert (tmp_path / "report" / "weights.png").stat().st_size > 1000
    assert (tmp_path / "report" / "errors.png").stat().st_size > 1000


def test_the_default_schedule_is_qat_and_kmeans_alone_still_runs(tmp_path):
    """The defaults are SCHEDULES["qat"] (`trainable=None` resolving to "weights" for rd);
    `sharing="kmeans"` without `trainable`, valid before the default changed, still runs."""
    defaults = {n: p.default for n, p in inspect.signature(dc.compress).parameters.items()}
    qat = phases.SCHEDULES["qat"]
    assert (defaults["prune"], defaults["sharing"]) == (qat["prune"], qat["sharing"])
    assert defaults["trainable"] is None and qat["trainable"] == "weights"
    assert phases.SCHEDULES["prune"]["prune"] and not qat["prune"]
    torch.manual_seed(0)
    net, x = nn.Linear(64, 32), torch.randn(16, 64)
    ref = net(x).detach()

    @torch.no_grad()
    def evaluate(m):
        return float((m(x) - ref).pow(2).mean())

    summary = dc.compress(net, train=lambda m, **kw: None, evaluate=evaluate, budget=0.01, lr=0.1,
                          out=tmp_path / "k.dcz", sharing="kmeans", progress=False)  # fmt: skip
    assert summary.quality is None and summary.error <= 0.01
    assert {h.get("sharing") for h in summary.history if h["phase"] == "quantize"} == {"kmeans"}


def test_a_killed_default_run_resumed_ends_with_the_same_file(digits, tmp_path):
    """Killed in its last sharing step, then `resume=True`: it continues from the last step
    kept (its checkpoint: one training left, not all of them again) and ends with the same
    file, figures and history as a run that was never killed."""
    calls = []

    def run(out, die_at=None, **kw):
        def train(m, *, epochs, lr, loss=None):
            calls.append(out)
            if len(calls) == die_at:
                raise KeyboardInterrupt
            fit(m, digits.train, epochs=epochs, lr=lr, loss=loss)

        return dc.compress(
            trained(digits), train=train, evaluate=lambda m: error(m, digits.val), lr=0.05,
            out=out, budget=1.0, epochs=1, progress=False, check=lambda m: 0.0, **kw,
        )  # fmt: skip

    whole = run(tmp_path / "a.dcz")
    n = len(calls)
    assert n >= 3, "the digits run must try three steps for this test"
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.dcz", die_at=n)
    assert not (tmp_path / "b.dcz").exists() and not list(tmp_path.glob("b.dcz.*.tmp"))
    assert len(list(tmp_path.glob("b.dcz.qat*.ckpt"))) == n - 1  # every step before kept
    calls.clear()
    resumed = run(tmp_path / "b.dcz", resume=True)
    assert len(calls) == 1  # the last step only
    assert (tmp_path / "a.dcz").read_bytes() == (tmp_path / "b.dcz").read_bytes()
    assert (resumed.error, resumed.quality, resumed.bits) == (
        whole.error,
        whole.quality,
        whole.bits,
    )
    assert resumed.history == whole.history
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcz", "b.dcz"]  # nothing left


@pytest.mark.parametrize(
    "kw", [{"trainable": "levels"}, {"trainable": "weights", "sharing": "kmeans"}]
)
def test_weights_are_trained_through_the_grid_of_rate_distortion_sharing_only(kw, tmp_path):
    calls = []
    with pytest.raises(ValueError, match="trainable"):
        dc.compress(nn.Linear(3, 3), train=None, evaluate=lambda m: calls.append(1) or 0.0,
                    out=tmp_path / "x.dcz", budget=0.1, lr=0.1, **kw)  # fmt: skip
    assert not calls and not list(tmp_path.iterdir())


def test_plan_fine_tunes_the_weights_through_the_grid_at_the_retraining_rate(digits):
    net = trained(digits)
    planned = dc.plan(net, evaluate=lambda m: error(m, digits.val), budget=1.0, lr=0.05,
                      rounds=1, quality=0, trainable="weights")  # fmt: skip
    last = planned[-1]
    assert (last.kind, last.quality, last.trainable) == ("quantize", 0, "weights")
    assert last.lr == pytest.approx(phases.QAT_LR * 0.05)
    last.apply(net)
    before = _floats(net)
    assert before and all(snapped(m) is not None for m in (net.conv, net.fc1, net.fc2))
    fit(net, digits.train, epochs=1, lr=last.lr)
    assert any(not torch.equal(before[n], f) for n, f in _floats(net).items())


def test_the_held_out_check_steps_back_to_the_quality_kept_before_without_retraining(
    digits, tmp_path
):
    """A check that refuses the file once: `compress` goes back to the quality kept just
    before, its file and error as measured then, with no more training."""
    trainings, checks = [], []

    def train(m, *, epochs, lr, loss=None):
        trainings.append(lr)
        fit(m, digits.train, epochs=epochs, lr=lr, loss=loss)

    def check(m):  # call 1: the dense model; call 2: the file chosen, refused; then accepted
        checks.append(error(m, digits.test))
        return 100.0 if len(checks) == 2 else 0.0

    summary = dc.compress(
        trained(digits), train=train, evaluate=lambda m: error(m, digits.val), lr=0.05,
        out=tmp_path / "c.dcz", budget=1.0, epochs=1, progress=False, check=check,
        **phases.SCHEDULES["qat"],
    )  # fmt: skip
    steps = [h for h in summary.history if h["phase"] == "quantize"]
    limit = phases.edge(summary.dense_error, 1.0)
    accepted = [steps[0]]
    for s in steps[1:]:
        if s["error"] > limit or s["bytes"] >= accepted[-1]["bytes"]:
            break
        accepted.append(s)
    assert len(accepted) >= 2, "the digits run must keep two qualities for this test"
    before = accepted[-2]
    assert len(trainings) == len(steps)  # no training after the check
    assert [h["phase"] for h in summary.history].count("check") == 1 and len(checks) == 3
    assert summary.quality == before["quality"] and summary.bytes == before["bytes"]
    assert summary.error == before["error"] and summary.check_error == 0.0
    assert (tmp_path / "c.dcz").stat().st_size == before["bytes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.dcz"]  # no candidate left
    decoded = dc.load(tmp_path / "c.dcz", model=copy.deepcopy(trained(digits)))
    assert error(decoded, digits.val) == before["error"]


def test_schedule_options_overrides_only_what_is_given():
    """The scripts' one way to build compress's schedule arguments: a named schedule, each
    override that is not None on top; an unknown name is refused."""
    prune = phases.schedule_options("prune", sharing="rd", trainable=None)
    assert prune == {**phases.SCHEDULES["prune"], "sharing": "rd"}
    assert phases.schedule_options(None, prune=False) == {"prune": False}
    assert phases.schedule_options() == {}
    with pytest.raises(ValueError, match="schedule must be one of"):
        phases.schedule_options("fast")
