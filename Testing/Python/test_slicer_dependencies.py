"""How the panel installs packages: pip calls in order, sam2 built against the installed torch."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "SegSSL"))
from SegSSLSlicerLib import dependencies  # noqa: E402


def test_sam2_is_built_after_the_others_without_isolation_or_cuda_and_with_the_constraints():
    steps = dependencies.pip_steps(["monai>=1.3", "sam2>=1.0", "scipy>=1.10"], Path("/tmp/c.txt"))
    assert steps == [
        (["monai>=1.3", "scipy>=1.10", "-c", "/tmp/c.txt"], {}),
        (["sam2>=1.0", "--no-build-isolation", "-c", "/tmp/c.txt"], {"SAM2_BUILD_CUDA": "0"}),
    ]
    assert dependencies.pip_steps(["sam2>=1.0"], "c.txt") == [(["sam2>=1.0", "--no-build-isolation", "-c", "c.txt"], {"SAM2_BUILD_CUDA": "0"})]
    assert dependencies.pip_steps(["tqdm>=4.60"], "c.txt") == [(["tqdm>=4.60", "-c", "c.txt"], {})]
    assert dependencies.pip_steps([], "c.txt") == []


def test_the_build_environment_is_set_only_while_pip_runs(monkeypatch):
    monkeypatch.delenv("SAM2_BUILD_CUDA", raising=False)
    monkeypatch.setenv("SEGSSL_TEST_KEPT", "before")
    with dependencies.environment_set({"SAM2_BUILD_CUDA": "0", "SEGSSL_TEST_KEPT": "during"}):
        assert os.environ["SAM2_BUILD_CUDA"] == "0" and os.environ["SEGSSL_TEST_KEPT"] == "during"
    assert "SAM2_BUILD_CUDA" not in os.environ and os.environ["SEGSSL_TEST_KEPT"] == "before"


def test_the_package_scan_is_cached_until_refreshed(monkeypatch):
    versions = {"torch": "2.6.0", "torchvision": "0.21.0"}
    calls = []

    def installed_version(name):
        calls.append(name)
        return versions.get(name, "99.0")

    monkeypatch.setattr(dependencies, "installed_version", installed_version)
    dependencies.refresh()
    assert dependencies.describe_missing() == ""
    scanned = len(calls)
    assert scanned == len(dependencies.TORCH_REQUIREMENTS + dependencies.PIP_REQUIREMENTS)
    assert dependencies.describe_missing() == "" and len(calls) == scanned  # no second scan
    versions["torch"] = "2.0.0"  # e.g. replaced outside the panel: seen after a refresh only
    assert dependencies.describe_missing() == ""
    dependencies.refresh()
    assert dependencies.describe_missing() == "missing Python packages: torch"
    dependencies.refresh()
