"""Applying a fine-tuned PolyCL model to a volume: batched slices in, a label map on the input grid out.

The volume is reoriented, windowed and cut into square slices exactly as in training (the
checkpoint's ``slicing`` settings); the network runs on batches of slices; the foreground
probabilities are resampled bilinearly back onto the reoriented grid (``SliceStack.to_volume``),
permuted back to the stored axis order (``orientation.restore``) and thresholded there, so the
label map has the input's exact size, spacing, origin and direction. Optionally only the
largest connected component is kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from SegSSLLib.checkpoints import load_checkpoint
from SegSSLLib.errors import SegSSLError
from SegSSLLib.orientation import restore
from SegSSLLib.polycl.finetuning import SEGMENTATION_KIND
from SegSSLLib.polycl.model import ModelConfig, SegmentationNet
from SegSSLLib.polycl.pretraining import PRETRAIN_KIND
from SegSSLLib.polycl.slice_cache import SlicingSettings
from SegSSLLib.progress import NO_PROGRESS, Progress


@dataclass
class PolyCLSegmenter:
    model: SegmentationNet
    slicing: SlicingSettings
    label: int
    label_name: str
    device: torch.device

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: torch.device) -> "PolyCLSegmenter":
        checkpoint = load_checkpoint(path, kinds=(SEGMENTATION_KIND, PRETRAIN_KIND), purpose="`checkpoint` needs")
        if checkpoint["kind"] == PRETRAIN_KIND:
            raise SegSSLError(
                f"{path} is a pretrained PolyCL encoder without a segmentation decoder — "
                f"fine-tune it first (finetune with `init` {path}, `data` DIR and `label` N)"
            )
        config = checkpoint["config"]
        model = SegmentationNet(ModelConfig.from_dict(config["model"]))
        model.load_state_dict(checkpoint["state_dict"])
        model.to(device).eval()
        slicing = SlicingSettings.from_dict(config["slicing"])
        return cls(model, slicing, int(config["label"]), str(config.get("label_name", "")), device)

    @property
    def default_batch_size(self) -> int:
        # On CPUs batches above 4 gained nothing in Testing/Benchmarks (memory-bound); a GPU takes 16 easily.
        return 16 if self.device.type == "cuda" else 4

    @torch.inference_mode()
    def probabilities(
        self, image: sitk.Image, batch_size: int | None = None, progress: Progress = NO_PROGRESS
    ) -> torch.Tensor:
        """Foreground probability (k, j, i) float32 on the input's grid; ``batch_size`` slices per pass."""
        batch_size = self.default_batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise SegSSLError(f"`batch_size` must be at least 1 slice per pass, got {batch_size}")
        oriented = self.slicing.orient(image)
        stack = self.slicing.stack(oriented)
        slices = stack.to_slices(self.slicing.window.apply(sitk.GetArrayViewFromImage(oriented)))
        use_amp = self.device.type == "cuda"
        chunks = []
        with progress.stage("segment slices", total=stack.num_slices):
            for start in range(0, stack.num_slices, batch_size):
                batch = slices[start : start + batch_size].to(self.device)
                with torch.autocast(self.device.type, dtype=torch.float16, enabled=use_amp):
                    logits = self.model(batch)
                chunks.append(torch.softmax(logits.float(), dim=1)[:, 1:2].cpu())
                progress.advance(len(batch))
        on_oriented = stack.to_volume(torch.cat(chunks), mode="bilinear")[0].numpy()
        return torch.from_numpy(restore(on_oriented, oriented, image))

    def segment(
        self, image: sitk.Image, batch_size: int | None = None, keep_largest: bool = True, progress: Progress = NO_PROGRESS
    ) -> np.ndarray:
        """Label map (k, j, i) uint8/uint16 holding the checkpoint's label value where the structure is."""
        mask = self.probabilities(image, batch_size, progress) > 0.5
        if keep_largest and mask.any():
            mask = largest_component(mask)
        dtype = np.uint8 if self.label < 256 else np.uint16
        return mask.numpy().astype(dtype) * dtype(self.label)


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """Keep only the largest face-connected component of a boolean (k, j, i) mask."""
    from monai.transforms import KeepLargestConnectedComponent

    keep = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False, connectivity=1)
    return torch.as_tensor(keep(mask[None].to(torch.uint8)))[0].bool()
