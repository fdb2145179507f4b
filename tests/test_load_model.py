"""`dc.load(path, model=...)`: the file's names and shapes are checked against the model before
it is touched, and a weight the user's own parametrization computes is set through it."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

import deepcompress as dc


def _mlp(bias: bool = True, out: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16, bias=bias), nn.ReLU(), nn.Linear(16, out))


def _weight_normed() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(weight_norm(nn.Linear(8, 8)), nn.ReLU(), nn.Linear(8, 4))


class Doubled(nn.Module):
    """A user's parametrization: weight = 2 * original."""

    def forward(self, w):
        return 2 * w

    def right_inverse(self, w):
        return w / 2


class NoInverse(nn.Module):
    def forward(self, w):
        return w.tanh()


@pytest.mark.parametrize("runtime", ["dense", "compressed"])
def test_a_weight_normed_model_loads_through_its_parametrization(runtime, tmp_path):
    net = _weight_normed()
    dc.prune_(net, sparsity={"2": 0.5})
    dc.quantize_(net, bits={"2": 4})
    dc.save(net, tmp_path / "m.dcz")
    assert set(dc.load(tmp_path / "m.dcz")) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    fresh = _weight_normed()
    with torch.no_grad():
        fresh[0].parametrizations.weight.original1.mul_(3)  # some other g and v
    loaded = dc.load(tmp_path / "m.dcz", model=fresh, runtime=runtime)
    assert parametrize.is_parametrized(loaded[0], "weight")  # still weight-normed
    x = torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=1e-6)


def test_a_users_parametrization_is_set_through_its_right_inverse(tmp_path):
    net = _mlp()
    parametrize.register_parametrization(net[0], "weight", Doubled())
    dc.save(net, tmp_path / "m.dcz")
    fresh = _mlp()
    with torch.no_grad():
        fresh[0].weight.zero_()
    parametrize.register_parametrization(fresh[0], "weight", Doubled())
    dc.load(tmp_path / "m.dcz", model=fresh)
    assert torch.equal(fresh[0].weight, net[0].weight)
    assert torch.equal(fresh[0].parametrizations.weight.original, net[0].weight / 2)


def test_mismatches_are_refused_before_the_model_is_touched(tmp_path):
    """Missing and unexpected names, shapes and a parametrization with no right_inverse: one
    clear ValueError each, and the model keeps its weights, masks and codebooks."""
    net = _mlp()
    dc.prune_(net, sparsity=0.5)
    dc.quantize_(net, bits=4)
    dc.save(net, tmp_path / "m.dcz")
    no_inverse = _mlp()
    parametrize.register_parametrization(no_inverse[2], "weight", NoInverse())
    pruned = _mlp(bias=False)
    dc.prune_(pruned, sparsity=0.3)
    for model, match in (
        (pruned, r"unexpected \['0.bias'\]"),
        (nn.Sequential(*_mlp(), nn.Linear(4, 2)), r"missing \['3.weight', '3.bias'\]"),
        (_mlp(out=5), r"shapes differ: 2.weight \(4, 16\) \(the model's \(5, 16\)\)"),
        (no_inverse, "no right_inverse"),
    ):
        before = copy.deepcopy(model.state_dict())
        for runtime in ("dense", "compressed"):
            with pytest.raises(ValueError, match=match) as e:
                dc.load(tmp_path / "m.dcz", model=model, runtime=runtime)
            assert "\n" not in str(e.value)
            after = model.state_dict()
            assert list(after) == list(before)
            assert all(torch.equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize("runtime", ["dense", "compressed"])
def test_a_stream_that_fails_to_decode_leaves_the_model_as_it_was(runtime, tmp_path):
    """Every tensor is decoded before the model is touched: a damaged stream behind valid
    checksums raises FormatError with the model's masks, codebooks and weights unchanged
    (they used to be stripped, and layers swapped, before the error)."""
    from deepcompress.format.reader import read
    from deepcompress.testing import mutate_section, split

    net = _mlp()
    dc.prune_(net, sparsity=0.5)
    dc.quantize_(net, bits=4)
    dc.save(net, tmp_path / "m.dcz")
    buf = (tmp_path / "m.dcz").read_bytes()
    last = [e for e in split(buf)[0]["tensors"] if e["codec"] == "shared"][-1]
    start = last["offset"]
    for pos in range(start + sum(last["parts"]) - 1, start - 1, -1):
        bad = mutate_section(buf, pos, 0x5A)
        read(bad)  # the checks before decoding pass
        try:
            dc.load_bytes(bad)
        except dc.FormatError:
            break
    else:
        pytest.fail("no damage in the last shared tensor's streams was caught")
    (tmp_path / "bad.dcz").write_bytes(bad)
    model = _mlp()
    dc.prune_(model, sparsity=0.5)
    dc.quantize_(model, bits=4)
    before = copy.deepcopy(model.state_dict())
    kinds = [type(m) for m in model.modules()]
    with pytest.raises(dc.FormatError):
        dc.load(tmp_path / "bad.dcz", model=model, runtime=runtime)
    assert [type(m) for m in model.modules()] == kinds
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in after)


def test_a_parametrization_that_cannot_hold_the_weight_is_refused_untouched(tmp_path):
    """weight_norm of an all-zero row (a pruned output) is NaN, `orthogonal` holds only
    orthogonal weights: set through right_inverse they compute another weight, so the load is
    refused, before the model is touched (it used to load NaN or a different weight)."""
    from torch.nn.utils.parametrizations import orthogonal

    net = _mlp(out=16)
    with torch.no_grad():
        net[2].weight[3] = 0
    dc.save(net, tmp_path / "m.dcz")
    for make in (weight_norm, orthogonal):
        model = _mlp(out=16)
        make(model[2])
        before = copy.deepcopy(model.state_dict())
        with pytest.raises(ValueError, match="cannot hold the file's weight"):
            dc.load(tmp_path / "m.dcz", model=model)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_lazy_module_takes_the_files_shapes(tmp_path):
    net = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    net(torch.randn(1, 5))
    dc.quantize_(net, bits=4)
    dc.save(net, tmp_path / "m.dcz")
    fresh = dc.load(
        tmp_path / "m.dcz", model=nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 2))
    )
    x = torch.randn(3, 5)
    torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=1e-6)


def test_a_meta_device_model_is_refused_clearly(tmp_path):
    dc.save(_mlp(), tmp_path / "m.dcz")
    with torch.device("meta"):
        model = _mlp()
    with pytest.raises(ValueError, match="meta device"):
        dc.load(tmp_path / "m.dcz", model=model)
    model.to_empty(device="cpu")
    dc.load(tmp_path / "m.dcz", model=model)
    assert torch.equal(model[0].weight, _mlp()[0].weight)


def test_compressed_layers_take_the_models_mode(tmp_path):
    net = _mlp()
    dc.quantize_(net, bits=4)
    dc.save(net, tmp_path / "m.dcz")
    run = dc.load(tmp_path / "m.dcz", model=_mlp().eval(), runtime="compressed")
    assert type(run[0]).__name__ == "CompressedLinear" and not any(
        m.training for m in run.modules()
    )


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_a_torchscript_module_is_refused_by_the_verbs_that_would_do_nothing(tmp_path):
    """prune_/quantize_/sensitivity found no torch.nn layer in a ScriptModule and silently did
    nothing; save and load into one still work."""
    scripted = torch.jit.script(_mlp())
    for verb in (
        lambda: dc.prune_(scripted, sparsity=0.9),
        lambda: dc.quantize_(scripted, bits=2),
        lambda: dc.sensitivity(scripted, lambda m: 0.0),
    ):
        with pytest.raises(TypeError, match="TorchScript"):
            verb()
    dc.save(scripted, tmp_path / "s.dcz")
    dc.load(tmp_path / "s.dcz", model=torch.jit.script(_mlp()))


def _wrapped(kind: str, model: nn.Module) -> nn.Module:
    if kind == "compiled":
        return torch.compile(model)  # wraps now, compiles on the first call (never made here)
    if kind == "compiled DataParallel":
        return torch.compile(nn.DataParallel(model))
    return nn.DataParallel(model)  # on a machine without GPUs, a plain wrapper


@pytest.mark.parametrize("kind", ["compiled", "DataParallel", "compiled DataParallel"])
def test_a_wrapped_models_file_holds_the_plain_names_and_loads_either_way(kind, tmp_path):
    """torch.compile's `_orig_mod.` and DDP's `module.` prefixes stay out of the file: the
    file of a wrapped model loads into the plain model, and a plain file into a wrapped one
    (both failed with 'missing [...], unexpected [...]')."""
    plain = _mlp()
    wrapped = _wrapped(kind, plain)
    dc.prune_(wrapped, sparsity=0.5)
    dc.quantize_(wrapped, bits=3)
    dc.save(wrapped, tmp_path / "w.dcz")
    expected = {f"{i}.{t}": getattr(plain[i], t).detach().clone() for i in (0, 2)
                for t in ("weight", "bias")}  # fmt: skip
    assert set(dc.load(tmp_path / "w.dcz")) == set(expected) == {"0.weight", "0.bias",
                                                                  "2.weight", "2.bias"}  # fmt: skip
    into_plain = dc.load(tmp_path / "w.dcz", model=nn.Sequential(*_mlp()))
    assert all(torch.equal(into_plain.state_dict()[n], t) for n, t in expected.items())
    dc.save(into_plain, tmp_path / "p.dcz")
    target = _wrapped(kind, _mlp(out=4))
    assert dc.load(tmp_path / "p.dcz", model=target) is target  # the user's object back
    inner = target._orig_mod if kind.startswith("compiled") else target
    inner = inner.module if "DataParallel" in kind else inner
    assert all(torch.equal(inner.state_dict()[n], t) for n, t in expected.items())
