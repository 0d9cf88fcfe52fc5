"""The three S3-Net terms act (they have gradients and measure what they claim); the public versions do not."""

import torch
import torch.nn.functional as F

from SegSSLLib.s3net.affine import pixel_transform, to_sampling_matrix, valid_region, warp
from SegSSLLib.s3net.config import S3NetConfig
from SegSSLLib.s3net.losses import (
    affine_consistency_loss,
    clustering_loss,
    published_affine_term,
    published_spatial_term,
    spatial_continuity_loss,
)
from SegSSLLib.s3net.network import S3Net
from SegSSLLib.s3net.training import _objective


def test_clustering_loss_is_cross_entropy_against_own_argmax_and_has_a_gradient():
    responses = torch.randn(2, 5, 6, 7, requires_grad=True)
    loss = clustering_loss(responses)
    assert torch.isclose(loss, F.cross_entropy(responses, responses.argmax(1)))
    loss.backward()
    assert float(responses.grad.abs().sum()) > 0


def test_spatial_loss_is_zero_for_flat_responses_and_pulls_an_edge_together():
    flat = torch.ones(1, 3, 8, 8) * torch.tensor([1.0, -2.0, 0.5])[None, :, None, None]
    assert float(spatial_continuity_loss(flat)) == 0.0
    edge = torch.zeros(1, 1, 4, 4)
    edge[..., 2:] = 1.0
    edge.requires_grad_(True)
    loss = spatial_continuity_loss(edge)
    assert torch.isclose(loss, torch.tensor(4 / 12))  # 4 of the 12 horizontal neighbour pairs differ by 1
    loss.backward()
    assert float(edge.grad[..., 1].sum()) < 0 < float(edge.grad[..., 2].sum())  # the two sides move together


def test_published_spatial_term_has_no_gradient():
    responses = torch.randn(1, 4, 8, 8, requires_grad=True)
    assert float(published_spatial_term(responses)) > 0
    assert not published_spatial_term(responses).requires_grad


def test_published_affine_term_is_only_a_copy_of_the_clustering_term():
    responses = torch.randn(2, 6, 8, 10)
    assert torch.isclose(published_affine_term(responses), clustering_loss(responses))


def _rotation_and_shift(height, width):
    return to_sampling_matrix(pixel_transform(rotation_degrees=37, translation=(2.0, -1.0)), height, width)[None]


def test_affine_term_measures_equivariance():
    # A pointwise linear model commutes with (bilinear) warping wherever the warp is valid, so its
    # affine term is just the clustering term there; a model that depends on position does not.
    torch.manual_seed(0)
    image = torch.rand(1, 1, 16, 16)
    sampling = _rotation_and_shift(16, 16)
    valid = valid_region(sampling, 16, 16)
    pointwise = torch.nn.Conv2d(1, 4, kernel_size=1)
    with torch.no_grad():
        pointwise.weight.copy_(torch.tensor([1.0, -1.0, 3.0, -3.0]).view(4, 1, 1, 1))
        pointwise.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0]))
    position = torch.linspace(-3, 3, 16).view(1, 1, 1, 16)

    def shifted(x):
        return pointwise(x) + position * torch.tensor([1.0, -1.0, 0.0, 0.0]).view(1, 4, 1, 1)

    for model, equivariant in ((pointwise, True), (shifted, False)):
        with torch.no_grad():
            transformed = model(warp(image, sampling))
            loss = affine_consistency_loss(transformed, warp(model(image), sampling), valid)
            per_pixel = F.cross_entropy(transformed, transformed.argmax(1), reduction="none")
            own = per_pixel[valid].mean()
            if equivariant:
                assert torch.isclose(loss, own, atol=1e-5)
            else:
                assert float(loss) > float(own) + 0.1


def test_affine_term_ignores_pixels_outside_the_valid_region():
    responses = torch.randn(1, 3, 8, 8)
    target = torch.randn(1, 3, 8, 8)
    valid = torch.zeros(1, 8, 8, dtype=torch.bool)
    valid[:, 2:6, 2:6] = True
    changed = responses.clone()
    changed[:, :, :2] = 100 * torch.randn(1, 3, 2, 8)
    assert torch.isclose(affine_consistency_loss(responses, target, valid), affine_consistency_loss(changed, target, valid))


def test_objective_trains_through_the_transformed_input():
    torch.manual_seed(0)
    model = S3Net(features=8, clusters=10).train()
    images = torch.rand(2, 1, 24, 24)
    config = S3NetConfig(features=8, clusters=10, clustering_weight=0.0, spatial_weight=0.0)
    loss, terms, clusters = _objective(model, images, config, torch.Generator().manual_seed(0))
    assert terms["affine"] > 0 and torch.isclose(loss, torch.tensor(terms["affine"]))
    assert 1 <= clusters <= 10
    loss.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.stem.parameters())


def test_published_variant_spatial_term_adds_no_gradient():
    torch.manual_seed(0)
    images = torch.rand(2, 1, 16, 16)
    gradients = []
    for spatial_weight in (0.0, 5.0):
        torch.manual_seed(1)
        model = S3Net(features=4, clusters=6).train()
        config = S3NetConfig(features=4, clusters=6, min_clusters=2, loss_variant="published", spatial_weight=spatial_weight)
        loss, terms, _ = _objective(model, images, config, torch.Generator().manual_seed(0))
        assert terms["spatial"] > 0
        loss.backward()
        gradients.append(model.stem[0].weight.grad.clone())
    assert torch.allclose(gradients[0], gradients[1])
