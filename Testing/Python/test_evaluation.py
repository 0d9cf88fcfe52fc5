"""Dice and HD95 against values computed by hand, through the library and the real command."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from SegSSLLib.evaluation import dice_and_hd95, evaluate_label_maps
from SegSSLLib.phantoms import oblique_direction
from conftest import REPO_ROOT, assert_one_line_error, run_segssl

SPACING = (1.0, 2.0, 3.0)  # (i, j, k) mm


def image_from(array, spacing=SPACING, direction=None):
    image = sitk.GetImageFromArray(np.asarray(array, np.uint8))
    image.SetSpacing(spacing)
    if direction:
        image.SetDirection(direction)
    return image


def test_dice_of_nested_boxes():
    truth = np.zeros((6, 6, 6), bool)
    pred = np.zeros((6, 6, 6), bool)
    truth[1:5, 1:3, 1:3] = True  # 16 voxels
    pred[1:3, 1:3, 1:3] = True  # 8 voxels, all inside truth
    dice, _ = dice_and_hd95(pred, truth, (3.0, 2.0, 1.0))
    assert dice == pytest.approx(2 * 8 / (16 + 8))


@pytest.mark.parametrize(
    "offset_kji, expected_mm",
    [((2, 0, 0), 6.0), ((0, 2, 0), 4.0), ((0, 0, 2), 2.0), ((1, 1, 0), np.hypot(3.0, 2.0))],
)
def test_hd95_of_single_voxels_uses_anisotropic_spacing(offset_kji, expected_mm):
    truth = np.zeros((5, 5, 5), bool)
    pred = np.zeros((5, 5, 5), bool)
    truth[1, 1, 1] = True
    pred[1 + offset_kji[0], 1 + offset_kji[1], 1 + offset_kji[2]] = True
    dice, hd95 = dice_and_hd95(pred, truth, (3.0, 2.0, 1.0))  # (k, j, i) spacing
    assert dice == 0.0
    assert hd95 == pytest.approx(expected_mm)


def test_empty_structures_follow_the_documented_convention():
    empty = np.zeros((3, 3, 3), bool)
    full = np.ones((3, 3, 3), bool)
    assert dice_and_hd95(empty, empty, (1, 1, 1)) == (1.0, 0.0)
    assert dice_and_hd95(empty, full, (1, 1, 1)) == (0.0, None)


def test_evaluate_label_maps_scores_each_label_and_the_mean():
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[0:2] = 1
    truth[2:4] = 2
    pred = truth.copy()
    pred[3] = 0  # label 2 loses half its voxels
    metrics = evaluate_label_maps(image_from(pred), image_from(truth))
    assert metrics["labels"]["1"] == {"dice": 1.0, "hd95_mm": 0.0}
    assert metrics["labels"]["2"]["dice"] == pytest.approx(2 * 16 / (32 + 16))
    assert metrics["mean_dice"] == pytest.approx((1.0 + 2 * 16 / 48) / 2)


def test_labels_found_in_only_one_map_score_zero():
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[0:2] = 1
    truth[3, 3, 3] = 3  # missed by the prediction
    pred = np.zeros_like(truth)
    pred[0:2] = 1
    pred[3, 0, 0] = 2  # spurious: no label 2 in the reference
    metrics = evaluate_label_maps(image_from(pred), image_from(truth))
    assert metrics["labels"] == {
        "1": {"dice": 1.0, "hd95_mm": 0.0},
        "2": {"dice": 0.0, "hd95_mm": None},
        "3": {"dice": 0.0, "hd95_mm": None},
    }
    assert metrics["mean_dice"] == pytest.approx(1 / 3)


def test_a_spurious_label_lowers_the_mean_of_the_command(tmp_path):
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[0:2] = 1
    pred = truth.copy()
    pred[3, 0, 0] = 2
    sitk.WriteImage(image_from(truth), str(tmp_path / "truth.nrrd"))
    sitk.WriteImage(image_from(pred), str(tmp_path / "pred.nrrd"))
    result = run_segssl(
        "evaluate", "--pred", tmp_path / "pred.nrrd", "--truth", tmp_path / "truth.nrrd", "--json", tmp_path / "m.json"
    )
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["labels"]["2"] == {"dice": 0.0, "hd95_mm": None}
    assert written["mean_dice"] == pytest.approx(0.5)
    assert "null" in (tmp_path / "m.json").read_text()


@pytest.mark.parametrize("value", ["0", "-1", "liver"])
def test_label_must_be_a_positive_whole_number(tmp_path, value):
    image = image_from(np.ones((3, 3, 3)))
    sitk.WriteImage(image, str(tmp_path / "truth.nrrd"))
    result = run_segssl(
        "evaluate", "--pred", tmp_path / "truth.nrrd", "--truth", tmp_path / "truth.nrrd", "--label", value
    )
    assert_one_line_error(result, "--label", ">= 1")
    assert result.stdout == ""


def test_evaluate_command_prints_and_writes_json(tmp_path):
    truth = np.zeros((5, 6, 7), np.uint8)
    truth[1:4, 2:5, 2:6] = 3
    pred = np.zeros_like(truth)
    pred[1:4, 2:5, 3:6] = 3
    direction = oblique_direction()
    sitk.WriteImage(image_from(truth, direction=direction), str(tmp_path / "truth.nii.gz"))
    sitk.WriteImage(image_from(pred, direction=direction), str(tmp_path / "pred.nrrd"))
    result = run_segssl(
        "evaluate", "--pred", tmp_path / "pred.nrrd", "--truth", tmp_path / "truth.nii.gz", "--json", tmp_path / "m.json"
    )
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "m.json").read_text())
    expected_dice = 2 * 27 / (36 + 27)
    assert set(written) == {"labels", "mean_dice"} and set(written["labels"]) == {"3"}
    assert written["labels"]["3"]["dice"] == pytest.approx(expected_dice)
    assert written["mean_dice"] == pytest.approx(expected_dice)
    # The prediction misses truth's 3×3 face at i = 2: those 9 of truth's 34 surface voxels lie 1 mm
    # (one i step) from the prediction and every other surface voxel of either map lies 0 or 1 mm away,
    # so the 95th percentile is exactly 1 mm.
    assert written["labels"]["3"]["hd95_mm"] == pytest.approx(1.0)
    assert f"{expected_dice:.4f}" in result.stdout


def test_evaluate_command_refuses_label_maps_on_different_grids(tmp_path):
    truth = image_from(np.ones((4, 4, 4)))
    pred = image_from(np.ones((4, 4, 4)), spacing=(1.0, 2.0, 3.5))
    sitk.WriteImage(truth, str(tmp_path / "truth.nii.gz"))
    sitk.WriteImage(pred, str(tmp_path / "pred.nii.gz"))
    result = run_segssl(
        "evaluate", "--pred", tmp_path / "pred.nii.gz", "--truth", tmp_path / "truth.nii.gz", "--json", tmp_path / "m.json"
    )
    assert_one_line_error(result, "different grid", "resample")
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path, unbuffered):
    # ``segssl evaluate ... | head -3``: here the reading end is closed before anything is written.
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[0:2] = 1
    sitk.WriteImage(image_from(truth), str(tmp_path / "truth.nrrd"))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED=unbuffered)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "SegSSLLib", "evaluate", "--pred", str(tmp_path / "truth.nrrd"),
             "--truth", str(tmp_path / "truth.nrrd"), "--json", str(tmp_path / "m.json")],
            stdout=write_end, stderr=subprocess.PIPE, text=True, env=env, timeout=600,
        )
    finally:
        os.close(write_end)
    assert result.stderr == "" and result.returncode == 141
    assert json.loads((tmp_path / "m.json").read_text())["mean_dice"] == 1.0
