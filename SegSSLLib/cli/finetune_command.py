"""``segssl finetune``: PolyCL segmentation fine-tuning with few labels, from a pretrained encoder or scratch."""

from __future__ import annotations

import logging
from pathlib import Path

from SegSSLLib.cli.common import add_device_option, add_random_seed_option
from SegSSLLib.cli.polycl_options import add_network_options, add_training_options, check_before_training, network_settings, train

HELP = "fine-tune the PolyCL U-Net on labelled slices (from --init CKPT, or from scratch); multi-GPU with torchrun"

log = logging.getLogger(__name__)


def configure(parser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="MSD folder with label maps")
    parser.add_argument("--label", type=int, required=True, metavar="N", help="label value of the structure to segment")
    parser.add_argument("--out", required=True, metavar="CKPT", help="model file to write (.pt), updated every epoch: the best epoch so far")
    parser.add_argument("--init", default=None, metavar="CKPT", help="`segssl pretrain` output to start from (default: from scratch)")
    parser.add_argument("--cases", type=int, default=None, metavar="N", help="train on at most N cases (label efficiency)")
    parser.add_argument(
        "--slices", type=int, default=None, metavar="N",
        help="train on N labelled slices that show the structure, evenly spaced (label efficiency)",
    )
    parser.add_argument("--epochs", type=int, metavar="N", default=30, help="epochs (default: 30)")
    parser.add_argument("--batch-size", type=int, metavar="N", default=8, help="slices per step and process (default: 8)")
    parser.add_argument(
        "--epoch-samples", type=int, default=256,
        help="slices drawn per epoch at least; few labelled slices are repeated (default: 256)",
    )
    parser.add_argument(
        "--val-fraction", type=float, default=None,
        help="share of cases (or, with one case, of slice blocks) that validate (default: 0.2; with the scratch "
        "check, the smallest of 0.2, 0.3, 0.4 giving 6 validation slices with the structure, see docs/polycl.md)",
    )
    parser.add_argument(
        "--freeze-epochs", type=int, default=0, help="train only the decoder for the first N epochs (default: 0)"
    )
    parser.add_argument(
        "--unfreeze-epochs", type=int, default=0,
        help="after --freeze-epochs, unfreeze the encoder block by block (deepest first) over N epochs (default: 0)",
    )
    parser.add_argument(
        "--encoder-lr-factor", type=float, default=1.0,
        help="the encoder learns at this fraction of --learning-rate, e.g. 0.1 for a pretrained one (default: 1)",
    )
    parser.add_argument(
        "--layer-decay", type=float, default=1.0,
        help="each encoder block nearer the input learns at this further factor (default: 1)",
    )
    parser.add_argument(
        "--no-scratch-check", dest="scratch_check", action="store_false",
        help="with --init PRETRAINED: do not also fine-tune from scratch. By default both are trained (about twice the "
        "time) and the one with the better validation Dice is kept; a warning says when that is scratch",
    )
    parser.add_argument("--no-augment", action="store_true", help="no random rotations, scalings and shifts")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out from its last epoch")
    add_network_options(parser, " (only without --init)")
    add_training_options(parser)
    add_device_option(parser)
    add_random_seed_option(parser)


def run(args, progress) -> int:
    check_before_training(args, [args.data], (args.init, args.data))

    from SegSSLLib.polycl.finetuning import FinetuneOptions, Initialisation
    from SegSSLLib.polycl.workflows import finetune

    init = Initialisation.load(args.init) if args.init else None
    model_config, slicing = network_settings(args, init.config if init else None)
    options = FinetuneOptions(
        label=args.label, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        seed=args.random_seed, max_cases=args.cases, max_slices=args.slices, validation_fraction=args.val_fraction,
        freeze_epochs=args.freeze_epochs, epoch_samples=args.epoch_samples, augment=not args.no_augment,
        workers=args.workers, unfreeze_epochs=args.unfreeze_epochs, encoder_lr_factor=args.encoder_lr_factor,
        layer_decay=args.layer_decay,
    )
    summary = train(
        args, progress, model_config, slicing, finetune, args.data, args.out, options, init=init,
        scratch_check=args.scratch_check,
    )
    if summary is not None:
        dice = summary["best_validation_dice"]
        kept = summary.get("scratch_check", {}).get("kept")
        log.info(
            "wrote %s: %d training slices, best epoch %d, validation Dice %s%s", args.out, summary["training_slices"],
            summary["best_epoch"], "n/a" if dice is None else f"{dice:.4f}",
            f" (the {kept} model; both candidates in {Path(args.out).stem}.candidates/)" if kept else "",
        )
        progress.output(args.out)
    return 0
