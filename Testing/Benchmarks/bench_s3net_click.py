"""S3-Net from a click against classical region growing from the same click, side by side in one run.

For every labelled structure of the shared data (each organ of ``abdomen_ct``, the ``lung_tumor_ct``
tumour), of the CT phantoms and of the dermoscopy phantoms, one click is made: the most interior
voxel of the reference (the maximum of its Euclidean distance transform in voxel units, which is how
the issue's region-growing numbers were measured). The reference is used for nothing else than that
stand-in click and the scores.

- *region growing*: SimpleITK ``CurvatureFlow`` (5 iterations, time step 0.125), ``ConfidenceConnected``
  (3 iterations, multiplier 1.5, initial radius 2), a binary closing of radius 1, on the whole image
  (dermoscopy: on the luminance);
- *S3-Net click*: ``SegSSLLib.s3net.click_segment.segment_click`` with its defaults;
- two columns from the same S3-Net run, at no extra cost, show what its parts give: *S3-Net alone*
  (the click's own cluster piece in the box, no region growing) and *grown, limited* (the
  region-growing candidate clipped to the limit box, no S3-Net).

Seconds are per structure, click to mask (region growing: smoothing included; S3-Net: everything
including its own region growing), one torch thread.

    nice -n 10 /work/main/.venv/bin/python Testing/Benchmarks/bench_s3net_click.py \\
        --data /work/shared/data --threads 1 --json s3net_click.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SegSSLLib.evaluation import dice_and_hd95  # noqa: E402
from SegSSLLib.phantoms import make_ct_phantom, make_dermoscopy_phantom  # noqa: E402
from SegSSLLib.s3net.click_segment import ClickSettings, estimate_click_seconds, segment_click  # noqa: E402
from SegSSLLib.s3net.click_selection import seed_structure  # noqa: E402
from SegSSLLib.s3net.region_growing import region_grow  # noqa: E402

PHANTOM_STRUCTURES = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "vertebra"}
ABDOMEN_STRUCTURES = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "stomach", 6: "pancreas"}
# Loss-term ablations of the click route (not run unless asked for with --variants).
VARIANTS = {
    "paper": {},
    "no-affine": {"affine_weight": 0.0},
    "no-spatial": {"spatial_weight": 0.0},
    "published": {"loss_variant": "published"},
}


def cases(data: Path | None, groups: set[str]):
    """(group, name, image, labels array, {value: structure})."""
    if data is not None and "real" in groups:
        abdomen = data / "abdomen_ct"
        if abdomen.exists():
            labels = sitk.GetArrayFromImage(sitk.ReadImage(str(abdomen / "labelsTr/abdomen_001.nii.gz")))
            yield "real CT", "abdomen_ct", sitk.ReadImage(str(abdomen / "imagesTr/abdomen_001.nii.gz")), labels, ABDOMEN_STRUCTURES
        lung = data / "lung_tumor_ct"
        if lung.exists():
            labels = sitk.GetArrayFromImage(sitk.ReadImage(str(lung / "labelsTr/lung_001.nii.gz")))
            yield "real CT", "lung_tumor_ct", sitk.ReadImage(str(lung / "imagesTr/lung_001.nii.gz")), labels, {1: "tumour"}
    if "phantom" in groups:
        for seed in (0, 1):
            image, labels = make_ct_phantom(seed=seed)
            yield "CT phantoms", f"phantom-{seed}", image, sitk.GetArrayFromImage(labels), PHANTOM_STRUCTURES
    if "dermoscopy" in groups:
        for seed in (0, 1, 2):
            image, labels = make_dermoscopy_phantom(seed=seed)
            yield "dermoscopy", f"dermoscopy-{seed}", image, sitk.GetArrayFromImage(labels), {1: "lesion"}


def interior_click(mask: np.ndarray) -> tuple[int, ...]:
    """ITK-order index of the voxel farthest (in voxels) from the structure's boundary."""
    index = np.unravel_index(int(np.argmax(ndimage.distance_transform_edt(mask))), mask.shape)
    return tuple(int(v) for v in reversed(index))


def score(mask, truth, spacing_kji):
    dice, hd95 = dice_and_hd95(mask, truth, spacing_kji)
    return float(dice), (None if hd95 is None else float(hd95))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="the shared data folder (abdomen_ct, lung_tumor_ct)")
    parser.add_argument("--groups", default="real,phantom,dermoscopy", help="comma-separated: real, phantom, dermoscopy")
    parser.add_argument("--cases", default=None, help="comma-separated subset of images (e.g. abdomen_ct,phantom-0)")
    parser.add_argument("--variants", default="paper", help="comma-separated loss variants: " + ", ".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=1, help="random seeds of S3-Net per structure")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--speed", action="store_true",
        help="only time click to mask on lung_tumor_ct padded to 512x512x60 (edge slices repeated), 3 runs, "
        "region growing on the whole volume and near the click alternately; prints the estimate said before the run",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.speed:
        return speed(args.data)
    variants = args.variants.split(",")
    base = ClickSettings()
    runs = []
    for group, name, image, labels, structures in cases(args.data, set(args.groups.split(","))):
        if args.cases and name not in args.cases.split(","):
            continue
        spacing_kji = tuple(reversed(image.GetSpacing())) if image.GetDimension() == 3 else (1.0, 1.0)
        for value, structure in structures.items():
            truth = labels == value
            if not truth.any():
                continue
            click = interior_click(truth)
            started = time.perf_counter()
            grown = region_grow(image, [click])
            rg_seconds = time.perf_counter() - started
            rg_dice, rg_hd95 = score(grown, truth, spacing_kji)
            for variant in variants:
                settings = replace(base, config=replace(base.config, **VARIANTS[variant]))
                for repeat in range(args.repeats):
                    result = segment_click(image, [click], settings=settings, seed=repeat)
                    dice, hd95 = score(result.mask, truth, spacing_kji)
                    alone = np.zeros(truth.shape, bool)
                    local = [tuple(reversed(result.box.local(click)))]
                    slice_axis = 0
                    alone[result.box.array_slices] = seed_structure(result.clusters, local, slice_axis)
                    limited = result.candidate
                    run = {
                        "group": group, "case": name, "structure": structure, "variant": variant, "repeat": repeat,
                        "click": click, "rg_dice": rg_dice, "rg_hd95_mm": rg_hd95, "rg_seconds": rg_seconds,
                        "dice": dice, "hd95_mm": hd95, "seconds": result.seconds, "leaked": result.leaked,
                        "box": list(result.box.size), "steps": result.steps, "trainings": result.trainings,
                        "alone_dice": score(alone, truth, spacing_kji)[0], "limited_dice": score(limited, truth, spacing_kji)[0],
                    }
                    runs.append(run)
                    print(
                        f"{name:14s} {structure:12s} {variant:10s} r{repeat}: region growing {rg_dice:.3f} "
                        f"({rg_seconds:4.1f} s) | S3-Net click {dice:.3f} ({result.seconds:4.1f} s, box "
                        f"{'x'.join(map(str, result.box.size))}, {'leaked' if result.leaked else 'closed'}, "
                        f"{result.steps} steps) | alone {run['alone_dice']:.3f} | grown, limited {run['limited_dice']:.3f}",
                        flush=True,
                    )
    print()
    print(summary_table(runs, variants))
    if args.json:
        args.json.write_text(json.dumps({"settings": repr(base), "runs": runs}, indent=1) + "\n")
    return 0


def speed(data: Path) -> int:
    """Click to mask on a 512×512×60 chest CT: the lung tumour volume with its first and last slices
    repeated to 60, the click on the tumour; also the region growing alone, for scale."""
    image = sitk.ReadImage(str(data / "lung_tumor_ct/imagesTr/lung_001.nii.gz"))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "lung_tumor_ct/labelsTr/lung_001.nii.gz")))
    array = sitk.GetArrayFromImage(image)
    pad = (60 - array.shape[0]) // 2, 60 - array.shape[0] - (60 - array.shape[0]) // 2
    padded = sitk.GetImageFromArray(np.pad(array, (pad, (0, 0), (0, 0)), mode="edge"))
    padded.SetSpacing(image.GetSpacing())
    truth = np.pad(labels == 1, (pad, (0, 0), (0, 0)))
    click = interior_click(truth)
    print(f"volume {padded.GetSize()}, click {click}, torch threads {torch.get_num_threads()}")
    # CPU seconds of this process as well as wall seconds: on a busy shared machine the wall time
    # mostly measures the other jobs, while with one thread the CPU time is what an idle core would take.
    # "whole image": region growing over the whole volume, as before issue 14's speed work; "near the
    # click": on the size limit's box plus its margin (the default). Alternated in one process.
    routes = {"whole image": replace(ClickSettings(), region_margin_mm=None), "box near the click": ClickSettings()}
    estimate = estimate_click_seconds(padded.GetSize(), padded.GetSpacing(), [click], ClickSettings())
    print(f"expected before the run (estimate_click_seconds, idle machine): about {estimate.likely:.1f} s (region growing "
          f"{estimate.region_growing:.1f} s, S3-Net {estimate.s3net:.1f} s), at most {estimate.most:.1f} s")
    for run in range(3):
        started, cpu = time.perf_counter(), time.process_time()
        region_grow(padded, [click])
        rg_seconds, rg_cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"run {run}: region growing alone (whole image) {rg_seconds:.1f} s wall, {rg_cpu:.1f} s CPU", flush=True)
        for name, settings in routes.items():
            cpu = time.process_time()
            result = segment_click(padded, [click], settings=settings, seed=run)
            click_cpu = time.process_time() - cpu
            dice = score(result.mask, truth, tuple(reversed(padded.GetSpacing())))[0]
            print(f"run {run}: S3-Net click, region growing on the {name}: {result.seconds:.1f} s wall (region growing "
                  f"{result.region_seconds:.1f} s), {click_cpu:.1f} s CPU "
                  f"(box {'x'.join(map(str, result.box.size))}, {result.steps} steps, Dice {dice:.3f})", flush=True)
    return 0


def _hd(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def summary_table(runs: list[dict], variants: list[str]) -> str:
    """Markdown: per structure, region growing and S3-Net click (first variant's mean over repeats)."""
    lines = [
        "| image | structure | region growing Dice | S3-Net click Dice | RG HD95 (mm) | S3-Net HD95 (mm) | RG s | S3-Net s | "
        "S3-Net alone | grown, limited |" + "".join(f" {v} |" for v in variants[1:]),
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(variants[1:]),
    ]
    main_runs = [r for r in runs if r["variant"] == variants[0]]
    keys = list(dict.fromkeys((r["group"], r["case"], r["structure"]) for r in main_runs))
    rows = []
    for key in keys:
        same = [r for r in main_runs if (r["group"], r["case"], r["structure"]) == key]
        row = {
            "group": key[0],
            "rg": same[0]["rg_dice"], "s3": np.mean([r["dice"] for r in same]),
            "rg_hd": same[0]["rg_hd95_mm"], "s3_hd": _mean_or_none([r["hd95_mm"] for r in same]),
            "rg_s": same[0]["rg_seconds"], "s3_s": np.mean([r["seconds"] for r in same]),
            "alone": np.mean([r["alone_dice"] for r in same]), "limited": same[0]["limited_dice"],
        }
        rows.append(row)
        extra = ""
        for variant in variants[1:]:
            values = [r["dice"] for r in runs if r["variant"] == variant and (r["group"], r["case"], r["structure"]) == key]
            extra += f" {np.mean(values):.3f} |" if values else " |"
        better = "**" if row["s3"] >= row["rg"] else ""
        lines.append(
            f"| {key[1]} | {key[2]} | {row['rg']:.3f} | {better}{row['s3']:.3f}{better} | {_hd(row['rg_hd'])} | "
            f"{_hd(row['s3_hd'])} | {row['rg_s']:.1f} | {row['s3_s']:.1f} | {row['alone']:.3f} | {row['limited']:.3f} |" + extra
        )
    for group in [*dict.fromkeys(r["group"] for r in rows), None]:
        chosen = [r for r in rows if group is None or r["group"] == group]
        wins = sum(r["s3"] >= r["rg"] for r in chosen)
        extra = ""
        for variant in variants[1:]:
            values = [r["dice"] for r in runs if r["variant"] == variant and (group is None or r["group"] == group)]
            extra += f" **{np.mean(values):.3f}** |" if values else " |"
        lines.append(
            f"| {group or 'all'} ({len(chosen)}) | **mean** (S3-Net ≥ RG on {wins}) | **{np.mean([r['rg'] for r in chosen]):.3f}** | "
            f"**{np.mean([r['s3'] for r in chosen]):.3f}** | | | {np.mean([r['rg_s'] for r in chosen]):.1f} | "
            f"{np.mean([r['s3_s'] for r in chosen]):.1f} | {np.mean([r['alone'] for r in chosen]):.3f} | "
            f"{np.mean([r['limited'] for r in chosen]):.3f} |" + extra
        )
    return "\n".join(lines)


def _mean_or_none(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


if __name__ == "__main__":
    raise SystemExit(main())
