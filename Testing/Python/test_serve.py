"""``segssl serve``: the JSON-lines worker driven through stdin/stdout as the Slicer panel and outside
checks drive it — one done or error per request, errors never end it, cancel interrupts, geometry kept."""

from __future__ import annotations

import io
import json
import os
import queue
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO_ROOT
from sam_helpers import assert_same_geometry, one_slice_annotation, write_like
from SegSSLLib.cli.serve_command import Worker
from SegSSLLib.propagation.session import OperationCancelled


def serve(*requests, args=(), timeout=300) -> tuple[list[dict], subprocess.CompletedProcess]:
    """Run ``python -m SegSSLLib serve`` with these requests on stdin (then end of input)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("OMP_NUM_THREADS", "2")
    lines = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in requests)
    result = subprocess.run([sys.executable, "-m", "SegSSLLib", "serve", *args], input=lines, capture_output=True,
                            text=True, timeout=timeout, env=env)
    events = [json.loads(line) for line in result.stdout.splitlines()]  # stdout: JSON lines only
    return events, result


def final(events: list[dict]) -> dict:
    """Request id -> its one done / error event (asserting there is exactly one)."""
    ends: dict = {}
    for event in events:
        assert "id" in event, event
        if event["event"] in ("done", "error"):
            assert event["id"] not in ends or event["id"] is None, f"two ends for {event['id']}"
            ends[event["id"]] = event
    return ends


@pytest.fixture
def case(tiny_phantom, tmp_path):
    image_path, labels_path = tiny_phantom
    image, truth = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(labels_path))
    first, correction = tmp_path / "first.nii.gz", tmp_path / "correction.nii.gz"
    write_like(one_slice_annotation(truth, 10, (1, 2)), image, first)
    write_like(one_slice_annotation(truth, 13, (1, 2)), image, correction)
    return SimpleNamespace(image=image_path, first=first, correction=correction, tmp=tmp_path)


def test_a_scripted_session_corrects_saves_and_undoes(case):
    out, after_undo = case.tmp / "out.nii.gz", case.tmp / "undone.nii.gz"
    events, result = serve(
        {"id": 1, "op": "open", "input": str(case.image), "backend": "registration"},
        {"id": 2, "op": "annotate", "annotation": str(case.first)},
        {"id": 3, "op": "propagate"},
        {"id": 4, "op": "save", "output": str(after_undo)},
        {"id": 5, "op": "annotate", "annotation": str(case.correction)},
        {"id": 6, "op": "propagate"},
        {"id": 7, "op": "save", "output": str(out)},
        {"id": 8, "op": "undo"},
        {"id": 9, "op": "status"},
        {"id": "last", "op": "close"},
        args=("--undo-mb", "64"),
    )
    assert result.returncode == 0, result.stderr
    ends = final(events)
    assert [ends[i]["event"] for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, "last")] == ["done"] * 10, ends
    assert any(e["event"] == "progress" and e["id"] == 3 for e in events)
    assert ends[2]["slices"] == [10] and ends[5]["slices"] == [13]
    assert set(ends[6]["changed_slices"]) <= set(range(11, 20))  # the correction's interval only
    assert ends[8]["undone"] is True and set(ends[8]["changed_slices"]) <= set(range(11, 20))
    assert ends[9]["drawn"] == {"1": [10], "2": [10]} and ends[9]["redo"] == 1
    # what undo / redo keep: the correction's drawings and results, now only in the redo step; the bound given
    memory = ends[9]["undo_memory"]
    assert memory["max_bytes"] == 64 * 2**20 and 0 < memory["bytes"] <= memory["max_bytes"], memory
    assert (memory["undo_steps"], memory["redo_steps"]) == (ends[9]["undo"], 1)
    # The convergence stop is on by default (3 slices); the registration backend never uses it.
    assert ends[9]["converge_slices"] == 3 and ends[6]["converged"] == []
    assert ends[9]["last_propagate"] == {"computed_slices": ends[6]["computed_slices"], "converged": []}
    written = sitk.ReadImage(str(out))
    assert_same_geometry(written, sitk.ReadImage(str(case.image)))
    labels = sitk.GetArrayFromImage(written)
    drawn = sitk.GetArrayFromImage(sitk.ReadImage(str(case.first))) + sitk.GetArrayFromImage(
        sitk.ReadImage(str(case.correction)))
    assert np.array_equal(labels[[10, 13]], drawn[[10, 13]])  # drawn slices exactly as drawn
    assert (labels != 0).any(axis=(1, 2)).sum() > 3


def test_bad_requests_get_one_line_errors_and_the_worker_goes_on(case):
    missing = case.tmp / "missing.nii.gz"
    other_grid = case.tmp / "other.nii.gz"
    sitk.WriteImage(sitk.Image(5, 5, 5, sitk.sitkUInt8), str(other_grid))
    out = case.tmp / "out.nii.gz"
    events, result = serve(
        "this is not json",
        '["a", "list"]',
        {"op": "status"},
        {"id": 1, "op": "fly"},
        {"id": 2, "op": "propagate"},  # nothing open
        {"id": 3, "op": "open"},  # no input
        {"id": 4, "op": "open", "input": str(missing), "backend": "registration"},
        {"id": 5, "op": "open", "input": str(case.image), "backend": "telepathy"},
        {"id": 6, "op": "open", "input": str(case.image), "backend": "registration"},
        {"id": 7, "op": "propagate"},  # nothing drawn
        {"id": 8, "op": "annotate", "annotation": str(other_grid)},
        {"id": 9, "op": "annotate", "points": [[3, 4, 5]]},  # registration: no prompts
        {"id": 10, "op": "annotate", "annotation": str(case.first)},
        {"id": 11, "op": "propagate", "slice_range": [15, 3]},
        {"id": 12, "op": "propagate", "slice_range": "all"},
        {"id": 13, "op": "save", "output": str(case.tmp / "out.txt")},
        {"id": 14, "op": "save", "output": str(case.image)},  # the input itself
        {"id": 15, "op": "redo"},
        {"id": 16, "op": "propagate", "slice_range": [8, 12]},
        {"id": 17, "op": "save", "output": str(out)},
        {"id": 18, "op": "open", "input": str(case.image), "backend": "registration", "converge_slices": -1},
        {"id": 19, "op": "propagate", "converge_slices": -2},
    )
    assert result.returncode == 0, result.stderr
    ends = final(events)
    errors = [e for e in events if e["event"] == "error"]
    assert all("\n" not in e["message"] and "Traceback" not in e["message"] for e in errors)
    assert sum(e["id"] is None for e in errors) == 3  # not JSON, not an object, no id
    for request_id, fragment in ((1, "unknown op"), (2, "no volume is open"), (3, "missing \"input\""),
                                 (4, "not found"), (5, "telepathy"), (7, "nothing is drawn"), (8, "different grid"),
                                 (9, "sam2 backend"), (11, "slice range"), (12, "slice_range must be"),
                                 (13, "extension"), (14, "also an input"), (18, "converge_slices"),
                                 (19, "`converge_slices`")):
        assert ends[request_id]["event"] == "error", (request_id, ends[request_id])
        assert fragment.lower() in ends[request_id]["message"].lower(), (request_id, ends[request_id]["message"])
    for request_id in (6, 10, 15, 16, 17):
        assert ends[request_id]["event"] == "done", ends[request_id]
    assert ends[15]["redone"] is False
    assert not (case.tmp / "out.txt").exists()
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert not labels[:8].any() and not labels[13:].any() and labels[10].any()
    assert "Traceback" not in result.stderr


class Lines:
    """stdin for an in-process worker: lines put by the test, end of input on ``close``."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()

    def put(self, request: dict) -> None:
        self.queue.put(json.dumps(request) + "\n")

    def close(self) -> None:
        self.queue.put(None)

    def __iter__(self):
        while (line := self.queue.get()) is not None:
            yield line


class Events(io.StringIO):
    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


class SlowSession:
    """Stands in for a session: ``propagate`` runs until it is cancelled; ``status`` works."""

    def __init__(self):
        self.started = threading.Event()
        self.backend = SimpleNamespace(name="stub")
        self.axis = 2
        self.settings = SimpleNamespace(converge_slices=0)
        self.last_report = None

    def propagate(self, slice_range=None, cancel=None, progress=None):
        self.started.set()
        if cancel.wait(timeout=30):
            raise OperationCancelled("cancelled")
        raise AssertionError("never cancelled")

    def undo(self):
        raise RuntimeError("a bug in the worker")

    def drawn(self):
        return {}

    def undo_memory(self):
        return {"bytes": 0, "max_bytes": 0, "undo_steps": 0, "redo_steps": 0}

    can_undo = can_redo = 0

    def close(self):
        pass


def _in_process_worker():
    out = Events()
    worker = Worker(None, SimpleNamespace(absent_slices=3, feature_cache_mb=64, cache_on_cpu=False, offload_state=False), out)
    worker.session = SlowSession()
    stdin = Lines()
    thread = threading.Thread(target=worker.serve, args=(stdin,))
    thread.start()
    return worker, stdin, out, thread


def test_cancel_interrupts_a_running_propagate_and_the_worker_outlives_its_own_errors():
    worker, stdin, out, thread = _in_process_worker()
    stdin.put({"id": 1, "op": "propagate"})
    assert worker.session.started.wait(timeout=30)
    stdin.put({"id": 2, "op": "cancel"})
    stdin.put({"id": 3, "op": "undo"})  # raises an unexpected error inside the worker
    stdin.put({"id": 4, "op": "status"})
    stdin.close()
    thread.join(timeout=30)
    assert not thread.is_alive()
    ends = final(out.events())
    assert ends[2] == {"id": 2, "event": "done", "cancelled": 1}
    assert ends[1]["event"] == "error" and ends[1]["cancelled"] is True and "as it was" in ends[1]["message"]
    assert ends[3]["event"] == "error" and "internal error: RuntimeError: a bug in the worker" in ends[3]["message"]
    assert ends[4]["event"] == "done" and ends[4]["backend"] == "stub"


def test_a_queued_request_can_be_cancelled_before_it_starts():
    worker, stdin, out, thread = _in_process_worker()
    stdin.put({"id": 1, "op": "propagate"})
    assert worker.session.started.wait(timeout=30)
    stdin.put({"id": 2, "op": "status"})
    stdin.put({"id": 3, "op": "cancel", "target": 2})
    time.sleep(0.2)  # the reader thread sees both before the propagate ends
    stdin.put({"id": 4, "op": "cancel", "target": 1})
    stdin.close()
    thread.join(timeout=30)
    ends = final(out.events())
    assert ends[3]["cancelled"] == 2 and ends[4]["cancelled"] == 1
    assert ends[1]["event"] == "error" and ends[2]["event"] == "error" and ends[2]["cancelled"] is True


@pytest.mark.slow
def test_the_worker_answers_a_point_prompt_with_sam2(tiny_phantom, tmp_path):
    """In process, with the random-weight 64 px SAM 2 the other tests use (as if loaded by open)."""
    from sam_helpers import random_sam2

    image_path, labels_path = tiny_phantom
    out = Events()
    worker = Worker("cpu", SimpleNamespace(absent_slices=3, feature_cache_mb=64, cache_on_cpu=True, offload_state=True),
                    out)
    worker.predictors[("random", None, None)] = random_sam2()
    stdin = Lines()
    for request in (
        {"id": 1, "op": "open", "input": str(image_path), "backend": "sam2", "sam2_checkpoint": "random"},
        {"id": 2, "op": "annotate", "object": 1, "points": [[20, 18, 10]], "box": [[12, 10, 10], [28, 26, 10]]},
        {"id": 3, "op": "propagate", "slice_range": [8, 12]},
        {"id": 4, "op": "undo"},
        {"id": 5, "op": "close"},
    ):
        stdin.put(request)
    stdin.close()
    assert worker.serve(stdin) == 0
    ends = final(out.events())
    assert [ends[i]["event"] for i in range(1, 6)] == ["done"] * 5, ends
    assert ends[1]["image_size"] == 64 and ends[1]["encode_seconds"] > 0
    assert ends[2]["slice"] == 10 and ends[2]["object"] == 1
    assert ends[3]["computed_slices"] <= 4 and ends[3]["feature_cache"]["frames"] <= 6
    assert ends[4]["undone"] is True


def test_a_registration_worker_runs_without_torch_monai_or_sam2(case):
    """The panel's registration tier installs no torch: its worker must start and work without it."""
    from test_api import BLOCKER, HEAVY

    out = case.tmp / "out.nrrd"
    requests = [
        {"id": 1, "op": "open", "input": str(case.image), "backend": "registration"},
        {"id": 2, "op": "annotate", "annotation": str(case.first)},
        {"id": 3, "op": "propagate"},
        {"id": 4, "op": "save", "output": str(out)},
        {"id": 5, "op": "open", "input": str(case.image), "backend": "sam2", "sam2_checkpoint": "sam2.1_hiera_t"},
    ]
    code = BLOCKER + (
        "import runpy\n"
        "sys.argv = ['segssl', 'serve', '--device', 'cpu']\n"
        "try:\n"
        "    runpy.run_module('SegSSLLib', run_name='__main__')\n"
        "finally:\n"
        f"    print(__import__('json').dumps({{'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.stderr)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], input="".join(json.dumps(r) + "\n" for r in requests),
                            capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    ends = final([json.loads(line) for line in result.stdout.splitlines()])
    assert [ends[i]["event"] for i in (1, 2, 3, 4)] == ["done"] * 4, ends
    assert ends[5]["event"] == "error" and "needs PyTorch and sam2" in ends[5]["message"], ends[5]  # SAM 2 asked for: an error, no death
    assert json.loads(result.stderr.strip().splitlines()[-1]) == {"loaded": []}
    assert sitk.ReadImage(str(out)).GetSize() == sitk.ReadImage(str(case.image)).GetSize()


def test_partial_events_carry_slabs_that_rebuild_the_final_result_on_the_volumes_grid(case):
    out = case.tmp / "out.nrrd"
    partials = case.tmp / "partials"
    partials.mkdir()
    events, result = serve(
        {"id": 1, "op": "open", "input": str(case.image), "backend": "registration"},
        {"id": 2, "op": "annotate", "annotation": str(case.first)},
        {"id": 3, "op": "propagate", "partial_dir": str(partials), "partial_seconds": 0},
        {"id": 4, "op": "save", "output": str(out)},
        {"id": 5, "op": "propagate", "partial_dir": str(case.tmp / "nowhere")},
        {"id": 6, "op": "propagate", "partial_dir": str(partials), "partial_seconds": -1},
    )
    assert result.returncode == 0, result.stderr
    ends = final(events)
    assert ends[3]["event"] == "done" and ends[4]["event"] == "done"
    assert "not a folder" in ends[5]["message"] and "partial_seconds" in ends[6]["message"]
    image = sitk.ReadImage(str(case.image))
    shown = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint16)
    shown[10] = sitk.GetArrayFromImage(sitk.ReadImage(str(case.first)))[10]  # the drawing, before the propagate
    order = [e for e in events if e["id"] == 3 and e["event"] in ("partial", "done")]
    partial = [e for e in order if e["event"] == "partial"]
    assert len(partial) > 1 and order[-1]["event"] == "done" and ends[3]["partials"] == len(partial)
    assert [e["sequence"] for e in partial] == list(range(1, len(partial) + 1))
    seen = set()
    for event in partial:  # what a client does: place each slab where it belongs
        slab = sitk.ReadImage(event["output"])
        assert event["axis"] == 2 and event["first"] == min(event["slices"]) and event["last"] == max(event["slices"])
        assert not seen & set(event["slices"])
        seen |= set(event["slices"])
        assert_same_geometry(slab, image[:, :, event["first"]:event["last"] + 1])
        shown[event["first"]:event["last"] + 1] = sitk.GetArrayFromImage(slab)
    assert np.array_equal(shown, sitk.GetArrayFromImage(sitk.ReadImage(str(out))))  # the final result
    assert seen == set(ends[3]["changed_slices"]) - {10}
