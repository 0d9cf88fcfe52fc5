"""From a click, the S3-Net cluster map of the box around it and the region-growing candidate to a mask.

No reference mask is involved anywhere: every decision uses the image, the clicks, the classical
candidate and the clusters.

- ``seed_structure``: the connected piece of the click's own cluster (thin in-plane bridges cut,
  holes filled), what S3-Net alone says the clicked structure is.
- ``combine``: the answer, from the region-growing candidate (clipped to the size limit) and the
  clicked S3-Net structure. When the structure lies within the candidate (grown by ``shell`` voxels
  in-plane), they are the same structure and S3-Net's clusters refine the candidate's border (region
  growing stops short of partial-volume edges). When instead the candidate lies within the structure,
  region growing ended on its own and the structure ends inside the box too, region growing stopped
  short (a variegated lesion) and the structure is the answer. Otherwise S3-Net's structure is a
  cluster shared with neighbours and the candidate stays. After a leak (the candidate reached the
  size limit) only what is reached from the click through necks at least ``neck_fraction`` of the
  width at the click is kept (``cut_necks``: a blob pressed against a wall of the same density, such
  as a tumour on the chest wall, is separated from the wall).
- ``exclude_negatives``: voxels of the mask that are geodesically (inside the mask) closer to a
  negative click than to every positive click are removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from SegSSLLib.s3net.selection import _in_plane_square, _seed_region, fill_holes


@dataclass(frozen=True)
class ClickSelectionSettings:
    bridge_radius: int = 1  # in-plane pixels, as the whole-image selection
    shell: int = 1  # in-plane voxels of S3-Net's structure that may be added around the grown region
    agreement: float = 0.8  # share of one region that must lie in the other for them to count as one structure
    neck_fraction: float = 0.5  # after a leak, necks narrower than this share of the width at the click are cut


def _structure(ndim: int, slice_axis: int) -> np.ndarray:
    return _in_plane_square(ndim, slice_axis)


def seed_structure(clusters: np.ndarray, positions: list[tuple[int, ...]], slice_axis: int = 0, bridge_radius: int = 1) -> np.ndarray:
    """The union of each click's connected piece of its own cluster (array-order ``positions``), holes filled."""
    mask = np.zeros(clusters.shape, bool)
    for position in positions:
        if not mask[position]:
            mask |= _seed_region(clusters, position, bridge_radius, slice_axis)
    return fill_holes(mask, slice_axis) if mask.any() else mask


def component_with(mask: np.ndarray, positions: list[tuple[int, ...]]) -> np.ndarray:
    """The face-connected components of ``mask`` that hold one of ``positions``."""
    labels, _ = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))
    keep = {labels[p] for p in positions} - {0}
    return np.isin(labels, list(keep)) if keep else np.zeros(mask.shape, bool)


def cut_necks(mask: np.ndarray, positions: list[tuple[int, ...]], slice_axis: int = 0, fraction: float = 0.5) -> np.ndarray:
    """The part of ``mask`` reached from the clicks through necks at least ``fraction`` of its width.

    The width is measured at the clicks: r = fraction × the in-plane distance from the click to the
    mask's border (pixels). The mask is eroded in-plane by a disk of radius r, the clicks' components
    kept and grown back inside the mask by r steps (in-plane, and to neighbouring slices so the
    small end slices of a ball return), so a blob keeps its shape while a wall it touches through a
    narrower contact is dropped. The erosion is in-plane only, because slices are often thick (a
    tumour may span three 5 mm slices).
    """
    inside = [p for p in positions if mask[p]]
    if not inside or fraction <= 0:
        return mask
    depth = _in_plane_distance(mask, slice_axis)
    radius = fraction * max(depth[p] for p in inside)
    if radius < 1:
        return mask
    core = depth > radius
    kept = component_with(core, [p for p in inside if core[p]])
    if not kept.any():
        return mask
    # Grow back inside the mask, up to ``radius`` steps (in-plane 3×3, and to the neighbouring
    # slices so that the small end slices of a ball, eroded away, come back too).
    step = _structure(mask.ndim, slice_axis)
    if mask.ndim == 3:
        np.moveaxis(step, slice_axis, 0)[[0, 2], 1, 1] = True
    grown = ndimage.binary_dilation(kept, step, iterations=int(np.ceil(radius)), mask=mask)
    return component_with(grown, inside)


def _in_plane_distance(mask: np.ndarray, slice_axis: int) -> np.ndarray:
    """Euclidean distance (pixels) from each pixel of ``mask`` to the nearest pixel outside it, within
    its slice; pixels beyond the array's edge count as inside (a structure cut by the box is not thin there)."""
    if mask.ndim == 2:
        return ndimage.distance_transform_edt(np.pad(mask, 1, mode="edge"))[1:-1, 1:-1]
    moved = np.moveaxis(mask, slice_axis, 0)
    depth = np.stack([ndimage.distance_transform_edt(np.pad(plane, 1, mode="edge"))[1:-1, 1:-1] for plane in moved])
    return np.moveaxis(depth, 0, slice_axis)


def combine(
    candidate: np.ndarray,
    leaked: bool,
    clusters: np.ndarray,
    positions: list[tuple[int, ...]],
    slice_axis: int = 0,
    settings: ClickSelectionSettings = ClickSelectionSettings(),
    escapes=None,
) -> np.ndarray:
    """The mask from the region-growing ``candidate`` (clipped to the limit box), whether it ``leaked``
    through that limit, and the S3-Net ``clusters`` of the same box (see the module documentation).

    ``escapes(mask) -> bool``: does a mask reach a face of the box that is not the image's border
    (None: nothing escapes, the box is the whole image).
    """
    escapes = escapes or (lambda mask: False)
    structure = seed_structure(clusters, positions, slice_axis, settings.bridge_radius)
    if structure.any() and escapes(structure):
        # A cluster that runs out of the box is often a wall the structure touches: keep what the
        # click reaches through necks at least ``neck_fraction`` of the structure's width.
        structure = cut_necks(structure, positions, slice_axis, settings.neck_fraction)
    candidate = component_with(candidate, positions)
    if leaked:
        # The grown region went on into tissue of the same density: keep what is reached from the
        # click through necks not much narrower than the structure (a tumour pressed on the chest wall).
        candidate = cut_necks(candidate, positions, slice_axis, settings.neck_fraction)
    mask = candidate
    if structure.any() and candidate.any():
        square = _structure(candidate.ndim, slice_axis)
        near = ndimage.binary_dilation(candidate, square, iterations=settings.shell) if settings.shell > 0 else candidate
        if (structure & near).sum() >= settings.agreement * structure.sum():
            # S3-Net's structure lies within the grown region: the same structure. Its clusters
            # refine the region's border (region growing stops short of partial-volume edges).
            mask = candidate | (structure & near)
        elif (
            not leaked
            and not escapes(structure)
            and (structure & candidate).sum() >= settings.agreement * candidate.sum()
        ):
            # The grown region lies within S3-Net's structure, which ends inside the box: region
            # growing stopped short (a variegated lesion, a noisy blob); take the structure.
            mask = structure
    # Holes are filled in S3-Net's structure (seed_structure) only: a hole in the grown region is
    # tissue region growing refused (a kidney's sinus fat), which a reference leaves out too.
    return component_with(mask, positions)


def exclude_negatives(mask: np.ndarray, positives: list[tuple[int, ...]], negatives: list[tuple[int, ...]]) -> np.ndarray:
    """``mask`` without the voxels geodesically (inside it) closer to a negative click than to any positive one."""
    negatives = [n for n in negatives if mask[n]]
    if not negatives:
        return mask
    owner = np.zeros(mask.shape, np.int8)  # 1: reached first from a positive click, 2: from a negative one
    for position in positives:
        if mask[position]:
            owner[position] = 1
    for position in negatives:
        owner[position] = 2
    step = ndimage.generate_binary_structure(mask.ndim, 1)
    while True:
        free = mask & (owner == 0)
        if not free.any():
            break
        grow_positive = ndimage.binary_dilation(owner == 1, step) & free
        grow_negative = ndimage.binary_dilation(owner == 2, step) & free & ~grow_positive
        if not (grow_positive.any() or grow_negative.any()):
            break
        owner[grow_positive] = 1
        owner[grow_negative] = 2
    return mask & (owner == 1)
