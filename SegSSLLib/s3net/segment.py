"""``segment_s3net``: label-free segmentation of the structure under the seed(s), as one call.

An S3-Net is trained on the image itself (no labels, no checkpoint), every pixel gets a cluster, and
the structure is chosen from the clusters by the seeds (``selection``); with no seed (2D pictures
only) the central component that does not touch the border is taken.

With seeds the default ``route`` is the click route (``click_segment``, docs/s3net.md "From a click"):
S3-Net is trained on a box around the clicks, with classical region growing as its candidate;
``route="whole"`` trains one S3-Net over the whole image and picks the seeds' clusters.
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
    # the network and its training; None: S3NetConfig() on the whole image, 16 feature channels on the click route
    config: S3NetConfig | None = None
    slice_axis: int = 2  # ITK axis the training slices are perpendicular to (2 = K, axial for an axial scan)
    max_size: int = 256  # slices larger than this are scaled down for the network
    window: IntensityWindow | None = None  # None: CT soft tissue for data in HU, percentiles otherwise
    fill_holes: bool = True  # fill holes inside the selected structure
    bridge_radius: int = 1  # cut in-plane connections thinner than 2·R+1 pixels to neighbouring structures
    label: int = 1  # label value of the structure
    random_seed: int = 0
    device: object = "auto"  # "auto", "cpu", "cuda", "cuda:N", "mps" or a torch.device
    log_dir: str | None = None  # TensorBoard loss curves (whole-image route)
    route: str = "auto"  # "auto": the click route when seeds are given; "click"; "whole"
    negatives: tuple[tuple[int, ...], ...] = ()  # click route: clicks on what must not be part of the structure
    max_radius_mm: float = 100.0  # click route: nothing farther than this from the clicks is part of the structure

    def check(self) -> None:
        if self.route not in ("auto", "click", "whole"):
            raise SegSSLError(f"`route` must be auto, click or whole, got {self.route!r}")
        if not self.max_radius_mm > 0:
            raise SegSSLError(f"`max_radius_mm` must be positive, got {self.max_radius_mm:g}")
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
    route: str = "whole"  # the route that ran: "click" or "whole"
    click_box: object = None  # click route: the ``click_region.Box`` S3-Net was trained on (clusters are 0 outside it)
    leaked: bool = False  # click route: region growing reached the size limit (max_radius_mm)


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
    negatives = [tuple(int(v) for v in negative) for negative in settings.negatives]
    if seeds and settings.route != "whole":
        return _segment_click(image, seeds, negatives, settings, progress, device)
    if negatives:
        raise SegSSLError("giving `negatives` needs the click route: leave `route` at auto (with `seeds`) or set it to click")
    if settings.route == "click":
        raise SegSSLError("the click route needs `seeds`: at least one index inside the structure")
    config = settings.config or S3NetConfig()
    log.info("S3-Net on the whole image: about %.0f s on one CPU thread", _whole_image_estimate(image, settings, config))
    writer = _tensorboard_writer(settings.log_dir)
    try:
        clustered = cluster_image(
            image, config, device, progress, seed=settings.random_seed, slice_axis=settings.slice_axis,
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


def _segment_click(image, seeds, negatives, settings: S3NetSettings, progress, device) -> S3NetResult:
    """The click route: S3-Net trained on a box around the clicks (``click_segment.segment_click``)."""
    from dataclasses import replace

    from SegSSLLib.s3net.click_segment import ClickSettings, segment_click
    from SegSSLLib.s3net.selection import _is_background, fill_holes, spans_whole_image

    for negative in negatives:
        check_index_inside(negative, image.GetSize(), "negative click")
    defaults = ClickSettings()
    try:
        click = ClickSettings(
            max_radius_mm=settings.max_radius_mm, min_radius_mm=min(defaults.min_radius_mm, settings.max_radius_mm),
            max_size=min(settings.max_size, defaults.max_size), slice_axis=settings.slice_axis,
            config=settings.config or defaults.config,
        )
    except ValueError as exc:
        raise SegSSLError(f"bad S3-Net click setting: {exc} (`max_radius_mm` must be positive)") from None
    click = replace(click, selection=replace(click.selection, bridge_radius=settings.bridge_radius))
    result = segment_click(
        image, seeds, negatives, click, device, progress, seed=settings.random_seed, window=settings.window
    )
    log.info(
        "S3-Net from the click: %d training steps on a box of %s voxels, %.1f s; region growing %s",
        result.steps, "×".join(map(str, result.box.size)), result.seconds,
        "leaked past the size limit" if result.leaked else "ended on its own",
    )
    slice_axis = array_axis(settings.slice_axis) if image.GetDimension() == 3 else 0
    mask = result.mask  # holes are always filled on the click route
    # Background: the click's region (before the size limit) reaches both ends of every axis, or
    # filling its holes more than doubles it (air around the body), or the answer spans the image.
    # ``extent`` is that region on the box region growing ran on when it ended there (it reaches a
    # face of that box only where the face is the image's border), else a coarse whole-image one.
    extent = result.extent
    if (
        not mask.any()
        or spans_whole_image(extent)
        or fill_holes(extent, slice_axis).sum() > 2 * extent.sum()
        or _is_background(mask, slice_axis, 0.75)
    ):
        rejected = " ".join(",".join(map(str, seed)) for seed in seeds)
        raise SegSSLError(
            f"every seed ({rejected}) lies on background (a region spanning most of the image, e.g. air or the "
            "skin around a lesion), so nothing was segmented — give `seeds` inside the structure"
        )
    clusters = np.zeros(mask.shape, np.uint16)  # 0 outside the box S3-Net was trained on
    clusters[result.box.array_slices] = result.clusters
    return S3NetResult(
        label_image(mask.astype(np.uint16 if settings.label > 255 else np.uint8) * settings.label, image),
        label_image(clusters, image), int(result.clusters.max()), result.steps,
        result.steps < result.trainings * click.config.max_steps,
        route="click", click_box=result.box, leaked=result.leaked,
    )


def _whole_image_estimate(image: sitk.Image, settings: S3NetSettings, config: S3NetConfig) -> float:
    from SegSSLLib.s3net.click_region import Box
    from SegSSLLib.s3net.click_segment import ClickSettings, estimate_seconds

    box = Box((0,) * image.GetDimension(), tuple(image.GetSize()))
    click = ClickSettings(max_size=max(16, settings.max_size), slice_axis=settings.slice_axis, config=config)
    return estimate_seconds(box, click)


def _check_seeds(image: sitk.Image, seeds: list[tuple[int, ...]]) -> None:
    for seed in seeds:
        check_index_inside(seed, image.GetSize())
    if image.GetDimension() == 3 and not seeds:
        raise SegSSLError("S3-Net on a volume needs `seeds`: at least one I,J,K index inside the structure")


def _tensorboard_writer(log_dir):
    from SegSSLLib.progress import tensorboard_writer

    return tensorboard_writer(log_dir)
