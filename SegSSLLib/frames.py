"""Windowed slices as model inputs: 8-bit RGB slices for SAM, 8-bit square frames for SAM 2.

SAM 2 is trained on video frames that its loader (``sam2.utils.misc.load_video_frames``) reads as
8-bit images, resizes with PIL's default filter to a square and normalises with ImageNet mean and
standard deviation. We build the same frames in memory, without writing a JPEG (lossy and slow):
the windowed volume is quantised to 8 bits at its native size, each slice is resized with the same
PIL call, then normalised with sam2's own mean and standard deviation when sam2 asks for the frame.

One deliberate difference: a slice is resized to its *physical* proportions inside the square and
padded with black (``SliceStack``), so a reformatted view of an anisotropic scan is not squashed.
Where a slice's physical extent is square, no padding is added and the frame equals, value for
value, what sam2's loader makes of the native slice saved as a lossless image (tested).
"""

from __future__ import annotations

import inspect

import numpy as np
import SimpleITK as sitk
import torch
from PIL import Image

from SegSSLLib.intensity import IntensityWindow, guess_window, to_uint8
from SegSSLLib.axes import array_axis
from SegSSLLib.slicing import SliceStack


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


def resize_like_sam2(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An 8-bit grey slice resized to (rows, cols) with the PIL call sam2's loader makes (its default filter).

    sam2 resizes RGB images; a grey image gives the same values in each channel, so one channel is enough.
    """
    if tuple(pixels.shape) == tuple(shape):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((shape[1], shape[0])))


# Voxels windowed at a time when frames are prepared (8 slices at 512 px, 2 at 1024 px): the float
# temporaries of windowing stay a few tens of MiB, however many slices the volume has.
CHUNK_VOXELS = 2**21


def frame_stack(image: sitk.Image, itk_axis: int, size: int, window: IntensityWindow | None = None,
                chunk_voxels: int = CHUNK_VOXELS):
    """(SliceStack, uint8 frames (N, size, size)): every slice along ``itk_axis``, 8-bit at its native size,
    resized like sam2 does to its physical proportions and centred in the square on black.

    The window is resolved over the whole volume (percentiles are per volume), then applied a few
    slices at a time (``chunk_voxels``): the frames are the same bytes as windowing the whole volume
    at once, without its float copies."""
    array = sitk.GetArrayViewFromImage(image)
    window_range = (window or guess_window(array)).resolve(array)
    stack = SliceStack(array.shape, image.GetSpacing(), axis=itk_axis, size=size)
    (top, left), (rows, cols) = stack.padding, stack.fitted_shape
    frames = np.zeros((stack.num_slices, size, size), np.uint8)
    slices = np.moveaxis(array, array_axis(itk_axis), 0)  # a view: (slice, rows, cols)
    rows_in, cols_in = stack.slice_shape
    step = max(1, int(chunk_voxels) // max(1, rows_in * cols_in))  # whole slices per chunk
    for start in range(0, stack.num_slices, step):
        pixels = to_uint8(window_range.apply(slices[start : start + step]))
        for offset, slice_pixels in enumerate(pixels):
            frames[start + offset, top : top + rows, left : left + cols] = resize_like_sam2(slice_pixels, (rows, cols))
    return stack, frames


class WindowedSlices:
    """Slices of one volume windowed as ``windowed_array`` windows them, each computed when asked.

    The window is resolved once over the whole volume (a CT window, or the volume's percentiles);
    a slice then costs only its own pixels. ``matches`` tells whether this is still the right object
    for an image and window: the same image object (SimpleITK images are not changed in place here:
    a new file gives a new image) and the same window."""

    def __init__(self, image: sitk.Image, window: IntensityWindow | None = None):
        self.image, self.window = image, window
        array = sitk.GetArrayViewFromImage(image)
        self.range = (window or guess_window(array)).resolve(array)

    def matches(self, image: sitk.Image, window: IntensityWindow | None = None) -> bool:
        return self.image is image and self.window == window

    def slice(self, itk_axis: int, index: int) -> np.ndarray:
        """Slice ``index`` perpendicular to ITK axis ``itk_axis``, mapped to [0, 1] (float32, rows x cols)."""
        return self.range.apply(slice_of(sitk.GetArrayViewFromImage(self.image), itk_axis, index))


def sam2_normalisation() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and standard deviation that sam2's frame loader applies to [0, 1] pixels."""
    from sam2.utils.misc import load_video_frames

    parameters = inspect.signature(load_video_frames).parameters
    return tuple(parameters["img_mean"].default), tuple(parameters["img_std"].default)


class Sam2Frames:
    """uint8 frames (N, S, S) that sam2 reads as normalised float32 (3, S, S) frames, one at a time.

    sam2 only ever takes ``images[frame_idx]`` from its inference state, so the video stays 8-bit on the
    CPU (1 byte per pixel instead of 12) and each frame is normalised when the model needs it.
    """

    def __init__(self, frames: np.ndarray):
        self.frames = np.asarray(frames, dtype=np.uint8)
        mean, std = sam2_normalisation()
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.frames.shape[1:])

    def __getitem__(self, index: int) -> torch.Tensor:
        # Divide in float64, then round to float32, in the same order as sam2's loader: identical values.
        pixels = torch.from_numpy(self.frames[index] / 255.0).float()
        return (pixels[None].expand(3, -1, -1) - self.mean) / self.std
