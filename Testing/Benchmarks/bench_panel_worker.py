"""A Propagate click in the panel: through the interactive worker vs one ``segssl propagate`` run per click.

Times from the click (the panel reads the segments) to the result imported into the segmentation,
with the panel's own code on a slicer-core scene and the registration backend (no weights):

- baseline, measured in the same run: what a click cost before the worker — ``runs.prepare_propagate``,
  a fresh ``segssl propagate`` process, the import (every click, the first and every correction);
- the worker's first click (worker start, open, annotate, propagate, save, import);
- a correction click: one more painted slice, ``correction`` slices from the first; the worker
  recomputes only the slices that correction can change;
- a click with nothing painted since (propagate computes nothing; save and import only).

    flock /tmp/segssl-bench.lock nice python Testing/Benchmarks/bench_panel_worker.py [--size 256 256 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "SegSSL")]

import slicer  # noqa: E402
import slicer.util  # noqa: E402
from bench_slicer_panel import scene  # noqa: E402

from SegSSLLib.phantoms import LABEL_VALUES, make_ct_phantom  # noqa: E402
from SegSSLLib.processes import run_to_end  # noqa: E402
from SegSSLSlicerLib import controller, interactive, nodes, runs  # noqa: E402
from SegSSLSlicerLib.worker import WorkerClient  # noqa: E402


def click(jobs: controller.RunController, prepared) -> float:
    started = time.perf_counter()
    assert jobs.start(prepared.job, prepared.title, lambda job: prepared.import_result(None))
    while (outcome := jobs.poll()) is None:
        time.sleep(0.01)
    assert not outcome.error, outcome
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(256, 256, 60))
    parser.add_argument("--correction", type=int, default=10, help="slices between the first drawing and the correction")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scene()
    image, labels = make_ct_phantom(seed=5, size=tuple(args.size), spacing=(1.5, 1.5, 3.0))
    volume = nodes.add_volume_from_image(image, "CT")
    truth = (slicer.util.arrayFromVolume(nodes.add_volume_from_image(labels, "truth", label_map=True))
             == LABEL_VALUES["liver"]).astype(np.uint8)
    k = int(np.argmax(truth.sum(axis=(1, 2))))
    c = k + args.correction if k + args.correction < truth.shape[0] else k - args.correction
    work = Path(tempfile.mkdtemp(prefix="bench-panel-worker-"))
    cli, first, correction, unchanged = [], [], [], []
    for _ in range(args.repeats):
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        painted = np.zeros_like(truth)
        painted[k] = truth[k]
        source = nodes.add_segments(painted, segmentation, volume, names={1: "liver"})[1]

        started = time.perf_counter()  # before the worker: one process per click
        prepared = runs.prepare_propagate(volume, segmentation, [source], None, "registration", "cpu", work_parent=work)
        process = prepared.process()
        assert run_to_end(process) == 0, process.error_message
        runs.finish(prepared, segmentation, volume)
        prepared.cleanup()
        cli.append(time.perf_counter() - started)

        panel = interactive.InteractivePanel(work_parent=work, client=WorkerClient(sys.executable))
        jobs = controller.RunController()
        try:
            first.append(click(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu")))
            painted[c] = truth[c]
            slicer.util.updateSegmentBinaryLabelmapFromArray(painted, segmentation, source, volume)
            correction.append(click(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu")))
            computed = panel.last_propagate["computed_slices"]
            unchanged.append(click(jobs, panel.propagate(volume, segmentation, [source], "registration", "cpu")))
        finally:
            panel.stop()
        slicer.mrmlScene.RemoveNode(segmentation)
    median = statistics.median
    print(f"volume {args.size[0]}x{args.size[1]}x{args.size[2]}, painted slice {k}, correction on slice {c} "
          f"({computed} slices recomputed), medians of {args.repeats}")
    print("| click | seconds | vs a segssl propagate run per click |")
    print("|---|---|---|")
    base = median(cli)
    print(f"| `segssl propagate` run per click (baseline) | {base:.2f} | 1.0x |")
    for name, values in (("worker: first click (start, open, ...)", first), ("worker: correction click", correction),
                         ("worker: click with nothing new painted", unchanged)):
        print(f"| {name} | {median(values):.2f} | {base / median(values):.1f}x faster |")


if __name__ == "__main__":
    main()
