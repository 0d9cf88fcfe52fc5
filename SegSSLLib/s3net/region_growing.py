"""Classical region growing from a click: what a Slicer user already has without S3-Net.

``region_grow`` is the benchmark's baseline, always with the same settings: ``CurvatureFlow``
(5 iterations, time step 0.125) to smooth, then ``ConfidenceConnected`` from the seeds (3 iterations,
multiplier 1.5, initial neighbourhood radius 2), then a binary closing with a radius of one voxel. A
colour image (dermoscopy) is grown on its luminance, since both filters take one channel.

The S3-Net click route's candidate is the same region growing on a box around the click
(``region_grow_near``: the smoothed values in the box are exactly the whole image's), and
``coarse_region`` grows on the whole image shrunk, for a background test when that region went on
beyond its box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from SegSSLLib.s3net.click_region import Box, open_faces


@dataclass(frozen=True)
class RegionGrowingSettings:
    smoothing_iterations: int = 5
    smoothing_time_step: float = 0.125
    iterations: int = 3
    multiplier: float = 1.5
    initial_radius: int = 2
    closing_radius: int = 1


def grey_float(image: sitk.Image) -> sitk.Image:
    """One float32 channel: luminance (ITU-R BT.601) for colour images, the values otherwise."""
    if image.GetNumberOfComponentsPerPixel() == 1:
        return sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    weights = np.array([0.299, 0.587, 0.114], np.float32)[: array.shape[-1]]
    grey = sitk.GetImageFromArray((array * weights).sum(axis=-1) / weights.sum())
    grey.CopyInformation(sitk.VectorIndexSelectionCast(image, 0))
    return grey


def smooth(image: sitk.Image, settings: RegionGrowingSettings = RegionGrowingSettings()) -> sitk.Image:
    return sitk.CurvatureFlow(
        grey_float(image), timeStep=settings.smoothing_time_step, numberOfIterations=settings.smoothing_iterations
    )


def region_grow(
    image: sitk.Image,
    seeds: list[tuple[int, ...]],
    settings: RegionGrowingSettings = RegionGrowingSettings(),
    smoothed: sitk.Image | None = None,
) -> np.ndarray:
    """The region grown from ``seeds`` (ITK-order indices) as a boolean array in array order.

    ``smoothed``: the output of ``smooth(image, settings)`` when the caller has it already.
    """
    if smoothed is None:
        smoothed = smooth(image, settings)
    grown = sitk.ConfidenceConnected(
        smoothed,
        seedList=[tuple(int(v) for v in seed) for seed in seeds],
        numberOfIterations=settings.iterations,
        multiplier=settings.multiplier,
        initialNeighborhoodRadius=settings.initial_radius,
        replaceValue=1,
    )
    if settings.closing_radius > 0:
        grown = sitk.BinaryMorphologicalClosing(grown, [settings.closing_radius] * grown.GetDimension(), sitk.sitkBall, 1)
    return sitk.GetArrayFromImage(grown).astype(bool)


@dataclass
class GrownRegion:
    """Region growing run on a box of the image rather than all of it (``region_grow_near``)."""

    mask: np.ndarray  # bool, the whole image's array shape; False outside ``box``
    box: Box  # the box region growing ran on
    open_faces: list[str]  # faces of ``box`` (not of the image) the region reached: it goes on beyond them

    @property
    def ended(self) -> bool:
        """The region ends inside its box (see ``region_grow_near``)."""
        return not self.open_faces


def smooth_box(image: sitk.Image, box: Box, settings: RegionGrowingSettings = RegionGrowingSettings()) -> sitk.Image:
    """``smooth(image)`` inside ``box``, computed on the box padded by as many voxels as the smoothing
    reaches (one per iteration, plus one), so the values inside are those of smoothing the whole image."""
    pad = settings.smoothing_iterations + 1
    size = image.GetSize()
    padded = Box(tuple(max(0, a - pad) for a in box.start), tuple(min(n, b + pad) for n, b in zip(size, box.stop)))
    smoothed = smooth(padded.crop(image), settings)
    return Box(tuple(a - p for a, p in zip(box.start, padded.start)),
               tuple(b - p for b, p in zip(box.stop, padded.start))).crop(smoothed)


def region_grow_near(
    image: sitk.Image,
    seeds: list[tuple[int, ...]],
    box: Box,
    settings: RegionGrowingSettings = RegionGrowingSettings(),
) -> GrownRegion:
    """``region_grow`` on ``box`` (which holds the seeds) instead of the whole image.

    Smoothing and ``ConfidenceConnected`` cost time in proportion to the voxels they visit, and a
    click's structure is usually small beside the image. The smoothed values inside the box are
    those of the whole image. When the region reaches a face of the box that is not the image's
    border it goes on beyond the box, and its intensity statistics are taken inside the box only.
    When it does not, it is the whole image's region, unless one of ConfidenceConnected's earlier
    iterations went beyond the box (their statistics would then come from more tissue: on the lung
    tumour the first iteration floods the lungs, and the box changes the final region slightly).
    """
    smoothed = smooth_box(image, box, settings)
    grown = region_grow(smoothed, [box.local(seed) for seed in seeds], settings, smoothed=smoothed)
    mask = np.zeros(tuple(reversed(image.GetSize())), bool)
    mask[box.array_slices] = grown
    return GrownRegion(mask, box, open_faces(grown, box, image.GetSize()))


def coarse_region(
    image: sitk.Image, seeds: list[tuple[int, ...]], settings: RegionGrowingSettings = RegionGrowingSettings(), max_size: int = 128
) -> np.ndarray:
    """``region_grow`` on the whole image shrunk by averaging to at most ``max_size`` voxels per axis:
    roughly where a region that went on beyond its box ends, for a background test (air around the
    body reaches every border). A (k, j, i) array of the shrunk grid."""
    grey = grey_float(image)
    factors = [max(1, -(-n // max_size)) for n in grey.GetSize()]
    shrunk = sitk.BinShrink(grey, factors)
    shrunk_seeds = [tuple(min(int(v) // f, n - 1) for v, f, n in zip(seed, factors, shrunk.GetSize())) for seed in seeds]
    return region_grow(shrunk, shrunk_seeds, settings)
