"""Choosing the structure in an S3-Net cluster map without any ground truth.

With seeds (the user's clicks): for each seed, the connected component (face connectivity) of its
own cluster that contains it; the seeds' components are joined, optionally with holes filled. Before
a component is taken, bridges thinner than 2·r + 1 pixels in-plane are cut (an erosion by r, the
component, then a dilation by r inside the cluster), because a structure often touches a neighbour
of the same cluster along a thin line; seeds in structures thinner than that keep them. A seed's
component that reaches both ends of every axis, spans more than ``max_extent`` (3/4) of every
in-plane axis, or more than doubles when its holes are filled is background (air around the body
or inside a round field of view, the skin around a lesion); it is left out (listed in ``rejected_seeds``)
rather than returned.

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
    """Fill enclosed cavities in 3D, then slice by slice along ``slice_axis`` (cavities open in depth).

    The work is done on the mask's bounding box with one voxel more on every side (where the array
    has it): the same result as on the whole array, since all of that outside is connected background.
    """
    occupied = np.argwhere(mask)
    if not len(occupied):
        return mask.copy()
    box = tuple(slice(max(0, low - 1), high + 2) for low, high in zip(occupied.min(axis=0), occupied.max(axis=0)))
    filled = ndimage.binary_fill_holes(mask[box])
    if filled.ndim == 3:
        moved = np.moveaxis(filled, slice_axis, 0)
        moved = np.stack([ndimage.binary_fill_holes(plane) for plane in moved])
        filled = np.moveaxis(moved, 0, slice_axis)
    result = np.zeros(mask.shape, bool)
    result[box] = filled
    return result


def select_from_seeds(
    clusters: np.ndarray,
    seeds: list[tuple[int, ...]],
    holes: bool = True,
    slice_axis: int = 0,
    bridge_radius: int = 1,
    max_extent: float = 0.75,
) -> Selection:
    """The connected structure under the seeds.

    ``clusters``: cluster map in array order ((k, j, i) or (rows, cols)); ``seeds``: ITK-order indices
    ((i, j, k) or (x, y)), like the command line's; ``slice_axis``: array axis of the slices (for
    slice-wise hole filling and in-plane bridge cutting). ``bridge_radius``: connections to
    neighbouring structures thinner than 2·radius + 1 pixels in-plane are cut (0: keep them).
    ``max_extent``: a seed's region wider than this share of every in-plane axis is background.
    """
    if not seeds:
        raise ValueError("select_from_seeds needs at least one seed")
    mask = np.zeros(clusters.shape, bool)
    kept_clusters: set[int] = set()
    rejected = []
    for seed in seeds:
        position = tuple(reversed(seed))
        if mask[position]:
            continue  # inside the structure of an earlier seed (same cluster, same component)
        region = _seed_region(clusters, position, bridge_radius, slice_axis)
        if _is_background(region, slice_axis, max_extent):
            rejected.append(seed)  # the caller says so: a warning, or an error when no seed is left
            continue
        mask |= region
        kept_clusters.add(int(clusters[position]))
    if holes and mask.any():
        mask = fill_holes(mask, slice_axis)
    return Selection(mask, sorted(kept_clusters), rejected)


def _seed_region(clusters: np.ndarray, position: tuple[int, ...], radius: int, slice_axis: int) -> np.ndarray:
    """The component of the seed's own cluster that contains it, with bridges thinner than 2·radius + 1 cut.

    Each seed takes only its own cluster, so a second seed's cluster cannot pull in tissue that merely
    touches the first seed's structure.
    """
    candidate = clusters == clusters[position]
    connectivity = ndimage.generate_binary_structure(clusters.ndim, 1)
    core = candidate
    if radius > 0:
        square = _in_plane_square(clusters.ndim, slice_axis)
        core = ndimage.binary_erosion(candidate, square, iterations=radius)
        if not core[position]:
            log.debug("a seed lies in a structure thinner than %d pixels; no bridges were cut", 2 * radius + 1)
            core = candidate
    components, _ = ndimage.label(core, structure=connectivity)
    region = components == components[position]
    if core is not candidate:
        # Grow back what the erosion took, but not across the cut bridges.
        region = ndimage.binary_dilation(region, square, iterations=radius) & candidate
    return region


def _is_background(region: np.ndarray, slice_axis: int, max_extent: float) -> bool:
    """Air or skin rather than a structure: it reaches both ends of every axis, spans more than
    ``max_extent`` of every in-plane axis (air inside a round scanner field of view, skin inside a
    dermatoscope's dark ring), or filling its holes more than doubles it (it surrounds the body or a lesion)."""
    if spans_whole_image(region):
        return True
    in_plane = [axis for axis in range(region.ndim) if region.ndim == 2 or axis != slice_axis]
    if all(_extent(region, axis) > max_extent * region.shape[axis] for axis in in_plane):
        return True
    return fill_holes(region, slice_axis).sum() > 2 * region.sum()


def _in_plane_square(ndim: int, slice_axis: int) -> np.ndarray:
    """The 3×3 neighbourhood within a slice (slices of anisotropic volumes are often thick)."""
    square = np.ones((3,) * ndim, bool)
    if ndim == 3:
        moved = np.moveaxis(square, slice_axis, 0)
        moved[0] = moved[2] = False
    return square


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
        return Selection(np.zeros(clusters.shape, bool))  # every sizeable region touches the border
    return Selection(best_mask, [best_cluster])


def _extent(mask: np.ndarray, axis: int) -> int:
    """Number of positions along ``axis`` from the first to the last one the mask occupies."""
    others = tuple(a for a in range(mask.ndim) if a != axis)
    occupied = np.flatnonzero(mask.any(axis=others))
    return int(occupied[-1] - occupied[0] + 1) if len(occupied) else 0


def _close_then_open(mask: np.ndarray, disk: np.ndarray) -> np.ndarray:
    # Erosions treat the outside as part of the mask, so contact with the border is kept.
    closed = ndimage.binary_erosion(ndimage.binary_dilation(mask, disk), disk, border_value=1)
    return ndimage.binary_dilation(ndimage.binary_erosion(closed, disk, border_value=1), disk)


def _disk(radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius * radius
