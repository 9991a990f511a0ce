"""No-reference QA of an enhanced image against its source: is it over-enhanced or broken?

Measured on a body mask (Otsu threshold of the source, padding excluded), so air and table do not
dilute the numbers:

* sharpness ratio: variance of the Laplacian, output / source (over-sharpening inflates it);
* noise ratio: scikit-image's wavelet noise estimate, output / source;
* intensity drift: |mean(output) - mean(source)| in the body, as a fraction of the data range;
* saturation: fraction of body pixels at the storable limits that were not there before;
* NaN or infinite values: always a failure.

Each measure has a warn and a fail threshold (`QaThresholds`); the verdict is the worst level
reached, with one reason per threshold crossed.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.ndimage import laplace
from skimage.filters import threshold_otsu
from skimage.restoration import estimate_sigma

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
    thresholds = thresholds or QaThresholds()
    if not np.all(np.isfinite(output)):
        count = int(np.size(output) - np.count_nonzero(np.isfinite(output)))
        return QaVerdict("fail", (f"{count} NaN/infinite pixels",), {"non_finite": count})
    mask = body_mask(source, padding)
    src, out = source.astype(np.float64), output.astype(np.float64)
    data_range = float(src[mask].max() - src[mask].min()) or 1.0
    low, high = limits

    def saturated(image: np.ndarray) -> np.ndarray:
        return (image <= low) | (image >= high)

    measures = {
        "sharpness_ratio": _ratio(float(laplace(out)[mask].var()), float(laplace(src)[mask].var())),
        "noise_ratio": _ratio(float(estimate_sigma(out)), float(estimate_sigma(src))),
        "drift_fraction": abs(float(out[mask].mean() - src[mask].mean())) / data_range,
        "saturation_fraction": float(np.mean(saturated(out)[mask] & ~saturated(src)[mask])),
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
