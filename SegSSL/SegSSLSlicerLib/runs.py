"""The panel's three workflows as ``segssl`` runs.

``prepare_*`` writes what the command needs (the volume, an annotation or a mask, with the node's
exact geometry) into a fresh work folder and returns the command line; ``finish`` reads the result
back into *new* segments of the output segmentation. Between the two the command runs in its own
process (``SegSSLLib.processes``): the panel polls it, scripts and the self-test use ``run_to_end``.
All checks a user can fail (no seed, no weights, oblique view, ...) happen in ``prepare_*``, before
anything starts.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer.util

from SegSSLLib.errors import SegSSLError
from SegSSLLib.processes import SegSSLProcess, run_to_end
from SegSSLLib.volumes import label_array_to_image, write_image

from SegSSLSlicerLib import nodes
from SegSSLSlicerLib.choices import Device, PropagationBackend, RefineSource, Sam2Model, SamModel, SegmentMethod, member

# Files in the work folder; NRRD keeps the geometry at full precision and is quick to write.
_VOLUME_FILE, _ANNOTATION_FILE, _RESULT_FILE, _CLUSTERS_FILE = "volume.nrrd", "annotation.nrrd", "result.nrrd", "clusters.nrrd"


@dataclass
class PreparedRun:
    """A ``segssl`` command line with its inputs written, and how to import its result."""

    title: str
    arguments: list[str]
    work_folder: Path
    result: Path
    default_name: str  # segment name for label values without an entry in ``names``
    names: dict[int, str] = field(default_factory=dict)
    colors: dict[int, tuple] = field(default_factory=dict)
    clusters: Path | None = None  # S3-Net: the full cluster map, shown so the user can pick clusters
    replace_segment_id: str | None = None  # the user confirmed that this segment is overwritten
    workflow: str = ""  # key of ``dependencies.WORKFLOW_REQUIREMENTS`` (and of ``controller.CPU_SECONDS``)
    slices: int = 0  # slices the command works through (for a time estimate)
    request: dict = field(default_factory=dict)  # the same work as a request to the interactive worker (if it has the op)
    # Seconds the work itself takes on the CPU, (likely, at most), when known before the run (S3-Net
    # from a click: ``estimate_click_seconds``); None: the per-slice rule of ``controller.cpu_estimate``.
    cpu_seconds: tuple[float, float] | None = None

    def process(self, python=None) -> SegSSLProcess:
        outputs = [self.result] + ([self.clusters] if self.clusters else [])
        return SegSSLProcess(self.arguments, outputs=outputs, python=python)

    def cleanup(self) -> None:
        shutil.rmtree(self.work_folder, ignore_errors=True)


@dataclass
class ClusterMap:
    """An S3-Net cluster map with the volume and segmentation of its run: a cluster the user picks
    later goes there, on that grid, whatever the panel shows by then."""

    node: object  # label map volume on the volume's grid
    volume_node: object
    segmentation_node: object

    def counts(self) -> list[tuple[int, int]]:
        return nodes.label_counts(slicer.util.arrayFromVolume(self.node))

    def add(self, value: int) -> str:
        """Add cluster ``value`` as a new segment; returns its id."""
        for node in (self.node, self.volume_node, self.segmentation_node):
            if node is None or node.GetScene() is None or not node.GetScene().IsNodePresent(node):
                raise SegSSLError("the cluster map, its volume or its segmentation was removed — run Segment again")
        mask = (slicer.util.arrayFromVolume(self.node) == value).astype(np.uint8)
        return nodes.add_segments(mask, self.segmentation_node, self.volume_node, names={1: f"S3-Net cluster {value}"})[1]


@dataclass
class RunResult:
    segment_ids: dict[int, str]  # label value -> segment id that received it
    clusters: ClusterMap | None = None

    @property
    def empty(self) -> bool:
        return not self.segment_ids

    @property
    def clusters_node(self):
        return self.clusters.node if self.clusters else None


@contextlib.contextmanager
def _new_work_folder(parent):
    """A fresh folder for one run's files; removed again if writing into it fails."""
    folder = Path(tempfile.mkdtemp(prefix="SegSSL-", dir=parent))
    try:
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def given_file(path) -> Path | None:
    """A path chosen in the panel, or None when the field is empty."""
    if path is None or str(path).strip() in ("", "."):
        return None
    return Path(path)


def require_file(path, what: str, fix: str) -> Path:
    chosen = given_file(path)
    if chosen is None:
        raise SegSSLError(f"{what}: no file is chosen — {fix}")
    if not chosen.is_file():
        raise SegSSLError(f"{what} not found: {chosen} — {fix}")
    return chosen


def _device(device) -> str:
    return member(Device, device).value


def _write_inputs(work_folder: Path, volume_node, label_array: np.ndarray | None = None) -> tuple[Path, Path | None]:
    """The volume (and a label array on its grid) as files with the node's exact geometry."""
    image = nodes.volume_to_image(volume_node)
    volume_path = work_folder / _VOLUME_FILE
    write_image(image, volume_path, compress=False)
    if label_array is None:
        return volume_path, None
    labels_path = work_folder / _ANNOTATION_FILE
    write_image(label_array_to_image(label_array, image), labels_path, compress=False)
    return volume_path, labels_path


def _occupied_slices(labels: np.ndarray, axis: int) -> int:
    """How many slices along ITK ``axis`` of a (k, j, i) array hold a label."""
    along = 2 - axis
    return int(np.any(labels != 0, axis=tuple(a for a in range(3) if a != along)).sum())


# -- the three workflows ---------------------------------------------------------------------------


def prepare_segment(
    volume_node,
    method: SegmentMethod | str,
    device: Device | str,
    checkpoint=None,
    seeds_node=None,
    keep_clusters: bool = False,
    work_parent=None,
) -> PreparedRun:
    """Segment: S3-Net from seed points (no labels, no weights) or a PolyCL model file."""
    nodes.require_volume(volume_node)
    method = member(SegmentMethod, method)
    if method is SegmentMethod.s3net:
        seeds = nodes.markups_to_ijk(seeds_node, volume_node)
        options = [item for seed in seeds for item in ("--seed", ",".join(map(str, seed)))]
    else:
        model = require_file(checkpoint, "PolyCL model file", POLYCL_MODEL_HINT)
        options = ["--checkpoint", str(model)]
    with _new_work_folder(work_parent) as work_folder:
        volume_path, _ = _write_inputs(work_folder, volume_node)
    result = work_folder / _RESULT_FILE
    clusters = work_folder / _CLUSTERS_FILE if method is SegmentMethod.s3net and keep_clusters else None
    if clusters:
        # Picking clusters needs the whole image's cluster map, so this run trains on the whole image;
        # without it S3-Net trains on a box around the clicks (docs/s3net.md, "From a click").
        options += ["--clusters-output", str(clusters), "--s3net-route", "whole"]
    arguments = ["segment", "--input", str(volume_path), "--output", str(result), "--method", method.value]
    name = "S3-Net" if method is SegmentMethod.s3net else "PolyCL"
    cpu_seconds = None
    if method is SegmentMethod.s3net and not clusters:
        cpu_seconds = _click_seconds(volume_node, seeds)
    return PreparedRun(
        title=f"{name} segmentation",
        arguments=arguments + options + ["--device", _device(device)],
        work_folder=work_folder,
        result=result,
        default_name=name,
        clusters=clusters,
        workflow=method.value,
        slices=nodes.volume_size(volume_node)[2],
        cpu_seconds=cpu_seconds,
    )


def _click_seconds(volume_node, seeds) -> tuple[float, float]:
    """S3-Net from the clicks, (likely, at most) seconds on the CPU: what the command itself expects."""
    from SegSSLLib.s3net.click_segment import estimate_click_seconds

    spacing = nodes.itk_geometry(nodes.ijk_to_ras_matrix(volume_node))[1]
    estimate = estimate_click_seconds(nodes.volume_size(volume_node), spacing, seeds)
    return estimate.likely, estimate.most


def prepare_propagate(
    volume_node,
    segmentation_node,
    segment_ids: list[str],
    slice_node,
    backend: PropagationBackend | str,
    device: Device | str,
    sam2_model: Sam2Model | str = Sam2Model.sam2_1_tiny,
    sam2_checkpoint=None,
    work_parent=None,
    working_view=None,
) -> PreparedRun:
    """Propagate: the segments as painted on the slice shown in ``slice_node``, through the volume.

    ``slice_node`` None means "find it": the one slice the segments lie on when the painting tells
    (see ``nodes.painted_slice``), else the slice shown in ``working_view``, the slice view the user
    last worked in (``controller.ViewTracker``).
    """
    nodes.require_volume(volume_node)
    backend = member(PropagationBackend, backend)
    options = ["--backend", backend.value]
    if backend is PropagationBackend.sam2:
        sam2_model = member(Sam2Model, sam2_model)
        checkpoint = require_file(
            sam2_checkpoint, f"{sam2_model.label()} weights", "click Download, or Browse to a SAM 2 checkpoint you already have"
        )
        options += ["--sam2-checkpoint", str(checkpoint), "--sam2-config", sam2_model.config]
    labels = nodes.segments_to_labels(segmentation_node, segment_ids, volume_node)
    found = nodes.painted_slice(labels) if slice_node is None else None
    if found is not None:
        (axis, index), annotation = found, labels
    else:
        slice_node = slice_node or working_view
        if slice_node is None:
            raise SegSSLError(
                "cannot tell which slice to propagate from (the segment is not on exactly one slice) — "
                "choose the view you painted in under 'Painted in view'"
            )
        axis, index = nodes.view_slice(slice_node, volume_node)
        annotation, index = nodes.keep_view_slice(labels, axis, index, slice_node.GetLayoutName() or "slice")
    with _new_work_folder(work_parent) as work_folder:
        volume_path, annotation_path = _write_inputs(work_folder, volume_node, annotation)
    result = work_folder / _RESULT_FILE
    method = "SAM 2" if backend is PropagationBackend.sam2 else "registration"
    source = [nodes.segment_name_and_color(segmentation_node, segment_id)[0] for segment_id in segment_ids]
    return PreparedRun(
        title=f"propagation from slice {index} ({method})",
        arguments=["propagate", "--input", str(volume_path), "--annotation", str(annotation_path), "--output", str(result)]
        + options
        + ["--axis", str(axis), "--device", _device(device)],  # the axis the user painted on, not a guess
        work_folder=work_folder,
        result=result,
        default_name="propagated",
        # A name that says what made it; its colour is a new one (``nodes.distinct_color``), never the source's.
        names={value: f"{name} propagated ({method})" for value, name in enumerate(source, start=1)},
        workflow=backend.value,
        slices=nodes.volume_size(volume_node)[axis],
    )


def prepare_refine(
    volume_node,
    source: RefineSource | str,
    device: Device | str,
    sam_model: SamModel | str = SamModel.sam_vit_b,
    sam_checkpoint=None,
    segmentation_node=None,
    segment_id: str | None = None,
    roi_node=None,
    replace: bool = False,
    axis: int | None = None,
    work_parent=None,
    volume_file: Path | None = None,
) -> PreparedRun:
    """Refine with SAM: boxes from the selected segment (per slice and component) or from an ROI box,
    on the slices along ITK ``axis`` (the view the user works in; None: the command's default, axial).

    ``volume_file``: the volume already written with the node's geometry (the worker's copy), so it is
    not written again. Without SAM weights nothing is written or run: the message says how to get them.
    """
    nodes.require_volume(volume_node)
    source, sam_model = member(RefineSource, source), member(SamModel, sam_model)
    checkpoint = require_file(
        sam_checkpoint, f"{sam_model.label()} weights",
        "Refine with SAM needs SAM weights: click Download, or Browse to a checkpoint file you already have",
    )
    if source is RefineSource.roi:
        lower, upper = nodes.roi_to_ijk_box(roi_node, volume_node)
        mask, source_name = nodes.box_mask(volume_node, lower, upper), roi_node.GetName()
        replace = False  # an ROI has no segment to replace
    else:
        mask = nodes.segments_to_labels(segmentation_node, [segment_id], volume_node)
        source_name = nodes.segment_name_and_color(segmentation_node, segment_id)[0]
    name = f"{source_name} refined ({sam_model.label()})"
    with _new_work_folder(work_parent) as work_folder:
        if volume_file is None:
            volume_path, mask_path = _write_inputs(work_folder, volume_node, mask)
        else:
            volume_path, mask_path = Path(volume_file), work_folder / _ANNOTATION_FILE
            write_image(label_array_to_image(mask, nodes.volume_to_image(volume_node)), mask_path, compress=False)
    result = work_folder / _RESULT_FILE
    return PreparedRun(
        title=f"refinement with {sam_model.label()}",
        arguments=["refine", "--input", str(volume_path), "--mask", str(mask_path), "--output", str(result)]
        + ["--sam-checkpoint", str(checkpoint), "--device", _device(device)]
        + (["--refine-axis", str(axis)] if axis is not None else []),
        work_folder=work_folder,
        result=result,
        default_name=name,
        names={1: name},
        replace_segment_id=segment_id if replace else None,
        workflow="sam",
        slices=_occupied_slices(mask, 2 if axis is None else axis),
        request={"input": str(volume_path), "mask": str(mask_path), "output": str(result),
                 "sam_checkpoint": str(checkpoint), **({"axis": axis} if axis is not None else {})},
    )


# -- results ---------------------------------------------------------------------------------------


def read_result(path: Path, volume_node) -> np.ndarray:
    """The (k, j, i) label array of a result, after checking it lies on the volume's grid."""
    image = sitk.ReadImage(str(path))
    expected = nodes.ijk_to_ras_matrix(volume_node)
    if image.GetSize() != nodes.volume_size(volume_node) or not np.allclose(
        nodes.ijk_to_ras_from_image(image), expected, atol=1e-4 * max(1.0, np.abs(expected).max())
    ):
        raise SegSSLError(f"the result {path.name} is not on the grid of '{volume_node.GetName()}' — please report this")
    return sitk.GetArrayFromImage(image)


def finish(prepared: PreparedRun, segmentation_node, volume_node, before_change=None) -> RunResult:
    """Import a finished run: new segments (or the confirmed replacement) and the cluster map.

    ``before_change`` is called once, right before the segmentation changes (not at all when the
    result is empty): the panel saves the Segment Editor's undo state there.
    """
    labels = read_result(prepared.result, volume_node)
    segment_ids = {}
    if labels.any() and before_change is not None:
        before_change()
    if prepared.replace_segment_id:
        # An empty result must not erase the user's segment: nothing is replaced then.
        if labels.any():
            nodes.replace_segment(labels, segmentation_node, prepared.replace_segment_id, volume_node)
            segment_ids = {1: prepared.replace_segment_id}
    else:
        values = [int(v) for v in np.unique(labels) if v != 0]
        names = {v: prepared.names.get(v) or (prepared.default_name if len(values) == 1 else f"{prepared.default_name} {v}") for v in values}
        segment_ids = nodes.add_segments(labels, segmentation_node, volume_node, names, prepared.colors)
    cluster_map = None
    if prepared.clusters and prepared.clusters.is_file():
        clusters = read_result(prepared.clusters, volume_node)
        clusters_node = nodes.add_label_volume(
            clusters, volume_node, f"{volume_node.GetName()} S3-Net clusters", reuse_attribute=nodes.CLUSTER_MAP_ATTRIBUTE
        )
        cluster_map = ClusterMap(clusters_node, volume_node, segmentation_node)
    return RunResult(segment_ids, cluster_map)


def run_and_finish(prepared: PreparedRun, segmentation_node, volume_node, python=None, timeout=None, on_event=None) -> RunResult:
    """Run a prepared command to its end in this thread and import the result (scripts, self-test)."""
    process = prepared.process(python)
    try:
        code = run_to_end(process, timeout=timeout, on_event=on_event)
        if process.cancelled:
            raise SegSSLError(f"{prepared.title} took longer than {timeout} s and was stopped")
        if code != 0:
            raise SegSSLError(process.error_message)
        return finish(prepared, segmentation_node, volume_node)
    finally:
        prepared.cleanup()


# -- weights ---------------------------------------------------------------------------------------


def weights_file(name: str, python=None, timeout: float = 60) -> Path | None:
    """Where ``segssl weights path NAME`` says the weights are, if that file exists there."""
    process = SegSSLProcess(["weights", "path", name], python=python)
    events = []
    if run_to_end(process, timeout=timeout, on_event=events.append) != 0:
        return None
    reported = [e.get("path") for e in events if e.get("event") == "output"]
    path = Path(str(reported[-1]).strip()) if reported else None
    return path if path is not None and path.is_file() else None


POLYCL_MODEL_HINT = "choose the .pt file written by 'segssl finetune' (docs/polycl.md shows how to make one)"


def download_arguments(name: str) -> list[str]:
    return ["weights", "download", name]

