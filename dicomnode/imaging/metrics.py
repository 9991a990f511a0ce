"""PSNR and SSIM, computed one documented way (scikit-image underneath).

Convention (written wherever a number is reported): `data_range` is the *reference* image's
max - min in modality units, over the pixels that are not padding. PSNR = 10 log10(data_range² /
MSE) over those pixels; SSIM is scikit-image's (uniform 7x7 window), its map averaged over them. For
super-resolution, `shave` pixels are cut from each border before scoring (interpolation at the
edges is not what is being compared). Identical images give PSNR = inf.

The *self-check* (`self_check`) applies this to one image: degrade it with the shared model,
restore it with the method and with bicubic, and report the method's gain in dB.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from skimage.metrics import structural_similarity

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
    values = reference[~padding] if padding is not None else reference
    return float(values.max() - values.min()) if values.size else 0.0


def compare(
    reference: np.ndarray, test: np.ndarray, *, shave: int = 0, padding: np.ndarray | None = None
) -> ImageMetrics:
    """PSNR/SSIM of `test` against `reference` (both 2-D, same grid, modality units)."""
    if reference.shape != test.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, test {test.shape}")
    ref = _shaved(reference.astype(np.float64), shave)
    out = _shaved(test.astype(np.float64), shave)
    valid = ~_shaved(padding, shave) if padding is not None else np.ones(ref.shape, bool)
    data_range = data_range_of(ref, ~valid)
    if data_range <= 0:
        raise ValueError("reference image is constant: PSNR/SSIM are undefined")
    mse = float(np.mean((ref[valid] - out[valid]) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)
    _, ssim_map = structural_similarity(ref, out, data_range=data_range, full=True)
    return ImageMetrics(psnr, float(ssim_map[valid].mean()), data_range)


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
    reference = crop_to_multiple(source, degradation.scale)
    mask = crop_to_multiple(padding, degradation.scale) if padding is not None else None
    degraded = degrade(reference, degradation)
    shave = degradation.scale if degradation.scale > 1 else 0
    return SelfCheck(
        method=compare(reference, restore(degraded), shave=shave, padding=mask),
        bicubic=compare(
            reference, bicubic_restore(degraded, reference.shape), shave=shave, padding=mask
        ),
    )
