"""`segssl pretrain / finetune / segment --method polycl` as users run them, and their bad-input errors."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import assert_one_line_error, run_segssl
from polycl_helpers import TINY_CLI, phantom_msd, phantom_plain, random_segmentation_checkpoint, tree_digest
from SegSSLLib.checkpoints import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("polycl_cli")
    return phantom_plain(root / "plain"), phantom_msd(root / "msd", seeds=(1, 2, 3)), root / "cache"


def _assert_untouched(before: str, *paths):
    assert tree_digest(*paths) == before


@pytest.mark.slow
def test_pretrain_finetune_segment_end_to_end_keeps_the_input_geometry(data, tiny_phantom, tmp_path):
    plain, msd, cache = data
    image_path, labels_path = tiny_phantom
    before = tree_digest(plain, msd, image_path)
    pretrained, model, output = tmp_path / "pre.pt", tmp_path / "liver.pt", tmp_path / "seg.nii.gz"
    common = [*TINY_CLI, "--cache-dir", cache]
    result = run_segssl("pretrain", "--data", plain, msd, "--out", pretrained, "--epochs", "1", "--batch-size", "8", *common)
    assert result.returncode == 0, result.stderr
    result = run_segssl(
        "finetune", "--data", msd, "--label", "1", "--init", pretrained, "--out", model, "--epochs", "2",
        "--slices", "6", "--epoch-samples", "16", "--threads", "1", "--progress", "none", "--cache-dir", cache,
    )
    assert result.returncode == 0, result.stderr
    assert "6 training slices" in result.stderr
    result = run_segssl(
        "segment", "--method", "polycl", "--checkpoint", model, "--input", image_path, "--output", output,
        "--threads", "1", "--progress", "json",
    )
    assert result.returncode == 0, result.stderr
    assert '"event": "output"' in result.stdout

    source, segmented = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(output))
    # Exact size; the rest up to the file format's float rounding (NIfTI stores a quaternion).
    assert segmented.GetSize() == source.GetSize()
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(segmented, get)(), getattr(source, get)(), rtol=0, atol=1e-6)
    assert set(np.unique(sitk.GetArrayFromImage(segmented))) <= {0, 1}
    checkpoint = load_checkpoint(model, kinds=("polycl",))
    # The scratch check (on by default) kept one of its two candidates and says which.
    kept = checkpoint["provenance"]["scratch_check"]["kept"]
    started = checkpoint["provenance"]["initialisation"]["from"]
    assert started == (str(pretrained.resolve()) if kept == "pretrained" else "scratch")
    assert (tmp_path / "liver.candidates" / "pretrained.pt").exists() and (tmp_path / "liver.candidates" / "scratch.pt").exists()
    assert checkpoint["config"]["slicing"]["image_size"] == 32
    _assert_untouched(before, plain, msd, image_path)


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_empty_data_folder(command, tmp_path):
    (tmp_path / "empty").mkdir()
    extra = ["--label", "1"] if command == "finetune" else []
    result = run_segssl(command, "--data", tmp_path / "empty", "--out", tmp_path / "out.pt", *extra, *TINY_CLI)
    assert_one_line_error(result, "holds no volumes")
    assert not (tmp_path / "out.pt").exists()


def test_finetune_with_a_label_the_volumes_do_not_have(data, tmp_path):
    plain, msd, cache = data
    before = tree_digest(msd)
    result = run_segssl("finetune", "--data", msd, "--label", "9", "--out", tmp_path / "out.pt", "--cache-dir", cache, *TINY_CLI)
    assert_one_line_error(result, "label 9 does not occur", "1 liver", "--label")
    assert not (tmp_path / "out.pt").exists()
    _assert_untouched(before, msd)


def test_organ_strategy_on_unlabelled_volumes(data, tmp_path):
    plain, msd, cache = data
    result = run_segssl(
        "pretrain", "--data", plain, "--strategy", "O", "--label", "1", "--out", tmp_path / "out.pt",
        "--cache-dir", cache, *TINY_CLI,
    )
    assert_one_line_error(result, "needs label maps")
    assert not (tmp_path / "out.pt").exists()


def test_pretrain_spacing_that_is_not_a_number(data, tmp_path):
    plain, msd, cache = data
    result = run_segssl(
        "pretrain", "--data", plain, "--strategy", "P", "--spacing", "3mm", "--out", tmp_path / "out.pt",
        "--cache-dir", cache, *TINY_CLI,
    )
    assert_one_line_error(result, "--spacing '3mm' is not a number", "--spacing 3")
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("kind", ["s3net", "sam", "text"])
def test_segment_with_a_checkpoint_of_the_wrong_kind(kind, tiny_phantom, tmp_path):
    image_path, _ = tiny_phantom
    wrong = tmp_path / f"{kind}.pth"
    if kind == "text":  # torch.load alone fails with "KeyError: 101" on this
        wrong.write_text("epoch 3 loss 0.12\n")
        expected = "not a PyTorch checkpoint (it looks like a text file) — give the .pt file written by segssl"
    elif kind == "s3net":
        save_checkpoint(wrong, "s3net", {"clusters": 64}, {"stem.weight": torch.zeros(1)})
        expected = "'s3net' model"
    else:  # the layout of segment-anything's released weights
        torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1)}, wrong)
        expected = "SAM (segment-anything) checkpoint"
    before = tree_digest(image_path, wrong)
    output = tmp_path / "seg.nii.gz"
    result = run_segssl("segment", "--method", "polycl", "--checkpoint", wrong, "--input", image_path, "--output", output)
    assert_one_line_error(result, expected, "--checkpoint needs" if kind != "text" else "")
    assert not output.exists()
    _assert_untouched(before, image_path, wrong)


def test_finetune_init_of_the_wrong_kind(data, tmp_path):
    plain, msd, cache = data
    wrong = tmp_path / "sam.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1)}, wrong)
    result = run_segssl("finetune", "--data", msd, "--label", "1", "--init", wrong, "--out", tmp_path / "out.pt")
    assert_one_line_error(result, "SAM (segment-anything) checkpoint", "--init needs")
    assert not (tmp_path / "out.pt").exists()


def test_finetune_options_that_contradict_the_init(data, tmp_path):
    plain, msd, cache = data
    init = random_segmentation_checkpoint(tmp_path / "m.pt")
    result = run_segssl("finetune", "--data", msd, "--label", "1", "--init", init, "--out", tmp_path / "out.pt",
                        "--image-size", "64")
    assert_one_line_error(result, "--image-size", "differ from the --init model")
    assert not (tmp_path / "out.pt").exists()


def test_a_2d_image_given_to_the_3d_model(tmp_path):
    picture = tmp_path / "photo.png"
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkUInt8), str(picture))
    model = random_segmentation_checkpoint(tmp_path / "m.pt")
    before = tree_digest(picture)
    result = run_segssl("segment", "--method", "polycl", "--checkpoint", model, "--input", picture, "--output", tmp_path / "o.png")
    assert_one_line_error(result, "2D image", "--method polycl segments 3D volumes")
    assert not (tmp_path / "o.png").exists()
    _assert_untouched(before, picture)


def test_segment_without_a_checkpoint(tiny_phantom, tmp_path):
    result = run_segssl("segment", "--method", "polycl", "--input", tiny_phantom[0], "--output", tmp_path / "o.nii.gz")
    assert_one_line_error(result, "--method polycl needs --checkpoint")
    assert not (tmp_path / "o.nii.gz").exists()


def test_an_oblique_volume_stored_flipped_keeps_its_exact_geometry_and_anatomy(tiny_phantom, tmp_path):
    model = random_segmentation_checkpoint(tmp_path / "m.pt")
    image = sitk.ReadImage(str(tiny_phantom[0]))
    flipped = sitk.Flip(image, [True, False, True])  # same physical image, I and K stored the other way round
    outputs = {}
    for name, volume in (("stored", image), ("flipped", flipped)):
        sitk.WriteImage(volume, str(tmp_path / f"{name}.mha"))  # MHA keeps the direction exactly
        result = run_segssl(
            "segment", "--method", "polycl", "--checkpoint", model, "--input", tmp_path / f"{name}.mha",
            "--output", tmp_path / f"{name}_seg.mha", "--polycl-all-components", "--threads", "1", "--progress", "none",
        )
        assert result.returncode == 0, result.stderr
        outputs[name] = sitk.ReadImage(str(tmp_path / f"{name}_seg.mha"))
        for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
            assert getattr(outputs[name], get)() == getattr(volume, get)(), get
    stored = sitk.GetArrayFromImage(outputs["stored"])
    assert 0 < stored.mean() < 1  # the random model marks some voxels, not all
    np.testing.assert_array_equal(sitk.GetArrayFromImage(outputs["flipped"]), stored[::-1, :, ::-1])


def test_a_multi_component_volume_is_refused(tmp_path):
    rgb = sitk.Compose([sitk.Image(8, 8, 4, sitk.sitkUInt8)] * 3)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    model = random_segmentation_checkpoint(tmp_path / "m.pt")
    before = tree_digest(tmp_path / "rgb.mha")
    result = run_segssl("segment", "--method", "polycl", "--checkpoint", model, "--input", tmp_path / "rgb.mha",
                        "--output", tmp_path / "o.mha")
    assert_one_line_error(result, "3 components per voxel", "single-channel")
    assert result.returncode == 1
    assert not (tmp_path / "o.mha").exists()
    _assert_untouched(before, tmp_path / "rgb.mha")


def test_finetune_resume_continues_and_refuses_fewer_epochs(data, tmp_path):
    plain, msd, cache = data
    model = tmp_path / "liver.pt"
    common = ["finetune", "--data", msd, "--label", "1", "--out", model, "--slices", "3", "--epoch-samples", "8",
              "--cache-dir", cache, *TINY_CLI]
    assert run_segssl(*common, "--epochs", "1").returncode == 0
    result = run_segssl(*common, "--epochs", "2", "--resume")
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr and "after epoch 1 of 2" in result.stderr
    assert [h["epoch"] for h in load_checkpoint(model)["extra"]["history"]] == [1, 2]
    before = tree_digest(model)
    result = run_segssl(*common, "--epochs", "1", "--resume")
    assert_one_line_error(result, "already holds 2 epochs", "--epochs 2 or more")
    _assert_untouched(before, model)
