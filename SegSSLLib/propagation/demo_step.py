"""Demo step: the phantom's organs propagated from one annotated slice, scored against the full labels."""

from __future__ import annotations

import logging
import os

import numpy as np
import SimpleITK as sitk

from SegSSLLib.demo_context import DemoContext, Section
from SegSSLLib.phantoms import LABEL_VALUES, PHANTOM_LABELS
from SegSSLLib.volumes import label_array_to_image, write_image

log = logging.getLogger(__name__)

ORGANS = [LABEL_VALUES[name] for name in ("liver", "spleen", "kidney_right", "kidney_left")]
DEMO_IMAGE_SIZE = 256  # SAM 2 input size in the demo: a CPU handles a few frames a second


def propagation_step(context: DemoContext) -> None:
    """Paint the organs that are clear on one axial slice, propagate them through the volume, score."""
    from SegSSLLib.propagation.propagate import PropagateSettings, propagate
    from SegSSLLib.weights.resolve import configured_checkpoint

    image = sitk.ReadImage(str(context.files["phantom_ct"]))
    truth = sitk.ReadImage(str(context.files["phantom_labels"]))
    truth_array = sitk.GetArrayFromImage(truth)
    organs = np.where(np.isin(truth_array, ORGANS), truth_array, 0)
    k, painted = _best_slice(organs)
    drawn = np.zeros_like(organs)
    drawn[k] = np.where(np.isin(organs[k], painted), organs[k], 0)
    write_image(label_array_to_image(drawn, image), context.path("propagation_annotation.nii.gz"))

    checkpoint = configured_checkpoint("sam2") if os.environ.get("SEGSSL_DEMO_SAM2", "1") != "0" else None
    if checkpoint is not None:
        settings = PropagateSettings(
            backend="sam2", sam2_checkpoint=checkpoint, image_size=64 if context.quick else DEMO_IMAGE_SIZE,
            device=context.device,
        )
        backend = f"SAM 2 ({checkpoint.name})"
    else:
        settings = PropagateSettings(backend="registration")
        backend = "registration fallback (no SAM 2 checkpoint configured)"
    prediction = propagate(image, drawn, settings, context.progress).label_map
    write_image(prediction, context.path("propagation.nii.gz"))
    metrics, table, picture = context.evaluate_and_picture(
        "propagation", prediction, truth, painted, image, "propagation"
    )
    names = ", ".join(PHANTOM_LABELS[v] for v in painted)
    context.add_section(
        Section(
            "One-slice propagation",
            f"{names} painted on axial slice {k} only (of {organs.shape[0]}), carried through the volume by the "
            f"{backend}; scored against the phantom's full labels. `segssl propagate` does the same; with "
            "`--backend sam2` and a SAM 2 checkpoint (`segssl weights download sam2.1_hiera_t`) it uses SAM 2.\n\n"
            f"```\n{table}\n```",
            metrics,
            [picture],
        )
    )


def _best_slice(organs: np.ndarray) -> tuple[int, list[int]]:
    """The axial slice on which most organs are well visible (at least half their widest section), and those organs.

    A clinician paints a structure where it is clear, not at its tip.
    """
    values = [int(v) for v in np.unique(organs) if v != 0]
    areas = np.stack([(organs == v).sum(axis=(1, 2)) for v in values]).astype(float)  # (organs, slices)
    shares = areas / areas.max(axis=1, keepdims=True)
    clear = shares >= 0.5
    k = int(max(range(organs.shape[0]), key=lambda s: (clear[:, s].sum(), shares[:, s].sum())))
    return k, [v for v, ok in zip(values, clear[:, k]) if ok]
