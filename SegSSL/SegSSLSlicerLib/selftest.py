"""The three workflows on a generated phantom, as checks: used by the in-Slicer self-test
(``SegSSLTest``) and by pytest. No downloads: S3-Net needs no weights, propagation uses the
registration backend, refinement runs a tiny randomly initialised SAM written on the spot (and must
refuse clearly when no SAM weights are there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import slicer.util
import SimpleITK as sitk
from scipy import ndimage

from SegSSLLib.errors import SegSSLError
from SegSSLLib.phantoms import LABEL_VALUES, make_ct_phantom

from SegSSLSlicerLib import nodes, runs

PHANTOM_SIZE, PHANTOM_SPACING = (48, 48, 24), (6.0, 6.0, 10.0)  # small, so CPU runs stay short
RUN_TIMEOUT_SECONDS = 900  # a run that hangs fails the check instead of blocking the self-test
LIVER = LABEL_VALUES["liver"]


def add_phantom(name: str = "SegSSL phantom"):
    """(volume node, empty segmentation node, (k, j, i) true labels) of a CT-like phantom."""
    image, labels = make_ct_phantom(seed=11, size=PHANTOM_SIZE, spacing=PHANTOM_SPACING)
    volume = nodes.add_volume_from_image(image, name)
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} segments")
    segmentation.CreateDefaultDisplayNodes()
    return volume, segmentation, sitk.GetArrayFromImage(labels)


def ras_of_index(volume_node, index) -> list[float]:
    return (nodes.ijk_to_ras_matrix(volume_node) @ np.array([*index, 1.0]))[:3].tolist()


def deepest_voxel(mask: np.ndarray) -> tuple[int, int, int]:
    """(i, j, k) of the voxel farthest from the mask's border: a seed a user would click."""
    k, j, i = np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape)
    return int(i), int(j), int(k)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


def segment_array(segmentation_node, segment_id, volume_node) -> np.ndarray:
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node)


def check_segment(volume, segmentation, truth, python=None, work_parent=None) -> float:
    """S3-Net from one seed in the liver: a new segment that contains the seed, and the cluster map."""
    seed = deepest_voxel(truth == LIVER)
    seeds = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "liver seed")
    seeds.AddControlPoint(*ras_of_index(volume, seed))
    prepared = runs.prepare_segment(volume, "S3-Net", "CPU", seeds_node=seeds, keep_clusters=True, work_parent=work_parent)
    result = runs.run_and_finish(prepared, segmentation, volume, python=python, timeout=RUN_TIMEOUT_SECONDS)
    assert not result.empty, "S3-Net returned an empty segmentation"
    mask = segment_array(segmentation, next(iter(result.segment_ids.values())), volume)
    assert mask[seed[2], seed[1], seed[0]] == 1, "the S3-Net segment does not contain its seed"
    assert result.clusters_node is not None, "the S3-Net cluster map was not loaded"
    return dice(mask, truth == LIVER)


def check_propagate(volume, segmentation, truth, slice_node, python=None, work_parent=None) -> float:
    """The liver painted on its largest axial slice, propagated with registration both ways."""
    liver = truth == LIVER
    k = int(np.argmax(liver.sum(axis=(1, 2))))
    painted = np.zeros_like(liver, dtype=np.uint8)
    painted[k] = liver[k]
    source_id = nodes.add_segments(painted, segmentation, volume, names={1: "liver (painted)"})[1]
    slice_node.SetOrientation("Axial")
    slice_node.JumpSliceByOffsetting(*ras_of_index(volume, (0, 0, k)))
    prepared = runs.prepare_propagate(
        volume, segmentation, [source_id], slice_node, "Registration (no weights)", "CPU", work_parent=work_parent
    )
    result = runs.run_and_finish(prepared, segmentation, volume, python=python, timeout=RUN_TIMEOUT_SECONDS)
    assert not result.empty, "propagation returned an empty segmentation"
    mask = segment_array(segmentation, result.segment_ids[1], volume)
    assert np.array_equal(mask[k], painted[k]), "the annotated slice is not what was painted"
    assert mask[:k].any() and mask[k + 1 :].any(), "propagation did not reach both directions"
    assert np.array_equal(segment_array(segmentation, source_id, volume), painted), "the painted segment changed"
    score = dice(mask, liver)
    assert score >= 0.5, f"propagated liver Dice {score:.2f} < 0.5"
    return score


def check_refine_without_weights(volume, segmentation, truth, work_parent) -> str:
    """With no SAM weights, Refine explains how to get them, writes nothing and changes nothing."""
    source_id = nodes.add_segments((truth == LIVER).astype(np.uint8), segmentation, volume, names={1: "liver"})[1]
    count = segmentation.GetSegmentation().GetNumberOfSegments()
    files_before = sorted(Path(work_parent).iterdir())
    try:
        runs.prepare_refine(
            volume, "Selected segment", "CPU", sam_checkpoint=None,
            segmentation_node=segmentation, segment_id=source_id, work_parent=work_parent,
        )
    except SegSSLError as error:
        message = str(error)
    else:
        raise AssertionError("Refine with SAM was prepared without SAM weights")
    assert "Download" in message and "Browse" in message, message
    assert segmentation.GetSegmentation().GetNumberOfSegments() == count
    assert sorted(Path(work_parent).iterdir()) == files_before, "files were written for a refinement that cannot run"
    return message


def refine_dependencies_missing() -> str:
    """Why a SAM refinement cannot run in this Python (empty when it can)."""
    try:
        import segment_anything  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        return f"refinement check skipped: {error.name} is not installed (Install dependencies in the SegSSL panel)"
    return ""


def write_tiny_sam_checkpoint(path) -> Path:
    """A randomly initialised tiny SAM state dict (no download)."""
    import torch

    from SegSSLLib.weights.models import TINY_SAM, build_sam

    torch.manual_seed(0)
    torch.save(build_sam(TINY_SAM).state_dict(), path)
    return Path(path)


def check_refine(volume, segmentation, truth, python=None, work_parent=None) -> int:
    """Refine the liver with a tiny random SAM: a new segment on the liver's slices, the source unchanged.

    Returns the number of refined slices. Random weights give arbitrary masks, so only what does
    not depend on them is checked (where SAM finds nothing, the coarse mask is kept on that slice).
    """
    liver = (truth == LIVER).astype(np.uint8)
    source_id = nodes.add_segments(liver, segmentation, volume, names={1: "liver"})[1]
    checkpoint = write_tiny_sam_checkpoint(Path(work_parent) / "tiny_sam.pth")
    prepared = runs.prepare_refine(
        volume, "Selected segment", "CPU", sam_checkpoint=checkpoint, segmentation_node=segmentation,
        segment_id=source_id, axis=2, work_parent=work_parent,
    )
    result = runs.run_and_finish(prepared, segmentation, volume, python=python, timeout=RUN_TIMEOUT_SECONDS)
    assert not result.empty, "refinement returned an empty segmentation"
    refined_id = result.segment_ids[1]
    assert segmentation.GetSegmentation().GetSegment(refined_id).GetName() == "liver refined"
    refined = segment_array(segmentation, refined_id, volume)
    slices = np.flatnonzero(liver.any(axis=(1, 2)))
    assert np.array_equal(np.flatnonzero(refined.any(axis=(1, 2))), slices), "refined slices differ from the liver's"
    assert np.array_equal(segment_array(segmentation, source_id, volume), liver), "the source segment changed"
    return len(slices)
