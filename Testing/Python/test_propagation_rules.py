"""The registration fallback's tissue and stopping rules: synthetic structures where it must stop or go on."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from SegSSLLib.evaluation import dice_and_hd95
from SegSSLLib.propagation.annotation import find_annotation
from SegSSLLib.propagation.rules import RuleSettings, TaperWatch, TissueModel, disk, fit_to_structure
from SegSSLLib.propagation.registration import propagate_by_registration

SLICES, ROWS, COLS = 28, 44, 44
SPACING = (2.0, 2.0, 3.0)  # (i, j, k) mm: anisotropic, like most CT
FAT_HU, NOISE_HU = -100.0, 8.0


def _grid():
    """Physical (z, y, x) coordinates in mm of every voxel, centred in-plane, as (k, j, i) arrays."""
    k, j, i = np.meshgrid(np.arange(SLICES), np.arange(ROWS), np.arange(COLS), indexing="ij")
    return k * SPACING[2], (j - ROWS / 2) * SPACING[1], (i - COLS / 2) * SPACING[0]


def _ct(hu: np.ndarray, seed: int = 0) -> sitk.Image:
    """A CT-like image: partial-volume blur in-plane and correlated noise, as the phantoms have."""
    rng = np.random.default_rng(seed)
    blurred = ndimage.gaussian_filter(hu.astype(np.float32), sigma=(0, 0.7, 0.7))
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), sigma=(0, 0.7, 0.7))
    image = sitk.GetImageFromArray(np.round(blurred + noise * NOISE_HU / noise.std()).astype(np.int16))
    image.SetSpacing(SPACING)
    image.SetDirection((0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))  # rotated in-plane
    return image


class _CountingProgress:
    """Records the stage's total and the steps advanced (the Slicer panel's bar follows them)."""

    def __init__(self):
        self.total, self.done = None, 0

    @contextmanager
    def stage(self, name, total=None):
        self.total = total
        yield self

    def advance(self, steps=1, **info):
        self.done += steps


def _propagate(image: sitk.Image, truth: np.ndarray, painted: int) -> np.ndarray:
    drawn = np.zeros(truth.shape, np.uint8)
    drawn[painted][truth[painted]] = 3
    progress = _CountingProgress()
    result = propagate_by_registration(image, drawn, find_annotation(drawn), progress=progress)
    assert set(np.unique(result)) <= {0, 3} and np.array_equal(result[painted], drawn[painted])
    assert progress.total == SLICES - 1 and progress.done == progress.total  # complete, though walks stop early
    return result == 3


def _reached(result: np.ndarray) -> np.ndarray:
    return np.flatnonzero(result.any(axis=(1, 2)))


def _dice(result: np.ndarray, truth: np.ndarray) -> float:
    return dice_and_hd95(result, truth, tuple(reversed(SPACING)))[0]


def test_stops_where_a_touching_structure_of_another_intensity_takes_over():
    # A kidney-like column (160 HU) sits directly on a spleen-like one (100 HU) in the same place: the
    # carried mask lands on the second from slice 14 on and must stop there.
    _, y, x = _grid()
    slices = np.arange(SLICES)[:, None, None]
    column = np.hypot(y, x) <= 12.0
    kidney = column & (slices >= 2) & (slices < 14)
    hu = np.where(kidney, 160.0, np.where(column & (slices >= 14), 100.0, FAT_HU))
    result = _propagate(_ct(hu), kidney, painted=7)
    reached = _reached(result)
    assert reached.min() == 2 and reached.max() == 13, reached
    assert _dice(result, kidney) > 0.9


def test_stops_where_the_mask_lands_on_another_intensity_though_a_sliver_of_its_own_goes_on():
    # As above, but a thin vessel of the kidney's density runs on along the column's edge: enough of
    # the carried mask still fits to pass the area rule, yet most of its interior is another tissue.
    _, y, x = _grid()
    slices = np.arange(SLICES)[:, None, None]
    column = np.hypot(y, x) <= 12.0
    kidney = column & (slices >= 2) & (slices < 14)
    vessel = (np.hypot(y, x - 8.0) <= 5.0) & (slices >= 14)
    hu = np.where(kidney | vessel, 160.0, np.where(column & (slices >= 14), 100.0, FAT_HU))
    result = _propagate(_ct(hu, seed=3), kidney, painted=7)
    assert _reached(result).max() <= 14, _reached(result)  # at most the vessel's first slice
    assert _dice(result, kidney) > 0.9


def test_stops_where_a_tapering_structure_spreads_onto_a_neighbour_of_the_same_intensity():
    # Two organs of the same density: the painted one tapers to its lower pole, next to which a larger
    # one begins. Intensity cannot separate them; the regrowth after tapering does.
    z, y, x = _grid()
    upper = ((z - 9 * SPACING[2]) / 16.0) ** 2 + (y / 14.0) ** 2 + (x / 14.0) ** 2 <= 1
    lower = ((z - 19 * SPACING[2]) / 18.0) ** 2 + (y / 16.0) ** 2 + ((x - 6.0) / 16.0) ** 2 <= 1
    hu = np.where(upper | lower, 150.0, FAT_HU)
    upper_slices, lower_slices = _reached(upper), _reached(lower)
    assert (upper & ndimage.binary_dilation(lower)).any()  # they touch
    result = _propagate(_ct(hu, seed=1), upper, painted=9)
    assert _reached(result).max() <= upper_slices.max() + 1 < lower_slices.max() - 8
    assert _dice(result, upper) > 0.8


def test_follows_a_structure_that_widens_narrows_and_shifts_to_its_ends():
    # A tube that drifts sideways by 1 mm per slice, narrows to a waist (0.8 of its radius: area 64 %,
    # above the taper fraction) and widens again to 1.6 times the painted radius: the growth step and
    # the taper rule must let it through to both ends.
    z, y, x = _grid()
    slices = np.arange(SLICES)[:, None, None]
    radius = 10.0 * np.where(slices < 10, 1.0 - 0.2 * np.sin(np.pi * slices / 10), 1.0 + 0.6 * (slices - 10) / 15)
    tube = (np.hypot(y, x - 1.0 * (slices - 12)) <= radius) & (slices >= 1) & (slices <= 25)
    result = _propagate(_ct(np.where(tube, 140.0, FAT_HU), seed=2), tube, painted=3)
    reached = _reached(result)
    assert reached.min() == 1 and reached.max() >= 24, reached
    assert _dice(result, tube) > 0.8  # a widening mask lags its edge by a pixel: not a perfect fit


def test_tissue_model_learns_the_interior_not_the_partial_volume_edge():
    rows, cols = np.mgrid[-20:20, -20:20]
    mask = np.hypot(rows, cols) <= 12
    image = ndimage.gaussian_filter(np.where(mask, 160.0, -100.0), 1.5)  # edge pixels fall between the two
    model = TissueModel.learn([image], [mask], (1.0, 1.0), RuleSettings())
    assert model.painted_area == mask.sum()
    assert 140 < model.tissue[0] <= 160 <= model.tissue[1] < 180  # a flat interior: a narrow tissue range
    assert model.edge[0] < image[mask].min() and model.edge[1] >= model.tissue[1]  # edges as drawn, widened
    assert not model.is_tissue(np.array([100.0])).any() and model.is_edge(np.array([100.0])).all()


def test_fit_drops_a_neighbour_of_another_intensity_and_reports_the_end():
    rows, cols = np.mgrid[0:40, 0:40]
    organ = np.hypot(rows - 20, cols - 14) <= 8
    neighbour = np.hypot(rows - 20, cols - 27) <= 6  # touching the organ
    image = ndimage.gaussian_filter(np.where(organ, 160.0, np.where(neighbour, 110.0, -100.0)), 0.7)
    image += np.random.default_rng(0).normal(0.0, 5.0, image.shape)
    model = TissueModel.learn([image], [organ], (2.0, 2.0), RuleSettings())
    nothing = np.zeros_like(organ)
    mask, ends = fit_to_structure(organ | neighbour, image, model, nothing, (2.0, 2.0), RuleSettings())
    assert not ends and (mask & organ).sum() > 0.95 * organ.sum()
    # Only the blurred contact line may be claimed, never the neighbour's inside.
    assert (mask & neighbour).sum() < 0.15 * neighbour.sum()
    assert not (mask & ndimage.binary_erosion(neighbour, iterations=3)).any()
    _, ends = fit_to_structure(neighbour, image, model, nothing, (2.0, 2.0), RuleSettings())
    assert ends  # carried wholly onto the neighbour: the structure ended
    mask, _ = fit_to_structure(organ, image, model, organ & (cols < 14), (2.0, 2.0), RuleSettings())
    assert not (mask & (cols < 14)).any()  # pixels of another object are never claimed


@pytest.mark.parametrize(
    "areas, accepted",
    [
        ([90, 60, 45, 40, 43, 45, 80], [True, True, True, True, True, False]),  # tapers, then regrows > 10 %
        ([80, 55, 70, 100, 120, 60], [True] * 6),  # a waist above half the largest area is no end
        ([120, 200, 90, 60, 70], [True] * 4 + [False]),  # the largest area follows the walk: 90 < 200 / 2
    ],
)
def test_taper_watch_ends_only_regrowth_after_tapering(areas, accepted):
    watch = TaperWatch(100, RuleSettings())
    results = []
    for area in areas:
        results.append(watch.accept(area))
        if not results[-1]:
            break
    assert results == accepted


def test_disk_has_physical_size_and_reaches_at_least_one_pixel():
    assert disk(6.0, (2.0, 2.0)).shape == (7, 7) and disk(6.0, (2.0, 2.0))[3].all()
    assert disk(1.0, (3.5, 3.5)).sum() == 5  # finer than the grid: the four neighbours
    anisotropic = disk(3.0, (6.0, 1.0))
    assert anisotropic.shape == (3, 7) and anisotropic[1].all() and anisotropic[0].sum() == 1
