"""Small data sets and models for the PolyCL tests (tiny phantoms, tiny networks, one CPU thread)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from SegSSLLib.datasets import write_msd_dataset
from SegSSLLib.intensity import IntensityWindow
from SegSSLLib.phantoms import PHANTOM_LABELS, make_ct_phantom
from SegSSLLib.polycl.model import ModelConfig
from SegSSLLib.polycl.slice_cache import SlicingSettings
from SegSSLLib.volumes import write_image

TINY_VOLUME = (32, 32, 12)
TINY_SPACING = (10.0, 10.0, 20.0)
TINY_MODEL = ModelConfig(widths=(4, 8, 16), image_size=32, dropout=0.1)
TINY_SLICING = SlicingSettings(IntensityWindow(), image_size=32)
# Flags for the CLI that give the same tiny network.
TINY_CLI = ["--image-size", "32", "--widths", "4,8,16", "--threads", "1", "--progress", "none"]


@pytest.fixture
def one_thread():
    """Tiny networks run fastest on one thread, and the test machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def phantom_msd(folder: Path, seeds=(1, 2), size=TINY_VOLUME, spacing=TINY_SPACING) -> Path:
    """An MSD folder of labelled phantoms."""
    cases = [(f"case_{seed}", *make_ct_phantom(seed=seed, size=size, spacing=spacing)) for seed in seeds]
    return write_msd_dataset(folder, cases, PHANTOM_LABELS)


def phantom_plain(folder: Path, seeds=(5, 6), size=TINY_VOLUME, spacing=TINY_SPACING) -> Path:
    """A plain folder of unlabelled phantom volumes."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        write_image(make_ct_phantom(seed=seed, size=size, spacing=spacing)[0], folder / f"volume_{seed}.nii.gz")
    return folder


def tree_digest(*paths: Path) -> str:
    """One hash over the bytes and names of every file under ``paths`` (to prove inputs are untouched)."""
    digest = hashlib.sha256()
    for root in paths:
        files = sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(root).is_dir() else [Path(root)]
        for path in files:
            digest.update(str(path).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def random_segmentation_checkpoint(path: Path, label: int = 1, foreground_bias: float | None = None) -> Path:
    """A ``polycl`` model file with random weights; ``foreground_bias`` pushes every pixel to one class."""
    from SegSSLLib.checkpoints import save_checkpoint
    from SegSSLLib.polycl.model import SegmentationNet

    torch.manual_seed(0)
    model = SegmentationNet(TINY_MODEL)
    if foreground_bias is not None:
        with torch.no_grad():
            model.decoder.classifier.bias.copy_(torch.tensor([-foreground_bias, foreground_bias]))
            model.decoder.classifier.weight.zero_()
    config = {"model": TINY_MODEL.to_dict(), "slicing": TINY_SLICING.to_dict(), "label": label, "label_name": "test"}
    save_checkpoint(path, "polycl", config, model.state_dict())
    return path
