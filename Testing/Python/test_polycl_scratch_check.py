"""The scratch check: a pretrained start is kept only when it beats scratch on slices that never trained."""

import logging

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_segssl
from polycl_helpers import TINY_MODEL, TINY_SLICING, one_thread, phantom_msd, states_equal  # noqa: F401
from SegSSLLib.checkpoints import load_checkpoint, save_checkpoint
from SegSSLLib.cli.flags import in_flags
from SegSSLLib.errors import SegSSLError
from SegSSLLib.polycl import scratch_check
from SegSSLLib.polycl.datasets import split_labelled_slices
from SegSSLLib.polycl.finetuning import FinetuneOptions, Initialisation, finetune
from SegSSLLib.polycl.pretraining import PRETRAIN_KIND

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")
PRETRAIN_CONFIG = {"model": TINY_MODEL.to_dict(), "slicing": TINY_SLICING.to_dict(), "strategy": "S",
                   "temperature": 0.1, "label": None}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("scratch_check")
    return phantom_msd(root / "msd", seeds=(1, 2, 3)), root / "cache", root


def _pretrain_file(path, encoder: dict):
    """A `segssl pretrain` file holding ``encoder`` (the keys ``encoder.*``)."""
    save_checkpoint(path, PRETRAIN_KIND, PRETRAIN_CONFIG, encoder)
    return path


@pytest.fixture(scope="module")
def encoders(data):
    """A good encoder (trained on these very labels) and a deliberately bad one (all weights zero: no image gets through)."""
    msd, cache, root = data
    torch.set_num_threads(1)
    options = FinetuneOptions(label=1, epochs=6, epoch_samples=64, batch_size=8, learning_rate=3e-3)
    finetune(msd, root / "trained.pt", options, CPU, TINY_MODEL, TINY_SLICING, cache_dir=cache)
    encoder = {k: v for k, v in load_checkpoint(root / "trained.pt")["state_dict"].items() if k.startswith("encoder.")}
    zeros = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in encoder.items()}
    return _pretrain_file(root / "good.pt", encoder), _pretrain_file(root / "bad.pt", zeros)


def _checked(data, init_path, out, caplog=None):
    msd, cache, _ = data
    # The encoder stays frozen, so what the pretrained candidate can do is what its encoder gives.
    options = FinetuneOptions(label=1, epochs=4, freeze_epochs=4, epoch_samples=32, learning_rate=3e-3, max_slices=4, seed=3)
    return scratch_check.finetune_checked(msd, out, options, CPU, TINY_MODEL, TINY_SLICING,
                                          Initialisation.load(init_path), cache_dir=cache)


@pytest.mark.slow
def test_a_bad_encoder_gives_way_to_scratch_and_a_good_one_is_kept(data, encoders, tmp_path, caplog):
    good, bad = encoders
    with caplog.at_level(logging.WARNING):
        worse = _checked(data, bad, tmp_path / "bad_start.pt")
    decision = worse["scratch_check"]
    assert decision["kept"] == "scratch"
    assert decision["validation_dice"]["pretrained"] < decision["validation_dice"]["scratch"]
    # in_flags: an earlier in-process CLI test may have left its flag wording on the root logger.
    warnings = [in_flags(r.getMessage()) for r in caplog.records
                if r.levelno == logging.WARNING and r.name.endswith("scratch_check")]
    assert warnings == [in_flags(worse["scratch_check_warning"])]
    assert warnings[0].startswith("pretraining did not help on your validation slices") and "\n" not in warnings[0]
    assert "kept the scratch model" in warnings[0] and "`init`" in worse["scratch_check_warning"]
    # ``out`` is the scratch candidate's model, with the decision recorded.
    saved = load_checkpoint(tmp_path / "bad_start.pt", kinds=("polycl",))
    scratch = load_checkpoint(tmp_path / "bad_start.candidates" / "scratch.pt")
    assert states_equal(saved["state_dict"], scratch["state_dict"])
    assert saved["provenance"]["initialisation"] == {"from": "scratch"}
    assert saved["provenance"]["scratch_check"]["kept"] == "scratch"
    assert saved["provenance"]["scratch_check"]["warning"] == worse["scratch_check_warning"]

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        better = _checked(data, good, tmp_path / "good_start.pt")
    decision = better["scratch_check"]
    assert decision["kept"] == "pretrained" and better["scratch_check_warning"] is None
    assert decision["validation_dice"]["pretrained"] > decision["validation_dice"]["scratch"]
    assert not [r for r in caplog.records if r.name.endswith("scratch_check")]
    saved = load_checkpoint(tmp_path / "good_start.pt", kinds=("polycl",))
    pretrained = load_checkpoint(tmp_path / "good_start.candidates" / "pretrained.pt")
    assert states_equal(saved["state_dict"], pretrained["state_dict"])
    assert saved["provenance"]["initialisation"]["from"] == str(good.resolve())
    # Same scratch candidate in both checks: the same seed, split and options (the frozen encoder does not carry over).
    assert decision["validation_dice"]["scratch"] == worse["scratch_check"]["validation_dice"]["scratch"]
    assert decision["best_epoch"]["scratch"] == worse["scratch_check"]["best_epoch"]["scratch"]


def _summary(dice, loss, rule="validation Dice", slices=12):
    history = [{"epoch": 1, "loss": 1.0, "validation_dice": dice, "validation_loss": loss}]
    return {"model_selection": rule, "best_epoch": 1, "best_validation_dice": dice, "history": history,
            "validation_slices": slices}


def test_the_choice_needs_a_strictly_better_pretrained_score():
    assert scratch_check.choose(_summary(0.71, 0.5), _summary(0.70, 0.4))["kept"] == "pretrained"
    assert scratch_check.choose(_summary(0.69, 0.3), _summary(0.70, 0.4))["kept"] == "scratch"
    # Equal Dice: the lower validation loss decides; equal everything: scratch (pretraining did not help).
    assert scratch_check.choose(_summary(0.70, 0.3), _summary(0.70, 0.4))["kept"] == "pretrained"
    assert scratch_check.choose(_summary(0.70, 0.4), _summary(0.70, 0.4))["kept"] == "scratch"
    rule = "lowest validation loss (no validation slice shows label 1)"
    decision = scratch_check.choose(_summary(None, 0.5, rule), _summary(None, 0.4, rule))
    assert decision["kept"] == "scratch" and decision["compared_by"] == rule
    line = scratch_check.warning_line(decision)
    assert "validation loss 0.5000 from `init` vs 0.4000 from scratch" in line and "\n" not in line
    with pytest.raises(SegSSLError, match="ranked differently"):
        scratch_check.choose(_summary(0.7, 0.4), _summary(None, 0.4, rule))


def test_the_warning_is_one_line_that_names_the_numbers_and_what_to_do():
    decision = scratch_check.choose(_summary(0.41, 0.6, slices=16), _summary(0.52, 0.5, slices=16))
    line = scratch_check.warning_line(decision)
    assert line == (
        "pretraining did not help on your validation slices (Dice 0.410 from `init` vs 0.520 from scratch, 16 slices "
        "that never trained): kept the scratch model — pretrain on more unlabelled scans of the body region you "
        "segment, try `strategy` P (or O/M with organ flags), or fine-tune without `init`"
    )
    assert scratch_check.warning_line(scratch_check.choose(_summary(0.6, 0.5), _summary(0.5, 0.5))) is None


def test_validation_slices_are_disjoint_from_training_and_held_out_slices(data):
    from SegSSLLib.datasets import load_dataset
    from SegSSLLib.polycl.slice_cache import cache_cases

    msd, cache, _ = data
    cases = cache_cases(list(load_dataset(msd).cases), TINY_SLICING, cache)
    held_out = np.array([[0, 3], [0, 4], [1, 5], [2, 0]])
    for chosen in (cases, cases[:1]):  # several cases (whole cases validate) and one case (blocks of slices)
        for max_slices in (None, 4):
            train, validation = split_labelled_slices(chosen, 1, 0.2, None, max_slices, seed=3, exclude=held_out)
            as_set = lambda items: {tuple(item) for item in items.tolist()}  # noqa: E731
            assert len(train) and len(validation)
            assert not as_set(train) & as_set(validation)
            assert not (as_set(train) | as_set(validation)) & as_set(held_out)
    # Both candidates of a check get the same split: the scratch candidate changes only the pretrained-layer options.
    options = FinetuneOptions(label=1, freeze_epochs=2, unfreeze_epochs=3, encoder_lr_factor=0.1, layer_decay=0.5)
    plain = scratch_check.scratch_options(options)
    assert (plain.freeze_epochs, plain.unfreeze_epochs, plain.encoder_lr_factor, plain.layer_decay) == (0, 0, 1.0, 1.0)
    assert (plain.seed, plain.validation_fraction, plain.max_slices) == (options.seed, options.validation_fraction,
                                                                         options.max_slices)


def test_without_validation_slices_the_check_refuses_before_any_work(data, tmp_path):
    from SegSSLLib.polycl.workflows import TrainingSettings, finetune as finetune_workflow

    msd, cache, root = data
    init = _pretrain_file(tmp_path / "pre.pt", {})
    with pytest.raises(SegSSLError, match="`validation_fraction` 0 leaves no validation slices .*`scratch_check`"):
        finetune_workflow(msd, tmp_path / "out.pt", FinetuneOptions(label=1, validation_fraction=0.0),
                          TrainingSettings(TINY_MODEL, TINY_SLICING, device="cpu", cache_dir=cache), init=init)
    assert not (tmp_path / "out.pt").exists() and not (tmp_path / "out.candidates").exists()


@pytest.mark.slow
def test_the_cli_checks_by_default_and_the_model_file_loads_without_running_code(data, encoders, tmp_path):
    msd, cache, _ = data
    good, bad = encoders
    out = tmp_path / "liver.pt"
    common = ["--data", msd, "--label", "1", "--epochs", "2", "--freeze-epochs", "2", "--slices", "4",
              "--epoch-samples", "16", "--threads", "1", "--progress", "none", "--cache-dir", cache, "--seed", "3"]
    result = run_segssl("finetune", "--init", bad, "--out", out, *common)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "pretraining did not help" in line]
    assert len(lines) == 1 and "--strategy P" in lines[0] and "--init" in lines[0] and "`" not in lines[0]
    assert "the scratch model; both candidates in liver.candidates/" in result.stderr
    # weights_only loading: plain data only, no pickled code runs.
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert raw["provenance"]["scratch_check"]["kept"] == "scratch"
    assert set(raw["provenance"]["scratch_check"]["candidates"]) == {"pretrained", "scratch"}
    for candidate in ("pretrained", "scratch"):
        assert torch.load(tmp_path / "liver.candidates" / f"{candidate}.pt", map_location="cpu", weights_only=True)["kind"] == "polycl"

    unchecked = tmp_path / "unchecked.pt"
    result = run_segssl("finetune", "--init", bad, "--out", unchecked, "--no-scratch-check", *common)
    assert result.returncode == 0, result.stderr
    assert "pretraining did not help" not in result.stderr and not (tmp_path / "unchecked.candidates").exists()
    assert "scratch_check" not in load_checkpoint(unchecked)["provenance"]

    result = run_segssl("finetune", "--init", bad, "--out", tmp_path / "none.pt", "--val-fraction", "0", *common)
    assert_one_line_error(result, "--val-fraction", "--no-scratch-check")
    assert not (tmp_path / "none.pt").exists()


class _Case:
    """What ``inference_dice`` reads of a cached case."""

    def __init__(self, images, labels):
        self.images, self.labels, self.num_slices = images, labels, len(images)


class _Threshold(torch.nn.Module):
    """Foreground where the image is bright; remembers every slice it was shown."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, images):
        self.seen.extend(images[:, 0, 0, 0].tolist())  # each test slice carries its index in a corner pixel
        foreground = (images > 0.5).float()
        return torch.cat([1 - foreground, foreground], dim=1)


def test_models_are_compared_as_segmented_largest_component_and_never_scored_on_held_out_slices():
    images = np.zeros((6, 8, 8), np.float32)
    images[:, 0, 0] = np.arange(6) / 100  # slice index, below the threshold
    images[1:5, 2:5, 2:5] = 1.0  # the structure, connected through slices 1-4
    images[3, 6:8, 6:8] = 1.0  # a stray blob on a validation slice
    labels = np.zeros((6, 8, 8), np.int64)
    labels[1:5, 2:5, 2:5] = 1
    model, validation = _Threshold(), np.array([[0, 3], [0, 4]])
    labels[0, 6:8, 6:8] = 1  # a held-out slice's label: never read
    dice = scratch_check.inference_dice(model, [_Case(images, labels)], validation, 1, CPU,
                                        excluded_items=np.array([[0, 0]]))
    assert dice == 1.0  # the stray blob is not the largest component; the per-slice Dice would be 2·18/(22+18)
    # Every slice is segmented (a gap would cut the structure), held-out ones included; only validation ones score.
    assert sorted(round(v * 100) for v in model.seen) == [0, 1, 2, 3, 4, 5]
    assert scratch_check.inference_dice(model, [_Case(images, np.zeros_like(labels))], validation, 1, CPU) is None
    # The segmented Dice decides when given; the best-epoch Dice is kept for the record.
    decision = scratch_check.choose(_summary(0.80, 0.4), _summary(0.60, 0.4), {"pretrained": 0.5, "scratch": 0.7})
    assert decision["kept"] == "scratch" and decision["compared_by"] == scratch_check.INFERENCE_RULE
    assert decision["validation_dice"] == {"pretrained": 0.5, "scratch": 0.7}
    assert decision["best_epoch_dice"] == {"pretrained": 0.80, "scratch": 0.60}
    assert "Dice 0.500 from `init` vs 0.700 from scratch" in scratch_check.warning_line(decision)
    assert scratch_check.choose(_summary(0.6, 0.4), _summary(0.8, 0.4), {"pretrained": None, "scratch": None})["kept"] == "scratch"
