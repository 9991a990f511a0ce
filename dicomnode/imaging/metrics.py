"""PSNR and SSIM, computed one documented way (scikit-image's definitions).

Convention (written wherever a number is reported): `data_range` is the *reference* image's
max - min in modality units, over the pixels that are not padding. PSNR = 10 log10(data_range² /
MSE) over those pixels; SSIM is scikit-image's (uniform 7x7 window, sample covariance), its map
averaged over them: `ssim_map` computes that map with OpenCV in float32, its mean within 5e-7 of
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


def data_range_of(reference: np.ndarray, padding: np.ndarray | None = None) -> float:
    """max - min of `reference` over the pixels that are not `padding` (0 when all are)."""
    (image,) = _floats(reference)
    return _data_range(image, None if padding is None else _mask(~padding))


def compare(
    reference: np.ndarray, test: np.ndarray, *, shave: int = 0, padding: np.ndarray | None = None
) -> ImageMetrics:
    """PSNR/SSIM of `test` against `reference` (both 2-D, same grid, modality units)."""
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, test {test.shape}")
    ref, out = (_shaved(image, shave) for image in _floats(reference, test))
    valid = None if padding is None else _mask(~_shaved(padding, shave))
    data_range = _data_range(ref, valid)
    if data_range <= 0:
        raise ValueError("reference image is constant: PSNR/SSIM are undefined")
    squared_error = cv2.norm(ref, out, cv2.NORM_L2SQR, valid)  # summed in float64
    mse = squared_error / (ref.size if valid is None else cv2.countNonZero(valid))
    psnr = math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)
    ssim = cv2.mean(ssim_map(ref, out, data_range), valid)[0]
    return ImageMetrics(psnr, ssim, data_range)


def _floats(*images: np.ndarray) -> list[np.ndarray]:
    """The images in one float type, as OpenCV's arithmetic takes them: float32 when all are
    (a job's sources and outputs: not copied), else float64."""
    if all(image.dtype == np.float32 for image in images):
        return list(images)
    return [image.astype(np.float64, copy=False) for image in images]


def _mask(selected: np.ndarray) -> np.ndarray:
    """A boolean mask as the 8-bit mask OpenCV takes (the same bytes: no copy when it can)."""
    return selected.view(np.uint8) if selected.flags.c_contiguous else selected.astype(np.uint8)


def _data_range(image: np.ndarray, valid: np.ndarray | None) -> float:
    """max - min over the pixels `valid` selects (an 8-bit mask; None: all); 0 for none."""
    if valid is not None and not valid.any():
        return 0.0
    low, high, _, _ = cv2.minMaxLoc(image, valid)
    return float(high - low)


SSIM_WINDOW = 7  # scikit-image's default: a uniform 7x7 window
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _window_mean(image: np.ndarray) -> np.ndarray:
    """The mean over each pixel's SSIM window, borders mirrored (d c b a | a b c d): what
    scikit-image's `uniform_filter` gives. OpenCV sums a float32 image's windows in float64."""
    window = (SSIM_WINDOW, SSIM_WINDOW)
    mean: np.ndarray = cv2.boxFilter(image, -1, window, borderType=cv2.BORDER_REFLECT)
    return mean


def ssim_map(reference: np.ndarray, test: np.ndarray, data_range: float) -> np.ndarray:
    """The SSIM of each pixel of two 2-D images, as scikit-image's
    `structural_similarity(reference, test, data_range=data_range, full=True)[1]` with its
    defaults (7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03), in float32.

    Every output of every job is scored beside the enhancement of the next ones, so this is
    written for speed: OpenCV's box filter and arithmetic in float32 (half the memory traffic
    of float64), few passes. The variances subtract window means of squares, so the values
    are first centred on the reference's mean (a flat 3000 with noise of 1 keeps its
    precision). On the real CT and MR test slices the mean of the map is within 5e-7 of
    scikit-image's, and within 2e-5 on noiseless synthetic steps, where the small constants
    meet float32's rounding of the squares (tests/unit/test_fast_measures.py): below the 4
    decimals reported either way."""
    if reference.ndim != 2 or reference.shape != test.shape:
        raise ValueError(
            f"SSIM compares two 2-D images of one shape, not {reference.shape} and {test.shape}"
        )
    if min(reference.shape) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, "
            f"not {reference.shape[1]}x{reference.shape[0]}"
        )
    offset = float(np.mean(reference, dtype=np.float64))
    x = np.subtract(reference, offset, dtype=np.float32)
    y = np.subtract(test, offset, dtype=np.float32)
    mean_x, mean_y = _window_mean(x), _window_mean(y)
    mean_squares = _window_mean(cv2.add(cv2.multiply(x, x), cv2.multiply(y, y)))
    mean_product = _window_mean(cv2.multiply(x, y))
    samples = SSIM_WINDOW**2
    k = samples / (samples - 1)  # sample covariance
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    # Contrast and structure, which a shift leaves alone: (2 cov + c2) / (var_x + var_y + c2).
    means_product = cv2.multiply(mean_x, mean_y)
    means_squared = cv2.add(cv2.multiply(mean_x, mean_x), cv2.multiply(mean_y, mean_y))
    structure = cv2.addWeighted(mean_product, 2 * k, means_product, -2 * k, c2)
    spread = cv2.addWeighted(mean_squares, k, means_squared, -k, c2)
    # Luminance, on the means as they were: (2 mu_x mu_y + c1) / (mu_x² + mu_y² + c1).
    mu_x, mu_y = mean_x + np.float32(offset), mean_y + np.float32(offset)
    luminance = cv2.multiply(mu_x, mu_y, scale=2.0) + np.float32(c1)
    brightness = cv2.add(cv2.multiply(mu_x, mu_x), cv2.multiply(mu_y, mu_y)) + np.float32(c1)
    result: np.ndarray = cv2.divide(
        cv2.multiply(luminance, structure), cv2.multiply(brightness, spread)
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
        self.shave = scale if scale > 1 else 0
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
        self, restore_stack: Callable[[np.ndarray], np.ndarray]
    ) -> "RestoredForSelfCheck":
        """The degraded images restored by a method, those of one shape in one call."""
        degraded = self.degraded()
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, low in enumerate(degraded):
            by_shape.setdefault(low.shape, []).append(index)
        restored: list[np.ndarray] = [np.empty(0)] * len(degraded)
        for indices in by_shape.values():
            outputs = restore_stack(np.stack([degraded[i] for i in indices]))
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
    return DegradedForSelfCheck(sources, degradation, paddings).restored_by(restore_stack)


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
