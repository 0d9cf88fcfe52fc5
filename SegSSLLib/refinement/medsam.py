"""MedSAM's own input preparation, behind segment-anything's ``SamPredictor`` interface.

MedSAM (a SAM ViT-B fine-tuned on medical images) learned from slices prepared differently from SAM's:
the 3-channel 8-bit slice is stretched to the model's square input (cubic interpolation, no padding),
its intensities are min-max scaled to [0, 1] with no ImageNet mean and standard deviation, and box
corners are scaled per axis to that square. SAM's predictor instead keeps the aspect ratio, pads, and
normalises with ImageNet statistics, which moves MedSAM's inputs away from what it was trained on.
Prompt encoding, mask decoding and the way masks return to the slice are segment-anything's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor

PREPROCESSING = ("sam", "medsam")


def sam_preprocessing(choice: str, checkpoint: Path) -> str:
    """``--sam-preprocess``: "sam" or "medsam"; "auto" picks MedSAM's for the registry's MedSAM file."""
    if choice != "auto":
        return choice
    from SegSSLLib.weights.registry import registry_entry_for_file

    known = registry_entry_for_file(checkpoint)
    return (known.sam_preprocess if known else None) or "sam"


class StretchTransform:
    """Pixel coordinates of an image stretched (not letterboxed) to ``size`` × ``size``: scaled per axis."""

    def __init__(self, size: int):
        self.target_length = size

    @staticmethod
    def get_preprocess_shape(rows: int, cols: int, size: int) -> tuple[int, int]:
        return size, size

    def _scale(self, original_size) -> tuple[float, float]:
        rows, cols = original_size
        return self.target_length / cols, self.target_length / rows  # (x, y)

    def apply_coords(self, coords: np.ndarray, original_size) -> np.ndarray:
        scale_x, scale_y = self._scale(original_size)
        coords = np.array(coords, dtype=float)
        coords[..., 0] *= scale_x
        coords[..., 1] *= scale_y
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size) -> np.ndarray:
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_coords_torch(self, coords: torch.Tensor, original_size) -> torch.Tensor:
        scale_x, scale_y = self._scale(original_size)
        return coords.float() * torch.tensor([scale_x, scale_y], dtype=torch.float32, device=coords.device)

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size) -> torch.Tensor:
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


class MedSamPredictor(SamPredictor):
    """A ``SamPredictor`` that prepares images and prompts the way MedSAM was trained."""

    def __init__(self, sam_model):
        super().__init__(sam_model)
        self.transform = StretchTransform(sam_model.image_encoder.img_size)

    @torch.no_grad()
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        from skimage.transform import resize

        if image_format != self.model.image_format:
            image = image[..., ::-1]
        size = self.model.image_encoder.img_size
        stretched = resize(image, (size, size), order=3, preserve_range=True, anti_aliasing=True)
        low, high = float(stretched.min()), float(stretched.max())
        scaled = (stretched - low) / max(high - low, 1e-8)  # [0, 1]; a flat slice stays 0
        pixels = torch.as_tensor(scaled, dtype=torch.float32, device=self.device).permute(2, 0, 1)[None]
        self.reset_image()
        self.original_size = tuple(image.shape[:2])
        self.input_size = (size, size)
        self.features = self.model.image_encoder(pixels)
        self.is_image_set = True
