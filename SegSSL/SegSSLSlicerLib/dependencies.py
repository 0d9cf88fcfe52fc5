"""Which Python packages each SegSSL workflow needs inside Slicer, and which of them are missing.

Installing happens in tiers, only for the workflow the user starts, and only on a user action with
confirmation (``installing.py`` runs it in a background process):

- registration propagation: nothing beyond what Slicer ships (numpy, SimpleITK, scipy);
- S3-Net, PolyCL, Refine with SAM: PyTorch (through light-the-torch, as the PyTorch extension's
  PyTorchUtils does: it picks the build that fits the GPU driver) plus that workflow's packages;
- SAM 2 propagation: PyTorch and sam2.

TensorBoard is a training extra (``segssl pretrain/finetune --log-dir``), never installed here.
Packages that Slicer itself ships or that were installed for PyTorch are pinned in a constraints
file, so pip never replaces them (Slicer's SimpleITK above all).
"""

from __future__ import annotations

import functools
import importlib
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

MINIMUM_PYTHON = (3, 10)  # sam2 needs it: Slicer 5.10 or newer
# Lower bounds as in pyproject.toml.
TORCH_REQUIREMENTS = ("torch>=2.5.1", "torchvision>=0.20")
# Slicer ships these (scipy since long before 5.10); required so that a Python without them says so.
SLICER_SHIPPED = ("numpy>=1.24", "SimpleITK>=2.2", "scipy>=1.10")
# What each workflow needs beyond Slicer's own packages. Keys are the workflows' stable ids.
WORKFLOW_REQUIREMENTS = {
    "registration": (),
    "s3net": TORCH_REQUIREMENTS + ("monai>=1.3", "tqdm>=4.60"),
    "polycl": TORCH_REQUIREMENTS + ("monai>=1.3", "scikit-image>=0.19", "tqdm>=4.60", "platformdirs>=3.0"),
    "sam": TORCH_REQUIREMENTS
    + ("segment-anything>=1.0", "scikit-image>=0.19", "pillow>=9.0", "tqdm>=4.60", "platformdirs>=3.0"),
    "sam2": TORCH_REQUIREMENTS + ("sam2>=1.0", "pillow>=9.0", "tqdm>=4.60", "platformdirs>=3.0"),
}
# Installed by no workflow of the panel: training logs only.
TRAINING_EXTRAS = ("tensorboard>=2.10",)
# Slicer's own copies; pip may use them but must not replace them.
KEEP_INSTALLED = ("SimpleITK", "numpy", "scipy")
# Published as source only: built after torch, against the installed torch (an isolated build would
# download a second torch, and constraints do not reach it), without the optional CUDA extension
# (it needs a CUDA compiler; sam2 runs without it).
SOURCE_BUILDS = {"sam2": {"SAM2_BUILD_CUDA": "0"}}


def all_requirements() -> tuple[str, ...]:
    """Every package some workflow of the panel may install (each once, in a stable order)."""
    return tuple(dict.fromkeys(r for tier in WORKFLOW_REQUIREMENTS.values() for r in tier))


def workflow_requirements(workflow: str) -> tuple[str, ...]:
    if workflow not in WORKFLOW_REQUIREMENTS:
        raise ValueError(f"unknown workflow {workflow!r}: one of {', '.join(WORKFLOW_REQUIREMENTS)}")
    return SLICER_SHIPPED + WORKFLOW_REQUIREMENTS[workflow]


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


def imported_among(requirements) -> list[str]:
    """Requirements whose package is already imported in this process (a restart is then needed)."""
    imported = {canonicalize_name(module.split(".")[0]) for module in list(sys.modules)}
    import_names = {"pillow": "pil"}  # distribution name -> top-level module, where they differ
    names = {r: canonicalize_name(Requirement(r).name) for r in requirements}
    return [r for r, name in names.items() if canonicalize_name(import_names.get(name, name)) in imported]


@functools.lru_cache(maxsize=None)
def missing_for(workflow: str) -> tuple[str, ...]:
    """The requirements of ``workflow`` that are not installed (cached: it scans the installed
    distributions and the panel asks on every change; ``refresh()`` after installing)."""
    return tuple(missing(workflow_requirements(workflow)))


def describe_missing(workflow: str) -> str:
    """One line for the panel: what ``workflow`` still needs, or "" when it can run."""
    if not python_supported():
        return f"SegSSL needs Python {'.'.join(map(str, MINIMUM_PYTHON))} or newer: use 3D Slicer 5.10 or newer"
    absent = missing_for(workflow)
    if not absent:
        return ""
    return "missing Python packages: " + ", ".join(Requirement(r).name for r in absent)


def refresh() -> None:
    """Forget what was found installed (after pip ran)."""
    importlib.invalidate_caches()
    missing_for.cache_clear()
