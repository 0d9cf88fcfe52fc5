"""Example selection: which slices are positives and negatives of an anchor (PolyCL's S / O / M).

- S (same scan): positive = another slice of the same volume; negative = a slice of another volume.
- O (organ): positive = a slice with the same structure-present flag; negative = the opposite flag.
- M (mixed): positive = same volume and same flag; negative = another volume and the opposite flag.

Pairs are drawn again every epoch from a generator seeded with (seed, epoch), so an epoch's pairs
do not depend on what happened before it (which makes ``--resume`` repeat an uninterrupted run).
Anchors for which the strategy finds no positive or no negative are left out of that epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SegSSLLib.errors import SegSSLError

STRATEGIES = {
    "S": "same scan: positive from the same volume, negative from another volume",
    "O": "organ: positive with the same structure-present flag, negative with the opposite flag",
    "M": "mixed: positive from the same volume with the same flag, negative from another volume with the opposite flag",
}


def needs_flags(strategy: str) -> bool:
    return strategy in ("O", "M")


@dataclass(frozen=True)
class SliceRelations:
    """Who is related to whom under one strategy, from each slice's volume index and flag."""

    strategy: str
    volume: np.ndarray  # (N,) volume index of every slice
    flag: np.ndarray | None  # (N,) bool "structure present", None when there are no labels

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise SegSSLError(f"unknown strategy {self.strategy!r}: use S, O or M")
        if needs_flags(self.strategy) and self.flag is None:
            raise SegSSLError(
                f"`strategy` {self.strategy} needs slice-level structure-present flags from label maps, "
                "but the data have none — give labelled data (an MSD folder) with `label` N, or use `strategy` S"
            )

    def negative_mask(self, anchors: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(A, C) bool: is candidate a negative of anchor. Under M some slices are neither."""
        other_volume = self.volume[anchors][:, None] != self.volume[candidates][None, :]
        if self.strategy == "S":
            return other_volume
        other_flag = self.flag[anchors][:, None] != self.flag[candidates][None, :]
        return other_flag if self.strategy == "O" else other_volume & other_flag

    def positive_groups(self) -> np.ndarray:
        """Per slice, a key that exactly its positives share (the anchor itself included)."""
        volume = self.volume.astype(np.int64)
        if self.strategy == "S":
            return volume
        flag = self.flag.astype(np.int64)
        return flag if self.strategy == "O" else volume * 2 + flag


def sample_triplets(relations: SliceRelations, seed: int, epoch: int) -> np.ndarray:
    """(T, 3) array of (anchor, positive, negative) slice indices for one epoch, anchors in order.

    Each slice is an anchor once; its positive and negative are drawn uniformly from the slices the
    strategy allows.
    """
    rng = np.random.default_rng([seed, epoch])
    count = len(relations.volume)
    groups = relations.positive_groups()
    everyone = np.arange(count)
    rows = []
    # The slices of one group are each other's positives and share one pool of negatives.
    for group in np.unique(groups):
        anchors = np.flatnonzero(groups == group)
        negatives = everyone[relations.negative_mask(anchors[:1], everyone)[0]]
        if len(anchors) < 2 or len(negatives) == 0:
            continue  # no other positive, or no negative: these anchors sit this epoch out
        # Draw among the group without the anchor itself: pick from len-1 places, skip the anchor's.
        own_position = np.arange(len(anchors))
        draw = rng.integers(0, len(anchors) - 1, size=len(anchors))
        draw += draw >= own_position
        negative_draw = rng.integers(0, len(negatives), size=len(anchors))
        rows.append(np.stack([anchors, anchors[draw], negatives[negative_draw]], axis=1))
    if not rows:
        raise SegSSLError(
            f"`strategy` {relations.strategy} finds no anchor with both a positive and a negative in these data "
            f"({_describe(relations)}) — add volumes, or use another `strategy`"
        )
    triplets = np.concatenate(rows)
    return triplets[np.argsort(triplets[:, 0], kind="stable")]


def _describe(relations: SliceRelations) -> str:
    volumes = len(np.unique(relations.volume))
    text = f"{len(relations.volume)} slices from {volumes} volume{'s' if volumes != 1 else ''}"
    if relations.flag is not None:
        text += f", {int(relations.flag.sum())} with the structure"
    return text
