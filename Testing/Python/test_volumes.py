"""Reading and writing keep size, spacing, origin, direction and values exactly."""

import locale
import time

import numpy as np
import pytest
import SimpleITK as sitk

from SegSSLLib.errors import SegSSLError
from SegSSLLib.phantoms import oblique_direction
from SegSSLLib.volumes import (
    array_to_image,
    check_output_path,
    label_array_to_image,
    read_image,
    read_label_map,
    read_volume,
    require_same_grid,
    same_grid,
    write_image,
)

SPACING = (0.7, 1.3, 4.5)
ORIGIN = (-120.25, 33.5, 410.0)


def oblique_image(dtype=np.int16, seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1500, size=(7, 11, 13)).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(oblique_direction(25.0, -15.0))
    return image


def assert_same_image(a: sitk.Image, b: sitk.Image):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_geometry_and_values(tmp_path, suffix):
    image = oblique_image()
    path = tmp_path / f"volume{suffix}"
    write_image(image, path)
    assert_same_image(image, read_volume(path))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left


def write_dicom_series(image: sitk.Image, folder, skip=()):
    """Write a 3D image as a DICOM CT series with the tags that carry its geometry (minus slices ``skip``)."""
    # GDCM's writer switches the process locale to "C" and leaves it there; later tests that decode
    # a subprocess's UTF-8 output would then fail, so the locale is put back.
    saved_locale = locale.setlocale(locale.LC_ALL)
    try:
        _write_dicom_slices(image, folder, skip)
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)


def _write_dicom_slices(image: sitk.Image, folder, skip):
    folder.mkdir()
    direction = image.GetDirection()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.42"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        if k in skip:
            continue
        slice_image = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0020|000e": series_uid,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.43",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.8f}" for v in (direction[0], direction[3], direction[6],
                                                           direction[1], direction[4], direction[7])),
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0028|1053": "1",
            "0028|1052": "0",
        }
        for key, value in tags.items():
            slice_image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(slice_image)


def test_dicom_series_folder_reads_with_geometry(tmp_path):
    image = oblique_image()
    write_dicom_series(image, tmp_path / "series")
    loaded = read_volume(tmp_path / "series")
    assert loaded.GetSize() == image.GetSize()
    np.testing.assert_allclose(loaded.GetSpacing(), image.GetSpacing(), rtol=1e-4)
    np.testing.assert_allclose(loaded.GetOrigin(), image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(loaded.GetDirection(), image.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded), sitk.GetArrayFromImage(image))


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    image = oblique_image()  # 7 slices, 4.5 mm apart
    write_dicom_series(image, tmp_path / "series", skip=(3,))
    with pytest.raises(SegSSLError) as caught:
        read_volume(tmp_path / "series")
    message = str(caught.value)
    assert "not evenly spaced: slices are 4.5 mm apart but 9 mm between slice 3 and 4" in message
    assert "missing" in message and "dcm2niix" in message


def test_2d_rgb_png_reads_as_vector_image(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, size=(9, 12, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    image = read_image(path)
    assert image.GetDimension() == 2 and image.GetNumberOfComponentsPerPixel() == 3
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), rgb)
    with pytest.raises(SegSSLError, match="2D image; this needs a 3D volume"):
        read_volume(path)


def test_unreadable_and_missing_files_give_clear_errors(tmp_path):
    with pytest.raises(SegSSLError, match="not found"):
        read_volume(tmp_path / "nothing.nii.gz")
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    with pytest.raises(SegSSLError, match="cannot read"):
        read_volume(text)
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(SegSSLError, match="no DICOM series"):
        read_volume(tmp_path / "empty_folder")


def write_sheared_nifti(path):
    """An uncompressed NIfTI whose sform has a shear (x depends on j), as some registration tools write."""
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), str(path))
    header = bytearray(path.read_bytes())
    header[252:256] = np.array([0, 1], "<i2").tobytes()  # qform_code 0, sform_code 1: the sform rules
    header[280:328] = np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], "<f4").tobytes()  # srow_x/y/z
    path.write_bytes(bytes(header))


def test_sheared_nifti_is_explained_with_the_cause_and_the_fix(tmp_path):
    path = tmp_path / "sheared.nii"
    write_sheared_nifti(path)
    before = path.read_bytes()
    with pytest.raises(SegSSLError) as caught:
        read_volume(path)
    message = str(caught.value)
    assert "sheared (not orthonormal)" in message and "orthonormal direction cosines" in message
    assert "resample" in message and "not an image SimpleITK understands" not in message
    assert path.read_bytes() == before


def test_label_map_checks_values_and_grid(tmp_path):
    volume = oblique_image()
    labels = label_array_to_image(np.zeros((7, 11, 13), np.uint8), volume)
    path = tmp_path / "labels.nrrd"
    write_image(labels, path)
    assert same_grid(read_label_map(path, reference=volume), volume)

    shifted = sitk.Image(labels)
    shifted.SetOrigin(tuple(o + 2.0 for o in ORIGIN))
    write_image(shifted, tmp_path / "shifted.nrrd")
    with pytest.raises(SegSSLError, match="different grid"):
        read_label_map(tmp_path / "shifted.nrrd", reference=volume)

    fractional = array_to_image(np.full((7, 11, 13), 0.5, np.float32), volume)
    write_image(fractional, tmp_path / "fractional.nrrd")
    with pytest.raises(SegSSLError, match="non-integer"):
        read_label_map(tmp_path / "fractional.nrrd")


def test_grid_comparison_notices_each_property():
    base = oblique_image()
    assert same_grid(base, oblique_image(seed=1))
    for change in (
        lambda im: im.SetSpacing((0.7, 1.3, 4.6)),
        lambda im: im.SetOrigin((ORIGIN[0] + 0.5, ORIGIN[1], ORIGIN[2])),
        lambda im: im.SetDirection(oblique_direction(26.0, -15.0)),
    ):
        other = sitk.Image(base)
        change(other)
        assert not same_grid(base, other)
        with pytest.raises(SegSSLError, match="resample"):
            require_same_grid(base, other, "the volume", "the label map")
    assert not same_grid(base, base[:, :, :5])


def test_label_type_is_the_smallest_that_fits():
    reference = oblique_image()
    small = label_array_to_image(np.full((7, 11, 13), 200), reference)
    large = label_array_to_image(np.full((7, 11, 13), 300), reference)
    assert small.GetPixelID() == sitk.sitkUInt8 and large.GetPixelID() == sitk.sitkUInt16
    assert same_grid(small, reference)


def test_output_path_checks(tmp_path):
    existing = tmp_path / "in.nii.gz"
    existing.write_bytes(b"x")
    with pytest.raises(SegSSLError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "out.nii.gz")
    with pytest.raises(SegSSLError, match="extension"):
        check_output_path(tmp_path / "out.txt")
    with pytest.raises(SegSSLError, match="also an input"):
        check_output_path(existing, inputs=(existing,))
    assert check_output_path(tmp_path / "out.seg.nrrd") == tmp_path / "out.seg.nrrd"


@pytest.mark.parametrize("suffix, single_file", [(".mhd", ".mha"), (".nhdr", ".nrrd")])
def test_detached_header_outputs_are_refused_with_the_single_file_twin(tmp_path, suffix, single_file):
    path = tmp_path / f"out{suffix}"
    with pytest.raises(SegSSLError, match=f"use \\{single_file} "):
        check_output_path(path)
    with pytest.raises(SegSSLError, match="separate data file"):
        write_image(oblique_image(), path)
    assert list(tmp_path.iterdir()) == []


def test_mhd_input_reads_with_geometry(tmp_path):
    image = oblique_image()
    sitk.WriteImage(image, str(tmp_path / "volume.mhd"))  # header + .raw written by ITK itself
    assert_same_image(image, read_volume(tmp_path / "volume.mhd"))


def test_failed_write_leaves_neither_partial_nor_changed_file(tmp_path):
    path = tmp_path / "out.nii.gz"
    path.write_bytes(b"previous result")
    before = path.stat().st_mtime_ns
    time.sleep(0.01)

    with pytest.raises(Exception):
        write_image("not an image", path)  # type: ignore[arg-type]
    assert path.read_bytes() == b"previous result" and path.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]
