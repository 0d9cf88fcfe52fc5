"""SegSSL model files: plain dicts of tensors and values, saved atomically, loaded without running code.

Layout::

    {"format": "segssl", "format_version": 1, "kind": "<kind>",
     "config": {...everything needed to rebuild and apply the model...},
     "state_dict": {...}, "provenance": {...}, "extra": {...optional, e.g. optimizer state...}}
"""

from __future__ import annotations

import datetime
import os
import pickle
import platform
import sys
import zipfile
from pathlib import Path

import torch

from SegSSLLib import __version__
from SegSSLLib.atomic import atomic_output
from SegSSLLib.errors import SegSSLError

FORMAT = "segssl"
FORMAT_VERSION = 1


def provenance(**details) -> dict:
    """Who made a model, when and how; merged into every checkpoint."""
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "segssl_version": __version__,
        "torch_version": str(torch.__version__),  # TorchVersion is a class weights_only loading refuses
        "python": platform.python_version(),
        "command": " ".join(sys.argv),
        **details,
    }


def save_checkpoint(
    path: str | os.PathLike,
    kind: str,
    config: dict,
    state_dict: dict,
    provenance_info: dict | None = None,
    extra: dict | None = None,
) -> None:
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "provenance": provenance_info or provenance(),
        "extra": extra or {},
    }
    with atomic_output(path) as temporary:
        torch.save(payload, temporary)


def load_checkpoint(path: str | os.PathLike, kinds: tuple[str, ...] | None = None, purpose: str = "") -> dict:
    """Load a SegSSL checkpoint safely (``weights_only=True``) and check it is of an expected kind.

    ``purpose`` completes error messages, e.g. "`checkpoint` needs" (parameter names in backticks).
    """
    path = Path(path)
    raw = load_tensor_file(path, "checkpoint")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise SegSSLError(f"{path} is {_describe_foreign(raw)}, not a SegSSL model file — {_hint(kinds, purpose)}")
    if raw.get("format_version", 0) > FORMAT_VERSION:
        raise SegSSLError(
            f"{path} was written by a newer SegSSL (format {raw['format_version']}); upgrade segssl to load it"
        )
    if kinds is not None and raw.get("kind") not in kinds:
        raise SegSSLError(f"{path} is a SegSSL {raw.get('kind')!r} model — {_hint(kinds, purpose)}")
    return raw


# What to give instead of a wrong file, by the ``what`` of ``load_tensor_file``.
_EXPECTED = {
    "checkpoint": "give the .pt file written by segssl pretrain or segssl finetune",
    "SAM checkpoint": "give SAM's sam_vit_*.pth or medsam_vit_b.pth (see segssl weights list)",
    "SAM 2 checkpoint": "give sam2.1_hiera_*.pt or MedSAM2_latest.pt (see segssl weights list)",
}


def load_tensor_file(path: Path, what: str = "checkpoint"):
    """``torch.load`` with ``weights_only=True`` and one-line errors for every way a file can be wrong."""
    expected = _EXPECTED.get(what, _EXPECTED["checkpoint"])
    if not path.exists():
        raise SegSSLError(f"{what} not found: {path} — check the path")
    if path.is_dir():
        raise SegSSLError(f"{what} {path} is a folder; give the model file")
    # torch.load reads any other file as a pickle and fails with misleading errors (KeyError,
    # "weights_only"), so the container is recognised first.
    with open(path, "rb") as stream:
        head = stream.read(64)
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise SegSSLError(f"{what} {path} is an incomplete or damaged archive — download or copy it again")
    if not zipfile.is_zipfile(path) and not _is_legacy_torch_file(head):
        raise SegSSLError(f"{what} {path} is not a PyTorch checkpoint (it looks like {_describe_start(head)}) — {expected}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise SegSSLError(
                f"{what} {path} contains Python objects that would run code when loaded; "
                "SegSSL only loads plain tensors and values — use a file made by SegSSL or the official weights"
            ) from None
        raise SegSSLError(f"{what} {path} is not a PyTorch file (corrupt or wrong file) — {expected}") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch's unpickler fails with many exception types
        first_line = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise SegSSLError(
            f"{what} {path} is not a PyTorch file or is damaged ({first_line}) — {expected}"
        ) from None


def _is_legacy_torch_file(head: bytes) -> bool:
    """Files from ``torch.save(..., _use_new_zipfile_serialization=False)`` open with a pickled magic number."""
    return any(head.startswith(pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=p)) for p in (2, 3, 4, 5))


def _describe_start(head: bytes) -> str:
    if not head:
        return "an empty file"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file (e.g. .nii.gz)"
    if head[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c"):
        return "a NIfTI image"
    if head.startswith(b"\x80"):
        return "a plain Python pickle"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "a binary file of another kind"
    return "a text file (JSON, YAML or similar)" if head.lstrip()[:1] in (b"{", b"[") else "a text file"


def _describe_foreign(raw) -> str:
    if not isinstance(raw, dict):
        return f"a {type(raw).__name__}"
    keys = list(raw.get("model", raw).keys()) if isinstance(raw.get("model", raw), dict) else []
    if any(str(k).startswith("image_encoder.trunk") for k in keys):
        return "a SAM 2 checkpoint"
    if any(str(k).startswith("image_encoder.") for k in keys):
        return "a SAM (segment-anything) checkpoint"
    return "a PyTorch file of another program"


def _hint(kinds, purpose) -> str:
    wanted = " or ".join(repr(k) for k in kinds) if kinds else "a SegSSL"
    return f"{purpose or 'this needs'} a {wanted} model file"
