"""Which Python packages SegSSL needs inside Slicer, and which of them are missing.

Installing happens only when the user asks (``SegSSLLogic.installDependencies``), with confirmation:
torch and torchvision through the PyTorch extension's PyTorchUtils (it picks the build that fits the
GPU driver), the rest with pip. Packages that Slicer itself ships or that PyTorchUtils chose are
pinned in a constraints file so pip never replaces them (Slicer's SimpleITK above all).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

MINIMUM_PYTHON = (3, 10)  # sam2 needs it: Slicer 5.10 or newer
# Lower bounds as in pyproject.toml.
TORCH_REQUIREMENTS = ("torch>=2.5.1", "torchvision>=0.20")
PIP_REQUIREMENTS = (
    "monai>=1.3",
    "scipy>=1.10",
    "scikit-image>=0.19",
    "tqdm>=4.60",
    "tensorboard>=2.10",
    "pillow>=9.0",
    "platformdirs>=3.0",
    "segment-anything>=1.0",
    "sam2>=1.0",
)
# Slicer's own copies; pip may use them but must not replace them.
KEEP_INSTALLED = ("SimpleITK", "numpy")
# Published as source only: built after torch, against the installed torch (an isolated build would
# download a second torch, and constraints do not reach it), without the optional CUDA extension
# (it needs a CUDA compiler; sam2 runs without it).
SOURCE_BUILDS = {"sam2": {"SAM2_BUILD_CUDA": "0"}}


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def is_satisfied(requirement: str) -> bool:
    parsed = Requirement(requirement)
    version = installed_version(parsed.name)
    return version is not None and parsed.specifier.contains(version, prereleases=True)


def missing(requirements) -> list[str]:
    return [r for r in requirements if not is_satisfied(r)]


def python_supported(version_info=sys.version_info) -> bool:
    return tuple(version_info[:2]) >= MINIMUM_PYTHON


def constraints_text(names=KEEP_INSTALLED + tuple(Requirement(r).name for r in TORCH_REQUIREMENTS)) -> str:
    """A pip constraints file that pins each installed package of ``names`` to its version."""
    lines = [f"{name}=={version}" for name in names if (version := installed_version(name))]
    return "\n".join(lines) + "\n"


def pip_steps(requirements, constraints_path) -> list[tuple[list[str], dict[str, str]]]:
    """The ``pip install`` calls for missing ``requirements``, in order, as (arguments, extra
    environment): the ordinary packages together, then each source build on its own."""
    constraints = ["-c", str(constraints_path)]
    plain = [r for r in requirements if Requirement(r).name not in SOURCE_BUILDS]
    steps = [(plain + constraints, {})] if plain else []
    for requirement in requirements:
        environment = SOURCE_BUILDS.get(Requirement(requirement).name)
        if environment is not None:
            steps.append(([requirement, "--no-build-isolation"] + constraints, dict(environment)))
    return steps


@contextlib.contextmanager
def environment_set(variables: dict[str, str]):
    """``os.environ`` with ``variables`` set for the duration (pip inherits it), restored afterwards."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def imported_among(requirements) -> list[str]:
    """Requirements whose package is already imported in this process (a restart is then needed)."""
    imported = {canonicalize_name(module.split(".")[0]) for module in list(sys.modules)}
    import_names = {"pillow": "pil"}  # distribution name -> top-level module, where they differ
    names = {r: canonicalize_name(Requirement(r).name) for r in requirements}
    return [r for r, name in names.items() if canonicalize_name(import_names.get(name, name)) in imported]


@functools.lru_cache(maxsize=1)
def describe_missing() -> str:
    """One line for the panel: what is missing, or that everything is there.

    Cached: it scans the installed distributions and the panel asks on every change; ``refresh()``
    after installing.
    """
    if not python_supported():
        return f"SegSSL needs Python {'.'.join(map(str, MINIMUM_PYTHON))} or newer: use 3D Slicer 5.10 or newer"
    absent = missing(TORCH_REQUIREMENTS + PIP_REQUIREMENTS)
    if not absent:
        return ""
    return "missing Python packages: " + ", ".join(Requirement(r).name for r in absent)


def refresh() -> None:
    """Forget what was found installed (after pip ran)."""
    importlib.invalidate_caches()
    describe_missing.cache_clear()
