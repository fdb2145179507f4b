"""`encode_state_dict` on state dicts as people have them: entropy-constrained sharing that
chooses free levels, float16 weights at the edge of their range, a 0/1 mask buffer saved
beside the weights (GPT-2's `attn.bias`)."""

from __future__ import annotations

import warnings

import pytest
import torch

import deepcompress as dc
from deepcompress.encode import state_records
from deepcompress.sharing import few_values


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()) ** 2).mean() / (a.double() ** 2).mean())


def test_rd_1_with_free_levels_encodes_and_still_warns_of_a_lost_tensor(tmp_path):
    """`rd=1` may pick free levels (no grid) for a tensor: the lost-tensor check read the grid
    and failed with KeyError: 'grid'."""
    g = torch.Generator().manual_seed(0)
    state = {
        "emb.weight": torch.randn(1000, 64, generator=g),
        "lstm.weight_hh_l0": torch.empty(128, 32).uniform_(-0.18, 0.18, generator=g),
        "head.weight": 1e-4 * torch.randn(64, 64, generator=g),  # far below the others
    }
    for quality in (8, 4, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # head.weight's, checked below
            records, _, _ = state_records(state, quality=quality, rd=1)
        free = [r.name for r in records if r.codec == "shared" and "grid" not in r.params]
        if free:
            break
    assert free, "no quality gave free levels: the test no longer reaches that path"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        dc.encode_state_dict(state, tmp_path / "rd1.dcz", quality=quality, rd=1)
    assert any("head.weight" in str(w.message) for w in seen)
    decoded = dc.load(tmp_path / "rd1.dcz")
    assert _rel(state["emb.weight"], decoded["emb.weight"]) < 0.05


@pytest.mark.parametrize("quality", [8, 4, 2, 0])
def test_float16_weights_at_the_top_of_their_range_decode_finite(quality, tmp_path):
    """Grid levels past 65504 decoded as +-inf in float16."""
    g = torch.Generator().manual_seed(0)
    w = (100 * torch.randn(64, 64, generator=g)).half()
    w[0, :8] = torch.tensor([65504, -65504, 65000, 64000, 60000, -65000, 65400, 65300]).half()
    dc.encode_state_dict({"w": w}, tmp_path / "h.dcz", quality=quality)
    d = dc.load(tmp_path / "h.dcz")["w"]
    assert d.dtype == torch.float16 and torch.isfinite(d).all()
    step = float(w.float().pow(2).mean().sqrt()) * 2.0**-quality
    assert (d.float() - w.float()).abs().max() <= step  # within a step, the top ones too


def test_a_mask_buffer_is_stored_exactly_and_leaves_the_weights_precision_alone(tmp_path):
    """A 0/1 causal mask saved in the state dict raised the RMS that sets the quality's step,
    so every real weight got ~470x the squared error, silently; and came back as 0.9999."""
    g = torch.Generator().manual_seed(0)
    weights = {f"h.{i}.attn.c_attn.weight": 0.02 * torch.randn(96, 288, generator=g)
               for i in range(2)}  # fmt: skip
    masks = {f"h.{i}.attn.bias": torch.tril(torch.ones(128, 128)).view(1, 1, 128, 128)
             for i in range(2)}  # fmt: skip
    dc.encode_state_dict(weights, tmp_path / "w.dcz")
    alone = dc.load(tmp_path / "w.dcz")
    dc.encode_state_dict({**weights, **masks}, tmp_path / "wm.dcz")
    both = dc.load(tmp_path / "wm.dcz")
    for name, m in masks.items():
        assert torch.equal(both[name], m)
    for name, w in weights.items():
        assert torch.equal(both[name], alone[name])  # the same step: the masks do not count
        assert _rel(w, both[name]) < 1e-5


def test_few_values_finds_at_most_sixteen_exact_values_and_nothing_else():
    assert torch.equal(few_values(torch.tensor([[0.0, 1.0], [1.0, 0.0]])), torch.tensor([0.0, 1.0]))
    ternary = torch.randint(-1, 2, (300, 300)).float() * 0.05
    assert few_values(ternary).tolist() == pytest.approx([-0.05, 0.0, 0.05])
    assert few_values(torch.randn(64, 64)) is None
    spread = torch.zeros(100_000)
    spread[-20:] = torch.arange(1, 21).float()  # the sample misses them: the full check sees
    assert few_values(spread) is None
    assert few_values(torch.tensor([[0.1, 0.2]], dtype=torch.float64)) is None  # not float32's
    assert few_values(torch.tensor([[1.5, 2.5]], dtype=torch.bfloat16)).tolist() == [1.5, 2.5]
    assert few_values(torch.zeros(0, 4)) is None


def test_a_size_target_over_tensors_stored_exactly_says_why(tmp_path):
    """A ternary weight is stored exactly (3 values): no quality is left for a size target to
    move, and the refusal says so."""
    ternary = {"w": torch.randint(-1, 2, (64, 64)).float()}
    with pytest.raises(ValueError, match="more than 16 distinct values: those are stored exactly"):
        dc.encode_state_dict(ternary, tmp_path / "t.dcz", size=1000)
    dc.encode_state_dict(ternary, tmp_path / "t.dcz")
    assert torch.equal(dc.load(tmp_path / "t.dcz")["w"], ternary["w"])
