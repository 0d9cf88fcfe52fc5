"""InfoNCE with strategy-masked in-batch negatives."""

import math

import numpy as np
import pytest
import torch

from SegSSLLib.polycl.losses import info_nce


def _reference_loss(a, p, n, mask, temperature):
    """Straight from the formula, one anchor at a time."""
    def cos(x, y):
        return float(np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y))

    items = np.concatenate([a, p, n])
    total = 0.0
    for i in range(len(a)):
        positive = math.exp(cos(a[i], p[i]) / temperature)
        negatives = sum(math.exp(cos(a[i], items[j]) / temperature) for j in range(len(items)) if mask[i, j])
        total += -math.log(positive / (positive + negatives))
    return total / len(a)


def test_matches_the_formula_with_a_mask():
    rng = np.random.default_rng(0)
    a, p, n = (rng.standard_normal((4, 8)).astype(np.float32) for _ in range(3))
    mask = rng.random((4, 12)) < 0.5
    mask[np.arange(4), 8 + np.arange(4)] = True  # each anchor's own negative
    loss = info_nce(*(torch.from_numpy(x) for x in (a, p, n)), torch.from_numpy(mask), temperature=0.2)
    assert float(loss) == pytest.approx(_reference_loss(a, p, n, mask, 0.2), rel=1e-5)


def test_every_extra_negative_raises_the_loss_and_masked_items_do_not_count():
    torch.manual_seed(0)
    a, p, n = torch.randn(3, 4, 8).unbind(0)
    mask = torch.zeros(4, 12, dtype=torch.bool)
    mask[torch.arange(4), 8 + torch.arange(4)] = True  # own negatives only
    base = info_nce(a, p, n, mask)
    with_extra = mask.clone()
    with_extra[0, 1] = True  # anchor 1 also counts as a negative of anchor 0
    assert float(info_nce(a, p, n, with_extra)) > float(base)
    # Another anchor's negative that no mask entry selects changes nothing for the others:
    # replacing n[2] only alters anchor 2's term, which is the same in both runs below.
    moved = n.clone()
    moved[2] = torch.randn(8)
    difference_before = float(info_nce(a, p, n, with_extra) - info_nce(a, p, n, mask))
    difference_after = float(info_nce(a, p, moved, with_extra) - info_nce(a, p, moved, mask))
    assert difference_after == pytest.approx(difference_before, rel=1e-5)


def test_aligned_positives_and_opposite_negatives_give_a_small_loss():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 16), dim=1)
    mask = torch.zeros(6, 18, dtype=torch.bool)
    mask[torch.arange(6), 12 + torch.arange(6)] = True
    good = info_nce(a, a * 2.0, -a, mask, temperature=0.1)
    random = info_nce(a, torch.randn(6, 16), torch.randn(6, 16), mask, temperature=0.1)
    assert float(good) < 1e-6 < float(random)


def test_gradients_reach_all_three_inputs():
    a, p, n = (torch.randn(3, 5, requires_grad=True) for _ in range(3))
    mask = torch.ones(3, 9, dtype=torch.bool)
    info_nce(a, p, n, mask).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in (a, p, n))


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 3, dtype=torch.bool), 0.0)
