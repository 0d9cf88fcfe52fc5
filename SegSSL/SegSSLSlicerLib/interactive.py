"""Propagate and prompt through the interactive worker (``segssl serve``), without Qt.

``InteractivePanel`` keeps one ``worker.WorkerClient`` per Slicer session and turns a Propagate or a
Prompt click into a ``worker.WorkerJob`` for the panel's ``RunController``:

- the volume is written once (a NRRD with the node's exact geometry) and opened once per volume,
  axis, backend and set of segments; the model stays loaded in the worker between opens;
- the painted slices of the selected segments are sent as one ``annotate`` (only when the painting
  changed since the last one), then ``propagate`` and ``save``: a correction painted on another slice
  reaches the worker as annotate + propagate, and the worker recomputes only the slices that
  correction can change (docs/interactive.md);
- the result replaces the segments of the previous result of the same source segments (new
  segments the first time), as one Segment Editor undo step;
- results arrive slice by slice: the propagation's ``partial`` events (slices whose labels are final)
  go into the result segments as they come (``PartialImport``); the first one saves the editor's undo
  state, so the finished propagation is still one undo step, and a propagation that is cancelled or
  fails takes them back: the segments are as they were before it;
- a point / box prompt (SAM 2) on the slice shown in the working view: the answer becomes the
  selected segment's painting on that slice (one undo step), so the next Propagate uses it;
- Refine with SAM runs in the same worker (its ``refine`` op): the SAM model and the slices'
  embeddings stay loaded between clicks; each result is one undo step.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import slicer.util

from SegSSLLib.errors import SegSSLError
from SegSSLLib.volumes import label_array_to_image, write_image

from SegSSLSlicerLib import controller, nodes, runs
from SegSSLSlicerLib.choices import _
from SegSSLSlicerLib.worker import Step, WorkerClient, WorkerJob

# A point placed in a slice view lies on the slice it shows; this much off (in voxels) still counts.
ON_SLICE_TOLERANCE = 0.5


@dataclass
class Prepared:
    """A worker job and how to import what it leaves in ``result`` (one undo step).

    The panel sets ``save_state_for_undo`` before the job starts when results may arrive while it runs
    (the editor's undo state is saved before the first change), and calls ``cleanup`` when the job has
    ended, whatever the outcome: it takes back what arrived early unless ``import_result`` finished."""

    job: WorkerJob
    title: str
    import_result: object  # callable(save_state_for_undo) -> status line
    cleanup: Callable[[], None] = field(default=lambda: None)
    save_state_for_undo: Callable[[], None] | None = None
    partial: "PartialImport | None" = None  # a propagation's results shown while it runs


class PartialImport:
    """A propagation's partial results shown in its result segments as they arrive, taken back unless
    the finished result is imported.

    Each ``partial`` event names a slab file (docs/interactive.md); only its listed slices — final
    ones — are shown. The first import saves the editor's undo state and keeps the content of every
    segment it changes; ``take_back`` puts that content back and removes the segments it added."""

    def __init__(self, panel: "InteractivePanel", segmentation_node, volume_node, segment_ids, sources, method):
        self.panel, self.segmentation_node, self.volume_node = panel, segmentation_node, volume_node
        self.segment_ids, self.sources, self.method = list(segment_ids), list(sources), method
        self.shown: dict[int, np.ndarray] = {}  # object value -> its (k, j, i) uint8 mask as shown now
        self.boxes: dict[int, tuple] = {}  # object value -> (lower, upper) (k, j, i) corners holding all its voxels
        self.before: dict[str, np.ndarray] = {}  # segment id -> its mask before the first import
        self.added: list[str] = []
        self.mappings_before: dict | None = None
        self.imported = 0  # partial events shown
        self.finished = False  # the final result was imported: nothing to take back

    def __call__(self, event: dict, save_state_for_undo=None) -> None:
        path = Path(str(event.get("output", "")))
        if not path.is_file():
            raise SegSSLError("the worker's partial result file is missing — please report this")
        slab = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        path.unlink()
        if not (controller.node_present(self.segmentation_node) and controller.node_present(self.volume_node)):
            return  # removed meanwhile: the job is being cancelled, nothing to show
        along, first, slices = 2 - int(event["axis"]), int(event["first"]), [int(k) for k in event["slices"]]
        expected = list(nodes.volume_size(self.volume_node)[::-1])
        expected[along] = int(event["last"]) - first + 1
        if list(slab.shape) != expected or not slices or min(slices) < first or max(slices) > int(event["last"]):
            raise SegSSLError("a partial result of the worker does not fit the volume — please report this")
        if self.imported == 0:
            nodes.require_same_transform(self.segmentation_node, self.volume_node)
            self.mappings_before = dict(self.panel.result_segments)
            if save_state_for_undo is not None:
                save_state_for_undo()  # before the first change: the finished result is one undo step
        self.imported += 1
        rows = np.moveaxis(slab, along, 0)[[k - first for k in slices]]
        for value, source in enumerate(self.segment_ids, start=1):
            new = rows == value
            target = self.panel._result_segment(self.segmentation_node, source)
            if value not in self.shown:
                if target is None and not new.any():
                    continue
                if target is not None:
                    current = slicer.util.arrayFromSegmentBinaryLabelmap(self.segmentation_node, target, self.volume_node)
                    self.shown[value] = np.array(current, dtype=np.uint8)
                    self.before.setdefault(target, self.shown[value].copy())
                else:
                    self.shown[value] = np.zeros(nodes.volume_size(self.volume_node)[::-1], np.uint8)
                self.boxes[value] = _box(self.shown[value])
            shown = np.moveaxis(self.shown[value], along, 0)
            if np.array_equal(shown[slices] != 0, new):
                continue
            shown[slices] = new
            box = self.boxes[value] = _union(self.boxes[value], _rows_box(new, slices, along))
            if target is not None:
                # Only the box that holds the object's old and new voxels: cheap while the volume is large.
                nodes.set_segment_within_box(self.shown[value], self.segmentation_node, target, self.volume_node, *box)
            else:
                name = f"{self.sources[value - 1]} propagated ({self.method})"
                target = nodes.add_segments(self.shown[value], self.segmentation_node, self.volume_node, names={1: name})[1]
                self.added.append(target)
                self.panel.result_segments[(self.segmentation_node.GetID(), source)] = target
        self.segmentation_node.CreateDefaultDisplayNodes()

    def take_back(self) -> None:
        """The propagation did not finish: the segments as they were before the first partial import."""
        if self.finished or not self.imported:
            return
        self.imported = 0
        self.panel.result_segments.clear()
        self.panel.result_segments.update(self.mappings_before or {})
        if not controller.node_present(self.segmentation_node) or not controller.node_present(self.volume_node):
            return
        segmentation = self.segmentation_node.GetSegmentation()
        for segment_id, mask in self.before.items():
            if segmentation.GetSegment(segment_id) is not None:
                nodes.replace_segment(mask, self.segmentation_node, segment_id, self.volume_node)
        for segment_id in self.added:
            if segmentation.GetSegment(segment_id) is not None:
                segmentation.RemoveSegment(segment_id)


class InteractivePanel:
    """The panel's one worker and what it holds; driven by ``SegSSL.py`` and by tests."""

    def __init__(self, python=None, work_parent=None, client: WorkerClient | None = None,
                 sam2_image_size: int | None = None):
        self.client = client or WorkerClient(python)
        self.work_parent = work_parent
        self.sam2_image_size = sam2_image_size  # None: the model's own (tests use a tiny one)
        self._folder: Path | None = None
        self._names = itertools.count(1)
        self._volume_files: dict[tuple, Path] = {}
        # (segmentation node id, source segment id) -> segment id of its latest result
        self.result_segments: dict[tuple[str, str], str] = {}
        self.last_open: dict = {}  # the worker's answer to the last open (backend, device, encode_seconds, ...)
        self.last_propagate: dict = {}
        self.last_refine: dict = {}
        # Partial results of a propagation at most this often (None: none, the result arrives at the end).
        self.partial_seconds: float | None = 1.0
        # SAM 2's convergence stop for corrections (slices that must agree with the previous result in a
        # row; 0: off). None: the worker's default (3, `segssl serve --converge-slices`).
        self.converge_slices: int | None = None

    # -- lifetime --------------------------------------------------------------------------------

    def folder(self) -> Path:
        if self._folder is None or not self._folder.is_dir():
            self._folder = Path(tempfile.mkdtemp(prefix="SegSSL-worker-", dir=self.work_parent))
            self._volume_files.clear()
        return self._folder

    def _file(self, stem: str) -> Path:
        return self.folder() / f"{stem}-{next(self._names)}.nrrd"

    def stop(self, grace_seconds: float = 5.0) -> None:
        """The scene closes or Slicer exits: end the worker (without waiting) and remove its files."""
        self.client.stop(grace_seconds)
        self.result_segments.clear()
        self.last_open, self.last_propagate = {}, {}
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        self._volume_files.clear()

    # -- what the panel shows --------------------------------------------------------------------

    def describe(self) -> str:
        """One line: the worker's backend and device and, on a CPU, the time per slice."""
        opened = self.last_open
        if not opened or not self.client.alive:
            return ""
        if opened.get("backend") != "sam2":
            return _("interactive worker: registration on the CPU")
        device = str(opened.get("device") or "?")
        line = _("interactive worker: SAM 2 ({size} px) on {device}").format(size=opened.get("image_size"), device=device)
        if device.startswith("cpu"):
            measured = self.last_propagate.get("seconds_per_slice")
            if measured:
                line += _("; about {seconds:.1f} s per slice on this CPU").format(seconds=measured)
            elif opened.get("encode_seconds"):
                line += _("; at least {seconds:.1f} s per slice on this CPU").format(seconds=opened["encode_seconds"])
        return line

    def _propagating(self) -> str:
        """The status line of a propagation, with the time per slice on a CPU when it is known."""
        line = self.describe()
        return _("propagating") + (f" — {line}" if "per slice" in line else "")

    # -- building jobs ---------------------------------------------------------------------------

    def volume_file(self, volume_node) -> Path:
        """The volume as the worker reads it (written once per volume version)."""
        return self._volume_file(volume_node)

    def _result_segment(self, segmentation_node, source: str) -> str | None:
        """The segment that holds ``source``'s latest result, if it is still there."""
        known = self.result_segments.get((segmentation_node.GetID(), source))
        return known if known and segmentation_node.GetSegmentation().GetSegment(known) is not None else None

    def _volume_file(self, volume_node) -> Path:
        key = (volume_node.GetID(), volume_node.GetImageData().GetMTime(), volume_node.GetMTime())
        path = self._volume_files.get(key)
        if path is None or not path.is_file():
            path = self._file("volume")
            write_image(nodes.volume_to_image(volume_node), path, compress=False)
            self._volume_files = {key: path}  # one volume file at a time
        return path

    def _open_steps(self, volume_node, key: tuple, axis: int, backend: str, sam2_checkpoint, sam2_config,
                    painted: dict[int, set[int]]) -> list[Step]:
        """``open`` when the worker does not hold this volume, axis, backend and segments, or when a
        slice it knows as drawn is no longer painted at all (an annotate cannot take that back)."""
        held = self.client.session
        removed = any(s not in _all(painted) for slices in held.get("drawn", {}).values() for s in slices)
        if held.get("key") == key and not removed:
            return []
        fields = {"input": str(self._volume_file(volume_node)), "backend": backend, "axis": axis}
        if backend == "sam2":
            fields.update(sam2_checkpoint=str(sam2_checkpoint), sam2_config=sam2_config)
            if self.sam2_image_size:
                fields["image_size"] = self.sam2_image_size
            if self.converge_slices is not None:
                fields["converge_slices"] = int(self.converge_slices)

        def opened(event):
            self.client.session = {"key": key, "axis": event.get("axis", axis), "drawn": {}}
            self.last_open = dict(event)

        return [Step("open", fields, opened, _("opening the volume in the worker"))]

    def _annotate_steps(self, labels: np.ndarray, volume_node, fresh: bool = False) -> list[Step]:
        """``annotate`` with the painting, unless the worker has it already (``fresh``: an open comes first)."""
        if not labels.any():
            return []
        digest = hashlib.sha1(labels.tobytes() + str(labels.shape).encode()).hexdigest()
        if not fresh and self.client.session.get("annotation") == digest:
            return []  # the painting did not change since the worker last saw it

        def fields():
            path = self._file("annotation")
            write_image(label_array_to_image(labels, nodes.volume_to_image(volume_node)), path, compress=False)
            return {"annotation": str(path)}

        def annotated(event):
            self.client.session.update(annotation=digest, drawn=event.get("drawn", {}))

        return [Step("annotate", fields, annotated, _("sending the painted slices"))]

    def propagate(self, volume_node, segmentation_node, segment_ids: list[str], backend: str, device: str,
                  axis: int | None = None, sam2_checkpoint=None, sam2_config: str | None = None,
                  slice_range: tuple[int, int] | None = None) -> Prepared:
        """Propagate the painted slices of ``segment_ids`` through the volume in the worker.

        ``axis``: the ITK axis the painting lies on when the painting alone does not tell (the view
        the user works in); the worker's current axis is kept otherwise.
        """
        nodes.require_volume(volume_node)
        labels = nodes.segments_to_labels(segmentation_node, segment_ids, volume_node)
        if not labels.any():
            raise SegSSLError("the segment to propagate is empty — paint the structure on a slice with the Segment Editor")
        axis = self._axis(labels, axis)
        if backend == "sam2" and not sam2_checkpoint:
            raise SegSSLError("SAM 2 weights: no file is chosen — click Download, or Browse to a SAM 2 checkpoint you already have")
        key = (volume_node.GetID(), segmentation_node.GetID(), tuple(segment_ids), axis, backend,
               str(sam2_checkpoint or ""), sam2_config or "")
        painted = _painted_slices(labels, axis)
        result = self._file("result")
        method = "SAM 2" if backend == "sam2" else "registration"
        sources = [nodes.segment_name_and_color(segmentation_node, s)[0] for s in segment_ids]
        partial = PartialImport(self, segmentation_node, volume_node, segment_ids, sources, method)
        partial_dir = self.folder() / f"partial-{next(self._names)}"

        def propagated(event):
            self.last_propagate = dict(event)

        def propagate_fields() -> dict:
            fields = {"slice_range": list(slice_range)} if slice_range else {}
            if self.partial_seconds is not None:
                partial_dir.mkdir(exist_ok=True)
                fields.update(partial_dir=str(partial_dir), partial_seconds=self.partial_seconds)
            return fields

        def plan() -> list[Step]:
            steps = self._open_steps(volume_node, key, axis, backend, sam2_checkpoint, sam2_config, painted)
            steps += self._annotate_steps(labels, volume_node, fresh=bool(steps))
            return steps + [
                Step("propagate", propagate_fields, propagated, self._propagating,
                     on_event=lambda event: partial(event, prepared.save_state_for_undo)),
                Step("save", {"output": str(result)}, None, _("reading the result")),
            ]
        title = _("propagation ({method}, interactive worker)").format(method=method)

        def import_result(save_state_for_undo=None) -> str:
            values = _read_labels(result, volume_node)
            changed = self._import(values, segmentation_node, volume_node, segment_ids, sources, method,
                                   None if partial.imported else save_state_for_undo)
            partial.finished = True
            report = self.last_propagate
            line = _("{title} done: {names}").format(title=title, names=", ".join(changed) or _("nothing found"))
            if report.get("computed_slices") is not None:
                line += _(" ({computed} slices computed").format(computed=report["computed_slices"])
                if report.get("seconds_per_slice"):
                    line += _(", {seconds:.2f} s per slice").format(seconds=report["seconds_per_slice"])
                kept = sum(c.get("kept", 0) for c in report.get("converged") or [])
                if kept:
                    line += _("; matched the previous result, kept it on {kept} slices").format(kept=kept)
                line += ")"
            return line

        def cleanup() -> None:
            try:
                partial.take_back()
            finally:
                shutil.rmtree(partial_dir, ignore_errors=True)

        prepared = Prepared(WorkerJob(self.client, plan, device=device), title, import_result, cleanup, partial=partial)
        return prepared

    def refine(self, run: runs.PreparedRun, segmentation_node, volume_node, device: str) -> Prepared:
        """Refine with SAM in the worker: ``run`` from ``runs.prepare_refine`` (pass it ``volume_file=
        self.volume_file(volume_node)``); its result is imported as the command's would be, one undo step."""
        if not run.request:
            raise SegSSLError("this refinement cannot run in the worker — please report this")

        def refined(event):
            self.last_refine = dict(event)

        job = WorkerJob(self.client, [Step("refine", dict(run.request), refined, _("refining with SAM"))], device=device)

        def import_result(save_state_for_undo=None) -> str:
            status = controller.import_result(run, segmentation_node, volume_node, save_state_for_undo)[1]
            report = self.last_refine
            if report.get("encoded") is not None:
                status += _(" ({encoded} slices encoded, {reused} reused)").format(encoded=report["encoded"],
                                                                                  reused=report.get("reused", 0))
            return status

        return Prepared(job, _("{title} (interactive worker)").format(title=run.title), import_result, run.cleanup)

    def prompt(self, volume_node, segmentation_node, segment_ids: list[str], segment_id: str, slice_node, device: str,
               sam2_checkpoint, sam2_config: str, points_node=None, negative_node=None, roi_node=None) -> Prepared:
        """Points (and negative points) and/or a box on the slice ``slice_node`` shows, answered by SAM 2;
        the mask becomes ``segment_id``'s painting on that slice."""
        nodes.require_volume(volume_node)
        if slice_node is None:
            raise SegSSLError("cannot tell which slice the prompt is on — choose the view under 'Painted in view', "
                              "or move the mouse over the view you work in")
        if not sam2_checkpoint:
            raise SegSSLError("point and box prompts need SAM 2 weights — click Download, or Browse to a SAM 2 checkpoint")
        if segment_id not in segment_ids:
            raise SegSSLError("the segment selected in the editor is not ticked under 'Segments to propagate' — tick it")
        axis, index = nodes.view_slice(slice_node, volume_node)
        points, point_labels = [], []
        for node, label in ((points_node, 1), (negative_node, 0)):
            for ijk in _points_on_slice(node, volume_node, axis, index):
                points.append(ijk)
                point_labels.append(label)
        box = None
        if roi_node is not None and roi_node.GetNumberOfDefinedControlPoints() > 0:
            lower, upper = nodes.roi_to_ijk_box(roi_node, volume_node)
            if lower[axis] <= index <= upper[axis]:
                box = [list(lower), list(upper)]
                box[0][axis] = box[1][axis] = index
        if not points and box is None:
            raise SegSSLError(f"no prompt point or box lies on the slice shown (slice {index}) — place points on it, "
                              "or move the box over it")
        labels = nodes.segments_to_labels(segmentation_node, segment_ids, volume_node)
        key = (volume_node.GetID(), segmentation_node.GetID(), tuple(segment_ids), axis, "sam2",
               str(sam2_checkpoint), sam2_config or "")
        painted = _painted_slices(labels, axis) if labels.any() else {}
        obj = segment_ids.index(segment_id) + 1
        request = {"object": obj, **({"points": points, "point_labels": point_labels} if points else {}),
                   **({"box": box} if box else {})}
        result = self._file("prompt")

        def prompted(event):
            self.client.session.pop("annotation", None)  # the painting changes on that slice: send it next time

        def plan() -> list[Step]:
            steps = self._open_steps(volume_node, key, axis, "sam2", sam2_checkpoint, sam2_config, painted)
            steps += self._annotate_steps(labels, volume_node, fresh=bool(steps))
            return steps + [Step("annotate", request, prompted, _("asking SAM 2")),
                            Step("save", {"output": str(result)}, None, _("reading the answer"))]
        name = nodes.segment_name_and_color(segmentation_node, segment_id)[0]
        title = _("prompt on slice {index} (SAM 2)").format(index=index)

        def import_result(save_state_for_undo=None) -> str:
            values = _read_labels(result, volume_node)
            along = 2 - axis
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node).astype(np.uint8)
            selector = [slice(None)] * 3
            selector[along] = index
            answer = (values[tuple(selector)] == obj).astype(np.uint8)
            if save_state_for_undo is not None:
                save_state_for_undo()
            mask[tuple(selector)] = answer
            nodes.replace_segment(mask, segmentation_node, segment_id, volume_node)
            return _("{title}: '{name}' painted with {pixels} pixels; click Propagate to carry it on").format(
                title=title, name=name, pixels=int(answer.sum()))

        return Prepared(WorkerJob(self.client, plan, device=device), title, import_result)

    # -- helpers ---------------------------------------------------------------------------------

    def _axis(self, labels: np.ndarray, axis: int | None) -> int:
        found = nodes.painted_slice(labels)
        if found is not None:
            return found[0]
        held = self.client.session.get("axis") if self.client.alive else None
        if held is not None and _lies_on_few_slices(labels, held):
            return held
        if axis is not None:
            return axis
        raise SegSSLError("cannot tell which axis the painting lies on — choose the view you painted in under "
                          "'Painted in view'")

    def _import(self, values: np.ndarray, segmentation_node, volume_node, segment_ids, sources, method,
                save_state_for_undo) -> list[str]:
        """Each object's result into the segment of its previous result (a new one the first time); one undo step."""
        nodes.require_same_transform(segmentation_node, volume_node)
        segmentation = segmentation_node.GetSegmentation()
        targets = {}
        for value, source in enumerate(segment_ids, start=1):
            known = self.result_segments.get((segmentation_node.GetID(), source))
            targets[value] = known if known and segmentation.GetSegment(known) is not None else None
        present = {int(v) for v in np.unique(values) if v}
        if not present and not any(targets.values()):
            return []
        if save_state_for_undo is not None:
            save_state_for_undo()
        names = []
        for value, source in enumerate(segment_ids, start=1):
            target = targets[value]
            if target is not None:
                nodes.replace_segment((values == value).astype(np.uint8), segmentation_node, target, volume_node)
            elif value in present:
                name = f"{sources[value - 1]} propagated ({method})"
                target = nodes.add_segments((values == value).astype(np.uint8), segmentation_node, volume_node,
                                            names={1: name})[1]
                self.result_segments[(segmentation_node.GetID(), source)] = target
            else:
                continue
            names.append(segmentation.GetSegment(target).GetName())
        segmentation_node.CreateDefaultDisplayNodes()
        return names


def _box(mask: np.ndarray):
    """(lower, upper) (k, j, i) corners of the non-zero voxels of ``mask``, or None when there are none."""
    if not mask.any():
        return None
    spans = [np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    return tuple(int(s[0]) for s in spans), tuple(int(s[-1]) for s in spans)


def _rows_box(rows: np.ndarray, slices: list[int], along: int):
    """The (k, j, i) box of the non-zero voxels of ``rows`` (slices ``slices`` along array axis ``along``)."""
    present = [k for k, row in zip(slices, rows) if row.any()]
    if not present:
        return None
    (r0, c0), (r1, c1) = _box(rows.any(axis=0)[None])[0][1:], _box(rows.any(axis=0)[None])[1][1:]
    lower, upper = [r0, c0], [r1, c1]
    lower.insert(along, min(present))
    upper.insert(along, max(present))
    return tuple(lower), tuple(upper)


def _union(a, b):
    if a is None or b is None:
        return a or b
    return tuple(map(min, a[0], b[0])), tuple(map(max, a[1], b[1]))


def _all(painted: dict[int, set[int]]) -> set[int]:
    return set().union(*painted.values()) if painted else set()


def _painted_slices(labels: np.ndarray, axis: int) -> dict[int, set[int]]:
    """Object value -> the slices along ITK ``axis`` it is painted on."""
    along = 2 - axis
    moved = np.moveaxis(labels, along, 0).reshape(labels.shape[along], -1)
    result: dict[int, set[int]] = {}
    for k in np.flatnonzero(moved.any(axis=1)):
        for value in np.unique(moved[k]):
            if value:
                result.setdefault(int(value), set()).add(int(k))
    return result


def _lies_on_few_slices(labels: np.ndarray, axis: int) -> bool:
    """Whether the painting is on fewer slices along ``axis`` than along any other axis."""
    counts = [int(np.any(labels != 0, axis=tuple(a for a in range(3) if a != 2 - ax)).sum()) for ax in (0, 1, 2)]
    return counts[axis] == min(counts)


def _points_on_slice(markups_node, volume_node, axis: int, index: int) -> list[list[int]]:
    """(i, j, k) voxel indices of the placed control points that lie on slice ``index`` along ``axis``."""
    if markups_node is None:
        return []
    world = []
    for n in range(markups_node.GetNumberOfControlPoints()):
        if markups_node.GetNthControlPointPositionStatus(n) != markups_node.PositionDefined:
            continue
        position = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(n, position)
        world.append(position)
    if not world:
        return []
    size = nodes.volume_size(volume_node)
    found = []
    for ijk in nodes.world_to_ijk(world, volume_node):
        rounded = [int(v) for v in np.rint(ijk)]
        if abs(ijk[axis] - index) <= ON_SLICE_TOLERANCE and all(0 <= v < n for v, n in zip(rounded, size)):
            rounded[axis] = index
            found.append(rounded)
    return found


def _read_labels(path: Path, volume_node) -> np.ndarray:
    from SegSSLSlicerLib.runs import read_result

    if not Path(path).is_file():
        raise SegSSLError("the worker wrote no result — please report this")
    return read_result(Path(path), volume_node)
