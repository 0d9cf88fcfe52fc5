"""The interactive session: cached features, corrections that change only their interval, undo/redo,
drawn slices, cancel, early stop and slice range — with random-weight SAM 2 (64 px), a stub predictor
that records the slices it visits, and the registration backend."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sam_helpers import one_slice_annotation, random_sam2
from SegSSLLib.errors import SegSSLError
from SegSSLLib.phantoms import make_ct_phantom, oblique_direction
from SegSSLLib.progress import Progress
from SegSSLLib.propagation.feature_cache import FeatureCache, use_feature_cache
from SegSSLLib.propagation.session import (
    InteractiveSession, OperationCancelled, RegistrationBackend, Sam2Backend, SessionSettings,
)

SLICES = 20  # axial slices of the phantom; liver (1) on 6..18, spleen (2) on 10..15, vertebra (5) on all


@pytest.fixture(scope="module")
def phantom():
    image, truth = make_ct_phantom(seed=3, size=(40, 36, SLICES), spacing=(7.0, 8.0, 12.5), direction=oblique_direction())
    return image, truth


@pytest.fixture(scope="module")
def predictor():
    return random_sam2()


def _backend(name, predictor):
    if name == "sam2-stub":  # the session's SAM 2 path without the model's time
        return Sam2Backend(PresenceStub(present=range(4, 17)))
    return Sam2Backend(predictor) if name == "sam2" else RegistrationBackend()


def _drawing(truth, *slices, values=(1, 2)):
    return sum(one_slice_annotation(truth, k, values) for k in slices)


def _differing(a: np.ndarray, b: np.ndarray) -> list[int]:
    return [int(k) for k in np.flatnonzero((a != b).any(axis=(1, 2)))]


class CountingEncoder:
    """Counts the frames the image encoder really encodes (an instance attribute over sam2's method)."""

    def __init__(self, predictor):
        self.predictor, self.count = predictor, 0
        self.original = predictor.forward_image

    def __enter__(self):
        def forward_image(images):
            self.count += images.shape[0]
            return self.original(images)

        self.predictor.forward_image = forward_image
        return self

    def __exit__(self, *exc):
        del self.predictor.forward_image


@pytest.mark.slow
def test_cached_features_give_the_same_masks_as_recomputed_and_a_correction_encodes_nothing(phantom, predictor):
    image, truth = phantom
    cached = InteractiveSession(image, Sam2Backend(predictor))
    with CountingEncoder(predictor) as encoder:
        cached.annotate(_drawing(truth, 10))
        cached.propagate()
        assert encoder.count == SLICES  # every slice once (the drawn one for its memory)
        cached.annotate(_drawing(truth, 13))
        cached.propagate()
        assert encoder.count == SLICES  # the correction took every slice's features from the cache
    uncached = InteractiveSession(image, Sam2Backend(predictor), settings=SessionSettings(feature_cache_bytes=0))
    uncached.annotate(_drawing(truth, 10, 13))
    uncached.propagate()
    assert np.array_equal(cached.labels, uncached.labels)
    assert cached.labels.any()
    stats = cached.backend.cache.stats()
    assert stats["frames"] == SLICES and stats["hits"] > 0 and stats["evictions"] == 0
    assert uncached.backend.cache.stats()["frames"] == 0


def test_feature_cache_keeps_its_byte_bound_and_evicts_least_recently_used(phantom, predictor):
    from SegSSLLib.frames import Sam2Frames, frame_stack
    from SegSSLLib.propagation.sam2 import in_memory_state

    image, _ = phantom
    _, frames = frame_stack(image, 2, predictor.image_size)
    state = in_memory_state(predictor, Sam2Frames(frames))
    probe = FeatureCache()
    with torch.inference_mode(), use_feature_cache(predictor, probe):
        reference = predictor._get_image_feature(state, 0, 1)
    per_frame = probe.bytes
    cache = FeatureCache(max_bytes=3 * per_frame, storage_device="cpu")
    with torch.inference_mode(), use_feature_cache(predictor, cache):
        for k in (0, 1, 2, 0, 3):  # 0 is used again before 3 arrives: 1 is the least recently used
            features = predictor._get_image_feature(state, k, 1)
            assert cache.bytes <= cache.max_bytes
        assert cache.frames() == [2, 0, 3]
        again = predictor._get_image_feature(state, 0, 1)  # from the cache
    assert cache.evictions == 1 and cache.peak_bytes <= 3 * per_frame
    assert all(torch.equal(a, b) for a, b in zip(again[2], reference[2]))  # identical vision features
    assert "_get_image_feature" not in predictor.__dict__  # the hook is gone after the block
    del features


@pytest.mark.parametrize("backend", ["registration", "sam2"])
def test_a_correction_changes_only_its_interval_and_equals_a_fresh_session(phantom, predictor, backend):
    image, truth = phantom
    session = InteractiveSession(image, _backend(backend, predictor))
    session.annotate(_drawing(truth, 8, 16, values=(1, 5)))
    session.propagate()
    before = session.labels
    session.annotate(_drawing(truth, 12, values=(1, 5)))  # a new drawing of both objects between 8 and 16
    report = session.propagate()
    after = session.labels
    # Documented: only slices strictly between the neighbouring drawings (8 and 16) can change.
    assert set(_differing(before, after)) <= set(range(9, 16))
    assert set(report.visited) <= set(range(9, 16)) - {12}
    # what propagate changed, besides slice 12 that showed its drawing at once
    assert set(_differing(before, after)) - {12} <= set(report.changed_slices) <= set(range(9, 16))
    fresh = InteractiveSession(image, _backend(backend, predictor))
    fresh.annotate(_drawing(truth, 8, 12, 16, values=(1, 5)))
    fresh.propagate()
    assert np.array_equal(fresh.labels, after)  # the result depends on the drawings, not on their history

    # A correction beyond the last drawing changes only slices above the drawing below it (16).
    session.annotate(_drawing(truth, 18, values=(1, 5)))
    report = session.propagate()
    assert set(_differing(after, session.labels)) <= set(range(17, SLICES))
    assert set(report.visited) <= set(range(17, SLICES)) - {18}


@pytest.mark.parametrize("backend", ["registration", "sam2-stub"])
def test_undo_and_redo_restore_the_labels_exactly(phantom, predictor, backend):
    image, truth = phantom
    session = InteractiveSession(image, _backend(backend, predictor))
    history = [session.labels]
    for slices in ((10,), (13,), (7,)):
        session.annotate(_drawing(truth, *slices))
        session.propagate()
        history.append(session.labels)
    for expected in reversed(history[:-1]):
        assert session.undo() is not None
        assert np.array_equal(session.labels, expected)
    assert session.undo() is None  # nothing left
    for expected in history[1:]:
        assert session.redo() is not None
        assert np.array_equal(session.labels, expected)
    assert session.redo() is None
    session.undo()
    session.annotate(_drawing(truth, 15))  # a new step drops what could be redone
    assert session.can_redo == 0


@pytest.mark.parametrize("backend", ["registration", "sam2-stub"])
def test_undo_history_keeps_its_byte_bound_by_dropping_the_oldest_steps(phantom, predictor, backend):
    image, truth = phantom
    steps = ((10,), (13,), (7,), (16,), (12,))  # each a correction that replaces runs: the history keeps the old ones

    def session_with(undo_bytes):
        session = InteractiveSession(image, _backend(backend, predictor), settings=SessionSettings(undo_bytes=undo_bytes))
        history, kept = [session.labels], []
        for slices in steps:
            session.annotate(_drawing(truth, *slices))
            session.propagate()
            history.append(session.labels)
            kept.append(session.undo_memory())
        return session, history, kept

    unbounded, history, kept = session_with(2**40)
    assert unbounded.can_undo == len(steps) and kept[-1]["bytes"] > kept[1]["bytes"] > 0
    for bound in (1, kept[-1]["bytes"] - 1):  # smaller than any step; just under what all steps keep
        session, bounded_history, bounded_kept = session_with(bound)
        assert all(np.array_equal(a, b) for a, b in zip(history, bounded_history))
        assert all(m["max_bytes"] == bound and (m["bytes"] <= bound or m["undo_steps"] == 1) for m in bounded_kept)
        steps_kept = session.can_undo
        assert steps_kept < len(steps) and (steps_kept == 1 if bound == 1 else steps_kept > 1)
        for expected in reversed(history[-1 - steps_kept : -1]):  # the newest steps, each exact
            assert session.undo() is not None
            assert np.array_equal(session.labels, expected)
        labels, drawn = session.labels, session.drawn()
        assert session.undo() is None  # the oldest steps are gone: nothing to undo, nothing changed
        assert np.array_equal(session.labels, labels) and session.drawn() == drawn
        for expected in history[-steps_kept:]:
            assert session.redo() is not None
            assert np.array_equal(session.labels, expected)
        assert session.redo() is None
        session.propagate()  # the state after redo is a working state: nothing left to compute
        assert session.last_report.runs == 0 and np.array_equal(session.labels, history[-1])


@pytest.mark.parametrize("backend", ["registration", "sam2-stub"])
def test_drawn_slices_come_back_exactly_as_drawn(phantom, predictor, backend):
    image, truth = phantom
    session = InteractiveSession(image, _backend(backend, predictor))
    drawn = _drawing(truth, 9, 14, values=(1, 2, 5))
    session.annotate(drawn)
    session.propagate()
    labels = session.labels
    for k in (9, 14):  # each object drawn there is exactly its drawing (the spleen is not drawn on 9)
        for value in np.unique(drawn[k])[1:]:
            assert np.array_equal(labels[k] == value, drawn[k] == value), (k, value)
    assert np.array_equal(labels[14], drawn[14])  # every object is drawn on 14
    # Drawing slice 14 again without the spleen replaces that slice's prompts: the spleen is not drawn there.
    again = _drawing(truth, 14, values=(1, 5))
    session.annotate(again)
    session.propagate()
    assert session.drawn() == {1: [9, 14], 5: [9, 14]}  # the spleen (on 10..15) was drawn on 14 only
    assert not (session.labels == 2).any()  # so it has no source left
    assert np.array_equal(session.labels[14][again[14] != 0], again[14][again[14] != 0])


class CancelAfter(Progress):
    """Sets ``event`` once ``steps`` slices have been done."""

    def __init__(self, event: threading.Event, steps: int):
        super().__init__("none")
        self.event, self.steps = event, steps

    def advance(self, steps: int = 1, **info) -> None:
        self.steps -= steps
        if self.steps <= 0:
            self.event.set()


@pytest.mark.parametrize("backend", ["registration", "sam2-stub"])
def test_cancel_leaves_the_session_as_it_was(phantom, predictor, backend):
    image, truth = phantom
    session = InteractiveSession(image, _backend(backend, predictor))
    session.annotate(_drawing(truth, 10))
    session.propagate()
    session.annotate(_drawing(truth, 14))
    labels, drawn, undo = session.labels, session.drawn(), session.can_undo
    cancel = threading.Event()
    with pytest.raises(OperationCancelled):
        session.propagate(cancel=cancel, progress=CancelAfter(cancel, 2))
    assert np.array_equal(session.labels, labels)
    assert session.drawn() == drawn and session.can_undo == undo
    session.propagate()  # and the session goes on as if nothing happened
    fresh = InteractiveSession(image, _backend(backend, predictor))
    fresh.annotate(_drawing(truth, 10, 14))
    fresh.propagate()
    assert np.array_equal(session.labels, fresh.labels)


class PresenceStub:
    """A stand-in for sam2's video predictor: the object is present (logit +10 on a square) on
    ``present`` slices and absent elsewhere; it records every slice it computes."""

    def __init__(self, present: range, image_size: int = 64):
        self.image_size, self.device = image_size, torch.device("cpu")
        self.present, self.visited = present, []

    def _get_image_feature(self, state, frame_idx, batch_size):  # pragma: no cover - never called
        raise AssertionError("the stub has no image encoder")

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        if obj_id not in state["obj_ids"]:
            state["obj_ids"].append(obj_id)
            state["output_dict_per_obj"][len(state["obj_ids"]) - 1] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        index = state["obj_ids"].index(obj_id)
        state["output_dict_per_obj"][index]["cond_frame_outputs"][frame_idx] = {}

    def propagate_in_video(self, state, start_frame_idx, max_frame_num_to_track, reverse=False):
        # sam2's processing order for these arguments
        if reverse:
            order = range(start_frame_idx, max(start_frame_idx - max_frame_num_to_track, 0) - 1, -1)
        else:
            order = range(start_frame_idx, min(start_frame_idx + max_frame_num_to_track, state["num_frames"] - 1) + 1)
        size = self.image_size // 4
        for frame in order:
            for index in range(len(state["obj_ids"])):
                outputs = state["output_dict_per_obj"][index]
                if frame in outputs["cond_frame_outputs"]:
                    continue
                logits = torch.full((1, 1, size, size), -10.0)
                if frame in self.present:
                    logits[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 10.0
                outputs["non_cond_frame_outputs"][frame] = {"pred_masks": logits}
                self.visited.append(frame)
            yield frame, list(state["obj_ids"]), None


def test_early_stop_and_slice_range_visit_only_their_slices(phantom):
    image, truth = phantom
    drawn = _drawing(truth, 10, values=(5,))
    stub = PresenceStub(present=range(7, 14))
    session = InteractiveSession(image, Sam2Backend(stub), settings=SessionSettings(absent_slices=2))
    session.annotate(drawn)
    session.propagate()
    # Up from 10: present on 11..13, absent on 14 and 15: stop. Down: present on 9..7, absent on 6, 5: stop.
    assert stub.visited == [9, 8, 7, 6, 5, 11, 12, 13, 14, 15]
    labelled = np.flatnonzero(session.labels.any(axis=(1, 2)))
    assert list(labelled) == list(range(7, 14))

    stub.visited.clear()
    ranged = InteractiveSession(image, Sam2Backend(stub), settings=SessionSettings(absent_slices=0))
    ranged.annotate(drawn + _drawing(truth, 2, values=(5,)))  # slice 2 lies outside the range
    ranged.propagate(slice_range=(8, 12))
    assert sorted(stub.visited) == [8, 9, 11, 12]
    labelled = set(np.flatnonzero(ranged.labels.any(axis=(1, 2))))
    assert labelled == {2, 8, 9, 10, 11, 12}  # the drawn slice outside comes back as drawn; nothing else outside
    with pytest.raises(SegSSLError, match="no drawing lies inside the slice range"):
        ranged.propagate(slice_range=(15, 19))


def test_registration_range_and_structure_end_visit_only_their_slices(phantom):
    image, truth = phantom
    session = InteractiveSession(image, RegistrationBackend())
    session.annotate(_drawing(truth, 12, values=(2,)))  # the spleen spans slices 10..15
    report = session.propagate(slice_range=(9, 17))
    assert set(report.visited) <= set(range(9, 18)) - {12}
    assert not session.labels[:9].any() and not session.labels[18:].any()


def test_a_point_prompt_answers_with_that_slices_mask_and_is_one_undo_step(phantom, predictor):
    image, truth = phantom
    session = InteractiveSession(image, Sam2Backend(predictor))
    truth_array = sitk.GetArrayFromImage(truth)
    j, i = (int(v) for v in np.argwhere(truth_array[11] == 1).mean(axis=0))
    with CountingEncoder(predictor) as encoder:
        k, mask = session.prompt(1, points=[(i, j, 11)], box=[(i - 5, j - 5, 11), (i + 5, j + 5, 11)])
        assert encoder.count == 1  # one model call: one slice encoded
        session.prompt(1, points=[(i + 2, j, 11)], point_labels=[0], add=True)
        assert encoder.count == 1  # the second prompt on the slice reuses its features
    assert k == 11 and session.drawn() == {1: [11]}
    drawing = session.drawing(1, 11)
    assert drawing.prompt["labels"] == [1, 0] and len(drawing.prompt["points"]) == 2
    assert np.array_equal(session.labels[11] == 1, drawing.mask)
    session.undo()
    assert np.array_equal(session.labels[11] == 1, mask)
    with pytest.raises(SegSSLError, match="one slice"):
        session.prompt(1, points=[(i, j, 11), (i, j, 12)])
    with pytest.raises(SegSSLError, match="sam2 backend"):
        InteractiveSession(image, RegistrationBackend()).prompt(1, points=[(i, j, 11)])


def test_annotations_must_stay_on_the_sessions_axis(phantom):
    image, truth = phantom
    session = InteractiveSession(image, RegistrationBackend())
    session.annotate(_drawing(truth, 10))
    sideways = np.zeros_like(sitk.GetArrayFromImage(truth))
    sideways[:, :, 20] = 1  # one sagittal slice
    with pytest.raises(SegSSLError, match="does not lie on slices of axis 2"):
        session.annotate(sideways)
    with pytest.raises(SegSSLError, match="nothing is drawn"):
        InteractiveSession(image, RegistrationBackend()).propagate()


def test_one_drawing_tracks_forward_exactly_as_the_batch_propagation(phantom, predictor):
    """The documented difference from ``segssl propagate``: only the backward run (which no longer sees
    the forward run's memory) may differ; the forward run is the same, bit for bit."""
    from SegSSLLib.propagation.annotation import find_annotation
    from SegSSLLib.propagation.sam2 import propagate_with_sam2

    image, truth = phantom
    drawn = _drawing(truth, 10, values=(1, 2, 5))
    batch = propagate_with_sam2(predictor, image, drawn, find_annotation(drawn)).labels
    session = InteractiveSession(image, Sam2Backend(predictor), settings=SessionSettings(absent_slices=0))
    session.annotate(drawn)
    session.propagate()
    assert np.array_equal(session.labels[10:], batch[10:])
    assert session.labels[:10].any()


@pytest.mark.parametrize("backend", ["registration", "sam2-stub"])
def test_partial_results_are_final_slices_each_once_and_a_cancel_after_them_changes_nothing(phantom, predictor, backend):
    image, truth = phantom
    session = InteractiveSession(image, _backend(backend, predictor))
    session.annotate(_drawing(truth, 10))
    before, undo = session.labels, session.can_undo
    cancel = threading.Event()
    handed: dict[int, np.ndarray] = {}
    with pytest.raises(OperationCancelled):  # the panel showed partial slices, then the user cancelled
        session.propagate(cancel=cancel, partial=lambda s: (handed.update(s), cancel.set()), partial_seconds=0)
    assert handed
    assert np.array_equal(session.labels, before) and session.can_undo == undo

    handed.clear()
    calls = []

    def partial(slices):
        assert not set(slices) & set(handed)  # each slice once
        handed.update(slices)
        calls.append(sorted(slices))

    report = session.propagate(partial=partial, partial_seconds=0)
    after = session.labels
    assert len(calls) > 1  # slice by slice, not all at the end
    changed = _differing(before, after)
    assert handed and set(handed) <= set(changed)
    for k, labels in handed.items():  # a partial slice is the final one
        assert np.array_equal(labels, after[k]), k
    assert set(report.changed_slices) == set(changed)

    # A correction hands out only slices its interval can change, each as it ends up.
    session.annotate(_drawing(truth, 14))
    before = session.labels
    handed.clear()
    session.propagate(partial=handed.update, partial_seconds=0)
    assert set(handed) <= set(range(11, SLICES)) and set(handed) <= set(_differing(before, session.labels))
    for k, labels in handed.items():
        assert np.array_equal(labels, session.labels[k]), k
    if backend == "registration":
        assert handed  # the registration walks differ between and beyond the drawings


def test_partial_results_wait_for_their_interval(phantom):
    """With ``partial_seconds`` larger than the run, nothing is handed out: the final result alone."""
    image, truth = phantom
    session = InteractiveSession(image, RegistrationBackend())
    session.annotate(_drawing(truth, 10))
    handed = []
    session.propagate(partial=handed.append, partial_seconds=3600)
    assert handed == [] and session.labels.any()


def test_the_batch_run_is_not_local_so_a_correction_there_reaches_every_slice(phantom, predictor):
    """Why a corrected session cannot equal `segssl propagate` of the same drawings (docs/interactive.md):
    the batch run conditions every slice on all drawings of an object, and its backward pass starts
    from the forward pass's memory, so a drawing on slice 14 changes the batch's slices below 10 too;
    the session keeps them, as documented, and the batch result there is not the session's."""
    from SegSSLLib.propagation.annotation import find_annotation
    from SegSSLLib.propagation.sam2 import propagate_with_sam2

    image, truth = phantom
    first, both = _drawing(truth, 10, values=(1, 5)), _drawing(truth, 10, 14, values=(1, 5))
    batch_first = propagate_with_sam2(predictor, image, first, find_annotation(first)).labels
    batch_both = propagate_with_sam2(predictor, image, both, find_annotation(both)).labels
    assert _differing(batch_first[:10], batch_both[:10])  # the batch's correction reaches below slice 10

    session = InteractiveSession(image, Sam2Backend(predictor), settings=SessionSettings(absent_slices=0))
    session.annotate(first)
    session.propagate()
    before = session.labels
    session.annotate(_drawing(truth, 14, values=(1, 5)))
    session.propagate()
    assert not _differing(before[:11], session.labels[:11])  # the session's does not
    assert _differing(session.labels[:10], batch_both[:10])


def test_a_long_run_keeps_sam2s_state_bounded_and_the_masks_unchanged(predictor, monkeypatch):
    """A run drops sam2's outputs of slices it will not read again: on a 27-slice run the state holds at
    most the memory window, and the masks stay those of the batch forward pass (which keeps all)."""
    import SegSSLLib.propagation.sam2 as sam2_module
    from SegSSLLib.propagation.annotation import find_annotation

    image, truth = make_ct_phantom(seed=4, size=(40, 36, 30), spacing=(7.0, 8.0, 6.0))
    drawn = _drawing(truth, 2, values=(1, 5))
    batch = sam2_module.propagate_with_sam2(predictor, image, drawn, find_annotation(drawn)).labels
    states, original = [], sam2_module.in_memory_state
    monkeypatch.setattr(sam2_module, "in_memory_state", lambda *a, **k: states.append(original(*a, **k)) or states[-1])
    backend = Sam2Backend(predictor)
    session = InteractiveSession(image, backend, settings=SessionSettings(absent_slices=0))
    session.annotate(drawn)
    report = session.propagate()
    assert len(report.visited) == 29 and backend.memory_window() < 27
    held = [len(out["non_cond_frame_outputs"]) for state in states for out in state["output_dict_per_obj"].values()]
    assert held and max(held) <= backend.memory_window()  # 27 slices tracked upward, at most the window kept
    assert np.array_equal(session.labels[2:], batch[2:])
    assert session.labels[3:].any()


# -- convergence stop (SessionSettings.converge_slices) ---------------------------------------------------


class ShiftStub(PresenceStub):
    """A stub whose square (present on every slice) is shifted by ``shift(frame, start, conds)`` pixels
    of the 16-pixel low-resolution grid (a shift of 2 gives IoU 0.6 with the unshifted square)."""

    def __init__(self, shift, image_size: int = 64):
        super().__init__(present=range(0, 10_000), image_size=image_size)
        self.shift, self.starts = shift, []

    def propagate_in_video(self, state, start_frame_idx, max_frame_num_to_track, reverse=False):
        self.starts.append((start_frame_idx, reverse))
        conds = frozenset(f for out in state["output_dict_per_obj"].values() for f in out["cond_frame_outputs"])
        size = self.image_size // 4
        for frame, obj_ids, _ in super().propagate_in_video(state, start_frame_idx, max_frame_num_to_track, reverse):
            s = self.shift(frame, start_frame_idx, conds)
            for index in range(len(obj_ids)):
                outputs = state["output_dict_per_obj"][index]["non_cond_frame_outputs"]
                if frame in outputs and s:
                    logits = torch.full((1, 1, size, size), -10.0)
                    logits[..., size // 4 + s: 3 * size // 4 + s, size // 4: 3 * size // 4] = 10.0
                    outputs[frame] = {"pred_masks": logits}
            yield frame, obj_ids, None


def _near_the_start(frame, start, conds):  # differs only on the slice next to where tracking starts
    return 2 if abs(frame - start) == 1 else 0


def _by_drawings(frame, start, conds):  # every run differs from every other, whatever its direction
    return {frozenset({4}): 0, frozenset({10}): 2, frozenset({4, 10}): 4}.get(conds, 3)


def _converging_session(phantom, shift, n):
    image, truth = phantom
    stub = ShiftStub(shift)
    session = InteractiveSession(image, Sam2Backend(stub), settings=SessionSettings(absent_slices=0, converge_slices=n))
    session.annotate(_drawing(truth, 4, values=(5,)))  # the vertebra: on every slice
    session.propagate()
    return session, stub


def test_the_convergence_stop_ends_after_n_agreeing_slices_and_keeps_the_old_labels_beyond(phantom):
    image, truth = phantom
    session, stub = _converging_session(phantom, _near_the_start, 2)
    before = session.labels  # up from 4: slice 5 shifted, 6..19 not; down: slice 3 shifted
    stub.visited.clear(), stub.starts.clear()
    session.annotate(_drawing(truth, 10, values=(5,)))
    report = session.propagate()
    # Between 4 and 10: tracked down from the new drawing (10): 9 differs, 8 and 7 agree -> stop; 6, 5 kept.
    # Above 10: 11 differs, 12 and 13 agree -> stop; 14..19 kept.
    assert stub.starts == [(10, True), (10, False)]
    assert stub.visited == [9, 8, 7, 11, 12, 13]
    assert sorted(report.visited) == [7, 8, 9, 11, 12, 13]
    assert sorted((c["kind"], c["converged_at"], c["kept"], c["both_empty"], c["iou"]) for c in report.converged) == [
        ("between", 7, 2, 0, [1.0, 1.0]), ("up", 13, 6, 0, [1.0, 1.0])]
    after = session.labels
    assert np.array_equal(after[:7], before[:7]) and np.array_equal(after[14:], before[14:])  # kept exactly
    assert not np.array_equal(after[5], after[6])  # slice 5 keeps its old (shifted) mask: the old result
    assert set(_differing(before, after)) == {9, 10, 11}
    assert set(report.changed_slices) == {9, 11}
    assert np.array_equal(after[10] == 5, _drawing(truth, 10, values=(5,))[10] == 5)  # as drawn

    # Undo restores exactly, redo gives the converged result back, and off (N = 0) is the pure result.
    assert session.undo() is not None and np.array_equal(session.labels, before)
    assert session.redo() is not None and np.array_equal(session.labels, after)
    off, _ = _converging_session(phantom, _near_the_start, 0)
    off.annotate(_drawing(truth, 10, values=(5,)))
    off.propagate()
    assert _differing(off.labels, after) == [9]  # off: tracked forward from 4, so 9 is not shifted, 5 is


def test_a_run_that_never_converges_tracks_its_whole_interval_and_equals_the_stop_off(phantom):
    image, truth = phantom
    results = {}
    for n in (0, 3):
        session, stub = _converging_session(phantom, _by_drawings, n)
        stub.visited.clear()
        session.annotate(_drawing(truth, 10, values=(5,)))
        report = session.propagate()
        assert sorted(stub.visited) == [5, 6, 7, 8, 9] + list(range(11, SLICES)) and report.converged == []
        results[n] = session.labels
    assert np.array_equal(results[0], results[3])


def test_the_convergence_stop_cancels_cleanly_and_hands_out_final_partial_slices(phantom):
    image, truth = phantom
    session, stub = _converging_session(phantom, _near_the_start, 2)
    session.annotate(_drawing(truth, 10, values=(5,)))
    labels, undo = session.labels, session.can_undo
    cancel = threading.Event()
    with pytest.raises(OperationCancelled):
        session.propagate(cancel=cancel, progress=CancelAfter(cancel, 2))
    assert np.array_equal(session.labels, labels) and session.can_undo == undo
    handed = {}
    session.propagate(partial=handed.update, partial_seconds=0)
    assert handed and set(handed) == {9, 11}
    for k, slice_labels in handed.items():
        assert np.array_equal(slice_labels, session.labels[k]), k

    converged = session.labels

    # A range cuts the converged result; widening it again reuses the converged run as it was.
    session.propagate(slice_range=(0, 15))
    assert not session.labels[16:].any() and np.array_equal(session.labels[:16], converged[:16])
    assert session.propagate().visited == [] and np.array_equal(session.labels, converged)

    # A correction propagated inside a range, then without it: the slices the range left out have no
    # previous result, so the run above the correction is tracked whole (never converged there).
    session.annotate(_drawing(truth, 12, values=(5,)))
    session.propagate(slice_range=(0, 15))
    stub.visited.clear()
    report = session.propagate()
    assert sorted(stub.visited) == list(range(13, SLICES)) and report.converged == []
    assert session.labels[16:].any()
