"""The PolyCL U-Net: size, shapes, configurability, encoder transfer, batch independence."""

import pytest
import torch

from SegSSLLib.errors import SegSSLError
from SegSSLLib.polycl.model import ContrastiveNet, ModelConfig, SegmentationNet, count_parameters


def test_reference_network_has_about_two_million_parameters_and_256_d_projection():
    config = ModelConfig()
    assert config.widths == (16, 32, 64, 128, 256) and config.image_size == 256
    segmentation = SegmentationNet(config)
    assert 1.8e6 < count_parameters(segmentation) < 2.2e6
    contrastive = ContrastiveNet(config).eval()
    with torch.no_grad():
        assert contrastive(torch.rand(2, 1, 256, 256)).shape == (2, 256)


def test_width_and_size_are_configurable():
    config = ModelConfig(widths=(4, 8, 16), image_size=48)
    with torch.no_grad():
        logits = SegmentationNet(config).eval()(torch.rand(3, 1, 48, 48))
        features = ContrastiveNet(config).encoder(torch.rand(3, 1, 48, 48))
    assert logits.shape == (3, 2, 48, 48)
    assert [tuple(f.shape[1:]) for f in features] == [(4, 48, 48), (8, 24, 24), (16, 12, 12)]


@pytest.mark.parametrize("size", [100, 8])
def test_image_size_must_survive_the_downsampling(size):
    with pytest.raises(SegSSLError, match="multiple of 16"):
        ModelConfig(image_size=size)


def test_config_round_trips_through_a_plain_dict():
    config = ModelConfig(widths=(4, 8), image_size=32, dropout=0.2)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert isinstance(config.to_dict()["widths"], list)


def test_load_encoder_copies_the_pretrained_encoder_and_leaves_the_decoder():
    torch.manual_seed(0)
    config = ModelConfig(widths=(4, 8, 16), image_size=32)
    pretrained, segmentation = ContrastiveNet(config), SegmentationNet(config)
    decoder_before = {k: v.clone() for k, v in segmentation.decoder.state_dict().items()}
    segmentation.load_encoder(pretrained.state_dict())
    for key, value in pretrained.encoder.state_dict().items():
        assert torch.equal(segmentation.encoder.state_dict()[key], value)
    for key, value in segmentation.decoder.state_dict().items():
        assert torch.equal(decoder_before[key], value)


def test_a_slice_gives_the_same_output_whatever_else_is_in_the_batch():
    # InstanceNorm normalises each slice alone: batched inference must equal slice-by-slice.
    torch.manual_seed(0)
    model = SegmentationNet(ModelConfig(widths=(4, 8, 16), image_size=32)).eval()
    batch = torch.rand(5, 1, 32, 32)
    with torch.no_grad():
        together = model(batch)
        alone = torch.cat([model(batch[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
