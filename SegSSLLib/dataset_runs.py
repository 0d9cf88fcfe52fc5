"""One command over every case of a data set: pairing by name, resume, failure isolation, torchrun shards.

A *case* is named after its input file without the extension (``liver_3.nii.gz`` -> ``liver_3``);
inputs, annotations, predictions and references are paired by that name, and each case's output
is written as ``OUTPUT_DIR/<name><input's extension>``.

- **Resume.** A case whose output already exists and is complete is skipped. "Complete" is checked
  cheaply: the header must be readable and give the expected size, and the file must be long
  enough to hold the voxels (for gzip files, the length stored in the gzip trailer). Outputs are
  written atomically, so only a file damaged from outside (an interrupted copy, a full disk) fails
  the check; it is then segmented again.
- **Failures.** A case that fails is logged with its one-line reason and the others go on; the
  summary lists the failed cases and the command's exit code says whether any failed.
- **Shards.** Under ``torchrun`` every process takes every ``WORLD_SIZE``-th case of the sorted list,
  starting at its ``RANK`` (cases[rank::world]); the split depends only on the case names, never on
  what is already on disk, so two processes can never both take a case. Each process writes only its
  own cases' files; the per-case results are gathered (gloo, CPU objects only) so that rank 0 alone
  prints the one summary and writes the reports.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import struct
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import SimpleITK as sitk

from SegSSLLib.atomic import full_suffix
from SegSSLLib.errors import SegSSLError
from SegSSLLib.progress import Progress
from SegSSLLib.volumes import DETACHED_HEADER_SUFFIXES, VOLUME_SUFFIXES, WRITABLE_SUFFIXES

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_SUFFIX = ".nii.gz"


# --- finding and pairing cases ---------------------------------------------------------------

def is_dataset_folder(path: str | os.PathLike) -> bool:
    """True for an MSD folder or a folder of volume files / DICOM series sub-folders.

    A folder of ``.dcm`` files is one DICOM volume, not a data set, and gives False.
    """
    folder = Path(path)
    if not folder.is_dir():
        return False
    if (folder / "dataset.json").is_file():
        return True
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_file() and full_suffix(entry).lower() in VOLUME_SUFFIXES:
            return True
        if entry.is_dir() and any(p.suffix.lower() == ".dcm" for p in entry.iterdir()):
            return True
    return False


def dataset_images(folder: str | os.PathLike, what: str = "`image` folder") -> dict[str, Path]:
    """Case name -> image file of an MSD folder (its training cases) or a plain folder of volumes."""
    from SegSSLLib.datasets import load_dataset

    dataset = load_dataset(folder)
    return _unique_names({case.name: case.image for case in dataset.cases}, [c.name for c in dataset.cases], what)


def dataset_label_maps(folder: str | os.PathLike, what: str) -> dict[str, Path]:
    """Case name -> label map: the labels of an MSD folder, or every volume file of a plain folder."""
    from SegSSLLib.datasets import load_dataset

    dataset = load_dataset(folder)
    if (Path(folder) / "dataset.json").is_file():
        cases = [case for case in dataset.cases if case.label is not None]
        if not cases:
            raise SegSSLError(f"{what} {folder} is an MSD folder without label maps — give its labelsTr/ folder or one with labels")
        return _unique_names({c.name: c.label for c in cases}, [c.name for c in cases], what)
    return _unique_names({c.name: c.image for c in dataset.cases}, [c.name for c in dataset.cases], what)


def _unique_names(by_name: dict[str, Path], names: list[str], what: str) -> dict[str, Path]:
    if len(by_name) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise SegSSLError(
            f"{what} holds several files named {', '.join(twice[:3])} (different extensions); cases are paired by "
            "name — keep one file per case"
        )
    return dict(sorted(by_name.items()))


@dataclass(frozen=True)
class Pairing:
    """Cases found on both sides, and those found on one side only."""

    pairs: dict[str, tuple[Path, Path]]
    only_first: list[str]
    only_second: list[str]


def pair_by_name(first: dict[str, Path], second: dict[str, Path]) -> Pairing:
    both = sorted(first.keys() & second.keys())
    return Pairing(
        {name: (first[name], second[name]) for name in both},
        sorted(first.keys() - second.keys()),
        sorted(second.keys() - first.keys()),
    )


def output_suffix(input_path: str | os.PathLike) -> str:
    """The input's extension when SegSSL can write it (``.mhd`` -> ``.mha``), else ``.nii.gz`` (DICOM folders)."""
    path = Path(input_path)
    if path.is_dir():
        return DEFAULT_OUTPUT_SUFFIX
    suffix = full_suffix(path)
    suffix = DETACHED_HEADER_SUFFIXES.get(suffix.lower(), suffix)
    return suffix if suffix.lower() in WRITABLE_SUFFIXES else DEFAULT_OUTPUT_SUFFIX


def prepare_output_folder(folder: str | os.PathLike, inputs: Sequence[Path], what: str = "output folder") -> Path:
    """Check, before any work, that the output folder can be made and written and would replace no input.

    The folder itself is created by the caller when the first case is about to start
    (``folder.mkdir(exist_ok=True)``), so an error before then leaves nothing behind.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SegSSLError(f"{what} {folder} is a file; the input is a folder of cases, so give a folder for the outputs")
    if not folder.exists() and not folder.parent.is_dir():
        raise SegSSLError(f"cannot create {what} {folder}: folder {folder.parent} does not exist — create it first")
    writable = folder if folder.exists() else folder.parent
    if not os.access(writable, os.W_OK):
        raise SegSSLError(f"cannot write into {what} {folder}: folder {writable} is not writable")
    resolved = folder.resolve()
    if any(Path(p).resolve().parent == resolved for p in inputs):
        raise SegSSLError(
            f"{what} {folder} holds the inputs, and outputs take the inputs' names — choose another folder"
        )
    return folder


# --- is an output complete? ------------------------------------------------------------------

def image_size(path: str | os.PathLike) -> tuple[int, ...] | None:
    """Size (i, j, k) from the file's header alone; None for a DICOM folder or an unreadable file."""
    path = Path(path)
    if not path.is_file():
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return tuple(reader.GetSize())


def output_complete(path: str | os.PathLike, expected_size: tuple[int, ...] | None) -> bool:
    """Is ``path`` a whole image of ``expected_size`` (i, j, k)? Cheap: header plus file length.

    ``expected_size`` None (a DICOM input) only asks for a readable file, which then means reading it.
    """
    path = Path(path)
    if not path.is_file():
        return False
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False
    size = tuple(reader.GetSize())
    if expected_size is not None and size != tuple(expected_size):
        return False
    component = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    voxel_bytes = math.prod(size) * reader.GetNumberOfComponents() * component
    verdict = _payload_fits(path, voxel_bytes)
    if verdict is not None:
        return verdict
    try:  # a format whose layout is not checked here: read it all
        sitk.ReadImage(str(path))
    except RuntimeError:
        return False
    return True


def _payload_fits(path: Path, voxel_bytes: int) -> bool | None:
    """Does the file hold all ``voxel_bytes`` bytes of voxels? None: a layout not checked here."""
    name = path.name.lower()
    try:
        if name.endswith(".nii.gz"):  # one gzip stream: header, then the voxels from vox_offset
            with gzip.open(path, "rb") as stream:
                offset = _nifti_voxel_offset(stream.read(540))
            return offset is not None and _gzip_trailer_length(path, 0) == (offset + voxel_bytes) % 2**32
        if name.endswith(".nii"):
            with open(path, "rb") as stream:
                offset = _nifti_voxel_offset(stream.read(540))
            return offset is not None and path.stat().st_size >= offset + voxel_bytes
        if name.endswith(".nrrd"):
            return _nrrd_payload_fits(path, voxel_bytes)
        if name.endswith(".mha"):
            return _mha_payload_fits(path, voxel_bytes)
    except (OSError, EOFError, ValueError, struct.error):  # unreadable, or cut inside the header
        return False
    return None


def _nifti_voxel_offset(header: bytes) -> int | None:
    """Where the voxels start in a NIfTI-1 or NIfTI-2 file (either byte order), from its header."""
    for order in ("<", ">"):
        if len(header) >= 112 and struct.unpack(f"{order}i", header[:4])[0] == 348:
            return int(struct.unpack(f"{order}f", header[108:112])[0])
        if len(header) >= 176 and struct.unpack(f"{order}i", header[:4])[0] == 540:
            return int(struct.unpack(f"{order}q", header[168:176])[0])
    return None


def _gzip_trailer_length(path: Path, start: int) -> int | None:
    """Uncompressed length (mod 2^32) from the trailer of the gzip stream that starts at ``start`` and ends the file."""
    with open(path, "rb") as stream:
        stream.seek(start)
        if stream.read(2) != b"\x1f\x8b":
            return None
        stream.seek(0, os.SEEK_END)
        if stream.tell() - start < 20:
            return None
        stream.seek(-4, os.SEEK_END)
        return int.from_bytes(stream.read(4), "little")


def _text_header(path: Path, find_end) -> tuple[dict[str, str], int] | None:
    """(lower-case key -> value, length in bytes) of a text header whose end ``find_end(head)`` gives (-1: none)."""
    with open(path, "rb") as stream:
        head = stream.read(1 << 16)
    end = find_end(head)
    if end < 0:
        return None
    fields: dict[str, str] = {}
    for line in head[:end].decode("latin-1").splitlines():
        if line.startswith("#"):
            continue
        for separator in (":", "="):
            key, found, value = line.partition(separator)
            if found:
                fields.setdefault(key.strip().lower(), value.strip())
                break
    return fields, end


def _nrrd_payload_fits(path: Path, voxel_bytes: int) -> bool | None:
    """Attached NRRD data: raw must be long enough; gzip's trailer must give the voxels' length."""
    header = _text_header(path, lambda head: head.find(b"\n\n") + 2 if head.startswith(b"NRRD") and b"\n\n" in head else -1)
    if header is None:
        return None
    fields, end = header
    if "data file" in fields or "datafile" in fields:
        return None
    encoding = fields.get("encoding", "raw").lower()
    if encoding == "raw":
        return path.stat().st_size - end >= voxel_bytes
    if encoding in ("gzip", "gz"):
        return _gzip_trailer_length(path, end) == voxel_bytes % 2**32
    return None


def _mha_payload_fits(path: Path, voxel_bytes: int) -> bool | None:
    """MetaImage with its data inside: the bytes after the header must be the (compressed) data's size."""
    marker = b"ElementDataFile = LOCAL\n"
    header = _text_header(path, lambda head: head.find(marker) + len(marker) if marker in head else -1)
    if header is None:
        return None
    fields, end = header
    compressed = fields.get("compresseddata", "false").lower() == "true"
    expected = int(fields.get("compresseddatasize", "0")) if compressed else voxel_bytes
    if compressed and expected <= 0:
        return None
    return path.stat().st_size - end >= expected


# --- processes -------------------------------------------------------------------------------

def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes: torch.distributed's, else torchrun's RANK/WORLD_SIZE."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def shard(items: Sequence, rank: int, world: int) -> list:
    """This rank's share: every ``world``-th item starting at ``rank`` (deterministic, disjoint, complete)."""
    if not 0 <= rank < world:
        raise SegSSLError(f"RANK {rank} is outside WORLD_SIZE {world} — start the command with torchrun")
    return list(items)[rank::world]


@contextmanager
def case_processes():
    """Join torchrun's process group for a data-set run (gloo: only the per-case results travel).

    The processes share no tensors, so gloo is used on GPUs too. The timeout is long because a rank
    with small cases may wait at the end for one with large cases. A plain run does nothing here.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    import torch.distributed as dist

    if world <= 1 or dist.is_initialized():
        yield
        return
    if "MASTER_ADDR" not in os.environ:
        raise SegSSLError(
            f"WORLD_SIZE={world} is set but MASTER_ADDR is not — start the processes with torchrun, which sets both"
        )
    from datetime import timedelta

    dist.init_process_group("gloo", timeout=timedelta(days=2))
    try:
        yield
    finally:
        dist.destroy_process_group()


def _gather(results: list) -> list:
    """Every rank's results, in rank order, on every rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(results)
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, results)
    return [result for part in gathered for result in part]


# --- running the cases -----------------------------------------------------------------------

@dataclass
class CaseResult:
    name: str
    status: str  # "done", "skipped" (complete output found) or "failed"
    message: str = ""
    seconds: float = 0.0
    rank: int = 0
    data: dict | None = None  # what the work returned (e.g. metrics)


@dataclass
class RunSummary:
    results: list[CaseResult]  # every rank's, sorted by case name
    processes: int
    seconds: float
    extra: dict = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "failed"]

    def line(self, done_word: str = "written") -> str:
        done, skipped = self.count("done"), self.count("skipped")
        text = f"{len(self.results)} cases: {done} {done_word}, "
        if skipped:
            text += f"{skipped} skipped (complete output found), "
        text += f"{len(self.failed)} failed"
        if self.failed:
            names = ", ".join(r.name for r in self.failed[:5]) + (", ..." if len(self.failed) > 5 else "")
            text += f" ({names})"
        text += f" in {self.seconds:.1f} s"
        if done and self.seconds > 0:
            text += f", {60 * done / self.seconds:.1f} cases/min"
        if self.processes > 1:
            text += f" over {self.processes} processes"
        return text

    def to_dict(self) -> dict:
        return {
            "cases": len(self.results), "done": self.count("done"), "skipped": self.count("skipped"),
            "failed": len(self.failed), "processes": self.processes, "seconds": round(self.seconds, 3),
            "results": [{k: v for k, v in asdict(r).items() if k != "data"} for r in self.results],
            **self.extra,
        }


def needs_work(cases: Sequence, is_complete: Callable[[object], bool] | None) -> bool:
    """Does this process's share of ``cases`` hold a case without a complete output?

    Asked before the model is loaded, so that running a finished data set again costs no model load.
    """
    if is_complete is None:
        return bool(cases)
    rank, world = rank_and_world()
    return not all(is_complete(case) for case in shard(sorted(cases, key=lambda c: c.name), rank, world))


def run_cases(
    cases: Sequence,
    work: Callable[[object], dict | None],
    progress: Progress,
    is_complete: Callable[[object], bool] | None = None,
    stage: str = "cases",
) -> RunSummary:
    """Run ``work(case)`` for this process's share of ``cases`` (objects with a ``name``) and gather all results.

    ``is_complete(case)`` True skips a case (resume). An exception in ``work`` fails only that case:
    it is logged as one line and the next case starts; Ctrl-C still stops the run. Every rank returns
    the same summary (all ranks' results), so every rank knows the exit code.
    """
    started = time.monotonic()
    rank, world = rank_and_world()
    mine = shard(sorted(cases, key=lambda c: c.name), rank, world)
    results = []
    with progress.stage(stage, total=len(mine)):
        for case in mine:
            began = time.monotonic()
            if is_complete is not None and is_complete(case):
                log.debug("%s: complete output found, skipped", case.name)
                results.append(CaseResult(case.name, "skipped", rank=rank))
            else:
                try:
                    data = work(case)
                except Exception as exc:  # noqa: BLE001 - one case's failure must not stop the others
                    message = describe_failure(exc)
                    log.warning("%s: failed — %s", case.name, message)
                    log.debug("%s: traceback", case.name, exc_info=True)
                    results.append(CaseResult(case.name, "failed", message, time.monotonic() - began, rank))
                else:
                    results.append(CaseResult(case.name, "done", "", time.monotonic() - began, rank, data))
            progress.advance(1, case=case.name, status=results[-1].status)
    gathered = sorted(_gather(results), key=lambda r: r.name)
    return RunSummary(gathered, world, time.monotonic() - started)


def describe_failure(exc: BaseException) -> str:
    """One line for a failed case: the SegSSLError text, or what went wrong unexpectedly."""
    if isinstance(exc, SegSSLError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory — this case is too large for the memory left; try a smaller `batch_size`"
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()  # so the next case starts with the memory this one held
            return "out of GPU memory — use a smaller `batch_size`, or `device` cpu"
    except ImportError:  # pragma: no cover
        pass
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return f"internal error: {type(exc).__name__}: {first_line} (its traceback is logged at DEBUG level)"


def is_main_process() -> bool:
    return rank_and_world()[0] == 0
