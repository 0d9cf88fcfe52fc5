"""Fine-tuning that cannot end worse than scratch on the user's own validation slices.

A pretrained encoder can make fine-tuning worse than training from scratch (an encoder that learned
"which scan" instead of anatomy, issue 16). No threshold on the pretraining can say that for sure,
so this check measures it: the same network is fine-tuned twice on the same labelled slices —
once from the pretrained encoder, once from scratch (same seed, same split, plain options) — and
the model that scores better on the validation slices is kept. Validation slices never train
(``datasets.split_labelled_slices``; held-out test slices, ``excluded_items``, take part in neither),
and both candidates' epochs are chosen on them by the same rule, so neither side gets an advantage.
Without a ``validation_fraction`` from the user, the share that validates is chosen from the labelled
slices (``validation_share``): the smallest of ``VALIDATION_SHARES`` that lets the check decide.

The two finished models are compared as ``segssl segment`` will use them (``inference_dice``):
each validation case's slices go through the network, the foreground is the largest connected
component of the whole stack, and the Dice is pooled over the validation slices. The per-slice
Dice that ranks epochs counts every stray blob, which a user never sees.

Whether the validation slices can tell the two apart at all is tested (``compare``): a paired
bootstrap over the validation slices of the pooled-Dice difference gives a ``CONFIDENCE`` interval,
and the verdict is "pretrained better", "scratch better" or "inconclusive" — inconclusive also
whenever fewer than ``minimum_slices()`` validation slices show the structure, because below that
not even a unanimous result is significant (a sign test). A confident verdict decides; an
inconclusive one keeps the candidate named by ``INCONCLUSIVE_KEEPS`` (docs/polycl.md says why).
When scratch is better with confidence, one warning line says so and what to do; an inconclusive
verdict gets its own one line that says what would make it conclusive. The verdict, the choice,
both scores and the candidate files go into the model's provenance (``scratch_check``). The cost is a second
fine-tuning run: about twice the time. The two candidates stay next to ``out`` in
``<out stem>.candidates/`` (``pretrained.pt``, ``scratch.pt``), so ``resume`` continues either, and
a user can look at the other one.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from SegSSLLib.checkpoints import load_checkpoint, save_checkpoint
from SegSSLLib.datasets import load_dataset
from SegSSLLib.errors import SegSSLError
from SegSSLLib.polycl import distributed
from SegSSLLib.polycl.datasets import split_labelled_slices
from SegSSLLib.polycl.finetuning import (
    SEGMENTATION_KIND,
    FinetuneOptions,
    Initialisation,
    finetune,
    labelled_cases,
    selection_score,
)
from SegSSLLib.polycl.inference import largest_component
from SegSSLLib.polycl.model import SegmentationNet
from SegSSLLib.polycl.pretraining import PRETRAIN_KIND
from SegSSLLib.polycl.slice_cache import cache_datasets
from SegSSLLib.progress import NO_PROGRESS, Progress

log = logging.getLogger(__name__)

CANDIDATES = ("pretrained", "scratch")


def applies(init: Initialisation | None) -> bool:
    """The check compares a *pretrained* start with scratch; continuing a fine-tuned model is not compared."""
    return init is not None and init.kind == PRETRAIN_KIND


def candidate_paths(out: str | os.PathLike) -> dict[str, Path]:
    """Where the two candidates are written: ``<out stem>.candidates/pretrained.pt`` and ``.../scratch.pt``."""
    out = Path(out)
    folder = out.with_name(out.stem + ".candidates")
    return {name: folder / f"{name}{out.suffix or '.pt'}" for name in CANDIDATES}


def scratch_options(options: FinetuneOptions) -> FinetuneOptions:
    """The scratch candidate's options: the same run without the pretrained-layer settings (nothing to protect)."""
    return replace(options, freeze_epochs=0, unfreeze_epochs=0, encoder_lr_factor=1.0, layer_decay=1.0)


def check_validation(options: FinetuneOptions) -> None:
    if options.validation_fraction is not None and options.validation_fraction <= 0:
        raise SegSSLError(
            "`validation_fraction` 0 leaves no validation slices to compare the pretrained start with scratch — "
            "give `validation_fraction` above 0, or do without the scratch check (`scratch_check`)"
        )


INFERENCE_RULE = "validation Dice of the largest component, as segmented"

CONFIDENCE = 0.95  # two-sided: a verdict needs the whole 95 % interval of the difference on one side of 0
RESAMPLES = 2000
PRETRAINED_BETTER, SCRATCH_BETTER, INCONCLUSIVE = "pretrained better", "scratch better", "inconclusive"
# What an inconclusive verdict keeps: "better mean" (the candidate with the higher validation Dice,
# ties to scratch) or "pretrained" (the start the user asked for). Chosen by the benchmark
# (Testing/Benchmarks/RESULTS.md, *Scratch check with a verdict*; docs/polycl.md).
INCONCLUSIVE_RULES = ("better mean", "pretrained")
INCONCLUSIVE_KEEPS = "better mean"


def minimum_slices(confidence: float = CONFIDENCE) -> int:
    """Fewest validation slices with the structure for a confident verdict: 6 at 95 %.

    With n slices, even when every slice favours the same candidate a two-sided sign test gives
    p = 2·0.5ⁿ; below this n that is above 1 − ``confidence``, whatever the bootstrap says (a
    percentile bootstrap over 2 slices that agree gives an interval that excludes 0).
    """
    n = 1
    while 2 * 0.5**n > 1 - confidence:
        n += 1
    return n


# The validation share when the user gives none (``validation_fraction`` None): the smallest of these
# that gives ``minimum_slices()`` validation slices with the structure, among those that leave training
# at least ``training_floor`` slices with the structure; none reaching it: the largest such share;
# none leaving the floor: the first (the plain default). Chosen from the labelled slices that take
# part (never ``excluded_items``). docs/polycl.md, *Scratch check*.
VALIDATION_SHARES = (0.2, 0.3, 0.4)


def training_floor(validation_with_structure: int, max_slices: int | None) -> int:
    """Fewest training slices with the structure a share may leave: the budget asked for (``max_slices``), at
    least ``minimum_slices()``, and at least as many as validate — validation never takes most of the structure."""
    return max(max_slices or 0, minimum_slices(), validation_with_structure)


def validation_share(cases, options: FinetuneOptions, excluded_items: np.ndarray | None = None) -> dict:
    """The ``validation_fraction`` the check runs with, and why: a ``validation_fraction`` the user gave is
    kept ("given"); None chooses one of ``VALIDATION_SHARES`` from the labelled data ("automatic").

    Returns {"fraction", "rule", "reached" (at least ``minimum_slices()`` validation slices with the
    structure), "shares": per share tried its slice counts and whether it leaves the training floor}.
    """
    given = options.validation_fraction is not None
    shares = [options.validation_fraction] if given else list(VALIDATION_SHARES)
    tried = [_share_counts(cases, options, share, excluded_items) for share in shares]
    needed = minimum_slices()
    if given:
        chosen = tried[0]
    else:
        allowed = [counts for counts in tried if counts["leaves_floor"]]
        reaching = [counts for counts in allowed if counts["validation_with_structure"] >= needed]
        chosen = reaching[0] if reaching else allowed[-1] if allowed else tried[0]
    return {"fraction": chosen["fraction"], "rule": "given" if given else "automatic",
            "reached": chosen["validation_with_structure"] >= needed, "minimum_slices": needed,
            "validation_slices": chosen["validation_slices"],
            "validation_with_structure": chosen["validation_with_structure"],
            "training_with_structure": chosen["training_with_structure"], "shares": tried}


def _share_counts(cases, options: FinetuneOptions, share: float, excluded_items) -> dict:
    """Slice counts of one share's split: validation (all, with the structure), training with the structure."""
    counts = {"fraction": share, "validation_slices": 0, "validation_with_structure": 0,
              "training_with_structure": 0, "leaves_floor": False}
    try:
        train, validation = split_labelled_slices(cases, options.label, share, options.max_cases, None, options.seed,
                                                  exclude=excluded_items)
    except SegSSLError:  # e.g. `max_cases` too many for this share: not a candidate (the run itself says why)
        return counts

    def shown(items) -> int:  # slices of ``items`` that show the structure
        return int(sum(bool(cases[c].flags(options.label)[s]) for c, s in items))

    counts.update(validation_slices=int(len(validation)), validation_with_structure=shown(validation),
                  training_with_structure=shown(train))
    counts["leaves_floor"] = counts["training_with_structure"] >= training_floor(
        counts["validation_with_structure"], options.max_slices)
    return counts


def share_line(share: dict) -> str:
    """The one log line of the chosen validation share and its slice counts."""
    if share["rule"] == "given":
        how = "given"
    elif share["reached"]:
        how = (f"chosen: the smallest of {', '.join(map(str, VALIDATION_SHARES))} with at least "
               f"{share['minimum_slices']} validation slices with the structure")
    else:
        how = (f"chosen: none of {', '.join(map(str, VALIDATION_SHARES))} gives {share['minimum_slices']} validation "
               "slices with the structure and leaves training enough, so the largest that does")
    return (f"scratch check: `validation_fraction` {share['fraction']} ({how}): {share['validation_slices']} validation "
            f"slices, {share['validation_with_structure']} with the structure; {share['training_with_structure']} "
            "training slices with the structure")


def pooled_dice(counts: np.ndarray) -> float | None:
    """Dice pooled over per-slice (intersection, predicted, reference) counts; None without reference voxels."""
    intersection, predicted, reference = np.asarray(counts).reshape(-1, 3).sum(axis=0)
    return 2 * float(intersection) / float(predicted + reference) if reference else None


def compare(pretrained_counts: np.ndarray, scratch_counts: np.ndarray, confidence: float = CONFIDENCE,
            resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """The verdict of the two candidates' per-slice counts on the same validation slices (``slice_counts``).

    Paired bootstrap: the validation slices are drawn with replacement ``resamples`` times (the
    same draw for both candidates), the pooled Dice difference (pretrained − scratch) is computed
    on each draw, and its central ``confidence`` interval decides: above 0 "pretrained better",
    below 0 "scratch better", otherwise — or with fewer than ``minimum_slices`` slices showing the
    structure — "inconclusive". A draw without reference or predicted voxels scores Dice 1 (nothing
    to find, nothing found). Slices of one case are not independent, so the interval is if anything
    too narrow; the slice floor guards the smallest sets. Deterministic for a given ``seed``.
    """
    pretrained_counts = np.asarray(pretrained_counts, dtype=np.int64).reshape(-1, 3)
    scratch_counts = np.asarray(scratch_counts, dtype=np.int64).reshape(-1, 3)
    if pretrained_counts.shape != scratch_counts.shape or not len(pretrained_counts):
        raise SegSSLError("the two candidates must be scored on the same, non-empty validation slices")
    if not np.array_equal(pretrained_counts[:, 2], scratch_counts[:, 2]):
        raise SegSSLError("the two candidates were scored against different reference slices")
    with_structure = int((pretrained_counts[:, 2] > 0).sum())
    dice = {"pretrained": pooled_dice(pretrained_counts), "scratch": pooled_dice(scratch_counts)}
    result = {"confidence": confidence, "resamples": resamples, "slices": len(pretrained_counts),
              "slices_with_structure": with_structure, "minimum_slices": minimum_slices(confidence),
              "dice": dice, "difference": None, "interval": None, "verdict": INCONCLUSIVE}
    if not with_structure:
        return result
    draws = np.random.default_rng(seed).integers(0, len(pretrained_counts), (resamples, len(pretrained_counts)))

    def resampled(counts):
        intersection, predicted, reference = (counts[draws].sum(axis=1)).T.astype(np.float64)
        total = predicted + reference
        return np.where(total > 0, 2 * intersection / np.maximum(total, 1), 1.0)

    differences = resampled(pretrained_counts) - resampled(scratch_counts)
    low, high = np.quantile(differences, [(1 - confidence) / 2, (1 + confidence) / 2])
    result["difference"] = dice["pretrained"] - dice["scratch"]
    result["interval"] = [float(low), float(high)]
    if with_structure >= result["minimum_slices"]:
        if low > 0:
            result["verdict"] = PRETRAINED_BETTER
        elif high < 0:
            result["verdict"] = SCRATCH_BETTER
    return result


def choose(pretrained: dict, scratch: dict, segmented_dice: dict | None = None, comparison: dict | None = None,
           inconclusive_keeps: str = INCONCLUSIVE_KEEPS) -> dict:
    """Which candidate to keep, from the two fine-tuning summaries (``finetuning.finetune``'s return value).

    Both were ranked on the same validation slices by the same rule (``model_selection``).
    ``comparison`` (``compare``'s result on the finished models' per-slice counts) gives the
    verdict: a confident one decides. Without it, or when it is inconclusive, ``inconclusive_keeps``
    decides: "pretrained" keeps the pretrained model; "better mean" keeps the one with the better
    score — ``segmented_dice`` ({"pretrained": d, "scratch": d}, ``inference_dice``: the finished
    models as they will be used) when given and not None, else each candidate's best-epoch score —
    and the pretrained one only when it is strictly better (ties go to the lower validation loss of
    the best epoch, then to scratch).
    """
    if inconclusive_keeps not in INCONCLUSIVE_RULES:
        raise SegSSLError(f"`inconclusive_keeps` must be one of {', '.join(INCONCLUSIVE_RULES)}, got {inconclusive_keeps!r}")
    rule = pretrained["model_selection"]
    if rule != scratch["model_selection"]:  # same data, split and label: cannot differ
        raise SegSSLError(f"the two candidates were ranked differently ({rule} vs {scratch['model_selection']})")
    if comparison is not None and segmented_dice is None:
        segmented_dice = comparison["dice"]
    scores = {name: _best_score(summary) for name, summary in (("pretrained", pretrained), ("scratch", scratch))}
    comparable = rule == "validation Dice" or rule.startswith("lowest validation loss")
    if comparable and segmented_dice and None not in segmented_dice.values():
        scores = {name: (segmented_dice[name], *scores[name][1:]) for name in scores}
        rule = INFERENCE_RULE
    better_mean = "pretrained" if comparable and scores["pretrained"] > scores["scratch"] else "scratch"
    if not comparable:
        better_mean = "pretrained"  # nothing to judge by: the user's choice stands
    verdict = comparison["verdict"] if comparison is not None and rule == INFERENCE_RULE else INCONCLUSIVE
    if verdict == PRETRAINED_BETTER:
        kept = "pretrained"
    elif verdict == SCRATCH_BETTER:
        kept = "scratch"
    else:
        kept = "pretrained" if inconclusive_keeps == "pretrained" else better_mean
    bootstrap = comparison if comparison is not None and rule == INFERENCE_RULE else None
    return {
        "kept": kept,
        "verdict": verdict,
        "verdict_text": _verdict_text(verdict, bootstrap),
        "inconclusive_keeps": inconclusive_keeps,
        "better_mean": better_mean,
        "bootstrap": ({key: bootstrap[key] for key in ("confidence", "resamples", "difference", "interval",
                                                        "slices", "slices_with_structure", "minimum_slices")}
                      if bootstrap else None),
        "compared_by": rule if comparable else None,
        "validation_slices": pretrained["validation_slices"],
        "validation_dice": ({"pretrained": segmented_dice["pretrained"], "scratch": segmented_dice["scratch"]}
                            if rule == INFERENCE_RULE else
                            {"pretrained": pretrained["best_validation_dice"], "scratch": scratch["best_validation_dice"]}),
        "best_epoch_dice": {"pretrained": pretrained["best_validation_dice"], "scratch": scratch["best_validation_dice"]},
        "validation_loss": {"pretrained": _best_record(pretrained).get("validation_loss"),
                            "scratch": _best_record(scratch).get("validation_loss")},
        "best_epoch": {"pretrained": pretrained["best_epoch"], "scratch": scratch["best_epoch"]},
    }


def _verdict_text(verdict: str, bootstrap: dict | None) -> str:
    """"pretrained better", "scratch better" or "inconclusive (n validation slices with the structure)"."""
    if verdict != INCONCLUSIVE:
        return verdict
    return f"inconclusive ({bootstrap['slices_with_structure'] if bootstrap else 0} validation slices with the structure)"


def warning_line(decision: dict) -> str | None:
    """The one warning line a user sees when scratch is better with confidence (None otherwise)."""
    if decision.get("verdict") != SCRATCH_BETTER:
        return None
    dice, bootstrap = decision["validation_dice"], decision["bootstrap"]
    measured = (f"Dice {dice['pretrained']:.3f} from `init` vs {dice['scratch']:.3f} from scratch, "
                f"{_interval_text(bootstrap)}, {bootstrap['slices_with_structure']} of {decision['validation_slices']} "
                "validation slices with the structure")
    return (
        f"pretraining made fine-tuning worse on your validation slices ({measured}; they never trained): kept the "
        "scratch model — pretrain on more unlabelled scans of the body region you segment, try `strategy` P "
        "(or O/M with organ flags), or fine-tune without `init`"
    )


def inconclusive_line(decision: dict) -> str | None:
    """The one line for an inconclusive verdict: what was kept and what would make it conclusive (None otherwise)."""
    if decision.get("verdict") != INCONCLUSIVE:
        return None
    bootstrap = decision["bootstrap"]
    kept = "the pretrained model you asked for" if decision["inconclusive_keeps"] == "pretrained" else (
        f"the {decision['kept']} model (better validation Dice, not significantly)")
    dice = decision["validation_dice"]
    if bootstrap is None and decision["compared_by"] == INFERENCE_RULE:
        measured = f"Dice {dice['pretrained']:.3f} from `init` vs {dice['scratch']:.3f} from scratch, not tested per slice"
    elif bootstrap is None:
        measured = "no validation slice shows the structure"
    else:
        dice = decision["validation_dice"]
        measured = (f"Dice {dice['pretrained']:.3f} from `init` vs {dice['scratch']:.3f} from scratch, "
                    f"{_interval_text(bootstrap)}, {bootstrap['slices_with_structure']} validation slices with the "
                    f"structure")
    share = decision.get("validation_share") or {}
    chosen = (f"; `validation_fraction` {share['fraction']} is the largest of {', '.join(map(str, VALIDATION_SHARES))} "
              "that leaves training enough slices with the structure"
              if share.get("rule") == "automatic" and not share.get("reached") else "")
    return (
        f"the scratch check is inconclusive ({measured}{chosen}): kept {kept} — to decide, give validation at least "
        f"{minimum_slices(bootstrap['confidence'] if bootstrap else CONFIDENCE)} slices with the structure, more for "
        "a small difference (more labelled slices or cases, or a higher `validation_fraction`)"
    )


def _interval_text(bootstrap: dict) -> str:
    low, high = bootstrap["interval"]
    return f"{round(100 * bootstrap['confidence'])}% interval of the difference {low:+.3f} to {high:+.3f}"


def finetune_checked(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    options: FinetuneOptions,
    device,
    model_config,
    slicing,
    init: Initialisation,
    progress: Progress = NO_PROGRESS,
    cache_dir: str | os.PathLike | None = None,
    logdir: str | None = None,
    excluded_items: np.ndarray | None = None,
    resume: bool = False,
) -> dict:
    """Fine-tune from ``init`` and from scratch, keep the better on validation as ``out``; returns its summary.

    The summary gets ``scratch_check`` (``choose``'s decision and the candidate files) and
    ``scratch_check_warning`` (the warning line, or None). Arguments as ``finetuning.finetune``.
    """
    if not applies(init):
        raise SegSSLError("the scratch check (`scratch_check`) needs a `segssl pretrain` file as `init` — give one, or do without the check")
    check_validation(options)
    _, cases = labelled_cases(folder, options.label, slicing, cache_dir, progress)
    share = validation_share(cases, options, excluded_items)
    options = replace(options, validation_fraction=share["fraction"])
    log.info("%s", share_line(share))
    paths = candidate_paths(out)
    if distributed.is_main():
        paths["pretrained"].parent.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    runs = {"pretrained": (options, init), "scratch": (scratch_options(options), None)}
    summaries = {}
    for number, (name, (candidate_options, candidate_init)) in enumerate(runs.items(), 1):
        log.info("scratch check, run %d of 2: fine-tuning from %s", number, "`init`" if candidate_init else "scratch")
        summaries[name] = finetune(
            folder, paths[name], candidate_options, device, model_config, slicing, candidate_init, progress,
            cache_dir=cache_dir, logdir=str(Path(logdir) / name) if logdir else None, excluded_items=excluded_items,
            resume=resume,
        )
    counts = _segmented_counts(folder, paths, options, model_config, slicing, device, cache_dir, excluded_items)
    comparison = compare(counts["pretrained"], counts["scratch"], seed=options.seed)
    decision = choose(summaries["pretrained"], summaries["scratch"], comparison=comparison)
    decision["validation_share"] = share
    decision["candidates"] = {name: str(path.resolve()) for name, path in paths.items()}
    warning, note = warning_line(decision), inconclusive_line(decision)
    if warning:
        log.warning("%s", warning)
    elif note:
        log.info("%s", note)
    else:
        log.info("pretraining helped on the validation slices (%s): kept the pretrained model", _scores_text(decision))
    if distributed.is_main():
        _write_kept(paths[decision["kept"]], out, decision, warning, note)
    distributed.barrier()
    return {**summaries[decision["kept"]], "scratch_check": decision, "scratch_check_warning": warning,
            "scratch_check_note": note}


def _segmented_counts(folder, paths, options, model_config, slicing, device, cache_dir, excluded_items) -> dict:
    """``slice_counts`` of both finished candidates on the validation slices (the split ``finetune`` used)."""
    cases = cache_datasets([load_dataset(folder)], slicing, cache_dir)
    _, validation = split_labelled_slices(
        cases, options.label, options.validation_fraction, options.max_cases, options.max_slices, options.seed,
        exclude=excluded_items,
    )
    scores = {}
    for name, path in paths.items():
        model = SegmentationNet(model_config)
        model.load_state_dict(load_checkpoint(path, kinds=(SEGMENTATION_KIND,))["state_dict"])
        scores[name] = slice_counts(model.to(device), cases, validation, options.label, device, excluded_items)
    return scores


def inference_dice(model, cases, validation: np.ndarray, label: int, device, excluded_items=None, batch_size: int = 16):
    """Dice pooled over the ``validation`` (case, slice) items as segmented (``slice_counts``); None when no
    validation slice shows the structure."""
    return pooled_dice(slice_counts(model, cases, validation, label, device, excluded_items, batch_size))


@torch.no_grad()
def slice_counts(model, cases, validation: np.ndarray, label: int, device, excluded_items=None,
                 batch_size: int = 16) -> np.ndarray:
    """(intersection, predicted, reference) voxel counts per ``validation`` (case, slice) item, in its order,
    each case segmented as ``segssl segment`` does.

    Every slice of a validation case goes through the network and the foreground is the largest
    face-connected component of the case's whole stack, as at inference; only the validation slices
    are scored. Slices in ``excluded_items`` (a benchmark's held-out test slices) are segmented too,
    because leaving a gap in the stack would cut the structure in two and let the wrong part be the
    largest, but their labels are never read.
    """
    model.eval()
    validation = np.asarray(validation).reshape(-1, 2)
    counts = np.zeros((len(validation), 3), dtype=np.int64)
    for case_index in np.unique(validation[:, 0]):
        case = cases[case_index]
        mask = torch.zeros((case.num_slices, *case.images.shape[1:]), dtype=torch.bool)
        for start in range(0, case.num_slices, batch_size):
            chunk = np.arange(start, min(start + batch_size, case.num_slices))
            images = torch.from_numpy(np.asarray(case.images[chunk], dtype=np.float32))[:, None].to(device)
            mask[start : start + len(chunk)] = (model(images).argmax(dim=1) == 1).cpu()
        if mask.any():
            mask = largest_component(mask)
        rows = np.flatnonzero(validation[:, 0] == case_index)
        slices = validation[rows, 1]
        reference = torch.from_numpy(np.asarray(case.labels[slices]) == label)
        predicted = mask[slices]
        counts[rows, 0] = (predicted & reference).flatten(1).sum(dim=1).numpy()
        counts[rows, 1] = predicted.flatten(1).sum(dim=1).numpy()
        counts[rows, 2] = reference.flatten(1).sum(dim=1).numpy()
    return counts


def _write_kept(candidate: Path, out, decision: dict, warning: str | None, note: str | None = None) -> None:
    """``out`` = the kept candidate, with the decision in its provenance (read back safely, weights only)."""
    checkpoint = load_checkpoint(candidate, kinds=(SEGMENTATION_KIND,), purpose="the scratch check needs")
    info = {**checkpoint["provenance"], "scratch_check": {**decision, "warning": warning, "note": note}}
    save_checkpoint(out, SEGMENTATION_KIND, checkpoint["config"], checkpoint["state_dict"], info, checkpoint["extra"])


def _best_record(summary: dict) -> dict:
    epoch = summary["best_epoch"]
    return summary["history"][epoch - 1] if epoch else {}


def _best_score(summary: dict) -> tuple:
    record = _best_record(summary)
    return selection_score(summary["model_selection"], record) if record else ()


def _scores_text(decision: dict) -> str:
    dice = decision["validation_dice"]
    if decision["compared_by"] in ("validation Dice", INFERENCE_RULE):
        return f"Dice {dice['pretrained']:.3f} from `init` vs {dice['scratch']:.3f} from scratch"
    if decision["compared_by"] is None:
        return "no validation slices to compare on"
    loss = decision["validation_loss"]
    return f"validation loss {loss['pretrained']:.4f} vs {loss['scratch']:.4f}"
