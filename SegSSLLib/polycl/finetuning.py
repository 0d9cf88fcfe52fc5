"""Fine-tuning the U-Net on labelled slices: from a pretrained encoder (``--init``) or from scratch.

Loss: MONAI's Dice + cross-entropy on two classes (background, the structure). After every epoch
the validation slices are scored with Dice pooled over all of them (single slices are often empty,
where a per-slice Dice says little) and with the loss; the best epoch's weights (by Dice, or by the
loss when no validation slice shows the structure) are written to ``out`` together with the state
that ``--resume`` needs. An optional first phase trains the decoder only (the encoder's parameters
get no gradients), then everything.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from SegSSLLib.checkpoints import load_checkpoint, load_weights, provenance, save_checkpoint
from SegSSLLib.errors import SegSSLError
from SegSSLLib.polycl import distributed
from SegSSLLib.datasets import load_dataset
from SegSSLLib.polycl.datasets import LabelledSliceDataset, require_label_maps, split_labelled_slices, structure_flags
from SegSSLLib.polycl.model import ModelConfig, SegmentationNet
from SegSSLLib.polycl.pretraining import PRETRAIN_KIND
from SegSSLLib.polycl.slice_cache import SlicingSettings, cache_datasets, cache_key
from SegSSLLib.polycl.training import Precision, check_epochs_left, check_same_run, epoch_loader, open_writer, seed_epoch
from SegSSLLib.polycl.transfer import parameter_groups, set_trainable_blocks, trainable_encoder_blocks
from SegSSLLib.progress import NO_PROGRESS, Progress

log = logging.getLogger(__name__)

SEGMENTATION_KIND = "polycl"
# ``validation_fraction`` None: this share, or with the scratch check a share chosen from the labelled
# data (``scratch_check.validation_share``).
DEFAULT_VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class FinetuneOptions:
    label: int
    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0
    max_cases: int | None = None
    max_slices: int | None = None
    validation_fraction: float | None = None  # None: DEFAULT_VALIDATION_FRACTION, or chosen by the scratch check
    freeze_epochs: int = 0  # epochs with the encoder frozen before everything trains
    epoch_samples: int = 256  # an epoch draws at least this many slices (repeating few labelled ones)
    augment: bool = True
    workers: int = 0
    # Pretrained layers (``transfer``): their learning-rate factor, the per-block decay towards the
    # input, and epochs over which encoder blocks are unfrozen one by one after ``freeze_epochs``.
    encoder_lr_factor: float = 1.0
    layer_decay: float = 1.0
    unfreeze_epochs: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise SegSSLError(f"`{name}` must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.freeze_epochs <= self.epochs:
            raise SegSSLError(f"`freeze_epochs` must be between 0 and `epochs` ({self.epochs}), got {self.freeze_epochs}")
        if self.unfreeze_epochs < 0 or self.freeze_epochs + self.unfreeze_epochs > self.epochs:
            raise SegSSLError(
                f"`unfreeze_epochs` must be 0 or more and fit after `freeze_epochs` within `epochs` ({self.epochs}), "
                f"got {self.unfreeze_epochs}"
            )
        if self.validation_fraction is not None and not 0 <= self.validation_fraction < 1:
            raise SegSSLError(f"`validation_fraction` must be in [0, 1), got {self.validation_fraction}")
        for name in ("encoder_lr_factor", "layer_decay"):
            if not 0 < getattr(self, name) <= 1:
                raise SegSSLError(f"`{name}` must be in (0, 1], got {getattr(self, name)}")


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
        checkpoint = load_checkpoint(path, kinds=(PRETRAIN_KIND, SEGMENTATION_KIND), purpose="`init` needs")
        return cls(Path(path), checkpoint["kind"], checkpoint["config"], checkpoint["state_dict"], checkpoint["provenance"])


def labelled_cases(folder, label: int, slicing: SlicingSettings, cache_dir=None, progress: Progress = NO_PROGRESS):
    """(data sets, their cases sliced and cached) for fine-tuning, after checking each case has a label map with
    ``label`` and computing its per-slice structure flags (a second call finds the slices in the cache)."""
    described = [load_dataset(folder)]
    require_label_maps(described, label, "fine-tuning")
    cases = cache_datasets(described, slicing, cache_dir, progress)
    structure_flags(cases, label, described)
    return described, cases


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
    resume: bool = False,
) -> dict:
    """Train, keep the best epoch, write ``out`` after every epoch; returns a summary (slices used, best epoch and Dice).

    ``excluded_items``: (case, slice) pairs that neither train nor validate (benchmarks hold out
    test slices this way). ``resume``: continue the run saved in ``out`` from its last epoch.
    """
    if options.validation_fraction is None:
        options = replace(options, validation_fraction=DEFAULT_VALIDATION_FRACTION)
    described, cases = labelled_cases(folder, options.label, slicing, cache_dir, progress)
    train, validation = split_labelled_slices(
        cases, options.label, options.validation_fraction, options.max_cases, options.max_slices, options.seed,
        exclude=excluded_items,
    )
    if len(train) == 0:
        raise SegSSLError("no slices are left for training — lower `validation_fraction` or add cases")
    log.info("fine-tuning on %d slices (%d validate), label %d", len(train), len(validation), options.label)
    selection = _selection_rule(cases, validation, options.label)
    if selection != "validation Dice":
        log.warning("the saved model is chosen by %s", selection)

    flagged = (init.provenance.get("diagnostics") or {}).get("warning") if init is not None else None
    if flagged:
        log.warning("the `init` encoder was flagged when it was pretrained (%s); compare with a run from scratch, "
                    "or keep it from doing harm with `encoder_lr_factor` and `freeze_epochs`", flagged.split(" — ")[0])
    torch.manual_seed(options.seed)  # the initial weights, identical on every process
    model = SegmentationNet(model_config).to(device)
    if init is not None:
        _initialise(model, init)
    groups = parameter_groups(model, options.learning_rate, options.encoder_lr_factor, options.layer_decay)
    optimizer = torch.optim.Adam(groups, lr=options.learning_rate)
    precision = Precision(device)
    config = _model_config(model_config, slicing, options, described)
    # Settings and data that must match for --resume to continue the same run.
    run_identity = {
        **asdict(options), "epochs": None, "workers": None, "processes": distributed.world_size(),
        "data": [cache_key(case, slicing) for dataset in described for case in dataset.cases],
        "initialisation": _describe_init(init),
    }
    best = {"score": None, "epoch": 0, "dice": None, "state": None}
    history: list[dict] = []
    if resume and Path(out).exists():
        best, history = _restore(out, config, run_identity, options.epochs, model, optimizer, precision)
        log.info("resuming %s after epoch %d of %d", out, len(history), options.epochs)
    elif resume:
        log.info("`resume`: %s does not exist yet, starting from epoch 1", out)

    loss_function = _dice_ce_loss()
    augmentation = _augmentation(slicing.image_size) if options.augment else None
    epoch_items = np.resize(train, (max(len(train), options.epoch_samples), 2))
    dataset = LabelledSliceDataset(cases, epoch_items, options.label, augmentation)
    steps_per_epoch = len(epoch_loader(dataset, options.batch_size, options.seed, 0))
    writer = open_writer(logdir, len(history))
    trainable, trained_blocks = None, None
    block_count = len(model.encoder.blocks)

    def summary() -> dict:
        return {
            "training_slices": int(len(train)),
            "training_cases": int(len(np.unique(train[:, 0]))),
            "validation_slices": int(len(validation)),
            "model_selection": selection,
            "best_epoch": best["epoch"],
            "best_validation_dice": best["dice"],
            "history": history,
        }

    first_epoch = len(history)
    with progress.stage("fine-tune", total=(options.epochs - first_epoch) * steps_per_epoch):
        for epoch in range(first_epoch, options.epochs):
            seed_epoch(options.seed, epoch)
            if augmentation is not None:
                augmentation.set_random_state(seed=int(torch.randint(0, 2**31, ()).item()))
            blocks = trainable_encoder_blocks(epoch, block_count, options.freeze_epochs, options.unfreeze_epochs)
            if trainable is None or blocks != trained_blocks:
                # Frozen parameters get no gradient, so Adam neither moves them nor gathers moments
                # for them; DDP is rebuilt because it fixes the set of trained parameters.
                set_trainable_blocks(model, blocks)
                trainable, trained_blocks = distributed.wrap(model, device), blocks
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
            scores = validation_scores(model, cases, validation, options.label, device, precision) if len(validation) else {}
            record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "validation_dice": scores.get("dice"),
                      "validation_loss": scores.get("loss")}
            history.append(record)
            log.info("epoch %d/%d: loss %.4f, validation Dice %s", epoch + 1, options.epochs, record["loss"],
                     "n/a" if record["validation_dice"] is None else f"{record['validation_dice']:.4f}")
            if writer is not None:
                for name in ("loss", "validation_dice", "validation_loss"):
                    if record[name] is not None:
                        writer.add_scalar(f"finetune/{name}", record[name], epoch + 1)
            score = selection_score(selection, record)
            if best["score"] is None or score > best["score"]:
                best = {"score": score, "epoch": epoch + 1, "dice": record["validation_dice"],
                        "state": copy.deepcopy(model.state_dict())}
            if distributed.is_main():
                _save(out, config, best, model, optimizer, precision, run_identity, summary(), options, folder, init)
            distributed.barrier()
    if writer is not None:
        writer.close()
    return summary()


def _selection_rule(cases, validation: np.ndarray, label: int) -> str:
    """How the saved epoch is chosen: by validation Dice when validation shows the structure."""
    if len(validation) == 0:
        return "last epoch (no validation slices)"
    if any(cases[c].labels is not None and (np.asarray(cases[c].labels[s]) == label).any() for c, s in validation):
        return "validation Dice"
    # Dice is 0/0 on every epoch; an empty prediction would win. The loss still ranks epochs.
    return f"lowest validation loss (no validation slice shows label {label})"


def selection_score(selection: str, record: dict) -> tuple:
    """An epoch's rank under ``selection`` (``_selection_rule``): larger is better; ties in Dice go to the lower validation loss."""
    if selection == "validation Dice":
        return (record["validation_dice"], -record["validation_loss"])
    if selection.startswith("lowest validation loss"):
        return (-record["validation_loss"],)
    return (record["epoch"],)


def _initialise(model: SegmentationNet, init: Initialisation) -> None:
    if init.kind == PRETRAIN_KIND:
        encoder = {k.removeprefix("encoder."): v for k, v in init.state_dict.items() if k.startswith("encoder.")}
        load_weights(model.encoder, encoder, init.path, " (encoder)")
    else:
        load_weights(model, init.state_dict, init.path)


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
def validation_scores(model, cases, items, label: int, device, precision: Precision, batch_size: int = 32) -> dict:
    """{"dice": Dice pooled over all ``items`` slices (None when none shows the structure), "loss": mean Dice+CE}.

    Summed over processes in a torchrun job.
    """
    model.eval()
    loss_function = _dice_ce_loss()
    mine = items[distributed.rank() :: distributed.world_size()]
    totals = torch.zeros(5, dtype=torch.float64)  # intersection, predicted, reference, loss × slices, slices
    for batch in DataLoader(LabelledSliceDataset(cases, mine, label), batch_size=batch_size):
        with precision.autocast():
            logits = model(batch["image"].to(device))
        loss = float(loss_function(logits.float(), batch["label"].to(device)))
        predicted = logits.argmax(dim=1).cpu() == 1
        reference = batch["label"][:, 0] > 0.5
        counts = [(predicted & reference).sum(), predicted.sum(), reference.sum(), loss * len(predicted), len(predicted)]
        totals += torch.tensor(counts, dtype=torch.float64)
    intersection, predicted, reference, loss_sum, slices = distributed.sum_over_processes(totals).tolist()
    return {"dice": 2 * intersection / (predicted + reference) if reference > 0 else None, "loss": loss_sum / slices}


def _model_config(model_config, slicing, options, described) -> dict:
    names = {value: name for dataset in described for value, name in dataset.label_names.items()}
    return {
        "model": model_config.to_dict(),
        "slicing": slicing.to_dict(),
        "label": options.label,
        "label_name": names.get(options.label, f"label {options.label}"),
    }


def _save(out, config, best, model, optimizer, precision, run_identity, summary, options, folder, init) -> None:
    """The best weights so far as the model, and everything ``--resume`` needs to go on."""
    info = provenance(
        method="PolyCL fine-tuning",
        data=str(Path(folder).resolve()),
        initialisation=_describe_init(init),
        label=options.label,
        epochs=len(summary["history"]),
        freeze_epochs=options.freeze_epochs,
        unfreeze_epochs=options.unfreeze_epochs,
        encoder_lr_factor=options.encoder_lr_factor,
        layer_decay=options.layer_decay,
        max_cases=options.max_cases,
        max_slices=options.max_slices,
        processes=distributed.world_size(),
        **{k: v for k, v in summary.items() if k != "history"},
    )
    extra = {
        "history": summary["history"],
        "run": run_identity,
        # The random state needs no saving: every epoch reseeds from (seed, epoch) (training.seed_epoch).
        "resume": {
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "grad_scaler": precision.scaler.state_dict(),
            "best": {k: best[k] for k in ("score", "epoch", "dice")},
        },
    }
    save_checkpoint(out, SEGMENTATION_KIND, config, best["state"], info, extra)


def _restore(out, config, run_identity, epochs, model, optimizer, precision) -> tuple[dict, list[dict]]:
    checkpoint = load_checkpoint(out, kinds=(SEGMENTATION_KIND,), purpose="`resume` needs")
    saved = checkpoint["extra"]
    if "resume" not in saved:
        raise SegSSLError(f"`resume`: {out} holds no training state (made by an older SegSSL) — write to a new `out`")
    check_same_run(out, checkpoint, config, run_identity)
    history = list(saved["history"])
    check_epochs_left(out, len(history), epochs)
    state = saved["resume"]
    load_weights(model, state["state_dict"], out)
    optimizer.load_state_dict(state["optimizer"])
    if state.get("grad_scaler"):
        precision.scaler.load_state_dict(state["grad_scaler"])
    best = {**state["best"], "state": checkpoint["state_dict"]}
    best["score"] = tuple(best["score"]) if best["score"] is not None else None
    return best, history


def _describe_init(init: Initialisation | None) -> dict:
    if init is None:
        return {"from": "scratch"}
    keep = ("method", "data", "strategy", "epochs", "created", "final_loss", "diagnostics")
    return {"from": str(init.path.resolve()), "kind": init.kind, **{k: init.provenance[k] for k in keep if k in init.provenance}}
