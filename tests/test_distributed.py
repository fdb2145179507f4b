"""Two processes on torch.distributed (gloo, CPU) take the same steps as one."""

import torch
from safetensors.torch import load_file

import deepcompress as dc
from deepcompress.checkpoint import save_checkpoint
from deepcompress.distributed import launch, rank
from deepcompress.pipeline.data import load_digits
from deepcompress.pipeline.models import DigitsMLP
from deepcompress.pipeline.train import TrainConfig, train


def pipeline(out_dir):
    """Train, prune, retrain, quantize, fine-tune; each rank writes what it holds."""
    torch.manual_seed(0)
    ds = load_digits()
    model = DigitsMLP()
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=64, shift=0)
    train(model, ds.train, cfg, seed=1, progress=False)
    dc.prune_(model, sparsity=0.8)
    train(model, ds.train, cfg, seed=2, progress=False)
    dc.quantize_(model, bits=3)
    ft = TrainConfig(epochs=1, lr=0.001, batch_size=64, shift=0, weight_decay=0.0)
    train(model, ds.train, ft, seed=3, progress=False)
    save_checkpoint(model, out_dir / f"rank{rank()}.ckpt", {})


def test_two_ranks_agree_with_each_other_and_with_one_process(tmp_path):
    (tmp_path / "ddp").mkdir()
    (tmp_path / "one").mkdir()
    launch(pipeline, 2, tmp_path / "ddp")
    pipeline(tmp_path / "one")
    r0, r1 = (load_file(str(tmp_path / "ddp" / f"rank{r}.ckpt")) for r in (0, 1))
    one = load_file(str(tmp_path / "one" / "rank0.ckpt"))
    assert set(r0) == set(r1) == set(one)
    assert any(k.endswith(".__codebook") for k in r0)
    for k in r0:  # identical masks, codebooks and weights on every rank
        assert torch.equal(r0[k], r1[k]), k
    # and the same as one process with the same global batch, up to floating-point drift
    # (sums in another order, amplified by five epochs of SGD: about 1e-4 here)
    for k in r0:
        same = r0[k] == one[k]
        if k.endswith((".__idx", ".__mask")):
            assert same.float().mean() > 0.995, k  # a weight at a cluster boundary may flip
        elif k.endswith(".weight"):
            agree = r0[k + ".__idx"] == one[k + ".__idx"]
            assert torch.allclose(r0[k][agree], one[k][agree], atol=2e-3), k
        else:
            assert torch.allclose(r0[k], one[k], atol=2e-3), k


def snapped(out_dir):
    """Prune, then train the weights through their rounding to a quality's grid."""
    torch.manual_seed(0)
    ds = load_digits()
    model = DigitsMLP()
    dc.prune_(model, sparsity=0.5)
    dc.quantize_(model, quality=1, trainable="weights")
    cfg = TrainConfig(epochs=1, lr=0.01, batch_size=64, shift=0, weight_decay=0.0)
    train(model, ds.train, cfg, seed=3, progress=False)
    save_checkpoint(model, out_dir / f"rank{rank()}.ckpt", {})


def test_two_ranks_train_the_same_weights_on_the_same_grid(tmp_path):
    launch(snapped, 2, tmp_path)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.ckpt")) for r in (0, 1))
    assert set(r0) == set(r1) and any(k.endswith(".__step") for k in r0)
    for k in r0:  # the same floats, masks and grid steps on every rank
        assert torch.equal(r0[k], r1[k]), k


def test_reproduce_on_two_processes(tmp_path):
    from deepcompress.pipeline.reproduce import run_parallel

    rep = run_parallel(2, "digits-mlp", tmp_path, quiet=True, epochs_scale=0.1)
    assert rep["compressed_bytes"] == (tmp_path / "demo.dcz").stat().st_size
    assert rep["test_error"] < 20 and "ip1" in rep["table"]
    assert not (tmp_path / "digits-mlp.ckpt").exists()
    # a second run (both ranks retrain the reference the same way) ends the same
    again = run_parallel(2, "digits-mlp", tmp_path / ".", quiet=True, epochs_scale=0.1)
    assert again["reference_test_error"] == rep["reference_test_error"]


def test_broadcast_travels_on_the_backend_device(monkeypatch):
    """Issue 15: under nccl, `prune_`/`quantize_` broadcast CPU tensors, which nccl refuses.
    A fake nccl group whose broadcast refuses tensors off its device: masks (bool) and
    codebooks still arrive, and come back on the caller's device and dtype."""
    import torch.distributed as dist

    from deepcompress import distributed

    device = torch.device("meta")  # stands in for the GPU: nothing here may stay on the CPU
    sent = []

    def fake_broadcast(t, src):
        if t.device != device:
            raise RuntimeError(f"nccl: tensor on {t.device}, expected {device}")
        sent.append((t.dtype, tuple(t.shape)))

    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda: "nccl")
    monkeypatch.setattr(dist, "broadcast", fake_broadcast)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(distributed, "collective_device", lambda: device)
    moved = []
    real_copy = torch.Tensor.copy_

    def copy_(self, other, *a, **k):  # the value rank 0 sent comes back to the caller's tensor
        moved.append(other.device)
        return self if other.device == device else real_copy(self, other, *a, **k)

    monkeypatch.setattr(torch.Tensor, "copy_", copy_)
    mask = torch.tensor([True, False, True])
    codebook = torch.tensor([0.5, -0.5])
    assert distributed.broadcast_(mask) is mask and mask.dtype == torch.bool
    assert distributed.broadcast_(codebook) is codebook and codebook.device.type == "cpu"
    assert sent == [(torch.uint8, (3,)), (torch.float32, (2,))]
    assert moved == [device, device]


def test_the_collective_device_follows_the_backend(monkeypatch):
    import torch.distributed as dist

    from deepcompress import distributed

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(dist, "get_backend", lambda: "nccl")
    assert distributed.collective_device() == torch.device("cuda", 3)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    assert distributed.collective_device() == torch.device("cpu")


def planned(out_dir):
    """`dc.plan` with an evaluate that differs per rank (each its own validation shard)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    shift = 100.0 * rank()  # rank 1 sees every pruning of layer 0 as costly, rank 0 none

    def evaluate(m):
        return shift * float((m[0].weight == 0).float().mean())

    phases = dc.plan(model, evaluate=evaluate, budget=1.0, lr=0.1)
    for phase in phases:
        phase.apply(model)  # broadcasts masks: a different plan per rank would not line up
    save_checkpoint(model, out_dir / f"rank{rank()}.ckpt", {"phases": len(phases)})


def test_plan_takes_rank_0s_sensitivity_on_every_rank(tmp_path):
    launch(planned, 2, tmp_path)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.ckpt")) for r in (0, 1))
    assert set(r0) == set(r1)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert any(k.endswith((".__mask", ".__idx", ".__step")) for k in r0), list(r0)
