"""S3-Net building blocks: I-LKA, deformable convolution with predicted offsets, the whole network."""

import pytest
import torch
import torch.nn.functional as F

from SegSSLLib.s3net.attention import AttentionBlock, InceptionLargeKernelAttention
from SegSSLLib.s3net.deformable import PredictedOffsetDeformConv2d
from SegSSLLib.s3net.network import S3Net


def test_ilka_receptive_field_reaches_eleven_pixels_and_no_further():
    # 5×5 (reach 2) followed by 7×7 dilation 3 (reach 9): an impulse influences pixels up to 11 away.
    torch.manual_seed(0)
    attention = InceptionLargeKernelAttention(4)
    probe = torch.zeros(1, 4, 41, 41, requires_grad=True)
    context = torch.cat([branch(attention.local(probe + 1.0)) for branch in attention.branches], dim=1)
    attention.mix(context)[0, :, 20, 20].sum().backward()
    reached = probe.grad[0].abs().sum(0) > 0
    rows, cols = reached.nonzero(as_tuple=True)
    assert int((rows - 20).abs().max()) == 11 and int((cols - 20).abs().max()) == 11


def test_ilka_is_attention_multiplying_its_input():
    torch.manual_seed(0)
    attention = InceptionLargeKernelAttention(3)
    x = torch.randn(2, 3, 9, 9)
    context = torch.cat([branch(attention.local(x)) for branch in attention.branches], dim=1)
    assert torch.allclose(attention(x), x * attention.mix(context))
    assert torch.count_nonzero(attention(torch.zeros(1, 3, 9, 9))) == 0  # zero input, zero output


def test_attention_block_keeps_shape_and_normalises():
    block = AttentionBlock(8).train()
    out = block(torch.randn(3, 8, 13, 7) * 5 + 2)
    assert out.shape == (3, 8, 13, 7)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(8), atol=1e-4)


def test_deformable_conv_starts_as_an_ordinary_convolution():
    torch.manual_seed(0)
    layer = PredictedOffsetDeformConv2d(5, 6)
    x = torch.randn(2, 5, 11, 9)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), layer.conv.weight, layer.conv.bias)
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_deformable_conv_offsets_come_from_the_features():
    torch.manual_seed(0)
    layer = PredictedOffsetDeformConv2d(4, 4)
    torch.nn.init.normal_(layer.offset_and_modulation.weight, std=0.5)
    x = torch.randn(2, 4, 10, 12)
    with torch.no_grad():
        offsets, modulation = layer.offsets_and_modulation(x)
        plain = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), layer.conv.weight, layer.conv.bias)
        assert float((layer(x) - plain).abs().max()) > 1e-2
    assert offsets.shape == (2, 18, 10, 12) and modulation.shape == (2, 9, 10, 12)
    assert float(offsets[0].sub(offsets[1]).abs().max()) > 0.1  # different images, different offsets
    assert float(modulation.min()) > 0 and float(modulation.max()) < 2
    layer(x).square().sum().backward()
    assert float(layer.offset_and_modulation.weight.grad.abs().sum()) > 0  # offsets are learnt


def test_deformable_samples_never_leave_the_image():
    # Far-reaching offsets on a constant image: every sample still reads the constant (edge
    # replication), where torchvision alone would read zeros beyond the border.
    torch.manual_seed(0)
    layer = PredictedOffsetDeformConv2d(2, 3)
    with torch.no_grad():
        layer.offset_and_modulation.bias[:18] = torch.linspace(-30, 30, 18)
        x = torch.full((1, 2, 9, 11), 0.7)
        expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), layer.conv.weight, layer.conv.bias)
        offsets, _ = layer.offsets_and_modulation(x)
        assert float(offsets.abs().max()) > 5  # the offsets do reach far (inside the image)
        assert torch.allclose(layer(x), expected, atol=1e-5)


@pytest.mark.parametrize("channels, batch, height, width", [(1, 1, 17, 23), (3, 5, 32, 32), (1, 3, 8, 40)])
def test_network_takes_any_size_batch_and_channel_count(channels, batch, height, width):
    torch.manual_seed(0)
    model = S3Net(in_channels=channels, features=8, clusters=12)
    responses = model(torch.rand(batch, channels, height, width))
    assert responses.shape == (batch, 12, height, width)
    assert torch.isfinite(responses).all()


def test_network_refuses_the_wrong_channel_count():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        S3Net(in_channels=3, features=4, clusters=4)(torch.rand(1, 1, 8, 8))


def test_uniform_image_gives_one_cluster_up_to_the_border():
    # Replicated padding: a region that touches the border (air) is not split off into a frame.
    torch.manual_seed(0)
    model = S3Net(features=8, clusters=16).eval()
    image = torch.full((1, 1, 30, 26), 0.3)
    image[..., 10:20, 8:18] = 0.8
    clusters = model(image).argmax(1)[0]
    outside = torch.ones_like(clusters, dtype=torch.bool)
    outside[8:22, 6:20] = False
    assert clusters[outside].unique().numel() == 1


def test_network_is_fully_convolutional_and_batch_independent_in_eval_mode():
    torch.manual_seed(0)
    model = S3Net(features=8, clusters=6).eval()
    images = torch.rand(3, 1, 20, 20)
    together = model(images)
    alone = torch.cat([model(images[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)
