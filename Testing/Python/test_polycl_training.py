"""Pretraining and fine-tuning loops on tiny phantoms: determinism, resume, checkpoints, logging, freezing."""

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
