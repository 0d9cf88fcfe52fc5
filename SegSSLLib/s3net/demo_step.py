"""The S3-Net step of ``segssl demo``: a phantom organ from one seed click (the whole-image route, then
the click route beside classical region growing), a skin lesion with no click.

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
    _liver_from_a_click(context, image, truth, seed)


# Where the click route works and where not, measured on the benchmark (Testing/Benchmarks/RESULTS.md,
# "From a click: S3-Net against region growing"); the demo's own phantom is scored live beside it.
CLICK_ROUTE_SUMMARY = (
    "On the benchmark (one click per structure, the same click for both) the click route is never below "
    "region growing: on the 7 public CT structures Dice 0.547 against 0.397 (liver 0.836 against 0.651, "
    "spleen 0.873 against 0.235, lung tumour 0.946 against 0.945), on 10 CT-phantom structures 0.697 against "
    "0.681, on dermoscopy 0.857 against 0.065. It does not work on the right kidney, stomach and pancreas "
    "of non-contrast CT (0.11, 0.17, 0.02): they touch tissue of the same density over broad contacts; "
    "add negative clicks or use PolyCL with labels. Where region growing ends on its own, S3-Net mostly "
    "keeps its region (ties on the left kidney, the lung tumour and 7 phantom structures)."
)


def _liver_from_a_click(context: DemoContext, image: sitk.Image, truth: sitk.Image, seed) -> None:
    from SegSSLLib.evaluation import dice_and_hd95
    from SegSSLLib.s3net.click_segment import ClickSettings
    from SegSSLLib.s3net.region_growing import region_grow

    liver = LABEL_VALUES["liver"]
    grown = region_grow(image, [seed])
    grown_dice = dice_and_hd95(grown, sitk.GetArrayViewFromImage(truth) == liver, tuple(reversed(image.GetSpacing())))[0]
    config = replace(_config(context), features=ClickSettings().config.features) if not context.quick else _config(context)
    result = segment_s3net(image, [seed], S3NetSettings(config, device=context.device), context.progress)
    _score_and_report(
        context, "S3-Net from a click: liver against region growing", "s3net_click_liver.nii.gz", _mask(result),
        liver, truth, image,
        f"The click route (the default with a seed): S3-Net trained for {result.training_steps} steps on a box of "
        f"{'×'.join(map(str, result.click_box.size))} voxels around the same click, with classical region growing "
        f"({'leaked past' if result.leaked else 'ended inside'} the 100 mm size limit) as its candidate. Region "
        f"growing alone from that click: Dice {grown_dice:.3f}. {CLICK_ROUTE_SUMMARY}",
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
