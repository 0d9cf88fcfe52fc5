"""Write outputs so that a failure or Ctrl-C never leaves a partial file behind."""

from __future__ import annotations

import contextlib
import glob
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


def _temporary_name(final: Path, process_id: str, escape=lambda text: text) -> str:
    suffix = full_suffix(final)
    stem = final.name[: len(final.name) - len(suffix)] if suffix else final.name
    return f"{escape(f'.{stem}.partial-')}{process_id}{escape(suffix)}"


def partial_files(path: str | os.PathLike) -> list[Path]:
    """Temporary files of unfinished writes of ``path`` (left behind only if a writer was killed)."""
    final = Path(path)
    return sorted(final.parent.glob(_temporary_name(final, "*", glob.escape)))


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    final = Path(path)
    temporary = final.with_name(_temporary_name(final, str(os.getpid())))
    try:
        yield temporary
        os.replace(temporary, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
