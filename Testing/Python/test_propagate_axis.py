"""``segssl propagate --axis``: the slice axis the user painted on, checked against the annotation."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from conftest import assert_one_line_error, run_segssl
from sam_helpers import write_like


def test_axis_option_is_followed_for_a_thin_annotation_and_a_mismatch_is_refused(tiny_phantom, tmp_path):
    image_path, labels_path = tiny_phantom
    image = sitk.ReadImage(str(image_path))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_path)))
    # A one-voxel-thick stroke on coronal slice j: it is also on one axial slice, so only --axis tells.
    k, j, _ = np.argwhere(truth == 1)[len(np.argwhere(truth == 1)) // 2]
    drawn = np.zeros_like(truth, dtype=np.uint8)
    drawn[k, j] = truth[k, j] == 1
    annotation_path, out = tmp_path / "drawn.nrrd", tmp_path / "out.nrrd"
    write_like(drawn, image, annotation_path)

    wrong = run_segssl("propagate", "--input", image_path, "--annotation", annotation_path, "--output", out,
                       "--backend", "registration", "--axis", "0", "--progress", "none")
    assert_one_line_error(wrong, "does not lie on slices of --axis 0", "--axis")
    assert not out.exists()

    result = run_segssl("propagate", "--input", image_path, "--annotation", annotation_path, "--output", out,
                        "--backend", "registration", "--axis", "1", "--progress", "none")
    assert result.returncode == 0, result.stderr
    # Without --axis the tie goes to K (axial); here the slices are coronal, as asked.
    assert f"on 1 slice(s) [{j}] along axis 1" in result.stderr, result.stderr
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    np.testing.assert_array_equal(labels[:, j], drawn[:, j])  # the painted coronal slice, as drawn
