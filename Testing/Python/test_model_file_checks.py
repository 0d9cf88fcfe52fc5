"""Model files with impossible contents are refused when loaded, in one line, instead of giving empty maps."""

from __future__ import annotations

import pickle

import pytest
import torch

from conftest import assert_one_line_error, run_segssl
from polycl_helpers import random_segmentation_checkpoint
from SegSSLLib.checkpoints import load_checkpoint
from SegSSLLib.errors import SegSSLError
from SegSSLLib.polycl.inference import PolyCLSegmenter

CPU = torch.device("cpu")


def _damaged(tmp_path, change) -> str:
    path = random_segmentation_checkpoint(tmp_path / "good.pt")
    raw = torch.load(path, weights_only=True)
    change(raw)
    damaged = tmp_path / "damaged.pt"
    torch.save(raw, damaged)  # torch.save, not save_checkpoint: a file damaged or edited outside SegSSL
    return damaged


def _first_weight(raw) -> str:
    return next(name for name, value in raw["state_dict"].items() if value.is_floating_point())


DAMAGES = {
    "label 0": (lambda raw: raw["config"].update(label=0), "label value 0 is impossible"),
    "label out of range": (lambda raw: raw["config"].update(label=70000), "label value 70000 is impossible"),
    "label not a number": (lambda raw: raw["config"].update(label="liver"), "label value 'liver' is impossible"),
    "NaN weights": (lambda raw: raw["state_dict"][_first_weight(raw)].fill_(float("nan")), "NaN or infinite weights"),
    "infinite weights": (lambda raw: raw["state_dict"][_first_weight(raw)].fill_(float("inf")), "NaN or infinite"),
    "config not a dict": (lambda raw: raw.update(config=[1, 2]), "its config is a list, not a dict"),
    "config without model": (lambda raw: raw["config"].pop("model"), "its config has no 'model' setting"),
    "config with a broken model": (lambda raw: raw["config"].update(model={"widths": "x"}), "no network SegSSL can build"),
    "missing weights": (lambda raw: raw["state_dict"].pop(_first_weight(raw)), "1 missing"),
    "extra weights": (lambda raw: raw["state_dict"].update(stray=torch.zeros(2)), "1 unexpected (e.g. stray)"),
    "wrong-shaped weights": (
        lambda raw: raw["state_dict"].update({_first_weight(raw): torch.zeros(3)}), "of the wrong shape"
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_an_impossible_model_file_is_a_one_line_error_naming_the_problem(tmp_path, damage):
    change, expected = DAMAGES[damage]
    path = _damaged(tmp_path, change)
    with pytest.raises(SegSSLError) as caught:
        PolyCLSegmenter.from_checkpoint(path, CPU)
    message = str(caught.value)
    assert expected in message, message
    assert "\n" not in message and len(message) < 400
    assert str(path) in message


def test_segment_with_a_nan_model_fails_in_one_line_before_any_output(tiny_phantom, tmp_path):
    path = _damaged(tmp_path, lambda raw: raw["state_dict"][_first_weight(raw)].fill_(float("nan")))
    out = tmp_path / "out.nii.gz"
    result = run_segssl("segment", "--method", "polycl", "--checkpoint", path, "--input", tiny_phantom[0],
                        "--output", out, "--threads", "1", "--progress", "none")
    assert_one_line_error(result, "NaN or infinite weights", "train again")
    assert not out.exists()


def test_unsupported_global_is_called_code_execution_whatever_its_case(tmp_path, monkeypatch):
    path = random_segmentation_checkpoint(tmp_path / "m.pt")

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError("Weights only load failed ... Unsupported GLOBAL posix.system")

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(SegSSLError, match="would run code") as caught:
        load_checkpoint(path)
    assert "corrupt" not in str(caught.value)


def test_resume_mismatch_names_each_setting_once():
    from SegSSLLib.polycl.training import check_same_run

    checkpoint = {"config": {"label": 1, "epochs": 3}, "extra": {"run": {"label": 1, "data": "a"}}}
    with pytest.raises(SegSSLError) as caught:
        check_same_run("out.pt", checkpoint, {"label": 2, "epochs": 3}, {"label": 2, "data": "a"})
    assert "(label)" in str(caught.value)


@pytest.mark.parametrize("damage", ["nan", "wrong shape"])
def test_a_damaged_sam_checkpoint_is_one_line_naming_the_weights(tmp_path, damage):
    from sam_helpers import save_tiny_sam
    from SegSSLLib.weights.models import load_sam

    path = tmp_path / "sam.pth"
    save_tiny_sam(path)
    state = torch.load(path, weights_only=True)
    name = "mask_decoder.iou_token.weight"
    state[name] = state[name].fill_(float("nan")) if damage == "nan" else torch.zeros(3, 3)
    torch.save(state, path)
    with pytest.raises(SegSSLError) as caught:
        load_sam(path)
    message = str(caught.value)
    assert name in message and "\n" not in message
    assert ("NaN or infinite" if damage == "nan" else "1 of the wrong shape") in message
