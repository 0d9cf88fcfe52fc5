"""Choosing the structure in an S3-Net cluster map without any ground truth.

With seeds (the user's clicks): the clusters under the seeds, then the connected component(s) of
those clusters that contain the seeds (face connectivity), optionally with holes filled. Before the
components are taken, bridges thinner than 2·r + 1 pixels in-plane are cut (an erosion by r, the
components, then a dilation by r inside the clusters), because a structure often touches a
neighbour of the same cluster along a thin line; seeds in structures thinner than that keep them. A component
that reaches both ends of every image axis is background (air around the body, the skin around a
lesion); it is left out with a warning rather than returned.

Without seeds (2D photographs only): the *central component*. Every cluster's mask is closed and
then opened with a small disk (so a hair that crosses a structure does not split it, and hairs and
thin bridges to the border break), split into connected components, and components touching the
image border, smaller than ``min_fraction`` of the image, or extending over more than
``max_extent`` of both its height and width (the skin inside the dark ring of a dermatoscope) are
dropped.
Each remaining component is scored by its area with holes filled (so a ring around a darker core
counts the core) times its centrality, max(0, 1 − d / R), where d is the distance from its centroid
to the image centre and R half the shorter image side. The best one, holes filled, is the answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)


@dataclass
class Selection:
    mask: np.ndarray  # bool, the shape of the cluster map
    clusters: list[int] = field(default_factory=list)  # cluster ids that were kept
    rejected_seeds: list[tuple[int, ...]] = field(default_factory=list)  # seeds on background


def spans_whole_image(mask: np.ndarray) -> bool:
    """True when ``mask`` reaches both ends of every axis (what background does)."""
    for axis in range(mask.ndim):
        first = np.take(mask, 0, axis=axis)
        last = np.take(mask, mask.shape[axis] - 1, axis=axis)
        if not (first.any() and last.any()):
            return False
    return True


def touches_border(mask: np.ndarray) -> bool:
    return any(
        np.take(mask, 0, axis=axis).any() or np.take(mask, mask.shape[axis] - 1, axis=axis).any()
        for axis in range(mask.ndim)
    )


def fill_holes(mask: np.ndarray, slice_axis: int = 0) -> np.ndarray:
    """Fill enclosed cavities in 3D, then slice by slice along ``slice_axis`` (cavities open in depth)."""
    filled = ndimage.binary_fill_holes(mask)
    if filled.ndim == 3:
        moved = np.moveaxis(filled, slice_axis, 0)
        moved = np.stack([ndimage.binary_fill_holes(plane) for plane in moved])
        filled = np.moveaxis(moved, 0, slice_axis)
    return filled


def select_from_seeds(
    clusters: np.ndarray,
    seeds: list[tuple[int, ...]],
    holes: bool = True,
    slice_axis: int = 0,
    bridge_radius: int = 1,
) -> Selection:
    """The connected structure under the seeds.

    ``clusters``: cluster map in array order ((k, j, i) or (rows, cols)); ``seeds``: ITK-order indices
    ((i, j, k) or (x, y)), like the command line's; ``slice_axis``: array axis of the slices (for
    slice-wise hole filling and in-plane bridge cutting). ``bridge_radius``: connections to
    neighbouring structures thinner than 2·radius + 1 pixels in-plane are cut (0: keep them).
    """
    if not seeds:
        raise ValueError("select_from_seeds needs at least one seed")
    positions = [tuple(reversed(seed)) for seed in seeds]
    connectivity = ndimage.generate_binary_structure(clusters.ndim, 1)
    # A seed whose own cluster component spans the whole image is on background; its cluster would
    # join everything it touches, so it is dropped before the seeds' clusters are combined.
    rejected = [seed for seed, position in zip(seeds, positions) if _on_background(clusters, position, connectivity)]
    for seed in rejected:
        log.warning(
            "seed %s lies in a region that spans the whole image (background); it was left out — "
            "click inside the structure you want",
            ",".join(map(str, seed)),
        )
    kept = [position for seed, position in zip(seeds, positions) if seed not in rejected]
    kept_clusters = sorted({int(clusters[p]) for p in kept})
    candidate = np.isin(clusters, kept_clusters)
    core = _without_thin_bridges(candidate, kept, bridge_radius, slice_axis)
    components, _ = ndimage.label(core, structure=connectivity)
    kept_components = sorted({int(components[p]) for p in kept})
    for component in list(kept_components):
        if spans_whole_image(components == component):
            kept_components.remove(component)
            log.warning("the clusters under the seeds join into a region that spans the whole image; it was left out")
    mask = np.isin(components, kept_components) if kept_components else np.zeros(clusters.shape, bool)
    if bridge_radius > 0 and mask.any():
        # Grow back what the erosion took from the kept components, but not across the cut bridges.
        mask = ndimage.binary_dilation(mask, _in_plane_square(mask.ndim, slice_axis), iterations=bridge_radius) & candidate
    if holes and mask.any():
        mask = fill_holes(mask, slice_axis)
    return Selection(mask, kept_clusters, rejected)


def _without_thin_bridges(candidate: np.ndarray, positions, radius: int, slice_axis: int) -> np.ndarray:
    """``candidate`` eroded in-plane by ``radius``; unchanged when the erosion would remove a seed."""
    if radius <= 0:
        return candidate
    core = ndimage.binary_erosion(candidate, _in_plane_square(candidate.ndim, slice_axis), iterations=radius)
    if not all(core[p] for p in positions):
        log.debug("a seed lies in a structure thinner than %d pixels; no bridges were cut", 2 * radius + 1)
        return candidate
    return core


def _in_plane_square(ndim: int, slice_axis: int) -> np.ndarray:
    """The 3×3 neighbourhood within a slice (slices of anisotropic volumes are often thick)."""
    square = np.ones((3,) * ndim, bool)
    if ndim == 3:
        moved = np.moveaxis(square, slice_axis, 0)
        moved[0] = moved[2] = False
    return square


def _on_background(clusters: np.ndarray, position: tuple[int, ...], connectivity: np.ndarray) -> bool:
    components, _ = ndimage.label(clusters == clusters[position], structure=connectivity)
    return spans_whole_image(components == components[position])


def select_central_component(
    clusters: np.ndarray, radius: int = 2, min_fraction: float = 0.005, max_extent: float = 0.75
) -> Selection:
    """The no-seed heuristic for 2D images (see the module documentation)."""
    if clusters.ndim != 2:
        raise ValueError("the central-component heuristic is for 2D images; give seeds for volumes")
    rows, cols = clusters.shape
    centre = np.array([(rows - 1) / 2, (cols - 1) / 2])
    reach = min(rows, cols) / 2
    disk = _disk(radius)
    best_score, best_mask, best_cluster = 0.0, None, None
    for cluster in np.unique(clusters):
        mask = clusters == cluster
        if radius > 0:
            mask = _close_then_open(mask, disk)
        components, count = ndimage.label(mask)
        for index in range(1, count + 1):
            component = components == index
            if component.sum() < min_fraction * clusters.size or touches_border(component):
                continue
            if _extent(component, 0) > max_extent * rows and _extent(component, 1) > max_extent * cols:
                continue  # it surrounds everything: the skin inside a dermatoscope's dark ring
            filled = ndimage.binary_fill_holes(component)
            distance = np.linalg.norm(np.array(ndimage.center_of_mass(filled)) - centre)
            score = filled.sum() * max(0.0, 1.0 - distance / reach)
            if score > best_score:
                best_score, best_mask, best_cluster = score, filled, int(cluster)
    if best_mask is None:
        log.warning(
            "no central structure was found (every sizeable region touches the image border) — "
            "give a seed with --seed X,Y"
        )
        return Selection(np.zeros(clusters.shape, bool))
    return Selection(best_mask, [best_cluster])


def _extent(mask: np.ndarray, axis: int) -> int:
    """Number of rows (axis 0) or columns (axis 1) from the first to the last one the mask occupies."""
    occupied = np.flatnonzero(mask.any(axis=1 - axis))
    return int(occupied[-1] - occupied[0] + 1)


def _close_then_open(mask: np.ndarray, disk: np.ndarray) -> np.ndarray:
    # Erosions treat the outside as part of the mask, so contact with the border is kept.
    closed = ndimage.binary_erosion(ndimage.binary_dilation(mask, disk), disk, border_value=1)
    return ndimage.binary_dilation(ndimage.binary_erosion(closed, disk, border_value=1), disk)


def _disk(radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius * radius
