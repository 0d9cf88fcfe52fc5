"""The S3-Net step of ``segssl demo``: a phantom organ from one seed click, a skin lesion with no click.

The seed comes from the phantom's anatomy (where ``make_ct_phantom`` puts the liver), never from its
label map; the labels are used only to score the result.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import SimpleITK as sitk
import torch

from SegSSLLib.demo_context import DemoContext, Section
from SegSSLLib.phantoms import LABEL_VALUES
from SegSSLLib.s3net.config import S3NetConfig
from SegSSLLib.s3net.segment import S3NetResult, S3NetSettings, segment_s3net
from SegSSLLib.volumes import label_array_to_image, write_image

# Centre of the liver in the phantom's normalised coordinates (x, y, z in [-1, 1]), as in phantoms.py.
LIVER_CENTRE = (-0.36, -0.05, 0.3)


def phantom_voxel(normalised_xyz, size) -> tuple[int, int, int]:
    """The voxel index (i, j, k) at normalised phantom coordinates (inverse of the phantom's sampling)."""
    return tuple(
        int(round((value / (1 - 1 / n) + 1) / 2 * (n - 1))) for value, n in zip(normalised_xyz, size)
    )


def _config(context: DemoContext) -> S3NetConfig:
    config = S3NetConfig(max_steps=25)
    if context.quick:
        config = replace(config, features=8, max_steps=8, crop_size=48, batch_size=2)
    return config


@contextmanager
def _one_thread():
    # S3-Net's convolutions are small: on a busy 2-core machine two torch threads mostly wait for each
    # other (the quick liver step took 12 s with two threads, 2 s with one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def liver_step(context: DemoContext) -> None:
    """The phantom's liver from one seed click."""
    with _one_thread():
        _liver(context)


def lesion_step(context: DemoContext) -> None:
    """The dermoscopy phantom's lesion with no click (the central-component heuristic)."""
    with _one_thread():
        _lesion(context)


def _liver(context: DemoContext) -> None:
    image = sitk.ReadImage(str(context.files["phantom_ct"]))
    truth = sitk.ReadImage(str(context.files["phantom_labels"]))
    seed = phantom_voxel(LIVER_CENTRE, image.GetSize())
    result = segment_s3net(image, [seed], S3NetSettings(_config(context), device=context.device, route="whole"), context.progress)
    write_image(result.clusters, context.path("s3net_clusters.nii.gz"))
    _score_and_report(
        context, "S3-Net: liver from one seed click (no labels)", "s3net_liver.nii.gz", _mask(result),
        LABEL_VALUES["liver"], truth, image,
        f"An S3-Net trained for {result.training_steps} steps on the phantom CT itself gave "
        f"{result.cluster_count} clusters; the seed {','.join(map(str, seed))} (I,J,K, where the phantom "
        "puts the liver) picked the connected region of its cluster. The label map is used only for scoring.",
    )


def _lesion(context: DemoContext) -> None:
    photo = sitk.ReadImage(str(context.files["phantom_skin"]))
    mask = sitk.ReadImage(str(context.files["phantom_skin_mask"]))
    lesion = LABEL_VALUES["lesion"]  # scored under the phantoms' name for a lesion
    truth = label_array_to_image((sitk.GetArrayFromImage(mask) > 0).astype(np.uint8) * lesion, mask)
    max_size = 128 if context.quick else 256
    settings = S3NetSettings(_config(context), max_size=max_size, device=context.device)
    result = segment_s3net(photo, [], settings, context.progress)
    _score_and_report(
        context, "S3-Net: skin lesion with no click", "s3net_lesion.png", _mask(result), lesion, truth, photo,
        f"An S3-Net trained on the RGB photograph ({result.training_steps} steps, "
        f"{result.cluster_count} clusters); with no seed the central component that does not touch "
        "the border was taken (docs/s3net.md).",
    )


def _mask(result: S3NetResult) -> np.ndarray:
    return sitk.GetArrayFromImage(result.label_map) > 0


def _score_and_report(context: DemoContext, title, file_name, mask, value, truth, image, text) -> None:
    """Write the selected ``mask`` as label ``value``, score it against ``truth`` and add a report section."""
    prediction = label_array_to_image(mask.astype(np.uint8) * value, truth)
    write_image(prediction, context.path(file_name))
    stem = file_name.split(".")[0]
    metrics, table, picture = context.evaluate_and_picture(title, prediction, truth, [value], image, stem)
    context.add_section(Section(title, f"{text}\n\n```\n{table}\n```", metrics, [picture]))
