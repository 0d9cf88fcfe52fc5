"""SAM box refinement of a coarse mask, slice by slice.

For every slice that holds labels: the windowed slice goes to SAM as an 8-bit RGB image (one image
embedding per slice), each connected component of each label becomes a box prompt (optionally with
the component itself as a low-resolution mask prompt), and all boxes of the slice are decoded in one
batch. Each pixel takes the label whose refined mask is most confident there. A component for which
SAM returns nothing keeps its coarse shape, so refinement never deletes a structure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage

from SegSSLLib.axes import array_axis
from SegSSLLib.errors import OperationCancelled, SegSSLError
from SegSSLLib.frames import WindowedSlices, rgb_slice, slice_of, windowed_array
from SegSSLLib.images import label_array, label_image, require_image
from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.refinement.medsam import PREPROCESSING

log = logging.getLogger(__name__)

MASK_PROMPT_LOGIT = 10.0  # magnitude of the mask prompt's logits (SAM's own low-res logits are of this order)


@dataclass(frozen=True)
class RefineSettings:
    margin: int = 5  # pixels added on every side of a component's box
    mask_prompt: bool = False  # also give SAM the coarse component as a mask prompt
    axis: int = 2  # ITK axis of the slices (2 = axial for an axial scan)
    sam_checkpoint: str | Path | None = None  # file or registry name; None: $SEGSSL_SAM_CHECKPOINT or the cache
    sam_preprocess: str = "auto"  # "sam", "medsam", or "auto": MedSAM's for the registry's MedSAM file
    device: object = "auto"  # "auto", "cpu", "cuda", "cuda:N", "mps" or a torch.device

    def check(self) -> None:
        if self.margin < 0:
            raise SegSSLError(f"`margin` must be 0 or more pixels, got {self.margin}")
        if self.axis not in (0, 1, 2):
            raise SegSSLError(f"`axis` must be 0, 1 or 2 (I, J, K), got {self.axis}")
        if self.sam_preprocess not in ("auto", *PREPROCESSING):
            raise SegSSLError(f"`sam_preprocess` must be auto, sam or medsam, got {self.sam_preprocess!r}")


@dataclass
class RefineResult:
    label_map: sitk.Image  # on the input's grid
    kept_coarse: int = 0  # components SAM returned nothing for: they kept their coarse shape
    warnings: list[str] = field(default_factory=list)


def refine(
    image: sitk.Image, mask, settings: RefineSettings = RefineSettings(), progress: Progress = NO_PROGRESS,
    predictor=None, cancel=None, windowed: WindowedSlices | None = None,
) -> RefineResult:
    """A coarse label map sharpened by SAM: a box per connected component, slice by slice.

    ``image``: a volume, or a 2D grey or RGB picture. ``mask``: a label map on its grid (SimpleITK image)
    or a (k, j, i) array. ``predictor``: a SAM predictor already loaded (``load_sam_predictor``); by
    default the one for ``settings.sam_checkpoint`` is loaded. ``cancel``: a ``threading.Event`` checked
    between slices; once set, ``OperationCancelled`` is raised and nothing is returned. ``windowed``:
    ``WindowedSlices`` of ``image`` kept from an earlier call (a worker refining the same volume again);
    used only if it ``matches`` ``image``, so a changed volume is never windowed from a stale one.
    """
    require_image(image, "image")
    labels = label_array(mask, image, "mask")
    settings.check()
    if predictor is None:
        predictor = load_refinement_predictor(settings, progress)
    refined, kept = _refine_array(predictor, image, labels, settings, progress, cancel, windowed)
    result = RefineResult(label_image(refined, image), kept)
    if kept:
        result.warnings.append(_kept_warning(kept))
        log.warning(result.warnings[-1])
    return result


def load_refinement_predictor(settings: RefineSettings, progress: Progress = NO_PROGRESS):
    """The SAM predictor ``settings`` ask for (checkpoint resolved, downloaded on first use)."""
    from SegSSLLib.device import select_device
    from SegSSLLib.weights.models import load_sam_predictor
    from SegSSLLib.weights.resolve import resolve_checkpoint

    checkpoint = resolve_checkpoint(settings.sam_checkpoint, "sam", progress=progress)
    device = select_device(settings.device) if isinstance(settings.device, str) else settings.device
    return load_sam_predictor(checkpoint, device, settings.sam_preprocess)


@dataclass(frozen=True)
class Prompt:
    value: int  # label value
    component: np.ndarray  # boolean (rows, cols)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels: x = column, y = row, corners included


def component_prompts(slice_labels: np.ndarray, margin: int) -> list[Prompt]:
    """One box per connected component (8-connected) of every label, widened by ``margin`` pixels."""
    rows, cols = slice_labels.shape
    prompts = []
    for value in (int(v) for v in np.unique(slice_labels) if v != 0):
        components, count = ndimage.label(slice_labels == value, structure=np.ones((3, 3)))
        for index, found in enumerate(ndimage.find_objects(components), start=1):
            row_span, col_span = found
            box = (
                max(0, col_span.start - margin),
                max(0, row_span.start - margin),
                min(cols - 1, col_span.stop - 1 + margin),
                min(rows - 1, row_span.stop - 1 + margin),
            )
            prompts.append(Prompt(value, components == index, box))
    return prompts


def mask_prompt(component: np.ndarray, predictor) -> torch.Tensor:
    """A boolean component -> SAM's low-resolution mask input (1, S/4, S/4), aligned like the image.

    SAM resizes the image so its longest side is S, pads bottom and right to S × S and predicts masks
    at a quarter of that; the prompt must sit in the same frame.
    """
    sam = predictor.model
    size = sam.image_encoder.img_size
    rows, cols = predictor.transform.get_preprocess_shape(*component.shape, size)
    mask = torch.from_numpy(component.astype(np.float32))[None, None]
    resized = F.interpolate(mask, size=(rows, cols), mode="bilinear", align_corners=False)
    padded = F.pad(resized, (0, size - cols, 0, size - rows))
    low = F.interpolate(padded, size=sam.prompt_encoder.mask_input_size, mode="bilinear", align_corners=False)
    return torch.where(low[0] >= 0.5, MASK_PROMPT_LOGIT, -MASK_PROMPT_LOGIT)


@torch.no_grad()
def refine_slice(predictor, rgb: np.ndarray, slice_labels: np.ndarray, settings: RefineSettings) -> tuple[np.ndarray, int]:
    """Refined labels of one slice, and how many components kept their coarse shape."""
    prompts = component_prompts(slice_labels, settings.margin)
    if not prompts:
        return np.zeros_like(slice_labels), 0
    predictor.set_image(rgb)  # the one image embedding of this slice, shared by all its boxes
    device = predictor.device
    boxes = torch.tensor([p.box for p in prompts], dtype=torch.float32, device=device)
    boxes = predictor.transform.apply_boxes_torch(boxes, rgb.shape[:2])
    masks_in = torch.stack([mask_prompt(p.component, predictor) for p in prompts]).to(device) if settings.mask_prompt else None
    logits, _, _ = predictor.predict_torch(
        point_coords=None, point_labels=None, boxes=boxes, mask_input=masks_in, multimask_output=False, return_logits=True
    )
    logits = logits[:, 0].float().cpu().numpy()  # (B, rows, cols) at the slice's size
    values = np.array([p.value for p in prompts])
    strongest = logits.max(axis=0)
    refined = np.where(strongest > predictor.model.mask_threshold, values[logits.argmax(axis=0)], 0)
    kept = 0
    for prompt, component_logits in zip(prompts, logits):
        if not np.any(component_logits > predictor.model.mask_threshold):
            refined[prompt.component & (refined == 0)] = prompt.value
            kept += 1
    return refined.astype(slice_labels.dtype), kept


def refine_labels(
    predictor, image: sitk.Image, labels: np.ndarray, settings: RefineSettings = RefineSettings(),
    progress: Progress = NO_PROGRESS,
) -> np.ndarray:
    """Refine a coarse label array of ``image`` ((k, j, i) volume, or a 2D grey or RGB picture)."""
    refined, kept = _refine_array(predictor, image, labels, settings, progress)
    if kept:
        log.warning(_kept_warning(kept))
    return refined


def _refine_array(predictor, image: sitk.Image, labels: np.ndarray, settings: RefineSettings, progress: Progress,
                  cancel=None, windowed: WindowedSlices | None = None):
    """(refined labels, components that kept their coarse shape)."""
    labels = np.asarray(labels)
    grey = image.GetNumberOfComponentsPerPixel() == 1
    if image.GetDimension() == 2:
        rgb = rgb_slice(windowed_array(image)) if grey else sitk.GetArrayFromImage(image)
        with progress.stage("refine (SAM)", total=1):
            refined, kept = refine_slice(predictor, rgb.astype(np.uint8), labels, settings)
            progress.advance()
        return refined, kept
    if windowed is None or not windowed.matches(image):
        windowed = WindowedSlices(image)  # the window over the whole volume; only the slices refined are windowed
    refined = np.zeros_like(labels)
    position = array_axis(settings.axis)
    busy = [int(k) for k in np.flatnonzero(np.any(labels != 0, axis=tuple(a for a in range(3) if a != position)))]
    total_kept = 0
    with progress.stage("refine (SAM)", total=len(busy)):
        for k in busy:
            if cancel is not None and cancel.is_set():
                raise OperationCancelled("refine cancelled")
            rgb = rgb_slice(windowed.slice(settings.axis, k))
            result, kept = refine_slice(predictor, rgb, slice_of(labels, settings.axis, k), settings)
            slice_of(refined, settings.axis, k)[...] = result
            total_kept += kept
            progress.advance()
    return refined, total_kept


def _kept_warning(kept: int) -> str:
    return f"SAM returned an empty mask for {kept} component(s); their coarse shape was kept"
