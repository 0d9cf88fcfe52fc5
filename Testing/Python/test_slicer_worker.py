"""The panel drives the interactive worker (``segssl serve``) on a real MRML scene (slicer-core) with
a real worker process and the registration backend: one worker per session reused across clicks, a
correction sent as annotate + propagate, each import one undo step, a dead worker restarted with a
message, cancel that changes nothing, and markups turned into a SAM 2 point / box prompt."""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import pytest
from slicer_scene import mrml_scene  # noqa: F401 - fixture

slicer = pytest.importorskip("slicer")
from SegSSLSlicerLib import controller, interactive, nodes, selftest  # noqa: E402
from SegSSLSlicerLib.worker import WorkerClient  # noqa: E402


def run(jobs: controller.RunController, prepared, undo=None, timeout: float = 120, cancel: bool = False,
        cancel_when=None, while_running=None):
    """What the widget does: start the job, poll it from the timer until it ends; the outcome.

    ``cancel_when()``: cancel once it is true; ``while_running()``: called after each poll of a running job."""
    prepared.save_state_for_undo = undo
    assert jobs.start(prepared.job, prepared.title, lambda job: prepared.import_result(undo), prepared.cleanup, kind="run")
    if cancel:
        jobs.cancel()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = jobs.poll()
        if outcome is not None:
            return outcome
        if while_running is not None:
            while_running()
        if cancel_when is not None and cancel_when() and not prepared.job.cancelled:
            jobs.cancel()
        time.sleep(0.02)
    raise AssertionError(f"{prepared.title} did not end in {timeout} s")


def ops(client: WorkerClient, since: int) -> list[str]:
    return [r["op"] for r in client.sent[since:]]


@pytest.fixture
def panel(tmp_path):
    env = {"OMP_NUM_THREADS": "1"}
    made = interactive.InteractivePanel(work_parent=tmp_path, client=WorkerClient(sys.executable, env=env))
    yield made
    made.stop()


@pytest.fixture
def liver_case(mrml_scene):  # noqa: F811
    volume, segmentation, truth = selftest.add_phantom()
    liver = (truth == selftest.LIVER).astype(np.uint8)
    k = int(np.argmax(liver.sum(axis=(1, 2))))
    painted = np.zeros_like(liver)
    painted[k] = liver[k]
    source = nodes.add_segments(painted, segmentation, volume, names={1: "liver"})[1]
    history = slicer.vtkSegmentationHistory()  # what the Segment Editor keeps for Ctrl+Z
    history.SetMaximumNumberOfStates(20)
    history.SetSegmentation(segmentation.GetSegmentation())
    return volume, segmentation, liver, k, source, history


def segment(segmentation, segment_id, volume):
    return selftest.segment_array(segmentation, segment_id, volume)


def test_one_worker_serves_two_clicks_and_a_correction_is_an_annotate_and_a_propagate(panel, liver_case):
    volume, segmentation, liver, k, source, history = liver_case
    jobs = controller.RunController()

    outcome = run(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu"), history.SaveState)
    assert not outcome.error, outcome
    assert "liver propagated (registration)" in outcome.status and "slices computed" in outcome.status
    pid = panel.client.pid
    assert ops(panel.client, 0) == ["open", "annotate", "propagate", "save"]
    result = panel.result_segments[(segmentation.GetID(), source)]
    first = segment(segmentation, result, volume)
    assert (first.any(axis=(1, 2))).sum() > 3  # carried beyond the painted slice
    np.testing.assert_array_equal(first[k], liver[k])
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2
    assert panel.describe() == "interactive worker: registration on the CPU"

    # The user paints a correction on another slice, in the source segment, and clicks again.
    c = k + 4
    corrected = segment(segmentation, source, volume)
    corrected[c] = liver[c]
    history.SaveState()  # the editor saves before a stroke
    slicer.util.updateSegmentBinaryLabelmapFromArray(corrected, segmentation, source, volume)
    states = history.GetNumberOfStates()
    sent = len(panel.client.sent)
    outcome = run(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu"), history.SaveState)
    assert not outcome.error, outcome
    assert panel.client.pid == pid and panel.client.starts == 1  # the same worker
    assert ops(panel.client, sent) == ["annotate", "propagate", "save"]  # no second open
    assert panel.last_propagate["changed_slices"] and min(panel.last_propagate["changed_slices"]) > k
    second = segment(segmentation, result, volume)
    np.testing.assert_array_equal(second[[k, c]], liver[[k, c]])  # both drawn slices exactly as drawn
    np.testing.assert_array_equal(second[: k + 1], first[: k + 1])  # below the correction's interval: untouched
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2  # the result was updated, not added again
    assert history.GetNumberOfStates() == states + 1  # the import is one undo step

    history.RestorePreviousState()  # Ctrl+Z takes back the second result only
    np.testing.assert_array_equal(segment(segmentation, result, volume), first)
    np.testing.assert_array_equal(segment(segmentation, source, volume), corrected)  # the brush stroke stays

    # Nothing painted since: only propagate + save, and the worker computes nothing new.
    sent = len(panel.client.sent)
    outcome = run(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu"), history.SaveState)
    assert ops(panel.client, sent) == ["propagate", "save"] and panel.last_propagate["computed_slices"] == 0
    np.testing.assert_array_equal(segment(segmentation, result, volume), second)


@pytest.mark.slow
def test_a_dead_worker_is_replaced_with_a_message(panel, liver_case):
    volume, segmentation, liver, k, source, history = liver_case
    jobs = controller.RunController()
    assert not run(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu")).error
    first_pid = panel.client.pid
    os.kill(first_pid, signal.SIGKILL)  # the worker crashes between clicks
    deadline = time.monotonic() + 10
    while not panel.client.died_message and time.monotonic() < deadline:
        panel.client.poll()  # the panel's timer reads the worker's end
        time.sleep(0.02)
    assert not panel.client.alive and "exit code -9" in panel.client.died_message

    prepared = panel.propagate(volume, segmentation, [source], "registration", "cpu")
    outcome = run(jobs, prepared)
    assert not outcome.error, outcome
    assert panel.client.pid != first_pid and panel.client.starts == 2
    assert "the SegSSL worker had stopped" in prepared.job.restarted and "a new one was started" in prepared.job.restarted
    assert ops(panel.client, 0) == ["open", "annotate", "propagate", "save"]  # the new worker is told everything

    # A worker that dies during a request ends the job with a one-line message, and the next click restarts it.
    prepared = panel.propagate(volume, segmentation, [source], "registration", "cpu")
    jobs.start(prepared.job, prepared.title, lambda job: prepared.import_result(None))
    panel.client.kill()
    deadline = time.monotonic() + 10
    while (outcome := jobs.poll()) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert outcome is not None and "worker stopped" in outcome.error and "\n" not in outcome.error
    assert not run(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu")).error
    assert panel.client.starts == 3


def test_cancel_leaves_the_previous_result_and_the_worker_in_place(panel, liver_case):
    volume, segmentation, liver, k, source, history = liver_case
    jobs = controller.RunController()
    assert not run(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu")).error
    result = panel.result_segments[(segmentation.GetID(), source)]
    before = segment(segmentation, result, volume)
    corrected = segment(segmentation, source, volume)
    corrected[k - 3] = liver[k - 3]
    slicer.util.updateSegmentBinaryLabelmapFromArray(corrected, segmentation, source, volume)
    states = history.GetNumberOfStates()

    outcome = run(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu"), history.SaveState,
                  cancel=True)
    assert "cancelled" in outcome.status and not outcome.error
    np.testing.assert_array_equal(segment(segmentation, result, volume), before)
    assert history.GetNumberOfStates() == states
    assert not jobs.busy and panel.client.starts == 1 and panel.client.alive

    # The next click finishes the correction on the same worker.
    assert not run(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu")).error
    after = segment(segmentation, result, volume)
    np.testing.assert_array_equal(after[k - 3], liver[k - 3])
    assert panel.client.starts == 1


def test_markups_on_the_slice_shown_become_the_workers_point_and_box_prompt(panel, liver_case, mrml_scene):  # noqa: F811
    volume, segmentation, liver, k, source, history = liver_case
    view = mrml_scene.AddNewNodeByClass("vtkMRMLSliceNode")
    view.SetLayoutName("Red")
    view.SetOrientation("Axial")
    view.JumpSliceByOffsetting(*selftest.ras_of_index(volume, (0, 0, k + 2)))
    i, j, _ = selftest.deepest_voxel(liver[k + 2][None])
    inside = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "inside")
    inside.AddControlPoint(*selftest.ras_of_index(volume, (i, j, k + 2)))
    inside.AddControlPoint(*selftest.ras_of_index(volume, (i, j, k + 5)))  # on another slice: not this prompt's
    outside = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "outside")
    outside.AddControlPoint(*selftest.ras_of_index(volume, (2, 3, k + 2)))
    roi = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    low, high = np.array(selftest.ras_of_index(volume, (i - 4, j - 4, k))), np.array(selftest.ras_of_index(volume, (i + 4, j + 4, k + 4)))
    roi.SetCenter(*((low + high) / 2))
    roi.SetSize(*np.abs(high - low))

    prepared = panel.prompt(volume, segmentation, [source], source, view, "cpu", "/weights/sam2.1_hiera_tiny.pt",
                            "sam2.1_hiera_t", points_node=inside, negative_node=outside, roi_node=roi)
    steps = {s.op if s.op != "annotate" or "object" not in (s.fields if isinstance(s.fields, dict) else {}) else "prompt": s
             for s in prepared.job.planned()}
    assert list(steps) == ["open", "annotate", "prompt", "save"]
    assert steps["open"].fields["backend"] == "sam2" and steps["open"].fields["axis"] == 2
    request = steps["prompt"].fields
    assert request["object"] == 1
    assert request["points"] == [[i, j, k + 2], [2, 3, k + 2]] and request["point_labels"] == [1, 0]
    assert request["box"] == [[i - 4, j - 4, k + 2], [i + 4, j + 4, k + 2]]
    assert panel.client.pid is None  # building a prompt starts nothing

    view.JumpSliceByOffsetting(*selftest.ras_of_index(volume, (0, 0, k - 6)))  # no point there and outside the box
    with pytest.raises(Exception, match="no prompt point or box lies on the slice shown"):
        panel.prompt(volume, segmentation, [source], source, view, "cpu", "/w.pt", "sam2.1_hiera_t",
                     points_node=inside, roi_node=roi)


@pytest.mark.slow
def test_a_point_prompt_is_answered_by_sam2_in_the_worker_and_painted_as_one_undo_step(liver_case, mrml_scene, tmp_path):  # noqa: F811
    """A random-weight SAM 2 at 64 px (sam_helpers) in a real worker: the answer becomes the segment's
    painting on the prompted slice only, as one undo step; the next Propagate uses it without a new open."""
    import torch
    from sam_helpers import SAM2_TEST_SIZE, random_sam2

    volume, segmentation, liver, k, source, history = liver_case
    weights = tmp_path / "random_sam2.pt"
    torch.save({"model": random_sam2().state_dict()}, weights)
    panel = interactive.InteractivePanel(work_parent=tmp_path, sam2_image_size=SAM2_TEST_SIZE,
                                         client=WorkerClient(sys.executable, env={"OMP_NUM_THREADS": "1"}))
    panel.converge_slices = 2  # the convergence stop's setting goes with the open
    try:
        view = mrml_scene.AddNewNodeByClass("vtkMRMLSliceNode")
        view.SetOrientation("Axial")
        view.JumpSliceByOffsetting(*selftest.ras_of_index(volume, (0, 0, k + 2)))
        i, j, _ = selftest.deepest_voxel(liver[k + 2][None])
        inside = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "inside")
        inside.AddControlPoint(*selftest.ras_of_index(volume, (i, j, k + 2)))
        before = segment(segmentation, source, volume)
        states = history.GetNumberOfStates()
        jobs = controller.RunController()
        prepared = panel.prompt(volume, segmentation, [source], source, view, "cpu", weights, "sam2.1_hiera_t",
                                points_node=inside)
        outcome = run(jobs, prepared, history.SaveState, timeout=300)
        assert not outcome.error, outcome
        assert [r["op"] for r in panel.client.sent] == ["open", "annotate", "annotate", "save"]
        assert panel.client.sent[0]["converge_slices"] == 2
        assert panel.client.sent[2]["points"] == [[i, j, k + 2]] and panel.client.sent[2]["object"] == 1
        answer = prepared.job.results["annotate"]
        assert answer["slice"] == k + 2 and f"painted with {answer['pixels']} pixels" in outcome.status
        after = segment(segmentation, source, volume)
        assert after[k + 2].sum() == answer["pixels"]
        others = [s for s in range(after.shape[0]) if s != k + 2]
        np.testing.assert_array_equal(after[others], before[others])  # only the prompted slice changed
        assert history.GetNumberOfStates() == states + 1
        assert panel.last_open["device"] == "cpu" and "s per slice on this CPU" in panel.describe()

        sent = len(panel.client.sent)
        outcome = run(jobs, panel.propagate(volume, segmentation, [source], "sam2", "cpu", sam2_checkpoint=weights,
                                            sam2_config="sam2.1_hiera_t"), history.SaveState, timeout=300)
        assert not outcome.error, outcome
        assert ops(panel.client, sent) == ["annotate", "propagate", "save"] and panel.client.starts == 1
        assert panel.last_propagate["converged"] == []  # a first propagation has no previous result to meet
    finally:
        panel.stop()


def test_stop_ends_the_worker_without_waiting_and_the_next_click_starts_a_new_one(panel, liver_case):
    volume, segmentation, liver, k, source, history = liver_case
    jobs = controller.RunController()
    assert not run(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu")).error
    process = panel.client._process
    started = time.monotonic()
    panel.stop()  # the scene closes
    assert time.monotonic() - started < 1.0 and panel.client.pid is None
    assert process.wait(timeout=10) == 0  # end of input: the worker exits by itself
    assert not list(panel.folder().iterdir())  # its files went with it (a fresh folder now)
    assert not run(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu")).error
    assert panel.client.starts == 2 and not panel.client.restart_message  # a stop is not a death: no message
    process = panel.client._process
    panel.stop(grace_seconds=0)  # Slicer quits
    assert process.wait(timeout=10) != 0


class SilentClient(WorkerClient):
    """A worker that reads requests and never answers (a model that is still loading)."""

    @property
    def command(self):
        return [self.python, "-c", "import sys, time\nfor line in sys.stdin:\n    time.sleep(60)\n"]


def test_a_worker_that_does_not_answer_cancel_is_ended_and_replaced_at_the_next_click():
    from SegSSLSlicerLib.worker import Step, WorkerJob

    now = [0.0]
    client = SilentClient(sys.executable)
    jobs = controller.RunController(clock=lambda: now[0])
    try:
        job = WorkerJob(client, [Step("open", {"input": "ct.nrrd"})], clock=lambda: now[0])
        assert jobs.start(job, "open", lambda j: "imported")
        first = client.pid
        jobs.cancel()
        assert jobs.poll() is None and client.alive  # the cancel op is sent; the worker gets its time
        now[0] += WorkerJob.KILL_AFTER_SECONDS + 1
        outcome = jobs.poll()
        assert outcome is not None and "cancelled" in outcome.status and not outcome.error
        assert [r["op"] for r in client.sent] == ["open", "cancel"] and client.sent[1]["target"] == client.sent[0]["id"]
        job = WorkerJob(client, [Step("status")], clock=lambda: now[0])
        assert jobs.start(job, "status", lambda j: "done")
        assert client.pid != first and "did not answer Cancel" in job.restarted
    finally:
        client.stop(grace_seconds=0)


def test_results_arrive_slice_by_slice_and_the_finished_propagation_is_one_undo_step(panel, liver_case):
    volume, segmentation, liver, k, source, history = liver_case
    panel.partial_seconds = 0  # every final slice as it comes
    jobs = controller.RunController()
    states = history.GetNumberOfStates()
    seen = []

    def look():  # what the user sees while the job runs
        result = panel.result_segments.get((segmentation.GetID(), source))
        if result is not None:
            seen.append(int(segment(segmentation, result, volume).any(axis=(1, 2)).sum()))

    prepared = panel.propagate(volume, segmentation, [source], "registration", "cpu")
    outcome = run(jobs, prepared, history.SaveState, while_running=look)
    assert not outcome.error, outcome
    assert prepared.partial.imported > 1 and seen and min(seen) >= 1  # shown before the end, in steps
    assert panel.client.sent[2]["op"] == "propagate" and panel.client.sent[2]["partial_seconds"] == 0
    result = panel.result_segments[(segmentation.GetID(), source)]
    final = segment(segmentation, result, volume)
    assert max(seen) <= final.any(axis=(1, 2)).sum()
    np.testing.assert_array_equal(final[k], liver[k])
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2  # partial and final: one result segment
    assert history.GetNumberOfStates() == states + 1  # one undo step for the whole propagation
    assert not any(p.name.startswith("partial") and any(p.iterdir()) for p in panel.folder().iterdir() if p.is_dir())

    # The same painting again with partial results off: the same result.
    panel.partial_seconds = None
    history.RestorePreviousState()  # Ctrl+Z: the result goes, the source stays
    assert segmentation.GetSegmentation().GetSegment(result) is None
    panel.client.session.clear()  # as after a restart: the worker is told everything again
    outcome = run(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu"), history.SaveState)
    assert not outcome.error, outcome
    again = panel.result_segments[(segmentation.GetID(), source)]
    np.testing.assert_array_equal(segment(segmentation, again, volume), final)


def test_a_cancel_after_partial_results_leaves_the_segmentation_as_it_was(panel, liver_case):
    volume, segmentation, liver, k, source, history = liver_case
    panel.partial_seconds = 0
    jobs = controller.RunController()
    painted = segment(segmentation, source, volume)

    # The first propagation, cancelled once a partial result is shown: the segment it added goes again.
    prepared = panel.propagate(volume, segmentation, [source], "registration", "cpu")
    outcome = run(jobs, prepared, history.SaveState, cancel_when=lambda: prepared.partial.imported > 0)
    assert "cancelled" in outcome.status and not outcome.error
    assert prepared.partial.imported == 0 and prepared.partial.added  # shown, then taken back
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1 and not panel.result_segments
    np.testing.assert_array_equal(segment(segmentation, source, volume), painted)

    # A finished result, then a correction cancelled after partial results: the result as it was.
    assert not run(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu"), history.SaveState).error
    result = panel.result_segments[(segmentation.GetID(), source)]
    before = segment(segmentation, result, volume)
    corrected = segment(segmentation, source, volume)
    corrected[k - 3] = liver[k - 3]
    slicer.util.updateSegmentBinaryLabelmapFromArray(corrected, segmentation, source, volume)
    prepared = panel.propagate(volume, segmentation, [source], "registration", "cpu")
    shown = []
    outcome = run(jobs, prepared, history.SaveState, cancel_when=lambda: prepared.partial.imported > 0,
                  while_running=lambda: shown.append(prepared.partial.imported))
    assert "cancelled" in outcome.status and max(shown) > 0
    np.testing.assert_array_equal(segment(segmentation, result, volume), before)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2
    assert panel.result_segments[(segmentation.GetID(), source)] == result

    # The worker is as before the cancelled click too: the next click finishes the correction.
    assert not run(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu"), history.SaveState).error
    np.testing.assert_array_equal(segment(segmentation, result, volume)[k - 3], liver[k - 3])


@pytest.mark.slow
def test_refine_runs_in_the_worker_reuses_its_embeddings_and_is_one_undo_step(panel, liver_case, tmp_path):
    """Refine with SAM through the worker's refine op (a tiny random SAM): the result equals the
    command's, the second click encodes nothing, each import is one undo step."""
    from SegSSLSlicerLib import runs
    from SegSSLLib.processes import run_to_end

    volume, segmentation, liver, k, source, history = liver_case
    coarse = np.zeros_like(liver)
    coarse[k - 2 : k + 3] = liver[k - 2 : k + 3]
    target = nodes.add_segments(coarse, segmentation, volume, names={1: "coarse liver"})[1]
    checkpoint = selftest.write_tiny_sam_checkpoint(tmp_path / "tiny_sam.pth")
    jobs = controller.RunController()

    def click():
        run_ = runs.prepare_refine(volume, "Selected segment", "CPU", sam_checkpoint=checkpoint,
                                   segmentation_node=segmentation, segment_id=target, axis=2, work_parent=tmp_path,
                                   volume_file=panel.volume_file(volume))
        return panel.refine(run_, segmentation, volume, "cpu")

    states, count = history.GetNumberOfStates(), segmentation.GetSegmentation().GetNumberOfSegments()
    prepared = click()
    outcome = run(jobs, prepared, history.SaveState, timeout=300)
    assert not outcome.error, outcome
    assert [r["op"] for r in panel.client.sent] == ["refine"] and "5 slices encoded, 0 reused" in outcome.status
    assert history.GetNumberOfStates() == states + 1 and segmentation.GetSegmentation().GetNumberOfSegments() == count + 1
    ids = [segmentation.GetSegmentation().GetNthSegmentID(n) for n in range(count + 1)]
    first = segment(segmentation, ids[-1], volume)
    assert set(np.flatnonzero(first.any(axis=(1, 2)))) <= set(range(k - 2, k + 3))

    outcome = run(jobs, click(), history.SaveState, timeout=300)
    assert not outcome.error and "0 slices encoded, 5 reused" in outcome.status, outcome
    assert panel.client.starts == 1 and history.GetNumberOfStates() == states + 2
    second = [segmentation.GetSegmentation().GetNthSegmentID(n) for n in range(count + 2)][-1]
    np.testing.assert_array_equal(segment(segmentation, second, volume), first)

    # The command-line route of the same refinement gives the same mask.
    cli = runs.prepare_refine(volume, "Selected segment", "CPU", sam_checkpoint=checkpoint, segmentation_node=segmentation,
                              segment_id=target, axis=2, work_parent=tmp_path)
    try:
        assert run_to_end(cli.process(sys.executable), timeout=300) == 0
        np.testing.assert_array_equal(runs.read_result(cli.result, volume) != 0, first != 0)
    finally:
        cli.cleanup()


def test_a_segment_set_within_a_box_equals_the_full_update_also_on_a_shared_layer(liver_case):
    from SegSSLSlicerLib.interactive import _box, _rows_box, _union

    volume, segmentation, liver, k, source, history = liver_case
    rng = np.random.default_rng(0)
    old = np.zeros_like(liver)
    old[k - 2 : k + 1, 10:20, 5:25] = 1
    other = nodes.add_segments(old, segmentation, volume, names={1: "result"})[1]
    assert segmentation.GetSegmentation().GetSegment(other) is not None
    for step in range(3):
        new = old.copy()
        slices = [k + step, k + step + 2]
        new[slices] = (rng.random((2, *liver.shape[1:])) > 0.7).astype(np.uint8)
        rows = new[slices]
        box = _union(_box(old), _rows_box(rows, slices, 0))
        nodes.set_segment_within_box(new, segmentation, other, volume, *box)
        np.testing.assert_array_equal(segment(segmentation, other, volume), new)
        old = new
    np.testing.assert_array_equal(segment(segmentation, source, volume)[k], liver[k])  # the other segment untouched
    empty = np.zeros_like(liver)
    nodes.set_segment_within_box(empty, segmentation, other, volume, *_box(old))
    assert not segment(segmentation, other, volume).any()
