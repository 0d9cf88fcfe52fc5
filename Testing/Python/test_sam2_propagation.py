"""SAM 2 propagation with a random-weight hiera-t at a small input size: frames, state, directions, geometry, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from conftest import assert_one_line_error, run_segssl
from sam_helpers import SAM2_TEST_SIZE, assert_same_geometry, one_slice_annotation, random_sam2, save_tiny_sam, write_like
from SegSSLLib.phantoms import make_ct_phantom, oblique_direction
from SegSSLLib.sam.annotation import find_annotation
from SegSSLLib.sam.frames import frame_stack, sam2_frames
from SegSSLLib.sam.sam2_propagation import in_memory_state, propagate_with_sam2


@pytest.fixture(scope="module")
def predictor():
    return random_sam2()


@pytest.fixture(scope="module")
def phantom():
    # Anisotropic and oblique; few slices so that random-weight SAM 2 stays quick.
    return make_ct_phantom(seed=2, size=(32, 14, 9), spacing=(6.0, 15.0, 12.0), direction=oblique_direction())


def test_frames_equal_sam2s_own_loading_of_lossless_slices(phantom, tmp_path):
    from sam2.utils.misc import load_video_frames

    image, _ = phantom
    _, frames = frame_stack(image, 2, SAM2_TEST_SIZE)
    for index, frame in enumerate(frames):
        # PNG content under the .jpg names sam2's folder loader looks for: PIL reads it losslessly.
        Image.fromarray(np.repeat(frame[..., None], 3, axis=-1)).save(tmp_path / f"{index:05d}.jpg", format="PNG")
    theirs, height, width = load_video_frames(
        str(tmp_path), SAM2_TEST_SIZE, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    assert (height, width) == (SAM2_TEST_SIZE, SAM2_TEST_SIZE)
    assert torch.equal(sam2_frames(frames), theirs)


def test_in_memory_state_has_the_layout_of_init_state(predictor, phantom, tmp_path):
    image, _ = phantom
    _, frames = frame_stack(image, 2, SAM2_TEST_SIZE)
    for index in range(2):
        Image.fromarray(np.repeat(frames[index][..., None], 3, axis=-1)).save(tmp_path / f"{index:05d}.jpg")
    theirs = predictor.init_state(str(tmp_path))
    ours = in_memory_state(predictor, sam2_frames(frames[:2]))
    assert set(ours) == set(theirs)
    for key in ("num_frames", "video_height", "video_width", "offload_video_to_cpu", "offload_state_to_cpu"):
        assert ours[key] == theirs[key], key
    assert ours["images"].shape == theirs["images"].shape


def test_propagation_reaches_both_ends_and_keeps_the_drawn_slice(predictor, phantom):
    image, truth = phantom
    k = 4
    drawn = one_slice_annotation(truth, k, values=(1, 3))
    result = propagate_with_sam2(predictor, image, drawn, find_annotation(drawn))
    slices = image.GetSize()[2]
    assert result.forward_frames == list(range(k, slices))
    assert result.reverse_frames == list(range(k, -1, -1))
    assert np.array_equal(result.labels[k], drawn[k])
    assert result.labels.shape == drawn.shape
    assert set(np.unique(result.labels)) <= {0, 1, 3}


def test_axis_comes_from_the_annotation(predictor, phantom):
    image, truth = phantom
    labels = sitk.GetArrayFromImage(truth)
    drawn = np.zeros_like(labels)
    j = labels.shape[1] // 2  # a coronal slice (ITK axis 1 = J)
    drawn[:, j, :] = np.where(labels[:, j, :] == 1, 1, 0)
    annotation = find_annotation(drawn)
    assert annotation.axis == 1 and annotation.slices == (j,)
    result = propagate_with_sam2(predictor, image, drawn, annotation)
    assert sorted(set(result.forward_frames) | set(result.reverse_frames)) == list(range(labels.shape[1]))
    assert np.array_equal(result.labels[:, j, :], drawn[:, j, :])


def test_several_annotated_slices_are_all_kept(predictor, phantom):
    image, truth = phantom
    labels = sitk.GetArrayFromImage(truth)
    present = np.flatnonzero((labels == 1).any(axis=(1, 2)))
    first, last = present[1], present[-2]
    drawn = np.zeros_like(labels)
    drawn[first] = np.where(labels[first] == 1, 1, 0)
    drawn[last] = np.where(labels[last] == 1, 1, 0)
    assert drawn[first].any() and drawn[last].any()
    result = propagate_with_sam2(predictor, image, drawn, find_annotation(drawn))
    assert np.array_equal(result.labels[first], drawn[first]) and np.array_equal(result.labels[last], drawn[last])
    assert result.reverse_frames == list(range(first, -1, -1))


@pytest.fixture(scope="module")
def sam2_file(tmp_path_factory, predictor):
    path = tmp_path_factory.mktemp("sam2") / "random_sam2.1_hiera_t.pt"
    torch.save({"model": predictor.state_dict()}, path)
    return path


@pytest.fixture
def small_case(phantom, tmp_path):
    """(volume, one-slice annotation, drawn array) files of the small oblique phantom."""
    image, truth = phantom
    drawn = one_slice_annotation(truth, 4, values=(1, 2))
    image_path, annotation_path = tmp_path / "ct.nii.gz", tmp_path / "drawn.nii.gz"
    sitk.WriteImage(image, str(image_path))
    write_like(drawn, image, annotation_path)
    return image_path, annotation_path, drawn


def test_propagate_cli_sam2_keeps_geometry(small_case, sam2_file, tmp_path):
    image_path, annotation_path, drawn = small_case
    out = tmp_path / "out.nii.gz"
    result = run_segssl("propagate", "--backend", "sam2", "--input", image_path, "--annotation", annotation_path,
                        "--output", out, "--sam2-checkpoint", sam2_file, "--sam2-config", "sam2.1_hiera_t",
                        "--image-size", SAM2_TEST_SIZE, "--device", "cpu", "--progress", "json")
    assert result.returncode == 0, result.stderr
    image = sitk.ReadImage(str(image_path))
    events = [line for line in result.stdout.splitlines() if '"progress"' in line and "SAM 2" in line]
    assert len(events) == image.GetSize()[2] + 1  # every slice, the annotated one in both directions
    output = sitk.ReadImage(str(out))
    assert_same_geometry(output, image)
    assert np.array_equal(sitk.GetArrayFromImage(output)[4], drawn[4])


def test_propagate_cli_bad_inputs(tiny_phantom, sam2_file, tmp_path):
    image_path, labels_path = tiny_phantom
    image = sitk.ReadImage(str(image_path))
    drawn = one_slice_annotation(sitk.ReadImage(str(labels_path)), 10)
    good, empty, shifted = tmp_path / "good.nii.gz", tmp_path / "empty.nii.gz", tmp_path / "shifted.nii.gz"
    write_like(drawn, image, good)
    write_like(np.zeros_like(drawn), image, empty)
    other = sitk.GetImageFromArray(drawn)
    other.CopyInformation(image)
    other.SetOrigin(tuple(o + 10 for o in image.GetOrigin()))
    sitk.WriteImage(other, str(shifted))
    sam_file = tmp_path / "sam.pth"
    save_tiny_sam(sam_file)
    out = tmp_path / "out.nii.gz"
    base = ["propagate", "--input", image_path, "--output", out, "--image-size", SAM2_TEST_SIZE]
    cases = [
        (["--annotation", empty, "--backend", "registration"], ["annotation is empty"]),
        (["--annotation", shifted, "--backend", "registration"], ["different grid"]),
        (["--annotation", good, "--backend", "sam2", "--sam2-checkpoint", sam_file], ["SAM (segment-anything)", "not a SAM 2"]),
        (["--annotation", good, "--backend", "sam2", "--sam2-checkpoint", tmp_path / "gone.pt"], ["no such file"]),
        (["--annotation", good, "--backend", "sam2", "--sam2-checkpoint", good],
         ["not a PyTorch checkpoint", "gzip", "sam2.1_hiera_"]),
        (["--annotation", good, "--backend", "sam2", "--sam2-checkpoint", sam2_file, "--sam2-config", "sam3_hiera_t"],
         ["not a config", "sam2.1_hiera_t"]),
        (["--annotation", good, "--backend", "sam2", "--sam2-checkpoint", sam2_file, "--sam2-config", "sam2.1_hiera_s"],
         ["does not match"]),
        (["--annotation", good, "--backend", "sam2", "--sam2-checkpoint", sam2_file, "--device",
          "cuda" if not torch.cuda.is_available() else "cuda:99"], ["cuda"]),
    ]
    before = (good.read_bytes(), image_path.read_bytes())
    for extra, fragments in cases:
        result = run_segssl(*base, *extra)
        assert_one_line_error(result, *fragments)
        assert not out.exists()
    assert (good.read_bytes(), image_path.read_bytes()) == before


@pytest.mark.slow
def test_demo_step_uses_a_configured_sam2_checkpoint(sam2_file, tmp_path, monkeypatch):
    from SegSSLLib.demo import run_demo
    from SegSSLLib.progress import NO_PROGRESS

    monkeypatch.setenv("SEGSSL_SAM2_CHECKPOINT", str(sam2_file))
    steps = ["SegSSLLib.demo:phantom_step", "SegSSLLib.sam.demo_step:propagation_step"]
    report = run_demo(tmp_path / "demo", NO_PROGRESS, device="cpu", quick=True, steps=steps)
    assert f"SAM 2 ({sam2_file.name})" in report.read_text()
    drawn = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "demo" / "propagation_annotation.nii.gz")))
    result = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "demo" / "propagation.nii.gz")))
    k = find_annotation(drawn).slices[0]
    assert np.array_equal(result[k], drawn[k])
