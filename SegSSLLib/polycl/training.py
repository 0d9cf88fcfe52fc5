"""What the pretraining and fine-tuning loops share: seeding per epoch, data loaders over
(distributed) samplers, mixed precision and TensorBoard writers.

Every epoch reseeds torch from (seed, epoch, rank) and draws its shuffle from (seed, epoch), so an
epoch depends only on the weights and optimizer state it starts from: a run resumed from the
checkpoint of epoch k repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from SegSSLLib.errors import SegSSLError
from SegSSLLib.polycl import distributed


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed torch (dropout, augmentations) for one epoch of this process."""
    torch.manual_seed((seed * 1_000_003 + epoch * 1_009 + distributed.rank()) % 2**63)


def epoch_loader(
    dataset: Dataset, batch_size: int, seed: int, epoch: int, shuffle: bool = True, workers: int = 0
) -> DataLoader:
    """This process's share of ``dataset`` for ``epoch`` (all of it in a one-process run).

    The sampler pads with repeated items so every process runs the same number of steps (DDP
    needs that); the last batch may be smaller.
    """
    sampler = DistributedSampler(
        dataset, num_replicas=distributed.world_size(), rank=distributed.rank(), shuffle=shuffle, seed=seed
    )
    sampler.set_epoch(epoch)
    # Each worker process starts with a copy of the transforms' random state: without reseeding,
    # every worker would repeat the same augmentations. MONAI's worker_init_fn reseeds them from the
    # worker's seed, which torch derives from the (epoch-seeded) main generator, so runs still repeat.
    init = None
    if workers > 0:
        from monai.data.utils import worker_init_fn as init
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, worker_init_fn=init)


def check_epochs_left(out, done: int, epochs: int) -> None:
    """--resume trains up to --epochs: a file that already holds more epochs cannot be continued."""
    if done > epochs:
        raise SegSSLError(
            f"`resume`: {out} already holds {done} epochs, more than `epochs` {epochs} — "
            f"give `epochs` {done} or more to train further"
        )


def check_same_run(out, checkpoint: dict, config: dict, run_identity: dict) -> None:
    """--resume continues only the run that wrote ``out``: same settings, same data, same process count."""
    saved_run = checkpoint["extra"].get("run", {})
    differing = [k for k in config if checkpoint["config"].get(k) != config[k]]
    differing += [k for k in run_identity if saved_run.get(k) != run_identity[k] and k not in differing]
    if differing:
        raise SegSSLError(
            f"`resume`: {out} was trained with other settings ({', '.join(differing)}) — "
            "use the same options and data, or write to a new `out`"
        )


def make_deterministic(device: torch.device) -> None:
    """Ask CUDA for repeatable results (cuDNN and cuBLAS pick deterministic kernels).

    On a CPU a seeded run already repeats bit for bit; on CUDA some kernels (atomics in
    backward passes, cuDNN's autotuner) vary from run to run unless told otherwise. Operations
    without a deterministic kernel only warn.
    """
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


class Precision:
    """float16 autocast with gradient scaling on CUDA; plain float32 elsewhere."""

    def __init__(self, device: torch.device):
        self.enabled = device.type == "cuda"
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled)

    def autocast(self):
        return torch.autocast(self.device_type, dtype=torch.float16) if self.enabled else nullcontext()

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def open_writer(logdir: str | None, first_step: int):
    """A TensorBoard writer on rank 0 when ``logdir`` is given, else None.

    ``purge_step`` drops events a previous, interrupted run wrote after the resumed point, so the
    curves show each step once.
    """
    if not logdir or not distributed.is_main():
        return None
    from SegSSLLib.progress import tensorboard_writer

    return tensorboard_writer(logdir, purge_step=first_step if first_step > 0 else None)

