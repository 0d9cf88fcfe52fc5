"""Reorientation before slicing: the same anatomy gives the same array, and labels go back exactly."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from SegSSLLib.orientation import orientation_of, reorient, restore


def _image(direction) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((3, 4, 5)).astype(np.float32))
    image.SetSpacing((1.0, 2.0, 3.0))
    image.SetOrigin((5.0, -6.0, 7.0))
    image.SetDirection(tuple(np.asarray(direction, float).ravel()))
    return image


def _stored_differently(image: sitk.Image) -> sitk.Image:
    """The same voxels in physical space, stored with the axes permuted and two of them flipped."""
    return sitk.Flip(sitk.PermuteAxes(image, [2, 0, 1]), [True, False, True])


@pytest.mark.parametrize("seed", range(6))
def test_the_same_physical_image_stored_differently_gives_the_same_oriented_array(seed):
    rotation = Rotation.random(random_state=seed).as_matrix()
    image = _image(rotation)
    a, b = reorient(image, "LPS"), reorient(_stored_differently(image), "LPS")
    assert orientation_of(a) == orientation_of(b) == "LPS"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_restore_undoes_the_reorientation_exactly(seed):
    rotation = Rotation.random(random_state=seed).as_matrix() @ np.diag([1, 1, -1 if seed % 2 else 1])
    image = _stored_differently(_image(rotation))
    oriented = reorient(image, "LPS")
    values = sitk.GetArrayFromImage(oriented)
    np.testing.assert_array_equal(restore(values, oriented, image), sitk.GetArrayFromImage(image))


def test_no_orientation_leaves_the_image_as_stored():
    image = _image(np.diag([-1.0, -1.0, 1.0]))
    assert reorient(image, None) is image
    assert orientation_of(image) == "RAS" and orientation_of(reorient(image, "LPS")) == "LPS"
