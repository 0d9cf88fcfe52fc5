"""Classical region growing from a click: what a Slicer user already has without S3-Net.

``region_grow`` is the benchmark's baseline and the S3-Net click route's first candidate, always
with the same settings: ``CurvatureFlow`` (5 iterations, time step 0.125) to smooth, then
``ConfidenceConnected`` from the seeds (3 iterations, multiplier 1.5, initial neighbourhood radius 2),
then a binary closing with a radius of one voxel. A colour image (dermoscopy) is grown on its
luminance, since both filters take one channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


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
