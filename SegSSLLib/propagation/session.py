"""An interactive propagation session: one volume, one backend, the drawings so far and what they gave.

Clinicians work in a loop: draw a slice, propagate, look, correct a slice, propagate again, undo a
bad stroke. ``InteractiveSession`` keeps everything between those steps so that a correction costs
only the slices it can change, and no slice's image features are computed twice (SAM 2).

Model
-----
With the convergence stop off (``converge_slices`` 0, the default; see below), the result is a pure
function of the drawings and the slice range: the same drawings give the same
labels, bit for bit, whether they were made in one step or in many (tested). Per object, its drawn
slices inside the range are the *sources*; the slices between two neighbouring sources, and those
beyond the first and the last source (up to the range's ends), are each filled by one run:

- SAM 2 (sam2's video predictor, public API): a slice between sources ``a < b`` comes from tracking
  forward from ``a`` with both drawings as conditioning frames (``add_new_mask`` on ``a`` and ``b``,
  ``propagate_in_video(start_frame_idx=a, max_frame_num_to_track=b - a)``); slices above the last
  source come from tracking forward from it, slices below the first source from tracking backwards
  (``reverse=True``) from it. Each run has its own inference state, so no run sees another's memory.
- registration: a slice between sources comes from the walk of the nearer source (the lower one on
  a tie); beyond the first / last source from that source's walk. Each object walks alone, with the
  tissue model learned on the source it walks from.

Objects are then combined per slice as the batch propagation does (SAM 2: the strongest positive
logit wins a pixel; registration: the lower label value wins an overlap), and every drawn object is
set to exactly what was drawn on its drawn slices.

Which slices a correction can change
------------------------------------
Drawing object ``o`` on slice ``c`` (new, replaced, or removed by drawing that slice again without
it) can change labels only on the slices strictly between the drawn slice of ``o`` just below ``c``
and the one just above it — or the range's (volume's) ends where there is none — and on ``c``
itself. Every other slice stays bit-identical, and ``propagate`` computes nothing outside that
interval. An outward run that is cut short or extended by a correction or by a new range reuses the
part already computed (tracking never looks ahead, so a run's first slices do not depend on where it
ends). That is the rule with the convergence stop off; with it on, see below.

Convergence stop (SAM 2: ``SessionSettings.converge_slices`` N > 0, ``converge_iou``)
------------------------------------------------------------------------------------
Each run a ``propagate`` computes is compared, per object and slice, with the object's previous
result there (what the runs of the state before this ``propagate`` gave; not a drawing), on the
stretch of the run's slices that reaches its far end with a previous result on every slice. A slice
agrees when the IoU of the new and the previous mask is at least ``converge_iou``, or both are empty.
After N agreeing slices in a row the run stops; the slices beyond it, up to its far end, keep the
previous result (the run holds the previous payloads there; ``Run.converged`` says where and how).
A run between sources ``a < b`` is tracked from the source the previous result did not come from
toward the one it did (from ``b`` with ``reverse=True`` when the previous result came from ``a``
only; otherwise forward from ``a``), both drawings conditioning it, so the slices it skips are those
near the older drawing. A correction then changes no slice outside the interval above, and inside
it only the slices from the corrected slice up to where its runs converged. The result depends on
the history of the drawings, not only on them; a turned-around run between two drawings that never
converges gives other masks than the forward run (tracking is not symmetric in time). Undo / redo,
cancel, partial results, range and early stop behave as with the stop off. The registration backend
ignores the setting (its result stays a pure function of the drawings). Off by default here; on
(N = 3) in ``segssl serve`` and the Slicer panel (docs/interactive.md says why).

Early stop and range
--------------------
An outward SAM 2 run drops an object once it has been absent (no pixel) on ``absent_slices``
consecutive slices; the run ends when every object in it has stopped (a registration walk ends where
its structure ends, by the rules of ``propagation_rules``). ``propagate(slice_range=(lo, hi))``
visits only slices ``lo..hi`` (inclusive), uses only the drawings inside it as sources and leaves no
label outside it (drawn slices outside it still come back as drawn).

Undo / redo
-----------
``undo`` takes back the last ``annotate`` / ``prompt`` and the propagations that followed it,
exactly (the drawings, the runs and every label). Snapshots share unchanged data: label slices are
kept zlib-compressed, one per slice, and a snapshot holds references to them. What the history
alone keeps (data no longer in the current state: above all the logits of runs a correction
replaced) is bounded by ``SessionSettings.undo_bytes``: the oldest undo steps are dropped first, the
newest one is always kept, and an undo beyond what is kept answers "nothing to undo" (None).

Cancel
------
Pass a ``threading.Event`` as ``cancel``: it is checked between slices, and a cancelled operation
raises ``OperationCancelled`` and leaves the session exactly as it was (only the feature cache,
which never changes a result, may have grown).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
import zlib
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk

from SegSSLLib.errors import OperationCancelled, SegSSLError  # noqa: F401 - OperationCancelled: part of this API
from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.axes import AXIS_NAMES, array_axis

log = logging.getLogger(__name__)

MAX_LABEL = 65535  # labels are kept as uint16
_RUN_SERIAL = itertools.count()


@dataclass(frozen=True)
class SessionSettings:
    absent_slices: int = 3  # an outward SAM 2 run drops an object absent this many slices in a row (0: never)
    feature_cache_bytes: int = 2 * 2**30  # SAM 2 image features kept per slice, least recently used out
    cache_on_cpu: bool = False  # keep the cached features in CPU memory (GPU memory stays free)
    offload_state: bool = False  # keep SAM 2's per-frame memory on the CPU during a run
    undo_depth: int = 50  # operations that can be taken back
    undo_bytes: int = 512 * 2**20  # what undo / redo alone keep (runs, labels, drawings); oldest steps out first
    # Convergence stop (SAM 2): a correction's re-tracking ends once its masks agree with the previous
    # result on this many consecutive slices (0: off, the result is a pure function of the drawings).
    converge_slices: int = 0
    converge_iou: float = 0.9  # agreement of one object on one slice: IoU at least this (both empty agree)


@dataclass(frozen=True)
class Drawing:
    """What the user gave for one object on one slice: a mask on the slice grid, and its prompt."""

    mask: np.ndarray  # bool (rows, cols), read-only
    digest: str
    prompt: dict | None = None  # points / box (slice-grid pixels) when the mask came from a prompt

    @classmethod
    def of(cls, mask: np.ndarray, prompt: dict | None = None) -> "Drawing":
        mask = np.ascontiguousarray(mask, dtype=bool)
        mask.setflags(write=False)
        digest = hashlib.sha1(np.packbits(mask).tobytes() + str(mask.shape).encode()).hexdigest()
        return cls(mask, digest, prompt)


@dataclass
class Run:
    """What one run gave for one object: a payload per slice where the object is present.

    ``reached``: the last slice the run computed (in its direction); ``stopped``: the object ended
    there, so every slice further on is empty for it."""

    direction: int
    reached: int
    stopped: bool = False
    frames: dict = field(default_factory=dict)
    # Convergence stop: the slice where the run agreed with the previous result for the N-th slice in a
    # row (None: it computed every slice it covers). Slices beyond it hold the previous result's payloads.
    # {"at": slice, "kept": slices, "both_empty": agreeing slices empty in both, "iou": per agreeing slice}
    converged: dict | None = None
    anchors: frozenset = frozenset()  # (slice, digest) of the drawings its payloads came from
    serial: int = field(default_factory=lambda: next(_RUN_SERIAL))

    def covers(self, target: int) -> bool:
        return self.stopped or (self.reached - target) * self.direction >= 0


@dataclass(frozen=True)
class Need:
    """A run an object needs: its identity (``key``), and the slice it must reach."""

    key: tuple
    obj: int
    kind: str  # "up", "down", "between" (SAM 2) or "walk" (registration)
    source: int
    target: int  # the last slice the run must compute
    direction: int
    cond: tuple[int, ...]  # the drawn slices the run is conditioned on


@dataclass
class PropagateReport:
    changed_slices: list[int]
    visited: list[int]  # slices computed (once per run group and slice, in order)
    seconds: float
    runs: int
    # Convergence stop: one entry per run that stopped early, {"object", "kind", "from", "converged_at",
    # "kept": slices left with the previous result, "both_empty": of the agreeing slices, how many were
    # empty in both, "iou": each agreeing slice's IoU with the previous result (None: both empty)}.
    converged: list = field(default_factory=list)


@dataclass
class _State:
    drawings: dict  # (obj, slice) -> Drawing
    runs: dict  # key -> Run, those the labels were assembled from
    labels: "_LabelSlices"
    signatures: list  # per slice: what its labels were assembled from
    slice_range: tuple[int, int] | None = None

    def copy(self) -> "_State":
        return _State(dict(self.drawings), dict(self.runs), self.labels.copy(), list(self.signatures), self.slice_range)


class _LabelSlices:
    """Label slices along the session's axis, each kept zlib-compressed (None: all background)."""

    def __init__(self, count: int, shape: tuple[int, int]):
        self.shape = tuple(shape)
        self._data: list[bytes | None] = [None] * count

    def copy(self) -> "_LabelSlices":
        other = _LabelSlices(0, self.shape)
        other._data = list(self._data)
        return other

    def __len__(self) -> int:
        return len(self._data)

    def get(self, index: int) -> np.ndarray:
        data = self._data[index]
        if data is None:
            return np.zeros(self.shape, np.uint16)
        return np.frombuffer(zlib.decompress(data), np.uint16).reshape(self.shape).copy()

    def set(self, index: int, labels: np.ndarray) -> None:
        labels = np.ascontiguousarray(labels, dtype=np.uint16)
        self._data[index] = zlib.compress(labels.tobytes(), 1) if labels.any() else None

    def same(self, index: int, other: "_LabelSlices") -> bool:
        return self._data[index] == other._data[index]


class InteractiveSession:
    """One volume, one propagation backend, the drawings per object per slice, and all results so far.

    ``backend``: ``Sam2Backend(predictor)`` or ``RegistrationBackend()``. ``axis``: the ITK axis the
    drawings lie on (0 = I, 1 = J, 2 = K); by default the first annotation decides (K for a first
    point or box prompt).
    """

    def __init__(self, image: sitk.Image, backend, axis: int | None = None, settings: SessionSettings = SessionSettings()):
        if image.GetDimension() != 3:
            raise SegSSLError(f"interactive propagation needs a 3D volume, got a {image.GetDimension()}D image")
        if axis is not None and axis not in (0, 1, 2):
            raise SegSSLError(f"axis must be 0, 1 or 2 (I, J, K), got {axis}")
        if settings.undo_bytes < 0 or settings.undo_depth < 0:
            raise SegSSLError("`undo_bytes` and `undo_depth` must be 0 or more")
        self.image = image
        self.backend = backend
        self.settings = settings
        self.shape = tuple(reversed(image.GetSize()))  # (k, j, i)
        self.axis: int | None = None
        self._state: _State | None = None
        self._undo: list[_State] = []
        self._redo: list[_State] = []
        self.history_bytes = 0  # what undo / redo alone keep (``undo_memory``)
        self._run_bytes: dict = {}  # id(run) -> (run, slices it held, bytes): each run's size computed once
        self.last_report: PropagateReport | None = None
        self._prepared_axis: int | None = None
        if axis is not None:
            self._set_axis(axis)
        else:  # most drawings are axial: have the model's frames ready (another axis prepares again)
            self.backend.prepare(image, 2, settings)
            self._prepared_axis = 2

    def warm_up(self) -> float | None:
        """Do the one-time work of a first model call now (e.g. while a volume opens), not at the first prompt.

        Returns the seconds one more slice takes to encode (a lower bound of a SAM 2 step), or None."""
        if not hasattr(self.backend, "warm_up"):
            return None
        middle = self.num_slices // 2
        self.backend.warm_up(middle)
        if self.num_slices < 2:
            return None
        started = time.perf_counter()
        self.backend.warm_up(middle + 1 if middle + 1 < self.num_slices else middle - 1)
        return time.perf_counter() - started

    # -- geometry -------------------------------------------------------------------------------

    def _set_axis(self, axis: int) -> None:
        self.axis = axis
        position = array_axis(axis)
        count = self.shape[position]
        rows_cols = tuple(n for a, n in enumerate(self.shape) if a != position)
        self._state = _State({}, {}, _LabelSlices(count, rows_cols), [()] * count)
        if self._prepared_axis != axis:
            self.backend.prepare(self.image, axis, self.settings)
            self._prepared_axis = axis

    @property
    def num_slices(self) -> int:
        return len(self._state.labels) if self._state else self.shape[array_axis(self.axis or 2)]

    def _slices_of(self, volume: np.ndarray) -> np.ndarray:
        return np.moveaxis(volume, array_axis(self.axis), 0)

    # -- what the session holds -------------------------------------------------------------------

    @property
    def labels(self) -> np.ndarray:
        """The current result as a (k, j, i) uint16 array on the input grid (a new array)."""
        if self._state is None:
            return np.zeros(self.shape, np.uint16)
        slices = np.stack([self._state.labels.get(k) for k in range(len(self._state.labels))])
        return np.ascontiguousarray(np.moveaxis(slices, 0, array_axis(self.axis)))

    def slice_labels(self, index: int) -> np.ndarray:
        return self._state.labels.get(index)

    def drawn(self) -> dict[int, list[int]]:
        """Object -> the slices it is drawn on."""
        result: dict[int, list[int]] = {}
        for obj, k in sorted(self._state.drawings if self._state else {}):
            result.setdefault(obj, []).append(k)
        return result

    def drawing(self, obj: int, index: int) -> Drawing | None:
        return self._state.drawings.get((obj, index)) if self._state else None

    @property
    def can_undo(self) -> int:
        return len(self._undo)

    @property
    def can_redo(self) -> int:
        return len(self._redo)

    # -- operations -------------------------------------------------------------------------------

    def annotate(self, drawn: np.ndarray) -> list[int]:
        """Drawings on one or more slices of a (k, j, i) label map (each value one object).

        Every slice that carries labels replaces all prompts of that slice (a correction); objects
        absent from it there are no longer drawn there. Returns the slices drawn.
        """
        drawn = np.asarray(drawn)
        if drawn.shape != self.shape:
            raise SegSSLError(
                f"the annotation is {drawn.shape[::-1]} voxels but the volume is {self.shape[::-1]} — "
                "give a label map on the volume's grid"
            )
        if not np.issubdtype(drawn.dtype, np.integer) or (drawn.size and (drawn.min() < 0 or drawn.max() > MAX_LABEL)):
            raise SegSSLError(f"label values must be whole numbers from 0 to {MAX_LABEL}; check the annotation")
        if not drawn.any():
            raise SegSSLError("the annotation is empty (all zero) — paint the structure on a slice, one label value per object")
        from SegSSLLib.propagation.annotation import find_annotation

        if self.axis is None:
            self._set_axis(find_annotation(drawn).axis)
        else:
            best = find_annotation(drawn).axis
            occupied = {a: int(np.any(drawn != 0, axis=tuple(p for p in range(3) if p != array_axis(a))).sum())
                        for a in (0, 1, 2)}
            if occupied[self.axis] > occupied[best]:
                raise SegSSLError(
                    f"the annotation does not lie on slices of axis {self.axis} ({AXIS_NAMES[self.axis]}), the axis of "
                    f"this session's drawings — paint on slices of that axis, or open the volume again to work along "
                    f"axis {best}"
                )
        slices = self._slices_of(drawn)
        indices = [int(k) for k in np.flatnonzero(slices.reshape(len(slices), -1).any(axis=1))]
        new = self._state.copy()
        for k in indices:
            for obj, index in list(new.drawings):
                if index == k:
                    del new.drawings[(obj, index)]
            for value in np.unique(slices[k]):
                if value:
                    new.drawings[(int(value), k)] = Drawing.of(slices[k] == value)
        self._commit_step(new, indices)
        return indices

    def prompt(self, obj: int, points=None, point_labels=None, box=None, add: bool = False,
               cancel=None) -> tuple[int, np.ndarray]:
        """Points (positive 1 / negative 0) and/or a box on one slice, answered with that slice's mask of
        ``obj`` in one model call (SAM 2). Points and box corners are (i, j, k) voxel indices, ITK order,
        all on one slice of the session's axis; ``add`` keeps the points already given for ``obj`` there.
        The mask becomes ``obj``'s drawing on that slice (other objects' drawings keep their pixels).
        Returns (slice, mask on the slice grid)."""
        if not 1 <= int(obj) <= MAX_LABEL:
            raise SegSSLError(f"object (label value) must be between 1 and {MAX_LABEL}, got {obj}")
        obj = int(obj)
        if not hasattr(self.backend, "prompt"):
            raise SegSSLError("points and boxes need the sam2 backend — paint the slice instead, or open with backend sam2")
        if self.axis is None:
            self._set_axis(2)
        corners = [tuple(int(v) for v in p) for p in (box or [])]
        given = [tuple(int(v) for v in p) for p in (points or [])]
        if box is not None and len(corners) != 2:
            raise SegSSLError("a box is two corners [[i, j, k], [i, j, k]] on one slice")
        if not given and not corners:
            raise SegSSLError("a prompt needs points or a box — give \"points\" [[i, j, k], ...] or \"box\"")
        labels_given = [1] * len(given) if point_labels is None else [int(v) for v in point_labels]
        if len(labels_given) != len(given) or any(v not in (0, 1) for v in labels_given):
            raise SegSSLError("point_labels must give 1 (inside) or 0 (outside) for each point")
        for p in given + corners:
            if len(p) != 3 or any(not 0 <= v < n for v, n in zip(p, self.image.GetSize())):
                raise SegSSLError(f"prompt point {list(p)} is not a voxel index [i, j, k] inside the volume "
                                  f"(size {list(self.image.GetSize())})")
        position = array_axis(self.axis)
        on = {p[self.axis] for p in given + corners}
        if len(on) != 1:
            raise SegSSLError(f"all points and box corners must lie on one slice of axis {self.axis}; they span slices {sorted(on)}")
        k = on.pop()
        # (i, j, k) -> (row, col) on the slice: the two array axes other than the slice axis, in order.
        in_plane = [a for a in range(3) if a != position]
        to_rc = lambda p: tuple(p[::-1][a] for a in in_plane)  # noqa: E731
        old = self._state.drawings.get((obj, k))
        prompt = {"points": [to_rc(p) for p in given], "labels": labels_given,
                  "box": [to_rc(p) for p in corners] if corners else None}
        if add and old is not None and old.prompt is not None:
            prompt = {"points": old.prompt["points"] + prompt["points"], "labels": old.prompt["labels"] + prompt["labels"],
                      "box": prompt["box"] or old.prompt["box"]}
        _check(cancel)
        mask = self.backend.prompt(k, obj, prompt)
        new = self._state.copy()
        for (other, index), drawing in self._state.drawings.items():  # keep the drawings disjoint
            if index == k and other != obj:
                mask &= ~drawing.mask
        new.drawings.pop((obj, k), None)
        if mask.any():
            new.drawings[(obj, k)] = Drawing.of(mask, prompt)
        self._commit_step(new, [k])
        return k, mask

    def propagate(self, slice_range: tuple[int, int] | None = None, cancel=None,
                  progress: Progress = NO_PROGRESS, partial=None, partial_seconds: float = 1.0,
                  converge_slices: int | None = None) -> PropagateReport:
        """Bring the result up to date with every drawing so far, computing only what is missing.

        ``partial``: called while the runs go on, at most every ``partial_seconds``, with
        ``{slice: labels}`` (slice-grid uint16) for the slices whose labels are already final and differ
        from the labels before this call — each slice once. Nothing of the session changes until
        ``propagate`` returns: a cancelled or failed call leaves the session as it was, whatever was
        handed out.

        ``converge_slices``: the convergence stop for this call (None: ``settings.converge_slices``)."""
        started = time.perf_counter()
        converge = self.settings.converge_slices if converge_slices is None else int(converge_slices)
        if converge < 0:
            raise SegSSLError(f"`converge_slices` must be 0 (off) or more, got {converge}")
        if self._state is None or not self._state.drawings:
            raise SegSSLError("nothing is drawn yet — annotate a slice (a label map, points or a box) before propagating")
        count = self.num_slices
        if slice_range is not None:
            lo, hi = (int(v) for v in slice_range)
            if not 0 <= lo <= hi < count:
                raise SegSSLError(f"slice range [{lo}, {hi}] must satisfy 0 <= first <= last <= {count - 1}")
        else:
            lo, hi = 0, count - 1
        state = self._state
        needs = self._plan(state.drawings, lo, hi)
        if not needs and not any(lo <= k <= hi for _, k in state.drawings):
            raise SegSSLError(f"no drawing lies inside the slice range [{lo}, {hi}] — draw on a slice inside it, or widen it")
        wanted: dict[tuple, Need] = {}
        for need in needs:  # one run may serve several slices: keep the furthest target
            known = wanted.get(need.key)
            if known is None or (need.target - known.target) * need.direction > 0:
                wanted[need.key] = need
        runs, missing = {}, []
        for key, need in wanted.items():
            run = state.runs.get(key)
            if run is not None and run.covers(need.target):
                runs[key] = run
            else:
                missing.append(need)
        visited: list[int] = []
        _check(cancel)
        extra = {}
        if converge > 0 and getattr(self.backend, "converges", False):
            missing, extra["prior"] = self._priors(state, missing)
            extra["converge"] = (converge, self.settings.converge_iou)
        if partial is not None:
            extra["on_slice"] = _FinalSlices(self, state, runs, missing, (lo, hi), partial, partial_seconds)
        computed = self.backend.run(missing, state.drawings, cancel, progress, visited, **extra)
        runs.update(computed)
        new = state.copy()
        new.runs = runs
        new.slice_range = None if (lo, hi) == (0, count - 1) else (lo, hi)
        changed = self._assemble(new, lo, hi, cancel)
        self._state = new  # commit: nothing above touched the session's state
        self._trim_history()  # the runs this replaced now live in the history only
        converged = [{"object": n.obj, "kind": n.kind, "from": n.source, "converged_at": computed[n.key].converged["at"],
                      "kept": computed[n.key].converged["kept"], "both_empty": computed[n.key].converged["both_empty"],
                      "iou": computed[n.key].converged["iou"]}
                     for n in missing if computed[n.key].converged is not None]
        self.last_report = PropagateReport(changed, visited, time.perf_counter() - started, len(missing), converged)
        return self.last_report

    def undo(self) -> list[int] | None:
        """Take back the last annotate / prompt and what followed from it; None if there is nothing to undo."""
        if not self._undo:
            return None
        previous = self._undo.pop()
        self._redo.append(self._state)
        changed = self._switch(previous)
        self._trim_history(drop=False)  # moves data, adds none
        return changed

    def redo(self) -> list[int] | None:
        if not self._redo:
            return None
        following = self._redo.pop()
        self._undo.append(self._state)
        changed = self._switch(following)
        self._trim_history(drop=False)
        return changed

    def close(self) -> None:
        self._undo.clear()
        self._redo.clear()
        self.history_bytes = 0
        self.backend.close()

    def undo_memory(self) -> dict:
        """What the undo / redo history alone keeps, in bytes, and its bound (``SessionSettings.undo_bytes``)."""
        return {"bytes": self.history_bytes, "max_bytes": self.settings.undo_bytes, "undo_steps": len(self._undo),
                "redo_steps": len(self._redo)}

    # -- internals --------------------------------------------------------------------------------

    def _switch(self, state: _State) -> list[int]:
        changed = [k for k in range(len(state.labels)) if not state.labels.same(k, self._state.labels)]
        self._state = state
        return changed

    def _commit_step(self, new: _State, indices: list[int]) -> None:
        """A new undo step: the drawn slices show their drawings at once (the rest waits for propagate)."""
        for k in indices:
            signature = self._signature(new, k, *(new.slice_range or (0, self.num_slices - 1)))
            new.labels.set(k, self._slice(new, k, signature))
            new.signatures[k] = signature
        self._undo.append(self._state)
        del self._undo[: max(0, len(self._undo) - self.settings.undo_depth)]
        self._redo.clear()
        self._state = new
        self._trim_history()

    def _plan(self, drawings: dict, lo: int, hi: int) -> list[Need]:
        needs = []
        for obj in sorted({o for o, _ in drawings}):
            sources = sorted(k for o, k in drawings if o == obj and lo <= k <= hi)
            if sources:
                needs += self.backend.plan(obj, sources, {k: drawings[(obj, k)].digest for k in sources}, lo, hi,
                                           self.settings)
        return needs

    def _priors(self, state: _State, missing: list[Need]) -> tuple[list[Need], dict]:
        """For the convergence stop: per run to compute, the previous result of its object on the slices it
        will compute — the stretch, in tracking order, that reaches the run's far end with a previous result
        on every slice — and the drawings that result came from. A run between two drawings is turned
        around to track from the drawing the previous result did not come from (the newer one) toward the
        one it did, so the slices it can skip are those near the older drawing."""
        needs, prior = [], {}
        for need in missing:
            if need.kind == "between":
                a, b = need.cond
                old = {k: self._previous(state, need.obj, k) for k in range(a + 1, b)}
                anchors = frozenset().union(*(run.anchors for _, run in filter(None, old.values())))
                if ((b, state.drawings[(need.obj, b)].digest) not in anchors
                        and (a, state.drawings[(need.obj, a)].digest) in anchors):
                    need = Need(need.key, need.obj, need.kind, b, a + 1, -1, need.cond)
            else:
                old = {k: self._previous(state, need.obj, k)
                       for k in range(need.source + need.direction, need.target + need.direction, need.direction)}
            known, anchors = {}, frozenset()
            for k in reversed(range(need.source + need.direction, need.target + need.direction, need.direction)):
                if old.get(k) is None:
                    break
                known[k] = old[k][0]
                anchors |= old[k][1].anchors
            if known:
                prior[need.key] = (known, anchors)
            needs.append(need)
        return needs, prior

    @staticmethod
    def _previous(state: _State, obj: int, k: int):
        """(payload or None for empty, run) of ``obj`` on slice ``k`` in ``state``'s labels; None where no run gave them."""
        for o, kind, key, *_ in state.signatures[k]:
            if o == obj:
                run = state.runs.get(key) if kind == "run" else None
                return (run.frames.get(k), run) if run is not None and run.covers(k) else None
        return None

    def _signature(self, state: _State, k: int, lo: int, hi: int) -> tuple:
        """What slice ``k``'s labels are made of: per object the run that covers it, or its drawing."""
        parts = []
        for obj in sorted({o for o, _ in state.drawings}):
            drawing = state.drawings.get((obj, k))
            if drawing is not None:
                parts.append((obj, "drawn", drawing.digest))
                continue
            if not lo <= k <= hi:
                continue
            sources = sorted(s for o, s in state.drawings if o == obj and lo <= s <= hi)
            if not sources:
                continue
            digests = {s: state.drawings[(obj, s)].digest for s in sources}
            key = self.backend.cover(obj, k, sources, digests, self.settings)
            if key is not None and key in state.runs:
                run = state.runs[key]
                # A converged run depends on the result before it: the same key may hold other payloads.
                parts.append((obj, "run", key) if run.converged is None else (obj, "run", key, run.serial))
        return tuple(parts)

    def _slice(self, state: _State, k: int, signature: tuple) -> np.ndarray:
        contributions = [(obj, state.runs[key].frames.get(k)) for obj, kind, key, *_ in signature if kind == "run"]
        out = self.backend.assemble(k, contributions, state.labels.shape)
        for obj, kind, *_ in signature:  # every drawn object exactly as drawn on its slices
            if kind == "drawn":
                mask = state.drawings[(obj, k)].mask
                out[out == obj] = 0
                out[mask] = obj
        return out

    def _assemble(self, state: _State, lo: int, hi: int, cancel) -> list[int]:
        changed = []
        for k in range(len(state.labels)):
            signature = self._signature(state, k, lo, hi)
            if signature == state.signatures[k]:
                continue
            _check(cancel)
            before = state.labels._data[k]
            state.labels.set(k, self._slice(state, k, signature))
            state.signatures[k] = signature
            if state.labels._data[k] != before:
                changed.append(k)
        return changed

    def _trim_history(self, drop: bool = True) -> None:
        """Count what the history alone keeps (data shared with the current state is not counted) and, with
        ``drop``, drop the oldest undo steps while that exceeds ``undo_bytes`` (the newest undo step always
        stays). Undo and redo only count: they move data between the history and the current state and add
        none, so the steps counted when an operation ended can all be taken back."""
        known, seen = self._run_bytes, {}
        current = _held(self._state, known, seen)
        sizes, users, steps = {}, {}, []
        for snapshot in self._undo + self._redo:
            held = {i: size for i, size in _held(snapshot, known, seen).items() if i not in current}
            steps.append(held)
            sizes.update(held)
            for i in held:
                users[i] = users.get(i, 0) + 1
        total = sum(sizes.values())
        dropped = 0
        while drop and total > self.settings.undo_bytes and len(self._undo) - dropped > 1:
            for i in steps[dropped]:
                users[i] -= 1
                if not users[i]:
                    total -= sizes[i]
            dropped += 1
        if dropped:
            del self._undo[:dropped]
            log.info("undo history over %.1f MiB (`undo_bytes`): the %d oldest step(s) can no longer be undone",
                     self.settings.undo_bytes / 2**20, dropped)
        self.history_bytes = total
        self._run_bytes = seen  # only runs still held (a dropped step's runs may be gone)


def _held(state: "_State | None", known: dict, seen: dict) -> dict:
    """id -> bytes of the data a state holds: each run's per-slice results, each label slice, each drawing.

    ``known`` / ``seen``: id(run) -> (run, slices it held, bytes), sizes already computed / computed now."""
    if state is None:
        return {}
    held = {}
    for run in state.runs.values():
        entry = seen.get(id(run)) or known.get(id(run))
        if entry is None or entry[0] is not run or entry[1] != len(run.frames):
            entry = (run, len(run.frames), sum(_nbytes(v) for v in run.frames.values()))
        seen[id(run)] = entry
        held[id(run)] = entry[2]
    held.update((id(data), len(data)) for data in state.labels._data if data is not None)
    held.update((id(drawing.mask), drawing.mask.nbytes) for drawing in state.drawings.values())
    return held


def _nbytes(value) -> int:
    return int(value.nbytes) if hasattr(value, "nbytes") else 0


def _check(cancel) -> None:
    if cancel is not None and cancel.is_set():
        raise OperationCancelled("cancelled")


class _FinalSlices:
    """During a ``propagate``: which slices already have their final labels, handed to ``partial``.

    A slice is final once every run its labels come from (its signature with the runs this propagate
    will hold) has computed it; it is assembled exactly as the end of ``propagate`` assembles it."""

    def __init__(self, session: "InteractiveSession", state: _State, reused: dict, missing: list, bounds: tuple,
                 partial, seconds: float):
        self.session, self.state, self.bounds = session, state, bounds
        self.partial, self.seconds = partial, max(0.0, float(seconds))
        self.provisional = state.copy()
        # Not yet started: a run that covers nothing beyond its source (it stands in for the signature).
        self.provisional.runs = {**reused, **{n.key: Run(n.direction, n.source) for n in missing}}
        self.pending = {}
        for k in range(len(state.labels)):
            signature = session._signature(self.provisional, k, *bounds)
            if signature != state.signatures[k]:
                self.pending[k] = signature
        self.last = time.perf_counter()

    def __call__(self, runs: dict) -> None:
        """A backend computed one more slice of the runs ``runs`` (key -> the Run being filled)."""
        self.provisional.runs.update(runs)
        if time.perf_counter() - self.last < self.seconds:
            return
        ready = {}
        for k, signature in list(self.pending.items()):
            if all(self.provisional.runs[key].covers(k) for _, kind, key, *_ in signature if kind == "run"):
                del self.pending[k]
                labels = self.session._slice(self.provisional, k, signature)
                if not np.array_equal(labels, self.state.labels.get(k)):
                    ready[k] = labels
        if ready:
            self.partial(ready)
        self.last = time.perf_counter()


# -- SAM 2 --------------------------------------------------------------------------------------------


class Sam2Backend:
    """Propagation with sam2's video predictor, each run in its own in-memory inference state, image
    features from a shared per-slice cache."""

    name = "sam2"
    converges = True  # supports the convergence stop (SessionSettings.converge_slices)

    def __init__(self, predictor):
        self.predictor = predictor
        self.cache = None
        self.stack = None
        self.frames = None
        self.offload_state = False
        self.absent_slices = 0

    def prepare(self, image: sitk.Image, axis: int, settings: SessionSettings) -> None:
        import torch

        from SegSSLLib.propagation.feature_cache import FeatureCache
        from SegSSLLib.frames import Sam2Frames, frame_stack

        self.stack, frames = frame_stack(image, axis, self.predictor.image_size)
        self.frames = Sam2Frames(frames)
        storage = torch.device("cpu") if settings.cache_on_cpu else None
        if self.cache is None or self.cache.storage_device != storage or self.cache.max_bytes != settings.feature_cache_bytes:
            self.cache = FeatureCache(settings.feature_cache_bytes, storage)
        else:
            self.cache.clear()  # another axis: other frames
        self.offload_state = settings.offload_state
        self.absent_slices = settings.absent_slices

    def close(self) -> None:
        if self.cache is not None:
            self.cache.clear()

    def warm_up(self, frame: int) -> None:
        """Encode one slice (kept in the cache): the first forward pass carries one-time costs."""
        import torch

        from SegSSLLib.propagation.feature_cache import use_feature_cache
        from SegSSLLib.propagation.sam2 import in_memory_state

        state = in_memory_state(self.predictor, self.frames, offload_state_to_cpu=self.offload_state)
        with torch.inference_mode(), use_feature_cache(self.predictor, self.cache):
            self.predictor._get_image_feature(state, frame, 1)

    # which runs an object needs, and which run covers a slice

    def plan(self, obj: int, sources: list[int], digests: dict, lo: int, hi: int, settings: SessionSettings) -> list[Need]:
        needs = []
        first, last = sources[0], sources[-1]
        if first > lo:
            needs.append(Need(("down", obj, first, digests[first], settings.absent_slices), obj, "down", first, lo, -1, (first,)))
        for a, b in zip(sources, sources[1:]):
            if b - a > 1:
                needs.append(Need(("between", obj, a, b, digests[a], digests[b]), obj, "between", a, b - 1, +1, (a, b)))
        if last < hi:
            needs.append(Need(("up", obj, last, digests[last], settings.absent_slices), obj, "up", last, hi, +1, (last,)))
        return needs

    def cover(self, obj: int, k: int, sources: list[int], digests: dict, settings: SessionSettings):
        if k < sources[0]:
            return ("down", obj, sources[0], digests[sources[0]], settings.absent_slices)
        if k > sources[-1]:
            return ("up", obj, sources[-1], digests[sources[-1]], settings.absent_slices)
        below = max(s for s in sources if s < k)
        above = min(s for s in sources if s > k)
        return ("between", obj, below, above, digests[below], digests[above])

    # running

    def run(self, needs: list[Need], drawings: dict, cancel, progress: Progress, visited: list[int],
            on_slice=None, prior=None, converge=(0, 1.0)) -> dict:
        """Compute ``needs``; ``on_slice(runs)`` after every slice, with the runs (key -> Run) being filled.

        ``prior``: key -> ({slice: previous payload}, anchors) for the convergence stop (see ``_priors``);
        ``converge``: (slices that must agree in a row, IoU threshold)."""
        import torch

        from SegSSLLib.propagation.feature_cache import use_feature_cache
        from SegSSLLib.propagation.sam2 import _quiet_sam2

        groups: dict[tuple, list[Need]] = {}
        for need in needs:  # objects with the same run geometry share one inference state
            groups.setdefault((need.kind, need.source, need.target, need.cond), []).append(need)
        total = sum(abs(target - source) for (_, source, target, _) in groups)
        prior = prior or {}
        results = {}
        with torch.inference_mode(), _quiet_sam2(), use_feature_cache(self.predictor, self.cache), \
                progress.stage("propagate (SAM 2)", total=total):
            for (kind, source, target, cond), members in groups.items():
                _check(cancel)
                results.update(self._run_group(kind, source, target, cond, members, drawings, cancel, progress, visited,
                                               on_slice, {n.obj: prior[n.key] for n in members if n.key in prior},
                                               converge))
        return results

    def _run_group(self, kind, source, target, cond, members, drawings, cancel, progress, visited, on_slice=None,
                   prior=None, converge=(0, 1.0)) -> dict:
        from SegSSLLib.propagation.sam2 import _mask_prompt, in_memory_state

        predictor = self.predictor
        state = in_memory_state(predictor, self.frames, offload_state_to_cpu=self.offload_state)
        for need in members:
            for c in cond:
                predictor.add_new_mask(state, frame_idx=c, obj_id=need.obj,
                                       mask=_mask_prompt(drawings[(need.obj, c)].mask, self.stack))
        direction = members[0].direction  # a run between drawings may go down (convergence stop)
        reverse = direction < 0
        if kind == "between":  # to the other drawing, a conditioning frame
            steps = abs((cond[0] if source == cond[-1] else cond[-1]) - source)
        else:
            steps = abs(target - source)
        runs = {need.obj: Run(direction, source, anchors=frozenset((c, drawings[(need.obj, c)].digest) for c in cond))
                for need in members}
        absent = {need.obj: 0 for need in members}
        prior, (agree_needed, agree_iou) = prior or {}, converge
        agreeing = {need.obj: [] for need in members}  # per object: its streak of IoUs (None: both empty)
        limit = self.absent_slices if kind != "between" else 0  # early stop on outward runs only
        window = self.memory_window()
        done = 0
        generator = predictor.propagate_in_video(state, start_frame_idx=source, max_frame_num_to_track=steps, reverse=reverse)
        try:
            for frame, obj_ids, _ in generator:
                _check(cancel)
                for outputs in state["output_dict_per_obj"].values():
                    # sam2 reads no tracked slice more than `window` behind the next one: let it go
                    outputs["non_cond_frame_outputs"].pop(int(frame) - direction * window, None)
                if frame in cond:
                    continue
                visited.append(int(frame))
                for index, obj in enumerate(obj_ids):
                    run = runs[obj]
                    if run.stopped or run.converged is not None:
                        continue
                    low = state["output_dict_per_obj"][index]["non_cond_frame_outputs"][frame]["pred_masks"]
                    low = low.detach().to("cpu", copy=True).float()
                    run.reached = int(frame)
                    mask = self.object_logits(low) > 0
                    if mask.any():
                        run.frames[int(frame)] = low
                        absent[obj] = 0
                    else:
                        absent[obj] += 1
                        if limit and absent[obj] >= limit:
                            run.stopped = True
                    if obj in prior and agree_needed and not run.stopped:
                        self._converge(run, int(frame), mask, prior[obj], agreeing[obj], agree_needed, agree_iou, target)
                progress.advance(slice=int(frame))
                done += 1
                if on_slice is not None:
                    on_slice({need.key: runs[need.obj] for need in members})
                if all(run.stopped or run.converged is not None for run in runs.values()):
                    progress.advance(abs(target - source) - done)  # the slices no longer needed count as done
                    break
        finally:
            generator.close()
        return {need.key: runs[need.obj] for need in members}

    def _converge(self, run: Run, frame: int, mask, prior: tuple, streak: list, needed: int, iou: float,
                  target: int) -> None:
        """The convergence stop for one object on one slice: extend or break its streak of slices that agree
        with the previous result; at ``needed`` in a row, end the run and keep the previous payloads beyond."""
        known, anchors = prior
        if frame not in known:
            streak.clear()
            return
        old = known[frame]
        old_mask = self.object_logits(old) > 0 if old is not None else None
        if old_mask is None or not old_mask.any():
            agree, overlap = not mask.any(), None  # both empty agree
        else:
            union = int((mask | old_mask).sum())
            overlap = int((mask & old_mask).sum()) / union
            agree = overlap >= iou
        if not agree:
            streak.clear()
            return
        streak.append(overlap)
        if len(streak) < needed:
            return
        kept = 0
        for k in range(frame + run.direction, target + run.direction, run.direction):
            kept += 1
            if known.get(k) is not None:
                run.frames[k] = known[k]
        run.reached = target
        run.anchors = run.anchors | anchors
        run.converged = {"at": frame, "kept": kept, "both_empty": streak.count(None),
                         "iou": [None if v is None else round(v, 4) for v in streak]}

    def memory_window(self) -> int:
        """How far back (in slices) sam2 reads a tracked slice's outputs when it tracks the next one: the
        mask memories of the last ``num_maskmem - 1`` slices (every ``memory_temporal_stride_for_eval``-th,
        and the last one) and the object pointers of the last ``max_obj_ptrs_in_encoder - 1``. A run
        drops what lies further back, so its sam2 state stays the same size however long it runs
        (about 0.2 MiB per slice at 512 px and 0.8 MiB at 1024 px for hiera-t otherwise)."""
        model = self.predictor
        stride = max(1, int(getattr(model, "memory_temporal_stride_for_eval", 1)))
        masks = (int(getattr(model, "num_maskmem", 7)) + 1) * stride  # generous: the last frame plus the strided ones
        pointers = int(getattr(model, "max_obj_ptrs_in_encoder", 16)) if getattr(model, "use_obj_ptrs_in_encoder", True) else 0
        return max(masks, pointers, 1)

    def object_logits(self, low):
        """One object's (1, 1, s, s) low-resolution logits -> (rows, cols) logits on the slice grid, the way
        sam2 sizes its output to the video (our frames are S x S) and the batch propagation maps it back."""
        import torch.nn.functional as F

        from SegSSLLib.propagation.sam2 import _to_slice_grid

        size = self.predictor.image_size
        video = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        return _to_slice_grid(video, self.stack)[0, 0]

    def assemble(self, k: int, contributions: list, shape) -> np.ndarray:
        import torch

        present = [(obj, low) for obj, low in contributions if low is not None]
        if not present:
            return np.zeros(shape, np.uint16)
        logits = torch.stack([self.object_logits(low) for _, low in present])
        strongest, which = logits.max(dim=0)
        values = torch.tensor([obj for obj, _ in present], dtype=torch.int64)
        return torch.where(strongest > 0, values[which], 0).numpy().astype(np.uint16)

    def prompt(self, k: int, obj: int, prompt: dict) -> np.ndarray:
        """One model call on slice ``k``: the mask sam2 gives for points / a box (slice-grid pixels)."""
        import torch

        from SegSSLLib.propagation.feature_cache import use_feature_cache
        from SegSSLLib.propagation.sam2 import _quiet_sam2, _to_slice_grid, in_memory_state

        (top, left), (rows, cols) = self.stack.padding, self.stack.fitted_shape
        slice_rows, slice_cols = self.stack.slice_shape
        scale_r, scale_c = rows / slice_rows, cols / slice_cols
        points = [(left + (c + 0.5) * scale_c - 0.5, top + (r + 0.5) * scale_r - 0.5) for r, c in prompt["points"]]
        box = None
        if prompt["box"]:
            (r0, c0), (r1, c1) = prompt["box"]
            r0, r1, c0, c1 = min(r0, r1), max(r0, r1), min(c0, c1), max(c0, c1)
            box = [left + c0 * scale_c, top + r0 * scale_r, left + (c1 + 1) * scale_c, top + (r1 + 1) * scale_r]
        state = in_memory_state(self.predictor, self.frames, offload_state_to_cpu=self.offload_state)
        with torch.inference_mode(), _quiet_sam2(), use_feature_cache(self.predictor, self.cache):
            _, _, masks = self.predictor.add_new_points_or_box(
                state, frame_idx=k, obj_id=obj, points=points or None,
                labels=prompt["labels"] if points else None, box=box,
            )
        return (_to_slice_grid(masks.float().cpu(), self.stack)[0, 0] > 0).numpy()


# -- registration ---------------------------------------------------------------------------------------


class RegistrationBackend:
    """Weight-free propagation: each object walks alone from each of its sources, slice to slice, by 2D
    deformable registration fitted to its tissue (``registration_propagation``, ``propagation_rules``)."""

    name = "registration"

    def __init__(self, settings=None):
        from SegSSLLib.propagation.registration import RegistrationSettings

        self.settings = settings or RegistrationSettings()
        self.volume = None
        self.spacing = None
        self._smoothed: dict[int, np.ndarray] = {}

    def prepare(self, image: sitk.Image, axis: int, settings: SessionSettings) -> None:
        from SegSSLLib.propagation.registration import _slice_spacing

        self.volume = np.moveaxis(sitk.GetArrayViewFromImage(image), array_axis(axis), 0)
        self.spacing = _slice_spacing(image.GetSpacing(), axis)
        self._smoothed.clear()

    def close(self) -> None:
        self._smoothed.clear()

    def smoothed(self, k: int) -> np.ndarray:
        """Slice ``k`` smoothed in-plane as the batch propagation smooths the volume (computed when needed)."""
        from scipy import ndimage

        if k not in self._smoothed:
            sigma = tuple(self.settings.smoothing_mm / s for s in self.spacing)
            self._smoothed[k] = ndimage.gaussian_filter(self.volume[k].astype(np.float32), sigma=sigma)
        return self._smoothed[k]

    def plan(self, obj: int, sources: list[int], digests: dict, lo: int, hi: int, settings: SessionSettings) -> list[Need]:
        needs = []

        def walk(source, target, direction):
            if (target - source) * direction > 0:
                needs.append(Need(("walk", obj, source, direction, digests[source]), obj, "walk", source, target,
                                  direction, (source,)))

        walk(sources[0], lo, -1)
        for a, b in zip(sources, sources[1:]):
            middle = (a + b) // 2  # the lower source wins a tie
            walk(a, middle, +1)
            walk(b, middle + 1, -1)
        walk(sources[-1], hi, +1)
        return needs

    def cover(self, obj: int, k: int, sources: list[int], digests: dict, settings: SessionSettings):
        below = [s for s in sources if s < k]
        above = [s for s in sources if s > k]
        if below and (not above or k - below[-1] <= above[0] - k):
            return ("walk", obj, below[-1], +1, digests[below[-1]])
        return ("walk", obj, above[0], -1, digests[above[0]])

    def run(self, needs: list[Need], drawings: dict, cancel, progress: Progress, visited: list[int],
            on_slice=None) -> dict:
        results = {}
        with progress.stage("propagate (registration)", total=sum(abs(n.target - n.source) for n in needs)):
            for need in needs:
                _check(cancel)
                results[need.key] = self._walk(need, drawings[(need.obj, need.source)].mask, cancel, progress, visited,
                                               on_slice)
        return results

    def _walk(self, need: Need, mask: np.ndarray, cancel, progress, visited, on_slice=None) -> Run:
        from SegSSLLib.propagation.rules import TaperWatch, TissueModel
        from SegSSLLib.propagation.registration import _carry, _fit_labels

        rules, d = self.settings.rules, need.direction
        models = {need.obj: TissueModel.learn([self.smoothed(need.source)], [mask], self.spacing, rules)}
        walking = {need.obj: TaperWatch(int(mask.sum()), rules)}
        current = np.where(mask, need.obj, 0).astype(np.uint16)
        run = Run(d, need.source)
        t = need.source + d
        while (need.target - t) * d >= 0:
            _check(cancel)
            warped = _carry(self.smoothed(t - d), self.smoothed(t), current, self.spacing, self.settings)
            current = _fit_labels(warped, self.smoothed(t), models, walking, self.spacing, rules)
            visited.append(t)
            progress.advance(slice=t)
            run.reached = t
            if not current.any():
                run.stopped = True
                progress.advance(abs(need.target - t))  # the slices this walk no longer needs count as done
                if on_slice is not None:
                    on_slice({need.key: run})
                break
            run.frames[t] = np.packbits(current == need.obj)
            if on_slice is not None:
                on_slice({need.key: run})
            t += d
        return run

    def assemble(self, k: int, contributions: list, shape) -> np.ndarray:
        out = np.zeros(shape, np.uint16)
        for obj, packed in sorted(contributions, key=lambda c: c[0]):  # the lower label wins an overlap
            if packed is None:
                continue
            mask = np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)
            out[mask & (out == 0)] = obj
        return out
