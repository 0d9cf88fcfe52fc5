"""MRML nodes <-> SimpleITK images, label arrays and voxel indices.

Conventions: Slicer stores geometry as an IJK-to-RAS matrix, ITK as origin/spacing/direction in LPS;
arrays are (k, j, i); voxel indices are (i, j, k) with voxel centres at whole numbers. Every array
taken from a node is a copy: the user's nodes are never modified, except the output segmentation,
which only ever receives *new* segments unless the caller replaces one explicitly.
"""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk
import slicer
import slicer.util
import vtk

# Only light SegSSLLib modules: the panel must load before torch is installed.
from SegSSLLib.errors import SegSSLError

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])  # its own inverse
# A slice view counts as aligned with a voxel axis when its normal is within this angle of it.
VIEW_ALIGNMENT_TOLERANCE_DEGREES = 1.0
# Colours for new segments: Slicer's generic anatomy colours, then brighter ones. A new segment gets the
# one farthest from every colour already in the segmentation (a result never looks like its source).
PALETTE = [
    (0.50, 0.68, 0.50), (0.95, 0.84, 0.57), (0.69, 0.48, 0.40), (0.44, 0.63, 0.86),
    (0.85, 0.40, 0.40), (0.59, 0.44, 0.75), (0.89, 0.68, 0.33), (0.55, 0.75, 0.82),
    (0.90, 0.90, 0.20), (0.20, 0.80, 0.80), (0.95, 0.45, 0.80), (0.30, 0.30, 0.95),
    (0.35, 0.90, 0.35), (1.00, 0.55, 0.10), (0.60, 0.20, 0.20), (0.95, 0.95, 0.95),
]


# -- geometry -------------------------------------------------------------------------------------


def ijk_to_ras_matrix(volume_node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def itk_geometry(ijk_to_ras: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(origin, spacing, direction) in ITK's LPS convention from an IJK-to-RAS matrix."""
    linear = np.asarray(ijk_to_ras, dtype=float)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = _RAS_TO_LPS @ (linear / spacing)
    origin = _RAS_TO_LPS @ np.asarray(ijk_to_ras, dtype=float)[:3, 3]
    return tuple(origin.tolist()), tuple(spacing.tolist()), tuple(direction.ravel().tolist())


def ijk_to_ras_from_image(image: sitk.Image) -> np.ndarray:
    """The IJK-to-RAS matrix of a SimpleITK image (inverse of ``itk_geometry``)."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = _RAS_TO_LPS @ direction * np.array(image.GetSpacing())
    matrix[:3, 3] = _RAS_TO_LPS @ np.array(image.GetOrigin())
    return matrix


def require_volume(volume_node) -> None:
    if volume_node is None or volume_node.GetImageData() is None:
        raise SegSSLError("no input volume is selected — load a CT or MR volume and select it as Input volume")
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise SegSSLError(
            f"'{volume_node.GetName()}' is a label map, not an image — select the CT or MR volume as Input volume"
        )


def volume_to_image(volume_node) -> sitk.Image:
    """A copy of a scalar volume as a SimpleITK image with the node's exact geometry (its own grid;
    a parent transform is not applied, results come back onto the same grid)."""
    require_volume(volume_node)
    array = np.array(slicer.util.arrayFromVolume(volume_node), copy=True)
    if array.ndim != 3:
        raise SegSSLError(
            f"volume '{volume_node.GetName()}' has {array.shape[-1]} components per voxel — "
            "select a single-channel (grey-level) volume"
        )
    image = sitk.GetImageFromArray(array)
    origin, spacing, direction = itk_geometry(ijk_to_ras_matrix(volume_node))
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def add_volume_from_image(image: sitk.Image, name: str, label_map: bool = False):
    """A new volume node holding a copy of a SimpleITK image, with its exact geometry."""
    node_class = "vtkMRMLLabelMapVolumeNode" if label_map else "vtkMRMLScalarVolumeNode"
    return slicer.util.addVolumeFromArray(sitk.GetArrayFromImage(image), ijk_to_ras_from_image(image), name, node_class)


def volume_size(volume_node) -> tuple[int, int, int]:
    """(i, j, k) size of a volume's voxel grid."""
    return tuple(int(n) for n in volume_node.GetImageData().GetDimensions())


# -- points, boxes and slice views ----------------------------------------------------------------


def world_to_ijk(points_world, volume_node) -> np.ndarray:
    """(N, 3) world (RAS) points -> (N, 3) continuous voxel indices of the volume, through the
    volume's parent transforms (linear or not)."""
    to_volume = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, volume_node.GetParentTransformNode(), to_volume)
    ras_to_ijk = np.linalg.inv(ijk_to_ras_matrix(volume_node))
    result = []
    for point in np.atleast_2d(np.asarray(points_world, dtype=float)):
        local = to_volume.TransformPoint(*point.tolist())
        result.append((ras_to_ijk @ np.array([*local, 1.0]))[:3])
    return np.array(result).reshape(-1, 3)


def markups_to_ijk(markups_node, volume_node) -> list[tuple[int, int, int]]:
    """Voxel indices (i, j, k) of the placed points of a markups point list."""
    if markups_node is None:
        raise SegSSLError("no seed point list is selected — create one and place a point inside the structure")
    names, points = [], []
    for index in range(markups_node.GetNumberOfControlPoints()):
        if markups_node.GetNthControlPointPositionStatus(index) != markups_node.PositionDefined:
            continue
        position = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(index, position)
        names.append(markups_node.GetNthControlPointLabel(index) or f"point {index + 1}")
        points.append(position)
    if not points:
        raise SegSSLError(
            f"the point list '{markups_node.GetName()}' has no placed points — "
            "click Place and click inside the structure in a slice view"
        )
    indices = np.rint(world_to_ijk(points, volume_node)).astype(int)
    size = volume_size(volume_node)
    for name, index in zip(names, indices):
        if any(not 0 <= value < limit for value, limit in zip(index, size)):
            raise SegSSLError(
                f"seed '{name}' lies outside the volume '{volume_node.GetName()}' — "
                "move it onto the structure in a slice view"
            )
    return [tuple(int(v) for v in index) for index in indices]


def roi_to_ijk_box(roi_node, volume_node) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Inclusive (lower, upper) voxel indices of the voxels whose centres lie in a markups ROI.

    The eight corners go through the ROI's and the volume's transforms; corners are sorted per
    axis afterwards (an axis of the volume may point the other way than the ROI's), then clipped
    to the volume.
    """
    if roi_node is None:
        raise SegSSLError("no ROI is selected — create a markups ROI box around the structure")
    if roi_node.GetNumberOfDefinedControlPoints() == 0:
        raise SegSSLError(f"the ROI '{roi_node.GetName()}' is not placed yet — click Place and drag a box around the structure")
    # ObjectToWorld carries the parent transforms' rotation and scaling, so (object corners) @ it are
    # the box as shown in the views (same as GetSizeWorld along each axis).
    object_to_world = slicer.util.arrayFromVTKMatrix(roi_node.GetObjectToWorldMatrix())
    half = np.array(roi_node.GetSize(), dtype=float) / 2
    corners = np.array([[sx * half[0], sy * half[1], sz * half[2], 1.0] for sx, sy, sz in itertools.product((-1, 1), repeat=3)])
    ijk = world_to_ijk((object_to_world @ corners.T).T[:, :3], volume_node)
    low, high = ijk.min(axis=0), ijk.max(axis=0)
    lower, upper = np.ceil(low - 1e-6).astype(int), np.floor(high + 1e-6).astype(int)
    thin = lower > upper  # thinner than a voxel along that axis: keep the voxel at its centre
    lower[thin] = upper[thin] = np.rint((low[thin] + high[thin]) / 2).astype(int)
    size = np.array(volume_size(volume_node))
    lower, upper = np.maximum(lower, 0), np.minimum(upper, size - 1)
    if np.any(lower > upper):
        raise SegSSLError(
            f"the ROI '{roi_node.GetName()}' does not overlap the volume '{volume_node.GetName()}' — "
            "move the box onto the structure"
        )
    return tuple(int(v) for v in lower), tuple(int(v) for v in upper)


def box_mask(volume_node, lower, upper) -> np.ndarray:
    """A (k, j, i) uint8 mask that is 1 inside the inclusive voxel box."""
    i, j, k = volume_size(volume_node)
    mask = np.zeros((k, j, i), dtype=np.uint8)
    mask[lower[2] : upper[2] + 1, lower[1] : upper[1] + 1, lower[0] : upper[0] + 1] = 1
    return mask


def _view_alignment(slice_node, volume_node) -> tuple[np.ndarray, np.ndarray]:
    """(slice-to-volume-frame matrix, |cos| of the angle between the view's normal and each voxel axis)."""
    parent = volume_node.GetParentTransformNode()
    if parent is not None and not parent.IsTransformToWorldLinear():
        raise SegSSLError(
            f"volume '{volume_node.GetName()}' is under a non-linear transform — harden the transform "
            "(Data module, right-click the volume: Harden transform) before propagating"
        )
    world_to_local = vtk.vtkMatrix4x4()
    slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(None, parent, world_to_local)
    world_to_local = slicer.util.arrayFromVTKMatrix(world_to_local)
    slice_to_local = world_to_local @ slicer.util.arrayFromVTKMatrix(slice_node.GetSliceToRAS())

    ijk_to_ras = ijk_to_ras_matrix(volume_node)
    axes = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)  # unit voxel axes in RAS
    normal = np.cross(slice_to_local[:3, 0], slice_to_local[:3, 1])
    return slice_to_local, np.abs(axes.T @ (normal / np.linalg.norm(normal)))


def view_axis(slice_node, volume_node) -> int:
    """The voxel axis (ITK order) nearest to a slice view's normal; an oblique view is fine here."""
    return int(np.argmax(_view_alignment(slice_node, volume_node)[1]))


def view_slice(slice_node, volume_node) -> tuple[int, int]:
    """(ITK axis, slice index) of the volume plane that a slice view shows.

    Propagation works along a voxel axis, so a view that is oblique to the volume's grid is refused
    with a message saying how to fix it.
    """
    view = slice_node.GetLayoutName() or slice_node.GetName()
    slice_to_local, alignment = _view_alignment(slice_node, volume_node)
    axis = int(np.argmax(alignment))
    if alignment[axis] < np.cos(np.radians(VIEW_ALIGNMENT_TOLERANCE_DEGREES)):
        angle = np.degrees(np.arccos(min(1.0, alignment[axis])))
        raise SegSSLError(
            f"the {view} view is oblique to the voxel grid of '{volume_node.GetName()}' ({angle:.1f}° off) — "
            f"propagation runs along a voxel axis: choose 'Rotate to volume plane' in the {view} view's menu, "
            "then paint and propagate"
        )
    centre = np.linalg.inv(ijk_to_ras_matrix(volume_node)) @ slice_to_local[:, 3]
    index = int(np.rint(centre[axis]))
    if not 0 <= index < volume_size(volume_node)[axis]:
        raise SegSSLError(f"the {view} view shows a plane outside the volume '{volume_node.GetName()}' — scroll into it")
    return axis, index


def painted_slice(labels: np.ndarray) -> tuple[int, int] | None:
    """(ITK axis, index) of the one slice the labels lie on, when exactly one axis has a single painted
    slice; None when that does not tell (nothing painted, several slices, or a line or a dot that lies
    on one slice of several axes)."""
    single = []
    for axis in (0, 1, 2):
        other = tuple(a for a in range(3) if a != 2 - axis)  # (k, j, i) array
        occupied = np.flatnonzero(np.any(labels != 0, axis=other))
        if len(occupied) == 1:
            single.append((axis, int(occupied[0])))
    return single[0] if len(single) == 1 else None


# -- segments <-> label arrays --------------------------------------------------------------------


def segments_to_labels(segmentation_node, segment_ids, volume_node) -> np.ndarray:
    """(k, j, i) label array on the volume's grid: segment ``segment_ids[n]`` gets value n + 1."""
    if segmentation_node is None:
        raise SegSSLError("no output segmentation is selected — select or create one")
    if not segment_ids:
        raise SegSSLError("no segment is selected — pick the segment to use in the segment list")
    require_same_transform(segmentation_node, volume_node)  # results go back there: refuse before the run
    segmentation = segmentation_node.GetSegmentation()
    i, j, k = volume_size(volume_node)
    labels = np.zeros((k, j, i), dtype=np.uint8 if len(segment_ids) < 256 else np.uint16)
    for value, segment_id in enumerate(segment_ids, start=1):
        if not segment_id or segmentation.GetSegment(segment_id) is None:
            raise SegSSLError("no segment is selected — pick the segment to use in the segment list")
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node)
        labels[mask > 0] = value
    return labels


def keep_view_slice(labels: np.ndarray, axis: int, index: int, view: str = "slice") -> tuple[np.ndarray, int]:
    """The annotation as the user sees it: only the slice ``index`` along ITK ``axis`` is kept.

    If the view shows an empty slice but the segment lies on exactly one slice along that axis, that
    slice is used (the user scrolled away after painting). Returns (annotation, slice index).
    """
    along = 2 - axis  # ITK axis -> position in a (k, j, i) array
    painted = [s for s in range(labels.shape[along]) if np.take(labels, s, axis=along).any()]
    if not painted:
        raise SegSSLError("the segment to propagate is empty — paint the structure on one slice with the Segment Editor")
    if index not in painted:
        if len(painted) != 1:
            shown = ", ".join(map(str, painted[:5])) + (", ..." if len(painted) > 5 else "")
            raise SegSSLError(
                f"nothing is painted on the slice shown in the {view} view (slice {index}); the segment is on "
                f"slices {shown} — scroll the {view} view to the slice you painted"
            )
        index = painted[0]
    annotation = np.zeros_like(labels)
    selector = [slice(None)] * labels.ndim
    selector[along] = index
    annotation[tuple(selector)] = labels[tuple(selector)]
    return annotation, index


def new_segmentation(volume_node, name: str):
    """A new, empty segmentation on the volume's grid and under the volume's parent transform, so
    that label arrays on the volume's grid land exactly where the volume is shown."""
    segmentation_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    segmentation_node.CreateDefaultDisplayNodes()
    ensure_reference_geometry(segmentation_node, volume_node)
    return segmentation_node


def require_same_transform(segmentation_node, volume_node) -> None:
    """Writing a volume-grid array into a segmentation under another transform would resample it
    between the two frames (results shifted or rotated): refuse instead."""
    if (segmentation_node.GetTransformNodeID() or None) != (volume_node.GetTransformNodeID() or None):
        raise SegSSLError(
            f"segmentation '{segmentation_node.GetName()}' and volume '{volume_node.GetName()}' are under different "
            "transforms — put both under the same transform (Transforms or Data module), or choose "
            "'Create new Segmentation' as Output"
        )


def ensure_reference_geometry(segmentation_node, volume_node) -> None:
    """Give the segmentation the volume's grid if it has none yet (an existing choice is kept)."""
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    if not segmentation_node.GetSegmentation().GetConversionParameter(name):
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)


def unique_segment_name(segmentation_node, name: str) -> str:
    """``name``, or ``name 2``, ``name 3``, ... so that no existing segment shares it."""
    segmentation = segmentation_node.GetSegmentation()
    taken = {segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())}
    if name not in taken:
        return name
    return next(f"{name} {n}" for n in itertools.count(2) if f"{name} {n}" not in taken)


def add_segments(
    labels: np.ndarray,
    segmentation_node,
    volume_node,
    names: dict[int, str] | None = None,
    colors: dict[int, tuple] | None = None,
) -> dict[int, str]:
    """Add one *new* segment per non-zero label value; existing segments are never touched.

    Returns {label value: new segment id}. Names that are taken get a number appended.
    """
    names, colors = names or {}, colors or {}
    require_same_transform(segmentation_node, volume_node)
    ensure_reference_geometry(segmentation_node, volume_node)
    segmentation = segmentation_node.GetSegmentation()
    added = {}
    for value in (int(v) for v in np.unique(labels) if v != 0):
        name = unique_segment_name(segmentation_node, names.get(value, f"label {value}"))
        color = colors.get(value) or distinct_color(segmentation_node)
        segment_id = segmentation.AddEmptySegment("", name, list(color))
        slicer.util.updateSegmentBinaryLabelmapFromArray((labels == value).astype(np.uint8), segmentation_node, segment_id, volume_node)
        added[value] = segment_id
    return added


def replace_segment(mask: np.ndarray, segmentation_node, segment_id: str, volume_node) -> None:
    """Overwrite one segment's voxels; only for when the user has confirmed it."""
    if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
        raise SegSSLError("the segment to replace no longer exists — run again")
    require_same_transform(segmentation_node, volume_node)
    slicer.util.updateSegmentBinaryLabelmapFromArray((mask > 0).astype(np.uint8), segmentation_node, segment_id, volume_node)


def set_segment_within_box(mask: np.ndarray, segmentation_node, segment_id: str, volume_node, lower, upper) -> None:
    """Set a segment to ``mask`` ((k, j, i) on the volume's grid), writing only the box ``lower..upper``
    ((k, j, i) corners, inclusive) — the segment must be empty outside it before and after (e.g. the
    bounding box of its old and new voxels).

    ``slicer.util.updateSegmentBinaryLabelmapFromArray`` makes a label volume as large as the volume
    and imports all of it; here the temporary label volume is the box alone, on the volume's lattice
    (its IJK-to-RAS shifted to the box corner, the volume's parent transform), imported with the same
    ``ImportLabelmapToSegmentationNode`` call (which replaces the segment's content)."""
    if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
        raise SegSSLError("the segment to replace no longer exists — run again")
    require_same_transform(segmentation_node, volume_node)
    lower, upper = [int(v) for v in lower], [int(v) for v in upper]
    box = np.ascontiguousarray(mask[lower[0] : upper[0] + 1, lower[1] : upper[1] + 1, lower[2] : upper[2] + 1] > 0,
                               dtype=np.uint8)
    if not box.any():  # an empty import leaves a segment Slicer cannot read back: the full update empties it
        replace_segment(mask, segmentation_node, segment_id, volume_node)
        return
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    corner = [lower[2], lower[1], lower[0], 1.0]  # (i, j, k) of the box's first voxel
    shifted = [sum(matrix.GetElement(r, c) * corner[c] for c in range(4)) for r in range(3)]
    for r in range(3):
        matrix.SetElement(r, 3, shifted[r])
    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__SegSSL_partial__")
    try:
        labelmap.SetIJKToRASMatrix(matrix)
        labelmap.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
        slicer.util.updateVolumeFromArray(labelmap, box)
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation_node, ids):
            raise SegSSLError("a result could not be set into the segment — please report this")
    finally:
        scene.RemoveNode(labelmap)


def distinct_color(segmentation_node) -> tuple[float, float, float]:
    """The palette colour farthest (in RGB) from every segment's colour; the first unused one on a tie."""
    segmentation = segmentation_node.GetSegmentation()
    used = np.array([segmentation.GetNthSegment(n).GetColor() for n in range(segmentation.GetNumberOfSegments())]).reshape(-1, 3)
    if len(used) == 0:
        return PALETTE[0]
    distances = np.linalg.norm(np.array(PALETTE)[:, None, :] - used[None, :, :], axis=2).min(axis=1)
    return PALETTE[int(np.argmax(distances))]


def segment_name_and_color(segmentation_node, segment_id) -> tuple[str, tuple]:
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    return segment.GetName(), tuple(segment.GetColor())


def nodes_of_class(scene, class_name: str) -> list:
    """The nodes of ``scene`` that are ``class_name`` (or derive from it)."""
    collection = scene.GetNodesByClass(class_name)
    return [collection.GetItemAsObject(n) for n in range(collection.GetNumberOfItems())]


CLUSTER_MAP_ATTRIBUTE = "SegSSL.ClusterMapOf"  # on a cluster map: the ID of the volume it was computed from


def cluster_map_node(volume_node):
    """The S3-Net cluster map of ``volume_node`` in the scene, or None."""
    scene = volume_node.GetScene()
    if scene is None:
        return None
    for node in nodes_of_class(scene, "vtkMRMLLabelMapVolumeNode"):
        if node.GetAttribute(CLUSTER_MAP_ATTRIBUTE) == volume_node.GetID():
            return node
    return None


def add_label_volume(labels: np.ndarray, volume_node, name: str, reuse_attribute: str | None = None):
    """Show a label array (e.g. S3-Net clusters) as a label map volume on the input's grid.

    With ``reuse_attribute``, the label map that carries it with this volume's ID is updated in place
    (one cluster map per volume, not one more per run).
    """
    node = cluster_map_node(volume_node) if reuse_attribute == CLUSTER_MAP_ATTRIBUTE else None
    if node is not None:
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras_matrix(volume_node)))
        slicer.util.updateVolumeFromArray(node, labels)
        node.SetName(name)
    else:
        node = slicer.util.addVolumeFromArray(labels, ijk_to_ras_matrix(volume_node), name, "vtkMRMLLabelMapVolumeNode")
        if reuse_attribute:
            node.SetAttribute(reuse_attribute, volume_node.GetID())
    node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    return node


def label_counts(labels: np.ndarray) -> list[tuple[int, int]]:
    """[(value, voxel count)] of every value in a label array, largest first."""
    values, counts = np.unique(labels, return_counts=True)
    return sorted(((int(v), int(c)) for v, c in zip(values, counts)), key=lambda item: (-item[1], item[0]))
