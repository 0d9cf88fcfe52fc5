"""Registration fallback: structures propagated from one painted slice, scored against full references.

Each structure is painted with its reference label on one axial slice, at 30 %, 50 % (the middle)
and 70 % of its extent (``--positions``), and propagated through the volume:

- ``abdomen_ct``: liver, spleen, right and left kidney (real non-contrast CT, 3 mm);
- ``lung_tumor_ct``: the tumour (label 1; real chest CT, 0.57 x 0.57 x 5 mm; 3 slices, so only its
  middle slice), a held-out case that no rule was tuned on;
- CT phantoms (``make_ct_phantom``, the demo's 96 x 96 x 48 volume at 3.5 x 3.5 x 5 mm) for
  ``--phantom-seeds``: liver, spleen, kidneys, with exact labels.

The result is scored (Dice, HD95) against the full reference. For real CT a copy of the painted slice
onto the structure's true extent (an oracle that knows where it ends) is printed as a floor.
``--baseline REV`` also runs ``registration_propagation.py`` as it was at git revision REV on the same
cases in the same run, alternating case by case so both see the same machine load. ``--rules`` changes
the new method's ``RuleSettings`` (ablations: e.g. ``tail_fraction=0`` switches the taper rule off).

    flock /tmp/segssl-bench.lock /work/venv/bin/python Testing/Benchmarks/bench_registration_fallback.py \\
        --baseline 67b9a94
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from SegSSLLib.evaluation import dice_and_hd95  # noqa: E402
from SegSSLLib.phantoms import make_ct_phantom  # noqa: E402
from SegSSLLib.propagation import registration as registration_propagation  # noqa: E402
from SegSSLLib.propagation.annotation import find_annotation  # noqa: E402
from SegSSLLib.propagation.rules import RuleSettings  # noqa: E402

ORGANS = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"}
LEAK_MM = 20.0  # an HD95 above this is counted as a leak (or a large miss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/work/shared/data", help="folder holding abdomen_ct/ and lung_tumor_ct/")
    parser.add_argument("--phantom-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--positions", type=float, nargs="+", default=[0.3, 0.5, 0.7],
                        help="painted slice, as a fraction of the structure's extent")
    parser.add_argument("--baseline", metavar="REV", help="git revision whose registration_propagation.py to compare")
    parser.add_argument("--rules", nargs="*", default=[], metavar="NAME=VALUE",
                        help="change RuleSettings of the new method (ablations), e.g. tail_fraction=0")
    args = parser.parse_args()

    rules = RuleSettings(**{name: float(value) for name, value in (item.split("=") for item in args.rules)})
    methods = {"new": partial(registration_propagation.propagate_by_registration,
                              settings=registration_propagation.RegistrationSettings(rules=rules))}
    if args.baseline:
        methods = {args.baseline: _module_at_revision(args.baseline).propagate_by_registration, **methods}
    columns = [f"{name} {what}" for name in methods for what in ("Dice", "HD95 mm", "s")]
    print("| case | painted slice | slices | copy onto true extent | " + " | ".join(columns) + " |")
    print("|" + "---|" * (4 + len(columns)))
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for group, case, image, truth in _cases(Path(args.data), args.phantom_seeds):
        present = np.flatnonzero(truth.any(axis=(1, 2)))
        positions = args.positions if len(present) >= 5 else [0.5]
        for position in positions:
            painted_slice = int(present.min() + int(position * (present.max() - present.min())))
            scores = _run_case(methods, image, truth, painted_slice)
            for name, (dice, hd95, seconds) in scores.items():
                groups[group][name].append((position, dice, hd95, seconds))
            if group.startswith("phantom"):
                continue  # phantoms: summarised below
            copy = np.zeros_like(truth)
            copy[present] = truth[painted_slice]
            floor = dice_and_hd95(copy, truth, tuple(reversed(image.GetSpacing())))[0]
            cells = [f"{dice:.3f} | {_mm(hd95)} | {seconds:.1f}" for dice, hd95, seconds in scores.values()]
            print(f"| {case} | {painted_slice} ({position:.0%}) | {len(present)} | {floor:.3f} | " + " | ".join(cells) + " |",
                  flush=True)
    print()
    print("| group | painted at | cases | " + " | ".join(f"{n} mean Dice | {n} worst Dice | {n} HD95 > {LEAK_MM:.0f} mm | {n} s"
                                                for n in methods) + " |")
    print("|" + "---|" * (3 + 4 * len(methods)))
    for group, by_method in groups.items():
        for position in [*sorted({p for p, *_ in next(iter(by_method.values()))}), None]:
            cells, count = [], 0
            for name in methods:
                rows = [r for r in by_method[name] if position is None or r[0] == position]
                dices = [r[1] for r in rows]
                leaks = sum(r[2] is None or r[2] > LEAK_MM for r in rows)
                cells.append(f"{np.mean(dices):.3f} | {min(dices):.3f} | {leaks} | {sum(r[3] for r in rows):.0f}")
                count = len(rows)
            where = "all" if position is None else f"{position:.0%}"
            print(f"| {group} | {where} | {count} | " + " | ".join(cells) + " |")


def _run_case(methods, image, truth, painted_slice) -> dict[str, tuple[float, float | None, float]]:
    painted = np.zeros(truth.shape, np.uint8)
    painted[painted_slice][truth[painted_slice]] = 1
    scores = {}
    for name, propagate in methods.items():
        started = time.perf_counter()
        result = propagate(image, painted, find_annotation(painted))
        seconds = time.perf_counter() - started
        dice, hd95 = dice_and_hd95(result == 1, truth, tuple(reversed(image.GetSpacing())))
        scores[name] = (dice, hd95, seconds)
    return scores


def _mm(hd95: float | None) -> str:
    return "n/a" if hd95 is None else f"{hd95:.1f}"


def _cases(data: Path, seeds: list[int]):
    """(group, name, image, boolean (k, j, i) reference) for every benchmark structure."""
    image, labels = _msd_case(data / "abdomen_ct")
    for value, organ in ORGANS.items():
        yield "abdomen_ct", f"abdomen_ct {organ}", image, labels == value
    image, labels = _msd_case(data / "lung_tumor_ct")
    yield "lung_tumor_ct (held out)", "lung_tumor_ct tumour", image, labels == 1
    for seed in seeds:
        image, label_image = make_ct_phantom(seed=seed, size=(96, 96, 48), spacing=(3.5, 3.5, 5.0))
        labels = sitk.GetArrayFromImage(label_image)
        for value, organ in ORGANS.items():
            yield f"phantoms ({len(seeds)} seeds x 4 organs)", f"phantom {seed} {organ}", image, labels == value


def _msd_case(folder: Path) -> tuple[sitk.Image, np.ndarray]:
    image = sitk.ReadImage(str(next((folder / "imagesTr").glob("*.nii*"))))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(next((folder / "labelsTr").glob("*.nii*")))))
    return image, labels


def _module_at_revision(revision: str):
    """``registration_propagation`` as it was at ``revision`` (it imports today's foundation modules)."""
    # Before the re-layout of issue 10 the module was sam/registration_propagation.py, importing from sam/.
    moved = {"SegSSLLib.sam.annotation": "SegSSLLib.propagation.annotation",
             "SegSSLLib.sam.propagation_rules": "SegSSLLib.propagation.rules"}
    for path in ("SegSSLLib/propagation/registration.py", "SegSSLLib/sam/registration_propagation.py"):
        shown = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode == 0:
            break
    else:
        raise SystemExit(f"no registration propagation module at {revision}")
    source = shown.stdout
    for old, new in moved.items():
        source = source.replace(old, new)
    name = f"registration_propagation_at_{revision}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    sys.modules[name] = module  # dataclasses look their module up here
    exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)
    return module


if __name__ == "__main__":
    main()
