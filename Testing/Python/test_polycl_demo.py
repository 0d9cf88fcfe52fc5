"""The PolyCL demo step: pretrain, fine-tune, segment the demo phantom, score it, draw it."""

import json

from SegSSLLib.demo import run_demo
from SegSSLLib.progress import Progress


def test_quick_demo_step_segments_the_liver_of_an_unseen_phantom(tmp_path):
    from SegSSLLib.demo import phantom_step
    from SegSSLLib.polycl.demo_step import polycl_step
    steps = [phantom_step, polycl_step]
    report = run_demo(tmp_path, Progress("none"), device="cpu", quick=True, steps=steps)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    [section] = [title for title in metrics if title.startswith("PolyCL")]
    assert metrics[section]["labels"]["1"]["dice"] > 0.5
    assert (tmp_path / "polycl_liver.png").stat().st_size > 0
    assert (tmp_path / "polycl" / "polycl_liver.pt").exists()
    assert "![PolyCL" in report.read_text()
