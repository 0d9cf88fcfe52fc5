"""Write outputs so that a failure or Ctrl-C never leaves a partial file behind."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# Multi-part suffixes that writers recognise; the temporary file keeps them so SimpleITK picks
# the same writer for the temporary file as for the final one.
_COMPOUND_SUFFIXES = (".nii.gz", ".seg.nrrd", ".tar.gz")


def full_suffix(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    for suffix in _COMPOUND_SUFFIXES:
        if name.endswith(suffix):
            return Path(path).name[-len(suffix):]
    return Path(path).suffix


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    final = Path(path)
    suffix = full_suffix(final)
    stem = final.name[: len(final.name) - len(suffix)] if suffix else final.name
    temporary = final.with_name(f".{stem}.partial-{os.getpid()}{suffix}")
    try:
        yield temporary
        os.replace(temporary, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
