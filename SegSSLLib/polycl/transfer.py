"""How fine-tuning treats pretrained layers: their own learning rates, and unfreezing them gradually.

A pretrained encoder is only worth keeping where it helps; a fresh decoder's first, large and
random gradients should not wipe it out, and a poor encoder should not get a large step size
either. Three knobs (``FinetuneOptions``):

- ``encoder_lr_factor``: the encoder learns at ``learning_rate × factor`` (the decoder at the full rate);
- ``layer_decay``: within the encoder, each block closer to the input gets another factor
  ``layer_decay`` (the finest block learns slowest: its filters are the most generic);
- ``freeze_epochs`` then ``unfreeze_epochs``: the encoder first gets no gradients at all, then its
  blocks are unfrozen one after another, deepest (bottleneck) first, spread over ``unfreeze_epochs``.

With the defaults (1, 1, 0, 0) every parameter trains at the same rate from the start.
"""

from __future__ import annotations

import math

from torch import nn


def parameter_groups(model: nn.Module, learning_rate: float, encoder_lr_factor: float = 1.0, layer_decay: float = 1.0) -> list[dict]:
    """Optimizer parameter groups: one per encoder block (finest first), then the rest of the model.

    Encoder block i of n gets ``learning_rate × encoder_lr_factor × layer_decay^(n-1-i)``; every
    other parameter (decoder, classifier) ``learning_rate``. Each group carries a ``name``.
    """
    blocks = list(model.encoder.blocks)
    groups, seen = [], set()
    for index, block in enumerate(blocks):
        params = list(block.parameters())
        seen.update(id(p) for p in params)
        factor = encoder_lr_factor * layer_decay ** (len(blocks) - 1 - index)
        groups.append({"params": params, "lr": learning_rate * factor, "name": f"encoder.blocks.{index}"})
    rest = [p for p in model.parameters() if id(p) not in seen]
    groups.append({"params": rest, "lr": learning_rate, "name": "decoder"})
    return groups


def trainable_encoder_blocks(epoch: int, blocks: int, freeze_epochs: int, unfreeze_epochs: int) -> int:
    """How many encoder blocks (counted from the deepest) train in ``epoch`` (0-based)."""
    if epoch < freeze_epochs:
        return 0
    if unfreeze_epochs <= 0:
        return blocks
    # Block k (0 = deepest) joins at epoch freeze_epochs + floor(k × unfreeze_epochs / blocks).
    elapsed = epoch - freeze_epochs
    return min(blocks, math.ceil((elapsed + 1) * blocks / unfreeze_epochs))


def set_trainable_blocks(model: nn.Module, count: int) -> None:
    """Let exactly the ``count`` deepest encoder blocks get gradients (the others are frozen)."""
    blocks = list(model.encoder.blocks)
    for index, block in enumerate(blocks):
        block.requires_grad_(index >= len(blocks) - count)
