"""PSNR and SSIM, computed one documented way (scikit-image's definitions).

Convention (written wherever a number is reported): `data_range` is the *reference* image's
max - min in modality units, over the pixels that are not padding. PSNR = 10 log10(data_range² /
MSE) over those pixels; SSIM is scikit-image's (uniform 7x7 window, sample covariance), its map
averaged over them: `ssim_map` computes that map with OpenCV in float32, its mean within 2e-6 of
scikit-image's on CT and MR slices (reports keep 4 decimals). For super-resolution, `shave`
pixels are cut from each border before scoring (interpolation at the edges is not what is being
compared). Identical images give PSNR = inf.

The *self-check* (`self_check`) applies this to one image: degrade it with the shared model,
restore it with the method and with bicubic, and report the method's gain in dB.
"""

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.stats import t as t_distribution

from dicomnode.imaging.degrade import Degradation, bicubic_restore, crop_to_multiple, degrade


@dataclass(frozen=True)
class ImageMetrics:
    psnr_db: float
    ssim: float
    data_range: float


@dataclass(frozen=True)
class SeriesMetrics:
    """Per-series aggregate: means over images (infinite PSNRs excluded from the mean)."""

    images: int
    psnr_mean_db: float
    psnr_min_db: float
    ssim_mean: float


def _shaved(array: np.ndarray, shave: int) -> np.ndarray:
    return array[shave:-shave, shave:-shave] if shave else array


def border_shave(scale: int) -> int:
    """Border pixels left out of the scores of an upscaling (the SR literature's convention)."""
    return scale if scale > 1 else 0


def scored_region(image: np.ndarray, scale: int) -> np.ndarray:
    """The part of an image that every score at `scale` covers: the self-check's grid (cropped
    to a multiple of the scale) without its shaved border."""
    return _shaved(crop_to_multiple(image, scale), border_shave(scale))


def data_range_of(reference: np.ndarray, padding: np.ndarray | None = None) -> float:
    """max - min of `reference` over the pixels that are not `padding` (0 when all are)."""
    (image,) = _floats(reference)
    return _data_range(image, None if padding is None else cv_mask(~padding))


def compare(
    reference: np.ndarray, test: np.ndarray, *, shave: int = 0, padding: np.ndarray | None = None
) -> ImageMetrics:
    """PSNR/SSIM of `test` against `reference` (both 2-D, same grid, modality units)."""
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, test {test.shape}")
    ref, out = (_shaved(image, shave) for image in _floats(reference, test))
    valid = None if padding is None else cv_mask(~_shaved(padding, shave))
    data_range = _data_range(ref, valid)
    if data_range <= 0:
        raise ValueError("reference image is constant: PSNR/SSIM are undefined")
    squared_error = cv2.norm(ref, out, cv2.NORM_L2SQR, valid)  # within 1e-7 of numpy's sum
    if math.isinf(squared_error):  # float32 squares overflow at 1e19: an output gone wild
        wide_ref, wide_out = ref.astype(np.float64), out.astype(np.float64)
        squared_error = cv2.norm(wide_ref, wide_out, cv2.NORM_L2SQR, valid)
    mse = squared_error / (ref.size if valid is None else cv2.countNonZero(valid))
    psnr = _psnr(data_range, mse)
    centre = cv2.mean(ref, valid)[0]  # the scored pixels' mean: padding may lie far from it
    ssim = cv2.mean(ssim_map(ref, out, data_range, centre), valid)[0]
    return ImageMetrics(psnr, ssim, data_range)


def _psnr(data_range: float, mse: float) -> float:
    """PSNR in dB: inf for identical images, -inf for an output with infinite values (QA
    fails it), NaN for one with NaN."""
    if mse == 0:
        return math.inf
    if math.isinf(mse):
        return -math.inf
    return 10 * math.log10(data_range**2 / mse)


def _floats(*images: np.ndarray) -> list[np.ndarray]:
    """The images in one float type, as OpenCV's arithmetic takes them: float32 when all are
    (a job's sources and outputs: not copied), else float64."""
    if all(image.dtype == np.float32 for image in images):
        return list(images)
    return [image.astype(np.float64, copy=False) for image in images]


def cv_mask(selected: np.ndarray) -> np.ndarray:
    """A boolean mask as the 8-bit mask OpenCV's masked sums take (the same bytes, not copied
    when it is contiguous)."""
    return selected.view(np.uint8) if selected.flags.c_contiguous else selected.astype(np.uint8)


def _data_range(image: np.ndarray, valid: np.ndarray | None) -> float:
    """max - min over the pixels `valid` selects (an 8-bit mask; None: all); 0 for none."""
    if valid is not None and not valid.any():
        return 0.0
    low, high = masked_extremes(image, valid)
    return high - low


def masked_extremes(image: np.ndarray, valid: np.ndarray | None) -> tuple[float, float]:
    """The lowest and highest value over the pixels `valid` selects (an 8-bit mask with at
    least one pixel set; None: all), without a copy of them."""
    low, high, _, _ = cv2.minMaxLoc(image, valid)
    return float(low), float(high)


SSIM_WINDOW = 7  # scikit-image's default: a uniform 7x7 window
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _window_mean(image: np.ndarray) -> np.ndarray:
    """The mean over each pixel's SSIM window, borders mirrored (d c b a | a b c d): what
    scikit-image's `uniform_filter` gives. OpenCV sums a float32 image's windows in float64."""
    window = (SSIM_WINDOW, SSIM_WINDOW)
    mean: np.ndarray = cv2.boxFilter(image, -1, window, borderType=cv2.BORDER_REFLECT)
    return mean


# Centred values within this many data ranges of the scored pixels' mean keep float32's
# precision where it matters (a CT's padding at -33792 HU is ~11 ranges away); beyond it (an
# output gone wild, whose squares float32 may not hold), the map is made in float64, uncentred,
# with scikit-image's arithmetic: a number, though around such values no running-sum box filter
# (scikit-image's included) keeps the neighbouring windows exact.
FLOAT32_SPAN = 64


def ssim_map(
    reference: np.ndarray, test: np.ndarray, data_range: float, centre: float | None = None
) -> np.ndarray:
    """The SSIM of each pixel of two 2-D arrays, as scikit-image's
    `structural_similarity(reference, test, data_range=data_range, full=True)[1]` with its
    defaults (7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03), in float32.

    Every output of every job is scored beside the enhancement of the next ones, so this is
    written for speed: OpenCV's box filter and arithmetic in float32 (half the memory traffic
    of float64), few passes. The variances subtract window means of squares, so the values are
    first centred (in float64) on `centre`, the mean of the pixels that are scored (default:
    the reference's mean). On real CT and MR slices, their padding stored as far as -33792 HU
    too, the mean of the map is within 2e-6 of scikit-image's, and within 2e-5 on noiseless
    synthetic steps (tests/unit/test_fast_measures.py). Values farther than `FLOAT32_SPAN`
    data ranges from `centre` are scored in float64, uncentred: scikit-image's arithmetic."""
    if reference.ndim != 2 or reference.shape != test.shape:
        raise ValueError(
            f"SSIM compares two 2-D images of one shape, not {reference.shape} and {test.shape}"
        )
    if min(reference.shape) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, "
            f"not {reference.shape[1]}x{reference.shape[0]}"
        )
    if centre is None:
        centre = float(np.mean(reference, dtype=np.float64))
    x = np.subtract(reference, centre, out=np.empty(reference.shape, np.float32), casting="unsafe")
    y = np.subtract(test, centre, out=np.empty(test.shape, np.float32), casting="unsafe")
    if max(_farthest(x), _farthest(y)) <= FLOAT32_SPAN * data_range:
        return _in_bands(x, y, data_range, centre)
    return _in_bands(reference.astype(np.float64), test.astype(np.float64), data_range, 0.0)


# Rows of the map made at once: its dozen intermediates take ~MBs whatever the image's size (a
# 4096x4096 DX or scanned film took ~1 GB more for them in one piece).
SSIM_BAND_ROWS = 256


def _in_bands(x: np.ndarray, y: np.ndarray, data_range: float, centre: float) -> np.ndarray:
    """`_ssim_formula` band of rows by band, each made with the rows its windows reach beyond
    it, so that every value is the whole image's (the image's own edges mirrored as before)."""
    rows = x.shape[0]
    if rows <= 2 * SSIM_BAND_ROWS:
        return _ssim_formula(x, y, data_range, centre)
    reach = SSIM_WINDOW // 2
    result = np.empty(x.shape, x.dtype)
    for start in range(0, rows, SSIM_BAND_ROWS):
        stop = min(rows, start + SSIM_BAND_ROWS)
        low, high = max(0, start - reach), min(rows, stop + reach)
        band = _ssim_formula(x[low:high], y[low:high], data_range, centre)
        result[start:stop] = band[start - low : stop - low]
    return result


def _farthest(image: np.ndarray) -> float:
    lowest, highest, _, _ = cv2.minMaxLoc(image)
    return max(-lowest, highest)  # NaN compares false: a NaN-only image goes to float64


def _ssim_formula(x: np.ndarray, y: np.ndarray, data_range: float, centre: float) -> np.ndarray:
    """The SSIM map of two images given as their values minus `centre`, in their float type."""
    mean_x, mean_y = _window_mean(x), _window_mean(y)
    mean_squares = _window_mean(cv2.add(cv2.multiply(x, x), cv2.multiply(y, y)))
    mean_product = _window_mean(cv2.multiply(x, y))
    samples = SSIM_WINDOW**2
    k = samples / (samples - 1)  # sample covariance
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    # Contrast and structure, which a shift leaves alone: (2 cov + c2) / (var_x + var_y + c2).
    means_product = cv2.multiply(mean_x, mean_y)
    means_squared = cv2.add(cv2.multiply(mean_x, mean_x), cv2.multiply(mean_y, mean_y))
    covariance_term = cv2.addWeighted(mean_product, 2 * k, means_product, -2 * k, c2)
    variance_term = cv2.addWeighted(mean_squares, k, means_squared, -k, c2)
    # Luminance, on the means as they were: (2 mu_x mu_y + c1) / (mu_x² + mu_y² + c1).
    mu_x, mu_y = mean_x + x.dtype.type(centre), mean_y + x.dtype.type(centre)
    luminance_numerator = cv2.multiply(mu_x, mu_y, scale=2.0) + x.dtype.type(c1)
    luminance_denominator = cv2.add(cv2.multiply(mu_x, mu_x), cv2.multiply(mu_y, mu_y))
    luminance_denominator += x.dtype.type(c1)
    result: np.ndarray = cv2.divide(
        cv2.multiply(luminance_numerator, covariance_term),
        cv2.multiply(luminance_denominator, variance_term),
    )
    return result


def summarize(metrics: Sequence[ImageMetrics]) -> SeriesMetrics:
    if not metrics:
        raise ValueError("no images to summarise")
    finite = [m.psnr_db for m in metrics if math.isfinite(m.psnr_db)]
    return SeriesMetrics(
        images=len(metrics),
        psnr_mean_db=float(np.mean(finite)) if finite else math.inf,
        psnr_min_db=min(m.psnr_db for m in metrics),
        ssim_mean=float(np.mean([m.ssim for m in metrics])),
    )


@dataclass(frozen=True)
class SelfCheck:
    """How much better than bicubic a method restores *this* image from its degraded copy."""

    method: ImageMetrics
    bicubic: ImageMetrics

    @property
    def gain_db(self) -> float:
        return self.method.psnr_db - self.bicubic.psnr_db


def self_check(
    source: np.ndarray,
    restore: Callable[[np.ndarray], np.ndarray],
    degradation: Degradation,
    *,
    padding: np.ndarray | None = None,
) -> SelfCheck:
    """Degrade `source`, restore it with `restore` and with bicubic, score both against it.

    `restore` maps the degraded image (modality units) to the source grid, as the method would
    map a real input to its output. Both scores use the same data range and border shave.
    """
    (check,) = self_checks(
        [source], lambda stack: np.stack([restore(low) for low in stack]), degradation, [padding]
    )
    return check


def self_checks(
    sources: Sequence[np.ndarray],
    restore_stack: Callable[[np.ndarray], np.ndarray],
    degradation: Degradation,
    paddings: Sequence[np.ndarray | None],
) -> list[SelfCheck]:
    """`self_check` for many images at once: the degraded images of one shape are restored by
    one `restore_stack` call on an (N, h, w) stack, so a batching method (SRCNN) runs batched.

    The numbers are those `self_check` gives image by image; the order is the order of `sources`.
    """
    return restore_for_self_checks(sources, restore_stack, degradation, paddings).scored()


class DegradedForSelfCheck:
    """The self-check's images degraded, and bicubic's restorations of them scored: the part of
    a self-check that depends on the images and the scale but not on the method. Each image's
    part is made on first use and kept, or ahead of the enhancement (`prepare`)."""

    def __init__(
        self,
        sources: Sequence[np.ndarray],
        degradation: Degradation,
        paddings: Sequence[np.ndarray | None],
    ) -> None:
        scale = degradation.scale
        self.references = [crop_to_multiple(source, scale) for source in sources]
        self.masks = [
            crop_to_multiple(mask, scale) if mask is not None else None for mask in paddings
        ]
        self.shave = border_shave(scale)
        self._degradation = degradation
        self._degraded: list[np.ndarray | None] = [None] * len(self.references)
        self._bicubic: list[ImageMetrics | None] = [None] * len(self.references)

    def _low(self, index: int) -> np.ndarray:
        low = self._degraded[index]
        if low is None:
            low = self._degraded[index] = degrade(self.references[index], self._degradation)
        return low

    def _bicubic_of(self, index: int) -> ImageMetrics:
        scores = self._bicubic[index]
        if scores is None:
            reference = self.references[index]
            restored = bicubic_restore(self._low(index), reference.shape)
            scores = compare(reference, restored, shave=self.shave, padding=self.masks[index])
            self._bicubic[index] = scores
        return scores

    def degraded(self) -> list[np.ndarray]:
        """Each image degraded."""
        return [self._low(index) for index in range(len(self.references))]

    def bicubic(self) -> list[ImageMetrics]:
        """Bicubic's restoration of each degraded image, scored against its reference."""
        return [self._bicubic_of(index) for index in range(len(self.references))]

    def prepare(self, until: threading.Event) -> None:
        """Degrade every image, then score bicubic on each, until `until` is set (checked
        between images): what is left is made when it is first used."""
        for step in (self._low, self._bicubic_of):
            for index in range(len(self.references)):
                if until.is_set():
                    return
                step(index)

    def restored_by(
        self, restore_stack: Callable[[np.ndarray, list[int]], np.ndarray]
    ) -> "RestoredForSelfCheck":
        """The degraded images restored by a method, those of one shape in one call, which
        is told their places in the sample (what it needs to know of each: its polarity)."""
        degraded = self.degraded()
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, low in enumerate(degraded):
            by_shape.setdefault(low.shape, []).append(index)
        restored: list[np.ndarray] = [np.empty(0)] * len(degraded)
        for indices in by_shape.values():
            outputs = restore_stack(np.stack([degraded[i] for i in indices]), indices)
            for i, output in zip(indices, outputs, strict=True):
                restored[i] = output
        return RestoredForSelfCheck(self, restored)


@dataclass(frozen=True)
class RestoredForSelfCheck:
    """The self-check's images degraded and restored by the method, not yet scored: the
    scoring (most of the self-check's time, one core) can run beside other work."""

    sample: DegradedForSelfCheck
    restored: list[np.ndarray]

    def scored(self) -> list[SelfCheck]:
        """Each image's `SelfCheck`, in the order of the sources."""
        sample = self.sample
        return [
            SelfCheck(
                method=compare(reference, output, shave=sample.shave, padding=mask),
                bicubic=bicubic,
            )
            for reference, mask, output, bicubic in zip(
                sample.references, sample.masks, self.restored, sample.bicubic(), strict=True
            )
        ]


def restore_for_self_checks(
    sources: Sequence[np.ndarray],
    restore_stack: Callable[[np.ndarray], np.ndarray],
    degradation: Degradation,
    paddings: Sequence[np.ndarray | None],
) -> RestoredForSelfCheck:
    """The first half of `self_checks`: degrade, then restore by shape."""
    sample = DegradedForSelfCheck(sources, degradation, paddings)
    return sample.restored_by(lambda stack, _: restore_stack(stack))


def sampled_indices(count: int, limit: int) -> list[int]:
    """At most `limit` of `count` images, spread evenly from first to last (0: every image).

    The self-check of a long series samples: its gain is a property of the method on this kind
    of image, which a spread sample estimates (with its confidence interval) at a fraction of
    the cost."""
    if limit <= 0 or count <= limit:
        return list(range(count))
    if limit == 1:
        return [count // 2]
    step = (count - 1) / (limit - 1)
    return [round(i * step) for i in range(limit)]  # step > 1: distinct, first and last included


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval of the mean of `values`; None for fewer than two."""
    if len(values) < 2:
        return None
    array = np.asarray(values, dtype=np.float64)
    half = float(t_distribution.ppf(0.5 + confidence / 2, len(array) - 1)) * float(
        array.std(ddof=1) / math.sqrt(len(array))
    )
    mean = float(array.mean())
    return mean - half, mean + half
