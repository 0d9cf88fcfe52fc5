"""Whole data sets: `segssl segment / propagate / evaluate` on folders, resume, failed cases, torchrun shards."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO_ROOT, assert_one_line_error, run_segssl
from polycl_helpers import TINY_SPACING, TINY_VOLUME, random_segmentation_checkpoint
from sam_helpers import assert_same_geometry, one_slice_annotation, write_like
from SegSSLLib.dataset_runs import (
    CaseResult, RunSummary, output_complete, pair_by_name, run_cases, shard,
)
from SegSSLLib.datasets import write_msd_dataset
from SegSSLLib.errors import SegSSLError
from SegSSLLib.evaluation import evaluate_label_maps, summarize_cases
from SegSSLLib.phantoms import PHANTOM_LABELS, make_ct_phantom, oblique_direction
from SegSSLLib.progress import NO_PROGRESS

CPU = ["--threads", "1", "--device", "cpu"]


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _phantom(seed, oblique=False):
    return make_ct_phantom(
        seed=seed, size=TINY_VOLUME, spacing=TINY_SPACING, direction=oblique_direction() if oblique else None
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return random_segmentation_checkpoint(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """A plain folder of three volumes in three formats, one of them oblique."""
    folder = tmp_path_factory.mktemp("volumes") / "cts"
    folder.mkdir()
    for seed, name in ((1, "a.nii.gz"), (2, "b.nrrd"), (3, "c.mha")):
        sitk.WriteImage(_phantom(seed, oblique=seed == 1)[0], str(folder / name), True)
    return folder


@pytest.fixture(scope="module")
def first_run(volumes, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("first") / "out"
    result = run_segssl(
        "segment", "--method", "polycl", "--checkpoint", model, "--input", volumes, "--output", out,
        *CPU, "--progress", "json",
    )
    assert result.returncode == 0, result.stderr
    return out, result


def test_folder_segment_writes_every_case_with_its_name_and_geometry(volumes, model, first_run, tmp_path):
    out, result = first_run
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nrrd", "c.mha"]
    for name in ("a.nii.gz", "b.nrrd", "c.mha"):
        source, segmented = sitk.ReadImage(str(volumes / name)), sitk.ReadImage(str(out / name))
        assert_same_geometry(segmented, source)
        assert set(np.unique(sitk.GetArrayFromImage(segmented))) <= {0, 1}
    events = _events(result.stdout)
    assert sorted(e["path"] for e in events if e["event"] == "output") == sorted(str(out / n) for n in ("a.nii.gz", "b.nrrd", "c.mha"))
    (summary,) = [e for e in events if e["event"] == "summary"]
    assert (summary["cases"], summary["done"], summary["skipped"], summary["failed"]) == (3, 3, 0, 0)
    assert "3 cases: 3 written, 0 failed" in result.stdout  # the summary line, as a log event
    # The same labels as the single-volume command gives.
    single = tmp_path / "single.nii.gz"
    done = run_segssl("segment", "--method", "polycl", "--checkpoint", model, "--input", volumes / "a.nii.gz",
                      "--output", single, *CPU, "--progress", "none")
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(single))), sitk.GetArrayFromImage(sitk.ReadImage(str(out / "a.nii.gz")))
    )


def test_resume_skips_complete_outputs_and_redoes_a_truncated_one(volumes, model, first_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    (out / "b.nrrd").write_bytes(before["b.nrrd"][1][:-10])  # an interrupted copy, say
    result = run_segssl(
        "segment", "--method", "polycl", "--checkpoint", model, "--input", volumes, "--output", out,
        *CPU, "--progress", "json",
    )
    assert result.returncode == 0, result.stderr
    (summary,) = [e for e in _events(result.stdout) if e["event"] == "summary"]
    status = {r["name"]: r["status"] for r in summary["results"]}
    assert status == {"a": "skipped", "b": "done", "c": "skipped"}
    for name in ("a.nii.gz", "c.mha"):  # untouched
        assert (out / name).stat().st_mtime_ns == before[name][0]
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(out / "b.nrrd"))),
        sitk.GetArrayFromImage(sitk.ReadImage(str(first_run[0] / "b.nrrd"))),
    )
    # --overwrite does every case again.
    result = run_segssl(
        "segment", "--method", "polycl", "--checkpoint", model, "--input", volumes, "--output", out,
        *CPU, "--progress", "json", "--overwrite",
    )
    (summary,) = [e for e in _events(result.stdout) if e["event"] == "summary"]
    assert (summary["done"], summary["skipped"]) == (3, 0)
    assert (out / "a.nii.gz").stat().st_mtime_ns != before["a.nii.gz"][0]


def test_a_finished_run_repeated_loads_no_model(volumes, model, first_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    unreadable = tmp_path / "model.pt"
    unreadable.write_bytes(b"not a model")  # loading it would fail the run
    result = run_segssl(
        "segment", "--method", "polycl", "--checkpoint", unreadable, "--input", volumes, "--output", out,
        *CPU, "--progress", "json",
    )
    assert result.returncode == 0, result.stderr
    (summary,) = [e for e in _events(result.stdout) if e["event"] == "summary"]
    assert (summary["done"], summary["skipped"]) == (0, 3)
    # With one output missing the model is needed, and the broken file is refused before any case.
    (out / "b.nrrd").unlink()
    result = run_segssl(
        "segment", "--method", "polycl", "--checkpoint", unreadable, "--input", volumes, "--output", out,
        *CPU, "--progress", "none",
    )
    assert result.returncode == 1 and not (out / "b.nrrd").exists()


def test_a_failing_case_does_not_stop_the_others_and_the_exit_code_says_so(model, tmp_path):
    cases = [(f"case_{s}", *_phantom(s)) for s in (1, 2, 3)]
    msd = write_msd_dataset(tmp_path / "msd", cases, PHANTOM_LABELS)
    (msd / "imagesTr" / "case_2.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = run_segssl(
        "segment", "--method", "polycl", "--checkpoint", model, "--input", msd, "--output", out, *CPU, "--progress", "none"
    )
    assert result.returncode == 4, result.stderr
    assert "case_2: failed — cannot read input" in result.stderr
    assert "3 cases: 2 written, 1 failed (case_2)" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["case_1.nii.gz", "case_3.nii.gz"]  # no partial files either
    # Scoring against the MSD folder itself: the failed case is listed as missing, the others are scored.
    report = tmp_path / "scores.json"
    result = run_segssl("evaluate", "--pred", out, "--truth", msd, "--json", report, "--progress", "none")
    assert result.returncode == 0, result.stderr
    scores = json.loads(report.read_text())
    assert sorted(scores["cases"]) == ["case_1", "case_3"] and scores["missing"] == ["case_2"] and scores["extra"] == []
    assert "missing predictions" in result.stdout and "liver" in result.stdout  # label names from dataset.json


@pytest.mark.parametrize("problem", ["output is the input folder", "s3net", "not a model"])
def test_folder_mistakes_are_one_line_errors_that_leave_nothing(volumes, model, problem, tmp_path):
    output, method, checkpoint, words = {
        "output is the input folder": (volumes, "polycl", model, "holds the inputs"),
        "s3net": (tmp_path / "out", "s3net", model, "--seed points on each volume"),
        "not a model": (tmp_path / "out", "polycl", volumes / "a.nii.gz", "a.nii.gz"),
    }[problem]
    before = sorted(p.name for p in volumes.iterdir())
    result = run_segssl("segment", "--method", method, "--checkpoint", checkpoint, "--input", volumes, "--output", output, *CPU)
    assert_one_line_error(result, words)
    assert sorted(p.name for p in volumes.iterdir()) == before
    assert not (tmp_path / "out").exists()  # the output folder is made only when the first case starts


def test_folder_propagate_pairs_annotations_by_name(tmp_path):
    inputs, drawn_folder, out = tmp_path / "cts", tmp_path / "drawn", tmp_path / "out"
    inputs.mkdir(), drawn_folder.mkdir()
    for seed in (1, 2, 3):
        image, labels = _phantom(seed)
        sitk.WriteImage(image, str(inputs / f"case_{seed}.nii.gz"))
        if seed != 3:  # case_3 has no annotation
            write_like(one_slice_annotation(labels, 6, values=(1,)), image, drawn_folder / f"case_{seed}.nii.gz")
    result = run_segssl("propagate", "--input", inputs, "--annotation", drawn_folder, "--output", out,
                        "--backend", "registration", "--progress", "none", *CPU)
    assert result.returncode == 0, result.stderr
    assert "1 case(s) have no annotation and are left out: case_3" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["case_1.nii.gz", "case_2.nii.gz"]
    for name in ("case_1.nii.gz", "case_2.nii.gz"):
        labels = sitk.ReadImage(str(out / name))
        assert_same_geometry(labels, sitk.ReadImage(str(inputs / name)))
        covered = np.flatnonzero(sitk.GetArrayFromImage(labels).reshape(TINY_VOLUME[2], -1).any(axis=1))
        assert len(covered) > 1  # carried beyond the drawn slice


def _label_map(array, spacing=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    return image


def test_evaluate_folders_pairs_by_name_and_writes_csv_and_json(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    pred.mkdir(), truth.mkdir()
    cube = np.zeros((8, 16, 16), np.uint8)
    cube[2:6, 4:12, 4:12] = 1
    cube[3:5, 13:15, 13:15] = 2
    shifted = np.roll(cube * (cube == 1), 2, axis=2)  # label 1 moved, label 2 missing
    maps = {
        "a": (cube, cube), "b": (shifted, cube), "c": (None, cube), "d": (cube, None),
    }
    for name, (p, t) in maps.items():
        if p is not None:
            sitk.WriteImage(_label_map(p), str(pred / f"{name}.nii.gz"))
        if t is not None:
            sitk.WriteImage(_label_map(t), str(truth / f"{name}.nrrd"))  # pairing ignores the extension
    sitk.WriteImage(_label_map(cube, spacing=(2.0, 1.0, 2.0)), str(pred / "e.nii.gz"))  # another grid
    sitk.WriteImage(_label_map(cube), str(truth / "e.nii.gz"))
    report, table = tmp_path / "report.json", tmp_path / "cases.csv"
    result = run_segssl("evaluate", "--pred", pred, "--truth", truth, "--json", report, "--csv", table, "--progress", "none")
    assert result.returncode == 4, result.stderr  # case e failed
    scores = json.loads(report.read_text())
    assert sorted(scores["cases"]) == ["a", "b"]
    assert scores["missing"] == ["c"] and scores["extra"] == ["d"]
    assert list(scores["failed"]) == ["e"] and "different grid" in scores["failed"]["e"]
    expected = {n: evaluate_label_maps(_label_map(maps[n][0]), _label_map(maps[n][1])) for n in ("a", "b")}
    assert scores["cases"] == expected
    dice_1 = [expected[n]["labels"]["1"]["dice"] for n in ("a", "b")]
    assert scores["labels"]["1"]["dice_mean"] == pytest.approx(np.mean(dice_1))
    assert scores["labels"]["1"]["dice_sd"] == pytest.approx(np.std(dice_1, ddof=1))
    assert scores["labels"]["2"]["hd95_undefined"] == 1 and scores["labels"]["2"]["dice_mean"] == pytest.approx(0.5)
    assert scores["worst"][0]["case"] == "b"
    with open(table, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [(r["case"], r["label"]) for r in rows] == [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]
    assert rows[3]["hd95_mm"] == "" and float(rows[2]["dice"]) == pytest.approx(expected["b"]["labels"]["1"]["dice"])
    for text in ("missing predictions (reference without prediction): 1: c", "extra predictions (no reference): 1: d",
                 "failed: e:", "worst cases: b"):
        assert text in result.stdout


def test_shards_are_disjoint_and_cover_every_case():
    names = [f"case_{i}" for i in range(7)]
    shares = [shard(names, rank, 3) for rank in range(3)]
    assert sorted(sum(shares, [])) == sorted(names) and shares[1] == ["case_1", "case_4"]
    with pytest.raises(SegSSLError, match="RANK 3 is outside WORLD_SIZE 3"):
        shard(names, 3, 3)


def test_run_cases_isolates_failures_and_skips_complete_ones():
    class Case:
        def __init__(self, name):
            self.name = name

    def work(case):
        if case.name == "b":
            raise SegSSLError("cannot read b — fix it")
        if case.name == "c":
            raise ValueError("boom")
        return {"value": case.name}

    summary = run_cases([Case(n) for n in "dcba"], work, NO_PROGRESS, is_complete=lambda case: case.name == "d")
    assert [(r.name, r.status) for r in summary.results] == [("a", "done"), ("b", "failed"), ("c", "failed"), ("d", "skipped")]
    assert summary.results[0].data == {"value": "a"}
    assert summary.results[1].message == "cannot read b — fix it"
    assert summary.results[2].message.startswith("internal error: ValueError: boom")
    assert summary.line().startswith("4 cases: 1 written, 1 skipped (complete output found), 2 failed (b, c)")


def test_pairing_and_summary_numbers(tmp_path):
    pairing = pair_by_name({"a": tmp_path / "a", "b": tmp_path / "b"}, {"b": tmp_path / "B", "c": tmp_path / "C"})
    assert list(pairing.pairs) == ["b"] and pairing.only_first == ["a"] and pairing.only_second == ["c"]
    per_case = {
        "x": {"labels": {"1": {"dice": 0.9, "hd95_mm": 2.0}}, "mean_dice": 0.9},
        "y": {"labels": {"1": {"dice": 0.5, "hd95_mm": None}, "2": {"dice": 0.7, "hd95_mm": 4.0}}, "mean_dice": 0.6},
        "z": {"labels": {}, "mean_dice": None},  # both maps empty: nothing to score
    }
    summary = summarize_cases(per_case, worst=1)
    assert summary["labels"]["1"] == {
        "cases": 2, "dice_mean": pytest.approx(0.7), "dice_sd": pytest.approx(np.std([0.9, 0.5], ddof=1)),
        "hd95_mm_mean": 2.0, "hd95_mm_sd": 0.0, "hd95_undefined": 1,
    }
    assert summary["mean_dice"] == pytest.approx(0.75) and summary["worst"] == [{"case": "y", "mean_dice": 0.6}]
    assert RunSummary([CaseResult("x", "done")], 2, 30.0).line().endswith("2.0 cases/min over 2 processes")


def test_output_complete_checks_size_and_length(tmp_path):
    image = _label_map(np.ones((8, 16, 16)))
    path = tmp_path / "x.nii.gz"
    sitk.WriteImage(image, str(path), True)
    assert output_complete(path, (16, 16, 8))
    assert not output_complete(path, (16, 16, 9))
    assert not output_complete(tmp_path / "missing.nii.gz", (16, 16, 8))
    path.write_bytes(path.read_bytes()[:-6])
    assert not output_complete(path, (16, 16, 8))


def _torchrun(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "SegSSLLib"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_two_processes_split_the_cases_and_rank_0_alone_reports(model, tmp_path):
    cases = [(f"case_{s}", *_phantom(s)) for s in (1, 2, 3, 4, 5)]
    msd = write_msd_dataset(tmp_path / "msd", cases, PHANTOM_LABELS)
    out = tmp_path / "out"
    result = _torchrun("segment", "--method", "polycl", "--checkpoint", model, "--input", msd, "--output", out,
                       *CPU, "--progress", "json")
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = [e for e in _events(result.stdout) if e["event"] == "summary"]
    assert summary["processes"] == 2 and summary["done"] == 5
    # Sorted cases alternate between the ranks; each case was written once, by its own rank.
    assert {r["name"]: r["rank"] for r in summary["results"]} == {f"case_{s}": (s - 1) % 2 for s in (1, 2, 3, 4, 5)}
    assert sorted(p.name for p in out.iterdir()) == [f"case_{s}.nii.gz" for s in (1, 2, 3, 4, 5)]
    report = tmp_path / "report.json"
    result = _torchrun("evaluate", "--pred", out, "--truth", msd, "--json", report, "--progress", "none")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("mean Dice per case") == 1  # one report, from rank 0
    assert sorted(json.loads(report.read_text())["cases"]) == [f"case_{s}" for s in (1, 2, 3, 4, 5)]
