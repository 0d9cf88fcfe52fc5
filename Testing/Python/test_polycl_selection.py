"""Example selection S / O / M: every drawn pair obeys its strategy; epochs resample; clear errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from SegSSLLib.errors import SegSSLError
from SegSSLLib.polycl.selection import SliceRelations, sample_triplets


@st.composite
def slice_tables(draw):
    count = draw(st.integers(4, 40))
    volume = np.array(draw(st.lists(st.integers(0, 3), min_size=count, max_size=count)))
    flag = np.array(draw(st.lists(st.booleans(), min_size=count, max_size=count)))
    return volume, flag


def _expected_anchor_has_partners(strategy, volume, flag, i):
    others = np.arange(len(volume)) != i
    same_volume, same_flag = volume == volume[i], flag == flag[i]
    positive = {"S": same_volume, "O": same_flag, "M": same_volume & same_flag}[strategy] & others
    negative = {"S": ~same_volume, "O": ~same_flag, "M": ~same_volume & ~same_flag}[strategy]
    return positive.any() and negative.any()


@settings(max_examples=60, deadline=None)
@given(table=slice_tables(), strategy=st.sampled_from("SOM"), seed=st.integers(0, 5), epoch=st.integers(0, 5))
def test_every_triplet_obeys_the_strategy_and_every_possible_anchor_is_used(table, strategy, seed, epoch):
    volume, flag = table
    relations = SliceRelations(strategy, volume, flag)
    expected = [i for i in range(len(volume)) if _expected_anchor_has_partners(strategy, volume, flag, i)]
    if not expected:
        with pytest.raises(SegSSLError, match="no anchor"):
            sample_triplets(relations, seed, epoch)
        return
    triplets = sample_triplets(relations, seed, epoch)
    assert triplets[:, 0].tolist() == expected  # each possible anchor once, in order
    anchor, positive, negative = triplets.T
    assert np.all(anchor != positive)
    if strategy in "SM":
        assert np.all(volume[positive] == volume[anchor]) and np.all(volume[negative] != volume[anchor])
    if strategy in "OM":
        assert np.all(flag[positive] == flag[anchor]) and np.all(flag[negative] != flag[anchor])


def test_pairs_repeat_for_the_same_epoch_and_change_between_epochs():
    volume = np.repeat(np.arange(4), 25)
    relations = SliceRelations("S", volume, None)
    first = sample_triplets(relations, seed=3, epoch=0)
    assert np.array_equal(first, sample_triplets(relations, seed=3, epoch=0))
    second = sample_triplets(relations, seed=3, epoch=1)
    assert np.array_equal(first[:, 0], second[:, 0])
    assert (first[:, 1:] != second[:, 1:]).mean() > 0.5


def test_positives_are_spread_over_the_whole_volume():
    volume = np.repeat(np.arange(2), 50)
    picks = np.concatenate([sample_triplets(SliceRelations("S", volume, None), 0, e)[:50, 1] for e in range(20)])
    assert set(picks) == set(range(50))  # uniform over the other slices, no fixed offline pair


@pytest.mark.parametrize("strategy", ["O", "M"])
def test_flag_strategies_without_labels_are_a_clear_error(strategy):
    with pytest.raises(SegSSLError, match=f"`strategy` {strategy} needs slice-level"):
        SliceRelations(strategy, np.zeros(10, int), None)


def test_negative_mask_follows_the_strategy():
    volume = np.array([0, 0, 1, 1])
    flag = np.array([True, False, True, False])
    candidates = np.arange(4)
    masks = {s: SliceRelations(s, volume, flag).negative_mask(np.array([0]), candidates)[0] for s in "SOM"}
    assert masks["S"].tolist() == [False, False, True, True]
    assert masks["O"].tolist() == [False, True, False, True]
    assert masks["M"].tolist() == [False, False, False, True]  # slice 2: other volume, same flag: neither
