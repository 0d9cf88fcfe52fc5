"""Weight-free propagation: carry the annotation slice to slice with 2D deformable registration.

From each annotated slice we walk outwards in both directions. At each step the previous slice is
registered to the next one (SimpleITK: a B-spline transform on mean squares, multi-resolution, on a
crop around the current masks), the previous labels are warped across, and each label is kept only
where the new slice's intensity still looks like that structure on the annotated slice (its robust
intensity range there). A label stops where its area falls below a fraction of its annotated area:
the structure has ended. No weights and no GPU are needed; it is the baseline SAM 2 must beat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.sam.annotation import Annotation
from SegSSLLib.slicing import array_axis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrationSettings:
    grid_spacing_mm: float = 40.0  # B-spline control point spacing: coarse enough to stay smooth
    iterations: int = 30
    margin_mm: float = 30.0  # crop around the masks: registration looks where the structures are
    intensity_quantiles: tuple[float, float] = (0.02, 0.98)  # per-label intensity range on the annotated slice
    intensity_tolerance: float = 0.25  # widen that range by this fraction of its width
    stop_fraction: float = 0.1  # a label ends when its area falls below this fraction of the annotated area
    smoothing_mm: float = 1.5  # Gaussian smoothing of slices before intensity checks
    grow_mm: float = 3.0  # let a label grow this far into fitting intensities at each step (organs widen)
    max_growth: float = 1.15  # ... but by at most this area factor per slice, so it cannot leak away


def propagate_by_registration(
    image: sitk.Image,
    labels: np.ndarray,
    annotation: Annotation,
    settings: RegistrationSettings = RegistrationSettings(),
    progress: Progress = NO_PROGRESS,
) -> np.ndarray:
    """(k, j, i) labels drawn on ``annotation.slices`` -> labels on every slice of the volume."""
    position = array_axis(annotation.axis)
    volume = np.moveaxis(sitk.GetArrayFromImage(image).astype(np.float32), position, 0)
    drawn = np.moveaxis(np.asarray(labels), position, 0)
    spacing = _slice_spacing(image.GetSpacing(), annotation.axis)  # (row, col) mm
    smoothed = ndimage.gaussian_filter(volume, sigma=(0.0, *(settings.smoothing_mm / s for s in spacing)))

    ranges = _intensity_ranges(smoothed, drawn, annotation, settings)
    annotated_area = {
        value: max(np.sum(drawn[k] == value) for k in annotation.slices_of(labels, value))
        for value in annotation.labels
    }
    # Objects painted on the same slices travel together (one registration per step for all of them);
    # an object painted elsewhere travels from its own slices.
    groups: dict[tuple[int, ...], list[int]] = {}
    for value in annotation.labels:
        groups.setdefault(tuple(annotation.slices_of(labels, value)), []).append(value)

    result = np.zeros_like(drawn)
    steps = sum(_walk_length(k, list(sources), drawn.shape[0]) for sources in groups for k in sources)
    with progress.stage("propagate (registration)", total=steps):
        for sources, values in groups.items():
            group_labels = np.where(np.isin(drawn, values), drawn, 0)
            carried = _propagate_group(smoothed, group_labels, sources, spacing, ranges, annotated_area, settings, progress)
            free = result == 0
            result[free] = carried[free]
    for k in annotation.slices:  # the painted slices stay exactly as painted
        result[k] = drawn[k]
    return np.moveaxis(result, 0, position)


def _propagate_group(smoothed, drawn, sources, spacing, ranges, annotated_area, settings, progress) -> np.ndarray:
    """Walk outwards from each of ``sources``; between two of them the nearer one wins."""
    result = np.zeros_like(drawn)
    distance = np.full(drawn.shape[0], np.inf)
    for k in sources:
        result[k], distance[k] = drawn[k], 0
    for k in sources:
        for direction in (+1, -1):
            current = drawn[k]
            target = k + direction
            while 0 <= target < drawn.shape[0] and target not in sources and current.any():
                current = _carry(smoothed[target - direction], smoothed[target], current, spacing, settings)
                current = _keep_plausible(current, smoothed[target], ranges, annotated_area, spacing, settings)
                gap = abs(target - k)
                if gap < distance[target]:
                    result[target], distance[target] = current, gap
                progress.advance()
                target += direction
    return result


def _walk_length(k: int, sources: list[int], count: int) -> int:
    """Slices between ``k`` and its neighbouring annotated slices (or the volume's ends)."""
    index = sources.index(k)
    below = sources[index - 1] if index > 0 else -1
    above = sources[index + 1] if index + 1 < len(sources) else count
    return (k - below - 1) + (above - k - 1)


def _slice_spacing(spacing_ijk, itk_axis: int) -> tuple[float, float]:
    spacing_kji = tuple(reversed(spacing_ijk))
    position = array_axis(itk_axis)
    rows, cols = (s for a, s in enumerate(spacing_kji) if a != position)
    return float(rows), float(cols)


def _as_image(array: np.ndarray, spacing: tuple[float, float]) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((spacing[1], spacing[0]))  # ITK order: columns (x) first
    return image


def _crop(masks: np.ndarray, spacing, margin_mm: float) -> tuple[slice, slice]:
    rows, cols = np.nonzero(masks)
    pad_r, pad_c = (int(np.ceil(margin_mm / s)) for s in spacing)
    return (
        slice(max(0, rows.min() - pad_r), min(masks.shape[0], rows.max() + pad_r + 1)),
        slice(max(0, cols.min() - pad_c), min(masks.shape[1], cols.max() + pad_c + 1)),
    )


def _carry(previous: np.ndarray, following: np.ndarray, labels: np.ndarray, spacing, settings) -> np.ndarray:
    """Register ``previous`` onto ``following`` near the labels and warp the labels across."""
    window = _crop(labels, spacing, settings.margin_mm)
    fixed = _as_image(following[window], spacing)
    moving = _as_image(previous[window], spacing)
    transform = _register(fixed, moving, settings)
    values = [int(v) for v in np.unique(labels) if v != 0]
    # Warp each label as a soft mask (linear) and give every pixel to its strongest label: smoother
    # than nearest-neighbour warping of the label map, and labels never blend into new values.
    scores = np.zeros((len(values) + 1, *labels.shape), np.float32)
    scores[0] = 0.5
    for index, value in enumerate(values, start=1):
        mask = _as_image((labels[window] == value).astype(np.float32), spacing)
        warped = sitk.Resample(mask, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        scores[index][window] = sitk.GetArrayFromImage(warped)
    choice = np.argmax(scores, axis=0)
    return np.asarray([0, *values], dtype=labels.dtype)[choice]


def _register(fixed: sitk.Image, moving: sitk.Image, settings: RegistrationSettings) -> sitk.Transform:
    extent = [size * spacing for size, spacing in zip(fixed.GetSize(), fixed.GetSpacing())]
    mesh = [max(1, int(round(e / settings.grid_spacing_mm))) for e in extent]
    initial = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMeanSquares()
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-5, numberOfIterations=settings.iterations, maximumNumberOfCorrections=5
    )
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=True)
    try:
        method.Execute(fixed, moving)
    except RuntimeError as exc:  # e.g. too few overlapping pixels on a tiny crop: keep the identity
        log.debug("registration failed (%s); carrying the labels over unchanged", str(exc).splitlines()[0])
        return sitk.Transform(2, sitk.sitkIdentity)
    return initial


def _disk(radius_mm: float, spacing) -> np.ndarray | None:
    """A boolean elliptic footprint of ``radius_mm`` on a grid of (row, col) ``spacing``."""
    half = [int(radius_mm // s) for s in spacing]
    if radius_mm <= 0 or max(half) == 0:
        return None
    rows, cols = np.ogrid[-half[0] : half[0] + 1, -half[1] : half[1] + 1]
    return (rows * spacing[0]) ** 2 + (cols * spacing[1]) ** 2 <= radius_mm**2


def _intensity_ranges(smoothed, drawn, annotation: Annotation, settings) -> dict[int, tuple[float, float]]:
    ranges = {}
    low_q, high_q = settings.intensity_quantiles
    for value in annotation.labels:
        inside = np.concatenate([smoothed[k][drawn[k] == value] for k in annotation.slices])
        low, high = np.quantile(inside, [low_q, high_q])
        pad = settings.intensity_tolerance * max(high - low, 1e-6)
        ranges[value] = (float(low - pad), float(high + pad))
    return ranges


def _keep_plausible(labels, smoothed_slice, ranges, annotated_area, spacing, settings) -> np.ndarray:
    """Fit each label to the intensities of its structure, tidy the shape, stop labels that ended."""
    kept = np.zeros_like(labels)
    reach = _disk(settings.grow_mm, spacing)
    for value, (low, high) in ranges.items():
        warped = labels == value  # objects of other groups are simply absent here
        if not warped.any():
            continue
        fits = (smoothed_slice >= low) & (smoothed_slice <= high) & ~((labels != 0) & ~warped)
        # Keep fitting pixels of the warped mask, and grow from them into fitting pixels nearby:
        # registration alone follows a boundary that moves, but not an organ that widens.
        seed = ndimage.binary_opening(warped & fits)
        band = ndimage.binary_dilation(warped, structure=reach) if reach is not None else warped
        grown = ndimage.binary_propagation(seed, mask=fits & band)
        mask = grown if grown.sum() <= settings.max_growth * warped.sum() else seed
        mask = ndimage.binary_opening(mask)
        mask = ndimage.binary_fill_holes(mask)
        components, count = ndimage.label(mask)
        if count > 1:  # keep the main piece: organs are one piece in a slice near the annotated one
            sizes = ndimage.sum(mask, components, index=range(1, count + 1))
            mask = components == (1 + int(np.argmax(sizes)))
        if mask.sum() >= settings.stop_fraction * annotated_area[value]:
            kept[mask & (kept == 0)] = value
    return kept
