"""``segment_s3net``: label-free segmentation of the structure under the seed(s), as one call.

An S3-Net is trained on the image itself (no labels, no checkpoint), every pixel gets a cluster, and
the structure is chosen from the clusters by the seeds (``selection``); with no seed (2D pictures
only) the central component that does not touch the border is taken.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from SegSSLLib.axes import array_axis
from SegSSLLib.errors import SegSSLError
from SegSSLLib.images import check_index_inside, label_image, require_image
from SegSSLLib.intensity import IntensityWindow
from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.s3net.config import S3NetConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3NetSettings:
    config: S3NetConfig = S3NetConfig()  # the network and its training
    slice_axis: int = 2  # ITK axis the training slices are perpendicular to (2 = K, axial for an axial scan)
    max_size: int = 256  # slices larger than this are scaled down for the network
    window: IntensityWindow | None = None  # None: CT soft tissue for data in HU, percentiles otherwise
    fill_holes: bool = True  # fill holes inside the selected structure
    bridge_radius: int = 1  # cut in-plane connections thinner than 2·R+1 pixels to neighbouring structures
    label: int = 1  # label value of the structure
    random_seed: int = 0
    device: object = "auto"  # "auto", "cpu", "cuda", "cuda:N", "mps" or a torch.device
    log_dir: str | None = None  # TensorBoard loss curves

    def check(self) -> None:
        if self.max_size < 16:
            raise SegSSLError(f"`max_size` must be at least 16 pixels, got {self.max_size}")
        if self.bridge_radius < 0:
            raise SegSSLError(f"`bridge_radius` must be 0 or more, got {self.bridge_radius}")
        if not 1 <= self.label <= 65535:
            raise SegSSLError(f"`label` must be between 1 and 65535, got {self.label}")
        if self.slice_axis not in (0, 1, 2):
            raise SegSSLError(f"`slice_axis` must be 0, 1 or 2 (I, J, K), got {self.slice_axis}")


@dataclass
class S3NetResult:
    label_map: sitk.Image  # the structure as ``settings.label`` on the input's grid
    clusters: sitk.Image  # the full cluster map (ids 1..n by increasing intensity), to pick other clusters later
    cluster_count: int
    training_steps: int
    stopped_early: bool  # False: the step budget was used up
    selected_clusters: list[int] = field(default_factory=list)
    rejected_seeds: list[tuple[int, ...]] = field(default_factory=list)  # seeds that lay on background
    warnings: list[str] = field(default_factory=list)


def segment_s3net(
    image: sitk.Image,
    seeds: list[tuple[int, ...]] = (),
    settings: S3NetSettings = S3NetSettings(),
    progress: Progress = NO_PROGRESS,
) -> S3NetResult:
    """The structure under ``seeds`` (zero-based ITK indices: I,J,K in a volume, X,Y in a 2D picture).

    ``image``: a grey-level volume, or a 2D grey or RGB picture (a picture may be given no seed).
    """
    from SegSSLLib.device import select_device
    from SegSSLLib.s3net.clustering import cluster_image
    from SegSSLLib.s3net.selection import select_central_component, select_from_seeds

    require_image(image, "image")
    settings.check()
    seeds = [tuple(int(v) for v in seed) for seed in seeds]
    _check_seeds(image, seeds)
    device = select_device(settings.device) if isinstance(settings.device, str) else settings.device
    writer = _tensorboard_writer(settings.log_dir)
    try:
        clustered = cluster_image(
            image, settings.config, device, progress, seed=settings.random_seed, slice_axis=settings.slice_axis,
            max_size=settings.max_size, window=settings.window, writer=writer,
        )
    finally:
        if writer is not None:
            writer.close()
    steps = len(clustered.training.history)
    log.info(
        "S3-Net: %d clusters after %d training steps%s", int(clustered.clusters.max()), steps,
        "" if clustered.training.stopped_early else " (step budget used up)",
    )
    if seeds:
        slice_axis = array_axis(settings.slice_axis) if image.GetDimension() == 3 else 0
        selection = select_from_seeds(
            clustered.clusters, seeds, settings.fill_holes, slice_axis, bridge_radius=settings.bridge_radius
        )
    else:
        selection = select_central_component(clustered.clusters)
        log.info("no seed given: took the central component that does not touch the border (cluster %s)", selection.clusters)
    rejected = " ".join(",".join(map(str, seed)) for seed in selection.rejected_seeds)
    if seeds and not selection.mask.any():
        raise SegSSLError(
            f"every seed ({rejected}) lies on background (a region spanning most of the image, e.g. air or the "
            "skin around a lesion), so nothing was segmented — give `seeds` inside the structure"
        )
    if not selection.mask.any():
        raise SegSSLError(
            "no central structure was found (every sizeable region touches the image border) — "
            "give `seeds` X,Y inside the structure"
        )
    result = S3NetResult(
        label_image(selection.mask.astype(np.uint16 if settings.label > 255 else np.uint8) * settings.label, image),
        label_image(clustered.clusters, image), int(clustered.clusters.max()), steps, clustered.training.stopped_early,
        list(selection.clusters), list(selection.rejected_seeds),
    )
    if rejected:
        result.warnings.append(
            f"seed(s) {rejected} lie on background (a region spanning most of the image); they were left out — "
            "click inside the structure you want"
        )
        log.warning(result.warnings[-1])
    return result


def _check_seeds(image: sitk.Image, seeds: list[tuple[int, ...]]) -> None:
    for seed in seeds:
        check_index_inside(seed, image.GetSize())
    if image.GetDimension() == 3 and not seeds:
        raise SegSSLError("S3-Net on a volume needs `seeds`: at least one I,J,K index inside the structure")


def _tensorboard_writer(log_dir):
    if not log_dir:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=log_dir)
