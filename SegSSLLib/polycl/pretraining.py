"""Contrastive pretraining of the encoder with S / O / M example selection.

One epoch: draw a (anchor, positive, negative) triplet for every slice (``selection``), shuffle,
and minimise InfoNCE with all other batch items as extra negatives (``losses``). After every epoch
the checkpoint (weights, optimizer, history) is written atomically, so ``--resume`` continues
from the last finished epoch and gives the same weights as a run that was never interrupted.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from SegSSLLib.checkpoints import load_checkpoint, provenance, save_checkpoint
from SegSSLLib.errors import SegSSLError
from SegSSLLib.polycl import distributed
from SegSSLLib.datasets import load_dataset
from SegSSLLib.polycl.datasets import TripletDataset, require_label_maps, structure_flags
from SegSSLLib.polycl.losses import info_nce
from SegSSLLib.polycl.model import ContrastiveNet, ModelConfig
from SegSSLLib.polycl.selection import SliceRelations, needs_flags, sample_triplets
from SegSSLLib.polycl.slice_cache import SlicingSettings, cache_datasets, cache_key
from SegSSLLib.polycl.training import Precision, check_epochs_left, check_same_run, epoch_loader, open_writer, seed_epoch
from SegSSLLib.progress import NO_PROGRESS, Progress

log = logging.getLogger(__name__)

PRETRAIN_KIND = "polycl-pretrain"


@dataclass(frozen=True)
class PretrainOptions:
    strategy: str = "S"
    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 1e-3
    temperature: float = 0.1
    seed: int = 0
    label: int | None = None  # structure-present flags for O / M
    workers: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise SegSSLError(f"`{name}` must be at least 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise SegSSLError(f"`temperature` must be positive, got {self.temperature}")


def pretrain(
    folders: list[str | os.PathLike],
    out: str | os.PathLike,
    model_config: ModelConfig,
    slicing: SlicingSettings,
    options: PretrainOptions,
    device: torch.device,
    progress: Progress = NO_PROGRESS,
    cache_dir: str | os.PathLike | None = None,
    logdir: str | None = None,
    resume: bool = False,
) -> list[dict]:
    """Pretrain on every volume of ``folders``, writing ``out`` after each epoch; returns the history."""
    described = [load_dataset(folder) for folder in folders]
    if not needs_flags(options.strategy) and options.label is not None:
        log.warning("`label` %d is not used by `strategy` %s (it pairs slices by scan only); ignoring it",
                    options.label, options.strategy)
        options = replace(options, label=None)
    with_flags = needs_flags(options.strategy)
    if with_flags:
        if options.label is None:
            raise SegSSLError(f"`strategy` {options.strategy} needs `label` N: the structure whose presence pairs slices")
        require_label_maps(described, options.label, f"`strategy` {options.strategy} with `label`")
    if sum(len(d.cases) for d in described) < 2 and options.strategy != "O":
        raise SegSSLError(
            f"`strategy` {options.strategy} takes negatives from other volumes, but the data hold one volume — "
            "add volumes (several `data` folders are fine)"
        )
    cases = cache_datasets(described, slicing, cache_dir, progress)
    volume_of_slice = np.concatenate([np.full(case.num_slices, i) for i, case in enumerate(cases)])
    flags = structure_flags(cases, options.label, described) if with_flags else None
    relations = SliceRelations(options.strategy, volume_of_slice, flags)
    # Which anchors have partners is fixed by the data, so every epoch has this many triplets.
    triplet_count = len(sample_triplets(relations, options.seed, 0))
    steps_per_epoch = math.ceil(math.ceil(triplet_count / distributed.world_size()) / options.batch_size)

    config = {
        "model": model_config.to_dict(),
        "slicing": slicing.to_dict(),
        "strategy": options.strategy,
        "temperature": options.temperature,
        "label": options.label,
    }
    # Settings that must match for --resume to continue the same run.
    run_identity = {
        **asdict(options), "epochs": None, "workers": None, "cases": [c.name for c in cases],
        "processes": distributed.world_size(),  # the batches, and so the steps, depend on it
        "data": [cache_key(case, slicing) for dataset in described for case in dataset.cases],  # paths, sizes, times
    }

    torch.manual_seed(options.seed)  # the initial weights, identical on every process
    model = ContrastiveNet(model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    precision = Precision(device)
    history: list[dict] = []
    if resume and Path(out).exists():
        history = _restore(out, config, run_identity, model, optimizer, precision)
        check_epochs_left(out, len(history), options.epochs)
        log.info("resuming %s after epoch %d of %d", out, len(history), options.epochs)
    elif resume:
        log.info("`resume`: %s does not exist yet, starting from epoch 1", out)
    trainable = distributed.wrap(model, device)

    writer = open_writer(logdir, len(history) * steps_per_epoch)
    first_epoch = len(history)
    with progress.stage("pretrain", total=(options.epochs - first_epoch) * steps_per_epoch):
        for epoch in range(first_epoch, options.epochs):
            seed_epoch(options.seed, epoch)
            triplets = sample_triplets(relations, options.seed, epoch)
            loader = epoch_loader(TripletDataset(cases, triplets), options.batch_size, options.seed, epoch, workers=options.workers)
            trainable.train()
            started, losses, slices_seen = time.perf_counter(), [], 0
            for anchor, positive, negative, indices in loader:
                batch = torch.cat([anchor, positive, negative]).to(device, non_blocking=True)
                with precision.autocast():
                    embeddings = trainable(batch)
                a, p, n = embeddings.chunk(3)
                indices = indices.numpy()
                mask = relations.negative_mask(indices[:, 0], np.concatenate([indices[:, 0], indices[:, 1], indices[:, 2]]))
                loss = info_nce(a, p, n, torch.from_numpy(mask), options.temperature)
                precision.step(loss, optimizer)
                losses.append(float(loss.detach()))
                slices_seen += batch.shape[0]
                step = epoch * steps_per_epoch + len(losses)
                if writer is not None:
                    writer.add_scalar("pretrain/loss", losses[-1], step)
                progress.advance(loss=losses[-1])
            seconds = time.perf_counter() - started
            totals = distributed.sum_over_processes(torch.tensor([sum(losses), len(losses), slices_seen], dtype=torch.float64))
            record = {
                "epoch": epoch + 1,
                "loss": float(totals[0] / totals[1]),
                "slices_per_second": float(totals[2]) / seconds,
                "triplets": int(len(triplets)),
            }
            history.append(record)
            log.info("epoch %d/%d: loss %.4f, %.1f slices/s", epoch + 1, options.epochs, record["loss"], record["slices_per_second"])
            if writer is not None:
                writer.add_scalar("pretrain/epoch_loss", record["loss"], epoch + 1)
                writer.add_scalar("pretrain/slices_per_second", record["slices_per_second"], epoch + 1)
                writer.flush()
            if distributed.is_main():
                _save(out, config, run_identity, model, optimizer, precision, history, options, folders, len(volume_of_slice))
            distributed.barrier()
    if writer is not None:
        writer.close()
    return history


def _save(out, config, run_identity, model, optimizer, precision, history, options, folders, slice_count) -> None:
    info = provenance(
        method="PolyCL contrastive pretraining",
        data=[str(Path(f).resolve()) for f in folders],
        slices=slice_count,
        epochs=len(history),
        strategy=options.strategy,
        batch_size=options.batch_size,
        processes=distributed.world_size(),
        final_loss=history[-1]["loss"],
    )
    extra = {
        "run": run_identity,
        "history": history,
        "optimizer": optimizer.state_dict(),
        "grad_scaler": precision.scaler.state_dict(),
    }
    save_checkpoint(out, PRETRAIN_KIND, config, model.state_dict(), info, extra)


def _restore(out, config, run_identity, model, optimizer, precision) -> list[dict]:
    checkpoint = load_checkpoint(out, kinds=(PRETRAIN_KIND,), purpose="`resume` needs")
    saved = checkpoint["extra"]
    check_same_run(out, checkpoint, config, run_identity)
    model.load_state_dict(checkpoint["state_dict"])
    optimizer.load_state_dict(saved["optimizer"])
    if saved.get("grad_scaler"):
        precision.scaler.load_state_dict(saved["grad_scaler"])
    return list(saved["history"])
