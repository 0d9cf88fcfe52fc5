"""The user's annotation: on which axis and slices it lies, and which objects (label values) it holds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from SegSSLLib.errors import SegSSLError
from SegSSLLib.axes import AXIS_NAMES, array_axis

# Preference when several axes fit equally well (e.g. one painted voxel): axial, coronal, sagittal.
_AXIS_PREFERENCE = (2, 1, 0)
# More painted slices than this is no longer "one slice plus corrections": probably a full 3D label map.
FEW_SLICES = 5


@dataclass(frozen=True)
class Annotation:
    """Where the drawn labels are: ITK ``axis`` and the indices of the slices that carry labels."""

    axis: int
    slices: tuple[int, ...]
    labels: tuple[int, ...]

    def slices_of(self, labels: np.ndarray, value: int) -> list[int]:
        """Annotated slice indices on which ``value`` was drawn."""
        moved = np.moveaxis(labels, array_axis(self.axis), 0)
        return [k for k in self.slices if np.any(moved[k] == value)]


def find_annotation(labels: np.ndarray, axis: int | None = None) -> Annotation:
    """Describe a (k, j, i) annotation array; the axis is the one along which the labels lie on fewest slices."""
    labels = np.asarray(labels)
    if not np.any(labels):
        raise SegSSLError(
            "the annotation is empty (all zero) — paint the structure on one slice, "
            "with one label value per object, and save that label map"
        )
    occupied = {itk_axis: _occupied_slices(labels, itk_axis) for itk_axis in (0, 1, 2)}
    if axis is None:
        axis = min(_AXIS_PREFERENCE, key=lambda a: (len(occupied[a]), _AXIS_PREFERENCE.index(a)))
    elif axis not in (0, 1, 2):
        raise SegSSLError(f"`axis` must be 0, 1 or 2 (I, J, K), got {axis}")
    elif len(occupied[axis]) > min(len(slices) for slices in occupied.values()):
        # Painted across the slices of that axis, not on them: the axis does not match the drawing.
        best = min(_AXIS_PREFERENCE, key=lambda a: (len(occupied[a]), _AXIS_PREFERENCE.index(a)))
        raise SegSSLError(
            f"the annotation does not lie on slices of `axis` {axis}: it covers {len(occupied[axis])} slices "
            f"along axis {axis} but {len(occupied[best])} along axis {best} — pass `axis` {best}, or paint on "
            f"one slice of axis {axis}"
        )
    values = tuple(int(v) for v in np.unique(labels) if v != 0)
    return Annotation(axis=axis, slices=tuple(occupied[axis]), labels=values)


def describe(annotation: Annotation) -> str:
    slices = ", ".join(str(k) for k in annotation.slices[:8]) + (" ..." if len(annotation.slices) > 8 else "")
    return (
        f"{len(annotation.labels)} object(s) {list(annotation.labels)} on {len(annotation.slices)} slice(s) "
        f"[{slices}] along axis {annotation.axis} ({AXIS_NAMES[annotation.axis]})"
    )


def _occupied_slices(labels: np.ndarray, itk_axis: int) -> list[int]:
    position = array_axis(itk_axis)
    other = tuple(a for a in range(3) if a != position)
    return [int(k) for k in np.flatnonzero(np.any(labels != 0, axis=other))]


def restore_drawn(result: np.ndarray, labels: np.ndarray, annotation: Annotation) -> None:
    """Set each object, on the slices where it was drawn, to exactly what was drawn (``result`` in place).

    Only the drawn object is restored on its slices: another object that was not drawn there keeps
    its propagated result (outside what was drawn), so painting one organ on a slice does not erase
    the others.
    """
    position = array_axis(annotation.axis)
    out, drawn = np.moveaxis(result, position, 0), np.moveaxis(np.asarray(labels), position, 0)
    for value in annotation.labels:
        for k in annotation.slices_of(labels, value):
            out[k][out[k] == value] = 0
            out[k][drawn[k] == value] = value


def crowding_warning(annotation: Annotation) -> str | None:
    """A one-line warning when the annotation lies on more slices than a few (e.g. a full 3D label map)."""
    if len(annotation.slices) <= FEW_SLICES:
        return None
    return (
        f"the annotation lies on {len(annotation.slices)} slices along axis {annotation.axis}: propagate expects "
        "one painted slice (a few for corrections); every painted slice is kept as drawn and used as a prompt "
        "— give a one-slice annotation if this is a full 3D label map"
    )
