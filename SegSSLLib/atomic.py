"""Write outputs so that a failure, Ctrl-C or a full disk never leaves a partial file behind.

Every output is written to a temporary file next to its final name, checked complete (a writer
passes ``verify``: read it back and compare), flushed to the disk, and only then renamed onto the
final name; an earlier file of that name stays untouched until the new one is known to be whole.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
from pathlib import Path
from typing import Callable

from SegSSLLib.errors import SegSSLError

# Multi-part suffixes that writers recognise; the temporary file keeps them so SimpleITK picks
# the same writer for the temporary file as for the final one.
_COMPOUND_SUFFIXES = (".nii.gz", ".seg.nrrd", ".tar.gz")

# Room for the widest process id in a temporary name (Linux allows up to 2**22).
_PID_WIDTH = 10

# errno of a write that ran out of room -> what to tell the user.
WRITE_FAILURES = {
    errno.ENOSPC: "disk full",
    errno.EFBIG: "file too large for a file-size limit (ulimit -f) or the file system",
    errno.EDQUOT: "disk quota exceeded",
}


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


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process, or not a process id we can judge: leave its file alone
    return True


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Delete temporary files of ``path`` whose writer is dead (killed with SIGKILL, power loss)."""
    final = Path(path)
    suffix = full_suffix(final)
    prefix_length = len(_temporary_name(final, "")) - len(suffix)
    removed = []
    with contextlib.suppress(OSError):
        for candidate in partial_files(final):
            middle = candidate.name[prefix_length: len(candidate.name) - len(suffix)]
            if not re.fullmatch(r"\d+", middle) or int(middle) == os.getpid() or _process_alive(int(middle)):
                continue
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed.append(candidate)
    return removed


def check_name_length(path: str | os.PathLike, what: str = "output") -> None:
    """Fail before any work if ``path`` or its temporary twin is too long for the file system."""
    final = Path(path)
    folder = final.parent if str(final.parent) else Path(".")
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    longest = len(_temporary_name(final, "9" * _PID_WIDTH).encode(errors="surrogateescape"))
    if longest > name_max:
        room = name_max - (longest - len(final.name.encode(errors="surrogateescape")))
        raise SegSSLError(
            f"{what} file name {final.name[:40]}… is too long for this file system ({len(final.name.encode())} bytes; "
            f"at most {room} leave room for SegSSL's temporary file) — choose a shorter name"
        )
    try:
        path_max = os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        path_max = 4096
    if len(os.path.join(os.path.abspath(folder), _temporary_name(final, "9" * _PID_WIDTH)).encode(errors="surrogateescape")) >= path_max:
        raise SegSSLError(f"{what} path {str(final)[:40]}… is too long for this file system — choose a shorter path")


def write_failure_message(path: str | os.PathLike, exc: BaseException | None = None, what: str = "output") -> str:
    """One line saying why writing ``path`` could not complete, for an errno or an incomplete file."""
    reason = WRITE_FAILURES.get(getattr(exc, "errno", None)) if exc is not None else None
    if reason is None:
        reason = _guess_reason(Path(path))
    return (
        f"cannot write {what} {path}: {reason} — free some space or raise the limit, or write elsewhere; "
        "nothing was written and an earlier file of that name was left unchanged"
    )


_NOT_ALLOWED = (errno.EACCES, errno.EPERM, errno.EROFS)


def read_only_reason(folder: Path) -> str | None:
    """'read-only file system' or 'permission denied' when files cannot be created in ``folder``, else None."""
    with contextlib.suppress(OSError, AttributeError):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    with contextlib.suppress(OSError):
        if not os.access(folder, os.W_OK | os.X_OK):
            return "permission denied"
    return None


def _guess_reason(path: Path) -> str:
    """For writers that report no errno (SimpleITK, torch): look at the folder, the disk and the file-size limit."""
    blocked = read_only_reason(path.parent if str(path.parent) else Path("."))
    if blocked:
        return f"{blocked} in {path.parent}"
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            return f"{WRITE_FAILURES[errno.EFBIG]} (the limit is {limit} bytes)"
    with contextlib.suppress(OSError):
        status = os.statvfs(path.parent if str(path.parent) else ".")
        if status.f_bavail * status.f_frsize < 1 << 20:
            return WRITE_FAILURES[errno.ENOSPC]
    return "the file came out incomplete (disk full or file too large?)"


def is_write_failure(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in WRITE_FAILURES


def _flush_to_disk(path: Path) -> None:
    """fsync: some file systems (NFS, delayed allocation) report a full disk only here."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EROFS, errno.ENOTSUP):  # cannot be synced: nothing more to learn
            return
        raise
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, verify: Callable[[Path], None] | None = None, what: str = "output"):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    ``verify(temporary)`` runs after the block and must raise if the file is not what was meant to
    be written (read it back); a write that runs out of room is reported as a ``SegSSLError``.
    """
    final = Path(path)
    remove_stale_partials(final)
    temporary = final.with_name(_temporary_name(final, str(os.getpid())))
    try:
        try:
            yield temporary
            if not temporary.is_file():
                raise SegSSLError(write_failure_message(final, what=what))
            if verify is not None:
                verify(temporary)
            _flush_to_disk(temporary)
        except OSError as exc:
            if is_write_failure(exc):
                raise SegSSLError(write_failure_message(final, exc, what)) from None
            if exc.errno in _NOT_ALLOWED:
                raise SegSSLError(_not_allowed_message(final, exc, what)) from None
            raise
        try:
            os.replace(temporary, final)
        except OSError as exc:
            if exc.errno in _NOT_ALLOWED or exc.errno in (errno.EISDIR, errno.EBUSY, errno.EXDEV):
                raise SegSSLError(_not_allowed_message(final, exc, what)) from None
            raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _not_allowed_message(final: Path, exc: OSError, what: str) -> str:
    return (
        f"cannot write {what} {final}: {exc.strerror.lower() if exc.strerror else exc} — write it to another folder "
        "(or make this one writable); an earlier file of that name was left unchanged"
    )


def write_bytes_atomically(path: str | os.PathLike, data: bytes, what: str = "output") -> None:
    """Write ``data`` to ``path`` completely or not at all (read back before it replaces anything)."""

    def verify(temporary: Path) -> None:
        if temporary.read_bytes() != data:
            raise SegSSLError(write_failure_message(path, what=what))

    with atomic_output(path, verify, what) as temporary:
        with open(temporary, "wb") as stream:
            stream.write(data)


def write_text_atomically(path: str | os.PathLike, text: str, what: str = "output") -> None:
    write_bytes_atomically(path, text.encode("utf-8"), what)
