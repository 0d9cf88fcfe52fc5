"""The panel's workflows as ``segssl`` command lines: inputs written from nodes, results imported back."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from slicer_scene import mrml_scene  # noqa: F401 - fixture

from SegSSLLib.cli import COMMANDS
from SegSSLLib.cli.segment_command import METHODS
from SegSSLLib.errors import SegSSLError

slicer = pytest.importorskip("slicer")
from SegSSLSlicerLib import choices, nodes, runs, selftest  # noqa: E402


def option(arguments: list[str], name: str) -> str:
    return arguments[arguments.index(name) + 1]


def axial_view(scene, volume, k: int):
    view = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    view.SetLayoutName("Red")
    view.SetOrientation("Axial")
    view.JumpSliceByOffsetting(*selftest.ras_of_index(volume, (0, 0, k)))
    return view


def test_propagate_writes_the_view_slice_with_exact_geometry_and_imports_new_segments(mrml_scene, tmp_path):
    volume, segmentation, truth = selftest.add_phantom()
    liver = (truth == selftest.LIVER).astype(np.uint8)
    source_id = nodes.add_segments(liver, segmentation, volume, names={1: "liver"}, colors={1: (0.9, 0.2, 0.1)})[1]
    volume_before = slicer.util.arrayFromVolume(volume).copy()
    k = int(np.argmax(liver.sum(axis=(1, 2))))

    prepared = runs.prepare_propagate(
        volume, segmentation, [source_id], axial_view(mrml_scene, volume, k), "Registration (no weights)", "GPU (CUDA)",
        work_parent=tmp_path,
    )
    arguments = prepared.arguments
    assert arguments[0] == "propagate" and option(arguments, "--backend") == "registration"
    assert option(arguments, "--device") == "cuda" and option(arguments, "--output") == str(prepared.result)
    assert option(arguments, "--axis") == "2"  # the view's axis, not left to the command's guess
    written = sitk.ReadImage(option(arguments, "--input"))
    annotation = sitk.ReadImage(option(arguments, "--annotation"))
    for image in (written, annotation):  # the CLI sees the node's grid exactly
        np.testing.assert_allclose(nodes.ijk_to_ras_from_image(image), nodes.ijk_to_ras_matrix(volume), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), volume_before)
    expected = np.zeros_like(liver)
    expected[k] = liver[k]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(annotation), expected)

    # The command's result (here: the true liver, written as the CLI would) becomes a new segment.
    result = sitk.GetImageFromArray(liver)
    result.CopyInformation(written)
    sitk.WriteImage(result, str(prepared.result))
    imported = runs.finish(prepared, segmentation, volume)
    new = segmentation.GetSegmentation().GetSegment(imported.segment_ids[1])
    assert new.GetName() == "liver propagated (registration)"
    # Its own colour, far from the source's (it lies exactly on the painted slice of the source).
    assert np.linalg.norm(np.subtract(new.GetColor(), (0.9, 0.2, 0.1))) > 0.3
    np.testing.assert_array_equal(selftest.segment_array(segmentation, imported.segment_ids[1], volume), liver)
    np.testing.assert_array_equal(selftest.segment_array(segmentation, source_id, volume), liver)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), volume_before)
    prepared.cleanup()
    assert not prepared.work_folder.exists()


def test_several_segments_propagate_together_as_label_values_and_none_is_refused(mrml_scene, tmp_path):
    volume, segmentation, truth = selftest.add_phantom()
    k = int(np.argmax((truth == selftest.LIVER).sum(axis=(1, 2))))
    ids = []
    for value, name in ((selftest.LIVER, "liver"), (2, "spleen")):
        painted = np.zeros_like(truth, dtype=np.uint8)
        painted[k] = truth[k] == value
        ids.append(nodes.add_segments(painted, segmentation, volume, names={1: name})[1])
    assert all((truth[k] == v).any() for v in (selftest.LIVER, 2))
    prepared = runs.prepare_propagate(
        volume, segmentation, ids[::-1], axial_view(mrml_scene, volume, k), "Registration (no weights)", "CPU", work_parent=tmp_path
    )
    annotation = sitk.GetArrayFromImage(sitk.ReadImage(option(prepared.arguments, "--annotation")))
    np.testing.assert_array_equal(annotation[k], np.select([truth[k] == 2, truth[k] == selftest.LIVER], [1, 2], 0))
    assert prepared.names == {1: "spleen propagated (registration)", 2: "liver propagated (registration)"}
    assert prepared.colors == {}  # never the sources' colours
    with pytest.raises(SegSSLError, match="no segment is selected"):
        runs.prepare_propagate(volume, segmentation, [], axial_view(mrml_scene, volume, k), "Registration (no weights)", "CPU", work_parent=tmp_path)


def test_propagate_finds_the_painted_slice_or_uses_the_view_worked_in(mrml_scene, tmp_path):
    volume, segmentation, truth = selftest.add_phantom()
    liver = truth == selftest.LIVER
    j = int(np.argmax(liver.sum(axis=(0, 2))))
    coronal = np.zeros_like(truth, dtype=np.uint8)
    coronal[:, j] = liver[:, j]
    source = nodes.add_segments(coronal, segmentation, volume, names={1: "liver"})[1]
    auto = runs.prepare_propagate(volume, segmentation, [source], None, "Registration (no weights)", "CPU", work_parent=tmp_path)
    assert option(auto.arguments, "--axis") == "1" and auto.title.startswith(f"propagation from slice {j} ")

    # Painted on two axial slices: the painting does not tell; the view the user works in does.
    two = np.zeros_like(coronal)
    k = int(np.argmax(liver.sum(axis=(1, 2))))
    two[k], two[k + 2] = liver[k], liver[k + 2]
    second = nodes.add_segments(two, segmentation, volume, names={1: "two slices"})[1]
    with pytest.raises(SegSSLError, match="cannot tell which slice.*'Painted in view'"):
        runs.prepare_propagate(volume, segmentation, [second], None, "Registration (no weights)", "CPU", work_parent=tmp_path)
    view = axial_view(mrml_scene, volume, k + 2)
    chosen = runs.prepare_propagate(
        volume, segmentation, [second], None, "Registration (no weights)", "CPU", work_parent=tmp_path, working_view=view
    )
    annotation = sitk.GetArrayFromImage(sitk.ReadImage(option(chosen.arguments, "--annotation")))
    assert option(chosen.arguments, "--axis") == "2" and np.flatnonzero(annotation.any(axis=(1, 2))).tolist() == [k + 2]

    # Refinement works on the slices of that view too.
    checkpoint = tmp_path / "sam.pth"
    checkpoint.write_bytes(b"weights")
    refine = runs.prepare_refine(
        volume, "Selected segment", "CPU", sam_checkpoint=checkpoint, segmentation_node=segmentation, segment_id=source,
        axis=nodes.view_axis(view, volume), work_parent=tmp_path,
    )
    assert option(refine.arguments, "--refine-axis") == "2"
    default = runs.prepare_refine(
        volume, "Selected segment", "CPU", sam_checkpoint=checkpoint, segmentation_node=segmentation, segment_id=source,
        work_parent=tmp_path,
    )
    assert "--refine-axis" not in default.arguments


def test_segment_command_lines_carry_seeds_and_refuse_missing_inputs(mrml_scene, tmp_path):
    volume, segmentation, truth = selftest.add_phantom()
    seeds = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    for index in [(10, 20, 5), (30, 12, 17)]:
        seeds.AddControlPoint(*selftest.ras_of_index(volume, index))
    prepared = runs.prepare_segment(volume, "S3-Net", "auto", seeds_node=seeds, keep_clusters=True, work_parent=tmp_path)
    arguments = prepared.arguments
    assert arguments[:2] == ["segment", "--input"] and option(arguments, "--method") == "s3net"
    assert [arguments[n + 1] for n, a in enumerate(arguments) if a == "--seed"] == ["10,20,5", "30,12,17"]
    assert option(arguments, "--clusters-output") == str(prepared.clusters) and option(arguments, "--device") == "auto"
    assert option(arguments, "--s3net-route") == "whole"  # clusters to pick from need the whole image's map
    clicked = runs.prepare_segment(volume, "S3-Net", "auto", seeds_node=seeds, work_parent=tmp_path)
    assert "--s3net-route" not in clicked.arguments and "--clusters-output" not in clicked.arguments
    # The click route's time is known before it runs, from the volume's size and spacing and the clicks,
    # and is what the command itself expects; the whole-image route keeps the per-slice rule.
    from SegSSLLib.s3net.click_segment import estimate_click_seconds

    expected = estimate_click_seconds(nodes.volume_size(volume), volume.GetSpacing(), [(10, 20, 5), (30, 12, 17)])
    assert clicked.cpu_seconds == pytest.approx((expected.likely, expected.most)) and prepared.cpu_seconds is None
    assert 0 < clicked.cpu_seconds[0] < clicked.cpu_seconds[1]

    with pytest.raises(SegSSLError, match="no input volume is selected"):
        runs.prepare_segment(None, "S3-Net", "CPU", seeds_node=seeds, work_parent=tmp_path)
    with pytest.raises(SegSSLError, match="PolyCL model file: no file is chosen"):
        runs.prepare_segment(volume, "PolyCL", "CPU", checkpoint=".", work_parent=tmp_path)
    model = tmp_path / "liver.pt"
    model.write_bytes(b"only its existence is checked here")
    polycl = runs.prepare_segment(volume, "PolyCL", "CPU", checkpoint=model, work_parent=tmp_path)
    assert option(polycl.arguments, "--method") == "polycl" and option(polycl.arguments, "--checkpoint") == str(model)
    assert polycl.clusters is None and "--seed" not in polycl.arguments
    assert len(list(tmp_path.glob("SegSSL-*"))) == 3  # the refused run wrote nothing


def test_refine_from_an_roi_box_and_confirmed_replacement(mrml_scene, tmp_path):
    volume, segmentation, truth = selftest.add_phantom()
    checkpoint = tmp_path / "sam_vit_b.pth"
    checkpoint.write_bytes(b"weights")
    roi = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "kidney box")
    lower, upper = np.array([8, 9, 4]), np.array([20, 25, 10])
    corners = np.array([selftest.ras_of_index(volume, c) for c in (lower, upper)])
    roi.SetCenter(*corners.mean(axis=0))
    roi.SetSize(*(np.abs(corners[1] - corners[0]) + 1.0))
    prepared = runs.prepare_refine(volume, "ROI box", "CPU", sam_checkpoint=checkpoint, roi_node=roi, work_parent=tmp_path)
    assert option(prepared.arguments, "--sam-checkpoint") == str(checkpoint)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(option(prepared.arguments, "--mask")))
    k, j, i = np.nonzero(mask)
    assert (i.min(), j.min(), k.min(), i.max(), j.max(), k.max()) == (8, 9, 4, 20, 25, 10)
    assert prepared.names == {1: "kidney box refined (SAM ViT-B)"} and prepared.replace_segment_id is None

    kidney = (truth == 3).astype(np.uint8)
    other = nodes.add_segments((truth == 2).astype(np.uint8), segmentation, volume, names={1: "spleen"})[1]
    source = nodes.add_segments(kidney, segmentation, volume, names={1: "kidney"})[1]
    replace = runs.prepare_refine(
        volume, "Selected segment", "CPU", sam_checkpoint=checkpoint, segmentation_node=segmentation,
        segment_id=source, replace=True, work_parent=tmp_path,
    )
    refined = np.zeros_like(kidney)
    refined[kidney.nonzero()[0].min()] = kidney[kidney.nonzero()[0].min()]  # a visibly different result
    image = sitk.GetImageFromArray(refined)
    image.CopyInformation(sitk.ReadImage(option(replace.arguments, "--input")))
    sitk.WriteImage(image, str(replace.result))
    runs.finish(replace, segmentation, volume)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2
    np.testing.assert_array_equal(selftest.segment_array(segmentation, source, volume), refined)
    np.testing.assert_array_equal(selftest.segment_array(segmentation, other, volume), (truth == 2).astype(np.uint8))

    # A confirmed replacement whose result is empty leaves the segment as it was.
    again = runs.prepare_refine(
        volume, "Selected segment", "CPU", sam_checkpoint=checkpoint, segmentation_node=segmentation,
        segment_id=source, replace=True, work_parent=tmp_path,
    )
    empty = sitk.GetImageFromArray(np.zeros_like(kidney))
    empty.CopyInformation(image)
    sitk.WriteImage(empty, str(again.result))
    assert runs.finish(again, segmentation, volume).empty
    np.testing.assert_array_equal(selftest.segment_array(segmentation, source, volume), refined)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2


def test_results_on_another_grid_are_refused_and_clusters_load_on_the_volume_grid(mrml_scene, tmp_path):
    volume, segmentation, truth = selftest.add_phantom()
    seeds = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    seeds.AddControlPoint(*selftest.ras_of_index(volume, (24, 24, 12)))
    prepared = runs.prepare_segment(volume, "S3-Net", "CPU", seeds_node=seeds, keep_clusters=True, work_parent=tmp_path)
    grid = sitk.ReadImage(option(prepared.arguments, "--input"))
    clusters = sitk.GetImageFromArray((truth % 4).astype(np.uint8))
    clusters.CopyInformation(grid)
    sitk.WriteImage(clusters, str(prepared.clusters))
    shifted = sitk.GetImageFromArray((truth == 1).astype(np.uint8))
    shifted.CopyInformation(grid)
    shifted.SetOrigin([o + 3.0 for o in grid.GetOrigin()])
    sitk.WriteImage(shifted, str(prepared.result))
    with pytest.raises(SegSSLError, match="not on the grid"):
        runs.finish(prepared, segmentation, volume)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0

    shifted.SetOrigin(grid.GetOrigin())
    sitk.WriteImage(shifted, str(prepared.result))
    result = runs.finish(prepared, segmentation, volume)
    assert segmentation.GetSegmentation().GetSegment(result.segment_ids[1]).GetName() == "S3-Net"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(result.clusters_node), truth % 4)
    np.testing.assert_allclose(nodes.ijk_to_ras_matrix(result.clusters_node), nodes.ijk_to_ras_matrix(volume))
    assert nodes.label_counts(truth % 4)[0][1] == max(np.bincount((truth % 4).ravel()))

    # A cluster picked later goes to the run's segmentation on the run's volume grid, even after
    # another volume was loaded; once the volume is gone it is refused.
    assert result.clusters.counts() == nodes.label_counts(truth % 4)
    nodes.add_volume_from_image(sitk.Image((10, 10, 10), sitk.sitkInt16), "another volume")
    cluster_id = result.clusters.add(2)
    assert segmentation.GetSegmentation().GetSegment(cluster_id).GetName() == "S3-Net cluster 2"
    np.testing.assert_array_equal(selftest.segment_array(segmentation, cluster_id, volume), (truth % 4 == 2).astype(np.uint8))
    mrml_scene.RemoveNode(volume)
    with pytest.raises(SegSSLError, match="was removed — run Segment again"):
        result.clusters.add(3)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2


def test_refine_without_weights_refuses_clearly_and_writes_nothing(mrml_scene, tmp_path):
    volume, segmentation, truth = selftest.add_phantom()
    message = selftest.check_refine_without_weights(volume, segmentation, truth, work_parent=tmp_path)
    assert message.startswith("SAM ViT-B weights: no file is chosen")


@pytest.mark.slow
@pytest.mark.skipif("propagate" not in COMMANDS, reason="needs `segssl propagate` (issue 5)")
def test_self_test_propagation_with_registration(mrml_scene, tmp_path):
    volume, segmentation, truth = selftest.add_phantom()
    view = mrml_scene.AddNewNodeByClass("vtkMRMLSliceNode")
    view.SetLayoutName("Red")
    assert selftest.check_propagate(volume, segmentation, truth, view, work_parent=tmp_path) >= 0.5


@pytest.mark.slow
@pytest.mark.skipif("s3net" not in METHODS, reason="needs `segssl segment --method s3net` (issue 4)")
def test_self_test_s3net_segment(mrml_scene, tmp_path):
    volume, segmentation, truth = selftest.add_phantom()
    assert selftest.check_segment(volume, segmentation, truth, work_parent=tmp_path) > 0.0  # overlaps the liver


@pytest.mark.slow
def test_self_test_refine_with_a_tiny_random_sam(mrml_scene, tmp_path):
    assert not selftest.refine_dependencies_missing()
    volume, segmentation, truth = selftest.add_phantom()
    assert selftest.check_refine(volume, segmentation, truth, work_parent=tmp_path) > 0
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2  # the source and its refinement


def test_panel_model_choices_name_weights_and_configs_the_library_knows():
    from SegSSLLib.weights.models import sam2_config_names
    from SegSSLLib.weights.registry import REGISTRY

    for model in choices.Sam2Model:
        assert REGISTRY[model.value].family == "sam2"
        assert model.config == REGISTRY[model.value].sam2_config and model.config in sam2_config_names()
    for model in choices.SamModel:
        assert REGISTRY[model.value].family == "sam"


def test_a_transformed_volume_gets_its_results_in_place(mrml_scene, tmp_path):
    volume, _, truth = selftest.add_phantom()
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = np.eye(4)
    angle = np.radians(30.0)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, 3] = (20.0, 0.0, -5.0)
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    seeds = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")  # placed in world space, where the user sees the voxel
    seeds.AddControlPoint(*(matrix @ [*selftest.ras_of_index(volume, (13, 20, 5)), 1.0])[:3])
    prepared = runs.prepare_segment(volume, "S3-Net", "CPU", seeds_node=seeds, work_parent=tmp_path)
    assert option(prepared.arguments, "--seed") == "13,20,5"

    liver = (truth == selftest.LIVER).astype(np.uint8)
    result = sitk.GetImageFromArray(liver)
    result.CopyInformation(sitk.ReadImage(option(prepared.arguments, "--input")))
    sitk.WriteImage(result, str(prepared.result))
    segmentation = nodes.new_segmentation(volume, "out")
    imported = runs.finish(prepared, segmentation, volume)
    np.testing.assert_array_equal(selftest.segment_array(segmentation, imported.segment_ids[1], volume), liver)
