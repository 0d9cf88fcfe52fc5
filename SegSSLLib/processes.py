"""Run ``segssl`` in its own process and follow its JSON progress: the engine behind the Slicer panel.

Plain Python (subprocess and threads; no Qt, no ``slicer``), so the same code runs inside 3D Slicer
(with PythonSlicer as the interpreter), in scripts and under pytest. Nothing here blocks the caller
except ``wait``: the Slicer widget calls ``poll()`` from a QTimer and shows ``status``.

``cancel()`` first interrupts the process group, so the CLI stops, removes its own temporary file and
exits; if some process of the group (not only the one started: under PythonSlicer that is a launcher
that exits at once) is still there after a grace period, the whole process tree is killed. Whenever a run ends
without success, what a killed writer could have left is removed: ``.partial-*`` files next to the
declared outputs, and declared outputs that did not exist before the run.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from SegSSLLib.atomic import partial_files
from SegSSLLib.formatting import short

# Added by this module when the process has ended and its leftovers are cleaned up:
# {"event": "exit", "returncode": N, "cancelled": bool}. Always the last event of a run.
EXIT_EVENT = "exit"
# Progress keys that describe the stage itself; any other key of a progress event is shown as info.
_PROGRESS_KEYS = {"event", "stage", "done", "total", "fraction", "overall"}
_IS_WINDOWS = os.name == "nt"


def library_root() -> Path:
    """The folder that holds the ``SegSSLLib`` package (it goes on the child's PYTHONPATH)."""
    return Path(__file__).resolve().parent.parent


def segssl_command(arguments: Sequence, python: str | os.PathLike | None = None) -> list[str]:
    """``python -m SegSSLLib ARGUMENTS --progress json``: the CLI speaking JSON lines on stdout."""
    return [str(python or sys.executable), "-m", "SegSSLLib", *map(str, arguments), "--progress", "json"]


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, with this SegSSLLib first on PYTHONPATH and unbuffered output."""
    env = dict(os.environ)
    env.update(extra or {})
    paths = [str(library_root())] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def read_events(stream, put) -> None:
    """Each line of ``stream`` as an event for ``put``: its JSON object, or ``{"event": "text", "message":
    line}`` for a line that is not one (a library that printed). Returns at the end of the stream."""
    for line in stream:
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = None
        if not isinstance(event, dict) or "event" not in event:
            event = {"event": "text", "message": line}
        put(event)


def drain(events: queue.Queue) -> list[dict]:
    """The events queued so far, oldest first (never waits)."""
    found = []
    while True:
        try:
            found.append(events.get_nowait())
        except queue.Empty:
            return found


def kill_process_tree(process: subprocess.Popen) -> None:
    """Kill ``process`` and every process of its group (started with its own session / process group)."""
    try:
        if _IS_WINDOWS:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False,
                           creationflags=subprocess.CREATE_NO_WINDOW)
        else:
            os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


@dataclass
class RunStatus:
    """What a progress bar and a status line need, folded from the events seen so far."""

    stage: str = ""
    fraction: float | None = None  # of the whole run (or of the current stage); None: unknown (busy indicator)
    message: str = ""
    outputs: list[str] = field(default_factory=list)
    metrics: dict | None = None
    error: str | None = None
    seconds: float | None = None
    returncode: int | None = None
    cancelled: bool = False

    def update(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "stage":
            self.stage = str(event.get("stage") or "")
            self.fraction = event["overall"] if "overall" in event else (0.0 if event.get("total") else None)
            self.message = self.stage
        elif kind == "progress":
            self.stage = str(event.get("stage") or self.stage)
            self.fraction = event["overall"] if "overall" in event else event.get("fraction")
            self.message = _describe_progress(event)
        elif kind in ("log", "text") and event.get("message"):
            self.message = str(event["message"]).splitlines()[0]
        elif kind == "output":
            self.outputs.append(str(event.get("path")))
        elif kind == "metrics":
            self.metrics = {k: v for k, v in event.items() if k != "event"}
        elif kind == "error":
            self.error = str(event.get("message") or "")
        elif kind == "done":
            self.seconds, self.fraction = event.get("seconds"), 1.0
        elif kind == EXIT_EVENT:
            self.returncode, self.cancelled = event.get("returncode"), bool(event.get("cancelled"))
            if self.cancelled:
                self.message = "cancelled; nothing was written"


def _describe_progress(event: dict) -> str:
    done, total = event.get("done"), event.get("total")
    text = f"{event.get('stage') or 'working'}: {done}/{total}" if total else f"{event.get('stage') or 'working'}: {done}"
    info = ", ".join(f"{k} {short(v)}" for k, v in event.items() if k not in _PROGRESS_KEYS)
    return f"{text} ({info})" if info else text


class SegSSLProcess:
    """One ``segssl`` run in a child process: start, poll events, cancel, wait."""

    def __init__(
        self,
        arguments: Sequence,
        outputs: Iterable[str | os.PathLike] = (),
        python: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ):
        self.command = segssl_command(arguments, python)
        self.outputs = [Path(p) for p in outputs]
        self.status = RunStatus()
        self._env = child_environment(env)
        self._cwd = cwd
        self._process: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._stderr_tail: collections.deque = collections.deque(maxlen=40)
        self._finished = threading.Event()
        self._cancel_requested = threading.Event()
        self._stopped = threading.Event()  # set by the canceller once the process group is gone or killed
        self._existed_before: dict[Path, bool] = {}
        self._partials_before: set[Path] = set()

    # -- running -------------------------------------------------------------------------------

    def start(self) -> SegSSLProcess:
        if self._process is not None:
            raise RuntimeError("this run was already started")
        self._existed_before = {path: path.exists() for path in self.outputs}
        self._partials_before = set(self._partial_files())
        options: dict = {}
        if _IS_WINDOWS:
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            options["start_new_session"] = True  # own process group: cancel reaches the whole tree
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=self._env,
            cwd=self._cwd,
            **options,
        )
        readers = [
            threading.Thread(target=self._read_stdout, daemon=True, name="segssl-stdout"),
            threading.Thread(target=self._read_stderr, daemon=True, name="segssl-stderr"),
        ]
        for reader in readers:
            reader.start()
        threading.Thread(target=self._finish, args=(readers,), daemon=True, name="segssl-finish").start()
        return self

    def poll(self) -> list[dict]:
        """Events that arrived since the last call (never blocks); ``status`` is updated with them."""
        events = drain(self._events)
        for event in events:
            self.status.update(event)
        return events

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the run has ended and been cleaned up; returns the exit code (None on timeout)."""
        if not self._finished.wait(timeout):
            return None
        return self.returncode

    def cancel(self, grace_seconds: float = 3.0) -> None:
        """Stop the run without waiting: interrupt now, kill the process tree after ``grace_seconds``."""
        if self._process is None or self._cancel_requested.is_set() or self._finished.is_set():
            return
        self._cancel_requested.set()
        threading.Thread(target=self._terminate, args=(grace_seconds,), daemon=True, name="segssl-cancel").start()

    @property
    def running(self) -> bool:
        return self._process is not None and not self._finished.is_set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancel_requested.is_set()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._finished.is_set() else None

    @property
    def error_message(self) -> str:
        """The CLI's one-line error, else the last line it wrote on stderr, else the exit code."""
        if self.status.error:
            return self.status.error
        for line in reversed(self._stderr_tail):
            if line.strip():
                return line.strip()
        return f"segssl stopped with exit code {self.returncode}"

    # -- threads -------------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        read_events(self._process.stdout, self._events.put)

    def _read_stderr(self) -> None:
        for line in self._process.stderr:
            self._stderr_tail.append(line.rstrip("\n"))

    def _finish(self, readers: list[threading.Thread]) -> None:
        returncode = self._process.wait()
        if self._cancel_requested.is_set():
            # A launcher (PythonSlicer) may exit at once on the interrupt while the real Python still
            # cleans up: the canceller gives the whole group its grace period, then kills what is left.
            self._stopped.wait()
            self._kill_tree()
        for reader in readers:
            reader.join(timeout=10)  # a stray grandchild may hold the pipes open; do not hang on it
        if returncode != 0 or self._cancel_requested.is_set():
            self._remove_leftovers()
        self._events.put({"event": EXIT_EVENT, "returncode": returncode, "cancelled": self._cancel_requested.is_set()})
        self._finished.set()

    def _terminate(self, grace_seconds: float) -> None:
        try:
            if not _IS_WINDOWS:
                # SIGINT becomes KeyboardInterrupt in the CLI: it cleans up its temporary file and exits.
                self._signal_group(signal.SIGINT)
                deadline = time.monotonic() + grace_seconds
                while self._group_alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
            self._kill_tree()  # a no-op when the whole group has exited
        finally:
            self._stopped.set()

    def _group_alive(self) -> bool:
        """Whether any process of the run's group is still there (the main one included)."""
        if self._process.poll() is None:
            return True
        try:
            os.killpg(self._process.pid, 0)  # signal 0: only asks whether the group exists
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    # -- process tree and files ----------------------------------------------------------------

    def _signal_group(self, signal_number: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal_number)

    def _kill_tree(self) -> None:
        kill_process_tree(self._process)

    def _partial_files(self) -> list[Path]:
        found = []
        for path in self.outputs:
            found += partial_files(path)
            if path.is_dir():
                found += [p for p in path.rglob(".*.partial-*") if p.is_file()]
        return found

    def _remove_leftovers(self) -> None:
        for partial in set(self._partial_files()) - self._partials_before:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        for path, existed in self._existed_before.items():
            if existed or not path.exists():
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def run_to_end(process: SegSSLProcess, timeout: float | None = None, on_event=None) -> int:
    """Start (if needed) and follow a run to its end in the calling thread; returns the exit code.

    For scripts and the in-Slicer self-test; the panel polls instead so the GUI never freezes.
    """
    if process.pid is None:
        process.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        for event in process.poll():
            if on_event:
                on_event(event)
            if event.get("event") == EXIT_EVENT:
                return int(event["returncode"])
        if deadline is not None and time.monotonic() > deadline:
            process.cancel(grace_seconds=1.0)
            deadline = None
        process.wait(timeout=0.1)
