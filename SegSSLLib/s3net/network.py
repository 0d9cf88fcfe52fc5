"""The S3-Net: a shallow full-resolution network whose K response channels are pixel clusters.

stem (3×3 conv + BN) → two attention blocks (I-LKA) → modulated deformable 3×3 conv with predicted
offsets → BN → 1×1 conv → BN → K responses. argmax over the responses is the cluster id of a pixel.
No downsampling anywhere, so any height, width and batch size work and boundaries stay sharp.
Spatial convolutions pad by replicating the edge, so the image border leaves no trace in the clusters.
"""

from __future__ import annotations

import torch
from torch import nn

from SegSSLLib.s3net.attention import AttentionBlock
from SegSSLLib.s3net.deformable import PredictedOffsetDeformConv2d


class S3Net(nn.Module):
    def __init__(self, in_channels: int = 1, features: int = 64, clusters: int = 64, attention_blocks: int = 2):
        super().__init__()
        self.in_channels = in_channels
        self.clusters = clusters
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, features, kernel_size=3, padding=1, padding_mode="replicate"), nn.BatchNorm2d(features)
        )
        self.blocks = nn.Sequential(*[AttentionBlock(features) for _ in range(attention_blocks)])
        self.deform = PredictedOffsetDeformConv2d(features, features)
        self.head = nn.Sequential(
            nn.BatchNorm2d(features), nn.Conv2d(features, clusters, kernel_size=1), nn.BatchNorm2d(clusters)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) in [0, 1] → (N, K, H, W) responses."""
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"expected (N, {self.in_channels}, H, W) images, got {tuple(images.shape)}")
        return self.head(self.deform(self.blocks(self.stem(images))))
