"""Reading and writing volumes, label maps and 2D images with their geometry intact.

SimpleITK images carry the geometry (size, spacing, origin, direction); arrays taken from them are
in (k, j, i) order, i.e. reversed with respect to SimpleITK's (i, j, k) size and spacing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegSSLLib.atomic import atomic_output, full_suffix
from SegSSLLib.errors import SegSSLError

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".png", ".tif", ".tiff")
# Header-only formats put the voxels in a second file that one atomic rename cannot move with the
# header; each has a single-file twin that stores the same thing.
DETACHED_HEADER_SUFFIXES = {".mhd": ".mha", ".nhdr": ".nrrd"}

# Relative tolerance for comparing grids: file formats store spacing/origin as text or float32.
GRID_TOLERANCE = 1e-4


def read_image(path: str | os.PathLike, what: str = "image") -> sitk.Image:
    """Read any image SimpleITK can read: a file, or a folder holding one DICOM series."""
    path = Path(path)
    if not path.exists():
        raise SegSSLError(f"{what} not found: {path} — check the path")
    if path.is_dir():
        return _read_dicom_folder(path, what)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        if "orthonormal" in str(exc):
            raise SegSSLError(
                f"cannot read {what} {path}: its orientation matrix is sheared (not orthonormal), and ITK only "
                "supports orthonormal direction cosines — resample it onto an unsheared grid first "
                "(e.g. nibabel.processing.resample_from_to or ANTs/FSL) and give that file"
            ) from None
        raise SegSSLError(
            f"cannot read {what} {path}: not an image SimpleITK understands — "
            "give a NIfTI, NRRD or MHA file, a DICOM series folder, or a PNG/JPEG for 2D"
        ) from None


def _read_dicom_folder(folder: Path, what: str) -> sitk.Image:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or []
    if not series_ids:
        raise SegSSLError(
            f"cannot read {what} {folder}: the folder holds no DICOM series — "
            "give a folder of .dcm slices or a NIfTI/NRRD/MHA file"
        )
    files_per_series = {
        sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids
    }
    series_id = max(files_per_series, key=lambda sid: len(files_per_series[sid]))
    if len(series_ids) > 1:
        # Clinical exports often hold a scout or a dose report next to the CT series.
        log.warning(
            "%s holds %d DICOM series; using %s (%d slices), the largest",
            folder, len(series_ids), series_id, len(files_per_series[series_id]),
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files_per_series[series_id])
    reader.MetaDataDictionaryArrayUpdateOn()  # keeps each slice's position for the check below
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise SegSSLError(f"cannot read the DICOM series in {folder}: {exc}".splitlines()[0]) from None
    _require_even_slice_spacing(reader, len(files_per_series[series_id]), folder)
    return image


def _require_even_slice_spacing(reader: sitk.ImageSeriesReader, count: int, folder: Path) -> None:
    """Refuse a series with a missing or doubled slice: ITK would stack it with one wrong spacing."""
    def tag(index: int, key: str) -> np.ndarray | None:
        if not reader.HasMetaDataKey(index, key):
            return None
        try:
            return np.array([float(v) for v in reader.GetMetaData(index, key).split("\\")])
        except ValueError:
            return None

    orientation = tag(0, "0020|0037")
    positions = [tag(k, "0020|0032") for k in range(count)]
    if count < 3 or orientation is None or orientation.size != 6 or any(p is None or p.size != 3 for p in positions):
        return  # nothing to compare, or not a cross-sectional series (no image position tags)
    normal = np.cross(orientation[:3], orientation[3:])
    along_normal = np.array(positions) @ normal  # slice positions in mm along the slice normal
    steps = np.abs(np.diff(along_normal))
    spacing = float(np.median(steps))
    # Scanners write positions to a few decimals: allow 1% of the spacing before calling it a gap.
    uneven = np.flatnonzero(np.abs(steps - spacing) > 0.01 * spacing + 1e-3)
    if spacing <= 0 or uneven.size:
        k = int(uneven[0]) if uneven.size else 0
        raise SegSSLError(
            f"the DICOM series in {folder} is not evenly spaced: slices are {spacing:g} mm apart but "
            f"{steps[k]:g} mm between slice {k + 1} and {k + 2} (at {along_normal[k]:.2f} and "
            f"{along_normal[k + 1]:.2f} mm along the slice normal), so a slice is missing or repeated — "
            "export the complete series again, or convert it with a tool that handles gaps (e.g. dcm2niix)"
        )


def read_volume(path: str | os.PathLike, what: str = "volume") -> sitk.Image:
    """Read a 3D scalar volume; 2D images and multi-component images are refused clearly."""
    image = read_image(path, what)
    if image.GetDimension() != 3:
        raise SegSSLError(
            f"{what} {path} is a {image.GetDimension()}D image; this needs a 3D volume "
            "(NIfTI, NRRD, MHA or a DICOM series folder)"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise SegSSLError(
            f"{what} {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "give a single-channel (grey-level) volume"
        )
    return image


def read_label_map(
    path: str | os.PathLike,
    reference: sitk.Image | None = None,
    what: str = "label map",
    reference_name: str = "the volume",
) -> sitk.Image:
    """Read an integer label map; if ``reference`` is given it must share its grid."""
    image = read_image(path, what)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise SegSSLError(f"{what} {path} has several components per voxel; give a single-channel label map")
    array = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise SegSSLError(f"{what} {path} holds non-integer values; give a label map of whole numbers")
        image = sitk.Cast(image, sitk.sitkInt32)
    if np.any(sitk.GetArrayViewFromImage(image) < 0):
        raise SegSSLError(f"{what} {path} holds negative values; label values must be 0 (background) or positive")
    if reference is not None:
        require_same_grid(reference, image, reference_name, f"{what} {Path(path).name}")
    return image


def describe_grid(image: sitk.Image) -> str:
    size = "×".join(str(s) for s in image.GetSize())
    spacing = "×".join(f"{s:g}" for s in image.GetSpacing())
    return f"size {size}, spacing {spacing} mm"


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = GRID_TOLERANCE) -> bool:
    if a.GetDimension() != b.GetDimension() or a.GetSize() != b.GetSize():
        return False
    spacing_a, spacing_b = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    if np.any(np.abs(spacing_a - spacing_b) > tolerance * np.maximum(spacing_a, spacing_b)):
        return False
    # Origins are compared in units of voxels so the tolerance does not depend on where the scanner put 0.
    origin_shift = np.abs(np.array(a.GetOrigin()) - np.array(b.GetOrigin())) / spacing_a
    if np.any(origin_shift > 1e-3):
        return False
    return bool(np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance))


def require_same_grid(reference: sitk.Image, other: sitk.Image, reference_name: str, other_name: str) -> None:
    if not same_grid(reference, other):
        raise SegSSLError(
            f"{other_name} is on a different grid than {reference_name} "
            f"({describe_grid(other)} vs {describe_grid(reference)}, or origin/direction differ) — "
            f"resample it onto {reference_name}'s grid first (e.g. Slicer's Resample Scalar/Vector/DWI Volume)"
        )


def array_to_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Wrap a (k, j, i) array as an image with exactly the reference's geometry."""
    expected = tuple(reversed(reference.GetSize()))
    if tuple(array.shape[: len(expected)]) != expected:
        raise ValueError(f"array shape {array.shape} does not match reference size {reference.GetSize()}")
    image = sitk.GetImageFromArray(array, isVector=array.ndim > reference.GetDimension())
    image.CopyInformation(reference)
    return image


def label_array_to_image(labels: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Label array -> image with the smallest unsigned type that holds its values."""
    labels = np.asarray(labels)
    dtype = np.uint8 if labels.size == 0 or labels.max() < 256 else np.uint16
    return array_to_image(labels.astype(dtype, copy=False), reference)


def check_output_path(
    path: str | os.PathLike,
    inputs: tuple = (),
    what: str = "output",
    suffixes: tuple[str, ...] = WRITABLE_SUFFIXES,
) -> Path:
    """Fail before any work if an output could not be written or would replace an input."""
    path = Path(path)
    suffix = full_suffix(path).lower()
    if suffixes and suffix not in suffixes:
        _refuse_detached_header(path, what)
        raise SegSSLError(
            f"{what} {path} has an unsupported extension {suffix or '(none)'!r} — "
            f"use one of {', '.join(suffixes)}"
        )
    if path.is_dir():
        raise SegSSLError(f"{what} {path} is a folder; give a file name")
    if not path.parent.exists():
        raise SegSSLError(f"cannot write {what} {path}: folder {path.parent} does not exist — create it first")
    if not os.access(path.parent, os.W_OK):
        raise SegSSLError(f"cannot write {what} {path}: folder {path.parent} is not writable")
    resolved = path.resolve()
    for source in inputs:
        if source is not None and Path(source).resolve() == resolved:
            raise SegSSLError(f"{what} {path} is also an input; choose another output file (inputs are never modified)")
    return path


def _refuse_detached_header(path: Path, what: str) -> None:
    single_file = DETACHED_HEADER_SUFFIXES.get(full_suffix(path).lower())
    if single_file:
        raise SegSSLError(
            f"{what} {path}: {path.suffix} keeps the voxels in a separate data file, which SegSSL does not "
            f"write — use {single_file} (the same format in one file)"
        )


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    """Write atomically: the file appears complete or not at all."""
    _refuse_detached_header(Path(path), "output")
    with atomic_output(path) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=compress)
