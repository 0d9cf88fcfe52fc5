"""InfoNCE over (anchor, positive, negative) triplets with every other batch item as an extra negative.

For anchor i with cosine similarities s(·,·) and temperature τ::

    loss_i = -log( exp(s(a_i, p_i)/τ) / (exp(s(a_i, p_i)/τ) + Σ_{j ∈ N(i)} exp(s(a_i, x_j)/τ)) )

where x runs over all anchors, positives and negatives of the batch and N(i) holds those that the
example-selection strategy calls negatives of anchor i (its own negative always, another anchor
from the same volume under S never: such items would be false negatives).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    negative_mask: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Mean InfoNCE loss of a batch.

    anchors, positives, negatives: (B, D) embeddings (normalised here).
    negative_mask: (B, 3B) bool; column j refers to ``cat([anchors, positives, negatives])[j]``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    # Similarities in float32: half precision loses too much after division by a small temperature.
    a, p, n = (F.normalize(x.float(), dim=1) for x in (anchors, positives, negatives))
    similarities = a @ torch.cat([a, p, n]).T / temperature  # (B, 3B)
    batch = a.shape[0]
    positive = similarities[:, batch : 2 * batch].diagonal()
    masked = similarities.masked_fill(~negative_mask.to(similarities.device), float("-inf"))
    log_denominator = torch.logsumexp(torch.cat([positive[:, None], masked], dim=1), dim=1)
    return (log_denominator - positive).mean()
