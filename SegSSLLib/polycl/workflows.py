"""PolyCL's public workflows: ``pretrain`` and ``finetune`` from data folders to a model file.

They wrap the training loops (``pretraining``, ``finetuning``) with what every call needs: the device,
the network and slicing settings (from an ``init`` checkpoint when there is one), and a torchrun process
group when the process was started by torchrun.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from SegSSLLib.intensity import IntensityWindow
from SegSSLLib.polycl.finetuning import FinetuneOptions, Initialisation
from SegSSLLib.polycl.model import ModelConfig
from SegSSLLib.polycl.pretraining import PretrainOptions
from SegSSLLib.polycl.slice_cache import SlicingSettings
from SegSSLLib.progress import NO_PROGRESS, Progress


@dataclass(frozen=True)
class TrainingSettings:
    """Where and how a PolyCL training run runs (the loop's own settings are in the options)."""

    model: ModelConfig = ModelConfig()  # the U-Net; ignored by ``finetune`` with an ``init`` checkpoint
    slicing: SlicingSettings | None = None  # None: CT soft-tissue window, slices of ``model.image_size``
    device: object = "auto"  # "auto", "cpu", "cuda", "cuda:N", "mps" or a torch.device
    cache_dir: str | os.PathLike | None = None  # sliced volumes; None: $SEGSSL_CACHE_DIR or the user cache
    logdir: str | None = None  # TensorBoard scalars
    resume: bool = False  # continue the run saved in ``out`` from its last epoch

    def slicing_or_default(self) -> SlicingSettings:
        return self.slicing or SlicingSettings(window=IntensityWindow(), image_size=self.model.image_size)


def pretrain(
    data: str | os.PathLike | list[str | os.PathLike],
    out: str | os.PathLike,
    options: PretrainOptions = PretrainOptions(),
    settings: TrainingSettings = TrainingSettings(),
    progress: Progress = NO_PROGRESS,
) -> list[dict]:
    """Contrastive pretraining of the encoder on the volumes of ``data`` (folders); writes ``out`` every epoch.

    Returns the history: one record per epoch (loss, slices per second, triplets).
    """
    from SegSSLLib.polycl import distributed, pretraining

    folders = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    device = _device(settings.device)
    with distributed.process_group(device):
        return pretraining.pretrain(
            folders, out, settings.model, settings.slicing_or_default(), options, device, progress,
            cache_dir=settings.cache_dir, logdir=settings.logdir, resume=settings.resume,
        )


def finetune(
    data: str | os.PathLike,
    out: str | os.PathLike,
    options: FinetuneOptions,
    settings: TrainingSettings = TrainingSettings(),
    init: str | os.PathLike | Initialisation | None = None,
    progress: Progress = NO_PROGRESS,
    scratch_check: bool = True,
) -> dict:
    """Fine-tune the segmentation U-Net on the labelled volumes of ``data`` (an MSD folder); writes ``out``.

    ``init``: a ``pretrain`` (or ``finetune``) output to start from; its network and slicing are kept.
    ``scratch_check`` (with a ``pretrain`` file as ``init``): also fine-tune the same network from
    scratch and keep whichever scores better on the validation slices, with a warning when that is
    scratch (``scratch_check.py``; about twice the time).
    Returns a summary: training slices, best epoch, best validation Dice (and ``scratch_check``).
    """
    from SegSSLLib.polycl import distributed, finetuning
    from SegSSLLib.polycl import scratch_check as check

    if init is not None and not isinstance(init, Initialisation):
        init = Initialisation.load(init)
    if init is not None and settings.slicing is None:
        model, slicing = ModelConfig.from_dict(init.config["model"]), SlicingSettings.from_dict(init.config["slicing"])
    else:
        model, slicing = settings.model, settings.slicing_or_default()
    checked = scratch_check and check.applies(init)
    if checked:
        check.check_validation(options)  # before any slicing
    device = _device(settings.device)
    with distributed.process_group(device):
        return (check.finetune_checked if checked else finetuning.finetune)(
            data, out, options, device, model, slicing, init, progress,
            cache_dir=settings.cache_dir, logdir=settings.logdir, resume=settings.resume,
        )


def _device(device):
    from SegSSLLib.device import select_device

    return select_device(device) if isinstance(device, str) else device
