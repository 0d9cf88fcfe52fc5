"""Torch datasets over cached slices, and the choice of which labelled slices train and validate.

Slices are addressed as (case, slice) pairs into a list of ``CachedCase``; pretraining flattens them
to one global index per slice.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from SegSSLLib.datasets import Dataset as DataFolder
from SegSSLLib.errors import SegSSLError
from SegSSLLib.polycl.slice_cache import CachedCase

log = logging.getLogger(__name__)

# A single labelled volume is split by interleaved blocks of slices: every ``period``-th block of
# this many neighbouring slices validates, so validation covers the whole structure.
VALIDATION_BLOCK = 4


def slice_addresses(cases: list[CachedCase]) -> np.ndarray:
    """(N, 2) int array of (case, slice) for every slice of every case, in order."""
    return np.concatenate(
        [np.stack([np.full(c.num_slices, i), np.arange(c.num_slices)], axis=1) for i, c in enumerate(cases)]
    ).astype(np.int64)


def _slice_tensor(case: CachedCase, index: int) -> torch.Tensor:
    return torch.from_numpy(np.asarray(case.images[index], dtype=np.float32))[None]


class TripletDataset(Dataset):
    """Item t: (anchor, positive, negative) slices (1, S, S) each, and their three global indices."""

    def __init__(self, cases: list[CachedCase], triplets: np.ndarray):
        self.cases = cases
        self.addresses = slice_addresses(cases)
        self.triplets = triplets

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, item: int):
        indices = self.triplets[item]
        slices = [_slice_tensor(self.cases[c], s) for c, s in self.addresses[indices]]
        return (*slices, torch.as_tensor(indices))


class LabelledSliceDataset(Dataset):
    """Item: {"image": (1, S, S) float, "label": (1, S, S) 0/1} for the slices ``items`` (case, slice)."""

    def __init__(self, cases: list[CachedCase], items: np.ndarray, label: int, transform=None):
        self.cases = cases
        self.items = np.asarray(items, dtype=np.int64).reshape(-1, 2)
        self.label = label
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int) -> dict:
        case_index, slice_index = self.items[item]
        case = self.cases[case_index]
        mask = np.asarray(case.labels[slice_index]) == self.label
        sample = {"image": _slice_tensor(case, slice_index), "label": torch.from_numpy(mask[None].astype(np.float32))}
        return self.transform(sample) if self.transform is not None else sample


def require_label_maps(folders: list[DataFolder], label: int, needed_for: str) -> None:
    """Fail before any slicing if a case has no label map or ``label`` is not a structure value."""
    if label < 1:
        raise SegSSLError(f"`label` must be a positive label value (0 is background), got {label}")
    unlabelled = [(folder.root, case.name) for folder in folders for case in folder.cases if case.label is None]
    if unlabelled:
        root, name = unlabelled[0]
        raise SegSSLError(
            f"{needed_for} needs label maps, but {len(unlabelled)} case(s) have none (e.g. {name} in {root}) — "
            "give MSD folders with labelsTr/ and dataset.json"
        )


def structure_flags(cases: list[CachedCase], label: int, folders: list[DataFolder]) -> np.ndarray:
    """(N,) bool over all slices: does ``label`` occur in the slice (``require_label_maps`` passed)."""
    per_case = [case.flags(label) for case in cases]
    if not any(flags.any() for flags in per_case):
        found = sorted({int(v) for case in cases for v in np.flatnonzero(case.presence.any(axis=0)) if v})
        names = {value: name for folder in folders for value, name in folder.label_names.items()}
        listing = ", ".join(f"{v} {names.get(v, '')}".strip() for v in found) or "none"
        raise SegSSLError(
            f"label {label} does not occur in any label map of the data (values found: {listing}) — "
            "choose one of those with `label`"
        )
    missing = [case.name for case, flags in zip(cases, per_case) if not flags.any()]
    if missing:
        log.warning("label %d is absent from %d case(s): %s", label, len(missing), ", ".join(missing))
    return np.concatenate(per_case)


def split_labelled_slices(
    cases: list[CachedCase],
    label: int,
    validation_fraction: float = 0.2,
    max_cases: int | None = None,
    max_slices: int | None = None,
    seed: int = 0,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) arrays of (case, slice) for fine-tuning.

    Several cases: whole cases validate (a seeded random choice among the cases that show the
    structure, as long as one such case is left to train); ``max_cases`` keeps that many of the
    remaining cases. One case: interleaved blocks of its slices validate, drawn separately from the
    blocks with and without the structure (``_validation_slices``). ``max_slices`` keeps
    that many training slices that show the structure, evenly spaced through them (like an
    annotator who outlines every k-th slice of the organ). ``exclude``: (case, slice) pairs that
    take no part (held-out test slices).
    """
    if not 0 <= validation_fraction < 1:
        raise SegSSLError(f"`validation_fraction` must be in [0, 1), got {validation_fraction}")
    for name, value in (("`max_cases`", max_cases), ("`max_slices`", max_slices)):
        if value is not None and value < 1:
            raise SegSSLError(f"{name} must be at least 1, got {value}")
    addresses = slice_addresses(cases)
    kept = np.ones(len(addresses), bool)
    if exclude is not None and len(exclude):
        excluded = {tuple(item) for item in np.asarray(exclude).reshape(-1, 2).tolist()}
        kept = np.array([tuple(item) not in excluded for item in addresses.tolist()])
    if len(cases) >= 2:
        order = np.random.default_rng(seed).permutation(len(cases))
        validation_count = min(len(cases) - 1, round(validation_fraction * len(cases)))
        if validation_fraction > 0:
            validation_count = max(1, validation_count)
        # Cases that show the structure validate first (a Dice on cases without it says nothing),
        # but never all of them: training needs the structure too.
        shown = np.array([cases[i].flags(label).any() for i in order])
        if shown.sum() >= 2:
            order = order[np.argsort(~shown, kind="stable")]
            validation_count = min(validation_count, int(shown.sum()) - 1)
        else:
            order = order[np.argsort(shown, kind="stable")]
        remaining = len(cases) - validation_count
        if max_cases is not None and max_cases > remaining:
            raise SegSSLError(
                f"`max_cases` {max_cases} asks for more training cases than the data leave after validation "
                f"({remaining} of {len(cases)}) — lower `max_cases` or `validation_fraction`"
            )
        training_cases = order[validation_count:][:max_cases]
        is_train = np.isin(addresses[:, 0], training_cases)
        is_validation = np.isin(addresses[:, 0], order[:validation_count])
    else:
        if max_cases is not None and max_cases > 1:
            raise SegSSLError(f"`max_cases` {max_cases} asks for more cases than the data hold (1)")
        # Blocks are formed over the slices that take part, so held-out slices cannot empty validation.
        is_validation = np.zeros(len(addresses), bool)
        is_validation[kept] = _validation_slices(cases[0].flags(label)[kept], validation_fraction)
        is_train = ~is_validation
    is_train, is_validation = is_train & kept, is_validation & kept
    train, validation = addresses[is_train], addresses[is_validation]
    if max_slices is not None:
        train = _evenly_spaced_with_structure(cases, train, label, max_slices)
    return train, validation


def _validation_slices(flags: np.ndarray, validation_fraction: float) -> np.ndarray:
    """(N,) bool: the validating slices of one case.

    Every ``1 / validation_fraction``-th block of ``VALIDATION_BLOCK`` neighbouring slices, counted
    separately among blocks that show the structure and blocks that do not, so both kinds
    validate. A structure in one block only (a small tumour) is split slice by slice instead: its
    middle slice validates, the others train.
    """
    validation = np.zeros(len(flags), bool)
    if validation_fraction == 0:
        return validation
    period = round(1 / validation_fraction)
    block = np.arange(len(flags)) // VALIDATION_BLOCK
    shown = np.zeros(block[-1] + 1, bool)
    np.logical_or.at(shown, block, flags)
    for group in (np.flatnonzero(shown), np.flatnonzero(~shown)):
        picks = group[period - 1 :: period]
        if len(picks) == 0 and len(group) >= 2:
            picks = group[len(group) // 2 : len(group) // 2 + 1]
        validation |= np.isin(block, picks)
    structure_slices = np.flatnonzero(flags)
    if shown.sum() == 1 and len(structure_slices) >= 2:
        validation[block == np.flatnonzero(shown)[0]] = False
        validation[structure_slices[len(structure_slices) // 2]] = True
    return validation


def _evenly_spaced_with_structure(cases, train: np.ndarray, label: int, count: int) -> np.ndarray:
    flags = {i: case.flags(label) for i, case in enumerate(cases)}
    with_structure = train[[bool(flags[c][s]) for c, s in train]]
    if len(with_structure) == 0:
        raise SegSSLError(f"no training slice shows label {label}, so `max_slices` cannot choose any — check `label`")
    if count >= len(with_structure):
        return with_structure
    picks = np.unique(np.round(np.linspace(0, len(with_structure) - 1, count)).astype(int))
    return with_structure[picks]
