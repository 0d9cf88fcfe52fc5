"""SAM box refinement with a small random-weight SAM: boxes, prompts, merging, geometry, CLI."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from segment_anything import SamPredictor

from conftest import assert_one_line_error, run_segssl
from sam_helpers import TINY_SAM, assert_same_geometry, save_tiny_sam, tiny_sam
from SegSSLLib.refinement.medsam import MedSamPredictor
from SegSSLLib.weights.models import SamArchitecture, build_sam, sam_architecture_of
from SegSSLLib.refinement.sam_refine import RefineSettings, component_prompts, mask_prompt, refine_labels, refine_slice


class RecordingPredictor(SamPredictor):
    """The real SamPredictor, remembering how often it embedded an image and which boxes it decoded."""

    def __init__(self, model):
        super().__init__(model)
        self.embeddings, self.boxes = 0, []

    def set_image(self, image, image_format="RGB"):
        self.embeddings += 1
        super().set_image(image, image_format)

    def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None, **kwargs):
        self.boxes.append(boxes.clone())
        return super().predict_torch(point_coords, point_labels, boxes=boxes, mask_input=mask_input, **kwargs)


def test_architecture_is_read_back_from_the_state_dict():
    assert sam_architecture_of(tiny_sam().state_dict()) == TINY_SAM
    vit_b = build_sam()  # the real ViT-B shapes (random weights)
    assert sam_architecture_of(vit_b.state_dict()) == SamArchitecture()


def test_boxes_are_xyxy_columns_then_rows_with_margin_and_clipping():
    labels = np.zeros((30, 50), np.uint8)  # 30 rows, 50 columns: not square, so x/y mix-ups show
    labels[5:10, 20:35] = 2  # rows 5..9, columns 20..34
    labels[25:30, 0:4] = 2  # a second component of the same label, touching the border
    labels[12:14, 40:42] = 7
    prompts = sorted(component_prompts(labels, margin=3), key=lambda p: (p.value, p.box))
    assert [(p.value, p.box) for p in prompts] == [
        (2, (0, 22, 6, 29)),  # clipped at column 0 and at the last row
        (2, (17, 2, 37, 12)),
        (7, (37, 9, 44, 16)),
    ]
    assert all(p.component.sum() == np.sum(labels == p.value) - other for p, other in
               zip(prompts, (75, 20, 0)))


def test_boxes_reach_sam_scaled_to_its_input_size():
    predictor = RecordingPredictor(tiny_sam())
    labels = np.zeros((30, 60), np.uint8)
    labels[6:12, 30:45] = 1
    rgb = np.random.default_rng(0).integers(0, 255, (30, 60, 3), dtype=np.uint8)
    refine_slice(predictor, rgb, labels, RefineSettings(margin=0))
    scale = TINY_SAM.image_size / 60  # longest side -> SAM's input size
    expected = torch.tensor([[30, 6, 44, 11]], dtype=torch.float32) * scale
    assert torch.allclose(predictor.boxes[0], expected)


def test_mask_prompt_sits_where_the_component_is():
    predictor = SamPredictor(tiny_sam())
    component = np.zeros((40, 80), bool)
    component[10:30, 50:70] = True
    rgb = np.zeros((40, 80, 3), np.uint8)
    predictor.set_image(rgb)
    low = mask_prompt(component, predictor)
    assert tuple(low.shape) == (1, *predictor.model.prompt_encoder.mask_input_size)
    # Back through SAM's own post-processing (upsample, crop the padding, resize): the same component.
    restored = predictor.model.postprocess_masks(low[None], predictor.input_size, predictor.original_size)[0, 0] > 0
    overlap = (restored.numpy() & component).sum() / component.sum()
    assert overlap > 0.9 and restored.numpy()[~component].mean() < 0.05


def test_refinement_keeps_geometry_labels_and_one_embedding_per_slice(tmp_path):
    from SegSSLLib.phantoms import make_ct_phantom, oblique_direction

    image, truth = make_ct_phantom(seed=1, size=(32, 28, 6), spacing=(6.0, 7.0, 11.0), direction=oblique_direction())
    coarse = sitk.GetArrayFromImage(truth)
    coarse[2] = 0  # a slice without labels must stay empty
    predictor = RecordingPredictor(tiny_sam())
    refined = refine_labels(predictor, image, coarse, RefineSettings(margin=2, mask_prompt=True))
    assert refined.shape == coarse.shape and refined.dtype == coarse.dtype
    busy = [k for k in range(coarse.shape[0]) if coarse[k].any()]
    assert predictor.embeddings == len(busy)
    assert not refined[2].any()
    assert set(np.unique(refined)) <= set(np.unique(coarse))
    for k in busy:  # every structure survives (SAM's mask, or the coarse one where SAM found nothing)
        assert set(np.unique(refined[k])) == set(np.unique(coarse[k]))


@pytest.fixture(scope="module")
def sam_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    save_tiny_sam(path)
    return path


def test_refine_cli_keeps_the_grid(tiny_phantom, sam_file, tmp_path):
    image_path, labels_path = tiny_phantom
    out = tmp_path / "refined.nii.gz"
    result = run_segssl("refine", "--input", image_path, "--mask", labels_path, "--output", out,
                        "--sam-checkpoint", sam_file, "--progress", "none", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    source, refined = sitk.ReadImage(str(labels_path)), sitk.ReadImage(str(out))
    assert_same_geometry(refined, sitk.ReadImage(str(image_path)))
    assert set(np.unique(sitk.GetArrayFromImage(refined))) == set(np.unique(sitk.GetArrayFromImage(source)))


def test_refine_cli_bad_inputs(tiny_phantom, sam_file, tmp_path):
    image_path, labels_path = tiny_phantom
    out = tmp_path / "refined.nii.gz"
    before = labels_path.read_bytes()
    sam2_file = tmp_path / "sam2.pt"
    torch.save({"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(1)}}, sam2_file)
    notes = tmp_path / "notes.pth"
    notes.write_text("download link: see the README\n")
    cases = [
        (["--sam-checkpoint", sam2_file], ["SAM 2 checkpoint", "not a SAM"]),
        (["--sam-checkpoint", tmp_path / "missing.pth"], ["no such file"]),
        (["--sam-checkpoint", notes], ["not a PyTorch checkpoint", "text file", "sam_vit_"]),
        (["--sam-checkpoint", sam_file, "--box-margin", "-1"], ["--box-margin"]),
        (["--sam-checkpoint", sam_file, "--device", "cuda"] if not torch.cuda.is_available() else
         ["--sam-checkpoint", sam_file, "--device", "cuda:99"], ["cuda"]),
    ]
    for extra, fragments in cases:
        result = run_segssl("refine", "--input", image_path, "--mask", labels_path, "--output", out, *extra)
        assert_one_line_error(result, *fragments)
        assert not out.exists()
    empty = tmp_path / "empty.nii.gz"
    blank = sitk.Image(sitk.ReadImage(str(labels_path)))
    sitk.WriteImage(blank * 0, str(empty))
    result = run_segssl("refine", "--input", image_path, "--mask", empty, "--output", out, "--sam-checkpoint", sam_file)
    assert_one_line_error(result, "empty")
    assert not out.exists() and labels_path.read_bytes() == before
    shifted = tmp_path / "shifted.nii.gz"
    moved = sitk.ReadImage(str(labels_path))
    moved.SetOrigin(tuple(o + 10 for o in moved.GetOrigin()))  # same size, another place: another grid
    sitk.WriteImage(moved, str(shifted))
    result = run_segssl("refine", "--input", image_path, "--mask", shifted, "--output", out, "--sam-checkpoint", sam_file)
    assert_one_line_error(result, "--mask", "different grid")
    assert not out.exists() and labels_path.read_bytes() == before


# A stand-in segmentation method for the --refine-sam wiring test: the phantom's labels, dilated (a coarse mask).
ACCEPTS_2D = False


def add_arguments(group):
    group.add_argument("--coarse-labels")


def segment(image, seeds, args, progress, device):
    from scipy import ndimage

    labels = sitk.GetArrayFromImage(sitk.ReadImage(args.coarse_labels))
    return ndimage.grey_dilation(labels, size=(1, 3, 3))


def test_segment_refine_sam_refines_the_methods_result(tiny_phantom, sam_file, tmp_path, monkeypatch):
    from SegSSLLib.cli import main, segment_command

    # A method of this test only: its "segmentation" is the phantom's labels, dilated.
    monkeypatch.setitem(segment_command.METHODS, "coarse", sys.modules[__name__])
    image_path, labels_path = tiny_phantom
    plain, refined = tmp_path / "plain.nii.gz", tmp_path / "refined.nii.gz"
    common = ["segment", "--input", str(image_path), "--method", "coarse", "--coarse-labels", str(labels_path),
              "--progress", "none", "--device", "cpu"]
    assert main([*common, "--output", str(plain)]) == 0
    assert main([*common, "--output", str(refined), "--refine-sam", "--sam-checkpoint", str(sam_file)]) == 0
    coarse = sitk.GetArrayFromImage(sitk.ReadImage(str(plain)))
    sharp = sitk.GetArrayFromImage(sitk.ReadImage(str(refined)))
    predictor = SamPredictor(tiny_sam())
    expected = refine_labels(predictor, sitk.ReadImage(str(image_path)), coarse, RefineSettings())
    assert np.array_equal(sharp, expected) and not np.array_equal(sharp, coarse)
    assert main([*common, "--output", str(tmp_path / "x.nii.gz"), "--refine-sam",
                 "--sam-checkpoint", str(tmp_path / "none.pth")]) == 1
    assert not (tmp_path / "x.nii.gz").exists()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))


class RecordingMedSam(MedSamPredictor):
    """MedSAM's predictor, remembering the boxes it decoded."""

    def __init__(self, model):
        super().__init__(model)
        self.boxes = []

    def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None, **kwargs):
        self.boxes.append(boxes.clone())
        return super().predict_torch(point_coords, point_labels, boxes=boxes, mask_input=mask_input, **kwargs)


def test_medsam_preprocessing_stretches_min_max_scales_and_scales_boxes_per_axis():
    sam = tiny_sam()
    size = sam.image_encoder.img_size
    seen = []
    sam.image_encoder.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].clone()))
    predictor = RecordingMedSam(sam)
    rgb = np.full((40, 90, 3), 100, np.uint8)  # not square: 40 rows, 90 columns
    rgb[:, :45] = 180  # left half brighter
    labels = np.zeros((40, 90), np.uint8)
    labels[10:20, 30:60] = 1
    refine_slice(predictor, rgb, labels, RefineSettings(margin=0))
    (encoder_input,) = seen
    assert tuple(encoder_input.shape) == (1, 3, size, size)
    assert float(encoder_input.min()) == 0.0 and float(encoder_input.max()) == 1.0  # min-max, no mean/std
    # Stretched over the whole square, no padding: the bright half is the left half of every row, the
    # bottom rows included (SAM would pad them).
    left, right = encoder_input[0, :, :, : size // 2 - 4], encoder_input[0, :, :, size // 2 + 4 :]
    assert left.min() > 0.9 and right.max() < 0.1
    assert encoder_input[0, :, -4:, : size // 2 - 4].min() > 0.9
    (boxes,) = predictor.boxes
    expected = torch.tensor([[30 * size / 90, 10 * size / 40, 59 * size / 90, 19 * size / 40]])
    assert torch.allclose(boxes.cpu(), expected)
    sam_input = []
    plain = tiny_sam()
    plain.image_encoder.register_forward_pre_hook(lambda module, inputs: sam_input.append(inputs[0].clone()))
    SamPredictor(plain).set_image(rgb)
    assert float(sam_input[0].min()) < 0  # SAM's own preparation: ImageNet mean/std and padding


def test_medsam_preprocessing_is_chosen_for_the_medsam_file(tmp_path):
    from SegSSLLib.refinement.medsam import sam_preprocessing

    assert sam_preprocessing("auto", tmp_path / "medsam_vit_b.pth") == "medsam"
    assert sam_preprocessing("auto", tmp_path / "sam_vit_b_01ec64.pth") == "sam"
    assert sam_preprocessing("auto", tmp_path / "my_model.pth") == "sam"
    assert sam_preprocessing("medsam", tmp_path / "my_model.pth") == "medsam"
    assert sam_preprocessing("sam", tmp_path / "medsam_vit_b.pth") == "sam"
