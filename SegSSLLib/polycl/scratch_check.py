"""Fine-tuning that cannot end worse than scratch on the user's own validation slices.

A pretrained encoder can make fine-tuning worse than training from scratch (an encoder that learned
"which scan" instead of anatomy, issue 16). No threshold on the pretraining can say that for sure,
so this check measures it: the same network is fine-tuned twice on the same labelled slices —
once from the pretrained encoder, once from scratch (same seed, same split, plain options) — and
the model that scores better on the validation slices is kept. Validation slices never train
(``datasets.split_labelled_slices``; held-out test slices, ``excluded_items``, take part in neither),
and both candidates' epochs are chosen on them by the same rule, so neither side gets an advantage.

The two finished models are compared as ``segssl segment`` will use them (``inference_dice``):
each validation case's slices go through the network, the foreground is the largest connected
component of the whole stack, and the Dice is pooled over the validation slices. The per-slice
Dice that ranks epochs counts every stray blob, which a user never sees.

When scratch wins, one warning line says so and what to do; the choice, both scores and the
candidate files go into the model's provenance (``scratch_check``). The cost is a second
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
from SegSSLLib.polycl.finetuning import SEGMENTATION_KIND, FinetuneOptions, Initialisation, finetune, selection_score
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
    if options.validation_fraction <= 0:
        raise SegSSLError(
            "`validation_fraction` 0 leaves no validation slices to compare the pretrained start with scratch — "
            "give `validation_fraction` above 0, or do without the scratch check (`scratch_check`)"
        )


INFERENCE_RULE = "validation Dice of the largest component, as segmented"


def choose(pretrained: dict, scratch: dict, segmented_dice: dict | None = None) -> dict:
    """Which candidate to keep, from the two fine-tuning summaries (``finetuning.finetune``'s return value).

    Both were ranked on the same validation slices by the same rule (``model_selection``).
    ``segmented_dice`` ({"pretrained": d, "scratch": d}, ``inference_dice``) compares the finished
    models as they will be used; without it (or when it is None: no validation slice shows the
    structure) each candidate's best-epoch score decides. The pretrained model is kept only when it
    scores strictly better: a pretraining that does not help on data the model never trained on is
    not used.
    """
    rule = pretrained["model_selection"]
    if rule != scratch["model_selection"]:  # same data, split and label: cannot differ
        raise SegSSLError(f"the two candidates were ranked differently ({rule} vs {scratch['model_selection']})")
    scores = {name: _best_score(summary) for name, summary in (("pretrained", pretrained), ("scratch", scratch))}
    comparable = rule == "validation Dice" or rule.startswith("lowest validation loss")
    if comparable and segmented_dice and None not in segmented_dice.values():
        # Ties (equal Dice) go to the lower validation loss of the best epoch, as when ranking epochs.
        scores = {name: (segmented_dice[name], *scores[name][1:]) for name in scores}
        rule = INFERENCE_RULE
    kept = "pretrained" if comparable and scores["pretrained"] > scores["scratch"] else "scratch"
    if not comparable:
        kept = "pretrained"  # nothing to judge by: the user's choice stands
    return {
        "kept": kept,
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


def warning_line(decision: dict) -> str | None:
    """The one line a user sees when the scratch model was kept (None when the pretrained one was)."""
    if decision["kept"] != "scratch":
        return None
    if decision["compared_by"] in ("validation Dice", INFERENCE_RULE):
        dice = decision["validation_dice"]
        measured = f"Dice {dice['pretrained']:.3f} from `init` vs {dice['scratch']:.3f} from scratch"
    else:
        loss = decision["validation_loss"]
        measured = f"validation loss {loss['pretrained']:.4f} from `init` vs {loss['scratch']:.4f} from scratch"
    return (
        f"pretraining did not help on your validation slices ({measured}, {decision['validation_slices']} slices "
        "that never trained): kept the scratch model — pretrain on more unlabelled scans of the body region you "
        "segment, try `strategy` P (or O/M with organ flags), or fine-tune without `init`"
    )


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
    segmented = _segmented_dice(folder, paths, options, model_config, slicing, device, cache_dir, excluded_items)
    decision = choose(summaries["pretrained"], summaries["scratch"], segmented)
    decision["candidates"] = {name: str(path.resolve()) for name, path in paths.items()}
    warning = warning_line(decision)
    if warning:
        log.warning("%s", warning)
    else:
        log.info("pretraining helped on the validation slices (%s): kept the pretrained model", _scores_text(decision))
    if distributed.is_main():
        _write_kept(paths[decision["kept"]], out, decision, warning)
    distributed.barrier()
    return {**summaries[decision["kept"]], "scratch_check": decision, "scratch_check_warning": warning}


def _segmented_dice(folder, paths, options, model_config, slicing, device, cache_dir, excluded_items) -> dict:
    """``inference_dice`` of both finished candidates on the validation slices (the split ``finetune`` used)."""
    cases = cache_datasets([load_dataset(folder)], slicing, cache_dir)
    _, validation = split_labelled_slices(
        cases, options.label, options.validation_fraction, options.max_cases, options.max_slices, options.seed,
        exclude=excluded_items,
    )
    scores = {}
    for name, path in paths.items():
        model = SegmentationNet(model_config)
        model.load_state_dict(load_checkpoint(path, kinds=(SEGMENTATION_KIND,))["state_dict"])
        scores[name] = inference_dice(model.to(device), cases, validation, options.label, device, excluded_items)
    return scores


@torch.no_grad()
def inference_dice(model, cases, validation: np.ndarray, label: int, device, excluded_items=None, batch_size: int = 16):
    """Dice pooled over the ``validation`` (case, slice) items, each case segmented as ``segssl segment`` does.

    Every slice of a validation case goes through the network and the foreground is the largest
    face-connected component of the case's whole stack, as at inference; only the validation slices
    are scored. Slices in ``excluded_items`` (a benchmark's held-out test slices) are segmented too,
    because leaving a gap in the stack would cut the structure in two and let the wrong part be the
    largest, but their labels are never read. None when no validation slice shows the structure.
    """
    model.eval()
    intersection = predicted_total = reference_total = 0
    for case_index in np.unique(validation[:, 0]):
        case = cases[case_index]
        mask = torch.zeros((case.num_slices, *case.images.shape[1:]), dtype=torch.bool)
        for start in range(0, case.num_slices, batch_size):
            chunk = np.arange(start, min(start + batch_size, case.num_slices))
            images = torch.from_numpy(np.asarray(case.images[chunk], dtype=np.float32))[:, None].to(device)
            mask[start : start + len(chunk)] = (model(images).argmax(dim=1) == 1).cpu()
        if mask.any():
            mask = largest_component(mask)
        slices = validation[validation[:, 0] == case_index, 1]
        reference = torch.from_numpy(np.asarray(case.labels[slices]) == label)
        intersection += int((mask[slices] & reference).sum())
        predicted_total += int(mask[slices].sum())
        reference_total += int(reference.sum())
    return 2 * intersection / (predicted_total + reference_total) if reference_total else None


def _write_kept(candidate: Path, out, decision: dict, warning: str | None) -> None:
    """``out`` = the kept candidate, with the decision in its provenance (read back safely, weights only)."""
    checkpoint = load_checkpoint(candidate, kinds=(SEGMENTATION_KIND,), purpose="the scratch check needs")
    info = {**checkpoint["provenance"], "scratch_check": {**decision, "warning": warning}}
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
