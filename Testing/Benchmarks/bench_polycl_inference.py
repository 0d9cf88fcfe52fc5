"""PolyCL volume inference: batched slices vs a naive one-slice-at-a-time loop, time and peak memory.

The input is a 512×512×100 CT (the first 100 slices of ``unlabeled_ct/chest_001.nii.gz`` when the
shared data are there, else a phantom of that size); the model is the reference U-Net (widths
16-32-64-128-256, 256×256 slices) with random weights, which costs the same as trained ones. Each
mode runs in its own process so that its peak resident memory (``ru_maxrss``) is its own; both
must give the same mask.

    flock /tmp/segssl-bench.lock /work/venv/bin/python Testing/Benchmarks/bench_polycl_inference.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SHARED_CT = Path("/work/shared/data/unlabeled_ct/chest_001.nii.gz")


def make_inputs(folder: Path) -> tuple[Path, Path, str]:
    import SimpleITK as sitk
    import torch

    from SegSSLLib.checkpoints import save_checkpoint
    from SegSSLLib.intensity import IntensityWindow
    from SegSSLLib.phantoms import make_ct_phantom
    from SegSSLLib.polycl.model import ModelConfig, SegmentationNet
    from SegSSLLib.polycl.slice_cache import SlicingSettings

    if SHARED_CT.exists():
        image, source = sitk.ReadImage(str(SHARED_CT))[:, :, :100], f"{SHARED_CT.name}, slices 0-99"
    else:
        image, source = make_ct_phantom(seed=0, size=(512, 512, 100), spacing=(0.7, 0.7, 3.0))[0], "phantom"
    volume = folder / "ct.nii.gz"
    sitk.WriteImage(image, str(volume))
    torch.manual_seed(0)
    config = ModelConfig()
    config_dict = {"model": config.to_dict(), "slicing": SlicingSettings(IntensityWindow(), 256).to_dict(), "label": 1}
    model = folder / "model.pt"
    save_checkpoint(model, "polycl", config_dict, SegmentationNet(config).state_dict())
    return volume, model, source


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_mode(mode: str, volume: Path, model_path: Path, batch_size: int, threads: int) -> dict:
    """Inside a child process: time one mode and report its memory."""
    import numpy as np
    import SimpleITK as sitk
    import torch

    from SegSSLLib.polycl.inference import PolyCLSegmenter

    torch.set_num_threads(threads)
    image = sitk.ReadImage(str(volume))
    segmenter = PolyCLSegmenter.from_checkpoint(model_path, torch.device("cpu"))
    segmenter.segment(image[:, :, :2], batch_size=2, keep_largest=False)  # warm-up: kernels, allocator
    baseline = rss_mb()
    started = time.perf_counter()
    if mode == "batched":
        mask = segmenter.segment(image, batch_size=batch_size, keep_largest=False)
    else:
        mask = np.concatenate(
            [segmenter.segment(image[:, :, k : k + 1], batch_size=1, keep_largest=False) for k in range(image.GetSize()[2])]
        )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "baseline_mb": baseline,
        "peak_mb": peak,
        "mask_sha256": hashlib.sha256(np.ascontiguousarray(mask).tobytes()).hexdigest(),
        "foreground": int(mask.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--child", nargs=4, metavar=("MODE", "VOLUME", "MODEL", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, volume, model, threads = args.child
        print(json.dumps(run_mode(mode, Path(volume), Path(model), args.batch_size, int(threads))))
        return

    with tempfile.TemporaryDirectory() as tmp:
        volume, model, source = make_inputs(Path(tmp))
        print(f"input: 512×512×100 CT ({source}); reference U-Net at 256×256, random weights; batch {args.batch_size}")
        print("| threads | mode | seconds | slices/s | peak RSS (MiB) | peak − after loading (MiB) |")
        print("|---|---|---|---|---|---|")
        for threads in args.threads:
            results = {}
            for mode in ("naive", "batched"):
                command = [sys.executable, __file__, "--batch-size", str(args.batch_size), "--child", mode, str(volume), str(model), str(threads)]
                output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                results[mode] = result = json.loads(output.strip().splitlines()[-1])
                print(f"| {threads} | {mode} | {result['seconds']:.1f} | {100 / result['seconds']:.1f} | "
                      f"{result['peak_mb']:.0f} | {result['peak_mb'] - result['baseline_mb']:.0f} |", flush=True)
            same = results["naive"]["mask_sha256"] == results["batched"]["mask_sha256"]
            print(f"| {threads} | naive / batched | {results['naive']['seconds'] / results['batched']['seconds']:.2f}× "
                  f"| | | masks identical: {same} |", flush=True)


if __name__ == "__main__":
    main()
