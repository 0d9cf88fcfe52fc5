"""Weights registry, cache folder and the resumable, checksum-checked download."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_segssl
from SegSSLLib.errors import SegSSLError
from SegSSLLib.weights import download
from SegSSLLib.weights import registry
from SegSSLLib.weights.download import download_weights
from SegSSLLib.weights.registry import REGISTRY, KnownWeights
from SegSSLLib.weights.resolve import resolve_checkpoint

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB of known bytes


class RangeServer(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD, honouring 'Range: bytes=N-' like the real download hosts; records what it was asked."""

    requests: list = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        asked = self.headers.get("Range")
        type(self).requests.append(asked)
        start = int(re.match(r"bytes=(\d+)-", asked).group(1)) if asked else 0
        body = PAYLOAD[start:]
        self.send_response(206 if asked else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    RangeServer.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/weights.pt"
    httpd.shutdown()


def _entry(**changes) -> KnownWeights:
    entry = KnownWeights("test", "sam", "test weights", "http://127.0.0.1:9/none", "test_weights.pt",
                         len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest())
    return replace(entry, **changes)


def test_registry_entries_are_complete_and_consistent():
    names = {"sam_vit_b", "sam_vit_l", "sam_vit_h", "medsam_vit_b", "sam2.1_hiera_t", "sam2.1_hiera_s",
             "sam2.1_hiera_b+", "sam2.1_hiera_l", "medsam2"}
    assert set(REGISTRY) == names
    assert len({w.file_name for w in REGISTRY.values()}) == len(REGISTRY)
    for weights in REGISTRY.values():
        assert weights.url.startswith("https://") and weights.file_name in weights.url
        assert weights.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", weights.sha256)
        assert weights.md5 is None or re.fullmatch(r"[0-9a-f]{32}", weights.md5)
        if weights.family == "sam2":
            from SegSSLLib.weights.models import resolve_sam2_config

            assert resolve_sam2_config(weights.sam2_config).endswith(".yaml")
    # Meta's SAM file names carry the first hex digits of the file's MD5; our SHA-256 is a different digest.
    assert REGISTRY["sam_vit_h"].sha256.startswith("a7bf3b02")


def test_cache_folder_follows_segssl_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGSSL_HOME", str(tmp_path))
    assert registry.cached_path(REGISTRY["sam_vit_b"]) == tmp_path / "weights" / "sam_vit_b_01ec64.pth"
    monkeypatch.delenv("SEGSSL_HOME")
    assert "segssl" in str(registry.segssl_home()).lower()


def test_download_checks_the_digest_and_renames_only_when_whole(server, tmp_path):
    path = download_weights(_entry(), url=server, folder=tmp_path)
    assert path == tmp_path / "test_weights.pt" and path.read_bytes() == PAYLOAD
    assert not (tmp_path / "test_weights.pt.part").exists()
    assert RangeServer.requests == [None]


def test_download_resumes_from_the_partial_file(server, tmp_path):
    (tmp_path / "test_weights.pt.part").write_bytes(PAYLOAD[:300_000])
    path = download_weights(_entry(), url=server, folder=tmp_path)
    assert RangeServer.requests == ["bytes=300000-"]
    assert path.read_bytes() == PAYLOAD


def test_file_url_resumes_too(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "test_weights.pt.part").write_bytes(PAYLOAD[:1000])
    assert download_weights(_entry(), url=source.as_uri(), folder=folder).read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_the_download(server, tmp_path):
    with pytest.raises(SegSSLError, match="checksum mismatch"):
        download_weights(_entry(sha256="0" * 64), url=server, folder=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_offline_error_names_the_url_and_where_to_put_the_file(tmp_path):
    closed = "http://127.0.0.1:9/sam_vit_b_01ec64.pth"  # the discard port: nothing listens
    with pytest.raises(SegSSLError) as caught:
        download_weights(_entry(), url=closed, folder=tmp_path)
    message = str(caught.value)
    assert closed in message and str(tmp_path / "test_weights.pt") in message and "\n" not in message


def _registered_sam2_cache_path(tmp_path, monkeypatch) -> Path:
    """Register a SAM 2 test entry with its cache under ``tmp_path``; where its file belongs."""
    monkeypatch.setenv("SEGSSL_HOME", str(tmp_path))
    monkeypatch.delenv("SEGSSL_SAM2_CHECKPOINT", raising=False)
    entry = _entry(name="test_sam2", family="sam2")
    monkeypatch.setitem(registry.REGISTRY, entry.name, entry)
    cached = registry.cached_path(entry)
    cached.parent.mkdir(parents=True)
    return cached


def test_checkpoint_option_accepts_files_and_cached_names(tmp_path, monkeypatch):
    cached = _registered_sam2_cache_path(tmp_path, monkeypatch)
    cached.write_bytes(PAYLOAD)
    assert resolve_checkpoint("test_sam2", "sam2") == cached
    assert resolve_checkpoint(None, "sam2") == cached  # configured by the cache
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"y")
    assert resolve_checkpoint(str(mine), "sam2") == mine
    with pytest.raises(SegSSLError, match="no such file"):
        resolve_checkpoint(str(tmp_path / "missing.pt"), "sam2")
    with pytest.raises(SegSSLError, match="^`sam_checkpoint` is needed: .*sam_vit_b"):  # the parameter, not a flag
        resolve_checkpoint(None, "sam")


def test_a_cached_file_is_checked_on_first_use_then_trusted_by_its_stamp(tmp_path, monkeypatch):
    cached = _registered_sam2_cache_path(tmp_path, monkeypatch)
    cached.write_bytes(PAYLOAD[:-1] + b"\x00")  # copied in by hand, same size, one byte wrong
    for value in ("test_sam2", None, str(cached)):  # by name, found in the cache, by its path in the cache
        with pytest.raises(SegSSLError) as error:
            resolve_checkpoint(value, "sam2")
        message = str(error.value)
        assert "\n" not in message and str(cached) in message and "segssl weights download test_sam2" in message
    assert not cached.with_name(cached.name + ".verified").exists()
    cached.write_bytes(PAYLOAD)
    hashed = []
    real_digest = download.file_digest
    monkeypatch.setattr(download, "file_digest", lambda *a: hashed.append(a) or real_digest(*a))
    assert resolve_checkpoint("test_sam2", "sam2") == cached
    assert resolve_checkpoint("test_sam2", "sam2") == cached
    assert len(hashed) == 1  # the stamp spares the second use
    stamp = json.loads(cached.with_name(cached.name + ".verified").read_text())
    assert stamp["size"] == len(PAYLOAD) and stamp["path"] == str(cached.resolve())
    cached.write_bytes(PAYLOAD[:-1] + b"\x00")  # changed after it was checked: checked again
    with pytest.raises(SegSSLError, match="not the published test_sam2"):
        resolve_checkpoint("test_sam2", "sam2")


def test_a_download_is_stamped_so_its_first_use_does_not_hash_again(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGSSL_HOME", str(tmp_path))
    entry = _entry(name="test_sam2", family="sam2", url=server)
    monkeypatch.setitem(registry.REGISTRY, entry.name, entry)
    target = download_weights(entry)
    monkeypatch.setattr(download, "file_digest", lambda *a: pytest.fail("hashed again"))
    assert resolve_checkpoint("test_sam2", "sam2") == target


def test_weights_cli_list_path_and_checksum_mismatch(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGSSL_HOME", str(tmp_path))  # the command runs in a child process that inherits it
    listing = run_segssl("weights", "list")
    assert listing.returncode == 0
    for name in REGISTRY:
        assert name in listing.stdout
    where = run_segssl("weights", "path", "sam_vit_b")
    assert Path(where.stdout.strip()) == tmp_path / "weights" / "sam_vit_b_01ec64.pth"
    wrong = tmp_path / "not_medsam.pth"
    wrong.write_bytes(PAYLOAD)
    result = run_segssl("weights", "download", "medsam_vit_b", "--url", wrong.as_uri(), "--progress", "none")
    assert_one_line_error(result, "checksum mismatch", "medsam_vit_b.pth")
    assert list((tmp_path / "weights").iterdir()) == []
    unknown = run_segssl("weights", "download", "sam_vit_x")
    assert_one_line_error(unknown, "unknown weights", "sam_vit_b")
