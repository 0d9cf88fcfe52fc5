"""Choosing the structure from a cluster map: seeds, background, holes, the 2D no-seed heuristic."""

import numpy as np
import pytest

from SegSSLLib.s3net.selection import (
    fill_holes,
    select_central_component,
    select_from_seeds,
    spans_whole_image,
    touches_border,
)


def _volume_with_two_blobs():
    """(k, j, i) = (6, 10, 14): background 1, two separate blobs of cluster 2, one blob of cluster 3."""
    clusters = np.ones((6, 10, 14), np.int64)
    clusters[1:5, 1:4, 1:5] = 2  # blob A
    clusters[1:5, 6:9, 8:12] = 2  # blob B, same cluster, not connected
    clusters[1:5, 1:4, 7:10] = 3  # blob C
    return clusters


def test_seed_selects_only_its_own_component_in_itk_order():
    clusters = _volume_with_two_blobs()
    selection = select_from_seeds(clusters, [(2, 2, 2)])  # I, J, K: inside blob A
    expected = np.zeros_like(clusters, bool)
    expected[1:5, 1:4, 1:5] = True
    assert np.array_equal(selection.mask, expected)
    assert selection.clusters == [2] and selection.rejected_seeds == []


def test_several_seeds_join_their_components_and_clusters():
    clusters = _volume_with_two_blobs()
    selection = select_from_seeds(clusters, [(2, 2, 2), (10, 7, 3), (8, 2, 1)])
    assert selection.mask.sum() == 4 * 3 * 4 + 4 * 3 * 4 + 4 * 3 * 3
    assert selection.clusters == [2, 3]


def test_seed_on_background_is_left_out():
    clusters = _volume_with_two_blobs()
    selection = select_from_seeds(clusters, [(0, 0, 0), (2, 2, 2)])
    assert selection.rejected_seeds == [(0, 0, 0)]
    assert selection.mask.sum() == 4 * 3 * 4  # blob A only, not the background around it
    only_background = select_from_seeds(clusters, [(13, 9, 5)])
    assert not only_background.mask.any() and only_background.clusters == []
    assert only_background.rejected_seeds == [(13, 9, 5)]


def test_skin_inside_a_dermatoscope_ring_is_background_not_the_lesion():
    """The skin never reaches the image border (the dark ring does), but it spans most of the image."""
    clusters, truth = _lesion_picture()
    rows, cols = np.mgrid[0:64, 0:64]
    clusters[np.hypot(rows - 31.5, cols - 31.5) > 30] = 3
    assert not spans_whole_image(clusters == 1)  # what the old rule looked at
    skin = select_from_seeds(clusters, [(4, 32)])  # X, Y on the skin left of the lesion
    assert skin.rejected_seeds == [(4, 32)] and not skin.mask.any()
    both = select_from_seeds(clusters, [(4, 32), (35, 20)])  # and a click on the lesion rim
    assert both.rejected_seeds == [(4, 32)]
    # The lesion rim on one side of the hair, and nothing of the skin.
    assert both.mask.sum() > 0.3 * truth.sum() and not (both.mask & ~truth).any()


def test_air_inside_a_round_field_of_view_is_background_not_the_body():
    """CT padding (1) outside a round field of view, air (2) inside it, the body (3) with an organ (4)."""
    k, rows, cols = np.mgrid[0:6, 0:40, 0:40]
    radius = np.hypot(rows - 19.5, cols - 19.5)
    clusters = np.full((6, 40, 40), 1, np.int64)
    clusters[radius < 19] = 2
    clusters[radius < 12] = 3
    clusters[(radius < 5)] = 4
    assert not spans_whole_image(clusters == 2)  # the air reaches no image corner or edge column
    air = select_from_seeds(clusters, [(20, 2, 3)])  # I, J, K in the air above the body
    assert air.rejected_seeds == [(20, 2, 3)] and not air.mask.any()
    organ = select_from_seeds(clusters, [(20, 2, 3), (20, 20, 3)])
    assert organ.rejected_seeds == [(20, 2, 3)]
    assert np.array_equal(organ.mask, clusters == 4)


def test_a_region_that_encloses_more_than_itself_is_background():
    """A thin shell whose filling would add the much larger inside (a body outline, a ring of air)."""
    rows, cols = np.mgrid[0:40, 0:40]
    radius = np.hypot(rows - 19.5, cols - 19.5)
    clusters = np.ones((40, 40), np.int64)
    clusters[(radius < 14) & (radius >= 12)] = 2  # spans 28 of 40 pixels: not wide enough for the extent rule
    clusters[radius < 12] = 3
    assert select_from_seeds(clusters, [(32, 19)]).rejected_seeds == [(32, 19)]
    inside = select_from_seeds(clusters, [(19, 19)])
    assert inside.rejected_seeds == [] and np.array_equal(inside.mask, clusters == 3)


def test_a_pocket_joined_to_the_outside_by_a_thin_channel_is_kept():
    """The background test looks at the seed's region after thin bridges are cut."""
    clusters = np.full((3, 30, 30), 2, np.int64)  # tissue
    clusters[:, :, :3] = 1  # outside air along the left edge ...
    clusters[:, 0, :] = clusters[:, -1, :] = clusters[:, :, -1] = 1  # ... and round the other edges
    clusters[:, 10:20, 12:22] = 1  # a lung-like air pocket
    clusters[:, 15, 3:12] = 1  # a one-pixel channel from the pocket to the outside air
    pocket = select_from_seeds(clusters, [(16, 14, 1)])
    assert pocket.rejected_seeds == []
    expected = np.zeros(clusters.shape, bool)
    expected[:, 10:20, 12:22] = True
    assert np.array_equal(pocket.mask, expected)
    joined = select_from_seeds(clusters, [(16, 14, 1)], bridge_radius=0)  # without the cut it is the outside
    assert joined.rejected_seeds == [(16, 14, 1)] and not joined.mask.any()


def test_each_seed_takes_only_its_own_cluster():
    """Seeds in A (cluster 2) and Y (cluster 3) must not bring in X, cluster 3 touching A."""
    clusters = np.ones((4, 16, 24), np.int64)
    clusters[:, 3:12, 2:8] = 2  # A
    clusters[:, 3:12, 8:12] = 3  # X, touching A along a whole face
    clusters[:, 3:12, 16:21] = 3  # Y, apart
    selection = select_from_seeds(clusters, [(4, 7, 2), (18, 7, 2)])
    expected = np.zeros(clusters.shape, bool)
    expected[:, 3:12, 2:8] = expected[:, 3:12, 16:21] = True
    assert np.array_equal(selection.mask, expected)
    assert selection.clusters == [2, 3]


def test_holes_are_filled_unless_switched_off():
    clusters = np.ones((5, 9, 9), np.int64)
    clusters[1:4, 2:7, 2:7] = 2
    clusters[2, 4, 3] = 3  # a cavity enclosed in 3D
    clusters[0:5, 4, 5] = 3  # a tube through every slice: no 3D cavity, but a hole in each slice
    filled = select_from_seeds(clusters, [(2, 2, 2)])
    kept = select_from_seeds(clusters, [(2, 2, 2)], holes=False)
    assert filled.mask[2, 4, 3] and filled.mask[2, 4, 5]
    assert not kept.mask[2, 4, 3] and not kept.mask[2, 4, 5]
    assert filled.mask.sum() == 3 * 5 * 5


def test_thin_bridges_to_a_neighbour_are_cut_but_thin_structures_kept():
    clusters = np.ones((3, 12, 20), np.int64)
    clusters[:, 2:10, 2:8] = 2  # structure A
    clusters[:, 2:10, 12:18] = 2  # neighbour B, same cluster
    clusters[:, 5, 8:12] = 2  # a one-pixel bridge between them
    a_only = select_from_seeds(clusters, [(4, 5, 1)])
    assert a_only.mask[:, 2:10, 2:8].all() and not a_only.mask[:, :, 12:].any()
    joined = select_from_seeds(clusters, [(4, 5, 1)], bridge_radius=0)
    assert joined.mask[:, 2:10, 12:18].all()
    line = select_from_seeds(clusters, [(10, 5, 1)])  # a seed on the bridge itself: nothing is cut
    assert line.mask[:, 5, 8:12].all() and line.mask[:, 2:10, 12:18].all()


def test_fill_holes_per_slice_fills_a_tube_open_at_both_ends():
    mask = np.zeros((4, 7, 7), bool)
    mask[:, 1:6, 1:6] = True
    mask[:, 3, 3] = False  # open at k = 0 and k = 3, so not a 3D cavity
    assert fill_holes(mask, slice_axis=0)[:, 3, 3].all()
    assert not fill_holes(mask, slice_axis=1)[:, 3, 3].any()  # along another axis it is no hole


def test_border_predicates():
    mask = np.zeros((5, 6), bool)
    mask[2, 2] = True
    assert not touches_border(mask) and not spans_whole_image(mask)
    mask[0, 2] = True
    assert touches_border(mask) and not spans_whole_image(mask)
    mask[:, 0] = mask[:, 5] = mask[4, :] = True
    assert spans_whole_image(mask)


def _lesion_picture():
    """Skin (1) everywhere; a ring lesion (2) round a dark core (3), a hair (3) crossing it, dark corners (3)."""
    rows, cols = np.mgrid[0:64, 0:64]
    distance = np.hypot(rows - 30, cols - 35)
    clusters = np.ones((64, 64), np.int64)
    clusters[distance < 14] = 2
    clusters[distance < 6] = 3
    clusters[rows == cols - 3] = 3  # a one-pixel hair from border to border through the lesion
    clusters[(rows < 6) & (cols < 6)] = 3
    clusters[(rows > 58) & (cols > 58)] = 3
    truth = distance < 14
    return clusters, truth


def test_central_component_is_the_whole_lesion_not_the_core_or_the_corners():
    clusters, truth = _lesion_picture()
    selection = select_central_component(clusters)
    overlap = (selection.mask & truth).sum()
    dice = 2 * overlap / (selection.mask.sum() + truth.sum())
    assert dice > 0.95
    assert selection.clusters == [2]
    assert not touches_border(selection.mask)


def test_central_component_is_not_the_skin_inside_a_dark_dermatoscope_ring():
    clusters, truth = _lesion_picture()
    rows, cols = np.mgrid[0:64, 0:64]
    clusters[np.hypot(rows - 31.5, cols - 31.5) > 30] = 3  # the skin (1) no longer touches the border
    selection = select_central_component(clusters)
    assert selection.clusters == [2]
    assert 2 * (selection.mask & truth).sum() / (selection.mask.sum() + truth.sum()) > 0.95


def test_central_component_is_empty_when_everything_touches_the_border():
    clusters = np.ones((20, 20), np.int64)
    clusters[:, 10:] = 2
    selection = select_central_component(clusters)
    assert not selection.mask.any() and selection.clusters == []


def test_central_component_is_for_2d_only():
    with pytest.raises(ValueError, match="2D"):
        select_central_component(np.ones((3, 4, 5), np.int64))


def test_fill_holes_on_the_bounding_box_is_fill_holes_on_the_whole_array():
    from scipy import ndimage

    def everywhere(mask, slice_axis):
        filled = ndimage.binary_fill_holes(mask)
        if filled.ndim == 3:
            moved = np.stack([ndimage.binary_fill_holes(plane) for plane in np.moveaxis(filled, slice_axis, 0)])
            filled = np.moveaxis(moved, 0, slice_axis)
        return filled

    rng = np.random.default_rng(0)
    for trial in range(60):
        shape = tuple(int(n) for n in rng.integers(3, 12, size=int(rng.integers(2, 4))))
        mask = rng.random(shape) < rng.uniform(0.3, 0.8)
        slice_axis = int(rng.integers(0, mask.ndim)) if mask.ndim == 3 else 0
        assert np.array_equal(fill_holes(mask, slice_axis), everywhere(mask, slice_axis)), trial
    assert not fill_holes(np.zeros((4, 5, 6), bool)).any()
