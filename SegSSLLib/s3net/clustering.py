"""From an image to a cluster map on its grid: windowing, slicing, training, inference.

A volume becomes a stack of windowed slices along one axis (resized with ``SliceStack`` only when
a slice is larger than ``max_size``); one S3-Net is trained over the whole stack, so cluster ids
agree between slices, and the per-slice cluster ids are put back on the original grid. A 2D image is
a stack of one slice; RGB photographs keep their three channels.

Cluster ids in the returned map are 1..n, ordered by the mean (normalised) intensity of their
pixels, so darker tissue gets smaller ids and 0 never appears (label-map viewers hide 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from SegSSLLib.errors import SegSSLError
from SegSSLLib.intensity import IntensityWindow, guess_window
from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.s3net.config import S3NetConfig
from SegSSLLib.s3net.training import TrainingResult, predict_clusters, train_s3net
from SegSSLLib.axes import array_axis
from SegSSLLib.slicing import SliceStack


@dataclass
class ClusterMap:
    clusters: np.ndarray  # (k, j, i) or (rows, cols), values 1..n
    training: TrainingResult
    window: IntensityWindow | None  # None for 8-bit photographs (scaled by 1/255)


def normalised_channels(image: sitk.Image, window: IntensityWindow | None = None) -> tuple[np.ndarray, IntensityWindow | None]:
    """(C, k, j, i) float32 in [0, 1] (a 2D image gets k = 1), and the window that was used.

    ``window`` None: ``guess_window`` for scalar images; 8-bit colour images are divided by 255.
    """
    array = sitk.GetArrayFromImage(image)
    components = image.GetNumberOfComponentsPerPixel()
    if components == 1:
        channels = array[None]
    else:
        channels = np.moveaxis(array, -1, 0)
    if image.GetDimension() == 2:
        channels = channels[:, None]
    elif components != 1:
        raise SegSSLError(f"the volume has {components} components per voxel; give a single-channel (grey-level) volume")
    if not np.all(np.isfinite(channels)):
        raise SegSSLError("the input contains NaN or infinite values — fix or mask them before segmenting")
    if channels.min() == channels.max():
        raise SegSSLError(
            f"the input is constant (every value is {channels.flat[0]:g}): there is nothing to segment — "
            "check that this is the right image"
        )
    if window is None and components > 1 and array.dtype == np.uint8:
        return (channels / 255.0).astype(np.float32), None
    window = window or guess_window(channels)
    normalised = np.stack([window.apply(channel) for channel in channels]).astype(np.float32)
    if normalised.min() == normalised.max():
        raise SegSSLError(
            f"every value of the input falls outside the intensity window ({_describe(window)}) — "
            "give another window with `window`"
        )
    return normalised, window


def _describe(window: IntensityWindow) -> str:
    if window.mode == "ct":
        return f"CT level {window.level:g}, width {window.width:g} HU"
    return f"percentiles {window.lower:g}–{window.upper:g}"


def cluster_image(
    image: sitk.Image,
    config: S3NetConfig = S3NetConfig(),
    device: torch.device | str = "cpu",
    progress: Progress = NO_PROGRESS,
    seed: int = 0,
    slice_axis: int = 2,
    max_size: int = 256,
    window: IntensityWindow | None = None,
    writer=None,
) -> ClusterMap:
    """Train an S3-Net on ``image`` and return its cluster map on the image's grid.

    ``slice_axis``: ITK axis the slices are perpendicular to (2 = K, axial for an axial scan);
    ignored for 2D images. ``max_size``: slices with a side larger than this are scaled down for
    the network (and the clusters scaled back up), keeping physical proportions.
    """
    channels, window = normalised_channels(image, window)
    if image.GetDimension() == 2:
        spacing, slice_axis = (*image.GetSpacing(), 1.0), 2
    else:
        spacing = image.GetSpacing()
    slices, to_grid = _slice_stack(channels, spacing, slice_axis, max_size)
    # One enclosing stage, so the overall share runs once from 0 to 1 over training and clustering.
    with progress.stage("s3net", total=2):
        training = train_s3net(slices, config, device, progress, seed, writer)
        progress.advance()
        ids = predict_clusters(training.model, slices, config.inference_batch_size, device, progress)
        progress.advance()
    clusters = to_grid(ids)
    clusters = _order_by_intensity(clusters, channels.mean(axis=0))
    if image.GetDimension() == 2:
        clusters = clusters[0]
    return ClusterMap(clusters, training, window)


def _slice_stack(channels: np.ndarray, spacing, slice_axis: int, max_size: int):
    """(N, C, H, W) slices and a function taking (N, H, W) cluster ids back to a (k, j, i) array."""
    volume = torch.from_numpy(channels)  # (C, k, j, i)
    axis = array_axis(slice_axis)
    rows, cols = (n for a, n in enumerate(volume.shape[1:]) if a != axis)
    if max(rows, cols) <= max_size:
        slices = volume.movedim(1 + axis, 0).contiguous()  # (N, C, rows, cols)

        def to_grid(ids: torch.Tensor) -> np.ndarray:
            return ids.movedim(0, axis).numpy()

        return slices, to_grid
    stack = SliceStack(tuple(volume.shape[1:]), tuple(spacing), axis=slice_axis, size=max_size)
    slices = stack.to_slices(volume)

    def to_grid(ids: torch.Tensor) -> np.ndarray:
        restored = stack.to_volume(ids[:, None].float(), mode="nearest")[0]
        return restored.round().long().numpy()

    return slices, to_grid


def _order_by_intensity(clusters: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """Renumber cluster ids to 1..n by increasing mean intensity."""
    ids, inverse = np.unique(clusters, return_inverse=True)
    means = np.bincount(inverse.ravel(), weights=intensity.ravel()) / np.bincount(inverse.ravel())
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(means, kind="stable")] = np.arange(1, len(ids) + 1)
    return rank[inverse].reshape(clusters.shape)
