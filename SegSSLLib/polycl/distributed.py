"""torchrun support: one process per GPU (or CPU worker), DistributedDataParallel, rank 0 writes.

Started by ``torchrun --nproc_per_node=N -m SegSSLLib pretrain ...`` the environment holds
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; a plain run is a world of one and nothing here
touches ``torch.distributed``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def process_group(device: torch.device):
    """Join the torchrun process group for the duration of a training run (no-op when not launched so)."""
    if not launched_by_torchrun() or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` in a multi-process run; ``model`` itself otherwise."""
    if world_size() == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sum_over_processes(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of ``values`` over all processes, on the CPU (the input is unchanged)."""
    if world_size() == 1:
        return values.detach().clone()
    # NCCL only reduces tensors on the process's GPU; gloo takes CPU tensors.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = values.detach().to(device, copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.cpu()
