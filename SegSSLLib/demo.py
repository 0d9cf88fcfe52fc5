"""``segssl demo``: every capability, end to end, on generated phantoms, with a report.

A step is a function ``step(context)`` (``demo_context.DemoContext``); each capability contributes its
own from its package and is listed in ``DEMO_STEPS``. Steps add sections (text, metrics, pictures) to
the report.
"""

from __future__ import annotations

import time
from pathlib import Path

import SimpleITK as sitk

from SegSSLLib import strict_json
from SegSSLLib.atomic import atomic_output
from SegSSLLib.demo_context import DemoContext, Section
from SegSSLLib.phantoms import PHANTOM_LABELS, make_ct_phantom, make_dermoscopy_phantom
from SegSSLLib.polycl.demo_step import polycl_step
from SegSSLLib.progress import Progress
from SegSSLLib.propagation.demo_step import propagation_step
from SegSSLLib.s3net.demo_step import lesion_step, liver_step
from SegSSLLib.volumes import label_array_to_image, write_image


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


# run in this order
DEMO_STEPS = [phantom_step, threshold_baseline_step, polycl_step, propagation_step, liver_step, lesion_step]


def run_demo(out: Path, progress: Progress, device: str = "auto", quick: bool = False, steps=None) -> Path:
    """Run every step into ``out`` and write ``report.md`` and ``metrics.json``; returns the report path."""
    out.mkdir(parents=True, exist_ok=True)
    context = DemoContext(out=out, progress=progress, device=device, quick=quick)
    steps = steps or DEMO_STEPS
    with progress.stage("demo", total=len(steps)):
        for step in steps:
            started = time.monotonic()
            before = len(context.sections)
            step(context)
            for section in context.sections[before:]:
                section.seconds = time.monotonic() - started
            progress.advance(step=step.__name__)
    return write_report(context)


def write_report(context: DemoContext) -> Path:
    lines = ["# SegSSL demo report", ""]
    for section in context.sections:
        lines += [f"## {section.title}", "", f"_{section.seconds:.1f} s_", "", section.text, ""]
        lines += [f"![{section.title}]({picture})" for picture in section.pictures]
        lines.append("")
    report = context.path("report.md")
    with atomic_output(report) as temporary:
        temporary.write_text("\n".join(lines))
    metrics = {section.title: section.metrics for section in context.sections if section.metrics}
    with atomic_output(context.path("metrics.json")) as temporary:
        temporary.write_text(strict_json.dumps(metrics, indent=2) + "\n")
    return report
