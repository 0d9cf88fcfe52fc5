"""Nothing silently wrong: damaged inputs, blank volumes, 2D formats for 3D results and unclear options
are refused in one line, before the work starts."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import assert_one_line_error, run_segssl
from sam_helpers import write_like
from SegSSLLib.errors import SegSSLError
from SegSSLLib.volumes import read_image


def _annotation(tiny_phantom, tmp_path, slices=(10,)):
    image_path, labels_path = tiny_phantom
    image = sitk.ReadImage(str(image_path))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_path)))
    drawn = np.zeros_like(truth, dtype=np.uint8)
    for k in slices:
        drawn[k] = truth[k]
    path = tmp_path / "drawn.nii.gz"
    write_like(drawn, image, path)
    return image, path


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg", ".bmp"])
def test_a_3d_result_in_a_2d_format_is_refused_naming_the_formats_that_hold_geometry(tiny_phantom, tmp_path, suffix):
    _, annotation = _annotation(tiny_phantom, tmp_path)
    out = tmp_path / f"out{suffix}"
    result = run_segssl("propagate", "--input", tiny_phantom[0], "--annotation", annotation, "--output", out,
                        "--backend", "registration", "--progress", "none")
    if suffix in (".jpg", ".bmp"):  # not writable at all
        assert_one_line_error(result, "unsupported extension")
    else:
        assert_one_line_error(result, "cannot hold a 3D volume", ".nii.gz", ".nrrd", ".mha")
    assert not out.exists()


def test_write_image_refuses_a_3d_image_in_a_2d_format(tmp_path):
    from SegSSLLib.volumes import write_image

    with pytest.raises(SegSSLError, match="cannot hold a 3D volume"):
        write_image(sitk.Image(4, 4, 4, sitk.sitkUInt8), tmp_path / "x.png")
    write_image(sitk.Image(4, 4, sitk.sitkUInt8), tmp_path / "y.png")  # a 2D picture is fine
    assert (tmp_path / "y.png").exists()


def _truncate(path, keep: float):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_a_truncated_input_is_refused_not_read_with_zeros(tiny_phantom, tmp_path, suffix):
    image = sitk.ReadImage(str(tiny_phantom[0]))
    path = tmp_path / f"cut{suffix}"
    sitk.WriteImage(image, str(path), useCompression=suffix != ".nii")
    _truncate(path, 0.6)
    with pytest.raises(SegSSLError, match="incomplete or damaged"):
        read_image(path, "input")


def test_evaluate_refuses_a_truncated_copy_of_the_reference(tiny_phantom, tmp_path):
    _, labels = tiny_phantom
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(labels.read_bytes()[: len(labels.read_bytes()) // 2])
    result = run_segssl("evaluate", "--pred", cut, "--truth", labels, "--progress", "none")
    assert_one_line_error(result, "incomplete or damaged", "cut.nii.gz", "copy or export it again")
    assert "Dice" not in result.stdout


def test_a_truncated_input_is_not_reported_as_seeds_on_background(tiny_phantom, tmp_path):
    cut = tmp_path / "ct.nii.gz"
    cut.write_bytes(tiny_phantom[0].read_bytes()[:2000])
    result = run_segssl("segment", "--method", "s3net", "--input", cut, "--output", tmp_path / "o.nii.gz",
                        "--seed", "20,18,10", "--progress", "none")
    assert_one_line_error(result, "incomplete or damaged")
    assert "background" not in result.stderr


def test_a_header_claiming_an_absurd_size_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.nii.gz"
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkInt16), str(path))
    header = bytearray(gzip.decompress(path.read_bytes()))
    header[40:56] = struct.pack("<8h", 3, 30000, 30000, 30000, 1, 1, 1, 1)  # 2.7e13 voxels
    path.write_bytes(gzip.compress(bytes(header)))
    result = run_segssl("evaluate", "--pred", path, "--truth", path, "--progress", "none", timeout=120)
    assert_one_line_error(result, "more than this machine's memory", "header is damaged")


@pytest.mark.parametrize("blank", ["constant", "nan"])
def test_propagate_refuses_a_blank_volume_like_segment(tiny_phantom, tmp_path, blank):
    image, annotation = _annotation(tiny_phantom, tmp_path)
    array = np.full(sitk.GetArrayViewFromImage(image).shape, np.nan if blank == "nan" else 7.0, np.float32)
    volume = tmp_path / "blank.nii.gz"
    blank_image = sitk.GetImageFromArray(array)  # float32: NaN survives
    blank_image.CopyInformation(image)
    sitk.WriteImage(blank_image, str(volume))
    out = tmp_path / "out.nii.gz"
    result = run_segssl("propagate", "--input", volume, "--annotation", annotation, "--output", out,
                        "--backend", "registration", "--progress", "none")
    assert_one_line_error(result, "every value is 7" if blank == "constant" else "every voxel is NaN")
    assert "every value is 0" not in result.stderr
    assert not out.exists()


def test_an_annotation_on_two_axes_is_refused(tiny_phantom, tmp_path):
    image_path, labels_path = tiny_phantom
    image = sitk.ReadImage(str(image_path))
    drawn = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    drawn[10, 10:20, 10:20] = 1  # on axial slice k=10
    drawn[2:8, 25, 25:30] = 2  # on coronal slice j=25
    annotation = tmp_path / "drawn.nii.gz"
    write_like(drawn, image, annotation)
    result = run_segssl("propagate", "--input", image_path, "--annotation", annotation, "--output",
                        tmp_path / "o.nii.gz", "--backend", "registration", "--progress", "none")
    assert_one_line_error(result, "more than one axis", "--axis")


def test_three_hundred_objects_make_a_short_log_line():
    from SegSSLLib.propagation.annotation import Annotation, describe

    line = describe(Annotation(axis=2, slices=tuple(range(40)), labels=tuple(range(1, 301))))
    assert len(line) < 200 and "300 object(s)" in line and "300]" in line


def test_a_symlink_loop_as_input_or_output_is_one_line(tiny_phantom, tmp_path):
    loop = tmp_path / "loop.nii.gz"
    loop.symlink_to(loop)
    result = run_segssl("evaluate", "--pred", loop, "--truth", tiny_phantom[1], "--json", loop, "--progress", "none")
    assert_one_line_error(result)
    result = run_segssl("evaluate", "--pred", loop, "--truth", tiny_phantom[1], "--progress", "none")
    assert_one_line_error(result, "link loop")


def test_an_input_name_too_long_for_the_file_system_is_one_line(tiny_phantom, tmp_path):
    result = run_segssl("evaluate", "--pred", tmp_path / ("x" * 300 + ".nii.gz"), "--truth", tiny_phantom[1])
    assert_one_line_error(result, "too long")


def test_threads_zero_is_refused_like_negative(tiny_phantom, tmp_path):
    for threads in ("0", "-2"):
        result = run_segssl("segment", "--method", "s3net", "--input", tiny_phantom[0], "--output",
                            tmp_path / "o.nii.gz", "--seed", "20,18,10", "--threads", threads, "--progress", "none")
        assert_one_line_error(result, "--threads must be at least 1")


def test_checkpoint_with_s3net_is_refused_not_ignored(tiny_phantom, tmp_path):
    result = run_segssl("segment", "--method", "s3net", "--checkpoint", tmp_path / "model.pt", "--input",
                        tiny_phantom[0], "--output", tmp_path / "o.nii.gz", "--seed", "20,18,10", "--progress", "none")
    assert_one_line_error(result, "--checkpoint", "--method s3net uses none")


@pytest.mark.parametrize("value", ["-0.001", "0", "nan"])
def test_a_learning_rate_that_is_not_positive_is_refused(tmp_path, value):
    result = run_segssl("pretrain", "--data", tmp_path, "--out", tmp_path / "m.pt", "--learning-rate", value)
    assert_one_line_error(result, "--learning-rate", "not a positive number")
