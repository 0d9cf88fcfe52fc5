"""Choosing where the tensors live: ``--device auto|cpu|cuda|cuda:N|mps``."""

from __future__ import annotations

import os

import torch

from SegSSLLib.errors import SegSSLError


def select_device(name: str = "auto") -> torch.device:
    """Resolve a device name; under torchrun each process takes its LOCAL_RANK's GPU."""
    name = (name or "auto").lower()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise SegSSLError(
                f"`device` {name} was asked for but PyTorch ({torch.__version__}, {build}) sees no CUDA GPU — "
                "use `device` cpu (or auto), or install a CUDA build of torch that matches your driver"
            )
        index = int(name.split(":", 1)[1]) if ":" in name else local_rank % torch.cuda.device_count()
        if index >= torch.cuda.device_count():
            raise SegSSLError(f"`device` {name}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
        return torch.device("cuda", index)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise SegSSLError("`device` mps was asked for but Apple MPS is not available — use `device` cpu")
        return torch.device("mps")
    raise SegSSLError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
