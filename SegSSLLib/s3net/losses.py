"""The S3-Net objective's terms, all differentiable, and the public code's versions for the ablation.

- clustering: cross-entropy of the responses against their own argmax (the pseudo-labels);
- affine consistency: the responses to a transformed image must match the transformed responses'
  argmax, inside the region where the transformed image is valid;
- spatial continuity: L1 of the differences between vertically and horizontally neighbouring
  responses, which pulls neighbouring pixels into the same cluster.

``published_affine_term`` and ``published_spatial_term`` reproduce how the public S3-Net code
computes the last two terms, only so the ablation benchmark can measure what they fail to do: the
first rotates the responses and their own pseudo-labels alike and never transforms the input (it
is a copy of the clustering term), the second is computed from integer labels in NumPy (no gradient).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def clustering_loss(responses: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of (N, K, H, W) responses against their argmax."""
    return F.cross_entropy(responses, responses.detach().argmax(dim=1))


def affine_consistency_loss(
    responses_of_transformed: torch.Tensor, transformed_responses: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of f(A(x)) against argmax A(f(x)), averaged over the valid pixels.

    ``responses_of_transformed``: f(A(x)), (N, K, H, W), carries the gradient;
    ``transformed_responses``: A(f(x)), the target (only its argmax is used); ``valid``: (N, H, W) bool.
    """
    target = transformed_responses.detach().argmax(dim=1)
    per_pixel = F.cross_entropy(responses_of_transformed, target, reduction="none")
    weights = valid.to(per_pixel.dtype)
    return (per_pixel * weights).sum() / weights.sum().clamp_min(1.0)


def spatial_continuity_loss(responses: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of responses between vertical and between horizontal neighbours."""
    vertical = (responses[:, :, 1:, :] - responses[:, :, :-1, :]).abs().mean()
    horizontal = (responses[:, :, :, 1:] - responses[:, :, :, :-1]).abs().mean()
    return vertical + horizontal


def published_affine_term(responses: torch.Tensor) -> torch.Tensor:
    """As the public code: rotate the responses by 90° and compare them with their own rotated argmax.

    The input is never transformed, so nothing asks f(A(x)) = A(f(x)); rotation only permutes pixels,
    so this equals ``clustering_loss(responses)``.
    """
    rotated = torch.rot90(responses, k=1, dims=(2, 3))
    return F.cross_entropy(rotated, rotated.detach().argmax(dim=1))


def published_spatial_term(responses: torch.Tensor) -> torch.Tensor:
    """As the public code: differences of the argmax labels, in NumPy — a constant without gradient."""
    labels = responses.detach().argmax(dim=1).cpu().numpy().astype(np.float32)
    value = np.abs(np.diff(labels, axis=1)).mean() + np.abs(np.diff(labels, axis=2)).mean()
    return torch.tensor(float(value), device=responses.device)
