"""How the panel installs packages: pip calls in order, sam2 built against the installed torch."""

from __future__ import annotations

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


def test_each_workflow_needs_only_its_own_tier(monkeypatch):
    """Registration needs what Slicer ships; torch only for the torch workflows; sam2 only for SAM 2."""
    installed = {"numpy": "1.26.4", "SimpleITK": "2.4.0", "scipy": "1.13.0"}
    monkeypatch.setattr(dependencies, "installed_version", installed.get)
    dependencies.refresh()
    try:
        assert dependencies.missing_for("registration") == () and dependencies.describe_missing("registration") == ""
        names = {w: {r.split(">")[0] for r in dependencies.missing_for(w)} for w in dependencies.WORKFLOW_REQUIREMENTS}
        for workflow in ("s3net", "polycl", "sam", "sam2"):
            assert {"torch", "torchvision"} <= names[workflow], workflow
        assert {w for w, n in names.items() if "sam2" in n} == {"sam2"}
        assert {w for w, n in names.items() if "segment-anything" in n} == {"sam"}
        assert not any("tensorboard" in n for n in names.values())  # a training extra, never installed by the panel
        assert dependencies.describe_missing("sam2").startswith("missing Python packages: torch, torchvision, sam2")
    finally:
        dependencies.refresh()


def test_the_package_scan_is_cached_until_refreshed(monkeypatch):
    versions = {"torch": "2.6.0", "torchvision": "0.21.0"}
    calls = []

    def installed_version(name):
        calls.append(name)
        return versions.get(name, "99.0")

    monkeypatch.setattr(dependencies, "installed_version", installed_version)
    dependencies.refresh()
    assert dependencies.describe_missing("s3net") == ""
    scanned = len(calls)
    assert scanned == len(dependencies.workflow_requirements("s3net"))
    assert dependencies.describe_missing("s3net") == "" and len(calls) == scanned  # no second scan
    versions["torch"] = "2.0.0"  # e.g. replaced outside the panel: seen after a refresh only
    assert dependencies.describe_missing("s3net") == ""
    dependencies.refresh()
    assert dependencies.describe_missing("s3net") == "missing Python packages: torch"
    assert dependencies.describe_missing("registration") == ""
    dependencies.refresh()
