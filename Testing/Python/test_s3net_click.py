"""S3-Net from a click: box sizing, choosing the mask, negative clicks, and the whole route on tiny volumes."""

import numpy as np
import pytest
import SimpleITK as sitk

from SegSSLLib.s3net.click_region import Box, box_around, box_of_mask, grow_box, open_faces
from SegSSLLib.s3net.click_segment import ClickSettings, estimate_click_seconds, segment_click
from SegSSLLib.s3net.click_selection import combine, cut_necks, exclude_negatives
from SegSSLLib.s3net.config import S3NetConfig
from SegSSLLib.s3net.region_growing import coarse_region, region_grow, region_grow_near
from SegSSLLib.s3net.selection import spans_whole_image

TINY = S3NetConfig(features=4, clusters=8, min_clusters=3, max_steps=3, batch_size=2, crop_size=24)


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def _body_in_air(size=80, radius=30):
    """size×size×20 voxels of 1 mm: a body (a centred disc of tissue, 40 HU) in air."""
    k, j, i = np.mgrid[0:20, 0:size, 0:size]
    body = (j - size // 2) ** 2 + (i - size // 2) ** 2 <= radius**2
    array = np.where(body, 40.0, -1000.0) + np.random.default_rng(0).normal(0, 5, body.shape)
    return sitk.GetImageFromArray(array.astype(np.float32))


def _blob_on_wall(noise=4.0, seed=0):
    """(k, j, i) = 24×48×48 voxels of 1 mm: a bright slab (i < 10) and a bright ball of radius 7 that
    touches it over a disc about 5 voxels wide (a third of the ball's width), both 100 on a background
    of 0 (a tumour on the chest wall)."""
    k, j, i = np.mgrid[0:24, 0:48, 0:48]
    wall = i < 10
    blob = (k - 12) ** 2 + (j - 24) ** 2 + (i - 16.5) ** 2 <= 49
    array = np.where(wall | blob, 100.0, 0.0) + np.random.default_rng(seed).normal(0, noise, k.shape)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    return image, wall, blob & ~wall


def test_box_reaches_a_physical_radius_per_axis_and_is_clipped_to_the_image():
    box = box_around([(50, 60, 3)], spacing=(0.5, 0.5, 5.0), image_size=(100, 100, 10), radius_mm=10)
    assert box.start == (30, 40, 1) and box.stop == (71, 81, 6)  # 20 pixels in-plane, 2 slices of 5 mm
    assert box_around([(2, 98, 0)], (1.0, 1.0, 1.0), (100, 100, 10), 5).start == (0, 93, 0)
    assert box_around([(2, 98, 0)], (1.0, 1.0, 1.0), (100, 100, 10), 5).stop == (8, 100, 6)
    # Two clicks: the box covers both, plus the radius.
    assert box_around([(10, 10, 5), (20, 30, 5)], (1.0, 1.0, 1.0), (100, 100, 10), 2).size == (15, 25, 5)
    # A very thin radius still gives one voxel beyond the click on every axis.
    assert box_around([(5, 5, 5)], (1.0, 1.0, 10.0), (10, 10, 10), 1).size == (3, 3, 3)


def test_open_faces_ignore_the_image_border_and_growth_moves_only_those_faces():
    box = Box((0, 10, 2), (20, 30, 8))  # starts at the image border on i
    mask = np.zeros((6, 20, 20), bool)  # (k, j, i) inside the box
    mask[2:4, 5:10, 0:5] = True  # touches the box's -i face, which is the image's border
    assert open_faces(mask, box, (40, 40, 10)) == []
    mask[2:4, 19, 5] = True  # reaches +j
    assert open_faces(mask, box, (40, 40, 10)) == ["+j"]
    grown = grow_box(box, ["+j"], (1.0, 2.0, 1.0), (40, 40, 10), step_mm=8)
    assert grown == Box((0, 10, 2), (20, 34, 8))  # 8 mm = 4 voxels of 2 mm, only on +j
    assert box_of_mask(mask, 2.0, (1.0, 1.0, 1.0)) == Box((0, 3, 0), (8, 20, 6))  # clipped to the array


def test_region_growing_baseline_leaks_into_a_wall_of_the_same_brightness():
    # The failure the click route exists for: the classical region reaches the wall.
    image, wall, blob = _blob_on_wall()
    grown = region_grow(image, [(17, 24, 12)])
    assert grown[12, 24, 17] and (grown & wall).sum() > 0.5 * wall.sum()


def test_region_growing_near_the_click_is_the_whole_image_region_when_it_ends_there():
    image, wall, blob = _blob_on_wall()
    click = [(17, 24, 12)]
    # A second blob far away, alone: region growing from it ends inside a box around it.
    far = np.zeros(blob.shape, bool)
    far[8:16, 30:40, 34:44] = True
    array = sitk.GetArrayFromImage(image)
    array[far] = 100 + np.random.default_rng(1).normal(0, 4, far.sum())
    image2 = sitk.GetImageFromArray(array)
    box = Box((28, 26, 4), (48, 44, 20))
    near = region_grow_near(image2, [(39, 35, 12)], box)
    whole = region_grow(image2, [(39, 35, 12)])
    assert near.ended and np.array_equal(near.mask, whole) and (near.mask & far).sum() > 0.3 * far.sum() and not (near.mask & ~far).any()
    # From the blob on the wall, the region runs out of a box that does not hold the wall: it says where.
    leaked = region_grow_near(image, click, Box((12, 4, 0), (40, 44, 24)))
    assert not leaked.ended and leaked.open_faces == ["-i"] and not leaked.mask[:, :, :12].any()
    # Where it ends, roughly: region growing on the whole image shrunk to at most 20 voxels per axis.
    body = _body_in_air()
    air, tissue = coarse_region(body, [(2, 2, 10)], max_size=20), coarse_region(body, [(40, 40, 10)], max_size=20)
    assert air.shape == tissue.shape == (20, 20, 20) and spans_whole_image(air) and not spans_whole_image(tissue)


def test_the_expected_time_is_known_before_the_run_and_smaller_near_the_click():
    # 512×512×60 voxels of 0.57×0.57×5 mm, the click near the middle: region growing visits the size
    # limit's box plus its margin (120 mm: 423×423×49 voxels) rather than all 15.7 M voxels.
    size, spacing, click = (512, 512, 60), (0.57, 0.57, 5.0), [(256, 256, 30)]
    near = estimate_click_seconds(size, spacing, click)
    whole = estimate_click_seconds(size, spacing, click, ClickSettings(region_margin_mm=None))
    assert near.region_growing == pytest.approx(0.45 * 423 * 423 * 49 / 1e6)
    assert whole.region_growing == pytest.approx(0.45 * 512 * 512 * 60 / 1e6)
    assert near.s3net == whole.s3net and near.likely < near.most and 5 < near.likely < 20


def test_a_leaked_candidate_is_cut_at_the_neck_to_the_wall():
    image, wall, blob = _blob_on_wall()
    candidate = wall | blob  # what region growing gives, clipped to the box
    clusters = np.where(candidate, 2, 1)  # S3-Net can't tell them apart either: same brightness
    click = [(12, 24, 17)]
    mask = combine(candidate, True, clusters, click)
    assert _dice(mask, blob) > 0.9 and (mask & wall).sum() < 0.05 * wall.sum()
    # Without a leak nothing is cut: the candidate ended on its own and is the structure.
    assert combine(blob, False, clusters, click).sum() >= blob.sum()
    # A neck as wide as the structure is not a neck: a plain ball stays (almost exactly) whole.
    assert _dice(cut_necks(blob, click), blob) > 0.97


def test_click_on_a_blob_touching_a_wall_gives_the_blob():
    image, wall, blob = _blob_on_wall()
    settings = ClickSettings(max_radius_mm=14, min_radius_mm=8, config=TINY, max_size=48)
    result = segment_click(image, [(17, 24, 12)], settings=settings)
    assert result.leaked  # region growing ran into the wall and past the 14 mm limit
    assert result.mask.shape == blob.shape and result.mask[12, 24, 17]
    # The blob, not the wall: (region growing stops short of the blob's edges here, and the tiny
    # network of this test is too rough to add them back, so only the blob's core is asked for).
    assert (result.mask & wall).sum() < 0.02 * wall.sum()
    assert (result.mask & blob).sum() > 0.9 * result.mask.sum() and result.mask.sum() > 0.3 * blob.sum()
    # The box S3-Net was trained on is the limit box, not the whole volume.
    assert result.box == result.limit and np.prod(result.box.size) < 0.5 * blob.size


def test_the_candidate_is_refined_by_a_structure_within_it_and_replaced_by_one_around_it():
    k, j, i = np.mgrid[0:10, 0:30, 0:30]
    ball = (j - 15) ** 2 + (i - 15) ** 2 <= 64
    core = (j - 15) ** 2 + (i - 15) ** 2 <= 49  # region growing stopped one pixel short of the edge
    click = [(5, 15, 15)]
    clusters = np.where(ball, 2, 1)
    # S3-Net's structure (the ball; its four one-pixel tips are cut as thin bridges) is within the
    # candidate grown by one pixel: its border is added.
    refined = combine(core, False, clusters, click)
    assert not (refined & ~ball).any() and (refined & core).sum() == core.sum() and _dice(refined, ball) > 0.98
    small = (j - 15) ** 2 + (i - 15) ** 2 <= 9
    # The candidate (a small core) lies within a structure that ends inside the box: the structure.
    assert _dice(combine(small, False, clusters, click), ball) > 0.98
    # ... unless the structure runs out of the box: then it is not known to end, and the candidate stays.
    assert np.array_equal(combine(small, False, clusters, click, escapes=lambda mask: True), small)
    # ... or the candidate leaked (the structure is then a shared cluster too).
    assert not combine(small, True, clusters, click)[~ball].any()


def test_negative_clicks_exclude_what_is_closer_to_them():
    mask = np.zeros((5, 20, 40), bool)
    mask[:, 5:15, 2:14] = True  # blob A
    mask[:, 9:11, 14:26] = True  # a bridge of the same tissue
    mask[:, 5:15, 26:38] = True  # blob B
    kept = exclude_negatives(mask, positives=[(2, 10, 6)], negatives=[(2, 10, 32)])
    assert kept[:, 5:15, 2:14].all() and not kept[:, 5:15, 26:38].any()
    assert kept.sum() < mask.sum() and not (kept & ~mask).any()
    # A negative click outside the mask changes nothing.
    assert np.array_equal(exclude_negatives(mask, [(2, 10, 6)], [(0, 0, 0)]), mask)


def test_negative_click_through_the_whole_route():
    image, wall, blob = _blob_on_wall()
    settings = ClickSettings(max_radius_mm=14, min_radius_mm=8, config=TINY, max_size=48)
    alone = segment_click(image, [(17, 24, 12)], settings=settings).mask
    assert alone[12, 24, 14]
    # A negative click 3 voxels from the positive one, inside what it gave: the half nearer to it goes.
    result = segment_click(image, [(17, 24, 12)], negatives=[(14, 24, 12)], settings=settings)
    assert result.mask[12, 24, 17] and not result.mask[12, 24, 14]
    assert not (result.mask & ~alone).any() and result.mask.sum() < 0.8 * alone.sum()


def test_a_2d_colour_photograph_uses_the_whole_image():
    from SegSSLLib.phantoms import make_dermoscopy_phantom

    photo, label = make_dermoscopy_phantom(seed=0, size=(64, 64))
    lesion = sitk.GetArrayFromImage(label).astype(bool)
    rows, cols = np.argwhere(lesion).mean(axis=0).round().astype(int)
    result = segment_click(photo, [(int(cols), int(rows))], settings=ClickSettings(config=TINY))
    assert result.box == Box((0, 0), (64, 64)) and result.mask.shape == lesion.shape
    assert result.mask[rows, cols]


def test_a_click_on_air_that_goes_on_beyond_the_box_is_background():
    from SegSSLLib.errors import SegSSLError
    from SegSSLLib.s3net.segment import S3NetSettings, segment_s3net

    # A body in air. Region growing from the air runs out
    # of its box (14 + 20 mm around the click), so the coarse whole-image region decides: air around the body.
    image = _body_in_air()
    settings = S3NetSettings(TINY, max_size=48, max_radius_mm=14, device="cpu")
    with pytest.raises(SegSSLError, match="lies on background"):
        segment_s3net(image, [(5, 40, 10)], settings)  # next to the body: S3-Net sees both
    # A click in a body that fills the box region growing runs on: the region reaches every face of
    # that box, but on the whole image it ends at the skin. Not background.
    result = segment_s3net(_body_in_air(160, 70), [(80, 80, 10)], settings)
    assert result.leaked and sitk.GetArrayFromImage(result.label_map)[10, 80, 80] == 1


def test_a_structure_leaving_the_limit_only_across_the_slices_is_followed_along_them():
    from dataclasses import replace

    # A bright column (a spine) through all 40 slices of 3 mm: 120 mm, more than the 2 × 30 mm limit.
    k, j, i = np.mgrid[0:40, 0:40, 0:40]
    column = (j - 20) ** 2 + (i - 20) ** 2 <= 16
    array = np.where(column, 100.0, 0.0) + np.random.default_rng(0).normal(0, 4, k.shape)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((1.0, 1.0, 3.0))
    settings = ClickSettings(max_radius_mm=30, min_radius_mm=8, config=TINY, max_size=48)
    followed = segment_click(image, [(20, 20, 20)], settings=settings)
    assert not followed.leaked and followed.limit.size[2] == 40 and followed.mask[[0, 39], 20, 20].all()
    assert not (followed.mask & ~((j - 20) ** 2 + (i - 20) ** 2 <= 36)).any()  # the column, give or take its rim
    cut = segment_click(image, [(20, 20, 20)], settings=replace(settings, elongated=False))
    assert cut.leaked and not cut.mask[[0, 39], 20, 20].any() and cut.mask[20, 20, 20]
    # A leak in-plane is not followed: the limit stays where it was.
    array[:, 20:24, 20:] = 100 + np.random.default_rng(1).normal(0, 4, (40, 4, 20))
    sideways = sitk.GetImageFromArray(array.astype(np.float32))
    sideways.SetSpacing((2.0, 2.0, 3.0))  # the limit (±15 pixels) no longer holds the image in-plane
    assert segment_click(sideways, [(20, 20, 20)], settings=settings).limit.size[2] < 40


def test_settings_are_checked():
    with pytest.raises(ValueError):
        ClickSettings(min_radius_mm=50, max_radius_mm=20)
    with pytest.raises(ValueError):
        ClickSettings(region_margin_mm=-1)
    with pytest.raises(ValueError):
        segment_click(sitk.Image(8, 8, 8, sitk.sitkFloat32), [])


def test_segment_s3net_takes_the_click_route_with_seeds_and_names_its_settings():
    from SegSSLLib.errors import SegSSLError
    from SegSSLLib.s3net.segment import S3NetSettings, segment_s3net

    image, wall, blob = _blob_on_wall()
    settings = S3NetSettings(TINY, max_size=48, max_radius_mm=14, device="cpu")
    result = segment_s3net(image, [(17, 24, 12)], settings)
    assert result.route == "click" and result.click_box is not None
    mask, clusters = sitk.GetArrayFromImage(result.label_map), sitk.GetArrayFromImage(result.clusters)
    assert mask[12, 24, 17] == 1 and result.label_map.GetSize() == image.GetSize()
    # The cluster map is placed in the full grid: 0 outside the box S3-Net was trained on.
    inside = np.zeros(mask.shape, bool)
    inside[result.click_box.array_slices] = True
    assert not clusters[~inside].any() and clusters[inside].min() >= 1
    with pytest.raises(SegSSLError, match="giving `negatives` needs the click route"):
        segment_s3net(image, [(17, 24, 12)], S3NetSettings(TINY, route="whole", negatives=((14, 24, 12),)))
    with pytest.raises(SegSSLError, match="`max_radius_mm` must be positive"):
        segment_s3net(image, [(17, 24, 12)], S3NetSettings(TINY, max_radius_mm=0))
    with pytest.raises(SegSSLError, match="negative click 99,24,12 is outside the image"):
        segment_s3net(image, [(17, 24, 12)], S3NetSettings(TINY, negatives=((99, 24, 12),)))
