"""Random affine transforms of image batches, for the affine-consistency term.

A transform is drawn in pixel units about the image centre (rotation, isotropic scale, shear,
translation as a fraction of the size, horizontal flip) and converted to the normalised matrix that
``torch.nn.functional.affine_grid`` expects, so rotations stay rotations on non-square images.
The same matrix warps the input image and the responses; ``valid_region`` says where the warped
image came from inside the original (outside it the warp reads padding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from SegSSLLib.s3net.config import AffineRange


def pixel_transform(
    rotation_degrees: float = 0.0,
    scale: float = 1.0,
    shear_degrees: float = 0.0,
    translation: tuple[float, float] = (0.0, 0.0),
    flip: bool = False,
) -> torch.Tensor:
    """3×3 matrix mapping (x, y, 1) pixel coordinates about the centre of the input to the output.

    Applied in the order flip, scale, shear, rotation, translation (x right, y down, pixels).
    """
    angle, shear = math.radians(rotation_degrees), math.radians(shear_degrees)
    flip_m = torch.diag(torch.tensor([-1.0 if flip else 1.0, 1.0, 1.0], dtype=torch.float64))
    scale_m = torch.diag(torch.tensor([scale, scale, 1.0], dtype=torch.float64))
    shear_m = torch.tensor([[1.0, math.tan(shear), 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    rotation_m = torch.tensor(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    translation_m = torch.tensor(
        [[1.0, 0.0, translation[0]], [0.0, 1.0, translation[1]], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    return translation_m @ rotation_m @ shear_m @ scale_m @ flip_m


def to_sampling_matrix(forward: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The (2, 3) ``affine_grid`` matrix (output → input, normalised coordinates) of a pixel transform.

    With ``align_corners=False`` normalised = pixel offset from the centre × (2/width, 2/height).
    """
    to_normalised = torch.diag(torch.tensor([2.0 / width, 2.0 / height, 1.0], dtype=torch.float64))
    sampling = to_normalised @ torch.linalg.inv(forward) @ torch.linalg.inv(to_normalised)
    return sampling[:2].float()


def random_sampling_matrices(
    batch: int, height: int, width: int, ranges: AffineRange, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(batch, 2, 3) independent random transforms, ready for ``warp``."""

    def uniform(limit: float) -> float:
        return float((torch.rand((), generator=generator) * 2 - 1) * limit)

    matrices = []
    for _ in range(batch):
        forward = pixel_transform(
            rotation_degrees=uniform(ranges.rotation_degrees),
            scale=1.0 + uniform(ranges.scale),
            shear_degrees=uniform(ranges.shear_degrees),
            translation=(uniform(ranges.translation) * width, uniform(ranges.translation) * height),
            flip=bool(torch.rand((), generator=generator) < ranges.flip_probability),
        )
        matrices.append(to_sampling_matrix(forward, height, width))
    return torch.stack(matrices)


def warp(tensor: torch.Tensor, sampling: torch.Tensor, mode: str = "bilinear", padding: str = "zeros") -> torch.Tensor:
    """Apply (N, 2, 3) sampling matrices to an (N, C, H, W) tensor.

    ``padding``: what is read outside the input, as ``grid_sample``'s ``padding_mode`` ("zeros",
    "border" or "reflection").
    """
    grid = F.affine_grid(sampling.to(tensor.device, tensor.dtype), list(tensor.shape), align_corners=False)
    return F.grid_sample(tensor, grid, mode=mode, padding_mode=padding, align_corners=False)


def valid_region(sampling: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, H, W) bool: output pixels whose whole bilinear footprint lies inside the input."""
    ones = torch.ones(sampling.shape[0], 1, height, width)
    return warp(ones, sampling)[:, 0] > 0.999
