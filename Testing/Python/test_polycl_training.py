"""Pretraining and fine-tuning loops on tiny phantoms: determinism, resume, checkpoints, logging, freezing."""

import os
import re

import numpy as np
import pytest
import torch

from polycl_helpers import TINY_MODEL, TINY_SLICING, one_thread, phantom_msd, phantom_plain, states_equal  # noqa: F401
from SegSSLLib.checkpoints import load_checkpoint
from SegSSLLib.errors import SegSSLError
from SegSSLLib.polycl.finetuning import FinetuneOptions, Initialisation, finetune
from SegSSLLib.polycl.pretraining import PretrainOptions, pretrain

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("polycl_data")
    return phantom_plain(root / "plain"), phantom_msd(root / "msd", seeds=(1, 2, 3)), root / "cache"


def _pretrain(volumes, out, epochs, resume=False, **changes):
    plain, msd, cache = volumes
    options = PretrainOptions(**{"epochs": epochs, "batch_size": 8, "seed": 7, **changes})
    return pretrain([plain, msd], out, TINY_MODEL, TINY_SLICING, options, CPU, cache_dir=cache, resume=resume)


def test_pretraining_repeats_with_the_seed_and_resume_repeats_an_uninterrupted_run(volumes, tmp_path):
    history = _pretrain(volumes, tmp_path / "straight.pt", epochs=2)
    _pretrain(volumes, tmp_path / "again.pt", epochs=2)
    _pretrain(volumes, tmp_path / "resumed.pt", epochs=1)
    first_epoch = load_checkpoint(tmp_path / "resumed.pt")
    resumed_history = _pretrain(volumes, tmp_path / "resumed.pt", epochs=2, resume=True)

    straight, again, resumed = (load_checkpoint(tmp_path / f"{n}.pt") for n in ("straight", "again", "resumed"))
    assert states_equal(straight["state_dict"], again["state_dict"])
    assert states_equal(straight["state_dict"], resumed["state_dict"])
    assert not states_equal(straight["state_dict"], first_epoch["state_dict"])
    assert [h["loss"] for h in resumed_history] == [h["loss"] for h in history]
    assert first_epoch["extra"]["history"][0]["epoch"] == 1 and resumed["extra"]["history"][-1]["epoch"] == 2
    assert all(np.isfinite(h["loss"]) and h["triplets"] == 5 * 12 for h in history)
    assert straight["kind"] == "polycl-pretrain"
    assert straight["config"]["slicing"]["window"] == {"mode": "ct", "level": 40.0, "width": 400.0, "lower": 0.5, "upper": 99.5}
    assert straight["config"]["model"]["widths"] == [4, 8, 16] and straight["provenance"]["epochs"] == 2
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_resume_refuses_other_settings(volumes, tmp_path):
    _pretrain(volumes, tmp_path / "run.pt", epochs=1)
    with pytest.raises(SegSSLError, match="other settings .*batch_size"):
        _pretrain(volumes, tmp_path / "run.pt", epochs=2, resume=True, batch_size=4)


def test_resume_refuses_fewer_epochs_another_process_count_and_changed_volumes(volumes, tmp_path, monkeypatch):
    from SegSSLLib.polycl import distributed

    plain, msd, cache = volumes
    _pretrain(volumes, tmp_path / "run.pt", epochs=2)
    with pytest.raises(SegSSLError, match="already holds 2 epochs, more than `epochs` 1"):
        _pretrain(volumes, tmp_path / "run.pt", epochs=1, resume=True)
    with monkeypatch.context() as patch:
        patch.setattr(distributed, "world_size", lambda: 2)  # as under torchrun --nproc_per_node=2
        patch.setattr(distributed, "barrier", lambda: None)
        with pytest.raises(SegSSLError, match="other settings .*processes"):
            _pretrain(volumes, tmp_path / "run.pt", epochs=3, resume=True)
    volume = sorted(plain.iterdir())[0]
    stat = volume.stat()
    os.utime(volume, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the volume was replaced
    try:
        with pytest.raises(SegSSLError, match="other settings .*data"):
            _pretrain(volumes, tmp_path / "run.pt", epochs=3, resume=True)
    finally:
        os.utime(volume, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_same_scan_strategy_ignores_a_label_on_unlabelled_volumes(volumes, tmp_path, caplog):
    plain, msd, cache = volumes
    options = PretrainOptions(epochs=1, batch_size=8, strategy="S", label=1)
    with caplog.at_level("WARNING"):
        pretrain([plain, plain], tmp_path / "s.pt", TINY_MODEL, TINY_SLICING, options, CPU, cache_dir=cache)
    # Worded with flags when an earlier in-process CLI test left its log filter on the root logger.
    assert re.search(r"(`label`|--label) 1 is not used by (`strategy`|--strategy) S", caplog.text)
    assert load_checkpoint(tmp_path / "s.pt")["config"]["label"] is None


def test_tensorboard_gets_a_loss_per_step_and_per_epoch(volumes, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plain, msd, cache = volumes
    options = PretrainOptions(epochs=2, batch_size=16, strategy="M", label=1)
    history = pretrain([msd], tmp_path / "m.pt", TINY_MODEL, TINY_SLICING, options, CPU, cache_dir=cache, logdir=str(tmp_path / "tb"))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    steps = [e.step for e in events.Scalars("pretrain/loss")]
    per_epoch = -(-history[0]["triplets"] // 16)
    assert steps == list(range(1, 2 * per_epoch + 1))
    assert [e.value for e in events.Scalars("pretrain/epoch_loss")] == pytest.approx([h["loss"] for h in history])


def test_fine_tuning_with_a_frozen_encoder_keeps_the_pretrained_encoder(volumes, tmp_path):
    plain, msd, cache = volumes
    _pretrain(volumes, tmp_path / "pre.pt", epochs=1)
    init = Initialisation.load(tmp_path / "pre.pt")
    options = FinetuneOptions(label=1, epochs=2, freeze_epochs=2, epoch_samples=16, max_slices=4)
    summary = finetune(msd, tmp_path / "ft.pt", options, CPU, TINY_MODEL, TINY_SLICING, init, cache_dir=cache)
    model = load_checkpoint(tmp_path / "ft.pt", kinds=("polycl",))
    encoder = {k: v for k, v in model["state_dict"].items() if k.startswith("encoder.")}
    assert states_equal(encoder, {k: v for k, v in init.state_dict.items() if k.startswith("encoder.")})
    assert summary["training_slices"] == 4 and model["provenance"]["training_slices"] == 4
    assert model["provenance"]["initialisation"]["kind"] == "polycl-pretrain"
    assert model["config"]["label"] == 1 and model["config"]["label_name"] == "liver"
    assert summary["best_epoch"] == 1 + int(np.argmax([h["validation_dice"] for h in summary["history"]]))


def test_fine_tuning_from_scratch_learns_the_liver(volumes, tmp_path):
    plain, msd, cache = volumes
    options = FinetuneOptions(label=1, epochs=12, epoch_samples=64, batch_size=8, learning_rate=3e-3)
    summary = finetune(msd, tmp_path / "ft.pt", options, CPU, TINY_MODEL, TINY_SLICING, cache_dir=cache)
    dice = [h["validation_dice"] for h in summary["history"]]
    assert summary["best_validation_dice"] == max(dice) > 0.6
    assert load_checkpoint(tmp_path / "ft.pt")["provenance"]["initialisation"] == {"from": "scratch"}


def _finetune(volumes, out, epochs, resume=False, **changes):
    plain, msd, cache = volumes
    options = FinetuneOptions(**{"label": 1, "epochs": epochs, "epoch_samples": 16, "max_slices": 4, "seed": 5, **changes})
    return finetune(msd, out, options, CPU, TINY_MODEL, TINY_SLICING, cache_dir=cache, resume=resume)


def _encoder(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("encoder.")}


def test_fine_tuning_resumed_after_an_interruption_equals_an_uninterrupted_run(volumes, tmp_path):
    straight = _finetune(volumes, tmp_path / "straight.pt", epochs=3, freeze_epochs=1)
    _finetune(volumes, tmp_path / "resumed.pt", epochs=2, freeze_epochs=1)  # "interrupted" after epoch 2
    resumed = _finetune(volumes, tmp_path / "resumed.pt", epochs=3, freeze_epochs=1, resume=True)
    a, b = load_checkpoint(tmp_path / "straight.pt"), load_checkpoint(tmp_path / "resumed.pt")
    assert states_equal(a["state_dict"], b["state_dict"])
    assert states_equal(a["extra"]["resume"]["state_dict"], b["extra"]["resume"]["state_dict"])
    assert [h["loss"] for h in straight["history"]] == [h["loss"] for h in resumed["history"]]
    assert len(resumed["history"]) == 3 and resumed["best_epoch"] == straight["best_epoch"]
    with pytest.raises(SegSSLError, match="other settings .*learning_rate"):
        _finetune(volumes, tmp_path / "resumed.pt", epochs=4, freeze_epochs=1, resume=True, learning_rate=0.01)
    with pytest.raises(SegSSLError, match="already holds 3 epochs, more than `epochs` 2"):
        _finetune(volumes, tmp_path / "resumed.pt", epochs=2, freeze_epochs=1, resume=True)


def test_a_frozen_encoder_gathers_no_optimizer_state_and_trains_after_unfreezing(volumes, tmp_path):
    torch.manual_seed(5)
    from SegSSLLib.polycl.model import SegmentationNet

    initial = _encoder(SegmentationNet(TINY_MODEL).state_dict())  # what finetune starts from with seed 5
    _finetune(volumes, tmp_path / "ft.pt", epochs=1, freeze_epochs=1)
    frozen = load_checkpoint(tmp_path / "ft.pt")["extra"]["resume"]
    assert states_equal(_encoder(frozen["state_dict"]), initial)
    encoder_count = len(initial) - sum("running" in k or "num_batches" in k for k in initial)
    assert len(frozen["optimizer"]["state"]) == sum(1 for _ in SegmentationNet(TINY_MODEL).parameters()) - encoder_count
    _finetune(volumes, tmp_path / "ft.pt", epochs=2, freeze_epochs=1, resume=True)
    unfrozen = load_checkpoint(tmp_path / "ft.pt")["extra"]["resume"]
    changed = [k for k, v in _encoder(unfrozen["state_dict"]).items() if not torch.equal(v, initial[k])]
    assert changed and all(k.startswith("encoder.") for k in changed)


def test_without_the_structure_in_validation_the_lowest_validation_loss_is_kept(volumes, tmp_path):
    from SegSSLLib.datasets import load_dataset
    from SegSSLLib.polycl.datasets import split_labelled_slices
    from SegSSLLib.polycl.slice_cache import cache_cases

    plain, msd, cache = volumes
    cases = cache_cases(list(load_dataset(msd).cases), TINY_SLICING, cache)
    _, validation = split_labelled_slices(cases, 1, seed=5)
    showing = np.array([bool((np.asarray(cases[c].labels[s]) == 1).any()) for c, s in validation])
    assert showing.any()
    options = FinetuneOptions(label=1, epochs=3, epoch_samples=16, seed=5, learning_rate=3e-3)
    summary = finetune(msd, tmp_path / "ft.pt", options, CPU, TINY_MODEL, TINY_SLICING, cache_dir=cache,
                       excluded_items=validation[showing])
    losses = [h["validation_loss"] for h in summary["history"]]
    assert summary["model_selection"] == "lowest validation loss (no validation slice shows label 1)"
    assert summary["best_epoch"] == 1 + int(np.argmin(losses)) and summary["best_validation_dice"] is None
    assert all(h["validation_dice"] is None for h in summary["history"])
    assert load_checkpoint(tmp_path / "ft.pt")["provenance"]["model_selection"] == summary["model_selection"]


def test_data_loading_workers_draw_different_augmentations_that_repeat_with_the_seed(volumes):
    from SegSSLLib.datasets import load_dataset
    from SegSSLLib.polycl.datasets import LabelledSliceDataset
    from SegSSLLib.polycl.finetuning import _augmentation
    from SegSSLLib.polycl.slice_cache import cache_cases
    from SegSSLLib.polycl.training import epoch_loader, seed_epoch

    plain, msd, cache = volumes
    cases = cache_cases(list(load_dataset(msd).cases), TINY_SLICING, cache)
    same_slice = np.tile([[0, 6]], (8, 1))  # one slice eight times: only the augmentation differs

    def batches():
        seed_epoch(3, 0)
        dataset = LabelledSliceDataset(cases, same_slice, 1, _augmentation(32))
        return [b["image"] for b in epoch_loader(dataset, 1, 3, 0, shuffle=False, workers=2)]

    first, second = batches(), batches()
    # Batches alternate between the two workers: 0, 2, 4, 6 from one, 1, 3, 5, 7 from the other.
    assert not all(torch.equal(first[i], first[i + 1]) for i in range(0, 8, 2))
    assert len({b.numpy().tobytes() for b in first}) > 4
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_an_explicit_seed_asks_cuda_for_deterministic_kernels(monkeypatch):
    from SegSSLLib.cli import build_parser
    from SegSSLLib.cli.polycl_options import start_training
    from SegSSLLib.polycl import training
    from SegSSLLib.progress import NO_PROGRESS

    parser = build_parser()
    base = ["finetune", "--data", "d", "--label", "1", "--out", "m.pt", "--device", "cpu"]
    assert parser.parse_args(base + ["--seed", "0"]).seed_given and not parser.parse_args(base).seed_given
    asked, make_deterministic = [], training.make_deterministic
    monkeypatch.setattr(training, "make_deterministic", asked.append)
    start_training(parser.parse_args(base + ["--seed", "3"]), NO_PROGRESS)
    start_training(parser.parse_args(base), NO_PROGRESS)
    assert asked == [torch.device("cpu")]  # only the seeded run; on a CPU the call changes nothing

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        make_deterministic(torch.device("cpu"))
        assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        make_deterministic(torch.device("cuda"))  # sets flags only; needs no GPU
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]
