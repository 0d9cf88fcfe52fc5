"""The propagation workflow: pick a backend by name, load it, carry the annotation through the volume.

``BACKENDS`` is the one place that knows which backends exist; each entry builds a ``Propagator``.
The SAM 2 entry imports torch and sam2 only when it is called, so the registration path runs without
them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import SimpleITK as sitk

from SegSSLLib.errors import SegSSLError
from SegSSLLib.images import label_array, require_image
from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.propagation.annotation import Annotation, crowding_warning, describe, find_annotation
from SegSSLLib.propagation.base import Propagator
from SegSSLLib.propagation.registration import RegistrationPropagator, RegistrationSettings
from SegSSLLib.volumes import label_array_to_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PropagateSettings:
    """How ``propagate`` runs. ``backend``: "sam2", "registration", or "auto" (SAM 2 when a checkpoint is
    given or configured, else registration)."""

    backend: str = "auto"
    sam2_checkpoint: str | Path | None = None  # file or registry name; None: $SEGSSL_SAM2_CHECKPOINT or the cache
    sam2_config: str | None = None  # None: the checkpoint's, from the registry
    image_size: int | None = None  # SAM 2 input size in pixels (multiple of 32); None: the model's
    offload_state: bool = False  # keep SAM 2's per-frame memory on the CPU
    axis: int | None = None  # ITK axis the annotation was painted on; None: the one it covers fewest slices of
    device: object = "auto"  # "auto", "cpu", "cuda", "cuda:N", "mps" or a torch.device (SAM 2 only)
    registration: RegistrationSettings = RegistrationSettings()


@dataclass
class PropagateResult:
    label_map: sitk.Image  # on the input's grid
    backend: str  # "SAM 2" or "registration"
    annotation: Annotation  # the axis, the painted slices and the label values
    frames_visited: list[int] = field(default_factory=list)  # SAM 2: every frame, forward then reverse
    warnings: list[str] = field(default_factory=list)


def _sam2_backend(settings: PropagateSettings, progress: Progress) -> Propagator:
    from SegSSLLib.device import select_device
    from SegSSLLib.propagation.sam2 import Sam2Propagator
    from SegSSLLib.weights.models import load_sam2_video_predictor, resolve_sam2_config
    from SegSSLLib.weights.resolve import resolve_checkpoint

    if settings.sam2_config:
        resolve_sam2_config(settings.sam2_config)  # a wrong name fails before anything is downloaded or loaded
    checkpoint = resolve_checkpoint(settings.sam2_checkpoint, "sam2", progress=progress)
    device = select_device(settings.device) if isinstance(settings.device, str) else settings.device
    predictor = load_sam2_video_predictor(checkpoint, settings.sam2_config, device, settings.image_size)
    return Sam2Propagator(predictor, settings.offload_state)


def _registration_backend(settings: PropagateSettings, progress: Progress) -> Propagator:
    return RegistrationPropagator(settings.registration)


# name -> builder; ``segssl propagate --backend`` offers these names and "auto".
BACKENDS: dict[str, Callable[[PropagateSettings, Progress], Propagator]] = {
    "sam2": _sam2_backend,
    "registration": _registration_backend,
}


def choose_backend(settings: PropagateSettings) -> str:
    """The backend ``settings`` ask for, with "auto" decided: SAM 2 when a checkpoint is given or configured."""
    if settings.backend == "auto":
        from SegSSLLib.weights.resolve import configured_checkpoint

        return "sam2" if settings.sam2_checkpoint or configured_checkpoint("sam2") else "registration"
    if settings.backend not in BACKENDS:
        raise SegSSLError(f"`backend` {settings.backend!r} is not one of auto, {', '.join(BACKENDS)}")
    return settings.backend


def make_propagator(settings: PropagateSettings = PropagateSettings(), progress: Progress = NO_PROGRESS) -> Propagator:
    """The backend ``settings`` ask for, loaded (SAM 2: checkpoint resolved, model on its device)."""
    return BACKENDS[choose_backend(settings)](settings, progress)


def propagate(
    image: sitk.Image,
    annotation,
    settings: PropagateSettings = PropagateSettings(),
    progress: Progress = NO_PROGRESS,
    propagator: Propagator | None = None,
) -> PropagateResult:
    """Labels painted on one slice (or a few) of ``image`` carried through the whole volume.

    ``annotation``: a label map on ``image``'s grid (SimpleITK image) or a (k, j, i) array, one value per
    object. ``propagator``: a backend already loaded (``make_propagator``), to reuse one model for several
    volumes; by default the one ``settings`` ask for is loaded. Everything that can be wrong is checked
    (and the model loaded) before the first message is logged.
    """
    require_image(image, "image", dimensions=(3,))
    drawn = label_array(annotation, image, "annotation")
    found = find_annotation(drawn, settings.axis)
    if propagator is None:
        propagator = make_propagator(settings, progress)
    result = PropagateResult(label_map=None, backend=propagator.name, annotation=found)  # type: ignore[arg-type]
    log.info("annotation: %s", describe(found))
    _warn(result, crowding_warning(found))
    if settings.backend == "auto" and propagator.name == "registration":
        log.info("backend: registration (no SAM 2 checkpoint configured)")
    else:
        log.info("backend: %s", propagator.describe())
    predictor = getattr(propagator, "predictor", None)
    if predictor is not None and predictor.device.type == "cpu" and predictor.image_size >= 1024:
        _warn(result, f"SAM 2 at {predictor.image_size} px on a CPU takes seconds per slice — `image_size` 512 "
                      "(MedSAM2's size) or 256 is much faster")
    outcome = propagator.propagate(image, drawn, found, progress)
    result.label_map = label_array_to_image(outcome.labels, image)
    result.frames_visited = outcome.forward_frames + outcome.reverse_frames
    return result


def _warn(result: PropagateResult, warning: str | None) -> None:
    if warning:
        result.warnings.append(warning)
        log.warning(warning)
