"""A volume as a stack of square 2D model inputs along one axis, and the exact way back.

Each slice is scaled to physical proportions (in-plane spacing taken into account), fitted into a
``size`` × ``size`` square and padded with zeros; ``to_volume`` undoes exactly that and lands on
the original grid. Axes are named the ITK/Slicer way: 0 = I (x), 1 = J (y), 2 = K (z); the usual
axial slice stack is axis 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from SegSSLLib.axes import array_axis



@dataclass(frozen=True)
class SliceStack:
    """Maps between a (k, j, i) volume and (N, C, size, size) slice tensors along ``axis``."""

    volume_shape: tuple[int, int, int]  # (k, j, i)
    spacing: tuple[float, float, float]  # ITK order (i, j, k), mm
    axis: int = 2  # ITK axis the slices are perpendicular to
    size: int = 256
    keep_aspect: bool = True  # False: stretch each slice to the square, like the published PolyCL code

    @property
    def _array_axis(self) -> int:
        return array_axis(self.axis)

    @property
    def num_slices(self) -> int:
        return self.volume_shape[self._array_axis]

    @property
    def slice_shape(self) -> tuple[int, int]:
        rows, cols = (n for a, n in enumerate(self.volume_shape) if a != self._array_axis)
        return rows, cols

    @property
    def slice_spacing(self) -> tuple[float, float]:
        spacing_kji = tuple(reversed(self.spacing))
        rows, cols = (s for a, s in enumerate(spacing_kji) if a != self._array_axis)
        return rows, cols

    @property
    def fitted_shape(self) -> tuple[int, int]:
        """Shape of the resized slice inside the square, before padding."""
        if not self.keep_aspect:
            return self.size, self.size
        (rows, cols), (row_mm, col_mm) = self.slice_shape, self.slice_spacing
        height, width = rows * row_mm, cols * col_mm
        scale = self.size / max(height, width)
        return max(1, min(self.size, round(height * scale))), max(1, min(self.size, round(width * scale)))

    @property
    def padding(self) -> tuple[int, int]:
        """(top, left) zero padding that centres the fitted slice in the square."""
        fitted_rows, fitted_cols = self.fitted_shape
        return (self.size - fitted_rows) // 2, (self.size - fitted_cols) // 2

    def to_slices(self, volume: np.ndarray | torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """(k, j, i) or (C, k, j, i) volume -> (N, C, size, size) float tensor.

        ``mode``: "bilinear" for images, "nearest" for label maps.
        """
        volume = torch.as_tensor(np.asarray(volume) if not isinstance(volume, torch.Tensor) else volume)
        if volume.ndim == 3:
            volume = volume.unsqueeze(0)
        if tuple(volume.shape[1:]) != tuple(self.volume_shape):
            raise ValueError(f"volume shape {tuple(volume.shape[1:])} does not match {self.volume_shape}")
        slices = volume.movedim(1 + self._array_axis, 0).float()  # (N, C, rows, cols)
        fitted = _resize(slices, self.fitted_shape, mode)
        top, left = self.padding
        bottom = self.size - fitted.shape[-2] - top
        right = self.size - fitted.shape[-1] - left
        return F.pad(fitted, (left, right, top, bottom))

    def to_volume(self, slices: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """(N, C, size, size) -> (C, k, j, i) on the original grid: the exact inverse of ``to_slices``.

        ``mode``: "bilinear" for probabilities/logits, "nearest" for label maps.
        """
        if slices.ndim != 4 or slices.shape[0] != self.num_slices or slices.shape[-2:] != (self.size, self.size):
            raise ValueError(
                f"expected ({self.num_slices}, C, {self.size}, {self.size}) slices, got {tuple(slices.shape)}"
            )
        top, left = self.padding
        rows, cols = self.fitted_shape
        cropped = slices[..., top : top + rows, left : left + cols]
        restored = _resize(cropped.float(), self.slice_shape, mode)  # (N, C, rows, cols)
        return restored.movedim(0, 1 + self._array_axis)


def _resize(images: torch.Tensor, shape: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(shape):
        return images
    if mode == "nearest":
        # "nearest-exact" samples pixel centres symmetrically, so up- then down-sampling by an
        # integer factor returns the original labels.
        return F.interpolate(images, size=shape, mode="nearest-exact")
    if mode != "bilinear":
        raise ValueError(f"resize mode must be 'bilinear' or 'nearest', got {mode!r}")
    shrinking = images.shape[-2] > shape[0] or images.shape[-1] > shape[1]
    return F.interpolate(images, size=shape, mode="bilinear", align_corners=False, antialias=shrinking)
