"""Volume <-> slice stacks: shapes, axes, aspect handling and the exact inverse."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from SegSSLLib.axes import array_axis
from SegSSLLib.slicing import SliceStack


def ramp_volume(shape):
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    return 100 * k + 10 * j + i


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_follow_the_requested_itk_axis(axis):
    shape = (5, 6, 7)  # (k, j, i)
    volume = ramp_volume(shape)
    stack = SliceStack(shape, spacing=(1.0, 1.0, 1.0), axis=axis, size=8, keep_aspect=False)
    assert stack.num_slices == shape[array_axis(axis)]
    slices = stack.to_slices(volume, mode="nearest")
    assert slices.shape == (stack.num_slices, 1, 8, 8)
    # The constant part of the ramp identifies the slice: 100k for axis K, 10j for axis J, i for axis I.
    step = {2: 100, 1: 10, 0: 1}[axis]
    for index in range(stack.num_slices):
        expected = np.take(volume, index, axis=array_axis(axis))
        restored = stack.to_volume(slices, mode="nearest")[0]
        np.testing.assert_array_equal(np.take(restored.numpy(), index, axis=array_axis(axis)), expected)
        assert float(slices[index].min()) >= index * step


def test_keep_aspect_uses_physical_proportions_and_centres():
    # 40 rows of 2 mm (80 mm) by 20 columns of 1 mm (20 mm): a tall slice four times its width.
    stack = SliceStack((3, 40, 20), spacing=(1.0, 2.0, 5.0), axis=2, size=64)
    assert stack.fitted_shape == (64, 16)
    assert stack.padding == (0, 24)
    slices = stack.to_slices(np.ones((3, 40, 20), np.float32))
    assert slices.shape == (3, 1, 64, 64)
    assert float(slices[..., :, :24].abs().max()) == 0.0  # padding is zero
    assert float(slices[..., :, 24:40].min()) == pytest.approx(1.0)


def test_bilinear_round_trip_of_a_smooth_image_is_close():
    shape = (4, 50, 60)
    volume = np.sin(np.linspace(0, 3, 60))[None, None, :] * np.cos(np.linspace(0, 2, 50))[None, :, None]
    volume = np.repeat(volume, 4, axis=0).astype(np.float32)
    stack = SliceStack(shape, spacing=(0.8, 0.8, 3.0), size=128)
    restored = stack.to_volume(stack.to_slices(volume))[0].numpy()
    assert restored.shape == shape
    assert np.abs(restored - volume).max() < 0.02


def test_multichannel_probabilities_map_back_channel_by_channel():
    shape = (3, 10, 12)
    stack = SliceStack(shape, spacing=(1.0, 1.0, 1.0), size=24)
    probabilities = torch.zeros(3, 2, 24, 24)
    probabilities[:, 1] = 1.0
    probabilities[:, 0] = 0.25
    restored = stack.to_volume(probabilities)
    assert restored.shape == (2, *shape)
    assert torch.allclose(restored[1], torch.ones(shape)) and torch.allclose(restored[0], torch.full(shape, 0.25))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(2, 30),
    cols=st.integers(2, 30),
    depth=st.integers(1, 4),
    row_mm=st.floats(0.3, 3.0),
    col_mm=st.floats(0.3, 3.0),
    seed=st.integers(0, 1000),
)
def test_label_round_trip_is_exact_whenever_slices_are_enlarged(rows, cols, depth, row_mm, col_mm, seed):
    labels = np.random.default_rng(seed).integers(0, 4, size=(depth, rows, cols))
    stack = SliceStack((depth, rows, cols), spacing=(col_mm, row_mm, 2.0), axis=2, size=64)
    fitted_rows, fitted_cols = stack.fitted_shape
    restored = stack.to_volume(stack.to_slices(labels, mode="nearest"), mode="nearest")[0]
    if fitted_rows >= rows and fitted_cols >= cols:
        np.testing.assert_array_equal(restored.numpy().astype(int), labels)
    else:  # shrinking loses detail, but the grid is always the original one
        assert restored.shape == labels.shape


def test_wrong_shapes_are_rejected():
    stack = SliceStack((3, 10, 12), spacing=(1.0, 1.0, 1.0), size=16)
    with pytest.raises(ValueError, match="does not match"):
        stack.to_slices(np.zeros((3, 10, 11)))
    with pytest.raises(ValueError, match="expected"):
        stack.to_volume(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="axis"):
        array_axis(3)
