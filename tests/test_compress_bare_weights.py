"""`compress` and `plan` share every weight of a user's model: besides the Linear, Conv and
Embedding layers', the floating-point Parameters of 2+ dimensions outside them (an LSTM's or
GRU's, attention's `in_proj_weight`, a model's own bare matrices): they were left raw, so an
LSTM model came out about 1.05x smaller (`targets.bare_weights`)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import deepcompress as dc
from deepcompress import phases
from deepcompress.format.inspect import describe
from deepcompress.selection import per_layer
from deepcompress.targets import bare_weights


class Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 24)
        self.lstm = nn.LSTM(24, 32, num_layers=2, batch_first=True)
        self.gru = nn.GRU(32, 32, batch_first=True)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.mix = nn.Parameter(0.1 * torch.randn(2, 32, 32))  # a bare 3-D weight of its own
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        h, _ = self.lstm(self.emb(x))
        h, _ = self.gru(h)
        h, _ = self.attn(h, h, h)
        h = torch.einsum("btc,kcd->btd", h, self.mix)
        return self.head(h[:, -1])


LSTM = [f"lstm.weight_{w}_l{i}" for i in (0, 1) for w in ("ih", "hh")]
BARE = ["mix", *LSTM, "gru.weight_ih_l0", "gru.weight_hh_l0", "attn.in_proj_weight"]
LAYERS = ["emb", "attn.out_proj", "head"]


def test_bare_weights_lists_each_matrix_outside_the_layers_once_with_the_kind_it_stands_for():
    net = Seq()
    found = {name: kind for name, _, _, kind in bare_weights(net)}
    assert list(found) == BARE
    assert found["mix"] == "conv" and found["lstm.weight_ih_l0"] == "linear"
    net.tied = nn.Linear(32, 32, bias=False)
    net.tied.weight = net.lstm.weight_hh_l1  # tied to a layer's weight: that layer's, not bare
    assert [n for n, *_ in bare_weights(net)] == [n for n in BARE if n != "lstm.weight_hh_l1"]
    assert per_layer(net, {"conv": 6, "linear": 4, "embedding": 3}) == {
        "emb": 3, "attn.out_proj": 4, "head": 4, "tied": 4,
        **{n: 6 if n == "mix" else 4 for n in BARE if n != "lstm.weight_hh_l1"},
    }  # fmt: skip


@pytest.mark.parametrize("schedule", ["qat", "prune"])
def test_compress_shares_an_lstms_grus_and_attentions_weights(schedule, tmp_path):
    """With no training and an error that never rises, `compress` goes to its coarsest
    setting: every weight shared (a few levels each), the file many times smaller; before, the
    bare weights stayed float32 and the file was about 1.1x smaller."""
    torch.manual_seed(0)
    net = Seq()
    x = torch.randint(0, 40, (8, 6))
    summary = dc.compress(
        net, train=lambda m, *, epochs, lr, loss=None: None, evaluate=lambda m: 0.0,
        out=tmp_path / "s.dcz", budget=0.1, lr=0.1, epochs=1, rounds=1, extra=0, distill=0,
        progress=False, **phases.SCHEDULES[schedule],
    )  # fmt: skip
    assert set(summary.bits) == set(LAYERS + BARE)
    assert set(summary.sparsity) == set(LAYERS + BARE)
    coded = {t["name"]: t["codec"] for t in describe(summary.path)["tensors"]}
    assert all(coded[n] == "shared" for n in BARE)
    assert summary.ratio > 6
    decoded = summary.model
    for name in BARE:
        levels = torch.unique(decoded.get_parameter(name).detach())
        assert len(levels) <= 2 ** summary.bits[name], name
    again = dc.load(summary.path, model=Seq())
    with torch.no_grad():
        assert torch.equal(again.eval()(x), decoded.eval()(x))


@pytest.mark.parametrize("quality", [None, 0.0])
def test_plans_sharing_phase_reaches_the_bare_weights(quality):
    net = Seq()
    plan = dc.plan(net, evaluate=lambda m: 0.0, budget=0.1, lr=0.1, rounds=1, quality=quality)
    plan[-1].apply(net)
    for name in BARE + [f"{n}.weight" for n in LAYERS]:
        module_name, _, tname = name.rpartition(".")
        module = net.get_submodule(module_name)
        assert dc.sharing.shared_parts(module, tname) is not None, name


def test_the_report_gives_each_bare_weight_its_bytes(tmp_path, monkeypatch):
    """... and draws each in weights.png (only the layers' were)."""
    from deepcompress import figures

    drawn = {}
    real = figures.weight_distributions

    def spy(weights, levels, path):
        drawn.update(weights)
        return real(weights, levels, path)

    monkeypatch.setattr(figures, "weight_distributions", spy)
    torch.manual_seed(0)
    summary = dc.compress(
        Seq(), train=lambda m, *, epochs, lr, loss=None: None, evaluate=lambda m: 0.0,
        out=tmp_path / "s.dcz", budget=0.1, lr=0.1, epochs=1, distill=0, progress=False,
        report=tmp_path / "report",
    )  # fmt: skip
    text = (tmp_path / "report" / "report.md").read_text()
    sizes = {t["name"]: t["bytes"] for t in describe(summary.path)["tensors"]}
    for name in BARE:
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert row.endswith(f"| {sizes[name]:,} |"), row
    if drawn:  # with matplotlib
        assert set(BARE) <= set(drawn["decoded"]) and set(BARE) <= set(drawn["dense"])


@pytest.mark.parametrize("schedule", ["qat", "prune"])
def test_exclude_leaves_layers_and_bare_weights_as_they_are(schedule, tmp_path):
    """`exclude` (compress had none: every weight it reaches was shared) keeps the weights it
    names out of the sensitivity scan, the pruning rounds and the sharing."""
    torch.manual_seed(0)
    net = Seq()
    dense = {n: p.detach().clone() for n, p in net.named_parameters()}
    summary = dc.compress(
        net, train=lambda m, *, epochs, lr, loss=None: None, evaluate=lambda m: 0.0,
        out=tmp_path / "s.dcz", budget=0.1, lr=0.1, epochs=1, rounds=1, extra=0, distill=0,
        progress=False, exclude=["lstm", "head", "re:attn\\.in_proj.*"],
        **phases.SCHEDULES[schedule],
    )  # fmt: skip
    kept = [*LSTM, "head.weight", "attn.in_proj_weight"]
    coded = {t["name"]: t["codec"] for t in describe(summary.path)["tensors"]}
    assert all(coded[n] == "raw" for n in kept)
    assert coded["gru.weight_ih_l0"] == coded["emb.weight"] == "shared"
    assert not set(summary.bits) & {*LSTM, "head", "attn.in_proj_weight"}
    decoded = dict(summary.model.named_parameters())
    assert all(torch.equal(decoded[n], dense[n]) for n in kept)


def test_an_exclude_pattern_that_reaches_nothing_is_refused_before_any_work(tmp_path):
    calls = []
    with pytest.raises(ValueError, match=r"no tensor matches exclude pattern \['lstm2'\]"):
        dc.compress(
            Seq(), train=lambda m, **kw: calls.append(1), evaluate=lambda m: calls.append(1),
            out=tmp_path / "s.dcz", budget=0.1, lr=0.1, progress=False, exclude=["lstm2"],
        )  # fmt: skip
    assert not calls and not list(tmp_path.iterdir())
    net = Seq()
    plan = dc.plan(net, evaluate=lambda m: 0.0, budget=0.1, lr=0.1, rounds=1, exclude="mix")
    plan[-1].apply(net)
    assert dc.sharing.shared_parts(net, "mix") is None
    assert dc.sharing.shared_parts(net.lstm, "weight_ih_l0") is not None


class _Reader(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


def _sequences():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(192, 5, 6, generator=g)
    return x, (x[:, :, 0].sum(1) > 0).long() + (x[:, -1, 1] > 1).long()


def _fit(m, *, epochs, lr, loss=None):
    x, y = _sequences()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr)
    m.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(32):
            out = m(x[idx])
            value = loss(out, y[idx], x[idx]) if loss else nn.functional.cross_entropy(out, y[idx])
            opt.zero_grad()
            value.backward()
            opt.step()


@torch.no_grad()
def _error(m) -> float:
    x, y = _sequences()
    return 100.0 * float((m.eval()(x).argmax(1) != y).float().mean())


def test_a_killed_lstm_run_resumed_ends_with_the_same_file(tmp_path):
    """restore registered an LSTM's parametrizations in the checkpoint's (alphabetical) key
    order, weight_hh before weight_ih: the resumed file differed and resume refused it."""

    def dense():
        torch.manual_seed(0)
        m = _Reader()
        _fit(m, epochs=3, lr=3e-3)
        return m

    kw = {"evaluate": _error, "budget": 2.0, "lr": 3e-3, "epochs": 1, "progress": False}
    whole = dc.compress(dense(), train=_fit, out=tmp_path / "a.dcz", **kw)
    calls = []

    def killed(m, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        _fit(m, **k)

    with pytest.raises(KeyboardInterrupt):
        dc.compress(dense(), train=killed, out=tmp_path / "b.dcz", **kw)
    assert (tmp_path / "b.dcz.qat0.ckpt").exists()  # a kept step to resume from
    resumed = dc.compress(dense(), train=_fit, out=tmp_path / "b.dcz", resume=True, **kw)
    assert resumed.bytes == whole.bytes
    assert (tmp_path / "a.dcz").read_bytes() == (tmp_path / "b.dcz").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcz", "b.dcz"]


def test_weight_norm_layers_and_tied_names_with_exclude(tmp_path):
    """A weight_norm'd Linear (its weight split in two) made compress fail ('no layer matches
    key'); it is left as it is. Excluding one name of a tied weight leaves the tensor alone,
    as quantize_'s exclude does (the other name shared it)."""
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    net = nn.Sequential(weight_norm(nn.Linear(8, 16)), nn.ReLU(), nn.Linear(16, 4))
    run = {"train": lambda m, **k: None, "evaluate": lambda m: 0.0, "budget": 0.1, "lr": 0.1,
           "progress": False}  # fmt: skip
    for options in ({}, {"exclude": ["0"]}, dict(phases.SCHEDULES["prune"], rounds=1, extra=0)):
        summary = dc.compress(copy.deepcopy(net), out=tmp_path / "w.dcz", **run, **options)
        assert set(summary.bits) == {"2"}

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.mid = nn.Embedding(30, 8), nn.Linear(8, 8)
            self.lm_head = nn.Linear(8, 30, bias=False)
            self.lm_head.weight = self.embed.weight

        def forward(self, x):
            return self.lm_head(torch.relu(self.mid(self.embed(x))))

    for name in ("embed", "lm_head"):
        torch.manual_seed(0)
        model = Tied()
        weight = model.embed.weight.detach().clone()
        summary = dc.compress(model, out=tmp_path / "t.dcz", exclude=[name], **run)
        assert torch.equal(summary.model.embed.weight, weight)
        assert summary.model.lm_head.weight is summary.model.embed.weight
        assert set(summary.bits) == {"mid"}


def test_a_train_that_changes_nothing_is_warned_of(tmp_path):
    """An optimizer made once, outside train, holds the first model's parameters: compress's
    copies and new codebooks were never trained, silently."""
    torch.manual_seed(0)
    model = _Reader()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def train(m, *, epochs, lr, loss=None):  # steps an optimizer over other parameters
        x, y = _sequences()
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    with pytest.warns(UserWarning, match="create the optimizer inside train"):
        dc.compress(model, train=train, evaluate=_error, out=tmp_path / "o.dcz", budget=5.0,
                    lr=0.1, progress=False)  # fmt: skip


def test_distillation_takes_dict_and_tuple_outputs_and_several_inputs():
    """The default distill=0.5 failed for a model returning a dict or a tuple ('dict' object has
    no attribute 'dim') and for one taking two inputs (the teacher got them as one)."""
    from deepcompress.retrain import distillation_loss

    class Two(nn.Module):
        def __init__(self, kind: str) -> None:
            super().__init__()
            self.kind, self.fc = kind, nn.Linear(5, 4)

        def forward(self, x, scale=None):
            logits = self.fc(x) * (1.0 if scale is None else scale)
            if self.kind == "dict":
                return {"ids": torch.zeros(len(x), dtype=torch.long), "logits": logits}
            return (logits, logits.detach()) if self.kind == "tuple" else logits

    torch.manual_seed(0)
    x, y, scale = torch.randn(6, 5), torch.randint(0, 4, (6,)), torch.full((6, 1), 2.0)
    plain = Two("tensor")
    expected = distillation_loss(plain, 0.5)(plain(x) + 0.1, y, x)
    for kind in ("dict", "tuple"):
        model = Two(kind)
        model.load_state_dict(plain.state_dict())
        out = model(x)
        shifted = {**out, "logits": out["logits"] + 0.1} if kind == "dict" else (out[0] + 0.1,)
        loss = distillation_loss(model, 0.5)
        assert torch.allclose(loss(shifted, y, x), expected)
        main = shifted["logits"] if kind == "dict" else shifted[0]
        assert torch.allclose(loss(main, y, x), expected)  # its main tensor alone, too
    two = distillation_loss(plain, 0.5)
    want = distillation_loss(lambda v: plain(v, scale), 0.5)(plain(x, scale), y, x)
    assert torch.allclose(two(plain(x, scale), y, (x, scale)), want)
    assert torch.allclose(two(plain(x, scale), y, {"x": x, "scale": scale}), want)
    with pytest.raises(ValueError, match="holds no floating-point tensor"):
        two({"ids": torch.zeros(6, dtype=torch.long)}, y, x)


def test_train_gets_the_model_in_training_mode(tmp_path):
    """`evaluate` usually leaves the model in eval mode, and `train` got it so: a loop that never
    calls model.train() retrained with dropout off and BatchNorm frozen."""
    modes = []

    def train(m, *, epochs, lr, loss=None):
        modes.append(m.training)

    def evaluate(m):
        m.eval()
        return 0.0

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.1), nn.Linear(16, 4))
    dc.compress(net, train=train, evaluate=evaluate, out=tmp_path / "m.dcz", budget=0.1,
                lr=0.1, progress=False)  # fmt: skip
    assert modes and all(modes)


def test_plan_with_a_given_table_prunes_no_excluded_layer():
    net = Seq()
    table = {"baseline": 0.0, "sparsities": [0.0, 0.5],
             "layers": {n: {0.0: 0.0, 0.5: 0.0} for n in LAYERS}}  # fmt: skip
    plan = dc.plan(net, evaluate=lambda m: 0.0, budget=0.1, lr=0.1, rounds=1, table=table,
                   exclude=["head"])  # fmt: skip
    assert set(plan[0].sparsity) == {"emb", "attn.out_proj"}
