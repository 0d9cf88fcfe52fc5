"""The one place that turns the library's parameter names into command-line flags in messages.

The library names a setting in backticks (`` `sam2_checkpoint` is needed ...``): the panel maps such a
name to its own widget, the command line to its flag. A name missing here is shown without the backticks.
"""

from __future__ import annotations

import logging
import re

# parameter -> flag, where the flag is not just the name with dashes and two leading ones.
FLAGS = {
    "max_cases": "--cases",
    "scratch_check": "--no-scratch-check",
    "max_slices": "--slices",
    "validation_fraction": "--val-fraction",
    "window": "--s3net-window",
    "checkpoint": "--checkpoint",
    "seeds": "--seed",
    "image": "--input",
    "mask": "--mask",
    "annotation": "--annotation",
    "clusters_output": "--clusters-output",
    "margin": "--box-margin",
}
# where one command spells a parameter its own way
COMMAND_FLAGS = {
    "refine": {"axis": "--refine-axis"},
    "segment": {
        "axis": "--refine-axis", "label": "--s3net-label", "max_size": "--s3net-max-size",
        "bridge_radius": "--s3net-bridge-radius", "slice_axis": "--s3net-slice-axis", "batch_size": "--polycl-batch-size",
        "route": "--s3net-route", "negatives": "--s3net-negative", "max_radius_mm": "--s3net-max-radius",
    },
}
# parameters that are flags named alike (``sam2_checkpoint`` -> ``--sam2-checkpoint``)
SAME_NAME = {
    "sam_checkpoint", "sam2_checkpoint", "sam2_config", "sam_preprocess", "image_size", "device", "axis",
    "threads", "data", "label", "strategy", "temperature", "epochs", "freeze_epochs", "resume", "out", "init",
    "cache_dir", "widths", "box_margin", "backend", "workers", "batch_size", "learning_rate", "epoch_samples", "url",
    "unfreeze_epochs", "encoder_lr_factor", "layer_decay", "spacing",
}

_NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def flag_of(parameter: str, command: str | None = None) -> str | None:
    own = COMMAND_FLAGS.get(command or "", {})
    if parameter in own:
        return own[parameter]
    if parameter in FLAGS:
        return FLAGS[parameter]
    if parameter in SAME_NAME:
        return "--" + parameter.replace("_", "-")
    return None


def in_flags(message: str, command: str | None = None) -> str:
    """``message`` with each `parameter` written as ``command``'s flag (or as a plain word where it has none)."""
    return _NAME.sub(lambda match: flag_of(match.group(1), command) or match.group(1), message)


class FlagWording(logging.Filter):
    """Log records worded for the command line: parameter names become ``command``'s flags."""

    def __init__(self, command: str | None = None):
        super().__init__()
        self.command = command

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "`" in message:
            record.msg, record.args = in_flags(message, self.command), ()
        return True
