"""``segssl serve``: the interactive worker (shared/BRIEF.md section 5.1, docs/interactive.md).

One JSON request per line on stdin, JSON events one per line on stdout, logs on stderr. Every event
carries the request's ``"id"``; every request ends with exactly one ``done`` or ``error`` event, and
``progress`` events may come in between. An error never ends the worker; end of input (after the
requests already read have run) or ``close`` exits 0.

stdin is read on its own thread, so a ``cancel`` is seen while an operation runs: it sets that
operation's cancel flag, which the session checks between slices; the cancelled request ends with an
``error`` event that has ``"cancelled": true``, and the session is as it was before it.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import sys
import threading
import time
from pathlib import Path

from SegSSLLib.cli.common import add_device_option
from SegSSLLib.errors import SegSSLError
from SegSSLLib.progress import Progress

HELP = "interactive worker: keeps a volume, the model and all results; JSON requests on stdin, events on stdout"

log = logging.getLogger(__name__)

OPERATIONS = ("open", "annotate", "propagate", "save", "undo", "redo", "refine", "status", "cancel", "close")


def configure(parser) -> None:
    parser.add_argument(
        "--feature-cache-mb", type=int, default=2048,
        help="memory for SAM 2 image features kept per slice (least recently used out; default 2048 MiB)",
    )
    parser.add_argument(
        "--cache-on-cpu", action="store_true", help="keep the SAM 2 feature cache in CPU memory (GPU memory stays free)"
    )
    parser.add_argument(
        "--offload-state", action="store_true", help="keep SAM 2's per-frame memory on the CPU during a propagation"
    )
    parser.add_argument(
        "--refine-cache-mb", type=int, default=1024,
        help="memory for SAM image embeddings kept per slice by refine (least recently used out; default 1024 MiB)",
    )
    parser.add_argument(
        "--undo-mb", type=int, default=512,
        help="memory for what undo / redo alone keep (e.g. the results a correction replaced); the oldest undo "
             "steps are dropped first, the last one is always kept (default 512 MiB)",
    )
    parser.add_argument(
        "--absent-slices", type=int, default=3,
        help="an object absent on this many slices in a row is no longer tracked outward (0: never stop; default 3)",
    )
    parser.add_argument(
        "--converge-slices", type=int, default=3,
        help="SAM 2: a correction stops re-tracking once its masks agree with the previous result on this many "
             "slices in a row, and keeps the previous result beyond (0: off, the result depends only on the "
             "drawings; default 3)",
    )
    add_device_option(parser)


def run(args, progress) -> int:
    from SegSSLLib.cli.common import setup_torch

    # stdout carries only this worker's events; the command runner's own progress stays silent.
    progress.mode = "none"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("segssl serve: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    if min(args.feature_cache_mb, args.absent_slices, args.refine_cache_mb, args.converge_slices, args.undo_mb) < 0:
        raise SegSSLError("--feature-cache-mb, --refine-cache-mb, --undo-mb, --absent-slices and --converge-slices "
                          "must be 0 or more")
    # torch is imported when SAM 2 is first opened: a registration-only worker runs on what Slicer
    # ships (the panel's first install tier), and starts without the 16 s torch import.
    worker = Worker(None, args, sys.stdout, device_for=lambda: setup_torch(args))
    return worker.serve(sys.stdin)


class RequestProgress(Progress):
    """Progress events of one request, tagged with its id."""

    def __init__(self, worker: "Worker", request_id):
        super().__init__("json", stream=worker.out)
        self._lock = worker.lock  # one lock for every line the worker writes
        self.request_id = request_id

    def emit(self, event: str, **fields) -> None:
        if event != "progress":
            return  # the contract's events only: stages are implied by the request
        self.worker_send({"id": self.request_id, "event": "progress", **fields})

    def worker_send(self, event: dict) -> None:
        from SegSSLLib import strict_json

        with self._lock:
            self.stream.write(strict_json.dumps(event, default=str) + "\n")
            self.stream.flush()


class Worker:
    def __init__(self, device, options, out, device_for=None):
        self.device = device  # the torch device; None until SAM 2 needs it (then ``device_for()``)
        self._device_for = device_for
        self.options = options
        self.out = out
        self.lock = threading.Lock()
        self.requests: queue.Queue = queue.Queue()
        self.session = None
        self.input_path: str | None = None
        self.predictors: dict = {}  # (checkpoint, config, image size) -> predictor: the model stays loaded
        self.sam_predictors: dict = {}  # (checkpoint, device, preprocessing) -> CachedEmbeddings: refine's SAM
        self._refine_source: tuple = (None, None)  # (file version, image) last refined on
        self._refine_windowed = None  # WindowedSlices of that image: a repeated refine does not window it again
        self.running: tuple | None = None  # (id, cancel Event) of the operation in progress
        self.cancelled_ids: set = set()  # queued requests cancelled before they started

    # -- output ----------------------------------------------------------------------------------

    def send(self, event: dict) -> None:
        from SegSSLLib import strict_json

        line = strict_json.dumps(event, default=str)
        with self.lock:
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError):  # the reader went away: nothing left to tell
                pass

    def error(self, request_id, message: str, **fields) -> None:
        self.send({"id": request_id, "event": "error", "message": " ".join(str(message).split()), **fields})

    # -- input -----------------------------------------------------------------------------------

    def serve(self, stream) -> int:
        reader = threading.Thread(target=self._read, args=(stream,), name="segssl-serve-stdin", daemon=True)
        reader.start()
        while True:
            request = self.requests.get()
            if request is None:
                break
            if not self.handle(request):
                break
        self._close_session()
        return 0

    def _read(self, stream) -> None:
        try:
            for line in stream:
                if not line.strip():
                    continue
                request = self._parse(line)
                if request is None:
                    continue
                if request.get("op") == "cancel":
                    self._cancel(request)
                else:
                    self.requests.put(request)
        except (OSError, ValueError) as exc:  # stdin closed under us
            log.debug("stdin ended: %s", exc)
        finally:
            self.requests.put(None)

    def _parse(self, line: str) -> dict | None:
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            self.error(None, f"bad request: not JSON ({exc.msg} at column {exc.colno}) — send one JSON object per line")
            return None
        if not isinstance(request, dict):
            self.error(None, "bad request: not a JSON object — send {\"id\": n, \"op\": ...}")
            return None
        request_id = request.get("id")
        if not isinstance(request_id, (int, str)) or isinstance(request_id, bool):
            self.error(None if not isinstance(request_id, (int, str)) else request_id,
                       "bad request: no \"id\" — give each request an \"id\" (a number or a string)")
            return None
        op = request.get("op")
        if op not in OPERATIONS:
            self.error(request_id, f"unknown op {op!r} — use one of {', '.join(OPERATIONS)}")
            return None
        return request

    def _cancel(self, request: dict) -> None:
        """Runs on the reader thread, while an operation may be running on the main thread."""
        target = request.get("target")
        running = self.running
        if running is not None and (target is None or target == running[0]):
            running[1].set()
            cancelled = running[0]
        elif target is not None:
            self.cancelled_ids.add(target)  # queued (or unknown): it will end as cancelled without running
            cancelled = target
        else:
            cancelled = None
        self.send({"id": request["id"], "event": "done", "cancelled": cancelled})

    # -- requests --------------------------------------------------------------------------------

    def handle(self, request: dict) -> bool:
        """Run one request to its one done / error event; False when the worker should exit."""
        from SegSSLLib.errors import OperationCancelled

        request_id, op = request["id"], request["op"]
        if request_id in self.cancelled_ids:
            self.cancelled_ids.discard(request_id)
            self.error(request_id, "cancelled before it started", cancelled=True)
            return True
        cancel = threading.Event()
        self.running = (request_id, cancel)
        started = time.perf_counter()
        try:
            if op == "close":
                self.send({"id": request_id, "event": "done"})
                return False
            fields = getattr(self, f"op_{op}")(request, cancel, RequestProgress(self, request_id))
            self.send({"id": request_id, "event": "done", **(fields or {}),
                       "seconds": round(time.perf_counter() - started, 3)})
        except OperationCancelled:
            self.error(request_id, f"{op} cancelled; the session is as it was before it", cancelled=True)
        except SegSSLError as exc:
            self.error(request_id, f"{op}: {exc}")
        except MemoryError:
            self.error(request_id, f"{op}: out of memory — use a smaller image_size, a slice range, or a smaller "
                                   "--feature-cache-mb")
        except Exception as exc:  # noqa: BLE001 - the worker outlives its own mistakes
            if _is_cuda_oom(exc):
                self.error(request_id, f"{op}: out of GPU memory — use a smaller image_size, --cache-on-cpu and "
                                       "--offload-state, or --device cpu")
            else:
                log.debug("internal error in %s", op, exc_info=True)
                first = str(exc).splitlines()[0] if str(exc) else ""
                self.error(request_id, f"{op}: internal error: {type(exc).__name__}: {first} (the worker goes on; "
                                       "run with --log-level DEBUG for the traceback)")
        finally:
            self.running = None
        return True

    def _session(self):
        if self.session is None:
            raise SegSSLError("no volume is open — send {\"op\": \"open\", \"input\": VOLUME} first")
        return self.session

    def op_open(self, request: dict, cancel, progress) -> dict:
        from SegSSLLib.propagation.session import InteractiveSession, RegistrationBackend, SessionSettings
        from SegSSLLib.volumes import read_volume

        path = _text(request, "input", "a volume file")
        backend_name = request.get("backend", "auto")
        if backend_name not in ("auto", "sam2", "registration"):
            raise SegSSLError(f"backend {backend_name!r} — use \"sam2\" or \"registration\"")
        axis = _optional_int(request, "axis")
        absent = _optional_int(request, "absent_slices")
        converge = _optional_int(request, "converge_slices")
        if converge is not None and converge < 0:
            raise SegSSLError(f"\"converge_slices\" must be 0 (off) or more, got {converge}")
        cache_mb = _optional_int(request, "feature_cache_mb")
        image = read_volume(path, "input")
        if image.GetDimension() != 3:
            raise SegSSLError(f"input {path} is a {image.GetDimension()}D image; the worker works on 3D volumes")
        settings = SessionSettings(
            absent_slices=self.options.absent_slices if absent is None else absent,
            converge_slices=getattr(self.options, "converge_slices", 0) if converge is None else converge,
            feature_cache_bytes=(self.options.feature_cache_mb if cache_mb is None else cache_mb) * 2**20,
            cache_on_cpu=bool(request.get("cache_on_cpu", self.options.cache_on_cpu)),
            offload_state=bool(request.get("offload_state", self.options.offload_state)),
            undo_bytes=getattr(self.options, "undo_mb", 512) * 2**20,
        )
        if backend_name == "auto":
            from SegSSLLib.weights.resolve import configured_checkpoint

            backend_name = "sam2" if request.get("sam2_checkpoint") or configured_checkpoint("sam2") else "registration"
        described = {"backend": backend_name}
        if backend_name == "sam2":
            from SegSSLLib.propagation.session import Sam2Backend

            self._torch_device("SAM 2 needs PyTorch and sam2", "or open with backend \"registration\"")
            predictor = self._predictor(request, progress)
            backend = Sam2Backend(predictor)
            described.update(device=str(self.device), image_size=predictor.image_size)
        else:
            backend = RegistrationBackend()
        session = InteractiveSession(image, backend, axis=axis, settings=settings)
        encode_seconds = session.warm_up()
        self._close_session()
        self.session, self.input_path = session, path
        if encode_seconds is not None:
            described["encode_seconds"] = round(encode_seconds, 3)  # per slice, on this device: a lower bound
        return {**described, "size": list(image.GetSize()), "axis": session.axis}

    def _torch_device(self, what: str, otherwise: str):
        """The torch device (PyTorch imported at the first need)."""
        if self.device is None:
            if self._device_for is None:
                from SegSSLLib.cli.common import setup_torch

                self._device_for = lambda: setup_torch(self.options)
            try:
                self.device = self._device_for()
            except ImportError as exc:
                raise SegSSLError(f"{what} in this Python ({exc}) — install them (the Slicer panel offers to), "
                                  f"{otherwise}") from None
        return self.device

    def _predictor(self, request: dict, progress):
        from SegSSLLib.propagation.propagate import PropagateSettings, sam2_predictor

        settings = PropagateSettings(
            backend="sam2", sam2_checkpoint=request.get("sam2_checkpoint"), sam2_config=request.get("sam2_config"),
            image_size=_optional_int(request, "image_size"), device=self.device,
        )
        key = (settings.sam2_checkpoint, settings.sam2_config, settings.image_size)
        if key not in self.predictors:
            self.predictors.clear()  # one model at a time
            self.predictors[key] = sam2_predictor(settings, progress)
        return self.predictors[key]

    def op_annotate(self, request: dict, cancel, progress) -> dict:
        session = self._session()
        if "annotation" in request:
            import SimpleITK as sitk

            from SegSSLLib.volumes import read_label_map

            path = _text(request, "annotation", "a label map file")
            drawn = read_label_map(path, reference=session.image, what="annotation", reference_name="the open volume")
            slices = session.annotate(sitk.GetArrayFromImage(drawn))
            return {"slices": slices, "axis": session.axis, "drawn": _drawn(session)}
        if "points" not in request and "box" not in request:
            raise SegSSLError("give \"annotation\" (a label map file) or \"points\" / \"box\" on one slice")
        obj = request.get("object", 1)
        if not isinstance(obj, int) or isinstance(obj, bool):
            raise SegSSLError(f"object must be a label value (a whole number), got {obj!r}")
        points, box = request.get("points"), request.get("box")
        for name, value in (("points", points), ("box", box)):
            if value is not None and not (isinstance(value, list) and all(
                    isinstance(p, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in p) for p in value)):
                raise SegSSLError(f"{name} must be a list of voxel indices [[i, j, k], ...]")
        started = time.perf_counter()
        index, mask = session.prompt(obj, points=points, point_labels=request.get("point_labels"), box=box,
                                     add=bool(request.get("add", False)), cancel=cancel)
        return {"slice": index, "object": obj, "pixels": int(mask.sum()), "axis": session.axis,
                "model_seconds": round(time.perf_counter() - started, 3)}

    def op_propagate(self, request: dict, cancel, progress) -> dict:
        session = self._session()
        slice_range = request.get("slice_range")
        if slice_range is not None and not (
                isinstance(slice_range, list) and len(slice_range) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in slice_range)):
            raise SegSSLError("slice_range must be [first, last] slice indices (inclusive)")
        partial = _PartialWriter.requested(self, request, session)
        converge = _optional_int(request, "converge_slices")
        report = session.propagate(slice_range=slice_range, cancel=cancel, progress=progress,
                                   **({} if converge is None else {"converge_slices": converge}),
                                   **(partial.arguments() if partial else {}))
        computed = len(report.visited)
        fields = {"changed_slices": report.changed_slices, "computed_slices": computed, "runs": report.runs,
                  "converged": report.converged}
        if partial is not None:
            fields["partials"] = partial.sequence
        if computed:
            fields["seconds_per_slice"] = round(report.seconds / computed, 3)
        cache = getattr(session.backend, "cache", None)
        if cache is not None:
            fields["feature_cache"] = cache.stats()
        return fields

    def op_refine(self, request: dict, cancel, progress) -> dict:
        """SAM box refinement of ``mask`` (``segssl refine``), the model and the slices' embeddings kept."""
        from SegSSLLib.cli.refine_command import mask_has_labels
        from SegSSLLib.volumes import check_output_format, check_output_path, read_label_map, require_content, write_image

        path = request.get("input", self.input_path)
        if not isinstance(path, str) or not path:
            raise SegSSLError("missing \"input\": give the volume to refine on (or open one first)")
        mask_path = _text(request, "mask", "a coarse label map file")
        output = _text(request, "output", "a label map file to write")
        check_output_path(output, (path, mask_path), "output")
        image = self._refine_image(path)
        if image.GetDimension() not in (2, 3):
            raise SegSSLError(f"input {path} is {image.GetDimension()}D; give a 2D image or a 3D volume")
        check_output_format(output, image.GetDimension(), "output")
        require_content(image, f"input {path}")
        mask = read_label_map(mask_path, reference=image, what="mask", reference_name="the input")
        if not mask_has_labels(mask):
            raise SegSSLError(f"mask {mask_path} is empty (all zero): there is nothing to refine")
        self._torch_device("refine needs PyTorch and segment-anything", "or run Refine from the command line")
        from SegSSLLib.refinement.sam_refine import refine

        settings = self._refine_settings(request)
        predictor = self._sam_predictor(settings, progress)
        hits, misses = predictor.hits, predictor.misses
        result = refine(image, mask, settings, progress, predictor=predictor, cancel=cancel,
                        windowed=self._windowed(image))
        write_image(result.label_map, output)
        return {"output": str(Path(output)), "encoded": predictor.misses - misses, "reused": predictor.hits - hits,
                "kept_coarse": result.kept_coarse, "device": str(self.device), "embedding_cache": predictor.stats()}

    def _refine_image(self, path: str):
        """The image to refine on: read once per file version (the panel sends the same file each time)."""
        from SegSSLLib.volumes import read_image

        try:
            stat = Path(path).stat()
            key = (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)
        except OSError:
            key = None
        if key is None or self._refine_source[0] != key:
            image = read_image(path, "input")
            self._refine_source = (key, image)
            self._refine_windowed = None
        return self._refine_source[1]

    def _windowed(self, image):
        """The windowed slices of a grey volume refined on, kept while the same image (file version) is used."""
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            return None
        if self._refine_windowed is None or not self._refine_windowed.matches(image):
            from SegSSLLib.frames import WindowedSlices

            self._refine_windowed = WindowedSlices(image)  # a new file version is a new image object
        return self._refine_windowed

    def _refine_settings(self, request: dict):
        from SegSSLLib.refinement.sam_refine import RefineSettings

        margin = _optional_int(request, "margin")
        axis = _optional_int(request, "axis")
        checkpoint = request.get("sam_checkpoint")
        if checkpoint is not None and (not isinstance(checkpoint, str) or not checkpoint):
            raise SegSSLError("sam_checkpoint must be a file or a name from `segssl weights list`")
        preprocess = request.get("sam_preprocess", "auto")
        if not isinstance(preprocess, str):
            raise SegSSLError(f"sam_preprocess must be auto, sam or medsam, got {preprocess!r}")
        settings = RefineSettings(margin=5 if margin is None else margin, mask_prompt=bool(request.get("mask_prompt", False)),
                                  axis=2 if axis is None else axis, sam_checkpoint=checkpoint, sam_preprocess=preprocess)
        settings.check()
        return settings

    def _sam_predictor(self, settings, progress):
        """refine's SAM predictor, loaded once per checkpoint, device and preprocessing, its embeddings cached."""
        from dataclasses import replace

        from SegSSLLib.weights.resolve import resolve_checkpoint

        checkpoint = resolve_checkpoint(settings.sam_checkpoint, "sam", progress=progress)
        device = self.device
        key = (str(checkpoint), str(device), settings.sam_preprocess)
        if key not in self.sam_predictors:
            from SegSSLLib.refinement.embedding_cache import CachedEmbeddings
            from SegSSLLib.refinement.sam_refine import load_refinement_predictor

            self.sam_predictors.clear()  # one SAM at a time
            try:
                loaded = load_refinement_predictor(replace(settings, sam_checkpoint=checkpoint, device=device), progress)
            except ImportError as exc:
                raise SegSSLError(f"refine needs segment-anything in this Python ({exc}) — install it (the Slicer panel "
                                  "offers to)") from None
            cache_mb = getattr(self.options, "refine_cache_mb", 1024)
            self.sam_predictors[key] = CachedEmbeddings(loaded, cache_mb * 2**20)
        return self.sam_predictors[key]

    def op_save(self, request: dict, cancel, progress) -> dict:
        from SegSSLLib.volumes import check_output_path, label_array_to_image, write_image

        session = self._session()
        output = _text(request, "output", "a label map file to write")
        check_output_path(output, (self.input_path,), "output")
        write_image(label_array_to_image(session.labels, session.image), output)
        return {"output": str(Path(output))}

    def op_undo(self, request: dict, cancel, progress) -> dict:
        changed = self._session().undo()
        return {"undone": changed is not None, "changed_slices": changed or [], "drawn": _drawn(self.session)}

    def op_redo(self, request: dict, cancel, progress) -> dict:
        changed = self._session().redo()
        return {"redone": changed is not None, "changed_slices": changed or [], "drawn": _drawn(self.session)}

    def op_status(self, request: dict, cancel, progress) -> dict:
        if self.session is None:
            return {"open": False}
        session = self.session
        fields = {"open": True, "input": self.input_path, "backend": session.backend.name, "axis": session.axis,
                  "drawn": _drawn(session), "undo": session.can_undo, "redo": session.can_redo,
                  "undo_memory": session.undo_memory(),
                  "converge_slices": session.settings.converge_slices}
        if session.last_report is not None:  # the last propagate: slices re-tracked, where runs converged
            fields["last_propagate"] = {"computed_slices": len(session.last_report.visited),
                                        "converged": session.last_report.converged}
        cache = getattr(session.backend, "cache", None)
        if cache is not None:
            fields["feature_cache"] = cache.stats()
        return fields

    def _close_session(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


class _PartialWriter:
    """A propagate's ``partial`` events: the slices already final, written as a slab file each time.

    Each event's file holds slices ``first..last`` along the session's axis of the labels as they stand
    (final on the listed ``slices``, as before the propagate or as an earlier event gave them on the
    others), on the volume's grid: the volume's spacing and direction, the origin of slice ``first``.
    Files are numbered, never overwritten, and left to the client (which reads and removes them)."""

    def __init__(self, worker: "Worker", request_id, session, folder: Path, seconds: float):
        import numpy as np

        from SegSSLLib.axes import array_axis

        self.worker, self.request_id, self.session = worker, request_id, session
        self.folder, self.seconds = folder, seconds
        self.position = array_axis(session.axis)
        self.labels = np.moveaxis(session.labels, self.position, 0)  # slice-first; the labels before the call
        self.sequence = 0
        self.stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(request_id))

    @classmethod
    def requested(cls, worker: "Worker", request: dict, session) -> "_PartialWriter | None":
        folder = request.get("partial_dir")
        if folder is None:
            return None
        if not isinstance(folder, str) or not Path(folder).is_dir():
            raise SegSSLError(f"partial_dir {folder!r} is not a folder — give an existing folder for the partial results")
        seconds = request.get("partial_seconds", 1.0)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
            raise SegSSLError(f"partial_seconds must be a number of seconds, 0 or more, got {seconds!r}")
        return cls(worker, request["id"], session, Path(folder), float(seconds))

    def arguments(self) -> dict:
        return {"partial": self, "partial_seconds": self.seconds}

    def __call__(self, slices: dict) -> None:
        import numpy as np
        import SimpleITK as sitk

        from SegSSLLib.volumes import write_image

        for k, labels in slices.items():
            self.labels[k] = labels
        first, last = min(slices), max(slices)
        slab = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(self.labels[first:last + 1], 0, self.position)))
        image = self.session.image
        index = [0, 0, 0]
        index[self.session.axis] = first
        slab.SetSpacing(image.GetSpacing())
        slab.SetDirection(image.GetDirection())
        slab.SetOrigin(image.TransformIndexToPhysicalPoint(index))
        self.sequence += 1
        path = self.folder / f"partial-{self.stem}-{self.sequence}.nrrd"
        write_image(slab, path, compress=False)
        self.worker.send({"id": self.request_id, "event": "partial", "output": str(path), "axis": self.session.axis,
                          "first": first, "last": last, "slices": sorted(slices), "sequence": self.sequence})


def _drawn(session) -> dict:
    return {str(obj): slices for obj, slices in session.drawn().items()}


def _text(request: dict, name: str, what: str) -> str:
    value = request.get(name)
    if not isinstance(value, str) or not value:
        raise SegSSLError(f"missing \"{name}\": give {what}")
    return value


def _optional_int(request: dict, name: str) -> int | None:
    value = request.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value):
        raise SegSSLError(f"\"{name}\" must be a whole number, got {value!r}")
    return int(value)


def _is_cuda_oom(exc: Exception) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError)
