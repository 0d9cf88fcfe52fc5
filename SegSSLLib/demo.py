"""``segssl demo``: every capability, end to end, on generated phantoms, with a report.

A step is a function ``step(context)``; each capability contributes its own from its package and
is listed in ``DEMO_STEPS``. Steps add sections (text, metrics, pictures) to the report.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegSSLLib import strict_json
from SegSSLLib.atomic import write_text_atomically
from SegSSLLib.evaluation import evaluate_label_maps, format_report
from SegSSLLib.intensity import IntensityWindow, to_uint8
from SegSSLLib.overlays import PREDICTION_COLOUR, REFERENCE_COLOUR, busiest_slice, overlay, save_png
from SegSSLLib.phantoms import PHANTOM_LABELS, make_ct_phantom, make_dermoscopy_phantom
from SegSSLLib.progress import Progress
from SegSSLLib.volumes import label_array_to_image, write_image

log = logging.getLogger(__name__)

# "module:function", run in this order.
DEMO_STEPS = [
    "SegSSLLib.demo:phantom_step",
    "SegSSLLib.demo:threshold_baseline_step",
    "SegSSLLib.polycl.demo_step:polycl_step",
    "SegSSLLib.sam.demo_step:propagation_step",
    "SegSSLLib.s3net.demo_step:liver_step",
    "SegSSLLib.s3net.demo_step:lesion_step",
]


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


def phantom_step(context: DemoContext) -> None:
    """Generate the demo data: a CT-like phantom with exact labels and a dermoscopy-like photograph."""
    size = (64, 64, 32) if context.quick else (96, 96, 48)
    spacing = (5.0, 5.0, 7.5) if context.quick else (3.5, 3.5, 5.0)
    image, labels = make_ct_phantom(seed=0, size=size, spacing=spacing)
    photo, lesion = make_dermoscopy_phantom(seed=0)
    for name, item in [
        ("phantom_ct.nii.gz", image),
        ("phantom_labels.nii.gz", labels),
        ("phantom_skin.png", photo),
        ("phantom_skin_mask.png", lesion * 255),
    ]:
        write_image(item, context.path(name))
        context.files[name.split(".")[0]] = context.path(name)
    context.add_section(
        Section(
            "Phantom data",
            f"CT-like abdomen {'×'.join(map(str, size))} voxels at {'×'.join(map(str, spacing))} mm "
            f"with labels {', '.join(f'{v} {n}' for v, n in PHANTOM_LABELS.items())}; "
            "a 192×192 dermoscopy-like photograph with its lesion mask.",
        )
    )


def threshold_baseline_step(context: DemoContext) -> None:
    """Bone by thresholding (> 250 HU, largest component): a floor that every model must clear easily."""
    image = sitk.ReadImage(str(context.files["phantom_ct"]))
    truth = sitk.ReadImage(str(context.files["phantom_labels"]))
    bone = sitk.BinaryThreshold(image, lowerThreshold=250, upperThreshold=4000, insideValue=1, outsideValue=0)
    largest = sitk.RelabelComponent(sitk.ConnectedComponent(bone), sortByObjectSize=True) == 1
    vertebra_value = 5
    prediction = label_array_to_image(sitk.GetArrayFromImage(largest) * vertebra_value, image)
    write_image(prediction, context.path("baseline_vertebra.nii.gz"))
    metrics, table, picture = context.evaluate_and_picture(
        "threshold baseline", prediction, truth, [vertebra_value], image, "baseline_vertebra"
    )
    context.add_section(
        Section(
            "Threshold baseline (vertebra)",
            "Voxels above 250 HU, largest connected component, scored against the phantom's vertebra label.\n\n"
            f"```\n{table}\n```",
            metrics,
            [picture],
        )
    )


def run_demo(out: Path, progress: Progress, device: str = "auto", quick: bool = False, steps=None) -> Path:
    """Run every step into ``out`` and write ``report.md`` and ``metrics.json``; returns the report path."""
    out.mkdir(parents=True, exist_ok=True)
    context = DemoContext(out=out, progress=progress, device=device, quick=quick)
    step_names = steps or DEMO_STEPS
    with progress.stage("demo", total=len(step_names)):
        for name in step_names:
            module_name, function_name = name.split(":")
            step = getattr(importlib.import_module(module_name), function_name)
            started = time.monotonic()
            before = len(context.sections)
            step(context)
            for section in context.sections[before:]:
                section.seconds = time.monotonic() - started
            progress.advance(step=function_name)
    return write_report(context)


def write_report(context: DemoContext) -> Path:
    lines = ["# SegSSL demo report", ""]
    for section in context.sections:
        lines += [f"## {section.title}", "", f"_{section.seconds:.1f} s_", "", section.text, ""]
        lines += [f"![{section.title}]({picture})" for picture in section.pictures]
        lines.append("")
    report = context.path("report.md")
    write_text_atomically(report, "\n".join(lines), "demo report")
    metrics = {section.title: section.metrics for section in context.sections if section.metrics}
    write_text_atomically(context.path("metrics.json"), strict_json.dumps(metrics, indent=2) + "\n", "demo metrics")
    return report
