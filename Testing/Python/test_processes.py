"""The process runner behind the Slicer panel, on real ``segssl`` runs."""

from __future__ import annotations

import os
import stat
import sys
import time

import pytest

from SegSSLLib.processes import EXIT_EVENT, RunStatus, SegSSLProcess, run_to_end


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"  # a zombie has already died
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_a_demo_run_reports_progress_outputs_and_exit(tmp_path):
    out = tmp_path / "demo"
    events = []
    process = SegSSLProcess(["demo", "--quick", "--out", out, "--device", "cpu"], outputs=[out])
    assert run_to_end(process, timeout=300, on_event=events.append) == 0

    kinds = [e["event"] for e in events]
    assert kinds[0] == "stage" and kinds[-1] == EXIT_EVENT and kinds.count(EXIT_EVENT) == 1
    # Demo steps open stages of their own; the run's overall share only ever grows.
    overall = [e["overall"] for e in events if e["event"] == "progress"]
    assert overall == sorted(overall) and overall[-1] == 1.0 and len(overall) >= 2
    assert [e["fraction"] for e in events if e["event"] == "progress" and e["stage"] == "demo"][-1] == 1.0
    assert process.status.outputs == [str(out / "report.md")] and (out / "report.md").is_file()
    assert process.status.fraction == 1.0 and process.status.seconds > 0 and process.status.error is None
    assert process.returncode == 0 and not process.running and not process.cancelled


def test_a_failing_run_ends_with_the_cli_error_line_and_no_output(tmp_path):
    report = tmp_path / "scores.json"
    # A usage error stops the CLI before any heavy import, so this stays quick.
    process = SegSSLProcess(["evaluate", "--pred", tmp_path / "p.nii.gz", "--json", report], outputs=[report])
    assert run_to_end(process, timeout=120) == 2
    assert process.error_message.startswith("segssl evaluate: error:")
    assert "--truth" in process.error_message and "required" in process.error_message
    assert process.status.returncode == 2 and not report.exists()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="uses a POSIX shell script as the launcher")
def test_cancel_kills_the_process_tree_and_removes_what_the_run_left(tmp_path):
    # Like PythonSlicer, the interpreter is started by a launcher; this one also starts a helper
    # process, and it and the CLI ignore the interrupt, so cancel must fall back to killing the tree.
    helper_pid_file = tmp_path / "helper.pid"
    launcher = tmp_path / "launcher.sh"
    launcher.write_text(
        "#!/bin/sh\n"
        "trap '' INT\n"
        f"sleep 300 &\necho $! > '{helper_pid_file}'\n"
        f"'{sys.executable}' \"$@\"\n"
        "wait\n"
    )
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)

    new_folder = tmp_path / "demo"  # did not exist before: removed
    kept_folder = tmp_path / "existing"  # existed: kept, with the user's files
    kept_folder.mkdir()
    (kept_folder / "notes.txt").write_text("mine")
    old_partial = kept_folder / ".result.partial-1.nrrd"  # not this run's: kept
    old_partial.write_text("older")
    declared = kept_folder / "result.nrrd"

    process = SegSSLProcess(
        ["demo", "--quick", "--out", new_folder, "--device", "cpu"], outputs=[new_folder, declared], python=launcher
    ).start()
    deadline = time.monotonic() + 300
    while not any(e["event"] == "stage" for e in process.poll()):  # the CLI is at work
        assert process.running and time.monotonic() < deadline
        time.sleep(0.05)
    left_by_killed_writer = kept_folder / f".result.partial-{process.pid}.nrrd"
    left_by_killed_writer.write_text("half written")
    helper = int(helper_pid_file.read_text())
    assert process_alive(process.pid) and process_alive(helper)

    process.cancel(grace_seconds=1.0)
    assert process.wait(timeout=60) is not None
    events = process.poll()
    assert events[-1] == {"event": EXIT_EVENT, "returncode": process.returncode, "cancelled": True}
    assert process.returncode != 0 and process.status.cancelled
    deadline = time.monotonic() + 10
    while process_alive(helper) and time.monotonic() < deadline:  # the kernel needs a moment to reap it
        time.sleep(0.05)
    assert not process_alive(helper) and not process_alive(process.pid)
    assert not new_folder.exists() and not left_by_killed_writer.exists() and not declared.exists()
    assert old_partial.read_text() == "older" and (kept_folder / "notes.txt").read_text() == "mine"


@pytest.mark.skipif(sys.platform == "win32", reason="process groups and SIGINT are POSIX")
def test_cancel_lets_the_real_python_clean_up_after_its_launcher_exits(tmp_path):
    # Like PythonSlicer: a launcher starts the real Python in the same process group and exits at once
    # on the interrupt; the real Python needs a moment to clean up. Cancel must not kill it meanwhile.
    cleaned, child_pid = tmp_path / "cleaned", tmp_path / "child.pid"
    child = tmp_path / "child.py"
    child.write_text(
        "import json, os, signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        f"open({str(child_pid)!r}, 'w').write(str(os.getpid()))\n"
        "print(json.dumps({'event': 'stage', 'stage': 'work'}), flush=True)\n"
        "try:\n"
        "    time.sleep(60)\n"
        "except KeyboardInterrupt:\n"
        "    time.sleep(0.8)  # removing temporary files, ...\n"
        f"    open({str(cleaned)!r}, 'w').write('done')\n"
        "    sys.exit(130)\n"
    )
    launcher = tmp_path / "launcher"
    launcher.write_text(
        f"#!{sys.executable}\n"
        "import os, signal, subprocess, sys\n"
        "signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # gone at once, child left running\n"
        f"subprocess.Popen([sys.executable, {str(child)!r}]).wait()\n"
    )
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)

    process = SegSSLProcess(["ignored"], python=launcher).start()
    deadline = time.monotonic() + 60
    while not any(e["event"] == "stage" for e in process.poll()):
        assert process.running and time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    process.cancel(grace_seconds=10.0)
    assert process.wait(timeout=30) is not None
    assert cleaned.read_text() == "done"  # the real Python finished its cleanup
    assert not process_alive(int(child_pid.read_text())) and process.cancelled
    assert time.monotonic() - started < 9.0  # ended when the group was gone, not at the grace period's end


def test_status_folds_events_into_bar_and_line():
    status = RunStatus()
    status.update({"event": "stage", "stage": "s3net", "total": 20})
    assert (status.stage, status.fraction, status.message) == ("s3net", 0.0, "s3net")
    status.update({"event": "progress", "stage": "s3net", "done": 3, "total": 20, "fraction": 0.15, "loss": 0.51234, "clusters": 12})
    assert status.fraction == 0.15 and status.message == "s3net: 3/20 (loss 0.5123, clusters 12)"
    status.update({"event": "stage", "stage": "select", "total": None})
    assert status.fraction is None  # unknown length: the bar shows "busy"
    status.update({"event": "log", "level": "INFO", "message": "first line\nsecond line"})
    assert status.message == "first line"
    status.update({"event": "output", "path": "/x/result.nrrd"})
    status.update({"event": "something new", "x": 1})  # unknown events are ignored
    status.update({"event": "error", "message": "segssl segment: error: seed outside the image"})
    assert status.error == "segssl segment: error: seed outside the image"
    status.update({"event": "done", "seconds": 4.2})
    status.update({"event": EXIT_EVENT, "returncode": 0, "cancelled": False})
    assert (status.outputs, status.fraction, status.seconds, status.returncode) == (["/x/result.nrrd"], 1.0, 4.2, 0)


def test_child_finds_this_library_first(tmp_path, monkeypatch):
    from SegSSLLib.processes import child_environment, library_root, segssl_command

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", str(library_root())]))
    env = child_environment({"SEGSSL_HOME": str(tmp_path)})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(library_root()), "/elsewhere"]
    assert env["SEGSSL_HOME"] == str(tmp_path) and env["PYTHONUNBUFFERED"] == "1"
    assert segssl_command(["evaluate", tmp_path], python="PythonSlicer") == [
        "PythonSlicer", "-m", "SegSSLLib", "evaluate", str(tmp_path), "--progress", "json",
    ]


def test_partial_files_are_the_unfinished_writes_of_exactly_that_output(tmp_path):
    from SegSSLLib.atomic import atomic_output, partial_files

    output = tmp_path / "scan[1].nii.gz"  # glob characters and a compound suffix
    with pytest.raises(RuntimeError):
        with atomic_output(output) as temporary:
            temporary.write_text("half")
            assert partial_files(output) == [temporary] and temporary.name == f".scan[1].partial-{os.getpid()}.nii.gz"
            raise RuntimeError("writer failed")
    assert partial_files(output) == [] and not output.exists()
    left = [tmp_path / ".scan[1].partial-77.nii.gz", tmp_path / ".scan[1].partial-78.nii.gz"]
    for path in left + [tmp_path / ".scan[2].partial-77.nii.gz", tmp_path / ".scan[1].partial-77.nrrd"]:
        path.write_text("killed writer")
    assert partial_files(output) == left
