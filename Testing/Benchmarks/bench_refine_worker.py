"""Refine with SAM in the interactive worker (``segssl serve``'s ``refine``) vs a fresh ``segssl refine``.

A real CT (default: chest_002 from ../shared/data), the left lung (HU threshold, largest component not
touching the border) on ``--slices`` consecutive slices around the middle as the coarse mask, a
random-weight SAM (default: the real ViT-B shapes at 1024 px, as sam_vit_b; ``--sam tiny``: the test
model) saved once as a checkpoint file that both routes load, CPU. Measured in one run:

- a fresh ``segssl refine`` process (start to exit: imports, model load, every slice encoded);
- in one worker: its first refine (the model loaded and the slices encoded in the request), the same
  refine again (embeddings reused), and a refine of a changed mask on the same slices (the user
  edited the coarse mask: the boxes change, the slices do not);
- wall and CPU seconds (user + system of the process, all threads; the other jobs on a shared
  machine disturb CPU time far less than wall time), and whether the worker's result equals the CLI's.

    OMP_NUM_THREADS=1 nice -n 10 /work/main/.venv/bin/python Testing/Benchmarks/bench_refine_worker.py

``--code TREE ...`` runs the worker part from each of these source trees in turn (e.g. main's and this
one, to compare a change in one run); ``--repeats N`` repeats the same refine N times per worker
(the median is reported); ``--no-cli`` leaves out the fresh ``segssl refine``:

    OMP_NUM_THREADS=1 nice -n 10 /work/main/.venv/bin/python Testing/Benchmarks/bench_refine_worker.py \\
        --code /work/main . --repeats 5 --no-cli
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

from bench_interactive import WorkerProcess, _environment, _lung  # noqa: E402  (same folder: shared helpers)


def prepare(volume: Path, folder: Path, slices: int, sam: str) -> dict:
    import SimpleITK as sitk
    import torch
    from scipy import ndimage

    from SegSSLLib.weights.models import TINY_SAM, SamArchitecture, build_sam

    image = sitk.ReadImage(str(volume))
    hu = sitk.GetArrayFromImage(image)
    middle = hu.shape[0] // 2
    masks = {}
    for name in ("coarse", "edited"):
        drawn = np.zeros(hu.shape, np.uint8)
        for k in range(middle - slices // 2, middle - slices // 2 + slices):
            lung = _lung(hu[k])
            drawn[k] = ndimage.binary_dilation(lung, iterations=3) if name == "edited" else lung
        labels = sitk.GetImageFromArray(drawn)
        labels.CopyInformation(image)
        masks[name] = folder / f"{name}.nii.gz"
        sitk.WriteImage(labels, str(masks[name]))
    torch.manual_seed(0)
    model = build_sam(TINY_SAM if sam == "tiny" else SamArchitecture())
    checkpoint = folder / f"sam_{sam}_random.pth"
    torch.save(model.state_dict(), checkpoint)
    return {"masks": masks, "checkpoint": checkpoint, "middle": middle, "slices": hu.shape[0]}


def run_cli(volume: Path, mask: Path, output: Path, checkpoint: Path) -> dict:
    command = [sys.executable, "-m", "SegSSLLib", "refine", "--input", str(volume), "--mask", str(mask),
               "--output", str(output), "--sam-checkpoint", str(checkpoint), "--device", "cpu", "--progress", "none"]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"segssl refine failed: {child.stderr.read()}")
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime}


class Worker(WorkerProcess):
    def request(self, op: str, **fields) -> dict:
        """The done event with the request's wall and worker CPU seconds."""
        cpu = self.cpu_seconds()
        event, wall = super().request(op, **fields)
        return {**event, "wall": wall, "cpu": self.cpu_seconds() - cpu}


def run_worker(case: dict, volume: Path, folder: Path, code: Path | None, repeats: int) -> dict:
    """One worker (from source tree ``code``): first refine, the same refine ``repeats`` times, an edited mask."""
    worker = Worker(code=code)
    started = worker.request("status")  # the worker's own start (no torch yet)
    request = {"input": str(volume), "sam_checkpoint": str(case["checkpoint"])}
    tag = Path(code).name if code else "this"
    first = worker.request("refine", mask=str(case["masks"]["coarse"]), output=str(folder / f"w1_{tag}.nii.gz"), **request)
    first_from_start = time.perf_counter() - worker.started
    first_cpu_from_start = worker.cpu_seconds()
    again = [worker.request("refine", mask=str(case["masks"]["coarse"]), output=str(folder / f"w2_{tag}.nii.gz"),
                            **request) for _ in range(repeats)]
    edited = worker.request("refine", mask=str(case["masks"]["edited"]), output=str(folder / f"w3_{tag}.nii.gz"), **request)
    worker.close()
    return {"started": started, "first": first, "first_from_start": first_from_start,
            "first_cpu_from_start": first_cpu_from_start, "again": again, "edited": edited,
            "output": folder / f"w1_{tag}.nii.gz"}


def main() -> None:
    import SimpleITK as sitk

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volume", type=Path, default=DEFAULT_VOLUME)
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--sam", choices=("vit_b", "tiny"), default="vit_b")
    parser.add_argument("--code", nargs="+", help="source trees to run the worker from, in turn (default: this one)")
    parser.add_argument("--repeats", type=int, default=1, help="times the same refine is repeated per worker")
    parser.add_argument("--no-cli", action="store_true", help="leave out the fresh segssl refine")
    args = parser.parse_args()
    codes = [Path(c).resolve() for c in args.code] if args.code else [None]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        case = prepare(args.volume, folder, args.slices, args.sam)
        print(f"SAM {args.sam}, random weights, CPU; {args.volume.name}: {case['slices']} slices, lung on {args.slices} "
              f"slices around {case['middle']}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
              f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
        workers = {}
        for code in codes:
            workers[code] = w = run_worker(case, args.volume, folder, code, args.repeats)
            for name, event in (("first", w["first"]), *((f"again {i + 1}", e) for i, e in enumerate(w["again"])),
                                ("edited", w["edited"])):
                print(f"worker ({code or ROOT}) {name}: wall {event['wall']:.2f} s, cpu {event['cpu']:.2f} s, encoded "
                      f"{event['encoded']}, reused {event['reused']}", flush=True)
        cli = None
        if not args.no_cli:
            cli = run_cli(args.volume, case["masks"]["coarse"], folder / "cli.nii.gz", case["checkpoint"])
            print(f"cli: {json.dumps(cli)}", flush=True)
        reference = folder / "cli.nii.gz" if cli else workers[codes[0]]["output"]
        print(f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print()
        base_wall, base_cpu = (cli["seconds"], cli["cpu_seconds"]) if cli else (None, None)
        print(f"{'':>50} {'wall s':>8} {'cli/it':>7} {'cpu s':>8} {'cli/it':>7}")
        if cli:
            print(f"{'fresh segssl refine':>50} {cli['seconds']:>8.2f} {1:>7.1f} {cli['cpu_seconds']:>8.2f} {1:>7.1f}")
        for code, w in workers.items():
            label = str(code or ROOT)
            print(f"worker from {label}: start (until its first answer) {w['started']['wall']:.2f} s wall")
            rows = (("start + first refine", w["first_from_start"], w["first_cpu_from_start"]),
                    ("first refine (loads SAM)", w["first"]["wall"], w["first"]["cpu"]),
                    (f"same refine again (median of {len(w['again'])})", float(np.median([e["wall"] for e in w["again"]])),
                     float(np.median([e["cpu"] for e in w["again"]]))),
                    ("edited mask, same slices", w["edited"]["wall"], w["edited"]["cpu"]))
            for name, wall, cpu in rows:
                ratios = (f"{base_wall / wall:>7.1f}", f"{base_cpu / max(cpu, 1e-3):>7.1f}") if cli else ("-", "-")
                print(f"{name:>50} {wall:>8.2f} {ratios[0]:>7} {cpu:>8.2f} {ratios[1]:>7}")
            same = np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(reference))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(w["output"]))))
            print(f"  its result equals the {'CLI' if cli else 'first worker'}'s: {same}")


if __name__ == "__main__":
    main()
