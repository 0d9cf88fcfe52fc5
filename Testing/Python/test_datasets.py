"""MSD folders and plain folders of volumes are found, and broken ones explained."""

import json

import pytest
import SimpleITK as sitk

from SegSSLLib.datasets import load_dataset
from SegSSLLib.errors import SegSSLError
from SegSSLLib.phantoms import make_ct_phantom
from conftest import assert_one_line_error, run_segssl


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


@pytest.mark.parametrize(
    "description, expected",
    [
        ([{"image": "./imagesTr/case_000.nii.gz"}], "holds a JSON array, not an object"),
        ({"training": {"image": "./imagesTr/case_000.nii.gz"}}, '"training" is a JSON object, expected a JSON array'),
        ({"training": [{"label": "./labelsTr/case_000.nii.gz"}]}, '"training" entry 1 has no "image" path'),
        ({"training": [{"image": "./imagesTr/case_000.nii.gz"}, {"image": 7}]}, '"training" entry 2 has no "image"'),
        ({"training": [["./imagesTr/case_000.nii.gz"]]}, '"training" entry 1 is a JSON array'),
        ({"training": [{"image": "./imagesTr/case_000.nii.gz", "label": 1}]}, '"label" that is not a path'),
        ({"training": ["./imagesTr/case_000.nii.gz"], "labels": ["background", "liver"]},
         '"labels" is a JSON array, expected a JSON object'),
        ({"training": [{"image": "./imagesTr/absent.nii.gz"}]}, "lists image .*absent.nii.gz, which does not exist"),
    ],
)
def test_malformed_dataset_json_names_the_broken_entry(tmp_path, description, expected):
    write_msd(tmp_path, count=1, with_json=False)
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    with pytest.raises(SegSSLError, match=expected) as caught:
        load_dataset(tmp_path)
    assert "dataset.json" in str(caught.value)


def test_finetune_on_a_malformed_dataset_json_is_one_line(tmp_path):
    data = tmp_path / "data"
    write_msd(data, count=1, with_json=False)
    (data / "dataset.json").write_text(json.dumps({"training": [{"label": "./labelsTr/case_000.nii.gz"}]}))
    result = run_segssl("finetune", "--data", data, "--label", "1", "--out", tmp_path / "model.pt")
    assert_one_line_error(result, 'entry 1 has no "image" path', "imagesTr")
    assert result.returncode == 1 and not (tmp_path / "model.pt").exists()


def test_bare_image_paths_and_a_plain_modality_are_accepted(tmp_path):
    write_msd(tmp_path, count=1, with_json=False)
    description = {"training": ["./imagesTr/case_000.nii.gz"], "modality": "MR"}
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    dataset = load_dataset(tmp_path)
    assert [case.name for case in dataset.cases] == ["case_000"] and dataset.modality == "MR"
    assert not dataset.labelled


def test_plain_folder_is_unlabelled_and_ignores_other_files(tmp_path):
    for n in range(3):
        image, _ = make_ct_phantom(seed=n, size=(12, 12, 6))
        sitk.WriteImage(image, str(tmp_path / f"scan{n}.nrrd"))
    (tmp_path / "notes.txt").write_text("not a volume")
    dataset = load_dataset(tmp_path)
    assert [case.name for case in dataset.cases] == ["scan0", "scan1", "scan2"]
    assert not dataset.labelled and dataset.label_names == {}


def test_nnunet_channel_suffix_is_dropped_only_when_every_file_has_it(tmp_path):
    from SegSSLLib.dataset_runs import dataset_images, dataset_label_maps, pair_by_name

    images, labels, mixed = (tmp_path / name for name in ("imagesTs", "labels", "mixed"))
    for folder in (images, labels, mixed):
        folder.mkdir()
    image, label_map = make_ct_phantom(seed=0, size=(12, 12, 6))
    for case in ("liver_1", "liver_2"):
        sitk.WriteImage(image, str(images / f"{case}_0000.nii.gz"))
        sitk.WriteImage(label_map, str(labels / f"{case}.nii.gz"))
    sitk.WriteImage(image, str(mixed / "a_0000.nii.gz"))
    sitk.WriteImage(image, str(mixed / "b.nii.gz"))
    assert [case.name for case in load_dataset(images).cases] == ["liver_1", "liver_2"]
    pairing = pair_by_name(dataset_images(images), dataset_label_maps(labels, "labels"))
    assert sorted(pairing.pairs) == ["liver_1", "liver_2"] and not pairing.only_first and not pairing.only_second
    assert [case.name for case in load_dataset(mixed).cases] == ["a_0000", "b"]  # not nnU-Net's layout: literal


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(SegSSLError, match="holds no volumes"):
        load_dataset(tmp_path)
    with pytest.raises(SegSSLError, match="not found"):
        load_dataset(tmp_path / "absent")
    (tmp_path / "dataset.json").write_text("{broken")
    with pytest.raises(SegSSLError, match="not valid JSON"):
        load_dataset(tmp_path)
