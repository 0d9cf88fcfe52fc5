"""From what the user gave (a file, a registry name, or nothing) to a checked checkpoint file.

``registry`` holds the data, ``download`` fetches and checks files; this module uses both (they do
not use it), so there is no cycle.
"""

from __future__ import annotations

import os
from pathlib import Path

from SegSSLLib.errors import SegSSLError
from SegSSLLib.weights.download import check_cached, download_weights
from SegSSLLib.weights.registry import (
    CHECKPOINT_VARIABLES,
    REGISTRY,
    KnownWeights,
    cached_path,
    known_weights,
    registry_entry_for_file,
)


def resolve_checkpoint(
    value: str | os.PathLike | None, family: str, parameter: str | None = None, download_missing: bool = True,
    progress=None,
) -> Path:
    """The checkpoint file for a SAM (``family="sam"``) or SAM 2 (``"sam2"``) model.

    ``value``: a file, or a registry name (downloaded into the cache on first use). ``None``: the
    environment variable for the family, else a registry file already in the cache. ``parameter``
    names the setting in error messages (default ``sam_checkpoint`` / ``sam2_checkpoint``).
    """
    name = f"`{parameter or family + '_checkpoint'}`"
    value = str(value) if value else os.environ.get(CHECKPOINT_VARIABLES[family])
    if not value:
        found = configured_checkpoint(family)
        if found is None:
            example = "sam_vit_b" if family == "sam" else "sam2.1_hiera_t"
            raise SegSSLError(
                f"{name} is needed: give a checkpoint file or a name such as {example} "
                f"(segssl weights list; segssl weights download {example} fetches it)"
            )
        return found
    path = Path(value).expanduser()
    if path.is_file():
        known = registry_entry_for_file(path)
        in_cache = known is not None and path.resolve() == cached_path(known).resolve()
        return _checked(path, known) if in_cache else path  # a file of the user's own is theirs to vouch for
    if value in REGISTRY:
        entry = known_weights(value, family)
        target = cached_path(entry)
        if target.is_file():
            return _checked(target, entry)
        if not download_missing:
            raise SegSSLError(f"{value} is not downloaded yet — run segssl weights download {value}")
        return download_weights(entry, progress=progress)
    if path.exists():
        raise SegSSLError(f"{name} {value} is a folder; give the checkpoint file")
    raise SegSSLError(f"{name} {value}: no such file and no known weights of that name — check the path (segssl weights list)")


def resolve_weights(
    value: str | os.PathLike | None = None, family: str = "sam2", download: bool = True, progress=None
) -> Path:
    """The checkpoint file for a SAM (``family="sam"``) or SAM 2 (``"sam2"``) model.

    ``value``: a file, or a registry name (``segssl weights list``), downloaded on first use unless
    ``download`` is False; ``None``: ``$SEGSSL_SAM_CHECKPOINT`` / ``$SEGSSL_SAM2_CHECKPOINT``, else a
    registry file already in the cache.
    """
    if family not in CHECKPOINT_VARIABLES:
        raise SegSSLError(f"`family` must be one of {', '.join(CHECKPOINT_VARIABLES)}, got {family!r}")
    return resolve_checkpoint(value, family, download_missing=download, progress=progress)


def configured_checkpoint(family: str) -> Path | None:
    """A checkpoint the user has set up for ``family``: the environment variable's, else the first cached one."""
    value = os.environ.get(CHECKPOINT_VARIABLES[family])
    if value:
        return resolve_checkpoint(value, family, CHECKPOINT_VARIABLES[family], download_missing=False)
    for entry in REGISTRY.values():
        if entry.family == family and cached_path(entry).is_file():
            return _checked(cached_path(entry), entry)
    return None


def _checked(path: Path, entry: KnownWeights) -> Path:
    """A file in the cache, checked against the registry on its first use (it may have been copied in by hand)."""
    return check_cached(path, entry)
