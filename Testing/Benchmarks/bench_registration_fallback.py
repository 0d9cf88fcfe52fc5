"""Registration fallback on real CT: organs propagated from their one annotated middle slice.

For each organ of ``abdomen_ct`` (liver, spleen, kidneys) the reference label on the middle slice of
the organ's axial extent is the annotation; the propagated label map is scored (Dice, HD95) against
the full reference. A copy of the annotated slice onto the organ's true extent ("oracle extent copy")
and onto no other slice ("annotated slice only") are printed as floors, measured in the same run.

    flock /tmp/segssl-bench.lock /work/venv/bin/python Testing/Benchmarks/bench_registration_fallback.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SegSSLLib.evaluation import dice_and_hd95  # noqa: E402
from SegSSLLib.sam.annotation import find_annotation  # noqa: E402
from SegSSLLib.sam.registration_propagation import RegistrationSettings, propagate_by_registration  # noqa: E402

ORGANS = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/work/shared/data/abdomen_ct")
    args = parser.parse_args()
    image = sitk.ReadImage(str(next(Path(args.data, "imagesTr").glob("*.nii*"))))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(next(Path(args.data, "labelsTr").glob("*.nii*")))))
    spacing_kji = tuple(reversed(image.GetSpacing()))
    print(f"volume {image.GetSize()} spacing {image.GetSpacing()}")
    print(f"{'organ':<13} {'slices':>7} {'Dice':>6} {'HD95mm':>7} {'copy-extent Dice':>16} {'slice-only Dice':>15} {'s':>5}")
    dices = []
    for value, name in ORGANS.items():
        organ = truth == value
        present = np.flatnonzero(organ.any(axis=(1, 2)))
        middle = int((present.min() + present.max()) // 2)
        annotation_array = np.zeros_like(truth)
        annotation_array[middle][organ[middle]] = value
        started = time.perf_counter()
        predicted = propagate_by_registration(image, annotation_array, find_annotation(annotation_array), RegistrationSettings())
        seconds = time.perf_counter() - started
        dice, hd95 = dice_and_hd95(predicted == value, organ, spacing_kji)
        copy = np.zeros_like(organ)
        copy[present] = organ[middle]
        copy_dice, _ = dice_and_hd95(copy, organ, spacing_kji)
        only_dice, _ = dice_and_hd95(annotation_array == value, organ, spacing_kji)
        dices.append(dice)
        hd = "n/a" if hd95 is None else f"{hd95:.1f}"
        print(f"{name:<13} {len(present):>7} {dice:6.3f} {hd:>7} {copy_dice:16.3f} {only_dice:15.3f} {seconds:5.1f}")
    print(f"mean Dice {np.mean(dices):.3f}")


if __name__ == "__main__":
    main()
