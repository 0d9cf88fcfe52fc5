"""Annotation parsing and the weight-free registration fallback against phantoms with exact labels."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_segssl
from sam_helpers import assert_same_geometry, one_slice_annotation, write_like
from SegSSLLib.errors import SegSSLError
from SegSSLLib.evaluation import dice_and_hd95
from SegSSLLib.phantoms import make_ct_phantom, oblique_direction
from SegSSLLib.propagation.annotation import crowding_warning, find_annotation, restore_drawn
from SegSSLLib.propagation.registration import propagate_by_registration


def test_annotation_axis_slices_and_labels():
    labels = np.zeros((10, 12, 14), np.uint8)  # (k, j, i)
    labels[4, 2:6, 3:9] = 2
    labels[4, 8:10, 3:5] = 5
    found = find_annotation(labels)
    assert (found.axis, found.slices, found.labels) == (2, (4,), (2, 5))
    sagittal = np.zeros_like(labels)
    sagittal[1:8, 2:9, 6] = 1  # one I index: ITK axis 0
    assert find_annotation(sagittal).axis == 0
    corrections = np.zeros_like(labels)
    corrections[2, 3:7, 3:7] = 1
    corrections[7, 3:7, 3:7] = 1
    assert find_annotation(corrections).slices == (2, 7)
    with pytest.raises(SegSSLError, match="does not lie on slices of `axis` 1.*pass `axis` 2"):
        find_annotation(corrections, axis=1)  # painted on axial slices, not coronal ones
    line = np.zeros_like(labels)
    line[4, 6, 2:12] = 1  # one row: on one slice of both K and J; painted in a coronal view
    assert find_annotation(line).axis == 2 and find_annotation(line, axis=1).slices == (6,)
    with pytest.raises(SegSSLError, match="empty"):
        find_annotation(np.zeros_like(labels))


def test_a_full_3d_label_map_as_annotation_gets_a_one_line_warning():
    labels = np.zeros((30, 40, 40), np.uint8)
    labels[3:27, 2:38, 2:38] = 1  # an organ labelled on 24 axial slices (and more along the other axes)
    warning = crowding_warning(find_annotation(labels))
    assert warning is not None and "24 slices" in warning and "\n" not in warning
    labels[4:26] = 0  # corrections on two slices are fine
    assert crowding_warning(find_annotation(labels)) is None


@pytest.fixture(scope="module")
def phantom():
    return make_ct_phantom(seed=4, size=(48, 48, 24), spacing=(7.0, 7.0, 10.0), direction=oblique_direction())


def test_registration_follows_the_liver_and_stops_where_it_ends(phantom):
    image, truth = phantom
    truth_array = sitk.GetArrayFromImage(truth)
    liver = truth_array == 1
    present = np.flatnonzero(liver.any(axis=(1, 2)))
    middle = int((present.min() + present.max()) // 2)
    drawn = one_slice_annotation(truth, middle, values=(1,))
    result = propagate_by_registration(image, drawn, find_annotation(drawn))
    assert np.array_equal(result[middle], drawn[middle])
    assert set(np.unique(result)) == {0, 1}
    reached = np.flatnonzero((result == 1).any(axis=(1, 2)))
    assert reached.min() < middle - 3 and reached.max() > middle + 3  # both directions
    assert reached.min() >= present.min() - 2 and reached.max() <= present.max() + 2  # stops near the ends
    dice, _ = dice_and_hd95(result == 1, liver, tuple(reversed(image.GetSpacing())))
    copy = np.zeros_like(liver)
    copy[present] = liver[middle]
    copy_dice, _ = dice_and_hd95(copy, liver, tuple(reversed(image.GetSpacing())))
    assert dice > 0.85 and dice > copy_dice + 0.05  # better than copying the slice onto the true extent


def test_objects_painted_on_different_slices_travel_from_their_own(phantom):
    image, truth = phantom
    truth_array = sitk.GetArrayFromImage(truth)
    drawn = np.zeros_like(truth_array)
    slices = {}
    for value in (1, 3):  # liver and right kidney: their middle slices differ
        present = np.flatnonzero((truth_array == value).any(axis=(1, 2)))
        slices[value] = int((present.min() + present.max()) // 2)
        drawn[slices[value]][truth_array[slices[value]] == value] = value
    assert slices[1] != slices[3]
    result = propagate_by_registration(image, drawn, find_annotation(drawn))
    for value, k in slices.items():
        assert np.array_equal(result[k] == value, drawn[k] == value)
        dice, _ = dice_and_hd95(result == value, truth_array == value, tuple(reversed(image.GetSpacing())))
        assert dice > 0.7, (value, dice)


def test_an_object_painted_elsewhere_survives_on_another_objects_slice(phantom):
    image, truth = phantom
    truth_array = sitk.GetArrayFromImage(truth)
    slices = {1: 13, 2: 16}  # liver and spleen, both present on both slices
    assert all((truth_array[k] == v).sum() > 40 for k in slices.values() for v in slices)
    drawn = np.zeros_like(truth_array)
    for value, k in slices.items():
        drawn[k][truth_array[k] == value] = value
    result = propagate_by_registration(image, drawn, find_annotation(drawn))
    for value, k in slices.items():
        other = 2 if value == 1 else 1
        assert np.array_equal(result[k] == value, drawn[k] == value)
        # The other object, carried here from its own slice, is still on this one.
        dice, _ = dice_and_hd95(result[k] == other, truth_array[k] == other, tuple(reversed(image.GetSpacing()))[1:])
        assert dice > 0.7, (k, other, dice)


def test_restoring_drawn_slices_keeps_the_other_objects():
    result = np.zeros((4, 5, 6), np.uint8)
    result[:, 1:4, 0:3] = 1  # object 1 propagated everywhere
    result[:, 1:4, 3:6] = 2  # object 2 too
    drawn = np.zeros_like(result)
    drawn[1, 0:2, 0:2] = 1  # object 1 painted on slice 1, where its propagated mask differs
    drawn[1, 2:3, 3:4] = 3  # and object 3 next to it
    drawn[3, 4, 4:6] = 2  # object 2 painted on slice 3
    restore_drawn(result, drawn, find_annotation(drawn))
    expected_1 = np.zeros((5, 6), np.uint8)
    expected_1[1:4, 3:6] = 2  # object 2 keeps its propagated mask on object 1's slice ...
    expected_1[2, 3] = 3  # ... except where object 3 was painted
    expected_1[0:2, 0:2] = 1  # object 1 is exactly as painted
    assert np.array_equal(result[1], expected_1)
    expected_3 = np.zeros((5, 6), np.uint8)
    expected_3[1:4, 0:3] = 1
    expected_3[4, 4:6] = 2
    assert np.array_equal(result[3], expected_3)
    assert np.array_equal(result[0], result[2]) and set(np.unique(result[0])) == {0, 1, 2}


def test_propagate_cli_registration_keeps_geometry(tiny_phantom, tmp_path):
    image_path, labels_path = tiny_phantom
    image = sitk.ReadImage(str(image_path))
    drawn = one_slice_annotation(sitk.ReadImage(str(labels_path)), 10, values=(1, 2))
    annotation_path, out = tmp_path / "drawn.nii.gz", tmp_path / "out.nii.gz"
    write_like(drawn, image, annotation_path)
    result = run_segssl("propagate", "--input", image_path, "--annotation", annotation_path, "--output", out,
                        "--backend", "registration", "--progress", "none")
    assert result.returncode == 0, result.stderr
    output = sitk.ReadImage(str(out))
    assert_same_geometry(output, image)
    labels = sitk.GetArrayFromImage(output)
    assert np.array_equal(labels[10], drawn[10]) and set(np.unique(labels)) == {0, 1, 2}
    assert (labels != 0).any(axis=(1, 2)).sum() > 3


def test_demo_step_propagates_and_scores(tmp_path, monkeypatch):
    from SegSSLLib.demo import run_demo
    from SegSSLLib.progress import NO_PROGRESS

    monkeypatch.setenv("SEGSSL_HOME", str(tmp_path / "home"))  # no SAM 2 weights: the registration fallback
    monkeypatch.delenv("SEGSSL_SAM2_CHECKPOINT", raising=False)
    from SegSSLLib.demo import phantom_step
    from SegSSLLib.propagation.demo_step import propagation_step
    steps = [phantom_step, propagation_step]
    report = run_demo(tmp_path / "demo", NO_PROGRESS, device="cpu", quick=True, steps=steps)
    text = report.read_text()
    assert "## One-slice propagation" in text and "registration fallback" in text
    metrics = __import__("json").loads((tmp_path / "demo" / "metrics.json").read_text())["One-slice propagation"]
    assert metrics["labels"]["1"]["dice"] > 0.85  # the liver
    assert (tmp_path / "demo" / "propagation.png").exists()
