"""SAM 2 propagation of a one-slice annotation through the volume, with frames built in memory.

The slice stack along the annotation's axis is the "video". sam2's ``init_state`` only reads JPEG
folders or MP4 files, so we build the same inference state around frames we prepared in memory
(``frames.sam2_frames``), then use sam2's public API: ``add_new_mask`` for each object on each
annotated slice, ``propagate_in_video`` forward and then in reverse. The masks come back at the
frame size and are mapped onto the original grid through ``SliceStack``; the annotated slices are
then set to exactly what the user drew.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.sam.annotation import Annotation
from SegSSLLib.sam.frames import frame_stack, sam2_frames
from SegSSLLib.slicing import array_axis

log = logging.getLogger(__name__)


@dataclass
class PropagationResult:
    labels: np.ndarray  # (k, j, i), on the input grid
    forward_frames: list[int] = field(default_factory=list)  # frames visited going up the axis
    reverse_frames: list[int] = field(default_factory=list)  # frames visited going down


def in_memory_state(predictor, frames: torch.Tensor, offload_video_to_cpu: bool = False) -> dict:
    """An inference state like ``predictor.init_state(folder)`` builds, around frames already in memory.

    ``frames``: (N, 3, S, S) normalised with sam2's mean and std, S = ``predictor.image_size``.
    """
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[-1] != predictor.image_size:
        raise ValueError(f"frames must be (N, 3, {predictor.image_size}, {predictor.image_size}), got {tuple(frames.shape)}")
    device = predictor.device
    state = {
        "images": frames if offload_video_to_cpu else frames.to(device),
        "num_frames": len(frames),
        "offload_video_to_cpu": offload_video_to_cpu,
        "offload_state_to_cpu": False,
        "video_height": int(frames.shape[-2]),
        "video_width": int(frames.shape[-1]),
        "device": device,
        "storage_device": device,
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
) -> PropagationResult:
    """Carry the (k, j, i) ``labels`` drawn on ``annotation.slices`` through every slice along its axis."""
    stack, frames = frame_stack(image, annotation.axis, predictor.image_size)
    drawn_masks = stack.to_slices(np.asarray(labels), mode="nearest")[:, 0]  # (N, S, S) label values
    state = in_memory_state(predictor, sam2_frames(frames))
    objects = list(annotation.labels)
    with torch.inference_mode():
        for obj_id in objects:
            for k in annotation.slices_of(labels, obj_id):
                predictor.add_new_mask(state, frame_idx=k, obj_id=obj_id, mask=(drawn_masks[k] == obj_id))
        # Logits per frame and object, already on the slice grid (small even at 1024); -inf: not reached.
        logits = torch.full((stack.num_slices, len(objects), *stack.slice_shape), -torch.inf)
        result = PropagationResult(labels=np.zeros_like(labels))
        first = min(annotation.slices)
        with progress.stage("propagate (SAM 2)", total=stack.num_slices - first + (first + 1 if first else 0)):
            for reverse, visited in ((False, result.forward_frames), (True, result.reverse_frames)):
                for frame, obj_ids, masks in predictor.propagate_in_video(state, reverse=reverse):
                    on_slice = _to_slice_grid(masks.float().cpu(), stack)
                    for index, obj_id in enumerate(obj_ids):
                        logits[frame, objects.index(obj_id)] = on_slice[index, 0]
                    visited.append(int(frame))
                    progress.advance()
    result.labels = _labels_from_logits(logits, objects, annotation.axis, labels.dtype)
    _restore_drawn_slices(result.labels, labels, annotation)
    return result


def _to_slice_grid(masks: torch.Tensor, stack) -> torch.Tensor:
    """(O, 1, S, S) frame-sized logits -> (O, 1, rows, cols) on the slice's own grid (undo fit and pad)."""
    top, left = stack.padding
    rows, cols = stack.fitted_shape
    cropped = masks[..., top : top + rows, left : left + cols]
    if tuple(cropped.shape[-2:]) == tuple(stack.slice_shape):
        return cropped
    return F.interpolate(cropped, size=stack.slice_shape, mode="bilinear", align_corners=False)


def _labels_from_logits(logits: torch.Tensor, objects: list[int], itk_axis: int, dtype) -> np.ndarray:
    """(N, O, rows, cols) logits -> (k, j, i) label values: the strongest object with a positive logit."""
    strongest, which = logits.max(dim=1)
    values = torch.tensor(objects, dtype=torch.int64)[which]
    stacked = torch.where(strongest > 0, values, 0).numpy().astype(dtype)
    return np.moveaxis(stacked, 0, array_axis(itk_axis))


def _restore_drawn_slices(result: np.ndarray, labels: np.ndarray, annotation: Annotation) -> None:
    position = array_axis(annotation.axis)
    out, drawn = np.moveaxis(result, position, 0), np.moveaxis(np.asarray(labels), position, 0)
    for k in annotation.slices:
        out[k] = drawn[k]
