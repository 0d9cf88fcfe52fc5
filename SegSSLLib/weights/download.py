"""Downloading weights: progress, resume after an interruption (HTTP Range), and a checksum.

The file grows as ``<name>.part`` in the cache folder and is renamed to its final name only after
its size and digest match the registry, so a checkpoint in the cache is always complete and checked.
An interrupted download leaves the ``.part`` file so that the next try continues where it stopped.
A file that reaches the cache another way (copied there by hand) is checked on its first use; a
stamp next to it (``<name>.verified``: path, size, modification time, expected digest) lets later
uses skip hashing gigabytes again until the file changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from SegSSLLib.errors import SegSSLError
from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.weights.registry import KnownWeights, cached_path

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # 1 MiB: progress advances once per chunk
TIMEOUT_S = 30


def download_weights(
    weights: KnownWeights, url: str | None = None, folder: Path | None = None, progress: Progress | None = None
) -> Path:
    """Fetch ``weights`` (from ``url``, e.g. a mirror, or the official address) into the cache; returns the file."""
    progress = progress or NO_PROGRESS
    target = (folder / weights.file_name) if folder else cached_path(weights)
    if target.is_file():
        return target
    url = url or weights.url
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        _fetch(url, partial, weights, progress)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SegSSLError(
            f"cannot download {weights.name} from {url} ({str(reason).splitlines()[0]}) — "
            f"offline or blocked? download that file by hand and save it as {target}, "
            "or pass the file with `sam_checkpoint` / `sam2_checkpoint`"
        ) from None
    _verify(partial, weights, url, target)
    os.replace(partial, target)
    _write_stamp(target, weights)
    log.info("saved %s (%s)", target, "checked: " + weights.verification if weights.verification != "unverified"
             else "no published checksum to check against")
    return target


def _fetch(url: str, partial: Path, weights: KnownWeights, progress: Progress) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    if weights.size is not None and have > weights.size:
        partial.unlink()  # longer than the real file: not a prefix of it, start again
        have = 0
    if weights.size is not None and have == weights.size:
        return
    scheme = urllib.parse.urlparse(url).scheme
    if scheme == "file":
        _copy_local(Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path)), partial, have, weights, progress)
        return
    request = urllib.request.Request(url, headers={"User-Agent": "segssl"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 - http(s) URLs from the registry
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already whole
            return
        raise
    with response:
        resumed = response.status == 206
        if have and not resumed:
            log.info("the server does not resume downloads; starting %s again", weights.file_name)
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else weights.size
        if weights.size is not None and total is not None and total != weights.size:
            raise SegSSLError(
                f"{url} serves {total} bytes but {weights.file_name} has {weights.size} — "
                "wrong file or a changed release; download it by hand and check it"
            )
        log.info("%s %s from %s", "resuming" if have else "downloading", weights.file_name, url)
        with open(partial, "ab" if have else "wb") as sink:
            _stream(response, sink, have, total, weights.file_name, progress)


def _copy_local(source: Path, partial: Path, have: int, weights: KnownWeights, progress: Progress) -> None:
    if not source.is_file():
        raise FileNotFoundError(f"no file {source}")
    with open(source, "rb") as stream, open(partial, "ab" if have else "wb") as sink:
        stream.seek(have)
        _stream(stream, sink, have, source.stat().st_size, weights.file_name, progress)


def _stream(stream, sink, have: int, total: int | None, name: str, progress: Progress) -> None:
    chunks = None if total is None else max(1, -(-(total - have) // CHUNK))
    with progress.stage(f"download {name} (MiB)", total=chunks):
        while chunk := stream.read(CHUNK):
            sink.write(chunk)
            progress.advance()


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK * 8):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(partial: Path, weights: KnownWeights, url: str, target: Path) -> None:
    """Size and digest against the registry; a mismatching download is deleted, never kept."""
    problem = None
    if weights.size is not None and partial.stat().st_size != weights.size:
        problem = f"it has {partial.stat().st_size} bytes, expected {weights.size}"
    elif weights.verification != "unverified":
        algorithm = weights.verification
        expected = weights.sha256 if algorithm == "sha256" else weights.md5
        actual = file_digest(partial, algorithm)
        if actual != expected:
            problem = f"{algorithm} {actual[:16]}… differs from the published {expected[:16]}…"
    else:
        log.warning("%s has no published checksum: the download is kept unverified", weights.name)
    if problem:
        partial.unlink()
        raise SegSSLError(
            f"checksum mismatch for {weights.file_name} from {url}: {problem}; the download was deleted — "
            f"try again, or download it by hand from {weights.url} and save it as {target}"
        )


def verify_file(path: Path, weights: KnownWeights) -> str:
    """'ok', 'unverified' or a description of what differs, for a file the user already has."""
    if weights.size is not None and path.stat().st_size != weights.size:
        return f"size {path.stat().st_size} != {weights.size}"
    if weights.verification == "unverified":
        return "unverified"
    expected = weights.sha256 if weights.verification == "sha256" else weights.md5
    return "ok" if file_digest(path, weights.verification) == expected else f"{weights.verification} differs"



def check_cached(path: Path, weights: KnownWeights) -> Path:
    """``path``, a cached copy of ``weights``, once it is known to match the registry (hashed on first use only)."""
    if weights.verification == "unverified":
        return path
    if _read_stamp(path) == _fingerprint(path, weights):
        return path
    outcome = verify_file(path, weights)
    if outcome != "ok":
        raise SegSSLError(
            f"{path} is not the published {weights.name} ({outcome}) — delete it and run "
            f"segssl weights download {weights.name}, or give your own file by its path outside the cache"
        )
    _write_stamp(path, weights)
    log.info("checked %s: %s matches the published file", path.name, weights.verification)
    return path


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _fingerprint(path: Path, weights: KnownWeights) -> dict:
    status = path.stat()
    expected = weights.sha256 if weights.verification == "sha256" else weights.md5
    return {"path": str(path.resolve()), "size": status.st_size, "mtime_ns": status.st_mtime_ns,
            "check": f"{weights.verification}:{expected}"}


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return None


def _write_stamp(path: Path, weights: KnownWeights) -> None:
    if weights.verification == "unverified":
        return
    try:
        _stamp_path(path).write_text(json.dumps(_fingerprint(path, weights)))
    except OSError as exc:  # a read-only cache still works; the file is hashed again next time
        log.debug("cannot write %s (%s)", _stamp_path(path), exc)
