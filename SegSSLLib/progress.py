"""Progress reporting: tqdm bars for people, JSON lines for programs (the Slicer module).

With ``--progress json`` every event is one JSON object on its own stdout line, for example::

    {"event": "stage", "stage": "pretrain", "total": 20}
    {"event": "progress", "stage": "pretrain", "done": 3, "total": 20, "fraction": 0.15}
    {"event": "log", "level": "INFO", "message": "epoch 3: loss 1.23"}
    {"event": "output", "path": "/data/out.nii.gz"}
    {"event": "done", "seconds": 12.5}
    {"event": "error", "message": "volume not found: ... — check the path"}

Readers must ignore events and keys they do not know.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from contextlib import contextmanager

from tqdm import tqdm

PROGRESS_MODES = ("bar", "json", "none")


class Progress:
    """One object per run; ``stage`` opens a counted stage, ``advance`` moves it on."""

    def __init__(self, mode: str = "bar", stream=None, enabled: bool = True):
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress mode must be one of {PROGRESS_MODES}, got {mode!r}")
        self.mode = mode if enabled else "none"
        self._stream = stream
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._stage = None
        self._done = 0
        self._total = 0
        self._bar = None

    @property
    def stream(self):
        return self._stream or sys.stdout

    def emit(self, event: str, **fields) -> None:
        if self.mode != "json":
            return
        line = json.dumps({"event": event, **fields}, default=str)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    @contextmanager
    def stage(self, name: str, total: int | None = None):
        self._stage, self._done, self._total = name, 0, total or 0
        self.emit("stage", stage=name, total=total)
        if self.mode == "bar":
            self._bar = tqdm(total=total, desc=name, unit="step", dynamic_ncols=True, leave=False, file=sys.stderr)
        try:
            yield self
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self._stage = None

    def advance(self, steps: int = 1, **info) -> None:
        self._done += steps
        if self._bar is not None:
            self._bar.update(steps)
            if info:
                self._bar.set_postfix({k: _short(v) for k, v in info.items()}, refresh=False)
        fraction = self._done / self._total if self._total else None
        self.emit("progress", stage=self._stage, done=self._done, total=self._total or None, fraction=fraction, **info)

    def output(self, path) -> None:
        self.emit("output", path=str(path))

    def done(self) -> None:
        self.emit("done", seconds=round(time.monotonic() - self._started, 3))

    def error(self, message: str) -> None:
        self.emit("error", message=message)


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else value


class JsonLogHandler(logging.Handler):
    """Sends log records through ``Progress`` as ``log`` events, so stdout stays pure JSON."""

    def __init__(self, progress: Progress):
        super().__init__()
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.emit("log", level=record.levelname, message=record.getMessage())


NO_PROGRESS = Progress("none")
