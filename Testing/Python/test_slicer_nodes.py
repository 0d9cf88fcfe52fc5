"""The panel's node-level code on a real MRML scene (slicer-core): geometry, indices, segments."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from slicer_scene import mrml_scene  # noqa: F401 - fixture

from SegSSLLib.errors import SegSSLError
from SegSSLLib.phantoms import make_ct_phantom, oblique_direction

slicer = pytest.importorskip("slicer")
from SegSSLSlicerLib import nodes  # noqa: E402

SIZE, SPACING = (20, 16, 12), (0.7, 1.3, 3.0)  # (i, j, k), anisotropic


def oblique_phantom(flip_i: bool = False):
    direction = np.array(oblique_direction(25.0, 12.0)).reshape(3, 3)
    if flip_i:
        direction[:, 0] *= -1  # the first voxel axis runs the other way: tests corner sorting
    image, labels = make_ct_phantom(seed=5, size=SIZE, spacing=SPACING, direction=tuple(direction.ravel()))
    image.SetOrigin((-31.5, 12.25, 80.0))
    labels.CopyInformation(image)
    return image, labels


def ras_of_index(volume_node, index) -> np.ndarray:
    return (nodes.ijk_to_ras_matrix(volume_node) @ np.array([*index, 1.0]))[:3]


def linear_transform(scene, rotation_degrees=(15.0, -10.0), translation=(12.0, -7.0, 30.0)):
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(oblique_direction(*rotation_degrees)).reshape(3, 3)
    matrix[:3, 3] = translation
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    return node, matrix


def test_volume_round_trip_keeps_values_and_oblique_anisotropic_geometry(mrml_scene, tmp_path):
    image, _ = oblique_phantom()
    volume = nodes.add_volume_from_image(image, "ct")
    before = slicer.util.arrayFromVolume(volume).copy()

    back = nodes.volume_to_image(volume)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    np.testing.assert_allclose(back.GetSpacing(), SPACING, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), rtol=0, atol=1e-12)

    # Independently of the conversion code: a voxel's RAS position from the node equals ITK's LPS
    # physical point with x and y negated.
    for index in [(0, 0, 0), (19, 3, 7), (5, 15, 11)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(ras_of_index(volume, index), lps * [-1, -1, 1], atol=1e-9)

    # The image is a copy: changing it leaves the node alone.
    array = sitk.GetArrayViewFromImage(back)
    assert not np.shares_memory(array, slicer.util.arrayFromVolume(volume))
    back[0, 0, 0] = 12345
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)

    # The file the CLI reads keeps the geometry at full precision.
    path = tmp_path / "volume.nrrd"
    sitk.WriteImage(nodes.volume_to_image(volume), str(path))
    on_disk = sitk.ReadImage(str(path))
    np.testing.assert_allclose(nodes.ijk_to_ras_from_image(on_disk), nodes.ijk_to_ras_matrix(volume), rtol=0, atol=1e-9)


def test_segments_round_trip_on_oblique_grid_and_new_segments_leave_existing_ones_alone(mrml_scene):
    image, labels = oblique_phantom()
    volume = nodes.add_volume_from_image(image, "ct")
    segmentation = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    label_array = sitk.GetArrayFromImage(labels)
    liver_and_vertebra = np.where(np.isin(label_array, [1, 5]), label_array, 0)

    first = nodes.add_segments(liver_and_vertebra, segmentation, volume, names={1: "liver", 5: "vertebra"}, colors={1: (1.0, 0.0, 0.0)})
    assert sorted(first) == [1, 5]
    ids = [first[1], first[5]]
    np.testing.assert_array_equal(nodes.segments_to_labels(segmentation, ids, volume), np.select([label_array == 1, label_array == 5], [1, 2], 0))
    liver_before = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, first[1], volume).copy()
    np.testing.assert_allclose(segmentation.GetSegmentation().GetSegment(first[1]).GetColor(), (1.0, 0.0, 0.0))

    # A result named like an existing segment becomes a new segment with a new name.
    spleen = (label_array == 2).astype(np.uint8)
    second = nodes.add_segments(spleen, segmentation, volume, names={1: "liver"})
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 3
    assert segmentation.GetSegmentation().GetSegment(second[1]).GetName() == "liver 2"
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, first[1], volume), liver_before)
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, second[1], volume), spleen)
    # The segmentation got the volume's grid as its reference geometry.
    assert segmentation.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    )


def aligned_slice_node(scene, volume, axis: int, index: int, tilt_degrees: float = 0.0):
    """A slice view whose normal is voxel axis ``axis`` (tilted by ``tilt_degrees``), showing slice ``index``."""
    ijk_to_ras = nodes.ijk_to_ras_matrix(volume)
    axes = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    normal, in_plane = axes[:, axis], axes[:, (axis + 1) % 3]
    if tilt_degrees:
        tilt = np.radians(tilt_degrees)
        normal = np.cos(tilt) * normal + np.sin(tilt) * in_plane
        in_plane = np.cross(normal, np.cross(in_plane, normal))
        in_plane /= np.linalg.norm(in_plane)
    centre_index = np.array([s / 2 for s in volume.GetImageData().GetDimensions()])
    centre_index[axis] = index
    slice_to_ras = np.eye(4)
    slice_to_ras[:3, 0], slice_to_ras[:3, 1], slice_to_ras[:3, 2] = in_plane, np.cross(normal, in_plane), normal
    slice_to_ras[:3, 3] = (ijk_to_ras @ np.array([*centre_index, 1.0]))[:3]
    node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    node.SetLayoutName("Red")
    node.GetSliceToRAS().DeepCopy(slicer.util.vtkMatrixFromArray(slice_to_ras))
    node.UpdateMatrices()
    return node


@pytest.mark.parametrize("axis, index", [(0, 4), (1, 9), (2, 0), (2, 11)])
def test_slice_axis_and_index_come_from_the_view(mrml_scene, axis, index):
    image, _ = oblique_phantom()
    volume = nodes.add_volume_from_image(image, "ct")
    assert nodes.view_slice(aligned_slice_node(mrml_scene, volume, axis, index), volume) == (axis, index)


def test_oblique_view_is_refused_with_a_fix_and_transforms_are_followed(mrml_scene):
    image, _ = oblique_phantom()
    volume = nodes.add_volume_from_image(image, "ct")
    with pytest.raises(SegSSLError, match=r"Red view is oblique .*Rotate to volume plane"):
        nodes.view_slice(aligned_slice_node(mrml_scene, volume, 2, 5, tilt_degrees=8.0), volume)
    assert nodes.view_slice(aligned_slice_node(mrml_scene, volume, 2, 5, tilt_degrees=0.5), volume) == (2, 5)

    # The view is built on the untransformed volume; moving the volume makes the same view oblique,
    # and a view built in world space (through the transform) is aligned again.
    view = aligned_slice_node(mrml_scene, volume, 1, 7)
    transform, matrix = linear_transform(mrml_scene)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(SegSSLError, match="oblique"):
        nodes.view_slice(view, volume)
    world = matrix @ slicer.util.arrayFromVTKMatrix(view.GetSliceToRAS())
    view.GetSliceToRAS().DeepCopy(slicer.util.vtkMatrixFromArray(world))
    assert nodes.view_slice(view, volume) == (1, 7)


def test_seed_points_go_from_world_to_ijk_through_both_nodes_transforms(mrml_scene):
    image, _ = oblique_phantom()
    volume = nodes.add_volume_from_image(image, "ct")
    volume_transform, volume_matrix = linear_transform(mrml_scene, (15.0, -10.0), (12.0, -7.0, 30.0))
    volume.SetAndObserveTransformNodeID(volume_transform.GetID())
    points_transform, points_matrix = linear_transform(mrml_scene, (-30.0, 5.0), (-4.0, 9.0, 1.5))
    seeds = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    seeds.SetAndObserveTransformNodeID(points_transform.GetID())
    wanted = [(3, 4, 5), (19, 0, 11)]
    for index in wanted:
        world = volume_matrix @ np.array([*ras_of_index(volume, index), 1.0])
        seeds.AddControlPoint(*(np.linalg.inv(points_matrix) @ world)[:3])  # node coordinates of that world point
    assert nodes.markups_to_ijk(seeds, volume) == wanted

    seeds.AddControlPoint(*(np.linalg.inv(points_matrix) @ volume_matrix @ np.array([*ras_of_index(volume, (20, 4, 5)), 1.0]))[:3])
    seeds.SetNthControlPointLabel(2, "outside")
    with pytest.raises(SegSSLError, match="seed 'outside' lies outside the volume"):
        nodes.markups_to_ijk(seeds, volume)
    seeds.RemoveAllControlPoints()
    with pytest.raises(SegSSLError, match="no placed points"):
        nodes.markups_to_ijk(seeds, volume)


def test_roi_box_corners_are_sorted_after_ras_to_ijk_and_clipped(mrml_scene):
    image, _ = oblique_phantom(flip_i=True)
    volume = nodes.add_volume_from_image(image, "ct")
    ijk_to_ras = nodes.ijk_to_ras_matrix(volume)
    axes = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)

    def roi_around(lower, upper, margin=0.3):
        """An ROI box aligned with the voxel grid spanning voxel centres lower..upper (plus a margin)."""
        roi = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
        centre = (np.array(lower) + np.array(upper)) / 2
        object_to_node = np.eye(4)
        object_to_node[:3, :3] = axes
        object_to_node[:3, 3] = (ijk_to_ras @ np.array([*centre, 1.0]))[:3]
        roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(object_to_node))
        roi.SetSize(*((np.array(upper) - np.array(lower) + 2 * margin) * SPACING))
        return roi

    assert nodes.roi_to_ijk_box(roi_around((3, 2, 1), (7, 5, 3)), volume) == ((3, 2, 1), (7, 5, 3))
    assert nodes.roi_to_ijk_box(roi_around((-5, 10, 8), (4, 20, 14)), volume) == ((0, 10, 8), (4, 15, 11))
    mask = nodes.box_mask(volume, (3, 2, 1), (7, 5, 3))
    assert mask.shape == (12, 16, 20) and mask.sum() == 5 * 4 * 3 and mask[1, 2, 3] == 1 and mask[4, 2, 3] == 0
    with pytest.raises(SegSSLError, match="does not overlap the volume"):
        nodes.roi_to_ijk_box(roi_around((30, 30, 30), (40, 40, 40)), volume)


def test_annotation_keeps_the_slice_in_the_view(mrml_scene):
    labels = np.zeros((12, 16, 20), dtype=np.uint8)
    labels[6, 4:9, 5:12] = 1
    labels[6, 10:12, 14:16] = 2
    kept, index = nodes.keep_view_slice(labels, axis=2, index=6, view="Red")
    assert index == 6
    np.testing.assert_array_equal(kept, labels)
    # The view was scrolled away after painting a single slice: that slice is used.
    kept, index = nodes.keep_view_slice(labels, axis=2, index=3, view="Red")
    assert index == 6
    np.testing.assert_array_equal(kept, labels)
    # Painted on two slices: only the one in view is kept; nothing in view is an error naming the slices.
    labels[9, 4:6, 5:7] = 1
    kept, index = nodes.keep_view_slice(labels, axis=2, index=9, view="Red")
    assert index == 9 and kept.sum() == 4 and kept[9].sum() == 4
    with pytest.raises(SegSSLError, match=r"slice shown in the Red view \(slice 3\).*slices 6, 9"):
        nodes.keep_view_slice(labels, axis=2, index=3, view="Red")
    with pytest.raises(SegSSLError, match="empty"):
        nodes.keep_view_slice(np.zeros_like(labels), axis=0, index=3)


def world_of_segment_voxel(segmentation, segment_id) -> np.ndarray:
    """World (RAS) position of the single voxel of a segment, from the segmentation's own storage."""
    oriented = segmentation.GetBinaryLabelmapInternalRepresentation(segment_id)  # may hold other segments too
    image_to_node = slicer.util.arrayFromVTKMatrix(_matrix_of(oriented.GetImageToWorldMatrix))
    extent = oriented.GetExtent()
    value = segmentation.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    array = slicer.util.arrayFromSegmentInternalBinaryLabelmap(segmentation, segment_id)
    (k, j, i), = np.argwhere(array == value)
    index = np.array([i + extent[0], j + extent[2], k + extent[4], 1.0])
    node_to_world = np.eye(4)
    if segmentation.GetParentTransformNode():
        node_to_world = slicer.util.arrayFromVTKMatrix(_matrix_of(segmentation.GetParentTransformNode().GetMatrixTransformToWorld))
    return (node_to_world @ image_to_node @ index)[:3]


def _matrix_of(getter):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    getter(matrix)
    return matrix


def test_results_land_on_a_transformed_volume_and_other_transforms_are_refused(mrml_scene):
    image, labels = oblique_phantom()
    volume = nodes.add_volume_from_image(image, "ct")
    transform, matrix = linear_transform(mrml_scene, (20.0, -15.0), (20.0, -5.0, 12.0))  # rotation + translation
    volume.SetAndObserveTransformNodeID(transform.GetID())
    label_array = sitk.GetArrayFromImage(labels)

    segmentation = nodes.new_segmentation(volume, "ct SegSSL")
    assert segmentation.GetTransformNodeID() == transform.GetID()
    added = nodes.add_segments(label_array, segmentation, volume)
    for value, segment_id in added.items():  # exact round trip
        np.testing.assert_array_equal(
            slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume), (label_array == value).astype(np.uint8)
        )
    # Shown where the volume's voxel is: world position through both nodes' transforms.
    voxel = np.zeros_like(label_array)
    voxel[5, 9, 3] = 1
    single = nodes.add_segments(voxel, segmentation, volume, names={1: "voxel"})[1]
    np.testing.assert_allclose(world_of_segment_voxel(segmentation, single), (matrix @ [*ras_of_index(volume, (3, 9, 5)), 1.0])[:3], atol=1e-6)
    nodes.replace_segment(np.roll(voxel, 2, axis=2), segmentation, single, volume)
    np.testing.assert_array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, single, volume), np.roll(voxel, 2, axis=2))

    # A segmentation under another transform (here: none) would get shifted results: refused, unchanged.
    elsewhere = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "untransformed")
    with pytest.raises(SegSSLError, match="'untransformed' and volume 'ct' are under different transforms"):
        nodes.add_segments(voxel, elsewhere, volume)
    assert elsewhere.GetSegmentation().GetNumberOfSegments() == 0
    with pytest.raises(SegSSLError, match="different transforms"):  # checked before a run starts
        nodes.segments_to_labels(elsewhere, ["any"], volume)
    segmentation.SetAndObserveTransformNodeID(None)
    with pytest.raises(SegSSLError, match="different transforms"):
        nodes.replace_segment(voxel, segmentation, single, volume)


def test_roi_box_follows_the_roi_and_volume_transforms_including_scaling(mrml_scene):
    image, _ = oblique_phantom()
    volume = nodes.add_volume_from_image(image, "ct")
    volume_transform, volume_matrix = linear_transform(mrml_scene, (15.0, -10.0), (12.0, -7.0, 30.0))
    volume.SetAndObserveTransformNodeID(volume_transform.GetID())
    roi_transform, roi_matrix = linear_transform(mrml_scene, (-30.0, 5.0), (-4.0, 9.0, 1.5))
    ijk_to_ras = nodes.ijk_to_ras_matrix(volume)
    axes = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)

    # A box aligned with the voxel grid in world space, around voxel centres (3, 2, 1)..(7, 5, 3).
    lower, upper = np.array([3, 2, 1]), np.array([7, 5, 3])
    object_to_world = np.eye(4)
    object_to_world[:3, :3] = volume_matrix[:3, :3] @ axes
    object_to_world[:3, 3] = (volume_matrix @ ijk_to_ras @ np.array([*(lower + upper) / 2, 1.0]))[:3]
    roi = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetAndObserveTransformNodeID(roi_transform.GetID())
    roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(np.linalg.inv(roi_matrix) @ object_to_world))
    roi.SetSize(*((upper - lower + 0.6) * SPACING))
    assert nodes.roi_to_ijk_box(roi, volume) == ((3, 2, 1), (7, 5, 3))

    # Under a transform that doubles the first axis, the box is shown (and used) twice as long.
    scaling = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    scaling.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(np.diag([2.0, 1.0, 1.0, 1.0])))
    plain = nodes.add_volume_from_image(sitk.Image(SIZE, sitk.sitkInt16), "grid")  # unit spacing, identity direction
    box = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "scaled")
    box.SetCenter(-5.0, -8.0, 6.0)  # doubled along x: world (-10, -8, 6), the centre of voxel (10, 8, 6)
    box.SetSize(3.0, 2.6, 2.6)
    box.SetAndObserveTransformNodeID(scaling.GetID())
    size_world = [0.0, 0.0, 0.0]
    box.GetSizeWorld(size_world)
    np.testing.assert_allclose(size_world, (6.0, 2.6, 2.6))
    # World x of the box: -10 +- 3 -> voxel i = 10 +- 3 (RAS x = -i); j 7..9, k 5..7.
    assert nodes.roi_to_ijk_box(box, plain) == ((7, 7, 5), (13, 9, 7))


def test_roi_that_is_not_placed_yet_says_so(mrml_scene):
    image, _ = oblique_phantom()
    volume = nodes.add_volume_from_image(image, "ct")
    roi = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    with pytest.raises(SegSSLError, match="ROI 'box' is not placed yet"):
        nodes.roi_to_ijk_box(roi, volume)


def test_painted_slice_is_found_only_when_the_painting_tells():
    labels = np.zeros((12, 16, 20), dtype=np.uint8)  # (k, j, i)
    labels[6, 4:9, 5:12] = 1
    assert nodes.painted_slice(labels) == (2, 6)
    sagittal = np.zeros_like(labels)
    sagittal[2:9, 3:12, 7] = 3
    assert nodes.painted_slice(sagittal) == (0, 7)
    line = np.zeros_like(labels)
    line[6, 4, 5:12] = 1  # on one slice of both K and J: ambiguous
    assert nodes.painted_slice(line) is None
    labels[8, 4:6, 5:7] = 2  # a second slice
    assert nodes.painted_slice(labels) is None
    assert nodes.painted_slice(np.zeros_like(labels)) is None


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_view_axis_is_the_nearest_voxel_axis_even_for_an_oblique_view(mrml_scene, axis):
    image, _ = oblique_phantom()
    volume = nodes.add_volume_from_image(image, "ct")
    assert nodes.view_axis(aligned_slice_node(mrml_scene, volume, axis, 3, tilt_degrees=20.0), volume) == axis
