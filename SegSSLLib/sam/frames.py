"""Windowed slices as model inputs: 8-bit RGB slices for SAM, normalised square frames for SAM 2.

SAM 2 is trained on video frames read from 8-bit JPEGs, resized to a square and normalised with
ImageNet mean and standard deviation (``sam2.utils.misc.load_video_frames``). We build the same
tensors in memory, from the windowed slices, without writing a JPEG (lossy and slow): each slice is
fitted into the square in physical proportions (``SliceStack``), so a reformatted view of an
anisotropic scan is not squashed, quantised to 8 bits like a lossless image, then normalised with
the mean and standard deviation that sam2's own loader uses.
"""

from __future__ import annotations

import inspect

import numpy as np
import SimpleITK as sitk
import torch

from SegSSLLib.intensity import IntensityWindow, guess_window, to_uint8
from SegSSLLib.slicing import SliceStack, array_axis


def windowed_array(image: sitk.Image, window: IntensityWindow | None = None) -> np.ndarray:
    """The (k, j, i) volume (or (rows, cols[, 3]) 2D image) mapped to [0, 1] with a CT window or percentiles."""
    array = sitk.GetArrayViewFromImage(image)
    return (window or guess_window(array)).apply(array)


def rgb_slice(normalised_slice: np.ndarray) -> np.ndarray:
    """A [0, 1] slice (rows, cols) or RGB image (rows, cols, 3) -> 8-bit RGB (rows, cols, 3), as SAM takes it."""
    pixels = to_uint8(normalised_slice)
    return pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=-1)


def slice_of(volume: np.ndarray, itk_axis: int, index: int) -> np.ndarray:
    """Slice ``index`` perpendicular to ITK axis ``itk_axis`` of a (k, j, i) array (a view)."""
    where = [slice(None)] * volume.ndim
    where[array_axis(itk_axis)] = index
    return volume[tuple(where)]


def frame_stack(image: sitk.Image, itk_axis: int, size: int, window: IntensityWindow | None = None):
    """(SliceStack, uint8 frames (N, size, size)): every slice along ``itk_axis`` fitted into a square."""
    normalised = windowed_array(image, window)
    stack = SliceStack(normalised.shape, image.GetSpacing(), axis=itk_axis, size=size)
    frames = to_uint8(stack.to_slices(normalised)[:, 0].numpy())
    return stack, frames


def sam2_normalisation() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and standard deviation that sam2's frame loader applies to [0, 1] pixels."""
    from sam2.utils.misc import load_video_frames

    parameters = inspect.signature(load_video_frames).parameters
    return tuple(parameters["img_mean"].default), tuple(parameters["img_std"].default)


def sam2_frames(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (N, S, S) -> float32 (N, 3, S, S), normalised exactly like sam2's loader does."""
    mean, std = sam2_normalisation()
    # Divide in float64, then round to float32, in the same order as sam2's loader: identical values.
    pixels = torch.from_numpy(np.asarray(frames) / 255.0).float()
    rgb = pixels[:, None].expand(-1, 3, -1, -1)
    mean_t = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return ((rgb - mean_t) / std_t).contiguous()
