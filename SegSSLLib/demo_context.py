"""What a demo step gets and gives: the run's context (output folder, device, shared files) and report sections."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegSSLLib.evaluation import evaluate_label_maps, format_report
from SegSSLLib.intensity import IntensityWindow, to_uint8
from SegSSLLib.overlays import PREDICTION_COLOUR, REFERENCE_COLOUR, busiest_slice, overlay, save_png
from SegSSLLib.phantoms import PHANTOM_LABELS
from SegSSLLib.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class Section:
    title: str
    text: str = ""
    metrics: dict = field(default_factory=dict)
    pictures: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class DemoContext:
    out: Path
    progress: Progress
    device: str = "auto"
    quick: bool = False  # smaller models and fewer steps, for tests
    files: dict[str, Path] = field(default_factory=dict)  # named artefacts that later steps reuse
    sections: list[Section] = field(default_factory=list)

    def path(self, name: str) -> Path:
        return self.out / name

    def add_section(self, section: Section) -> None:
        self.sections.append(section)

    def evaluate_and_picture(
        self, title: str, prediction: sitk.Image, truth: sitk.Image, labels: list[int], image: sitk.Image, stem: str
    ) -> tuple[dict, str, str]:
        """Score ``prediction`` and save an overlay of its busiest slice; returns (metrics, table, picture)."""
        metrics = evaluate_label_maps(prediction, truth, labels)
        table = format_report(metrics, PHANTOM_LABELS)
        picture = f"{stem}.png"
        truth_array = np.isin(sitk.GetArrayViewFromImage(truth), labels)
        pred_array = np.isin(sitk.GetArrayViewFromImage(prediction), labels)
        grey = sitk.GetArrayViewFromImage(image)
        if image.GetDimension() == 3:
            k = busiest_slice(truth_array)
            grey_slice = to_uint8(IntensityWindow().apply(grey[k]))
            picture_image = overlay(grey_slice, [(truth_array[k], REFERENCE_COLOUR), (pred_array[k], PREDICTION_COLOUR)])
        else:  # 2D picture (an RGB photograph's array is 3D too): outline on its luminance
            grey_slice = np.asarray(grey).mean(axis=-1) if grey.ndim == 3 else np.asarray(grey)
            picture_image = overlay(
                grey_slice.astype(np.uint8), [(truth_array, REFERENCE_COLOUR), (pred_array, PREDICTION_COLOUR)]
            )
        save_png(picture_image, self.path(picture))
        log.info("%s\n%s", title, table)
        return metrics, table, picture
