"""What the SegSSL panel decides, without Qt: tested with slicer-core, bound to widgets by ``SegSSL.py``.

- ``RunController``: the one background job at a time (a ``segssl`` run, a weights download or a
  package install), its progress line, Cancel, and what happens when it ends — including a node
  that was deleted while it ran (nothing is imported then).
- ``ViewTracker``: which slice view the user works in, from the crosshair node's cursor position
  (``vtkMRMLSelectionNode.GetActiveViewID`` is never set by Slicer, so it cannot tell).
- ``import_result``: a finished run's result as one undo step of the Segment Editor, with its own
  colour and a name that says what made it; the editor's selection stays on the user's segment.
- Small decisions the widget only displays: which volumes are inputs, which segments to propagate,
  the cluster map's label layer, what a workflow still needs installed, the device, a CPU time estimate.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from SegSSLLib.errors import SegSSLError
from SegSSLLib.processes import EXIT_EVENT

from SegSSLSlicerLib import nodes, runs
from SegSSLSlicerLib.choices import _

# -- input volumes --------------------------------------------------------------------------------

# The Input volume selector's filter (SegSSL.ui must say the same; a test compares them): grey-level
# scalar volumes only. Label maps derive from vtkMRMLScalarVolumeNode; with showChildNodeTypes off the
# selector shows only the exact class (Slicer qMRMLSortFilterProxyModel), so no label map and no
# S3-Net cluster map is offered.
INPUT_VOLUME_NODE_TYPES = ("vtkMRMLScalarVolumeNode",)
INPUT_VOLUME_SHOW_CHILD_NODE_TYPES = False


def accepts_input_volume(node) -> bool:
    """Whether the Input volume selector offers ``node`` (same rule as its filter)."""
    if node is None:
        return False
    if INPUT_VOLUME_SHOW_CHILD_NODE_TYPES:
        return any(node.IsA(t) for t in INPUT_VOLUME_NODE_TYPES)
    return node.GetClassName() in INPUT_VOLUME_NODE_TYPES and node.GetAttribute(nodes.CLUSTER_MAP_ATTRIBUTE) is None


def default_input_volume(scene):
    """The first volume the selector offers (never a label map or a cluster map), or None."""
    return next((n for n in nodes.nodes_of_class(scene, "vtkMRMLScalarVolumeNode") if accepts_input_volume(n)), None)


# -- the one background job -----------------------------------------------------------------------


@dataclass
class Outcome:
    """How a job ended: the status line, and an error to show in a dialog (empty when none)."""

    status: str
    error: str = ""


@dataclass
class _Job:
    process: object  # SegSSLProcess or installing.InstallJob: start, poll, cancel, cancelled, returncode, error_message, status
    title: str
    on_success: Callable[[object], str]
    cleanup: Callable[[], None] | None
    watched: tuple  # nodes the result goes into: if one is removed, nothing is imported
    kind: str
    started: float
    removed: str = ""  # name of a watched node that was removed


def node_present(node) -> bool:
    scene = node.GetScene() if node is not None else None
    return scene is not None and scene.IsNodePresent(node) != 0


class RunController:
    """At most one job at a time; the panel disables its action buttons while ``busy``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.job: _Job | None = None

    @property
    def busy(self) -> bool:
        return self.job is not None

    @property
    def kind(self) -> str:
        return self.job.kind if self.job else ""

    def start(self, process, title: str, on_success, cleanup=None, watched=(), kind: str = "run") -> bool:
        """Start ``process``; False (and ``cleanup`` done) when a job is already running — a second
        click can never start a second run or a nested install."""
        if self.job is not None:
            if cleanup:
                cleanup()
            return False
        try:
            process.start()
        except OSError as error:
            if cleanup:
                cleanup()
            command = getattr(process, "command", None) or ["the process"]
            raise SegSSLError(f"cannot start {command[0]}: {error} — check the Slicer installation") from None
        self.job = _Job(process, title, on_success, cleanup, tuple(n for n in watched if n is not None), kind, self._clock())
        return True

    def poll(self) -> Outcome | None:
        """Read what the job reported; an ``Outcome`` once it has ended (the job is then gone)."""
        job = self.job
        if job is None:
            return None
        if not job.removed:
            gone = next((n for n in job.watched if not node_present(n)), None)
            if gone is not None:
                job.removed = gone.GetName() or gone.GetID() or "a node"
                job.process.cancel(grace_seconds=1.0)  # its result has nowhere to go
        for event in job.process.poll():
            if event.get("event") in ("log", "text"):
                logging.info("segssl: %s", event.get("message"))
            if event.get("event") == EXIT_EVENT:
                return self._finish()
        return None

    def progress(self) -> tuple[float | None, str]:
        """(fraction done or None for "unknown", status line) of the running job."""
        job = self.job
        if job is None:
            return None, ""
        status = job.process.status
        elapsed = int(self._clock() - job.started)
        if job.process.cancelled:
            state = _("cancelling")
        else:
            state = status.message or _("starting...")
        return status.fraction, f"{job.title}: {state} ({elapsed} s)"

    def cancel(self, grace_seconds: float = 3.0) -> None:
        if self.job is not None:
            self.job.process.cancel(grace_seconds=grace_seconds)

    def _finish(self) -> Outcome:
        job, self.job = self.job, None
        process = job.process
        try:
            if job.removed or (process.returncode == 0 and not process.cancelled and not all(map(node_present, job.watched))):
                name = job.removed or next(n.GetName() for n in job.watched if not node_present(n))
                return Outcome(_("{title} stopped: '{name}' was removed during the run; nothing was imported").format(title=job.title, name=name))
            if process.cancelled:
                return Outcome(_("{title} cancelled; nothing was changed").format(title=job.title))
            if process.returncode != 0:
                return Outcome(_("{title} failed").format(title=job.title), process.error_message)
            try:
                return Outcome(job.on_success(process))
            except SegSSLError as error:
                return Outcome(str(error), str(error))
            except Exception as error:  # noqa: BLE001 - never let a traceback be all the user sees
                logging.exception("SegSSL: %s failed", job.title)
                return Outcome(_("{title} failed").format(title=job.title), f"{job.title} failed: {error}")
        finally:
            if job.cleanup:
                job.cleanup()


# -- results --------------------------------------------------------------------------------------


def import_result(prepared: runs.PreparedRun, segmentation_node, volume_node, save_state_for_undo=None) -> tuple[runs.RunResult, str]:
    """Import a finished run as one undo step; returns (result, status line).

    ``save_state_for_undo`` is the Segment Editor's ``saveStateForUndo`` (Slicer
    qMRMLSegmentEditorWidget): it is called right before the segments change, so Ctrl+Z removes the
    result alone and never the user's last brush stroke with it. New segments get a colour of their
    own (``nodes.distinct_color``); the editor's selected segment is left alone (the next stroke
    still goes into the user's segment, and a second Propagate starts from it again).
    """
    result = runs.finish(prepared, segmentation_node, volume_node, before_change=save_state_for_undo)
    segmentation_node.CreateDefaultDisplayNodes()
    if result.empty:
        return result, _("{title} found nothing; no segment was added or changed").format(title=prepared.title)
    names = [segmentation_node.GetSegmentation().GetSegment(i).GetName() for i in result.segment_ids.values()]
    return result, _("{title} done: {names}").format(title=prepared.title, names=", ".join(names))


def follow_editor(ticked: list[str], previous_current: str, new_current: str) -> list[str]:
    """Segments to propagate after the editor's selected segment changed.

    The tick list follows the editor while it is just that one segment (or empty); once the user has
    ticked others, their choice stays.
    """
    ticked = [s for s in ticked if s]
    if not new_current:
        return ticked
    if not ticked or ticked == [previous_current]:
        return [new_current]
    return ticked


def segments_to_propagate(ticked: list[str], current: str) -> list[str]:
    ticked = [s for s in ticked if s]
    return ticked or ([current] if current else [])


def show_label_layer(scene, node, visible: bool, opacity: float = 0.5) -> None:
    """Show ``node`` as the label layer of every slice view, or take it off the views where it is."""
    for composite in nodes.nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        if visible:
            composite.SetLabelVolumeID(node.GetID())
            composite.SetLabelOpacity(opacity)
        elif composite.GetLabelVolumeID() == node.GetID():
            composite.SetLabelVolumeID(None)


def label_layer_shown(scene, node) -> bool:
    return node is not None and any(
        c.GetLabelVolumeID() == node.GetID() for c in nodes.nodes_of_class(scene, "vtkMRMLSliceCompositeNode")
    )


# -- which slice view the user works in -----------------------------------------------------------


class ViewTracker:
    """The slice view the user last worked in, from the crosshair node.

    Slicer's slice views set the crosshair's cursor position on every mouse move
    (``vtkMRMLCrosshairNode.SetCursorPositionXYZ(xyz, sliceNode)``) and invalidate it when the mouse
    leaves the view — so at the moment a panel button is clicked ``GetCursorPositionXYZ`` returns no
    slice node. The tracker observes ``CursorPositionModifiedEvent`` and remembers the last slice
    node the cursor was in.
    """

    def __init__(self):
        self._crosshair = None
        self._tag = None
        self._last = None

    def attach(self, scene) -> None:
        """Observe the scene's crosshair (Slicer's singleton, ID vtkMRMLCrosshairNodedefault)."""
        crosshairs = nodes.nodes_of_class(scene, "vtkMRMLCrosshairNode") if scene is not None else []
        crosshair = crosshairs[0] if crosshairs else None
        if crosshair is self._crosshair:
            return
        self.detach()
        if crosshair is not None:
            self._crosshair = crosshair
            self._tag = crosshair.AddObserver(crosshair.CursorPositionModifiedEvent, self._on_cursor)
            self._on_cursor()

    def detach(self) -> None:
        if self._crosshair is not None and self._tag is not None:
            self._crosshair.RemoveObserver(self._tag)
        self._crosshair, self._tag = None, None

    def forget(self) -> None:
        self._last = None

    def _on_cursor(self, caller=None, event=None) -> None:
        if self._crosshair is None:
            return
        slice_node = self._crosshair.GetCursorPositionXYZ([0.0, 0.0, 0.0])
        if slice_node is not None:
            self._last = slice_node

    def working_view(self, scene):
        """The slice node the user last worked in (while the layout still shows it); else the only slice
        view shown in the layout; else None."""
        if self._last is not None and node_present(self._last) and self._last.IsViewVisibleInLayout():
            return self._last
        shown = [n for n in nodes.nodes_of_class(scene, "vtkMRMLSliceNode") if n.IsViewVisibleInLayout()]
        return shown[0] if len(shown) == 1 else None


def named_view(scene, layout_name: str):
    """The slice node of the view named ``layout_name`` (Red, Yellow, Green) when the layout shows it."""
    for node in nodes.nodes_of_class(scene, "vtkMRMLSliceNode"):
        if node.GetLayoutName() == layout_name and node.IsViewVisibleInLayout():
            return node
    raise SegSSLError(f"the {layout_name} view is not in the current layout — choose a layout that shows it, or 'Auto'")


def working_axis(chosen_view, tracker: ViewTracker, scene, volume_node):
    """Refinement's slice axis: the chosen view's, else the working view's; None (the command's
    default, axial) when no view tells."""
    view = chosen_view or tracker.working_view(scene)
    return nodes.view_axis(view, volume_node) if view is not None and volume_node is not None else None


# -- weights, packages, device, time --------------------------------------------------------------


class WeightsLookups:
    """Where ``segssl weights path`` says each named weights file is; asked in threads (it starts a process)."""

    UNKNOWN = "unknown"

    def __init__(self, lookup: Callable[[str], Path | None] | None = None):
        self._lookup = lookup
        self.found: dict[str, object] = {}  # name -> Path, None (not downloaded) or UNKNOWN
        self._threads: dict[str, threading.Thread] = {}

    def ask(self, name: str, python) -> None:
        if name in self.found or name in self._threads:
            return

        def look():
            try:
                self.found[name] = (self._lookup or (lambda n: runs.weights_file(n, python=python)))(name) or None
            except Exception:  # noqa: BLE001 - an older SegSSL without `segssl weights`
                self.found[name] = self.UNKNOWN

        thread = threading.Thread(target=look, daemon=True, name=f"segssl-weights-{name}")
        self._threads[name] = thread
        thread.start()

    def forget(self, name: str) -> None:
        self.found.pop(name, None)

    @property
    def pending(self) -> bool:
        self._threads = {n: t for n, t in self._threads.items() if t.is_alive()}
        return bool(self._threads)

    def checking(self, name: str) -> bool:
        thread = self._threads.get(name)
        return thread is not None and thread.is_alive() and name not in self.found

    def path(self, name: str) -> Path | None:
        found = self.found.get(name)
        return found if isinstance(found, Path) else None


def install_confirmation(workflow_title: str, missing: list[str]) -> str:
    """The question asked before installing, listing what and how big."""
    names = ", ".join(r.split(">")[0] for r in missing)
    size = _(" PyTorch alone is about 1-3 GB.") if any(r.startswith("torch") for r in missing) else ""
    return _(
        "{workflow} needs these Python packages in Slicer's Python: {names}. Install them now? They download "
        "in the background; Slicer stays usable, and SegSSL's buttons wait until it is done.{size}"
    ).format(workflow=workflow_title, names=names, size=size)


PROBE_CODE = (
    "import json, torch\n"
    "cuda = torch.cuda.is_available()\n"
    "print(json.dumps({'torch': torch.__version__, 'cuda': cuda, 'cuda_version': torch.version.cuda,\n"
    "                  'name': torch.cuda.get_device_name(0) if cuda else ''}))\n"
)


@dataclass
class DeviceInfo:
    cuda: bool
    name: str = ""
    torch: str = ""
    cuda_version: str | None = None

    def describe(self) -> str:
        if self.cuda:
            return _("GPU: {name} (PyTorch {torch}, CUDA {cuda})").format(name=self.name, torch=self.torch, cuda=self.cuda_version)
        return _("CPU only: PyTorch {torch} sees no CUDA GPU").format(torch=self.torch)


@dataclass
class DeviceProbe:
    """What PyTorch sees in Slicer's Python, asked once in a thread (importing torch takes seconds)."""

    info: DeviceInfo | None = None
    error: str = ""
    _thread: threading.Thread | None = field(default=None, repr=False)

    def ask(self, python, timeout: float = 120) -> None:
        if self.info is not None or (self._thread is not None and self._thread.is_alive()):
            return
        self.error = ""

        def probe():
            try:
                done = subprocess.run([str(python), "-c", PROBE_CODE], capture_output=True, text=True, timeout=timeout)
                line = [s for s in done.stdout.splitlines() if s.startswith("{")][-1]
                found = json.loads(line)
                self.info = DeviceInfo(bool(found["cuda"]), found.get("name", ""), found.get("torch", ""), found.get("cuda_version"))
            except Exception as error:  # noqa: BLE001 - shown as "unknown", never raised into the GUI
                self.error = str(error) or type(error).__name__

        self._thread = threading.Thread(target=probe, daemon=True, name="segssl-device-probe")
        self._thread.start()

    @property
    def pending(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def reset(self) -> None:
        self.info, self.error = None, ""


def describe_device(choice: str, probe: DeviceProbe, torch_installed: bool) -> str:
    """The line next to Device: where the next run computes."""
    if not torch_installed:
        return _("registration runs on the CPU; PyTorch is installed when a workflow needs it")
    if probe.info is None:
        return _("checking what PyTorch sees...") if probe.pending else _("unknown ({error})").format(error=probe.error or "-")
    if choice == "cpu":
        return _("CPU (chosen)") + ("; " + probe.info.describe() if probe.info.cuda else "")
    if choice == "cuda" and not probe.info.cuda:
        return _("no CUDA GPU: a GPU run will be refused; choose Auto or CPU")
    return probe.info.describe()


def runs_on_cpu(workflow: str, choice: str, probe: DeviceProbe) -> bool:
    if workflow == "registration" or choice == "cpu":
        return True
    return probe.info is not None and not probe.info.cuda


# Seconds per slice on a CPU, measured on the development machine (2 x86_64 cores; Testing/Benchmarks/
# RESULTS.md): SAM 2.1 tiny at 1024 px 40.46 s / 12 frames; S3-Net 72.4 s for 256x256x100
# (its whole-volume route); PolyCL batched inference 6.1 s / 100 slices at 256 px. Bigger SAM 2
# models are slower than tiny (not measured), so their estimate is a lower bound.
CPU_SECONDS_PER_SLICE = {"sam2": 3.4, "s3net": 0.72, "polycl": 0.06}
CPU_STARTUP_SECONDS = 6.0  # Python, torch and MONAI imports (RESULTS.md: "about 6 s are Python and torch imports")
LONG_RUN_SECONDS = 60.0


def cpu_estimate(workflow: str, slices: int) -> float | None:
    """Rough seconds a run takes on the CPU, or None when there is no measured number."""
    per_slice = CPU_SECONDS_PER_SLICE.get(workflow)
    if per_slice is None or slices <= 0:
        return None
    return CPU_STARTUP_SECONDS + per_slice * slices


def estimate_line(workflow: str, slices: int, work_seconds: tuple[float, float] | None = None) -> str:
    """One line for the status before a long CPU run; empty when short or not measured.

    ``work_seconds``: (likely, at most) seconds of the work itself when the run knows them before it
    starts (S3-Net from a click, ``runs.PreparedRun.cpu_seconds``); that line is always shown, since
    the user waits on a click.
    """
    if work_seconds is not None:
        likely, most = (CPU_STARTUP_SECONDS + seconds for seconds in work_seconds)
        return _("On the CPU this takes about {likely} (at most {most}).").format(
            likely=_duration(likely), most=_duration(most)
        )
    seconds = cpu_estimate(workflow, slices)
    if seconds is None or seconds < LONG_RUN_SECONDS:
        return ""
    minutes = max(1, round(seconds / 60))
    return _("On the CPU this takes about {minutes} min for {slices} slices (a GPU is much faster).").format(
        minutes=minutes, slices=slices
    )


def _duration(seconds: float) -> str:
    rounded = max(5, 5 * round(seconds / 5))
    if rounded < 60:
        return _("{seconds} s").format(seconds=rounded)
    return _("{minutes} min").format(minutes=round(seconds / 60))
