"""The panel's decisions without Qt (``SegSSLSlicerLib.controller``), on a real MRML scene.

Each test here holds one of the defects a read against the Slicer sources found (issue 12): the view
the user works in, undo, the editor's selection, result colours, the input filter, a node deleted
during a run, the cluster map, nested installs.
"""

from __future__ import annotations

import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import SimpleITK as sitk
from slicer_scene import MODULE_FOLDER, mrml_scene  # noqa: F401 - fixture

from SegSSLLib.errors import SegSSLError

slicer = pytest.importorskip("slicer")
from SegSSLSlicerLib import choices, controller, installing, nodes, runs, selftest  # noqa: E402


def option(arguments, name):
    return arguments[arguments.index(name) + 1]


def slice_view(scene, name, orientation, volume=None, index=None, mapped=True):
    view = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    view.SetLayoutName(name)
    view.SetOrientation(orientation)
    view.SetMappedInLayout(mapped)
    if volume is not None:
        view.JumpSliceByOffsetting(*selftest.ras_of_index(volume, index))
    return view


def write_result(prepared, labels):
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    image.CopyInformation(sitk.ReadImage(option(prepared.arguments, "--input")))
    sitk.WriteImage(image, str(prepared.result))


# -- the view the user works in -------------------------------------------------------------------


def test_auto_takes_the_slice_view_the_cursor_was_last_in_not_the_active_view_id(mrml_scene, tmp_path):
    volume, segmentation, truth = selftest.add_phantom()
    liver = truth == selftest.LIVER
    i = int(np.argmax(liver.sum(axis=(0, 1))))
    two = np.zeros_like(truth, dtype=np.uint8)
    two[:, :, i], two[:, :, i + 2] = liver[:, :, i], liver[:, :, i + 2]  # two sagittal slices: the painting does not tell
    source = nodes.add_segments(two, segmentation, volume, names={1: "liver"})[1]
    crosshair = mrml_scene.AddNewNodeByClass("vtkMRMLCrosshairNode")  # Slicer's singleton
    red = slice_view(mrml_scene, "Red", "Axial", volume, (0, 0, 12))
    yellow = slice_view(mrml_scene, "Yellow", "Sagittal", volume, (i + 2, 0, 0))
    tracker = controller.ViewTracker()
    tracker.attach(mrml_scene)

    # Slicer never sets the selection node's active view: that is why "Auto" always failed.
    selection = mrml_scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    assert selection is None or selection.GetActiveViewID() is None

    # The user paints in Yellow, passes over Red, comes back to Yellow, then moves to the panel.
    for view in (yellow, red, yellow):
        crosshair.SetCursorPositionXYZ([40.0, 30.0, 0.0], view)
    crosshair.SetCursorPositionInvalid()  # the mouse left the views to click Propagate
    assert crosshair.GetCursorPositionXYZ([0.0, 0.0, 0.0]) is None
    assert tracker.working_view(mrml_scene) is yellow

    prepared = runs.prepare_propagate(
        volume, segmentation, [source], None, choices.PropagationBackend.registration, choices.Device.cpu,
        work_parent=tmp_path, working_view=tracker.working_view(mrml_scene),
    )
    annotation = sitk.GetArrayFromImage(sitk.ReadImage(option(prepared.arguments, "--annotation")))
    assert option(prepared.arguments, "--axis") == "0"
    assert np.flatnonzero(annotation.any(axis=(0, 1))).tolist() == [i + 2]
    # Refine under Auto works on the same view's slices (it was always axial before).
    assert controller.working_axis(None, tracker, mrml_scene, volume) == 0
    yellow.SetMappedInLayout(False)  # a layout without Yellow (its slice node stays in the scene)...
    assert tracker.working_view(mrml_scene) is red  # ...and Red as the only slice view
    tracker.detach()
    crosshair.SetCursorPositionXYZ([40.0, 30.0, 0.0], red)
    yellow.SetMappedInLayout(True)
    assert tracker.working_view(mrml_scene) is yellow  # detached: no longer follows the cursor


def test_without_a_cursor_the_only_slice_view_in_the_layout_is_used(mrml_scene):
    mrml_scene.AddNewNodeByClass("vtkMRMLCrosshairNode")
    tracker = controller.ViewTracker()
    tracker.attach(mrml_scene)
    green = slice_view(mrml_scene, "Green", "Coronal")
    red = slice_view(mrml_scene, "Red", "Axial", mapped=False)  # kept by Slicer after a layout change
    assert tracker.working_view(mrml_scene) is green
    assert controller.named_view(mrml_scene, "Green") is green
    with pytest.raises(SegSSLError, match="the Red view is not in the current layout"):
        controller.named_view(mrml_scene, "Red")
    red.SetMappedInLayout(True)
    assert tracker.working_view(mrml_scene) is None  # two views and no cursor: the painting must tell, or the user


# -- importing results ----------------------------------------------------------------------------


def test_a_result_is_its_own_undo_step_and_the_last_brush_stroke_survives_its_undo(mrml_scene, tmp_path):
    volume, segmentation, truth = selftest.add_phantom()
    liver = (truth == selftest.LIVER).astype(np.uint8)
    k = int(np.argmax(liver.sum(axis=(1, 2))))
    painted = np.zeros_like(liver)
    painted[k] = liver[k]
    history = slicer.vtkSegmentationHistory()  # what qMRMLSegmentEditorWidget keeps for Ctrl+Z
    history.SetMaximumNumberOfStates(10)
    history.SetSegmentation(segmentation.GetSegmentation())
    history.SaveState()  # the editor saves before each stroke
    source = nodes.add_segments(painted, segmentation, volume, names={1: "liver"})[1]

    view = slice_view(mrml_scene, "Red", "Axial", volume, (0, 0, k))
    prepared = runs.prepare_propagate(volume, segmentation, [source], view, "registration", "cpu", work_parent=tmp_path)
    write_result(prepared, liver)
    result, status = controller.import_result(prepared, segmentation, volume, save_state_for_undo=history.SaveState)
    assert status.startswith("propagation from slice") and "liver propagated (registration)" in status
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2

    history.RestorePreviousState()  # Ctrl+Z
    remaining = segmentation.GetSegmentation()
    assert [remaining.GetNthSegmentID(n) for n in range(remaining.GetNumberOfSegments())] == [source]
    np.testing.assert_array_equal(selftest.segment_array(segmentation, source, volume), painted)

    # An empty result changes nothing and adds no undo step.
    again = runs.prepare_propagate(volume, segmentation, [source], view, "registration", "cpu", work_parent=tmp_path)
    write_result(again, np.zeros_like(liver))
    states = history.GetNumberOfStates()
    result, status = controller.import_result(again, segmentation, volume, save_state_for_undo=history.SaveState)
    assert result.empty and "found nothing" in status and history.GetNumberOfStates() == states


def test_results_get_distinct_colours_and_the_selection_follows_the_editor_until_the_user_ticks(mrml_scene):
    volume, segmentation, truth = selftest.add_phantom()
    first = nodes.add_segments((truth == 1).astype(np.uint8), segmentation, volume, names={1: "liver"}, colors={1: nodes.PALETTE[3]})[1]
    colours = [segmentation.GetSegmentation().GetSegment(first).GetColor()]
    for value in (2, 3, 4):
        added = nodes.add_segments((truth == value).astype(np.uint8), segmentation, volume, names={1: f"result {value}"})[1]
        colour = segmentation.GetSegmentation().GetSegment(added).GetColor()
        assert min(np.linalg.norm(np.subtract(colour, c)) for c in colours) > 0.3, (value, colour)
        colours.append(colour)

    # The tick list follows the editor's selected segment while it is only that one...
    assert controller.follow_editor([], "", "a") == ["a"]
    assert controller.follow_editor(["a"], "a", "b") == ["b"]
    # ...and keeps what the user ticked (it was wiped by the next selection before).
    assert controller.follow_editor(["a", "c"], "a", "b") == ["a", "c"]
    assert controller.follow_editor(["c"], "a", "b") == ["c"]
    assert controller.segments_to_propagate([], "b") == ["b"] and controller.segments_to_propagate(["a", "c"], "b") == ["a", "c"]


def test_the_input_filter_offers_grey_level_volumes_only(mrml_scene, tmp_path):
    clusters = nodes.add_volume_from_image(sitk.Image((8, 8, 8), sitk.sitkUInt8), "old clusters", label_map=True)
    volume, segmentation, truth = selftest.add_phantom()
    clusters.SetAttribute(nodes.CLUSTER_MAP_ATTRIBUTE, volume.GetID())
    # Before: GetFirstNodeByClass("vtkMRMLScalarVolumeNode") picked the label map (it derives from it).
    assert mrml_scene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode") is clusters
    assert controller.default_input_volume(mrml_scene) is volume
    assert not controller.accepts_input_volume(clusters) and controller.accepts_input_volume(volume)
    with pytest.raises(SegSSLError, match="'old clusters' is a label map, not an image"):
        runs.prepare_segment(clusters, choices.SegmentMethod.polycl, "cpu", checkpoint=tmp_path, work_parent=tmp_path)

    # SegSSL.ui's selector has the same filter.
    ui = ET.parse(MODULE_FOLDER / "Resources" / "UI" / "SegSSL.ui").getroot()
    selector = next(w for w in ui.iter("widget") if w.get("name") == "inputVolumeSelector")
    properties = {p.get("name"): p for p in selector.findall("property")}
    assert tuple(s.text for s in properties["nodeTypes"].iter("string")) == controller.INPUT_VOLUME_NODE_TYPES
    assert properties["showChildNodeTypes"].findtext("bool") == str(controller.INPUT_VOLUME_SHOW_CHILD_NODE_TYPES).lower()


def test_the_cluster_map_is_replaced_per_volume_and_can_be_hidden(mrml_scene, tmp_path):
    volume, segmentation, truth = selftest.add_phantom()
    seeds = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    seeds.AddControlPoint(*selftest.ras_of_index(volume, (24, 24, 12)))
    composites = [mrml_scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    maps = []
    for run in range(2):
        prepared = runs.prepare_segment(volume, "s3net", "cpu", seeds_node=seeds, keep_clusters=True, work_parent=tmp_path)
        write_result(prepared, truth == selftest.LIVER)
        clusters = sitk.GetImageFromArray(((truth + run) % 4).astype(np.uint8))
        clusters.CopyInformation(sitk.ReadImage(option(prepared.arguments, "--input")))
        sitk.WriteImage(clusters, str(prepared.clusters))
        maps.append(runs.finish(prepared, segmentation, volume).clusters_node)
    assert maps[0] is maps[1]  # one cluster map per volume, updated by the second run
    assert len(nodes.nodes_of_class(mrml_scene, "vtkMRMLLabelMapVolumeNode")) == 1
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(maps[1]), (truth + 1) % 4)

    controller.show_label_layer(mrml_scene, maps[1], True)
    assert all(c.GetLabelVolumeID() == maps[1].GetID() and c.GetLabelOpacity() == 0.5 for c in composites)
    assert controller.label_layer_shown(mrml_scene, maps[1])
    other = nodes.add_volume_from_image(sitk.Image((4, 4, 4), sitk.sitkUInt8), "user labels", label_map=True)
    composites[2].SetLabelVolumeID(other.GetID())
    controller.show_label_layer(mrml_scene, maps[1], False)
    assert [c.GetLabelVolumeID() for c in composites] == [None, None, other.GetID()]  # the user's layer stays
    assert not controller.label_layer_shown(mrml_scene, maps[1])


# -- the one background job -----------------------------------------------------------------------


def sleeper(seconds: float, code: int = 0, text: str = "working"):
    """A child process that talks like pip for a while (installing._StepProcess runs any command)."""
    script = f"import sys, time; print({text!r}, flush=True); time.sleep({seconds}); sys.exit({code})"
    return installing._StepProcess([sys.executable, "-c", script], {})


def run_to_outcome(jobs: controller.RunController, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = jobs.poll()
        if outcome is not None:
            return outcome
        time.sleep(0.05)
    raise AssertionError("the job did not end")


def test_a_node_deleted_during_a_run_gets_nothing_imported(mrml_scene):
    volume, segmentation, _ = selftest.add_phantom()
    imported, cleaned = [], []
    jobs = controller.RunController()
    assert jobs.start(sleeper(30), "S3-Net segmentation", imported.append, lambda: cleaned.append(1), watched=(volume, segmentation))
    assert jobs.busy
    mrml_scene.RemoveNode(segmentation)
    started = time.monotonic()
    outcome = run_to_outcome(jobs)
    assert time.monotonic() - started < 10  # the run is stopped, not waited for
    assert "was removed during the run; nothing was imported" in outcome.status and not outcome.error
    assert imported == [] and cleaned == [1] and not jobs.busy

    # Removed after the process ended but before its result was read: still nothing imported.
    volume2, segmentation2, _ = selftest.add_phantom("second")
    assert jobs.start(sleeper(0), "propagation", imported.append, watched=(volume2, segmentation2))
    jobs.job.process.wait(10)
    mrml_scene.RemoveNode(volume2)
    assert "'second' was removed" in run_to_outcome(jobs).status and imported == []

    # Nothing removed: the import runs and its line is shown.
    assert jobs.start(sleeper(0), "propagation", lambda process: "propagation done", watched=(segmentation2,))
    assert run_to_outcome(jobs) == controller.Outcome("propagation done")


def test_one_job_at_a_time_so_a_second_click_starts_no_nested_run_or_install(mrml_scene):
    jobs = controller.RunController()
    first = sleeper(30)
    assert jobs.start(first, "installing PyTorch", lambda p: "installed", kind="install")
    second, cleaned = sleeper(0), []
    assert not jobs.start(second, "S3-Net segmentation", lambda p: "done", cleanup=lambda: cleaned.append(1))
    assert second.pid is None and cleaned == [1] and jobs.kind == "install"
    fraction, line = jobs.progress()
    assert line.startswith("installing PyTorch: ")
    jobs.cancel(grace_seconds=0.5)
    outcome = run_to_outcome(jobs)
    assert outcome.status == "installing PyTorch cancelled; nothing was changed" and not jobs.busy

    failing = sleeper(0, code=3, text="ERROR: No matching distribution found for monai>=1.3")
    assert jobs.start(failing, "S3-Net segmentation", lambda p: "never")
    outcome = run_to_outcome(jobs)
    assert outcome.status == "S3-Net segmentation failed" and outcome.error


# -- installing -----------------------------------------------------------------------------------


def test_install_steps_put_torch_first_through_light_the_torch_and_build_sam2_last(tmp_path):
    constraints = tmp_path / "constraints.txt"
    missing = ["torch>=2.5.1", "torchvision>=0.20", "sam2>=1.0", "pillow>=9.0"]
    steps = installing.install_steps(missing, constraints, have_light_the_torch=False)
    assert [(s.module, s.arguments[:2]) for s in steps] == [
        ("pip", ["install", installing.LIGHT_THE_TORCH]),
        ("light_the_torch", ["install", "torch>=2.5.1"]),
        ("pip", ["install", "pillow>=9.0"]),
        ("pip", ["install", "sam2>=1.0"]),
    ]
    assert steps[1].arguments == ["install", "torch>=2.5.1", "torchvision>=0.20"]
    assert steps[3].environment == {"SAM2_BUILD_CUDA": "0"} and "--no-build-isolation" in steps[3].arguments
    assert steps[3].command("PythonSlicer")[:3] == ["PythonSlicer", "-m", "pip"]
    steps[2].before()  # the constraints are written when the step starts, after torch is in
    assert "numpy==" in constraints.read_text()
    assert [s.module for s in installing.install_steps(["monai>=1.3"], constraints, have_light_the_torch=True)] == ["pip"]


def test_an_install_runs_its_steps_in_the_background_and_a_failure_says_what_to_do(tmp_path):
    fake = tmp_path / "fakepip.py"
    fake.write_text(
        "import sys, time\n"
        "print('Collecting', sys.argv[2], flush=True)\n"
        "time.sleep(0.2)\n"
        "if sys.argv[2] == 'broken':\n"
        "    print(\"ProxyError('Cannot connect to proxy.')\", file=sys.stderr)\n"
        "    sys.exit(1)\n"
    )
    environment = {"PYTHONPATH": str(tmp_path)}
    steps = [installing.InstallStep(name, "fakepip", ["install", name], environment) for name in ("monai", "tqdm")]
    job = installing.InstallJob(steps, sys.executable)
    jobs = controller.RunController()
    started = time.monotonic()
    assert jobs.start(job, "installing for S3-Net", lambda p: "installed", kind="install")
    assert time.monotonic() - started < 1.0  # returns at once: the GUI is never blocked
    seen = set()
    deadline = time.monotonic() + 20
    while (outcome := jobs.poll()) is None and time.monotonic() < deadline:
        seen.add(jobs.progress()[1].split(": ", 1)[1].split(":")[0])
        time.sleep(0.02)
    assert outcome == controller.Outcome("installed")
    assert {"step 1/2, monai", "step 2/2, tqdm"} <= seen

    broken = installing.InstallJob([installing.InstallStep("broken", "fakepip", ["install", "broken"], environment)], sys.executable)
    assert jobs.start(broken, "installing for SAM 2", lambda p: "never", kind="install")
    outcome = run_to_outcome(jobs)
    assert outcome.status == "installing for SAM 2 failed"
    assert "package index could not be reached" in outcome.error and "HTTPS_PROXY" in outcome.error
    assert "--no-index --find-links" in outcome.error and "\n" not in outcome.error


# -- device, time, choices -------------------------------------------------------------------------


def test_the_device_line_and_a_cpu_estimate_before_long_runs():
    probe = controller.DeviceProbe()
    assert "registration runs on the CPU" in controller.describe_device("auto", probe, torch_installed=False)
    probe.info = controller.DeviceInfo(cuda=False, torch="2.6.0")
    assert controller.describe_device("auto", probe, True) == "CPU only: PyTorch 2.6.0 sees no CUDA GPU"
    assert "a GPU run will be refused" in controller.describe_device("cuda", probe, True)
    assert controller.runs_on_cpu("sam2", "auto", probe)
    probe.info = controller.DeviceInfo(cuda=True, name="NVIDIA H200", torch="2.6.0", cuda_version="12.4")
    assert controller.describe_device("auto", probe, True) == "GPU: NVIDIA H200 (PyTorch 2.6.0, CUDA 12.4)"
    assert not controller.runs_on_cpu("sam2", "auto", probe) and controller.runs_on_cpu("registration", "auto", probe)

    # SAM 2 on 100 slices: 6 s + 3.4 s per slice (RESULTS.md), about 6 minutes; short runs get no line.
    assert controller.estimate_line("sam2", 100) == "On the CPU this takes about 6 min for 100 slices (a GPU is much faster)."
    assert controller.estimate_line("sam2", 10) == "" and controller.estimate_line("registration", 500) == ""
    assert controller.cpu_estimate("s3net", 100) == pytest.approx(6.0 + 72.0)
    # S3-Net from a click: the run's own (likely, at most) seconds plus the start-up, always shown.
    assert controller.estimate_line("s3net", 60, (11.4, 52.0)) == "On the CPU this takes about 15 s (at most 1 min)."
    assert controller.estimate_line("s3net", 60, (30.0, 200.0)) == "On the CPU this takes about 35 s (at most 3 min)."


def test_choices_are_saved_as_stable_keys_and_shown_as_labels():
    for enum_class in (choices.Device, choices.SegmentMethod, choices.PropagationBackend, choices.Sam2Model,
                       choices.SamModel, choices.RefineSource, choices.SliceView):
        labels = [m.label() for m in enum_class]
        assert len(set(labels)) == len(labels)
        for m in enum_class:
            assert m.name.isidentifier() and choices.member(enum_class, m.name) is m  # what the scene stores
            assert choices.member(enum_class, m.label()) is m  # what older scripts passed
    assert choices.member(choices.Device, "cuda") is choices.Device.cuda
    with pytest.raises(SegSSLError, match="unknown Device 'tpu' — use one of auto, cpu, cuda"):
        choices.member(choices.Device, "tpu")


def test_scenes_saved_with_labels_load_as_stable_keys(mrml_scene):
    node = mrml_scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    old = {"device": "GPU (CUDA)", "segmentMethod": "S3-Net", "sliceView": "Auto", "propagateBackend": "Registration (no weights)",
           "sam2Model": "MedSAM2", "refineSource": "ROI box", "samModel": "gone model", "inputVolume": "vtkMRMLScalarVolumeNode1"}
    for name, value in old.items():
        node.SetParameter(name, value)
    changed = choices.migrate_parameters(node)
    assert {name: node.GetParameter(name) for name in old if node.HasParameter(name)} == {
        "device": "cuda", "segmentMethod": "s3net", "sliceView": "auto", "propagateBackend": "registration",
        "sam2Model": "medsam2", "refineSource": "roi", "inputVolume": "vtkMRMLScalarVolumeNode1",
    }
    assert set(changed) == set(old) - {"inputVolume"}
    assert choices.migrate_parameters(node) == []  # stable keys stay as they are
