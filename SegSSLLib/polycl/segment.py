"""``segment_polycl``: a fine-tuned PolyCL model (a ``finetune`` output) on a volume, as one call."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import SimpleITK as sitk

from SegSSLLib.errors import SegSSLError
from SegSSLLib.images import label_image, require_image
from SegSSLLib.progress import NO_PROGRESS, Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolyCLSettings:
    batch_size: int | None = None  # slices per network pass; None: 4 on a CPU, 16 on a GPU
    keep_largest: bool = True  # keep only the largest connected component
    device: object = "auto"  # "auto", "cpu", "cuda", "cuda:N", "mps" or a torch.device


@dataclass
class PolyCLResult:
    label_map: sitk.Image  # the model's label value where the structure is, on the input's grid
    label: int
    label_name: str
    warnings: list[str] = field(default_factory=list)


def load_polycl_segmenter(checkpoint: str | os.PathLike, device: object = "auto"):
    """A fine-tuned PolyCL model loaded onto ``device`` ("auto", "cpu", "cuda", ... or a torch.device)."""
    from SegSSLLib.device import select_device
    from SegSSLLib.polycl.inference import PolyCLSegmenter

    if not checkpoint:
        raise SegSSLError("`checkpoint` is needed: a PolyCL model file made by finetune")
    device = select_device(device) if isinstance(device, str) else device
    segmenter = PolyCLSegmenter.from_checkpoint(checkpoint, device)
    log.info("PolyCL: %s (label %d)", segmenter.label_name, segmenter.label)
    return segmenter


def segment_polycl(
    image: sitk.Image,
    checkpoint: str | os.PathLike,
    settings: PolyCLSettings = PolyCLSettings(),
    progress: Progress = NO_PROGRESS,
    segmenter=None,
) -> PolyCLResult:
    """The structure a fine-tuned PolyCL model (``checkpoint``) was trained on, in the grey-level volume ``image``.

    ``segmenter``: the model already loaded (``load_polycl_segmenter``), to reuse one model for many
    volumes; by default ``checkpoint`` is loaded onto ``settings.device``.
    """
    require_image(image, "image", dimensions=(3,))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise SegSSLError("`image` has several components per voxel (e.g. RGB); PolyCL needs a grey-level volume")
    if segmenter is None:
        segmenter = load_polycl_segmenter(checkpoint, settings.device)
    labels = segmenter.segment(image, settings.batch_size, settings.keep_largest, progress)
    return PolyCLResult(label_image(labels, image), segmenter.label, segmenter.label_name)
