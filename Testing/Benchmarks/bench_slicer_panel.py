"""What the Slicer panel costs in the GUI thread, and how fast Cancel stops a run.

The panel prepares a run (volume and annotation copied from the nodes and written for the CLI) and
imports its result in Slicer's GUI thread; only the algorithm runs in the background process. This
measures those two steps on a CT-sized volume, against a baseline in the same run: writing the same
volume as compressed NIfTI (``write_image``'s default) instead of the uncompressed NRRD the panel
uses. It also times Cancel, from the click to the end of the process tree.

    flock /tmp/segssl-bench.lock python Testing/Benchmarks/bench_slicer_panel.py [--size 512 512 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "SegSSL")]

import slicer  # noqa: E402
import slicer.util  # noqa: E402

from SegSSLLib.phantoms import make_ct_phantom  # noqa: E402
from SegSSLLib.processes import EXIT_EVENT, SegSSLProcess  # noqa: E402
from SegSSLLib.volumes import write_image  # noqa: E402
from SegSSLSlicerLib import nodes, runs  # noqa: E402


def scene() -> None:
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    for name in dir(slicer):
        if name.endswith("ConversionRule") and name.startswith("vtk"):
            factory.RegisterConverterRule(getattr(slicer, name)())
    slicer.mrmlScene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(slicer.mrmlScene)
    logics = {"volumes": slicer.vtkSlicerVolumesLogic(), "segmentations": slicer.vtkSlicerSegmentationsModuleLogic()}
    for logic in logics.values():
        logic.SetMRMLScene(slicer.mrmlScene)
    slicer.modules = types.SimpleNamespace(**{k: types.SimpleNamespace(logic=lambda v=v: v) for k, v in logics.items()})


def timed(function, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def cancel_latency(out: Path, grace: float, python=None) -> float:
    process = SegSSLProcess(["demo", "--quick", "--out", out, "--device", "cpu"], outputs=[out], python=python).start()
    while not any(e["event"] == "stage" for e in process.poll()):
        time.sleep(0.01)
    start = time.perf_counter()
    process.cancel(grace_seconds=grace)
    while not any(e["event"] == EXIT_EVENT for e in process.poll()):
        time.sleep(0.005)
    assert not out.exists()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(512, 512, 100), metavar=("I", "J", "K"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scene()
    image, labels = make_ct_phantom(seed=0, size=tuple(args.size), spacing=(0.8, 0.8, 2.5))
    volume = nodes.add_volume_from_image(image, "ct")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    liver = (sitk.GetArrayFromImage(labels) == 1).astype(np.uint8)
    megabytes = slicer.util.arrayFromVolume(volume).nbytes / 2**20

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)

        def write_panel_route():
            write_image(nodes.volume_to_image(volume), folder / "volume.nrrd", compress=False)

        def write_baseline():
            write_image(nodes.volume_to_image(volume), folder / "volume.nii.gz")

        panel = timed(write_panel_route, args.repeats)
        baseline = timed(write_baseline, args.repeats)

        result = folder / "result.nrrd"
        write_image(nodes.volume_to_image(volume), result, compress=False)
        result_image = sitk.GetImageFromArray(liver)
        result_image.CopyInformation(sitk.ReadImage(str(folder / "volume.nrrd")))
        write_image(result_image, result, compress=False)
        prepared = runs.PreparedRun("bench", [], folder, result, "liver")
        import_seconds = timed(lambda: runs.finish(prepared, segmentation, volume), args.repeats)

        graceful = statistics.median(cancel_latency(folder / f"demo{n}", grace=5.0) for n in range(args.repeats))
        launcher = folder / "stubborn.sh"  # a launcher that, like a busy C call, ignores the interrupt
        launcher.write_text(f"#!/bin/sh\ntrap '' INT\n'{sys.executable}' \"$@\"\n")
        launcher.chmod(0o755)
        forced = statistics.median(
            cancel_latency(folder / f"stubborn{n}", grace=1.0, python=launcher) for n in range(args.repeats)
        )

    size = "×".join(map(str, args.size))
    print(f"volume {size} int16 ({megabytes:.0f} MiB), median of {args.repeats}")
    print("| step (GUI thread) | seconds |")
    print("|---|---|")
    print(f"| volume -> uncompressed NRRD for the CLI (panel) | {panel:.3f} |")
    print(f"| volume -> compressed NIfTI (baseline) | {baseline:.3f} |")
    print(f"| ratio baseline / panel | {baseline / panel:.1f}× |")
    print(f"| result -> new segment (read + import) | {import_seconds:.3f} |")
    print(f"| Cancel -> process ended, outputs removed (interrupt honoured) | {graceful:.3f} |")
    print(f"| Cancel -> process tree killed after 1 s grace (interrupt ignored) | {forced:.3f} |")


if __name__ == "__main__":
    main()
