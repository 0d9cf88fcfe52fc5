"""What every propagation backend is: a ``Propagator`` turns labels drawn on a few slices into labels on all.

Backends: ``sam2.Sam2Propagator`` (SAM 2's video memory) and ``registration.RegistrationPropagator``
(slice-to-slice registration, no weights, no torch). ``propagate.make_propagator`` picks one by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import SimpleITK as sitk

from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.propagation.annotation import Annotation


@dataclass
class PropagationResult:
    labels: np.ndarray  # (k, j, i), on the input grid
    forward_frames: list[int] = field(default_factory=list)  # frames visited going up the axis (SAM 2)
    reverse_frames: list[int] = field(default_factory=list)  # frames visited going down (SAM 2)
    prompts: list[tuple[int, int]] = field(default_factory=list)  # (frame, object) given to SAM 2's add_new_mask


class Propagator(Protocol):
    name: str  # for messages: "SAM 2", "registration"

    def describe(self) -> str:
        """One line for the log: the backend and how it runs."""

    def propagate(
        self, image: sitk.Image, labels: np.ndarray, annotation: Annotation, progress: Progress = NO_PROGRESS
    ) -> PropagationResult:
        """(k, j, i) ``labels`` drawn on ``annotation.slices`` of ``image`` -> labels on every slice."""
