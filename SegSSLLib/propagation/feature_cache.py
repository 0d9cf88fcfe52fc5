"""SAM 2 image features per slice, kept in a least-recently-used cache with a bound in bytes.

sam2's video predictor keeps the image features of *one* frame (``inference_state["cached_features"]``)
and computes them again for any other frame. Encoding is most of the time of a SAM 2 step on a CPU
(hiera-t at 512 px: about 2.9 s of a 3.6 s step), so an interactive session keeps every slice's
features it has computed, up to ``max_bytes``, and a correction never encodes a slice twice while the
bound allows.

``use_feature_cache(predictor, cache)`` routes sam2's feature look-up through the cache for the
duration of a ``with`` block: on a hit, the stored features are put where sam2 looks for them; on a
miss, sam2 computes them as usual and the cache keeps them. The stored tensors are the ones sam2
computed (optionally moved to another device, which copies values exactly), so masks from cached
features equal masks from recomputed ones (tested).

What is stored per slice: the feature pyramid (``backbone_fpn``; for hiera-t at 512 px about 4 MiB
in float32, 16 MiB at 1024 px). The positional encodings depend only on the feature shapes, not on
the slice, so one copy is kept for all slices; the normalised frame itself is rebuilt from the
session's 8-bit frames on a hit (a cheap division).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from types import MethodType

import torch


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class FeatureCache:
    """Per-frame SAM 2 image features, least recently used first out, at most ``max_bytes`` in all.

    ``storage_device``: where the features are kept (``"cpu"`` keeps GPU memory free on long volumes;
    they are copied back to the model's device on use). ``None`` keeps them where sam2 made them.
    """

    def __init__(self, max_bytes: int = 2 * 2**30, storage_device: str | torch.device | None = None):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.storage_device = torch.device(storage_device) if storage_device is not None else None
        self._entries: OrderedDict[int, list[torch.Tensor]] = OrderedDict()
        self._sizes: dict[int, int] = {}
        self._pos_enc: list[torch.Tensor] | None = None
        self._lock = threading.Lock()
        self.bytes = 0
        self.peak_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, frame: int) -> bool:
        return frame in self._entries

    def frames(self) -> list[int]:
        """Cached frames, least recently used first."""
        return list(self._entries)

    def get(self, frame: int, device: torch.device) -> dict | None:
        """The ``backbone_out`` of ``frame`` on ``device`` (as ``forward_image`` returned it), or None."""
        with self._lock:
            fpn = self._entries.get(frame)
            if fpn is None:
                self.misses += 1
                return None
            self._entries.move_to_end(frame)
            self.hits += 1
            pos_enc = self._pos_enc
        return {
            "backbone_fpn": [t.to(device) for t in fpn],
            "vision_pos_enc": [t.to(device) for t in pos_enc],
        }

    def put(self, frame: int, backbone_out: dict) -> None:
        fpn = [self._stored(t) for t in backbone_out["backbone_fpn"]]
        size = _nbytes(fpn)
        with self._lock:
            if self._pos_enc is None:
                self._pos_enc = [self._stored(t) for t in backbone_out["vision_pos_enc"]]
            if frame in self._entries:
                self.bytes -= self._sizes.pop(frame)
                del self._entries[frame]
            if size > self.max_bytes:
                return  # larger than the whole bound: not kept
            self._entries[frame] = fpn
            self._sizes[frame] = size
            self.bytes += size
            while self.bytes > self.max_bytes:
                oldest, _ = self._entries.popitem(last=False)
                self.bytes -= self._sizes.pop(oldest)
                self.evictions += 1
            self.peak_bytes = max(self.peak_bytes, self.bytes)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self._pos_enc = None
            self.bytes = 0

    def _stored(self, tensor: torch.Tensor) -> torch.Tensor:
        # A detached copy on the storage device: sam2's later in-place work can never reach the cache.
        device = self.storage_device or tensor.device
        return tensor.detach().to(device, copy=True)

    def stats(self) -> dict:
        return {"frames": len(self), "bytes": self.bytes, "peak_bytes": self.peak_bytes, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions}


@contextlib.contextmanager
def use_feature_cache(predictor, cache: FeatureCache | None):
    """Within the block, ``predictor`` takes image features from ``cache`` and adds the ones it computes.

    sam2's ``_get_image_feature(state, frame_idx, batch_size)`` looks in ``state["cached_features"]``
    (one frame) and otherwise encodes the frame. The wrapper fills that one-frame slot from our cache
    before the call, and stores what sam2 computed after it. Installed on this predictor object only,
    and removed when the block ends.
    """
    if cache is None:
        yield
        return
    original = predictor._get_image_feature  # the class's method, bound to this predictor

    def get_image_feature(self, inference_state, frame_idx, batch_size):
        device = inference_state["device"]
        stored = cache.get(frame_idx, device)
        if stored is not None:
            # The normalised frame exactly as sam2 would build it (it is returned, not used for the masks).
            image = inference_state["images"][frame_idx].to(device).float().unsqueeze(0)
            inference_state["cached_features"] = {frame_idx: (image, stored)}
            return original(inference_state, frame_idx, batch_size)
        features = original(inference_state, frame_idx, batch_size)
        _, backbone_out = inference_state["cached_features"][frame_idx]
        cache.put(frame_idx, backbone_out)
        return features

    predictor._get_image_feature = MethodType(get_image_feature, predictor)
    try:
        yield
    finally:
        del predictor._get_image_feature  # back to the class's own method
