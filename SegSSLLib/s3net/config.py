"""S3-Net settings, kept free of torch imports so the command line starts fast."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class AffineRange:
    """How far a random transform may go; each parameter is drawn uniformly in ±range."""

    rotation_degrees: float = 30.0
    scale: float = 0.15  # scale factor in [1 - scale, 1 + scale]
    shear_degrees: float = 10.0
    translation: float = 0.1  # fraction of the image width/height
    flip_probability: float = 0.5

    def __post_init__(self):
        if not 0 <= self.scale < 1:
            raise ValueError(f"affine scale range must be in [0, 1), got {self.scale}")
        if not 0 <= self.flip_probability <= 1:
            raise ValueError(f"flip probability must be in [0, 1], got {self.flip_probability}")


LOSS_VARIANTS = ("paper", "published")


@dataclass(frozen=True)
class S3NetConfig:
    """Everything that decides a training run; the defaults are tuned for CPUs (see docs/s3net.md)."""

    features: int = 32  # the paper uses 64: same Dice within the seed spread, twice the time (RESULTS.md)
    clusters: int = 64  # K response channels = the most clusters there can be
    attention_blocks: int = 2
    learning_rate: float = 0.1
    momentum: float = 0.9
    clustering_weight: float = 1.0
    affine_weight: float = 1.0
    spatial_weight: float = 5.0
    loss_variant: str = "paper"  # "published": the affine and spatial terms as the public code has them
    affine: AffineRange = field(default_factory=AffineRange)
    max_steps: int = 40
    min_clusters: int = 8  # stop once a minibatch has no more clusters than this
    min_steps: int = 0  # never stop before this many steps
    min_cluster_share: float = 0.0  # clusters with a smaller share of a minibatch's pixels are not counted
    batch_size: int = 4  # crops per step, from different slices
    crop_size: int = 64  # square training crops (whole slices when they are smaller)
    inference_batch_size: int = 8

    def __post_init__(self):
        if self.loss_variant not in LOSS_VARIANTS:
            raise ValueError(f"loss variant must be one of {LOSS_VARIANTS}, got {self.loss_variant!r}")
        for name in ("features", "clusters", "max_steps", "batch_size", "crop_size", "inference_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.min_clusters < 1 or self.min_clusters > self.clusters:
            raise ValueError(f"min_clusters must be between 1 and clusters ({self.clusters}), got {self.min_clusters}")
        if self.min_steps < 0:
            raise ValueError(f"min_steps must be 0 or more, got {self.min_steps}")
        if not 0 <= self.min_cluster_share < 1:
            raise ValueError(f"min_cluster_share must be in [0, 1), got {self.min_cluster_share}")
        if min(self.clustering_weight, self.affine_weight, self.spatial_weight) < 0:
            raise ValueError("loss weights must not be negative")

    def to_dict(self) -> dict:
        return asdict(self)
