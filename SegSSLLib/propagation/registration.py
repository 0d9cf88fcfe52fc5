"""Weight-free propagation: carry the annotation slice to slice with 2D deformable registration.

From each annotated slice we walk outwards in both directions. At each step the previous slice is
registered to the next one (SimpleITK: a B-spline transform on mean squares, multi-resolution, on a
crop around the current masks) and the previous labels are warped across. Each label is then fitted
to its structure's tissue and stopped where the structure ends, by the rules in
``rules`` (learned on the painted slice only). No weights and no GPU are needed; it is the
baseline SAM 2 must beat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.propagation.annotation import Annotation, restore_drawn
from SegSSLLib.propagation.base import PropagationResult
from SegSSLLib.propagation.rules import RuleSettings, TaperWatch, TissueModel, fit_to_structure
from SegSSLLib.axes import array_axis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrationSettings:
    grid_spacing_mm: float = 40.0  # B-spline control point spacing: coarse enough to stay smooth
    iterations: int = 30
    margin_mm: float = 30.0  # crop around the masks: registration looks where the structures are
    smoothing_mm: float = 1.5  # Gaussian smoothing of slices before registration and intensity checks
    rules: RuleSettings = RuleSettings()  # tissue fitting and stopping rules


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

    models = {}  # what each structure looks like, learned where it was painted
    for value in annotation.labels:
        painted = annotation.slices_of(labels, value)
        models[value] = TissueModel.learn(
            [smoothed[k] for k in painted], [drawn[k] == value for k in painted], spacing, settings.rules
        )
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
            carried = _propagate_group(smoothed, group_labels, sources, spacing, models, settings, progress)
            free = result == 0
            result[free] = carried[free]
    result = np.moveaxis(result, 0, position)
    restore_drawn(result, labels, annotation)  # each object stays exactly as painted where it was painted
    return result


@dataclass(frozen=True)
class RegistrationPropagator:
    """The registration backend: no weights, no GPU, no torch."""

    settings: RegistrationSettings = RegistrationSettings()
    name = "registration"

    def describe(self) -> str:
        return "registration"

    def propagate(
        self, image: sitk.Image, labels: np.ndarray, annotation: Annotation, progress: Progress = NO_PROGRESS
    ) -> PropagationResult:
        return PropagationResult(propagate_by_registration(image, labels, annotation, self.settings, progress))


def _propagate_group(smoothed, drawn, sources, spacing, models, settings, progress) -> np.ndarray:
    """Walk outwards from each of ``sources``; between two of them the nearer one wins."""
    result = np.zeros_like(drawn)
    distance = np.full(drawn.shape[0], np.inf)
    for k in sources:
        result[k], distance[k] = drawn[k], 0
    for k in sources:
        for direction in (+1, -1):
            current = drawn[k]
            target = k + direction
            # The labels still walking, each with the watch on its area along this walk.
            walking = {int(v): TaperWatch(int(np.sum(current == v)), settings.rules) for v in np.unique(current) if v}
            end = _walk_end(k, direction, sources, drawn.shape[0])
            while target != end and current.any():
                warped = _carry(smoothed[target - direction], smoothed[target], current, spacing, settings)
                current = _fit_labels(warped, smoothed[target], models, walking, spacing, settings.rules)
                gap = abs(target - k)
                if gap < distance[target]:
                    result[target], distance[target] = current, gap
                progress.advance()
                target += direction
            if target != end:  # the structures ended early: count the slices this walk skips as done
                progress.advance(abs(end - target))
    return result


def _walk_end(k: int, direction: int, sources, count: int) -> int:
    """The first slice a walk from ``k`` does not enter: the next annotated slice, or past the volume's end."""
    ahead = [s for s in sources if (s - k) * direction > 0]
    if ahead:
        return min(ahead, key=lambda s: abs(s - k))
    return count if direction > 0 else -1


def _walk_length(k: int, sources: list[int], count: int) -> int:
    """Slices between ``k`` and its neighbouring annotated slices (or the volume's ends)."""
    return sum(abs(_walk_end(k, direction, sources, count) - k) - 1 for direction in (+1, -1))


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
    # Past a structure's end the optimiser may wander off the crop; ITK would then print warnings on
    # the command's stderr. They say nothing a user can act on: the rules judge the result instead.
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        method.Execute(fixed, moving)
    except RuntimeError as exc:  # e.g. too few overlapping pixels on a tiny crop: keep the identity
        log.debug("registration failed (%s); carrying the labels over unchanged", str(exc).splitlines()[0])
        return sitk.Transform(2, sitk.sitkIdentity)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)
    return initial


def _fit_labels(warped, image, models, walking, spacing, rules: RuleSettings) -> np.ndarray:
    """Fit each carried label to its structure on ``image``; labels whose structure ends leave ``walking``."""
    fitted = np.zeros_like(warped)
    for value, watch in list(walking.items()):
        carried = warped == value
        if not carried.any():
            del walking[value]  # registration lost it
            continue
        others = (warped != 0) & ~carried
        mask, ends_here = fit_to_structure(carried, image, models[value], others, spacing, rules)
        if not watch.accept(int(mask.sum())):
            ends_here, mask = True, None  # spreading onto a neighbour: this slice is already past the end
        if ends_here:
            del walking[value]  # a walk never picks an ended structure up again
        if mask is not None:
            fitted[mask & (fitted == 0)] = value
    return fitted
