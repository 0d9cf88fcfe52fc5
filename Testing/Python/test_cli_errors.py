"""Bad input reaches the user as one line, a non-zero exit, no output file and an untouched input."""

import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk

from SegSSLLib.cli.common import check_index_inside, parse_index
from SegSSLLib.errors import SegSSLError
from conftest import assert_one_line_error, run_segssl
from test_volumes import oblique_image, write_dicom_series, write_sheared_nifti


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_input_file(tmp_path, tiny_phantom):
    _, labels = tiny_phantom
    result = run_segssl("evaluate", "--pred", tmp_path / "absent.nii.gz", "--truth", labels, "--json", tmp_path / "o.json")
    assert_one_line_error(result, "not found", "absent.nii.gz")
    assert not (tmp_path / "o.json").exists()


def test_non_image_file_is_named_with_the_formats_to_use(tmp_path, tiny_phantom):
    _, labels = tiny_phantom
    bogus = tmp_path / "report.nii.gz"
    bogus.write_text("this is not an image")
    before = digest(bogus)
    result = run_segssl("evaluate", "--pred", bogus, "--truth", labels, "--json", tmp_path / "o.json")
    assert_one_line_error(result, "cannot read", "NIfTI")
    assert digest(bogus) == before and not (tmp_path / "o.json").exists()


def test_label_map_on_another_grid(tmp_path, tiny_phantom):
    _, labels = tiny_phantom
    other = sitk.ReadImage(str(labels))
    other.SetSpacing([s * 1.5 for s in other.GetSpacing()])
    sitk.WriteImage(other, str(tmp_path / "other.nii.gz"))
    before = digest(labels)
    result = run_segssl("evaluate", "--pred", tmp_path / "other.nii.gz", "--truth", labels, "--json", tmp_path / "o.json")
    assert_one_line_error(result, "different grid")
    assert digest(labels) == before and not (tmp_path / "o.json").exists()


def test_output_that_would_overwrite_an_input_is_refused(tiny_phantom):
    _, labels = tiny_phantom
    before = digest(labels)
    result = run_segssl("evaluate", "--pred", labels, "--truth", labels, "--json", labels)
    assert_one_line_error(result)
    assert digest(labels) == before


def test_mhd_output_is_refused_before_any_work(tmp_path, tiny_phantom):
    image, _ = tiny_phantom
    before = digest(image)
    result = run_segssl("segment", "--method", "s3net", "--input", image, "--output", tmp_path / "out.mhd",
                        "--seed", "20,18,10")
    assert_one_line_error(result, "out.mhd", ".mha")
    assert digest(image) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz", "labels.nii.gz"]


def test_dicom_series_with_a_gap_is_one_line_without_itk_warnings(tmp_path):
    series = tmp_path / "series"
    write_dicom_series(oblique_image(), series, skip=(5,))
    before = {p.name: digest(p) for p in series.iterdir()}
    result = run_segssl("evaluate", "--pred", series, "--truth", series, "--json", tmp_path / "o.json")
    assert_one_line_error(result, "not evenly spaced", "9 mm between slice 5 and 6", "dcm2niix")
    assert "WARNING" not in result.stderr and not (tmp_path / "o.json").exists()
    assert {p.name: digest(p) for p in series.iterdir()} == before


def test_sheared_nifti_is_one_line_naming_the_shear(tmp_path):
    sheared = tmp_path / "sheared.nii"
    write_sheared_nifti(sheared)
    result = run_segssl("evaluate", "--pred", sheared, "--truth", sheared)
    assert_one_line_error(result, "sheared", "resample")
    assert "WARNING" not in result.stderr


def test_usage_errors_are_one_line_too():
    result = run_segssl("evaluate", "--pred", "x.nii.gz")
    assert_one_line_error(result, "--truth", "--help")
    assert result.returncode == 2


def test_seed_parsing_and_bounds():
    assert parse_index("3, 4,5", 3) == (3, 4, 5)
    with pytest.raises(SegSSLError, match="I,J,K"):
        parse_index("3,4", 3)
    with pytest.raises(SegSSLError, match="whole numbers"):
        parse_index("3.5,4,5", 3)
    check_index_inside((0, 0, 0), (4, 5, 6))
    check_index_inside((3, 4, 5), (4, 5, 6))
    for outside in ((4, 0, 0), (0, 5, 0), (0, 0, 6), (-1, 0, 0)):
        with pytest.raises(SegSSLError, match="outside the image .* between 0 and 3,4,5"):
            check_index_inside(outside, (4, 5, 6))


def test_json_progress_mode_keeps_stdout_machine_readable(tmp_path, tiny_phantom):
    _, labels = tiny_phantom
    result = run_segssl("evaluate", "--pred", labels, "--truth", labels, "--progress", "json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds[-1] == "done" and "metrics" in kinds
    metrics = next(e for e in events if e["event"] == "metrics")
    assert metrics["mean_dice"] == 1.0


def test_json_progress_mode_reports_errors_as_an_event(tmp_path):
    result = run_segssl("evaluate", "--pred", tmp_path / "a.nii", "--truth", tmp_path / "b.nii", "--progress", "json")
    assert result.returncode == 1
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["event"] == "error" and "not found" in events[-1]["message"]


def test_device_cuda_without_a_gpu_is_a_clear_error():
    import torch

    from SegSSLLib.device import select_device

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SegSSLError, match="sees no CUDA GPU .* `device` cpu"):
        select_device("cuda")
    assert select_device("cpu").type == "cpu"
    with pytest.raises(SegSSLError, match="unknown device"):
        select_device("tpu")


def test_internal_errors_are_one_line_with_a_hint(monkeypatch, capsys):
    import SegSSLLib.cli.evaluate_command as evaluate_command
    from SegSSLLib import cli

    def explode(args, progress):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(evaluate_command, "run", explode)
    args = ["evaluate", "--pred", "a", "--truth", "b"]
    assert cli.main(args) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["segssl evaluate: internal error: ZeroDivisionError: division by zero (rerun with --debug for the traceback)"]
    with pytest.raises(ZeroDivisionError):
        cli.main(args + ["--debug"])
