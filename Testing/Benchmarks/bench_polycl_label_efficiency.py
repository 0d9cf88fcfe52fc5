"""PolyCL label efficiency: fine-tuning from a contrastively pretrained encoder vs from scratch.

Two experiments, each with 5 / 10 / all labelled slices of the liver:

- phantoms: pretrain on many unlabelled phantoms (strategy S; strategy M with slice-level liver
  flags), fine-tune on ONE labelled phantom, Dice on held-out phantom volumes (largest component).
- real CT (``/work/shared/data``): pretrain on ``unlabeled_ct`` + ``abdomen_ct`` (strategy S, no
  labels, so the test volume's own image is in the pretraining set), fine-tune on the liver of
  ``abdomen_ct``; one contiguous slab of 40 axial slices (``--test-slab``, the lower half of the
  liver) never trains or validates and gives the Dice (pooled over the slab, on the original grid).
  Only the slab's two end slices touch training slices; the liver there must be learned from the
  other half of the organ.

    flock /tmp/segssl-bench.lock /work/venv/bin/python Testing/Benchmarks/bench_polycl_label_efficiency.py
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SegSSLLib.datasets import load_dataset, write_msd_dataset  # noqa: E402
from SegSSLLib.evaluation import dice_and_hd95  # noqa: E402
from SegSSLLib.intensity import IntensityWindow  # noqa: E402
from SegSSLLib.phantoms import PHANTOM_LABELS, make_ct_phantom  # noqa: E402
from SegSSLLib.polycl.finetuning import FinetuneOptions, Initialisation, finetune  # noqa: E402
from SegSSLLib.polycl.inference import PolyCLSegmenter  # noqa: E402
from SegSSLLib.polycl.model import ModelConfig  # noqa: E402
from SegSSLLib.polycl.pretraining import PretrainOptions, pretrain  # noqa: E402
from SegSSLLib.polycl.slice_cache import SlicingSettings  # noqa: E402

CPU = torch.device("cpu")
LIVER = 1
BUDGETS = (5, 10, None)  # None: every training slice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data", help="folder with unlabeled_ct/ and abdomen_ct/")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--pretrain-phantoms", type=int, default=12)
    parser.add_argument("--test-phantoms", type=int, default=6)
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--finetune-epochs", type=int, default=12)
    parser.add_argument("--epoch-samples", type=int, default=128, help="slices drawn per fine-tuning epoch")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-phantoms", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--test-slab", type=int, nargs=2, default=(50, 90), metavar=("FIRST", "END"),
                        help="held-out axial slices FIRST..END-1 of abdomen_ct (default: 50 90)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_phantoms:
            phantom_experiment(work / "phantoms", args)
        if not args.skip_real:
            real_experiment(work / "real", Path(args.data), args)
    print(f"\ntotal {time.perf_counter() - started:.0f} s, {args.threads} thread(s), image size {args.image_size}")


def settings(args):
    return ModelConfig(image_size=args.image_size), SlicingSettings(IntensityWindow(), image_size=args.image_size)


def run_pretraining(name, folders, strategy, args, work, label=None) -> Path:
    model, slicing = settings(args)
    out = work / f"pretrained_{name}.pt"
    began = time.perf_counter()
    options = PretrainOptions(strategy=strategy, epochs=args.pretrain_epochs, batch_size=16, label=label)
    history = pretrain(folders, out, model, slicing, options, CPU, cache_dir=work / "cache")
    print(f"  pretrain {name}: {len(history)} epochs, loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}, "
          f"{history[-1]['slices_per_second']:.0f} slices/s, {time.perf_counter() - began:.0f} s", flush=True)
    return out


def run_finetuning(folder, init_path, budget, seed, args, work, excluded=None) -> Path:
    model, slicing = settings(args)
    out = work / f"ft_{init_path.stem if init_path else 'scratch'}_{budget}_{seed}.pt"
    options = FinetuneOptions(
        label=LIVER, epochs=args.finetune_epochs, epoch_samples=args.epoch_samples, max_slices=budget, seed=seed, batch_size=8
    )
    init = Initialisation.load(init_path) if init_path else None
    finetune(folder, out, options, CPU, model, slicing, init, cache_dir=work / "cache", excluded_items=excluded)
    return out


def print_table(title, results, starts):
    print(f"\n{title}")
    header = "| labelled slices | " + " | ".join(starts) + " |"
    print(header)
    print("|" + "---|" * (len(starts) + 1))
    for budget in BUDGETS:
        cells = []
        for start in starts:
            values = results[(start, budget)]
            cells.append(f"{np.mean(values):.3f}" + (f" ± {np.std(values):.3f}" if len(values) > 1 else ""))
        print(f"| {budget or 'all'} | " + " | ".join(cells) + " |", flush=True)


def phantom_experiment(work: Path, args) -> None:
    print(f"phantoms: pretrain on {args.pretrain_phantoms}, fine-tune on 1, test on {args.test_phantoms}", flush=True)
    size, spacing = (64, 64, 32), (5.25, 5.25, 7.5)
    unlabelled = work / "unlabelled"
    cases = [(f"p{seed}", *make_ct_phantom(seed=100 + seed, size=size, spacing=spacing)) for seed in range(args.pretrain_phantoms)]
    write_msd_dataset(unlabelled, cases, PHANTOM_LABELS)  # labels used only for M's slice-level flags
    labelled = write_msd_dataset(work / "labelled", [("train", *make_ct_phantom(seed=1, size=size, spacing=spacing))], PHANTOM_LABELS)
    tests = [make_ct_phantom(seed=200 + seed, size=size, spacing=spacing) for seed in range(args.test_phantoms)]

    starts = {"scratch": None}
    starts["PolyCL S"] = run_pretraining("S", [unlabelled], "S", args, work)
    starts["PolyCL M"] = run_pretraining("M", [unlabelled], "M", args, work, label=LIVER)
    results = {}
    for name, init in starts.items():
        for budget in BUDGETS:
            scores = []
            for seed in args.seeds:
                model = PolyCLSegmenter.from_checkpoint(run_finetuning(labelled, init, budget, seed, args, work), CPU)
                for image, truth in tests:
                    predicted = model.segment(image) > 0
                    dice, _ = dice_and_hd95(predicted, sitk.GetArrayViewFromImage(truth) == LIVER, (1, 1, 1))
                    scores.append(dice)
            results[(name, budget)] = scores
            print(f"  {name:9s} {budget or 'all':>4} slices: Dice {np.mean(scores):.3f}", flush=True)
    print_table(f"Phantom liver Dice on {args.test_phantoms} held-out phantoms (mean ± sd over phantoms and seeds)",
                results, list(starts))


def real_experiment(work: Path, data: Path, args) -> None:
    abdomen, unlabelled = data / "abdomen_ct", data / "unlabeled_ct"
    print(f"\nreal CT: pretrain on {unlabelled.name} + {abdomen.name}, fine-tune on the liver of {abdomen.name}", flush=True)
    [case] = load_dataset(abdomen).cases
    image = sitk.ReadImage(str(case.image))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label))) == LIVER
    slices = image.GetSize()[2]
    # Excluded items count slices of the reoriented volume: LPS must keep K as the slice axis, in order.
    oriented = SlicingSettings(IntensityWindow()).orient(image)
    assert np.allclose(np.reshape(oriented.GetDirection(), (3, 3))[:, 2], np.reshape(image.GetDirection(), (3, 3))[:, 2])
    test_slices = np.arange(*args.test_slab)
    excluded = np.stack([np.zeros_like(test_slices), test_slices], axis=1)
    print(f"  {slices} axial slices, {int(truth.any(axis=(1, 2)).sum())} with liver; {len(test_slices)} held out "
          f"({int(truth[test_slices].any(axis=(1, 2)).sum())} with liver)", flush=True)

    starts = {"scratch": None, "PolyCL S": run_pretraining("real_S", [unlabelled, abdomen], "S", args, work)}
    results = {}
    for name, init in starts.items():
        for budget in BUDGETS:
            scores = []
            for seed in args.seeds:
                model = PolyCLSegmenter.from_checkpoint(run_finetuning(abdomen, init, budget, seed, args, work, excluded), CPU)
                predicted = model.probabilities(image).numpy() > 0.5
                dice, _ = dice_and_hd95(predicted[test_slices], truth[test_slices], (1, 1, 1))
                scores.append(dice)
            results[(name, budget)] = scores
            print(f"  {name:9s} {budget or 'all':>4} slices: Dice {np.mean(scores):.3f}", flush=True)
    print_table(f"abdomen_ct liver Dice on held-out slices {args.test_slab[0]}-{args.test_slab[1] - 1}", results, list(starts))


if __name__ == "__main__":
    main()
