"""Volumes turned into model-ready slices once, kept on disk as memory-mapped ``.npy`` files.

Training reads every slice many times; reading and resampling NIfTI files each epoch would cost
more than the network on small images. Each case is put into one anatomical orientation
(``orientation``: the same anatomy gives the same slices however the file stores its axes),
windowed (``IntensityWindow``), cut into square slices (``SliceStack``) and stored under a key
made from the source files (path, size, modification time) and the slicing settings, so a changed
file or setting gives a new entry and an unchanged one is never read again. Entries are written to a temporary folder and renamed, so an
interrupted run leaves no half-written entry behind.

Per case the entry holds ``images.npy`` (N, S, S) float16 in [0, 1], and when the case has a label
map ``labels.npy`` (N, S, S) with the label values (nearest-neighbour resampled) and
``presence.npy`` (N, L+1) bool: label value v occurs in original slice n (of the reoriented volume).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegSSLLib.datasets import Case, Dataset
from SegSSLLib.errors import SegSSLError
from SegSSLLib.intensity import IntensityWindow
from SegSSLLib.orientation import STANDARD_ORIENTATION, reorient
from SegSSLLib.polycl import distributed
from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.axes import array_axis
from SegSSLLib.slicing import SliceStack
from SegSSLLib.volumes import read_label_map, read_volume

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: volumes reoriented before slicing
CACHE_ENV = "SEGSSL_CACHE_DIR"


@dataclass(frozen=True)
class SlicingSettings:
    """How a volume becomes model inputs; stored in checkpoints so inference repeats it."""

    window: IntensityWindow
    image_size: int = 256
    axis: int = 2  # ITK axis of the reoriented volume the slices are perpendicular to (2 = axial for LPS)
    keep_aspect: bool = True
    # Anatomical orientation the volume is put in before slicing; None (files made before
    # SegSSL reoriented): the array as stored.
    orientation: str | None = STANDARD_ORIENTATION

    def orient(self, image: sitk.Image) -> sitk.Image:
        """``image`` in this setting's orientation (``stack`` and the slices expect that)."""
        return reorient(image, self.orientation)

    def stack(self, image: sitk.Image) -> SliceStack:
        """The slice stack of an image already passed through ``orient``."""
        shape = tuple(reversed(image.GetSize()))
        return SliceStack(shape, image.GetSpacing(), self.axis, self.image_size, self.keep_aspect)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["window"] = self.window.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "SlicingSettings":
        # Settings saved without an orientation were used on the arrays as stored: keep doing that.
        return cls(**{"orientation": None, **values, "window": IntensityWindow.from_dict(values["window"])})


@dataclass(frozen=True)
class CachedCase:
    name: str
    images: np.ndarray  # (N, S, S) float16, memory-mapped
    labels: np.ndarray | None  # (N, S, S) label values, memory-mapped; None without a label map
    presence: np.ndarray | None  # (N, L+1) bool, from the original (not resampled) slices

    @property
    def num_slices(self) -> int:
        return self.images.shape[0]

    def flags(self, label: int) -> np.ndarray:
        """(N,) bool: does ``label`` occur in each slice."""
        if self.presence is None:
            raise ValueError(f"case {self.name} has no label map")
        if label >= self.presence.shape[1]:
            return np.zeros(self.num_slices, bool)
        return self.presence[:, label].copy()


def default_cache_dir() -> Path:
    """``$SEGSSL_CACHE_DIR`` or the user's cache folder (e.g. ~/.cache/segssl/slices)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("segssl")) / "slices"


def cache_datasets(
    datasets: list[Dataset],
    settings: SlicingSettings,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress = NO_PROGRESS,
) -> list[CachedCase]:
    """Every case of every data set, sliced and cached, in order.

    In a torchrun job the first process builds missing entries while the others wait, then all
    open the same files.
    """
    cases = [case for dataset in datasets for case in dataset.cases]
    if distributed.is_main():
        cache_cases(cases, settings, cache_dir, progress)
    distributed.barrier()
    return cache_cases(cases, settings, cache_dir)


def cache_cases(
    cases: list[Case],
    settings: SlicingSettings,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress = NO_PROGRESS,
) -> list[CachedCase]:
    """Slice every case (or find it in the cache) and return memory-mapped views of them."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SegSSLError(f"cannot create the slice cache folder {root} ({exc.strerror}) — give a writable `cache_dir`") from None
    cached = []
    with progress.stage("slicing volumes", total=len(cases)):
        for case in cases:
            entry = root / cache_key(case, settings)
            if not (entry / "done").exists():
                _build_entry(case, settings, entry)
            cached.append(_open_entry(case.name, entry))
            progress.advance()
    return cached


def cache_key(case: Case, settings: SlicingSettings) -> str:
    description = {
        "format": CACHE_FORMAT,
        "image": _file_identity(case.image),
        "label": _file_identity(case.label) if case.label is not None else None,
        "settings": settings.to_dict(),
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:24]
    return f"{_safe_name(case.name)}-{digest}"


def _file_identity(path: Path) -> list:
    path = Path(path).resolve()
    if path.is_dir():  # a DICOM series folder: its files' names, sizes and times
        files = sorted(p for p in path.iterdir() if p.is_file())
        return [str(path), [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]]
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]


def _build_entry(case: Case, settings: SlicingSettings, entry: Path) -> None:
    log.debug("slicing %s into %s", case.image, entry)
    original = read_volume(case.image, f"volume of case {case.name}")
    image = settings.orient(original)
    stack = settings.stack(image)
    normalized = settings.window.apply(sitk.GetArrayViewFromImage(image))
    images = stack.to_slices(normalized)[:, 0].clamp_(0, 1).numpy().astype(np.float16)
    arrays = {"images": images}
    if case.label is not None:
        label_map = read_label_map(case.label, original, f"label map of case {case.name}", f"volume {case.image.name}")
        label_map.CopyInformation(original)  # equal within tolerance: make them reorient identically
        label_map = settings.orient(label_map)
        values = sitk.GetArrayFromImage(label_map)
        dtype = np.uint8 if values.max(initial=0) < 256 else np.uint16
        arrays["labels"] = stack.to_slices(values.astype(np.float32), mode="nearest")[:, 0].numpy().astype(dtype)
        arrays["presence"] = _presence(values, array_axis(settings.axis))
    temporary = entry.with_name(f".{entry.name}.partial-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        for name, array in arrays.items():
            np.save(temporary / f"{name}.npy", array)
        (temporary / "done").write_text(json.dumps({"case": case.name, "image": str(case.image)}) + "\n")
        try:
            os.replace(temporary, entry)
        except OSError:
            if not (entry / "done").exists():  # not another process that finished first
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _presence(values: np.ndarray, slice_axis: int) -> np.ndarray:
    """(N, L+1) bool: which label values occur in each slice along ``slice_axis``."""
    moved = np.moveaxis(values, slice_axis, 0).reshape(values.shape[slice_axis], -1)
    presence = np.zeros((moved.shape[0], int(values.max(initial=0)) + 1), bool)
    for value in np.unique(values):
        presence[:, value] = (moved == value).any(axis=1)
    return presence


def _open_entry(name: str, entry: Path) -> CachedCase:
    def load(file_name: str):
        path = entry / file_name
        return np.load(path, mmap_mode="r") if path.exists() else None

    images = load("images.npy")
    if images is None:
        raise SegSSLError(f"slice cache entry {entry} is incomplete — delete it and run again")
    return CachedCase(name, images, load("labels.npy"), load("presence.npy"))
