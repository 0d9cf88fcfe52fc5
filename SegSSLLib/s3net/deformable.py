"""Modulated deformable convolution whose offsets and modulation are predicted from the features.

The public S3-Net code keeps the offsets as free per-pixel parameters, which ties a model to one
input size and batch size. Here a small 3×3 convolution predicts, at every pixel, 2 offsets and one
modulation weight per kernel tap, so the layer works for any size and batch (DCNv2 style).

Sampling positions are kept inside the (edge-replicated) input: ``deform_conv2d`` reads zeros
outside it, which would make pixels near the image border look different from the same tissue
inside and give the border a cluster of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d


class PredictedOffsetDeformConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.kernel_size = kernel_size
        self.taps = kernel_size * kernel_size
        self.pad = kernel_size // 2
        self.offset_and_modulation = nn.Conv2d(
            in_channels, 3 * self.taps, kernel_size, padding=self.pad, padding_mode="replicate"
        )
        # Start as an ordinary convolution: zero offsets and modulation 2·sigmoid(0) = 1.
        nn.init.zeros_(self.offset_and_modulation.weight)
        nn.init.zeros_(self.offset_and_modulation.bias)
        # The input is padded by replication before sampling, hence no padding here.
        self.conv = DeformConv2d(in_channels, out_channels, kernel_size, padding=0)

    def offsets_and_modulation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 2·k², H, W) sampling offsets in pixels ((dy, dx) per tap) and (N, k², H, W) modulation in (0, 2)."""
        predicted = self.offset_and_modulation(x)
        offsets, modulation = predicted.split([2 * self.taps, self.taps], dim=1)
        return self._keep_inside(offsets), 2.0 * torch.sigmoid(modulation)

    def _keep_inside(self, offsets: torch.Tensor) -> torch.Tensor:
        """Clamp offsets so every sample lies in the padded input (tap (ky, kx) at (y, x) reads y+ky+dy, x+kx+dx)."""
        height, width = offsets.shape[-2:]
        tap_rows = torch.arange(self.kernel_size, device=offsets.device).repeat_interleave(self.kernel_size)
        tap_cols = torch.arange(self.kernel_size, device=offsets.device).repeat(self.kernel_size)
        rows = torch.arange(height, device=offsets.device).view(1, 1, height, 1) + tap_rows.view(1, -1, 1, 1)
        cols = torch.arange(width, device=offsets.device).view(1, 1, 1, width) + tap_cols.view(1, -1, 1, 1)
        last_row, last_col = height + 2 * self.pad - 1, width + 2 * self.pad - 1
        dy = torch.clamp(offsets[:, 0::2], min=-rows, max=last_row - rows)
        dx = torch.clamp(offsets[:, 1::2], min=-cols, max=last_col - cols)
        return torch.stack([dy, dx], dim=2).flatten(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offsets, modulation = self.offsets_and_modulation(x)
        padded = F.pad(x, (self.pad,) * 4, mode="replicate")
        return self.conv(padded, offsets, mask=modulation)
