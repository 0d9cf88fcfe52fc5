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


def main() -> None:
    import SimpleITK as sitk

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volume", type=Path, default=DEFAULT_VOLUME)
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--sam", choices=("vit_b", "tiny"), default="vit_b")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        case = prepare(args.volume, folder, args.slices, args.sam)
        print(f"SAM {args.sam}, random weights, CPU; {args.volume.name}: {case['slices']} slices, lung on {args.slices} "
              f"slices around {case['middle']}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
        worker = Worker()
        started = worker.request("status")  # the worker's own start (no torch yet)
        request = {"input": str(args.volume), "sam_checkpoint": str(case["checkpoint"])}
        first = worker.request("refine", mask=str(case["masks"]["coarse"]), output=str(folder / "w1.nii.gz"), **request)
        first_from_start = time.perf_counter() - worker.started
        first_cpu_from_start = worker.cpu_seconds()
        again = worker.request("refine", mask=str(case["masks"]["coarse"]), output=str(folder / "w2.nii.gz"), **request)
        edited = worker.request("refine", mask=str(case["masks"]["edited"]), output=str(folder / "w3.nii.gz"), **request)
        worker.close()
        for name, event in (("first", first), ("again", again), ("edited", edited)):
            print(f"worker {name}: wall {event['wall']:.2f} s, cpu {event['cpu']:.2f} s, encoded {event['encoded']}, "
                  f"reused {event['reused']}", flush=True)
        cli = run_cli(args.volume, case["masks"]["coarse"], folder / "cli.nii.gz", case["checkpoint"])
        print(f"cli: {json.dumps(cli)}", flush=True)
        same = np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "cli.nii.gz"))),
                              sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "w1.nii.gz"))))
        print()
        print(f"{'':>34} {'wall s':>8} {'cli/it':>7} {'cpu s':>8} {'cli/it':>7}")
        print(f"{'fresh segssl refine':>34} {cli['seconds']:>8.2f} {1:>7.1f} {cli['cpu_seconds']:>8.2f} {1:>7.1f}")
        print(f"worker start (until its first answer): {started['wall']:.2f} s wall")
        rows = (("worker: start + first refine", first_from_start, first_cpu_from_start),
                ("worker: first refine (loads SAM)", first["wall"], first["cpu"]),
                ("worker: same refine again", again["wall"], again["cpu"]),
                ("worker: edited mask, same slices", edited["wall"], edited["cpu"]))
        for name, wall, cpu in rows:
            print(f"{name:>34} {wall:>8.2f} {cli['seconds'] / wall:>7.1f} {cpu:>8.2f} "
                  f"{cli['cpu_seconds'] / max(cpu, 1e-3):>7.1f}")
        print(f"worker result equals the CLI's: {same}")


if __name__ == "__main__":
    main()
