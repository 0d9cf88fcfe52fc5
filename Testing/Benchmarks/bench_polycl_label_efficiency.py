"""PolyCL label efficiency: scratch vs the paper's pretraining vs SegSSL's pretraining, with the warnings.

Two experiments, each with 5 / 10 / all labelled slices of the liver and several fine-tuning seeds:

- phantoms: pretrain on many unlabelled phantoms, fine-tune on ONE labelled phantom, Dice of the
  largest component on held-out phantom volumes.
- real CT (``/work/shared/data``): pretrain on every CT there (``unlabeled_ct``, ``abdomen_ct``,
  ``lung_tumor_ct``; no labels are used, so the test volume's own image is in the pretraining set),
  fine-tune on the liver of ``abdomen_ct``; one contiguous slab of 40 axial slices (``--test-slab``,
  the lower half of the liver) never trains or validates and gives the Dice (pooled over the slab,
  on the original grid).

Starts (columns):

- ``scratch``: no pretraining;
- ``paper S``: strategy S on slices as cached (each scan's field of view fitted into the square, no
  augmentation) and plain fine-tuning, as in the published method;
- ``SegSSL P``: strategy P (position in the body across scans) on per-sample views at one common
  pixel size (``--spacing auto``, random zoom/shift/rotation/intensity), fine-tuned with the encoder
  at ``--encoder-lr-factor`` of the learning rate, unfrozen deepest block first over
  ``--unfreeze-epochs``;
- ``S + check``, ``P + check``: the library's scratch check (``polycl/scratch_check.py``, the
  default of ``segssl finetune --init``): of the pretrained run and the scratch run of the same
  budget and seed, the one with the better Dice on the validation slices (never trained on, never
  tested on) is kept. The two candidates are exactly the runs of the ``scratch`` and ``paper S`` /
  ``SegSSL P`` columns (training is deterministic on a CPU), so they are handed to
  ``finetune_checked`` as finished runs to ``resume``; ``--verify-reuse`` (default) also runs the
  first cell's check from nothing and asserts the same model.

Each pretraining run prints its loss, the nearest-neighbour probe and whether it warned; after the
tables, each pretraining is called harmful when some budget's mean Dice is below scratch by more
than the larger of the two seed spreads (sd over seeds). Each checked fine-tuning run prints both
validation Dice values, the check's verdict (paired bootstrap, ``scratch_check.compare``), which
model it kept, whether it warned, and whether the pretrained run was harmful on the test data (the
run the warning should catch; ``print_checks`` defines it), then a confusion table of verdicts
against harm. The checked columns are also shown under each rule for an inconclusive verdict
(``INCONCLUSIVE_RULES``): the kept candidate is one of the two finished runs, so this needs no
extra training.

    nice -n 10 /work/main/.venv/bin/python Testing/Benchmarks/bench_polycl_label_efficiency.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import logging
import shutil
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
from SegSSLLib.polycl.inference import PolyCLSegmenter, largest_component  # noqa: E402
from SegSSLLib.polycl.model import ModelConfig  # noqa: E402
from SegSSLLib.polycl.pretraining import PretrainOptions, pretrain  # noqa: E402
from SegSSLLib.polycl.scratch_check import (  # noqa: E402
    INCONCLUSIVE, INCONCLUSIVE_KEEPS, INCONCLUSIVE_RULES, candidate_paths, finetune_checked, share_line,
    validation_share,
)
from SegSSLLib.polycl.slice_cache import SlicingSettings, cache_datasets  # noqa: E402
from SegSSLLib.checkpoints import load_checkpoint  # noqa: E402

CPU = torch.device("cpu")
LIVER = 1
BUDGETS = (5, 10, None)  # None: every training slice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data", help="folder with unlabeled_ct/ and abdomen_ct/")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--widths", default="8,16,32,64,128", help="encoder widths (default: half the reference)")
    parser.add_argument("--pretrain-phantoms", type=int, default=8)
    parser.add_argument("--test-phantoms", type=int, default=4)
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--epoch-samples", type=int, default=96, help="slices drawn per fine-tuning epoch")
    parser.add_argument("--encoder-lr-factor", type=float, default=0.5, help="SegSSL P column's fine-tuning")
    parser.add_argument("--unfreeze-epochs", type=int, default=2, help="SegSSL P column's fine-tuning")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-phantoms", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--no-verify-reuse", dest="verify_reuse", action="store_false",
                        help="do not re-run the first checked cell from nothing")
    parser.add_argument("--budgets", nargs="+", default=["5", "10", "all"],
                        help="labelled-slice budgets (numbers or all; default: 5 10 all)")
    parser.add_argument("--validation-fraction", type=float, default=None,
                        help="share of the labelled slices that validate (default: the library's choice with the "
                        "scratch check, scratch_check.validation_share, for every column)")
    parser.add_argument("--ensemble", action="store_true",
                        help="also score the mean of the pretrained and scratch candidates' probabilities")
    parser.add_argument("--test-slab", type=int, nargs=2, default=(50, 90), metavar=("FIRST", "END"),
                        help="held-out axial slices FIRST..END-1 of abdomen_ct (default: 50 90)")
    args = parser.parse_args()
    global BUDGETS
    BUDGETS = tuple(None if budget == "all" else int(budget) for budget in args.budgets)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_phantoms:
            phantom_experiment(work / "phantoms", args)
        if not args.skip_real:
            real_experiment(work / "real", Path(args.data), args)
    print(f"\ntotal {time.perf_counter() - started:.0f} s, {args.threads} thread(s), image size {args.image_size}, "
          f"widths {args.widths}")


# Pretraining recipes: the paper's (slices as cached, no views) and SegSSL's (P on per-sample views).
RECIPES = {
    "paper S": dict(strategy="S", augment=False, spacing=None),
    "SegSSL P": dict(strategy="P", augment=True, spacing="auto"),
}


def settings(args):
    widths = tuple(int(w) for w in args.widths.split(","))
    return ModelConfig(image_size=args.image_size, widths=widths), SlicingSettings(IntensityWindow(), image_size=args.image_size)


def run_pretraining(name, folders, args, work) -> dict:
    model, slicing = settings(args)
    out = work / f"pretrained_{name.replace(' ', '_')}.pt"
    began = time.perf_counter()
    options = PretrainOptions(epochs=args.pretrain_epochs, batch_size=16, **RECIPES[name])
    history = pretrain(folders, out, model, slicing, options, CPU, cache_dir=work / "cache")
    report = load_checkpoint(out)["provenance"]["diagnostics"]
    probe = report["probe"]
    print(f"  pretrain {name}: {len(history)} epochs, loss " + " ".join(f"{h['loss']:.3f}" for h in history)
          + f", {time.perf_counter() - began:.0f} s; probe scan {probe['scan_accuracy']:.2f} (random "
          f"{probe['random_init']['scan_accuracy']:.2f}), position {probe['position_accuracy']:.2f} (random "
          f"{probe['random_init']['position_accuracy']:.2f}, chance {probe['position_chance']:.2f}); "
          f"warning: {'YES' if report['warning'] else 'no'}", flush=True)
    return {"path": out, "warned": report["warning"] is not None}


def finetune_options(name, budget, seed, args, fraction=None) -> FinetuneOptions:
    """``fraction`` None: ``--validation-fraction`` (None: the check chooses, ``validation_share``)."""
    careful = name.startswith("SegSSL")
    return FinetuneOptions(
        label=LIVER, epochs=args.finetune_epochs, epoch_samples=args.epoch_samples, max_slices=budget, seed=seed,
        validation_fraction=args.validation_fraction if fraction is None else fraction,
        batch_size=8, encoder_lr_factor=args.encoder_lr_factor if careful else 1.0,
        unfreeze_epochs=args.unfreeze_epochs if careful else 0,
    )


def slug(name: str) -> str:
    return name.replace(" ", "_").replace("+", "plus")


def run_finetuning(folder, start, budget, seed, args, work, excluded=None) -> dict:
    model, slicing = settings(args)
    name, init_path = start
    out = work / f"ft_{slug(name)}_{budget}_{seed}.pt"
    init = Initialisation.load(init_path) if init_path else None
    began = time.perf_counter()
    # Every column validates on the share the check chooses, so the plain runs are the check's candidates.
    fraction = SHARES[(budget, seed)]["fraction"]
    summary = finetune(folder, out, finetune_options(name, budget, seed, args, fraction), CPU, model, slicing, init,
                       cache_dir=work / "cache", excluded_items=excluded)
    return {"path": out, "summary": summary, "seconds": time.perf_counter() - began}


CHECKED = {"S + check": "paper S", "P + check": "SegSSL P"}


def run_checked(folder, name, init_path, budget, seed, args, work, runs, excluded=None, fresh=False) -> dict:
    """The scratch check over the finished scratch and pretrained runs of this cell (``fresh``: from nothing)."""
    model, slicing = settings(args)
    base = CHECKED[name]
    out = work / f"ft_{slug(name)}{'_fresh' if fresh else ''}_{budget}_{seed}.pt"
    if not fresh:
        paths = candidate_paths(out)
        paths["pretrained"].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(runs[(base, budget, seed)]["path"], paths["pretrained"])
        shutil.copyfile(runs[("scratch", budget, seed)]["path"], paths["scratch"])
    began = time.perf_counter()
    summary = finetune_checked(folder, out, finetune_options(base, budget, seed, args), CPU, model, slicing,
                               Initialisation.load(init_path), cache_dir=work / "cache", excluded_items=excluded,
                               resume=not fresh)
    seconds = time.perf_counter() - began
    assert summary["scratch_check"]["validation_share"]["fraction"] == SHARES[(budget, seed)]["fraction"]
    if not fresh and args.verify_reuse and (budget, seed) == (BUDGETS[0], args.seeds[0]):
        again = run_checked(folder, name, init_path, budget, seed, args, work, runs, excluded, fresh=True)
        same = states_equal(load_checkpoint(out)["state_dict"], load_checkpoint(again["path"])["state_dict"])
        print(f"  verify reuse ({name}, {budget} slices, seed {seed}): a check from nothing took "
              f"{again['seconds']:.0f} s and gave {'the same' if same else 'A DIFFERENT'} model", flush=True)
        assert same, "the check over reused runs differs from a check from nothing"
    return {"path": out, "summary": summary, "seconds": seconds}


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


SHARES = {}  # (budget, seed) -> scratch_check.validation_share of this experiment


def choose_shares(folder, args, work, excluded=None) -> None:
    """The validation share of every budget and seed, as the check chooses it (from the labelled slices only)."""
    _, slicing = settings(args)
    cases = cache_datasets([load_dataset(folder)], slicing, work / "cache")
    SHARES.clear()
    for budget in BUDGETS:
        for seed in args.seeds:
            SHARES[(budget, seed)] = validation_share(cases, finetune_options("scratch", budget, seed, args), excluded)
        lines = {share_line(SHARES[(budget, seed)]) for seed in args.seeds}
        print(f"  {budget or 'all'} slices: " + " | ".join(sorted(lines)), flush=True)


def run_all_starts(folder, pretrained, args, work, test_dice, excluded=None):
    """Every start × budget × seed; returns ({(start, budget): [Dice per seed]}, start names) and prints the runs."""
    choose_shares(folder, args, work, excluded)
    inits = {"scratch": None, **{name: run["path"] for name, run in pretrained.items()}}
    runs, results, seconds = {}, {}, {}
    for name, init in inits.items():
        seconds[name] = 0.0
        for budget in BUDGETS:
            for seed in args.seeds:
                run = run_finetuning(folder, (name, init), budget, seed, args, work, excluded)
                run["dice"] = test_dice(run["path"])
                runs[(name, budget, seed)] = run
                seconds[name] += run["seconds"]
            results[(name, budget)] = [runs[(name, budget, seed)]["dice"] for seed in args.seeds]
            print(f"  {name:9s} {budget or 'all':>4} slices: Dice " + " ".join(f"{v:.3f}" for v in results[(name, budget)])
                  + " (validation " + " ".join(f"{runs[(name, budget, s)]['summary']['best_validation_dice']:.3f}"
                                               for s in args.seeds) + ")", flush=True)
    for name, base in CHECKED.items():
        for budget in BUDGETS:
            for seed in args.seeds:
                run = run_checked(folder, name, inits[base], budget, seed, args, work, runs, excluded)
                run["dice"] = test_dice(run["path"])
                runs[(name, budget, seed)] = run
            results[(name, budget)] = [runs[(name, budget, seed)]["dice"] for seed in args.seeds]
        seconds[name] = seconds["scratch"] + seconds[base]
    print("  fine-tuning time per start (all budgets and seeds; a check = its two runs): "
          + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items()), flush=True)
    if args.ensemble:  # the two candidates' probabilities averaged, and a check that averages when inconclusive
        for name, base in CHECKED.items():
            for budget in BUDGETS:
                for seed in args.seeds:
                    pair = [runs[(base, budget, seed)]["path"], runs[("scratch", budget, seed)]["path"]]
                    runs[(ensemble_name(base), budget, seed)] = {"dice": test_dice(pair)}
                results[(ensemble_name(base), budget)] = [runs[(ensemble_name(base), budget, s)]["dice"] for s in args.seeds]
                results[(policy_name(name, "ensemble"), budget)] = [
                    runs[(ensemble_name(base), budget, seed)]["dice"]
                    if runs[(name, budget, seed)]["summary"]["scratch_check"]["verdict"] == INCONCLUSIVE
                    else runs[(name, budget, seed)]["dice"] for seed in args.seeds]
    for name, base in CHECKED.items():  # the same checks under each rule for an inconclusive verdict
        for rule in INCONCLUSIVE_RULES:
            for budget in BUDGETS:
                results[(policy_name(name, rule), budget)] = [
                    runs[(base if kept_under(runs[(name, budget, seed)], rule) == "pretrained" else "scratch", budget, seed)]["dice"]
                    for seed in args.seeds]
    print_checks(runs, results, args)
    return results, list(inits) + list(CHECKED)


def ensemble_name(base: str) -> str:
    return f"{base} + scratch, averaged"


def policy_name(name: str, rule: str) -> str:
    return f"{name} ({'inconclusive keeps ' + rule})"


def kept_under(run: dict, rule: str) -> str:
    """Which candidate the check keeps when an inconclusive verdict keeps ``rule`` (a confident one decides)."""
    decision = run["summary"]["scratch_check"]
    if decision["verdict"] != INCONCLUSIVE:
        return decision["kept"]
    return "pretrained" if rule == "pretrained" else decision["better_mean"]


def print_checks(runs, results, args):
    """Per checked run: the verdict, the choice, the warning, and the truth on the test slices; then confusion tables.

    Harmful (defined before the run): the pretrained run WITHOUT the check (the ``paper S`` / ``SegSSL P``
    column) scored below the scratch run of the same budget and seed on the held-out test data —
    "any drop" — or by more than the larger of the two columns' seed sd at that budget — "beyond sd".
    The warning should fire on harmful runs; the verdict is "scratch better" exactly when it fires.
    """
    for name, base in CHECKED.items():
        verdicts = ("pretrained better", INCONCLUSIVE, "scratch better")
        kinds = ("any drop", "beyond sd", "any drop, bootstrap alone", "beyond sd, bootstrap alone")
        tables = {kind: {(v, h): 0 for v in verdicts for h in (True, False)} for kind in kinds}
        for budget in BUDGETS:
            spread = max(np.std(results[(base, budget)]), np.std(results[("scratch", budget)]))
            for seed in args.seeds:
                summary = runs[(name, budget, seed)]["summary"]
                decision = summary["scratch_check"]
                warned = summary["scratch_check_warning"] is not None
                assert warned == (decision["verdict"] == "scratch better")
                pretrained_dice, scratch_dice = runs[(base, budget, seed)]["dice"], runs[("scratch", budget, seed)]["dice"]
                harmful = {"any drop": pretrained_dice < scratch_dice, "beyond sd": pretrained_dice < scratch_dice - spread}
                validation, bootstrap = decision["validation_dice"], decision["bootstrap"] or {}
                interval = bootstrap.get("interval")
                # Sensitivity only (not the library's rule): the verdict without the floor on slices with the structure.
                alone = (INCONCLUSIVE if not interval or interval[0] <= 0 <= interval[1]
                         else "pretrained better" if interval[0] > 0 else "scratch better")
                for kind, value in harmful.items():
                    tables[kind][(decision["verdict"], value)] += 1
                    tables[kind + ", bootstrap alone"][(alone, value)] += 1
                print(f"  {name} {budget or 'all':>4} slices seed {seed}: validation {base} {validation['pretrained']:.3f} "
                      f"vs scratch {validation['scratch']:.3f}"
                      + (f", 95% interval {interval[0]:+.3f}..{interval[1]:+.3f}" if interval else "")
                      + f", {bootstrap.get('slices_with_structure', 0)} of {bootstrap.get('slices', '?')} validation slices "
                      f"with liver -> {decision['verdict']}, kept {decision['kept']} (better mean {decision['better_mean']}), "
                      f"warning {'YES' if warned else 'no'}; test {base} {pretrained_dice:.3f} vs scratch {scratch_dice:.3f} "
                      f"({'harmful' if harmful['any drop'] else 'not harmful'}"
                      f"{', beyond sd ' + format(spread, '.3f') if harmful['beyond sd'] else ''})", flush=True)
        for kind, table in tables.items():
            print(f"  {name}, harmful = {kind}: " + "; ".join(
                f"{verdict}: {table[(verdict, True)]} harmful, {table[(verdict, False)]} not" for verdict in verdicts),
                flush=True)


def print_table(title, results, starts):
    """Mean ± sd over seeds of each seed's Dice (averaged over test volumes first)."""
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


def print_policies(results):
    """The checked columns under each rule for an inconclusive verdict (the library's is ``INCONCLUSIVE_KEEPS``)."""
    rules = INCONCLUSIVE_RULES + (("ensemble",) if (policy_name(next(iter(CHECKED)), "ensemble"), BUDGETS[0]) in results else ())
    starts = ["scratch"] + [policy_name(name, rule) for name in CHECKED for rule in rules]
    print_table(f"the same checks under each rule for an inconclusive verdict (library default: {INCONCLUSIVE_KEEPS})",
                results, starts)
    for name in CHECKED:
        for rule in rules:
            gains = [np.mean(results[(policy_name(name, rule), b)]) - np.mean(results[("scratch", b)]) for b in BUDGETS]
            print(f"  {policy_name(name, rule)} vs scratch: " + " / ".join(f"{g:+.3f}" for g in gains), flush=True)


def print_verdicts(results, pretrained):
    """Harmful: some budget's mean below scratch by more than the larger seed spread. Warned: did it say so."""
    for name, run in pretrained.items():
        below = []
        for budget in BUDGETS:
            ours, base = results[(name, budget)], results[("scratch", budget)]
            spread = max(np.std(ours), np.std(base))
            if np.mean(ours) < np.mean(base) - spread:
                below.append(f"{budget or 'all'} ({np.mean(ours) - np.mean(base):+.3f}, spread {spread:.3f})")
        harmful = bool(below)
        verdict = "agrees" if harmful == run["warned"] else "DISAGREES"
        print(f"  {name}: harmful {'yes: ' + ', '.join(below) if harmful else 'no'}; warned "
              f"{'yes' if run['warned'] else 'no'} -> warning {verdict}", flush=True)
    for name in CHECKED:
        gaps = []
        for budget in BUDGETS:
            ours, base = results[(name, budget)], results[("scratch", budget)]
            spread = max(np.std(ours), np.std(base))
            gaps.append(f"{budget or 'all'} {np.mean(ours) - np.mean(base):+.3f} (spread {spread:.3f}"
                        + (", BELOW" if np.mean(ours) < np.mean(base) - spread else "") + ")")
        print(f"  {name} vs scratch: " + ", ".join(gaps), flush=True)


def phantom_experiment(work: Path, args) -> None:
    print(f"phantoms: pretrain on {args.pretrain_phantoms}, fine-tune on 1, test on {args.test_phantoms}", flush=True)
    size, spacing = (64, 64, 32), (5.25, 5.25, 7.5)
    unlabelled = work / "unlabelled"
    cases = [(f"p{seed}", *make_ct_phantom(seed=100 + seed, size=size, spacing=spacing)) for seed in range(args.pretrain_phantoms)]
    write_msd_dataset(unlabelled, cases, PHANTOM_LABELS)  # labels used only for M's slice-level flags
    labelled = write_msd_dataset(work / "labelled", [("train", *make_ct_phantom(seed=1, size=size, spacing=spacing))], PHANTOM_LABELS)
    tests = [make_ct_phantom(seed=200 + seed, size=size, spacing=spacing) for seed in range(args.test_phantoms)]

    def test_dice(path):
        """As ``segssl segment``: probability > 0.5, largest component (several paths: their probabilities averaged)."""
        models = [PolyCLSegmenter.from_checkpoint(p, CPU) for p in (path if isinstance(path, list) else [path])]
        per_volume = []
        for image, truth in tests:
            predicted = sum(model.probabilities(image) for model in models) / len(models) > 0.5
            if predicted.any():
                predicted = largest_component(predicted)
            dice, _ = dice_and_hd95(predicted.numpy(), sitk.GetArrayViewFromImage(truth) == LIVER, (1, 1, 1))
            per_volume.append(dice)
        return float(np.mean(per_volume))

    pretrained = {name: run_pretraining(name, [unlabelled], args, work) for name in RECIPES}
    results, starts = run_all_starts(labelled, pretrained, args, work, test_dice)
    print_table(f"Phantom liver Dice on {args.test_phantoms} held-out phantoms (mean over phantoms; mean ± sd over "
                f"{len(args.seeds)} fine-tuning seeds)", results, starts)
    print_policies(results)
    print_verdicts(results, pretrained)


def real_experiment(work: Path, data: Path, args) -> None:
    abdomen = data / "abdomen_ct"
    every_ct = [data / "unlabeled_ct", abdomen, data / "lung_tumor_ct"]
    print(f"\nreal CT: pretrain on {' + '.join(f.name for f in every_ct)}, fine-tune on the liver of {abdomen.name}", flush=True)
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

    def test_dice(path):
        models = [PolyCLSegmenter.from_checkpoint(p, CPU) for p in (path if isinstance(path, list) else [path])]
        predicted = (sum(model.probabilities(image) for model in models) / len(models)).numpy() > 0.5
        dice, _ = dice_and_hd95(predicted[test_slices], truth[test_slices], (1, 1, 1))
        return float(dice)

    pretrained = {name: run_pretraining(name, every_ct, args, work) for name in RECIPES}
    results, starts = run_all_starts(abdomen, pretrained, args, work, test_dice, excluded)
    print_table(f"abdomen_ct liver Dice on held-out slices {args.test_slab[0]}-{args.test_slab[1] - 1} "
                f"(mean ± sd over {len(args.seeds)} fine-tuning seeds)", results, starts)
    print_policies(results)
    print_verdicts(results, pretrained)


if __name__ == "__main__":
    main()
