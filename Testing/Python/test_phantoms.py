"""The built-in phantoms are deterministic, anatomically laid out and exactly labelled."""

import numpy as np
import SimpleITK as sitk

from SegSSLLib.phantoms import LABEL_VALUES, PHANTOM_LABELS, make_ct_phantom, make_dermoscopy_phantom, oblique_direction

SIZE = (48, 44, 24)


def arrays(seed, **kwargs):
    image, labels = make_ct_phantom(seed=seed, size=SIZE, **kwargs)
    return sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels), image, labels


def test_same_seed_same_phantom_other_seed_other_phantom():
    a_image, a_labels, *_ = arrays(5)
    b_image, b_labels, *_ = arrays(5)
    c_image, c_labels, *_ = arrays(6)
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert not np.array_equal(a_labels, c_labels)
    assert np.abs(a_image.astype(int) - c_image).mean() > 5


def test_every_structure_is_present_with_its_intensity():
    image, labels, *_ = arrays(1, lesions=1)
    assert set(np.unique(labels)) == {0, *PHANTOM_LABELS}
    median = {name: np.median(image[labels == value]) for value, name in PHANTOM_LABELS.items()}
    assert 60 < median["liver"] < 150 and 80 < median["spleen"] < 170 and 120 < median["kidney_right"] < 210
    assert median["vertebra"] > 300
    assert median["lesion"] < median["liver"] - 30  # hypodense
    assert image.min() <= -900  # air around the body


def test_anatomy_sides_follow_lps_coordinates():
    _, labels, image_sitk, _ = arrays(2)

    def mean_x_mm(value):
        k, j, i = np.nonzero(labels == value)
        points = [image_sitk.TransformIndexToPhysicalPoint((int(a), int(b), int(c))) for a, b, c in zip(i, j, k)]
        return np.mean([p[0] for p in points])

    assert mean_x_mm(LABEL_VALUES["liver"]) < 0 < mean_x_mm(LABEL_VALUES["spleen"])  # liver on the patient's right
    assert mean_x_mm(LABEL_VALUES["kidney_right"]) < 0 < mean_x_mm(LABEL_VALUES["kidney_left"])


def test_lesions_lie_inside_the_liver():
    _, labels, *_ = arrays(4, lesions=2)
    lesion = labels == LABEL_VALUES["lesion"]
    assert lesion.any()
    from scipy import ndimage

    ring = ndimage.binary_dilation(lesion) & ~lesion
    neighbours = labels[ring]
    assert np.mean(neighbours == LABEL_VALUES["liver"]) > 0.8


def test_geometry_options_are_applied():
    direction = oblique_direction(30, 5)
    _, _, image, labels = arrays(0, spacing=(1.5, 2.5, 4.0), direction=direction)
    for item in (image, labels):
        assert item.GetSize() == SIZE
        np.testing.assert_allclose(item.GetSpacing(), (1.5, 2.5, 4.0))
        np.testing.assert_allclose(item.GetDirection(), direction)
    centre_index = [(n - 1) / 2 for n in SIZE]
    np.testing.assert_allclose(image.TransformContinuousIndexToPhysicalPoint(centre_index), (0, 0, 0), atol=1e-6)


def test_dermoscopy_lesion_is_darker_central_and_inside():
    photo, mask = make_dermoscopy_phantom(seed=3, size=(96, 80))
    rgb = sitk.GetArrayFromImage(photo)
    lesion = sitk.GetArrayFromImage(mask).astype(bool)
    assert rgb.shape == (80, 96, 3) and rgb.dtype == np.uint8 and photo.GetNumberOfComponentsPerPixel() == 3
    assert 0.03 < lesion.mean() < 0.5
    assert not (lesion[0].any() or lesion[-1].any() or lesion[:, 0].any() or lesion[:, -1].any())
    assert rgb[lesion].mean() < rgb[~lesion].mean() - 40
    same_again = sitk.GetArrayFromImage(make_dermoscopy_phantom(seed=3, size=(96, 80))[0])
    np.testing.assert_array_equal(rgb, same_again)
