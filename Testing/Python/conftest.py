"""Shared test helpers: run the real ``segssl`` command, make tiny phantoms on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from SegSSLLib.phantoms import make_ct_phantom, oblique_direction  # noqa: E402

# Small enough for a fast suite, anisotropic and oblique so geometry mistakes show.
TINY_SIZE = (40, 36, 20)
TINY_SPACING = (7.0, 8.0, 12.5)


def run_segssl(*args, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m SegSSLLib`` from this checkout in a fresh process, as users do."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("OMP_NUM_THREADS", "2")
    return subprocess.run(
        [sys.executable, "-m", "SegSSLLib", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user error: non-zero exit, exactly one line on stderr, naming the problem."""
    assert result.returncode != 0, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]


@pytest.fixture
def tiny_phantom(tmp_path) -> tuple[Path, Path]:
    """(volume, labels) files of a tiny oblique, anisotropic CT phantom."""
    image, labels = make_ct_phantom(seed=3, size=TINY_SIZE, spacing=TINY_SPACING, direction=oblique_direction())
    image_path, labels_path = tmp_path / "ct.nii.gz", tmp_path / "labels.nii.gz"
    sitk.WriteImage(image, str(image_path))
    sitk.WriteImage(labels, str(labels_path))
    return image_path, labels_path
