"""Overlap and boundary metrics between label maps (MONAI metrics underneath).

Conventions for empty structures: both empty -> Dice 1, HD95 0 mm; only one empty -> Dice 0 and
HD95 undefined (None in Python, null in JSON).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

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


# --- whole data sets ---------------------------------------------------------------------------

def evaluate_case(pred_path, truth_path, labels: list[int] | None = None) -> dict:
    """``evaluate_label_maps`` for one case of a data set, read from files.

    Without ``labels``, a case whose prediction and reference are both empty has nothing to score:
    it gets no labels and ``mean_dice`` None instead of an error, so a data set with empty cases runs.
    """
    from SegSSLLib.volumes import read_label_map

    truth = read_label_map(truth_path, what="reference label map")
    pred = read_label_map(
        pred_path, reference=truth, what="predicted label map", reference_name="its reference label map"
    )
    if labels is None and not sitk.GetArrayViewFromImage(truth).any() and not sitk.GetArrayViewFromImage(pred).any():
        return {"labels": {}, "mean_dice": None}
    return evaluate_label_maps(pred, truth, labels)


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1; 0 for one value); None for no values."""
    if not values:
        return None, None
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def summarize_cases(per_case: dict[str, dict], worst: int = 5) -> dict:
    """Per-label mean ± sd over cases, the mean case Dice and the ``worst`` cases, from per-case metrics.

    ``per_case``: case name -> ``evaluate_label_maps`` output. HD95 statistics use the cases where it
    is defined (both maps hold the label); ``hd95_undefined`` counts the others.
    """
    values = sorted({int(v) for metrics in per_case.values() for v in metrics["labels"]})
    labels = {}
    for value in values:
        scored = [m["labels"][str(value)] for m in per_case.values() if str(value) in m["labels"]]
        dice_mean, dice_sd = _mean_sd([s["dice"] for s in scored])
        hd95 = [s["hd95_mm"] for s in scored if s["hd95_mm"] is not None]
        hd95_mean, hd95_sd = _mean_sd(hd95)
        labels[str(value)] = {
            "cases": len(scored), "dice_mean": dice_mean, "dice_sd": dice_sd,
            "hd95_mm_mean": hd95_mean, "hd95_mm_sd": hd95_sd, "hd95_undefined": len(scored) - len(hd95),
        }
    case_dice = {name: m["mean_dice"] for name, m in per_case.items() if m["mean_dice"] is not None}
    mean_dice, mean_dice_sd = _mean_sd(list(case_dice.values()))
    ranked = sorted(case_dice.items(), key=lambda item: (item[1], item[0]))[: max(0, worst)]
    return {
        "cases": per_case,
        "labels": labels,
        "mean_dice": mean_dice,
        "mean_dice_sd": mean_dice_sd,
        "worst": [{"case": name, "mean_dice": dice} for name, dice in ranked],
    }


CSV_COLUMNS = ("case", "label", "dice", "hd95_mm")


def case_rows(per_case: dict[str, dict]) -> list[dict]:
    """One row per case and label (``CSV_COLUMNS``); HD95 None stays None (an empty CSV cell)."""
    return [
        {"case": name, "label": int(value), "dice": result["dice"], "hd95_mm": result["hd95_mm"]}
        for name, metrics in sorted(per_case.items())
        for value, result in sorted(metrics["labels"].items(), key=lambda item: int(item[0]))
    ]


def format_dataset_report(summary: dict, names: dict[int, str] | None = None) -> str:
    """Human-readable table of ``summarize_cases`` output plus the missing, extra and failed cases."""

    def pm(mean, sd, digits):
        return "n/a" if mean is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"

    lines = [f"{'label':>6}  {'name':<14} {'cases':>5}  {'Dice mean ± sd':>17}  {'HD95 (mm) mean ± sd':>20}"]
    for value, stats in summary["labels"].items():
        name = (names or {}).get(int(value), "")
        undefined = f"  ({stats['hd95_undefined']} undefined)" if stats["hd95_undefined"] else ""
        lines.append(
            f"{value:>6}  {name:<14} {stats['cases']:>5}  {pm(stats['dice_mean'], stats['dice_sd'], 4):>17}  "
            f"{pm(stats['hd95_mm_mean'], stats['hd95_mm_sd'], 2):>20}{undefined}"
        )
    lines.append(f"mean Dice per case: {pm(summary['mean_dice'], summary['mean_dice_sd'], 4)}")
    if summary["worst"]:
        worst = ", ".join(f"{w['case']} ({w['mean_dice']:.4f})" for w in summary["worst"])
        lines.append(f"worst cases: {worst}")
    for key, text in (("missing", "missing predictions (reference without prediction)"),
                      ("extra", "extra predictions (no reference)")):
        if summary.get(key):
            lines.append(f"{text}: {len(summary[key])}: {', '.join(summary[key])}")
    for name, message in (summary.get("failed") or {}).items():
        lines.append(f"failed: {name}: {message}")
    return "\n".join(lines)


@dataclass
class FolderEvaluation:
    report: dict  # the layout of ``segssl evaluate --pred DIR --json``: cases, labels, worst, missing, extra, failed
    run: object  # dataset_runs.RunSummary: every case's status and seconds, the number of processes


def evaluate_folders(
    predictions, references, labels: list[int] | None = None, worst: int = 5, progress=None,
    names: tuple[str, str] = ("`predictions`", "`references`"),
) -> FolderEvaluation:
    """Every label map of the folder ``predictions`` against the one of the same name in ``references``.

    Both are folders of label maps or MSD folders (whose label maps are used); file extensions may
    differ. A case that cannot be scored (another grid, an unreadable file) is listed under ``failed``
    and the others go on. Under torchrun the cases are split over the processes and every process
    gets the whole report. ``names``: how error messages call the two folders.
    """
    from SegSSLLib.dataset_runs import dataset_label_maps, pair_by_name, run_cases
    from SegSSLLib.progress import NO_PROGRESS

    if worst < 0:
        raise SegSSLError(f"`worst` must be 0 or more, got {worst}")
    pairing = pair_by_name(dataset_label_maps(predictions, names[0]), dataset_label_maps(references, names[1]))
    if not pairing.pairs:
        raise SegSSLError(
            f"no prediction in {predictions} has the name of a reference in {references} (predictions: "
            f"{', '.join(pairing.only_first[:3])}; references: {', '.join(pairing.only_second[:3])}) — "
            "name each prediction after its case"
        )
    cases = [_PairedCase(name, *paths) for name, paths in pairing.pairs.items()]
    run = run_cases(
        cases, lambda case: evaluate_case(case.prediction, case.reference, labels), progress or NO_PROGRESS,
        stage="evaluate cases",
    )
    report = summarize_cases({r.name: r.data for r in run.results if r.status == "done"}, worst)
    report["missing"] = pairing.only_second
    report["extra"] = pairing.only_first
    report["failed"] = {r.name: r.message for r in run.failed}
    return FolderEvaluation(report, run)


@dataclass(frozen=True)
class _PairedCase:
    name: str
    prediction: object
    reference: object
