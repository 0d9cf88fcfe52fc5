"""What ``segment``, ``propagate`` and ``evaluate`` share when their input is a folder of cases.

The library part (pairing, resume, shards, failure isolation) is ``SegSSLLib.dataset_runs``; this
module only knows the exit code and who prints: rank 0 alone shows progress and the summary, the
other torchrun processes log warnings (a failed case) and nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("segssl")

# 0: every case done or skipped; 1: nothing done (an error before the first case, one line);
# 4: the run finished but some cases failed (their reasons are logged; the other outputs are written).
FAILED_CASES_EXIT_CODE = 4


@dataclass(frozen=True)
class CaseFiles:
    """One case of a data-set run: its name, input files and output file (None for ``evaluate``)."""

    name: str
    inputs: tuple[Path, ...]
    output: Path | None = None


def rank_progress(progress):
    """``progress`` on rank 0; silence (and warnings only) on the other torchrun processes."""
    from SegSSLLib.dataset_runs import is_main_process
    from SegSSLLib.progress import NO_PROGRESS

    if is_main_process():
        return progress
    logging.getLogger().setLevel(logging.WARNING)
    return NO_PROGRESS


def finish(summary, progress, done_word: str = "written") -> int:
    """Rank 0 logs the one-line summary (and a ``summary`` JSON event); every rank returns the exit code."""
    from SegSSLLib.dataset_runs import is_main_process

    if is_main_process():
        log.info("%s", summary.line(done_word))
        progress.emit("summary", **summary.to_dict())
    return FAILED_CASES_EXIT_CODE if summary.failed else 0


def resume_rule(args):
    """Skip a case whose output is already complete (the resume rule), unless ``--overwrite`` asks to redo it."""
    if getattr(args, "overwrite", False):
        return None
    from SegSSLLib.dataset_runs import image_size, output_complete

    return lambda case: output_complete(case.output, image_size(case.inputs[0]))
