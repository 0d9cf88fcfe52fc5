"""What a propagated structure looks like, and how to tell that it has ended (registration fallback).

Registration carries a mask from one slice to the next, but it cannot tell when the structure ends:
past the end it lands on whatever lies there. These rules, learned from the painted slice alone (no
ground truth), keep the carried mask on the structure and stop it where the structure ends:

- **Tissue model**: the structure's intensity is learned on the *interior* of the painted mask (eroded,
  so partial-volume edge pixels do not widen it): median ± ``tissue_z`` robust standard deviations.
  A carried mask keeps that tissue and may grow a little into more of it (organs widen). Its edge
  pixels, whose intensities fall between the structure's and its surroundings', are kept only in a
  rim around the tissue as deep as the painted outline's, with the painted mask's own range.
- **Landed elsewhere**: where less than ``min_fit`` of the carried mask's interior lies on the
  structure's tissue, the structure has ended and the mask covers tissue of another intensity.
- **Too small**: where the mask falls below ``stop_fraction`` of the painted area, the structure ends.
- **Regrowth in the tail**: organs taper towards their ends. Once the mask has shrunk below
  ``tail_fraction`` of the largest area on its walk, growing by more than ``tail_regrowth`` over the
  smallest area since means it is spreading onto a touching structure of the same intensity; that
  slice is already past the end.

On the slice where a structure ends by the first two rules, what still fits is kept (its tip); the
walk goes no further.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Robust standard deviation from the median absolute deviation (normal distribution).
_MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class RuleSettings:
    interior_mm: float = 3.0  # erode the painted mask this far (at least one pixel) to learn its tissue
    tissue_z: float = 2.5  # tissue: within this many robust SDs of the interior's median intensity
    edge_quantiles: tuple[float, float] = (0.02, 0.98)  # edge pixels: the painted mask's range ...
    edge_tolerance: float = 0.25  # ... widened by this fraction of its width, ...
    edge_depth_quantile: float = 0.9  # ... as far from the tissue as this quantile of the painted outline
    grow_mm: float = 3.0  # a mask may grow this far into the structure's tissue per slice (organs widen) ...
    max_growth: float = 1.15  # ... by at most this area factor, so it cannot run away
    min_fit: float = 0.5  # ends where less of the carried mask's interior than this is the structure's tissue
    stop_fraction: float = 0.1  # ends where the area falls below this fraction of the painted area
    tail_fraction: float = 0.5  # below this fraction of the walk's largest area the structure is tapering ...
    tail_regrowth: float = 1.1  # ... and growing by more than this factor over its smallest area ends it


@dataclass(frozen=True)
class TissueModel:
    """Intensity ranges of one structure: its tissue, and the wider range its edge pixels may have."""

    tissue: tuple[float, float]
    edge: tuple[float, float]
    edge_mm: float  # how far from its tissue the painted mask reached (its partial-volume edge)
    painted_area: int

    @classmethod
    def learn(cls, slices: list[np.ndarray], masks: list[np.ndarray], spacing, settings: RuleSettings) -> "TissueModel":
        """From smoothed painted ``slices`` and the structure's ``masks`` on them (row, col ``spacing`` mm)."""
        pairs = list(zip(slices, masks))
        inside = np.concatenate([image[mask] for image, mask in pairs])
        interior = np.concatenate([image[_interior(mask, settings.interior_mm, spacing)] for image, mask in pairs])
        median = float(np.median(interior))
        spread = _MAD_TO_SD * float(np.median(np.abs(interior - median)))
        spread = max(spread, 1e-3 * max(abs(median), 1.0))  # a perfectly flat structure still has a range
        low, high = np.quantile(inside, settings.edge_quantiles)
        pad = settings.edge_tolerance * max(float(high - low), 1e-6)
        tissue = (median - settings.tissue_z * spread, median + settings.tissue_z * spread)
        edge = (min(float(low - pad), tissue[0]), max(float(high + pad), tissue[1]))
        depths = np.concatenate([_edge_depths(image, mask, tissue, spacing) for image, mask in pairs])
        edge_mm = float(np.quantile(depths, settings.edge_depth_quantile)) if depths.size else 0.0
        return cls(tissue, edge, edge_mm, painted_area=max(int(mask.sum()) for mask in masks))

    def is_tissue(self, image: np.ndarray) -> np.ndarray:
        return (image >= self.tissue[0]) & (image <= self.tissue[1])

    def is_edge(self, image: np.ndarray) -> np.ndarray:
        return (image >= self.edge[0]) & (image <= self.edge[1])


def fit_to_structure(
    warped: np.ndarray, image: np.ndarray, model: TissueModel, taken: np.ndarray, spacing, settings: RuleSettings
) -> tuple[np.ndarray, bool]:
    """The carried mask ``warped`` fitted to the structure on smoothed ``image``, and whether the structure
    ends on this slice (what still fits is kept here; the walk goes no further).

    ``taken``: pixels that belong to other objects on this slice and must not be claimed.
    """
    tissue = model.is_tissue(image) & ~taken
    # Judged on the carried mask's interior, as the model was learned: edge pixels are partial volume.
    inner = _interior(warped, settings.interior_mm, spacing)
    landed_elsewhere = (inner & tissue).sum() < settings.min_fit * inner.sum()
    core = ndimage.binary_opening(warped & tissue)
    # Grow from the structure's tissue into more of it nearby: registration follows a boundary that
    # moves, but not an organ that widens. Capped, so one slice cannot run into a neighbour.
    band = ndimage.binary_dilation(warped, structure=disk(settings.grow_mm, spacing))
    grown = ndimage.binary_propagation(core, mask=tissue & band)
    mask = grown if grown.sum() <= settings.max_growth * warped.sum() else core
    # Edge pixels (partial volume) of the carried mask, only in a rim around the tissue as deep as the
    # painted outline's: never a bridge to elsewhere. Outside the carried mask only tissue may be added
    # (growth above); edge pixels added there would widen the mask by a ring on every slice.
    rim = ndimage.binary_dilation(mask, structure=disk(model.edge_mm, spacing))
    mask = mask | (rim & warped & model.is_edge(image) & ~taken)
    mask = ndimage.binary_fill_holes(ndimage.binary_opening(mask))
    mask = _pieces_carried_over(mask, warped)
    too_small = mask.sum() < settings.stop_fraction * model.painted_area
    return mask, landed_elsewhere or too_small


class TaperWatch:
    """Ends a walk when a mask that was tapering off grows again (it spread onto a touching neighbour)."""

    def __init__(self, start_area: int, settings: RuleSettings):
        self.largest = start_area
        self.smallest_in_tail: int | None = None
        self.settings = settings

    def accept(self, area: int) -> bool:
        """Record the next slice's ``area``; False when the structure should be taken as ended before it."""
        if self.smallest_in_tail is not None and area > self.settings.tail_regrowth * self.smallest_in_tail:
            return False
        if area < self.settings.tail_fraction * self.largest:
            self.smallest_in_tail = area if self.smallest_in_tail is None else min(self.smallest_in_tail, area)
        self.largest = max(self.largest, area)
        return True


def disk(radius_mm: float, spacing) -> np.ndarray:
    """A boolean elliptic footprint of ``radius_mm`` on a grid of (row, col) ``spacing``, reaching at least
    one pixel along each axis (a margin finer than the grid still means the next pixel)."""
    reach = [max(radius_mm, s) for s in spacing]
    half = [int(r // s) for r, s in zip(reach, spacing)]
    rows, cols = np.ogrid[-half[0] : half[0] + 1, -half[1] : half[1] + 1]
    return (rows * spacing[0] / reach[0]) ** 2 + (cols * spacing[1] / reach[1]) ** 2 <= 1 + 1e-9


def _edge_depths(image, mask, tissue, spacing) -> np.ndarray:
    """Distances (mm) from the mask's outline pixels to the nearest tissue pixel of the mask."""
    is_tissue = mask & (image >= tissue[0]) & (image <= tissue[1])
    if not is_tissue.any():
        return np.zeros(0)
    outline = mask & ~ndimage.binary_erosion(mask)
    return ndimage.distance_transform_edt(~is_tissue, sampling=spacing)[outline]


def _interior(mask: np.ndarray, depth_mm: float, spacing) -> np.ndarray:
    """``mask`` eroded by ``depth_mm``, or the mask itself where that would leave too little to learn from."""
    inner = ndimage.binary_erosion(mask, structure=disk(depth_mm, spacing))
    return inner if inner.sum() >= max(10, 0.2 * mask.sum()) else mask


def _pieces_carried_over(mask: np.ndarray, warped: np.ndarray) -> np.ndarray:
    """Keep the connected pieces that mostly come from the carried mask, and the main carried piece.

    An organ can show as several pieces in a slice (liver lobes); a piece that was not carried over is
    something else.
    """
    pieces, count = ndimage.label(mask)
    if count <= 1:
        return mask
    index = np.arange(1, count + 1)
    carried = ndimage.sum(warped, pieces, index)
    sizes = ndimage.sum(mask, pieces, index)
    keep = index[(carried >= 0.5 * sizes) | (carried >= 0.5 * carried.max())]
    return np.isin(pieces, keep)
