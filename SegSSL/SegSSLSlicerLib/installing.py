"""Installing a workflow's packages in a background process, so Slicer never freezes.

``slicer.util.pip_install`` and PyTorchUtils' ``installTorch`` run pip in the GUI thread and only
pump events between output lines (Slicer ``Base/Python/slicer/util.py``: ``logProcessOutput``), so
the application freezes while a wheel downloads or sam2 compiles, and a click that gets through can
start a second, nested install. Here every step is a child process (``PythonSlicer -m pip ...``)
that the panel polls from a timer, with its action buttons disabled, exactly like a ``segssl`` run;
Cancel stops the process tree.

PyTorch is installed the way PyTorchUtils does it (SlicerPyTorch ``PyTorchUtils.py``:
``installTorch``): ``light-the-torch`` first if missing, then ``python -m light_the_torch install
torch... torchvision...``, which picks the build that fits the GPU driver. The other packages follow
with pip and a constraints file written just before each step (so the torch that was just installed
is pinned too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from packaging.requirements import Requirement

from SegSSLLib.processes import EXIT_EVENT, SegSSLProcess

from SegSSLSlicerLib import dependencies

LIGHT_THE_TORCH = "light-the-torch>=0.5"  # as PyTorchUtils installs it

# What pip prints when it cannot reach the package index (no network, a proxy in the way).
_NETWORK_FAILURES = re.compile(
    r"ProxyError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Could not fetch URL|ConnectTimeout|Read timed out|Connection ?(refused|reset|aborted)|"
    r"SSLError|CERTIFICATE_VERIFY_FAILED|No matching distribution found|Network is unreachable",
    re.IGNORECASE,
)
_BUILD_FAILURES = re.compile(r"Failed building wheel|Failed to build|error: command .* failed|subprocess-exited-with-error", re.I)


@dataclass
class InstallStep:
    """One child process of an install: ``python -m MODULE ARGUMENTS`` with extra environment."""

    title: str
    module: str  # "pip" or "light_the_torch"
    arguments: list[str]
    environment: dict[str, str] = field(default_factory=dict)
    before: Callable[[], None] | None = None  # e.g. write the constraints file as things are now

    def command(self, python) -> list[str]:
        return [str(python), "-m", self.module, *self.arguments]


def install_steps(requirements, constraints_path, have_light_the_torch: bool | None = None) -> list[InstallStep]:
    """The steps that install the missing ``requirements`` (in order: torch first, sam2 last)."""
    requirements = list(requirements)
    names = {Requirement(r).name.lower(): r for r in requirements}
    torch = [r for r in dependencies.TORCH_REQUIREMENTS if Requirement(r).name in names]
    others = [r for r in requirements if r not in torch]
    steps = []
    if torch:
        if have_light_the_torch is None:
            have_light_the_torch = dependencies.installed_version("light-the-torch") is not None
        if not have_light_the_torch:
            steps.append(InstallStep("light-the-torch (picks the PyTorch build for your GPU driver)", "pip", ["install", LIGHT_THE_TORCH]))
        # Both torch and torchvision together, so that their versions match.
        steps.append(InstallStep("PyTorch", "light_the_torch", ["install", *dependencies.TORCH_REQUIREMENTS]))

    def write_constraints():
        from SegSSLLib.atomic import write_text_atomically

        write_text_atomically(constraints_path, dependencies.constraints_text(), "pip constraints")

    for arguments, environment in dependencies.pip_steps(others, constraints_path):
        shown = [a for a in arguments if not a.startswith("-") and a != str(constraints_path)]
        title = ", ".join(Requirement(r).name for r in shown)
        steps.append(InstallStep(title, "pip", ["install", *arguments], environment, before=write_constraints))
    return steps


class _StepProcess(SegSSLProcess):
    """A child process that is not ``segssl``: pip or light-the-torch. Its lines arrive as text events;
    cancel and cleanup are SegSSLProcess's (own process group, interrupt, then kill the tree)."""

    def __init__(self, command: list[str], environment: dict[str, str]):
        super().__init__([], env=environment)
        self.command = command


def failure_advice(output_lines, step_title: str, returncode) -> str:
    """One line that says what went wrong and what to do, from what pip printed."""
    text = "\n".join(output_lines)
    offline = (
        "or install from a folder of wheels downloaded elsewhere: "
        "PythonSlicer -m pip install --no-index --find-links FOLDER <packages> (see docs/slicer.md)"
    )
    if _NETWORK_FAILURES.search(text):
        return (
            f"installing {step_title} failed: the package index could not be reached — check the network; "
            f"behind a proxy set HTTPS_PROXY before starting Slicer, {offline}"
        )
    if _BUILD_FAILURES.search(text):
        return (
            f"installing {step_title} failed while building it — see the Python console for the compiler's message; "
            f"{offline}"
        )
    last = next((line.strip() for line in reversed(list(output_lines)) if line.strip()), "")
    detail = f": {last}" if last else f" (exit code {returncode})"
    return f"installing {step_title} failed{detail} — see the Python console; {offline}"


class InstallJob:
    """The steps of one install, one process after another; polled, never blocking.

    The same interface the panel uses for a ``segssl`` run: ``start``, ``poll`` (events, ending with
    an exit event), ``cancel``, ``cancelled``, ``returncode``, ``error_message`` and ``status``.
    """

    def __init__(self, steps: list[InstallStep], python, on_line: Callable[[str], None] | None = None):
        if not steps:
            raise ValueError("nothing to install")
        self.steps = list(steps)
        self.python = python
        self.on_line = on_line
        self.index = -1
        self.process: _StepProcess | None = None
        self.lines: list[str] = []  # the current step's output (stdout and stderr)
        self._cancelled = False
        self._returncode = None
        self._error = ""
        self._finished = False
        self.status = _InstallStatus(self)

    @property
    def step(self) -> InstallStep | None:
        return self.steps[self.index] if 0 <= self.index < len(self.steps) else None

    def start(self) -> InstallJob:
        self._next()
        return self

    def _next(self) -> None:
        self.index += 1
        self.lines = []
        step = self.steps[self.index]
        if step.before:
            step.before()
        self.process = _StepProcess(step.command(self.python), step.environment)
        self.process.start()

    def poll(self) -> list[dict]:
        if self._finished or self.process is None:
            return []
        events = []
        for event in self.process.poll():
            if event.get("event") != EXIT_EVENT:
                message = str(event.get("message", ""))
                self.lines.append(message)
                if self.on_line:
                    self.on_line(message)
                events.append({"event": "text", "message": message})
                continue
            code = event.get("returncode")
            if self._cancelled or code != 0 or self.index + 1 == len(self.steps):
                self.lines.extend(self.process._stderr_tail)  # pip writes its errors there
                if code != 0 and not self._cancelled:
                    self._error = failure_advice(self.lines, self.steps[self.index].title, code)
                self._returncode = code if code != 0 else 0
                self._finished = True
                events.append({"event": EXIT_EVENT, "returncode": self._returncode, "cancelled": self._cancelled})
                return events
            self._next()
            return events
        return events

    def cancel(self, grace_seconds: float = 3.0) -> None:
        if self._finished or self.process is None:
            return
        self._cancelled = True
        self.process.cancel(grace_seconds=grace_seconds)

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def returncode(self):
        return self._returncode

    @property
    def error_message(self) -> str:
        return self._error or f"installing stopped with exit code {self._returncode}"


class _InstallStatus:
    """What the progress bar and the status line show: step n of N and pip's last line."""

    def __init__(self, job: InstallJob):
        self._job = job

    @property
    def fraction(self):
        job = self._job
        return max(0, job.index) / len(job.steps) if job.steps else None

    @property
    def message(self) -> str:
        job = self._job
        step = job.step
        if step is None:
            return ""
        last = next((line for line in reversed(job.lines) if line.strip()), "")
        return f"step {job.index + 1}/{len(job.steps)}, {step.title}" + (f": {last[:80]}" if last else "")
