"""Small random-weight SAM / SAM 2 models and annotations for the SAM tests."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from SegSSLLib.weights.models import TINY_SAM, build_sam

SAM2_TEST_SIZE = 64  # SAM 2 input size in tests: hiera-t runs ~10 frames/s on a CPU at this size


def tiny_sam():
    torch.manual_seed(0)
    return build_sam(TINY_SAM)


def save_tiny_sam(path) -> None:
    torch.save(tiny_sam().state_dict(), path)


def random_sam2(image_size: int = SAM2_TEST_SIZE):
    from SegSSLLib.weights.models import load_sam2_video_predictor

    torch.manual_seed(0)
    return load_sam2_video_predictor(None, "sam2.1_hiera_t", "cpu", image_size)


def one_slice_annotation(labels: sitk.Image, k: int, values=(1, 2)) -> np.ndarray:
    """The phantom's ``values`` on axial slice ``k`` only, as a (k, j, i) array."""
    truth = sitk.GetArrayFromImage(labels)
    drawn = np.zeros_like(truth)
    drawn[k] = np.where(np.isin(truth[k], values), truth[k], 0)
    return drawn


def write_like(array: np.ndarray, reference: sitk.Image, path) -> None:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path))


def assert_same_geometry(output: sitk.Image, reference: sitk.Image) -> None:
    """Size, spacing, origin and direction equal (to the precision the file format stores)."""
    assert output.GetSize() == reference.GetSize()
    assert np.allclose(output.GetSpacing(), reference.GetSpacing(), rtol=1e-6)
    assert np.allclose(output.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    assert np.allclose(output.GetDirection(), reference.GetDirection(), atol=1e-6)


class CopyingPredictor:
    """A stand-in for sam2's video predictor that copies each object's prompt to every frame.

    It visits frames in sam2's order (forward from the first prompted frame to the end, then in reverse
    from it to frame 0) and returns logits of +10 inside the prompt and -10 outside, so the only thing
    that can change a mask on the way back to the volume is our own geometry.
    """

    def __init__(self, image_size: int = 64):
        self.image_size = image_size
        self.device = torch.device("cpu")
        self.prompts: list[tuple[int, int]] = []
        self.masks: dict[int, torch.Tensor] = {}

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        assert tuple(mask.shape) == (self.image_size, self.image_size)
        self.prompts.append((frame_idx, obj_id))
        self.masks.setdefault(obj_id, torch.as_tensor(mask, dtype=torch.bool))

    def propagate_in_video(self, state, reverse=False):
        first = min(frame for frame, _ in self.prompts)
        order = range(first, -1, -1) if reverse else range(first, state["num_frames"])
        if reverse and first == 0:
            order = []
        obj_ids = list(self.masks)
        logits = torch.stack([torch.where(self.masks[o], 10.0, -10.0) for o in obj_ids])[:, None]
        for frame in order:
            yield frame, obj_ids, logits
