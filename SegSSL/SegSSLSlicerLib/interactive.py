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
- a point / box prompt (SAM 2) on the slice shown in the working view: the answer becomes the
  selected segment's painting on that slice (one undo step), so the next Propagate uses it.

The worker's events carry no masks until ``save``: a result is imported when the propagation ends,
and progress names the slice being computed.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer.util

from SegSSLLib.errors import SegSSLError
from SegSSLLib.volumes import label_array_to_image, write_image

from SegSSLSlicerLib import nodes
from SegSSLSlicerLib.choices import _
from SegSSLSlicerLib.worker import Step, WorkerClient, WorkerJob

# A point placed in a slice view lies on the slice it shows; this much off (in voxels) still counts.
ON_SLICE_TOLERANCE = 0.5


@dataclass
class Prepared:
    """A worker job and how to import what it leaves in ``result`` (one undo step)."""

    job: WorkerJob
    title: str
    import_result: object  # callable(save_state_for_undo) -> status line


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

        def propagated(event):
            self.last_propagate = dict(event)

        def plan() -> list[Step]:
            steps = self._open_steps(volume_node, key, axis, backend, sam2_checkpoint, sam2_config, painted)
            steps += self._annotate_steps(labels, volume_node, fresh=bool(steps))
            return steps + [
                Step("propagate", {"slice_range": list(slice_range)} if slice_range else {}, propagated,
                     self._propagating),
                Step("save", {"output": str(result)}, None, _("reading the result")),
            ]
        method = "SAM 2" if backend == "sam2" else "registration"
        sources = [nodes.segment_name_and_color(segmentation_node, s)[0] for s in segment_ids]
        title = _("propagation ({method}, interactive worker)").format(method=method)

        def import_result(save_state_for_undo=None) -> str:
            values = _read_labels(result, volume_node)
            changed = self._import(values, segmentation_node, volume_node, segment_ids, sources, method,
                                   save_state_for_undo)
            report = self.last_propagate
            line = _("{title} done: {names}").format(title=title, names=", ".join(changed) or _("nothing found"))
            if report.get("computed_slices") is not None:
                line += _(" ({computed} slices computed").format(computed=report["computed_slices"])
                if report.get("seconds_per_slice"):
                    line += _(", {seconds:.2f} s per slice").format(seconds=report["seconds_per_slice"])
                line += ")"
            return line

        return Prepared(WorkerJob(self.client, plan, device=device), title, import_result)

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
