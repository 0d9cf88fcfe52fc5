"""Finding cases on disk: Medical Segmentation Decathlon folders and plain folders of volumes.

An MSD folder has ``dataset.json`` (``"training": [{"image": ..., "label": ...}]``, ``"labels"``,
``"modality"``) with ``imagesTr/`` and ``labelsTr/``. A plain folder holds volume files (or DICOM
series sub-folders) and no labels, for unlabelled pretraining.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from SegSSLLib.atomic import full_suffix, write_text_atomically
from SegSSLLib.errors import SegSSLError
from SegSSLLib.volumes import VOLUME_SUFFIXES, write_image


@dataclass(frozen=True)
class Case:
    name: str
    image: Path
    label: Path | None = None


@dataclass(frozen=True)
class Dataset:
    root: Path
    cases: tuple[Case, ...]
    label_names: dict[int, str]  # empty for unlabelled folders
    modality: str = "unknown"  # "CT", "MR", ... from dataset.json

    @property
    def labelled(self) -> bool:
        return all(case.label is not None for case in self.cases)


def load_dataset(folder: str | os.PathLike) -> Dataset:
    """Read an MSD folder (when it has ``dataset.json``) or a plain folder of volumes."""
    root = Path(folder)
    if not root.exists():
        raise SegSSLError(f"data folder not found: {root} — check the path")
    if not root.is_dir():
        raise SegSSLError(f"`data` {root} is a file; give a folder (MSD layout or a folder of volumes)")
    if (root / "dataset.json").exists():
        return _load_msd(root)
    return _load_plain(root)


def _load_msd(root: Path) -> Dataset:
    json_path = root / "dataset.json"
    try:
        description = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SegSSLError(f"{json_path} is not valid JSON ({exc.__class__.__name__}) — fix or remove it") from None
    if not isinstance(description, dict):
        raise SegSSLError(
            f"{json_path} holds a JSON {_json_type(description)}, not an object — "
            'write {"training": [{"image": ..., "label": ...}], "labels": {...}} (the MSD layout)'
        )
    entries = _field(description, "training", list, json_path) or []
    cases = []
    for number, entry in enumerate(entries, start=1):
        image, label = _entry_paths(entry, number, json_path)
        for path, kind in ((image, "image"), (label, "label map")):
            if path is not None and not path.exists():
                raise SegSSLError(f"{json_path} lists {kind} {path}, which does not exist — fix the entry")
        cases.append(Case(_case_name(image), image, label))
    if not entries:
        # dataset.json without a training list: pair imagesTr/ with labelsTr/ by file name.
        cases = _pair_by_name(root)
    if not cases:
        raise SegSSLError(f"data folder {root} has a dataset.json but no training cases — add images to imagesTr/")
    label_field = _field(description, "labels", dict, json_path) or {}
    labels = {int(k): str(v) for k, v in label_field.items() if str(k).isdigit()}
    modality = description.get("modality") or "unknown"  # MSD writes {"0": "CT"}; some tools a bare "CT"
    if isinstance(modality, dict):
        modality = modality.get("0", "unknown")
    modality = str(modality)
    return Dataset(root, tuple(cases), labels, modality)


def _field(description: dict, key: str, kind: type, json_path: Path):
    """``description[key]`` if it is absent, empty or of ``kind``; a clear error otherwise."""
    value = description.get(key)
    if value and not isinstance(value, kind):
        raise SegSSLError(
            f'{json_path}: "{key}" is a JSON {_json_type(value)}, expected a JSON {_json_type(kind())} — fix the file'
        )
    return value


def _entry_paths(entry, number: int, json_path: Path) -> tuple[Path, Path | None]:
    """(image, label or None) of the ``number``-th "training" entry, resolved against the folder."""
    if isinstance(entry, str):  # some tools list bare image paths
        entry = {"image": entry}
    where = f'{json_path}: "training" entry {number}'
    if not isinstance(entry, dict):
        raise SegSSLError(f'{where} is a JSON {_json_type(entry)} — give {{"image": ..., "label": ...}} or an image path')
    image, label = entry.get("image"), entry.get("label")
    if not isinstance(image, str) or not image:
        raise SegSSLError(f'{where} has no "image" path ({json.dumps(entry)[:80]}) — add "image": "./imagesTr/NAME.nii.gz"')
    if label is not None and not isinstance(label, str):
        raise SegSSLError(f'{where} has a "label" that is not a path — give "label": "./labelsTr/NAME.nii.gz" or leave it out')
    root = json_path.parent
    return (root / image).resolve(), (root / label).resolve() if label else None


def _json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "true/false", type(None): "null"}
    return next((name for kind, name in names.items() if isinstance(value, kind)), "number")


NNUNET_CHANNEL_SUFFIX = "_0000"  # nnU-Net's first (here: only) input channel


def _pair_by_name(root: Path) -> list[Case]:
    images = _volume_files(root / "imagesTr") if (root / "imagesTr").is_dir() else []
    cases = []
    for image in images:
        name = _case_name(image).removesuffix(NNUNET_CHANNEL_SUFFIX)
        label = next((p for p in _volume_files(root / "labelsTr") if _case_name(p) == name), None) \
            if (root / "labelsTr").is_dir() else None
        cases.append(Case(name, image, label))
    return cases


def _load_plain(root: Path) -> Dataset:
    files = _volume_files(root)
    if not files:
        raise SegSSLError(
            f"data folder {root} holds no volumes — give an MSD folder (dataset.json, imagesTr/, labelsTr/) "
            f"or a folder of {', '.join(VOLUME_SUFFIXES)} files or DICOM series folders"
        )
    names = [_case_name(f) for f in files]
    if all(name.endswith(NNUNET_CHANNEL_SUFFIX) for name in names):
        # nnU-Net names single-channel images case_0000.nii.gz and their labels case.nii.gz
        names = [name.removesuffix(NNUNET_CHANNEL_SUFFIX) for name in names]
    return Dataset(root, tuple(Case(name, f) for name, f in zip(names, files)), {})


def _volume_files(folder: Path) -> list[Path]:
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and full_suffix(path).lower() in VOLUME_SUFFIXES:
            found.append(path)
        elif path.is_dir() and any(p.suffix.lower() == ".dcm" for p in path.iterdir()):
            found.append(path)
    return found


def _case_name(path: Path) -> str:
    suffix = full_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix and path.is_file() else path.name


def write_msd_dataset(
    folder: str | os.PathLike,
    cases: list[tuple[str, sitk.Image, sitk.Image | None]],
    label_names: dict[int, str],
    modality: str = "CT",
) -> Path:
    """Write (name, image, label map or None) cases as an MSD folder that ``load_dataset`` reads back.

    For demos, tests and benchmarks that build data sets from phantoms.
    """
    root = Path(folder)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    training = []
    for name, image, labels in cases:
        entry = {"image": f"./imagesTr/{name}.nii.gz"}
        write_image(image, root / entry["image"])
        if labels is not None:
            entry["label"] = f"./labelsTr/{name}.nii.gz"
            write_image(labels, root / entry["label"])
        training.append(entry)
    description = {
        "name": root.name,
        "modality": {"0": modality},
        "labels": {"0": "background", **{str(value): name for value, name in sorted(label_names.items())}},
        "numTraining": len(training),
        "training": training,
    }
    write_text_atomically(root / "dataset.json", json.dumps(description, indent=2) + "\n", "dataset description")
    return root
