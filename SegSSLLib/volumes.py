"""Reading and writing volumes, label maps and 2D images with their geometry intact.

SimpleITK images carry the geometry (size, spacing, origin, direction); arrays taken from them are
in (k, j, i) order, i.e. reversed with respect to SimpleITK's (i, j, k) size and spacing.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegSSLLib.atomic import atomic_output, check_name_length, full_suffix, read_only_reason, write_failure_message
from SegSSLLib.errors import SegSSLError

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".png", ".tif", ".tiff")
# Formats that keep a 3D image with its spacing, origin and direction (PNG/JPEG/BMP hold one 2D
# picture; TIFF drops spacing, origin and direction).
GEOMETRY_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha")
# Header-only formats put the voxels in a second file that one atomic rename cannot move with the
# header; each has a single-file twin that stores the same thing.
DETACHED_HEADER_SUFFIXES = {".mhd": ".mha", ".nhdr": ".nrrd"}

# Relative tolerance for comparing grids: file formats store spacing/origin as text or float32.
GRID_TOLERANCE = 1e-4


def read_image(path: str | os.PathLike, what: str = "image") -> sitk.Image:
    """Read any image SimpleITK can read: a file, or a folder holding one DICOM series."""
    path = Path(path)
    _require_readable(path, what)
    if path.is_dir():
        return _read_dicom_folder(path, what)
    check_image_file(path, what)
    try:
        with native_stderr_to_log():
            return sitk.ReadImage(str(path))
    except MemoryError:
        raise SegSSLError(f"{what} {path} does not fit in this machine's memory — crop or downsample it first") from None
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


@contextlib.contextmanager
def native_stderr_to_log():
    """Collect what ITK's C/C++ code prints on stderr (multi-line, e.g. "** ERROR: NWAD") into the debug log.

    SegSSL checks the outcome itself and reports it as one line.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            with contextlib.suppress(OSError):
                sink.seek(0)
                text = sink.read(4096).decode(errors="replace").strip()
                if text:
                    log.debug("ITK said: %s", " | ".join(text.splitlines()))


def _require_readable(path: Path, what: str) -> None:
    """One-line errors for paths that cannot even be looked at (loops, over-long names, permissions)."""
    try:
        path.stat()
    except FileNotFoundError:
        raise SegSSLError(f"{what} not found: {path} — check the path") from None
    except OSError as exc:
        import errno

        if exc.errno == errno.ELOOP:
            raise SegSSLError(f"{what} {path} is a symbolic link that points to itself (a link loop) — give the real file") from None
        if exc.errno == errno.ENAMETOOLONG:
            raise SegSSLError(f"{what} {str(path)[:60]}…: the name is too long for the file system — rename it") from None
        raise SegSSLError(f"cannot read {what} {path}: {exc.strerror} — check the path and its permissions") from None
    if not path.is_dir() and not os.access(path, os.R_OK):
        raise SegSSLError(f"cannot read {what} {path}: permission denied — check its permissions")


# Bytes per voxel of SimpleITK's pixel types (per component).
_PIXEL_BYTES = {"8": 1, "16": 2, "32": 4, "64": 8}


def memory_limit_bytes() -> int | None:
    """Physical memory of this machine, or None if unknown."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_image_file(path: Path, what: str = "image") -> None:
    """Refuse a file whose header claims more voxels than memory holds, or whose data is cut short.

    Runs before the voxels are read, so a damaged header never makes a command allocate gigabytes and a
    truncated file (an interrupted copy) is never read as a volume whose missing part is zeros.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with native_stderr_to_log():
            reader.ReadImageInformation()
    except RuntimeError:
        return  # not an image SimpleITK understands: read_image reports it
    voxels = int(np.prod(reader.GetSize(), dtype=np.float64))
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    bits = next((bytes_ for key, bytes_ in _PIXEL_BYTES.items() if key in pixel), 1)
    if "complex" in pixel:
        bits *= 2
    claimed = voxels * reader.GetNumberOfComponents() * bits
    memory = memory_limit_bytes()
    if memory is not None and claimed > memory:
        size = "×".join(str(s) for s in reader.GetSize())
        raise SegSSLError(
            f"{what} {path} claims {size} voxels ({claimed / 2**30:.1f} GiB), more than this machine's memory "
            f"({memory / 2**30:.1f} GiB), in a {path.stat().st_size / 2**20:.1f} MiB file — its header is damaged, "
            "or crop/downsample the volume first"
        )
    problem = _data_problem(path, check_values=True)
    if problem:
        raise SegSSLError(
            f"{what} {path} is incomplete or damaged ({problem}) — it was probably cut short while being "
            "copied or written; copy or export it again"
        )


def _data_problem(path: Path, check_values: bool = False) -> str | None:
    """What is wrong with the voxel data of a NIfTI, NRRD or MetaImage file compared to its header, or None."""
    suffix = full_suffix(path).lower()
    try:
        if suffix in (".nii", ".nii.gz", ".img.gz"):
            return _nifti_problem(path, suffix.endswith(".gz"), check_values)
        if suffix in (".nrrd", ".seg.nrrd"):
            return _nrrd_problem(path)
        if suffix == ".mha":
            return _metaimage_problem(path)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        return str(exc).splitlines()[0][:80] or type(exc).__name__
    return None


def _stream_length(stream, chunk: int = 1 << 22) -> int:
    total = 0
    while block := stream.read(chunk):
        total += len(block)
    return total


def _nifti_problem(path: Path, compressed: bool, check_values: bool = False) -> str | None:
    opener = gzip.open if compressed else open
    with opener(path, "rb") as stream:
        header = stream.read(348)
        if len(header) < 348:
            return f"{len(header)} bytes of a 348-byte header"
        for order in ("<", ">"):
            if np.frombuffer(header, f"{order}i4", 1, 0)[0] == 348:
                break
        else:
            return None  # NIfTI-2 or Analyze variant: SimpleITK's own checks apply
        dims = np.frombuffer(header, f"{order}i2", 8, 40)
        datatype = int(np.frombuffer(header, f"{order}i2", 1, 70)[0])
        bitpix = int(np.frombuffer(header, f"{order}i2", 1, 72)[0])
        offset = max(int(np.frombuffer(header, f"{order}f4", 1, 108)[0]), 348)
        rank = int(dims[0])
        if not 1 <= rank <= 7 or bitpix <= 0:
            return None
        expected = int(np.prod([max(int(d), 1) for d in dims[1 : rank + 1]], dtype=np.int64)) * bitpix // 8
        floating = {16: f"{order}f4", 64: f"{order}f8"}.get(datatype)
        if floating is None or not check_values:  # only the length matters
            if compressed and _gzip_trailer_length(path) == (offset + expected) % 2**32:
                return None  # the recorded length is the announced one: a cut-short file ends elsewhere
            have = 348 + _stream_length(stream) if compressed else path.stat().st_size
            return f"its header announces {offset + expected} bytes, the file holds {have}" if have < offset + expected else None
        # Float voxels: ITK reads NaN as 0, so they are counted here, in the same pass.
        stream.read(offset - 348)
        item = np.dtype(floating).itemsize
        have, finite, pending = offset, 0, b""
        while block := stream.read(1 << 22):
            have += len(block)
            block = pending + block
            usable = len(block) - len(block) % item
            finite += int(np.isfinite(np.frombuffer(block[:usable], floating)).sum())
            pending = block[usable:]
    if have < offset + expected:
        return f"its header announces {offset + expected} bytes, the file holds {have}"
    voxels = expected // item
    if finite == 0:
        raise SegSSLError(
            f"{path} holds no numbers (every voxel is NaN or infinite): there is nothing to segment — "
            "check that this is the right image, or how it was exported"
        )
    if finite < voxels:
        log.warning("%s: %d of %d voxels are NaN or infinite; they are read as 0", path, voxels - finite, voxels)
    return None


def _gzip_trailer_length(path: Path) -> int | None:
    """The uncompressed length (mod 2**32) a complete single-member gzip file records in its last 4 bytes."""
    with open(path, "rb") as raw:
        raw.seek(0, os.SEEK_END)
        if raw.tell() < 18:
            return None
        raw.seek(-4, os.SEEK_END)
        return int.from_bytes(raw.read(4), "little")


def _text_header(path: Path, separator: bytes, limit: int = 1 << 16) -> tuple[list[str], int] | None:
    with open(path, "rb") as stream:
        head = stream.read(limit)
    end = head.find(separator)
    if end < 0:
        return None
    return head[:end].decode("latin-1").splitlines(), end + len(separator)


_NRRD_TYPES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
        "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
        "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"),
}


def _nrrd_problem(path: Path) -> str | None:
    parsed = _text_header(path, b"\n\n")
    if parsed is None:
        return None
    lines, data_start = parsed
    fields = {}
    for line in lines[1:]:
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.lstrip("=").strip()
    if any(key in fields for key in ("data file", "datafile", "line skip", "lineskip", "byte skip", "byteskip")):
        return None
    encoding = fields.get("encoding", "raw").lower()
    width = next((n for n, names in _NRRD_TYPES.items() if fields.get("type", "").lower() in names), None)
    if width is None or "sizes" not in fields:
        return None
    expected = int(np.prod([int(v) for v in fields["sizes"].split()], dtype=np.int64)) * width
    if encoding == "raw":
        have = path.stat().st_size - data_start
    elif encoding in ("gzip", "gz"):
        with open(path, "rb") as raw:
            raw.seek(data_start)
            with gzip.GzipFile(fileobj=raw) as stream:
                have = _stream_length(stream)
    else:
        return None
    if have < expected:
        return f"its header announces {expected} bytes of voxels, the file holds {have}"
    return None


_META_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
               "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _metaimage_problem(path: Path) -> str | None:
    with open(path, "rb") as stream:
        head = stream.read(1 << 16)
    fields, data_start = {}, None
    position = 0
    for raw_line in head.split(b"\n"):
        position += len(raw_line) + 1
        key, _, value = raw_line.decode("latin-1").partition("=")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            data_start = position
            break
    if data_start is None or fields.get("ElementDataFile") != "LOCAL" or "HeaderSize" in fields:
        return None
    width = _META_TYPES.get(fields.get("ElementType", ""))
    if width is None or "DimSize" not in fields:
        return None
    channels = int(fields.get("ElementNumberOfChannels", "1"))
    expected = int(np.prod([int(v) for v in fields["DimSize"].split()], dtype=np.int64)) * width * channels
    if fields.get("CompressedData", "False").lower() == "true":
        with open(path, "rb") as stream:
            stream.seek(data_start)
            inflater = zlib.decompressobj()
            have = 0
            while block := stream.read(1 << 22):
                have += len(inflater.decompress(block))
            have += len(inflater.flush())
            if not inflater.eof:
                return f"its compressed voxels end early ({have} of {expected} bytes)"
    else:
        have = path.stat().st_size - data_start
    if have < expected:
        return f"its header announces {expected} bytes of voxels, the file holds {have}"
    return None


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


def require_content(image: sitk.Image, what: str = "the input") -> None:
    """Refuse a blank image (every value NaN/infinite, or one constant value): nothing can be found in it."""
    array = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(array) if np.issubdtype(array.dtype, np.floating) else None
    if finite is not None and not finite.any():
        raise SegSSLError(
            f"{what} holds no numbers (every voxel is NaN or infinite): there is nothing to segment — "
            "check that this is the right image, or how it was exported"
        )
    values = array[finite] if finite is not None and not finite.all() else array
    if values.size and values.min() == values.max():
        raise SegSSLError(
            f"{what} is constant (every value is {values.flat[0]:g}): there is nothing to segment — "
            "check that this is the right image"
        )


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
    dimension: int | None = None,
) -> Path:
    """Fail before any work if an output could not be written or would replace an input.

    ``dimension``: 3 when the output is a volume, so formats that cannot hold one are refused.
    """
    path = Path(path)
    suffix = full_suffix(path).lower()
    if suffixes and suffix not in suffixes:
        _refuse_detached_header(path, what)
        raise SegSSLError(
            f"{what} {path} has an unsupported extension {suffix or '(none)'!r} — "
            f"use one of {', '.join(suffixes)}"
        )
    if dimension is not None:
        check_output_format(path, dimension, what)
    check_name_length(path, what)
    try:
        is_folder = path.is_dir()
        parent_exists = path.parent.exists()
    except OSError as exc:
        raise SegSSLError(f"cannot write {what} {path}: {exc.strerror} — check the path") from None
    if is_folder:
        raise SegSSLError(f"{what} {path} is a folder; give a file name")
    if not parent_exists:
        raise SegSSLError(f"cannot write {what} {path}: folder {path.parent} does not exist — create it first")
    if not path.parent.is_dir():
        raise SegSSLError(f"cannot write {what} {path}: {path.parent} is a file, not a folder — give another path")
    blocked = read_only_reason(path.parent)
    if blocked:
        raise SegSSLError(f"cannot write {what} {path}: folder {path.parent} is not writable ({blocked})")
    resolved = os.path.realpath(path)
    for source in inputs:
        if source is not None and os.path.realpath(source) == resolved:
            raise SegSSLError(f"{what} {path} is also an input; choose another output file (inputs are never modified)")
    return path


def check_output_format(path: str | os.PathLike, dimension: int, what: str = "output") -> None:
    """Refuse writing a 3D image to a format that would keep one slice, or drop its geometry."""
    suffix = full_suffix(path).lower()
    if dimension >= 3 and suffix not in GEOMETRY_SUFFIXES:
        raise SegSSLError(
            f"{what} {path}: a {suffix or 'file without extension'} file cannot hold a 3D volume with its spacing, "
            f"origin and direction — use one of {', '.join(GEOMETRY_SUFFIXES)}"
        )


def _refuse_detached_header(path: Path, what: str) -> None:
    single_file = DETACHED_HEADER_SUFFIXES.get(full_suffix(path).lower())
    if single_file:
        raise SegSSLError(
            f"{what} {path}: {path.suffix} keeps the voxels in a separate data file, which SegSSL does not "
            f"write — use {single_file} (the same format in one file)"
        )


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True, what: str = "output") -> None:
    """Write atomically: the file appears complete and checked (read back and compared) or not at all."""
    _refuse_detached_header(Path(path), what)
    check_output_format(path, image.GetDimension(), what)

    def verify(temporary: Path) -> None:
        _verify_written_image(image, temporary, path, what)

    with atomic_output(path, verify, what) as temporary, native_stderr_to_log():
        try:
            sitk.WriteImage(image, str(temporary), useCompression=compress)
        except RuntimeError:
            raise SegSSLError(write_failure_message(path, what=what)) from None


def write_images(images: dict, what: str = "output", compress: bool = True) -> None:
    """Write several images as one: each is written and checked, then all are renamed; a failure leaves none.

    ``images``: {path: image}. No earlier file of any of the names is replaced unless every one succeeded.
    """
    for path, image in images.items():
        _refuse_detached_header(Path(path), what)
        check_output_format(path, image.GetDimension(), what)
    with contextlib.ExitStack() as stack:
        for path, image in images.items():
            temporary = stack.enter_context(atomic_output(path, what=what))
            with native_stderr_to_log():
                try:
                    sitk.WriteImage(image, str(temporary), useCompression=compress)
                except RuntimeError:
                    raise SegSSLError(write_failure_message(path, what=what)) from None
            _verify_written_image(image, temporary, path, what)


def _verify_written_image(image: sitk.Image, temporary: Path, final, what: str) -> None:
    """Read a just-written file back; anything short or different means the write did not complete.

    SimpleITK's NIfTI writer reports a short write (full disk, file-size limit) only on stderr.
    """
    incomplete = SegSSLError(write_failure_message(final, what=what))
    if _data_problem(temporary):
        raise incomplete
    try:
        with native_stderr_to_log():
            back = sitk.ReadImage(str(temporary))
    except RuntimeError:
        raise incomplete from None
    if back.GetSize() != image.GetSize() or back.GetNumberOfComponentsPerPixel() != image.GetNumberOfComponentsPerPixel():
        raise incomplete
    if image.GetDimension() >= 3 and not same_grid(back, image):
        raise incomplete
    written, meant = sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image)
    floating = np.issubdtype(meant.dtype, np.floating) and np.issubdtype(written.dtype, np.floating)
    if not np.array_equal(written, meant, equal_nan=floating):
        raise incomplete
