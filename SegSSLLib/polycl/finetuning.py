"""Fine-tuning the U-Net on labelled slices: from a pretrained encoder (``--init``) or from scratch.

Loss: MONAI's Dice + cross-entropy on two classes (background, the structure). After every epoch
the validation slices are scored with Dice pooled over all of them (single slices are often empty,
where a per-slice Dice says little); the weights of the best epoch are written to ``out``. An
optional first phase trains the decoder only (encoder learning rate 0), then everything.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from SegSSLLib.checkpoints import load_checkpoint, provenance, save_checkpoint
from SegSSLLib.errors import SegSSLError
from SegSSLLib.polycl import distributed
from SegSSLLib.datasets import load_dataset
from SegSSLLib.polycl.datasets import LabelledSliceDataset, require_label_maps, split_labelled_slices, structure_flags
from SegSSLLib.polycl.model import ModelConfig, SegmentationNet
from SegSSLLib.polycl.pretraining import PRETRAIN_KIND
from SegSSLLib.polycl.slice_cache import SlicingSettings, cache_datasets
from SegSSLLib.polycl.training import Precision, epoch_loader, open_writer, seed_epoch
from SegSSLLib.progress import NO_PROGRESS, Progress

log = logging.getLogger(__name__)

SEGMENTATION_KIND = "polycl"


@dataclass(frozen=True)
class FinetuneOptions:
    label: int
    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0
    max_cases: int | None = None
    max_slices: int | None = None
    validation_fraction: float = 0.2
    freeze_epochs: int = 0  # epochs with the encoder frozen before everything trains
    epoch_samples: int = 256  # an epoch draws at least this many slices (repeating few labelled ones)
    augment: bool = True
    workers: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise SegSSLError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.freeze_epochs <= self.epochs:
            raise SegSSLError(f"--freeze-epochs must be between 0 and --epochs ({self.epochs}), got {self.freeze_epochs}")


@dataclass(frozen=True)
class Initialisation:
    """Where the weights start: a checkpoint's config and weights, or None for training from scratch."""

    path: Path
    kind: str
    config: dict
    state_dict: dict
    provenance: dict

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Initialisation":
        checkpoint = load_checkpoint(path, kinds=(PRETRAIN_KIND, SEGMENTATION_KIND), purpose="--init needs")
        return cls(Path(path), checkpoint["kind"], checkpoint["config"], checkpoint["state_dict"], checkpoint["provenance"])


def finetune(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    options: FinetuneOptions,
    device: torch.device,
    model_config: ModelConfig,
    slicing: SlicingSettings,
    init: Initialisation | None = None,
    progress: Progress = NO_PROGRESS,
    cache_dir: str | os.PathLike | None = None,
    logdir: str | None = None,
    excluded_items: np.ndarray | None = None,
) -> dict:
    """Train, keep the best epoch, write ``out``; returns a summary (slices used, best epoch and Dice).

    ``excluded_items``: (case, slice) pairs that neither train nor validate (benchmarks hold out
    test slices this way).
    """
    described = [load_dataset(folder)]
    require_label_maps(described, options.label, "fine-tuning")
    cases = cache_datasets(described, slicing, cache_dir, progress)
    structure_flags(cases, options.label, described)
    train, validation = split_labelled_slices(
        cases, options.label, options.validation_fraction, options.max_cases, options.max_slices, options.seed,
        exclude=excluded_items,
    )
    if len(train) == 0:
        raise SegSSLError("no slices are left for training — lower --val-fraction or add cases")
    log.info("fine-tuning on %d slices (%d validate), label %d", len(train), len(validation), options.label)

    torch.manual_seed(options.seed)  # the initial weights, identical on every process
    model = SegmentationNet(model_config).to(device)
    if init is not None:
        _initialise(model, init)
    encoder_parameters = list(model.encoder.parameters())
    optimizer = torch.optim.Adam(
        [{"params": encoder_parameters}, {"params": list(model.decoder.parameters())}], lr=options.learning_rate
    )
    trainable = distributed.wrap(model, device)
    precision = Precision(device)
    loss_function = _dice_ce_loss()
    augmentation = _augmentation(slicing.image_size) if options.augment else None
    epoch_items = np.resize(train, (max(len(train), options.epoch_samples), 2))
    dataset = LabelledSliceDataset(cases, epoch_items, options.label, augmentation)
    steps_per_epoch = len(epoch_loader(dataset, options.batch_size, options.seed, 0))
    writer = open_writer(logdir, 0)

    best = {"dice": -1.0, "epoch": 0, "state": None}
    history = []
    with progress.stage("fine-tune", total=options.epochs * steps_per_epoch):
        for epoch in range(options.epochs):
            seed_epoch(options.seed, epoch)
            if augmentation is not None:
                augmentation.set_random_state(seed=int(torch.randint(0, 2**31, ()).item()))
            optimizer.param_groups[0]["lr"] = 0.0 if epoch < options.freeze_epochs else options.learning_rate
            trainable.train()
            losses = []
            for batch in epoch_loader(dataset, options.batch_size, options.seed, epoch, workers=options.workers):
                images, labels = batch["image"].to(device), batch["label"].to(device)
                with precision.autocast():
                    logits = trainable(images)
                loss = loss_function(logits.float(), labels)
                precision.step(loss, optimizer)
                losses.append(float(loss.detach()))
                progress.advance(loss=losses[-1])
            dice = validation_dice(model, cases, validation, options.label, device, precision) if len(validation) else None
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "validation_dice": dice}
            history.append(record)
            log.info("epoch %d/%d: loss %.4f, validation Dice %s", epoch + 1, options.epochs, record["loss"],
                     "n/a" if dice is None else f"{dice:.4f}")
            if writer is not None:
                writer.add_scalar("finetune/loss", record["loss"], epoch + 1)
                if dice is not None:
                    writer.add_scalar("finetune/validation_dice", dice, epoch + 1)
            # Without validation slices the last epoch is kept.
            score = dice if dice is not None else float(epoch)
            if score > best["dice"]:
                best = {"dice": score, "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict())}
    if writer is not None:
        writer.close()

    summary = {
        "training_slices": int(len(train)),
        "training_cases": int(len(np.unique(train[:, 0]))),
        "validation_slices": int(len(validation)),
        "best_epoch": best["epoch"],
        "best_validation_dice": best["dice"] if len(validation) else None,
        "history": history,
    }
    if distributed.is_main():
        _save(out, model_config, slicing, options, best["state"], summary, folder, init, described)
    distributed.barrier()
    return summary


def _initialise(model: SegmentationNet, init: Initialisation) -> None:
    if init.kind == PRETRAIN_KIND:
        model.load_encoder(init.state_dict)
    else:
        model.load_state_dict(init.state_dict)


def _dice_ce_loss():
    from monai.losses import DiceCELoss

    # batch=True pools Dice over the batch: slices without the structure then do not give 0/0.
    return DiceCELoss(to_onehot_y=True, softmax=True, batch=True)


def _augmentation(image_size: int):
    """Small random rotations, scalings and shifts (never flips: left and right differ in anatomy)."""
    from monai.transforms import Compose, EnsureTyped, RandAffined

    return Compose(
        [
            RandAffined(
                keys=("image", "label"),
                prob=0.7,
                rotate_range=(0.26,),
                scale_range=(0.15, 0.15),
                translate_range=(0.08 * image_size, 0.08 * image_size),
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            EnsureTyped(keys=("image", "label"), track_meta=False),
        ]
    )


@torch.no_grad()
def validation_dice(model, cases, items, label: int, device, precision: Precision, batch_size: int = 32) -> float:
    """Dice pooled over all ``items`` slices (summed over processes in a torchrun job)."""
    model.eval()
    mine = items[distributed.rank() :: distributed.world_size()]
    counts = torch.zeros(3, dtype=torch.float64)  # intersection, predicted, reference
    for batch in DataLoader(LabelledSliceDataset(cases, mine, label), batch_size=batch_size):
        with precision.autocast():
            logits = model(batch["image"].to(device))
        predicted = logits.argmax(dim=1).cpu() == 1
        reference = batch["label"][:, 0] > 0.5
        counts += torch.tensor([(predicted & reference).sum(), predicted.sum(), reference.sum()], dtype=torch.float64)
    intersection, predicted, reference = distributed.sum_over_processes(counts).tolist()
    return 1.0 if predicted + reference == 0 else 2 * intersection / (predicted + reference)


def _save(out, model_config, slicing, options, state, summary, folder, init, described) -> None:
    names = {value: name for dataset in described for value, name in dataset.label_names.items()}
    config = {
        "model": model_config.to_dict(),
        "slicing": slicing.to_dict(),
        "label": options.label,
        "label_name": names.get(options.label, f"label {options.label}"),
    }
    info = provenance(
        method="PolyCL fine-tuning",
        data=str(Path(folder).resolve()),
        initialisation=_describe_init(init),
        label=options.label,
        epochs=options.epochs,
        freeze_epochs=options.freeze_epochs,
        max_cases=options.max_cases,
        max_slices=options.max_slices,
        processes=distributed.world_size(),
        **{k: v for k, v in summary.items() if k != "history"},
    )
    save_checkpoint(out, SEGMENTATION_KIND, config, state, info, extra={"history": summary["history"]})


def _describe_init(init: Initialisation | None) -> dict:
    if init is None:
        return {"from": "scratch"}
    keep = ("method", "data", "strategy", "epochs", "created", "final_loss")
    return {"from": str(init.path.resolve()), "kind": init.kind, **{k: init.provenance[k] for k in keep if k in init.provenance}}
