"""S3-Net speed and memory: one model over the slice stack vs the published style, in one run.

A 100-slice 256×256 CT phantom is segmented twice, each in a fresh process, timed from process start
to label map on disk (whole process: interpreter, imports, reading, training, writing). Before that
our command is timed on the 96×96×48 demo phantom (the CPU target: well under a minute).

- ours: ``segssl segment --method s3net --seed ...`` with its defaults (one model trained over the
  whole stack on minibatches of crops, then every slice labelled);
- published style: a fresh S3-Net per slice, batch 1, whole 256×256 slice, up to 50 steps, stopping
  at 3 clusters, with the public code's settings (64 features, lr 0.2, weights 3.5 / 0.2 / 4, its
  affine and spatial terms), then the slice's argmax.

With ``--same-config`` the per-slice route uses our defaults instead of the public code's settings,
changed only to a fresh model per slice trained on that slice alone, batch 1: the like-for-like
measure of what one model over the stack saves.

With ``--published-slices N`` (< 100) the published style runs on N evenly spaced slices only and its
per-slice time is scaled to the whole stack (slices are independent, so time is linear in their
number); the table says when that was done. Peak memory is each process's maximum resident set.

    flock /tmp/segssl-bench.lock /work/venv/bin/python Testing/Benchmarks/bench_s3net_speed.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def make_volume(folder: Path, slices: int, size: int, spacing=(1.4, 1.4, 2.5)) -> tuple[Path, str]:
    import SimpleITK as sitk

    from SegSSLLib.phantoms import make_ct_phantom
    from SegSSLLib.s3net.demo_step import LIVER_CENTRE, phantom_voxel

    image, _ = make_ct_phantom(seed=0, size=(size, size, slices), spacing=spacing)
    path = folder / f"volume_{size}x{slices}.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, ",".join(map(str, phantom_voxel(LIVER_CENTRE, image.GetSize())))


def run_ours(volume: Path, seed: str, output: Path, threads: int | None) -> dict:
    argv = ["segment", "--method", "s3net", "--input", str(volume), "--output", str(output), "--seed", seed,
            "--progress", "none"]
    if threads:
        argv += ["--threads", str(threads)]
    code = (
        "import json, resource, sys; from SegSSLLib.cli import main; code = main(sys.argv[1:]); "
        "print(json.dumps({'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})); sys.exit(code)"
    )
    return _timed([sys.executable, "-c", code, *argv])


def run_published(volume: Path, output: Path, threads: int | None, count: int | None, same_config=False) -> dict:
    argv = [sys.executable, __file__, "--worker", str(volume), "--worker-output", str(output)]
    if same_config:
        argv += ["--same-config"]
    if threads:
        argv += ["--threads", str(threads)]
    if count:
        argv += ["--published-slices", str(count)]
    return _timed(argv)


def _timed(argv: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed:\n{result.stderr}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return {"seconds": seconds, **report}


def same_config_worker(volume: Path, output: Path, count: int | None) -> None:
    """Our defaults, changed in one thing only: a fresh model per slice, trained on that slice, batch 1."""
    from dataclasses import replace

    import numpy as np
    import SimpleITK as sitk
    import torch

    from SegSSLLib.intensity import guess_window
    from SegSSLLib.s3net.config import S3NetConfig
    from SegSSLLib.s3net.training import predict_clusters, train_s3net
    from SegSSLLib.volumes import label_array_to_image, write_image

    image = sitk.ReadImage(str(volume))
    array = sitk.GetArrayFromImage(image)
    slices = torch.from_numpy(guess_window(array).apply(array).astype(np.float32))[:, None]
    config = replace(S3NetConfig(), batch_size=1)
    indices = range(len(slices)) if not count else np.linspace(0, len(slices) - 1, count).round().astype(int)
    labels = np.zeros(array.shape, np.uint8)
    steps = []
    started = time.perf_counter()
    for index in indices:
        one = slices[int(index) : int(index) + 1]
        result = train_s3net(one, config, seed=int(index))
        steps.append(len(result.history))
        labels[index] = predict_clusters(result.model, one)[0].numpy().astype(np.uint8)
    per_slice = (time.perf_counter() - started) / len(indices)
    write_image(label_array_to_image(labels, image), output)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak, "slices_run": len(indices), "per_slice_s": per_slice, "mean_steps": float(np.mean(steps))}))


def published_worker(volume: Path, output: Path, count: int | None) -> None:
    """The published procedure: a fresh model per slice, batch 1, up to 50 steps, stop at 3 clusters."""
    import numpy as np
    import SimpleITK as sitk
    import torch

    from SegSSLLib.intensity import guess_window
    from SegSSLLib.s3net.config import S3NetConfig
    from SegSSLLib.s3net.network import S3Net
    from SegSSLLib.s3net.training import _objective, _to_device
    from SegSSLLib.volumes import label_array_to_image, write_image

    image = sitk.ReadImage(str(volume))
    array = sitk.GetArrayFromImage(image)
    normalised = guess_window(array).apply(array)
    config = S3NetConfig(
        features=64, clusters=64, learning_rate=0.2, clustering_weight=3.5, affine_weight=0.2, spatial_weight=4.0,
        loss_variant="published", max_steps=50, min_clusters=3,
    )
    indices = range(len(normalised)) if not count else np.linspace(0, len(normalised) - 1, count).round().astype(int)
    labels = np.zeros(array.shape, np.uint8)
    steps = []
    device = torch.device("cpu")
    started = time.perf_counter()
    for index in indices:
        torch.manual_seed(int(index))
        model = _to_device(S3Net(1, config.features, config.clusters), device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum)
        x = _to_device(torch.from_numpy(normalised[index])[None, None], device)
        generator = torch.Generator().manual_seed(0)
        for step in range(config.max_steps):
            loss, _, clusters = _objective(model, x, config, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if clusters <= config.min_clusters:
                break
        steps.append(step + 1)
        with torch.no_grad():
            labels[index] = model(x).argmax(1)[0].numpy().astype(np.uint8)
    per_slice = (time.perf_counter() - started) / len(indices)
    write_image(label_array_to_image(labels, image), output)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak, "slices_run": len(indices), "per_slice_s": per_slice, "mean_steps": float(np.mean(steps))}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in both processes")
    parser.add_argument("--published-slices", type=int, default=None, help="run the published style on N slices only")
    parser.add_argument("--ours-only", action="store_true", help="time our command only (no published style)")
    parser.add_argument(
        "--same-config", action="store_true",
        help="per-slice route with our defaults, changed only to a fresh model per slice and batch 1 "
        "(instead of the public code's settings)",
    )
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker:
        worker = same_config_worker if args.same_config else published_worker
        worker(args.worker, args.worker_output, args.published_slices)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        # The CPU target: the demo-sized 96×96×48 phantom, whole process, our defaults.
        small, small_seed = make_volume(folder, 48, 96, spacing=(3.5, 3.5, 5.0))
        small_run = run_ours(small, small_seed, folder / "small.nii.gz", args.threads)
        print(f"ours on 96×96×48: {small_run['seconds']:.1f} s, peak {small_run['peak_mb']:.0f} MB", flush=True)
        volume, seed = make_volume(folder, args.slices, args.size)
        ours = run_ours(volume, seed, folder / "ours.nii.gz", args.threads)
        print(f"ours: {ours['seconds']:.1f} s, peak {ours['peak_mb']:.0f} MB", flush=True)
        if args.ours_only:
            return 0
        published = run_published(
            volume, folder / "published.nii.gz", args.threads, args.published_slices, args.same_config
        )
    measured = published["seconds"]
    whole = measured
    if published["slices_run"] < args.slices:
        whole = measured + published["per_slice_s"] * (args.slices - published["slices_run"])
    route = "per slice, our settings, batch 1" if args.same_config else "published style"
    print(
        f"{route}: {measured:.1f} s for {published['slices_run']} slices "
        f"({published['per_slice_s']:.2f} s and {published['mean_steps']:.1f} steps per slice), "
        f"peak {published['peak_mb']:.0f} MB"
    )
    note = "" if whole == measured else f" (scaled from {published['slices_run']} slices)"
    print()
    print(f"| volume | threads | ours (s) | {route} (s) | ratio | ours peak (MB) | per-slice peak (MB) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| 48×96² | {args.threads or 'default'} | {small_run['seconds']:.1f} | – | – | {small_run['peak_mb']:.0f} | – |")
    print(
        f"| {args.slices}×{args.size}² | {args.threads or 'default'} | {ours['seconds']:.1f} | {whole:.1f}{note} | "
        f"{whole / ours['seconds']:.1f}× | {ours['peak_mb']:.0f} | {published['peak_mb']:.0f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
