"""Inception Large Kernel Attention (I-LKA) and the attention block that wraps it.

I-LKA looks at a large, multi-scale neighbourhood cheaply: a depthwise 5×5 convolution, then three
parallel depthwise convolutions with growing dilation (3×3 d1, 5×5 d2, 7×7 d3 — receptive fields of
3, 9 and 19 pixels), mixed back by a 1×1 convolution into an attention map that multiplies the input.
"""

from __future__ import annotations

import torch
from torch import nn


def _depthwise(channels: int, kernel_size: int, dilation: int = 1) -> nn.Conv2d:
    # "Same" padding for an odd kernel with dilation; replicated edges, so that a region touching the
    # image border (air, skin) looks the same there as inside and keeps one cluster.
    return nn.Conv2d(
        channels,
        channels,
        kernel_size,
        padding=dilation * (kernel_size // 2),
        dilation=dilation,
        groups=channels,
        padding_mode="replicate",
    )


class InceptionLargeKernelAttention(nn.Module):
    """x ↦ x ⊙ mix(concat(branch_d(local(x)) for d in 1, 2, 3)); same shape in and out."""

    def __init__(self, channels: int):
        super().__init__()
        self.local = _depthwise(channels, 5)
        self.branches = nn.ModuleList(
            [_depthwise(channels, 3, dilation=1), _depthwise(channels, 5, dilation=2), _depthwise(channels, 7, dilation=3)]
        )
        self.mix = nn.Conv2d(3 * channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local(x)
        context = torch.cat([branch(local) for branch in self.branches], dim=1)
        return x * self.mix(context)


class AttentionBlock(nn.Module):
    """1×1 conv → GELU → I-LKA → 1×1 conv, added to the input, then BatchNorm."""

    def __init__(self, channels: int):
        super().__init__()
        self.project_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.activation = nn.GELU()
        self.attention = InceptionLargeKernelAttention(channels)
        self.project_out = nn.Conv2d(channels, channels, kernel_size=1)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.project_out(self.attention(self.activation(self.project_in(x))))
        return self.norm(x + update)
