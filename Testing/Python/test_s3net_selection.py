"""Choosing the structure from a cluster map: seeds, background, holes, the 2D no-seed heuristic."""

import logging

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


def test_seed_on_background_is_left_out_with_a_warning(caplog):
    clusters = _volume_with_two_blobs()
    with caplog.at_level(logging.WARNING):
        selection = select_from_seeds(clusters, [(0, 0, 0), (2, 2, 2)])
    assert selection.rejected_seeds == [(0, 0, 0)]
    assert selection.mask.sum() == 4 * 3 * 4  # blob A only, not the background around it
    assert "background" in caplog.text and "0,0,0" in caplog.text
    only_background = select_from_seeds(clusters, [(13, 9, 5)])
    assert not only_background.mask.any() and only_background.clusters == []


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


def test_central_component_warns_when_everything_touches_the_border(caplog):
    clusters = np.ones((20, 20), np.int64)
    clusters[:, 10:] = 2
    with caplog.at_level(logging.WARNING):
        selection = select_central_component(clusters)
    assert not selection.mask.any()
    assert "--seed" in caplog.text


def test_central_component_is_for_2d_only():
    with pytest.raises(ValueError, match="2D"):
        select_central_component(np.ones((3, 4, 5), np.int64))
