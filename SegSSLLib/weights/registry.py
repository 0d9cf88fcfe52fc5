"""Known SAM / SAM 2 checkpoints (the data in ``registry.json``) and where they are cached.

Nothing here imports torch or downloads: the Slicer panel and ``segssl weights list`` read it as is.
Sizes and SHA-256 digests were taken from public download manifests that list the same official
file (several independent ones agree for each SAM and SAM 2.1 file). For MedSAM the official
record publishes no SHA-256: we check the MD5 that two independent public scripts agree on. For
MedSAM2 we found neither size nor digest nor a pinned revision (its address follows the moving
``main`` branch of the Hugging Face repository): a download is kept but reported as unverified. Never
fill these in from a file you downloaded yourself; take them from the publisher.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from SegSSLLib.errors import SegSSLError

log = logging.getLogger(__name__)

HOME_VARIABLE = "SEGSSL_HOME"
# A checkpoint file (or a registry name) to use when none is given.
CHECKPOINT_VARIABLES = {"sam": "SEGSSL_SAM_CHECKPOINT", "sam2": "SEGSSL_SAM2_CHECKPOINT"}


@dataclass(frozen=True)
class KnownWeights:
    name: str
    family: str  # "sam" (segment-anything predictor) or "sam2" (video predictor)
    description: str
    url: str
    file_name: str
    size: int | None  # bytes; None: not published where we could check
    sha256: str | None
    md5: str | None = None  # only where no SHA-256 is published
    sam2_config: str | None = None  # the config that builds this checkpoint
    image_size: int | None = None  # input size the model was trained at, if not the config's 1024
    sam_preprocess: str | None = None  # "medsam": MedSAM's own input preparation (refinement/medsam.py)

    @property
    def verification(self) -> str:
        if self.sha256:
            return "sha256"
        return "md5" if self.md5 else "unverified"


REGISTRY_FILE = Path(__file__).with_name("registry.json")


def load_registry(path: Path = REGISTRY_FILE) -> dict[str, KnownWeights]:
    """The registry file's entries by name (the Slicer panel reads the same file)."""
    entries = json.loads(Path(path).read_text(encoding="utf-8"))["weights"]
    return {entry["name"]: KnownWeights(**entry) for entry in entries}


REGISTRY: dict[str, KnownWeights] = load_registry()


def names(family: str) -> list[str]:
    """Registry names of one family ("sam" or "sam2"), in the file's order."""
    return [name for name, entry in REGISTRY.items() if entry.family == family]


def segssl_home() -> Path:
    """``$SEGSSL_HOME``, or SegSSL's folder in the user's cache directory."""
    configured = os.environ.get(HOME_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("segssl", appauthor=False))


def weights_folder() -> Path:
    return segssl_home() / "weights"


def cached_path(weights: KnownWeights) -> Path:
    return weights_folder() / weights.file_name


def known_weights(name: str, family: str | None = None) -> KnownWeights:
    entry = REGISTRY.get(name)
    if entry is None or (family is not None and entry.family != family):
        names = ", ".join(n for n, w in REGISTRY.items() if family is None or w.family == family)
        raise SegSSLError(f"unknown weights {name!r} — use one of {names} (segssl weights list)")
    return entry


def registry_entry_for_file(path: Path) -> KnownWeights | None:
    """The registry entry whose official file name ``path`` carries, if any (to pick configs and sizes)."""
    return next((w for w in REGISTRY.values() if w.file_name == Path(path).name), None)
