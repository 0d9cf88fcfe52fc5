"""Options that ``segssl pretrain`` and ``segssl finetune`` share (network shape, slicing, caching, logging)."""

from __future__ import annotations

import logging
import os

from SegSSLLib.errors import SegSSLError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def add_network_options(parser, defaults_note: str = "") -> None:
    group = parser.add_argument_group("network and slices" + defaults_note)
    group.add_argument("--image-size", type=int, default=None, help="square slice size in pixels (default: 256)")
    group.add_argument(
        "--widths", default=None, metavar="W1,W2,...",
        help="encoder widths per scale (default: 16,32,64,128,256, about 2 M parameters)",
    )
    group.add_argument("--dropout", type=float, default=None, help="dropout in every block (default: 0.1)")
    group.add_argument(
        "--intensity", choices=("ct", "percentile"), default=None,
        help="ct: window in HU (default); percentile: 0.5-99.5 percentiles of each volume (MR)",
    )
    group.add_argument("--window-level", type=float, default=None, help="CT window level in HU (default: 40)")
    group.add_argument("--window-width", type=float, default=None, help="CT window width in HU (default: 400)")


def add_training_options(parser) -> None:
    group = parser.add_argument_group("training run")
    group.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default: 0.001)")
    group.add_argument(
        "--cache-dir", default=None,
        help="where sliced volumes are cached (default: $SEGSSL_CACHE_DIR or the user cache folder)",
    )
    group.add_argument("--logdir", default=None, help="write TensorBoard scalars (loss, Dice) to this folder")
    group.add_argument("--workers", type=int, default=0, help="data-loading worker processes (default: 0)")


def network_settings(args, base: dict | None = None):
    """(ModelConfig, SlicingSettings) from the options, on top of ``base`` (an --init checkpoint's config).

    With a base, options that were given must agree with it: the weights only fit that network.
    """
    from SegSSLLib.intensity import IntensityWindow
    from SegSSLLib.polycl.model import ModelConfig
    from SegSSLLib.polycl.slice_cache import SlicingSettings

    widths = _parse_widths(args.widths) if args.widths else None
    if base is not None:
        model = ModelConfig.from_dict(base["model"])
        slicing = SlicingSettings.from_dict(base["slicing"])
        fixed_by_init = {
            "--image-size": (args.image_size, model.image_size),
            "--widths": (widths, model.widths),
            "--intensity": (args.intensity, slicing.window.mode),
            "--window-level": (args.window_level, slicing.window.level),
            "--window-width": (args.window_width, slicing.window.width),
        }
        mismatches = [flag for flag, (given, fixed) in fixed_by_init.items() if given is not None and given != fixed]
        if mismatches:
            raise SegSSLError(
                f"{', '.join(mismatches)} differ from the --init model "
                f"({model.image_size} px, widths {','.join(map(str, model.widths))}, {slicing.window.mode} window "
                f"{slicing.window.level:g}/{slicing.window.width:g}) "
                "— leave them out: the pretrained weights fix the network and its input"
            )
        if args.dropout is not None:
            model = ModelConfig.from_dict({**model.to_dict(), "dropout": args.dropout})
        return model, slicing
    given = {"widths": widths, "image_size": args.image_size, "dropout": args.dropout}
    model = ModelConfig(**{k: v for k, v in given.items() if v is not None})
    given = {"mode": args.intensity, "level": args.window_level, "width": args.window_width}
    window = IntensityWindow(**{k: v for k, v in given.items() if v is not None})
    return model, SlicingSettings(window=window, image_size=model.image_size)


def _parse_widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise SegSSLError(f"--widths {text!r} is not a comma-separated list of whole numbers, e.g. 16,32,64,128,256") from None


def check_workers(workers: int) -> None:
    if workers < 0:
        raise SegSSLError(f"--workers must be 0 or more, got {workers}")


def check_resume(args) -> None:
    """With --resume, fail before any slicing if --out holds more epochs than --epochs asks for."""
    if not args.resume or not os.path.exists(args.out):
        return
    from SegSSLLib.checkpoints import load_checkpoint
    from SegSSLLib.polycl.training import check_epochs_left

    history = load_checkpoint(args.out, purpose="`resume` needs").get("extra", {}).get("history", [])
    check_epochs_left(args.out, len(history), args.epochs)


def check_before_training(args, data: list, inputs: tuple) -> None:
    """What ``pretrain`` and ``finetune`` check before the slow imports: outputs, workers, --resume, data folders."""
    from SegSSLLib.datasets import load_dataset
    from SegSSLLib.volumes import check_output_path

    check_output_path(args.out, inputs, "--out", suffixes=CHECKPOINT_SUFFIXES)
    check_workers(args.workers)
    check_resume(args)
    for folder in data:
        load_dataset(folder)


def train(args, progress, model_config, slicing, workflow, *arguments, **keywords):
    """Device, seeds and torchrun ranks for a training command, then ``workflow(..., settings, progress)``.

    Returns the workflow's result, or None in torchrun processes other than rank 0 (they report nothing).
    """
    from SegSSLLib.polycl.workflows import TrainingSettings

    device, progress = start_training(args, progress)
    settings = TrainingSettings(
        model=model_config, slicing=slicing, device=device, cache_dir=args.cache_dir, logdir=args.logdir,
        resume=args.resume,
    )
    result = workflow(*arguments, settings, progress=progress, **keywords)
    return None if is_secondary_process() else result


def is_secondary_process() -> bool:
    """True in torchrun processes other than rank 0: they train silently."""
    return int(os.environ.get("RANK", "0")) != 0


def start_training(args, progress):
    """Threads, device and seeds for a training command; torchrun ranks other than 0 go quiet.

    With an explicit --seed on CUDA, deterministic kernels are requested too (slower, repeatable).

    Returns (device, the progress reporter this process uses).
    """
    from SegSSLLib.cli.common import set_random_seed, setup_torch
    from SegSSLLib.polycl.training import make_deterministic
    from SegSSLLib.progress import NO_PROGRESS

    device = setup_torch(args)
    set_random_seed(args.random_seed)
    if getattr(args, "seed_given", False):
        make_deterministic(device)
    if is_secondary_process():
        logging.getLogger().setLevel(logging.WARNING)
        return device, NO_PROGRESS
    return device, progress
