"""Putting a volume into one anatomical orientation before slicing, and its labels back afterwards.

The same patient may be stored with its axes in any order or direction (one scanner writes
right-to-left, another left-to-right). A 2D network sees the array, not the physical space, so
without a common orientation it would get mirrored or transposed anatomy. SimpleITK's
``DICOMOrient`` permutes and flips the voxel axes (no resampling, values are copied exactly) so
that they point as close as possible to the named directions, e.g. "LPS": i towards the patient's
left, j posterior, k superior. ``restore`` applies the inverse permutation and flips.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

STANDARD_ORIENTATION = "LPS"


def orientation_of(image: sitk.Image) -> str:
    """The three-letter code of the axes' closest anatomical directions, e.g. "LPS" or "RAS"."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def reorient(image: sitk.Image, orientation: str | None) -> sitk.Image:
    """``image`` with its voxel axes permuted/flipped to ``orientation`` (None: unchanged)."""
    if orientation is None or orientation_of(image) == orientation:
        return image
    return sitk.DICOMOrient(image, orientation)


def restore(values: np.ndarray, oriented: sitk.Image, original: sitk.Image) -> np.ndarray:
    """(k, j, i) ``values`` on the grid of ``oriented`` (from ``reorient(original, ...)``), on ``original``'s grid."""
    if oriented.GetSize() == original.GetSize() and oriented.GetDirection() == original.GetDirection():
        return values
    on_oriented = sitk.GetImageFromArray(np.ascontiguousarray(values))
    on_oriented.CopyInformation(oriented)
    back = sitk.DICOMOrient(on_oriented, orientation_of(original))
    if back.GetSize() != original.GetSize():  # cannot happen for a permutation; a guard against silent garbage
        raise RuntimeError(f"reorientation did not return to the input grid ({back.GetSize()} vs {original.GetSize()})")
    return sitk.GetArrayFromImage(back)
