"""Axis names and numbering: ITK/Slicer order (0 = I, 1 = J, 2 = K) against (k, j, i) arrays. No torch."""

from __future__ import annotations

AXIS_NAMES = {0: "I (sagittal for an axial scan)", 1: "J (coronal)", 2: "K (axial)"}


def array_axis(itk_axis: int) -> int:
    """Position of ITK axis ``itk_axis`` in a (k, j, i) array."""
    if itk_axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2 (I, J, K), got {itk_axis}")
    return 2 - itk_axis
