"""The scratch check: a pretrained start is kept only when it beats scratch on slices that never trained."""

import logging
from pathlib import Path

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
    assert decision["kept"] == "scratch" and decision["verdict"] == scratch_check.SCRATCH_BETTER
    assert decision["validation_dice"]["pretrained"] < decision["validation_dice"]["scratch"]
    assert decision["bootstrap"]["interval"][1] < 0 and decision["bootstrap"]["slices_with_structure"] >= 6
    # in_flags: an earlier in-process CLI test may have left its flag wording on the root logger.
    warnings = [in_flags(r.getMessage()) for r in caplog.records
                if r.levelno == logging.WARNING and r.name.endswith("scratch_check")]
    assert warnings == [in_flags(worse["scratch_check_warning"])]
    assert warnings[0].startswith("pretraining made fine-tuning worse on your validation slices") and "\n" not in warnings[0]
    assert "kept the scratch model" in warnings[0] and "`init`" in worse["scratch_check_warning"]
    # ``out`` is the scratch candidate's model, with the decision recorded.
    saved = load_checkpoint(tmp_path / "bad_start.pt", kinds=("polycl",))
    scratch = load_checkpoint(tmp_path / "bad_start.candidates" / "scratch.pt")
    assert states_equal(saved["state_dict"], scratch["state_dict"])
    assert saved["provenance"]["initialisation"] == {"from": "scratch"}
    assert saved["provenance"]["scratch_check"]["kept"] == "scratch"
    assert saved["provenance"]["scratch_check"]["warning"] == worse["scratch_check_warning"]
    assert saved["provenance"]["scratch_check"]["verdict"] == "scratch better"
    # No `validation_fraction` given: the share was chosen from the labelled data, and recorded.
    share = saved["provenance"]["scratch_check"]["validation_share"]
    assert share["rule"] == "automatic" and share["fraction"] in scratch_check.VALIDATION_SHARES
    assert share["reached"] and share["validation_with_structure"] == decision["bootstrap"]["slices_with_structure"]

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        better = _checked(data, good, tmp_path / "good_start.pt")
    decision = better["scratch_check"]
    assert decision["kept"] == "pretrained" and better["scratch_check_warning"] is None
    assert decision["verdict"] == scratch_check.PRETRAINED_BETTER and better["scratch_check_note"] is None
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


def _counts(dice_per_slice, reference=100, empty=0):
    """Per-slice (intersection, predicted, reference) counts: one slice per Dice value, plus ``empty`` slices without the structure."""
    rows = [(round(d * reference), reference, reference) for d in dice_per_slice] + [(0, 0, 0)] * empty
    return np.array(rows, np.int64)


def test_a_clear_difference_gives_a_confident_verdict_and_two_noisy_slices_do_not():
    rng = np.random.default_rng(0)
    good, poor = 0.85 + 0.05 * rng.standard_normal(12), 0.60 + 0.05 * rng.standard_normal(12)
    clear = scratch_check.compare(_counts(good, empty=8), _counts(poor, empty=8))
    assert clear["verdict"] == scratch_check.PRETRAINED_BETTER and clear["slices_with_structure"] == 12
    assert 0 < clear["interval"][0] < clear["difference"] < clear["interval"][1]
    assert scratch_check.compare(_counts(poor, empty=8), _counts(good, empty=8))["verdict"] == scratch_check.SCRATCH_BETTER
    # Two slices with the structure that disagree: the interval straddles 0.
    noisy = scratch_check.compare(_counts([0.9, 0.3], empty=4), _counts([0.5, 0.6], empty=4))
    assert noisy["verdict"] == scratch_check.INCONCLUSIVE and noisy["interval"][0] < 0 < noisy["interval"][1]
    # Two slices that agree: the bootstrap interval excludes 0, but 2 slices cannot be significant (sign test).
    agreeing = scratch_check.compare(_counts([0.9, 0.85]), _counts([0.5, 0.55]))
    assert agreeing["interval"][0] > 0 and agreeing["verdict"] == scratch_check.INCONCLUSIVE
    assert scratch_check.minimum_slices(0.95) == 6 and scratch_check.minimum_slices(0.9) == 5
    # The same seed gives the same interval; the draw is paired (equal candidates: a zero-width interval, no verdict).
    assert scratch_check.compare(_counts(good), _counts(poor))["interval"] == scratch_check.compare(_counts(good), _counts(poor))["interval"]
    same = scratch_check.compare(_counts(good), _counts(good))
    assert same["interval"] == [0.0, 0.0] and same["verdict"] == scratch_check.INCONCLUSIVE
    with pytest.raises(SegSSLError, match="different reference"):
        scratch_check.compare(_counts([0.5, 0.5]), _counts([0.5, 0.5], reference=90))


def test_a_confident_verdict_decides_and_an_inconclusive_one_follows_the_documented_rule():
    clear = scratch_check.compare(_counts([0.6] * 8), _counts([0.8] * 8))  # scratch better, 8 slices
    noisy = scratch_check.compare(_counts([0.9, 0.3]), _counts([0.5, 0.6]))  # inconclusive, pretrained mean higher
    for rule in scratch_check.INCONCLUSIVE_RULES:
        decision = scratch_check.choose(_summary(0.9, 0.3), _summary(0.5, 0.4), comparison=clear, inconclusive_keeps=rule)
        assert decision["kept"] == "scratch" and decision["verdict_text"] == "scratch better"
        assert decision["validation_dice"] == {"pretrained": pytest.approx(0.6), "scratch": pytest.approx(0.8)}
    low = scratch_check.compare(_counts([0.5, 0.6]), _counts([0.9, 0.3]))  # inconclusive, scratch mean higher
    assert scratch_check.choose(_summary(0.7, 0.4), _summary(0.7, 0.4), comparison=noisy,
                                inconclusive_keeps="better mean")["kept"] == "pretrained"
    assert scratch_check.choose(_summary(0.7, 0.4), _summary(0.7, 0.4), comparison=low,
                                inconclusive_keeps="better mean")["kept"] == "scratch"
    decision = scratch_check.choose(_summary(0.7, 0.4), _summary(0.7, 0.4), comparison=low, inconclusive_keeps="pretrained")
    assert decision["kept"] == "pretrained" and decision["better_mean"] == "scratch"
    assert decision["verdict_text"] == "inconclusive (2 validation slices with the structure)"
    # The library's default is the rule docs/polycl.md states.
    default = scratch_check.INCONCLUSIVE_KEEPS
    assert scratch_check.choose(_summary(0.7, 0.4), _summary(0.7, 0.4), comparison=low)["inconclusive_keeps"] == default
    phrase = {"better mean": "keeps the candidate with the better validation Dice",
              "pretrained": "keeps the pretrained model the user asked for"}[default]
    docs = " ".join((Path(__file__).resolve().parents[2] / "docs" / "polycl.md").read_text().split())
    assert f"When the verdict is inconclusive, the check {phrase}" in docs
    with pytest.raises(SegSSLError, match="`inconclusive_keeps`"):
        scratch_check.choose(_summary(0.7, 0.4), _summary(0.7, 0.4), inconclusive_keeps="scratch")


def test_the_choice_needs_a_strictly_better_pretrained_score():
    # Without per-slice counts the verdict is inconclusive and "better mean" compares best-epoch scores.
    rule_kwargs = {"inconclusive_keeps": "better mean"}
    assert scratch_check.choose(_summary(0.71, 0.5), _summary(0.70, 0.4), **rule_kwargs)["kept"] == "pretrained"
    assert scratch_check.choose(_summary(0.69, 0.3), _summary(0.70, 0.4), **rule_kwargs)["kept"] == "scratch"
    # Equal Dice: the lower validation loss decides; equal everything: scratch (pretraining did not help).
    assert scratch_check.choose(_summary(0.70, 0.3), _summary(0.70, 0.4), **rule_kwargs)["kept"] == "pretrained"
    assert scratch_check.choose(_summary(0.70, 0.4), _summary(0.70, 0.4), **rule_kwargs)["kept"] == "scratch"
    rule = "lowest validation loss (no validation slice shows label 1)"
    decision = scratch_check.choose(_summary(None, 0.5, rule), _summary(None, 0.4, rule), **rule_kwargs)
    assert decision["kept"] == "scratch" and decision["compared_by"] == rule
    assert decision["verdict_text"] == "inconclusive (0 validation slices with the structure)"
    assert scratch_check.warning_line(decision) is None
    line = scratch_check.inconclusive_line(decision)
    assert "no validation slice shows the structure" in line and "at least 6 slices with the structure" in line
    with pytest.raises(SegSSLError, match="ranked differently"):
        scratch_check.choose(_summary(0.7, 0.4), _summary(None, 0.4, rule))


def test_the_warning_and_the_inconclusive_note_are_one_line_each_and_say_what_to_do():
    clear = scratch_check.compare(_counts([0.41] * 8, empty=8), _counts([0.52] * 8, empty=8))
    decision = scratch_check.choose(_summary(0.41, 0.6, slices=16), _summary(0.52, 0.5, slices=16), comparison=clear)
    line = scratch_check.warning_line(decision)
    assert line == (
        "pretraining made fine-tuning worse on your validation slices (Dice 0.410 from `init` vs 0.520 from scratch, "
        "95% interval of the difference -0.110 to -0.110, 8 of 16 validation slices with the structure; they never "
        "trained): kept the scratch model — pretrain on more unlabelled scans of the body region you segment, try "
        "`strategy` P (or O/M with organ flags), or fine-tune without `init`"
    )
    assert scratch_check.inconclusive_line(decision) is None
    noisy = scratch_check.compare(_counts([0.9, 0.3], empty=4), _counts([0.5, 0.6], empty=4))
    for rule, kept in (("better mean", "the pretrained model (better validation Dice, not significantly)"),
                       ("pretrained", "the pretrained model you asked for")):
        decision = scratch_check.choose(_summary(0.6, 0.5), _summary(0.55, 0.5), comparison=noisy, inconclusive_keeps=rule)
        assert scratch_check.warning_line(decision) is None
        note = scratch_check.inconclusive_line(decision)
        assert note.startswith("the scratch check is inconclusive (Dice 0.600 from `init` vs 0.550 from scratch, 95% "
                               "interval of the difference ") and "\n" not in note
        assert f"2 validation slices with the structure): kept {kept} — to decide, give validation at least 6 slices" in note
        assert note.endswith("or a higher `validation_fraction`)")
    better = scratch_check.choose(_summary(0.6, 0.5), _summary(0.5, 0.5),
                                  comparison=scratch_check.compare(_counts([0.8] * 8), _counts([0.6] * 8)))
    assert better["verdict"] == "pretrained better" and scratch_check.warning_line(better) is None
    assert scratch_check.inconclusive_line(better) is None


class _Labels:
    """A labelled case as the split sees it: its slices and which show the structure."""

    def __init__(self, flags):
        self._flags = np.asarray(flags, bool)
        self.num_slices = len(self._flags)

    def flags(self, label):
        return self._flags.copy()


def _one_case(with_structure, without=20):
    return [_Labels([True] * with_structure + [False] * without)]


def test_the_validation_share_is_the_smallest_that_lets_the_check_decide():
    # One case, blocks of 4 slices: 48 slices with the structure give 8 validating ones at 0.2;
    # 24 give 4 at 0.2 and 8 at 0.3; 20 give 4 at 0.2 and 0.3 and 8 at 0.4.
    for with_structure, expected in ((48, 0.2), (24, 0.3), (20, 0.4)):
        share = scratch_check.validation_share(_one_case(with_structure), FinetuneOptions(label=1))
        assert (share["fraction"], share["rule"], share["reached"]) == (expected, "automatic", True)
        assert share["validation_with_structure"] >= scratch_check.minimum_slices() == 6
        assert share["training_with_structure"] == with_structure - share["validation_with_structure"]
        assert [row["fraction"] for row in share["shares"]] == list(scratch_check.VALIDATION_SHARES)
    # Several cases: whole cases validate; five cases with 3 slices of the structure each need two of them.
    cases = [_Labels([False, True, True, True, False]) for _ in range(5)]
    share = scratch_check.validation_share(cases, FinetuneOptions(label=1))
    assert (share["fraction"], share["validation_with_structure"], share["training_with_structure"]) == (0.3, 6, 9)
    # The shares and the floor are the ones docs/polycl.md states.
    docs = " ".join((Path(__file__).resolve().parents[2] / "docs" / "polycl.md").read_text().split())
    shares = ", ".join(map(str, scratch_check.VALIDATION_SHARES[:-1])) + f", {scratch_check.VALIDATION_SHARES[-1]}"
    assert (f"**smallest of {shares} that gives at least {scratch_check.minimum_slices()} validation slices with "
            "the structure**") in docs


def test_the_share_leaves_training_its_floor_and_says_when_none_can_decide():
    # 0.4 would leave 12 training slices with the structure: fewer than the 13 that `max_slices` asks for.
    share = scratch_check.validation_share(_one_case(20), FinetuneOptions(label=1, max_slices=13))
    assert (share["fraction"], share["reached"], share["validation_with_structure"]) == (0.3, False, 4)
    assert [row["leaves_floor"] for row in share["shares"]] == [True, True, False]
    assert scratch_check.training_floor(8, None) == 8 and scratch_check.training_floor(2, 13) == 13
    assert scratch_check.training_floor(2, None) == scratch_check.minimum_slices()
    line = scratch_check.share_line(share)
    assert line.startswith("scratch check: `validation_fraction` 0.3 (chosen: none of 0.2, 0.3, 0.4 gives 6") and "\n" not in line
    assert line.endswith("8 validation slices, 4 with the structure; 16 training slices with the structure")
    decision = scratch_check.choose(_summary(0.6, 0.5), _summary(0.55, 0.5),
                                    comparison=scratch_check.compare(_counts([0.9, 0.3], empty=4), _counts([0.5, 0.6], empty=4)))
    decision["validation_share"] = share
    note = scratch_check.inconclusive_line(decision)
    assert "`validation_fraction` 0.3 is the largest of 0.2, 0.3, 0.4 that leaves training enough slices" in note
    # No share leaves the floor (8 slices with the structure): the plain default.
    share = scratch_check.validation_share(_one_case(8), FinetuneOptions(label=1))
    assert (share["fraction"], share["reached"]) == (0.2, False) and not any(r["leaves_floor"] for r in share["shares"])


def test_a_validation_fraction_the_user_gives_is_kept():
    for given in (0.2, 0.25, 0.5):
        share = scratch_check.validation_share(_one_case(20), FinetuneOptions(label=1, validation_fraction=given))
        assert (share["fraction"], share["rule"]) == (given, "given") and len(share["shares"]) == 1
    assert scratch_check.share_line(share).startswith("scratch check: `validation_fraction` 0.5 (given): ")
    assert FinetuneOptions(label=1).validation_fraction is None
    with pytest.raises(SegSSLError, match="`validation_fraction` must be in"):
        FinetuneOptions(label=1, validation_fraction=1.0)


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
    lines = [line for line in result.stderr.splitlines() if "pretraining made fine-tuning worse" in line]
    assert len(lines) == 1 and "--strategy P" in lines[0] and "--init" in lines[0] and "`" not in lines[0]
    assert "the scratch model; both candidates in liver.candidates/" in result.stderr
    # weights_only loading: plain data only, no pickled code runs.
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert raw["provenance"]["scratch_check"]["kept"] == "scratch"
    assert raw["provenance"]["scratch_check"]["verdict"] == "scratch better"
    assert set(raw["provenance"]["scratch_check"]["candidates"]) == {"pretrained", "scratch"}
    for candidate in ("pretrained", "scratch"):
        assert torch.load(tmp_path / "liver.candidates" / f"{candidate}.pt", map_location="cpu", weights_only=True)["kind"] == "polycl"

    unchecked = tmp_path / "unchecked.pt"
    result = run_segssl("finetune", "--init", bad, "--out", unchecked, "--no-scratch-check", *common)
    assert result.returncode == 0, result.stderr
    assert "pretraining made fine-tuning worse" not in result.stderr and not (tmp_path / "unchecked.candidates").exists()
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
    # Per-slice counts in the order of ``validation``: slice 3 and slice 4, 9 voxels each, all found.
    counts = scratch_check.slice_counts(model, [_Case(images, labels)], validation, 1, CPU, excluded_items=np.array([[0, 0]]))
    assert counts.tolist() == [[9, 9, 9], [9, 9, 9]]
    # The segmented Dice decides when given; the best-epoch Dice is kept for the record.
    decision = scratch_check.choose(_summary(0.80, 0.4), _summary(0.60, 0.4), {"pretrained": 0.5, "scratch": 0.7},
                                    inconclusive_keeps="better mean")
    assert decision["kept"] == "scratch" and decision["compared_by"] == scratch_check.INFERENCE_RULE
    assert decision["validation_dice"] == {"pretrained": 0.5, "scratch": 0.7}
    assert decision["best_epoch_dice"] == {"pretrained": 0.80, "scratch": 0.60}
    assert "Dice 0.500 from `init` vs 0.700 from scratch" in scratch_check.inconclusive_line(decision)
    assert scratch_check.choose(_summary(0.6, 0.4), _summary(0.8, 0.4), {"pretrained": None, "scratch": None},
                                inconclusive_keeps="better mean")["kept"] == "scratch"
