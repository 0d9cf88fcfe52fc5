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
    with pytest.raises(SegSSLError, match="fine-tune it first \\(finetune with `init` "):
        PolyCLSegmenter.from_checkpoint(path, CPU)



def _stored_flipped(image: sitk.Image) -> sitk.Image:
    """The same physical image with axes I and K stored the other way round (direction and origin adjusted)."""
    return sitk.Flip(image, [True, False, True])


def test_the_same_physical_image_stored_flipped_gives_the_same_segmentation(tiny_phantom, tmp_path):
    segmenter = PolyCLSegmenter.from_checkpoint(random_segmentation_checkpoint(tmp_path / "m.pt"), CPU)
    image = sitk.ReadImage(str(tiny_phantom[0]))
    flipped = _stored_flipped(image)
    assert segmenter.slicing.orientation == "LPS"
    expected = sitk.GetImageFromArray(segmenter.probabilities(image).numpy())
    expected.CopyInformation(image)
    # A's probabilities carried to B's storage order, voxel by voxel in physical space.
    expected = sitk.GetArrayFromImage(_stored_flipped(expected))
    got = segmenter.probabilities(flipped).numpy()
    assert got.shape == expected.shape and got.std() > 0.01  # the random network's output varies
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_settings_saved_without_an_orientation_slice_the_array_as_stored(tiny_phantom, tmp_path):
    from SegSSLLib.checkpoints import load_checkpoint, save_checkpoint

    path = random_segmentation_checkpoint(tmp_path / "m.pt")
    checkpoint = load_checkpoint(path)
    del checkpoint["config"]["slicing"]["orientation"]
    save_checkpoint(tmp_path / "old.pt", "polycl", checkpoint["config"], checkpoint["state_dict"])
    old = PolyCLSegmenter.from_checkpoint(tmp_path / "old.pt", CPU)
    assert old.slicing.orientation is None
    image = sitk.ReadImage(str(tiny_phantom[0]))
    flipped = _stored_flipped(image)
    same_array = sitk.GetImageFromArray(sitk.GetArrayFromImage(flipped))
    same_array.CopyInformation(image)  # the flipped file's array with the unflipped direction
    # As stored: only the array counts, whatever the direction says.
    torch.testing.assert_close(old.probabilities(flipped), old.probabilities(same_array), rtol=0, atol=1e-6)
    new = PolyCLSegmenter.from_checkpoint(path, CPU)
    assert not torch.allclose(new.probabilities(flipped), new.probabilities(same_array), atol=1e-3)
