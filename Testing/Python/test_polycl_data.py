"""Slice cache (sliced once, memory-mapped, keyed by file and settings) and the fine-tuning splits."""

import os

import numpy as np
import pytest
import SimpleITK as sitk

from polycl_helpers import TINY_SLICING, phantom_msd
from SegSSLLib.datasets import load_dataset, write_msd_dataset
from SegSSLLib.errors import SegSSLError
from SegSSLLib.intensity import IntensityWindow
from SegSSLLib.phantoms import PHANTOM_LABELS, make_ct_phantom
from SegSSLLib.polycl import slice_cache
from SegSSLLib.polycl.datasets import VALIDATION_BLOCK, LabelledSliceDataset, require_label_maps, split_labelled_slices, structure_flags
from SegSSLLib.polycl.slice_cache import CachedCase, SlicingSettings, cache_cases, cache_key


@pytest.fixture
def two_cases(tmp_path):
    folder = phantom_msd(tmp_path / "msd", seeds=(1, 2))
    return load_dataset(folder)


def test_cached_slices_are_the_windowed_slice_stack_and_memory_mapped(two_cases, tmp_path):
    case = two_cases.cases[0]
    [cached] = cache_cases([case], TINY_SLICING, tmp_path / "cache")
    image = TINY_SLICING.orient(sitk.ReadImage(str(case.image)))
    stack = TINY_SLICING.stack(image)
    expected = stack.to_slices(IntensityWindow().apply(sitk.GetArrayFromImage(image)))[:, 0].numpy()
    assert isinstance(cached.images, np.memmap) and cached.images.dtype == np.float16
    np.testing.assert_allclose(cached.images.astype(np.float32), expected, atol=1e-3)
    labels = sitk.GetArrayFromImage(TINY_SLICING.orient(sitk.ReadImage(str(case.label))))
    np.testing.assert_array_equal(
        cached.labels, stack.to_slices(labels.astype(np.float32), mode="nearest")[:, 0].numpy().astype(np.uint8)
    )
    # Flags come from the original slices (axial = first array axis for axis 2).
    np.testing.assert_array_equal(cached.flags(1), (labels == 1).any(axis=(1, 2)))
    assert not cached.flags(99).any()


def test_a_case_stored_with_flipped_axes_gives_the_same_cached_slices(tmp_path):
    from SegSSLLib.phantoms import oblique_direction

    image, labels = make_ct_phantom(seed=1, size=(32, 32, 12), spacing=(10.0, 10.0, 20.0), direction=oblique_direction())
    flip = [True, True, False]  # like abdomen_ct (direction diag(-1, -1, 1)) next to an identity-direction scan
    cases = [("stored", image, labels), ("flipped", sitk.Flip(image, flip), sitk.Flip(labels, flip))]
    folder = write_msd_dataset(tmp_path / "msd", cases, PHANTOM_LABELS)
    stored, flipped = cache_cases(list(load_dataset(folder).cases), TINY_SLICING, tmp_path / "cache")
    np.testing.assert_array_equal(stored.images, flipped.images)
    np.testing.assert_array_equal(stored.labels, flipped.labels)
    np.testing.assert_array_equal(stored.presence, flipped.presence)
    as_stored = SlicingSettings(IntensityWindow(), image_size=32, orientation=None)
    unoriented = cache_cases(list(load_dataset(folder).cases), as_stored, tmp_path / "cache")
    assert not np.array_equal(unoriented[0].images, unoriented[1].images)  # what happened before


def test_a_cached_case_is_never_read_again(two_cases, tmp_path, monkeypatch):
    first = cache_cases(list(two_cases.cases), TINY_SLICING, tmp_path / "cache")

    def fail(*args, **kwargs):
        raise AssertionError("the volume was read again")

    monkeypatch.setattr(slice_cache, "read_volume", fail)
    second = cache_cases(list(two_cases.cases), TINY_SLICING, tmp_path / "cache")
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.images, b.images)
    assert not any(p.name.startswith(".") for p in (tmp_path / "cache").iterdir())  # no temporary folders left


def test_the_cache_key_follows_settings_and_file_changes(two_cases):
    case = two_cases.cases[0]
    key = cache_key(case, TINY_SLICING)
    assert cache_key(case, SlicingSettings(IntensityWindow(level=50), image_size=32)) != key
    assert cache_key(case, SlicingSettings(IntensityWindow(), image_size=64)) != key
    assert cache_key(case, SlicingSettings(IntensityWindow(), image_size=32, orientation="RAS")) != key
    stat = case.image.stat()
    os.utime(case.image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache_key(case, TINY_SLICING) != key


def test_multiple_cases_split_by_case_and_cases_limit(tmp_path):
    folder = phantom_msd(tmp_path / "msd", seeds=(1, 2, 3, 4, 5))
    cases = cache_cases(list(load_dataset(folder).cases), TINY_SLICING, tmp_path / "cache")
    train, validation = split_labelled_slices(cases, 1, validation_fraction=0.2, max_cases=2, seed=4)
    train_cases, validation_cases = set(train[:, 0]), set(validation[:, 0])
    assert len(train_cases) == 2 and len(validation_cases) == 1 and not train_cases & validation_cases
    assert len(validation) == cases[validation[0, 0]].num_slices  # whole cases validate
    again = split_labelled_slices(cases, 1, validation_fraction=0.2, max_cases=2, seed=4)
    assert np.array_equal(train, again[0]) and np.array_equal(validation, again[1])


def _case_with_structure_on(slices, count: int, name: str = "case") -> CachedCase:
    """A cached case of ``count`` slices whose label 1 shows on ``slices`` (pixels do not matter to splits)."""
    presence = np.zeros((count, 2), bool)
    presence[:, 0] = True
    presence[list(slices), 1] = True
    return CachedCase(name, np.zeros((count, 1, 1), np.float16), None, presence)


def test_one_case_splits_by_interleaved_blocks_and_respects_exclusions():
    cases = [_case_with_structure_on(range(0, 8), 16)]  # blocks 0-1 show the structure, 2-3 do not
    excluded = np.array([[0, 0], [0, 1]])
    train, validation = split_labelled_slices(cases, 1, validation_fraction=0.5, exclude=excluded)
    # Slices 0 and 1 take no part; blocks of 4 of the slices left (2-5, 6-9 show it, 10-13, 14-15 do not);
    # every second block of each kind validates.
    assert validation[:, 1].tolist() == [6, 7, 8, 9, 14, 15]
    assert train[:, 1].tolist() == [2, 3, 4, 5, 10, 11, 12, 13]
    train, validation = split_labelled_slices(cases, 1, validation_fraction=0.5)
    assert validation[:, 1].tolist() == [4, 5, 6, 7, 12, 13, 14, 15]


def test_a_small_structure_in_one_case_still_validates():
    # Like the chest CT's tumour: 3 of 60 slices, all in one block of 4.
    cases = [_case_with_structure_on([32, 33, 34], 60)]
    train, validation = split_labelled_slices(cases, 1, validation_fraction=0.2)
    flags = cases[0].flags(1)
    assert validation[:, 1][flags[validation[:, 1]]].tolist() == [33]
    assert train[:, 1][flags[train[:, 1]]].tolist() == [32, 34]
    assert (~flags[validation[:, 1]]).sum() >= VALIDATION_BLOCK  # slices without it validate too
    assert not set(train[:, 1]) & set(validation[:, 1])


def test_a_structure_over_many_blocks_validates_in_both_kinds_of_block():
    cases = [_case_with_structure_on(range(40, 80), 100)]
    train, validation = split_labelled_slices(cases, 1, validation_fraction=0.2)
    flags = cases[0].flags(1)
    assert flags[validation[:, 1]].sum() == 8 and (~flags[validation[:, 1]]).sum() == 12  # 2 + 3 blocks
    assert len(train) + len(validation) == 100


@pytest.mark.parametrize("seed", range(4))
def test_validation_cases_show_the_structure_while_training_keeps_it(seed):
    cases = [_case_with_structure_on([], 8, "a"), _case_with_structure_on([3], 8, "b"), _case_with_structure_on([4], 8, "c"),
             _case_with_structure_on([], 8, "d")]
    train, validation = split_labelled_slices(cases, 1, validation_fraction=0.25, seed=seed)
    assert set(validation[:, 0]) <= {1, 2} and len(set(validation[:, 0])) == 1
    assert {1, 2} & set(train[:, 0])
    # Only one case shows it: that one trains, another validates (and training picks by loss).
    cases[2] = _case_with_structure_on([], 8, "c")
    train, validation = split_labelled_slices(cases, 1, validation_fraction=0.25, seed=seed)
    assert 1 in set(train[:, 0]) and 1 not in set(validation[:, 0])


def test_more_cases_than_remain_after_validation_is_an_error():
    cases = [_case_with_structure_on([2], 8, name) for name in "abc"]
    assert len(set(split_labelled_slices(cases, 1, validation_fraction=0.2, max_cases=2)[0][:, 0])) == 2
    with pytest.raises(SegSSLError, match="`max_cases` 3 asks for more training cases .*2 of 3"):
        split_labelled_slices(cases, 1, validation_fraction=0.2, max_cases=3)


def test_slices_limit_picks_evenly_spaced_slices_that_show_the_structure(two_cases, tmp_path):
    cases = cache_cases(list(two_cases.cases), TINY_SLICING, tmp_path / "cache")
    train, _ = split_labelled_slices(cases, 1, validation_fraction=0.0, max_slices=3)
    assert len(train) == 3
    assert all(cases[c].flags(1)[s] for c, s in train)
    with_liver = [(c, s) for c in range(2) for s in range(12) if cases[c].flags(1)[s]]
    expected = [with_liver[i] for i in np.round(np.linspace(0, len(with_liver) - 1, 3)).astype(int)]
    assert [tuple(t) for t in train.tolist()] == expected
    dataset = LabelledSliceDataset(cases, train, label=1)
    sample = dataset[0]
    assert sample["image"].shape == (1, 32, 32) and set(np.unique(sample["label"])) <= {0.0, 1.0}
    assert sample["label"].sum() > 0


def test_structure_flags_name_the_missing_label_and_the_values_found(two_cases, tmp_path):
    cases = cache_cases(list(two_cases.cases), TINY_SLICING, tmp_path / "cache")
    flags = structure_flags(cases, 1, [two_cases])
    assert flags.shape == (24,) and flags.any() and not flags.all()
    with pytest.raises(SegSSLError, match=r"label 9 does not occur .*1 liver"):
        structure_flags(cases, 9, [two_cases])
    with pytest.raises(SegSSLError, match="positive label"):
        require_label_maps([two_cases], 0, "fine-tuning")


def test_unlabelled_cases_cannot_give_flags(tmp_path):
    image, _ = make_ct_phantom(seed=1, size=(32, 32, 12), spacing=(10.0, 10.0, 20.0))
    folder = write_msd_dataset(tmp_path / "unlabelled", [("a", image, None)], PHANTOM_LABELS)
    with pytest.raises(SegSSLError, match="`strategy` O needs label maps.*a in"):
        require_label_maps([load_dataset(folder)], 1, "`strategy` O")

