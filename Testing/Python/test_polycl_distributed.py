"""torchrun with two CPU processes (gloo): DDP pretraining resumes exactly; fine-tuning runs; rank 0 writes."""

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from polycl_helpers import phantom_msd, states_equal
from SegSSLLib.checkpoints import load_checkpoint

TINY = ["--image-size", "32", "--widths", "4,8,16", "--device", "cpu", "--progress", "none"]


def torchrun(*args, cache) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", SEGSSL_CACHE_DIR=str(cache))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "SegSSLLib"]
    result = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    return phantom_msd(tmp_path_factory.mktemp("ddp") / "msd", seeds=(1, 2, 3))


@pytest.mark.slow
def test_two_process_pretraining_resumes_to_the_same_weights(msd, tmp_path):
    common = ["pretrain", "--data", msd, "--batch-size", "8", "--seed", "3", *TINY]
    result = torchrun(*common, "--out", tmp_path / "straight.pt", "--epochs", "2", cache=tmp_path / "cache")
    assert result.stderr.count("epoch 2/2") == 1  # only rank 0 logs
    torchrun(*common, "--out", tmp_path / "resumed.pt", "--epochs", "1", cache=tmp_path / "cache")
    torchrun(*common, "--out", tmp_path / "resumed.pt", "--epochs", "2", "--resume", cache=tmp_path / "cache")
    straight, resumed = load_checkpoint(tmp_path / "straight.pt"), load_checkpoint(tmp_path / "resumed.pt")
    assert states_equal(straight["state_dict"], resumed["state_dict"])
    losses = [[h["loss"] for h in c["extra"]["history"]] for c in (straight, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 2
    assert straight["provenance"]["processes"] == 2
    # 3 volumes × 12 slices: each process takes half of the 36 triplets per epoch.
    assert straight["extra"]["history"][0]["triplets"] == 36
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["resumed.pt", "straight.pt"]


@pytest.mark.slow
def test_two_process_fine_tuning_writes_one_model_and_resumes_across_the_unfreezing(msd, tmp_path):
    common = ["finetune", "--data", msd, "--label", "1", "--freeze-epochs", "1", "--epoch-samples", "16", *TINY]
    torchrun(*common, "--out", tmp_path / "ft.pt", "--epochs", "2", cache=tmp_path / "cache")
    torchrun(*common, "--out", tmp_path / "resumed.pt", "--epochs", "1", cache=tmp_path / "cache")
    torchrun(*common, "--out", tmp_path / "resumed.pt", "--epochs", "2", "--resume", cache=tmp_path / "cache")
    model, resumed = load_checkpoint(tmp_path / "ft.pt", kinds=("polycl",)), load_checkpoint(tmp_path / "resumed.pt")
    assert model["provenance"]["processes"] == 2
    dice = [h["validation_dice"] for h in model["extra"]["history"]]
    assert len(dice) == 2 and all(0 <= d <= 1 for d in dice)
    assert model["provenance"]["best_validation_dice"] == max(dice)
    # DDP is rebuilt when the encoder unfreezes; a resumed run still repeats the uninterrupted one.
    assert states_equal(model["extra"]["resume"]["state_dict"], resumed["extra"]["resume"]["state_dict"])
    assert states_equal(model["state_dict"], resumed["state_dict"])
