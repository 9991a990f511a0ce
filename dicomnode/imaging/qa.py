"""No-reference QA of an enhanced image against its source: is it over-enhanced or broken?

Measured on a body mask (Otsu threshold of the source, padding excluded), so air and table do not
dilute the numbers:

* sharpness ratio: variance of the Laplacian, output / source (over-sharpening inflates it);
* noise ratio: the wavelet noise estimate (Donoho's, as scikit-image's `estimate_sigma`) of
  the body's interior, output / source (`noise_in`);
* intensity drift: |mean(output) - mean(source)| in the body, as a fraction of the data range;
* saturation: fraction of body pixels at the storable limits that were not there before;
* NaN or infinite values: always a failure.

Each measure has a warn and a fail threshold (`QaThresholds`); the verdict is the worst level
reached, with one reason per threshold crossed.

What is measured of the source (`SourceQa`: mask, range, Laplacian variance, noise, mean,
saturated pixels) does not depend on the method: `measure_source` computes it once per image,
and `assess_against` scores each method's output against it.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
import pywt
from scipy.stats import norm
from skimage.filters import threshold_otsu

from dicomnode.imaging.metrics import cv_mask, masked_extremes

Verdict = Literal["ok", "warn", "fail"]
_RANK: dict[Verdict, int] = {"ok": 0, "warn": 1, "fail": 2}


def worst_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    """The most severe of several verdicts (a series is as bad as its worst image)."""
    return max(verdicts, key=_RANK.__getitem__, default="ok")


@dataclass(frozen=True)
class QaThresholds:
    """(warn, fail) limits; defaults chosen to pass gentle denoising and flag gross changes."""

    sharpness_ratio: tuple[float, float] = (2.0, 4.0)
    noise_ratio: tuple[float, float] = (1.5, 2.5)
    drift_fraction: tuple[float, float] = (0.02, 0.05)
    saturation_fraction: tuple[float, float] = (0.005, 0.02)


@dataclass(frozen=True)
class QaVerdict:
    verdict: Verdict
    reasons: tuple[str, ...]
    measures: dict[str, float] = field(default_factory=dict)


def body_mask(source: np.ndarray, padding: np.ndarray | None = None) -> np.ndarray:
    valid = ~padding if padding is not None else np.ones(source.shape, bool)
    values = source[valid]
    if values.size == 0 or values.min() == values.max():
        return valid
    mask = valid & (source > threshold_otsu(values))
    return mask if mask.any() else valid


def laplacian(image: np.ndarray) -> np.ndarray:
    """The 5-point Laplacian of a 2-D float64 image, borders mirrored (d c b a | a b c d): scipy's
    `ndimage.laplace` (its default mode), from OpenCV ~10x faster. On integer-valued images
    (sources stored with slope 1) the sums are exact and both give the same bits; elsewhere
    they differ by the order of three float64 additions."""
    result: np.ndarray = cv2.Laplacian(image, cv2.CV_64F, ksize=1, borderType=cv2.BORDER_REFLECT)
    return result


# The 75th percentile of the standard normal: |noise| has this median for a sigma of 1.
_NORMAL_QUARTILE = float(norm.ppf(0.75))


def finest_diagonal(image: np.ndarray) -> np.ndarray:
    """The finest diagonal wavelet details of a 2-D float64 image (db2, symmetric borders), as
    scikit-image's `estimate_sigma` takes them: only the two one-axis passes that lead to the
    diagonal band are made, each along rows of a transposed copy (PyWavelets is ~5x slower
    down columns). Detail (k, l) is made of rows 2k-2..2k+1 and columns 2l-2..2l+1."""
    _, down_columns = pywt.dwt(cv2.transpose(image), "db2", axis=1)
    diagonal: np.ndarray
    _, diagonal = pywt.dwt(cv2.transpose(down_columns), "db2", axis=1)
    return diagonal


def detail_positions(mask: np.ndarray) -> np.ndarray:
    """Which finest diagonal details (`finest_diagonal`) are made of `mask` pixels alone; those
    that touch it when none is (a body too thin for a 4x4 window).

    The noise of a body is told from these alone, the same ones in the source and the output.
    Over the whole image a flat region (air clipped at -1024 HU, padding) decides the median:
    its details are exactly zero where the value is 0 and ~1e-31 elsewhere, so the same air
    counted in one image and not in the other made the noise ratio anything from 0 to 1e30
    (real CT reformats with clipped air failed QA at 6-9x)."""
    padded = np.pad(mask, ((2, 3), (2, 3)), mode="symmetric")  # as pywt's symmetric borders
    shape = ((mask.shape[0] + 3) // 2, (mask.shape[1] + 3) // 2)  # pywt's detail grid
    inside = _each_window(padded, shape, np.logical_and.reduce)
    return inside if inside.any() else _each_window(padded, shape, np.logical_or.reduce)


def _each_window(
    padded: np.ndarray, shape: tuple[int, int], combine: Callable[[list[np.ndarray]], np.ndarray]
) -> np.ndarray:
    """`combine` (all or any) over each detail's 4x4 window of a mask padded by 2 before and 3
    after on each axis: detail k's rows 2k-2..2k+1 are the padded rows 2k..2k+3."""
    rows, columns = shape
    by_rows = combine([padded[start : start + 2 * rows : 2] for start in range(4)])
    return combine([by_rows[:, start : start + 2 * columns : 2] for start in range(4)])


def noise_in(image: np.ndarray, positions: np.ndarray) -> float:
    """The wavelet noise estimate of a 2-D float64 image from the finest diagonal details at
    `positions` (`detail_positions`): their median magnitude over the normal quartile, as
    scikit-image's `estimate_sigma` computes it over all of them (bit for bit where every
    position is taken and no detail is an exact zero)."""
    details = np.abs(finest_diagonal(image)[positions])  # a new array: `_median` reorders it
    return _median(details) / _NORMAL_QUARTILE  # in float64, as scikit-image


def _median(values: np.ndarray) -> float:
    """`np.median` of a 1-D float64 array, bit for bit, from one partition in place (~5x
    faster; `values` is reordered); NaN for none (an image whose details are all exact zeros),
    as numpy's, without its warning."""
    if not values.size:
        return math.nan
    middle = values.size // 2
    if values.size % 2:
        values.partition(middle)
        return float(values[middle])
    values.partition((middle - 1, middle))
    return float((values[middle - 1] + values[middle]) / 2)


def _body_variance(image: np.ndarray, body: np.ndarray) -> float:
    """The variance of `image` over the `body` (OpenCV's 8-bit mask), summed in float64."""
    _, deviation = cv2.meanStdDev(image, mask=body)
    return float(deviation[0, 0]) ** 2


def _saturated(
    image: np.ndarray, mask: np.ndarray, extremes: tuple[float, float], limits: tuple[float, float]
) -> np.ndarray | None:
    """Which body pixels (`mask`) are at a storable limit, in body order; None when none is:
    the usual case, told from the body's `extremes` without a pass per limit."""
    (lowest, highest), (low, high) = extremes, limits
    if low < lowest and highest < high:
        return None
    values = image[mask]
    at_limits: np.ndarray = (values <= low) | (values >= high)
    return at_limits


@dataclass(frozen=True)
class SourceQa:
    """What QA measures of a source image, whatever the method: measured once per image."""

    mask: np.ndarray  # the body: Otsu threshold of the source, padding excluded
    data_range: float  # max - min in the body (1.0 for a constant body)
    sharpness: float  # variance of the Laplacian in the body
    noise_positions: np.ndarray  # the details the noise is told from (`detail_positions`)
    noise_floor: float  # the rounding noise of one stored step: less is not told apart
    noise: float  # wavelet noise estimate of the body's interior, at least `noise_floor`
    mean: float  # mean in the body
    saturated: np.ndarray | None  # body pixels already at the storable limits (None: none)
    limits: tuple[float, float]


def measure_source(
    source: np.ndarray,
    *,
    limits: tuple[float, float],
    padding: np.ndarray | None = None,
    step: float = 0.0,
) -> SourceQa:
    """The source side of `assess`, for every method's output to be scored against.

    `step` is the modality value of one stored step (the rescale slope): noise under its
    rounding noise (step / sqrt(12)) cannot be stored, so both estimates are floored there and
    a noiseless source's ratio stays finite."""
    mask = body_mask(source, padding)
    if not mask.any():
        raise ValueError("QA has no pixel to measure: every pixel of the source is padding")
    body = cv_mask(mask)
    src = source.astype(np.float64)
    lowest, highest = masked_extremes(src, body)
    positions = detail_positions(mask)
    floor = abs(step) / math.sqrt(12)
    return SourceQa(
        mask=mask,
        data_range=float(highest - lowest) or 1.0,
        sharpness=_body_variance(laplacian(src), body),
        noise_positions=positions,
        noise_floor=floor,
        noise=max(noise_in(src, positions), floor),
        mean=cv2.mean(src, body)[0],
        saturated=_saturated(src, mask, (lowest, highest), limits),
        limits=limits,
    )


def _ratio(output: float, source: float) -> float:
    return output / source if source > 0 else (1.0 if output == 0 else float("inf"))


def assess(
    source: np.ndarray,
    output: np.ndarray,
    *,
    limits: tuple[float, float],
    padding: np.ndarray | None = None,
    thresholds: QaThresholds | None = None,
) -> QaVerdict:
    """QA verdict for `output` (2-D, modality units, source grid) against `source`.

    `limits` are the lowest and highest modality values the stored format can hold.
    """
    if not np.all(np.isfinite(output)):
        return _non_finite(output)
    return assess_against(
        measure_source(source, limits=limits, padding=padding), output, thresholds
    )


def _non_finite(output: np.ndarray) -> QaVerdict:
    count = int(np.size(output) - np.count_nonzero(np.isfinite(output)))
    return QaVerdict("fail", (f"{count} NaN/infinite pixels",), {"non_finite": count})


def assess_against(
    source: SourceQa, output: np.ndarray, thresholds: QaThresholds | None = None
) -> QaVerdict:
    """`assess` of `output` with its source already measured (`measure_source`)."""
    thresholds = thresholds or QaThresholds()
    if not np.all(np.isfinite(output)):
        return _non_finite(output)
    out = output.astype(np.float64)
    body = cv_mask(source.mask)
    saturated = _saturated(out, source.mask, masked_extremes(out, body), source.limits)
    if saturated is not None and source.saturated is not None:
        saturated &= ~source.saturated  # only pixels the method drove to the limits
    measures = {
        "sharpness_ratio": _ratio(_body_variance(laplacian(out), body), source.sharpness),
        "noise_ratio": _ratio(
            max(noise_in(out, source.noise_positions), source.noise_floor), source.noise
        ),
        "drift_fraction": abs(cv2.mean(out, body)[0] - source.mean) / source.data_range,
        "saturation_fraction": 0.0 if saturated is None else float(np.mean(saturated)),
    }
    verdict: Verdict = "ok"
    reasons = []
    for name, value in measures.items():
        warn, fail = getattr(thresholds, name)
        level: Verdict = "fail" if value > fail else "warn" if value > warn else "ok"
        if level != "ok":
            reasons.append(
                f"{name.replace('_', ' ')} {value:.3g} > {warn if level == 'warn' else fail}"
            )
            verdict = worst_verdict((verdict, level))
    return QaVerdict(verdict, tuple(reasons), measures)
