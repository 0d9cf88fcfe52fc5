"""``segssl demo`` step: pretrain on a few phantoms, fine-tune on one labelled phantom's liver,
segment the demo phantom and score it."""

from __future__ import annotations

import SimpleITK as sitk
import torch

from SegSSLLib.datasets import write_msd_dataset
from SegSSLLib.demo_context import DemoContext, Section
from SegSSLLib.intensity import IntensityWindow
from SegSSLLib.phantoms import LABEL_VALUES, PHANTOM_LABELS, make_ct_phantom
from SegSSLLib.polycl.finetuning import FinetuneOptions
from SegSSLLib.polycl.model import ModelConfig
from SegSSLLib.polycl.pretraining import PretrainOptions
from SegSSLLib.polycl.segment import PolyCLSettings, segment_polycl
from SegSSLLib.polycl.workflows import TrainingSettings, finetune, pretrain
from SegSSLLib.polycl.slice_cache import SlicingSettings
from SegSSLLib.volumes import write_image

LIVER = LABEL_VALUES["liver"]


def polycl_step(context: DemoContext) -> None:
    # The demo's networks are small (64×64 slices at most): with one thread no thread waits for
    # another, which on the busy 2-core development machine made this step take 31-46 s instead
    # of 215 s with two threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(context)
    finally:
        torch.set_num_threads(threads)


def _run(context: DemoContext) -> None:
    quick = context.quick
    folder = context.path("polycl")
    unlabelled, labelled = folder / "pretrain_volumes", folder / "finetune_case"
    size = (40, 40, 20) if quick else (64, 64, 32)
    spacing = tuple(s * 96 / size[0] for s in (3.5, 3.5)) + (5.0 * 48 / size[2],)
    pretrain_seeds = (11, 12) if quick else (11, 12, 13, 14)
    unlabelled.mkdir(parents=True, exist_ok=True)
    for seed in pretrain_seeds:
        image, _ = make_ct_phantom(seed=seed, size=size, spacing=spacing)
        write_image(image, unlabelled / f"phantom_{seed}.nii.gz")
    write_msd_dataset(labelled, [("phantom_21", *make_ct_phantom(seed=21, size=size, spacing=spacing))], PHANTOM_LABELS)

    device = torch.device(context.device)
    model_config = ModelConfig(image_size=32 if quick else 64, widths=(8, 16, 32, 64) if quick else (16, 32, 64, 128, 256))
    slicing = SlicingSettings(IntensityWindow(), image_size=model_config.image_size)
    cache = folder / "slice_cache"
    pretrained, fine_tuned = folder / "pretrained.pt", folder / "polycl_liver.pt"
    pretrain_options = PretrainOptions(strategy="S", epochs=2 if quick else 4, batch_size=16, seed=0)
    settings = TrainingSettings(model=model_config, slicing=slicing, device=device, cache_dir=cache)
    history = pretrain([unlabelled], pretrained, pretrain_options, settings, context.progress)
    finetune_options = FinetuneOptions(
        label=LIVER, epochs=5 if quick else 8, epoch_samples=64 if quick else 96, batch_size=8, seed=0
    )
    summary = finetune(labelled, fine_tuned, finetune_options, settings, init=pretrained, progress=context.progress)

    image = sitk.ReadImage(str(context.files["phantom_ct"]))
    truth = sitk.ReadImage(str(context.files["phantom_labels"]))
    prediction = segment_polycl(image, fine_tuned, PolyCLSettings(device=device), context.progress).label_map
    write_image(prediction, context.path("polycl_liver.nii.gz"))
    context.files["polycl_model"] = fine_tuned
    metrics, table, picture = context.evaluate_and_picture("PolyCL liver", prediction, truth, [LIVER], image, "polycl_liver")
    context.add_section(
        Section(
            "PolyCL (contrastive pretraining, one labelled phantom)",
            f"Pretrained (strategy S) on {len(pretrain_seeds)} unlabelled phantoms for {len(history)} epochs "
            f"(final InfoNCE loss {history[-1]['loss']:.3f}), fine-tuned on the liver of one other phantom "
            f"({summary['training_slices']} slices, best epoch {summary['best_epoch']} by {summary['model_selection']}"
            f"{_dice_note(summary['best_validation_dice'])}){_check_note(summary.get('scratch_check'))}, then applied to "
            f"the demo phantom at {model_config.image_size}×{model_config.image_size} px.\n\n```\n{table}\n```",
            metrics,
            [picture],
        )
    )


def _dice_note(dice: float | None) -> str:
    return "" if dice is None else f", validation Dice {dice:.3f}"


def _check_note(decision: dict | None) -> str:
    """The scratch check's choice: the same network was also fine-tuned from scratch, the better kept."""
    if not decision:
        return ""
    dice = decision["validation_dice"]
    verdict = decision.get("verdict_text", "")
    return (f"; the scratch check kept the {decision['kept']} model (validation Dice {dice['pretrained']:.3f} "
            f"pretrained vs {dice['scratch']:.3f} from scratch{'; ' + verdict if verdict else ''})")
