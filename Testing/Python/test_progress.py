"""Progress events: the JSON-lines protocol the Slicer module reads."""

import io
import json
import logging

import pytest

from SegSSLLib.progress import JsonLogHandler, Progress


def events_of(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_events_describe_stages_fractions_outputs_and_logs():
    stream = io.StringIO()
    progress = Progress("json", stream=stream)
    logger = logging.getLogger("test-progress")
    logger.addHandler(JsonLogHandler(progress))
    logger.setLevel(logging.INFO)
    with progress.stage("train", total=4):
        for _ in range(4):
            progress.advance(loss=0.5)
        logger.info("epoch %d finished", 1)
    progress.output("/tmp/x.nii.gz")
    progress.done()
    events = events_of(stream)
    assert [e["event"] for e in events] == ["stage"] + ["progress"] * 4 + ["log", "output", "done"]
    assert [e["fraction"] for e in events[1:5]] == [0.25, 0.5, 0.75, 1.0]
    assert [e["overall"] for e in events[1:5]] == [0.25, 0.5, 0.75, 1.0]
    assert events[4]["loss"] == 0.5 and events[4]["stage"] == "train"
    assert events[5] == {"event": "log", "level": "INFO", "message": "epoch 1 finished"}
    assert events[6]["path"] == "/tmp/x.nii.gz"


def test_unknown_totals_give_no_fraction_and_bar_mode_writes_no_json():
    stream = io.StringIO()
    progress = Progress("json", stream=stream)
    with progress.stage("search"):
        progress.advance()
    assert events_of(stream)[-1]["fraction"] is None
    quiet = io.StringIO()
    bar = Progress("bar", stream=quiet)
    with bar.stage("x", total=2):
        bar.advance(2)
    bar.done()
    assert quiet.getvalue() == ""


def test_nested_stages_report_their_own_fraction_and_the_whole_runs_share():
    stream = io.StringIO()
    progress = Progress("json", stream=stream)
    with progress.stage("demo", total=2):
        with progress.stage("train", total=4):
            progress.advance(2)
        progress.advance()  # first demo step done
        with progress.stage("search"):  # unknown length: overall stays where the parent is
            progress.advance()
        progress.advance()
    events = [e for e in events_of(stream) if e["event"] == "progress"]
    assert [(e["stage"], e["fraction"], e["overall"]) for e in events] == [
        ("train", 0.5, 0.25),
        ("demo", 0.5, 0.5),
        ("search", None, 0.5),
        ("demo", 1.0, 1.0),
    ]


def test_overall_share_never_goes_back_within_a_run_but_restarts_with_a_new_one():
    stream = io.StringIO()
    progress = Progress("json", stream=stream)
    with progress.stage("demo", total=2):
        with progress.stage("pretrain", total=2):
            progress.advance()
        with progress.stage("finetune", total=2):  # the same step's second stage starts from zero
            progress.advance()
        progress.advance()
    with progress.stage("clustering", total=4):  # a new outermost stage
        progress.advance()
    overall = [e["overall"] for e in events_of(stream) if e["event"] == "progress"]
    assert overall == [0.25, 0.25, 0.5, 0.25]


def test_tensorboard_is_a_training_extra_and_its_absence_is_one_clear_error(tmp_path, monkeypatch):
    import sys

    from SegSSLLib.errors import SegSSLError
    from SegSSLLib.progress import tensorboard_writer

    assert tensorboard_writer(None) is None  # no log folder: TensorBoard is never imported
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(SegSSLError, match="pip install tensorboard"):
        tensorboard_writer(tmp_path / "curves")
    assert not (tmp_path / "curves").exists()
