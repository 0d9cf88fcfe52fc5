"""PolyCL volume inference: batched slices vs a naive one-slice-at-a-time loop, time and peak memory.

The input is a 512×512×100 CT (the first 100 slices of ``unlabeled_ct/chest_001.nii.gz`` when the
shared data are there, else a phantom of that size); the model is the reference U-Net (widths
16-32-64-128-256, 256×256 slices) with random weights, which costs the same as trained ones. Each
mode runs in its own process so that its peak resident memory (``ru_maxrss``) is its own; the
time is the best of ``--repeats`` runs. The foreground probabilities of all modes are compared (a
random network puts many pixels near 0.5, so thresholded masks may differ by a few pixels when
oneDNN picks another convolution algorithm for another batch size).

    flock /tmp/segssl-bench.lock /work/venv/bin/python Testing/Benchmarks/bench_polycl_inference.py
"""

from __future__ import annotations

import argparse
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


def run_mode(mode: str, volume: Path, model_path: Path, threads: int, repeats: int, probabilities_out: Path) -> dict:
    """Inside a child process: time one mode ("naive" or "batched-N") and report its memory."""
    import numpy as np
    import SimpleITK as sitk
    import torch

    from SegSSLLib.polycl.inference import PolyCLSegmenter

    torch.set_num_threads(threads)
    image = sitk.ReadImage(str(volume))
    segmenter = PolyCLSegmenter.from_checkpoint(model_path, torch.device("cpu"))
    segmenter.probabilities(image[:, :, :2], batch_size=2)  # warm-up: kernels, allocator
    baseline = rss_mb()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        if mode == "naive":  # the whole pipeline (window, resize, network, resize back) per slice
            probabilities = torch.cat(
                [segmenter.probabilities(image[:, :, k : k + 1], batch_size=1) for k in range(image.GetSize()[2])]
            )
        else:
            probabilities = segmenter.probabilities(image, batch_size=int(mode.split("-")[1]))
        mask = (probabilities > 0.5).numpy()
        times.append(time.perf_counter() - started)
    np.save(probabilities_out, probabilities.numpy())
    return {
        "seconds": min(times),
        "baseline_mb": baseline,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "foreground": int(mask.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", nargs=5, metavar=("MODE", "VOLUME", "MODEL", "THREADS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, volume, model, threads, out = args.child
        print(json.dumps(run_mode(mode, Path(volume), Path(model), int(threads), args.repeats, Path(out))))
        return

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        volume, model, source = make_inputs(Path(tmp))
        print(f"input: 512×512×100 CT ({source}); reference U-Net at 256×256, random weights; best of {args.repeats}")
        print("| threads | mode | seconds | slices/s | vs naive | peak RSS (MiB) | peak − after loading (MiB) | max abs. probability difference to naive |")
        print("|---|---|---|---|---|---|---|---|")
        modes = ["naive"] + [f"batched-{b}" for b in args.batch_sizes]
        for threads in args.threads:
            results = {}
            for mode in modes:
                out = Path(tmp) / f"{mode}_{threads}.npy"
                command = [sys.executable, __file__, "--repeats", str(args.repeats), "--child", mode, str(volume), str(model), str(threads), str(out)]
                output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                results[mode] = result = json.loads(output.strip().splitlines()[-1])
                difference = float(np.abs(np.load(out) - np.load(Path(tmp) / f"naive_{threads}.npy")).max())
                print(f"| {threads} | {mode} | {result['seconds']:.1f} | {100 / result['seconds']:.1f} | "
                      f"{results['naive']['seconds'] / result['seconds']:.2f}× | {result['peak_mb']:.0f} | "
                      f"{result['peak_mb'] - result['baseline_mb']:.0f} | {difference:.1e} |", flush=True)


if __name__ == "__main__":
    main()
