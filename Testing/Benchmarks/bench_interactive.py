"""Interactive worker (``segssl serve``) vs fresh ``segssl propagate`` runs, on a real CT.

Random-weight SAM 2.1 hiera-t (saved once as a checkpoint file that both routes load), CPU, the same
drawings for both routes: the left lung (HU threshold, largest component not touching the border)
painted on the middle slice ``m``, and a correction painted on slice ``m + 10``. Measured in one run:

- correction round-trip: in the worker, annotate the correction + propagate + save (the first drawing
  already propagated), vs a fresh ``segssl propagate`` of both drawings (process start to exit);
  ``--converge-slices N`` times it twice in the same worker: without the convergence stop, then (after
  an exact undo) with it, and compares the two results;
- first propagation: the worker's first propagate (model already loaded) and its whole first
  round-trip (process start, open, annotate, propagate, save), vs a fresh ``segssl propagate`` of the
  first drawing;
- time to a mask for a point + box prompt on a slice: cold (slice not yet encoded) and warm (its
  features cached);
- peak memory (VmHWM) of the worker and of each CLI run, and the feature cache's bytes.

The worker runs with ``--absent-slices 0`` so that it tracks exactly the slices the CLI tracks (with
random weights an early stop would make it look faster than it is). ``--worker-cache-mb`` sets the
feature cache bound (default 2048 MiB; pass several values to compare).

    OMP_NUM_THREADS=1 nice -n 10 /work/main/.venv/bin/python Testing/Benchmarks/bench_interactive.py --image-size 512

``--slices N`` runs both routes on a slab of N slices around the volume's middle (written as its own
file with the slab's geometry): at 1024 px a SAM 2 step costs several times a 512 px one, and a
60-slice pass would not fit a shared 2-core machine. The prompts then go on slices ``m - 8`` (cold)
and ``m - 5`` (warm) when ``m - 20`` lies outside the slab.

On a shared machine compare the CPU seconds (user + system of each process, all threads), which the
other jobs disturb far less than wall time; one torch thread per process (``OMP_NUM_THREADS=1``)
keeps idle threads from spinning when the cores are oversubscribed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DEFAULT_VOLUME = Path("/work/shared/data/unlabeled_ct/chest_002.nii.gz")


def _load() -> str:
    """The machine's load averages (1, 5, 15 min): other jobs share it."""
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _environment(code: Path | None = None) -> dict:
    """The environment of a child process: this tree's SegSSLLib first, or the tree ``code``."""
    return dict(os.environ, PYTHONPATH=str(code or ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _lung(slice_hu: np.ndarray) -> np.ndarray:
    """The largest air-like component of the slice that does not touch its border (a lung)."""
    from scipy import ndimage

    air = ndimage.binary_opening(slice_hu < -500, iterations=2)
    pieces, count = ndimage.label(air)
    border = set(np.unique(np.concatenate([pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1]])))
    sizes = ndimage.sum(air, pieces, range(1, count + 1))
    candidates = [(size, index) for index, size in enumerate(sizes, start=1) if index not in border]
    if not candidates:
        raise SystemExit("no lung found on the slice; pick another --volume or slice")
    return pieces == max(candidates)[1]


def prepare(volume: Path, folder: Path, image_size: int, slab: int | None = None) -> dict:
    import SimpleITK as sitk
    import torch

    from SegSSLLib.weights.models import load_sam2_video_predictor

    image = sitk.ReadImage(str(volume))
    hu = sitk.GetArrayFromImage(image)
    if slab:
        if not 21 <= slab <= hu.shape[0]:  # the correction lies 10 slices above the middle one
            raise SystemExit(f"--slices must be between 21 and {hu.shape[0]} (a correction 10 slices above the middle)")
        start = (hu.shape[0] - slab) // 2
        image = image[:, :, start : start + slab]  # SimpleITK slicing keeps the slab's geometry
        volume = folder / "slab.nii.gz"
        sitk.WriteImage(image, str(volume))
        hu = sitk.GetArrayFromImage(image)
    middle = hu.shape[0] // 2
    drawings = {}
    for name, slices in (("first", (middle,)), ("both", (middle, middle + 10)), ("correction", (middle + 10,))):
        drawn = np.zeros(hu.shape, np.uint8)
        for k in slices:
            drawn[k] = _lung(hu[k])
        labels = sitk.GetImageFromArray(drawn)
        labels.CopyInformation(image)
        path = folder / f"{name}.nii.gz"
        sitk.WriteImage(labels, str(path))
        drawings[name] = path
    torch.manual_seed(0)
    predictor = load_sam2_video_predictor(None, "sam2.1_hiera_t", "cpu", image_size)
    checkpoint = folder / "sam2_random.pt"
    torch.save({"model": predictor.state_dict()}, checkpoint)
    # cold: not encoded yet; warm: encoded by the first propagation
    prompt_slices = (middle - 20, middle - 15) if middle >= 20 else (middle - 8, middle - 5)
    prompts = {}
    for k in prompt_slices:
        rows, cols = np.nonzero(_lung(hu[k]))
        j, i = int(rows.mean()), int(cols.mean())
        prompts[k] = {"points": [[i, j, k]], "box": [[int(cols.min()), int(rows.min()), k], [int(cols.max()), int(rows.max()), k]]}
    return {"middle": middle, "slices": hu.shape[0], "drawings": drawings, "checkpoint": checkpoint, "prompts": prompts,
            "volume": volume, "prompt_slices": prompt_slices}


def run_cli(volume: Path, annotation: Path, output: Path, checkpoint: Path, image_size: int) -> dict:
    command = [sys.executable, "-m", "SegSSLLib", "propagate", "--input", str(volume), "--annotation", str(annotation),
               "--output", str(output), "--backend", "sam2", "--sam2-checkpoint", str(checkpoint),
               "--sam2-config", "sam2.1_hiera_t", "--image-size", str(image_size), "--device", "cpu", "--progress", "none"]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"segssl propagate failed: {child.stderr.read()}")
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024}


class WorkerProcess:
    """A `segssl serve` process driven over its JSON lines (shared by the worker benchmarks).

    ``options`` follow ``serve``; ``program`` is what runs after the Python executable (a benchmark
    may wrap the worker in a script of its own); ``code``: another tree's SegSSLLib (e.g. main's, to
    compare with this one; the worker then also starts in that folder, since ``-m`` imports from there)."""

    def __init__(self, *options: str, program: tuple[str, ...] = ("-m", "SegSSLLib"), code: Path | None = None):
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, *program, "serve", "--device", "cpu", *options], cwd=str(code) if code else None,
            env=_environment(code), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.next_id = 0

    def request(self, op: str, on_event=None, **fields) -> tuple[dict, float]:
        """(done event, wall seconds) of one request; ``on_event`` sees its other events (progress, partial)."""
        self.next_id += 1
        started = time.perf_counter()
        self.process.stdin.write(json.dumps({"id": self.next_id, "op": op, **fields}) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            event = json.loads(line)
            if event.get("id") != self.next_id:
                continue
            if event["event"] == "error":
                raise SystemExit(f"worker error on {op}: {event['message']}")
            if event["event"] == "done":
                return event, time.perf_counter() - started
            if on_event is not None:
                on_event(event)
        raise SystemExit(f"the worker ended during {op}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the worker so far (all its threads): a measure the machine's other
        jobs disturb far less than wall time."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        self.request("close")
        self.process.wait(timeout=60)


def _correction(worker: WorkerProcess, drawings: dict, output: Path, converge: int) -> dict:
    """One correction round-trip (annotate + propagate + save) with the convergence stop at ``converge``."""
    result = {}
    started, cpu = time.perf_counter(), worker.cpu_seconds()
    worker.request("annotate", annotation=str(drawings["correction"]))
    event, result["propagate"] = worker.request("propagate", converge_slices=converge)
    worker.request("save", output=str(output))
    result["round_trip"] = time.perf_counter() - started
    result["round_trip_cpu"] = worker.cpu_seconds() - cpu
    result["computed"] = event["computed_slices"]
    result["converged"] = event["converged"]
    result["cache"] = event["feature_cache"]
    return result


def _compare(off: Path, on: Path) -> dict:
    """How the result with the convergence stop differs from the one without (same drawings)."""
    import SimpleITK as sitk

    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(p))) != 0 for p in (off, on))
    differing = [int(k) for k in np.flatnonzero((a != b).any(axis=(1, 2)))]
    dice = 2 * (a & b).sum() / max(1, a.sum() + b.sum())
    return {"slices_differing": differing, "dice_on_vs_off": round(float(dice), 4),
            "labelled_slices_off": int(a.any(axis=(1, 2)).sum()), "labelled_slices_on": int(b.any(axis=(1, 2)).sum())}


def _correction_iou(result: Path, correction: Path) -> float:
    """IoU of the correction's drawing with the first result on its slice: how much the correction corrects."""
    import SimpleITK as sitk

    drawn = sitk.GetArrayFromImage(sitk.ReadImage(str(correction))) != 0
    k = int(np.flatnonzero(drawn.any(axis=(1, 2)))[0])
    before = sitk.GetArrayFromImage(sitk.ReadImage(str(result)))[k] != 0
    return round(float((before & drawn[k]).sum() / max(1, (before | drawn[k]).sum())), 4)


def run_worker(volume: Path, case: dict, folder: Path, image_size: int, cache_mb: int, converge: int = 0) -> dict:
    drawings, result = case["drawings"], {}
    worker = WorkerProcess("--absent-slices", "0", "--feature-cache-mb", str(cache_mb))
    _, seconds = worker.request("open", input=str(volume), backend="sam2", sam2_checkpoint=str(case["checkpoint"]),
                                sam2_config="sam2.1_hiera_t", image_size=image_size)
    result["start_and_open"] = time.perf_counter() - worker.started
    result["start_and_open_cpu"] = worker.cpu_seconds()
    cold, warm = case["prompts"]
    event, seconds = worker.request("annotate", object=2, **case["prompts"][cold])
    result["prompt_cold"], result["prompt_cold_model"] = seconds, event["model_seconds"]
    worker.request("undo")
    started, cpu = time.perf_counter(), worker.cpu_seconds()
    worker.request("annotate", annotation=str(drawings["first"]))
    event, result["first_propagate"] = worker.request("propagate")
    result["first_propagate_cpu"] = worker.cpu_seconds() - cpu
    result["first_computed"] = event["computed_slices"]
    worker.request("save", output=str(folder / f"worker_first_{cache_mb}.nii.gz"))
    result["first_round_trip"] = time.perf_counter() - started
    result["correction_slice_iou_vs_first_result"] = _correction_iou(folder / f"worker_first_{cache_mb}.nii.gz",
                                                                     drawings["correction"])
    result["first_from_start"] = time.perf_counter() - worker.started
    # The correction without the convergence stop, taken back (undo is exact), then with it: both on
    # a cache that holds every slice's features since the first propagation.
    off = _correction(worker, drawings, folder / f"worker_both_{cache_mb}.nii.gz", 0)
    result["correction_propagate"], result["correction_computed"] = off["propagate"], off["computed"]
    result["correction_round_trip"], result["correction_round_trip_cpu"] = off["round_trip"], off["round_trip_cpu"]
    result["cache_after_correction"] = off["cache"]
    if converge:
        worker.request("undo")
        result["converge"] = _correction(worker, drawings, folder / f"worker_converged_{cache_mb}.nii.gz", converge)
        result["converge"]["vs_off"] = _compare(folder / f"worker_both_{cache_mb}.nii.gz",
                                                folder / f"worker_converged_{cache_mb}.nii.gz")
    event, seconds = worker.request("annotate", object=2, **case["prompts"][warm])
    result["prompt_warm"], result["prompt_warm_model"] = seconds, event["model_seconds"]
    worker.request("undo")
    result["peak_rss_mib"] = worker.peak_rss_mib()
    worker.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volume", type=Path, default=DEFAULT_VOLUME)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--worker-cache-mb", type=int, nargs="+", default=[2048])
    parser.add_argument("--skip-first-cli", action="store_true", help="no CLI run of the first drawing alone")
    parser.add_argument("--slices", type=int, default=None, help="a slab of this many slices around the middle")
    parser.add_argument("--converge-slices", type=int, default=0,
                        help="also time the correction with the convergence stop at this many slices (0: not)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        case = prepare(args.volume, folder, args.image_size, args.slices)
        print(f"SAM 2.1 hiera-t, random weights, CPU, {args.image_size} px; {args.volume.name}: {case['slices']} slices"
              f"{' (slab around the middle)' if args.slices else ''}, drawn on {case['middle']}, correction on "
              f"{case['middle'] + 10}, prompts on {case['prompt_slices']}; torch threads: default; "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
        args.volume = case["volume"]
        print(f"before the worker: {_load()}", flush=True)
        workers = {}
        for cache_mb in args.worker_cache_mb:
            workers[cache_mb] = run_worker(args.volume, case, folder, args.image_size, cache_mb, args.converge_slices)
            print(f"worker (feature cache {cache_mb} MiB): {json.dumps(workers[cache_mb])}; {_load()}", flush=True)
        both = run_cli(args.volume, case["drawings"]["both"], folder / "cli_both.nii.gz", case["checkpoint"], args.image_size)
        print(f"cli, both drawings: {json.dumps(both)}; {_load()}", flush=True)
        first = None
        if not args.skip_first_cli:
            first = run_cli(args.volume, case["drawings"]["first"], folder / "cli_first.nii.gz", case["checkpoint"],
                            args.image_size)
            print(f"cli, first drawing: {json.dumps(first)}; {_load()}", flush=True)
        print()
        print(f"{'cache MiB':>9} {'correction: cli s':>18} {'worker s':>9} {'ratio':>6} | {'first: cli s':>13} "
              f"{'worker propagate s':>19} {'ratio':>6} {'worker from start s':>20} | {'prompt cold/warm s':>19} | "
              f"{'peak RSS MiB worker/cli':>24} {'cache MiB':>9}")
        for cache_mb, w in workers.items():
            first_cli = first["seconds"] if first else float("nan")
            print(f"{cache_mb:>9} {both['seconds']:>18.1f} {w['correction_round_trip']:>9.1f} "
                  f"{both['seconds'] / w['correction_round_trip']:>6.1f} | {first_cli:>13.1f} {w['first_propagate']:>19.1f} "
                  f"{first_cli / w['first_propagate']:>6.2f} {w['first_from_start']:>20.1f} | "
                  f"{w['prompt_cold']:>8.2f} / {w['prompt_warm']:<8.2f} | "
                  f"{w['peak_rss_mib']:>11.0f} / {both['peak_rss_mib']:<10.0f} "
                  f"{w['cache_after_correction']['peak_bytes'] / 2**20:>9.0f}")
            print(f"{'':>9} CPU seconds: correction cli {both['cpu_seconds']:.1f} / worker "
                  f"{w['correction_round_trip_cpu']:.1f} = {both['cpu_seconds'] / w['correction_round_trip_cpu']:.1f}x; "
                  f"first propagation cli {first['cpu_seconds'] if first else float('nan'):.1f} / worker "
                  f"{w['first_propagate_cpu']:.1f}; worker start + open {w['start_and_open_cpu']:.1f}")
            c = w.get("converge")
            if c:
                print(f"{'':>9} convergence stop {args.converge_slices}: correction cli {both['seconds']:.1f} s / worker "
                      f"{c['round_trip']:.1f} s = {both['seconds'] / c['round_trip']:.1f}x wall, CPU {both['cpu_seconds']:.1f}"
                      f" / {c['round_trip_cpu']:.1f} = {both['cpu_seconds'] / c['round_trip_cpu']:.1f}x; slices re-tracked "
                      f"{c['computed']} (off: {w['correction_computed']}); converged {json.dumps(c['converged'])}; "
                      f"vs off {json.dumps(c['vs_off'])}")


if __name__ == "__main__":
    main()
