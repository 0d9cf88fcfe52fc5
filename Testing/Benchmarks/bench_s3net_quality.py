"""S3-Net quality: seeded Dice on phantoms and real CT, and what each loss term buys (ablation).

For every image one S3-Net is trained per loss variant and random seed (no labels); each structure
is then selected from the cluster map with one seed. The seed stands in for a user's click: it is the
most interior voxel of the reference structure (largest distance to its boundary, in mm). The
reference is used for nothing else than that stand-in click and the score.

Variants: paper (all three terms, as implemented), no-affine (affine weight 0), no-spatial (spatial
weight 0), published (the affine and spatial terms computed as the public code does: responses
rotated without transforming the input, and a spatial term on integer labels with no gradient).

    flock /tmp/segssl-bench.lock /work/venv/bin/python Testing/Benchmarks/bench_s3net_quality.py \\
        --data /work/shared/data --repeats 2 --json s3net_quality.json
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
from SegSSLLib.phantoms import make_ct_phantom  # noqa: E402
from SegSSLLib.s3net.clustering import cluster_image  # noqa: E402
from SegSSLLib.s3net.config import S3NetConfig  # noqa: E402
from SegSSLLib.s3net.selection import select_from_seeds  # noqa: E402

VARIANTS = {
    "paper": {},
    "no-affine": {"affine_weight": 0.0},
    "no-spatial": {"spatial_weight": 0.0},
    "published": {"loss_variant": "published"},
    # The spatial-weight sweep that chose the default (5): not run unless asked for with --variants.
    "spatial-1": {"spatial_weight": 1.0},
    "spatial-2": {"spatial_weight": 2.0},
    # The stopping rules compared when the default changed (not run unless asked for with --variants):
    # the old rule (stop at <= 8 clusters, counting every cluster, from the first step) and later stops.
    "stop-any-8": {"min_steps": 0, "min_cluster_share": 0.0, "min_clusters": 8},
    "min-steps-15": {"min_steps": 15, "min_cluster_share": 0.01, "min_clusters": 8},
    "min-steps-20": {"min_steps": 20, "min_cluster_share": 0.01, "min_clusters": 8},
    # The paper's 64 feature channels instead of the default 32.
    "features-64": {"features": 64},
}
DEFAULT_VARIANTS = ("paper", "no-affine", "no-spatial", "published")
PHANTOM_STRUCTURES = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "vertebra"}


def synthetic_cases():
    """Trivial images a segmenter must get right: a two-intensity disc (one slice) and, in tissue at
    40 HU, a 250 HU box and a -120 HU box (the stopping-rule checks in RESULTS.md)."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:64, 0:64]
    disc = np.hypot(rows - 34, cols - 30) < 14
    array = (np.where(disc, 160, 60) + rng.normal(0, 8, disc.shape)).astype(np.float32)[None]
    yield "disc", sitk.GetImageFromArray(array), sitk.GetImageFromArray(disc[None].astype(np.uint8)), {1: "disc"}
    array = 40 + rng.normal(0, 10, (16, 48, 48)).astype(np.float32)
    labels = np.zeros(array.shape, np.uint8)
    labels[3:13, 8:24, 6:20], labels[3:13, 26:42, 26:42] = 1, 2
    array[labels == 1], array[labels == 2] = 250, -120
    image, label_image = sitk.GetImageFromArray(array), sitk.GetImageFromArray(labels)
    image.SetSpacing((0.8, 0.8, 3.0))
    label_image.CopyInformation(image)
    yield "boxes", image, label_image, {1: "box_250", 2: "box_-120"}


def cases(data: Path | None, synthetic: bool = False):
    """(name, image, labels, {value: structure name}) for every benchmark image."""
    if synthetic:
        yield from synthetic_cases()
    for seed in (0, 1):
        image, labels = make_ct_phantom(seed=seed)
        yield f"phantom-{seed}", image, labels, PHANTOM_STRUCTURES
    if data is None:
        return
    abdomen = data / "abdomen_ct"
    if abdomen.exists():
        yield (
            "abdomen_ct",
            sitk.ReadImage(str(abdomen / "imagesTr/abdomen_001.nii.gz")),
            sitk.ReadImage(str(abdomen / "labelsTr/abdomen_001.nii.gz")),
            {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"},
        )
    lung = data / "lung_tumor_ct"
    if lung.exists():
        yield (
            "lung_tumor_ct",
            sitk.ReadImage(str(lung / "imagesTr/lung_001.nii.gz")),
            sitk.ReadImage(str(lung / "labelsTr/lung_001.nii.gz")),
            {1: "tumour"},
        )


def interior_seed(mask: np.ndarray, spacing_ijk) -> tuple[int, int, int]:
    """The stand-in click: (i, j, k) of the voxel farthest (in mm) from the structure's boundary."""
    distance = ndimage.distance_transform_edt(mask, sampling=tuple(reversed(spacing_ijk)))
    k, j, i = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return int(i), int(j), int(k)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="the shared data folder (abdomen_ct, lung_tumor_ct)")
    parser.add_argument("--repeats", type=int, default=2, help="random seeds per variant")
    parser.add_argument(
        "--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS)
    )
    parser.add_argument("--synthetic", action="store_true", help="also the synthetic disc and boxes images")
    parser.add_argument("--cases", default=None, help="comma-separated subset of the images (e.g. phantom-0,abdomen_ct)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write every run's numbers here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    base = S3NetConfig()
    runs = []
    for name, image, labels, structures in cases(args.data, args.synthetic):
        if args.cases and name not in args.cases.split(","):
            continue
        label_array = sitk.GetArrayFromImage(labels)
        spacing_kji = tuple(reversed(image.GetSpacing()))
        seeds = {value: interior_seed(label_array == value, image.GetSpacing()) for value in structures}
        for variant in variants:
            config = replace(base, **VARIANTS[variant])
            for repeat in range(args.repeats):
                started = time.perf_counter()
                result = cluster_image(image, config, "cpu", seed=repeat)
                seconds = time.perf_counter() - started
                for value, structure in structures.items():
                    mask = select_from_seeds(result.clusters, [seeds[value]]).mask
                    dice, hd95 = dice_and_hd95(mask, label_array == value, spacing_kji)
                    runs.append(
                        {
                            "case": name, "structure": structure, "variant": variant, "repeat": repeat,
                            "dice": dice, "hd95_mm": hd95, "seed": seeds[value], "seconds": seconds,
                            "steps": len(result.training.history), "clusters": int(result.clusters.max()),
                        }
                    )
                print(
                    f"{name:14s} {variant:10s} repeat {repeat}: {seconds:5.1f} s, {len(result.training.history)} steps, "
                    f"{int(result.clusters.max())} clusters, Dice "
                    + " ".join(f"{r['structure']} {r['dice']:.3f}" for r in runs if r["case"] == name
                               and r["variant"] == variant and r["repeat"] == repeat),
                    flush=True,
                )
    print()
    print(summary_table(runs, variants))
    if args.json:
        args.json.write_text(json.dumps({"config": base.to_dict(), "runs": runs}, indent=1) + "\n")
    return 0


def summary_table(runs: list[dict], variants: list[str]) -> str:
    """Markdown: mean Dice (± spread over repeats) per structure and variant, and per-case means."""
    lines = ["| image | structure | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    keys = list(dict.fromkeys((r["case"], r["structure"]) for r in runs))
    for case, structure in keys:
        cells = []
        for variant in variants:
            values = [r["dice"] for r in runs if (r["case"], r["structure"], r["variant"]) == (case, structure, variant)]
            cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "")
        lines.append(f"| {case} | {structure} | " + " | ".join(cells) + " |")
    for case in dict.fromkeys(r["case"] for r in runs):
        cells = [f"**{np.mean([r['dice'] for r in runs if r['case'] == case and r['variant'] == v]):.3f}**" for v in variants]
        lines.append(f"| {case} | **mean** | " + " | ".join(cells) + " |")
    cells = [f"**{np.mean([r['dice'] for r in runs if r['variant'] == v]):.3f}**" for v in variants]
    lines.append("| all | **mean** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
