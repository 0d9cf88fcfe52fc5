"""SAM 2 propagation with a random-weight hiera-t at a small input size: frames, state, directions, geometry, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image

from conftest import assert_one_line_error, run_segssl
from sam_helpers import (
    SAM2_TEST_SIZE, CopyingPredictor, assert_same_geometry, one_slice_annotation, random_sam2, save_tiny_sam, write_like,
)
from SegSSLLib.intensity import to_uint8
from SegSSLLib.phantoms import make_ct_phantom, oblique_direction
from SegSSLLib.propagation.annotation import find_annotation
from SegSSLLib.frames import Sam2Frames, frame_stack, windowed_array
from SegSSLLib.propagation.sam2 import _mask_prompt, in_memory_state, propagate_with_sam2
from SegSSLLib.slicing import SliceStack


@pytest.fixture(scope="module")
def predictor():
    return random_sam2()


@pytest.fixture(scope="module")
def phantom():
    # Anisotropic and oblique; few slices so that random-weight SAM 2 stays quick.
    return make_ct_phantom(seed=2, size=(32, 14, 9), spacing=(6.0, 15.0, 12.0), direction=oblique_direction())


def _save_lossless(frames, folder) -> None:
    """8-bit grey frames as RGB PNG content under the .jpg names sam2's folder loader looks for."""
    for index, frame in enumerate(frames):
        Image.fromarray(np.repeat(frame[..., None], 3, axis=-1)).save(folder / f"{index:05d}.jpg", format="PNG")


def test_frames_equal_sam2s_own_loading_of_native_slices(tmp_path):
    from sam2.utils.misc import load_video_frames

    # Native slices of 40 x 23 pixels, not square, but with a square physical extent (40 mm x 40.25 mm
    # rounds to the full square): the path on which sam2's stretch-to-square and our fit-in-proportion agree.
    image, _ = make_ct_phantom(seed=3, size=(23, 40, 3), spacing=(1.75, 1.0, 5.0))
    stack, frames = frame_stack(image, 2, SAM2_TEST_SIZE)
    assert stack.padding == (0, 0) and stack.fitted_shape == (SAM2_TEST_SIZE, SAM2_TEST_SIZE)
    native = to_uint8(windowed_array(image))  # what a user would export: 8-bit slices at their own size
    _save_lossless(native, tmp_path)
    theirs, height, width = load_video_frames(
        str(tmp_path), SAM2_TEST_SIZE, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    assert (height, width) == (40, 23)
    ours = Sam2Frames(frames)
    assert len(ours) == len(theirs) == 3
    for index in range(3):
        assert torch.equal(ours[index], theirs[index]), index


def test_frames_keep_physical_proportions_on_black(phantom):
    image, _ = phantom  # 32 x 14 pixels of 6 x 15 mm: 192 mm wide, 210 mm high
    stack, frames = frame_stack(image, 2, SAM2_TEST_SIZE)
    (top, left), (rows, cols) = stack.padding, stack.fitted_shape
    assert rows == SAM2_TEST_SIZE and cols == round(SAM2_TEST_SIZE * 192 / 210)
    assert not frames[:, :, :left].any() and not frames[:, :, left + cols :].any()
    assert frames[:, :, left : left + cols].mean() > 10


def _whole_volume_frames(image, axis, size, window=None):
    """The frames as prepared before they were prepared in chunks: the whole volume windowed at once."""
    from SegSSLLib.frames import resize_like_sam2, slice_of

    pixels = to_uint8(windowed_array(image, window))
    stack = SliceStack(pixels.shape, image.GetSpacing(), axis=axis, size=SAM2_TEST_SIZE if size is None else size)
    (top, left), (rows, cols) = stack.padding, stack.fitted_shape
    frames = np.zeros((stack.num_slices, stack.size, stack.size), np.uint8)
    for k in range(stack.num_slices):
        frames[k, top : top + rows, left : left + cols] = resize_like_sam2(slice_of(pixels, axis, k), (rows, cols))
    return frames


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_frames_prepared_a_few_slices_at_a_time_are_the_bytes_of_the_whole_volume_path(axis):
    from SegSSLLib.intensity import IntensityWindow

    # Anisotropic, oblique, odd sizes (so chunks end in a partial one); CT in HU, and an MR-like float64
    # volume whose window is per-volume percentiles.
    ct, _ = make_ct_phantom(seed=4, size=(37, 23, 11), spacing=(0.7, 1.3, 2.9), direction=oblique_direction())
    mr = sitk.Cast(sitk.ShiftScale(ct, 1100.0, 0.37), sitk.sitkFloat64)
    for image, window in ((ct, None), (mr, None), (ct, IntensityWindow(mode="percentile", lower=2, upper=97))):
        expected = _whole_volume_frames(image, axis, SAM2_TEST_SIZE, window)
        per_slice = sitk.GetArrayViewFromImage(image).size // image.GetSize()[axis]
        for chunk_voxels in (1, 2 * per_slice + 5, 10**9):  # one slice, two and a bit, everything
            _, frames = frame_stack(image, axis, SAM2_TEST_SIZE, window, chunk_voxels=chunk_voxels)
            assert frames.tobytes() == expected.tobytes(), (window, chunk_voxels)


def test_in_memory_state_has_the_layout_of_init_state(predictor, phantom, tmp_path):
    image, _ = phantom
    _, frames = frame_stack(image, 2, SAM2_TEST_SIZE)
    _save_lossless(frames[:2], tmp_path)
    for offload_state in (False, True):
        theirs = predictor.init_state(str(tmp_path), offload_video_to_cpu=True, offload_state_to_cpu=offload_state)
        ours = in_memory_state(predictor, Sam2Frames(frames[:2]), offload_state_to_cpu=offload_state)
        assert set(ours) == set(theirs)
        for key in ("num_frames", "video_height", "video_width", "offload_video_to_cpu", "offload_state_to_cpu",
                    "storage_device"):
            assert ours[key] == theirs[key], key
        assert all(torch.equal(ours["images"][i], theirs["images"][i]) for i in range(2))


def test_offloading_the_state_gives_the_same_labels(predictor, phantom):
    image, truth = (volume[:, :, 4:6] for volume in phantom)  # two slices keep it quick
    drawn = one_slice_annotation(truth, 0, values=(1,))
    assert drawn[0].any()
    annotation = find_annotation(drawn)
    kept = propagate_with_sam2(predictor, image, drawn, annotation).labels
    offloaded = propagate_with_sam2(predictor, image, drawn, annotation, offload_state=True).labels
    assert np.array_equal(kept, offloaded)


def _volume_with_boxes(values_on_slices: dict, shape=(8, 16, 16), spacing=(1.0, 1.0, 2.0)):
    """A (k, j, i) volume, anisotropic; ``values_on_slices``: value -> (array axis, index, box in the slice)."""
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(40, 30, shape).astype(np.int16))
    image.SetSpacing(spacing)
    drawn = np.zeros(shape, np.uint8)
    for value, (axis, index, (r0, r1, c0, c1)) in values_on_slices.items():
        np.moveaxis(drawn, axis, 0)[index, r0:r1, c0:c1] = value
    return image, drawn


@pytest.mark.parametrize("itk_axis", [0, 1, 2])
def test_prompts_travel_to_every_slice_on_the_exact_grid(itk_axis):
    position = 2 - itk_axis
    image, drawn = _volume_with_boxes({1: (position, 3, (1, 4, 2, 9)), 3: (position, 3, (5, 7, 10, 15))})
    predictor = CopyingPredictor(image_size=64)
    result = propagate_with_sam2(predictor, image, drawn, find_annotation(drawn))
    assert result.prompts == predictor.prompts == [(3, 1), (3, 3)]
    out, source = np.moveaxis(result.labels, position, 0), np.moveaxis(drawn, position, 0)[3]
    for k in range(out.shape[0]):
        for value in (1, 3):
            got, want = out[k] == value, source == value
            dice = 2 * (got & want).sum() / (got.sum() + want.sum())
            assert dice == 1.0, (itk_axis, k, value, dice)


def test_an_object_drawn_elsewhere_survives_on_another_objects_slice():
    # Liver-like object 1 painted on slice 2, spleen-like object 2 on slice 6, side by side in the plane.
    image, drawn = _volume_with_boxes({1: (0, 2, (2, 10, 1, 7)), 2: (0, 6, (3, 12, 9, 15))})
    predictor = CopyingPredictor(image_size=64)
    result = propagate_with_sam2(predictor, image, drawn, find_annotation(drawn))
    assert sorted(result.prompts) == [(2, 1), (6, 2)]
    for k, (own, other) in ((2, (1, 2)), (6, (2, 1))):
        assert np.array_equal(result.labels[k] == own, drawn[k] == own)
        painted_elsewhere = drawn[6 if k == 2 else 2] == other
        assert np.array_equal(result.labels[k] == other, painted_elsewhere), (k, other)


def test_a_mask_smaller_than_a_frame_pixel_still_prompts():
    stack = SliceStack((2, 512, 512), (1.0, 1.0, 1.0), axis=2, size=64)
    mask = np.zeros((512, 512), bool)
    mask[200:203, 300:303] = True  # 3 x 3 pixels: 9/64 of one frame pixel
    prompt = _mask_prompt(mask, stack)
    assert prompt.sum() == 1 and prompt[201 // 8, 301 // 8]
    mask[96:176, 40:120] = True  # plus 80 x 80 pixels on 10 x 10 frame pixels: the object is prompted there,
    assert _mask_prompt(mask, stack).sum() == 100  # and the speck alone is not forced in
    assert not _mask_prompt(np.zeros_like(mask), stack).any()


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
                        "--image-size", SAM2_TEST_SIZE, "--device", "cpu", "--progress", "json", "--offload-state")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bars of sam2's own: our events on stdout count the frames
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
    from SegSSLLib.demo import phantom_step
    from SegSSLLib.propagation.demo_step import propagation_step
    steps = [phantom_step, propagation_step]
    report = run_demo(tmp_path / "demo", NO_PROGRESS, device="cpu", quick=True, steps=steps)
    assert f"SAM 2 ({sam2_file.name})" in report.read_text()
    drawn = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "demo" / "propagation_annotation.nii.gz")))
    result = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "demo" / "propagation.nii.gz")))
    k = find_annotation(drawn).slices[0]
    assert np.array_equal(result[k], drawn[k])
