"""Nothing lost: a write that cannot complete (full disk, file-size limit) fails loudly and replaces nothing.

A file-size limit (``ulimit -f``, RLIMIT_FSIZE) stands in for a full disk: writers hit it the same way,
with a short write, and it needs no special file system.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO_ROOT, assert_one_line_error, run_segssl
from sam_helpers import write_like
from SegSSLLib.atomic import atomic_output, partial_files, remove_stale_partials

LIMIT = 200  # bytes: every output below is larger


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _annotated_phantom(tiny_phantom, tmp_path):
    image_path, labels_path = tiny_phantom
    image = sitk.ReadImage(str(image_path))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_path)))
    drawn = np.zeros_like(truth, dtype=np.uint8)
    drawn[10] = truth[10]
    annotation = tmp_path / "drawn.nii.gz"
    write_like(drawn, image, annotation)
    return image_path, annotation


def test_segssl_over_a_good_output_with_a_file_size_limit_fails_and_keeps_the_good_file(tiny_phantom, tmp_path):
    image_path, annotation = _annotated_phantom(tiny_phantom, tmp_path)
    out = tmp_path / "liver.nii"  # uncompressed: SimpleITK's NIfTI writer only prints "NWAD" on a short write
    args = ("propagate", "--input", image_path, "--annotation", annotation, "--output", out,
            "--backend", "registration", "--progress", "none", "--log-level", "WARNING")
    assert run_segssl(*args).returncode == 0
    good = out.read_bytes()
    result = run_segssl(*args, preexec_fn=_limit_file_size)
    assert_one_line_error(result, "cannot write", "file too large", str(out.name))
    assert out.read_bytes() == good
    assert partial_files(out) == []


_WRITE_EVERY_FORMAT = textwrap.dedent("""
    import json, signal, sys
    import numpy as np, SimpleITK as sitk, torch
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as the segssl command does
    from SegSSLLib.atomic import write_text_atomically
    from SegSSLLib.checkpoints import save_checkpoint
    from SegSSLLib.errors import SegSSLError
    from SegSSLLib.volumes import write_image
    folder = sys.argv[1]
    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 1000, (6, 20, 20)).astype(np.int16))
    writers = {
        name: (lambda name=name: write_image(image, f"{folder}/{name}"))
        for name in ("a.nii", "a.nii.gz", "a.nrrd", "a.mha")
    }
    writers["a.pt"] = lambda: save_checkpoint(f"{folder}/a.pt", "test", {}, {"w": torch.ones(64, 64)})
    writers["a.json"] = lambda: write_text_atomically(f"{folder}/a.json", json.dumps(list(range(500))))
    outcome = {}
    for name, write in writers.items():
        try:
            write()
            outcome[name] = "written"
        except SegSSLError as exc:
            outcome[name] = str(exc)
    print(json.dumps(outcome))
""")


def test_every_writer_refuses_a_short_write_and_keeps_the_earlier_file(tmp_path):
    earlier = {}
    for name in ("a.nii", "a.nii.gz", "a.nrrd", "a.mha", "a.pt", "a.json"):
        earlier[name] = f"earlier good {name}".encode()
        (tmp_path / name).write_bytes(earlier[name])
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", _WRITE_EVERY_FORMAT, str(tmp_path)], capture_output=True,
                            text=True, env=env, preexec_fn=_limit_file_size, timeout=300)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    for name, content in earlier.items():
        assert "file too large" in outcome[name] and "left unchanged" in outcome[name], (name, outcome[name])
        assert (tmp_path / name).read_bytes() == content, name
        assert partial_files(tmp_path / name) == [], name


def test_evaluate_json_on_a_full_disk_is_one_line_and_keeps_the_earlier_json(tiny_phantom, tmp_path):
    _, labels = tiny_phantom
    report = tmp_path / "metrics.json"
    report.write_text('{"earlier": true}\n')
    result = run_segssl("evaluate", "--pred", labels, "--truth", labels, "--json", report, "--progress", "none",
                        preexec_fn=_limit_file_size)
    assert_one_line_error(result, "file too large", "metrics.json")
    assert report.read_text() == '{"earlier": true}\n'
    assert partial_files(report) == []


def test_a_partial_file_of_a_dead_writer_is_removed_by_the_next_write(tmp_path):
    final = tmp_path / "out.nii.gz"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    stale = tmp_path / f".out.partial-{dead_pid}.nii.gz"
    alive = tmp_path / f".out.partial-{os.getppid()}.nii.gz"  # a running process: maybe still writing
    stale.write_bytes(b"half")
    alive.write_bytes(b"half")
    with atomic_output(final) as temporary:
        temporary.write_bytes(b"whole")
    assert final.read_bytes() == b"whole"
    assert not stale.exists() and alive.exists()
    assert remove_stale_partials(final) == []


def test_sigterm_during_the_work_exits_cleanly_without_partial_files(tiny_phantom, tmp_path):
    image_path, annotation = _annotated_phantom(tiny_phantom, tmp_path)
    out = tmp_path / "out.nii.gz"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "SegSSLLib", "propagate", "--input", str(image_path), "--annotation", str(annotation),
         "--output", str(out), "--backend", "registration", "--progress", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    for line in process.stdout:  # the first progress event: the work has started
        if '"progress"' in line:
            break
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1].endswith("terminated; no partial output was left behind")
    assert "Traceback" not in stderr
    assert not out.exists() and partial_files(out) == []


@pytest.mark.parametrize("name", ["x" * 250 + ".nii.gz", "y" * 244 + ".nii.gz"])
def test_an_output_name_too_long_for_its_temporary_twin_is_refused_before_the_work(tiny_phantom, tmp_path, name):
    image_path, annotation = _annotated_phantom(tiny_phantom, tmp_path)
    started = time.monotonic()
    result = run_segssl("propagate", "--input", image_path, "--annotation", annotation, "--output", tmp_path / name,
                        "--backend", "registration", "--progress", "none")
    assert_one_line_error(result, "too long", "shorter name")
    assert "segssl: annotation" not in result.stderr  # refused before any work
    assert time.monotonic() - started < 60


def test_an_output_that_cannot_be_replaced_is_one_line_and_keeps_the_earlier_file(tmp_path, monkeypatch):
    import errno

    from SegSSLLib import atomic
    from SegSSLLib.errors import SegSSLError

    def refuse(source, target):
        raise PermissionError(errno.EACCES, "Permission denied", str(target))

    final = tmp_path / "model.json"
    final.write_text("earlier")
    monkeypatch.setattr(atomic.os, "replace", refuse)  # e.g. --resume onto a file on a read-only mount
    with pytest.raises(SegSSLError, match="permission denied .* earlier file of that name was left unchanged"):
        atomic.write_text_atomically(final, "new")
    assert final.read_text() == "earlier" and partial_files(final) == []


def test_a_read_only_output_folder_is_refused_before_the_work(tmp_path, monkeypatch):
    from SegSSLLib import volumes
    from SegSSLLib.errors import SegSSLError

    monkeypatch.setattr(volumes, "read_only_reason", lambda folder: "read-only file system")
    with pytest.raises(SegSSLError, match="not writable .read-only file system"):
        volumes.check_output_path(tmp_path / "out.nii.gz")


def test_several_outputs_are_renamed_only_when_all_are_complete(tmp_path, monkeypatch):
    from SegSSLLib import volumes
    from SegSSLLib.errors import SegSSLError

    clusters, labels = tmp_path / "clusters.nii.gz", tmp_path / "labels.nii.gz"
    clusters.write_bytes(b"earlier clusters")
    labels.write_bytes(b"earlier labels")
    checked = volumes._verify_written_image

    def fail_on_labels(image, temporary, final, what):
        if final == labels:
            raise SegSSLError("cannot write output: disk full")
        checked(image, temporary, final, what)

    monkeypatch.setattr(volumes, "_verify_written_image", fail_on_labels)
    image = sitk.Image(4, 4, 4, sitk.sitkUInt8)
    with pytest.raises(SegSSLError, match="disk full"):
        volumes.write_images({clusters: image, labels: image})
    assert clusters.read_bytes() == b"earlier clusters" and labels.read_bytes() == b"earlier labels"
    assert partial_files(clusters) == [] and partial_files(labels) == []
    monkeypatch.undo()
    volumes.write_images({clusters: image, labels: image})
    assert sitk.ReadImage(str(clusters)).GetSize() == (4, 4, 4) and sitk.ReadImage(str(labels)).GetSize() == (4, 4, 4)


def test_a_full_disk_while_caching_slices_is_one_line(tmp_path, monkeypatch):
    import errno

    from polycl_helpers import TINY_SLICING, phantom_plain
    from SegSSLLib.datasets import load_dataset
    from SegSSLLib.errors import SegSSLError
    from SegSSLLib.polycl import slice_cache

    dataset = load_dataset(phantom_plain(tmp_path / "data", seeds=(5,)))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(slice_cache.np, "save", full)
    with pytest.raises(SegSSLError, match="slice cache .* disk full .*`cache_dir`"):
        slice_cache.cache_cases(dataset.cases, TINY_SLICING, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
