"""Model files load without executing code and are checked for their kind."""

import collections
import json
import pickle

import pytest
import torch

import numpy as np
import SimpleITK as sitk

from SegSSLLib.checkpoints import load_checkpoint, load_tensor_file, provenance, save_checkpoint
from SegSSLLib.errors import SegSSLError


def test_round_trip_keeps_tensors_config_and_provenance(tmp_path):
    state = {"weight": torch.arange(6.0).reshape(2, 3), "bias": torch.tensor([0.5, -1.0])}
    config = {"architecture": {"widths": [16, 32]}, "window": {"mode": "ct", "level": 40.0, "width": 400.0}}
    path = tmp_path / "model.pt"
    save_checkpoint(path, "test-kind", config, state, provenance(data=["a", "b"]), extra={"epoch": 3})
    loaded = load_checkpoint(path, kinds=("test-kind",))
    assert loaded["config"] == config and loaded["extra"] == {"epoch": 3}
    assert torch.equal(loaded["state_dict"]["weight"], state["weight"])
    assert loaded["provenance"]["data"] == ["a", "b"] and "segssl_version" in loaded["provenance"]
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


class Payload:
    def __reduce__(self):  # what a malicious pickle does: call a function when loaded
        return (print, ("code ran",))


def test_files_that_would_run_code_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "segssl", "kind": "x", "payload": Payload()}, path)
    with pytest.raises(SegSSLError, match="would run code"):
        load_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out


def test_foreign_and_wrong_kind_files_are_named(tmp_path):
    sam = tmp_path / "sam_vit_b.pth"
    torch.save(collections.OrderedDict({"image_encoder.patch_embed.proj.weight": torch.zeros(1)}), sam)
    with pytest.raises(SegSSLError, match="SAM .*checkpoint, not a SegSSL model file — --method polycl needs"):
        load_checkpoint(sam, kinds=("polycl-segmentation",), purpose="--method polycl needs")
    sam2 = tmp_path / "sam2.pt"
    torch.save({"model": {"image_encoder.trunk.blocks.0.weight": torch.zeros(1)}}, sam2)
    with pytest.raises(SegSSLError, match="SAM 2 checkpoint"):
        load_checkpoint(sam2)
    other = tmp_path / "s3net.pt"
    save_checkpoint(other, "s3net", {}, {"w": torch.zeros(1)})
    with pytest.raises(SegSSLError, match="'s3net' model"):
        load_checkpoint(other, kinds=("polycl-segmentation",))


def test_truncated_missing_and_folder_paths(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, "k", {}, {"w": torch.zeros(100)})
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:200])
    with pytest.raises(SegSSLError, match="incomplete or damaged archive — download or copy it again"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(SegSSLError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(SegSSLError, match="is a folder"):
        load_checkpoint(tmp_path)


def _write_wrong_file(path, kind):
    if kind == "text":
        path.write_text("hello, this is a note\n")  # torch.load once failed on this with KeyError: 104
    elif kind == "json":
        path.write_text(json.dumps({"format": "segssl", "kind": "polycl"}))
    elif kind == "nifti":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4), np.uint8)), str(path))
    elif kind == "nifti.gz":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4), np.uint8)), str(path), True)
    elif kind == "random":
        path.write_bytes(bytes(range(255, 6, -1)) * 4)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": [1.0, 2.0]}, protocol=4))
    elif kind == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize(
    "kind, looks_like",
    [
        ("text", "a text file"),
        ("json", "a text file (JSON"),
        ("nifti", "a NIfTI image"),
        ("nifti.gz", "a gzip-compressed file"),
        ("random", "a binary file"),
        ("pickle", "a plain Python pickle"),
        ("empty", "an empty file"),
    ],
)
def test_files_that_are_not_pytorch_files_are_named_as_such(tmp_path, kind, looks_like):
    path = tmp_path / ("wrong.nii.gz" if kind == "nifti.gz" else "wrong.nii" if kind == "nifti" else "wrong.pt")
    _write_wrong_file(path, kind)
    before = path.read_bytes()
    with pytest.raises(SegSSLError, match="is not a PyTorch checkpoint") as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert f"looks like {looks_like}" in message and "segssl pretrain or segssl finetune" in message
    assert "would run code" not in message
    with pytest.raises(SegSSLError, match="not a PyTorch checkpoint .* sam_vit_"):
        load_tensor_file(path, "SAM checkpoint")
    assert path.read_bytes() == before


def test_legacy_pytorch_files_still_load(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"w": torch.arange(3.0)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_tensor_file(path)["w"], torch.arange(3.0))


def test_a_zip_that_is_not_a_pytorch_archive(tmp_path):
    import zipfile

    path = tmp_path / "weights.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "weights inside")
    with pytest.raises(SegSSLError, match="not a PyTorch file or is damaged"):
        load_checkpoint(path)
