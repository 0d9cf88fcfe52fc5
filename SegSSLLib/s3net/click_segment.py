"""S3-Net from a click: the structure under positive clicks (minus what negative clicks point at).

1. A *limit box* reaches ``max_radius_mm`` around the clicks: the size prior. Nothing outside it
   can be part of the answer.
2. Classical region growing (``region_growing.region_grow``: curvature flow, confidence connected,
   a closing) runs from the clicks on the limit box plus ``region_margin_mm`` only (a 2D picture: on
   all of it), and its region is clipped to the limit box. It *leaked* when it reaches a face of the
   limit box that is not the image's own border (the structure continues into tissue of the same
   density); otherwise it ended on its own and its region gives the structure's extent. Growing on
   the box instead of the whole volume is 2–3 times less work on a 512×512 CT; a region that ends
   inside the box is the same, and a leaked one takes its statistics from the tissue near the click.
3. An S3-Net (the paper's network and losses, ``clustering.cluster_image``) is trained on a *work
   box* only: the region-growing extent plus ``margin_mm`` (at least ``min_radius_mm`` around the
   clicks) or, after a leak, the whole limit box. Local training sees the contrasts around the
   structure rather than every tissue of the body, and is far less work.
4. ``click_selection.combine`` makes the mask from the clusters and the candidate; if that mask
   reaches an open face of the work box, the box grows by ``margin_mm`` on those faces (up to the
   limit box) and S3-Net is trained again, at most ``max_growths`` times.
5. Negative clicks remove what is geodesically closer to them than to any positive click.

The reference mask is never used: every choice comes from the image and the clicks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.s3net.click_region import Box, box_around, box_of_mask, clip_box, grow_box, open_faces, union_box
from SegSSLLib.s3net.click_selection import ClickSelectionSettings, combine, exclude_negatives
from SegSSLLib.s3net.config import S3NetConfig
from SegSSLLib.s3net.region_growing import GrownRegion, RegionGrowingSettings, coarse_region, region_grow_near

log = logging.getLogger(__name__)


def _click_config() -> S3NetConfig:
    # 16 feature channels: the boxes are small, and the deformable convolution's cost grows with the
    # square of the width (RESULTS.md, S3-Net from a click).
    return S3NetConfig(features=16)


@dataclass(frozen=True)
class ClickSettings:
    max_radius_mm: float = 100.0  # the size prior: the limit box reaches this far around the clicks
    region_margin_mm: float | None = 20.0  # region growing runs on the limit box plus this much (None: the whole image)
    elongated: bool = True  # lift the limit along the slice axis for a region that leaves it only that way
    min_radius_mm: float = 20.0  # the work box reaches at least this far around the clicks
    margin_mm: float = 10.0  # around the region-growing extent, and each growth step
    max_growths: int = 1
    max_size: int = 96  # in-plane pixels the network sees at most (larger boxes are scaled down)
    slice_axis: int = 2  # ITK axis the training slices are perpendicular to
    config: S3NetConfig = field(default_factory=_click_config)
    selection: ClickSelectionSettings = field(default_factory=ClickSelectionSettings)
    region_growing: RegionGrowingSettings = field(default_factory=RegionGrowingSettings)

    def __post_init__(self):
        if not 0 < self.min_radius_mm <= self.max_radius_mm:
            raise ValueError(
                f"radii must satisfy 0 < min_radius_mm <= max_radius_mm, got {self.min_radius_mm}, {self.max_radius_mm}"
            )
        if self.margin_mm <= 0 or self.max_growths < 0 or self.max_size < 16 or (self.region_margin_mm or 0) < 0:
            raise ValueError("margin_mm must be positive, max_growths and region_margin_mm 0 or more, max_size at least 16")


@dataclass
class ClickResult:
    mask: np.ndarray  # bool, the whole image in array order ((k, j, i) or (rows, cols))
    box: Box  # the work box S3-Net was trained on last
    limit: Box
    clusters: np.ndarray  # the work box's cluster map (ids 1..n), array order
    candidate: np.ndarray  # the region-growing candidate on the whole image grid, clipped to the limit box
    grown: GrownRegion  # region growing from the positive clicks on its box (limit box + region_margin_mm)
    extent: np.ndarray  # the grown region on its box or, when it went on beyond, a coarse one on the whole image
    leaked: bool
    steps: int  # S3-Net training steps, over all boxes
    trainings: int
    seconds: float
    region_seconds: float = 0.0  # of which region growing (and the checks before it)


# Seconds on an idle 2-core CPU (RESULTS.md, "S3-Net from a click", speed): region growing (curvature
# flow, confidence connected, closing; ITK uses both cores) per million voxels, and one S3-Net training
# step (16 features, 4 crops of 64×64, one torch thread), labelling per voxel the network sees, and set-up.
REGION_GROWING_SECONDS_PER_MVOXEL = 0.45
TRAINING_STEP_SECONDS = 0.5
LABELLING_SECONDS_PER_VOXEL = 10e-6
S3NET_SETUP_SECONDS = 1.0
TYPICAL_STEPS = 10  # the ≤ 8-cluster stop came after 8–15 steps (mean 9.8) on the benchmark's CT structures


def estimate_seconds(box: Box, settings: ClickSettings, steps: int | None = None) -> float:
    """A rough time for training (``steps``, None: typical) and labelling on ``box``, one CPU thread."""
    config = settings.config
    per_step = TRAINING_STEP_SECONDS * (config.features / 16) ** 2 * config.batch_size / 4 * (config.crop_size / 64) ** 2
    slices = box.size[settings.slice_axis] if len(box.size) == 3 else 1
    in_plane = [n for axis, n in enumerate(box.size) if len(box.size) == 2 or axis != settings.slice_axis]
    scale = min(1.0, settings.max_size / max(in_plane))
    voxels = slices * np.prod(in_plane) * scale * scale
    steps = min(TYPICAL_STEPS, config.max_steps) if steps is None else steps
    return steps * per_step + LABELLING_SECONDS_PER_VOXEL * voxels * config.features / 16 + S3NET_SETUP_SECONDS


@dataclass(frozen=True)
class ClickEstimate:
    """Seconds from click to mask on an idle 2-core CPU, known before the run (imports not included)."""

    region_growing: float
    s3net: float  # a structure that ends near the click, typical training
    s3net_most: float  # the whole limit box, every training step of every box

    @property
    def likely(self) -> float:
        return self.region_growing + self.s3net

    @property
    def most(self) -> float:
        return self.region_growing + self.s3net_most


def estimate_click_seconds(
    size: tuple[int, ...], spacing: tuple[float, ...], positives: list[tuple[int, ...]], settings: ClickSettings = ClickSettings()
) -> ClickEstimate:
    """What ``segment_click`` on an image of ``size`` voxels of ``spacing`` mm (ITK order) will take.

    Region growing's box is known from the clicks; S3-Net's box is not (it depends on where region
    growing ends): *likely* takes the box of ``min_radius_mm`` around the clicks and typical training,
    *most* the whole limit box and the full step budget of every training.
    """
    size, spacing = tuple(size), tuple(spacing)
    near = limit = small = Box((0,) * len(size), size)
    if len(size) == 3:
        limit = box_around(positives, spacing, size, settings.max_radius_mm)
        small = box_around(positives, spacing, size, settings.min_radius_mm + settings.margin_mm)
        if settings.region_margin_mm is not None:
            near = box_around(positives, spacing, size, settings.max_radius_mm + settings.region_margin_mm)
    region_growing = REGION_GROWING_SECONDS_PER_MVOXEL * float(np.prod(near.size)) / 1e6
    trainings = 1 + settings.max_growths if len(size) == 3 else 1
    most = trainings * estimate_seconds(limit, settings, steps=settings.config.max_steps)
    return ClickEstimate(region_growing, estimate_seconds(small, settings), most)


def segment_click(
    image: sitk.Image,
    positives: list[tuple[int, ...]],
    negatives: list[tuple[int, ...]] = (),
    settings: ClickSettings = ClickSettings(),
    device="cpu",
    progress: Progress = NO_PROGRESS,
    seed: int = 0,
    window=None,
) -> ClickResult:
    """The structure under the ``positives`` (ITK-order indices) of ``image`` (a volume, or a 2D image).

    ``negatives``: clicks on what must not be part of it. ``window``: an ``IntensityWindow`` for
    the network's input (None: ``cluster_image``'s choice, a CT soft-tissue window for data in HU).
    """
    from SegSSLLib.s3net.clustering import cluster_image

    if not positives:
        raise ValueError("segment_click needs at least one positive click")
    started = time.perf_counter()
    _check_values(image, window)
    spacing, size = image.GetSpacing(), image.GetSize()
    expected = estimate_click_seconds(size, spacing, positives, settings)
    log.info(
        "S3-Net from the click: expect about %.0f s on an idle 2-core CPU (region growing %.0f s, S3-Net %.0f s; "
        "up to %.0f s if region growing leaks and training runs its whole budget)",
        expected.likely, expected.region_growing, expected.s3net, expected.most,
    )
    slice_axis = (image.GetDimension() - 1 - settings.slice_axis) if image.GetDimension() == 3 else 0
    limit = box_around(positives, spacing, size, settings.max_radius_mm)
    # Region growing near the clicks (a picture: all of it), then clipped to the limit box.
    if image.GetDimension() == 3 and settings.region_margin_mm is not None:
        near = box_around(positives, spacing, size, settings.max_radius_mm + settings.region_margin_mm)
    else:
        near = Box((0,) * len(size), tuple(size))
    grown = region_grow_near(image, list(positives), near, settings.region_growing)
    faces = open_faces(grown.mask[limit.array_slices], limit, size)
    along = "ijk"[settings.slice_axis] if image.GetDimension() == 3 else None
    if settings.elongated and faces and all(face[1] == along for face in faces):
        # Out of the limit only across the slices, inside it in-plane: a structure that runs along the
        # body (a spine, an aorta). The limit is lifted along the slice axis, and region growing redone.
        limit, near = _whole_along(limit, settings.slice_axis, size), _whole_along(near, settings.slice_axis, size)
        log.info("region growing runs out of the %g mm limit only along the slices: the structure is elongated, "
                 "the limit is lifted along them", settings.max_radius_mm)
        grown = region_grow_near(image, list(positives), near, settings.region_growing)
        faces = open_faces(grown.mask[limit.array_slices], limit, size)
    region_seconds = time.perf_counter() - started
    if grown.ended:
        extent = grown.mask[near.array_slices]
    else:
        # What lies beyond the box, roughly, for the background test (air around the body reaches every border).
        extent = coarse_region(image, list(positives), settings.region_growing)
    candidate = np.zeros(grown.mask.shape, bool)
    candidate[limit.array_slices] = grown.mask[limit.array_slices]
    leaked = bool(faces)
    if image.GetDimension() == 2:
        # A photograph has no physical scale: S3-Net sees all of it, as in the paper's skin-lesion task.
        box = Box((0, 0), tuple(size))
    elif leaked:
        box = limit
        log.info("region growing leaked past %g mm from the click; S3-Net decides inside that limit", settings.max_radius_mm)
    else:
        box = clip_box(union_box(box_around(positives, spacing, size, settings.min_radius_mm),
                                 box_of_mask(candidate, settings.margin_mm, spacing)), limit)
    steps = trainings = 0
    while True:
        log.info(
            "S3-Net on a box of %s voxels around the click: about %.0f s on one CPU thread",
            "×".join(map(str, box.size)), estimate_seconds(box, settings),
        )
        result = cluster_image(box.crop(image), settings.config, device, progress, seed=seed,
                               slice_axis=settings.slice_axis, max_size=settings.max_size, window=window)
        steps += len(result.training.history)
        trainings += 1
        local = [tuple(reversed(box.local(p))) for p in positives]
        local_mask = combine(candidate[box.array_slices], leaked, result.clusters, local, slice_axis,
                             settings.selection, escapes=lambda mask, box=box: bool(open_faces(mask, box, size)))
        faces = open_faces(local_mask, box, size)
        bigger = clip_box(grow_box(box, faces, spacing, size, settings.margin_mm), limit)
        if not faces or bigger == box or trainings > settings.max_growths:
            break
        log.info("the structure reaches the box's faces %s; growing the box and training again", " ".join(faces))
        box = bigger
    mask = np.zeros(candidate.shape, bool)
    mask[box.array_slices] = local_mask
    if negatives:
        mask = exclude_negatives(mask, [tuple(reversed(p)) for p in positives], [tuple(reversed(n)) for n in negatives])
    return ClickResult(
        mask, box, limit, result.clusters, candidate, grown, extent, leaked, steps, trainings, time.perf_counter() - started,
        region_seconds,
    )


def _whole_along(box: Box, axis: int, size: tuple[int, ...]) -> Box:
    """``box`` reaching both ends of the image along ITK ``axis``."""
    start, stop = list(box.start), list(box.stop)
    start[axis], stop[axis] = 0, size[axis]
    return Box(tuple(start), tuple(stop))


def _check_values(image: sitk.Image, window) -> None:
    """The one-line errors of ``cluster_image`` for NaN, infinite or constant input, before region growing."""
    array = sitk.GetArrayViewFromImage(image)
    if not np.all(np.isfinite(array)) or array.min() == array.max():
        from SegSSLLib.s3net.clustering import normalised_channels

        normalised_channels(image, window)  # raises the SegSSLError that names the problem
