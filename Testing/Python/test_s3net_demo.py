"""The S3-Net step of ``segssl demo`` (quick mode): a seeded phantom organ and a no-seed lesion, scored."""

import json

import numpy as np
import SimpleITK as sitk

from PIL import Image

from SegSSLLib.demo import run_demo
from SegSSLLib.demo_context import DemoContext
from SegSSLLib.phantoms import make_ct_phantom
from SegSSLLib.progress import Progress
from SegSSLLib.s3net.demo_step import LIVER_CENTRE, phantom_voxel


def test_liver_seed_from_the_anatomy_lies_in_the_liver_of_several_phantoms():
    for seed, size in ((0, (96, 96, 48)), (1, (64, 64, 32)), (4, (80, 70, 40))):
        image, labels = make_ct_phantom(seed=seed, size=size)
        i, j, k = phantom_voxel(LIVER_CENTRE, image.GetSize())
        assert sitk.GetArrayViewFromImage(labels)[k, j, i] == 1


def test_evaluate_and_picture_draws_a_2d_rgb_photograph(tmp_path):
    # Foundation fix: an RGB photograph's array is 3D, but it is a 2D image, not a volume.
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[5:15, 8:22] = (200, 120, 90)
    photo = sitk.GetImageFromArray(rgb, isVector=True)
    truth_array = np.zeros((20, 30), np.uint8)
    truth_array[5:15, 8:22] = 1
    truth, prediction = sitk.GetImageFromArray(truth_array), sitk.GetImageFromArray(np.roll(truth_array, 4, axis=1))
    context = DemoContext(out=tmp_path, progress=Progress("none"))
    metrics, _, picture = context.evaluate_and_picture("lesion", prediction, truth, [1], photo, "lesion")
    assert metrics["labels"]["1"]["dice"] < 1.0
    drawn = np.asarray(Image.open(tmp_path / picture))
    assert drawn.shape == (40, 60, 3)
    assert (drawn == (60, 220, 60)).all(axis=-1).any() and (drawn == (240, 60, 200)).all(axis=-1).any()


def test_demo_step_scores_both_structures_and_writes_pictures(tmp_path):
    from SegSSLLib.demo import phantom_step
    from SegSSLLib.s3net.demo_step import liver_step, lesion_step
    steps = [phantom_step, liver_step, lesion_step]
    report = run_demo(tmp_path, Progress("none"), device="cpu", quick=True, steps=steps)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    liver = metrics["S3-Net: liver from one seed click (no labels)"]["labels"]["1"]
    lesion = metrics["S3-Net: skin lesion with no click"]["labels"]["6"]
    assert 0.2 < liver["dice"] <= 1.0 and 0.5 < lesion["dice"] <= 1.0  # even in quick mode both are found
    # The click route beside region growing from the same click, with the benchmark's where-and-where-not.
    click = metrics["S3-Net from a click: liver against region growing"]["labels"]["1"]
    assert 0.5 < click["dice"] <= 1.0 and "region growing alone from that click: dice 0." in report.read_text().lower()
    assert "does not work on the right kidney, stomach and pancreas" in report.read_text()
    for name in ("s3net_liver.png", "s3net_lesion.png", "s3net_liver.nii.gz", "s3net_clusters.nii.gz"):
        assert (tmp_path / name).exists()
    text = report.read_text()
    assert "![S3-Net: skin lesion with no click](s3net_lesion.png)" in text
    prediction = sitk.ReadImage(str(tmp_path / "s3net_liver.nii.gz"))
    ct = sitk.ReadImage(str(tmp_path / "phantom_ct.nii.gz"))
    assert prediction.GetSize() == ct.GetSize() and np.allclose(prediction.GetSpacing(), ct.GetSpacing())
