"""Partial results of ``segssl serve``'s propagate: what they cost the worker, and how soon the first arrives.

A real CT (default: chest_002), the left lung drawn on the middle slice, the registration backend
(no model: the propagation itself is the work), one fresh worker per setting, in one run:
``partial_dir`` off, then on with ``partial_seconds`` 1.0 and 0 (after every slice). Reported per
setting: the propagate's wall and CPU seconds (the worker process's user + system time, which other
jobs on a shared machine disturb far less), the number of partial events, and the seconds from the
request to the first partial event (without partials the first labels come with the ``done``).

    OMP_NUM_THREADS=1 nice -n 10 /work/main/.venv/bin/python Testing/Benchmarks/bench_partial_results.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_interactive import WorkerProcess, _lung  # noqa: E402
from bench_refine_worker import DEFAULT_VOLUME  # noqa: E402


def propagate(volume: Path, drawing: Path, partial: dict | None) -> dict:
    worker = WorkerProcess()
    worker.request("open", input=str(volume), backend="registration")
    worker.request("annotate", annotation=str(drawing))
    firsts: list[float] = []
    started, cpu = time.perf_counter(), worker.cpu_seconds()

    def on_event(event: dict) -> None:
        if event["event"] == "partial":
            firsts.append(time.perf_counter() - started)

    done, wall = worker.request("propagate", on_event=on_event, **(partial or {}))
    result = {"wall": wall, "cpu": worker.cpu_seconds() - cpu, "partials": len(firsts),
              "first_partial": firsts[0] if firsts else None, "computed": done["computed_slices"]}
    worker.close()
    return result


def main() -> None:
    import SimpleITK as sitk

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volume", type=Path, default=DEFAULT_VOLUME)
    parser.add_argument("--slices", type=int, default=24, help="the middle slices of the volume kept (0: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image = sitk.ReadImage(str(args.volume))
        count = image.GetSize()[2]
        if args.slices and args.slices < count:  # the middle slices, geometry kept (SimpleITK slicing)
            start = (count - args.slices) // 2
            image = image[:, :, start : start + args.slices]
        volume = folder / "volume.nrrd"
        sitk.WriteImage(image, str(volume))
        hu = sitk.GetArrayFromImage(image)
        drawn = np.zeros(hu.shape, np.uint8)
        drawn[hu.shape[0] // 2] = _lung(hu[hu.shape[0] // 2])
        labels = sitk.GetImageFromArray(drawn)
        labels.CopyInformation(image)
        drawing = folder / "drawing.nii.gz"
        sitk.WriteImage(labels, str(drawing))
        partials = folder / "partials"
        partials.mkdir()
        print(f"registration backend, {args.volume.name}: {hu.shape[0]} slices of {hu.shape[2]}x{hu.shape[1]}", flush=True)
        rows = {}
        for name, partial in (("off", None), ("every 1.0 s", {"partial_dir": str(partials), "partial_seconds": 1.0}),
                              ("every slice", {"partial_dir": str(partials), "partial_seconds": 0})):
            rows[name] = propagate(volume, drawing, partial)
            print(f"{name}: {json.dumps(rows[name])}", flush=True)
        base = rows["off"]
        print()
        print(f"{'partials':>12} {'wall s':>8} {'cpu s':>8} {'cpu vs off':>10} {'events':>7} {'first labels after s':>21}")
        for name, r in rows.items():
            first = r["first_partial"] if r["first_partial"] is not None else r["wall"]
            print(f"{name:>12} {r['wall']:>8.1f} {r['cpu']:>8.1f} {r['cpu'] / base['cpu']:>10.3f} {r['partials']:>7} "
                  f"{first:>21.2f}")


if __name__ == "__main__":
    main()
