"""CT windows and MR percentiles map onto [0, 1] as documented."""

import numpy as np
import pytest

from SegSSLLib.errors import SegSSLError
from SegSSLLib.intensity import IntensityWindow, guess_window, to_uint8


def test_ct_window_maps_its_edges_and_centre():
    window = IntensityWindow(mode="ct", level=40, width=400)
    values = np.array([-1000, -160, 40, 140, 240, 3000], np.float32)
    np.testing.assert_allclose(window.apply(values), [0, 0, 0.5, 0.75, 1, 1], atol=1e-6)


def test_ct_window_uses_the_full_range_not_a_narrow_band():
    # The published PolyCL code divides by a global HU range, leaving soft tissue in a narrow band.
    soft_tissue = np.linspace(-100, 200, 50).astype(np.float32)
    mapped = IntensityWindow().apply(soft_tissue)
    assert mapped.max() - mapped.min() == pytest.approx(0.75, abs=1e-5)


def test_percentile_mode_is_robust_to_outliers():
    rng = np.random.default_rng(0)
    values = rng.normal(300, 50, 10_000).astype(np.float32)
    values[:5] = 1e6  # a few hot voxels must not squash everything else
    mapped = IntensityWindow(mode="percentile", lower=1, upper=99).apply(values)
    assert mapped.min() == 0 and mapped.max() == 1
    assert 0.4 < float(np.median(mapped)) < 0.6


def test_percentile_mode_on_a_constant_image_is_zero_without_warnings(recwarn):
    mapped = IntensityWindow(mode="percentile").apply(np.full((3, 4, 5), 70, np.int16))
    assert mapped.dtype == np.float32 and mapped.shape == (3, 4, 5) and not mapped.any()
    almost = np.zeros(1000, np.float32)
    almost[:3] = 500.0  # 0.3 % bright voxels: the 0.5 and 99.5 percentiles are both 0
    np.testing.assert_array_equal(IntensityWindow(mode="percentile").apply(almost), almost > 0)
    assert not [w for w in recwarn if "divide" in str(w.message).lower() or "zero" in str(w.message).lower()]


def test_percentile_mode_maps_the_chosen_percentiles_to_0_and_1():
    values = np.arange(101, dtype=np.float32)  # percentile p is the value p
    mapped = IntensityWindow(mode="percentile", lower=10, upper=60).apply(values)
    np.testing.assert_allclose(mapped[[0, 10, 35, 60, 100]], [0, 0, 0.5, 1, 1], atol=1e-6)


def test_input_is_not_modified_and_output_is_float32():
    values = np.array([0, 100, 200], np.int16)
    mapped = IntensityWindow().apply(values)
    assert mapped.dtype == np.float32 and values.tolist() == [0, 100, 200]


def test_non_finite_values_and_bad_settings_are_refused():
    with pytest.raises(SegSSLError, match="NaN"):
        IntensityWindow().apply(np.array([0.0, np.nan]))
    with pytest.raises(SegSSLError, match="width"):
        IntensityWindow(width=0)
    with pytest.raises(SegSSLError, match="percentiles"):
        IntensityWindow(mode="percentile", lower=50, upper=10)
    with pytest.raises(SegSSLError, match="unknown intensity mode"):
        IntensityWindow(mode="pet")


def test_window_round_trips_through_a_dict_and_guessing():
    window = IntensityWindow(mode="ct", level=50, width=350)
    assert IntensityWindow.from_dict(window.to_dict()) == window
    assert guess_window(np.array([-1024, 40])).mode == "ct"
    assert guess_window(np.array([0, 812])).mode == "percentile"
    np.testing.assert_array_equal(to_uint8(np.array([-0.5, 0.0, 0.5, 1.0, 2.0])), [0, 0, 128, 255, 255])


@pytest.mark.parametrize("window", [IntensityWindow(), IntensityWindow(mode="percentile", lower=2, upper=97)])
def test_a_window_resolved_on_the_volume_maps_any_part_of_it_as_the_whole(window):
    rng = np.random.default_rng(1)
    volume = rng.normal(100, 300, (7, 13, 11)).astype(np.float64)  # float64: the float32 rounding is part of it
    whole = window.apply(volume)
    resolved = window.resolve(volume)
    for part in (np.s_[:1], np.s_[2:5], np.s_[:, 3], np.s_[..., 10]):
        assert resolved.apply(volume[part]).tobytes() == whole[part].tobytes(), part
    constant = IntensityWindow(mode="percentile").resolve(np.full((3, 4, 5), 70, np.int16))
    assert constant.constant and not constant.apply(np.full((2, 2), 70, np.int16)).any()
    assert constant.apply(np.array([71])).tolist() == [1.0]


def test_values_float32_cannot_hold_are_refused_like_nan():
    big = np.zeros((3, 4), np.float64)
    big[2, 3] = 1e300  # finite in float64, infinite once mapped as float32
    for window in (IntensityWindow(), IntensityWindow(mode="percentile")):
        with pytest.raises(SegSSLError, match="NaN or infinite"):
            window.resolve(big)
