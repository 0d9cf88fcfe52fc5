"""Intensity normalisation to [0, 1]: CT windows and MR percentiles (MONAI transforms underneath)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from SegSSLLib.errors import SegSSLError

# Below this minimum the data are taken to be CT in Hounsfield units (air is -1000 HU).
_CT_MINIMUM_HU = -500.0


@dataclass(frozen=True)
class IntensityWindow:
    """How raw voxel values map to [0, 1]; stored in checkpoints so inference repeats training.

    mode "ct": a window of ``width`` HU centred on ``level``; below it 0, above it 1.
    mode "percentile": the ``lower``..``upper`` percentiles of each volume map to 0..1 (MR, unknown units);
    where they coincide (a constant image) the image maps to 0, and values above that level to 1.
    """

    mode: str = "ct"
    level: float = 40.0
    width: float = 400.0
    lower: float = 0.5
    upper: float = 99.5

    def __post_init__(self):
        if self.mode not in ("ct", "percentile"):
            raise SegSSLError(f"unknown intensity mode {self.mode!r}: use 'ct' or 'percentile'")
        if self.mode == "ct" and not self.width > 0:
            raise SegSSLError(f"CT window width must be positive, got {self.width}")
        if self.mode == "percentile" and not 0 <= self.lower < self.upper <= 100:
            raise SegSSLError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {self.lower}, {self.upper}")

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Return a float32 copy of ``array`` mapped to [0, 1]."""
        return self.resolve(array).apply(array)

    def resolve(self, array: np.ndarray) -> "WindowRange":
        """The values this window maps to 0 and 1 on ``array`` (a whole volume: percentiles are per volume).

        ``resolve(volume).apply(part)`` equals ``apply(volume)`` on that part, value for value, so a
        large volume can be mapped a few slices at a time. Memory: a CT window reads ``array`` in
        place; percentiles need one float32 copy of it while they are computed."""
        _require_finite(array)
        if self.mode == "ct":
            return WindowRange(self.level - self.width / 2, self.level + self.width / 2)
        # What MONAI's ScaleIntensityRangePercentiles computes, done here to see a zero range first.
        # Our own float32 copy, partitioned in place (numpy would otherwise copy it once more).
        values = np.array(array, dtype=np.float32)
        low, high = (float(v) for v in np.percentile(values, [self.lower, self.upper], overwrite_input=True))
        # Constant (or almost constant) image: no contrast to stretch, and MONAI would warn about
        # dividing by zero. The common value maps to 0, anything brighter to 1.
        return WindowRange(low, high, constant=high <= low)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "IntensityWindow":
        return cls(**values)


@dataclass(frozen=True)
class WindowRange:
    """A window resolved on one volume: ``low``..``high`` map to 0..1, clipped (``IntensityWindow.resolve``).

    ``constant``: the volume had no contrast between its percentiles; ``low`` maps to 0, anything above to 1."""

    low: float
    high: float
    constant: bool = False

    def apply(self, array: np.ndarray) -> np.ndarray:
        """A float32 copy of ``array`` (the whole volume or any part of it) mapped to [0, 1]."""
        # Imported here: MONAI takes seconds to import, and importing this module should not.
        from monai.transforms import ScaleIntensityRange

        array = np.asarray(array, dtype=np.float32)
        if self.constant:
            return (array > self.low).astype(np.float32)
        transform = ScaleIntensityRange(a_min=self.low, a_max=self.high, b_min=0.0, b_max=1.0, clip=True)
        return np.asarray(transform(array), dtype=np.float32)


def _require_finite(array: np.ndarray, chunk_values: int = 2**22) -> None:
    """Refuse NaN or infinite values (also those float32 cannot hold), a few million values at a time."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        return  # always finite, in float32 too
    flat = array.reshape(-1)  # a view when contiguous (a volume from SimpleITK is)
    for start in range(0, flat.size, chunk_values):
        with np.errstate(over="ignore"):  # a value too large for float32 becomes infinite: refused below
            block = np.asarray(flat[start : start + chunk_values], dtype=np.float32)
        if not np.all(np.isfinite(block)):
            raise SegSSLError("the image contains NaN or infinite values — fix or mask them before segmenting")


def guess_window(array: np.ndarray) -> IntensityWindow:
    """A soft-tissue CT window for data in HU, percentiles otherwise (MR, photographs, unknown)."""
    if float(np.min(array)) < _CT_MINIMUM_HU:
        return IntensityWindow(mode="ct")
    return IntensityWindow(mode="percentile")


def to_uint8(normalized: np.ndarray) -> np.ndarray:
    """[0, 1] floats to 0..255 bytes (what SAM and overlay pictures take)."""
    return np.round(np.clip(normalized, 0.0, 1.0) * 255.0).astype(np.uint8)
