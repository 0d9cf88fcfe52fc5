"""``segssl weights download``: a corrupt cached file is replaced, bad addresses and cache folders are one line."""

from __future__ import annotations

import hashlib

import pytest

from conftest import assert_one_line_error, run_segssl
from SegSSLLib.errors import SegSSLError
from SegSSLLib.weights.download import download_weights
from SegSSLLib.weights.registry import KnownWeights

PAYLOAD = bytes(range(256)) * 64


def _entry() -> KnownWeights:
    return KnownWeights("test", "sam", "test weights", "http://127.0.0.1:9/none", "test_weights.pt",
                        len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest())


def test_download_replaces_a_corrupt_file_already_in_the_cache(tmp_path):
    source = tmp_path / "mirror.pt"
    source.write_bytes(PAYLOAD)
    cache = tmp_path / "cache"
    cache.mkdir()
    corrupt = bytearray(PAYLOAD)
    corrupt[100] ^= 0xFF  # same size, one byte changed: only the checksum tells
    (cache / "test_weights.pt").write_bytes(bytes(corrupt))
    path = download_weights(_entry(), url=source.as_uri(), folder=cache)
    assert path.read_bytes() == PAYLOAD
    # A good cached file is kept as it is (no second download: the mirror is gone now).
    source.unlink()
    assert download_weights(_entry(), url=source.as_uri(), folder=cache).read_bytes() == PAYLOAD


@pytest.mark.parametrize("url", ["htp//example.org/x.pt", "http://", "http://host:port/x.pt", "ftp://h/x.pt"])
def test_a_malformed_url_is_refused_before_anything_is_created(tmp_path, url):
    with pytest.raises(SegSSLError, match="not an address SegSSL can download from"):
        download_weights(_entry(), url=url, folder=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_weights_download_with_a_malformed_url_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGSSL_HOME", str(tmp_path / "home"))
    result = run_segssl("weights", "download", "sam_vit_b", "--url", "http://[bad")
    assert_one_line_error(result, "--url", "http://", "file:///")


def test_segssl_home_pointing_at_a_file_is_one_line(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a folder")
    source = tmp_path / "mirror.pt"
    source.write_bytes(b"x")
    monkeypatch.setenv("SEGSSL_HOME", str(home))
    result = run_segssl("weights", "download", "sam_vit_b", "--url", source.as_uri())
    assert_one_line_error(result, "is a file, not a folder", "SEGSSL_HOME")
    assert home.read_text() == "not a folder"


def test_a_read_only_cache_folder_is_one_line(tmp_path, monkeypatch):
    from SegSSLLib.weights import download

    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setattr(download.os, "access", lambda path, mode: False)  # root ignores permission bits
    with pytest.raises(SegSSLError, match="read-only .* SEGSSL_HOME"):
        download.prepare_folder(folder)
