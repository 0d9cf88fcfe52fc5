"""Volume inference: batching does not change results, label value and geometry, largest component."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from polycl_helpers import one_thread, random_segmentation_checkpoint  # noqa: F401
from SegSSLLib.errors import SegSSLError
from SegSSLLib.polycl.inference import PolyCLSegmenter, largest_component

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_batched_inference_equals_one_slice_at_a_time(tiny_phantom, tmp_path):
    segmenter = PolyCLSegmenter.from_checkpoint(random_segmentation_checkpoint(tmp_path / "m.pt"), CPU)
    image = sitk.ReadImage(str(tiny_phantom[0]))
    batched = segmenter.probabilities(image, batch_size=8)
    single = segmenter.probabilities(image, batch_size=1)
    assert batched.shape == tuple(reversed(image.GetSize()))
    assert 0 <= float(batched.min()) and float(batched.max()) <= 1
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias, expected", [(10.0, 6), (-10.0, 0)])
def test_labels_carry_the_checkpoint_value_over_the_whole_grid(tiny_phantom, tmp_path, bias, expected):
    path = random_segmentation_checkpoint(tmp_path / "m.pt", label=6, foreground_bias=bias)
    image = sitk.ReadImage(str(tiny_phantom[0]))
    labels = PolyCLSegmenter.from_checkpoint(path, CPU).segment(image)
    assert labels.shape == tuple(reversed(image.GetSize())) and labels.dtype == np.uint8
    assert np.all(labels == expected)


def test_largest_component_keeps_only_the_biggest_region():
    mask = torch.zeros(6, 10, 10, dtype=torch.bool)
    mask[1:4, 1:5, 1:5] = True  # 48 voxels
    mask[5, 8:10, 8:10] = True  # 4 voxels, apart
    mask[1, 6, 1] = True  # touches the big region only diagonally: not face-connected
    kept = largest_component(mask)
    expected = torch.zeros_like(mask)
    expected[1:4, 1:5, 1:5] = True
    assert torch.equal(kept, expected)


def test_a_pretraining_file_is_refused_with_the_fix(tmp_path):
    from polycl_helpers import TINY_MODEL, TINY_SLICING
    from SegSSLLib.checkpoints import save_checkpoint
    from SegSSLLib.polycl.model import ContrastiveNet

    path = tmp_path / "pre.pt"
    save_checkpoint(path, "polycl-pretrain", {"model": TINY_MODEL.to_dict(), "slicing": TINY_SLICING.to_dict()},
                    ContrastiveNet(TINY_MODEL).state_dict())
    with pytest.raises(SegSSLError, match="fine-tune it first: segssl finetune --init"):
        PolyCLSegmenter.from_checkpoint(path, CPU)

