"""The small foundation changes the PolyCL work needed (see each test's docstring)."""

import subprocess
import sys

from conftest import REPO_ROOT
from polycl_helpers import random_segmentation_checkpoint
from SegSSLLib.checkpoints import load_checkpoint, provenance
from SegSSLLib.datasets import load_dataset, write_msd_dataset
from SegSSLLib.phantoms import make_ct_phantom


def test_provenance_loads_without_executing_code(tmp_path):
    """checkpoints.provenance stores torch's version as a plain str (TorchVersion fails weights_only)."""
    info = provenance(method="test")
    assert type(info["torch_version"]) is str
    path = random_segmentation_checkpoint(tmp_path / "m.pt")
    assert load_checkpoint(path, kinds=("polycl",))["provenance"]["torch_version"] == info["torch_version"]


def test_importing_intensity_does_not_import_monai():
    """intensity imports MONAI when a window is applied, so commands that fail early fail fast."""
    code = "import sys, SegSSLLib.intensity; print('monai' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == "False"


def test_write_msd_dataset_round_trips_through_load_dataset(tmp_path):
    """datasets.write_msd_dataset writes phantoms as an MSD folder (demos, tests, benchmarks)."""
    image, labels = make_ct_phantom(seed=1, size=(16, 16, 8))
    folder = write_msd_dataset(tmp_path / "set", [("one", image, labels), ("two", image, None)], {1: "liver"})
    dataset = load_dataset(folder)
    assert [c.name for c in dataset.cases] == ["one", "two"]
    assert dataset.cases[0].label is not None and dataset.cases[1].label is None
    assert dataset.label_names == {0: "background", 1: "liver"} and dataset.modality == "CT"
