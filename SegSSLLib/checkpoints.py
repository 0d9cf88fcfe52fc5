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

    ``purpose`` completes error messages, e.g. "--method polycl needs".
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


def load_tensor_file(path: Path, what: str = "checkpoint"):
    """``torch.load`` with ``weights_only=True`` and one-line errors for every way a file can be wrong."""
    if not path.exists():
        raise SegSSLError(f"{what} not found: {path} — check the path")
    if path.is_dir():
        raise SegSSLError(f"{what} {path} is a folder; give the model file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise SegSSLError(
                f"{what} {path} contains Python objects that would run code when loaded; "
                "SegSSL only loads plain tensors and values — use a file made by SegSSL or the official weights"
            ) from None
        raise SegSSLError(f"{what} {path} is not a PyTorch file (corrupt or wrong file)") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SegSSLError(f"{what} {path} cannot be read as a PyTorch file ({first_line}) — is it complete?") from None


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
