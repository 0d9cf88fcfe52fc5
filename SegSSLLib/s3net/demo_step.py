"""The S3-Net step of ``segssl demo``: a phantom organ from one seed click, a skin lesion with no click.

The seed comes from the phantom's anatomy (where ``make_ct_phantom`` puts the liver), never from its
label map; the labels are used only to score the result.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import SimpleITK as sitk

from SegSSLLib.demo import DemoContext, Section
from SegSSLLib.phantoms import LABEL_VALUES
from SegSSLLib.s3net.clustering import cluster_image
from SegSSLLib.s3net.config import S3NetConfig
from SegSSLLib.s3net.selection import select_central_component, select_from_seeds
from SegSSLLib.volumes import label_array_to_image, write_image

log = logging.getLogger(__name__)

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
        config = replace(config, features=8, max_steps=3, crop_size=32, batch_size=2)
    return config


def liver_step(context: DemoContext) -> None:
    """The phantom's liver from one seed click."""
    config = _config(context)
    image = sitk.ReadImage(str(context.files["phantom_ct"]))
    truth = sitk.ReadImage(str(context.files["phantom_labels"]))
    seed = phantom_voxel(LIVER_CENTRE, image.GetSize())
    result = cluster_image(image, config, context.device, context.progress)
    selection = select_from_seeds(result.clusters, [seed])
    liver = LABEL_VALUES["liver"]
    prediction = label_array_to_image(selection.mask.astype(np.uint8) * liver, image)
    write_image(prediction, context.path("s3net_liver.nii.gz"))
    write_image(label_array_to_image(result.clusters, image), context.path("s3net_clusters.nii.gz"))
    metrics, table, picture = context.evaluate_and_picture(
        "S3-Net liver", prediction, truth, [liver], image, "s3net_liver"
    )
    context.add_section(
        Section(
            "S3-Net: liver from one seed click (no labels)",
            f"An S3-Net trained for {len(result.training.history)} steps on the phantom CT itself gave "
            f"{int(result.clusters.max())} clusters; the seed {','.join(map(str, seed))} (I,J,K, where the "
            "phantom puts the liver) picked the connected region of its cluster. The label map is used "
            f"only for scoring.\n\n```\n{table}\n```",
            metrics,
            [picture],
        )
    )


def lesion_step(context: DemoContext) -> None:
    """The dermoscopy phantom's lesion with no click (the central-component heuristic)."""
    config = _config(context)
    photo = sitk.ReadImage(str(context.files["phantom_skin"]))
    mask = sitk.ReadImage(str(context.files["phantom_skin_mask"]))
    lesion = LABEL_VALUES["lesion"]  # scored under the phantoms' name for a lesion
    truth = label_array_to_image((sitk.GetArrayFromImage(mask) > 0).astype(np.uint8) * lesion, mask)
    result = cluster_image(photo, config, context.device, context.progress, max_size=96 if context.quick else 256)
    selection = select_central_component(result.clusters)
    prediction = label_array_to_image(selection.mask.astype(np.uint8) * lesion, truth)
    write_image(prediction, context.path("s3net_lesion.png"))
    metrics, table, picture = context.evaluate_and_picture(
        "S3-Net lesion", prediction, truth, [lesion], photo, "s3net_lesion"
    )
    context.add_section(
        Section(
            "S3-Net: skin lesion with no click",
            f"An S3-Net trained on the RGB photograph ({len(result.training.history)} steps, "
            f"{int(result.clusters.max())} clusters); with no seed the central component that does not touch "
            f"the border was taken (docs/s3net.md).\n\n```\n{table}\n```",
            metrics,
            [picture],
        )
    )
