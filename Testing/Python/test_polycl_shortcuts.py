"""Pretraining without shortcuts and fine-tuning that a poor encoder cannot ruin (issue 16):
strategy P's pairs, per-sample views, the "learned nothing useful" warning, pretrained-layer learning rates."""

import numpy as np
import pytest
import torch

from polycl_helpers import TINY_MODEL, TINY_SLICING, one_thread, phantom_plain  # noqa: F401
from SegSSLLib.errors import SegSSLError
from SegSSLLib.polycl import diagnostics
from SegSSLLib.polycl.augment import SliceAugmentation, common_spacing, view_generator
from SegSSLLib.polycl.datasets import TripletDataset
from SegSSLLib.polycl.model import ModelConfig, SegmentationNet
from SegSSLLib.polycl.positional import FAR, NEAR, PositionalRelations, body_positions
from SegSSLLib.polycl.slice_cache import CachedCase
from SegSSLLib.polycl.transfer import parameter_groups, set_trainable_blocks, trainable_encoder_blocks

CPU = torch.device("cpu")


# --- strategy P -------------------------------------------------------------------------------


def test_body_positions_span_the_body_and_leave_air_slices_out():
    images = np.zeros((10, 8, 8), np.float16)
    images[2:9, 2:6, 2:6] = 0.5  # body in slices 2..8
    images[1, 0, 0] = 0.5  # a speck: less than a tenth of the body's area
    positions = body_positions(images)
    assert np.isnan(positions[[0, 1, 9]]).all()
    assert np.allclose(positions[2:9], np.linspace(0, 1, 7))


def test_positional_pairs_are_near_in_another_scan_and_far_in_the_same_scan():
    # Three scans of different lengths; positions 0..1 each, a NaN (air) slice at the start of scan 0.
    lengths = (21, 41, 11)
    volume = np.concatenate([np.full(n, i) for i, n in enumerate(lengths)])
    position = np.concatenate([np.linspace(0, 1, n) for n in lengths])
    position[0] = np.nan
    relations = PositionalRelations(volume, position)
    for epoch in range(3):
        anchor, positive, negative = relations.sample(seed=1, epoch=epoch).T
        assert 0 not in anchor and 0 not in positive and 0 not in negative  # outside the body: no part
        assert np.array_equal(anchor, np.flatnonzero(np.isfinite(position)))  # every body slice anchors once
        assert np.all(volume[positive] != volume[anchor])
        assert np.all(np.abs(position[positive] - position[anchor]) <= NEAR)
        assert np.all(volume[negative] == volume[anchor])
        assert np.all(np.abs(position[negative] - position[anchor]) >= FAR)
    # In-batch negatives are exactly the far positions, whatever the scan; NaN slices never.
    mask = relations.negative_mask(np.array([1, 30]), np.arange(len(volume)))
    with np.errstate(invalid="ignore"):
        expected = np.abs(position[[1, 30]][:, None] - position[None, :]) >= FAR
    assert np.array_equal(mask, expected) and not mask[:, 0].any()
    # Repeatable per (seed, epoch), different between epochs.
    assert np.array_equal(relations.sample(4, 2), relations.sample(4, 2))
    assert not np.array_equal(relations.sample(4, 2), relations.sample(4, 3))


def test_positional_strategy_needs_two_scans():
    with pytest.raises(SegSSLError, match="one scan"):
        PositionalRelations(np.zeros(10, int), np.linspace(0, 1, 10))


# --- per-sample views -------------------------------------------------------------------------


def _case(name, count=6, size=32, pixel_mm=(2.0, 2.0)):
    rng = np.random.default_rng(len(name))
    images = rng.uniform(0.2, 0.8, (count, size, size)).astype(np.float16)
    return CachedCase(name, images, None, None, pixel_mm)


def test_two_samples_of_the_same_volume_get_different_views_that_repeat_with_the_seed():
    cases = [_case("a"), _case("bb")]
    triplets = np.array([[0, 1, 6], [2, 3, 7]])  # two triplets, anchors and positives from scan a
    augmentation = SliceAugmentation(spacing_mm=2.0)
    dataset = TripletDataset(cases, triplets, augmentation, seed=3, epoch=0)
    first, second = dataset[0], dataset[1]
    plain = TripletDataset(cases, triplets)[0]
    # The same slice, drawn in two samples, looks different; the two samples differ in their views' statistics.
    same_slice = TripletDataset(cases, np.array([[0, 1, 6], [0, 1, 6]]), augmentation, seed=3, epoch=0)
    assert not torch.equal(same_slice[0][0], same_slice[1][0])
    assert not torch.equal(first[0], plain[0])
    assert abs(float(first[0].mean() - first[1].mean())) + abs(float(first[0].std() - second[0].std())) > 1e-3
    again = TripletDataset(cases, triplets, augmentation, seed=3, epoch=0)[0]
    assert all(torch.equal(a, b) for a, b in zip(first[:3], again[:3]))
    other_epoch = TripletDataset(cases, triplets, augmentation, seed=3, epoch=1)[0]
    assert not torch.equal(first[0], other_epoch[0])
    assert all(view.shape == (1, 32, 32) and 0 <= float(view.min()) and float(view.max()) <= 1 for view in first[:3])


def test_views_share_one_physical_pixel_size():
    # A bright 8 px square in a scan with 2 mm pixels, and the same 16 mm object in a scan with 1 mm pixels.
    coarse = torch.zeros(1, 32, 32)
    coarse[0, 12:20, 12:20] = 1
    fine = torch.zeros(1, 32, 32)
    fine[0, 8:24, 8:24] = 1
    resample = SliceAugmentation(spacing_mm=2.0, jitter=False)
    rng = view_generator(0, 0, 0, 0)
    coarse_view, fine_view = resample(coarse, (2.0, 2.0), rng), resample(fine, (1.0, 1.0), rng)
    assert float(coarse_view.sum()) == pytest.approx(64, rel=0.05)
    assert float(fine_view.sum()) == pytest.approx(64, rel=0.1)  # the object now covers 8×8 pixels too
    assert common_spacing([(1.0, 1.0), (2.0, 2.0), (4.0, 4.0)], "auto") == 2.0
    assert common_spacing([(1.0, 1.0)], None) is None and common_spacing([(1.0, 1.0)], 3) == 3.0


# --- the warning ------------------------------------------------------------------------------


def _probe(scan, position, random_position=0.2):
    return {"scan_accuracy": scan, "position_accuracy": position, "position_chance": 0.2,
            "random_init": {"scan_accuracy": 0.6, "position_accuracy": random_position}}


def test_the_warning_fires_on_a_collapsed_or_scan_separating_run_and_not_on_a_healthy_one():
    collapsed = [{"epoch": 1, "loss": 1.8}, {"epoch": 2, "loss": 0.004}, {"epoch": 3, "loss": 0.0001}]
    healthy = [{"epoch": 1, "loss": 3.3}, {"epoch": 2, "loss": 2.6}, {"epoch": 3, "loss": 2.0}]
    late_low = [{"epoch": e, "loss": 3.0 / e**3} for e in range(1, 9)]  # low only after many epochs
    assert diagnostics.loss_collapse(collapsed) == {"epoch": 2, "loss": 0.004}
    assert diagnostics.loss_collapse(healthy) is None and diagnostics.loss_collapse(late_low) is None

    warning = diagnostics.verdict(diagnostics.loss_collapse(collapsed), _probe(0.99, 0.5))
    assert warning and "0.0040 by epoch 2" in warning and "`strategy` P" in warning and "\n" not in warning
    warning = diagnostics.verdict(None, _probe(1.0, 0.22))
    assert warning and "tells scans apart" in warning and "more scans" in warning
    # The paper's S on the real CT (RESULTS.md): within the probe's noise of the random encoder.
    assert diagnostics.verdict(None, _probe(1.00, 0.27, random_position=0.21)) is not None
    assert diagnostics.verdict(diagnostics.loss_collapse([{"epoch": 1, "loss": 2.4}, {"epoch": 2, "loss": 0.21},
                                                          {"epoch": 3, "loss": 0.018}]), None) is not None
    assert diagnostics.verdict(None, _probe(1.0, 0.6)) is None  # separates scans, but learned position too
    assert diagnostics.verdict(None, _probe(0.5, 0.21)) is None  # not scan-separating
    assert diagnostics.verdict(None, None) is None


def test_the_probe_tells_scan_features_from_position_features():
    volume = np.repeat(np.arange(3), 20)
    slice_index = np.tile(np.arange(20), 3)
    position = np.tile(np.linspace(0, 1, 20), 3)
    rng = np.random.default_rng(0)
    scan_only = np.eye(3)[volume] * 10 + rng.normal(0, 0.1, (60, 3))  # one direction per scan, noise within
    by_position = np.stack([np.cos(position * 3), np.sin(position * 3)], 1) + rng.normal(0, 0.01, (60, 2))
    scans = diagnostics.neighbour_accuracies(scan_only, volume, slice_index, position)
    positions = diagnostics.neighbour_accuracies(by_position, volume, slice_index, position)
    assert scans["scan_accuracy"] == 1.0 and scans["position_accuracy"] < 0.5
    assert positions["position_accuracy"] > 0.9 and positions["scan_accuracy"] < 0.7
    assert positions["position_chance"] == pytest.approx(0.2, abs=0.02)


def test_a_pretraining_run_stores_its_checks_in_the_checkpoint(tmp_path):
    from SegSSLLib.checkpoints import load_checkpoint
    from SegSSLLib.polycl.pretraining import PretrainOptions, pretrain

    plain = phantom_plain(tmp_path / "plain")
    options = PretrainOptions(strategy="P", epochs=1, batch_size=8, seed=1)
    pretrain([plain], tmp_path / "p.pt", TINY_MODEL, TINY_SLICING, options, CPU, cache_dir=tmp_path / "cache")
    provenance = load_checkpoint(tmp_path / "p.pt")["provenance"]
    report = provenance["diagnostics"]
    assert set(report) == {"loss_collapse", "probe", "warning"}
    assert report["probe"]["scans"] == 2 and 0 <= report["probe"]["position_accuracy"] <= 1
    assert provenance["view_spacing_mm"] == pytest.approx(10.0)  # the tiny phantoms' 320 mm in 32 px


# --- fine-tuning: pretrained layers -----------------------------------------------------------


def test_layer_wise_learning_rate_groups():
    model = SegmentationNet(ModelConfig(widths=(4, 8, 16), image_size=32))
    groups = parameter_groups(model, 1e-3, encoder_lr_factor=0.1, layer_decay=0.5)
    assert [g["name"] for g in groups] == ["encoder.blocks.0", "encoder.blocks.1", "encoder.blocks.2", "decoder"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 * 0.1 * 0.25, 1e-3 * 0.1 * 0.5, 1e-3 * 0.1, 1e-3])
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    assert {id(p) for p in groups[-1]["params"]} == {id(p) for p in model.decoder.parameters()}
    plain = parameter_groups(model, 1e-3)
    assert all(g["lr"] == 1e-3 for g in plain)


def test_gradual_unfreezing_goes_from_the_bottleneck_to_the_input():
    schedule = [trainable_encoder_blocks(epoch, 5, freeze_epochs=2, unfreeze_epochs=5) for epoch in range(9)]
    assert schedule == [0, 0, 1, 2, 3, 4, 5, 5, 5]
    assert [trainable_encoder_blocks(e, 5, 1, 2) for e in range(4)] == [0, 3, 5, 5]
    assert [trainable_encoder_blocks(e, 3, 0, 0) for e in range(2)] == [3, 3]
    model = SegmentationNet(ModelConfig(widths=(4, 8, 16), image_size=32))
    set_trainable_blocks(model, 1)
    trains = [all(p.requires_grad for p in block.parameters()) for block in model.encoder.blocks]
    assert trains == [False, False, True] and all(p.requires_grad for p in model.decoder.parameters())


def test_fine_tuning_trains_the_encoder_slower_and_unfreezes_it_gradually(tmp_path):
    from SegSSLLib.checkpoints import load_checkpoint
    from SegSSLLib.polycl.finetuning import FinetuneOptions, finetune
    from polycl_helpers import phantom_msd

    msd = phantom_msd(tmp_path / "msd", seeds=(1,))
    options = FinetuneOptions(label=1, epochs=2, epoch_samples=8, max_slices=3, seed=2, unfreeze_epochs=2,
                              encoder_lr_factor=0.1)
    finetune(msd, tmp_path / "ft.pt", options, CPU, TINY_MODEL, TINY_SLICING, cache_dir=tmp_path / "cache")
    saved = load_checkpoint(tmp_path / "ft.pt")
    groups = saved["extra"]["resume"]["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-4, 1e-4, 1e-3])
    assert saved["provenance"]["unfreeze_epochs"] == 2 and saved["provenance"]["encoder_lr_factor"] == 0.1
    with pytest.raises(SegSSLError, match="`unfreeze_epochs`"):
        FinetuneOptions(label=1, epochs=3, freeze_epochs=2, unfreeze_epochs=2)
    with pytest.raises(SegSSLError, match="`encoder_lr_factor`"):
        FinetuneOptions(label=1, encoder_lr_factor=0)
