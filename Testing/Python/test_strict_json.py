"""JSON written for programs never holds NaN/Infinity tokens that strict parsers reject."""

import json
import math

import numpy as np
import pytest

from SegSSLLib import strict_json
from SegSSLLib.progress import Progress


def test_non_finite_numbers_become_null_at_any_depth():
    value = {"a": math.nan, "b": [1.5, math.inf, {"c": np.float32(-np.inf)}], "d": (np.float64(2.5), 3, True)}
    text = strict_json.dumps(value)
    assert json.loads(text) == {"a": None, "b": [1.5, None, {"c": None}], "d": [2.5, 3, True]}
    assert "NaN" not in text and "Infinity" not in text


def test_finite_numpy_scalars_keep_their_value():
    assert json.loads(strict_json.dumps({"x": np.float32(0.25)})) == {"x": 0.25}


def test_progress_events_write_null_for_a_nan_loss(capsys):
    progress = Progress("json")
    with progress.stage("train", total=2):
        progress.advance(loss=float("nan"))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["event"] == "progress" and lines[-1]["loss"] is None
    assert lines[-1]["fraction"] == pytest.approx(0.5)
