"""Overlap and boundary metrics between label maps (MONAI metrics underneath).

Conventions for empty structures: both empty -> Dice 1, HD95 0 mm; only one empty -> Dice 0 and
HD95 undefined (None in Python, null in JSON).
"""

from __future__ import annotations

import warnings

import numpy as np
import SimpleITK as sitk
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from SegSSLLib.errors import SegSSLError
from SegSSLLib.volumes import require_same_grid


def dice_and_hd95(pred: np.ndarray, truth: np.ndarray, spacing_kji) -> tuple[float, float | None]:
    """Dice and 95% Hausdorff distance (mm) of two boolean arrays on the same grid."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not pred.any() and not truth.any():
        return 1.0, 0.0
    if not pred.any() or not truth.any():
        return 0.0, None
    pred_t = torch.from_numpy(pred)[None, None].float()
    truth_t = torch.from_numpy(truth)[None, None].float()
    dice = float(compute_dice(pred_t, truth_t, include_background=True)[0, 0])
    with warnings.catch_warnings():
        # MONAI warns about an internal argument it passes itself; nothing for users to act on.
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = compute_hausdorff_distance(
            pred_t, truth_t, include_background=True, percentile=95, spacing=[float(s) for s in spacing_kji]
        )
    return dice, float(hd95[0, 0])


def evaluate_label_maps(pred: sitk.Image, truth: sitk.Image, labels: list[int] | None = None) -> dict:
    """Per-label Dice and HD95 in the JSON layout of ``segssl evaluate --json``.

    ``labels``: the label values to score; default every non-zero value found in ``pred`` or
    ``truth``, so a spurious label in the prediction lowers the mean (Dice 0, HD95 undefined).
    """
    require_same_grid(truth, pred, "the reference label map", "the predicted label map")
    pred_array = sitk.GetArrayViewFromImage(pred)
    truth_array = sitk.GetArrayViewFromImage(truth)
    if labels is None:
        present = set(np.unique(truth_array).tolist()) | set(np.unique(pred_array).tolist())
        labels = sorted(int(v) for v in present if v != 0)
        if not labels:
            raise SegSSLError(
                "both label maps are empty (all zero) — give `label` N to score a value anyway"
            )
    spacing_kji = tuple(reversed(truth.GetSpacing()))
    results = {}
    for value in labels:
        dice, hd95 = dice_and_hd95(pred_array == value, truth_array == value, spacing_kji)
        results[str(value)] = {"dice": dice, "hd95_mm": hd95}
    mean_dice = float(np.mean([r["dice"] for r in results.values()]))
    return {"labels": results, "mean_dice": mean_dice}


def format_report(metrics: dict, names: dict[int, str] | None = None) -> str:
    """Human-readable table of ``evaluate_label_maps`` output."""
    lines = [f"{'label':>6}  {'name':<14} {'Dice':>7} {'HD95 (mm)':>10}"]
    for value, result in metrics["labels"].items():
        name = (names or {}).get(int(value), "")
        hd95 = "n/a" if result["hd95_mm"] is None else f"{result['hd95_mm']:.2f}"
        lines.append(f"{value:>6}  {name:<14} {result['dice']:7.4f} {hd95:>10}")
    lines.append(f"{'mean':>6}  {'':<14} {metrics['mean_dice']:7.4f}")
    return "\n".join(lines)


def evaluate(prediction: sitk.Image, reference: sitk.Image, labels: list[int] | None = None) -> dict:
    """Dice and HD95 (mm) of ``prediction`` against ``reference`` (label maps on one grid), per label value.

    ``labels``: the values to score; default every non-zero value in either map. Returns
    ``{"labels": {"1": {"dice": ..., "hd95_mm": ...}, ...}, "mean_dice": ...}`` (``format_report`` prints it).
    """
    return evaluate_label_maps(prediction, reference, labels)
