"""Progress reporting: tqdm bars for people, JSON lines for programs (the Slicer module).

With ``--progress json`` every event is one JSON object on its own stdout line, for example::

    {"event": "stage", "stage": "pretrain", "total": 20, "overall": 0.0}
    {"event": "progress", "stage": "pretrain", "done": 3, "total": 20, "fraction": 0.15, "overall": 0.15}
    {"event": "log", "level": "INFO", "message": "epoch 3: loss 1.23"}
    {"event": "output", "path": "/data/out.nii.gz"}
    {"event": "done", "seconds": 12.5}
    {"event": "error", "message": "volume not found: ... — check the path"}

Stages nest (a demo step that trains a model opens its own stage): ``fraction`` is the share of
the innermost stage that is done, ``overall`` the share of the whole run (null when the outermost
stage has no known length). A progress bar should show ``overall``.

Readers must ignore events and keys they do not know.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from SegSSLLib import strict_json
from SegSSLLib.errors import SegSSLError
from SegSSLLib.formatting import short

PROGRESS_MODES = ("bar", "json", "none")


@dataclass
class _Stage:
    name: str
    total: int
    done: int = 0
    bar: object | None = None  # a tqdm bar (tqdm is imported only when a bar is shown)


class Progress:
    """One object per run; ``stage`` opens a counted stage, ``advance`` moves it on."""

    def __init__(self, mode: str = "bar", stream=None, enabled: bool = True):
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress mode must be one of {PROGRESS_MODES}, got {mode!r}")
        self.mode = mode if enabled else "none"
        self._stream = stream
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._stages: list[_Stage] = []  # innermost last
        self._overall_high = 0.0  # the bar never moves back within an outermost stage

    @property
    def stream(self):
        return self._stream or sys.stdout

    def emit(self, event: str, **fields) -> None:
        if self.mode != "json":
            return
        line = strict_json.dumps({"event": event, **fields}, default=str)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    @contextmanager
    def stage(self, name: str, total: int | None = None):
        current = _Stage(name, total or 0)
        if not self._stages:
            self._overall_high = 0.0
        self._stages.append(current)
        self.emit("stage", stage=name, total=total, overall=self.overall())
        if self.mode == "bar":
            # Imported here: `--progress json` runs (the Slicer panel) need no tqdm installed.
            from tqdm import tqdm

            current.bar = tqdm(
                total=total, desc=name, unit="step", dynamic_ncols=True, leave=False, file=sys.stderr,
                position=len(self._stages) - 1,
            )
        try:
            yield self
        finally:
            if current.bar is not None:
                current.bar.close()
            self._stages.remove(current)

    def advance(self, steps: int = 1, **info) -> None:
        if not self._stages:
            return
        current = self._stages[-1]
        current.done += steps
        if current.bar is not None:
            current.bar.update(steps)
            if info:
                current.bar.set_postfix({k: short(v) for k, v in info.items()}, refresh=False)
        fraction = min(1.0, current.done / current.total) if current.total else None
        self.emit(
            "progress", stage=current.name, done=current.done, total=current.total or None,
            fraction=fraction, overall=self.overall(), **info,
        )

    def overall(self) -> float | None:
        """Share of the outermost stage done, counting an inner stage's progress within its parent's step.

        A step may run several inner stages one after the other; the share never goes back when the
        next one starts from zero.
        """
        if not self._stages or not self._stages[0].total:
            return None
        inner = 0.0
        for stage in reversed(self._stages):
            # A stage of unknown length adds nothing to its parent's current step.
            inner = min(1.0, (stage.done + inner) / stage.total) if stage.total else 0.0
        self._overall_high = max(self._overall_high, inner)
        return self._overall_high

    def output(self, path) -> None:
        self.emit("output", path=str(path))

    def done(self) -> None:
        self.emit("done", seconds=round(time.monotonic() - self._started, 3))

    def error(self, message: str, **fields) -> None:
        """``fields``: e.g. ``parameter_message``, the library's own words (parameter names, no flags)."""
        self.emit("error", message=message, **fields)


class JsonLogHandler(logging.Handler):
    """Sends log records through ``Progress`` as ``log`` events, so stdout stays pure JSON."""

    def __init__(self, progress: Progress):
        super().__init__()
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.emit("log", level=record.levelname, message=record.getMessage())


NO_PROGRESS = Progress("none")


def tensorboard_writer(log_dir, purge_step: int | None = None):
    """A TensorBoard ``SummaryWriter`` writing into ``log_dir`` (created), or None without a folder.

    TensorBoard is a training extra (``pip install "segssl[train]"``), not a runtime dependency.
    """
    if not log_dir:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SegSSLError(
            "training curves for TensorBoard need the tensorboard package — pip install tensorboard "
            "(or segssl[train]), or leave out the log folder"
        ) from None
    from pathlib import Path

    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

