"""SAM 2 propagation: in-memory frames (SegSSL) vs the JPEG-folder route of today's Slicer SAM 2 extensions.

Both routes use the same random-weight SAM 2.1 hiera-t, the same real CT slices (``abdomen_ct``, a
block of axial slices through the liver) and the same one-slice liver annotation in the middle of
the block. Each route runs in its own process (so peak memory is its own) and is timed from slices in
memory to a label array on the CT grid:

- memory: ``propagate_with_sam2`` (8-bit frames built in memory, normalised one at a time as sam2
  reads them, forward then reverse);
- jpeg: write the windowed slices as JPEG files, ``init_state(folder)`` (which holds the whole video as
  float32 N x 3 x S x S), ``add_new_mask``, ``propagate_in_video`` forward then reverse.

"video MiB" is what the route holds for the frames themselves; peak RSS adds the model and its work.
``--state-only`` stops after the inference state is built (frames loaded, frame 0 embedded), so that
whole volumes at 1024 px show the memory the video takes without minutes of CPU propagation.
``--repeats`` runs the routes alternately and keeps each route's fastest run (the machine is shared).

    flock /tmp/segssl-bench.lock nice /work/venv/bin/python Testing/Benchmarks/bench_sam2_propagation.py --frames 40 --image-size 256 --repeats 2
    flock /tmp/segssl-bench.lock nice /work/venv/bin/python Testing/Benchmarks/bench_sam2_propagation.py --frames 12 --image-size 1024
    flock /tmp/segssl-bench.lock nice /work/venv/bin/python Testing/Benchmarks/bench_sam2_propagation.py --frames 112 --image-size 1024 --state-only
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

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DATA = Path("/work/shared/data/abdomen_ct")


def _case(frames: int):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(next((DATA / "imagesTr").glob("*.nii*"))))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(next((DATA / "labelsTr").glob("*.nii*")))))
    present = np.flatnonzero((truth == 1).any(axis=(1, 2)))
    middle = int((present.min() + present.max()) // 2)
    frames = min(frames, len(truth))
    start = max(0, min(middle - frames // 2, len(truth) - frames))
    block = image[:, :, start : start + frames]
    drawn = np.zeros_like(truth[start : start + frames])
    drawn[middle - start] = (truth[middle] == 1).astype(drawn.dtype)
    return block, drawn


def run_route(route: str, frames: int, image_size: int, state_only: bool = False) -> dict:
    import torch

    from SegSSLLib.propagation.annotation import find_annotation
    from SegSSLLib.weights.models import load_sam2_video_predictor

    torch.manual_seed(0)
    predictor = load_sam2_video_predictor(None, "sam2.1_hiera_t", "cpu", image_size)
    block, drawn = _case(frames)
    annotation = find_annotation(drawn)
    frames = len(drawn)
    started = time.perf_counter()
    if route == "memory" and state_only:
        video_bytes = _memory_state(predictor, block, image_size)
        labels = drawn
    elif route == "memory":
        from SegSSLLib.frames import frame_stack
        from SegSSLLib.propagation.sam2 import propagate_with_sam2

        labels = propagate_with_sam2(predictor, block, drawn, annotation).labels
    else:
        labels, video_bytes = _jpeg_route(predictor, block, drawn, annotation.slices[0], state_only)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if route == "memory" and not state_only:
        video_bytes = frame_stack(block, 2, image_size)[1].nbytes  # the uint8 frames the state holds
    return {"route": route, "image_size": image_size, "frames": frames, "seconds": seconds,
            "frames_per_second": (frames + 1) / seconds, "peak_rss_mib": peak_mib,
            "video_mib": video_bytes / 2**20, "labelled_slices": int((labels != 0).any(axis=(1, 2)).sum())}


def _memory_state(predictor, block, image_size: int) -> int:
    """Our inference state, with frame 0 embedded as ``init_state`` does; returns the bytes of the video."""
    import torch

    from SegSSLLib.frames import Sam2Frames, frame_stack
    from SegSSLLib.propagation.sam2 import in_memory_state

    _, frames = frame_stack(block, 2, image_size)
    state = in_memory_state(predictor, Sam2Frames(frames))
    with torch.inference_mode():
        predictor._get_image_feature(state, frame_idx=0, batch_size=1)
    return frames.nbytes


def _jpeg_route(predictor, block, drawn, k, state_only: bool = False) -> tuple[np.ndarray, int]:
    """What the Slicer SAM 2 extensions do today: JPEG folder, init_state(folder), forward then reverse."""
    import torch
    from PIL import Image

    from SegSSLLib.frames import windowed_array
    from SegSSLLib.intensity import to_uint8

    slices = to_uint8(windowed_array(block))
    with tempfile.TemporaryDirectory() as folder:
        for index, pixels in enumerate(slices):
            Image.fromarray(np.repeat(pixels[..., None], 3, axis=-1)).save(Path(folder) / f"{index:05d}.jpg", quality=95)
        state = predictor.init_state(folder)
    if state_only:
        return drawn, state["images"].nbytes
    labels = np.zeros_like(drawn)
    with torch.inference_mode():
        predictor.add_new_mask(state, frame_idx=k, obj_id=1, mask=drawn[k] == 1)
        for reverse in (False, True):
            for frame, _, masks in predictor.propagate_in_video(state, reverse=reverse):
                labels[frame] = (masks[0, 0] > 0).cpu().numpy()
    labels[k] = drawn[k]
    return labels, state["images"].nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--image-size", type=int, nargs="+", default=[1024, 256])
    parser.add_argument("--state-only", action="store_true", help="stop once the inference state is built")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the routes this often; keep the fastest")
    parser.add_argument("--route", choices=("memory", "jpeg"), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.route:
        print(json.dumps(run_route(args.route, args.frames, args.image_size[0], args.state_only)))
        return
    what = "inference state only" if args.state_only else "liver painted on its middle slice"
    print(f"SAM 2.1 hiera-t, random weights, CPU; {args.frames} slices of abdomen_ct (at most 112), {what}; "
          f"best of {args.repeats}")
    print(f"{'size':>5} {'route':<7} {'seconds':>8} {'frames/s':>9} {'video MiB':>10} {'peak RSS MiB':>13} {'labelled':>9}")
    for size in args.image_size:
        results = {}
        for _ in range(args.repeats):
            for route in ("jpeg", "memory"):
                command = [sys.executable, __file__, "--route", route, "--frames", str(args.frames), "--image-size", str(size)]
                child = subprocess.run(command + ["--state-only"] * args.state_only, capture_output=True, text=True, check=True)
                run = json.loads(child.stdout.strip().splitlines()[-1])
                if route not in results or run["seconds"] < results[route]["seconds"]:
                    results[route] = run
        for route in ("jpeg", "memory"):
            r = results[route]
            print(f"{size:>5} {route:<7} {r['seconds']:8.2f} {r['frames_per_second']:9.2f} {r['video_mib']:10.1f} "
                  f"{r['peak_rss_mib']:13.0f} "
                  f"{r['labelled_slices']:>9}")
        ratio = results["jpeg"]["seconds"] / results["memory"]["seconds"]
        print(f"{size:>5} jpeg/memory time ratio {ratio:.2f}; peak memory ratio "
              f"{results['jpeg']['peak_rss_mib'] / results['memory']['peak_rss_mib']:.2f}")


if __name__ == "__main__":
    main()
