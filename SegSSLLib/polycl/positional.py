"""Strategy P (positional): pairs slices by their relative position in the body, across scans.

Positional contrastive learning (Zeng et al., MICCAI 2021): a slice's position along the body axis,
normalised to the body's extent in its scan (0 at the lowest slice that shows the body, 1 at the
highest), says which anatomy it shows far better than which scan it comes from. Under P:

- positive: a slice of ANOTHER scan at a similar normalised position (``|Δz| <= NEAR``; when no
  other scan has one that close, its closest slice if that is nearer than ``FAR / 2``);
- negative: a slice of the SAME scan at a far position (``|Δz| >= FAR``), so it shares the scan's
  field of view, intensities and resolution and cannot be told apart by them; other scans only when
  the anchor's own scan has no slice that far;
- extra in-batch negatives: every batch item whose position is far from the anchor's, whatever its
  scan. Items at nearby positions are neither positives nor negatives.

So the loss can only fall by learning what changes along the body (anatomy), not what tells scans
apart. Slices outside the body extent (air above the head, the table beyond the feet) take no part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SegSSLLib.errors import SegSSLError

NEAR = 0.05  # positives: |Δz| up to this (normalised body extent)
FAR = 0.25  # negatives: |Δz| at least this
# A pixel belongs to the body when its windowed intensity (0..1) exceeds this: with the default CT
# window (level 40, width 400 HU) that is above about -140 HU (fat, soft tissue, bone).
BODY_INTENSITY = 0.05
BODY_AREA = 0.1  # a slice is inside the body extent when its body area is this share of the largest


def body_positions(images: np.ndarray) -> np.ndarray:
    """(N,) normalised position of each slice of one scan in its body extent, NaN outside it.

    ``images``: (N, S, S) windowed slices in [0, 1], ordered along the body axis.
    """
    area = np.array([(np.asarray(image, dtype=np.float32) > BODY_INTENSITY).mean() for image in images])
    positions = np.full(len(area), np.nan)
    if len(area) == 0 or area.max() <= 0:
        return positions
    inside = np.flatnonzero(area >= BODY_AREA * area.max())
    first, last = inside[0], inside[-1]
    span = np.arange(first, last + 1)
    positions[span] = (span - first) / max(1, last - first)
    return positions


@dataclass(frozen=True)
class PositionalRelations:
    """Who pairs with whom under strategy P, from each slice's scan and normalised position."""

    volume: np.ndarray  # (N,) scan index of every slice
    position: np.ndarray  # (N,) normalised position in the body extent, NaN outside
    near: float = NEAR
    far: float = FAR
    strategy: str = "P"

    def __post_init__(self):
        if len(np.unique(self.volume[np.isfinite(self.position)])) < 2:
            raise SegSSLError(
                "`strategy` P pairs slices at the same position in different scans, but the data hold one scan "
                "with body slices — add volumes (several `data` folders are fine)"
            )

    def negative_mask(self, anchors: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(A, C) bool: is candidate a negative of anchor (far apart in normalised position)."""
        with np.errstate(invalid="ignore"):
            return np.abs(self.position[anchors][:, None] - self.position[candidates][None, :]) >= self.far

    def sample(self, seed: int, epoch: int) -> np.ndarray:
        """(T, 3) (anchor, positive, negative) slice indices for one epoch, anchors in order.

        Every body slice with a partner on both sides is an anchor once; partners are drawn
        uniformly from the slices the rules above allow.
        """
        rng = np.random.default_rng([seed, epoch, 80])  # 80: 'P', a stream apart from S/O/M's
        finite = np.isfinite(self.position)
        rows = []
        for volume in np.unique(self.volume[finite]):
            anchors = np.flatnonzero(finite & (self.volume == volume))
            # Slices outside the body have a NaN distance, which no comparison accepts.
            distance = np.abs(self.position[anchors][:, None] - self.position[None, :])
            other = (self.volume != volume)[None, :] & finite[None, :]
            with np.errstate(invalid="ignore"):
                positive = other & (distance <= self.near)
                # No other scan that close: its nearest slice, if reasonably near.
                closest = np.where(other, distance, np.inf).min(axis=1, keepdims=True)
                positive |= other & (distance <= closest) & (closest < self.far / 2)
                negative = (distance >= self.far) & (self.volume == volume)[None, :]
                lacking = ~negative.any(axis=1)
                negative[lacking] = distance[lacking] >= self.far
            usable = positive.any(axis=1) & negative.any(axis=1)
            if not usable.any():
                continue
            rows.append(np.stack(
                [anchors[usable], _draw(positive[usable], rng), _draw(negative[usable], rng)], axis=1
            ))
        if not rows:
            raise SegSSLError(
                "`strategy` P finds no slice with a partner at the same position in another scan and a far one "
                "— add volumes, or use `strategy` S"
            )
        triplets = np.concatenate(rows)
        return triplets[np.argsort(triplets[:, 0], kind="stable")]


def _draw(allowed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column index per row, uniformly among the True entries of that row."""
    keys = np.where(allowed, rng.random(allowed.shape), -1.0)
    return keys.argmax(axis=1)
