"""Small random-weight SAM / SAM 2 models and annotations for the SAM tests."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

TINY_SAM = dict(
    embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), image_size=128, window_size=4,
    prompt_dim=32, mask_in_chans=8, decoder_mlp_dim=64, iou_head_hidden_dim=32,
)
SAM2_TEST_SIZE = 64  # SAM 2 input size in tests: hiera-t runs ~10 frames/s on a CPU at this size


def tiny_sam():
    from SegSSLLib.sam.models import SamArchitecture, build_sam

    torch.manual_seed(0)
    return build_sam(SamArchitecture(**TINY_SAM))


def save_tiny_sam(path) -> None:
    torch.save(tiny_sam().state_dict(), path)


def random_sam2(image_size: int = SAM2_TEST_SIZE):
    from SegSSLLib.sam.models import load_sam2_video_predictor

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
