"""Registration fallback: structures propagated from one painted slice, scored against full references.

Cases, each painted with its reference label on the middle slice of the structure's axial extent:

- ``abdomen_ct``: liver, spleen, right and left kidney (real non-contrast CT, 3 mm);
- ``lung_tumor_ct``: the tumour (label 1; real chest CT, 0.57 x 0.57 x 5 mm), a held-out case that
  no rule was tuned on;
- CT phantoms (``make_ct_phantom``, the demo's 96 x 96 x 48 volume at 3.5 x 3.5 x 5 mm) for
  ``--phantom-seeds``: liver, spleen, kidneys, with exact labels.

The propagated label map is scored (Dice, HD95) against the full reference. A copy of the painted
slice onto the structure's true extent (an oracle that knows where it ends) is printed as a floor.
``--baseline REV`` also runs ``registration_propagation.py`` as it was at git revision REV, on the
same cases in the same run (alternating, so both see the same machine load).

    flock /tmp/segssl-bench.lock /work/venv/bin/python Testing/Benchmarks/bench_registration_fallback.py --baseline 67b9a94
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from SegSSLLib.evaluation import dice_and_hd95  # noqa: E402
from SegSSLLib.phantoms import make_ct_phantom  # noqa: E402
from SegSSLLib.sam import registration_propagation  # noqa: E402
from SegSSLLib.sam.annotation import find_annotation  # noqa: E402

ORGANS = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/work/shared/data", help="folder holding abdomen_ct/ and lung_tumor_ct/")
    parser.add_argument("--phantom-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--baseline", metavar="REV", help="git revision whose registration_propagation.py to compare")
    args = parser.parse_args()

    methods = {"new": registration_propagation}
    if args.baseline:
        methods = {args.baseline: _module_at_revision(args.baseline), **methods}
    header = ["case", "slices", "copy onto true extent"]
    for name in methods:
        header += [f"{name} Dice", f"{name} HD95 mm", f"{name} s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    scores: dict[str, dict[str, list[float]]] = {}
    for group, case, image, truth in _cases(Path(args.data), args.phantom_seeds):
        spacing_kji = tuple(reversed(image.GetSpacing()))
        present = np.flatnonzero(truth.any(axis=(1, 2)))
        middle = int((present.min() + present.max()) // 2)
        painted = np.zeros(truth.shape, np.uint8)
        painted[middle][truth[middle]] = 1
        copy = np.zeros_like(truth)
        copy[present] = truth[middle]
        row = [case, str(len(present)), f"{dice_and_hd95(copy, truth, spacing_kji)[0]:.3f}"]
        for name, module in methods.items():
            started = time.perf_counter()
            result = module.propagate_by_registration(image, painted, find_annotation(painted))
            seconds = time.perf_counter() - started
            dice, hd95 = dice_and_hd95(result == 1, truth, spacing_kji)
            scores.setdefault(group, {}).setdefault(name, []).append(dice)
            scores[group].setdefault(f"{name} s", []).append(seconds)
            row += [f"{dice:.3f}", "n/a" if hd95 is None else f"{hd95:.1f}", f"{seconds:.1f}"]
        print("| " + " | ".join(row) + " |", flush=True)
    print()
    for group, values in scores.items():
        parts = [f"{name} mean Dice {np.mean(values[name]):.3f}, {np.sum(values[f'{name} s']):.0f} s" for name in methods]
        print(f"{group} ({len(values['new'])} cases): " + "; ".join(parts))


def _cases(data: Path, seeds: list[int]):
    """(group, name, image, boolean (k, j, i) reference) for every benchmark case."""
    image, labels = _msd_case(data / "abdomen_ct")
    for value, organ in ORGANS.items():
        yield "abdomen_ct", f"abdomen_ct {organ}", image, labels == value
    image, labels = _msd_case(data / "lung_tumor_ct")
    yield "lung_tumor_ct (held out)", "lung_tumor_ct tumour", image, labels == 1
    for seed in seeds:
        image, label_image = make_ct_phantom(seed=seed, size=(96, 96, 48), spacing=(3.5, 3.5, 5.0))
        labels = sitk.GetArrayFromImage(label_image)
        for value, organ in ORGANS.items():
            yield "phantoms", f"phantom {seed} {organ}", image, labels == value


def _msd_case(folder: Path) -> tuple[sitk.Image, np.ndarray]:
    image = sitk.ReadImage(str(next((folder / "imagesTr").glob("*.nii*"))))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(next((folder / "labelsTr").glob("*.nii*")))))
    return image, labels


def _module_at_revision(revision: str):
    """``registration_propagation`` as it was at ``revision`` (it imports today's foundation modules)."""
    path = "SegSSLLib/sam/registration_propagation.py"
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    name = f"registration_propagation_at_{revision}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    sys.modules[name] = module  # dataclasses look their module up here
    exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)
    return module


if __name__ == "__main__":
    main()
