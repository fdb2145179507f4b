"""Any PyTorch model: every layer type, settings by pattern, tied weights, a transformer."""

import copy

import pytest
import torch
from torch import nn

import deepcompress as dc
from deepcompress.format.container import Record, from_bytes, to_bytes
from deepcompress.format.reader import read
from deepcompress.parametrizations import current_mask
from deepcompress.settings import resolve
from deepcompress.sharing import DEFAULT_BITS, shared_parts
from deepcompress.targets import layer_kind, model_state

# --- every layer type through prune_ + quantize_ + save + load --------------------------------


class EmbedBag(nn.Module):
    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(30, 8, mode="mean")

    def forward(self, x):
        return self.bag(x.reshape(-1), torch.arange(0, x.numel(), x.shape[1]))


LAYERS = {
    "linear": (lambda: nn.Linear(24, 12), lambda: torch.randn(3, 24)),
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, stride=2, dilation=2), lambda: torch.randn(2, 4, 20)),
    "conv2d_groups": (
        lambda: nn.Conv2d(4, 8, 3, stride=2, dilation=2, groups=2, padding=1),
        lambda: torch.randn(2, 4, 11, 9),
    ),
    "conv2d_depthwise": (
        lambda: nn.Conv2d(6, 6, 3, groups=6, bias=False),
        lambda: torch.randn(2, 6, 7, 7),
    ),
    "conv3d": (
        lambda: nn.Conv3d(2, 4, (2, 3, 3), stride=(1, 2, 1)),
        lambda: torch.randn(2, 2, 4, 7, 5),
    ),
    "embedding": (lambda: nn.Embedding(30, 8, padding_idx=0), lambda: torch.randint(0, 30, (3, 5))),
    "embedding_bag": (EmbedBag, lambda: torch.randint(0, 30, (3, 5))),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_each_layer_type_round_trips(tmp_path, kind):
    make, example = LAYERS[kind]
    torch.manual_seed(0)
    net = nn.Sequential(make())
    x = example()
    reference = {k: v.clone() for k, v in net.state_dict().items()}
    dc.prune_(net, sparsity=0.6)
    dc.quantize_(net, bits=3)
    layer = net[0].bag if kind == "embedding_bag" else net[0]
    w = layer.weight.detach()
    assert float((w == 0).float().mean()) == pytest.approx(0.6, abs=0.02), "not pruned"
    assert len(torch.unique(w[w != 0])) <= 8, "not weight-shared"
    path = tmp_path / "m.dcz"
    dc.save(net, path)
    state = dc.load(path)
    assert set(state) == set(reference)  # every key, under its plain name
    records = {r.name: r.codec for r in read(path).records}
    assert records[next(k for k in reference if k.endswith("weight"))] == "shared"
    fresh = nn.Sequential(make())
    fresh.load_state_dict(state, strict=True)
    net.eval(), fresh.eval()
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(fresh(x), expected, rtol=0, atol=1e-6)
    fresh = dc.load(path, model=nn.Sequential(make()))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), expected, rtol=0, atol=1e-6)


def test_kinds_and_default_bits():
    assert layer_kind(nn.Linear(2, 2)) == "linear"
    assert layer_kind(nn.modules.linear.NonDynamicallyQuantizableLinear(2, 2)) == "linear"
    assert layer_kind(nn.Embedding(3, 2)) == layer_kind(nn.EmbeddingBag(3, 2)) == "embedding"
    for conv in (nn.Conv1d(1, 1, 1), nn.Conv2d(1, 1, 1), nn.Conv3d(1, 1, 1)):
        assert layer_kind(conv) == "conv"
    assert layer_kind(nn.LayerNorm(3)) is None
    assert DEFAULT_BITS == {"conv": 8, "linear": 5, "embedding": 5}
    torch.manual_seed(0)
    net = nn.Sequential(nn.Embedding(300, 8), nn.Conv1d(8, 8, 3), nn.Linear(8, 8))
    dc.quantize_(net)
    assert [len(shared_parts(net[i]).codebook) for i in range(3)] == [32, 192, 32]  # 192: all


# --- settings by name, pattern and kind; exclude ----------------------------------------------


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(40, 8)
        self.features = nn.Sequential(nn.Conv1d(8, 8, 3), nn.Conv1d(8, 8, 3))
        self.head = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4))

    def forward(self, x):
        h = self.features(self.embed(x).transpose(1, 2)).mean(-1)
        return self.head(h)


def sparsities(net):
    return {
        name: round(float((m.weight == 0).float().mean()), 2)
        for name, m in net.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Embedding))
    }


def test_precedence_exact_then_first_pattern_then_kind():
    net = Net()
    dc.prune_(
        net,
        sparsity={
            "linear": 0.25,  # kind: loses to every name and pattern below
            "conv": 0.2,  # kind: features.0 (features.1 is reached by a pattern)
            "head.2": 0.75,  # exact name: wins over the patterns below
            "head.[02]": 0.5,  # pattern: head.0 (head.2 is named exactly)
            "head.[01]": 0.1,  # head.1; for head.0 the earlier pattern wins
            "re:features\\.1": 0.9,  # a regular expression
            "embed.weight": 0.3,  # a tensor name is an exact name too
        },
    )
    assert sparsities(net) == {
        "embed": 0.3,
        "features.0": 0.2,
        "features.1": 0.9,
        "head.0": 0.5,
        "head.1": 0.1,
        "head.2": 0.75,
    }
    net = Net()
    dc.prune_(net, sparsity={"head.1": 0.5, "linear": 0.25})
    assert sparsities(net) == {
        "embed": 0.0,
        "features.0": 0.0,
        "features.1": 0.0,
        "head.0": 0.25,
        "head.1": 0.5,
        "head.2": 0.25,
    }
    assert current_mask(net.features[0]) is None  # untouched: no key reaches it
    assert resolve({"head.*": 3, "linear": 5}, "head.0.weight", None, kind="linear") == 3
    assert resolve({"linear": 5}, "features.0.weight", None, kind="conv") is None
    assert resolve(4, "features.0.weight", None, kind="conv") == 4


def test_none_opts_out_and_exclude_wins():
    net = Net()
    dc.prune_(net, sparsity={"head.1": None, "*": 0.5}, exclude=["features.*", "re:head\\.2"])
    assert sparsities(net) == {
        "embed": 0.5,
        "features.0": 0.0,
        "features.1": 0.0,
        "head.0": 0.5,
        "head.1": 0.0,
        "head.2": 0.0,
    }
    dc.quantize_(net, bits=2, exclude=["embed"])
    assert shared_parts(net.embed) is None and current_mask(net.embed) is not None
    assert len(shared_parts(net.head[0]).codebook) == 4
    assert shared_parts(net.features[0]) is not None


def test_save_index_bits_by_pattern_and_kind(tmp_path):
    net = Net()
    dc.prune_(net, sparsity=0.5)
    dc.quantize_(net, bits={"head.0": 3})  # the others stay pruned-only (codec sparse)
    dc.save(net, tmp_path / "m.dcz", index_bits={"head.*": 2, "conv": 7, "embed": 3})
    got = {r.name: (r.codec, r.params.get("index_bits")) for r in read(tmp_path / "m.dcz").records}
    assert got["head.0.weight"] == ("shared", 2) and got["head.2.weight"] == ("sparse", 2)
    assert got["features.1.weight"] == ("sparse", 7) and got["embed.weight"] == ("sparse", 3)
    assert got["head.0.bias"] == ("raw", None)
    dc.save(net, tmp_path / "n.dcz", index_bits=4)
    assert {r.params.get("index_bits") for r in read(tmp_path / "n.dcz").records} == {None, 4}


def test_bad_index_bits_and_raw_dtype_are_refused_before_any_file(tmp_path):
    """0 is not "choose" (None is), a fraction is not a width, an integer dtype is not a float
    one: each a clear ValueError, in save and encode_state_dict, and no file written."""
    net = Net()
    dc.prune_(net, sparsity=0.5)
    state = dc.strip_(copy.deepcopy(net)).state_dict()
    for kw in (dict(index_bits=0), dict(index_bits=2.5), dict(index_bits=True),
               dict(index_bits={"head.*": 0}), dict(raw_dtype=torch.int8),
               dict(raw_dtype="float16"), dict(raw_dtype=torch.complex64)):  # fmt: skip
        with pytest.raises(ValueError, match="index_bits|raw_dtype|cannot be stored"):
            dc.save(net, tmp_path / "m.dcz", **kw)
        if "index_bits" in kw and not isinstance(kw["index_bits"], dict):
            with pytest.raises(ValueError, match="index_bits|raw_dtype|cannot be stored"):
                dc.encode_state_dict(state, tmp_path / "m.dcz", **kw)
    assert not list(tmp_path.iterdir())


def test_keys_that_match_nothing_are_refused_and_nothing_changes():
    net = Net()
    before = copy.deepcopy(net.state_dict())
    for kwargs in (
        dict(sparsity={"head.0": 0.5, "nope*": 0.5}),
        dict(sparsity={"head.0.bias": 0.5}),  # a bias is not prunable
        dict(sparsity=0.5, exclude=["typo"]),
    ):
        with pytest.raises(ValueError, match="no prunable layer"):
            dc.prune_(net, **kwargs)
    with pytest.raises(ValueError, match="no layer"):
        dc.quantize_(net, bits={"linear": 4, "hed.*": 4})
    with pytest.raises(ValueError, match="1..16"):
        dc.quantize_(net, bits={"head.0": 4, "head.2": 17})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dc.prune_(net, sparsity={"head.0": 0.5, "head.2": 1.5})
    assert not any(current_mask(m) is not None for m in net.modules())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    dc.quantize_(net, bits={"conv": 8})  # a kind the model has no layer of is fine
    dc.prune_(Net(), sparsity={"conv": 0.5, "linear": 0.5, "embedding": 0.5})


# --- every key stored, losslessly or at raw_dtype ---------------------------------------------


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 3)
        self.register_buffer("table", torch.randn(5, 5))  # a 2-D buffer: stays raw
        self.register_buffer("scratch", torch.zeros(3), persistent=False)

    def forward(self, x):
        h = self.bn(self.conv(x)).mean((2, 3))
        return self.fc(self.ln(h)) + self.table[0, :3]


def test_every_key_survives_and_raw_dtype(tmp_path):
    net = Mixed()
    net.train()
    net(torch.randn(4, 3, 6, 6))  # running statistics and num_batches_tracked move
    net.eval()
    dc.prune_(net, sparsity=0.5)
    dc.quantize_(net, bits=4)
    keys = set(dc.strip_(copy.deepcopy(net)).state_dict())
    assert {"bn.running_mean", "bn.num_batches_tracked", "table", "ln.bias"} <= keys
    x = torch.randn(2, 3, 6, 6)
    for raw_dtype in (None, torch.float16):
        path = tmp_path / f"{raw_dtype}.dcz"
        dc.save(net, path, raw_dtype=raw_dtype)
        state = dc.load(path)
        assert set(state) == keys
        fresh = Mixed()
        fresh.load_state_dict(state, strict=True)
        fresh.eval()
        dense = dc.strip_(copy.deepcopy(net))
        for k, v in dense.state_dict().items():
            got = state[k]
            if raw_dtype is None or not v.is_floating_point() or k in ("conv.weight", "fc.weight"):
                assert got.dtype == v.dtype and torch.equal(got, v), k
            else:
                assert got.dtype == torch.float16 and torch.equal(got, v.half()), k
        with torch.no_grad():
            tol = 1e-6 if raw_dtype is None else 1e-2
            torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=tol)
    assert (tmp_path / "torch.float16.dcz").stat().st_size < (tmp_path / "None.dcz").stat().st_size


def test_a_tensor_past_the_raw_dtypes_range_keeps_its_own(tmp_path):
    """CREPE's BatchNorm variances reach 5e5, past float16's 65504: such a tensor is stored in
    its own dtype instead of as infinity; the others are cast."""
    net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4)).eval()
    with torch.no_grad():
        net[1].running_var.copy_(torch.tensor([1.0, 2.5, 4.97e5, 3.0]))
    dc.save(net, tmp_path / "m.dcz", raw_dtype=torch.float16)
    state = dc.load(tmp_path / "m.dcz")
    assert state["1.running_var"].dtype == torch.float32
    assert torch.equal(state["1.running_var"], net[1].running_var)
    assert state["1.running_mean"].dtype == torch.float16


# --- tied weights -----------------------------------------------------------------------------


class TiedLM(nn.Module):
    def __init__(self, vocab=50, d=16):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, d)
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, x):
        return self.lm_head(self.norm(self.embed(x)))


def test_tied_weight_is_pruned_and_quantized_once_and_stays_tied(tmp_path):
    net = TiedLM()
    dc.prune_(net, sparsity={"linear": 0.5})  # reaches lm_head only: the tensor is pruned
    assert net.lm_head.parametrizations.weight is net.embed.parametrizations.weight
    assert float((net.embed.weight == 0).float().mean()) == 0.5
    dc.prune_(net, sparsity=0.75)  # iterative pruning of the tied tensor
    assert float((net.lm_head.weight == 0).float().mean()) == 0.75
    dc.quantize_(net)  # embedding and linear both default to 5 bits: one setting
    assert shared_parts(net.embed) is shared_parts(net.lm_head)
    assert len([p for p in net.parameters() if p.requires_grad]) == 3  # codebook, ln w and b
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    x = torch.randint(0, 50, (4, 7))
    for _ in range(2):
        opt.zero_grad()
        net(x).logsumexp(-1).mean().backward()
        opt.step()
    assert torch.equal(net.embed.weight, net.lm_head.weight)
    twin = copy.deepcopy(net)
    assert twin.embed.parametrizations.weight is twin.lm_head.parametrizations.weight
    assert shared_parts(twin.embed) is not shared_parts(net.embed)

    path = tmp_path / "lm.dcz"
    dc.save(net, path, meta={"run": 1})
    file = read(path)
    records, meta = file.records, file.meta
    assert [r.name for r in records] == ["embed.weight", "norm.weight", "norm.bias"]
    assert meta["tied"] == {"lm_head.weight": "embed.weight"} and meta["run"] == 1
    state = dc.load(path)
    assert list(state) == ["embed.weight", "norm.weight", "norm.bias", "lm_head.weight"]
    assert torch.equal(state["lm_head.weight"], state["embed.weight"])
    assert state["lm_head.weight"] is not state["embed.weight"]  # a copy: safetensors-safe
    assert torch.equal(state["embed.weight"], net.embed.weight)
    fresh = TiedLM()
    fresh.load_state_dict(state, strict=True)
    assert fresh.lm_head.weight is fresh.embed.weight  # load_state_dict keeps the tie
    fresh = dc.load(path, model=TiedLM())
    assert fresh.lm_head.weight is fresh.embed.weight
    net.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=1e-6)
    # loading into the compressed model itself strips it and keeps the tie
    dc.load(path, model=twin)
    assert twin.lm_head.weight is twin.embed.weight
    assert dc.strip_(net).lm_head.weight is net.embed.weight
    # the compressed runtime runs lm_head from the embedding's record
    comp = dc.load(path, model=TiedLM(), runtime="compressed")
    assert type(comp.lm_head).__name__ == "CompressedLinear"
    with torch.no_grad():
        torch.testing.assert_close(comp(x), net(x), rtol=0, atol=1e-5)


def test_tied_settings_must_agree_and_exclude_protects_the_tensor():
    net = TiedLM()
    with pytest.raises(ValueError, match="one tied tensor"):
        dc.prune_(net, sparsity={"embedding": 0.5, "linear": 0.7})
    with pytest.raises(ValueError, match="one tied tensor"):
        dc.quantize_(net, bits={"embed": 4, "lm_head": 6})
    assert current_mask(net.embed) is None and shared_parts(net.embed) is None
    dc.prune_(net, sparsity=0.5, exclude=["lm_head"])  # excluding one name protects both
    assert not (net.embed.weight == 0).any() and net.lm_head.weight is net.embed.weight
    dc.quantize_(net, bits={"embed": 4, "lm_head": 4})  # the same value twice is one setting
    assert len(torch.unique(net.lm_head.weight)) <= 16
    assert torch.equal(net.lm_head.weight, net.embed.weight)


class Reused(nn.Module):
    """One module registered under two names (state_dict() lists both)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 6)
        self.b = self.a
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        return self.out(self.b(torch.relu(self.a(x))))


def test_a_module_registered_twice(tmp_path):
    net = Reused()
    keys = set(net.state_dict())
    assert keys == {"a.weight", "a.bias", "b.weight", "b.bias", "out.weight", "out.bias"}
    dc.prune_(net, sparsity={"b": 0.5, "out": 0.5})  # named by its second name
    dc.quantize_(net, bits=3)
    dc.save(net, tmp_path / "m.dcz")
    file = read(tmp_path / "m.dcz")
    records, meta = file.records, file.meta
    assert meta["tied"] == {"b.weight": "a.weight", "b.bias": "a.bias"}
    assert len(records) == 4
    fresh = Reused()
    fresh.load_state_dict(dc.load(tmp_path / "m.dcz"), strict=True)
    assert fresh.a is fresh.b
    x = torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), net(x), rtol=0, atol=1e-6)


def test_meta_tied_is_reserved(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        dc.save(TiedLM(), tmp_path / "m.dcz", meta={"tied": {}})
    with pytest.raises(ValueError, match="reserved"):
        dc.encode_state_dict({"w": torch.ones(2, 2)}, tmp_path / "m.dcz", meta={"tied": 1})
    assert list(tmp_path.iterdir()) == []


def test_bad_tied_meta_is_a_format_error(tmp_path):
    rec = Record("w", (2, 3), "float32", "raw", {}, [bytes(24)])
    assert from_bytes(to_bytes([rec], {"tied": {"v": "w"}}))[0][0].name == "w"
    assert torch.equal(dc.load_bytes(to_bytes([rec], {"tied": {"v": "w"}}))["v"], torch.zeros(2, 3))
    for tied, message in (
        (["v", "w"], "must be an object"),
        ({"v": "nope"}, "not a stored tensor"),
        ({"v": 3}, "not a stored tensor"),
        ({"w": "w"}, "also a stored tensor"),
        ({"v": "w", "u": "v"}, "not a stored tensor"),  # an alias of an alias
        ({"": "w"}, "1..1024"),
        ({"x" * 1025: "w"}, "1..1024"),
    ):
        data = to_bytes([rec], {"tied": tied})
        with pytest.raises(dc.FormatError, match=message):
            dc.load_bytes(data)
        (tmp_path / "m.dcz").write_bytes(data)
        with pytest.raises(dc.FormatError, match=message):
            dc.load(tmp_path / "m.dcz")
    many = to_bytes([rec], {"tied": {f"v{i}": "w" for i in range(5)}})
    assert len(dc.load_bytes(many, max_elements=36)) == 6
    with pytest.raises(dc.FormatError, match="max_elements"):
        dc.load_bytes(many, max_elements=35)  # the copies count


def test_encode_state_dict_stores_identical_storage_once(tmp_path):
    torch.manual_seed(0)
    w = torch.randn(20, 10)
    state = {"embed.weight": w, "bias": torch.randn(10), "head.weight": w, "copy": w.clone()}
    state["view"] = w.view(20, 10)  # another view of the same memory: the same tensor
    state["t"] = w.t()  # the same memory seen differently: not tied
    dc.encode_state_dict(state, tmp_path / "m.dcz", sparsity={"embed*": 0.5}, bits=4)
    file = read(tmp_path / "m.dcz")
    records, meta = file.records, file.meta
    assert [r.name for r in records] == ["embed.weight", "bias", "copy", "t"]
    assert meta["tied"] == {"head.weight": "embed.weight", "view": "embed.weight"}
    assert meta["encode"]["embed.weight"] == {"sparsity": 0.5, "bits": 4}
    out = dc.load(tmp_path / "m.dcz")
    assert set(out) == set(state)
    assert torch.equal(out["head.weight"], out["embed.weight"])
    assert float((out["head.weight"] == 0).float().mean()) == 0.5
    assert float((out["copy"] == 0).float().mean()) == 0.0  # equal values, own storage
    with pytest.raises(ValueError, match="one tied tensor"):
        dc.encode_state_dict(state, tmp_path / "x.dcz", sparsity={"embed*": 0.5, "head*": 0.6})
    dc.encode_state_dict(state, tmp_path / "y.dcz", sparsity=0.5, exclude=["head.weight"])
    out = dc.load(tmp_path / "y.dcz")
    assert torch.equal(out["embed.weight"], w) and torch.equal(out["head.weight"], w)


# --- a transformer ----------------------------------------------------------------------------


class TinyTransformer(nn.Module):
    def __init__(self, vocab=40, d=16, heads=2, layers=2):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(
            d, heads, dim_feedforward=32, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, x):
        return self.lm_head(self.norm(self.encoder(self.embed(x))))


def test_transformer_prune_quantize_save_load(tmp_path):
    plain = TinyTransformer()
    dc.prune_(plain, sparsity=0.5)  # a float reaches layers only, not bare Parameters
    attention = plain.encoder.layers[0].self_attn
    assert not (attention.in_proj_weight == 0).any()
    assert float((attention.out_proj.weight == 0).float().mean()) == 0.5  # a Linear subclass
    net = TinyTransformer()
    keys = set(net.state_dict())
    attn = "*.self_attn.in_proj_weight"  # a bare Parameter of nn.MultiheadAttention
    dc.prune_(net, sparsity={"linear": 0.5, "embedding": 0.5, attn: 0.5})
    dc.quantize_(net, bits={"linear": 6, "embedding": 6, attn: 6})
    compressed = [n for n, _, h, _ in model_state(net) if h is not None]
    assert len(compressed) == 1 + 1 + 2 * 4  # embed, lm_head, per layer in_proj/out_proj/ffn
    in_proj = net.encoder.layers[1].self_attn.in_proj_weight.detach()
    assert float((in_proj == 0).float().mean()) == 0.5
    assert len(torch.unique(in_proj[in_proj != 0])) <= 64
    path = tmp_path / "t.dcz"
    dc.save(net, path)
    file = read(path)
    records, meta = file.records, file.meta
    assert meta["tied"] == {"lm_head.weight": "embed.weight"}
    codecs = {r.name: r.codec for r in records}
    assert sum(c == "shared" for c in codecs.values()) == 9
    assert codecs["encoder.layers.0.self_attn.in_proj_bias"] == "raw"
    state = dc.load(path)
    assert set(state) == keys
    fresh = TinyTransformer()
    fresh.load_state_dict(state, strict=True)
    assert fresh.lm_head.weight is fresh.embed.weight
    x = torch.randint(0, 40, (3, 9))
    net.eval(), fresh.eval()
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(fresh(x), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(
            dc.load(path, model=TinyTransformer()).eval()(x), expected, rtol=0, atol=1e-5
        )

    # The same through the post-training path, on the compressed model's state dict: pruning
    # the same half and 6-bit codebooks on at most 64 distinct values reproduce it exactly.
    sd = dc.strip_(net).state_dict()
    assert sd["lm_head.weight"].data_ptr() == sd["embed.weight"].data_ptr()
    dc.encode_state_dict(
        sd, tmp_path / "p.dcz", sparsity={"*.weight": 0.5, attn: 0.5}, bits=6, exclude=["*norm*"]
    )
    file = read(tmp_path / "p.dcz")
    records, meta = file.records, file.meta
    assert meta["tied"] == {"lm_head.weight": "embed.weight"}
    assert sum(r.codec == "shared" for r in records) == 9
    again = TinyTransformer()
    again.load_state_dict(dc.load(tmp_path / "p.dcz"), strict=True)
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), expected, rtol=0, atol=1e-5)
