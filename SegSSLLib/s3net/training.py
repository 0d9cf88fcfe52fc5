"""Training an S3-Net on the image(s) it will segment, and applying it to every slice.

No labels are involved: each step takes a minibatch of random crops of the slices, computes the
responses f(x) (no gradient) and the responses f(A(x)) to a randomly transformed copy, and minimises

    w_c · clustering(f(A(x))) + w_a · affine_consistency(f(A(x)), A(f(x))) + w_s · spatial(f(A(x)))

The clustering and spatial terms are taken on the transformed view, so each step needs one backward
pass instead of two (the deformable convolution's backward pass dominates on CPU). With the affine
term off (w_a = 0) or the published variant, all terms are taken on f(x) and no transform is drawn.
Training stops when a minibatch holds no more than ``min_clusters`` clusters, or after ``max_steps``.

One model is trained over the whole slice stack, so a cluster id means the same tissue on every slice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from SegSSLLib.progress import NO_PROGRESS, Progress
from SegSSLLib.s3net.affine import random_sampling_matrices, valid_region, warp
from SegSSLLib.s3net.config import S3NetConfig
from SegSSLLib.s3net.losses import (
    affine_consistency_loss,
    clustering_loss,
    published_affine_term,
    published_spatial_term,
    spatial_continuity_loss,
)
from SegSSLLib.s3net.network import S3Net

log = logging.getLogger(__name__)

@dataclass
class TrainingResult:
    model: S3Net
    history: list[dict]  # one entry per step: loss terms and the number of clusters
    stopped_early: bool  # True when the cluster count reached min_clusters before max_steps


def train_s3net(
    slices: torch.Tensor,
    config: S3NetConfig = S3NetConfig(),
    device: torch.device | str = "cpu",
    progress: Progress = NO_PROGRESS,
    seed: int = 0,
    writer=None,
) -> TrainingResult:
    """Train a fresh S3-Net on (N, C, H, W) slices with values in [0, 1].

    ``writer``: an optional TensorBoard ``SummaryWriter`` for the loss curves.
    """
    if slices.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) slices, got shape {tuple(slices.shape)}")
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the initial weights
    model = S3Net(slices.shape[1], config.features, config.clusters, config.attention_blocks)
    model = _to_device(model, device)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum)
    sampler = _CropSampler(slices, config.crop_size, generator)

    history: list[dict] = []
    stopped_early = False
    with progress.stage("s3net training", total=config.max_steps):
        for step in range(config.max_steps):
            batch = _to_device(sampler.sample(config.batch_size), device)
            loss, terms, clusters = _objective(model, batch, config, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            record = {"step": step, "loss": loss.item(), **terms, "clusters": clusters}
            history.append(record)
            if writer is not None:
                for name, value in record.items():
                    if name != "step":
                        writer.add_scalar(f"s3net/{name}", value, step)
            progress.advance(loss=record["loss"], clusters=clusters)
            if step + 1 >= config.min_steps and clusters <= config.min_clusters:
                stopped_early = True
                log.debug("S3-Net: %d clusters after %d steps; stopping", clusters, step + 1)
                progress.advance(config.max_steps - step - 1)  # the steps not needed count as done
                break
    # Re-estimate the BatchNorm statistics with the final weights, on crops drawn as in training,
    # so that inference (which uses fixed statistics) labels pixels as the last steps did.
    _recalibrate_batch_norm(model, sampler, config.batch_size, device)
    model.eval()
    return TrainingResult(model, history, stopped_early)


def _objective(model, images, config: S3NetConfig, generator) -> tuple[torch.Tensor, dict, int]:
    """The weighted loss of one minibatch, its terms, and the number of clusters in it."""
    if config.loss_variant == "published" or config.affine_weight == 0:
        responses = model(images)
        clusters = count_clusters(responses.detach(), config.min_cluster_share)
        if config.loss_variant == "published":
            affine, spatial = published_affine_term(responses), published_spatial_term(responses)
        else:
            affine, spatial = responses.new_zeros(()), spatial_continuity_loss(responses)
        clustering = clustering_loss(responses)
    else:
        height, width = images.shape[-2:]
        sampling = random_sampling_matrices(images.shape[0], height, width, config.affine, generator)
        with torch.no_grad():
            responses = model(images)
            target = warp(responses, sampling)
        clusters = count_clusters(responses, config.min_cluster_share)
        # Reflect rather than pad with zeros: the transformed view stays a plausible image (no black
        # corners to cluster or to skew BatchNorm); only the affine term needs the valid region.
        transformed_responses = model(warp(images, sampling, padding="reflection"))
        valid = valid_region(sampling, height, width).to(images.device)
        affine = affine_consistency_loss(transformed_responses, target, valid)
        clustering = clustering_loss(transformed_responses)
        spatial = spatial_continuity_loss(transformed_responses)
    loss = config.clustering_weight * clustering + config.affine_weight * affine + config.spatial_weight * spatial
    terms = {name: float(value.detach()) for name, value in (("clustering", clustering), ("affine", affine), ("spatial", spatial))}
    return loss, terms, clusters


def count_clusters(responses: torch.Tensor, min_share: float = 0.0) -> int:
    """Clusters (argmax ids) holding at least ``min_share`` of the minibatch's pixels."""
    counts = torch.bincount(responses.argmax(dim=1).flatten(), minlength=responses.shape[1])
    return int((counts >= max(1, min_share * counts.sum().item())).sum())


@torch.no_grad()
def _recalibrate_batch_norm(model, sampler, batch_size: int, device, batches: int = 6) -> None:
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved_momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the recalibration batches
    model.train()
    for _ in range(batches):
        model(_to_device(sampler.sample(batch_size), device))
    for norm, momentum in zip(norms, saved_momenta):
        norm.momentum = momentum


@torch.no_grad()
def predict_clusters(
    model: S3Net, slices: torch.Tensor, batch_size: int = 8, device="cpu", progress: Progress = NO_PROGRESS
) -> torch.Tensor:
    """(N, C, H, W) slices → (N, H, W) cluster ids (int64, on the CPU), whole slices at a time."""
    model.eval()
    device = torch.device(device)
    outputs = []
    starts = range(0, slices.shape[0], batch_size)
    with progress.stage("s3net clustering", total=len(starts)):
        for start in starts:
            batch = _to_device(slices[start : start + batch_size], device)
            outputs.append(model(batch).argmax(dim=1).cpu())
            progress.advance()
    return torch.cat(outputs)


def _to_device(item, device: torch.device):
    # Channels-last makes the depthwise convolutions' backward pass about ten times faster on CPU.
    if device.type == "cpu":
        return item.to(device, memory_format=torch.channels_last)
    return item.to(device)


class _CropSampler:
    """Random square crops, one per slice, from distinct slices, centred on non-zero pixels when possible."""

    def __init__(self, slices: torch.Tensor, crop_size: int, generator: torch.Generator):
        self.slices = slices
        self.generator = generator
        height, width = slices.shape[-2:]
        self.crop = (min(crop_size, height), min(crop_size, width))
        # Candidate crop centres: pixels with any signal (skip empty air and padding when there is tissue).
        self.signal = slices.amax(dim=1) > 0.02

    def sample(self, count: int) -> torch.Tensor:
        n, _, height, width = self.slices.shape
        order = torch.randperm(n, generator=self.generator)
        picks = [order[i % n].item() for i in range(count)]
        crops = []
        for index in picks:
            top, left = self._corner(index, height, width)
            crops.append(self.slices[index, :, top : top + self.crop[0], left : left + self.crop[1]])
        return torch.stack(crops)

    def _corner(self, index: int, height: int, width: int) -> tuple[int, int]:
        candidates = self.signal[index].nonzero()
        if len(candidates):
            row, col = candidates[torch.randint(len(candidates), (1,), generator=self.generator).item()].tolist()
        else:
            row = torch.randint(height, (1,), generator=self.generator).item()
            col = torch.randint(width, (1,), generator=self.generator).item()
        top = min(max(row - self.crop[0] // 2, 0), height - self.crop[0])
        left = min(max(col - self.crop[1] // 2, 0), width - self.crop[1])
        return top, left
