"""The PolyCL network: a 2D U-Net on single-channel slices with a projection head on its bottleneck.

Every block is (3×3 conv → InstanceNorm → LeakyReLU 0.2) twice, with dropout between the two; the
encoder halves the resolution between blocks (max pooling), the decoder upsamples bilinearly and
concatenates the encoder's features at the same scale. With the reference widths 16-32-64-128-256
the segmentation network has about 2 M parameters.

Pretraining uses ``encoder`` + ``head`` (``ContrastiveNet``); fine-tuning uses ``encoder`` +
``decoder`` (``SegmentationNet``). Both are rebuilt from the plain ``ModelConfig`` dict stored in
checkpoints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from SegSSLLib.errors import SegSSLError

ARCHITECTURE = "polycl-unet2d"
REFERENCE_WIDTHS = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ModelConfig:
    widths: tuple[int, ...] = REFERENCE_WIDTHS
    image_size: int = 256
    dropout: float = 0.1
    projection_dim: int = 256
    num_classes: int = 2  # background + the fine-tuned structure
    architecture: str = field(default=ARCHITECTURE)

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.architecture != ARCHITECTURE:
            raise SegSSLError(f"unknown PolyCL architecture {self.architecture!r}; this SegSSL builds {ARCHITECTURE!r}")
        if len(self.widths) < 2 or any(w < 1 for w in self.widths):
            raise SegSSLError(f"`widths` needs at least two positive numbers, got {','.join(map(str, self.widths))}")
        factor = 2 ** (len(self.widths) - 1)
        if self.image_size < factor or self.image_size % factor:
            raise SegSSLError(
                f"`image_size` {self.image_size} must be a multiple of {factor} "
                f"(the network halves the slice {len(self.widths) - 1} times) — e.g. {max(factor, 256 // factor * factor)}"
            )
        if not 0 <= self.dropout < 1:
            raise SegSSLError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        values = asdict(self)
        values["widths"] = list(self.widths)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        known = {k: values[k] for k in cls.__dataclass_fields__ if k in values}
        return cls(**known)


class ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.InstanceNorm2d(out_channels, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.InstanceNorm2d(out_channels, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
        )


class Encoder(nn.Module):
    """Returns the features of every scale, finest first; the last one is the bottleneck."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        channels = (1, *config.widths)
        self.blocks = nn.ModuleList(ConvBlock(a, b, config.dropout) for a, b in zip(channels[:-1], channels[1:]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, block in enumerate(self.blocks):
            if index:
                x = F.max_pool2d(x, 2)
            x = block(x)
            features.append(x)
        return features


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        widths = config.widths
        # Going up, each block sees the upsampled coarser features concatenated with the skip.
        self.blocks = nn.ModuleList(
            ConvBlock(widths[i + 1] + widths[i], widths[i], config.dropout) for i in reversed(range(len(widths) - 1))
        )
        self.classifier = nn.Conv2d(widths[0], config.num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.classifier(x)


class ProjectionHead(nn.Module):
    """Global average pool of the bottleneck → MLP → ``projection_dim`` (normalised in the loss)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        width = config.widths[-1]
        self.mlp = nn.Sequential(
            nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, config.projection_dim)
        )

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        return self.mlp(bottleneck.mean(dim=(-2, -1)))


class ContrastiveNet(nn.Module):
    """Encoder + projection head: slices (B, 1, S, S) → embeddings (B, projection_dim)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.head = ProjectionHead(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[-1])


class SegmentationNet(nn.Module):
    """Encoder + decoder: slices (B, 1, S, S) → logits (B, num_classes, S, S)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def load_encoder(self, state_dict: dict) -> None:
        """Copy the ``encoder.*`` weights of a pretraining checkpoint; the decoder stays as initialised."""
        encoder_weights = {k.removeprefix("encoder."): v for k, v in state_dict.items() if k.startswith("encoder.")}
        self.encoder.load_state_dict(encoder_weights, strict=True)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
