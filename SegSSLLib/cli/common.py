"""Options and helpers that every ``segssl`` command shares."""

from __future__ import annotations

import argparse
import logging
import random
import sys

from SegSSLLib.cli.flags import FlagWording
from SegSSLLib.errors import SegSSLError
from SegSSLLib.images import check_index_inside  # noqa: F401 - the seed check the library does too
from SegSSLLib.progress import PROGRESS_MODES, JsonLogHandler, Progress


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that says where to look, not the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output and logging")
    group.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="bar",
        help="bar: progress bars on stderr; json: one JSON event per stdout line (for programs); none",
    )
    group.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    group.add_argument("--debug", action="store_true", help="show the full traceback of unexpected errors")


def positive_label(text: str) -> int:
    """argparse type for a foreground label value: a whole number >= 1 (0 is background)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a label value: give a whole number >= 1 (0 is background)")
    return value


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (GPU when available), cpu, cuda, cuda:N or mps (default: auto)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )


class _SeedAction(argparse.Action):
    """Stores the seed and notes that it was given (training then asks CUDA for repeatable kernels)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.seed_given = True


def add_random_seed_option(parser: argparse.ArgumentParser, flag: str = "--seed") -> None:
    parser.add_argument(
        flag, dest="random_seed", type=int, default=0, action=_SeedAction, help="random seed, for repeatable runs"
    )
    parser.set_defaults(seed_given=False)


def configure_logging(level: str, progress: Progress, command: str | None = None) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if progress.mode == "json":
        handler: logging.Handler = JsonLogHandler(progress)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("segssl: %(message)s"))
    handler.addFilter(FlagWording(command))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("PIL", "matplotlib", "urllib3", "hydra"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def set_random_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so that runs repeat."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_torch(args) -> "torch.device":  # noqa: F821 - torch is imported lazily
    """Apply --threads and return the torch device chosen by --device."""
    import torch

    from SegSSLLib.device import select_device

    if getattr(args, "threads", None):
        if args.threads < 1:
            raise SegSSLError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    return select_device(getattr(args, "device", "auto"))


def parse_index(text: str, dimension: int, what: str = "seed") -> tuple[int, ...]:
    """'I,J,K' (or 'X,Y' in 2D) -> a tuple of zero-based voxel indices."""
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != dimension:
        form = "I,J,K" if dimension == 3 else "X,Y"
        raise SegSSLError(f"{what} {text!r} is not {dimension} whole numbers {form} (zero-based voxel indices)")
    return values
