"""PolyCL pretraining throughput (slices through the encoder per second, forward + backward).

Runs one short pretraining epoch per setting on phantom volumes (the slices are cached first, so
only training is timed) and prints slices/s for each image size and thread count. Every triplet
is three slices, so slices/s = 3 × triplets/s.

    flock /tmp/segssl-bench.lock /work/venv/bin/python Testing/Benchmarks/bench_polycl_throughput.py
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SegSSLLib.device import select_device  # noqa: E402
from SegSSLLib.intensity import IntensityWindow  # noqa: E402
from SegSSLLib.phantoms import make_ct_phantom  # noqa: E402
from SegSSLLib.polycl.model import ModelConfig  # noqa: E402
from SegSSLLib.polycl.pretraining import PretrainOptions, pretrain  # noqa: E402
from SegSSLLib.polycl.slice_cache import SlicingSettings  # noqa: E402
from SegSSLLib.volumes import write_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 128, 64])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--volumes", type=int, default=2)
    parser.add_argument("--slices", type=int, default=16, help="slices per phantom volume")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = select_device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "volumes"
        data.mkdir()
        for seed in range(args.volumes):
            image, _ = make_ct_phantom(seed=seed, size=(128, 128, args.slices), spacing=(2.6, 2.6, 5.0))
            write_image(image, data / f"phantom_{seed}.nii.gz")
        print(f"device {device}, {args.volumes} volumes × {args.slices} slices, batch {args.batch_size} triplets")
        print(f"{'image size':>10} {'threads':>7} {'slices/s':>9} {'s/epoch':>8}")
        for size in args.sizes:
            for threads in args.threads if device.type == "cpu" else [torch.get_num_threads()]:
                torch.set_num_threads(threads)
                config = ModelConfig(image_size=size)
                slicing = SlicingSettings(IntensityWindow(), image_size=size)
                options = PretrainOptions(epochs=2, batch_size=args.batch_size)
                # Epoch 1 warms up (allocator, oneDNN kernels); epoch 2 is timed.
                history = pretrain([data], Path(tmp) / f"p{size}_{threads}.pt", config, slicing, options, device,
                                   cache_dir=Path(tmp) / "cache")
                rate = history[-1]["slices_per_second"]
                print(f"{size:>10} {threads:>7} {rate:>9.1f} {3 * history[-1]['triplets'] / rate:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
