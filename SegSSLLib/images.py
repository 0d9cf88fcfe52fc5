"""What the public API takes and gives: SimpleITK images (geometry included) and label arrays on their grid.

No torch here: the registration propagation path uses it.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from SegSSLLib.errors import SegSSLError
from SegSSLLib.volumes import label_array_to_image, require_same_grid


def grey_reference(image: sitk.Image) -> sitk.Image:
    """``image`` itself if it has one component, else its first channel: a grid for label maps of an RGB picture."""
    return image if image.GetNumberOfComponentsPerPixel() == 1 else sitk.VectorIndexSelectionCast(image, 0)


def require_image(image, parameter: str, dimensions: tuple[int, ...] = (2, 3)) -> sitk.Image:
    """``image`` as given (a SimpleITK image), or a one-line error naming ``parameter``."""
    if not isinstance(image, sitk.Image):
        raise SegSSLError(
            f"`{parameter}` must be a SimpleITK image (it carries spacing, origin and direction), got a "
            f"{type(image).__name__} — read it with SimpleITK.ReadImage or SegSSLLib.volumes.read_image"
        )
    if image.GetDimension() not in dimensions:
        wanted = " or ".join(f"{d}D" for d in dimensions)
        raise SegSSLError(f"`{parameter}` is {image.GetDimension()}D; give a {wanted} image")
    return image


def label_array(labels, image: sitk.Image, parameter: str) -> np.ndarray:
    """Labels for ``image`` as a (k, j, i) integer array: from a label image on its grid, or an array of its shape."""
    if isinstance(labels, sitk.Image):
        require_same_grid(grey_reference(image), labels, "the image", f"`{parameter}`")
        array = sitk.GetArrayFromImage(labels)
    else:
        array = np.asarray(labels)
        shape = sitk.GetArrayViewFromImage(grey_reference(image)).shape
        if array.shape != shape:
            raise SegSSLError(
                f"`{parameter}` has shape {array.shape} but the image's array is {shape} ((k, j, i) order) — "
                "give labels on the image's grid"
            )
    if not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.bool_):
        if not np.all(np.mod(array, 1) == 0):
            raise SegSSLError(f"`{parameter}` holds fractional values; give whole label values (0 = background)")
    if array.min(initial=0) < 0:
        raise SegSSLError(f"`{parameter}` holds negative values; give label values 0 (background) and up")
    return array.astype(np.uint16 if array.max(initial=0) > 255 else np.uint8, copy=False)


def label_image(labels: np.ndarray, image: sitk.Image) -> sitk.Image:
    """(k, j, i) labels as a label map on ``image``'s grid (its first channel's, for an RGB picture)."""
    return label_array_to_image(labels, grey_reference(image))


def check_index_inside(index: tuple[int, ...], size: tuple[int, ...], what: str = "seed") -> None:
    """A one-line error unless the zero-based ITK index lies inside an image of ``size``."""
    if len(index) != len(size) or any(not 0 <= v < n for v, n in zip(index, size)):
        form = "I,J,K" if len(size) == 3 else "X,Y"
        limits = ",".join(str(n - 1) for n in size)
        raise SegSSLError(
            f"{what} {','.join(map(str, index))} is outside the image (size {'×'.join(map(str, size))}): "
            f"give zero-based {form} indices between 0 and {limits}"
        )
