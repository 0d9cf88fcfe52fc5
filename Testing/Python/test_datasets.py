"""MSD folders and plain folders of volumes are found, and broken ones explained."""

import json

import pytest
import SimpleITK as sitk

from SegSSLLib.datasets import load_dataset
from SegSSLLib.errors import SegSSLError
from SegSSLLib.phantoms import make_ct_phantom


def write_msd(root, count=2, with_json=True):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for n in range(count):
        image, labels = make_ct_phantom(seed=n, size=(16, 16, 8))
        sitk.WriteImage(image, str(root / "imagesTr" / f"case_{n:03d}.nii.gz"))
        sitk.WriteImage(labels, str(root / "labelsTr" / f"case_{n:03d}.nii.gz"))
        training.append({"image": f"./imagesTr/case_{n:03d}.nii.gz", "label": f"./labelsTr/case_{n:03d}.nii.gz"})
    if with_json:
        description = {"labels": {"0": "background", "1": "liver"}, "modality": {"0": "CT"}, "training": training}
        (root / "dataset.json").write_text(json.dumps(description))


def test_msd_folder_lists_cases_labels_and_modality(tmp_path):
    write_msd(tmp_path)
    dataset = load_dataset(tmp_path)
    assert [case.name for case in dataset.cases] == ["case_000", "case_001"]
    assert dataset.labelled and dataset.label_names == {0: "background", 1: "liver"} and dataset.modality == "CT"
    assert dataset.cases[1].label == (tmp_path / "labelsTr" / "case_001.nii.gz").resolve()


def test_msd_entries_that_do_not_exist_are_named(tmp_path):
    write_msd(tmp_path, count=1)
    (tmp_path / "labelsTr" / "case_000.nii.gz").unlink()
    with pytest.raises(SegSSLError, match="lists label map .*case_000.nii.gz, which does not exist"):
        load_dataset(tmp_path)


def test_plain_folder_is_unlabelled_and_ignores_other_files(tmp_path):
    for n in range(3):
        image, _ = make_ct_phantom(seed=n, size=(12, 12, 6))
        sitk.WriteImage(image, str(tmp_path / f"scan{n}.nrrd"))
    (tmp_path / "notes.txt").write_text("not a volume")
    dataset = load_dataset(tmp_path)
    assert [case.name for case in dataset.cases] == ["scan0", "scan1", "scan2"]
    assert not dataset.labelled and dataset.label_names == {}


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(SegSSLError, match="holds no volumes"):
        load_dataset(tmp_path)
    with pytest.raises(SegSSLError, match="not found"):
        load_dataset(tmp_path / "absent")
    (tmp_path / "dataset.json").write_text("{broken")
    with pytest.raises(SegSSLError, match="not valid JSON"):
        load_dataset(tmp_path)
