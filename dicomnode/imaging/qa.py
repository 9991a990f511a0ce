"""No-reference QA of an enhanced image against its source: is it over-enhanced or broken?

Measured on a body mask (Otsu threshold of the source, padding excluded), so air and table do not
dilute the numbers:

* sharpness ratio: variance of the Laplacian, output / source (over-sharpening inflates it);
  neither is taken below what rounding to one stored step gives (`_rounding_sharpness`), so a
  flat body (a few isolated pixels of a nearly empty slice) does not read as infinitely sharpened;
* noise ratio: the wavelet noise estimate, output / source, in the body or, where worse, in the
  rest of the image (`dicomnode.imaging.noise`); not measured on a sliver of a body;
* intensity drift: |mean(output) - mean(source)| in the body, less the half step that storing
  alone can move it by, as a fraction of the data range (the limits are thus half a step looser:
  nothing for CT's thousands of HU, a quarter of the warn limit for a 100-step range);
* saturation: fraction of body pixels at the storable limits that were not there before;
* NaN or infinite values: always a failure.

Without a stored step (`step` = 0) neither floor applies. Each measure has a warn and a fail
threshold (`QaThresholds`); the verdict is the worst level reached, with one reason per threshold
crossed.

What is measured of the source (`SourceQa`: mask, range, Laplacian variance, noise, mean,
saturated pixels) does not depend on the method: `measure_source` computes it once per image,
and `assess_against` scores each method's output against it.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

import cv2
import numpy as np
from skimage.filters import threshold_otsu

from dicomnode.imaging.metrics import cv_mask, masked_extremes
from dicomnode.imaging.noise import NoiseReference, noise_reference, ratio, rounding_noise

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


# Each measure's name: its reasons say it with spaces, its settings are qa.<name>_warn/_fail.
MEASURES: tuple[str, ...] = tuple(limit.name for limit in fields(QaThresholds))


@dataclass(frozen=True)
class QaVerdict:
    verdict: Verdict
    reasons: tuple[str, ...]
    measures: dict[str, float] = field(default_factory=dict)


def body_mask(
    source: np.ndarray, padding: np.ndarray | None = None, *, inverted: bool = False
) -> np.ndarray:
    """The pixels brighter than the background (Otsu's threshold); in a MONOCHROME1 image
    (`inverted`) those are the lower values."""
    valid = ~padding if padding is not None else np.ones(source.shape, bool)
    values = source[valid]
    if values.size == 0 or values.min() == values.max():
        return valid
    threshold = threshold_otsu(values)
    mask = valid & ((source < threshold) if inverted else (source > threshold))
    return mask if mask.any() else valid


def laplacian(image: np.ndarray) -> np.ndarray:
    """The 5-point Laplacian of a 2-D float64 image, borders mirrored (d c b a | a b c d): scipy's
    `ndimage.laplace` (its default mode), from OpenCV ~10x faster. On integer-valued images
    (sources stored with slope 1) the sums are exact and both give the same bits; elsewhere
    they differ by the order of three float64 additions."""
    result: np.ndarray = cv2.Laplacian(image, cv2.CV_64F, ksize=1, borderType=cv2.BORDER_REFLECT)
    return result


def _body_variance(image: np.ndarray, body: np.ndarray) -> float:
    """The variance of `image` over the `body` (OpenCV's 8-bit mask), summed in float64."""
    _, deviation = cv2.meanStdDev(image, mask=body)
    return float(deviation[0, 0]) ** 2


def _rounding_sharpness(step: float) -> float:
    """The variance of the Laplacian of rounding noise (`rounding_noise` per pixel, weights -4
    and four 1s): a change of sharpness below it cannot be stored, so is not told apart."""
    return (16 + 4) * rounding_noise(step) ** 2


def _beyond_rounding(shift: float, step: float) -> float:
    """How far a mean moved beyond the half step that storing each pixel can move it by."""
    return max(0.0, abs(shift) - step / 2)


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
    noise: NoiseReference | None  # where its noise is told from, and how much (None: a sliver)
    mean: float  # mean in the body
    saturated: np.ndarray | None  # body pixels already at the storable limits (None: none)
    limits: tuple[float, float]
    step: float = 0.0  # the modality value of one stored step (0: unknown, no rounding floors)


def measure_source(
    source: np.ndarray,
    *,
    limits: tuple[float, float],
    padding: np.ndarray | None = None,
    step: float = 0.0,
    inverted: bool = False,
) -> SourceQa:
    """The source side of `assess`, for every method's output to be scored against; `step`:
    the modality value of one stored step (the rescale slope: `noise_reference`); `inverted`:
    a MONOCHROME1 image (`body_mask`)."""
    mask = body_mask(source, padding, inverted=inverted)
    if not mask.any():
        raise ValueError("QA has no pixel to measure: every pixel of the source is padding")
    body = cv_mask(mask)
    src = source.astype(np.float64)
    lowest, highest = masked_extremes(src, body)
    valid = ~padding if padding is not None else np.ones(mask.shape, bool)
    return SourceQa(
        mask=mask,
        data_range=float(highest - lowest) or 1.0,
        sharpness=_body_variance(laplacian(src), body),
        noise=noise_reference(src, mask, valid, step),
        mean=cv2.mean(src, body)[0],
        saturated=_saturated(src, mask, (lowest, highest), limits),
        limits=limits,
        step=abs(step),
    )


def assess(
    source: np.ndarray,
    output: np.ndarray,
    *,
    limits: tuple[float, float],
    padding: np.ndarray | None = None,
    step: float = 0.0,
    thresholds: QaThresholds | None = None,
) -> QaVerdict:
    """QA verdict for `output` (2-D, modality units, source grid) against `source`.

    `limits` are the lowest and highest modality values the stored format can hold; `step`
    the modality value of one stored step (see `measure_source`).
    """
    if not np.all(np.isfinite(output)):
        return _non_finite(output)
    measured = measure_source(source, limits=limits, padding=padding, step=step)
    return assess_against(measured, output, thresholds)


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
    floor = _rounding_sharpness(source.step)
    sharpness = max(_body_variance(laplacian(out), body), floor)
    measures = {"sharpness_ratio": ratio(sharpness, max(source.sharpness, floor))}
    if source.noise is not None:
        measures["noise_ratio"] = source.noise.ratio(out)
    shift = _beyond_rounding(cv2.mean(out, body)[0] - source.mean, source.step)
    measures["drift_fraction"] = shift / source.data_range
    measures["saturation_fraction"] = 0.0 if saturated is None else float(np.mean(saturated))
    failed, warned = [], []
    for name, value in measures.items():
        warn, fail = getattr(thresholds, name)
        if value > fail:
            failed.append(f"{name.replace('_', ' ')} {value:.3g} > {fail}")
        elif value > warn:
            warned.append(f"{name.replace('_', ' ')} {value:.3g} > {warn}")
    if failed:  # what failed it first; a measure past its warning limit only, said as such
        return QaVerdict("fail", tuple(failed + _warnings_only(warned)), measures)
    return QaVerdict("warn" if warned else "ok", tuple(warned), measures)


def _warnings_only(reasons: Iterable[str]) -> list[str]:
    return [f"{reason} (a warning only)" for reason in reasons]


def merged(parts: Sequence[tuple[str, QaVerdict]]) -> tuple[Verdict, tuple[str, ...]]:
    """Several verdicts (a multi-frame image's frames, each reason after its `prefix`) as one:
    the worst, and when it fails, the failed parts' reasons first and the others' said to be
    warnings only, as `assess_against` tells one image's."""
    worst = worst_verdict(verdict.verdict for _, verdict in parts)
    said = [
        (verdict.verdict, [prefix + reason for reason in verdict.reasons])
        for prefix, verdict in parts
    ]
    if worst != "fail":
        return worst, tuple(reason for _, reasons in said for reason in reasons)
    failed = [reason for level, reasons in said if level == "fail" for reason in reasons]
    warned = [reason for level, reasons in said if level == "warn" for reason in reasons]
    return worst, tuple(failed + _warnings_only(warned))
