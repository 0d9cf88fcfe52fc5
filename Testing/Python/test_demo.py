"""`segssl demo --quick` runs every step and writes a report with real numbers and pictures."""

import json

import pytest
from PIL import Image

from conftest import run_segssl


@pytest.mark.slow
def test_quick_demo_writes_report_metrics_and_pictures(tmp_path):
    out = tmp_path / "demo"
    result = run_segssl("demo", "--quick", "--out", out, "--device", "cpu", "--progress", "json")
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "done"
    assert any(e["event"] == "output" and e["path"].endswith("report.md") for e in events)
    report = (out / "report.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics, "no step reported metrics"
    for section, values in metrics.items():
        assert section in report
        for label, scores in values["labels"].items():
            assert 0.0 <= scores["dice"] <= 1.0
    # The threshold baseline finds the vertebra almost perfectly; anything less means broken I/O or geometry.
    assert metrics["Threshold baseline (vertebra)"]["labels"]["5"]["dice"] > 0.9
    pictures = [line.split("(")[-1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert pictures
    for picture in pictures:
        with Image.open(out / picture) as image:
            assert image.size[0] > 32 and image.mode == "RGB"
    assert not list(out.glob(".*partial*"))
