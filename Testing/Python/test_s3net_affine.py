"""Random affine transforms for the affine-consistency term."""

import torch

from SegSSLLib.s3net.affine import pixel_transform, random_sampling_matrices, to_sampling_matrix, valid_region, warp
from SegSSLLib.s3net.config import AffineRange


def _warp_exactly(image, **transform):
    height, width = image.shape[-2:]
    sampling = to_sampling_matrix(pixel_transform(**transform), height, width)[None]
    return warp(image, sampling, mode="nearest"), valid_region(sampling, height, width)


def test_identity_changes_nothing_and_everything_is_valid():
    image = torch.rand(1, 2, 7, 10)
    warped, valid = _warp_exactly(image)
    assert torch.equal(warped, image) and bool(valid.all())


def test_flip_mirrors_left_and_right():
    image = torch.rand(1, 1, 6, 9)
    warped, valid = _warp_exactly(image, flip=True)
    assert torch.equal(warped, torch.flip(image, dims=[-1])) and bool(valid.all())


def test_quarter_turn_is_a_rotation_in_pixels():
    image = torch.rand(1, 1, 8, 8)
    warped, _ = _warp_exactly(image, rotation_degrees=90)
    # x right, y down: +90° takes the top row to the right-hand column.
    assert torch.equal(warped, torch.rot90(image, k=-1, dims=(-2, -1)))


def test_half_turn_of_a_non_square_image_keeps_its_shape():
    # In normalised coordinates a rotation of a non-square image would shear it; in pixels it does not.
    image = torch.rand(1, 1, 6, 10)
    warped, valid = _warp_exactly(image, rotation_degrees=180)
    assert torch.equal(warped, torch.flip(image, dims=[-2, -1])) and bool(valid.all())


def test_translation_moves_content_and_leaves_an_invalid_strip():
    image = torch.rand(1, 1, 5, 8)
    warped, valid = _warp_exactly(image, translation=(3.0, 0.0))
    assert torch.equal(warped[..., 3:], image[..., :-3])
    assert not valid[0, :, :3].any() and valid[0, :, 3:].all()


def test_reflection_padding_fills_the_invalid_strip_with_image_content():
    image = torch.arange(1.0, 9.0).view(1, 1, 1, 8).expand(1, 1, 4, 8).contiguous()
    sampling = to_sampling_matrix(pixel_transform(translation=(2.0, 0.0)), 4, 8)[None]
    padded = warp(image, sampling, mode="nearest", padding="reflection")
    assert torch.equal(padded[..., 2:], image[..., :-2])
    assert float(padded[..., :2].min()) >= 1.0  # mirrored pixels, not zeros


def test_random_matrices_differ_per_image_and_repeat_with_the_seed():
    first = random_sampling_matrices(4, 16, 24, AffineRange(), torch.Generator().manual_seed(1))
    again = random_sampling_matrices(4, 16, 24, AffineRange(), torch.Generator().manual_seed(1))
    assert first.shape == (4, 2, 3) and torch.equal(first, again)
    assert float((first[0] - first[1]).abs().max()) > 1e-3


def test_zero_ranges_give_the_identity():
    still = AffineRange(rotation_degrees=0, scale=0, shear_degrees=0, translation=0, flip_probability=0)
    matrices = random_sampling_matrices(3, 10, 12, still, torch.Generator().manual_seed(0))
    assert torch.allclose(matrices, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3), atol=1e-6)
