"""Per-sample views for pretraining: a common physical pixel size, random crops and intensity jitter.

Cached slices are each scan's whole field of view fitted into the square, so one scan's pixels may
be 2 mm and another's 4 mm, and every slice of a scan shares its field of view, zero padding and
intensity statistics. A contrastive task can then be solved by those global cues ("which scan")
without looking at anatomy. Each slice that pretraining reads is therefore redrawn:

- resampled to one physical pixel size for all scans (``spacing_mm``), times a random zoom;
- cropped at a random place (a shift of the view) and rotated a little;
- given a random contrast, brightness, gamma and noise level.

The parameters are drawn for every sample separately (not per scan or per batch) from a generator
seeded with (seed, epoch, item, role), so two slices of one scan never share a view, and a run
repeats exactly, with or without worker processes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SliceAugmentation:
    spacing_mm: float | None = None  # common pixel size of the views; None: the cached slices' own
    jitter: bool = True  # random zoom, shift, rotation and intensity; False: resampling only
    zoom: tuple[float, float] = (0.8, 1.25)  # of the field of view, log-uniform
    shift: float = 0.15  # of the half-width, on top of what keeps a zoomed-in view inside the slice
    rotation: float = 0.17  # radians, either way
    contrast: tuple[float, float] = (0.75, 1.33)
    brightness: float = 0.1
    gamma: tuple[float, float] = (0.7, 1.4)
    noise: float = 0.03  # largest standard deviation of added Gaussian noise

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, image: torch.Tensor, pixel_mm: tuple[float, float] | None, rng: np.random.Generator) -> torch.Tensor:
        """One view of ``image`` (1, S, S) in [0, 1]; ``pixel_mm`` is its (rows, columns) pixel size."""
        if self.spacing_mm is not None and pixel_mm is not None:
            # Fraction of the slice's width (and height) that the view covers at the common pixel size.
            scale_x, scale_y = self.spacing_mm / pixel_mm[1], self.spacing_mm / pixel_mm[0]
        else:
            scale_x = scale_y = 1.0
        angle, shift_x, shift_y = 0.0, 0.0, 0.0
        if self.jitter:
            zoom = math.exp(rng.uniform(math.log(self.zoom[0]), math.log(self.zoom[1])))
            scale_x, scale_y = scale_x * zoom, scale_y * zoom
            angle = rng.uniform(-self.rotation, self.rotation)
            shift_x = rng.uniform(-1, 1) * (max(0.0, 1 - scale_x) + self.shift)
            shift_y = rng.uniform(-1, 1) * (max(0.0, 1 - scale_y) + self.shift)
        view = image
        if (scale_x, scale_y, angle, shift_x, shift_y) != (1.0, 1.0, 0.0, 0.0, 0.0):
            cos, sin = math.cos(angle), math.sin(angle)
            theta = torch.tensor(
                [[cos * scale_x, -sin * scale_y, shift_x], [sin * scale_x, cos * scale_y, shift_y]], dtype=torch.float32
            )
            grid = F.affine_grid(theta[None], [1, *image.shape], align_corners=False)
            view = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        if self.jitter:
            contrast = rng.uniform(*self.contrast)
            brightness = rng.uniform(-self.brightness, self.brightness)
            gamma = math.exp(rng.uniform(math.log(self.gamma[0]), math.log(self.gamma[1])))
            noise = rng.uniform(0, self.noise)
            view = view.clamp(0, 1) ** gamma
            view = (view - 0.5) * contrast + 0.5 + brightness
            generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
            view = view + noise * torch.randn(view.shape, generator=generator)
        return view.clamp(0, 1)


def common_spacing(pixel_sizes: list[tuple[float, float] | None], requested: float | str | None) -> float | None:
    """The views' pixel size: a number, the median of the scans' pixel sizes ("auto"), or None."""
    if requested is None or requested == "none":
        return None
    if requested != "auto":
        return float(requested)
    known = [size for pair in pixel_sizes if pair for size in pair]
    return float(np.median(known)) if known else None


def view_generator(seed: int, epoch: int, item: int, role: int) -> np.random.Generator:
    """The random stream of one view: role 0, 1, 2 = anchor, positive, negative of triplet ``item``."""
    return np.random.default_rng([seed, epoch, item, role])
