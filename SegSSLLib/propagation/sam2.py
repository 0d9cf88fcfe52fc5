"""SAM 2 propagation of a one-slice annotation through the volume, with frames built in memory.

The slice stack along the annotation's axis is the "video". sam2's ``init_state`` only reads JPEG
folders or MP4 files, so we build the same inference state around 8-bit frames prepared in memory
(``frames.frame_stack``, normalised one frame at a time by ``frames.Sam2Frames``), then use sam2's
public API: ``add_new_mask`` for each object on each slice where it was drawn, ``propagate_in_video``
forward and then in reverse. The masks come back at the frame size and are mapped onto the original
grid slice by slice; each drawn object is then set to exactly what the user drew on its slices.

Memory: the video stays on the CPU as uint8 (sam2 moves one frame at a time to the model's device);
``offload_state`` keeps sam2's per-frame memory on the CPU too, as ``init_state`` does when asked.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.propagation.annotation import Annotation, restore_drawn
from SegSSLLib.propagation.base import PropagationResult
from SegSSLLib.frames import Sam2Frames, frame_stack
from SegSSLLib.axes import array_axis

log = logging.getLogger(__name__)


def in_memory_state(predictor, frames: Sam2Frames, offload_state_to_cpu: bool = False) -> dict:
    """An inference state like ``predictor.init_state(folder, offload_video_to_cpu=True)`` builds, around
    frames already in memory (``frames``: S × S, S = ``predictor.image_size``)."""
    size = predictor.image_size
    if frames.frame_shape != (size, size):
        raise ValueError(f"frames must be {size} x {size} pixels, got {frames.frame_shape}")
    device = predictor.device
    state = {
        "images": frames,  # on the CPU; sam2 moves each frame it reads to ``device``
        "num_frames": len(frames),
        "offload_video_to_cpu": True,
        "offload_state_to_cpu": offload_state_to_cpu,
        "video_height": size,
        "video_width": size,
        "device": device,
        "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
    return state


def propagate_with_sam2(
    predictor,
    image: sitk.Image,
    labels: np.ndarray,
    annotation: Annotation,
    progress: Progress = NO_PROGRESS,
    offload_state: bool = False,
) -> PropagationResult:
    """Carry the (k, j, i) ``labels`` drawn on ``annotation.slices`` through every slice along its axis."""
    stack, frames = frame_stack(image, annotation.axis, predictor.image_size)
    state = in_memory_state(predictor, Sam2Frames(frames), offload_state_to_cpu=offload_state)
    objects = list(annotation.labels)
    result = PropagationResult(labels=np.zeros_like(labels))
    out = np.moveaxis(result.labels, array_axis(annotation.axis), 0)  # a view: (frame, rows, cols)
    drawn = np.moveaxis(np.asarray(labels), array_axis(annotation.axis), 0)
    values = torch.tensor(objects, dtype=torch.int64)
    with torch.inference_mode(), _quiet_sam2():
        for obj_id in objects:
            for k in annotation.slices_of(labels, obj_id):
                predictor.add_new_mask(state, frame_idx=k, obj_id=obj_id, mask=_mask_prompt(drawn[k] == obj_id, stack))
                result.prompts.append((k, obj_id))
        first = min(annotation.slices)
        with progress.stage("propagate (SAM 2)", total=stack.num_slices - first + (first + 1 if first else 0)):
            for reverse, visited in ((False, result.forward_frames), (True, result.reverse_frames)):
                for frame, obj_ids, masks in predictor.propagate_in_video(state, reverse=reverse):
                    # Each visit returns every object: the strongest one with a positive logit wins a pixel.
                    on_slice = _to_slice_grid(masks.float().cpu(), stack)[:, 0]
                    strongest, which = on_slice.max(dim=0)
                    chosen = values[[objects.index(o) for o in obj_ids]][which]
                    out[frame] = torch.where(strongest > 0, chosen, 0).numpy()
                    visited.append(int(frame))
                    progress.advance()
    restore_drawn(result.labels, labels, annotation)
    return result


def _mask_prompt(mask: np.ndarray, stack) -> torch.Tensor:
    """A drawn (rows, cols) mask as a (S, S) prompt on the frame: area-weighted resize, kept where at least
    half a frame pixel is covered, and never lost: a structure smaller than a frame pixel keeps the pixel
    that covers most of it."""
    top, left = stack.padding
    rows, cols = stack.fitted_shape
    fraction = _resize_fraction(torch.from_numpy(mask.astype(np.float32)), (rows, cols))
    kept = fraction >= 0.5
    if not kept.any() and mask.any():
        kept.view(-1)[int(fraction.argmax())] = True
    prompt = torch.zeros((stack.size, stack.size), dtype=torch.bool)
    prompt[top : top + rows, left : left + cols] = kept
    return prompt


def _resize_fraction(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The fraction of each resized pixel that ``mask`` covers (area weighting when shrinking)."""
    if tuple(mask.shape) == tuple(shape):
        return mask
    shrinking = mask.shape[0] > shape[0] or mask.shape[1] > shape[1]
    return F.interpolate(mask[None, None], size=shape, mode="bilinear", align_corners=False, antialias=shrinking)[0, 0]


def _to_slice_grid(masks: torch.Tensor, stack) -> torch.Tensor:
    """(O, 1, S, S) frame-sized logits -> (O, 1, rows, cols) on the slice's own grid (undo fit and pad)."""
    top, left = stack.padding
    rows, cols = stack.fitted_shape
    cropped = masks[..., top : top + rows, left : left + cols]
    if tuple(cropped.shape[-2:]) == tuple(stack.slice_shape):
        return cropped
    return F.interpolate(cropped, size=stack.slice_shape, mode="bilinear", align_corners=False)


@contextlib.contextmanager
def _quiet_sam2():
    """sam2's tqdm bars would write to stderr whatever ``--progress`` says; our own progress counts the frames."""
    import sam2.sam2_video_predictor as video_predictor

    original = video_predictor.tqdm
    video_predictor.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        video_predictor.tqdm = original


@dataclass
class Sam2Propagator:
    """The SAM 2 backend: a video predictor (``weights.models.load_sam2_video_predictor``) and its memory setting."""

    predictor: object
    offload_state: bool = False
    name = "SAM 2"

    def describe(self) -> str:
        return f"SAM 2 at {self.predictor.image_size} px on {self.predictor.device}"

    def propagate(
        self, image: sitk.Image, labels: np.ndarray, annotation: Annotation, progress: Progress = NO_PROGRESS
    ) -> PropagationResult:
        return propagate_with_sam2(self.predictor, image, labels, annotation, progress, self.offload_state)
