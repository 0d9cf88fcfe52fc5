"""docs/api.md runs: every Python block, in order, in one session, on the phantoms it makes itself."""

from __future__ import annotations

import contextlib
import io
import os
import re

import pytest

from conftest import REPO_ROOT

API_DOC = REPO_ROOT / "docs" / "api.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_the_page_has_an_example_per_workflow():
    code = "\n".join(code_blocks(API_DOC.read_text()))
    for workflow in ("segment_s3net", "segment_polycl", "propagate", "refine", "pretrain", "finetune", "evaluate"):
        assert f"segssl.{workflow}(" in code, workflow
    assert "argparse" not in code and "SegSSLLib.cli" not in code


@pytest.mark.slow
def test_the_examples_run(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEGSSL_SAM2_CHECKPOINT", raising=False)
    monkeypatch.setenv("SEGSSL_HOME", str(tmp_path / "home"))  # nothing is found in (or added to) a real cache
    threads = torch.get_num_threads()
    namespace: dict = {}
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            for number, block in enumerate(code_blocks(API_DOC.read_text()), start=1):
                exec(compile(block, f"docs/api.md block {number}", "exec"), namespace)  # noqa: S102
    finally:
        torch.set_num_threads(threads)
    output = printed.getvalue()
    assert "registration from slice(s) (12,) along axis 2" in output
    assert "SAM 2 visited 25 frames" in output  # slices 12..23 forward, then 12..0 in reverse
    assert "`sam2_checkpoint` no/such/file.pt: no such file" in output
    propagated = namespace["sitk"].GetArrayFromImage(namespace["result"].label_map)
    assert propagated.shape == (24, 48, 48)
    assert os.path.exists(tmp_path / "liver.pt") and os.path.exists(tmp_path / "pretrained.pt")
    assert namespace["scores"]["labels"][str(namespace["liver"])]["dice"] >= 0.0
