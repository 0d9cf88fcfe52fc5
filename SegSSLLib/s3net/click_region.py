"""The region of the image an S3-Net is trained on for a click: a box around the click(s).

Training on a box around the click instead of the whole image gives the network the local contrast
(the tissues that meet the clicked structure, not every tissue of the body) and far less work. The
box has a physical half-size (mm, converted per axis with the spacing, so anisotropic voxels get
fewer slices than pixels), clipped to the image; when the structure found in it reaches a face of
the box that is not a face of the image, the box was too small and is grown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Box:
    """A box of voxels in ITK index order: ``start`` inclusive, ``stop`` exclusive, per axis."""

    start: tuple[int, ...]
    stop: tuple[int, ...]

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def array_slices(self) -> tuple[slice, ...]:
        """The box as slices of a numpy array in (k, j, i) order."""
        return tuple(slice(a, b) for a, b in zip(reversed(self.start), reversed(self.stop)))

    def crop(self, image: sitk.Image) -> sitk.Image:
        """The part of ``image`` inside the box (geometry kept: origin moves, spacing and direction stay)."""
        return sitk.RegionOfInterest(image, list(self.size), list(self.start))

    def local(self, seed: tuple[int, ...]) -> tuple[int, ...]:
        """A full-image index as an index inside the box."""
        return tuple(int(s - a) for s, a in zip(seed, self.start))

    def contains(self, seed: tuple[int, ...]) -> bool:
        return all(a <= s < b for s, a, b in zip(seed, self.start, self.stop))


def box_around(
    seeds: list[tuple[int, ...]], spacing: tuple[float, ...], image_size: tuple[int, ...], radius_mm: float
) -> Box:
    """The box reaching ``radius_mm`` beyond the seeds' bounding box on every axis, clipped to the image.

    ``seeds``, ``spacing`` and ``image_size`` are in ITK order; each axis gets at least one voxel
    beyond the seeds (when the image has it), whatever the spacing.
    """
    if not seeds:
        raise ValueError("box_around needs at least one seed")
    points = np.array(seeds)
    start, stop = [], []
    for axis, (spacing_mm, size) in enumerate(zip(spacing, image_size)):
        reach = max(1, math.ceil(radius_mm / spacing_mm))
        start.append(max(0, int(points[:, axis].min()) - reach))
        stop.append(min(size, int(points[:, axis].max()) + reach + 1))
    return Box(tuple(start), tuple(stop))


def box_of_mask(mask: np.ndarray, margin_mm: float, spacing: tuple[float, ...]) -> Box:
    """The bounding box of a (k, j, i) mask, ``margin_mm`` wider on every side, clipped to the array."""
    occupied = np.argwhere(mask)
    if not len(occupied):
        raise ValueError("box_of_mask needs a non-empty mask")
    low, high = occupied.min(axis=0)[::-1], occupied.max(axis=0)[::-1]  # ITK order
    image_size = mask.shape[::-1]
    start, stop = [], []
    for axis, spacing_mm in enumerate(spacing):
        reach = max(1, math.ceil(margin_mm / spacing_mm))
        start.append(max(0, int(low[axis]) - reach))
        stop.append(min(image_size[axis], int(high[axis]) + reach + 1))
    return Box(tuple(start), tuple(stop))


def union_box(a: Box, b: Box) -> Box:
    return Box(tuple(map(min, a.start, b.start)), tuple(map(max, a.stop, b.stop)))


def clip_box(box: Box, limit: Box) -> Box:
    """``box`` cut down to lie inside ``limit``."""
    start = tuple(map(max, box.start, limit.start))
    return Box(start, tuple(max(s + 1, e) for s, e in zip(start, map(min, box.stop, limit.stop))))


def open_faces(mask: np.ndarray, box: Box, image_size: tuple[int, ...]) -> list[str]:
    """Faces of ``box`` (not faces of the image) that the box-shaped (k, j, i) ``mask`` reaches.

    Each face is named like ``"-i"`` or ``"+k"``; an empty list means the structure ends inside the
    box (or at the image's own border), so a larger box would not change it.
    """
    faces = []
    names = "ijk"[: len(image_size)]
    for axis in range(len(image_size)):
        array_axis = mask.ndim - 1 - axis
        if box.start[axis] > 0 and np.take(mask, 0, axis=array_axis).any():
            faces.append(f"-{names[axis]}")
        if box.stop[axis] < image_size[axis] and np.take(mask, mask.shape[array_axis] - 1, axis=array_axis).any():
            faces.append(f"+{names[axis]}")
    return faces


def grow_box(box: Box, faces: list[str], spacing: tuple[float, ...], image_size: tuple[int, ...], step_mm: float) -> Box:
    """``box`` moved out by ``step_mm`` on the named faces only (clipped to the image)."""
    start, stop = list(box.start), list(box.stop)
    names = "ijk"
    for face in faces:
        axis = names.index(face[1])
        reach = max(1, math.ceil(step_mm / spacing[axis]))
        if face[0] == "-":
            start[axis] = max(0, start[axis] - reach)
        else:
            stop[axis] = min(image_size[axis], stop[axis] + reach)
    return Box(tuple(start), tuple(stop))


def physical_extent_mm(box: Box, spacing: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(n * s for n, s in zip(box.size, spacing))
