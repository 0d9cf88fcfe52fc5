"""The public API: ``import SegSSLLib`` is light, its names are the workflows, and the registration path
runs with torch, MONAI and sam2 unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO_ROOT

HEAVY = ("torch", "torchvision", "monai", "sam2", "segment_anything")

# Put in front of sys.meta_path: any import of a blocked package fails as if it were not installed.
BLOCKER = textwrap.dedent(
    f"""
    import sys

    class Blocker:
        blocked = {HEAVY!r}

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"{{name}} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())
    sys.path.insert(0, {str(REPO_ROOT)!r})
    """
)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)


def test_the_blocker_blocks():
    result = _python(BLOCKER + "import torch\n")
    assert result.returncode != 0 and "blocked in this test" in result.stderr


def test_import_is_light_and_names_the_workflows():
    result = _python(
        f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "import SegSSLLib\n"
        "SegSSLLib.PropagateSettings, SegSSLLib.S3NetSettings, SegSSLLib.SegSSLError\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    import SegSSLLib

    workflows = {"segment_s3net", "segment_polycl", "propagate", "refine", "pretrain", "finetune", "evaluate"}
    loaders = {"load_sam_predictor", "load_sam2_video_predictor", "resolve_weights"}
    assert workflows | loaders <= set(SegSSLLib.__all__)
    for name in SegSSLLib.__all__:
        assert getattr(SegSSLLib, name) is not None
        assert name in dir(SegSSLLib)
    with pytest.raises(AttributeError):
        SegSSLLib.no_such_workflow  # noqa: B018


def test_registration_propagation_runs_without_torch_monai_or_sam2(tiny_phantom, tmp_path):
    image_path, labels_path = tiny_phantom
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_path)))
    drawn = np.zeros_like(truth)
    drawn[10] = np.where(truth[10] == 1, 1, 0)
    assert drawn.any()
    annotation = sitk.GetImageFromArray(drawn)
    annotation.CopyInformation(sitk.ReadImage(str(labels_path)))
    annotation_path, output = tmp_path / "drawn.nii.gz", tmp_path / "propagated.nii.gz"
    sitk.WriteImage(annotation, str(annotation_path))
    code = BLOCKER + textwrap.dedent(
        f"""
        import json
        from SegSSLLib.cli import main

        code = main(["propagate", "--backend", "registration", "--input", {str(image_path)!r},
                     "--annotation", {str(annotation_path)!r}, "--output", {str(output)!r}, "--progress", "none",
                     "--threads", "1"])
        import SimpleITK as sitk
        import SegSSLLib
        api = SegSSLLib.propagate(sitk.ReadImage({str(image_path)!r}), sitk.ReadImage({str(annotation_path)!r}),
                                  SegSSLLib.PropagateSettings(backend="registration"))
        print(json.dumps({{"code": code, "api_backend": api.backend, "slices": len(api.annotation.slices),
                           "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
        """
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "api_backend": "registration", "slices": 1, "loaded": []}
    propagated = sitk.ReadImage(str(output))
    reference = sitk.ReadImage(str(image_path))
    assert propagated.GetSize() == reference.GetSize()
    assert np.allclose(propagated.GetDirection(), reference.GetDirection(), atol=1e-6)
    assert np.allclose(propagated.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    carried = sitk.GetArrayFromImage(propagated)
    assert (carried[9] == 1).any() and (carried[11] == 1).any()  # carried beyond the painted slice


def test_library_errors_name_parameters_and_the_cli_names_flags(tmp_path):
    import SegSSLLib
    from SegSSLLib.cli.flags import in_flags

    image = sitk.Image(8, 8, 8, sitk.sitkFloat32)
    with pytest.raises(SegSSLLib.SegSSLError) as error:
        SegSSLLib.propagate(image, np.zeros((8, 8, 8), np.uint8), SegSSLLib.PropagateSettings(axis=5))
    assert "annotation is empty" in str(error.value)
    drawn = np.zeros((8, 8, 8), np.uint8)
    drawn[4, 2:5, 2:5] = 1
    with pytest.raises(SegSSLLib.SegSSLError) as error:
        SegSSLLib.propagate(image, drawn, SegSSLLib.PropagateSettings(axis=5))
    assert str(error.value).startswith("`axis` must be 0, 1 or 2")
    assert in_flags(str(error.value), "propagate").startswith("--axis must be 0, 1 or 2")
    with pytest.raises(SegSSLLib.SegSSLError, match="`annotation` has shape"):
        SegSSLLib.propagate(image, drawn[:4])
    with pytest.raises(SegSSLLib.SegSSLError, match="`image` must be a SimpleITK image"):
        SegSSLLib.propagate(np.zeros((8, 8, 8)), drawn)
    with pytest.raises(SegSSLLib.SegSSLError, match="^`sam2_checkpoint` .*no such file"):
        SegSSLLib.propagate(image, drawn, SegSSLLib.PropagateSettings(backend="sam2", sam2_checkpoint=tmp_path / "x.pt"))


def test_the_cli_words_a_library_error_in_flags_and_keeps_the_parameter_for_the_panel(tiny_phantom, tmp_path):
    from conftest import run_segssl

    image_path, labels_path = tiny_phantom
    missing = tmp_path / "missing.pt"
    arguments = ["propagate", "--backend", "sam2", "--sam2-checkpoint", missing, "--input", image_path,
                 "--annotation", labels_path, "--output", tmp_path / "out.nii.gz"]
    result = run_segssl(*arguments)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"segssl propagate: error: --sam2-checkpoint {missing}: no such file and no known weights of that name — "
        "check the path (segssl weights list)"
    )
    events = [json.loads(line) for line in run_segssl(*arguments, "--progress", "json").stdout.splitlines()]
    assert events[-1]["event"] == "error"
    assert events[-1]["message"].startswith("segssl propagate: error: --sam2-checkpoint ")
    assert events[-1]["parameter_message"].startswith(f"`sam2_checkpoint` {missing}: no such file")


def test_the_weights_registry_is_data_that_reads_without_torch():
    result = _python(
        BLOCKER
        + "import json\nfrom SegSSLLib.weights.registry import REGISTRY, REGISTRY_FILE, names\n"
        + "print(json.dumps({'sam2': {n: REGISTRY[n].sam2_config for n in names('sam2')}, 'sam': names('sam'),\n"
        + "                  'file': str(REGISTRY_FILE)}))\n"
    )
    assert result.returncode == 0, result.stderr
    read = json.loads(result.stdout)
    assert read["sam2"]["medsam2"] == "sam2.1_hiera_t" and read["sam2"]["sam2.1_hiera_l"] == "sam2.1_hiera_l"
    assert "medsam_vit_b" in read["sam"]
    raw = json.loads(open(read["file"], encoding="utf-8").read())  # what the panel may read directly
    assert {entry["name"] for entry in raw["weights"]} == set(read["sam2"]) | set(read["sam"])
