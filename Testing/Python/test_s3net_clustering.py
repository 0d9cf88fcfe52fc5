"""Training over a slice stack and the image → cluster map path (windowing, resizing, cluster ids)."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from SegSSLLib.errors import SegSSLError
from SegSSLLib.intensity import IntensityWindow
from SegSSLLib.s3net.clustering import _order_by_intensity, cluster_image, normalised_channels
from SegSSLLib.s3net.config import S3NetConfig
from SegSSLLib.s3net.training import predict_clusters, train_s3net

TINY = S3NetConfig(features=6, clusters=12, crop_size=24, batch_size=3, max_steps=4, min_clusters=2)


def _moving_square_stack(count=6, size=28):
    """Bright squares on a dark background, at a different place on every slice."""
    slices = torch.full((count, 1, size, size), 0.1)
    for index in range(count):
        top = 2 + 3 * index
        slices[index, :, top : top + 9, 4 + 2 * index : 13 + 2 * index] = 0.9
    return slices


def test_one_model_over_the_stack_gives_the_same_ids_on_every_slice():
    slices = _moving_square_stack()
    result = train_s3net(slices, TINY, seed=0)
    ids = predict_clusters(result.model, slices, batch_size=4)
    assert ids.shape == (6, 28, 28)
    square_ids = {int(ids[i, 6 + 3 * i, 8 + 2 * i]) for i in range(6)}
    background_ids = {int(ids[i, 26, 26]) for i in range(6)}
    assert len(square_ids) == 1 and len(background_ids) == 1 and square_ids != background_ids


def test_training_stops_at_the_cluster_floor_or_the_step_budget():
    slices = _moving_square_stack()
    at_once = train_s3net(slices, S3NetConfig(features=4, clusters=8, crop_size=16, max_steps=5, min_clusters=8))
    assert len(at_once.history) == 1 and at_once.stopped_early  # at most 8 clusters from the start
    budget = train_s3net(slices, S3NetConfig(features=4, clusters=8, crop_size=16, max_steps=3, min_clusters=1))
    assert len(budget.history) == 3 and not budget.stopped_early
    assert set(budget.history[0]) >= {"loss", "clustering", "affine", "spatial", "clusters"}
    assert budget.history[0]["affine"] > 0 and budget.history[0]["spatial"] > 0


def test_overall_progress_never_goes_back_when_training_stops_early():
    import io
    import json

    from SegSSLLib.progress import Progress

    stream = io.StringIO()
    image = sitk.GetImageFromArray((_moving_square_stack()[:, 0] * 200).numpy())
    config = S3NetConfig(features=4, clusters=8, crop_size=16, max_steps=6, min_clusters=8)
    result = cluster_image(image, config, progress=Progress("json", stream))
    assert len(result.training.history) == 1 and result.training.stopped_early  # 1 of 6 steps
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    overall = [e["overall"] for e in events if e["event"] in ("stage", "progress")]
    assert overall == sorted(overall) and overall[-1] == 1.0
    training = [e for e in events if e["event"] == "progress" and e["stage"] == "s3net training"]
    assert training[-1]["done"] == training[-1]["total"] == 6  # the stage completes on an early stop
    clustering = [e for e in events if e.get("stage") == "s3net clustering"]
    assert clustering and min(e["overall"] for e in clustering) >= 0.5


def test_small_clusters_are_not_counted_and_min_steps_delays_the_stop():
    from SegSSLLib.s3net.training import count_clusters

    responses = torch.zeros(1, 5, 10, 10)
    responses[0, 0] = 1.0  # cluster 0 almost everywhere ...
    responses[0, 3, 0, 0] = 2.0  # ... cluster 3 on one pixel of 100
    assert count_clusters(responses) == 2 and count_clusters(responses, min_share=0.02) == 1
    slices = _moving_square_stack()
    delayed = train_s3net(slices, S3NetConfig(features=4, clusters=8, crop_size=16, max_steps=5, min_clusters=8, min_steps=3))
    assert len(delayed.history) == 3 and delayed.stopped_early


def test_order_by_intensity_numbers_clusters_from_dark_to_bright():
    clusters = np.array([[7, 7, 3], [3, 9, 9]])
    intensity = np.array([[0.9, 0.8, 0.1], [0.2, 0.5, 0.5]])
    assert np.array_equal(_order_by_intensity(clusters, intensity), [[3, 3, 1], [1, 2, 2]])


def test_photograph_channels_are_scaled_and_grey_images_windowed():
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0], rgb[2, 3] = 255, (10, 20, 30)
    channels, window = normalised_channels(sitk.GetImageFromArray(rgb, isVector=True))
    assert channels.shape == (3, 1, 5, 7) and window is None
    assert np.isclose(channels[0].max(), 1.0) and np.isclose(channels[2, 0, 2, 3], 30 / 255)
    ct = sitk.GetImageFromArray(np.array([[[-1000, 40, 240]]], np.int16))
    channels, window = normalised_channels(ct)
    assert window.mode == "ct" and np.allclose(channels[0, 0, 0], [0.0, 0.5, 1.0])


@pytest.mark.parametrize(
    "array, window, message",
    [
        (np.full((2, 4, 4), 7.0), None, "constant"),
        (np.array([[[1.0, np.nan], [2.0, 3.0]]]), None, "NaN"),
        (np.array([[[1000.0, 2000.0], [1500.0, 3000.0]]]), IntensityWindow(level=40, width=400), "outside the intensity window"),
    ],
)
def test_unusable_images_are_refused(array, window, message):
    with pytest.raises(SegSSLError, match=message):
        normalised_channels(sitk.GetImageFromArray(array), window)


def test_large_slices_are_scaled_down_and_the_map_comes_back_on_the_original_grid():
    array = np.full((3, 40, 60), 0.0, np.float32)
    array[:, 10:30, 15:45] = 100.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.75, 2.0))
    result = cluster_image(image, TINY, max_size=24)
    assert result.clusters.shape == (3, 40, 60)
    assert result.clusters.min() == 1 and set(np.unique(result.clusters)) == set(range(1, result.clusters.max() + 1))
    # The bright block is brighter than the background, so its id is the larger one.
    assert result.clusters[1, 20, 30] > result.clusters[1, 2, 2]
