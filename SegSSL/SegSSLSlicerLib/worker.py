"""The panel's side of ``segssl serve`` (docs/interactive.md): one worker process per Slicer session.

Plain Python (subprocess and threads, no Qt, no ``slicer``), so tests drive it with a real worker.

- ``WorkerClient``: starts ``PythonSlicer -m SegSSLLib serve`` on first use, writes JSON requests with
  increasing ids to its stdin, and reads its events on a background thread into a queue that the
  panel's QTimer empties with ``poll()`` — nothing here ever waits for the worker. If the worker dies,
  the client notices (end of its stdout), and the next ``ensure_started`` starts a new one and says so.
  ``stop()`` ends it without blocking: end of input (the worker finishes and exits 0), then the
  process tree is killed after a grace period.
- ``WorkerJob``: a chain of requests (open, annotate, propagate, save, ...) with the interface of a
  ``SegSSLProcess`` (start, poll, cancel, status, returncode, error_message), so the panel's one-job
  ``RunController`` runs it like any other job: buttons disabled meanwhile, Cancel, progress line.
  Cancel sends the worker's ``cancel`` op for the request in flight; nothing of a cancelled chain is
  imported (events that arrived before, such as ``partial`` results, are taken back by their owner:
  ``interactive.PartialImport``), and the worker's state is as it was before the cancelled request.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from SegSSLLib.processes import EXIT_EVENT, RunStatus, child_environment, drain, kill_process_tree, read_events

_IS_WINDOWS = os.name == "nt"
# Added by the client (never sent by the worker): the worker process has ended.
WORKER_EXIT_EVENT = "worker-exit"


class WorkerDied(Exception):
    """The worker process ended while a request was in flight."""


class WorkerClient:
    """One ``segssl serve`` process, started on first use and restarted if it dies."""

    def __init__(self, python=None, device: str = "auto", extra_arguments=(), env=None):
        self.python = str(python or sys.executable)
        self.device = device
        self.extra_arguments = list(extra_arguments)
        self._env = env
        self._process: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._write_lock = threading.Lock()
        self._next_id = 0
        self._stderr_tail: collections.deque = collections.deque(maxlen=20)
        self.starts = 0  # how many worker processes this client started
        self.restart_message = ""  # set when a worker died and a new one was started
        self.died_message = ""  # why the last worker ended unexpectedly (empty when it did not)
        self.sent: list[dict] = []  # requests sent to the current worker (newest last; kept short)
        self.session: dict = {}  # what the current worker holds (the caller's bookkeeping; cleared on restart)

    # -- the process -----------------------------------------------------------------------------

    @property
    def command(self) -> list[str]:
        return [self.python, "-m", "SegSSLLib", "serve", "--device", self.device, *self.extra_arguments]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None and not self.died_message

    def ensure_started(self, device: str | None = None) -> bool:
        """Start the worker if none runs (or it runs on another device); True when a new one started."""
        if device is not None and device != self.device:
            self.stop()
            self.device = device
        if self._process is not None and self._process.poll() is None and not self.died_message:
            return False
        if self._process is not None:  # it died (perhaps before its last events were read)
            self._note_death(self._process.returncode)
            self.restart_message = f"the SegSSL worker had stopped ({self.died_message}); a new one was started"
        self._discard()
        options: dict = {}
        if _IS_WINDOWS:
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        else:
            options["start_new_session"] = True  # own process group: stop reaches PythonSlicer's child too
        self._process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            encoding="utf-8", errors="replace", env=child_environment(self._env), bufsize=1, **options,
        )
        self.starts += 1
        self.died_message = ""
        self.session = {}
        self.sent = []
        process, events = self._process, self._events
        threading.Thread(target=self._read_stdout, args=(process, events), daemon=True, name="segssl-worker-stdout").start()
        threading.Thread(target=self._read_stderr, args=(process,), daemon=True, name="segssl-worker-stderr").start()
        return True

    def _discard(self) -> None:
        """Forget the old process's events (a new worker answers with new ids)."""
        self._events = queue.Queue()
        self._stderr_tail.clear()

    def _read_stdout(self, process, events: queue.Queue) -> None:
        read_events(process.stdout, events.put)  # a line that is not an event comes as a "text" event (logged)
        code = process.wait()
        events.put({"event": WORKER_EXIT_EVENT, "returncode": code, "pid": process.pid})

    def _read_stderr(self, process) -> None:
        for line in process.stderr:
            line = line.rstrip()
            if line:
                self._stderr_tail.append(line)
                logging.debug("segssl serve: %s", line)

    # -- requests and events -----------------------------------------------------------------------

    def send(self, op: str, **fields) -> int:
        """Write one request; returns its id. Raises ``WorkerDied`` when the worker is gone."""
        if self._process is None or self._process.poll() is not None or self.died_message:
            raise WorkerDied(self.died_message or "the worker is not running")
        with self._write_lock:
            self._next_id += 1
            request = {"id": self._next_id, "op": op, **fields}
            try:
                self._process.stdin.write(json.dumps(request) + "\n")
                self._process.stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as error:
                self.died_message = self.died_message or f"its input closed: {error}"
                raise WorkerDied(self.died_message) from None
        self.sent.append(request)
        del self.sent[:-50]
        return request["id"]

    def poll(self) -> list[dict]:
        """Events that arrived since the last call (never blocks)."""
        events = drain(self._events)
        for event in events:
            if event.get("event") == WORKER_EXIT_EVENT and self._process is not None and event.get("pid") == self._process.pid:
                self._note_death(event.get("returncode"))
        return events

    def _note_death(self, code) -> None:
        if not self.died_message:
            tail = self._stderr_tail[-1] if self._stderr_tail else ""
            self.died_message = f"exit code {code}" + (f": {tail}" if tail else "")

    def cancel(self, target: int | None) -> None:
        """Ask the worker to stop ``target`` (the request in flight): its cancel op is read at once."""
        try:
            self.send("cancel", **({"target": target} if target is not None else {}))
        except WorkerDied:
            pass

    def kill(self) -> None:
        """End the worker now (its process tree); the next ``ensure_started`` starts a new one."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        self.died_message = self.died_message or "it did not answer Cancel and was ended"
        kill_process_tree(process)

    def stop(self, grace_seconds: float = 5.0) -> None:
        """End the worker without blocking: the running request cancelled and end of input now, the process
        tree killed after ``grace_seconds`` (at once when it is 0: the application is quitting)."""
        if self._process is not None and self._process.poll() is None and not self.died_message:
            self.cancel(None)  # whatever runs stops at its next slice
        process, self._process = self._process, None
        self.session = {}
        if process is None or process.poll() is not None:
            return
        try:
            process.stdin.close()  # end of input: the worker exits 0 once the cancelled request has ended
        except OSError:
            pass
        if grace_seconds <= 0:
            kill_process_tree(process)
            return

        def reap():
            try:
                process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                kill_process_tree(process)
                process.wait()

        threading.Thread(target=reap, daemon=True, name="segssl-worker-stop").start()


# -- a chain of requests as one panel job -----------------------------------------------------------


@dataclass
class Step:
    """One request of a job: its op and fields (or a function making them when the step starts), and
    what to do with its ``done`` event (the job's bookkeeping; may raise ``SegSSLError``) and with its
    other events (``partial``: results shown while it runs; not called once the job is cancelled)."""

    op: str
    fields: dict | Callable[[], dict] = field(default_factory=dict)
    on_done: Callable[[dict], None] | None = None
    describe: str | Callable[[], str] = ""  # the status line while it runs (a function: asked when it starts)
    on_event: Callable[[dict], None] | None = None


class WorkerJob:
    """Requests run one after another on the worker, as one job of the panel's ``RunController``.

    Same interface as ``SegSSLProcess``: ``start``, ``poll`` (events; the last is ``{"event": "exit"}``),
    ``cancel``, ``cancelled``, ``returncode``, ``error_message``, ``status``.
    """

    # A request that ignores the cancel op this long after it (a model still loading) is ended by
    # stopping the worker; the next click starts a new one.
    KILL_AFTER_SECONDS = 20.0

    def __init__(self, client: WorkerClient, steps: list[Step] | Callable[[], list[Step]], device: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        # A function is called when the job starts, after a dead worker was replaced: what to send
        # depends on what the worker then holds.
        self._plan = steps if callable(steps) else (lambda: list(steps))
        self.steps: list[Step] = []
        self.device = device
        self.status = RunStatus()
        self.returncode: int | None = None
        self.error_message = ""
        self.results: dict[str, dict] = {}  # op -> its done event (the last one of that op)
        self.restarted = ""  # the message when a dead worker was replaced for this job
        self._clock = clock
        self._index = -1
        self._current: int | None = None
        self._cancel_at: float | None = None
        self._ended = False
        self._pending: list[dict] = []  # events this job adds (its end), handed out by the next poll

    @property
    def cancelled(self) -> bool:
        return self._cancel_at is not None

    @property
    def command(self) -> list[str]:
        return self.client.command

    def start(self) -> "WorkerJob":
        """Start the worker if needed (OSError when it cannot) and send the first request."""
        before = self.client.starts
        had_one = self.client.pid is not None
        self.client.ensure_started(self.device)
        if self.client.starts > before and had_one and self.client.restart_message:
            self.restarted = self.client.restart_message
            self.status.message = self.restarted
            logging.warning("SegSSL: %s", self.restarted)
        self.client.restart_message = ""
        self.steps = self.planned()
        self._next()
        return self

    def planned(self) -> list[Step]:
        """The requests this job sends if it starts now."""
        return list(self._plan())

    def _next(self) -> None:
        self._index += 1
        if self._index >= len(self.steps):
            self._end(0)
            return
        step = self.steps[self._index]
        fields = step.fields() if callable(step.fields) else step.fields
        try:
            self._current = self.client.send(step.op, **fields)
        except WorkerDied as error:
            self._fail(f"the SegSSL worker stopped ({error}); click again to start a new one")
            return
        if callable(step.describe):
            step.describe = step.describe()
        if step.describe:
            self.status.message = step.describe

    def _end(self, code: int) -> None:
        self.returncode = code
        self._ended = True
        self._pending.append({"event": EXIT_EVENT, "returncode": code, "cancelled": self.cancelled})
        self.status.update(self._pending[-1])

    def _fail(self, message: str) -> None:
        self.error_message = message
        self.status.error = message
        self._end(1)

    def poll(self) -> list[dict]:
        out, self._pending = self._pending, []
        if self._ended:
            return out
        for event in self.client.poll():
            out.append(event)
            if event.get("event") == WORKER_EXIT_EVENT:
                if self.cancelled:
                    self._end(1)
                else:
                    self._fail(f"the SegSSL worker stopped ({self.client.died_message or 'it ended'}); "
                               "click again to start a new one")
                break
            if event.get("id") != self._current:
                continue
            kind = event.get("event")
            if kind == "progress":
                self.status.update({**event, "stage": self.steps[self._index].describe or self.steps[self._index].op})
            elif kind not in ("done", "error"):
                step = self.steps[self._index]
                if step.on_event is None or self.cancelled:
                    continue
                try:
                    step.on_event(event)
                except Exception as error:  # noqa: BLE001 - reported as the job's error, one line
                    logging.debug("SegSSL: %s event failed", kind, exc_info=True)
                    self.client.cancel(self._current)  # nothing more of it is wanted
                    self._fail(str(error) or type(error).__name__)
                    break
            elif kind == "error":
                if event.get("cancelled") or self.cancelled:
                    self._cancel_at = self._cancel_at or self._clock()
                    self._end(1)
                else:
                    self._fail(str(event.get("message") or "the worker reported an error"))
                break
            elif kind == "done":
                step = self.steps[self._index]
                self.results[step.op] = event
                try:
                    if step.on_done is not None:  # bookkeeping of what the worker now holds, cancelled or not
                        step.on_done(event)
                except Exception as error:  # noqa: BLE001 - reported as the job's error, one line
                    self._fail(str(error) or type(error).__name__)
                    break
                if self.cancelled:  # the request ended before the cancel reached it: go no further
                    self._end(1)
                    break
                self._next()
                if self._ended:
                    break
        if not self._ended and self.cancelled and self._clock() - self._cancel_at > self.KILL_AFTER_SECONDS:
            self.client.kill()  # it does not answer the cancel: a new worker starts at the next click
            self._end(1)
        out.extend(self._pending)
        self._pending = []
        return out

    def cancel(self, grace_seconds: float = 3.0) -> None:
        if self._ended or self._cancel_at is not None:
            return
        self._cancel_at = self._clock()
        self.status.message = "cancelling"
        self.client.cancel(self._current)
