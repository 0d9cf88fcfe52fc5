"""Data-set runs: cases per minute of ``segssl segment --input DIR`` vs a shell loop, and 2 processes vs 1.

A folder of ``--cases`` CT phantoms (``--size``, NIfTI) is segmented with the reference PolyCL U-Net
(widths 16-32-64-128-256, 256×256 slices, random weights: the same cost as trained ones) on the CPU,
in these ways, each timed from the command's start to its end (imports and model loading included,
which is the point):

- ``loop``: one ``segssl segment --input CASE --output FILE`` per case, one after the other (the
  shell loop a researcher writes today), ``--threads 1``;
- ``folder``: one ``segssl segment --input DIR --output DIR``, ``--threads 1``;
- ``folder-2-threads``: the same with ``--threads 2`` (one process using both cores);
- ``torchrun-2``: ``torchrun --nproc_per_node=2 -m SegSSLLib segment --input DIR ...``, ``--threads 1`` each;
- ``resume``: ``folder`` again on its own finished output (every case skipped).

Every mode's label maps are compared with the loop's (they must be identical). Cases per minute =
cases / wall seconds. Peak RSS is the largest resident memory of one process of the command (for
the loop, of the largest single command; for torchrun, of its largest process): a folder run that
kept more than one volume would grow above the loop's. Run it niced on a shared machine and note what else ran:

    nice -n 10 /work/main/.venv/bin/python Testing/Benchmarks/bench_dataset_runs.py
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

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def make_inputs(folder: Path, cases: int, size: tuple[int, int, int]) -> tuple[Path, Path]:
    import torch

    from SegSSLLib.checkpoints import save_checkpoint
    from SegSSLLib.intensity import IntensityWindow
    from SegSSLLib.phantoms import make_ct_phantom
    from SegSSLLib.polycl.model import ModelConfig, SegmentationNet
    from SegSSLLib.polycl.slice_cache import SlicingSettings
    from SegSSLLib.volumes import write_image

    volumes = folder / "cts"
    volumes.mkdir()
    spacing = (300.0 / size[0], 300.0 / size[1], 150.0 / size[2])
    for seed in range(cases):
        write_image(make_ct_phantom(seed=seed, size=size, spacing=spacing)[0], volumes / f"ct_{seed:03d}.nii.gz")
    torch.manual_seed(0)
    config = ModelConfig()
    settings = {"model": config.to_dict(), "slicing": SlicingSettings(IntensityWindow(), 256).to_dict(), "label": 1}
    model = folder / "model.pt"
    save_checkpoint(model, "polycl", settings, SegmentationNet(config).state_dict())
    return volumes, model


PEAK_MIB: list[float] = []  # peak resident memory of each command run, in MiB


def timed(command: list[str], env: dict) -> float:
    """Wall seconds of ``command``; its peak resident memory (largest process of its tree) goes to PEAK_MIB."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{log.read().decode()[-3000:]}")
    PEAK_MIB.append(usage.ru_maxrss / 1024)
    return seconds


def same_labels(folder: Path, reference: Path) -> bool:
    import numpy as np
    import SimpleITK as sitk

    names = sorted(p.name for p in reference.iterdir())
    if sorted(p.name for p in folder.iterdir()) != names:
        return False
    return all(
        np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / n))), sitk.GetArrayFromImage(sitk.ReadImage(str(reference / n))))
        for n in names
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--size", default="128,128,32", help="phantom size I,J,K (default 128,128,32)")
    parser.add_argument("--modes", default="loop,folder,folder-2-threads,torchrun-2,resume")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    segssl = [sys.executable, "-m", "SegSSLLib", "segment"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "SegSSLLib", "segment"]
    with tempfile.TemporaryDirectory(prefix="segssl-bench-datasets-") as tmp:
        tmp = Path(tmp)
        volumes, model = make_inputs(tmp, args.cases, size)
        common = ["--method", "polycl", "--checkpoint", str(model), "--device", "cpu", "--progress", "none"]
        results = {}
        outputs = {}
        for mode in args.modes.split(","):
            out = tmp / f"out-{mode}"
            PEAK_MIB.clear()
            if mode == "loop":
                out.mkdir()
                started = time.perf_counter()
                for case in sorted(volumes.iterdir()):
                    timed([*segssl, "--input", str(case), "--output", str(out / case.name), *common, "--threads", "1"], env)
                seconds = time.perf_counter() - started
            elif mode == "folder":
                seconds = timed([*segssl, "--input", str(volumes), "--output", str(out), *common, "--threads", "1"], env)
            elif mode == "folder-2-threads":
                seconds = timed([*segssl, "--input", str(volumes), "--output", str(out), *common, "--threads", "2"], env)
            elif mode == "torchrun-2":
                seconds = timed([*torchrun, "--input", str(volumes), "--output", str(out), *common, "--threads", "1"], env)
            elif mode == "resume":
                out = tmp / "out-folder"
                seconds = timed([*segssl, "--input", str(volumes), "--output", str(out), *common, "--threads", "1"], env)
            else:
                raise SystemExit(f"unknown mode {mode}")
            outputs[mode] = out
            results[mode] = {
                "seconds": round(seconds, 2), "cases_per_minute": round(60 * args.cases / seconds, 2),
                "peak_rss_mib": round(max(PEAK_MIB), 1),
            }
            print(f"{mode:>17}: {seconds:7.1f} s  {60 * args.cases / seconds:6.2f} cases/min  "
                  f"peak RSS {max(PEAK_MIB):6.0f} MiB", flush=True)
        reference = outputs.get("loop") or next(iter(outputs.values()))
        for mode, out in outputs.items():
            results[mode]["same_labels_as_" + reference.name.removeprefix("out-")] = same_labels(out, reference)
        base = results.get("loop", {}).get("seconds")
        for mode in results:
            if base:
                results[mode]["speedup_vs_loop"] = round(base / results[mode]["seconds"], 2)
        if "folder" in results and "torchrun-2" in results:
            results["torchrun-2"]["speedup_vs_folder"] = round(results["folder"]["seconds"] / results["torchrun-2"]["seconds"], 2)
        print(json.dumps({"cases": args.cases, "size": size, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                          "results": results}, indent=2))


if __name__ == "__main__":
    main()
