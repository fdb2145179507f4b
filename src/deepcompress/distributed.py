"""Retraining on several processes with PyTorch's own engine (torch.distributed, DDP).

Nothing here is needed inside a user's own DDP loop: masks and codebooks are module buffers
and parameters, so DDP broadcasts them from rank 0 when it wraps the model and all-reduces the
codebooks' gradients like any other's; `prune_` and `quantize_` also broadcast what they
compute from rank 0, so every rank holds identical masks and codebooks even before wrapping.
`launch` runs a function on N local processes (gloo, on the CPU), as
`deepcompress reproduce --nproc N` does; on several machines or GPUs use `torchrun` as usual.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Whether this process writes files (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def collective_device() -> torch.device:
    """The device the process group's backend communicates from: the current CUDA device
    for nccl (which refuses CPU tensors), the CPU otherwise (gloo, mpi)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_(t: torch.Tensor) -> torch.Tensor:
    """Overwrite `t` (in place) with rank 0's value; a no-op outside a process group.

    The tensor travels on the backend's device (`collective_device`) whatever device it is
    on, so masks and codebooks computed on the CPU broadcast under nccl too; bool tensors go
    as uint8, which every backend takes."""
    if active():
        wire = t.to(collective_device(), torch.uint8 if t.dtype == torch.bool else t.dtype)
        dist.broadcast(wire, src=0)
        if wire is not t:
            t.copy_(wire)
    return t


def broadcast_object(obj):
    """Rank 0's `obj` (anything picklable) on every rank; `obj` itself outside a process group.
    For decisions made from each rank's own measurements (a validation shard per rank), so
    that every rank takes the same one and the collectives that follow line up."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, world: int, port: int, fn, args: tuple) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    # gloo: the built-in training loop runs on the CPU (a user's own loop on GPUs would use
    # nccl through torchrun, see the README).
    dist.init_process_group("gloo", rank=local_rank, world_size=world)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def launch(fn, nproc: int, *args) -> None:
    """Run `fn(*args)` in `nproc` local processes joined in one process group."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    torch.multiprocessing.spawn(_worker, args=(nproc, _free_port(), fn, args), nprocs=nproc)
