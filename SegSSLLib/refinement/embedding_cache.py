"""SAM image embeddings kept per slice, so that refining the same slices again does not encode them again.

segment-anything's ``SamPredictor.set_image`` runs the image encoder — nearly all the time of a box
refinement; the prompt encoder and mask decoder that follow are cheap. ``CachedEmbeddings`` wraps a
predictor (``SamPredictor`` or ``MedSamPredictor``) and keeps, per image it was given, what
``set_image`` leaves on the predictor: ``features`` (``get_image_embedding()``), ``original_size``
and ``input_size``. An image seen before (same pixels, same format) gets those back instead of a new
encoding, so every prediction is the same as with a fresh ``set_image``. The cache is bounded in
bytes; the least recently used embedding goes first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np


class CachedEmbeddings:
    """A SAM predictor whose ``set_image`` reuses the embedding of an image it has seen before."""

    def __init__(self, predictor, max_bytes: int):
        self.predictor = predictor
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict = OrderedDict()  # image digest -> (features, original size, input size)
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def __getattr__(self, name):  # model, transform, device, predict_torch, ...: the predictor's own
        return getattr(self.predictor, name)

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        image = np.ascontiguousarray(image)
        key = hashlib.sha1(image.tobytes() + f"{image.shape}{image.dtype}{image_format}".encode()).hexdigest()
        entry = self._entries.get(key)
        predictor = self.predictor
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            predictor.reset_image()
            predictor.features, predictor.original_size, predictor.input_size = entry
            predictor.is_image_set = True
            return
        self.misses += 1
        predictor.set_image(image, image_format)
        features = predictor.get_image_embedding()
        size = features.numel() * features.element_size()
        if size > self.max_bytes:
            return
        self._entries[key] = (features, predictor.original_size, predictor.input_size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (old, _, _) = self._entries.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()
            self.evictions += 1

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def stats(self) -> dict:
        return {"slices": len(self._entries), "bytes": self.bytes, "hits": self.hits, "misses": self.misses,
                "evictions": self.evictions}
