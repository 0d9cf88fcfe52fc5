"""Overlay pictures: a grey slice with reference and predicted outlines, for reports and reviews."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from SegSSLLib.atomic import atomic_output, write_failure_message
from SegSSLLib.errors import SegSSLError

REFERENCE_COLOUR = (60, 220, 60)
PREDICTION_COLOUR = (240, 60, 200)


def outline(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, bool)
    return mask & ~ndimage.binary_erosion(mask)


def overlay(grey: np.ndarray, masks_and_colours, scale: int = 2) -> Image.Image:
    """``grey``: a 2D uint8 slice; ``masks_and_colours``: [(boolean mask, (r, g, b)), ...] drawn as outlines."""
    rgb = np.repeat(np.asarray(grey, np.uint8)[..., None], 3, axis=-1)
    if scale > 1:
        rgb = rgb.repeat(scale, 0).repeat(scale, 1)
    for mask, colour in masks_and_colours:
        mask = np.asarray(mask, bool)
        if scale > 1:
            mask = mask.repeat(scale, 0).repeat(scale, 1)
        rgb[outline(mask)] = colour
    return Image.fromarray(rgb)


def busiest_slice(mask: np.ndarray, axis: int = 0) -> int:
    """Index along ``axis`` of the slice with the most foreground (the middle slice if empty)."""
    counts = np.asarray(mask, bool).sum(axis=tuple(a for a in range(mask.ndim) if a != axis))
    return int(np.argmax(counts)) if counts.any() else mask.shape[axis] // 2


def save_png(image: Image.Image, path) -> None:
    def verify(temporary) -> None:
        try:
            with Image.open(temporary) as back:
                complete = back.size == image.size and back.convert(image.mode).tobytes() == image.tobytes()
        except (OSError, SyntaxError, ValueError):
            complete = False
        if not complete:
            raise SegSSLError(write_failure_message(path, what="picture"))

    with atomic_output(path, verify, "picture") as temporary:
        image.save(temporary, format="PNG")
