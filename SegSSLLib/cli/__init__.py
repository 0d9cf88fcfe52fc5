"""The ``segssl`` command: one sub-command per module, each a thin layer over the library's API.

Each command module defines ``HELP`` (one line), ``configure(parser)`` and ``run(args, progress)``;
heavy imports (torch models, sam2) stay inside ``run`` so ``segssl --help`` and ``evaluate`` start fast.
``cli/`` is the only code that knows flags: library errors name parameters (`sam2_checkpoint`) and
``flags.in_flags`` words them as flags.
"""

from __future__ import annotations

import io
import logging
import os
import sys

from SegSSLLib.cli import (
    demo_command,
    evaluate_command,
    finetune_command,
    pretrain_command,
    propagate_command,
    refine_command,
    segment_command,
    weights_command,
)
from SegSSLLib.cli.common import OneLineArgumentParser, add_common_options, configure_logging
from SegSSLLib.cli.flags import in_flags
from SegSSLLib.errors import SegSSLError
from SegSSLLib.progress import Progress

# name -> module; the order is the order of ``segssl --help``.
COMMANDS = {
    "pretrain": pretrain_command,
    "finetune": finetune_command,
    "segment": segment_command,
    "propagate": propagate_command,
    "refine": refine_command,
    "evaluate": evaluate_command,
    "weights": weights_command,
    "demo": demo_command,
}

log = logging.getLogger("segssl")


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="segssl",
        description="Label-efficient medical image segmentation: S3-Net, PolyCL, SAM and SAM 2.",
    )
    from SegSSLLib import __version__

    parser.add_argument("--version", action="version", version=f"segssl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        sub = subparsers.add_parser(name, help=module.HELP.replace("%", "%%"), description=module.HELP)
        module.configure(sub)
        add_common_options(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    import SimpleITK as sitk

    # ITK prints multi-line warnings straight to stderr; SegSSL checks what matters itself and
    # reports it as one line.
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    parser = build_parser()
    args = parser.parse_args(argv)
    progress = Progress(args.progress)
    configure_logging(args.log_level, progress, args.command)
    prefix = f"segssl {args.command}"
    try:
        code = args._module.run(args, progress)
        sys.stdout.flush()  # a closed pipe shows up here rather than at interpreter exit
    except BrokenPipeError:
        # Whoever read our output stopped early (``segssl evaluate ... | head -3``): end quietly, as
        # Unix tools do, and point stdout at /dev/null so the flush at exit cannot fail again.
        _discard_stdout()
        return 141  # what a shell reports for a process ended by SIGPIPE
    except SegSSLError as exc:
        # The JSON event keeps the library's wording too: the panel names its own widgets, not flags.
        line = f"{prefix}: error: {in_flags(str(exc), args.command)}"
        return _fail(progress, line, exc.exit_code, parameter_message=str(exc))
    except KeyboardInterrupt:
        return _fail(progress, f"{prefix}: interrupted; no partial output was left behind", 130)
    except MemoryError:
        return _fail(progress, f"{prefix}: error: out of memory — use a smaller --batch-size or --image-size", 1)
    except Exception as exc:  # noqa: BLE001 - last resort: one line, full traceback only on request
        if _is_cuda_oom(exc):
            return _fail(
                progress,
                f"{prefix}: error: out of GPU memory — use a smaller --batch-size or --image-size, or --device cpu",
                1,
            )
        if args.debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else ""
        return _fail(
            progress,
            f"{prefix}: internal error: {type(exc).__name__}: {message} (rerun with --debug for the traceback)",
            3,
        )
    progress.done()
    return int(code or 0)


def _discard_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # stdout replaced by an object without a file
        pass


def _fail(progress: Progress, line: str, code: int, **fields) -> int:
    print(line, file=sys.stderr, flush=True)
    progress.error(line, **fields)
    return code


def _is_cuda_oom(exc: Exception) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError)
