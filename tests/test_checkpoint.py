"""Checkpoints and resuming an interrupted run."""

import pytest
import torch
from torch import nn

import deepcompress as dc
from deepcompress.checkpoint import restore, save_checkpoint
from deepcompress.pipeline.reproduce import run
from deepcompress.sharing import shared_parts


def arch():
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(12, 6), nn.Linear(6, 2))


def test_checkpoint_restores_masks_and_codebooks(tmp_path):
    torch.manual_seed(0)
    net = arch()
    dc.prune_(net, sparsity=0.5)
    dc.quantize_(net, bits={"0": 2})  # layer 0 shared, layers 2 and 3 pruned only
    save_checkpoint(net, tmp_path / "c.ckpt", {"round": 3})
    fresh = arch()
    assert restore(fresh, tmp_path / "c.ckpt") == {"round": 3}
    x = torch.randn(4, 1, 4, 4)
    assert torch.equal(fresh(x), net(x))
    assert torch.equal(shared_parts(fresh[0]).idx, shared_parts(net[0]).idx)
    # training goes on identically: same masks, same trainable tensors
    for m in (net, fresh):
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            loss = m(x).pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert torch.equal(fresh(x), net(x))
    assert (fresh[2].weight == 0).sum() == (net[2].weight == 0).sum() >= 36


class Interrupted(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_same_file(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run("digits-mlp", a, quiet=True, epochs_scale=0.1)

    def fail(r):
        if r == 1:  # round 1 trained but not checkpointed: as if killed during round 1
            raise Interrupted

    with pytest.raises(Interrupted):
        run("digits-mlp", b, quiet=True, epochs_scale=0.1, after_round=fail)
    assert (b / "digits-mlp.ckpt").exists() and not (b / "demo.dcz").exists()
    rounds = []
    run("digits-mlp", b, quiet=True, epochs_scale=0.1, resume=True, after_round=rounds.append)
    assert rounds == [1]  # round 0 came from the checkpoint, round 1 was done again
    assert (a / "demo.dcz").read_bytes() == (b / "demo.dcz").read_bytes()
    assert not (b / "digits-mlp.ckpt").exists()  # removed once the file is written


def test_tied_weights_are_checkpointed_once_and_tied_again(tmp_path):
    import torch
    from torch import nn

    import deepcompress as dc
    from deepcompress.checkpoint import restore, save_checkpoint

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 8)
            self.head = nn.Linear(8, 20, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, x):
            return self.head(self.embed(x))

    torch.manual_seed(0)
    net = Tied()
    dc.prune_(net, sparsity=0.5)
    dc.quantize_(net, bits=3)
    save_checkpoint(net, tmp_path / "c.ckpt", {"round": 0})
    fresh = Tied()
    restore(fresh, tmp_path / "c.ckpt")
    x = torch.arange(20)
    torch.testing.assert_close(fresh(x), net(x))
    # still one tensor: a training step on the codebook moves both names
    assert fresh.head.parametrizations.weight is fresh.embed.parametrizations.weight


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_restore_puts_masks_and_codebooks_on_the_models_device(tmp_path):
    # "meta" stands in for a GPU: a device other than the CPU that the checkpoint's tensors
    # (read on the CPU) must be moved to, or registering them on the weights fails
    torch.manual_seed(0)
    net = arch()
    dc.prune_(net, sparsity=0.5)
    dc.quantize_(net, bits={"0": 2})
    save_checkpoint(net, tmp_path / "c.ckpt", {})
    fresh = arch().to("meta")
    restore(fresh, tmp_path / "c.ckpt")
    held = [b for m in fresh.modules() for b in m.buffers(recurse=False)]
    held.append(shared_parts(fresh[0]).codebook)
    assert len(held) == 4 and {b.device.type for b in held} == {"meta"}  # idx, 2 masks, codebook
    assert fresh[2].weight.device.type == "meta"


def test_cluster_indices_past_the_codebook_are_refused_before_the_model_is_touched(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8))
    dc.quantize_(net, bits=3)
    save_checkpoint(net, tmp_path / "c.ckpt", {})
    tensors = load_file(str(tmp_path / "c.ckpt"))
    tensors["0.weight.__idx"][0, 0] = 200  # a codebook of at most 8 levels
    save_file(tensors, str(tmp_path / "bad.ckpt"))
    fresh = torch.nn.Sequential(torch.nn.Linear(6, 8))
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match="do not fit its codebook"):
        restore(fresh, tmp_path / "bad.ckpt")
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())
