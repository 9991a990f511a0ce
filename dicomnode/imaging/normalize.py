"""The network's working range: a fixed, invertible linear map from modality values.

SRCNN (and the baseline's filters) work on images scaled to roughly [0, 1]. The map is linear
and recorded with every result (`Normalization`), so an output is reproducible and `denormalize`
puts it back in modality units exactly:

* CT: a fixed Hounsfield range, the same for every image (-1024 HU → 0, 3071 HU → 1), so one
  model sees one intensity scale whatever the scanner;
* every other modality (MR, CR, DX, ...): the image's own 0.5th and 99.5th percentiles over the
  non-padding pixels map to 0 and 1. Values outside are *not* clipped: the map stays invertible.
  A (nearly) empty image falls back to its full range (`MIN_PERCENTILE_SHARE`).

A MONOCHROME1 image (lowest value displays white: CR, DX) is mapped the other way round, high → 0,
so the network sees it in the polarity of the MONOCHROME2 images it learnt from (dark background,
bright structures); a ReLU network is not symmetric, and the same picture stored either way must
be enhanced alike. CT's fixed Hounsfield range is never turned: HU mean the same whatever the
display polarity.
"""

from dataclasses import dataclass

import numpy as np

CT_HU_RANGE = (-1024.0, 3071.0)
PERCENTILES = (0.5, 99.5)
# Percentiles this much closer together than the image's full range describe no body, only
# background: a few stray pixels, degraded (cubic resampling rings around them), can put them
# 1e-17 apart and the network's inputs at ~1e16. The shared MR images: 0.27 of it and wider.
MIN_PERCENTILE_SHARE = 1e-3


@dataclass(frozen=True)
class Normalization:
    """x_net = (x - low) / (high - low), or (high - x) / (high - low) when `inverted`
    (MONOCHROME1); `rule` says how low and high were chosen."""

    low: float
    high: float
    rule: str
    inverted: bool = False

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"normalization needs high > low, got [{self.low}, {self.high}]")

    def as_dict(self) -> dict[str, float | str | bool]:
        return {"low": self.low, "high": self.high, "rule": self.rule, "inverted": self.inverted}


def normalization_for(
    image: np.ndarray,
    modality: str,
    padding: np.ndarray | None = None,
    *,
    inverted: bool = False,
) -> Normalization:
    """The working-range map for one image (2-D or a stack) of the given DICOM Modality;
    `inverted` for a MONOCHROME1 image (not CT: see the module's docstring)."""
    if modality.upper() == "CT":
        return Normalization(*CT_HU_RANGE, rule="ct-hu-fixed")
    values = image[~padding] if padding is not None else image.ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Normalization(0.0, 1.0, rule="identity", inverted=inverted)
    low, high = (float(v) for v in np.percentile(values, PERCENTILES))
    lowest, highest = float(values.min()), float(values.max())
    if high - low > MIN_PERCENTILE_SHARE * (highest - lowest):
        rule = f"percentile-{PERCENTILES[0]}-{PERCENTILES[1]}"
        return Normalization(low, high, rule=rule, inverted=inverted)
    if highest > lowest:  # background and a few pixels: their full range
        return Normalization(lowest, highest, rule="min-max", inverted=inverted)
    return Normalization(lowest, lowest + 1.0, rule="constant", inverted=inverted)


def fill_padding(
    image: np.ndarray, padding: np.ndarray | None, modality: str, *, inverted: bool = False
) -> np.ndarray:
    """`image` with its padding pixels set to a plausible body value: air (-1024 HU) for CT,
    else the darkest real value (the lowest; the highest in a MONOCHROME1 image).

    Outside a CT's reconstruction circle scanners store -2048 or -3024 HU. A filter, a
    degradation or a network that sees that step rings into the real pixels beside it; filled,
    the step is gone. Callers restore the padding pixels exactly afterwards (`to_stored`)."""
    if padding is None or not padding.any():
        return image
    real = image[~padding]
    darkest = (float(real.max()) if inverted else float(real.min())) if real.size else 0.0
    value = CT_HU_RANGE[0] if modality.upper() == "CT" else darkest
    return np.where(padding, np.asarray(value, image.dtype), image)


def normalize(image: np.ndarray, norm: Normalization) -> np.ndarray:
    width = np.float32(norm.high - norm.low)
    if norm.inverted:
        return (np.float32(norm.high) - image.astype(np.float32)) / width
    return (image.astype(np.float32) - np.float32(norm.low)) / width


def denormalize(image: np.ndarray, norm: Normalization) -> np.ndarray:
    width = np.float32(norm.high - norm.low)
    if norm.inverted:
        return np.float32(norm.high) - image.astype(np.float32) * width
    return image.astype(np.float32) * width + np.float32(norm.low)
