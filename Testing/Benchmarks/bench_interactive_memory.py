"""Peak memory of the interactive worker (``segssl serve``) with the feature cache bounded, at 60 and 200 slices.

Random-weight SAM 2.1 hiera-t (saved once as a checkpoint that every worker loads), CPU, real CT:

- 60 slices: ``unlabeled_ct/chest_001.nii.gz`` (512×512×130, 3 mm), its middle 60 slices (35–94);
- 200 slices: the whole of chest_001 mirrored at both ends (``numpy.pad(mode="symmetric")``, 35 slices
  each side: 35 + 130 + 35), so the anatomy runs on without a seam; the geometry is chest_001's with
  the origin moved 35 slices down.

Both volumes have chest_001's slice 65 in the middle. Each configuration is a fresh worker (one
process, one torch thread, ``--absent-slices 0`` so that every slice is tracked): open, annotate the
left lung (HU threshold) on the middle slice ``m``, propagate, annotate a correction on ``m + 10``,
propagate, save. For each worker: its peak RSS (VmHWM) after open, after the first propagation and
at the end; the feature cache's bytes, peak bytes, bound, hits, misses and evictions; whether the
bound held (cache peak <= bound); the largest sam2 inference state of one run (the tensors its
per-frame output dicts hold) and the bytes of the per-slice logits the session keeps.

The worker runs in this script's child mode, which measures the sam2 states and the session's runs
by wrapping ``Sam2Backend._run_group`` and then runs ``segssl serve`` unchanged.

    OMP_NUM_THREADS=1 nice -n 10 /work/main/.venv/bin/python Testing/Benchmarks/bench_interactive_memory.py \\
        --slices 60 200 --cache-mb 128 0

``--cache-mb 0`` means no bound that can bind (64 GiB). Each bound is compared with the unbounded
worker on the same volume, in the same run.

``--open-only``: each worker only opens the volume (frames prepared, the model loaded, two slices
encoded) and is closed; its peak RSS after ``open`` is the transient of preparing the frames plus
the model. ``--code TREE ...`` runs the worker from each of these source trees in turn (the same
volume, checkpoint and settings; interleaved per volume), to compare code before and after a change
in one run:

    OMP_NUM_THREADS=1 nice -n 10 /work/main/.venv/bin/python Testing/Benchmarks/bench_interactive_memory.py \\
        --open-only --slices 60 200 --code /work/main .
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
SOURCE = Path("/work/shared/data/unlabeled_ct/chest_001.nii.gz")
UNBOUNDED_MB = 64 * 1024


def _load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _status(pid: int | str = "self") -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmHWM:", "VmRSS:")):
            name, value = line.split(":")
            fields[name] = int(value.split()[0]) / 1024
    return fields


def _tensor_bytes(value, seen: set) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        key = (value.untyped_storage().data_ptr(), value.device.type)
        if key in seen:
            return 0
        seen.add(key)
        return value.untyped_storage().nbytes()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v, seen) for v in value)
    return 0


def child(stats_path: Path) -> int:
    """``segssl serve`` with its SAM 2 runs measured: each run's sam2 state bytes and the logits it keeps."""
    import SegSSLLib.propagation.sam2 as sam2_module
    from SegSSLLib.cli import main
    from SegSSLLib.propagation.session import Sam2Backend

    made = []
    original_state, original_run = sam2_module.in_memory_state, Sam2Backend._run_group

    def in_memory_state(*args, **kwargs):
        state = original_state(*args, **kwargs)
        made.append(state)
        return state

    def run_group(self, kind, source, target, cond, members, *args, **kwargs):
        made.clear()
        started = time.perf_counter()
        runs = original_run(self, kind, source, target, cond, members, *args, **kwargs)
        state_bytes = sum(_tensor_bytes({k: s[k] for k in ("output_dict_per_obj", "temp_output_dict_per_obj",
                                                           "constants", "cached_features")}, set()) for s in made)
        kept = sum(_tensor_bytes(run.frames, set()) for run in runs.values())
        tracked = max((len(s["frames_tracked_per_obj"].get(0, {})) for s in made), default=0)
        with open(stats_path, "a") as out:
            out.write(json.dumps({"kind": kind, "source": source, "target": target, "frames_tracked": tracked,
                                  "state_bytes": state_bytes, "kept_logits_bytes": kept,
                                  "seconds": time.perf_counter() - started, **_status()}) + "\n")
        made.clear()
        return runs

    sam2_module.in_memory_state = in_memory_state
    Sam2Backend._run_group = run_group
    return main(sys.argv[sys.argv.index("--child") + 2:])


def build_volumes(folder: Path, counts: list[int]) -> dict[int, Path]:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(SOURCE))
    hu = sitk.GetArrayFromImage(image)  # (130, 512, 512)
    paths = {}
    for count in counts:
        if count <= hu.shape[0]:
            start = (hu.shape[0] - count) // 2
            volume = image[:, :, start : start + count]
        else:
            pad = (count - hu.shape[0]) // 2
            padded = np.pad(hu, ((pad, count - hu.shape[0] - pad), (0, 0), (0, 0)), mode="symmetric")
            volume = sitk.GetImageFromArray(padded)
            volume.SetSpacing(image.GetSpacing())
            volume.SetDirection(image.GetDirection())
            volume.SetOrigin(image.TransformContinuousIndexToPhysicalPoint((0, 0, -pad)))
        paths[count] = folder / f"ct_{count}.nii.gz"
        sitk.WriteImage(volume, str(paths[count]))
    return paths


def drawings(volume: Path, folder: Path) -> tuple[int, Path, Path]:
    import SimpleITK as sitk

    from bench_interactive import _lung

    image = sitk.ReadImage(str(volume))
    hu = sitk.GetArrayFromImage(image)
    middle = hu.shape[0] // 2
    paths = []
    for name, k in (("first", middle), ("correction", middle + 10)):
        drawn = np.zeros(hu.shape, np.uint8)
        drawn[k] = _lung(hu[k])
        labels = sitk.GetImageFromArray(drawn)
        labels.CopyInformation(image)
        paths.append(folder / f"{volume.stem.split('.')[0]}_{name}.nii.gz")
        sitk.WriteImage(labels, str(paths[-1]))
    return middle, paths[0], paths[1]


def run_worker(volume: Path, first: Path, correction: Path, checkpoint: Path, image_size: int, cache_mb: int,
               folder: Path) -> dict:
    from bench_interactive import WorkerProcess

    stats = folder / f"stats_{volume.stem}_{cache_mb}.jsonl"
    stats.unlink(missing_ok=True)
    worker = WorkerProcess("--absent-slices", "0", "--feature-cache-mb", str(cache_mb),
                           program=(__file__, "--child", str(stats)))
    process = worker.process

    def request(op, **fields):
        return worker.request(op, **fields)[0]

    result = {"cache_mb": cache_mb}
    started = time.perf_counter()
    request("open", input=str(volume), backend="sam2", sam2_checkpoint=str(checkpoint), sam2_config="sam2.1_hiera_t",
            image_size=image_size)
    result["after_open"] = _status(process.pid)["VmHWM"]
    request("annotate", annotation=str(first))
    event = request("propagate")
    result["after_first_propagate"] = _status(process.pid)["VmHWM"]
    result["first_computed"], result["cache_after_first"] = event["computed_slices"], event["feature_cache"]
    request("annotate", annotation=str(correction))
    event = request("propagate")
    result["correction_computed"], result["cache"] = event["computed_slices"], event["feature_cache"]
    request("save", output=str(folder / f"out_{volume.stem}_{cache_mb}.nii.gz"))
    result["peak_rss_mib"] = _status(process.pid)["VmHWM"]
    result["rss_end_mib"] = _status(process.pid)["VmRSS"]
    result["seconds"] = time.perf_counter() - started
    request("close")
    process.wait(timeout=60)
    runs = [json.loads(line) for line in stats.read_text().splitlines()]
    result["runs"] = runs
    result["max_state_mib"] = max(r["state_bytes"] for r in runs) / 2**20
    result["max_state_frames"] = max(r["frames_tracked"] for r in runs)
    result["kept_logits_mib"] = sum(r["kept_logits_bytes"] for r in runs) / 2**20
    result["bound_held"] = result["cache"]["peak_bytes"] <= result["cache"]["max_bytes"]
    return result


def imported_from(code: Path | None) -> str:
    """Where a worker started for ``code`` imports SegSSLLib from (checked, not assumed)."""
    import subprocess

    from bench_interactive import _environment

    return subprocess.run([sys.executable, "-c", "import SegSSLLib; print(SegSSLLib.__file__)"], cwd=str(code) if code else None,
                          env=_environment(code), capture_output=True, text=True, check=True).stdout.strip()


def open_only(volume: Path, checkpoint: Path, image_size: int, code: Path | None) -> dict:
    """A fresh worker that opens ``volume`` with SAM 2 and closes: its peak RSS after open."""
    from bench_interactive import WorkerProcess

    worker = WorkerProcess("--absent-slices", "0", code=code)
    worker.request("status")  # started (no torch yet)
    before = _status(worker.process.pid)
    cpu = worker.cpu_seconds()
    event, seconds = worker.request("open", input=str(volume), backend="sam2", sam2_checkpoint=str(checkpoint),
                                    sam2_config="sam2.1_hiera_t", image_size=image_size)
    after = _status(worker.process.pid)
    result = {"peak_after_open_mib": after["VmHWM"], "rss_after_open_mib": after["VmRSS"],
              "peak_before_open_mib": before["VmHWM"], "open_seconds": seconds,
              "open_cpu_seconds": worker.cpu_seconds() - cpu, "encode_seconds": event.get("encode_seconds")}
    worker.close()
    return result


def main_open_only(args, folder: Path, checkpoint: Path, volumes: dict) -> None:
    codes = [Path(c).resolve() for c in args.code] if args.code else [None]
    for code in codes:
        print(f"code {code or ROOT}: SegSSLLib from {imported_from(code)}", flush=True)
    results = {}
    for count, volume in volumes.items():
        for code in codes:
            result = open_only(volume, checkpoint, args.image_size, code)
            results[(count, code)] = result
            print(f"{count} slices, code {code or ROOT}: {json.dumps(result)}; {_load()}", flush=True)
    print()
    print(f"{'slices':>6} {'code':>28} {'peak RSS after open MiB':>24} {'RSS after open MiB':>19} "
          f"{'open wall s':>11} {'open CPU s':>10}")
    for (count, code), r in results.items():
        print(f"{count:>6} {str(code or ROOT):>28} {r['peak_after_open_mib']:>24.0f} {r['rss_after_open_mib']:>19.0f} "
              f"{r['open_seconds']:>11.1f} {r['open_cpu_seconds']:>10.1f}")


def main() -> None:
    if "--child" in sys.argv:
        raise SystemExit(child(Path(sys.argv[sys.argv.index("--child") + 1])))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, nargs="+", default=[60, 200])
    parser.add_argument("--cache-mb", type=int, nargs="+", default=[128, 0], help="bounds to compare; 0: unbounded")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--open-only", action="store_true", help="only open each volume: peak RSS after open")
    parser.add_argument("--code", nargs="+", help="with --open-only: source trees to run the worker from, in turn")
    args = parser.parse_args()
    if args.code and not args.open_only:
        parser.error("--code needs --open-only (the full run measures the worker through this tree's wrapper)")
    import torch

    from SegSSLLib.weights.models import load_sam2_video_predictor

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.manual_seed(0)
        predictor = load_sam2_video_predictor(None, "sam2.1_hiera_t", "cpu", args.image_size)
        checkpoint = folder / "sam2_random.pt"
        torch.save({"model": predictor.state_dict()}, checkpoint)
        del predictor
        volumes = build_volumes(folder, args.slices)
        print(f"SAM 2.1 hiera-t, random weights, CPU, {args.image_size} px, --absent-slices 0; "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; {_load()}", flush=True)
        if args.open_only:
            return main_open_only(args, folder, checkpoint, volumes)
        results = {}
        for count, volume in volumes.items():
            middle, first, correction = drawings(volume, folder)
            for cache_mb in args.cache_mb:
                bound = cache_mb or UNBOUNDED_MB
                result = run_worker(volume, first, correction, checkpoint, args.image_size, bound, folder)
                results[(count, cache_mb)] = result
                print(f"{count} slices (drawn on {middle}, correction on {middle + 10}), cache bound "
                      f"{'none' if not cache_mb else f'{cache_mb} MiB'}: {json.dumps(result)}; {_load()}", flush=True)
        print()
        print(f"{'slices':>6} {'bound MiB':>9} {'peak RSS MiB':>12} {'vs unbounded':>12} {'after open':>10} "
              f"{'after 1st':>9} {'cache peak MiB':>14} {'held':>5} {'hits/misses/evict':>18} "
              f"{'max sam2 state MiB (frames)':>28} {'kept logits MiB':>15} {'s':>6}")
        for (count, cache_mb), r in results.items():
            unbounded = results.get((count, 0))
            ratio = r["peak_rss_mib"] / unbounded["peak_rss_mib"] if unbounded else float("nan")
            c = r["cache"]
            print(f"{count:>6} {cache_mb or 'none':>9} {r['peak_rss_mib']:>12.0f} {ratio:>12.2f} {r['after_open']:>10.0f} "
                  f"{r['after_first_propagate']:>9.0f} {c['peak_bytes'] / 2**20:>14.0f} {str(r['bound_held']):>5} "
                  f"{c['hits']:>6}/{c['misses']}/{c['evictions']:<6} "
                  f"{r['max_state_mib']:>20.1f} ({r['max_state_frames']:>3}) {r['kept_logits_mib']:>15.1f} "
                  f"{r['seconds']:>6.0f}")


if __name__ == "__main__":
    main()
