"""``segssl serve``'s ``refine``: SAM box refinement in the worker with a small random-weight SAM — the model
loaded once, each slice encoded once, the same result as ``segssl refine``, geometry kept, cancel, bad requests."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_segssl
from sam_helpers import assert_same_geometry, save_tiny_sam, write_like
from SegSSLLib.cli.serve_command import Worker
from SegSSLLib.errors import OperationCancelled
from test_serve import Events, Lines, final

OPTIONS = SimpleNamespace(absent_slices=3, feature_cache_mb=64, cache_on_cpu=False, offload_state=False,
                          refine_cache_mb=64)


@pytest.fixture
def refine_case(tiny_phantom, tmp_path):
    image_path, labels_path = tiny_phantom
    image, truth = sitk.ReadImage(str(image_path)), sitk.GetArrayFromImage(sitk.ReadImage(str(labels_path)))
    coarse = np.zeros_like(truth)
    coarse[8:12] = np.where(np.isin(truth[8:12], (1, 2)), truth[8:12], 0)
    wider = np.zeros_like(truth)
    wider[8:14] = np.where(truth[8:14] == 1, 1, 0)
    mask, wider_mask = tmp_path / "coarse.nii.gz", tmp_path / "wider.nii.gz"
    write_like(coarse, image, mask)
    write_like(wider, image, wider_mask)
    sam = tmp_path / "tiny_sam.pth"
    save_tiny_sam(sam)
    return SimpleNamespace(image=image_path, mask=mask, wider=wider_mask, sam=sam, tmp=tmp_path)


class CountingEncoder:
    """Counts the images SAM's image encoder really encodes."""

    def __init__(self, model):
        self.count = 0
        self.handle = model.image_encoder.register_forward_hook(lambda module, args, out: self._add(args[0]))

    def _add(self, images):
        self.count += images.shape[0]


@pytest.mark.slow
def test_refine_in_the_worker_keeps_the_model_and_embeddings_and_equals_segssl_refine(refine_case):
    c = refine_case
    out = Events()
    worker = Worker("cpu", OPTIONS, out)
    request = {"op": "refine", "input": str(c.image), "mask": str(c.mask), "sam_checkpoint": str(c.sam)}
    assert worker.handle({"id": 1, **request, "output": str(c.tmp / "first.nrrd")})
    (predictor,) = worker.sam_predictors.values()
    encoder = CountingEncoder(predictor.model)
    assert worker.handle({"id": 2, **request, "output": str(c.tmp / "second.nrrd")})
    assert encoder.count == 0  # the same slices again: nothing encoded
    assert worker.handle({"id": 3, **request, "mask": str(c.wider), "output": str(c.tmp / "third.nrrd")})
    assert encoder.count == 2  # a wider mask: only its new slices 12 and 13
    ends = final(out.events())
    assert [ends[i]["event"] for i in (1, 2, 3)] == ["done"] * 3, ends
    assert ends[1]["encoded"] == 4 and ends[1]["reused"] == 0  # slices 8..11
    assert ends[2]["encoded"] == 0 and ends[2]["reused"] == 4
    assert ends[3]["encoded"] == 2 and ends[3]["reused"] == 4
    assert list(worker.sam_predictors.values()) == [predictor]  # one model, loaded once

    image = sitk.ReadImage(str(c.image))
    first, second = (sitk.ReadImage(str(c.tmp / name)) for name in ("first.nrrd", "second.nrrd"))
    assert_same_geometry(first, image)
    assert np.array_equal(sitk.GetArrayFromImage(first), sitk.GetArrayFromImage(second))

    cli = run_segssl("refine", "--input", c.image, "--mask", c.mask, "--output", c.tmp / "cli.nrrd",
                     "--sam-checkpoint", c.sam, "--device", "cpu")
    assert cli.returncode == 0, cli.stderr
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(c.tmp / "cli.nrrd")))
    assert np.array_equal(sitk.GetArrayFromImage(first), expected)  # the worker's result is segssl refine's
    third = sitk.GetArrayFromImage(sitk.ReadImage(str(c.tmp / "third.nrrd")))
    assert set(np.flatnonzero(third.any(axis=(1, 2)))) == set(range(8, 14)) and set(np.unique(third)) == {0, 1}


def test_bad_refine_requests_get_one_line_errors_and_the_worker_goes_on(refine_case):
    c = refine_case
    other_grid = c.tmp / "other.nii.gz"
    sitk.WriteImage(sitk.Image(5, 5, 5, sitk.sitkUInt8), str(other_grid))
    empty = c.tmp / "empty.nii.gz"
    write_like(np.zeros(sitk.GetArrayFromImage(sitk.ReadImage(str(c.image))).shape, np.uint8),
               sitk.ReadImage(str(c.image)), empty)
    not_sam = c.tmp / "not_sam.pth"
    not_sam.write_bytes(b"not a checkpoint")
    good = {"op": "refine", "input": str(c.image), "mask": str(c.mask), "sam_checkpoint": str(c.sam)}
    out = Events()
    worker = Worker("cpu", OPTIONS, out)
    requests = [
        {"id": 1, "op": "refine", "mask": str(c.mask), "output": str(c.tmp / "a.nrrd")},  # nothing open, no input
        {"id": 2, **good},  # no output
        {"id": 3, **good, "mask": str(other_grid), "output": str(c.tmp / "b.nrrd")},
        {"id": 4, **good, "mask": str(empty), "output": str(c.tmp / "c.nrrd")},
        {"id": 5, **good, "output": str(c.image)},  # the input itself
        {"id": 6, **good, "margin": -2, "output": str(c.tmp / "d.nrrd")},
        {"id": 7, **good, "sam_checkpoint": str(not_sam), "output": str(c.tmp / "e.nrrd")},
        {"id": 8, **good, "axis": 7, "output": str(c.tmp / "f.nrrd")},
        {"id": 9, **good, "output": str(c.tmp / "g.nrrd")},
    ]
    for request in requests:
        assert worker.handle(request)
    ends = final(out.events())
    for request_id, fragment in ((1, "missing \"input\""), (2, "missing \"output\""), (3, "different grid"),
                                 (4, "empty"), (5, "also an input"), (6, "margin"), (7, "not a PyTorch checkpoint"),
                                 (8, "axis")):
        assert ends[request_id]["event"] == "error", ends[request_id]
        message = ends[request_id]["message"]
        assert fragment.lower() in message.lower() and "\n" not in message and "internal error" not in message, message
    assert ends[9]["event"] == "done", ends[9]
    assert {p.name for p in c.tmp.iterdir() if p.suffix == ".nrrd"} == {"g.nrrd"}  # nothing written by a bad one


def test_a_running_refine_is_cancelled_and_writes_nothing(refine_case):
    c = refine_case
    out = Events()
    worker = Worker("cpu", OPTIONS, out)
    request = {"op": "refine", "input": str(c.image), "mask": str(c.mask), "sam_checkpoint": str(c.sam)}
    assert worker.handle({"id": 1, **request, "output": str(c.tmp / "warm.nrrd")})
    (predictor,) = worker.sam_predictors.values()
    started = threading.Event()
    inner = predictor.predictor
    original = inner.predict_torch

    def slow(*args, **kwargs):  # each slice takes a while, as with a real model on a CPU
        started.set()
        time.sleep(0.3)
        return original(*args, **kwargs)

    inner.predict_torch = slow
    stdin = Lines()
    thread = threading.Thread(target=worker.serve, args=(stdin,))
    thread.start()
    stdin.put({"id": 2, **request, "output": str(c.tmp / "cancelled.nrrd")})
    assert started.wait(timeout=60)
    stdin.put({"id": 3, "op": "cancel", "target": 2})
    stdin.put({"id": 4, "op": "status"})
    stdin.close()
    thread.join(timeout=60)
    ends = final(out.events())
    assert ends[2]["event"] == "error" and ends[2]["cancelled"] is True, ends[2]
    assert ends[3]["cancelled"] == 2 and ends[4]["event"] == "done"
    assert not (c.tmp / "cancelled.nrrd").exists()
    with pytest.raises(OperationCancelled):  # the library call behind it
        from SegSSLLib.refinement.sam_refine import RefineSettings, refine

        cancel = threading.Event()
        cancel.set()
        refine(sitk.ReadImage(str(c.image)), sitk.ReadImage(str(c.mask)), RefineSettings(), predictor=inner, cancel=cancel)


def test_a_repeated_refine_does_not_window_the_volume_again_and_a_changed_file_is_never_served_stale(
        refine_case, monkeypatch):
    from SegSSLLib.frames import WindowedSlices, windowed_array
    from SegSSLLib.intensity import IntensityWindow

    c = refine_case
    resolved = []
    original = IntensityWindow.resolve
    monkeypatch.setattr(IntensityWindow, "resolve", lambda self, array: resolved.append(array.shape) or original(self, array))
    out = Events()
    worker = Worker("cpu", OPTIONS, out)
    request = {"op": "refine", "input": str(c.image), "mask": str(c.mask), "sam_checkpoint": str(c.sam)}
    assert worker.handle({"id": 1, **request, "output": str(c.tmp / "first.nrrd")})
    kept = worker._refine_windowed
    assert worker.handle({"id": 2, **request, "output": str(c.tmp / "second.nrrd")})
    assert worker._refine_windowed is kept and len(resolved) == 1  # the whole volume was looked at once
    image = sitk.ReadImage(str(c.image))
    whole = windowed_array(image)
    assert all(kept.slice(2, k).tobytes() == whole[k].tobytes() for k in (0, 8, 11))  # as the whole-volume path
    # The file changes (a brighter scan, same grid): windowed from the new file, with its own window.
    changed = sitk.Cast(sitk.ShiftScale(image, 600.0, 1.0), sitk.sitkInt16)
    sitk.WriteImage(changed, str(c.image))
    before = len(resolved)
    assert worker.handle({"id": 3, **request, "output": str(c.tmp / "third.nrrd")})
    assert worker._refine_windowed is not kept and len(resolved) == before + 1
    fresh = Worker("cpu", OPTIONS, Events())
    assert fresh.handle({"id": 4, **request, "output": str(c.tmp / "fresh.nrrd")})
    ends = final(out.events())
    assert [ends[i]["event"] for i in (1, 2, 3)] == ["done"] * 3, ends
    third, expected = (sitk.GetArrayFromImage(sitk.ReadImage(str(c.tmp / n))) for n in ("third.nrrd", "fresh.nrrd"))
    assert np.array_equal(third, expected)
    assert not WindowedSlices(changed).matches(image)  # another image object is never served this one's slices
